//! The union-find algorithm, written once against a small storage trait.
//!
//! A set is a tree of `parent` pointers (the root points to itself) plus a circular list of
//! its members through `next`, so a union splices two lists in O(1) and the members of a set
//! are one walk around its list. Union by size, ties broken by the smaller node number, so the
//! same unions in the same order always give the same roots. Finding a root never writes
//! (no path compression): union by size alone bounds a tree's height by log2 of its size.

/// Where a forest keeps its three numbers per node.
///
/// Implemented by [`MemForest`] (plain vectors, the floor in benchmarks and the engine of
/// batch merging) and by the store's staged view (reads fall through to the committed graph).
pub trait ForestStorage {
    /// The node's parent (itself at a root).
    fn parent(&self, n: u32) -> u32;
    /// Sets the node's parent.
    fn set_parent(&mut self, n: u32, p: u32);
    /// The number of members of the set; meaningful at roots only.
    fn size(&self, n: u32) -> u32;
    /// Sets the size of the set rooted at `n`.
    fn set_size(&mut self, n: u32, s: u32);
    /// The next member in the set's circular list.
    fn next(&self, n: u32) -> u32;
    /// Sets the next member.
    fn set_next(&mut self, n: u32, x: u32);
}

/// The root of `n`'s set. Never writes.
pub fn find<S: ForestStorage + ?Sized>(s: &S, mut n: u32) -> u32 {
    loop {
        let p = s.parent(n);
        if p == n {
            return n;
        }
        n = p;
    }
}

/// Joins the sets rooted at `ra` and `rb` (both must be roots, and different) and returns the
/// new root: the root of the larger set, or of the smaller node number when sizes are equal.
pub fn union_roots<S: ForestStorage + ?Sized>(s: &mut S, ra: u32, rb: u32) -> u32 {
    debug_assert_ne!(ra, rb);
    let (sa, sb) = (s.size(ra), s.size(rb));
    let (win, lose) = if sa > sb || (sa == sb && ra < rb) {
        (ra, rb)
    } else {
        (rb, ra)
    };
    s.set_parent(lose, win);
    s.set_size(win, sa + sb);
    // Splice the two circular member lists into one.
    let (nw, nl) = (s.next(win), s.next(lose));
    s.set_next(win, nl);
    s.set_next(lose, nw);
    win
}

/// Joins the sets of `a` and `b`; returns the new root, or `None` when they already were one.
pub fn union<S: ForestStorage + ?Sized>(s: &mut S, a: u32, b: u32) -> Option<u32> {
    let (ra, rb) = (find(s, a), find(s, b));
    (ra != rb).then(|| union_roots(s, ra, rb))
}

/// The members of the set whose list passes through `n` (start with a root to get its set).
pub fn members<S: ForestStorage + ?Sized>(s: &S, n: u32) -> Members<'_, S> {
    Members {
        s,
        start: n,
        cur: Some(n),
    }
}

/// Iterator over a set's circular member list; see [`members`].
pub struct Members<'a, S: ?Sized> {
    s: &'a S,
    start: u32,
    cur: Option<u32>,
}

impl<S: ForestStorage + ?Sized> Iterator for Members<'_, S> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let c = self.cur?;
        let nx = self.s.next(c);
        self.cur = (nx != self.start).then_some(nx);
        Some(c)
    }
}

/// A forest in three vectors: the in-memory union-find.
#[derive(Clone, Debug, Default)]
pub struct MemForest {
    parent: Vec<u32>,
    next: Vec<u32>,
    size: Vec<u32>,
}

impl MemForest {
    /// An empty forest.
    pub fn new() -> Self {
        Self::default()
    }

    /// A forest of `n` singletons.
    pub fn with_len(n: usize) -> Self {
        let mut f = Self::new();
        for _ in 0..n {
            f.push();
        }
        f
    }

    /// Adds a singleton and returns its node number.
    pub fn push(&mut self) -> u32 {
        let n = u32::try_from(self.parent.len()).expect("MemForest holds at most u32::MAX nodes");
        self.parent.push(n);
        self.next.push(n);
        self.size.push(1);
        n
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }
}

impl ForestStorage for MemForest {
    fn parent(&self, n: u32) -> u32 {
        self.parent[n as usize]
    }
    fn set_parent(&mut self, n: u32, p: u32) {
        self.parent[n as usize] = p;
    }
    fn size(&self, n: u32) -> u32 {
        self.size[n as usize]
    }
    fn set_size(&mut self, n: u32, s: u32) {
        self.size[n as usize] = s;
    }
    fn next(&self, n: u32) -> u32 {
        self.next[n as usize]
    }
    fn set_next(&mut self, n: u32, x: u32) {
        self.next[n as usize] = x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_partition(n in 1usize..40, pairs in proptest::collection::vec((0u32..40, 0u32..40), 0..80)) {
            let mut f = MemForest::with_len(n);
            let mut label: Vec<usize> = (0..n).collect();
            for (a, b) in pairs {
                let (a, b) = (a % n as u32, b % n as u32);
                let joined = union(&mut f, a, b).is_some();
                let (la, lb) = (label[a as usize], label[b as usize]);
                prop_assert_eq!(joined, la != lb);
                for l in label.iter_mut() { if *l == lb { *l = la; } }
            }
            for x in 0..n as u32 {
                let r = find(&f, x);
                let mut ms: Vec<u32> = members(&f, r).collect();
                ms.sort_unstable();
                let expect: Vec<u32> = (0..n as u32).filter(|y| label[*y as usize] == label[x as usize]).collect();
                prop_assert_eq!(f.size(r) as usize, expect.len());
                prop_assert_eq!(ms, expect);
            }
        }
    }

    #[test]
    fn ties_go_to_the_smaller_node() {
        let mut f = MemForest::with_len(4);
        assert_eq!(union(&mut f, 3, 2), Some(2));
        assert_eq!(union(&mut f, 1, 0), Some(0));
        assert_eq!(union(&mut f, 2, 1), Some(0));
        assert_eq!(union(&mut f, 3, 0), None);
    }
}
