//! The graph index (`graph.idx`, DESIGN.md "The graph index"): a store reopened after a clean
//! close answers from it without loading the graph, and an index that is missing, cut short,
//! damaged, stale or left half-written is never believed: the answers stay those of the
//! alias log. (`tests/model.rs` compares the index's answers with a reference model after
//! every reopen.)

use std::path::Path;
use std::process::Command;

use idgraph::{Cause, Config, Identity, Op, Person, Properties, Store};

fn id(s: &str) -> Identity {
    Identity::new(s).unwrap()
}

/// 60 IDs: persons of 1 to 5 IDs (named and anonymous), one forgotten, one link removed, an
/// event and a property on each.
fn fill(s: &Store) {
    let mut ops = Vec::new();
    for i in 0..60 {
        let me = format!("user{i}");
        if i % 5 != 0 {
            let head = format!("user{}", i - i % 5);
            ops.push(Op::alias(id(&me), id(&head), i, Cause::Import));
        }
        ops.push(Op::record(id(&me), "Viewed", Properties::default(), i));
        ops.push(Op::set(id(&me), Properties::new().with("n", i).unwrap(), i));
    }
    ops.push(Op::alias(id("anon-1"), id("user7"), 99, Cause::Identify));
    s.apply_batch(&ops).unwrap();
    s.forget("user50").unwrap().unwrap();
    s.unalias("user11", "user10").unwrap().unwrap();
}

fn names() -> Vec<String> {
    let mut v: Vec<String> = (0..61).map(|i| format!("user{i}")).collect();
    v.push("anon-1".into());
    v.push("nobody".into());
    v
}

/// Every answer the index could give: person, canonical ID, events and properties per ID.
type Answers = Vec<(Option<Person>, Option<String>, usize, Vec<String>)>;

fn answers(s: &Store) -> Answers {
    names()
        .iter()
        .map(|n| {
            (
                s.resolve(n).unwrap(),
                s.canonical(n).unwrap(),
                s.events(n).unwrap().len(),
                s.properties(n)
                    .unwrap()
                    .into_iter()
                    .map(|p| format!("{}={:?}@{}", p.name, p.value, p.id))
                    .collect(),
            )
        })
        .collect()
}

/// A store of [`fill`] closed once (so its index is written), and its answers from the graph.
fn built(dir: &Path) -> Answers {
    let s = Store::open(dir).unwrap();
    fill(&s);
    assert!(!s.answers_from_index());
    let a = answers(&s);
    drop(s);
    assert!(dir.join("graph.idx").exists());
    a
}

fn index_file(dir: &Path) -> std::path::PathBuf {
    dir.join("graph.idx")
}

#[test]
fn a_reopened_store_answers_from_the_index_exactly_as_from_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let want = built(dir.path());
    let s = Store::open(dir.path()).unwrap();
    assert!(s.answers_from_index());
    assert_eq!(answers(&s), want);
    assert!(s.answers_from_index(), "reads do not load the graph");
    let (ids, persons) = s.counts();
    let st = s.stats_quick();
    assert_eq!((st.ids, st.persons), (ids, persons));
    assert_eq!(st.largest_person, 6, "user5..user9 and anon-1");
    // verify compares the index with the graph rebuilt from the alias log.
    let rep = s.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    assert_eq!((st.ids, st.persons), (rep.ids, rep.persons));
}

#[test]
fn a_write_makes_the_index_stale_and_closing_writes_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    built(dir.path());
    let s = Store::open(dir.path()).unwrap();
    assert!(s.answers_from_index());
    s.alias(&id("user1"), &id("user20")).unwrap();
    assert!(!s.answers_from_index());
    let want = answers(&s);
    assert!(
        want[1]
            .0
            .as_ref()
            .unwrap()
            .ids
            .contains(&"user20".to_string())
    );
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert!(s.answers_from_index());
    assert_eq!(answers(&s), want);
}

#[test]
fn a_missing_or_cut_index_is_rebuilt_from_the_alias_log() {
    let dir = tempfile::tempdir().unwrap();
    let want = built(dir.path());
    std::fs::remove_file(index_file(dir.path())).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert!(!s.answers_from_index());
    assert_eq!(answers(&s), want);
    drop(s);
    assert!(index_file(dir.path()).exists(), "rewritten at close");

    let len = std::fs::metadata(index_file(dir.path())).unwrap().len();
    for cut in [0, 64, len / 2, len - 1] {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(index_file(dir.path()))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.answers_from_index(), "cut to {cut} bytes");
        assert_eq!(answers(&s), want);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(s.answers_from_index(), "rewritten after the cut to {cut}");
        drop(s);
    }
}

#[test]
fn a_damaged_index_is_refused_page_by_page_and_never_believed() {
    let dir = tempfile::tempdir().unwrap();
    let want = built(dir.path());
    let len = std::fs::metadata(index_file(dir.path())).unwrap().len() as usize;
    // Every byte position of the file in turn (a stride through it): the header, the arrays,
    // the IDs and the checksums.
    let mut seen = 0;
    for at in (0..len).step_by(7) {
        // The current index: the first one, or the one written when the last damage was seen.
        let good = std::fs::read(index_file(dir.path())).unwrap();
        let mut bad = good.clone();
        bad[at] ^= 0x41;
        std::fs::write(index_file(dir.path()), &bad).unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(answers(&s), want, "byte {at} damaged");
        // What the reads did not see, verify does (it reads the whole index): it says so, and
        // nothing else is wrong.
        let rep = s.verify().unwrap();
        assert!(
            rep.problems.iter().all(|p| p.contains("graph index")),
            "byte {at}: {:?}",
            rep.problems
        );
        drop(s);
        if std::fs::read(index_file(dir.path())).unwrap() == bad {
            // Not seen (padding): put the good one back.
            std::fs::write(index_file(dir.path()), &good).unwrap();
        } else {
            seen += 1; // seen, and a new index written at close
            let s = Store::open(dir.path()).unwrap();
            assert!(
                s.answers_from_index(),
                "byte {at}: the new index is current"
            );
        }
    }
    assert!(seen > len / 7 * 9 / 10, "{seen} of {} seen", len / 7);
}

#[test]
fn a_stale_index_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    built(dir.path());
    let old = std::fs::read(index_file(dir.path())).unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.alias(&id("user2"), &id("user30")).unwrap();
    s.forget("user40").unwrap().unwrap();
    let want = answers(&s);
    drop(s);
    // The index of before, put back (a backup, a copy from another machine): its stamp is not
    // the store's.
    std::fs::write(index_file(dir.path()), &old).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert!(!s.answers_from_index());
    assert_eq!(answers(&s), want);
    assert!(s.resolve("user40").unwrap().is_none());
}

#[test]
fn a_half_written_index_left_by_a_crash_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let want = built(dir.path());
    // A kill while the next index was written leaves its temporary file, never a half index.
    std::fs::write(dir.path().join("graph.idx.tmp"), b"IDGRAPHX half written").unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert!(s.answers_from_index());
    assert_eq!(answers(&s), want);
    s.alias(&id("user3"), &id("user35")).unwrap();
    drop(s);
    assert!(
        !dir.path().join("graph.idx.tmp").exists(),
        "replaced by the rename"
    );
    let s = Store::open(dir.path()).unwrap();
    assert!(s.answers_from_index());
    assert!(
        s.resolve("user35")
            .unwrap()
            .unwrap()
            .ids
            .contains(&"user3".to_string())
    );
}

const CHILD_ENV: &str = "IDGRAPH_INDEX_CHILD_DIR";

/// Child mode of the test below: opens the store (answering from its index), joins two
/// persons, flushes, and dies without closing (no index written, the stamp already gone).
#[test]
#[ignore = "runs only as the test's child process"]
fn index_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let s = Config::new(&dir).open().unwrap();
    assert!(s.answers_from_index());
    s.alias(&id("user4"), &id("user45")).unwrap();
    s.flush().unwrap();
    std::process::abort();
}

#[test]
fn a_store_killed_after_writing_does_not_trust_its_old_index() {
    let dir = tempfile::tempdir().unwrap();
    built(dir.path());
    let st = Command::new(std::env::current_exe().unwrap())
        .args(["index_child", "--exact", "--ignored", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success(), "the child aborts");
    assert!(
        index_file(dir.path()).exists(),
        "the old index is still there"
    );
    let s = Store::open(dir.path()).unwrap();
    assert!(
        !s.answers_from_index(),
        "its stamp was removed before the write"
    );
    let p = s.resolve("user45").unwrap().unwrap();
    assert!(p.ids.contains(&"user4".to_string()), "{p:?}");
    let rep = s.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
}

#[test]
fn forgetting_the_newest_ids_leaves_a_right_index() {
    // Free nodes at the end are not reloaded from sled, so the index (written from memory)
    // and the graph (rebuilt) differ in length by them: still the same persons.
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.alias(&id("a"), &id("b")).unwrap();
        s.alias(&id("x"), &id("y")).unwrap();
    }
    {
        let s = Store::open(dir.path()).unwrap();
        assert!(s.answers_from_index());
        s.forget("x").unwrap().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert!(s.answers_from_index());
    assert!(s.resolve("y").unwrap().is_none());
    assert_eq!(s.resolve("b").unwrap().unwrap().ids, ["a", "b"]);
    let rep = s.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    s.alias(&id("z"), &id("a")).unwrap();
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.resolve("z").unwrap().unwrap().ids, ["a", "b", "z"]);
    assert!(s.verify().unwrap().is_ok());
}

#[test]
fn verify_tells_its_progress_stage_by_stage() {
    let dir = tempfile::tempdir().unwrap();
    built(dir.path());
    let s = Store::open(dir.path()).unwrap();
    let mut seen: Vec<idgraph::VerifyProgress> = Vec::new();
    let rep = s.verify_with(&mut |p| seen.push(p)).unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    // Each stage starts at 0 and ends at its count; the counts are the report's.
    let ends: Vec<(&str, u64, u64)> = seen
        .windows(2)
        .filter(|w| w[0].stage != w[1].stage)
        .map(|w| (w[0].stage, w[0].done, w[0].total))
        .collect();
    assert_eq!(
        ends[..2],
        [
            ("ID records", rep.ids, rep.ids),
            ("alias links", rep.edges, rep.edges),
        ]
    );
    // Every node, free ones included.
    let (stage, done, total) = ends[2];
    assert!(
        stage == "graph index" && done == total && total >= rep.ids,
        "{ends:?}"
    );
    // The events, read on a thread of their own all along, last.
    assert_eq!(ends[3..], [("events", rep.events, 0)]);
    assert_eq!(seen.last().unwrap().stage, "");
    // Within a stage, the count only grows.
    for w in seen.windows(2).filter(|w| w[0].stage == w[1].stage) {
        assert!(w[0].done <= w[1].done, "{w:?}");
    }
}

#[test]
fn queries_go_on_from_the_index_while_the_graph_loads_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let want = built(dir.path());
    let s = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    assert!(s.answers_from_index());
    let loader = {
        let s = s.clone();
        std::thread::spawn(move || s.load_graph().unwrap())
    };
    let mut rounds = 0;
    while rounds < 20 || !loader.is_finished() {
        assert_eq!(answers(&s), want, "round {rounds}");
        rounds += 1;
    }
    loader.join().unwrap();
    assert!(!s.answers_from_index());
    assert_eq!(answers(&s), want);
    s.alias(&id("user6"), &id("user55")).unwrap();
    assert!(s.verify().unwrap().is_ok());
}

/// What the graph in memory answers beyond the index: links, explanations, hubs.
fn graph_answers(s: &Store) -> String {
    let mut out = format!("{:?}\n", s.hubs(10).unwrap());
    for n in names() {
        out += &format!("{n}: {:?}\n", s.links(&n).unwrap());
        out += &format!("{n}~user5: {:?}\n", s.explain(&n, "user5").ok());
    }
    out
}

/// A copy of the closed store in `from` (sled's files and the index).
fn copy_store(from: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let to = tempfile::tempdir().unwrap();
    copy(from, to.path());
    to
}

/// Loads the graph, then asks everything, writes, and asks again.
fn loaded_answers(dir: &Path) -> (Answers, String, Answers, String) {
    let s = Store::open(dir).unwrap();
    s.load_graph().unwrap();
    assert!(!s.answers_from_index());
    let before = (answers(&s), graph_answers(&s));
    s.apply(Op::alias(id("user3"), id("user33"), 1_000, Cause::Api))
        .unwrap();
    s.unalias("user7", "anon-1").unwrap().unwrap();
    s.forget("user21").unwrap().unwrap();
    let rep = s.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    (before.0, before.1, answers(&s), graph_answers(&s))
}

#[test]
fn a_graph_loaded_from_the_index_is_the_graph_of_the_alias_log() {
    let dir = tempfile::tempdir().unwrap();
    let want = built(dir.path());
    // The reference: the graph rebuilt from the alias log (no index).
    let from_log = copy_store(dir.path());
    std::fs::remove_file(index_file(from_log.path())).unwrap();
    let reference = loaded_answers(from_log.path());
    assert_eq!(reference.0, want);
    assert!(reference.2[22].0.is_none(), "user21 forgotten");

    // From the index: the same answers, before and after writes.
    let from_index = copy_store(dir.path());
    assert!(Store::open(from_index.path()).unwrap().answers_from_index());
    assert_eq!(loaded_answers(from_index.path()), reference);
    // Closing wrote a new index; loading from it gives the same graph again.
    let s = Store::open(from_index.path()).unwrap();
    assert!(s.answers_from_index());
    s.load_graph().unwrap();
    assert_eq!(
        (answers(&s), graph_answers(&s)),
        (reference.2.clone(), reference.3.clone())
    );

    // A damaged index (a byte of its IDs, flags, links, table): the graph comes from the log.
    let len = std::fs::metadata(index_file(dir.path())).unwrap().len();
    for at in [200, len / 3, len / 2, len * 2 / 3, len - 200] {
        let damaged = copy_store(dir.path());
        let mut b = std::fs::read(index_file(damaged.path())).unwrap();
        b[at as usize] ^= 0x41;
        std::fs::write(index_file(damaged.path()), &b).unwrap();
        assert_eq!(
            loaded_answers(damaged.path()),
            reference,
            "byte {at} damaged"
        );
        let s = Store::open(damaged.path()).unwrap();
        assert!(s.answers_from_index(), "byte {at}: rewritten at close");
    }
}

/// What a reference model says `hubs` counts: each person's size and each ID's links, from
/// the alias edges left after forgets and unaliases, best first.
fn model_hub_counts(
    edges: &std::collections::BTreeSet<(usize, usize)>,
    ids: &[usize],
) -> (Vec<u64>, Vec<u64>) {
    use std::collections::HashMap;
    let mut adj: HashMap<usize, Vec<usize>> = ids.iter().map(|&i| (i, Vec::new())).collect();
    for &(a, b) in edges {
        adj.get_mut(&a).unwrap().push(b);
        adj.get_mut(&b).unwrap().push(a);
    }
    let mut seen = std::collections::HashSet::new();
    let mut sizes = Vec::new();
    for &start in ids {
        if !seen.insert(start) {
            continue;
        }
        let (mut stack, mut size) = (vec![start], 0u64);
        while let Some(x) = stack.pop() {
            size += 1;
            stack.extend(adj[&x].iter().copied().filter(|&y| seen.insert(y)));
        }
        sizes.push(size);
    }
    let mut links: Vec<u64> = adj
        .values()
        .map(|v| v.len() as u64)
        .filter(|&d| d > 0)
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    links.sort_unstable_by(|a, b| b.cmp(a));
    (sizes, links)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// `hubs` from a reopened store's index — its kept lists up to 100, a scan of its persons
    /// and links past that — names what the graph names, with a model's counts.
    #[test]
    fn hubs_from_the_index_are_the_graphs(
        links in proptest::collection::vec((0usize..400, 0usize..400), 1..300),
        forgets in proptest::collection::vec(0usize..400, 0..4),
        unaliases in proptest::collection::vec(0usize..300, 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut edges = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        {
            let s = Store::open(dir.path()).unwrap();
            let ops: Vec<Op> = links
                .iter()
                .enumerate()
                .map(|(t, &(a, b))| {
                    ids.insert(a);
                    ids.insert(b);
                    if a != b {
                        edges.insert((a.min(b), a.max(b)));
                    }
                    Op::alias(id(&format!("u{a}")), id(&format!("u{b}")), t as i64, Cause::Import)
                })
                .collect();
            s.apply_batch(&ops).unwrap();
            for &k in &unaliases {
                let &(a, b) = edges.iter().nth(k % edges.len().max(1)).unwrap_or(&(0, 0));
                if s.unalias(&format!("u{a}"), &format!("u{b}")).unwrap().is_some() {
                    edges.remove(&(a, b));
                }
            }
            for &f in &forgets {
                if let Some(gone) = s.forget(&format!("u{f}")).unwrap() {
                    for x in gone.ids {
                        let i: usize = x[1..].parse().unwrap();
                        ids.remove(&i);
                        edges.retain(|&(a, b)| a != i && b != i);
                    }
                }
            }
        }
        let s = Store::open(dir.path()).unwrap();
        proptest::prop_assert!(s.answers_from_index());
        let tops = [0usize, 1, 7, 100, 101, 500];
        let from_index: Vec<idgraph::Hubs> = tops.iter().map(|&t| s.hubs(t).unwrap()).collect();
        proptest::prop_assert!(s.answers_from_index(), "hubs does not load the graph");
        s.load_graph().unwrap();
        let (sizes, degrees) = model_hub_counts(&edges, &ids.iter().copied().collect::<Vec<_>>());
        for (&top, got) in tops.iter().zip(&from_index) {
            let want = s.hubs(top).unwrap();
            proptest::prop_assert_eq!(got, &want, "top {}", top);
            let counts = |v: &[(String, u64)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
            proptest::prop_assert_eq!(counts(&got.largest), sizes.iter().take(top).copied().collect::<Vec<_>>());
            proptest::prop_assert_eq!(counts(&got.most_linked), degrees.iter().take(top).copied().collect::<Vec<_>>());
        }
    }
}
