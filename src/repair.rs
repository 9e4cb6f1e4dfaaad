//! Explain, undo and forget: what the alias log makes possible.
//!
//! - [`Store::explain`]: the shortest chain of alias links between two IDs, each with its cause,
//!   time and source.
//! - [`Store::unalias`]: remove a wrong link and split the person along the links that remain.
//! - [`Store::forget`]: delete a whole person (privacy requests).
//! - [`Store::links`], [`Store::hubs`]: a person's links; where squished identities show up.
//!
//! The forest is not on disk (DESIGN.md): it is rebuilt from the alias log at open. So an
//! unalias only deletes one edge on disk (one key) and re-splits the person in memory; events
//! and properties are stored per ID and follow their IDs by themselves.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::codec::{self, StoredEdge, StoredRefusal};
use crate::error::{Error, Result};
use crate::graph::pair;
use crate::op::{Link, Person};
use crate::store::{Store, packed_block_of, read_id_record};

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

/// One end of a link: an ID with its node.
type End = (u32, String);

impl Store {
    /// The stored detail of edge `seq` between the IDs `x` and `y` (with their nodes): under
    /// its own `e` key, or inside the record of the endpoint it introduced.
    fn edge_detail(&self, seq: u64, x: (u32, &str), y: (u32, &str)) -> Result<StoredEdge> {
        if let Some(v) = self.db.get(codec::edge_key(seq))? {
            return codec::decode(&v, "an edge");
        }
        for (n, id) in [x, y] {
            if let Some(rec) = read_id_record(&self.db, id, n)?
                && let Some((s, e)) = rec.intro
                && s == seq
            {
                return Ok(e);
            }
        }
        Err(Error::Corrupt(format!(
            "alias edge {seq} between {:?} and {:?} is missing",
            x.1, y.1
        )))
    }

    fn link_of(&self, seq: u64, from: End, to: End) -> Result<Link> {
        let e = self.edge_detail(seq, (from.0, &from.1), (to.0, &to.1))?;
        Ok(Link {
            a: from.1,
            b: to.1,
            cause: e.cause,
            at: e.at,
            source: e.source,
        })
    }

    /// The alias links among the IDs of `id`'s person, in the order they were made (each with
    /// the orientation it was made with). Empty for an unknown ID.
    ///
    /// # Cost
    /// O(IDs + links of the person) in memory, then one or two sled reads per link.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when a stored link cannot be read.
    pub fn links(&self, id: &str) -> Result<Vec<Link>> {
        // (seq, node of x, x, node of y, y) for each link x-y of the person.
        let mut found: Vec<(u64, u32, String, u32, String)> = Vec::new();
        {
            let g = self.graph.read();
            let Some(n) = g.lookup(id) else {
                return Ok(Vec::new());
            };
            for (seq, x, y) in g.person_links(n) {
                found.push((seq, x, g.ident(x).to_owned(), y, g.ident(y).to_owned()));
            }
        }
        found.sort_unstable();
        let mut out = Vec::with_capacity(found.len());
        for (seq, xn, x, yn, y) in found {
            let e = self.edge_detail(seq, (xn, &x), (yn, &y))?;
            // The stored orientation: `a` is the first ID of the alias that made the link.
            let (a, b) = if e.a == xn as u64 { (x, y) } else { (y, x) };
            out.push(Link {
                a,
                b,
                cause: e.cause,
                at: e.at,
                source: e.source,
            });
        }
        Ok(out)
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
    /// [`Error::Storage`] or [`Error::Corrupt`] when a stored link cannot be read.
    pub fn explain(&self, a: &str, b: &str) -> Result<Explanation> {
        let chain: Vec<(u64, End, End)> = {
            let g = self.graph.read();
            let (Some(na), Some(nb)) = (g.lookup(a), g.lookup(b)) else {
                return Ok(Explanation {
                    same_person: false,
                    edges: Vec::new(),
                });
            };
            if g.root(na) != g.root(nb) {
                return Ok(Explanation {
                    same_person: false,
                    edges: Vec::new(),
                });
            }
            let mut prev: FxHashMap<u32, u32> = FxHashMap::default();
            prev.insert(na, na);
            let mut queue = std::collections::VecDeque::from([na]);
            while let Some(x) = queue.pop_front() {
                if x == nb {
                    break;
                }
                for y in g.neighbors(x) {
                    if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(y) {
                        e.insert(x);
                        queue.push_back(y);
                    }
                }
            }
            let mut nodes = vec![nb];
            let mut x = nb;
            while x != na {
                x = *prev.get(&x).ok_or_else(|| {
                    Error::Corrupt(format!(
                        "{a:?} and {b:?} are one person but no chain of links joins them"
                    ))
                })?;
                nodes.push(x);
            }
            nodes.reverse();
            let mut chain = Vec::with_capacity(nodes.len().saturating_sub(1));
            for w in nodes.windows(2) {
                let seq = *g
                    .edges()
                    .get(&pair(w[0], w[1]))
                    .ok_or_else(|| Error::Corrupt("an adjacency entry has no alias edge".into()))?;
                chain.push((
                    seq,
                    (w[0], g.ident(w[0]).to_owned()),
                    (w[1], g.ident(w[1]).to_owned()),
                ));
            }
            chain
        };
        let edges = chain
            .into_iter()
            .map(|(seq, x, y)| self.link_of(seq, x, y))
            .collect::<Result<Vec<_>>>()?;
        Ok(Explanation {
            same_person: true,
            edges,
        })
    }

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
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read or written.
    pub fn unalias(&self, a: &str, b: &str) -> Result<Option<Vec<Person>>> {
        let _w = self.writer.lock();
        self.check_writable()?;
        let (na, nb, seq) = {
            let g = self.graph.read();
            let (Some(na), Some(nb)) = (g.lookup(a), g.lookup(b)) else {
                return Ok(None);
            };
            match g.edges().get(&pair(na, nb)) {
                Some(&seq) => (na, nb, seq),
                None => return Ok(None),
            }
        };
        let ek = codec::edge_key(seq);
        if self.db.remove(ek)?.is_none() {
            // The edge rides in the record of the endpoint it introduced.
            // An ID's own key replaces its entry in a block of packed records.
            let mut done = false;
            for (id, n) in [(a, na), (b, nb)] {
                if let Some(mut rec) = read_id_record(&self.db, id, n)?
                    && rec.intro.as_ref().is_some_and(|(s, _)| *s == seq)
                {
                    rec.intro = None;
                    self.db.insert(codec::id_key(id), rec.encode()?)?;
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(Error::Corrupt(format!(
                    "alias edge {seq} between {a:?} and {b:?} is missing on disk"
                )));
            }
        }
        let mut g = self.graph.write();
        let roots = g.remove_edge_and_split(na, nb);
        Ok(Some(
            roots
                .into_iter()
                .map(|r| Person {
                    person: g.ident(g.slot(r).canon).to_owned(),
                    ids: g
                        .members_sorted(r)
                        .iter()
                        .map(|&m| g.ident(m).to_owned())
                        .collect(),
                })
                .collect(),
        ))
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
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read or written.
    pub fn forget(&self, id: &str) -> Result<Option<Forgotten>> {
        let _w = self.writer.lock();
        self.check_writable()?;
        let (members, edges) = {
            let g = self.graph.read();
            let Some(n) = g.lookup(id) else {
                return Ok(None);
            };
            let members: Vec<(u32, String)> = g
                .members_sorted(n)
                .into_iter()
                .map(|m| (m, g.ident(m).to_owned()))
                .collect();
            let edges: Vec<u64> = g.person_links(n).into_iter().map(|l| l.0).collect();
            (members, edges)
        };
        let mut writes: Vec<codec::Write> = Vec::new();
        let mut out = Forgotten {
            ids: members.iter().map(|(_, s)| s.clone()).collect(),
            links: edges.len() as u64,
            ..Forgotten::default()
        };
        // Blocks of packed records holding members: rewritten without them (or removed).
        let mut blocks: BTreeMap<Vec<u8>, (sled::IVec, FxHashSet<&str>)> = BTreeMap::new();
        for &(m, ref ident) in &members {
            if let Some((k, v)) = packed_block_of(&self.db, m)? {
                blocks
                    .entry(k.to_vec())
                    .or_insert_with(|| (v, FxHashSet::default()))
                    .1
                    .insert(ident);
            }
        }
        for (k, (v, gone)) in &blocks {
            let mut kept = Vec::with_capacity(v.len());
            let mut removed = false;
            for (id, rec) in codec::packed_entries(v)? {
                if gone.contains(id) {
                    removed = true;
                } else {
                    codec::push_packed(&mut kept, id, rec);
                }
            }
            if removed {
                writes.push((k.clone(), (!kept.is_empty()).then_some(kept)));
            }
        }
        for &(m, ref ident) in &members {
            writes.push((codec::id_key(ident), None));
            for kv in self
                .db
                .scan_prefix(codec::node_prefix(codec::EVENT, m as u64))
            {
                let (k, _) = kv?;
                writes.push((k.to_vec(), None));
                out.events += 1;
            }
        }
        for seq in &edges {
            // A no-op for edges held in ID records.
            writes.push((codec::edge_key(*seq).to_vec(), None));
        }
        let names: FxHashSet<&str> = members.iter().map(|(_, s)| s.as_str()).collect();
        for kv in self.db.scan_prefix([codec::REFUSAL]) {
            let (k, v) = kv?;
            let r: StoredRefusal = codec::decode(&v, "a refusal")?;
            if names.contains(r.a.as_str()) || names.contains(r.b.as_str()) {
                writes.push((k.to_vec(), None));
                out.refusals += 1;
            }
        }
        self.write_redo(writes)?;
        let mut g = self.graph.write();
        g.forget(members[0].0);
        g.uncount_refusals(out.refusals);
        Ok(Some(out))
    }

    /// The `top` largest persons and the `top` IDs with the most alias links: where squished
    /// identities (one person made of many strangers) show up first.
    ///
    /// # Cost
    /// One pass over the graph in memory (O(IDs)); no sled access.
    pub fn hubs(&self, top: usize) -> Hubs {
        let g = self.graph.read();
        let mut largest: Vec<(u32, u32)> = Vec::new(); // (size, root)
        let mut linked: Vec<(u32, u32)> = Vec::new(); // (degree, node)
        for n in 0..g.len() as u32 {
            if !g.is_live(n) {
                continue;
            }
            let s = g.slot(n);
            if s.parent == n {
                largest.push((s.size, n));
            }
            let d = g.neighbors(n).count() as u32;
            if d > 0 {
                linked.push((d, n));
            }
        }
        let best = |v: &mut Vec<(u32, u32)>| {
            let by = |x: &(u32, u32), y: &(u32, u32)| y.0.cmp(&x.0).then(x.1.cmp(&y.1));
            if v.len() > top {
                v.select_nth_unstable_by(top, by);
                v.truncate(top);
            }
            v.sort_unstable_by(by);
        };
        best(&mut largest);
        best(&mut linked);
        Hubs {
            largest: largest
                .into_iter()
                .map(|(size, r)| (g.ident(g.slot(r).canon).to_owned(), size as u64))
                .collect(),
            most_linked: linked
                .into_iter()
                .map(|(d, n)| (g.ident(n).to_owned(), d as u64))
                .collect(),
        }
    }
}
