//! The bulk path: applying millions of ops from files much faster than one at a time, with the
//! same result (DESIGN.md, "Offline batch merging").
//!
//! One pass, a pipeline of four threads, reads every op, plans the whole identity graph in
//! memory (the same planner as [`Store::apply_batch`], so guardrails decide exactly as they
//! would one op at a time), aggregates properties to the latest value per ID and name, and
//! sorts the events (keyed by the nodes just planned) into runs in temporary files; a bad
//! input stops it before anything is written. Then the graph is committed, the ID records
//! (with their properties), edges and refusals are written, while a packing thread merges the
//! runs into packed blocks of events, written after the records.

use rustc_hash::FxHashMap;

use crate::codec::{self, IdRecord, PropMap};
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::op::{AliasOutcome, Op, Outcome, Properties, Timestamp};
use crate::store::Store;
use crate::store::events::BlockWrite;
use crate::store::plan::{DataCounts, NewId, Planner};
use crate::store::records::known_id_record;

/// A stream of ops: [`Store::bulk_apply`] reads it once.
pub trait OpSource {
    /// Calls `f` with every op, in order (once per import).
    ///
    /// # Errors
    /// Bad input ([`Error::Input`], with its position), a file that cannot be read
    /// ([`Error::Io`]), or whatever `f` returns.
    fn for_each(&mut self, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()>;

    /// What was read of each file, to remember once everything read is written (the last
    /// thing an import writes, so a crash before it leaves the files to be read again). Asked
    /// after [`OpSource::for_each`]; none by default.
    fn file_parts(&mut self) -> Vec<(std::path::PathBuf, FilePart)> {
        Vec::new()
    }
}

/// What imports have read of one file: its first `size` bytes, which hold `lines` newlines and
/// hash to `hash` (XXH3-128). An import that finds the file grown reads only what follows; one
/// that finds those bytes changed refuses it (see `idgraph import --reimport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilePart {
    /// Bytes read, from the start of the file.
    pub size: u64,
    /// Newlines in them: the next line read is line `lines + 1`.
    pub lines: u64,
    /// The XXH3-128 hash of those bytes.
    pub hash: u128,
    /// When they were imported (seconds since the epoch).
    pub imported_at: Timestamp,
}

/// The ops of a vector, copied (the vector is left as it was).
impl OpSource for Vec<Op> {
    fn for_each(&mut self, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()> {
        for op in self.iter() {
            f(op.clone())?;
        }
        Ok(())
    }
}

/// The ops of a vector, moved (`ops.into_iter()`): no copy of each op.
impl OpSource for std::vec::IntoIter<Op> {
    fn for_each(&mut self, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()> {
        self.try_for_each(f)
    }
}

/// What a bulk apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BulkReport {
    /// Ops read.
    pub ops: u64,
    /// Events recorded.
    pub events: u64,
    /// Property sets (without an event).
    pub sets: u64,
    /// Alias ops.
    pub aliases: u64,
    /// Aliases that joined two persons.
    pub joined: u64,
    /// Aliases refused by a guardrail.
    pub refused: u64,
    /// IDs the store had not seen.
    pub new_ids: u64,
    /// sled keys written.
    pub keys_written: u64,
}

/// Tuning of the bulk path.
#[derive(Clone, Copy, Debug)]
pub struct BulkOptions {
    /// Keys per sled batch when writing; 1 = plain inserts. Default = 1: sorted plain inserts
    /// measured fastest (BENCHMARKS.md, "Bulk import").
    pub batch_keys: usize,
    /// Bytes of events held in memory (keys, values and 24 bytes of index each), sorted by key
    /// before they are written (sled inserts in key order cost less than random order). At
    /// most four such buffers exist at a time: one being filled, one queued, one being sorted
    /// and the last sorted run. Default = 32 MiB: larger buffers measured no faster and left a
    /// larger store (BENCHMARKS.md, "Knobs").
    pub memory_budget: usize,
    /// Target bytes of a block of packed events in its plain layout (DESIGN.md, "Packed
    /// events", "Compact blocks"). Default = 2.25 KiB (~0.8 KiB as stored): smaller blocks
    /// read faster, larger ones make fewer keys.
    pub event_block_bytes: usize,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            batch_keys: 1,
            memory_budget: 32 << 20,
            event_block_bytes: codec::EVENT_BLOCK_BYTES,
        }
    }
}

/// Writes keys in sled batches of a fixed size (1 = plain inserts).
struct BatchWriter<'a> {
    db: &'a sled::Db,
    batch: sled::Batch,
    len: usize,
    max: usize,
    written: u64,
}

impl<'a> BatchWriter<'a> {
    fn new(db: &'a sled::Db, max: usize) -> Self {
        BatchWriter {
            db,
            batch: sled::Batch::default(),
            len: 0,
            max: max.max(1),
            written: 0,
        }
    }

    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) -> Result<()> {
        if self.max == 1 {
            self.db.insert(k, v)?;
        } else {
            self.batch.insert(k, v);
            self.len += 1;
            if self.len >= self.max {
                self.flush()?;
            }
        }
        self.written += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.len > 0 {
            self.db.apply_batch(std::mem::take(&mut self.batch))?;
            self.len = 0;
        }
        Ok(())
    }
}

/// The latest value of every property of every node, aggregated over the whole input in pass 1
/// so that each ID's property map is written once. Names and values are interned: the same few
/// names and many repeated values (`plan=pro`) cost 4 bytes per use.
#[derive(Default)]
struct PropAgg {
    lnames: Interner<Box<str>>,
    spellings: Interner<Box<str>>,
    /// Encoded [`codec::StoredValue`]s.
    values: Interner<Vec<u8>>,
    /// (node, lower-cased name) → (first spelling, value, at, seq, arrival): `arrival`
    /// numbers the pairs in the order first seen, so that an ID short of room keeps the
    /// names that came first, as one op at a time keeps them.
    latest: FxHashMap<(Node, u32), Latest>,
    /// [`Limits::max_properties_per_id`](crate::Limits::max_properties_per_id).
    max_per_id: usize,
    /// The entries of `latest` sorted by node, then arrival, made by [`index`](Self::index)
    /// once pass 1 is over: a node's names in one run, without a hash lookup each.
    by_node: Vec<(Node, Latest)>,
    /// Where the last [`merge_into`](Self::merge_into) stopped: the new IDs ask for their
    /// nodes in order, so each finds its run here instead of by a binary search.
    cursor: std::cell::Cell<usize>,
    /// A value being encoded (one buffer for all).
    scratch: Vec<u8>,
}

/// Of one (node, name) in [`PropAgg`]: (first spelling, value, at, seq, arrival).
type Latest = (u32, u32, Timestamp, u64, u64);

/// Numbers distinct values in the order first seen.
struct Interner<K> {
    ix: FxHashMap<K, u32>,
    items: Vec<K>,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner {
            ix: FxHashMap::default(),
            items: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Interner<K> {
    fn intern<Q>(&mut self, k: &Q) -> u32
    where
        K: std::borrow::Borrow<Q> + for<'q> From<&'q Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Some(i) = self.ix.get(k) {
            return *i;
        }
        let i = self.items.len() as u32;
        self.items.push(K::from(k));
        self.ix.insert(K::from(k), i);
        i
    }

    fn get(&self, i: u32) -> &K {
        &self.items[i as usize]
    }
}

impl PropAgg {
    fn add(&mut self, n: Node, props: &Properties, at: Timestamp, seq: u64) -> Result<()> {
        for (name, value) in props.iter() {
            // ASCII without capitals is its own lower case: no copy.
            let lname = if name
                .bytes()
                .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
            {
                self.lnames.intern(name)
            } else {
                self.lnames.intern(name.to_lowercase().as_str())
            };
            self.scratch.clear();
            codec::encode_value_into(value, &mut self.scratch)?;
            let v = self.values.intern(self.scratch.as_slice());
            let arrival = self.latest.len() as u64;
            match self.latest.get_mut(&(n, lname)) {
                Some(e) if e.2 > at => {}
                Some(e) => *e = (e.0, v, at, seq, e.4),
                None => {
                    let sp = self.spellings.intern(name);
                    self.latest.insert((n, lname), (sp, v, at, seq, arrival));
                }
            }
        }
        Ok(())
    }

    /// Sorts the (node, name) pairs that have values; call once, after the last `add`.
    fn index(&mut self) {
        self.by_node = std::mem::take(&mut self.latest)
            .into_iter()
            .map(|((n, _), e)| (n, e))
            .collect();
        self.by_node.sort_unstable_by_key(|&(n, e)| (n, e.4));
    }

    /// The run of node `n`'s entries in `by_node`.
    fn run_of(&self, n: Node) -> &[(Node, Latest)] {
        let hint = self.cursor.get();
        let starts_here = |i: usize| {
            (i == 0 || self.by_node[i - 1].0 < n) && self.by_node.get(i).is_none_or(|e| e.0 >= n)
        };
        let from = if hint <= self.by_node.len() && starts_here(hint) {
            hint
        } else {
            self.by_node.partition_point(|e| e.0 < n)
        };
        let len = self.by_node[from..].iter().take_while(|e| e.0 == n).count();
        self.cursor.set(from + len);
        &self.by_node[from..from + len]
    }

    /// Merges the aggregated values of node `n` into `map`; whether anything changed.
    /// O(log entries + names of `n`).
    fn merge_into(&self, n: Node, map: &mut PropMap) -> Result<bool> {
        let mut changed = false;
        // In arrival order: names past the per-ID limit are the later ones.
        for &(_, (sp, v, at, seq, _)) in self.run_of(n) {
            let value = codec::decode(self.values.get(v), "a property value")?;
            let name = self.spellings.get(sp);
            changed |= map.merge_within(name, value, at, seq, self.max_per_id).0;
        }
        Ok(changed)
    }

    /// The nodes below `base` (known before the import) that have values.
    fn old_nodes(&self, base: Node) -> Vec<Node> {
        let mut v: Vec<Node> = self
            .by_node
            .iter()
            .map(|k| k.0)
            .take_while(|n| *n < base)
            .collect();
        v.dedup();
        v
    }
}

/// The ID records the bulk path writes, with the properties aggregated in pass 1.
struct Ids {
    base: Node,
    new: Vec<NewId>,
    old: Vec<(String, IdRecord)>,
    props: PropAgg,
}

impl Ids {
    /// Writes the new IDs' records packed in blocks, in node order (so that an edge inside one
    /// names a node whose record is already on disk), then the known IDs' changed records.
    fn write(
        mut self,
        db: &sled::Db,
        store: &Store,
        w: &mut BatchWriter,
        added: &mut DataCounts,
    ) -> Result<()> {
        self.props.index();
        let max = self.props.max_per_id;
        let mut count = |before: usize, after: usize| {
            added.properties += (after - before) as u64;
            added.at_limit += u64::from(before < max && after >= max);
        };
        let g = store.graph()?;
        let base = self.base;
        let mut blocks = super::records::IdBlocks::new();
        let mut put = |k, v| w.put(k, v);
        for (new, n) in self.new.iter().zip(Node::all(g.len()).skip(base.slot())) {
            let mut rec = new.record(n);
            let before = rec.props.0.len();
            self.props.merge_into(n, &mut rec.props)?;
            count(before, rec.props.0.len());
            blocks.push(n, g.ident(n), &rec, &mut put)?;
        }
        blocks.flush(&mut put)?;
        let mut old: FxHashMap<String, IdRecord> = self.old.into_iter().collect();
        let mut idents: Vec<String> = old.keys().cloned().collect();
        idents.extend(
            self.props
                .old_nodes(base)
                .into_iter()
                .map(|n| g.ident(n).to_owned()),
        );
        idents.sort_unstable();
        idents.dedup();
        for id in idents {
            let key = codec::id_key(&id);
            let (mut rec, mut changed) = match old.remove(&id) {
                Some(r) => (r, true),
                None => {
                    let n = g.lookup(&id).expect("a node of the committed graph");
                    (known_id_record(db, &id, n)?, false)
                }
            };
            let before = rec.props.0.len();
            changed |= self.props.merge_into(rec.node, &mut rec.props)?;
            count(before, rec.props.0.len());
            if changed {
                w.put(key, rec.encode()?)?;
            }
        }
        Ok(())
    }
}

/// Events read, held until the memory budget is reached, then sorted into a run. Keys and
/// values live in one arena: no allocation per event.
#[derive(Default)]
struct Buffer {
    arena: Vec<u8>,
    /// Each event: (its node, the start of its key in `arena`, key length, value length),
    /// in arrival order (in key order once [`sorted`](Self::sorted)).
    events: Vec<(u64, usize, u32, u32)>,
}

impl Buffer {
    /// Bytes held (what the memory budget counts).
    fn bytes(&self) -> usize {
        self.arena.len() + self.events.len() * std::mem::size_of::<(u64, usize, u32, u32)>()
    }

    fn push(&mut self, n: Node, event: &str, properties: &Properties, at: Timestamp) -> Result<()> {
        let start = self.arena.len();
        codec::event_key_into(&mut self.arena, n, at, event);
        let klen = self.arena.len() - start;
        codec::event_value_into(&mut self.arena, event, properties)?;
        let vlen = self.arena.len() - start - klen;
        let len = |l: usize| {
            u32::try_from(l).map_err(|_| Error::Internal(format!("an event of {l} bytes")))
        };
        self.events
            .push((n.as_u64(), start, len(klen)?, len(vlen)?));
        Ok(())
    }

    fn key(&self, e: &(u64, usize, u32, u32)) -> &[u8] {
        &self.arena[e.1..e.1 + e.2 as usize]
    }

    fn value(&self, e: &(u64, usize, u32, u32)) -> &[u8] {
        let from = e.1 + e.2 as usize;
        &self.arena[from..from + e.3 as usize]
    }

    /// The events in key order, one per key (the last of equal keys wins, as it would one op
    /// at a time).
    fn sorted(mut self) -> Self {
        let mut events = std::mem::take(&mut self.events);
        // Stable: equal keys stay in arrival order. The node first, without reading the arena.
        events.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| self.key(a).cmp(self.key(b))));
        let mut out: Vec<(u64, usize, u32, u32)> = Vec::with_capacity(events.len());
        for e in events {
            match out.last_mut() {
                Some(last) if self.key(last) == self.key(&e) => *last = e,
                _ => out.push(e),
            }
        }
        self.events = out;
        self
    }

    /// The events, in their order, each as its own (key, value).
    fn into_entries(self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
        (0..self.events.len()).map(move |i| {
            let e = &self.events[i];
            (self.key(e).to_vec(), self.value(e).to_vec())
        })
    }
}

/// The events of an import, sorted across buffers before they are packed: every buffer but
/// the last goes to a temporary file as a sorted run; the runs and the last buffer are then
/// merged in key order (of equal keys, the later run's), so that each block is written once.
struct Runs {
    dir: Option<std::path::PathBuf>,
    files: Vec<std::fs::File>,
    pending: Option<Buffer>,
}

impl Runs {
    fn push(&mut self, buf: Buffer) -> Result<()> {
        let sorted = buf.sorted();
        if let Some(prev) = self.pending.replace(sorted) {
            self.spill(prev)?;
        }
        Ok(())
    }

    fn spill(&mut self, run: Buffer) -> Result<()> {
        use std::io::Write as _;
        let io = |e| Error::io("a temporary file of the import", e);
        let file = match &self.dir {
            Some(d) => tempfile::tempfile_in(d),
            None => tempfile::tempfile(),
        }
        .map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        for e in &run.events {
            let (k, v) = (run.key(e), run.value(e));
            w.write_all(&(k.len() as u32).to_le_bytes()).map_err(io)?;
            w.write_all(k).map_err(io)?;
            w.write_all(&(v.len() as u32).to_le_bytes()).map_err(io)?;
            w.write_all(v).map_err(io)?;
        }
        let mut file = w.into_inner().map_err(|e| io(e.into_error()))?;
        std::io::Seek::rewind(&mut file).map_err(io)?;
        self.files.push(file);
        Ok(())
    }

    /// Packs every event into blocks, handed to `out` in order; returns how many were new,
    /// and the blocks written.
    fn finish(
        mut self,
        db: &sled::Db,
        block_bytes: usize,
        out: &mut dyn FnMut(BlockWrite) -> Result<()>,
    ) -> Result<(u64, u64)> {
        let last = self.pending.take().unwrap_or_default();
        if self.files.is_empty() {
            let mut it = last.into_entries().map(Ok);
            return super::events::write_sorted(db, &mut it, block_bytes, out);
        }
        let mut sources: Vec<Source> = self
            .files
            .into_iter()
            .map(|f| Box::new(RunReader(std::io::BufReader::with_capacity(1 << 16, f))) as _)
            .collect();
        sources.push(Box::new(last.into_entries().map(Ok)));
        let mut merged = Merge::new(sources)?;
        super::events::write_sorted(db, &mut merged, block_bytes, out)
    }
}

impl Runs {
    fn new(dir: Option<std::path::PathBuf>) -> Self {
        Runs {
            dir,
            files: Vec::new(),
            pending: None,
        }
    }
}

/// A sorted stream of events: a run read back, or the last buffer.
type Source = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>>;

/// Reads a run back.
struct RunReader(std::io::BufReader<std::fs::File>);

impl Iterator for RunReader {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        use std::io::Read as _;
        let io = |e| Error::io("a temporary file of the import", e);
        let mut len = [0u8; 4];
        match self.0.read_exact(&mut len) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(io(e))),
            Ok(()) => {}
        }
        let mut read = || -> Result<(Vec<u8>, Vec<u8>)> {
            let mut k = vec![0u8; u32::from_le_bytes(len) as usize];
            self.0.read_exact(&mut k).map_err(io)?;
            let mut l = [0u8; 4];
            self.0.read_exact(&mut l).map_err(io)?;
            let mut v = vec![0u8; u32::from_le_bytes(l) as usize];
            self.0.read_exact(&mut v).map_err(io)?;
            Ok((k, v))
        };
        Some(read())
    }
}

/// A k-way merge of sorted runs, one entry per key: of equal keys, the later run's.
struct Merge {
    sources: Vec<Source>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(Vec<u8>, std::cmp::Reverse<usize>)>>,
    values: Vec<Option<Vec<u8>>>,
}

impl Merge {
    fn new(mut sources: Vec<Source>) -> Result<Self> {
        let mut heap = std::collections::BinaryHeap::new();
        let mut values = vec![None; sources.len()];
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(e) = s.next() {
                let (k, v) = e?;
                values[i] = Some(v);
                heap.push(std::cmp::Reverse((k, std::cmp::Reverse(i))));
            }
        }
        Ok(Merge {
            sources,
            heap,
            values,
        })
    }

    /// Takes source `i`'s current value and moves it on.
    fn advance(&mut self, i: usize) -> Result<Vec<u8>> {
        let v = self.values[i].take().expect("a current entry");
        if let Some(e) = self.sources[i].next() {
            let (k, nv) = e?;
            self.values[i] = Some(nv);
            self.heap.push(std::cmp::Reverse((k, std::cmp::Reverse(i))));
        }
        Ok(v)
    }
}

impl Iterator for Merge {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        let std::cmp::Reverse((key, std::cmp::Reverse(i))) = self.heap.pop()?;
        let value = match self.advance(i) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        // Equal keys of earlier runs: superseded.
        while let Some(std::cmp::Reverse((k, _))) = self.heap.peek()
            && *k == key
        {
            let std::cmp::Reverse((_, std::cmp::Reverse(j))) = self.heap.pop().expect("peeked");
            if let Err(e) = self.advance(j) {
                return Some(Err(e));
            }
        }
        Some(Ok((key, value)))
    }
}

/// Event blocks go from the packing thread to the writing one in groups of this many bytes
/// (or one write, if larger: the rewrite of one stored block, as before).
const BLOCK_GROUP_BYTES: usize = 1 << 20;
/// Groups of event blocks built ahead of their writing, at most: ~48 MiB.
const BLOCK_GROUPS_AHEAD: usize = 48;

/// Ops handed from the reading thread to the planning thread at a time.
const OPS_PER_CHUNK: usize = 1024;
/// Chunks of ops read but not yet planned, at most (bounds the memory between the two).
const OP_CHUNKS_IN_FLIGHT: usize = 8;

/// What the planning thread made of the ops.
struct Planned {
    plan: (
        super::plan::Writes,
        Vec<(String, IdRecord)>,
        Vec<NewId>,
        crate::graph::Delta,
    ),
    joined: u64,
    refused: u64,
}

/// The planning thread of [`apply`]: plans every op received on `ops`, in order, and hands
/// the events and property sets on with their nodes, in the same order.
fn plan(
    store: &Store,
    graph: &crate::graph::Graph,
    ops: std::sync::mpsc::Receiver<Vec<Op>>,
    data: std::sync::mpsc::SyncSender<Vec<(Node, Op)>>,
) -> Result<Planned> {
    let mut planner = Planner::new(store, graph);
    planner.graph_only = true;
    let (mut joined, mut refused) = (0, 0);
    let stopped = || Error::Internal("the bulk aggregating thread stopped".into());
    for chunk in ops {
        let mut out = Vec::with_capacity(chunk.len());
        for op in chunk {
            match planner.apply(&op)? {
                Outcome::Alias(AliasOutcome::Joined { .. }) => joined += 1,
                Outcome::Alias(AliasOutcome::Refused(_)) => refused += 1,
                _ => {}
            }
            if let Op::Record { id, .. } | Op::Set { id, .. } = &op {
                let n = planner
                    .last_node()
                    .ok_or_else(|| Error::Internal(format!("{id} was planned but has no node")))?;
                out.push((n, op));
            }
        }
        data.send(out).map_err(|_| stopped())?;
    }
    Ok(Planned {
        plan: planner.finish_bulk()?,
        joined,
        refused,
    })
}

/// The aggregating thread of [`apply`]: the latest value of every property, and the events
/// handed to the sorter in buffers of `memory_budget` bytes.
fn aggregate(
    store: &Store,
    data: std::sync::mpsc::Receiver<Vec<(Node, Op)>>,
    events: std::sync::mpsc::SyncSender<Buffer>,
    memory_budget: usize,
) -> Result<PropAgg> {
    let mut props = PropAgg {
        max_per_id: store.limits.max_properties_per_id,
        ..PropAgg::default()
    };
    let mut buf = Buffer::default();
    let stopped = || Error::Internal("the bulk sorter thread stopped".into());
    for (n, op) in data.into_iter().flatten() {
        let (properties, at) = match &op {
            Op::Record { properties, at, .. } | Op::Set { properties, at, .. } => (properties, *at),
            Op::Alias { .. } => continue,
        };
        if !properties.is_empty() {
            // Store-wide apply order, as one op at a time would take it.
            props.add(n, properties, at, store.db.generate_id()?)?;
        }
        if let Op::Record { event, .. } = &op {
            buf.push(n, event, properties, at)?;
            if buf.bytes() >= memory_budget {
                events
                    .send(std::mem::take(&mut buf))
                    .map_err(|_| stopped())?;
            }
        }
    }
    events.send(buf).map_err(|_| stopped())?;
    Ok(props)
}

/// See [`Store::bulk_apply`]. The caller holds the writer lock.
/// `counts`: the store's data counts before the import, if kept; the import adds to them
/// what it wrote.
pub(crate) fn apply(
    store: &Store,
    source: &mut dyn OpSource,
    opts: BulkOptions,
    counts: Option<DataCounts>,
) -> Result<BulkReport> {
    let mut rep = BulkReport::default();
    let graph = store.graph()?;
    let before = graph.len();
    let db = &store.db;
    let dir = store.path().map(std::path::Path::to_path_buf);
    // The one pass, on four threads in a pipeline: this one reads, parses and validates the
    // ops; a planning thread plans the graph; an aggregating thread keeps the latest value of
    // each property and keys the events by the nodes just planned; a sorting thread sorts
    // them into runs in temporary files. Ops go in order through each channel, so the result
    // is the one a single thread would make. Nothing reaches sled before the whole input is
    // read: a bad line stops the import with nothing written.
    let (otx, orx) = std::sync::mpsc::sync_channel::<Vec<Op>>(OP_CHUNKS_IN_FLIGHT);
    let (etx, erx) = std::sync::mpsc::sync_channel::<Buffer>(1);
    let (planned, props, runs) = std::thread::scope(|scope| -> Result<(Planned, PropAgg, Runs)> {
        let spill_dir = dir.clone();
        let sorter = scope.spawn(move || -> Result<Runs> {
            let mut runs = Runs::new(spill_dir);
            for buf in erx {
                runs.push(buf)?;
            }
            Ok(runs)
        });
        let (dtx, drx) = std::sync::mpsc::sync_channel::<Vec<(Node, Op)>>(OP_CHUNKS_IN_FLIGHT);
        let aggregating = scope.spawn(move || aggregate(store, drx, etx, opts.memory_budget));
        let graph: &crate::graph::Graph = &graph;
        let planning = scope.spawn(move || plan(store, graph, orx, dtx));
        let mut chunk = Vec::with_capacity(OPS_PER_CHUNK);
        let stopped = || Error::Internal("the bulk planning thread stopped".into());
        let read = source.for_each(&mut |op| {
            op.validate_with(&store.limits)?;
            rep.ops += 1;
            match &op {
                Op::Alias { .. } => rep.aliases += 1,
                Op::Record { .. } => rep.events += 1,
                Op::Set { .. } => rep.sets += 1,
            }
            chunk.push(op);
            if chunk.len() == OPS_PER_CHUNK {
                otx.send(std::mem::take(&mut chunk))
                    .map_err(|_| stopped())?;
                chunk.reserve(OPS_PER_CHUNK);
            }
            Ok(())
        });
        let sent = read.and_then(|()| otx.send(chunk).map_err(|_| stopped()));
        drop(otx);
        let planned = planning
            .join()
            .expect("the bulk planning thread does not panic");
        let props = aggregating
            .join()
            .expect("the bulk aggregating thread does not panic");
        let runs = sorter
            .join()
            .expect("the bulk sorter thread does not panic");
        // A failing thread stops the one before it (the sorter the aggregating, which stops
        // the planning, which stops the reading): report the first error, not the closed
        // channels it left behind.
        let runs = runs?;
        let props = props?;
        let planned = planned?;
        sent?;
        Ok((planned, props, runs))
    })?;
    rep.joined = planned.joined;
    rep.refused = planned.refused;
    let (writes, old_ids, new_ids, delta) = planned.plan;
    let new_base = delta.base();
    drop(graph);
    store.graph_mut()?.commit(delta);
    rep.new_ids = (store.graph()?.len() - before) as u64;

    // Written in order, so that nothing on disk ever names a node whose record is not (a crash
    // leaves a store that opens; rerun the import): new ID records (an edge inside one names
    // an older record), changed ID records, the other edges and refusals, then the events
    // packed, then what was read of each file.
    let written = std::thread::scope(|scope| -> Result<(u64, DataCounts)> {
        // A packing thread merges the runs and builds the event blocks while this one writes
        // the ID records; the blocks wait in a channel bounded in bytes (groups of
        // BLOCK_GROUP_BYTES, BLOCK_GROUPS_AHEAD of them) and are written after them.
        let (btx, brx) = std::sync::mpsc::sync_channel::<Vec<BlockWrite>>(BLOCK_GROUPS_AHEAD);
        let packer = scope.spawn(move || -> Result<(u64, u64)> {
            let stopped = || Error::Internal("the import's writing thread stopped".into());
            let (mut group, mut bytes) = (Vec::new(), 0);
            let packed = runs.finish(db, opts.event_block_bytes, &mut |b| {
                bytes += b.bytes();
                group.push(b);
                if bytes >= BLOCK_GROUP_BYTES {
                    bytes = 0;
                    btx.send(std::mem::take(&mut group))
                        .map_err(|_| stopped())?;
                }
                Ok(())
            })?;
            btx.send(group).map_err(|_| stopped())?;
            Ok(packed)
        });
        let mut w = BatchWriter::new(db, opts.batch_keys);
        let mut added = DataCounts::default();
        let mine = (|| -> Result<()> {
            Ids {
                base: new_base,
                new: new_ids,
                old: old_ids,
                props,
            }
            .write(db, store, &mut w, &mut added)?;
            for (k, v) in writes {
                w.put(k, v)?; // in key order: a BTreeMap
            }
            w.flush()?;
            for b in brx.iter().flatten() {
                b.apply(db)?;
            }
            Ok(())
        })();
        drop(brx); // a packer waiting to send gives up
        let packed = packer
            .join()
            .expect("the bulk packing thread does not panic");
        // This thread's error first: the packer's would only be the closed channel.
        mine?;
        let (new, blocks) = packed?;
        added.events += new;
        w.written += blocks;
        if blocks > 0 {
            store.packed_upto.store(
                super::events::packed_upto(db)?,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        for (path, part) in source.file_parts() {
            let key = codec::file_key(path.as_os_str().as_encoded_bytes());
            w.put(key, codec::encode(&part)?)?;
        }
        w.flush()?;
        Ok((w.written, added))
    });
    // Memory holds the whole import from here on; disk may hold part of it. Rather than
    // serve writes from a graph that disk does not match, the handle refuses them: reopening
    // loads what is on disk (a killed import's state; rerunning the import completes it).
    // The error itself is returned as it is; later writes get `Error::Interrupted`.
    let (written, added) = written.inspect_err(|_| {
        store
            .poisoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
    })?;
    rep.keys_written = written;
    // The counts kept for `stats`: packing tells a new event from one it replaces.
    if let Some(mut c) = counts {
        c.events += added.events;
        c.properties += added.properties;
        c.at_limit += added.at_limit;
        *store.data_counts.lock() = Some(c);
    }
    Ok(rep)
}

/// One event as an export sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedEvent {
    /// The ID it was recorded under.
    pub id: String,
    /// The canonical ID of its person now.
    pub person: String,
    /// The event name.
    pub event: String,
    /// When.
    pub at: Timestamp,
    /// Its properties.
    pub properties: Properties,
}
