//! Properties of a bulk import, aggregated in the one pass to the latest value per ID and
//! name, so that each ID's property map is written once.

use rustc_hash::FxHashMap;

use crate::codec::{self, PropMap};
use crate::error::Result;
use crate::forest::Node;
use crate::op::{Properties, Timestamp};
use crate::store::records::PropMerge;

/// The latest value of every property of every node, aggregated over the whole input in pass 1
/// so that each ID's property map is written once. Names and values are interned: the same few
/// names and many repeated values (`plan=pro`) cost 4 bytes per use.
#[derive(Default)]
pub(super) struct PropAgg {
    lnames: Interner<Box<str>>,
    spellings: Interner<Box<str>>,
    /// Encoded [`codec::StoredValue`]s.
    values: Interner<Vec<u8>>,
    /// (node, lower-cased name) → (first spelling, value, at, seq, arrival): `arrival`
    /// numbers the pairs in the order first seen, so that an ID short of room keeps the
    /// names that came first, as one op at a time keeps them.
    latest: FxHashMap<(Node, u32), Latest>,
    /// [`Limits::max_properties_per_id`](crate::Limits::max_properties_per_id).
    pub(super) max_per_id: usize,
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
pub(super) type Latest = (u32, u32, Timestamp, u64, u64);

/// Numbers distinct values in the order first seen.
pub(super) struct Interner<K> {
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
    pub(super) fn intern<Q>(&mut self, k: &Q) -> u32
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

    pub(super) fn get(&self, i: u32) -> &K {
        &self.items[i as usize]
    }
}

impl PropAgg {
    /// An empty aggregate that keeps at most `max_per_id` names per ID.
    pub(super) fn new(max_per_id: usize) -> Self {
        PropAgg {
            max_per_id,
            ..PropAgg::default()
        }
    }

    pub(super) fn add(
        &mut self,
        n: Node,
        props: &Properties,
        at: Timestamp,
        seq: u64,
    ) -> Result<()> {
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
    pub(super) fn index(&mut self) {
        self.by_node = std::mem::take(&mut self.latest)
            .into_iter()
            .map(|((n, _), e)| (n, e))
            .collect();
        self.by_node.sort_unstable_by_key(|&(n, e)| (n, e.4));
    }

    /// The run of node `n`'s entries in `by_node`.
    pub(super) fn run_of(&self, n: Node) -> &[(Node, Latest)] {
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
    pub(super) fn merge_into(&self, n: Node, map: &mut PropMap) -> Result<bool> {
        let mut changed = false;
        // In arrival order: names past the per-ID limit are the later ones.
        for &(_, (sp, v, at, seq, _)) in self.run_of(n) {
            let value = codec::decode(self.values.get(v), "a property value")?;
            let name = self.spellings.get(sp);
            changed |= map.merge_within(name, value, at, seq, self.max_per_id) == PropMerge::Set;
        }
        Ok(changed)
    }

    /// The nodes below `base` (known before the import) that have values.
    pub(super) fn old_nodes(&self, base: Node) -> Vec<Node> {
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
