//! Explain, undo and forget: what the alias log makes possible. The entry points are
//! [`Store::explain`], [`Store::unalias`], [`Store::forget`], [`Store::links`] and
//! [`Store::hubs`]; this module holds their work.
//!
//! The forest is not on disk (DESIGN.md): it is rebuilt from the alias log at open. So an
//! unalias only deletes one edge on disk (one key) and re-splits the person in memory; events
//! and properties are stored per ID and follow their IDs by themselves.

use crate::dot::{GraphId, PersonGraph};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::codec;
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::graph::{Graph, pair};
use crate::op::Link;
use crate::store::records;
use crate::store::{Store, recovery};

/// Why two IDs are one person, as [`Store::explain`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Whether the two IDs are one person.
    pub same_person: bool,
    /// The shortest chain of links from the first ID to the second: each link's `a` is the ID
    /// nearer to the first. Empty when they are different persons (or the same ID).
    pub edges: Vec<Link>,
}

/// What [`Store::forget`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// The person's IDs, in the order the store first saw them.
    pub ids: Vec<String>,
    /// Alias links deleted.
    pub links: u64,
    /// Events deleted.
    pub events: u64,
    /// Refused-merge records that named one of the IDs, deleted.
    pub refusals: u64,
}

/// The largest persons and the most linked IDs, as [`Store::hubs`] lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Hubs {
    /// `(canonical ID, IDs in the person)`, largest first.
    pub largest: Vec<(String, u64)>,
    /// `(ID, alias links it has)`, most first.
    pub most_linked: Vec<(String, u64)>,
}

/// One link found in memory: its sequence number and its two ends (node and ID), `from` first.
struct Found {
    seq: u64,
    from: (Node, String),
    to: (Node, String),
}

impl Found {
    fn new(g: &Graph, seq: u64, from: Node, to: Node) -> Found {
        Found {
            seq,
            from: (from, g.ident(from).to_owned()),
            to: (to, g.ident(to).to_owned()),
        }
    }

    /// The link with its stored detail; `a` is `from`, or the stored orientation when
    /// `stored_order` (the first ID of the alias that made it).
    fn read(self, db: &sled::Db, stored_order: bool) -> Result<Link> {
        let e = records::edge_detail(
            db,
            self.seq,
            (self.from.0, &self.from.1),
            (self.to.0, &self.to.1),
        )?;
        let (a, b) = if stored_order && e.a != self.from.0 {
            (self.to.1, self.from.1)
        } else {
            (self.from.1, self.to.1)
        };
        Ok(Link {
            a,
            b,
            cause: e.cause,
            at: e.at,
            source: e.source,
        })
    }
}

/// See [`Store::links`].
pub(crate) fn links(store: &Store, id: &str) -> Result<Vec<Link>> {
    let found: Vec<Found> = {
        let g = store.graph()?;
        let Some(n) = g.lookup(id) else {
            return Ok(Vec::new());
        };
        let mut f = g.person_links(n);
        f.sort_unstable();
        f.into_iter()
            .map(|(seq, x, y)| Found::new(&g, seq, x, y))
            .collect()
    };
    found.into_iter().map(|f| f.read(&store.db, true)).collect()
}

/// See [`Store::explain`].
pub(crate) fn explain(store: &Store, a: &str, b: &str) -> Result<Explanation> {
    let apart = Explanation {
        same_person: false,
        edges: Vec::new(),
    };
    let chain: Vec<Found> = {
        let g = store.graph()?;
        let (Some(na), Some(nb)) = (g.lookup(a), g.lookup(b)) else {
            return Ok(apart);
        };
        if g.root(na) != g.root(nb) {
            return Ok(apart);
        }
        let nodes = shortest_path(&g, na, nb).ok_or_else(|| {
            Error::Corrupt(format!(
                "{a:?} and {b:?} are one person but no chain of links joins them"
            ))
        })?;
        let mut chain = Vec::with_capacity(nodes.len().saturating_sub(1));
        for w in nodes.windows(2) {
            let seq = *g
                .edges()
                .get(&pair(w[0], w[1]))
                .ok_or_else(|| Error::Corrupt("an adjacency entry has no alias edge".into()))?;
            chain.push(Found::new(&g, seq, w[0], w[1]));
        }
        chain
    };
    let edges = chain
        .into_iter()
        .map(|f| f.read(&store.db, false))
        .collect::<Result<Vec<_>>>()?;
    Ok(Explanation {
        same_person: true,
        edges,
    })
}

/// The nodes of a shortest chain of links from `from` to `to` (breadth-first over the
/// adjacency lists), both included; `None` when no chain joins them.
fn shortest_path(g: &Graph, from: Node, to: Node) -> Option<Vec<Node>> {
    let mut prev: FxHashMap<Node, Node> = FxHashMap::default();
    prev.insert(from, from);
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(x) = queue.pop_front() {
        if x == to {
            break;
        }
        for y in g.neighbors(x) {
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(y) {
                e.insert(x);
                queue.push_back(y);
            }
        }
    }
    let mut nodes = vec![to];
    let mut x = to;
    while x != from {
        x = *prev.get(&x)?;
        nodes.push(x);
    }
    nodes.reverse();
    Some(nodes)
}

/// See [`Store::unalias`]: the roots of the resulting persons, or `None` when `a` and `b` have
/// no direct link. The caller holds the writer lock.
pub(crate) fn unalias(store: &Store, a: &str, b: &str) -> Result<Option<Vec<Node>>> {
    let (na, nb, seq) = {
        let g = store.graph()?;
        let (Some(na), Some(nb)) = (g.lookup(a), g.lookup(b)) else {
            return Ok(None);
        };
        match g.edges().get(&pair(na, nb)) {
            Some(&seq) => (na, nb, seq),
            None => return Ok(None),
        }
    };
    // Readers see the link and the person whole, or the split: never the link gone from disk
    // while the graph still shows it.
    store
        .removing(|| {
            // The keys `remove_edge` may write, kept for a backup in progress.
            store.preserve([
                codec::edge_key(seq).to_vec(),
                codec::id_key(a),
                codec::id_key(b),
            ])?;
            records::remove_edge(&store.db, seq, (na, a), (nb, b))?;
            Ok(store.graph_mut()?.remove_edge_and_split(na, nb))
        })
        .map(Some)
}

/// See [`Store::forget`]. The caller holds the writer lock.
pub(crate) fn forget(store: &Store, id: &str) -> Result<Option<Forgotten>> {
    let (members, edges) = {
        let g = store.graph()?;
        let Some(n) = g.lookup(id) else {
            return Ok(None);
        };
        let members: Vec<(Node, String)> = g
            .members_sorted(n)
            .into_iter()
            .map(|m| (m, g.ident(m).to_owned()))
            .collect();
        let edges: Vec<u64> = g.person_links(n).into_iter().map(|l| l.0).collect();
        (members, edges)
    };
    let removal = records::person_removal(&store.db, &members, &edges)?;
    let out = Forgotten {
        ids: members.iter().map(|(_, s)| s.clone()).collect(),
        links: edges.len() as u64,
        events: removal.events,
        refusals: removal.refusals,
    };
    // The person's IDs are suppressed in the same write: no later data brings them back.
    let (suppress, added) = store.suppressed.writes(&out.ids, crate::op::now());
    let mut writes = removal.writes;
    writes.extend(suppress);
    // Readers see the person whole or gone, never half its keys removed.
    store.removing(|| {
        recovery::write_redo(store, writes)?;
        store.suppressed.add(added);
        let mut g = store.graph_mut()?;
        g.forget(members[0].0);
        g.uncount_refusals(out.refusals);
        Ok(())
    })?;
    Ok(Some(out))
}

/// See [`Store::hubs`].
pub(crate) fn hubs(g: &Graph, top: usize) -> Hubs {
    let (largest, linked) = hubs_of(g, top);
    Hubs {
        largest: largest
            .into_iter()
            .map(|(size, c)| (g.ident(c).to_owned(), u64::from(size)))
            .collect(),
        most_linked: linked
            .into_iter()
            .map(|(d, n)| (g.ident(n).to_owned(), u64::from(d)))
            .collect(),
    }
}

/// The `top` largest persons `(size, canonical node)` and most linked IDs `(links, node)`,
/// best first; ties go to the node seen first (a person's canonical node, not its root: roots
/// depend on how the forest was built). What [`hubs`] names, and what the graph index keeps.
pub(crate) fn hubs_of(g: &Graph, top: usize) -> (Ranked, Ranked) {
    let mut largest = Top::new(top);
    let mut linked = Top::new(top);
    for n in g.nodes().filter(|&n| g.is_live(n)) {
        if g.is_person_root(n) {
            largest.offer(g.slot(n).size, g.slot(n).value.canon());
        }
        let d = u32::try_from(g.neighbors(n).count()).unwrap_or(u32::MAX);
        if d > 0 {
            linked.offer(d, n);
        }
    }
    (largest.into_sorted(), linked.into_sorted())
}

/// `(count, node)` pairs, best first.
pub(crate) type Ranked = Vec<(u32, Node)>;

/// The `keep` best of the `(count, node)` pairs offered: the largest counts, ties to the
/// smaller node (the ID seen first). Holds `keep` pairs, whatever the number offered.
pub(crate) struct Top {
    keep: usize,
    /// The worst kept pair on top.
    heap: BinaryHeap<Reverse<(u32, Reverse<Node>)>>,
    /// Once `keep` pairs are kept, the count of the worst: a smaller one cannot get in.
    floor: u32,
}

impl Top {
    pub(crate) fn new(keep: usize) -> Top {
        Top {
            keep,
            heap: BinaryHeap::new(),
            floor: 0,
        }
    }

    #[inline]
    pub(crate) fn offer(&mut self, count: u32, n: Node) {
        // Most pairs offered are below the worst kept one: one comparison.
        if count < self.floor {
            return;
        }
        let k = (count, Reverse(n));
        if self.heap.len() < self.keep {
            self.heap.push(Reverse(k));
        } else if self.heap.peek().is_some_and(|Reverse(worst)| k > *worst) {
            self.heap.pop();
            self.heap.push(Reverse(k));
        } else {
            return;
        }
        if self.heap.len() == self.keep {
            self.floor = self.heap.peek().map_or(0, |Reverse((c, _))| *c);
        }
    }

    /// The kept pairs, best first.
    pub(crate) fn into_sorted(self) -> Ranked {
        // Ascending `Reverse` keys: best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse((count, Reverse(n)))| (count, n))
            .collect()
    }
}

/// Whether a person graph carries each ID's first-seen time (read from its record).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FirstSeen {
    With,
    Without,
}

impl Store {
    /// The alias graph of `id`'s person; see [`Store::person_graph`].
    pub(super) fn person_graph_with(
        &self,
        id: &str,
        first_seen: FirstSeen,
    ) -> Result<Option<PersonGraph>> {
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
                FirstSeen::Without => None,
                FirstSeen::With => Some(
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
}
