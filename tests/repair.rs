//! Explain, unalias, forget, hubs: a property test against a reference (an edge list and a
//! breadth-first search), minimal chains on random graphs, kill -9 crash tests, and a byte scan
//! of every sled tree after `forget`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use idgraph::{BulkOptions, Cause, Config, Identity, Op, Properties, Store};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const N: usize = 9;

fn name(i: usize) -> String {
    format!("id{i}")
}

fn id(s: &str) -> Identity {
    Identity::new(s).unwrap()
}

/// The reference: the set of links; persons are the components of the links plus singletons
/// of every ID seen.
#[derive(Default)]
struct Model {
    seen: BTreeSet<usize>,
    edges: BTreeSet<(usize, usize)>,
    /// Forgotten IDs: suppressed, so no later op brings them back.
    suppressed: BTreeSet<usize>,
}

impl Model {
    fn adj(&self) -> HashMap<usize, Vec<usize>> {
        let mut adj: HashMap<usize, Vec<usize>> = HashMap::new();
        for &(a, b) in &self.edges {
            adj.entry(a).or_default().push(b);
            adj.entry(b).or_default().push(a);
        }
        adj
    }
    /// BFS distances from `a`.
    fn dist(&self, a: usize) -> HashMap<usize, usize> {
        let adj = self.adj();
        let mut d = HashMap::from([(a, 0)]);
        let mut q = VecDeque::from([a]);
        while let Some(x) = q.pop_front() {
            for &y in adj.get(&x).into_iter().flatten() {
                if !d.contains_key(&y) {
                    d.insert(y, d[&x] + 1);
                    q.push_back(y);
                }
            }
        }
        d
    }
    fn person(&self, a: usize) -> BTreeSet<usize> {
        self.dist(a).into_keys().collect()
    }
}

#[derive(Clone, Debug)]
enum Step {
    Alias(usize, usize),
    Unalias(usize, usize),
    Explain(usize, usize),
    Forget(usize),
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..N, 0..N).prop_map(|(a, b)| Step::Alias(a, b)),
        3 => (0..N, 0..N).prop_map(|(a, b)| Step::Unalias(a, b)),
        2 => (0..N, 0..N).prop_map(|(a, b)| Step::Explain(a, b)),
        1 => (0..N).prop_map(Step::Forget),
        1 => Just(Step::Reopen),
    ]
}

/// Checks the store against the model: partition, events and properties following their IDs,
/// `verify()`.
fn check(s: &Store, m: &Model) {
    for i in 0..N {
        let got = s.resolve(&name(i)).unwrap();
        if !m.seen.contains(&i) {
            assert!(got.is_none(), "{} should be unknown", name(i));
            continue;
        }
        let want: BTreeSet<String> = m.person(i).into_iter().map(name).collect();
        let ids: BTreeSet<String> = got.unwrap().ids.into_iter().collect();
        assert_eq!(ids, want, "person of {}", name(i));
        // Every ID recorded one event and set one property: they follow their IDs.
        let ev: BTreeSet<String> = s
            .events(&name(i))
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ev, want, "events of {}'s person", name(i));
        let props: BTreeSet<String> = s
            .properties(&name(i))
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        let want_props: BTreeSet<String> =
            m.person(i).into_iter().map(|j| format!("p{j}")).collect();
        assert_eq!(props, want_props);
    }
    let report = s.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
}

fn touch(s: &Store, m: &mut Model, i: usize, t: i64) {
    if m.suppressed.contains(&i) {
        // Dropped, whatever the op: a forgotten ID stays forgotten.
        let o = s
            .apply(Op::record(id(&name(i)), "Seen", Properties::new(), t))
            .unwrap();
        assert_eq!(o, idgraph::Outcome::Suppressed);
        return;
    }
    if m.seen.insert(i) {
        s.apply(Op::record(id(&name(i)), "Seen", Properties::new(), t))
            .unwrap();
        s.apply(Op::set(
            id(&name(i)),
            Properties::new().with(format!("p{i}"), 1).unwrap(),
            t,
        ))
        .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// After a bulk import of some links, then any sequence of alias / unalias / forget (with
    /// reopens), the partition is the connected components of the remaining links; explain
    /// gives a valid chain of minimal length.
    #[test]
    fn unalias_recomputes_components_and_explain_is_minimal(
        initial in proptest::collection::vec((0..N, 0..N), 0..8),
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut s = Some(Config::new(&path).open().unwrap());
        let mut m = Model::default();
        // The bulk path packs the records of the IDs it adds (and the links that introduced
        // them) in blocks: everything below must work on those as on records of their own.
        let mut ops = Vec::new();
        for &(a, b) in &initial {
            for i in [a, b] {
                if m.seen.insert(i) {
                    ops.push(Op::record(id(&name(i)), "Seen", Properties::new(), -1));
                    ops.push(Op::set(
                        id(&name(i)),
                        Properties::new().with(format!("p{i}"), 1).unwrap(),
                        -1,
                    ));
                }
            }
            ops.push(Op::alias(id(&name(a)), id(&name(b)), -1, Cause::Alias));
            if a != b {
                m.edges.insert((a.min(b), a.max(b)));
            }
        }
        s.as_ref().unwrap().bulk_apply(&mut ops, BulkOptions::default()).unwrap();
        check(s.as_ref().unwrap(), &m);
        for (t, st) in steps.iter().enumerate() {
            let store = s.as_ref().unwrap();
            let t = t as i64;
            match *st {
                Step::Alias(a, b) => {
                    touch(store, &mut m, a, t);
                    touch(store, &mut m, b, t);
                    let o = store.apply(Op::alias(id(&name(a)), id(&name(b)), t, Cause::Alias)).unwrap();
                    if m.suppressed.contains(&a) || m.suppressed.contains(&b) {
                        prop_assert_eq!(o, idgraph::Outcome::Alias(idgraph::AliasOutcome::Refused(
                            idgraph::RefusalReason::Suppressed)));
                    } else if a != b {
                        m.edges.insert((a.min(b), a.max(b)));
                    }
                }
                Step::Unalias(a, b) => {
                    let had = m.edges.remove(&(a.min(b), a.max(b)));
                    let got = store.unalias(&name(a), &name(b)).unwrap();
                    prop_assert_eq!(got.is_some(), had, "unalias {} {}", a, b);
                    if let Some(persons) = got {
                        let split = !m.person(a).contains(&b);
                        prop_assert_eq!(persons.len(), if split { 2 } else { 1 });
                        for p in &persons {
                            let want: BTreeSet<String> = m
                                .person(p.ids[0].trim_start_matches("id").parse().unwrap())
                                .into_iter().map(name).collect();
                            prop_assert_eq!(p.ids.iter().cloned().collect::<BTreeSet<_>>(), want);
                            prop_assert!(p.ids.contains(&p.person));
                        }
                    }
                }
                Step::Explain(a, b) => {
                    let e = store.explain(&name(a), &name(b)).unwrap();
                    let d = m.dist(a);
                    let same = m.seen.contains(&a) && m.seen.contains(&b) && d.contains_key(&b);
                    prop_assert_eq!(e.same_person, same);
                    if same {
                        prop_assert_eq!(e.edges.len(), d[&b], "minimal chain {} {}", a, b);
                        let mut at = name(a);
                        for l in &e.edges {
                            prop_assert_eq!(&l.a, &at, "chain is connected");
                            let (x, y): (usize, usize) = (
                                l.a.trim_start_matches("id").parse().unwrap(),
                                l.b.trim_start_matches("id").parse().unwrap(),
                            );
                            prop_assert!(m.edges.contains(&(x.min(y), x.max(y))), "a real link");
                            prop_assert_eq!(l.cause, Cause::Alias);
                            at = l.b.clone();
                        }
                        prop_assert_eq!(at, name(b));
                    } else {
                        prop_assert!(e.edges.is_empty());
                    }
                }
                Step::Forget(a) => {
                    let got = store.forget(&name(a)).unwrap();
                    prop_assert_eq!(got.is_some(), m.seen.contains(&a));
                    if let Some(f) = got {
                        let gone = m.person(a);
                        prop_assert_eq!(f.ids.len(), gone.len());
                        prop_assert_eq!(f.events as usize, gone.len());
                        m.edges.retain(|(x, _)| !gone.contains(x));
                        for g in gone {
                            m.seen.remove(&g);
                            m.suppressed.insert(g);
                        }
                    }
                }
                Step::Reopen => {
                    s.take().unwrap().flush().unwrap();
                    s = Some(Config::new(&path).open().unwrap());
                }
            }
            check(s.as_ref().unwrap(), &m);
        }
    }
}

#[test]
fn explain_says_why_with_cause_time_and_source() {
    let s = Config::temporary().open().unwrap();
    let anon = "y75Fe33597qBqkR4obZZYV+wF3Y=";
    s.apply(Op::alias(
        id("bob@x.example"),
        id(anon),
        100,
        Cause::Identify,
    ))
    .unwrap();
    s.apply(Op::Alias {
        a: id("bob@x.example"),
        b: id("bob@work.example"),
        at: 200,
        cause: Cause::Import,
        source: Some("aliases.csv:7".into()),
    })
    .unwrap();
    let e = s.explain(anon, "bob@work.example").unwrap();
    assert!(e.same_person);
    let got: Vec<(&str, &str, Cause, i64, Option<&str>)> = e
        .edges
        .iter()
        .map(|l| {
            (
                l.a.as_str(),
                l.b.as_str(),
                l.cause,
                l.at,
                l.source.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (anon, "bob@x.example", Cause::Identify, 100, None),
            (
                "bob@x.example",
                "bob@work.example",
                Cause::Import,
                200,
                Some("aliases.csv:7")
            ),
        ]
    );
    assert!(!s.explain(anon, "nobody").unwrap().same_person);
    let same = s.explain(anon, anon).unwrap();
    assert!(same.same_person && same.edges.is_empty());
}

#[test]
fn unalias_a_wrong_link_splits_events_and_properties_with_their_ids() {
    let s = Config::temporary().open().unwrap();
    for (who, ev) in [("ann", "A1"), ("ann2", "A2"), ("ben", "B1")] {
        s.apply(Op::record(
            id(who),
            ev,
            Properties::new().with("by", who).unwrap(),
            10,
        ))
        .unwrap();
    }
    s.apply(Op::alias(id("ann"), id("ann2"), 20, Cause::Alias))
        .unwrap();
    s.apply(Op::alias(id("ann2"), id("ben"), 30, Cause::Form))
        .unwrap(); // the wrong one
    assert_eq!(s.resolve("ben").unwrap().unwrap().ids.len(), 3);
    let persons = s.unalias("ben", "ann2").unwrap().expect("a direct link");
    assert_eq!(persons.len(), 2);
    assert_eq!(s.resolve("ben").unwrap().unwrap().ids, ["ben"]);
    assert_eq!(s.resolve("ann").unwrap().unwrap().ids, ["ann", "ann2"]);
    let ev: Vec<String> = s
        .events("ann")
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(ev, ["A1", "A2"]);
    assert_eq!(s.properties("ben").unwrap()[0].value.to_string(), "ben");
    assert!(
        s.unalias("ben", "ann2").unwrap().is_none(),
        "no direct link any more"
    );
    assert!(
        s.unalias("ben", "ann").unwrap().is_none(),
        "never a direct link"
    );
    assert!(s.verify().unwrap().is_ok());
}

#[test]
fn hubs_list_the_largest_persons_and_most_linked_ids() {
    let s = Config::temporary().open().unwrap();
    for i in 0..20 {
        s.apply(Op::alias(id("hub"), id(&format!("h{i}")), i, Cause::Alias))
            .unwrap();
    }
    for i in 0..3 {
        s.apply(Op::alias(
            id("small"),
            id(&format!("s{i}")),
            i,
            Cause::Alias,
        ))
        .unwrap();
    }
    s.apply(Op::alias(id("s0"), id("s1"), 9, Cause::Alias))
        .unwrap(); // a cycle: 2 links each
    let h = s.hubs(2).unwrap();
    assert_eq!(
        h.largest,
        [("hub".to_string(), 21), ("small".to_string(), 4)]
    );
    assert_eq!(
        h.most_linked,
        [("hub".to_string(), 20), ("small".to_string(), 3)]
    );
    assert_eq!(s.hubs(0).unwrap(), idgraph::Hubs::default());
}

/// After `forget`, no key or value of any sled tree holds the forgotten IDs' bytes, and no
/// query or export finds them.
#[test]
fn forget_leaves_no_trace() {
    forget_leaves_no_trace_when(false);
}

/// The same with the IDs imported in bulk: their records are packed in blocks with the
/// records of IDs that stay, and the blocks are rewritten without them.
#[test]
fn forget_leaves_no_trace_of_bulk_imported_ids() {
    forget_leaves_no_trace_when(true);
}

fn forget_leaves_no_trace_when(bulk: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let secret = [
        "zz-secret-anon-Q1=",
        "zz-secret@mail.example",
        "zz-secret-phone",
    ];
    {
        let s = Config::new(&path).max_person_size(3).open().unwrap();
        let mut ops = vec![Op::record(id("keep0"), "Visited", Properties::new(), 0)];
        for (i, who) in secret.iter().enumerate() {
            ops.push(Op::record(
                id(who),
                "Visited",
                Properties::new().with("zz", *who).unwrap(),
                i as i64,
            ));
            ops.push(Op::set(
                id(who),
                Properties::new().with("email", *who).unwrap(),
                5,
            ));
        }
        ops.push(Op::alias(id(secret[1]), id(secret[0]), 10, Cause::Identify));
        ops.push(Op::Alias {
            a: id(secret[1]),
            b: id(secret[2]),
            at: 11,
            cause: Cause::Import,
            source: Some("zz-secret-file.csv:1".into()),
        });
        // Refusals naming it: a blocked ID, and a merge over the size limit.
        ops.push(Op::alias(id(secret[1]), id("guest"), 12, Cause::Alias));
        ops.push(Op::alias(id("other"), id("other2"), 12, Cause::Alias));
        ops.push(Op::alias(id(secret[2]), id("other"), 13, Cause::Alias));
        ops.push(Op::alias(id("keep1"), id("guest"), 12, Cause::Alias));
        ops.push(Op::record(id("keep1"), "Visited", Properties::new(), 1));
        if bulk {
            s.bulk_apply(&mut ops, BulkOptions::default()).unwrap();
        } else {
            for op in ops {
                s.apply(op).unwrap();
            }
        }
        assert_eq!(s.refusals().unwrap().len(), 3);
        let f = s.forget(secret[2]).unwrap().unwrap();
        assert_eq!(f.ids.len(), 3);
        assert_eq!((f.links, f.events, f.refusals), (2, 3, 2));
        for who in secret {
            assert!(s.resolve(who).unwrap().is_none());
            assert!(s.events(who).unwrap().is_empty());
            assert!(s.properties(who).unwrap().is_empty());
        }
        assert_eq!(s.refusals().unwrap().len(), 1);
        assert_eq!(s.stats().unwrap().refused_merges, 1);
        let mut exported = Vec::new();
        s.for_each_id(|i, p, _| {
            exported.push(format!("{i} {p}"));
            Ok(())
        })
        .unwrap();
        assert!(
            exported.iter().all(|l| !l.contains("zz-secret")),
            "{exported:?}"
        );
        assert!(s.verify().unwrap().is_ok());
        assert!(s.forget(secret[0]).unwrap().is_none());
        s.flush().unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert!(s.verify().unwrap().is_ok());
    assert_eq!(s.resolve("other").unwrap().unwrap().ids.len(), 2);
    assert_eq!(s.events("keep1").unwrap().len(), 1);
    assert_eq!(s.events("keep0").unwrap().len(), 1);
    drop(s);
    std::thread::sleep(Duration::from_millis(50));
    let db = sled::open(&path).unwrap();
    let stay = [&b"keep0"[..], b"other2", b"keep1"];
    let (mut keys, mut kept) = (0, [false; 3]);
    for name in db.tree_names() {
        let t = db.open_tree(&name).unwrap();
        for kv in t.iter() {
            let (k, v) = kv.unwrap();
            keys += 1;
            for (who, found) in stay.iter().zip(&mut kept) {
                *found |= [&k[..], &v[..]]
                    .iter()
                    .any(|b| b.windows(who.len()).any(|w| w == *who));
            }
            for bytes in [&k[..], &v[..], &name[..]] {
                assert!(
                    !bytes.windows(9).any(|w| w == b"zz-secret"),
                    "a forgotten ID's bytes are still in tree {name:?}"
                );
            }
        }
    }
    assert!(
        keys >= 4 && kept.iter().all(|f| *f),
        "the scan saw the store ({keys} keys; IDs that stay found: {kept:?})"
    );
}

// ---- crash tests: kill -9 while unalias / forget run in a loop

const CHILD_ENV: &str = "IDGRAPH_REPAIR_CRASH_DIR";

/// Child mode: builds persons of 8 IDs in a cycle of links plus chords, then unaliases and
/// forgets in a loop, printing a line after each.
#[test]
fn repair_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only runs as the child of the test below
    };
    let s = Config::new(&dir).flush_every_ms(Some(5)).open().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(std::process::id() as u64);
    for round in 0.. {
        let base = round * 8;
        let mut ops = Vec::new();
        for i in 0..8 {
            let (a, b) = (format!("c{}", base + i), format!("c{}", base + (i + 1) % 8));
            ops.push(Op::alias(id(&a), id(&b), round as i64, Cause::Alias));
            ops.push(Op::record(id(&a), "E", Properties::new(), round as i64));
        }
        s.apply_batch(&ops).unwrap();
        for _ in 0..3 {
            let i = rng.random_range(0..8);
            let _ = s.unalias(
                &format!("c{}", base + i),
                &format!("c{}", base + (i + 1) % 8),
            );
        }
        if round % 3 == 0 {
            s.forget(&format!("c{base}")).unwrap();
        }
        println!("round {round}");
    }
}

#[test]
fn unalias_and_forget_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for attempt in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "repair_crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let want = rng.random_range(5..40);
        let mut line = String::new();
        let mut rounds = 0;
        while rounds < want {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if line.starts_with("round ") {
                rounds += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(rounds > 0, "attempt {attempt}: the child did nothing");
        let s = Store::open(dir.path()).unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        let report = s.verify().unwrap();
        assert!(report.is_ok(), "attempt {attempt}: {report:?}");
        // Each person is exactly a component of its remaining links.
        let mut seen: HashSet<String> = HashSet::new();
        s.for_each_id(|i, _, _| {
            seen.insert(i.to_string());
            Ok(())
        })
        .unwrap();
        for i in &seen {
            let p = s.resolve(i).unwrap().unwrap();
            let links = s.links(i).unwrap();
            let mut comp: HashSet<&str> = HashSet::from([i.as_str()]);
            loop {
                let before = comp.len();
                for l in &links {
                    if comp.contains(l.a.as_str()) || comp.contains(l.b.as_str()) {
                        comp.insert(&l.a);
                        comp.insert(&l.b);
                    }
                }
                if comp.len() == before {
                    break;
                }
            }
            assert_eq!(comp.len(), p.ids.len(), "attempt {attempt}: person of {i}");
        }
    }
}

const FORGET_CHILD_ENV: &str = "IDGRAPH_FORGET_FAULT_DIR";

/// Child mode of the test below: forgets `f0`'s person (aborting at the fault point).
#[test]
fn forget_fault_child() {
    let Ok(dir) = std::env::var(FORGET_CHILD_ENV) else {
        return;
    };
    let s = Store::open(&dir).unwrap();
    s.forget("f0").unwrap();
    s.flush().unwrap();
}

/// A crash in the middle of `forget`'s removals: opening finishes them.
#[test]
fn a_crash_inside_forget_is_finished_at_open() {
    if !cfg!(debug_assertions) {
        return; // the fault point exists in debug builds only
    }
    for after in ["0", "3", "7"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            for i in 1..4 {
                s.apply(Op::alias(id("f0"), id(&format!("f{i}")), i, Cause::Alias))
                    .unwrap();
                s.apply(Op::record(id(&format!("f{i}")), "E", Properties::new(), i))
                    .unwrap();
            }
            s.apply(Op::record(id("keep"), "E", Properties::new(), 1))
                .unwrap();
            s.flush().unwrap();
        }
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "forget_fault_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(FORGET_CHILD_ENV, dir.path())
            .env("IDGRAPH_FAULT_AFTER_WRITES", after)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            !status.success(),
            "fault {after}: the child should have aborted"
        );
        let s = Store::open(dir.path()).unwrap();
        assert!(s.verify().unwrap().is_ok(), "fault {after}");
        for i in 0..4 {
            assert!(
                s.resolve(&format!("f{i}")).unwrap().is_none(),
                "fault {after}: f{i}"
            );
        }
        assert_eq!(s.events("keep").unwrap().len(), 1);
    }
}

/// `forget` on imported data: the person's events leave the blocks they were packed in (a
/// block shared with other persons keeps theirs), `v` keys written on top go too, and the
/// store still verifies, also after a reopen.
#[test]
fn forget_removes_packed_events_and_keeps_the_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Config::new(dir.path()).open().unwrap();
    let s = open();
    let mut ops = Vec::new();
    for p in 0..40 {
        let who = format!("p{p}");
        ops.push(Op::alias(
            id(&who),
            id(&format!("p{p}-b")),
            1,
            Cause::Import,
        ));
        for t in 0..3 {
            ops.push(Op::record(id(&who), "Viewed", Properties::new(), t));
            ops.push(Op::record(
                id(&format!("p{p}-b")),
                "Paid",
                Properties::new(),
                t,
            ));
        }
    }
    let opts = BulkOptions {
        event_block_bytes: 200, // several persons per block, several blocks
        ..BulkOptions::default()
    };
    s.bulk_apply(&mut ops, opts).unwrap();
    // One more event of p7 written one at a time (a `v` key next to the packed ones).
    s.apply(Op::record(id("p7"), "Late", Properties::new(), 9))
        .unwrap();
    assert_eq!(s.events("p7").unwrap().len(), 7);
    let before = s.stats().unwrap().events;
    let gone = s.forget("p7").unwrap().unwrap();
    assert_eq!(gone.events, 7);
    assert!(s.events("p7").unwrap().is_empty());
    for p in [6, 8, 0, 39] {
        assert_eq!(s.events(&format!("p{p}")).unwrap().len(), 6, "p{p}");
    }
    assert_eq!(s.stats().unwrap().events, before - 7);
    assert!(s.verify().unwrap().is_ok());
    let mut exported = 0;
    s.for_each_event(|e| {
        assert!(!e.id.starts_with("p7"), "{e:?}");
        exported += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(exported, 39 * 6);
    drop(s);
    let s = open();
    assert!(s.events("p7-b").unwrap().is_empty());
    assert_eq!(s.events("p8-b").unwrap().len(), 6);
    assert!(s.verify().unwrap().is_ok());
}
