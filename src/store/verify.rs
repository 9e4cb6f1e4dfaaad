//! [`Store::verify`](crate::Store::verify): every invariant of DESIGN.md ("Invariants") checked
//! against what is on disk, one function per family. Broken invariants are reported, not
//! returned as errors; only a failing read of sled is an error.

use crate::store::Store;
use crate::store::lifecycle::GraphSource;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec::{self, StoredEdge, StoredRefusal};
use crate::error::{Error, Result};
use crate::forest::{self, Node};
use crate::graph::{Graph, pair};
use crate::store::records::{self, RecordAt};

/// What [`Store::verify`](crate::Store::verify) found.
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

    pub(crate) fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < 100 {
            self.problems.push(p);
        }
    }
}

/// How far [`Store::verify_with`](crate::Store::verify_with) has come: a stage, and the items
/// of it checked so far (of `total`, when known ahead; 0 when not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyProgress {
    /// What is being checked, in this order: `ID records`, `alias links`, `graph index` (while
    /// the index is current), `events` (read from the start on a thread of their own: their
    /// count may start high); `""` once at the end (verify is done).
    pub stage: &'static str,
    /// Items of the stage checked so far.
    pub done: u64,
    /// Items of the stage in all; 0 when not known ahead (events).
    pub total: u64,
}

/// Counts the items of a stage, telling the caller every 65,536 and at the stage's end.
pub(crate) struct Tick<'a> {
    f: &'a mut dyn FnMut(VerifyProgress),
    at: VerifyProgress,
}

impl<'a> Tick<'a> {
    pub(crate) fn new(f: &'a mut dyn FnMut(VerifyProgress)) -> Self {
        Tick {
            f,
            at: VerifyProgress {
                stage: "",
                done: 0,
                total: 0,
            },
        }
    }

    /// Ends the stage before (telling its final count) and begins `stage`.
    pub(crate) fn stage(&mut self, stage: &'static str, total: u64) {
        if !self.at.stage.is_empty() {
            (self.f)(self.at);
        }
        self.at = VerifyProgress {
            stage,
            done: 0,
            total,
        };
        (self.f)(self.at);
    }

    /// Tells that `done` items of the stage are checked (a stage counted elsewhere).
    pub(crate) fn reach(&mut self, done: u64) {
        if done != self.at.done {
            self.at.done = done;
            (self.f)(self.at);
        }
    }

    pub(crate) fn step(&mut self) {
        self.at.done += 1;
        if self.at.done.is_multiple_of(65_536) {
            (self.f)(self.at);
        }
    }

    /// Ends the last stage.
    pub(crate) fn finish(&mut self) {
        self.stage("", 0);
    }
}

/// Checks the ID records and alias links in `db` against the graph `g` loaded from it (events:
/// [`Events::scan`]). The caller holds the writer lock, so nothing changes while it looks.
pub(crate) fn verify(db: &sled::Db, g: &Graph, tick: &mut Tick) -> Result<VerifyReport> {
    let mut rep = VerifyReport::default();
    format_marker(db, &mut rep)?;
    tick.stage("ID records", g.live() as u64);
    let mut disk_edges = id_records(db, g, &mut rep, tick)?;
    let root_of = forest_shape(g, &mut rep);
    tick.stage("alias links", g.edges().len() as u64);
    alias_log(db, g, &root_of, &mut disk_edges, &mut rep, tick)?;
    adjacency(g, &mut rep);
    Ok(rep)
}

/// 0. The format version marker is this build's.
fn format_marker(db: &sled::Db, rep: &mut VerifyReport) -> Result<()> {
    match db
        .get(codec::FORMAT_KEY)?
        .as_deref()
        .and_then(codec::decode_format)
    {
        Some(codec::FORMAT_VERSION) => {}
        other => rep.problem(format!("format version marker is {other:?}")),
    }
    Ok(())
}

/// 1. ID records on disk match the in-memory index one to one; entries of a block of packed
///    records are in node order from the block's key; a shadowed entry belongs to the same ID
///    as the own key that replaced it. Returns the edges kept in ID records.
fn id_records(
    db: &sled::Db,
    g: &Graph,
    rep: &mut VerifyReport,
    tick: &mut Tick,
) -> Result<Vec<(u64, StoredEdge)>> {
    let mut seen = vec![false; g.len()];
    let mut disk_edges: Vec<(u64, StoredEdge)> = Vec::new();
    let mut last_packed: Option<(Node, Node)> = None; // (block, node of the last entry)
    let scanned = records::scan_decoded_records(db, |id, rec, at| {
        // The progress counts IDs (its total), not the stale copies that own keys replace.
        if !matches!(at, RecordAt::Shadowed(_)) {
            tick.step();
        }
        let mut rec = match rec {
            Ok(r) => r,
            Err(e) => {
                rep.problem(format!("ID {id:?}: {e}"));
                return Ok(());
            }
        };
        if let RecordAt::Packed(block) | RecordAt::Shadowed(block) = at {
            // Entries of a block: nodes from the block's key on, increasing.
            let floor = match last_packed {
                Some((b, last)) if b == block => last.next(),
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
            if g.lookup(id) != Some(rec.node) {
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
        // Looked up by node, not by ID: records come in node order, so this reads the graph
        // in order (a lookup by ID is a random read per ID). Every live node is seen once
        // (counted below), so the match is one to one either way.
        let n = rec.node;
        let known = n.slot() < g.len() && g.is_live(n) && g.ident(n) == id;
        match known.then_some(n).or_else(|| g.lookup(id)) {
            Some(n) if n == rec.node => {
                if std::mem::replace(&mut seen[n.slot()], true) {
                    rep.problem(format!("node {n} has two ID records"));
                }
                if g.flags(n) != rec.flags {
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
    Ok(disk_edges)
}

/// 2. The forest: parent chains end at a root, member lists are disjoint cycles that hold
///    exactly the nodes of their root, sizes match, the canonical node is a member. Returns each
///    node's root.
fn forest_shape(g: &Graph, rep: &mut VerifyReport) -> Vec<Node> {
    let len = g.len();
    let mut root_of: Vec<Node> = Vec::with_capacity(len);
    for n in g.nodes() {
        let mut x = n;
        let mut steps = 0;
        while g.slot(x).parent != x {
            x = g.slot(x).parent;
            steps += 1;
            if x.slot() >= len || steps > 64 {
                rep.problem(format!("node {n}: parent chain does not end at a root"));
                break;
            }
        }
        root_of.push(x);
    }
    let mut on_cycle = vec![false; len];
    for r in g.nodes().filter(|&r| g.slot(r).parent == r) {
        if g.is_live(r) {
            rep.persons += 1;
        }
        let mut count = 0u64;
        for m in forest::members(g, r).take(len + 1) {
            count += 1;
            if std::mem::replace(&mut on_cycle[m.slot()], true) {
                rep.problem(format!("node {m} is on two member lists"));
                break;
            }
            if root_of[m.slot()] != r {
                rep.problem(format!(
                    "node {m} is on root {r}'s list but has another root"
                ));
            }
        }
        let size = g.slot(r).size;
        if count != u64::from(size) {
            rep.problem(format!("root {r}: size {size} but {count} members"));
        }
        let c = g.slot(r).value.canon();
        if c.slot() >= len || root_of[c.slot()] != r {
            rep.problem(format!("root {r}: canonical node {c} is not a member"));
        }
    }
    if let Some(n) = on_cycle.iter().position(|x| !x) {
        rep.problem(format!("node {n} is on no member list"));
    }
    if rep.persons != g.persons() as u64 {
        rep.problem(format!(
            "{} persons in the forest, but the count kept in memory says {}",
            rep.persons,
            g.persons()
        ));
    }
    root_of
}

/// 3. The alias log: numbers are unique, endpoints exist and share a root, each edge is the one
///    in memory, and replaying the log gives the same partition as the forest.
fn alias_log(
    db: &sled::Db,
    g: &Graph,
    root_of: &[Node],
    disk_edges: &mut Vec<(u64, StoredEdge)>,
    rep: &mut VerifyReport,
    tick: &mut Tick,
) -> Result<()> {
    for kv in db.scan_prefix([codec::EDGE]) {
        let (k, v) = kv?;
        let seq = codec::key_u64(&k)?;
        match codec::decode::<StoredEdge>(&v, "an edge") {
            Ok(e) => disk_edges.push((seq, e)),
            Err(e) => rep.problem(format!("edge {seq}: {e}")),
        }
    }
    disk_edges.sort_unstable_by_key(|(seq, _)| *seq);
    let len = g.len();
    let mut replay = forest::MemForest::with_len(len);
    let mut edge_count = 0u64;
    let mut last_seq = None;
    for (seq, e) in disk_edges.iter() {
        tick.step();
        rep.edges += 1;
        if last_seq == Some(*seq) {
            rep.problem(format!("two edges have number {seq}"));
        }
        last_seq = Some(*seq);
        let (a, b) = (e.a, e.b);
        if a.slot() >= len || b.slot() >= len {
            rep.problem(format!("edge {seq}: names a node that does not exist"));
            continue;
        }
        if !g.is_live(a) || !g.is_live(b) {
            rep.problem(format!("edge {seq}: names a node without an ID"));
        }
        if root_of[a.slot()] != root_of[b.slot()] {
            rep.problem(format!(
                "edge {seq}: {:?} and {:?} are linked but are different persons",
                g.ident(a),
                g.ident(b)
            ));
        }
        if g.edges().get(&pair(a, b)) != Some(seq) {
            rep.problem(format!("edge {seq} on disk is not the edge in memory"));
        }
        forest::union(&mut replay, a, b);
        edge_count += 1;
    }
    if edge_count != g.edges().len() as u64 {
        rep.problem(format!(
            "{edge_count} edges on disk, {} in memory",
            g.edges().len()
        ));
    }
    // The same partition: each root of the forest maps to one root of the replay, and no two
    // roots of the forest map to the same one.
    let mut map: FxHashMap<Node, Node> = FxHashMap::default();
    for n in g.nodes() {
        let (mine, theirs) = (root_of[n.slot()], forest::find(&replay, n));
        if *map.entry(mine).or_insert(theirs) != theirs {
            rep.problem(format!(
                "node {n}: the forest and the replayed alias log disagree on its person"
            ));
        }
    }
    let mut theirs: Vec<Node> = map.values().copied().collect();
    theirs.sort_unstable();
    theirs.dedup();
    if theirs.len() != map.len() {
        rep.problem("the forest joins persons that the alias log keeps apart".into());
    }
    // Each root's count of links (the links guardrail) is the number of edges in its person.
    let mut links: FxHashMap<Node, u32> = FxHashMap::default();
    for &(a, _) in g.edges().keys() {
        if a.slot() < root_of.len() {
            *links.entry(root_of[a.slot()]).or_default() += 1;
        }
    }
    for r in g.nodes().filter(|&r| g.is_person_root(r)) {
        let (kept, counted) = (g.slot(r).value.links(), links.get(&r).copied().unwrap_or(0));
        if kept != counted {
            rep.problem(format!(
                "root {r}: {counted} links in its person, but the count kept says {kept}"
            ));
        }
    }
    Ok(())
}

/// 4. The adjacency lists mirror the edge map, both directions.
fn adjacency(g: &Graph, rep: &mut VerifyReport) {
    let mut half = 0u64;
    for n in g.nodes() {
        for y in g.neighbors(n) {
            half += 1;
            if !g.edges().contains_key(&pair(n, y)) {
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
}

/// Invariant 5, read without the graph (so that it runs while the graph loads): events decode
/// and are in key order, blocks of packed events hold disjoint node ranges in order; refusal
/// records and the records of imported files decode. Whether the events' nodes are known IDs is
/// checked against the graph afterwards ([`Events::check`]).
struct Events {
    /// Each node that holds events, ascending, with how many it holds.
    nodes: Vec<(Node, u32)>,
    events: u64,
    problems: Vec<String>,
}

impl Events {
    /// Reads every event, refusal and file record; `done` counts the events read so far.
    fn scan(db: &sled::Db, done: &AtomicU64) -> Result<Events> {
        let mut nodes: Vec<(Node, u32)> = Vec::new();
        // Blocks of packed events: disjoint node ranges, each block's nodes after the previous
        // block's last and up to its own key's, in order.
        let mut prev: Option<Node> = None;
        let mut block_problems = Vec::new();
        let mut events = 0u64;
        let mut bad_events = Vec::new();
        let mut last_key: Vec<u8> = Vec::new();
        crate::store::events::for_each_key(
            db,
            |k, block_nodes| {
                let Ok(last) = codec::key_node(k) else {
                    block_problems.push("a block of packed events has a bad key".to_string());
                    return;
                };
                let ordered = block_nodes.windows(2).all(|w| w[0] <= w[1]);
                let inside = block_nodes
                    .iter()
                    .all(|&n| n <= last && prev.is_none_or(|p| n > p));
                if !ordered || !inside || block_nodes.is_empty() {
                    block_problems.push(format!(
                        "the block of packed events up to node {last} holds nodes out of its \
                         range or out of order"
                    ));
                }
                prev = Some(last);
            },
            |k, decoded| {
                events += 1;
                if events.is_multiple_of(4096) {
                    done.store(events, Ordering::Relaxed);
                }
                if events > 1 && last_key[..] >= *k {
                    bad_events.push("events out of key order (a block's entries)".to_string());
                }
                last_key.clear();
                last_key.extend_from_slice(k);
                match codec::key_node(k) {
                    Ok(n) => match nodes.last_mut() {
                        Some((last, count)) if *last == n => *count = count.saturating_add(1),
                        _ => nodes.push((n, 1)),
                    },
                    Err(e) => {
                        bad_events.push(format!("a stored event belongs to no known ID: {e}"))
                    }
                }
                if let Err(e) = decoded {
                    bad_events.push(format!("{e}"));
                }
                Ok(())
            },
        )
        .or_else(|e| match e {
            Error::Corrupt(m) => {
                block_problems.push(m);
                Ok(())
            }
            e => Err(e),
        })?;
        done.store(events, Ordering::Relaxed);
        let mut problems: Vec<String> = block_problems.into_iter().chain(bad_events).collect();
        for kv in db.scan_prefix([codec::REFUSAL]) {
            let (_, v) = kv?;
            if let Err(e) = codec::decode::<StoredRefusal>(&v, "a refusal") {
                problems.push(format!("{e}"));
            }
        }
        for kv in db.scan_prefix([codec::FILE]) {
            let (k, v) = kv?;
            if let Err(e) = codec::decode::<crate::FilePart>(&v, "an imported file's record") {
                let path = String::from_utf8_lossy(&k[1..]);
                problems.push(format!("{path}: {e}"));
            }
        }
        Ok(Events {
            nodes,
            events,
            problems,
        })
    }

    /// Reports what the scan found, and every event whose node is not a known ID of `g`.
    fn check(self, g: &Graph, rep: &mut VerifyReport) {
        rep.events += self.events;
        for p in self.problems {
            rep.problem(p);
        }
        for (n, count) in self.nodes {
            if n.slot() >= g.len() || !g.is_live(n) {
                for _ in 0..count {
                    rep.problem(format!("a stored event belongs to no known ID: node {n}"));
                }
            }
        }
    }
}

impl Store {
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
        let _w = self.writer.lock(); // a stable snapshot: no writes while we look
        let read = AtomicU64::new(0);
        std::thread::scope(|scope| {
            // The events need no graph: read on a thread of their own while the graph loads
            // and the rest is checked (each check runs on one core).
            let events = std::thread::Builder::new()
                .name("idgraph-verify-events".into())
                .spawn_scoped(scope, || Events::scan(&self.db, &read))
                .map_err(|e| Error::Internal(format!("starting a thread: {e}")))?;
            // Not loaded yet: rebuilt from the alias log, not from the index it is checked
            // against.
            self.load_graph_from(GraphSource::AliasLog)?;
            let g = self.graph()?;
            let mut tick = Tick::new(progress);
            let mut rep = self.verify_graph(&g, &mut tick)?;
            tick.stage("events", 0);
            let events = wait(events, &mut tick, &read)?;
            events.check(&g, &mut rep);
            // The counts `stats` keeps, against what was just counted.
            let kept = *self.counts.data.lock();
            if let Some(c) = kept
                && (c.events, c.properties) != (rep.events, rep.properties)
            {
                rep.problem(format!(
                    "the kept counts say {} events and {} property values, the store holds {} \
                     and {}",
                    c.events, c.properties, rep.events, rep.properties
                ));
            }
            tick.finish();
            Ok(rep)
        })
    }

    /// The ID records and alias links against `g`, and the graph index (while it is current:
    /// this handle has not written) against `g`: the same person for every ID as the graph
    /// rebuilt from the alias log. The index is checked on a thread of its own meanwhile.
    fn verify_graph(&self, g: &Graph, tick: &mut Tick) -> Result<VerifyReport> {
        use std::sync::atomic::Ordering::SeqCst;
        let checked = AtomicU64::new(0);
        let current = self
            .ix
            .current
            .as_ref()
            .filter(|_| !self.ix.unstamped.load(SeqCst) && !self.ix.broken.load(SeqCst));
        std::thread::scope(|scope| {
            let index = current
                .map(|ix| {
                    let check = || {
                        let mut problems = Vec::new();
                        let mut step = || {
                            checked.fetch_add(1, Ordering::Relaxed);
                        };
                        super::index::check(ix, g, &mut step, |p| problems.push(p));
                        problems
                    };
                    std::thread::Builder::new()
                        .name("idgraph-verify-index".into())
                        .spawn_scoped(scope, check)
                        .map_err(|e| Error::Internal(format!("starting a thread: {e}")))
                })
                .transpose()?;
            let mut rep = verify(&self.db, g, tick)?;
            if let Some(index) = index {
                tick.stage("graph index", g.len() as u64);
                let problems = wait(index, tick, &checked);
                if !problems.is_empty() {
                    self.ix.broken.store(true, SeqCst);
                    self.ix.due.store(true, SeqCst);
                }
                for p in problems {
                    rep.problem(format!("{p} (it is rewritten when the store is closed)"));
                }
            }
            Ok(rep)
        })
    }
}

/// The result of a check running on `thread`, telling `tick` how far it has come (`done`)
/// while it runs.
fn wait<T>(thread: std::thread::ScopedJoinHandle<'_, T>, tick: &mut Tick, done: &AtomicU64) -> T {
    while !thread.is_finished() {
        tick.reach(done.load(Ordering::Relaxed));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    tick.reach(done.load(Ordering::Relaxed));
    out
}
