//! Model-based tests of the store: random sequences of alias / record / set / batch / reopen
//! are applied to the store and to a naive reference (a list of persons, a map of events, a map
//! of property values), and the two are compared after every step: partition, canonical IDs,
//! outcomes, events, properties, refusal counts; `verify()` must pass throughout.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use idgraph::{
    AliasOutcome, Cause, Config, Identity, Op, Outcome, Properties, RefusalReason, Store, Value,
};
use proptest::prelude::*;

const IDS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "dave",
    "Alice",
    "guest",
    "'NULL'",
    "y75Fe33597qBqkR4obZZYV+wF3Y=",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "c3VwZXJzZWNyZXRhbm9ueW1vdXM=",
    "zed",
];
const EVENTS: &[&str] = &["Signed Up", "signed up", "Viewed"];
const PROPS: &[&str] = &["plan", "Plan", "color"];
const MAX: u64 = 4;

#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    Batch(Vec<Op>),
    /// Close and reopen; with `true`, load the graph at once (from the graph index).
    Reopen(bool),
}

fn ident(i: usize) -> Identity {
    Identity::new(IDS[i]).unwrap()
}

fn arb_props() -> impl Strategy<Value = Properties> {
    proptest::collection::vec((0..PROPS.len(), 0..3i64), 0..3).prop_map(|v| {
        let mut p = Properties::new();
        for (n, x) in v {
            let val: Value = if x == 2 { "two".into() } else { x.into() };
            p.insert(PROPS[n], val).unwrap();
        }
        p
    })
}

fn arb_op() -> impl Strategy<Value = Op> {
    let n = IDS.len();
    prop_oneof![
        4 => (0..n, 0..n, any::<bool>(), 0..6i64).prop_map(|(a, b, ident_cause, at)| {
            Op::alias(ident(a), ident(b), at, if ident_cause { Cause::Identify } else { Cause::Api })
        }),
        3 => (0..n, 0..EVENTS.len(), arb_props(), 0..6i64)
            .prop_map(|(i, e, p, at)| Op::record(ident(i), EVENTS[e], p, at)),
        2 => (0..n, arb_props(), 0..6i64).prop_map(|(i, p, at)| Op::set(ident(i), p, at)),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => arb_op().prop_map(Step::Op),
        1 => proptest::collection::vec(arb_op(), 1..6).prop_map(Step::Batch),
        1 => any::<bool>().prop_map(Step::Reopen),
    ]
}

/// The naive reference.
#[derive(Default)]
struct Model {
    order: Vec<String>,
    anon: BTreeSet<String>,
    person: HashMap<String, usize>,
    next_label: usize,
    refused: BTreeSet<(String, String)>,
    /// (id, at, lower-cased name) → (name, properties)
    events: BTreeMap<(String, i64, String), (String, Properties)>,
    /// (id, lower-cased name) → (at, seq, value)
    props: HashMap<(String, String), (i64, u64, Value)>,
    seq: u64,
}

fn blocked(s: &str) -> bool {
    let t = s.trim_matches(|c| c == '\'' || c == '"').to_lowercase();
    idgraph::DEFAULT_BLOCKED_IDS.contains(&t.as_str())
}

impl Model {
    fn register(&mut self, id: &str, anon: bool) {
        if !self.person.contains_key(id) {
            self.order.push(id.to_owned());
            self.person.insert(id.to_owned(), self.next_label);
            self.next_label += 1;
        }
        if anon || idgraph::is_kissmetrics_anonymous(id) {
            self.anon.insert(id.to_owned());
        }
    }

    fn members(&self, id: &str) -> Vec<String> {
        let l = self.person[id];
        self.order
            .iter()
            .filter(|x| self.person[*x] == l)
            .cloned()
            .collect()
    }

    fn canonical(&self, id: &str) -> String {
        let m = self.members(id);
        m.iter()
            .find(|x| !self.anon.contains(*x))
            .or(m.first())
            .unwrap()
            .clone()
    }

    fn set_props(&mut self, id: &str, p: &Properties, at: i64) {
        if p.is_empty() {
            return;
        }
        self.seq += 1;
        for (k, v) in p.iter() {
            let key = (id.to_owned(), k.to_lowercase());
            match self.props.get(&key) {
                Some((t, _, _)) if *t > at => {}
                _ => {
                    self.props.insert(key, (at, self.seq, v.clone()));
                }
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Alias { a, b, cause, .. } => {
                let (a, b) = (a.as_str(), b.as_str());
                if a != b && (blocked(a) || blocked(b)) {
                    self.refused
                        .insert((a.min(b).to_owned(), a.max(b).to_owned()));
                    let id = if blocked(a) { a } else { b };
                    return Outcome::Alias(AliasOutcome::Refused(RefusalReason::BlockedId {
                        id: id.to_owned(),
                    }));
                }
                // The size guardrail is decided first: a refused merge registers nothing.
                let same = a == b
                    || matches!((self.person.get(a), self.person.get(b)), (Some(x), Some(y)) if x == y);
                if !same {
                    let size_of = |x: &str| {
                        if self.person.contains_key(x) {
                            self.members(x).len()
                        } else {
                            1
                        }
                    };
                    let size = (size_of(a) + size_of(b)) as u64;
                    if size > MAX {
                        self.refused
                            .insert((a.min(b).to_owned(), a.max(b).to_owned()));
                        return Outcome::Alias(AliasOutcome::Refused(RefusalReason::TooLarge {
                            size,
                            max: MAX,
                        }));
                    }
                }
                self.register(a, false);
                self.register(b, *cause == Cause::Identify);
                let (la, lb) = (self.person[a], self.person[b]);
                if la == lb {
                    return Outcome::Alias(AliasOutcome::AlreadySame);
                }
                let size = (self.members(a).len() + self.members(b).len()) as u64;
                for l in self.person.values_mut() {
                    if *l == lb {
                        *l = la;
                    }
                }
                Outcome::Alias(AliasOutcome::Joined { size })
            }
            Op::Record {
                id,
                event,
                properties,
                at,
            } => {
                self.register(id.as_str(), false);
                self.events.insert(
                    (id.to_string(), *at, event.to_lowercase()),
                    (event.clone(), properties.clone()),
                );
                self.set_props(id.as_str(), properties, *at);
                Outcome::Stored
            }
            Op::Set { id, properties, at } => {
                self.register(id.as_str(), false);
                self.set_props(id.as_str(), properties, *at);
                Outcome::Stored
            }
        }
    }

    fn check(&self, store: &Store) -> Result<(), TestCaseError> {
        for id in IDS {
            let got = store.resolve(id).unwrap();
            if !self.person.contains_key(*id) {
                prop_assert!(got.is_none(), "{id} should be unknown");
                continue;
            }
            let got = got.unwrap();
            prop_assert_eq!(&got.ids, &self.members(id), "members of {}", id);
            prop_assert_eq!(&got.person, &self.canonical(id), "canonical of {}", id);
            // events
            let members = self.members(id);
            let mut want: Vec<(i64, String, String, Properties)> = self
                .events
                .iter()
                .filter(|((who, _, _), _)| members.contains(who))
                .map(|((who, at, _), (name, p))| (*at, who.clone(), name.clone(), p.clone()))
                .collect();
            want.sort_by(|x, y| {
                (x.0, &x.1, x.2.to_lowercase()).cmp(&(y.0, &y.1, y.2.to_lowercase()))
            });
            let got_events: Vec<(i64, String, String, Properties)> = store
                .events(id)
                .unwrap()
                .into_iter()
                .map(|e| (e.at, e.id, e.event, e.properties))
                .collect();
            prop_assert_eq!(got_events, want, "events of {}", id);
            // properties
            let mut best: BTreeMap<String, (i64, u64, Value)> = BTreeMap::new();
            for ((who, name), v) in &self.props {
                if members.contains(who) {
                    match best.get(name) {
                        Some(b) if (b.0, b.1) >= (v.0, v.1) => {}
                        _ => {
                            best.insert(name.clone(), v.clone());
                        }
                    }
                }
            }
            let want: Vec<(String, Value, i64)> =
                best.into_iter().map(|(k, v)| (k, v.2, v.0)).collect();
            let got: Vec<(String, Value, i64)> = store
                .properties(id)
                .unwrap()
                .into_iter()
                .map(|p| (p.name.to_lowercase(), p.value, p.at))
                .collect();
            prop_assert_eq!(got, want, "properties of {}", id);
        }
        let stats = store.stats().unwrap();
        prop_assert_eq!(stats.ids as usize, self.order.len());
        let persons: std::collections::BTreeSet<_> = self.person.values().collect();
        prop_assert_eq!(stats.persons as usize, persons.len());
        prop_assert_eq!(store.counts(), (stats.ids, stats.persons));
        prop_assert_eq!(stats.refused_merges as usize, self.refused.len());
        prop_assert_eq!(stats.events as usize, self.events.len());
        prop_assert_eq!(stats.properties as usize, self.props.len());
        let rep = store.verify().unwrap();
        prop_assert!(rep.is_ok(), "verify: {:?}", rep.problems);
        Ok(())
    }
}

fn open(dir: &std::path::Path) -> Store {
    Config::new(dir).max_person_size(MAX).open().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(steps in proptest::collection::vec(arb_step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut model = Model::default();
        for step in steps {
            match step {
                Step::Op(op) => {
                    let want = model.apply(&op);
                    prop_assert_eq!(store.apply(op).unwrap(), want);
                }
                Step::Batch(ops) => {
                    let want: Vec<Outcome> = ops.iter().map(|op| model.apply(op)).collect();
                    prop_assert_eq!(store.apply_batch(&ops).unwrap(), want);
                }
                Step::Reopen(load) => {
                    drop(store);
                    store = open(dir.path());
                    // Closing wrote the graph index: the checks below read it, then `verify`
                    // compares it with the graph rebuilt from the alias log.
                    prop_assert!(store.answers_from_index());
                    if load {
                        // The graph built from the index: the checks below ask it, and
                        // `verify` compares it with the ID records and the alias log.
                        store.load_graph().unwrap();
                        prop_assert!(!store.answers_from_index());
                    }
                }
            }
            model.check(&store)?;
        }
    }

    /// The same alias ops in any order give the same partition.
    #[test]
    fn partition_is_order_independent(
        pairs in proptest::collection::vec((0..12usize, 0..12usize), 1..30),
        seed in any::<u64>(),
    ) {
        let names: Vec<Identity> = (0..12).map(|i| Identity::new(format!("user{i}")).unwrap()).collect();
        let ops: Vec<Op> = pairs.iter().map(|(a, b)| Op::alias(names[*a].clone(), names[*b].clone(), 1, Cause::Api)).collect();
        let mut shuffled = ops.clone();
        // Fisher-Yates with a small LCG: deterministic per seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let partition = |ops: &[Op]| {
            let s = Config::temporary().open().unwrap();
            for op in ops { s.apply(op.clone()).unwrap(); }
            let mut persons: BTreeSet<Vec<String>> = BTreeSet::new();
            for n in &names {
                if let Some(mut p) = s.resolve(n.as_str()).unwrap() {
                    p.ids.sort();
                    persons.insert(p.ids);
                }
            }
            persons
        };
        prop_assert_eq!(partition(&ops), partition(&shuffled));
    }
}

/// Data applied without an explicit flush survives a clean drop and reopen.
#[test]
fn drop_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Config::new(dir.path()).flush_every_ms(None).open().unwrap();
        s.apply(Op::alias(
            Identity::new("a").unwrap(),
            Identity::new("b").unwrap(),
            1,
            Cause::Api,
        ))
        .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.resolve("a").unwrap().unwrap().ids, ["a", "b"]);
}

/// The same refused pair twice in one batch is one refusal.
// postmortem: the refusal count read only sled, which does not see the batch being built, so
// a pair refused twice in one batch was counted twice (found by `store_matches_model`).
#[test]
fn refusal_twice_in_one_batch_counts_once() {
    let s = Config::temporary().open().unwrap();
    let (g, a) = (
        Identity::new("guest").unwrap(),
        Identity::new("Alice").unwrap(),
    );
    let out = s
        .apply_batch(&[
            Op::alias(g.clone(), a.clone(), 0, Cause::Api),
            Op::alias(a, g, 0, Cause::Api),
        ])
        .unwrap();
    assert!(
        out.iter()
            .all(|o| matches!(o, Outcome::Alias(AliasOutcome::Refused(_))))
    );
    assert_eq!(s.stats().unwrap().refused_merges, 1);
    assert_eq!(s.refusals().unwrap().len(), 1);
    assert!(!s.contains("guest").unwrap() && !s.contains("Alice").unwrap());
}

/// Every answer a store gives about `ids`, and `verify`'s counts.
fn answers(s: &Store, ids: &[String]) -> String {
    let mut out = String::new();
    for i in ids {
        out += &format!(
            "{i} {:?} {:?} {:?}\n",
            s.resolve(i).unwrap(),
            s.events(i).unwrap(),
            s.properties(i).unwrap()
        );
    }
    let v = s.verify().unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    out + &format!("{} {} {} {}", v.ids, v.persons, v.events, v.properties)
}

fn arb_wide_op(ids: usize) -> impl Strategy<Value = Op> {
    let id = |i: usize| Identity::new(format!("w{i}")).unwrap();
    prop_oneof![
        3 => (0..ids, 0..ids, 0..6i64)
            .prop_map(move |(a, b, at)| Op::alias(id(a), id(b), at, Cause::Api)),
        2 => (0..ids, 0..EVENTS.len(), arb_props(), 0..6i64)
            .prop_map(move |(i, e, p, at)| Op::record(id(i), EVENTS[e], p, at)),
        2 => (0..ids, arb_props(), 0..6i64).prop_map(move |(i, p, at)| Op::set(id(i), p, at)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Batches that add many IDs write their records in blocks (as the bulk import does):
    /// the store answers as one that applied the same ops one at a time — outcomes, persons,
    /// events, properties — also after later writes to those IDs (their own keys then win),
    /// `unalias`, `forget` and a reopen.
    #[test]
    fn large_batches_answer_as_ops_one_at_a_time(
        ops in proptest::collection::vec(arb_wide_op(120), 40..200),
        cuts in proptest::collection::vec(1..80usize, 1..8),
        later in proptest::collection::vec(arb_wide_op(140), 0..20),
        undo in (0..120usize, 0..120usize),
        load in any::<bool>(),
    ) {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, mut b) = (Store::open(da.path()).unwrap(), Store::open(db.path()).unwrap());
        let mut rest = &ops[..];
        let mut cuts = cuts.into_iter().cycle();
        while !rest.is_empty() {
            let (batch, tail) = rest.split_at(cuts.next().unwrap().min(rest.len()));
            let want: Vec<Outcome> = batch.iter().map(|op| b.apply(op.clone()).unwrap()).collect();
            prop_assert_eq!(a.apply_batch(batch).unwrap(), want);
            rest = tail;
        }
        for op in later {
            prop_assert_eq!(a.apply(op.clone()).unwrap(), b.apply(op).unwrap());
        }
        let (x, y) = (format!("w{}", undo.0), format!("w{}", undo.1));
        prop_assert_eq!(a.unalias(&x, &y).unwrap(), b.unalias(&x, &y).unwrap());
        prop_assert_eq!(a.forget(&y).unwrap(), b.forget(&y).unwrap());
        let ids: Vec<String> = (0..140).map(|i| format!("w{i}")).collect();
        prop_assert_eq!(answers(&a, &ids), answers(&b, &ids));
        drop((a, b));
        std::thread::sleep(std::time::Duration::from_millis(30));
        a = Store::open(da.path()).unwrap();
        b = Store::open(db.path()).unwrap();
        if load {
            a.load_graph().unwrap();
        }
        prop_assert_eq!(answers(&a, &ids), answers(&b, &ids));
        // More batches after the reopen: new nodes past the blocks written before.
        for batch in ops.chunks(37) {
            let want: Vec<Outcome> = batch.iter().map(|op| b.apply(op.clone()).unwrap()).collect();
            prop_assert_eq!(a.apply_batch(batch).unwrap(), want);
        }
        prop_assert_eq!(answers(&a, &ids), answers(&b, &ids));
    }
}

/// `forget` of a block's last node leaves the block under its key; reopened, the store hands
/// that node number out again. A batch adding it must not pack its events into a second block
/// over the same nodes (they would be lost behind the first).
#[test]
fn a_batch_after_forgetting_the_last_node_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let batch = |from: usize| -> Vec<Op> {
        (from..from + 20)
            .map(|i| {
                Op::record(
                    Identity::new(format!("n{i}")).unwrap(),
                    "Seen",
                    Properties::new(),
                    i as i64,
                )
            })
            .collect()
    };
    {
        let s = Store::open(dir.path()).unwrap();
        s.apply_batch(&batch(0)).unwrap();
        s.forget("n19").unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    s.apply_batch(&batch(100)).unwrap();
    for i in (0..19).chain(100..120) {
        assert_eq!(s.events(&format!("n{i}")).unwrap().len(), 1, "n{i}");
    }
    assert!(s.verify().unwrap().is_ok());
    drop(s);
    std::thread::sleep(std::time::Duration::from_millis(30));
    let s = Store::open(dir.path()).unwrap();
    for i in (0..19).chain(100..120) {
        assert_eq!(s.events(&format!("n{i}")).unwrap().len(), 1, "n{i}");
    }
    assert!(s.verify().unwrap().is_ok());
}
