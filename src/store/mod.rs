//! [`Store`], the public API of the identity graph: open, apply ops, answer queries, export,
//! repair, flush, verify. Each method is a short entry point; the work lives by job in the
//! submodules:
//!
//! | module | owns |
//! |---|---|
//! | `config` | [`Config`], the builder and its defaults |
//! | `recovery` | opening: format check, finishing a redo record, loading the graph; writing redo records |
//! | `plan` | the planner: ops → staged graph changes + the sled writes of one batch |
//! | `records` | the record layer: the one place that knows own keys vs packed blocks, events, edges kept in records |
//! | `bulk` | [`Store::bulk_apply`]: one pass over millions of ops |
//! | `repair` | explain, unalias, forget, links, hubs |
//! | `verify` | [`Store::verify`], one function per invariant family |

mod bulk;
mod config;
mod events;
mod index;
mod plan;
mod records;
mod recovery;
mod repair;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use parking_lot::{
    MappedRwLockReadGuard, MappedRwLockWriteGuard, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::codec::{self, IdRecord, StoredProp, StoredRefusal};
use crate::dot::{GraphId, PersonGraph};
use crate::error::Result;
use crate::forest::Node;
use crate::graph::Graph;
use crate::id::{Identity, blocked_key};
use crate::op::{
    AliasOutcome, Cause, Event, Link, Op, Outcome, Person, Property, RefusalReason, Timestamp, now,
};
use crate::source::{FilePart, OpSource};

pub use bulk::{BulkOptions, BulkReport};
pub use config::{Config, DEFAULT_MAX_PERSON_SIZE};
pub use events::ExportedEvent;
pub use repair::{Explanation, Forgotten, Hubs};
pub use verify::{VerifyProgress, VerifyReport};

/// The graph index's fuzz target (`crate::fuzz::graph_index`).
pub(crate) fn fuzz_index(data: &[u8]) {
    index::fuzz(data);
}

/// The largest write (keys and values) of one op that goes through a redo record; a larger
/// one is a sled batch. The redo record copies every byte once more (written, then removed),
/// which costs more than a batch's fixed 80-100 µs past a few tens of KiB: a small op on an ID
/// holding 8 MB of properties took 35.8 ms with the redo record, 4.4 ms as a batch
/// (`cargo bench --bench hostile`).
const REDO_MAX_BYTES: usize = 32 << 10;

/// The same limit for a batch of several ops. Through a redo record and plain inserts, a
/// batch of 100-2,000 alias ops ran 1.25-1.34x `apply` per op at 1.2x its memory, where one
/// sled batch ran 0.79x at 2.3x (and 845 MB for 10,000 ops); 10,000 ops (1.2 MB of writes)
/// ran 0.90x through the record at 137 MB (BENCHMARKS.md, "Batches").
const REDO_BATCH_MAX_BYTES: usize = 4 << 20;

/// Counts that describe a store; see [`Store::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// IDs known.
    pub ids: u64,
    /// Persons (sets of IDs).
    pub persons: u64,
    /// IDs of the largest person.
    pub largest_person: u64,
    /// Alias edges in the log.
    pub edges: u64,
    /// Merges refused by a guardrail (distinct ID pairs).
    pub refused_merges: u64,
    /// Stored events.
    pub events: u64,
    /// Stored property values (one per ID and property name).
    pub properties: u64,
    /// Redundant links (between IDs already one person) not recorded since the store was
    /// opened, because the person held
    /// [`Config::max_links_per_person`](crate::Config::max_links_per_person) links.
    pub links_not_recorded: u64,
    /// Refused merges of pairs not written to the refusal log since the store was opened,
    /// because it held [`Config::max_refusals_logged`](crate::Config::max_refusals_logged)
    /// records (the merges were refused all the same).
    pub refusals_not_logged: u64,
    /// IDs that hold [`Limits::max_properties_per_id`](crate::Limits::max_properties_per_id)
    /// names: new names sent to them are not kept.
    pub ids_at_property_limit: u64,
    /// Bytes sled uses on disk.
    pub disk_bytes: u64,
}

/// What the state guardrails left out since the handle opened; see [`Store::guardrails`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guardrails {
    /// Records in the refusal log (at most
    /// [`Config::max_refusals_logged`](crate::Config::max_refusals_logged)).
    pub refusals_logged: u64,
    /// As [`Stats::links_not_recorded`].
    pub links_not_recorded: u64,
    /// As [`Stats::refusals_not_logged`].
    pub refusals_not_logged: u64,
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
    /// The graph index as it was at open, when current (DESIGN.md, "The graph index"):
    /// `resolve`, `events` and `properties` read it until the graph is loaded.
    index: Option<index::GraphIndex>,
    /// Whether this handle must write the index when it closes: it wrote, or found none.
    index_due: AtomicBool,
    /// Whether this handle has removed the index's stamp from sled (before its first write).
    index_unstamped: AtomicBool,
    /// Set when reading the index failed: it is not asked again.
    index_broken: AtomicBool,
    /// Held while the graph is loaded (one load at a time; readers do not wait for it).
    loading: Mutex<()>,
    /// Events, properties and IDs at the property limit, when known (kept by the writers,
    /// saved under `m data_counts` at close); `None` until a `stats` counts them by a scan.
    data_counts: Mutex<Option<plan::DataCounts>>,
    /// Whether `data_counts` must be saved when the handle closes.
    counts_due: AtomicBool,
    /// One past the last node with packed events (`events::packed_upto`).
    packed_upto: std::sync::atomic::AtomicU64,
    /// Set when a write failed between the keys of one op (see
    /// [`Error::Interrupted`](crate::Error::Interrupted)).
    poisoned: AtomicBool,
    blocked: FxHashSet<String>,
    max_person_size: u64,
    pub(crate) max_links_per_person: u32,
    /// Redundant links not recorded by the links guardrail since this handle opened.
    pub(crate) links_not_recorded: std::sync::atomic::AtomicU64,
    pub(crate) max_refusals_logged: u64,
    /// Refused merges not written to the full refusal log since this handle opened.
    pub(crate) refusals_not_logged: std::sync::atomic::AtomicU64,
    pub(crate) limits: crate::op::Limits,
    path: Option<PathBuf>,
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
            Outcome::Stored | Outcome::PropertiesRefused { .. } => {
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
            op.validate_with(&self.limits)?;
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
        // Planned events that replace a stored one (same ID, name and second) add nothing to
        // the count of events: a plain insert says so itself; for several keys, when the
        // counts are kept, one read per event key before the write.
        let counting = self.data_counts.lock().is_some();
        let mut replaced = 0u64;
        // An event also replaces its packed copy (DESIGN.md, "Packed events"), looked up
        // only for a node that blocks may hold, and only when no `v` key was replaced.
        let upto = self.packed_upto.load(std::sync::atomic::Ordering::Relaxed);
        let packed = |k: &[u8]| -> Result<bool> {
            Ok(codec::key_node(k)?.as_u64() < upto && events::packed_contains(&self.db, k)?)
        };
        // Blocks of packed events the batch writes (`events::pack_new`): readers must look
        // them up from the moment the graph shows their nodes.
        let packed_after = writes
            .range(vec![codec::EVENT_BLOCK]..vec![codec::EVENT_BLOCK + 1])
            .next_back()
            .map(|(k, _)| codec::key_node(k).map(|n| n.as_u64() + 1))
            .transpose()?;
        if counting && writes.len() > 1 {
            for k in writes.keys().filter(|k| k.first() == Some(&codec::EVENT)) {
                replaced += u64::from(self.db.contains_key(k)? || packed(k)?);
            }
        }
        // One key is atomic on its own and a plain insert costs a fraction of a sled batch.
        // Several keys (one op, or a batch up to REDO_BATCH_MAX_BYTES): a redo record, the
        // plain inserts in key order, and the record's removal; recovery at open finishes
        // writes whose record survived a crash. Larger: one sled batch.
        if writes.len() == 1 {
            let (k, v) = writes.into_iter().next().expect("one write");
            let event = k.first() == Some(&codec::EVENT);
            // The key is kept (a copy) only when a block may hold its event.
            let may_be_packed =
                event && counting && codec::key_node(&k).is_ok_and(|n| n.as_u64() < upto);
            let key = may_be_packed.then(|| k.clone());
            let old = self.db.insert(k, v)?;
            if event && old.is_some() {
                replaced += 1;
            } else if let Some(k) = key {
                replaced += u64::from(events::packed_contains(&self.db, &k)?);
            }
        } else if !writes.is_empty()
            && writes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                <= if ops.len() == 1 {
                    REDO_MAX_BYTES
                } else {
                    REDO_BATCH_MAX_BYTES
                }
        {
            recovery::write_redo(
                self,
                writes.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            )?;
        } else if !writes.is_empty() {
            let mut batch = sled::Batch::default();
            for (k, v) in writes {
                batch.insert(k, v);
            }
            self.db.apply_batch(batch)?;
        }
        if let Some(upto) = packed_after {
            self.packed_upto
                .fetch_max(upto, std::sync::atomic::Ordering::Relaxed);
        }
        self.graph_mut()?.commit(delta);
        if let Some(c) = &mut *self.data_counts.lock() {
            c.events += added.events - replaced;
            c.properties += added.properties;
            c.at_limit += added.at_limit;
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
        self.begin_write()?;
        // Unknown until the import has written everything: a failed import leaves the next
        // `stats` to count by a scan.
        let counts = self.data_counts.lock().take();
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

    /// Before a write, under the writer lock: refuses when the handle is poisoned, loads the
    /// graph, and makes the graph index stale — its stamp removed from sled before anything
    /// else this handle writes, so that no crash can leave a write with the old stamp.
    pub(crate) fn begin_write(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.check_writable()?;
        self.load_graph()?;
        if !self.index_unstamped.load(SeqCst) {
            self.db.remove(codec::DATA_COUNTS_KEY)?;
            self.counts_due.store(true, SeqCst);
            self.db.remove(codec::INDEX_STAMP_KEY)?;
            self.index_unstamped.store(true, SeqCst);
            self.index_due.store(true, SeqCst);
        }
        Ok(())
    }

    /// Writes the graph index of the graph in memory, and its stamp, if this handle wrote or
    /// found no current index (nothing to do otherwise, or for a temporary store). Called when
    /// the handle is dropped; call it to learn whether it worked.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the index file cannot be written,
    /// [`Error::Storage`](crate::Error::Storage) when sled cannot be written.
    pub fn write_index(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let _w = self.writer.lock();
        let Some(dir) = &self.path else {
            return Ok(());
        };
        if !self.index_due.load(SeqCst) || self.poisoned.load(SeqCst) {
            return Ok(());
        }
        let g = self.graph.read();
        let Some(g) = &*g else {
            return Ok(());
        };
        // Durable first: the stamp must not name an index of writes sled could still lose.
        self.db.flush()?;
        let stamp = index::new_stamp(g);
        index::write(dir, g, stamp)?;
        self.db.insert(codec::INDEX_STAMP_KEY, &stamp)?;
        self.db.flush()?;
        self.index_unstamped.store(false, SeqCst);
        self.index_due.store(false, SeqCst);
        Ok(())
    }

    /// `Err` once a write was interrupted halfway (see
    /// [`Error::Interrupted`](crate::Error::Interrupted)).
    pub(crate) fn check_writable(&self) -> Result<()> {
        recovery::check_writable(&self.poisoned)
    }

    pub(crate) fn is_blocked(&self, id: &str) -> bool {
        self.blocked.contains(&blocked_key(id))
    }

    pub(crate) fn max_person_size(&self) -> u64 {
        self.max_person_size
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

    /// Answers from the graph index while it is current and the graph not loaded
    /// (`on_index`), else from the graph, loaded now if need be (`on_graph`). An index that
    /// fails (damaged, unreadable) is not asked again: the graph is loaded from sled and the
    /// index rewritten when the handle closes.
    fn ask<T>(
        &self,
        on_graph: impl FnOnce(&Graph) -> T,
        on_index: impl FnOnce(&index::GraphIndex) -> Result<T>,
    ) -> Result<T> {
        use std::sync::atomic::Ordering::SeqCst;
        if let Some(ix) = &self.index
            && !self.index_broken.load(SeqCst)
            && self.graph.read().is_none()
        {
            match on_index(ix) {
                Ok(v) => return Ok(v),
                Err(_) => {
                    self.index_broken.store(true, SeqCst);
                    self.index_due.store(true, SeqCst);
                }
            }
        }
        Ok(on_graph(&*self.graph()?))
    }

    /// Whether queries are answered from the graph index (opened current, not written since,
    /// not found damaged): the graph has not been loaded.
    pub fn answers_from_index(&self) -> bool {
        self.index.is_some()
            && !self.index_broken.load(std::sync::atomic::Ordering::SeqCst)
            && self.graph.read().is_none()
    }

    /// The graph, loaded from sled first if this handle has not loaded it yet.
    pub(crate) fn graph(&self) -> Result<MappedRwLockReadGuard<'_, Graph>> {
        self.load_graph()?;
        Ok(RwLockReadGuard::map(self.graph.read(), |g| {
            g.as_ref().expect("loaded above; never unloaded")
        }))
    }

    /// The graph to change, loaded from sled first if need be.
    pub(crate) fn graph_mut(&self) -> Result<MappedRwLockWriteGuard<'_, Graph>> {
        self.load_graph()?;
        let g = self.graph.write();
        Ok(RwLockWriteGuard::map(g, |g| {
            g.as_mut().expect("loaded above; never unloaded")
        }))
    }

    /// Loads the graph into memory now, if it is not loaded yet (a server calls it at start,
    /// so that its first write does not wait for the load). While it loads, queries go on
    /// answering from the graph index: nothing can be written before the graph is loaded, so
    /// the index and the store agree meanwhile.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when the graph cannot be read from sled.
    pub fn load_graph(&self) -> Result<()> {
        self.load_graph_from(true)
    }

    /// [`Store::load_graph`], from the graph index only when `use_index` (and it is current):
    /// `verify` rebuilds from the alias log, to check the index against it.
    fn load_graph_from(&self, use_index: bool) -> Result<()> {
        if self.graph.read().is_some() {
            return Ok(());
        }
        use std::sync::atomic::Ordering::SeqCst;
        let _one = self.loading.lock();
        if self.graph.read().is_none() {
            // From the index while it is current (nothing can be written before the graph is
            // loaded): no scan of the ID records, whose pages sled would keep (DESIGN.md,
            // "What the server's memory is made of"). A damaged index: from sled.
            let from_index = match &self.index {
                Some(ix) if use_index && !self.index_broken.load(SeqCst) => match ix.load_graph() {
                    Ok(g) => Some(g),
                    Err(_) => {
                        // Rewritten when the handle closes, as when a query finds it damaged.
                        self.index_broken.store(true, SeqCst);
                        self.index_due.store(true, SeqCst);
                        None
                    }
                },
                _ => None,
            };
            let g = match from_index {
                Some(g) => g,
                None => recovery::load_graph(&self.db)?,
            };
            *self.graph.write() = Some(g);
        }
        Ok(())
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
        self.person_graph_with(id, false)
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
        self.person_graph_with(id, true)
    }

    fn person_graph_with(&self, id: &str, first_seen: bool) -> Result<Option<PersonGraph>> {
        let (person, members) = {
            let g = self.graph()?;
            let Some(n) = g.lookup(id) else {
                return Ok(None);
            };
            let members: Vec<(Node, String, bool)> = g
                .members_sorted(n)
                .into_iter()
                .map(|m| (m, g.ident(m).to_owned(), g.flags(m).is_anonymous()))
                .collect();
            (g.person_id(n).to_owned(), members)
        };
        let mut ids = Vec::with_capacity(members.len());
        for (m, ident, anonymous) in members {
            let first_seen = match first_seen {
                false => None,
                true => Some(
                    records::read_id_record(&self.db, &ident, m)?
                        .ok_or_else(|| {
                            crate::Error::Corrupt(format!("ID {ident:?} has no record"))
                        })?
                        .first_seen,
                ),
            };
            ids.push(GraphId {
                id: ident,
                anonymous,
                first_seen,
            });
        }
        let links = self.links(id)?;
        Ok(Some(PersonGraph { person, ids, links }))
    }

    /// The `top` largest persons and the `top` IDs with the most alias links: where squished
    /// identities (one person made of many strangers) show up first.
    ///
    /// # Cost
    /// One pass over the graph in memory (O(IDs)); no sled access.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when the graph cannot be loaded.
    pub fn hubs(&self, top: usize) -> Result<Hubs> {
        Ok(repair::hubs(&*self.graph()?, top))
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
        *self.data_counts.lock() = None; // the next `stats` counts by a scan
        repair::forget(self, id)
    }

    // ---- how is the store? -----------------------------------------------------------------

    /// The refusal log's size and what the state guardrails left out since this handle
    /// opened. O(1).
    pub fn guardrails(&self) -> Guardrails {
        use std::sync::atomic::Ordering::Relaxed;
        Guardrails {
            refusals_logged: self.counts_now().refused,
            links_not_recorded: self.links_not_recorded.load(Relaxed),
            refusals_not_logged: self.refusals_not_logged.load(Relaxed),
        }
    }

    /// IDs and persons in the store, in O(1) (counters kept with the graph): what a monitoring
    /// scrape can afford to ask for as often as it likes.
    pub fn counts(&self) -> (u64, u64) {
        let c = self.counts_now();
        (c.ids, c.persons)
    }

    /// The graph's counters: from the graph when loaded, else from the index's header.
    fn counts_now(&self) -> index::Counts {
        let g = self.graph.read();
        match (&*g, &self.index) {
            (Some(g), _) => index::Counts {
                ids: g.live() as u64,
                persons: g.persons() as u64,
                largest_person: 0,
                edges: g.edges().len() as u64,
                refused: g.refused(),
            },
            (None, Some(ix)) => ix.counts(),
            // Not reached: a store without an index loads its graph at open.
            (None, None) => index::Counts::default(),
        }
    }

    /// Counts of IDs, persons, edges and refusals from memory only (no scan of events and
    /// properties; those counts are 0). O(IDs): the largest person is found by a walk.
    pub fn stats_quick(&self) -> Stats {
        // Before the read lock below: `guardrails` takes its own, and a second read lock in
        // one thread can deadlock against a waiting writer.
        let guard = self.guardrails();
        let c = self.counts_now();
        let mut s = Stats {
            ids: c.ids,
            persons: c.persons,
            largest_person: c.largest_person,
            edges: c.edges,
            refused_merges: c.refused,
            links_not_recorded: guard.links_not_recorded,
            refusals_not_logged: guard.refusals_not_logged,
            ..Stats::default()
        };
        if let Some(g) = &*self.graph.read() {
            for n in g.nodes().filter(|&n| g.is_person_root(n)) {
                s.largest_person = s.largest_person.max(u64::from(g.slot(n).size));
            }
        }
        s
    }

    /// Counts of IDs, persons, edges, events, properties and bytes on disk.
    ///
    /// # Cost
    /// O(1) when the counts of events and properties are known: kept by this handle's writes,
    /// or saved by the handle that last wrote. Otherwise (after an import or a `forget`, or on
    /// a store not closed cleanly) one scan of the events and ID records, holding the writer;
    /// the counts are then kept, and saved at close.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when sled cannot be read.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = self.stats_quick();
        let c = self.data_counts()?;
        s.events = c.events;
        s.properties = c.properties;
        s.ids_at_property_limit = c.at_limit;
        s.disk_bytes = self.db.size_on_disk()?;
        Ok(s)
    }

    /// The counts of events and properties: kept, or counted now by a scan of the store
    /// (holding the writer, so that no write slips between the scan and the counts), then
    /// kept, and saved when the handle closes.
    fn data_counts(&self) -> Result<plan::DataCounts> {
        if let Some(c) = *self.data_counts.lock() {
            return Ok(c);
        }
        let _w = self.writer.lock();
        if let Some(c) = *self.data_counts.lock() {
            return Ok(c);
        }
        let mut c = plan::DataCounts {
            events: events::count(&self.db)?,
            ..Default::default()
        };
        records::scan_id_records(&self.db, |_, v, at| {
            if !matches!(at, records::RecordAt::Shadowed(_)) {
                let n = IdRecord::decode(v)?.props.0.len();
                c.properties += n as u64;
                c.at_limit += u64::from(n >= self.limits.max_properties_per_id);
            }
            Ok(())
        })?;
        *self.data_counts.lock() = Some(c);
        self.counts_due
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(c)
    }

    /// Saves the data counts under `m data_counts` if they changed since they were read or
    /// saved (with the property limit they were counted for, so that a handle opened with
    /// another limit counts again).
    fn save_data_counts(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let _w = self.writer.lock();
        if !self.counts_due.load(SeqCst) || self.poisoned.load(SeqCst) {
            return Ok(());
        }
        if let Some(c) = *self.data_counts.lock() {
            let limit = self.limits.max_properties_per_id as u64;
            let v: Vec<u8> = [c.events, c.properties, c.at_limit, limit]
                .iter()
                .flat_map(|x| x.to_be_bytes())
                .collect();
            self.db.insert(codec::DATA_COUNTS_KEY, v)?;
            self.db.flush()?;
        }
        self.counts_due.store(false, SeqCst);
        Ok(())
    }

    /// Checks every invariant of the store (DESIGN.md, "Invariants") against what is on disk:
    /// ID records, the forest, the alias log, events and properties.
    ///
    /// # Cost
    /// Reads the whole store once and rebuilds the forest from the alias log (and reads the
    /// whole graph index, when current, to compare it with the forest).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when sled cannot be read. Broken invariants are
    /// reported in the [`VerifyReport`], not as errors.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with(&mut |_| {})
    }

    /// [`verify`](Self::verify), telling `progress` how far it has come (at each stage's
    /// start and end, and every 65,536 items): for a progress bar.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub fn verify_with(&self, progress: &mut dyn FnMut(VerifyProgress)) -> Result<VerifyReport> {
        use std::sync::atomic::Ordering::SeqCst;
        let _w = self.writer.lock(); // a stable snapshot: no writes while we look
        // Not loaded yet: rebuilt from the alias log, not from the index it is checked against.
        self.load_graph_from(false)?;
        let g = self.graph()?;
        let mut tick = verify::Tick::new(progress);
        let mut rep = verify::verify(&self.db, &g, &mut tick)?;
        // The counts `stats` keeps, against what was just counted.
        let kept = *self.data_counts.lock();
        if let Some(c) = kept
            && (c.events, c.properties) != (rep.events, rep.properties)
        {
            rep.problem(format!(
                "the kept counts say {} events and {} property values, the store holds {} and {}",
                c.events, c.properties, rep.events, rep.properties
            ));
        }
        // The graph index, while it is current (this handle has not written): the same person
        // for every ID as the graph rebuilt from the alias log.
        if let Some(ix) = &self.index
            && !self.index_unstamped.load(SeqCst)
            && !self.index_broken.load(SeqCst)
        {
            tick.stage("graph index", g.len() as u64);
            let mut bad = false;
            index::check(ix, &g, &mut tick, |p| {
                bad = true;
                rep.problem(format!("{p} (it is rewritten when the store is closed)"));
            });
            if bad {
                self.index_broken.store(true, SeqCst);
                self.index_due.store(true, SeqCst);
            }
        }
        tick.finish();
        Ok(rep)
    }
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
                let db = sled::open(dir).unwrap();
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
            let db = sled::open(dir).unwrap();
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
