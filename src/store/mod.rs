//! [`Store`], the public API of the identity graph: open, apply ops, answer queries, export,
//! repair, flush, verify. Each method is a short entry point; the work lives by job in the
//! submodules:
//!
//! | module | owns |
//! |---|---|
//! | `config` | [`Config`], the builder and its defaults |
//! | `recovery` | opening: format check, finishing a redo record, loading the graph; writing redo records |
//! | `lifecycle` | the graph in memory and the graph index's lifecycle |
//! | `plan` | the planner: ops → staged graph changes + the sled writes of one batch |
//! | `commit` | the commit strategy: plain insert, redo record or sled batch |
//! | `counts` | [`Stats`], [`Guardrails`]: counts kept or scanned |
//! | `records` | the record layer: the one place that knows own keys vs packed blocks, edges kept in records |
//! | `events` | packed events: reading, packing, [`ExportedEvent`] |
//! | `index` | the graph index file |
//! | `bulk` | [`Store::bulk_apply`]: one pass over millions of ops |
//! | `repair` | explain, unalias, forget, links, hubs, person graphs |
//! | `verify` | [`Store::verify`], one function per invariant family |

mod backup;
mod bulk;
mod commit;
mod compact;
mod config;
mod counts;
mod events;
mod index;
mod lifecycle;
mod plan;
mod records;
mod recovery;
mod repair;
mod suppress;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use crate::codec::{self, StoredProp, StoredRefusal};
use crate::dot::PersonGraph;
use crate::error::Result;
use crate::forest::Node;
use crate::graph::Graph;
use crate::id::Identity;
use crate::op::{
    AliasOutcome, Cause, Event, Link, Op, Outcome, Person, Property, RefusalReason, Timestamp, now,
};
use crate::source::{FilePart, OpSource};

pub use backup::{
    BACKUP_FORMAT, BackupInfo, BackupOptions, BackupReport, DEFAULT_MAX_PRESERVED_BYTES,
    RestoreOptions, RestoreReport, check_backup, restore,
};
pub use bulk::{BulkOptions, BulkReport};
pub use compact::Compacted;
#[cfg(feature = "server")]
pub(crate) use compact::{copy_live, drop_copy, swap_in};
pub use config::{Config, DEFAULT_MAX_PERSON_SIZE};
pub use counts::{Guardrails, Stats};
pub use events::ExportedEvent;
pub use repair::{Explanation, Forgotten, Hubs};
pub use suppress::SuppressionList;
pub use verify::{VerifyProgress, VerifyReport};

/// The graph index's fuzz target (`crate::fuzz::graph_index`).
pub(crate) fn fuzz_index(data: &[u8]) {
    index::fuzz(data);
}

/// A refused merge, as [`Store::refusals`] lists them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// One ID.
    pub a: String,
    /// The other ID.
    pub b: String,
    /// Why.
    pub reason: RefusalReason,
    /// Where the link came from.
    pub cause: Cause,
    /// When it was asked for (the latest time, if asked several times).
    pub at: Timestamp,
}

/// Sled keys and values a batch writes, in key order (the planner makes them, `commit`
/// writes them).
pub(crate) type Writes = BTreeMap<Vec<u8>, Vec<u8>>;

/// The identity graph: a persistent union-find of IDs on sled, with events and properties per
/// person.
///
/// `Send + Sync`: share it with `Arc`. One writer at a time (a mutex); readers never wait for
/// it and never see half of a batch.
pub struct Store {
    pub(crate) db: sled::Db,
    pub(crate) writer: Mutex<()>,
    /// The graph in memory: loaded at open when there is no current index, else on first need
    /// (a write, or a query the index does not answer). See [`Store::graph`].
    graph: RwLock<Option<Graph>>,
    /// Held while the graph is loaded (one load at a time; readers do not wait for it).
    loading: Mutex<()>,
    /// The graph index and where it stands (`lifecycle`).
    ix: IndexState,
    /// What the writers count as they go (`counts`).
    pub(crate) counts: Counters,
    /// The rules this handle was opened with.
    pub(crate) policy: Policy,
    /// Forgotten IDs, by keyed hash (`suppress`).
    pub(crate) suppressed: suppress::Suppressions,
    /// The cut of a backup in progress (`backup`): writers keep old values for it.
    cut: RwLock<Option<std::sync::Arc<backup::Cut>>>,
    /// One past the last node with packed events (`events::packed_upto`).
    packed_upto: AtomicU64,
    /// Odd while a write that removes data (forget, unalias, a block rewrite that folds `v`
    /// keys) is between its first key and its graph update; bumped twice by each. Readers
    /// that read sled after the graph retry when it moved (`consistent`).
    pub(crate) removals: AtomicU64,
    /// Set when a write failed between the keys of one op (see
    /// [`Error::Interrupted`](crate::Error::Interrupted)).
    poisoned: AtomicBool,
    path: Option<PathBuf>,
    /// What it was opened with (a server reopens the store after erasing with the same).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) config: Config,
}

/// The graph index as it was at open, when current (DESIGN.md, "The graph index"), and its
/// lifecycle: `resolve`, `events` and `properties` read it until the graph is loaded.
struct IndexState {
    current: Option<index::GraphIndex>,
    /// Whether this handle must write the index when it closes: it wrote, or found none.
    due: AtomicBool,
    /// Whether this handle has removed the index's stamp from sled (before its first write).
    unstamped: AtomicBool,
    /// Set when reading the index failed: it is not asked again.
    broken: AtomicBool,
}

/// Counts kept by the writers.
pub(crate) struct Counters {
    /// Events, properties and IDs at the property limit, when known (saved under
    /// `m data_counts` at close); `None` until a `stats` counts them by a scan.
    pub(crate) data: Mutex<Option<plan::DataCounts>>,
    /// Whether `data` must be saved when the handle closes.
    due: AtomicBool,
    /// Redundant links not recorded by the links guardrail since this handle opened.
    pub(crate) links_not_recorded: AtomicU64,
    /// Refused merges not written to the full refusal log since this handle opened.
    pub(crate) refusals_not_logged: AtomicU64,
}

/// The guardrails and limits of a handle, from its [`Config`].
pub(crate) struct Policy {
    blocked: crate::id::BlockedIds,
    max_person_size: u64,
    pub(crate) max_links_per_person: u32,
    pub(crate) max_refusals_logged: u64,
    pub(crate) limits: crate::op::Limits,
}

impl Drop for Store {
    /// Writes the graph index when it is due ([`Store::write_index`]); a failure only means
    /// the next open rebuilds the graph from sled.
    fn drop(&mut self) {
        let _ = self.write_index();
        let _ = self.save_data_counts();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The person of node `n`: its canonical ID and its IDs in first-seen order.
fn person(g: &Graph, n: Node) -> Person {
    Person {
        person: g.person_id(n).to_owned(),
        ids: g
            .members_sorted(n)
            .into_iter()
            .map(|m| g.ident(m).to_owned())
            .collect(),
    }
}

impl Store {
    /// Opens (or creates) the store in `path` with default settings.
    ///
    /// # Errors
    /// As [`Config::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Config::new(path).open()
    }

    /// The store's directory (`None` for a temporary store).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    // ---- writing -------------------------------------------------------------------------

    /// Applies one op; see [`apply_batch`](Self::apply_batch).
    ///
    /// # Cost
    /// An op that writes one key is one plain sled insert; one that writes several (an alias
    /// of two new IDs, an event with properties) goes through a redo record (DESIGN.md,
    /// "Applying a batch").
    ///
    /// # Errors
    /// As [`apply_batch`](Self::apply_batch).
    pub fn apply(&self, op: Op) -> Result<Outcome> {
        let mut v = self.apply_batch(std::slice::from_ref(&op))?;
        Ok(v.pop().expect("one outcome per op"))
    }

    /// Links `a` and `b` now, with cause [`Cause::Api`].
    ///
    /// # Cost
    /// As [`apply`](Self::apply): keys written are 1 per new ID (an edge that introduces a new
    /// ID rides in its record) + 1 edge key when both IDs were known. No sled reads.
    ///
    /// # Errors
    /// As [`apply_batch`](Self::apply_batch).
    pub fn alias(&self, a: &Identity, b: &Identity) -> Result<AliasOutcome> {
        match self.apply(Op::alias(a.clone(), b.clone(), now(), Cause::Api))? {
            Outcome::Alias(o) => Ok(o),
            Outcome::Stored | Outcome::PropertiesRefused { .. } | Outcome::Suppressed => {
                unreachable!("an alias op has an alias outcome")
            }
        }
    }

    /// Applies ops in order, atomically: after a crash either all of them are in the store or
    /// none. Returns one outcome per op (a refused merge is an outcome, not an error).
    ///
    /// # Cost
    /// One op: as [`apply`](Self::apply). Several ops: one sled batch. Keys written: 1 per new
    /// ID, 1 per new alias edge between known IDs, 1 per event, 1 per known ID whose record
    /// (flags, properties) changes; 1 sled read per known ID whose record changes.
    ///
    /// # Errors
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad event or property name,
    /// [`Error::Limit`](crate::Error::Limit) for an op past the store's
    /// [`Limits`](crate::Limits) (nothing is written); [`Error::Storage`](crate::Error::Storage) when sled fails (nothing
    /// is written); [`Error::Interrupted`](crate::Error::Interrupted) when a write of several
    /// keys failed halfway; [`Error::Full`](crate::Error::Full) past 4 billion IDs.
    pub fn apply_batch(&self, ops: &[Op]) -> Result<Vec<Outcome>> {
        Ok(self
            .apply_batch_costed(ops)?
            .into_iter()
            .map(|(o, _)| o)
            .collect())
    }

    /// [`apply_batch`](Self::apply_batch), and the cost of each op: about the bytes it would
    /// write applied alone (the server charges it to the client's write budget).
    pub(crate) fn apply_batch_costed(&self, ops: &[Op]) -> Result<Vec<(Outcome, u64)>> {
        for op in ops {
            op.validate_with(&self.policy.limits)?;
        }
        let _w = self.writer.lock();
        self.begin_write()?;
        let graph = self.graph()?;
        let mut p = plan::Planner::new(self, &graph);
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(p.apply_costed(op)?);
        }
        let added = p.added;
        let (writes, delta) = p.finish()?;
        drop(graph);
        let replaced = self.commit(writes, ops.len())?;
        self.graph_mut()?.commit(delta);
        let mut counts = self.counts.data.lock();
        match (&mut *counts, replaced) {
            (Some(c), Some(replaced)) => {
                c.events += added.events - replaced;
                c.properties += added.properties;
                c.at_limit += added.at_limit;
            }
            // Not known: counted by a scan when asked (the saved counts were removed by the
            // handle's first write).
            (counts, None) => *counts = None,
            (None, Some(_)) => {}
        }
        Ok(out)
    }

    /// Applies every op of `source`, with the same result as [`apply`](Self::apply) on each in
    /// order, but far faster for large inputs. Holds the writer for its whole run.
    ///
    /// `source` is read once. Nothing is written when it reports bad input (or fails) while it
    /// is read. The writing that follows is not atomic across a crash: rerun the same import to
    /// complete it (re-applying the same ops changes nothing).
    ///
    /// # Errors
    /// What `source` reports ([`Error::Input`](crate::Error::Input) with its position,
    /// [`Error::Io`](crate::Error::Io)); [`Error::Storage`](crate::Error::Storage).
    pub fn bulk_apply(&self, source: &mut dyn OpSource, opts: BulkOptions) -> Result<BulkReport> {
        let _w = self.writer.lock();
        // It writes without keeping old values for a backup's cut: a backup ends first.
        self.wait_for_backup();
        self.begin_write()?;
        // Unknown until the import has written everything: a failed import leaves the next
        // `stats` to count by a scan.
        let counts = self.counts.data.lock().take();
        bulk::apply(self, source, opts, counts)
    }

    /// What imports have read of the file at `path` (canonicalized here), if any.
    ///
    /// # Errors
    /// A path that cannot be canonicalized ([`Error::Io`](crate::Error::Io)), or a record
    /// that does not decode.
    pub fn file_part(&self, path: &Path) -> Result<Option<FilePart>> {
        let path = std::fs::canonicalize(path)
            .map_err(|e| crate::Error::io(path.display().to_string(), e))?;
        match self
            .db
            .get(codec::file_key(path.as_os_str().as_encoded_bytes()))?
        {
            Some(v) => Ok(Some(codec::decode(&v, "an imported file's record")?)),
            None => Ok(None),
        }
    }

    pub(crate) fn max_person_size(&self) -> u64 {
        self.policy.max_person_size
    }

    /// Makes everything applied so far durable; returns the bytes written.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when the write fails.
    pub fn flush(&self) -> Result<usize> {
        Ok(self.db.flush()?)
    }

    // ---- who is this? ----------------------------------------------------------------------

    /// Whether the store has seen `id`.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when the graph cannot be read.
    pub fn contains(&self, id: &str) -> Result<bool> {
        self.ask(
            |g| g.lookup(id).is_some(),
            |ix| Ok(ix.lookup(id)?.is_some()),
        )
    }

    /// The person `id` belongs to: its canonical ID and all its IDs; `None` for an unknown ID.
    ///
    /// # Cost
    /// No sled access: the graph is held in memory, O(IDs of the person) — or, on a store
    /// opened with a current graph index and not written since, a few reads of the index.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when the graph cannot be read.
    pub fn resolve(&self, id: &str) -> Result<Option<Person>> {
        self.ask(
            |g| g.lookup(id).map(|n| person(g, n)),
            |ix| {
                let Some(n) = ix.lookup(id)? else {
                    return Ok(None);
                };
                let (canon, members) = ix.person(n)?;
                Ok(Some(Person {
                    person: ix.ident(canon)?,
                    ids: members
                        .into_iter()
                        .map(|m| ix.ident(m))
                        .collect::<Result<_>>()?,
                }))
            },
        )
    }

    /// The canonical ID of `id`'s person, without listing its IDs.
    ///
    /// # Cost
    /// No sled access; O(log size of the person) (from the index: O(size of the person)).
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve).
    pub fn canonical(&self, id: &str) -> Result<Option<String>> {
        self.ask(
            |g| g.lookup(id).map(|n| g.person_id(n).to_owned()),
            |ix| match ix.lookup(id)? {
                None => Ok(None),
                Some(n) => Ok(Some(ix.ident(ix.person(n)?.0)?)),
            },
        )
    }

    /// The members of `id`'s person with their IDs, in first-seen order (empty if unknown).
    fn member_nodes(&self, id: &str) -> Result<Vec<(Node, String)>> {
        self.ask(
            |g| match g.lookup(id) {
                None => Vec::new(),
                Some(n) => g
                    .members_sorted(n)
                    .into_iter()
                    .map(|m| (m, g.ident(m).to_owned()))
                    .collect(),
            },
            |ix| {
                let Some(n) = ix.lookup(id)? else {
                    return Ok(Vec::new());
                };
                ix.person(n)?
                    .1
                    .into_iter()
                    .map(|m| Ok((m, ix.ident(m)?)))
                    .collect()
            },
        )
    }

    // ---- what did this person do? ------------------------------------------------------------

    /// Every event of `id`'s person, from all its IDs, in time order (equal times: by ID, then
    /// name). Empty for an unknown ID.
    ///
    /// # Cost
    /// One sled range scan per ID of the person.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when stored events cannot be read.
    pub fn events(&self, id: &str) -> Result<Vec<Event>> {
        self.consistent(|| self.events_now(id))
    }

    fn events_now(&self, id: &str) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        let members = self.member_nodes(id)?;
        let nodes: Vec<Node> = members.iter().map(|m| m.0).collect();
        let upto = self.packed_upto.load(std::sync::atomic::Ordering::Relaxed);
        events::for_nodes(&self.db, &nodes, upto, |i, at, event, properties| {
            out.push(Event {
                id: members[i].1.clone(),
                event,
                at,
                properties,
            });
        })?;
        // Lower-casing only on a tie of time and ID (rare): one allocation per comparison
        // otherwise made 100,000 events sort in ~10x the time.
        out.sort_by(|x, y| {
            (x.at, &x.id)
                .cmp(&(y.at, &y.id))
                .then_with(|| x.event.to_lowercase().cmp(&y.event.to_lowercase()))
        });
        Ok(out)
    }

    /// The properties of `id`'s person: per name (case-insensitive), the value set latest
    /// under any of its IDs (equal times: the one applied last). Sorted by lower-cased name.
    /// Empty for an unknown ID.
    ///
    /// # Cost
    /// One sled read per ID of the person (two for an ID whose record is packed and was
    /// never rewritten).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when stored values cannot be read.
    pub fn properties(&self, id: &str) -> Result<Vec<Property>> {
        self.consistent(|| self.properties_now(id))
    }

    fn properties_now(&self, id: &str) -> Result<Vec<Property>> {
        let mut best: BTreeMap<String, (StoredProp, String)> = BTreeMap::new();
        // The spelling shown: the one of the earliest-seen ID holding the name (members come
        // in first-seen order).
        let mut spelling: FxHashMap<String, String> = FxHashMap::default();
        for (n, ident) in self.member_nodes(id)? {
            let Some(rec) = records::read_id_record(&self.db, &ident, n)? else {
                continue;
            };
            for p in rec.props.0 {
                let lname = p.name.to_lowercase();
                spelling
                    .entry(lname.clone())
                    .or_insert_with(|| p.name.clone());
                match best.get(&lname) {
                    Some((q, _)) if (q.at, q.seq) >= (p.at, p.seq) => {}
                    _ => {
                        best.insert(lname, (p, ident.clone()));
                    }
                }
            }
        }
        Ok(best
            .into_iter()
            .map(|(lname, (p, id))| Property {
                name: spelling.remove(&lname).unwrap_or(p.name),
                value: p.value.into(),
                at: p.at,
                id,
            })
            .collect())
    }

    // ---- export ----------------------------------------------------------------------------

    /// Calls `f` with every ID and its person's canonical ID, in the order the store first saw
    /// the IDs, and the time it first saw each. Writers wait while it runs.
    ///
    /// # Errors
    /// What `f` returns; [`Error::Storage`](crate::Error::Storage).
    pub fn for_each_id(&self, f: impl FnMut(&str, &str, Timestamp) -> Result<()>) -> Result<()> {
        let _w = self.writer.lock();
        records::for_each_id(&self.db, &*self.graph()?, f)
    }

    /// Calls `f` with every event, ID by ID and in time order within an ID, with its person's
    /// canonical ID. Streams: memory stays constant. Writers wait while it runs.
    ///
    /// # Errors
    /// What `f` returns; [`Error::Storage`](crate::Error::Storage) or
    /// [`Error::Corrupt`](crate::Error::Corrupt) when an event cannot be read.
    pub fn for_each_event(&self, f: impl FnMut(ExportedEvent) -> Result<()>) -> Result<()> {
        let _w = self.writer.lock();
        records::for_each_event(&self.db, &*self.graph()?, f)
    }

    /// The refused merges, in key order.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when the log cannot be read.
    pub fn refusals(&self) -> Result<Vec<Refusal>> {
        self.consistent(|| self.refusals_now())
    }

    fn refusals_now(&self) -> Result<Vec<Refusal>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([codec::REFUSAL]) {
            let (_, v) = kv?;
            let r: StoredRefusal = codec::decode(&v, "a refusal")?;
            out.push(Refusal {
                a: r.a,
                b: r.b,
                reason: r.reason,
                cause: r.cause,
                at: r.at,
            });
        }
        Ok(out)
    }

    // ---- why are these one person? ------------------------------------------------------------

    /// The alias links among the IDs of `id`'s person, in the order they were made (each with
    /// the orientation it was made with). Empty for an unknown ID.
    ///
    /// # Cost
    /// O(IDs + links of the person) in memory, then one or two sled reads per link.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when a stored link cannot be read.
    pub fn links(&self, id: &str) -> Result<Vec<Link>> {
        self.consistent(|| self.links_now(id))
    }

    fn links_now(&self, id: &str) -> Result<Vec<Link>> {
        repair::links(self, id)
    }

    /// Why `a` and `b` are one person: the shortest chain of alias links between them, each
    /// with its cause, time and source. Different persons (or an unknown ID): `same_person` is
    /// false and there are no links.
    ///
    /// # Cost
    /// A breadth-first search over the person's links in memory (O(IDs + links of the person)),
    /// then one or two sled reads per link of the chain.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when a stored link cannot be read.
    pub fn explain(&self, a: &str, b: &str) -> Result<Explanation> {
        self.consistent(|| self.explain_now(a, b))
    }

    fn explain_now(&self, a: &str, b: &str) -> Result<Explanation> {
        repair::explain(self, a, b)
    }

    /// `id`'s person as a graph to draw; `None` for an unknown ID. Each ID's `first_seen` is
    /// `None` (see [`Store::person_graph_first_seen`]).
    ///
    /// # Cost
    /// As [`Store::links`].
    ///
    /// # Errors
    /// As [`Store::links`].
    pub fn person_graph(&self, id: &str) -> Result<Option<PersonGraph>> {
        self.consistent(|| self.person_graph_with(id, repair::FirstSeen::Without))
    }

    /// [`Store::person_graph`] with each ID's first-seen time.
    ///
    /// # Cost
    /// As [`Store::links`], plus one sled read per ID (its record).
    ///
    /// # Errors
    /// As [`Store::links`]; [`Error::Corrupt`](crate::Error::Corrupt) for an ID without a
    /// record.
    pub fn person_graph_first_seen(&self, id: &str) -> Result<Option<PersonGraph>> {
        self.consistent(|| self.person_graph_with(id, repair::FirstSeen::With))
    }

    /// The `top` largest persons and the `top` IDs with the most alias links: where squished
    /// identities (one person made of many strangers) show up first. Ties go to the person
    /// (or ID) the store saw first.
    ///
    /// # Cost
    /// While the store answers from its graph index (the graph not loaded): up to `top` 100,
    /// the lists the index keeps (one page); past that, one read of the index's person and
    /// link arrays in chunks, 4 bytes of memory per ID. Otherwise one pass over the graph in
    /// memory (O(IDs)). Memory besides: `top` pairs of each kind. No sled access.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when the graph cannot be loaded.
    pub fn hubs(&self, top: usize) -> Result<Hubs> {
        self.ask(|g| repair::hubs(g, top), |ix| ix.hubs(top))
    }

    // ---- repair ----------------------------------------------------------------------------

    /// Removes the direct link between `a` and `b` and splits their person into the persons
    /// that stay connected without it (recomputed from the remaining links). Events and
    /// properties stay with their IDs, so they follow. `None` (nothing changed) when there is no
    /// direct link between them; otherwise the resulting persons: one when other links still
    /// join `a` and `b`, two when the person split.
    ///
    /// Atomic: on disk it is one write (the edge's key deleted, or the record that held the edge
    /// rewritten without it), so after a crash the store holds the state before or after.
    /// Durable at the next [`flush`](Store::flush).
    ///
    /// # Cost
    /// O(IDs + links of the person) in memory, one or two sled reads and one write.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when the store cannot be read or written.
    pub fn unalias(&self, a: &str, b: &str) -> Result<Option<Vec<Person>>> {
        let _w = self.writer.lock();
        self.begin_write()?;
        let Some(roots) = repair::unalias(self, a, b)? else {
            return Ok(None);
        };
        let g = self.graph()?;
        Ok(Some(roots.into_iter().map(|r| person(&g, r)).collect()))
    }

    /// Deletes `id`'s whole person — every ID, alias link, event and property, and the
    /// refused-merge records that name one of its IDs — atomically across a crash (a redo
    /// record of the removals, finished at open if a crash interrupts it). Afterwards
    /// no query or export finds any of it. `None` for an unknown ID.
    ///
    /// Durable at the next [`flush`](Store::flush). sled is log-structured: the deleted bytes
    /// stay in its log files until sled rewrites those segments; for erasure from the disk
    /// itself, export the store and import it into a new one.
    ///
    /// # Cost
    /// O(IDs + links + events of the person), plus one scan of the refused-merge log (which
    /// has one record per refused pair of IDs).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when the store cannot be read or written.
    pub fn forget(&self, id: &str) -> Result<Option<Forgotten>> {
        let _w = self.writer.lock();
        self.begin_write()?;
        *self.counts.data.lock() = None; // the next `stats` counts by a scan
        repair::forget(self, id)
    }

    // ---- how is the store? -----------------------------------------------------------------
}

#[cfg(test)]
mod tests {
    use crate::codec::{self, compact};
    use crate::op::{Cause, Op, Properties};
    use crate::{BulkOptions, Identity, Store};

    fn id(s: &str) -> Identity {
        Identity::new(s).unwrap()
    }

    /// Everything a reader sees: per ID its person, events and properties; all events
    /// exported; verify's counts.
    fn answers(s: &Store, ids: &[String]) -> String {
        let mut out = String::new();
        for i in ids {
            out += &format!(
                "{i} {:?} {:?} {:?}\n",
                s.canonical(i).unwrap(),
                s.events(i).unwrap(),
                s.properties(i).unwrap()
            );
        }
        s.for_each_event(|e| {
            out += &format!("{e:?}\n");
            Ok(())
        })
        .unwrap();
        let v = s.verify().unwrap();
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        out + &format!("{} {} {}", v.ids, v.events, v.properties)
    }

    fn ops(round: i64) -> Vec<Op> {
        let mut ops = Vec::new();
        for i in 0..300 {
            let mut p = Properties::new();
            p.insert("Plan", if i % 3 == 0 { "pro" } else { "Ünïcode ✓" })
                .unwrap();
            p.insert("n", i).unwrap();
            p.insert("ratio", i as f64 / 7.0).unwrap();
            let who = id(&format!("user{}", i % 120));
            let name = ["Signed Up", "VIEWED", "Ärger", "x"][i as usize % 4];
            ops.push(Op::record(
                who.clone(),
                name,
                p.clone(),
                1000 * round + i / 3,
            ));
            if i % 5 == 0 {
                ops.push(Op::set(who.clone(), p, 1000 * round + i));
            }
            if i % 7 == 0 {
                let anon = id(&format!("anon{}-{round}", i));
                ops.push(Op::alias(anon, who, 1000 * round + i, Cause::Import));
            }
        }
        ops
    }

    /// sled itself on a store's directory, once the handle dropped just before has let go of
    /// it (sled's threads may hold its lock a moment longer on a loaded machine).
    fn raw_sled(dir: &std::path::Path) -> sled::Db {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match sled::open(dir) {
                Ok(db) => return db,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("could not acquire lock"), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A format-5 store holds its blocks in the plain layout: such a store opens, answers as it
    /// did, and takes writes (online and bulk) that fold its plain blocks into compact ones.
    #[test]
    fn plain_blocks_of_format_5_are_read_as_they_are() {
        let small = BulkOptions {
            event_block_bytes: 300,
            ..BulkOptions::default()
        };
        let run = |dir: &std::path::Path, downgrade: bool| -> String {
            let ids: Vec<String> = (0..120)
                .map(|i| format!("user{i}"))
                .chain((0..300).step_by(7).map(|i| format!("anon{i}-1")))
                .collect();
            {
                let s = Store::open(dir).unwrap();
                s.bulk_apply(&mut ops(1), small).unwrap();
            }
            if downgrade {
                let db = raw_sled(dir);
                let mut blocks = 0;
                for prefix in [codec::PACKED, codec::EVENT_BLOCK] {
                    for kv in db.scan_prefix([prefix]) {
                        let (k, v) = kv.unwrap();
                        assert_eq!(v[0], compact::MARK);
                        let plain = if prefix == codec::PACKED {
                            compact::ids_plain(&v).unwrap().into_owned()
                        } else {
                            compact::events_plain(&v).unwrap().into_owned()
                        };
                        db.insert(k, plain).unwrap();
                        blocks += 1;
                    }
                }
                assert!(blocks > 10, "{blocks}");
                db.insert(codec::FORMAT_KEY, &5u32.to_be_bytes()).unwrap();
                db.flush().unwrap();
            }
            let mut out = String::new();
            {
                let s = Store::open(dir).unwrap();
                out += &answers(&s, &ids);
                // Online writes onto packed IDs, then a second import over the same nodes.
                for op in ops(2).into_iter().step_by(9) {
                    s.apply(op).unwrap();
                }
                s.bulk_apply(&mut ops(2), small).unwrap();
                s.bulk_apply(&mut ops(1), small).unwrap();
                out += &answers(&s, &ids);
            }
            let db = raw_sled(dir);
            assert_eq!(
                db.get(codec::FORMAT_KEY).unwrap().unwrap().as_ref(),
                codec::FORMAT_VERSION.to_be_bytes()
            );
            out
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let plain = run(a.path(), true);
        let compact = run(b.path(), false);
        assert_eq!(plain, compact);
        assert!(plain.contains("Ünïcode ✓") && plain.contains("Ärger"));
    }
}
