//! The in-memory mirror of the identity graph: every ID, its node, and the union-find forest
//! over the nodes. Loaded from sled at open (IDs, then the alias-edge log replayed in order),
//! kept in step by the single writer, read by everyone under a read lock.
//!
//! The writer never changes the graph while it plans a batch: it works on a [`Staged`] view
//! (changes in a small overlay, reads falling through to the committed graph), writes the batch
//! to sled, and only then commits the overlay under the write lock, so a reader sees a union
//! entirely or not at all.
//!
//! This module knows nothing of bytes: `codec` encodes its [`Node`]s and [`Flags`].

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use std::hash::BuildHasher;

use crate::error::{Error, Result};
use crate::forest::{self, ForestStorage, Node};

mod staged;

pub(crate) use staged::{Delta, Staged};

/// What the store knows of an ID besides its links: bit flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags(u8);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// The ID is anonymous (KISSmetrics format, or marked so by its source). Sticky.
    pub const ANON: Flags = Flags(1);

    pub const fn from_bits(b: u8) -> Flags {
        Flags(b)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn contains(self, f: Flags) -> bool {
        self.0 & f.0 == f.0
    }

    #[must_use]
    pub const fn with(self, f: Flags) -> Flags {
        Flags(self.0 | f.0)
    }

    pub const fn is_anonymous(self) -> bool {
        self.contains(Flags::ANON)
    }
}

/// What a slot of the graph's forest carries: the ID's flags, and at a root the member that
/// shows the person (its canonical ID) with that member's anonymity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdState {
    pub flags: Flags,
    canon: Node,
    canon_anon: bool,
    /// At a root: the alias links among the person's IDs (kept by every union, new link and
    /// split, so that the links guardrail costs O(1); `verify` checks it).
    links: u32,
}

impl IdState {
    /// The state of `n` alone in its person.
    fn alone(n: Node, flags: Flags) -> IdState {
        IdState {
            flags,
            canon: n,
            canon_anon: flags.is_anonymous(),
            links: 0,
        }
    }

    /// At a root: the node whose ID shows the person.
    pub fn canon(&self) -> Node {
        self.canon
    }

    /// At a root: the alias links among the person's IDs.
    pub fn links(&self) -> u32 {
        self.links
    }
}

impl forest::Value for IdState {
    /// The one rule for the canonical ID: a named ID before an anonymous one, then the one the
    /// store saw first (the smaller node).
    fn absorb(&mut self, other: &IdState) {
        self.links = self.links.saturating_add(other.links);
        if (other.canon_anon, other.canon) < (self.canon_anon, self.canon) {
            self.canon = other.canon;
            self.canon_anon = other.canon_anon;
        }
    }
}

/// A slot of the graph's forest.
pub(crate) type Slot = forest::Slot<IdState>;

fn single(n: Node, flags: Flags) -> Slot {
    Slot::single(n, IdState::alone(n, flags))
}

/// Re-decides the canonical ID of the person rooted at `r` from its members `ms` (each alone,
/// absorbed in turn: the same rule as a union).
fn redecide<S: ForestStorage<Value = IdState>>(s: &mut S, r: Node, ms: &[Node]) {
    let alone = |m: Node| IdState::alone(m, s.get(m).value.flags);
    let mut v = alone(ms[0]);
    for &m in &ms[1..] {
        forest::Value::absorb(&mut v, &alone(m));
    }
    s.update(r, |x| {
        x.value.canon = v.canon;
        x.value.canon_anon = v.canon_anon;
    });
}

/// The IDs of the nodes, all in one string: per node a span `start << 16 | len` (`len` 0: the
/// node is not in use). ~8 bytes per ID besides its text, against ~50 for a `Box<str>` of a
/// typical ID with its allocation (DESIGN.md, "In memory"). Appends only: a forgotten ID's
/// text stays in `text` until the graph is next loaded.
#[derive(Default)]
struct Idents {
    spans: Vec<u64>,
    text: String,
}

/// Longest ID in bytes a span holds (`MAX_ID_CHARS` characters of at most 4 bytes).
const SPAN_LEN_BITS: u32 = 16;
const _: () = assert!(crate::id::MAX_ID_CHARS * 4 < 1 << SPAN_LEN_BITS);

impl Idents {
    fn get(&self, n: Node) -> &str {
        self.get_at(n.slot())
    }

    fn get_at(&self, i: usize) -> &str {
        let s = self.spans[i];
        let start = (s >> SPAN_LEN_BITS) as usize;
        let len = (s & ((1 << SPAN_LEN_BITS) - 1)) as usize;
        &self.text[start..start + len]
    }

    /// Whether node `n`'s ID is `id`: its bytes compared, without `get`'s checks of the
    /// span's ends as character boundaries (one memory read less per probe of a lookup).
    fn is(&self, n: Node, id: &str) -> bool {
        self.is_at(n.slot(), id)
    }

    fn is_at(&self, i: usize, id: &str) -> bool {
        let s = self.spans[i];
        let start = (s >> SPAN_LEN_BITS) as usize;
        let len = (s & ((1 << SPAN_LEN_BITS) - 1)) as usize;
        len == id.len() && self.text.as_bytes().get(start..start + len) == Some(id.as_bytes())
    }

    fn is_live(&self, n: Node) -> bool {
        self.spans[n.slot()] & ((1 << SPAN_LEN_BITS) - 1) != 0
    }

    /// Gives node `n` (already within `spans`) the ID `id`.
    fn set(&mut self, n: Node, id: &str) {
        debug_assert!(!id.is_empty() && id.len() < 1 << SPAN_LEN_BITS);
        self.spans[n.slot()] = (self.text.len() as u64) << SPAN_LEN_BITS | id.len() as u64;
        self.text.push_str(id);
    }

    fn push(&mut self, id: &str) {
        self.spans.push(0);
        self.set(
            Node::from_usize(self.spans.len() - 1).expect("checked by the caller"),
            id,
        );
    }

    fn clear(&mut self, n: Node) {
        self.spans[n.slot()] = 0;
    }
}

/// The committed graph.
#[derive(Default)]
pub(crate) struct Graph {
    slots: Vec<Slot>,
    /// The ID of each node; empty for a node that is not in use.
    idents: Idents,
    index: HashTable<Node>,
    hasher: FxBuildHasher,
    /// Alias edges by their (smaller, larger) endpoints → edge sequence number.
    edges: FxHashMap<(Node, Node), u64>,
    /// Adjacency lists, linked through `adj`: per node the index of its first entry ([`NIL`]
    /// for none). 4 bytes per node plus 8 per edge end; walks touch one person only.
    adj_head: Vec<u32>,
    /// Adjacency entries: (neighbour, next entry of the same node's list).
    adj: Vec<(Node, u32)>,
    next_edge: u64,
    refused: u64,
    live: usize,
    /// Persons (roots of live nodes), kept in step by every change so that counting them is
    /// O(1) (`/metrics`); `verify` checks it against a walk.
    persons: usize,
}

/// No adjacency entry.
const NIL: u32 = u32::MAX;

/// Edge endpoints in canonical order.
pub(crate) fn pair(a: Node, b: Node) -> (Node, Node) {
    if a <= b { (a, b) } else { (b, a) }
}

impl Graph {
    /// Starts a graph to be built with [`Graph::add_loaded`] or [`Graph::add_span`] (whose IDs
    /// are already in `text`) and [`Graph::finish_load`]; `nodes` is the expected node count.
    pub fn loading(nodes: usize, text: String) -> Graph {
        let mut g = Graph::default();
        g.slots.reserve_exact(nodes);
        g.idents.spans.reserve_exact(nodes);
        g.idents.text = text;
        g
    }

    /// Adds the stored ID `text[start..start + len]` (of [`Graph::loading`]) at its node.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the node is taken already, or the span is not an ID of the text.
    pub fn add_span(&mut self, n: Node, start: u64, len: u64, flags: Flags) -> Result<()> {
        let bad = || Error::Corrupt(format!("node {n} has no ID at bytes {start}+{len}"));
        let (a, b) = (
            usize::try_from(start).map_err(|_| bad())?,
            usize::try_from(len).map_err(|_| bad())?,
        );
        if b == 0
            || b >= 1 << SPAN_LEN_BITS
            || self.idents.text.get(a..a.saturating_add(b)).is_none()
        {
            return Err(bad());
        }
        self.grow_to(n);
        if self.idents.is_live(n) {
            return Err(Error::Corrupt(format!("node {n} has two IDs")));
        }
        self.slots[n.slot()] = single(n, flags);
        self.idents.spans[n.slot()] = start << SPAN_LEN_BITS | len;
        self.live += 1;
        Ok(())
    }

    /// Makes room for node `n`: the nodes up to it exist, unused.
    fn grow_to(&mut self, n: Node) {
        // O(new nodes): `Node::all(len).skip(from)` would step through the first `from`
        // nodes on every call in a debug build (quadratic over a load).
        let len = n.slot() + 1;
        while self.slots.len() < len {
            let m = Node::from_usize(self.slots.len()).expect("a node of the store");
            self.slots.push(single(m, Flags::NONE));
        }
        if self.idents.spans.len() < len {
            self.idents.spans.resize(len, 0);
        }
    }

    /// Adds a stored ID at its node, in any node order.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the node is taken already, or the ID is empty or too long.
    pub fn add_loaded(&mut self, n: Node, ident: &str, flags: Flags) -> Result<()> {
        if n.slot() < self.slots.len() && self.idents.is_live(n) {
            return Err(Error::Corrupt(format!(
                "node {n} belongs to both {:?} and {ident:?}",
                self.idents.get(n)
            )));
        }
        let start = self.idents.text.len() as u64;
        self.idents.text.push_str(ident);
        self.add_span(n, start, ident.len() as u64, flags)
    }

    /// Ends a load: indexes the IDs and replays the alias log `(seq, a, b)` in sequence order.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when an edge links a node that has no ID.
    pub fn finish_load(
        mut self,
        edges: impl ExactSizeIterator<Item = (u64, Node, Node)>,
        refused: u64,
    ) -> Result<Graph> {
        let len = self.slots.len();
        self.adj_head = vec![NIL; len];
        let (idents, hasher) = (&self.idents, &self.hasher);
        self.index
            .reserve(self.live, |&m| hasher.hash_one(idents.get(m)));
        for n in Node::all(len) {
            if self.idents.is_live(n) {
                self.index_insert(n);
            }
        }
        self.edges.reserve(edges.len());
        self.adj.reserve_exact(edges.len() * 2);
        for (seq, a, b) in edges {
            if a.slot() >= len || b.slot() >= len || !self.is_live(a) || !self.is_live(b) {
                return Err(Error::Corrupt(format!(
                    "alias edge {seq} links node {a} or {b}, which has no ID"
                )));
            }
            self.edges.insert(pair(a, b), seq);
            self.link(a, b);
            self.next_edge = self.next_edge.max(seq + 1);
            forest::union(&mut self, a, b);
            let r = forest::find(&self, a);
            self.slots[r.slot()].value.links += 1;
        }
        self.refused = refused;
        self.persons = self.nodes().filter(|&n| self.is_person_root(n)).count();
        self.slots.shrink_to_fit();
        self.idents.spans.shrink_to_fit();
        self.idents.text.shrink_to_fit();
        Ok(self)
    }

    fn index_insert(&mut self, n: Node) {
        let (idents, hasher) = (&self.idents, &self.hasher);
        self.index
            .insert_unique(hasher.hash_one(idents.get(n)), n, |&m| {
                hasher.hash_one(idents.get(m))
            });
    }

    /// The node of `id`, if the store has seen it.
    pub fn lookup(&self, id: &str) -> Option<Node> {
        let h = self.hasher.hash_one(id);
        self.index.find(h, |&n| self.idents.is(n, id)).copied()
    }

    pub fn ident(&self, n: Node) -> &str {
        self.idents.get(n)
    }

    pub fn slot(&self, n: Node) -> &Slot {
        &self.slots[n.slot()]
    }

    pub fn flags(&self, n: Node) -> Flags {
        self.slot(n).value.flags
    }

    /// Nodes handed out so far (including unused ones).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every node handed out so far, in order (including unused ones).
    pub fn nodes(&self) -> impl DoubleEndedIterator<Item = Node> + ExactSizeIterator + use<> {
        Node::all(self.len())
    }

    /// IDs in the graph.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Persons in the graph (O(1): a counter).
    pub fn persons(&self) -> usize {
        self.persons
    }

    pub fn is_live(&self, n: Node) -> bool {
        self.idents.is_live(n)
    }

    /// Whether `n` is in use and the root of its person.
    pub fn is_person_root(&self, n: Node) -> bool {
        self.is_live(n) && self.slot(n).parent == n
    }

    pub fn root(&self, n: Node) -> Node {
        forest::find(self, n)
    }

    /// The canonical ID of `n`'s person: the ID that shows it.
    pub fn person_id(&self, n: Node) -> &str {
        self.ident(self.slot(self.root(n)).value.canon())
    }

    /// The members of `n`'s person, in the order the store first saw them.
    pub fn members_sorted(&self, n: Node) -> Vec<Node> {
        let mut m: Vec<Node> = forest::members(self, self.root(n)).collect();
        m.sort_unstable();
        m
    }

    pub fn edges(&self) -> &FxHashMap<(Node, Node), u64> {
        &self.edges
    }

    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Applies what a [`Staged`] view planned (after it was written to sled).
    pub fn commit(&mut self, d: Delta) {
        self.idents.text.reserve(d.new_ids.text.len());
        // Grown once, not by doubling (each growth rehashes every ID).
        let more = d.new_slots.len();
        let (idents, hasher) = (&self.idents, &self.hasher);
        self.index
            .reserve(more, |&m| hasher.hash_one(idents.get(m)));
        self.slots.reserve(more);
        self.adj_head.reserve(more);
        for (i, slot) in d.new_slots.into_iter().enumerate() {
            let n = Node::from_usize(self.slots.len()).expect("the staged view checked the range");
            self.persons += usize::from(slot.parent == n);
            self.slots.push(slot);
            self.adj_head.push(NIL);
            self.idents.push(d.new_ids.get_at(i));
            self.index_insert(n);
            self.live += 1;
        }
        for (n, s) in d.slots {
            // Adjust the count by what each changed slot was and is now.
            let was = self.slots[n.slot()].parent == n;
            let is = s.parent == n;
            self.persons = self.persons + usize::from(is) - usize::from(was);
            self.slots[n.slot()] = s;
        }
        for (p, seq) in d.edges {
            self.edges.insert(p, seq);
            self.link(p.0, p.1);
        }
        self.next_edge = d.next_edge;
        self.refused += d.refused;
    }

    fn link(&mut self, a: Node, b: Node) {
        if a == b {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            let i = u32::try_from(self.adj.len()).expect("fewer than 2^31 alias edges");
            self.adj.push((y, self.adj_head[x.slot()]));
            self.adj_head[x.slot()] = i;
        }
    }

    /// Takes `b` off `a`'s adjacency list (the entry stays in `adj`, unused).
    fn unlink_half(&mut self, a: Node, b: Node) {
        let mut prev = NIL;
        let mut i = self.adj_head[a.slot()];
        while i != NIL {
            let (to, next) = self.adj[i as usize];
            if to == b {
                if prev == NIL {
                    self.adj_head[a.slot()] = next;
                } else {
                    self.adj[prev as usize].1 = next;
                }
                return;
            }
            prev = i;
            i = next;
        }
    }

    /// The IDs linked to `n` by an alias edge.
    pub fn neighbors(&self, n: Node) -> impl Iterator<Item = Node> + '_ {
        let mut i = self.adj_head[n.slot()];
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let (to, next) = self.adj[i as usize];
            i = next;
            Some(to)
        })
    }

    /// The links among the IDs of `n`'s person: `(seq, x, y)` with `x < y`, in member order.
    pub fn person_links(&self, n: Node) -> Vec<(u64, Node, Node)> {
        let mut out = Vec::new();
        for m in self.members_sorted(n) {
            for y in self.neighbors(m) {
                if m < y
                    && let Some(&seq) = self.edges.get(&(m, y))
                {
                    out.push((seq, m, y));
                }
            }
        }
        out
    }

    /// Removes the edge `a`-`b` and splits its person into the components the remaining edges
    /// connect (each gets a fresh forest: flat, its canonical ID re-decided). Returns the roots
    /// of the resulting persons (one when the person stays connected). Touches only that person.
    pub fn remove_edge_and_split(&mut self, a: Node, b: Node) -> Vec<Node> {
        self.edges.remove(&pair(a, b));
        self.unlink_half(a, b);
        self.unlink_half(b, a);
        let mut sorted = self.members_sorted(a);
        let mut comp: FxHashMap<Node, Node> = FxHashMap::default(); // node → component root
        let mut roots = Vec::new();
        for start in std::mem::take(&mut sorted) {
            if comp.contains_key(&start) {
                continue;
            }
            // Breadth-first over the remaining edges; `start` is the component's smallest node.
            let mut nodes = vec![start];
            comp.insert(start, start);
            let mut k = 0;
            while k < nodes.len() {
                let x = nodes[k];
                k += 1;
                for y in self.neighbors(x) {
                    if let std::collections::hash_map::Entry::Vacant(e) = comp.entry(y) {
                        e.insert(start);
                        nodes.push(y);
                    }
                }
            }
            nodes.sort_unstable();
            let ends: usize = nodes.iter().map(|&m| self.neighbors(m).count()).sum();
            for (i, &m) in nodes.iter().enumerate() {
                let s = &mut self.slots[m.slot()];
                s.parent = start;
                s.next = nodes[(i + 1) % nodes.len()];
                s.size = 1;
                s.value.links = 0;
            }
            self.slots[start.slot()].value.links =
                u32::try_from(ends / 2).expect("fewer than 2^32 links in a person");
            self.slots[start.slot()].size =
                u32::try_from(nodes.len()).expect("a person is smaller than the node space");
            redecide(self, start, &nodes);
            roots.push(start);
        }
        self.persons += roots.len() - 1;
        roots
    }

    /// Removes `n`'s whole person: its IDs leave the index (their nodes stay unused), its edges
    /// and adjacency go.
    pub fn forget(&mut self, n: Node) {
        let members: Vec<Node> = forest::members(self, self.root(n)).collect();
        self.persons -= 1;
        for &m in &members {
            let next: Vec<Node> = self.neighbors(m).collect();
            for y in next {
                self.edges.remove(&pair(m, y));
            }
        }
        for &m in &members {
            self.adj_head[m.slot()] = NIL;
            let h = self.hasher.hash_one(self.idents.get(m));
            if let Ok(e) = self.index.find_entry(h, |&x| x == m) {
                e.remove();
            }
            self.idents.clear(m);
            self.slots[m.slot()] = single(m, Flags::NONE);
            self.live -= 1;
        }
    }

    /// Refusal records removed from the log.
    pub fn uncount_refusals(&mut self, n: u64) {
        self.refused = self.refused.saturating_sub(n);
    }
}

impl ForestStorage for Graph {
    type Value = IdState;
    fn get(&self, n: Node) -> &Slot {
        &self.slots[n.slot()]
    }
    fn update(&mut self, n: Node, f: impl FnOnce(&mut Slot)) {
        f(&mut self.slots[n.slot()]);
    }
}
