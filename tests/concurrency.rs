//! Concurrency: writer threads build persons out of whole groups (each group of 4 IDs is
//! created by one atomic batch, pairs of groups are then merged by one alias) while reader
//! threads resolve IDs; a reader must never see part of a group (a torn batch) or a person whose
//! member list disagrees with itself. At the end the partition equals the one a single thread
//! gets from the same ops.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use idgraph::{Cause, Config, Identity, Op, Properties, Store};

const WRITERS: u64 = 3;
const GROUPS_PER_WRITER: u64 = 150;
const READERS: usize = 3;

fn id(g: u64, k: u64) -> Identity {
    Identity::new(format!("g{g}_{k}")).unwrap()
}

/// The ops of writer `w`, batch by batch.
fn writer_batches(w: u64) -> Vec<Vec<Op>> {
    let mut out = Vec::new();
    for i in 0..GROUPS_PER_WRITER {
        let g = w * GROUPS_PER_WRITER + i;
        out.push(vec![
            Op::alias(id(g, 0), id(g, 1), 1, Cause::Api),
            Op::alias(id(g, 1), id(g, 2), 1, Cause::Api),
            Op::record(id(g, 2), "grouped", Properties::new(), 1),
            Op::alias(id(g, 2), id(g, 3), 1, Cause::Api),
        ]);
        if i % 2 == 1 {
            out.push(vec![Op::alias(id(g, 0), id(g - 1, 3), 2, Cause::Api)]);
        }
    }
    out
}

fn partition(s: &Store) -> BTreeSet<Vec<String>> {
    let mut p = BTreeSet::new();
    for g in 0..WRITERS * GROUPS_PER_WRITER {
        if let Some(mut person) = s.resolve(id(g, 0).as_str()).unwrap() {
            person.ids.sort();
            p.insert(person.ids);
        }
    }
    p
}

#[test]
fn readers_never_see_a_torn_batch() {
    let store = Arc::new(Config::temporary().open().unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (store, done, observed) = (store.clone(), done.clone(), observed.clone());
            std::thread::spawn(move || {
                let mut x = r as u64 + 1;
                let total = WRITERS * GROUPS_PER_WRITER;
                while !done.load(Ordering::Relaxed) {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (g, k) = ((x >> 33) % total, (x >> 20) % 4);
                    let me = id(g, k);
                    let Some(p) = store.resolve(me.as_str()).unwrap() else {
                        continue;
                    };
                    observed.fetch_add(1, Ordering::Relaxed);
                    assert!(
                        p.ids.iter().any(|i| i == me.as_str()),
                        "{me} not in its own person"
                    );
                    assert!(
                        p.ids.contains(&p.person),
                        "canonical ID not a member: {p:?}"
                    );
                    // Every group appears whole or not at all.
                    let mut groups = std::collections::HashMap::<&str, usize>::new();
                    for i in &p.ids {
                        *groups.entry(i.split('_').next().unwrap()).or_default() += 1;
                    }
                    assert!(groups.values().all(|n| *n == 4), "torn person: {:?}", p.ids);
                    assert!(
                        p.ids.len() == 4 || p.ids.len() == 8,
                        "odd size: {:?}",
                        p.ids
                    );
                    // Each group's event came in the group's batch: every group seen above
                    // has its event. (The person may have grown since: two reads, two moments.)
                    let ev = store.events(me.as_str()).unwrap();
                    let n = ev.iter().filter(|e| e.event == "grouped").count();
                    assert!(n >= p.ids.len() / 4 && n <= 2, "{n} events for {:?}", p.ids);
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for b in writer_batches(w) {
                    store.apply_batch(&b).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(
        observed.load(Ordering::Relaxed) > 0,
        "readers observed nothing"
    );

    let reference = Config::temporary().open().unwrap();
    for w in 0..WRITERS {
        for b in writer_batches(w) {
            reference.apply_batch(&b).unwrap();
        }
    }
    assert_eq!(partition(&store), partition(&reference));
    assert_eq!(
        partition(&store).len() as u64,
        WRITERS * GROUPS_PER_WRITER / 2
    );
    assert!(store.verify().unwrap().is_ok());
}

/// DESIGN.md, "What readers observe": the keys of one op become visible one by one in key
/// order, and an ID's record (its properties) sorts before its events. So a reader that sees
/// an event also sees the properties that the event's op set (never an event whose
/// properties are missing); the reverse may be seen for a moment.
#[test]
fn a_reader_that_sees_an_event_sees_the_properties_its_op_set() {
    const OPS: i64 = 1500;
    let store = Arc::new(Config::temporary().open().unwrap());
    let a = Identity::new("a").unwrap();
    let op = |i: i64| {
        let props = Properties::from_pairs([("n", idgraph::Value::Int(i))]).unwrap();
        Op::record(a.clone(), format!("E{i}"), props, i)
    };
    store.apply(op(0)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !done.load(Ordering::Relaxed) {
                let events = store.events("a").unwrap();
                let seen = events
                    .iter()
                    .map(|e| e.event[1..].parse::<i64>().unwrap())
                    .max()
                    .unwrap();
                let props = store.properties("a").unwrap();
                let n = match props.iter().find(|p| p.name == "n").map(|p| &p.value) {
                    Some(idgraph::Value::Int(n)) => *n,
                    other => panic!("property n: {other:?}"),
                };
                assert!(
                    n >= seen,
                    "event E{seen} visible, its property n={seen} not ({n})"
                );
                checks += 1;
            }
            checks
        })
    };
    for i in 1..=OPS {
        store.apply(op(i)).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0, "the reader checked nothing");
    assert_eq!(store.events("a").unwrap().len() as i64, OPS + 1);
}

/// Readers in a loop while a person of 2,000 IDs is forgotten, another is split, and a third
/// gets a second import whose blocks fold in `v` keys: no reader gets an error (a `Corrupt`
/// from a record removed under a graph that still shows it), and each sees a person whole or
/// gone, never partly removed, and never fewer events than it had before an import.
#[test]
fn readers_see_whole_states_during_forget_unalias_and_import() {
    const N: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Config::new(dir.path()).open().unwrap());
    let member = |p: &str, k: u64| Identity::new(format!("{p}-m{k}")).unwrap();
    let root = |p: &str| Identity::new(format!("{p}@example.com")).unwrap();
    // Three persons of N + 1 IDs, each ID with one event, packed by a bulk import.
    let mut ops = Vec::new();
    for p in ["gone", "split", "grown"] {
        ops.push(Op::record(root(p), "Root", Properties::new(), 1));
        for k in 0..N {
            ops.push(Op::alias(root(p), member(p, k), 2, Cause::Api));
            ops.push(Op::record(member(p, k), "Seen", Properties::new(), 3));
        }
    }
    store
        .bulk_apply(&mut ops, idgraph::BulkOptions::default())
        .unwrap();
    // `v` keys inside the blocks' ranges, which the next import folds in.
    for k in (0..N).step_by(7) {
        store
            .apply(Op::record(
                member("grown", k),
                "Online",
                Properties::new(),
                4,
            ))
            .unwrap();
    }
    let grown_before = store.events("grown@example.com").unwrap().len();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (store, stop, reads) = (store.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut k = r as u64;
                let mut grown_seen = 0;
                while !stop.load(Ordering::SeqCst) {
                    k = (k * 31 + 7) % N;
                    let g = member("gone", k).to_string();
                    let n = store.events(&g).unwrap().len() as u64;
                    assert!(
                        n == N + 1 || n == 0,
                        "a forgotten person seen half gone: {n}"
                    );
                    store.links(&g).unwrap();
                    store.explain("gone@example.com", &g).unwrap();
                    store.properties(&g).unwrap();
                    let s = member("split", k).to_string();
                    let n = store.events(&s).unwrap().len() as u64;
                    assert!([N + 1, N, 1].contains(&n), "a split person seen torn: {n}");
                    store.explain("split@example.com", &s).unwrap();
                    store.person_graph(&s).unwrap();
                    let n = store.events("grown@example.com").unwrap().len();
                    assert!(
                        n >= grown_before && n >= grown_seen,
                        "an import hid events: {n} after {grown_seen} (before it: {grown_before})"
                    );
                    grown_seen = n;
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(100));
    store
        .unalias("split@example.com", "split-m0")
        .unwrap()
        .unwrap();
    let mut again: Vec<Op> = (0..N)
        .map(|k| Op::record(member("grown", k), "Again", Properties::new(), 5))
        .collect();
    store
        .bulk_apply(&mut again, idgraph::BulkOptions::default())
        .unwrap();
    store.forget("gone@example.com").unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    assert!(reads.load(Ordering::Relaxed) > 3, "the readers hardly read");
    assert_eq!(
        store.events("grown@example.com").unwrap().len(),
        grown_before + N as usize
    );
    assert!(store.verify().unwrap().is_ok());
}
