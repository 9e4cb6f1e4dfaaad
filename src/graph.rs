//! The in-memory mirror of the identity graph: every ID, its node, and the union-find forest
//! over the nodes. Loaded from sled at open (IDs, then the alias-edge log replayed in order),
//! kept in step by the single writer, read by everyone under a read lock.
//!
//! The writer never changes the graph while it plans a batch: it works on a [`Staged`] view
//! (changes in a small overlay, reads falling through to the committed graph), writes the batch
//! to sled, and only then commits the overlay under the write lock, so a reader sees a union
//! entirely or not at all.

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use std::hash::BuildHasher;

use crate::codec::FLAG_ANON;
use crate::error::{Error, Result};
use crate::forest::{self, ForestStorage};

/// Per-node state of the forest plus what decides the canonical ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub parent: u32,
    pub next: u32,
    pub size: u32,
    /// At a root: the member shown as the person (see [`better`]).
    pub canon: u32,
    pub flags: u8,
}

impl Slot {
    fn single(n: u32, flags: u8) -> Slot {
        Slot {
            parent: n,
            next: n,
            size: 1,
            canon: n,
            flags,
        }
    }
}

/// Largest node number the graph hands out.
pub(crate) const MAX_NODES: u64 = u32::MAX as u64 - 1;

/// The committed graph.
#[derive(Default)]
pub(crate) struct Graph {
    slots: Vec<Slot>,
    /// The ID of each node; empty for a node number that is not in use.
    idents: Vec<Box<str>>,
    index: HashTable<u32>,
    hasher: FxBuildHasher,
    /// Alias edges by their (smaller, larger) endpoints → edge sequence number.
    edges: FxHashMap<(u32, u32), u64>,
    /// Adjacency lists, linked through `adj`: per node the index of its first entry ([`NIL`]
    /// for none). 4 bytes per node plus 16 per edge; walks touch one person only.
    adj_head: Vec<u32>,
    /// Adjacency entries: (neighbour, next entry of the same node's list).
    adj: Vec<(u32, u32)>,
    next_edge: u64,
    refused: u64,
    live: usize,
}

/// No adjacency entry.
const NIL: u32 = u32::MAX;

/// Edge endpoints in canonical order.
pub(crate) fn pair(a: u32, b: u32) -> (u32, u32) {
    if a <= b { (a, b) } else { (b, a) }
}

impl Graph {
    /// Builds the graph from the stored IDs and replays the alias log (in sequence order).
    pub fn load(
        ids: Vec<(u64, Box<str>, u8)>,
        edges: impl IntoIterator<Item = (u64, u64, u64)>,
        refused: u64,
    ) -> Result<Graph> {
        let mut g = Graph::default();
        let len = ids.iter().map(|r| r.0 + 1).max().unwrap_or(0);
        if len > MAX_NODES {
            return Err(Error::Corrupt(format!(
                "node number {} out of range",
                len - 1
            )));
        }
        let len = len as usize;
        g.slots = (0..len as u32).map(|n| Slot::single(n, 0)).collect();
        g.adj_head = vec![NIL; len];
        g.idents = vec![Box::from(""); len];
        for (node, ident, flags) in ids {
            let n = node as usize;
            if !g.idents[n].is_empty() {
                return Err(Error::Corrupt(format!(
                    "node {node} belongs to both {:?} and {ident:?}",
                    g.idents[n]
                )));
            }
            g.slots[n].flags = flags;
            g.idents[n] = ident;
            let h = g.hasher.hash_one(&*g.idents[n]);
            let idents = &g.idents;
            g.index
                .insert_unique(h, n as u32, |&m| g.hasher.hash_one(&*idents[m as usize]));
            g.live += 1;
        }
        for (seq, a, b) in edges {
            let (a, b) = (node_u32(a, len)?, node_u32(b, len)?);
            if g.idents[a as usize].is_empty() || g.idents[b as usize].is_empty() {
                return Err(Error::Corrupt(format!(
                    "alias edge {seq} links node {a} or {b}, which has no ID"
                )));
            }
            g.edges.insert(pair(a, b), seq);
            g.link(a, b);
            g.next_edge = g.next_edge.max(seq + 1);
            let (ra, rb) = (forest::find(&g, a), forest::find(&g, b));
            if ra != rb {
                let canon = better(&g, g.slots[ra as usize].canon, g.slots[rb as usize].canon);
                let w = forest::union_roots(&mut g, ra, rb);
                g.slots[w as usize].canon = canon;
            }
        }
        g.refused = refused;
        Ok(g)
    }

    /// The node of `id`, if the store has seen it.
    pub fn lookup(&self, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one(id);
        self.index
            .find(h, |&n| &*self.idents[n as usize] == id)
            .copied()
    }

    pub fn ident(&self, n: u32) -> &str {
        &self.idents[n as usize]
    }

    pub fn slot(&self, n: u32) -> Slot {
        self.slots[n as usize]
    }

    /// Node numbers handed out so far (including unused ones).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// IDs in the graph.
    pub fn live(&self) -> usize {
        self.live
    }

    pub fn is_live(&self, n: u32) -> bool {
        !self.idents[n as usize].is_empty()
    }

    pub fn root(&self, n: u32) -> u32 {
        forest::find(self, n)
    }

    /// The members of `n`'s person, in the order the store first saw them.
    pub fn members_sorted(&self, n: u32) -> Vec<u32> {
        let mut m: Vec<u32> = forest::members(self, self.root(n)).collect();
        m.sort_unstable();
        m
    }

    pub fn edges(&self) -> &FxHashMap<(u32, u32), u64> {
        &self.edges
    }

    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Applies what a [`Staged`] view planned (after it was written to sled).
    pub fn commit(&mut self, d: Delta) {
        for (ident, slot) in d.new_ids.into_iter().zip(d.new_slots) {
            let n = self.slots.len() as u32;
            self.slots.push(slot);
            self.adj_head.push(NIL);
            self.idents.push(ident);
            let h = self.hasher.hash_one(&*self.idents[n as usize]);
            let idents = &self.idents;
            let hasher = &self.hasher;
            self.index
                .insert_unique(h, n, |&m| hasher.hash_one(&*idents[m as usize]));
            self.live += 1;
        }
        for (n, s) in d.slots {
            self.slots[n as usize] = s;
        }
        for (p, seq) in d.edges {
            self.edges.insert(p, seq);
            self.link(p.0, p.1);
        }
        self.next_edge = d.next_edge;
        self.refused += d.refused;
    }
}

impl Graph {
    fn link(&mut self, a: u32, b: u32) {
        if a == b {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            let i = self.adj.len() as u32;
            self.adj.push((y, self.adj_head[x as usize]));
            self.adj_head[x as usize] = i;
        }
    }

    /// Takes `b` off `a`'s adjacency list (the entry stays in `adj`, unused).
    fn unlink_half(&mut self, a: u32, b: u32) {
        let mut prev = NIL;
        let mut i = self.adj_head[a as usize];
        while i != NIL {
            let (to, next) = self.adj[i as usize];
            if to == b {
                if prev == NIL {
                    self.adj_head[a as usize] = next;
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
    pub fn neighbors(&self, n: u32) -> impl Iterator<Item = u32> + '_ {
        let mut i = self.adj_head[n as usize];
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
    pub fn person_links(&self, n: u32) -> Vec<(u64, u32, u32)> {
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
    pub fn remove_edge_and_split(&mut self, a: u32, b: u32) -> Vec<u32> {
        self.edges.remove(&pair(a, b));
        self.unlink_half(a, b);
        self.unlink_half(b, a);
        let members: Vec<u32> = forest::members(self, self.root(a)).collect();
        let mut comp: FxHashMap<u32, u32> = FxHashMap::default(); // node → component root
        let mut roots = Vec::new();
        let mut sorted = members.clone();
        sorted.sort_unstable();
        for &start in &sorted {
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
            let mut canon = start;
            for (i, &m) in nodes.iter().enumerate() {
                canon = better(self, canon, m);
                let s = &mut self.slots[m as usize];
                s.parent = start;
                s.next = nodes[(i + 1) % nodes.len()];
                s.size = 1;
            }
            let r = &mut self.slots[start as usize];
            r.size = nodes.len() as u32;
            r.canon = canon;
            roots.push(start);
        }
        roots
    }

    /// Removes `n`'s whole person: its IDs leave the index (their node numbers stay unused),
    /// its edges and adjacency go.
    pub fn forget(&mut self, n: u32) {
        let members: Vec<u32> = forest::members(self, self.root(n)).collect();
        for &m in &members {
            let next: Vec<u32> = self.neighbors(m).collect();
            for y in next {
                self.edges.remove(&pair(m, y));
            }
        }
        for &m in &members {
            self.adj_head[m as usize] = NIL;
            let h = self.hasher.hash_one(&*self.idents[m as usize]);
            let idents = &self.idents;
            if let Ok(e) = self
                .index
                .find_entry(h, |&x| x == m && !idents[m as usize].is_empty())
            {
                e.remove();
            }
            self.idents[m as usize] = Box::from("");
            self.slots[m as usize] = Slot::single(m, 0);
            self.live -= 1;
        }
    }

    /// Refusal records removed from the log.
    pub fn uncount_refusals(&mut self, n: u64) {
        self.refused = self.refused.saturating_sub(n);
    }
}

fn node_u32(n: u64, len: usize) -> Result<u32> {
    if (n as usize) < len {
        Ok(n as u32)
    } else {
        Err(Error::Corrupt(format!(
            "alias edge names node {n}, which does not exist"
        )))
    }
}

/// Which of two nodes shows the person: a named ID before an anonymous one, then the one the
/// store saw first (the smaller node number).
fn better<S: Flags + ?Sized>(s: &S, x: u32, y: u32) -> u32 {
    let kx = (s.flags(x) & FLAG_ANON, x);
    let ky = (s.flags(y) & FLAG_ANON, y);
    if kx <= ky { x } else { y }
}

trait Flags {
    fn flags(&self, n: u32) -> u8;
}

impl Flags for Graph {
    fn flags(&self, n: u32) -> u8 {
        self.slots[n as usize].flags
    }
}

impl ForestStorage for Graph {
    fn parent(&self, n: u32) -> u32 {
        self.slots[n as usize].parent
    }
    fn set_parent(&mut self, n: u32, p: u32) {
        self.slots[n as usize].parent = p;
    }
    fn size(&self, n: u32) -> u32 {
        self.slots[n as usize].size
    }
    fn set_size(&mut self, n: u32, s: u32) {
        self.slots[n as usize].size = s;
    }
    fn next(&self, n: u32) -> u32 {
        self.slots[n as usize].next
    }
    fn set_next(&mut self, n: u32, x: u32) {
        self.slots[n as usize].next = x;
    }
}

impl Delta {
    /// The first new node.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// The IDs of the new nodes, in node order.
    pub fn new_idents(&self) -> &[Box<str>] {
        &self.new_ids
    }
}

/// The changes a [`Staged`] view planned, detached from the graph it read.
pub(crate) struct Delta {
    base: u32,
    slots: FxHashMap<u32, Slot>,
    new_slots: Vec<Slot>,
    new_ids: Vec<Box<str>>,
    edges: Vec<((u32, u32), u64)>,
    next_edge: u64,
    refused: u64,
}

/// A writable view of the graph: changes go to an overlay, reads fall through.
pub(crate) struct Staged<'g> {
    g: &'g Graph,
    /// Changed slots of committed nodes.
    slots: FxHashMap<u32, Slot>,
    /// Slots of the nodes this view adds (node = committed length + index).
    new_slots: Vec<Slot>,
    new_ids: Vec<Box<str>>,
    /// Index of `new_ids` (each string stored once).
    new_index: HashTable<u32>,
    edges: Vec<((u32, u32), u64)>,
    edge_set: FxHashSet<(u32, u32)>,
    next_edge: u64,
    refused: u64,
}

impl<'g> Staged<'g> {
    pub fn new(g: &'g Graph) -> Self {
        Staged {
            g,
            slots: FxHashMap::default(),
            new_slots: Vec::new(),
            new_ids: Vec::new(),
            new_index: HashTable::new(),
            edges: Vec::new(),
            edge_set: FxHashSet::default(),
            next_edge: g.next_edge,
            refused: 0,
        }
    }

    pub fn into_delta(self) -> Delta {
        Delta {
            base: self.g.len() as u32,
            slots: self.slots,
            new_slots: self.new_slots,
            new_ids: self.new_ids,
            edges: self.edges,
            next_edge: self.next_edge,
            refused: self.refused,
        }
    }

    fn slot(&self, n: u32) -> Slot {
        match (n as usize).checked_sub(self.g.len()) {
            Some(i) => self.new_slots[i],
            None => match self.slots.get(&n) {
                Some(s) => *s,
                None => self.g.slots[n as usize],
            },
        }
    }

    fn slot_mut(&mut self, n: u32) -> &mut Slot {
        let g = self.g;
        match (n as usize).checked_sub(g.len()) {
            Some(i) => &mut self.new_slots[i],
            None => self.slots.entry(n).or_insert_with(|| g.slots[n as usize]),
        }
    }

    pub fn lookup(&self, id: &str) -> Option<u32> {
        self.g.lookup(id).or_else(|| {
            let base = self.g.len() as u32;
            self.new_index
                .find(self.g.hasher.hash_one(id), |&n| {
                    &*self.new_ids[(n - base) as usize] == id
                })
                .copied()
        })
    }

    /// The ID of a node.
    pub fn ident(&self, n: u32) -> &str {
        match (n as usize).checked_sub(self.g.len()) {
            Some(i) => &self.new_ids[i],
            None => self.g.ident(n),
        }
    }

    /// Adds a new ID as a singleton person and returns its node.
    pub fn add(&mut self, id: &str, flags: u8) -> Result<u32> {
        let n = (self.g.len() + self.new_ids.len()) as u64;
        if n > MAX_NODES {
            return Err(Error::Full(MAX_NODES));
        }
        let n = n as u32;
        self.new_ids.push(id.into());
        let base = self.g.len() as u32;
        let (ids, hasher) = (&self.new_ids, &self.g.hasher);
        self.new_index.insert_unique(hasher.hash_one(id), n, |&m| {
            hasher.hash_one(&*ids[(m - base) as usize])
        });
        self.new_slots.push(Slot::single(n, flags));
        Ok(n)
    }

    pub fn flags(&self, n: u32) -> u8 {
        self.slot(n).flags
    }

    /// The first node number this view hands out.
    pub fn base(&self) -> u32 {
        self.g.len() as u32
    }

    /// Whether this view created node `n`.
    pub fn is_new(&self, n: u32) -> bool {
        n as usize >= self.g.len()
    }

    /// Sets a node's flags and re-decides its person's canonical ID.
    pub fn set_flags(&mut self, n: u32, flags: u8) {
        self.slot_mut(n).flags = flags;
        let r = forest::find(self, n);
        let mut canon = r;
        let ms: Vec<u32> = forest::members(self, r).collect();
        for m in ms {
            canon = better(self, canon, m);
        }
        self.slot_mut(r).canon = canon;
    }

    pub fn root(&self, n: u32) -> u32 {
        forest::find(self, n)
    }

    pub fn size_of_root(&self, r: u32) -> u32 {
        self.slot(r).size
    }

    /// Joins two different roots; returns the new root.
    pub fn union_roots(&mut self, ra: u32, rb: u32) -> u32 {
        let canon = better(self, self.slot(ra).canon, self.slot(rb).canon);
        let w = forest::union_roots(self, ra, rb);
        self.slot_mut(w).canon = canon;
        w
    }

    pub fn has_edge(&self, a: u32, b: u32) -> bool {
        let p = pair(a, b);
        self.g.edges.contains_key(&p) || self.edge_set.contains(&p)
    }

    /// Registers a new edge and returns its sequence number.
    pub fn add_edge(&mut self, a: u32, b: u32) -> u64 {
        let seq = self.next_edge;
        self.next_edge += 1;
        let p = pair(a, b);
        self.edge_set.insert(p);
        self.edges.push((p, seq));
        seq
    }

    pub fn count_refusal(&mut self) {
        self.refused += 1;
    }
}

impl Flags for Staged<'_> {
    fn flags(&self, n: u32) -> u8 {
        self.slot(n).flags
    }
}

impl ForestStorage for Staged<'_> {
    fn parent(&self, n: u32) -> u32 {
        self.slot(n).parent
    }
    fn set_parent(&mut self, n: u32, p: u32) {
        self.slot_mut(n).parent = p;
    }
    fn size(&self, n: u32) -> u32 {
        self.slot(n).size
    }
    fn set_size(&mut self, n: u32, s: u32) {
        self.slot_mut(n).size = s;
    }
    fn next(&self, n: u32) -> u32 {
        self.slot(n).next
    }
    fn set_next(&mut self, n: u32, x: u32) {
        self.slot_mut(n).next = x;
    }
}
