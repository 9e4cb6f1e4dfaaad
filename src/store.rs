//! [`Store`]: open and configure, apply ops atomically, answer queries, flush, verify.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::codec::{
    self, FLAG_ANON, IdRecord, PropMap, StoredEdge, StoredEvent, StoredProp, StoredRefusal,
};
use crate::error::{Error, Result};
use crate::forest;
use crate::graph::{Graph, Staged};
use crate::id::{DEFAULT_BLOCKED_IDS, Identity, blocked_key, is_kissmetrics_anonymous};
use crate::op::{
    AliasOutcome, Cause, Event, Op, Outcome, Person, Properties, Property, RefusalReason, Timestamp,
};

/// How to open a [`Store`]: a by-value builder; every setter documents its default.
///
/// ```
/// # fn main() -> idgraph::Result<()> {
/// let store = idgraph::Config::temporary().max_person_size(500).open()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    path: Option<PathBuf>,
    temporary: bool,
    cache_capacity: u64,
    flush_every_ms: Option<u64>,
    blocked_ids: Vec<String>,
    max_person_size: u64,
}

impl Config {
    /// A store in the directory `path` (created when missing).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Config {
            path: Some(path.as_ref().to_path_buf()),
            temporary: false,
            cache_capacity: 256 << 20,
            flush_every_ms: Some(500),
            blocked_ids: DEFAULT_BLOCKED_IDS.iter().map(|s| s.to_string()).collect(),
            max_person_size: 10_000,
        }
    }

    /// A store in a fresh temporary directory, deleted when the store is dropped.
    pub fn temporary() -> Self {
        let mut c = Config::new("");
        c.path = None;
        c.temporary = true;
        c
    }

    /// The directory. Default: none (set by [`Config::new`]).
    #[must_use]
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = Some(path.as_ref().to_path_buf());
        self.temporary = false;
        self
    }

    /// sled's page cache, in bytes. Default = 256 MiB: measured (`examples/compare
    /// --cache-mb`, 500k KISSmetrics lines) 64/256/1024 MiB gave the same speed (bulk 156k,
    /// 148k, 137k lines/s; one at a time 69k, 67k, 65k ops/s), and on a 10M-line import
    /// 256 MiB kept the peak at 1.58 GiB (BENCHMARKS.md). More helps only when the events and
    /// properties that are read often exceed it.
    #[must_use]
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// How often sled flushes in the background; `None` = only on [`Store::flush`].
    /// Default = every 500 ms (sled's default). Data applied since the last flush can be lost in
    /// a crash; [`Store::flush`] makes everything before it durable. Measured
    /// (`examples/compare --flush-ms`, one-at-a-time alias): none/100/500/2000 ms gave
    /// 60.7k/54.7k/53.7k/50.6k ops/s, within the noise; the interval bounds what a crash loses.
    #[must_use]
    pub fn flush_every_ms(mut self, ms: Option<u64>) -> Self {
        self.flush_every_ms = ms;
        self
    }

    /// IDs refused as alias endpoints, compared case-insensitively and also when wrapped in
    /// quotes. Default = [`DEFAULT_BLOCKED_IDS`] (`null`, `undefined`, `guest`, `0`, ...).
    #[must_use]
    pub fn blocked_ids<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.blocked_ids = ids.into_iter().map(Into::into).collect();
        self
    }

    /// The most IDs one person may hold; a merge that would exceed it is refused.
    /// Default = 10,000.
    #[must_use]
    pub fn max_person_size(mut self, max: u64) -> Self {
        self.max_person_size = max.max(1);
        self
    }

    /// Opens (or creates) the store.
    ///
    /// # Errors
    /// [`Error::IncompatibleFormat`] when the directory holds another format version;
    /// [`Error::Storage`] when sled cannot open it (for example another process holds it);
    /// [`Error::Corrupt`] when stored records cannot be decoded.
    pub fn open(self) -> Result<Store> {
        Store::open_with(self)
    }
}

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
    /// Bytes sled uses on disk.
    pub disk_bytes: u64,
}

/// What [`Store::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// IDs checked.
    pub ids: u64,
    /// Persons checked.
    pub persons: u64,
    /// Edges checked.
    pub edges: u64,
    /// Events checked.
    pub events: u64,
    /// Properties checked.
    pub properties: u64,
    /// Every broken invariant, described (at most 100; `problem_count` has the total).
    pub problems: Vec<String>,
    /// How many invariants were broken.
    pub problem_count: u64,
}

impl VerifyReport {
    /// Whether every invariant holds.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < 100 {
            self.problems.push(p);
        }
    }
}

/// A refused merge, as [`Store::refusals`] lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub(crate) graph: RwLock<Graph>,
    /// Set when a write failed between the keys of one op (see [`Error::Interrupted`]).
    poisoned: std::sync::atomic::AtomicBool,
    blocked: FxHashSet<String>,
    max_person_size: u64,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the store in `path` with default settings.
    ///
    /// # Errors
    /// As [`Config::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Config::new(path).open()
    }

    fn open_with(c: Config) -> Result<Store> {
        let mut sc = sled::Config::new()
            .cache_capacity(c.cache_capacity)
            .flush_every_ms(c.flush_every_ms);
        sc = if c.temporary {
            sc.temporary(true)
        } else {
            sc.path(c.path.clone().unwrap_or_default())
        };
        let display_path = c.path.clone().unwrap_or_default();
        let db = open_sled(&sc, &display_path)?;
        match db.get(codec::FORMAT_KEY)? {
            Some(v) => match codec::decode_format(&v) {
                Some(codec::FORMAT_VERSION) => {}
                Some(old) if codec::READABLE_VERSIONS.contains(&old) => {
                    db.insert(codec::FORMAT_KEY, &codec::format_value())?;
                }
                other => {
                    return Err(Error::IncompatibleFormat {
                        path: display_path,
                        found: other.map_or_else(|| "unreadable".into(), |v| v.to_string()),
                        expected: codec::FORMAT_VERSION,
                    });
                }
            },
            None if db.is_empty() => {
                db.insert(codec::FORMAT_KEY, &codec::format_value())?;
            }
            None => {
                return Err(Error::IncompatibleFormat {
                    path: display_path,
                    found: "none (not an idgraph store, or written before format versions)".into(),
                    expected: codec::FORMAT_VERSION,
                });
            }
        }
        // An op interrupted by a crash between its redo record and its writes: finish it.
        if let Some(v) = db.get(codec::INTENT_KEY)? {
            for (k, v) in codec::decode_intent(&v)? {
                match v {
                    Some(v) => db.insert(k, v)?,
                    None => db.remove(k)?,
                };
            }
            db.remove(codec::INTENT_KEY)?;
            db.flush()?;
        }
        let graph = load_graph(&db)?;
        Ok(Store {
            db,
            writer: Mutex::new(()),
            graph: RwLock::new(graph),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            blocked: c.blocked_ids.iter().map(|s| blocked_key(s)).collect(),
            max_person_size: c.max_person_size,
            path: c.path,
        })
    }

    /// The store's directory (`None` for a temporary store).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Applies one op; see [`apply_batch`](Self::apply_batch).
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
    /// One sled batch: 1 key per new ID + 1 edge key. No sled reads.
    ///
    /// # Errors
    /// As [`apply_batch`](Self::apply_batch).
    pub fn alias(&self, a: &Identity, b: &Identity) -> Result<AliasOutcome> {
        match self.apply(Op::alias(a.clone(), b.clone(), now(), Cause::Api))? {
            Outcome::Alias(o) => Ok(o),
            Outcome::Stored => unreachable!("an alias op has an alias outcome"),
        }
    }

    /// Applies ops in order, atomically: after a crash either all of them are in the store or
    /// none. Returns one outcome per op (a refused merge is an outcome, not an error).
    ///
    /// # Cost
    /// One sled batch. Keys written: 1 per new ID, 1 per new alias edge, 1 per event,
    /// 1 per property whose value changes; 1 sled read per property set (to keep the latest).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad event or property name (nothing is written);
    /// [`Error::Storage`] when sled fails (nothing is written);
    /// [`Error::Full`] past 4 billion IDs.
    pub fn apply_batch(&self, ops: &[Op]) -> Result<Vec<Outcome>> {
        for op in ops {
            op.validate()?;
        }
        let _w = self.writer.lock();
        self.check_writable()?;
        let graph = self.graph.read();
        let mut p = Planner::new(self, &graph);
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(p.apply(op)?);
        }
        let (writes, delta) = p.finish()?;
        drop(graph);
        // One key is atomic on its own and a plain insert costs a fraction of a sled batch.
        // Several keys of one op (an alias of two new IDs, an event with properties): a redo
        // record, the plain inserts, and the record's removal — about 4 x 5 µs where a sled
        // batch costs 80-100 µs on this machine's disk; recovery at open finishes an op whose
        // record survived a crash. Several ops: one sled batch, so that readers never see
        // part of a batch.
        if writes.len() == 1 {
            let (k, v) = writes.into_iter().next().expect("one write");
            self.db.insert(k, v)?;
        } else if ops.len() == 1 && !writes.is_empty() {
            self.write_redo(writes.into_iter().map(|(k, v)| (k, Some(v))).collect())?;
        } else if !writes.is_empty() {
            let mut batch = sled::Batch::default();
            for (k, v) in writes {
                batch.insert(k, v);
            }
            self.db.apply_batch(batch)?;
        }
        self.graph.write().commit(delta);
        Ok(out)
    }

    /// Writes several keys so that a crash leaves all or none of them: a redo record holding
    /// them all, then plain inserts and removals, then the record's removal; opening finishes
    /// a record that survived a crash. Plain writes cost ~5 µs against 80-100 µs and memory in
    /// proportion for a sled batch here (DESIGN.md). The caller holds the writer lock.
    pub(crate) fn write_redo(&self, writes: Vec<codec::Write>) -> Result<()> {
        self.db
            .insert(codec::INTENT_KEY, codec::encode_intent(&writes))?;
        let rest = || -> Result<()> {
            for (i, (k, v)) in writes.into_iter().enumerate() {
                fault_point(&self.db, i)?;
                match v {
                    Some(v) => self.db.insert(k, v)?,
                    None => self.db.remove(k)?,
                };
            }
            self.db.remove(codec::INTENT_KEY)?;
            Ok(())
        };
        rest().map_err(|e| {
            // Part of the op is in sled, none of it in memory: writing on could reuse node
            // numbers. Refuse further writes; reopening finishes the op from its record.
            self.poisoned
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Error::Interrupted(e.to_string())
        })
    }

    /// `Err` once a write was interrupted halfway (see [`Error::Interrupted`]).
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Interrupted(
                "an earlier write of this handle failed halfway".into(),
            ));
        }
        Ok(())
    }

    fn is_blocked(&self, id: &str) -> bool {
        self.blocked.contains(&blocked_key(id))
    }

    /// Whether the store has seen `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.graph.read().lookup(id).is_some()
    }

    /// The person `id` belongs to: its canonical ID and all its IDs; `None` for an unknown ID.
    ///
    /// # Cost
    /// No sled access: the graph is held in memory. O(IDs of the person).
    ///
    /// # Errors
    /// None today; the `Result` leaves room for a store that pages its graph from disk.
    pub fn resolve(&self, id: &str) -> Result<Option<Person>> {
        let g = self.graph.read();
        let Some(n) = g.lookup(id) else {
            return Ok(None);
        };
        let r = g.root(n);
        let members = g.members_sorted(r);
        Ok(Some(Person {
            person: g.ident(g.slot(r).canon).to_owned(),
            ids: members.iter().map(|&m| g.ident(m).to_owned()).collect(),
        }))
    }

    /// The canonical ID of `id`'s person, without listing its IDs.
    ///
    /// # Cost
    /// No sled access; O(log size of the person).
    pub fn canonical(&self, id: &str) -> Option<String> {
        let g = self.graph.read();
        let n = g.lookup(id)?;
        Some(g.ident(g.slot(g.root(n)).canon).to_owned())
    }

    fn member_nodes(&self, id: &str) -> Vec<(u32, String)> {
        let g = self.graph.read();
        match g.lookup(id) {
            None => Vec::new(),
            Some(n) => g
                .members_sorted(n)
                .into_iter()
                .map(|m| (m, g.ident(m).to_owned()))
                .collect(),
        }
    }

    /// Every event of `id`'s person, from all its IDs, in time order (equal times: by ID, then
    /// name). Empty for an unknown ID.
    ///
    /// # Cost
    /// One sled range scan per ID of the person, plus one read per event.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when stored events cannot be read.
    pub fn events(&self, id: &str) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for (n, ident) in self.member_nodes(id) {
            for kv in self
                .db
                .scan_prefix(codec::node_prefix(codec::EVENT, n as u64))
            {
                let (k, v) = kv?;
                let (_, at) = codec::event_key_parts(&k)?;
                let e: StoredEvent = codec::decode(&v, "an event")?;
                out.push(Event {
                    id: ident.clone(),
                    event: e.name,
                    at,
                    properties: Properties::from_vec_unchecked(
                        e.properties
                            .into_iter()
                            .map(|(n, v)| (n, v.into()))
                            .collect(),
                    ),
                });
            }
        }
        out.sort_by(|x, y| {
            (x.at, &x.id, x.event.to_lowercase()).cmp(&(y.at, &y.id, y.event.to_lowercase()))
        });
        Ok(out)
    }

    /// The properties of `id`'s person: per name (case-insensitive), the value set latest
    /// under any of its IDs (equal times: the one applied last). Sorted by lower-cased name.
    /// Empty for an unknown ID.
    ///
    /// # Cost
    /// One sled read per ID of the person.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when stored values cannot be read.
    pub fn properties(&self, id: &str) -> Result<Vec<Property>> {
        let mut best: BTreeMap<String, (StoredProp, String)> = BTreeMap::new();
        // The spelling shown: the one of the earliest-seen ID holding the name (members come
        // in first-seen order).
        let mut spelling: FxHashMap<String, String> = FxHashMap::default();
        for (n, ident) in self.member_nodes(id) {
            let Some(rec) = read_id_record(&self.db, &ident, n)? else {
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

    /// The refused merges, in key order.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the log cannot be read.
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

    /// Makes everything applied so far durable; returns the bytes written.
    ///
    /// # Errors
    /// [`Error::Storage`] when the write fails.
    pub fn flush(&self) -> Result<usize> {
        Ok(self.db.flush()?)
    }

    /// Counts of IDs, persons, edges and refusals from memory only (no scan of events and
    /// properties; those counts are 0).
    pub fn stats_quick(&self) -> Stats {
        let mut s = Stats::default();
        let g = self.graph.read();
        s.ids = g.live() as u64;
        s.edges = g.edges().len() as u64;
        s.refused_merges = g.refused();
        for n in 0..g.len() as u32 {
            if g.is_live(n) && g.slot(n).parent == n {
                s.persons += 1;
                s.largest_person = s.largest_person.max(g.slot(n).size as u64);
            }
        }
        s
    }

    /// Counts of IDs, persons, edges, events, properties and bytes on disk.
    ///
    /// # Cost
    /// Scans the events and properties (O(stored data)).
    ///
    /// # Errors
    /// [`Error::Storage`] when sled cannot be read.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = self.stats_quick();
        s.events = count_prefix(&self.db, codec::EVENT)?;
        scan_id_records(&self.db, |_, v, at| {
            if !matches!(at, RecordAt::Shadowed(_)) {
                s.properties += IdRecord::decode(v)?.props.0.len() as u64;
            }
            Ok(())
        })?;
        s.disk_bytes = self.db.size_on_disk()?;
        Ok(s)
    }

    /// Checks every invariant of the store (DESIGN.md, "Invariants") against what is on disk:
    /// ID records, the forest, the alias log, events and properties.
    ///
    /// # Cost
    /// Reads the whole store once and rebuilds the forest from the alias log.
    ///
    /// # Errors
    /// [`Error::Storage`] when sled cannot be read. Broken invariants are reported in the
    /// [`VerifyReport`], not as errors.
    pub fn verify(&self) -> Result<VerifyReport> {
        let _w = self.writer.lock(); // a stable snapshot: no writes while we look
        let g = self.graph.read();
        let mut rep = VerifyReport::default();
        match self
            .db
            .get(codec::FORMAT_KEY)?
            .as_deref()
            .and_then(codec::decode_format)
        {
            Some(codec::FORMAT_VERSION) => {}
            other => rep.problem(format!("format version marker is {other:?}")),
        }
        // 1. ID records on disk match the in-memory index one to one.
        let mut seen = vec![false; g.len()];
        let mut disk_edges: Vec<(u64, StoredEdge)> = Vec::new();
        let mut last_packed: Option<(u64, u64)> = None; // (block, node of the last entry)
        let scanned = scan_id_records(&self.db, |id, v, at| {
            let mut rec = match IdRecord::decode(v) {
                Ok(r) => r,
                Err(e) => {
                    rep.problem(format!("ID {id:?}: {e}"));
                    return Ok(());
                }
            };
            if let RecordAt::Packed(block) | RecordAt::Shadowed(block) = at {
                // Entries of a block: nodes from the block's key on, increasing.
                let floor = match last_packed {
                    Some((b, last)) if b == block => last + 1,
                    _ => block,
                };
                if rec.node < floor {
                    rep.problem(format!(
                        "packed ID {id:?} (node {}) is out of order in block {block}",
                        rec.node
                    ));
                }
                last_packed = Some((block, rec.node));
            }
            if let RecordAt::Shadowed(_) = at {
                // A stale copy: the ID's own key replaced it; it must still be the same ID.
                if g.lookup(id) != Some(rec.node as u32) {
                    rep.problem(format!(
                        "packed ID {id:?} (node {}) is replaced by the own key of another ID",
                        rec.node
                    ));
                }
                return Ok(());
            }
            rep.ids += 1;
            rep.properties += rec.props.0.len() as u64;
            if let Some(intro) = rec.intro.take() {
                if intro.1.a != rec.node && intro.1.b != rec.node {
                    rep.problem(format!("ID {id:?} holds an edge that does not touch it"));
                }
                disk_edges.push(intro);
            }
            if crate::id::check_id(id).is_err() {
                rep.problem(format!("stored ID {id:?} is not a valid ID"));
            }
            match g.lookup(id) {
                Some(n) if n as u64 == rec.node => {
                    if std::mem::replace(&mut seen[n as usize], true) {
                        rep.problem(format!("node {n} has two ID records"));
                    }
                    if g.slot(n).flags != rec.flags {
                        rep.problem(format!("ID {id:?}: flags differ between disk and memory"));
                    }
                }
                other => rep.problem(format!(
                    "ID {id:?} is node {} on disk but {other:?} in memory",
                    rec.node
                )),
            }
            Ok(())
        });
        match scanned {
            Err(e @ Error::Storage(_)) => return Err(e),
            Err(e) => rep.problem(format!("the ID records cannot be read: {e}")),
            Ok(()) => {}
        }
        if rep.ids != g.live() as u64 {
            rep.problem(format!(
                "{} ID records on disk, {} IDs in memory",
                rep.ids,
                g.live()
            ));
        }
        // 2. The forest: parent chains end at a root, member lists are disjoint cycles that
        //    hold exactly the nodes of their root, sizes match.
        let len = g.len();
        let mut root_of = vec![u32::MAX; len];
        for n in 0..len as u32 {
            let mut x = n;
            let mut steps = 0;
            while g.slot(x).parent != x {
                x = g.slot(x).parent;
                steps += 1;
                if x as usize >= len || steps > 64 {
                    rep.problem(format!("node {n}: parent chain does not end at a root"));
                    break;
                }
            }
            root_of[n as usize] = x;
        }
        let mut on_cycle = vec![false; len];
        for r in 0..len as u32 {
            if g.slot(r).parent != r {
                continue;
            }
            if g.is_live(r) {
                rep.persons += 1;
            }
            let mut count = 0u64;
            for m in forest::members(&*g, r).take(len + 1) {
                count += 1;
                if std::mem::replace(&mut on_cycle[m as usize], true) {
                    rep.problem(format!("node {m} is on two member lists"));
                    break;
                }
                if root_of[m as usize] != r {
                    rep.problem(format!(
                        "node {m} is on root {r}'s list but has another root"
                    ));
                }
            }
            if count != g.slot(r).size as u64 {
                rep.problem(format!(
                    "root {r}: size {} but {count} members",
                    g.slot(r).size
                ));
            }
            let c = g.slot(r).canon;
            if (c as usize) >= len || root_of[c as usize] != r {
                rep.problem(format!("root {r}: canonical node {c} is not a member"));
            }
        }
        if let Some(n) = on_cycle.iter().position(|x| !x) {
            rep.problem(format!("node {n} is on no member list"));
        }
        // 3. The alias log: endpoints exist and share a root; replaying it gives the same
        //    partition as the forest in memory.
        for kv in self.db.scan_prefix([codec::EDGE]) {
            let (k, v) = kv?;
            let seq = codec::edge_seq(&k)?;
            match codec::decode::<StoredEdge>(&v, "an edge") {
                Ok(e) => disk_edges.push((seq, e)),
                Err(e) => rep.problem(format!("edge {seq}: {e}")),
            }
        }
        disk_edges.sort_unstable_by_key(|(seq, _)| *seq);
        let mut replay = forest::MemForest::with_len(len);
        let mut edge_count = 0u64;
        let mut last_seq = None;
        for (seq, e) in &disk_edges {
            rep.edges += 1;
            if last_seq == Some(*seq) {
                rep.problem(format!("two edges have number {seq}"));
            }
            last_seq = Some(*seq);
            if e.a as usize >= len || e.b as usize >= len {
                rep.problem(format!("edge {seq}: names a node that does not exist"));
                continue;
            }
            let (a, b) = (e.a as u32, e.b as u32);
            if !g.is_live(a) || !g.is_live(b) {
                rep.problem(format!("edge {seq}: names a node without an ID"));
            }
            if root_of[a as usize] != root_of[b as usize] {
                rep.problem(format!(
                    "edge {seq}: {:?} and {:?} are linked but are different persons",
                    g.ident(a),
                    g.ident(b)
                ));
            }
            if g.edges().get(&crate::graph::pair(a, b)) != Some(seq) {
                rep.problem(format!("edge {seq} on disk is not the edge in memory"));
            }
            forest::union(&mut replay, a, b);
            edge_count += 1;
        }
        // The adjacency lists mirror the edge map, both directions.
        let mut half = 0u64;
        for n in 0..len as u32 {
            for y in g.neighbors(n) {
                half += 1;
                if !g.edges().contains_key(&crate::graph::pair(n, y)) {
                    rep.problem(format!(
                        "node {n} lists node {y} as linked, but no edge joins them"
                    ));
                }
            }
        }
        if half != 2 * g.edges().len() as u64 {
            rep.problem(format!(
                "{half} adjacency entries for {} edges (want two per edge)",
                g.edges().len()
            ));
        }
        if edge_count != g.edges().len() as u64 {
            rep.problem(format!(
                "{edge_count} edges on disk, {} in memory",
                g.edges().len()
            ));
        }
        let mut map: FxHashMap<u32, u32> = FxHashMap::default();
        for n in 0..len as u32 {
            let (mine, theirs) = (root_of[n as usize], forest::find(&replay, n));
            if *map.entry(mine).or_insert(theirs) != theirs {
                rep.problem(format!(
                    "node {n}: the forest and the replayed alias log disagree on its person"
                ));
            }
        }
        if map.len() != {
            let mut s: Vec<u32> = map.values().copied().collect();
            s.sort_unstable();
            s.dedup();
            s.len()
        } {
            rep.problem("the forest joins persons that the alias log keeps apart".into());
        }
        // 4. Events and properties belong to known IDs and decode.
        for kv in self.db.scan_prefix([codec::EVENT]) {
            let (k, v) = kv?;
            rep.events += 1;
            let node = codec::key_node(&k);
            let ok = match node {
                Ok(n) => (n as usize) < len && g.is_live(n as u32),
                Err(_) => false,
            };
            if !ok {
                rep.problem(format!("a stored event belongs to no known ID: {node:?}"));
            }
            if let Err(e) = codec::decode::<StoredEvent>(&v, "an event") {
                rep.problem(format!("{e}"));
            }
        }
        for kv in self.db.scan_prefix([codec::REFUSAL]) {
            let (_, v) = kv?;
            if let Err(e) = codec::decode::<StoredRefusal>(&v, "a refusal") {
                rep.problem(format!("{e}"));
            }
        }
        Ok(rep)
    }
}

/// Opens sled, waiting a moment when the directory is still locked: sled's I/O threads can
/// hold the lock for a few milliseconds after the previous handle in this process is dropped.
fn open_sled(sc: &sled::Config, path: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match sc.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(Error::Locked(path.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn count_prefix(db: &sled::Db, prefix: u8) -> Result<u64> {
    let mut n = 0;
    for k in db.scan_prefix([prefix]).keys() {
        k?;
        n += 1;
    }
    Ok(n)
}

/// Every alias edge as (seq, a, b): those under `e` keys and those kept in ID records.
fn load_graph(db: &sled::Db) -> Result<Graph> {
    let mut ids = Vec::new();
    let mut edges = Vec::new();
    scan_id_records(db, |id, v, at| {
        if matches!(at, RecordAt::Shadowed(_)) {
            return Ok(());
        }
        let rec = IdRecord::decode_head(v)?;
        if let Some((seq, e)) = rec.intro {
            edges.push((seq, e.a, e.b));
        }
        ids.push((rec.node, Box::<str>::from(id), rec.flags));
        Ok(())
    })?;
    for kv in db.scan_prefix([codec::EDGE]) {
        let (k, v) = kv?;
        let e: StoredEdge = codec::decode(&v, "an edge")?;
        edges.push((codec::edge_seq(&k)?, e.a, e.b));
    }
    edges.sort_unstable();
    if let Some(w) = edges.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::Corrupt(format!(
            "two alias edges have number {}",
            w[0].0
        )));
    }
    let refused = count_prefix(db, codec::REFUSAL)?;
    Graph::load(ids, edges, refused)
}

/// Where [`scan_id_records`] found an ID record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordAt {
    /// Under the ID's own `i` key.
    Own,
    /// In the block of packed records whose key names node `.0`.
    Packed(u64),
    /// In the block of packed records whose key names node `.0`, but replaced by the ID's own
    /// key (a stale copy, ignored).
    Shadowed(u64),
}

/// Calls `f` with every stored ID record: the IDs' own keys, then the blocks of packed records
/// in node order (an entry whose node also has an own key is [`RecordAt::Shadowed`]).
pub(crate) fn scan_id_records(
    db: &sled::Db,
    mut f: impl FnMut(&str, &[u8], RecordAt) -> Result<()>,
) -> Result<()> {
    let mut own: Vec<u64> = Vec::new(); // a bit per node
    let not_utf8 = || Error::Corrupt("a stored ID is not UTF-8".into());
    for kv in db.scan_prefix([codec::ID]) {
        let (k, v) = kv?;
        let id = std::str::from_utf8(&k[1..]).map_err(|_| not_utf8())?;
        let node = codec::record_node(&v)?;
        if node > crate::graph::MAX_NODES {
            return Err(Error::Corrupt(format!(
                "ID {id:?} has node {node}, out of range"
            )));
        }
        let word = (node / 64) as usize;
        if own.len() <= word {
            own.resize(word + 1, 0);
        }
        own[word] |= 1 << (node % 64);
        f(id, &v, RecordAt::Own)?;
    }
    for kv in db.scan_prefix([codec::PACKED]) {
        let (k, v) = kv?;
        let block = codec::key_node(&k)?;
        for (id, rec) in codec::packed_entries(&v)? {
            let node = codec::record_node(rec)?;
            let shadowed = own
                .get((node / 64) as usize)
                .is_some_and(|w| w & (1 << (node % 64)) != 0);
            let at = if shadowed {
                RecordAt::Shadowed(block)
            } else {
                RecordAt::Packed(block)
            };
            f(id, rec, at)?;
        }
    }
    Ok(())
}

/// The block of packed ID records that would hold node `node`: the one with the greatest key
/// not above it.
pub(crate) fn packed_block_of(
    db: &sled::Db,
    node: u32,
) -> Result<Option<(sled::IVec, sled::IVec)>> {
    let lo: &[u8] = &[codec::PACKED];
    let hi = codec::node_prefix(codec::PACKED, node as u64);
    Ok(db.range(lo..=&hi[..]).next_back().transpose()?)
}

/// The record of `ident`, node `node`: under its own key, else its entry in a block of packed
/// records. `None` when neither holds it.
pub(crate) fn read_id_record(db: &sled::Db, ident: &str, node: u32) -> Result<Option<IdRecord>> {
    if let Some(v) = db.get(codec::id_key(ident))? {
        return IdRecord::decode(&v).map(Some);
    }
    let Some((_, block)) = packed_block_of(db, node)? else {
        return Ok(None);
    };
    match codec::find_packed(&block, node as u64)? {
        Some((id, rec)) if id == ident.as_bytes() => IdRecord::decode(rec).map(Some),
        _ => Ok(None),
    }
}

/// Crash-test hook (debug builds only): with `IDGRAPH_FAULT_AFTER_WRITES=N`, the process
/// flushes and aborts before the `N`-th key of a multi-key op (0 = right after its redo
/// record), so that tests can check recovery at the exact point a kill would hit.
fn fault_point(db: &sled::Db, i: usize) -> Result<()> {
    #[cfg(debug_assertions)]
    if let Some(n) = std::env::var_os("IDGRAPH_FAULT_AFTER_WRITES")
        && n.to_str().and_then(|n| n.parse::<usize>().ok()) == Some(i)
    {
        db.flush()?;
        std::process::abort();
    }
    let _ = (db, i);
    Ok(())
}

/// Sled keys and values a batch writes, in key order.
type Writes = BTreeMap<Vec<u8>, Vec<u8>>;

/// The record of an ID that a batch adds, compact: the bulk path holds millions of them. Its
/// node is its position; its ID and flags are in the staged graph.
pub(crate) struct NewId {
    pub(crate) first_seen: Timestamp,
    pub(crate) flags: u8,
    /// The alias edge that introduced the ID, if one did (boxed: most IDs have none).
    pub(crate) intro: Option<Box<(u64, StoredEdge)>>,
    /// Its properties (empty in the bulk path, which aggregates them apart).
    pub(crate) props: PropMap,
}

impl NewId {
    pub(crate) fn record(&self, node: u32) -> IdRecord {
        IdRecord {
            node: node as u64,
            first_seen: self.first_seen,
            flags: self.flags,
            intro: self.intro.as_deref().cloned(),
            props: self.props.clone(),
        }
    }
}

/// Plans one batch: stages graph changes and collects the sled writes.
pub(crate) struct Planner<'a, 'g> {
    st: Staged<'g>,
    /// Keys to write, the later write of a key replacing the earlier.
    writes: Writes,
    /// Records of IDs known before this batch whose flags or properties change; encoded at
    /// the end.
    ids: FxHashMap<u32, IdRecord>,
    /// Records of the IDs this batch adds (node = committed graph length + index).
    new_ids: Vec<NewId>,
    db: &'a sled::Db,
    store: &'a Store,
    /// Plan only the graph (IDs, edges, refusals): events and properties are written later by
    /// the bulk path.
    pub(crate) graph_only: bool,
}

impl<'a, 'g> Planner<'a, 'g> {
    pub(crate) fn new(store: &'a Store, graph: &'g Graph) -> Self {
        Planner {
            st: Staged::new(graph),
            writes: BTreeMap::new(),
            ids: FxHashMap::default(),
            new_ids: Vec::new(),
            db: &store.db,
            store,
            graph_only: false,
        }
    }

    /// The sled writes and the graph changes.
    pub(crate) fn finish(self) -> Result<(Writes, crate::graph::Delta)> {
        let (mut writes, old_ids, new_ids, delta) = self.finish_bulk()?;
        for (ident, rec) in old_ids {
            writes.insert(codec::id_key(&ident), rec.encode()?);
        }
        for (i, rec) in new_ids.iter().enumerate() {
            let n = delta.base() + i as u32;
            writes.insert(
                codec::id_key(&delta.new_idents()[i]),
                rec.record(n).encode()?,
            );
        }
        Ok((writes, delta))
    }

    /// As [`finish`](Self::finish), but the ID records stay unencoded for the bulk path to
    /// write: those of known IDs with their IDs, those of new IDs compact (in node order, their
    /// IDs in the delta).
    #[expect(
        clippy::type_complexity,
        reason = "private; destructured by its two callers"
    )]
    pub(crate) fn finish_bulk(
        mut self,
    ) -> Result<(
        Writes,
        Vec<(String, IdRecord)>,
        Vec<NewId>,
        crate::graph::Delta,
    )> {
        let old_ids = std::mem::take(&mut self.ids)
            .into_iter()
            .map(|(n, rec)| (self.st.ident(n).to_owned(), rec))
            .collect();
        let base = self.st.base();
        for (i, rec) in self.new_ids.iter_mut().enumerate() {
            rec.flags = self.st.flags(base + i as u32);
        }
        Ok((self.writes, old_ids, self.new_ids, self.st.into_delta()))
    }

    pub(crate) fn apply(&mut self, op: &Op) -> Result<Outcome> {
        match op {
            Op::Alias {
                a,
                b,
                at,
                cause,
                source,
            } => self
                .alias(a, b, *at, *cause, source.as_deref())
                .map(Outcome::Alias),
            Op::Record {
                id,
                event,
                properties,
                at,
            } => {
                let n = self.node(id, *at, false)?;
                if self.graph_only {
                    return Ok(Outcome::Stored);
                }
                let (k, v) = codec::event_entry(n as u64, event, properties, *at)?;
                self.writes.insert(k, v);
                self.set_props(n, properties, *at)?;
                Ok(Outcome::Stored)
            }
            Op::Set { id, properties, at } => {
                let n = self.node(id, *at, false)?;
                if !self.graph_only {
                    self.set_props(n, properties, *at)?;
                }
                Ok(Outcome::Stored)
            }
        }
    }

    /// The node of `id` as planned so far.
    pub(crate) fn lookup(&self, id: &str) -> Option<u32> {
        self.st.lookup(id)
    }

    /// The node of `id`, registering it when new; `anon` marks it anonymous (sticky).
    fn node(&mut self, id: &Identity, at: Timestamp, anon: bool) -> Result<u32> {
        let want = if anon || is_kissmetrics_anonymous(id.as_str()) {
            FLAG_ANON
        } else {
            0
        };
        if let Some(n) = self.st.lookup(id.as_str()) {
            let flags = self.st.flags(n);
            if flags & want != want {
                self.st.set_flags(n, flags | want);
                if !self.st.is_new(n) {
                    self.pending_id(n)?.flags = flags | want;
                }
            }
            return Ok(n);
        }
        let n = self.st.add(id.as_str(), want)?;
        self.new_ids.push(NewId {
            first_seen: at,
            flags: want,
            intro: None,
            props: PropMap::default(),
        });
        Ok(n)
    }

    /// The ID record of a known node, to be rewritten by this batch (read once per batch).
    fn pending_id(&mut self, n: u32) -> Result<&mut IdRecord> {
        if !self.ids.contains_key(&n) {
            let id = self.st.ident(n);
            let rec = read_id_record(self.db, id, n)?.ok_or_else(|| {
                Error::Corrupt(format!("ID {id:?} is in memory but has no record on disk"))
            })?;
            self.ids.insert(n, rec);
        }
        Ok(self.ids.get_mut(&n).expect("inserted above"))
    }

    fn alias(
        &mut self,
        a: &Identity,
        b: &Identity,
        at: Timestamp,
        cause: Cause,
        source: Option<&str>,
    ) -> Result<AliasOutcome> {
        for id in [a, b] {
            if a != b && self.store.is_blocked(id.as_str()) {
                let reason = RefusalReason::BlockedId { id: id.to_string() };
                return self.refuse(a, b, reason, cause, at);
            }
        }
        let na = self.node(a, at, false)?;
        let nb = self.node(b, at, cause.marks_b_anonymous())?;
        if na == nb {
            return Ok(AliasOutcome::AlreadySame);
        }
        let (ra, rb) = (self.st.root(na), self.st.root(nb));
        if ra == rb {
            if !self.st.has_edge(na, nb) {
                self.edge(na, nb, at, cause, source)?;
            }
            return Ok(AliasOutcome::AlreadySame);
        }
        let size = self.st.size_of_root(ra) as u64 + self.st.size_of_root(rb) as u64;
        if size > self.store.max_person_size {
            let reason = RefusalReason::TooLarge {
                size,
                max: self.store.max_person_size,
            };
            return self.refuse(a, b, reason, cause, at);
        }
        self.edge(na, nb, at, cause, source)?;
        self.st.union_roots(ra, rb);
        Ok(AliasOutcome::Joined { size })
    }

    /// Logs an alias edge: inside the record of an endpoint this batch creates (one write less),
    /// else under its own `e` key.
    fn edge(
        &mut self,
        a: u32,
        b: u32,
        at: Timestamp,
        cause: Cause,
        source: Option<&str>,
    ) -> Result<()> {
        let seq = self.st.add_edge(a, b);
        let e = StoredEdge {
            a: a as u64,
            b: b as u64,
            at,
            cause,
            source: source.map(str::to_owned),
        };
        // The edge may ride in the record of a new endpoint only if the record it points to is
        // on disk first: an old node's always is; of two new ones, the bulk path writes records
        // in node order, so the later node holds the edge.
        let holder = match (self.st.is_new(a), self.st.is_new(b)) {
            (true, false) => Some(a),
            (false, true) => Some(b),
            (true, true) => Some(a.max(b)),
            (false, false) => None,
        };
        if let Some(h) = holder {
            let base = self.st.base();
            let rec = &mut self.new_ids[(h - base) as usize];
            if rec.intro.is_none() {
                rec.intro = Some(Box::new((seq, e)));
                return Ok(());
            }
        }
        self.writes
            .insert(codec::edge_key(seq).to_vec(), codec::encode(&e)?);
        Ok(())
    }

    fn refuse(
        &mut self,
        a: &Identity,
        b: &Identity,
        reason: RefusalReason,
        cause: Cause,
        at: Timestamp,
    ) -> Result<AliasOutcome> {
        let key = codec::refusal_key(a.as_str(), b.as_str());
        // Already refused (earlier in this batch, or stored): count it once.
        let known = self.writes.contains_key(&key) || self.db.contains_key(&key)?;
        let r = StoredRefusal {
            a: a.to_string(),
            b: b.to_string(),
            reason: reason.clone(),
            cause,
            at,
        };
        self.writes.insert(key, codec::encode(&r)?);
        if !known {
            self.st.count_refusal();
        }
        Ok(AliasOutcome::Refused(reason))
    }

    fn set_props(&mut self, n: u32, props: &Properties, at: Timestamp) -> Result<()> {
        if props.is_empty() {
            return Ok(());
        }
        // Store-wide apply order, monotonic across restarts (sled persists its ID generator).
        let seq = self.db.generate_id()?;
        let map = if self.st.is_new(n) {
            &mut self.new_ids[(n - self.st.base()) as usize].props
        } else {
            &mut self.pending_id(n)?.props
        };
        for (name, value) in props.iter() {
            map.merge(name, value.clone().into(), at, seq);
        }
        Ok(())
    }
}
