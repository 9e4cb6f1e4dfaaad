//! The union-find algorithm, written once against a small storage trait (the `ena` way: the
//! algorithm here, where the slots live up to the [`ForestStorage`]).
//!
//! A set is a tree of `parent` pointers (the root points to itself) plus a circular list of
//! its members through `next`, so a union splices two lists in O(1) and the members of a set
//! are one walk around its list. Union by size, ties broken by the smaller node, so the same
//! unions in the same order always give the same roots. Finding a root never writes (no path
//! compression): union by size alone bounds a tree's height by log2 of its size.
//!
//! Each slot also carries a [`Value`] (ena's `UnifyValue`): what the identity graph keeps per
//! ID (its flags, and at a root the person's canonical ID). A union joins the two roots'
//! values with [`Value::absorb`], so the rule that picks the canonical ID is written once.

/// A node of a forest: a `u32` index that only the forest hands out (ena's `UnifyKey`).
///
/// On disk a node is a u64 (big-endian in keys, a bincode integer in values); the conversions
/// check the range, so a damaged store fails as corrupt instead of indexing out of bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node(u32);

impl Node {
    /// The largest node a forest hands out (`u32::MAX` stays free as a "no node" marker).
    pub const MAX: Node = Node(u32::MAX - 1);

    /// The node with index `i`.
    pub const fn from_index(i: u32) -> Node {
        Node(i)
    }

    /// The node's index.
    pub const fn index(self) -> u32 {
        self.0
    }

    /// The node's index as a `usize`, for indexing per-node vectors.
    pub const fn slot(self) -> usize {
        self.0 as usize
    }

    /// The node after this one.
    pub const fn next(self) -> Node {
        Node(self.0 + 1)
    }

    /// The node at vector position `i`; `None` past [`Node::MAX`].
    pub fn from_usize(i: usize) -> Option<Node> {
        u32::try_from(i)
            .ok()
            .filter(|&i| i <= Node::MAX.0)
            .map(Node)
    }

    /// The node of an on-disk number; `None` past [`Node::MAX`].
    pub fn from_u64(n: u64) -> Option<Node> {
        u32::try_from(n)
            .ok()
            .filter(|&i| i <= Node::MAX.0)
            .map(Node)
    }

    /// The node as its on-disk number.
    pub const fn as_u64(self) -> u64 {
        self.0 as u64
    }

    /// The nodes `0..len` (`len` at most [`Node::MAX`] + 1).
    pub fn all(len: usize) -> impl DoubleEndedIterator<Item = Node> + ExactSizeIterator {
        debug_assert!(len <= Node::MAX.slot() + 1);
        (0..len as u32).map(Node)
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.as_u64())
    }
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        let n = u64::deserialize(d)?;
        Node::from_u64(n)
            .ok_or_else(|| serde::de::Error::custom(format!("node {n} is out of range")))
    }
}

/// What a slot carries besides its links, joined when two sets become one.
pub trait Value: Copy {
    /// Joins the value of the losing root (`other`) into the winning root's (`self`).
    fn absorb(&mut self, other: &Self);
}

impl Value for () {
    fn absorb(&mut self, _: &()) {}
}

/// One node of a forest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot<V> {
    /// The parent (the node itself at a root).
    pub parent: Node,
    /// The next member in the set's circular list.
    pub next: Node,
    /// The number of members of the set; meaningful at roots only.
    pub size: u32,
    /// What the forest's user keeps per node.
    pub value: V,
}

impl<V> Slot<V> {
    /// The slot of `n` alone in its set.
    pub fn single(n: Node, value: V) -> Slot<V> {
        Slot {
            parent: n,
            next: n,
            size: 1,
            value,
        }
    }
}

/// Where a forest keeps its slots: whole slots in, whole slots out (ena's
/// `UnificationStoreBase`).
///
/// Implemented by [`MemForest`] (a vector, the floor in benchmarks), by the identity graph, and
/// by its staged view (changes in an overlay, reads falling through to the committed graph).
pub trait ForestStorage {
    /// What each slot carries.
    type Value: Value;
    /// The slot of `n`.
    fn get(&self, n: Node) -> &Slot<Self::Value>;
    /// Changes the slot of `n` in place.
    fn update(&mut self, n: Node, f: impl FnOnce(&mut Slot<Self::Value>));
}

/// The root of `n`'s set. Never writes.
pub fn find<S: ForestStorage>(s: &S, mut n: Node) -> Node {
    loop {
        let p = s.get(n).parent;
        if p == n {
            return n;
        }
        n = p;
    }
}

/// Joins the sets rooted at `ra` and `rb` (both must be roots, and different) and returns the
/// new root: the root of the larger set, or the smaller node when sizes are equal. The new
/// root's value is the winner's with the loser's [absorbed](Value::absorb).
pub fn union_roots<S: ForestStorage>(s: &mut S, ra: Node, rb: Node) -> Node {
    debug_assert_ne!(ra, rb);
    let (a, b) = (*s.get(ra), *s.get(rb));
    let (win, w, lose, l) = if a.size > b.size || (a.size == b.size && ra < rb) {
        (ra, a, rb, b)
    } else {
        (rb, b, ra, a)
    };
    let mut value = w.value;
    value.absorb(&l.value);
    // Splice the two circular member lists into one.
    s.update(lose, |x| {
        x.parent = win;
        x.next = w.next;
    });
    s.update(win, |x| {
        x.size = w.size + l.size;
        x.next = l.next;
        x.value = value;
    });
    win
}

/// Joins the sets of `a` and `b`; returns the new root, or `None` when they already were one.
pub fn union<S: ForestStorage>(s: &mut S, a: Node, b: Node) -> Option<Node> {
    let (ra, rb) = (find(s, a), find(s, b));
    (ra != rb).then(|| union_roots(s, ra, rb))
}

/// The members of the set whose list passes through `n` (start with a root to get its set).
pub fn members<S: ForestStorage>(s: &S, n: Node) -> Members<'_, S> {
    Members {
        s,
        start: n,
        cur: Some(n),
    }
}

/// Iterator over a set's circular member list; see [`members`].
pub struct Members<'a, S> {
    s: &'a S,
    start: Node,
    cur: Option<Node>,
}

impl<S: ForestStorage> Iterator for Members<'_, S> {
    type Item = Node;
    fn next(&mut self) -> Option<Node> {
        let c = self.cur?;
        let nx = self.s.get(c).next;
        self.cur = (nx != self.start).then_some(nx);
        Some(c)
    }
}

/// A forest in one vector of slots: the in-memory union-find.
#[derive(Clone, Debug)]
pub struct MemForest<V = ()> {
    slots: Vec<Slot<V>>,
}

impl<V> Default for MemForest<V> {
    fn default() -> Self {
        MemForest { slots: Vec::new() }
    }
}

impl MemForest {
    /// An empty forest.
    pub fn new() -> Self {
        Self::default()
    }

    /// A forest of `n` singletons.
    pub fn with_len(n: usize) -> Self {
        let mut f = Self::new();
        f.slots.reserve(n);
        for _ in 0..n {
            f.push();
        }
        f
    }

    /// Adds a singleton and returns its node.
    ///
    /// # Panics
    /// Past [`Node::MAX`] nodes.
    pub fn push(&mut self) -> Node {
        self.push_with(())
    }
}

impl<V: Value> MemForest<V> {
    /// Adds a singleton carrying `value` and returns its node.
    ///
    /// # Panics
    /// Past [`Node::MAX`] nodes.
    pub fn push_with(&mut self, value: V) -> Node {
        let n = Node::from_usize(self.slots.len()).expect("a MemForest holds at most Node::MAX");
        self.slots.push(Slot::single(n, value));
        n
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl<V: Value> ForestStorage for MemForest<V> {
    type Value = V;
    fn get(&self, n: Node) -> &Slot<V> {
        &self.slots[n.slot()]
    }
    fn update(&mut self, n: Node, f: impl FnOnce(&mut Slot<V>)) {
        f(&mut self.slots[n.slot()]);
    }
}

/// The connected components of the graph of `edges` between any 64-bit labels, as stars: for
/// every label but the smallest of its component, `(smallest, label)`, in the order labels
/// first appear. The same components as `edges`, in one edge per label: how the Spark job
/// solves its links when they fit one task (spark/README.md).
///
/// # Panics
/// Past [`Node::MAX`] distinct labels.
pub fn stars(edges: impl IntoIterator<Item = (i64, i64)>) -> Vec<(i64, i64)> {
    let mut dense: rustc_hash::FxHashMap<i64, Node> = rustc_hash::FxHashMap::default();
    let mut labels: Vec<i64> = Vec::new();
    let mut f = MemForest::new();
    let mut node = |x: i64, f: &mut MemForest| {
        *dense.entry(x).or_insert_with(|| {
            labels.push(x);
            f.push()
        })
    };
    let mut pairs = Vec::new();
    for (a, b) in edges {
        let (na, nb) = (node(a, &mut f), node(b, &mut f));
        pairs.push((na, nb));
    }
    for (a, b) in pairs {
        union(&mut f, a, b);
    }
    let mut smallest: Vec<i64> = labels.clone();
    let roots: Vec<Node> = Node::all(f.len()).map(|n| find(&f, n)).collect();
    for (n, r) in roots.iter().enumerate() {
        smallest[r.slot()] = smallest[r.slot()].min(labels[n]);
    }
    roots
        .iter()
        .zip(&labels)
        .filter_map(|(r, &x)| (smallest[r.slot()] != x).then_some((smallest[r.slot()], x)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(i: u32) -> Node {
        Node::from_index(i)
    }

    /// The components of `edges` by breadth-first search: each label's component's smallest.
    fn smallest_by_bfs(edges: &[(i64, i64)]) -> std::collections::BTreeMap<i64, i64> {
        use std::collections::{BTreeMap, BTreeSet};
        let mut adj: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for &(a, b) in edges {
            adj.entry(a).or_default().insert(b);
            adj.entry(b).or_default().insert(a);
        }
        let mut out = BTreeMap::new();
        for &start in adj.keys() {
            if out.contains_key(&start) {
                continue;
            }
            let (mut seen, mut todo) = (BTreeSet::from([start]), vec![start]);
            while let Some(x) = todo.pop() {
                todo.extend(adj[&x].iter().copied().filter(|&y| seen.insert(y)));
            }
            let min = *seen.first().unwrap();
            out.extend(seen.into_iter().map(|x| (x, min)));
        }
        out
    }

    proptest! {
        #[test]
        fn stars_are_the_components(edges in proptest::collection::vec((-20i64..20, -20i64..20), 0..60)) {
            let want = smallest_by_bfs(&edges);
            let got = stars(edges.iter().copied());
            // One edge for every label but its component's smallest, to that smallest.
            let mut from_stars: std::collections::BTreeMap<i64, i64> =
                want.keys().map(|&x| (x, x)).collect();
            for &(min, x) in &got {
                prop_assert!(min < x);
                prop_assert_eq!(from_stars.insert(x, min), Some(x), "label {} twice", x);
            }
            prop_assert_eq!(from_stars, want);
        }

        #[test]
        fn matches_naive_partition(len in 1usize..40, pairs in proptest::collection::vec((0u32..40, 0u32..40), 0..80)) {
            let mut f = MemForest::with_len(len);
            let mut label: Vec<usize> = (0..len).collect();
            for (a, b) in pairs {
                let (a, b) = (a % len as u32, b % len as u32);
                let joined = union(&mut f, n(a), n(b)).is_some();
                let (la, lb) = (label[a as usize], label[b as usize]);
                prop_assert_eq!(joined, la != lb);
                for l in label.iter_mut() { if *l == lb { *l = la; } }
            }
            for x in Node::all(len) {
                let r = find(&f, x);
                let mut ms: Vec<Node> = members(&f, r).collect();
                ms.sort_unstable();
                let expect: Vec<Node> = Node::all(len).filter(|y| label[y.slot()] == label[x.slot()]).collect();
                prop_assert_eq!(f.get(r).size as usize, expect.len());
                prop_assert_eq!(ms, expect);
            }
        }
    }

    #[test]
    fn ties_go_to_the_smaller_node() {
        let mut f = MemForest::with_len(4);
        assert_eq!(union(&mut f, n(3), n(2)), Some(n(2)));
        assert_eq!(union(&mut f, n(1), n(0)), Some(n(0)));
        assert_eq!(union(&mut f, n(2), n(1)), Some(n(0)));
        assert_eq!(union(&mut f, n(3), n(0)), None);
    }

    /// The smallest value wins, whichever root wins.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Min(u32);
    impl Value for Min {
        fn absorb(&mut self, other: &Min) {
            self.0 = self.0.min(other.0);
        }
    }

    #[test]
    fn a_union_absorbs_the_losers_value() {
        let mut f = MemForest::default();
        let (a, b, c) = (
            f.push_with(Min(9)),
            f.push_with(Min(4)),
            f.push_with(Min(7)),
        );
        let r = union(&mut f, a, c).unwrap();
        assert_eq!(f.get(r).value, Min(7));
        let r = union(&mut f, b, r).unwrap();
        assert_eq!((r, f.get(r).value), (a, Min(4)));
    }

    #[test]
    fn nodes_check_their_range() {
        assert_eq!(Node::from_u64(5), Some(n(5)));
        assert_eq!(Node::from_u64(Node::MAX.as_u64() + 1), None);
        assert_eq!(Node::from_u64(u64::MAX), None);
        assert_eq!(Node::from_usize(7), Some(n(7)));
    }
}
