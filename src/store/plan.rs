//! The planner: turns ops into staged graph changes and the sled writes of one batch, deciding
//! every alias exactly as the rules say (guardrails, canonical IDs, where an edge is kept).
//! [`Store::apply_batch`] and the bulk path both plan through it, so they decide alike.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::codec::{self, IdRecord, PropMap, StoredEdge, StoredRefusal};
use crate::error::Result;
use crate::forest::Node;
use crate::graph::{Delta, Flags, Graph, Staged};
use crate::id::{Identity, is_kissmetrics_anonymous};
use crate::op::{AliasOutcome, Cause, Op, Outcome, Properties, RefusalReason, Timestamp};
use crate::store::Store;
use crate::store::records::{PropMerge, known_id_record};

pub(crate) use super::Writes;

/// From this many new IDs on, a batch writes their records in blocks of packed records (as the
/// bulk import does) instead of a key each, and their events in blocks of packed events
/// (BENCHMARKS.md, "Batches").
pub(crate) const PACK_MIN_NEW_IDS: usize = 16;

/// The record of an ID that a batch adds, compact: the bulk path holds millions of them. Its
/// node is its position; its ID and flags are in the staged graph.
pub(crate) struct NewId {
    pub(crate) first_seen: Timestamp,
    pub(crate) flags: Flags,
    /// The alias edge that introduced the ID, if one did (boxed: most IDs have none).
    pub(crate) intro: Option<Box<(u64, StoredEdge)>>,
    /// Its properties (empty in the bulk path, which aggregates them apart).
    pub(crate) props: PropMap,
}

impl NewId {
    pub(crate) fn record(&self, node: Node) -> IdRecord {
        IdRecord {
            node,
            first_seen: self.first_seen,
            flags: self.flags,
            intro: self.intro.as_deref().cloned(),
            props: self.props.clone(),
        }
    }
}

/// What a planner decided, with the ID records unencoded (see [`Planner::finish_bulk`]).
pub(crate) struct BulkPlan {
    /// Edges, refusals and events to write, in key order.
    pub(crate) writes: Writes,
    /// The changed records of IDs known before the batch, with their IDs.
    pub(crate) old_ids: Vec<(String, IdRecord)>,
    /// The records of the new IDs, in node order (their IDs are in `delta`).
    pub(crate) new_ids: Vec<NewId>,
    /// The graph changes.
    pub(crate) delta: Delta,
}

/// Plans one batch: stages graph changes and collects the sled writes.
pub(crate) struct Planner<'a, 'g> {
    st: Staged<'g>,
    /// Keys to write, the later write of a key replacing the earlier.
    writes: Writes,
    /// Records of IDs known before this batch whose flags or properties change; encoded at
    /// the end.
    ids: FxHashMap<Node, IdRecord>,
    /// Records of the IDs this batch adds (node = committed graph length + index).
    new_ids: Vec<NewId>,
    db: &'a sled::Db,
    store: &'a Store,
    /// Plan only the graph (IDs, edges, refusals): events and properties are written later by
    /// the bulk path.
    pub(crate) graph_only: bool,
    /// Redundant links the links guardrail did not record.
    links_not_recorded: u64,
    /// Refusals the full refusal log did not record.
    refusals_not_logged: u64,
    /// The cost of the ops planned so far (see [`OP_BASE_COST`]).
    cost: u64,
    /// See [`Planner::last_node`].
    last_node: Option<Node>,
    /// What the planned ops add to the store's data counts: event keys (distinct within the
    /// batch; the caller subtracts those that replace a stored event), property names new to
    /// their ID, IDs that reach the property limit.
    pub(crate) added: DataCounts,
}

/// Counts of the store's data that would otherwise take a scan: events, property values (one
/// per ID and name), IDs holding `max_properties_per_id` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DataCounts {
    pub events: u64,
    pub properties: u64,
    pub at_limit: u64,
}

/// The cost charged to every op, in bytes, on top of what it writes: the keys of an alias, a
/// new ID's record, the work of planning. An op's cost is about the bytes it would write
/// applied alone: this, its event, and the whole record of an ID whose properties it sets
/// (every property set rewrites the record).
pub(crate) const OP_BASE_COST: u64 = 64;

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
            links_not_recorded: 0,
            refusals_not_logged: 0,
            cost: 0,
            last_node: None,
            added: DataCounts::default(),
        }
    }

    /// [`apply`](Self::apply), and the op's cost in bytes (see [`OP_BASE_COST`]).
    pub(crate) fn apply_costed(&mut self, op: &Op) -> Result<(Outcome, u64)> {
        let before = self.cost;
        let outcome = self.apply(op)?;
        Ok((outcome, OP_BASE_COST + self.cost - before))
    }

    /// The sled writes and the graph changes.
    pub(crate) fn finish(self) -> Result<(Writes, Delta)> {
        let packed_upto = &self.store.packed_upto;
        let BulkPlan {
            mut writes,
            old_ids,
            new_ids,
            delta,
        } = self.finish_bulk()?;
        for (ident, rec) in old_ids {
            writes.insert(codec::id_key(&ident), rec.encode()?);
        }
        let records = new_ids.iter().zip(delta.new_nodes());
        if new_ids.len() < PACK_MIN_NEW_IDS {
            for (rec, (n, ident)) in records {
                writes.insert(codec::id_key(ident), rec.record(n).encode()?);
            }
            return Ok((writes, delta));
        }
        // Many new IDs: their nodes are fresh and consecutive, past every block of records,
        // so their records go in blocks as the bulk import writes them (a key per ~2.4 KB,
        // not per ID). Their events too, when no block's range reaches them (a block keeps its
        // key when `forget` removes its last node, whose number may be handed out again).
        let mut blocks = super::records::IdBlocks::new();
        let mut put = |k, v| {
            writes.insert(k, v);
            Ok(())
        };
        for (rec, (n, ident)) in records {
            blocks.push(n, ident, &rec.record(n), &mut put)?;
        }
        blocks.flush(&mut put)?;
        if delta.base().as_u64() >= packed_upto.load(std::sync::atomic::Ordering::Relaxed) {
            super::events::pack_new(&mut writes, delta.base())?;
        }
        Ok((writes, delta))
    }

    /// As [`finish`](Self::finish), but the ID records stay unencoded for the bulk path to
    /// write: those of known IDs with their IDs, those of new IDs compact (in node order, their
    /// IDs in the delta).
    pub(crate) fn finish_bulk(mut self) -> Result<BulkPlan> {
        let old_ids = std::mem::take(&mut self.ids)
            .into_iter()
            .map(|(n, rec)| (self.st.ident(n).to_owned(), rec))
            .collect();
        use std::sync::atomic::Ordering::Relaxed;
        (self.store.counts.links_not_recorded).fetch_add(self.links_not_recorded, Relaxed);
        (self.store.counts.refusals_not_logged).fetch_add(self.refusals_not_logged, Relaxed);
        let base = self.st.base().slot();
        for (i, rec) in self.new_ids.iter_mut().enumerate() {
            rec.flags = self
                .st
                .flags(Node::from_usize(base + i).expect("a planned node"));
        }
        Ok(BulkPlan {
            writes: self.writes,
            old_ids,
            new_ids: self.new_ids,
            delta: self.st.into_delta(),
        })
    }

    pub(crate) fn apply(&mut self, op: &Op) -> Result<Outcome> {
        if let Some(dropped) = self.suppressed(op) {
            return Ok(dropped);
        }
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
                self.last_node = Some(n);
                if self.graph_only {
                    return Ok(Outcome::Stored);
                }
                let (k, v) = codec::event_entry(n, event, properties, *at)?;
                self.cost += (k.len() + v.len()) as u64;
                if !self.writes.contains_key(&k) {
                    self.added.events += 1;
                }
                self.writes.insert(k, v);
                let refused = self.set_props(n, properties, *at)?;
                Ok(self.stored(refused))
            }
            Op::Set { id, properties, at } => {
                let n = self.node(id, *at, false)?;
                self.last_node = Some(n);
                if self.graph_only {
                    return Ok(Outcome::Stored);
                }
                let refused = self.set_props(n, properties, *at)?;
                Ok(self.stored(refused))
            }
        }
    }

    /// The node of the ID of the last `record` or `set` planned (saves the bulk path a second
    /// lookup per op: lookups are a fifth of its time).
    /// What becomes of an op naming a forgotten, suppressed ID: an alias is refused, an event
    /// or a property set dropped. An ID already in the graph is not suppressed (it came back
    /// through `unsuppress`, or was never forgotten); the check costs nothing while no ID is.
    fn suppressed(&self, op: &Op) -> Option<Outcome> {
        let s = &self.store.suppressed;
        if s.is_empty() {
            return None;
        }
        // The graph first: a known ID (most of them) costs a hash-table probe, not a keyed
        // hash.
        let named =
            |id: &Identity| self.st.lookup(id.as_str()).is_none() && s.contains(id.as_str());
        match op {
            Op::Alias { a, b, .. } => (named(a) || named(b)).then_some(Outcome::Alias(
                AliasOutcome::Refused(RefusalReason::Suppressed),
            )),
            Op::Record { id, .. } | Op::Set { id, .. } => named(id).then_some(Outcome::Suppressed),
        }
    }

    pub(crate) fn last_node(&self) -> Option<Node> {
        self.last_node
    }

    /// The node of `id`, registering it when new; `anon` marks it anonymous (sticky).
    fn node(&mut self, id: &Identity, at: Timestamp, anon: bool) -> Result<Node> {
        let want = if anon || is_kissmetrics_anonymous(id.as_str()) {
            Flags::ANON
        } else {
            Flags::NONE
        };
        if let Some(n) = self.st.lookup(id.as_str()) {
            let flags = self.st.flags(n);
            if !flags.contains(want) {
                self.st.set_flags(n, flags.with(want));
                if !self.st.is_new(n) {
                    self.pending_id(n)?.flags = flags.with(want);
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
    fn pending_id(&mut self, n: Node) -> Result<&mut IdRecord> {
        if !self.ids.contains_key(&n) {
            let rec = known_id_record(self.db, self.st.ident(n), n)?;
            self.ids.insert(n, rec);
        }
        Ok(self.ids.get_mut(&n).expect("inserted above"))
    }

    /// The pending record of a new node.
    fn new_id(&mut self, n: Node) -> &mut NewId {
        &mut self.new_ids[n.slot() - self.st.base().slot()]
    }

    fn alias(
        &mut self,
        a: &Identity,
        b: &Identity,
        at: Timestamp,
        cause: Cause,
        source: Option<&str>,
    ) -> Result<AliasOutcome> {
        if let Some(id) = self.store.policy.blocked.refusing(a, b) {
            let reason = RefusalReason::BlockedId { id: id.to_string() };
            return self.refuse(a, b, reason, cause, at);
        }
        // The size guardrail is decided before anything is registered: a refused merge leaves
        // no trace but the refusal (an ID new to the store stays unknown).
        let (la, lb) = (self.st.lookup(a.as_str()), self.st.lookup(b.as_str()));
        let root = |l: Option<Node>| l.map(|n| self.st.root(n));
        let (ra, rb) = (root(la), root(lb));
        if a != b && (ra.is_none() || ra != rb) {
            let size_of = |r: Option<Node>| r.map_or(1, |r| u64::from(self.st.size_of_root(r)));
            let size = size_of(ra) + size_of(rb);
            let max = self.store.max_person_size();
            if size > max {
                let reason = RefusalReason::TooLarge { size, max };
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
                // A redundant link: recorded only while the person has room for links.
                if self.st.links_of_root(ra) < self.store.policy.max_links_per_person {
                    self.edge(na, nb, at, cause, source)?;
                } else {
                    self.links_not_recorded += 1;
                }
            }
            return Ok(AliasOutcome::AlreadySame);
        }
        let size = u64::from(self.st.size_of_root(ra)) + u64::from(self.st.size_of_root(rb));
        self.edge(na, nb, at, cause, source)?;
        self.st.union_roots(ra, rb);
        Ok(AliasOutcome::Joined { size })
    }

    /// Logs an alias edge: inside the record of an endpoint this batch creates (one write less),
    /// else under its own `e` key.
    fn edge(
        &mut self,
        a: Node,
        b: Node,
        at: Timestamp,
        cause: Cause,
        source: Option<&str>,
    ) -> Result<()> {
        let seq = self.st.add_edge(a, b);
        let e = StoredEdge {
            a,
            b,
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
            let rec = self.new_id(h);
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
        if !known && self.st.refused() >= self.store.policy.max_refusals_logged {
            // The log is full: refused all the same, counted, not written.
            self.refusals_not_logged += 1;
            return Ok(AliasOutcome::Refused(reason));
        }
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

    fn stored(&self, refused: usize) -> Outcome {
        if refused == 0 {
            Outcome::Stored
        } else {
            Outcome::PropertiesRefused {
                refused,
                max: self.store.policy.limits.max_properties_per_id,
            }
        }
    }

    /// Sets `props` on `n`; returns how many names were not kept (the ID is full).
    fn set_props(&mut self, n: Node, props: &Properties, at: Timestamp) -> Result<usize> {
        if props.is_empty() {
            return Ok(0);
        }
        let max = self.store.policy.limits.max_properties_per_id;
        // Store-wide apply order, monotonic across restarts (sled persists its ID generator).
        let seq = self.db.generate_id()?;
        let map = if self.st.is_new(n) {
            &mut self.new_id(n).props
        } else {
            &mut self.pending_id(n)?.props
        };
        let before = map.0.len();
        let mut refused = 0;
        for (name, value) in props.iter() {
            refused += usize::from(
                map.merge_within(name, value.clone().into(), at, seq, max) == PropMerge::NoRoom,
            );
        }
        let after = map.0.len();
        self.cost += map.approx_bytes();
        self.added.properties += (after - before) as u64;
        self.added.at_limit += u64::from(before < max && after >= max);
        Ok(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::DataCounts;
    use crate::op::{Op, Properties};
    use crate::{Config, Identity, Store};

    fn set(id: &str, n: usize, value: &str) -> Op {
        let props: Vec<(String, String)> = (0..n)
            .map(|i| (format!("p{i}"), value.to_owned()))
            .collect();
        Op::set(
            Identity::new(id).unwrap(),
            Properties::from_pairs(props).unwrap(),
            1,
        )
    }

    #[test]
    fn an_op_costs_the_record_it_rewrites_not_only_its_own_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Config::new(dir.path().join("db")).open().unwrap();
        let cost = |store: &Store, op: Op| store.apply_batch_costed(&[op]).unwrap()[0].1;
        let small = cost(&store, set("a", 1, "x"));
        assert!((super::OP_BASE_COST..200).contains(&small), "{small}");
        // Fill an ID with 200 values of 1,000 bytes: one more small set rewrites them all.
        let fill = cost(&store, set("b", 200, &"v".repeat(1000)));
        assert!(fill >= 200_000, "{fill}");
        let after = cost(&store, set("b", 1, "x"));
        assert!(after >= 200_000, "{after}");
        // An event carries its own bytes; an alias of two new IDs only the base.
        let event = Op::record(
            Identity::new("c").unwrap(),
            "Viewed",
            Properties::default(),
            1,
        );
        let e = cost(&store, event);
        assert!(e > super::OP_BASE_COST && e < 200, "{e}");
        let alias = Op::alias(
            Identity::new("x1").unwrap(),
            Identity::new("x2").unwrap(),
            1,
            crate::op::Cause::Api,
        );
        assert_eq!(cost(&store, alias), super::OP_BASE_COST);
    }

    /// The counts `stats` keeps start at zero on a new store, follow a bulk import (duplicate
    /// events and already-stored ones add nothing) and are checked by `verify`, which says so
    /// when they are wrong.
    #[test]
    fn kept_counts_follow_imports_and_verify_checks_them() {
        use crate::BulkOptions;
        let dir = tempfile::tempdir().unwrap();
        let store = Config::new(dir.path().join("db")).open().unwrap();
        assert_eq!(*store.counts.data.lock(), Some(DataCounts::default()));
        let ev = |id: &str, t| {
            Op::record(
                Identity::new(id).unwrap(),
                "Viewed",
                Properties::default().with("plan", "pro").unwrap(),
                t,
            )
        };
        let mut ops = vec![ev("a", 1), ev("a", 1), ev("b", 1), set("a", 3, "x")];
        store.bulk_apply(&mut ops, BulkOptions::default()).unwrap();
        let want = DataCounts {
            events: 2,
            properties: 5, // a: plan + 3 names from the set; b: plan
            at_limit: 0,
        };
        assert_eq!(*store.counts.data.lock(), Some(want));
        // Again, onto the store: the same events add nothing.
        store
            .bulk_apply(&mut vec![ev("a", 1), ev("c", 2)], BulkOptions::default())
            .unwrap();
        let want = DataCounts {
            events: 3,
            properties: 6,
            ..want
        };
        assert_eq!(*store.counts.data.lock(), Some(want));
        assert!(store.verify().unwrap().is_ok());
        *store.counts.data.lock() = Some(DataCounts { events: 4, ..want });
        let rep = store.verify().unwrap();
        assert!(
            rep.problems[0].contains("kept counts say 4 events"),
            "{rep:?}"
        );
    }
}
