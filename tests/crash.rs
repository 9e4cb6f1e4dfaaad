//! Crash test: a child process (this test binary, re-run in child mode) applies batches in a
//! loop and reports each flush; the parent kills it with SIGKILL at a random moment, reopens
//! the store, and checks that `verify()` passes, that every batch acknowledged before the last
//! flush is there, that batches survived whole or not at all, and that the survivors are a
//! prefix of what was written. Repeated over several rounds on the same directory, so recovery
//! also runs on recovered stores.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use idgraph::{Cause, Config, Identity, Op, Properties, Store};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "IDGRAPH_CRASH_CHILD_DIR";
const START_ENV: &str = "IDGRAPH_CRASH_CHILD_START";

fn id(s: String) -> Identity {
    Identity::new(s).unwrap()
}

/// The batch written at step `i`: an alias into a group of 8, an event, a property.
fn batch(i: u64) -> Vec<Op> {
    let head = i - i % 8;
    vec![
        Op::alias(
            id(format!("u{i}")),
            id(format!("u{head}")),
            i as i64,
            Cause::Import,
        ),
        Op::record(
            id(format!("u{i}")),
            "step",
            Properties::new().with("n", i as i64).unwrap(),
            i as i64,
        ),
        Op::set(
            id(format!("u{head}")),
            Properties::new().with("last", i as i64).unwrap(),
            i as i64,
        ),
    ]
}

/// Whether step `i` is in the store; panics if it is there only in part.
fn present(s: &Store, i: u64) -> bool {
    let head = format!("u{}", i - i % 8);
    let me = format!("u{i}");
    let has_event = s
        .events(&me)
        .unwrap()
        .iter()
        .any(|e| e.id == me && e.at == i as i64 && e.event == "step");
    let linked = s
        .resolve(&me)
        .unwrap()
        .is_some_and(|p| p.ids.contains(&head));
    let prop = s
        .properties(&head)
        .unwrap()
        .iter()
        .any(|p| p.name == "last" && p.at >= i as i64);
    assert!(
        has_event == linked && (!has_event || prop),
        "step {i} survived in part: event {has_event}, alias {linked}, property {prop}"
    );
    has_event
}

/// Child mode: write batches forever, printing `flushed N` after each flush.
#[test]
#[ignore = "runs only as the crash test's child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let s = Config::new(&dir).flush_every_ms(Some(50)).open().unwrap();
    let mut i = start;
    loop {
        s.apply_batch(&batch(i)).unwrap();
        if i % 16 == 15 {
            s.flush().unwrap();
            println!("flushed {i}");
        }
        i += 1;
    }
}

#[test]
fn killed_writer_leaves_a_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next = 0u64;
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(START_ENV, next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("flushed ") {
                    last = Some(n.trim().parse::<u64>().unwrap());
                }
            }
            last
        });
        // Let it get going, then kill it at a random moment.
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(150..700));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last_flushed = reader.join().unwrap();

        let s = Store::open(dir.path()).unwrap();
        let rep = s.verify().unwrap();
        assert!(
            rep.is_ok(),
            "round {round}: verify failed: {:?}",
            rep.problems
        );
        if let Some(f) = last_flushed {
            for i in next..=f {
                assert!(
                    present(&s, i),
                    "round {round}: step {i} was flushed but is missing"
                );
            }
        }
        // The survivors are a prefix: find the first missing step, nothing after it.
        let mut end = next;
        while present(&s, end) {
            end += 1;
        }
        for i in end..end + 64 {
            assert!(
                !present(&s, i),
                "round {round}: step {i} survived but step {end} did not"
            );
        }
        println!("round {round}: flushed up to {last_flushed:?}, recovered up to {end}");
        assert!(end > 0 || round > 0 || last_flushed.is_none());
        next = end;
    }
    assert!(next > 0, "the child never wrote anything");
}

const FAULT_CHILD_ENV: &str = "IDGRAPH_FAULT_CHILD_DIR";

/// Child mode of the test below: one alias of two new IDs (two keys) and one event with a
/// property on a known ID (two keys), each a single op on the redo-record path.
#[test]
fn fault_child() {
    let Ok(dir) = std::env::var(FAULT_CHILD_ENV) else {
        return; // only runs as the child of the test below
    };
    let s = Store::open(&dir).unwrap();
    let step: u32 = std::env::var("IDGRAPH_FAULT_STEP")
        .unwrap()
        .parse()
        .unwrap();
    if step == 2 {
        // A batch of 200 aliases of new IDs and an event each through one redo record: the
        // 400 records in blocks of packed records, the events in blocks of packed events.
        let ops: Vec<Op> = (0..200)
            .flat_map(|i| {
                [
                    Op::alias(
                        id(format!("batch-a{i}")),
                        id(format!("batch-b{i}")),
                        5,
                        Cause::Alias,
                    ),
                    Op::record(id(format!("batch-b{i}")), "Seen", Properties::new(), 6),
                ]
            })
            .collect();
        s.apply_batch(&ops).unwrap(); // aborts inside when the fault point is set
        s.flush().unwrap();
        return;
    }
    let op = if step == 0 {
        Op::alias(id("new-a".into()), id("new-b".into()), 5, Cause::Alias)
    } else {
        Op::record(
            id("new-a".into()),
            "Paid",
            Properties::new().with("plan", "pro").unwrap(),
            6,
        )
    };
    s.apply(op).unwrap(); // aborts inside when the fault point is set
    s.flush().unwrap();
}

/// A crash between the keys of one op: reopening finishes the op from its redo record.
#[test]
fn a_crash_inside_a_multi_key_op_is_finished_at_open() {
    if !cfg!(debug_assertions) {
        return; // the fault point exists in debug builds only
    }
    for (step, after) in [
        (0, "0"),
        (0, "1"),
        (1, "0"),
        (1, "1"),
        (0, "9"),
        (2, "0"),
        (2, "1"),
        (2, "4"),
        (2, "200"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        if step == 1 {
            let s = Store::open(dir.path()).unwrap();
            s.apply(Op::alias(
                id("new-a".into()),
                id("new-b".into()),
                5,
                Cause::Alias,
            ))
            .unwrap();
            s.flush().unwrap();
        }
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["fault_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(FAULT_CHILD_ENV, dir.path())
            .env("IDGRAPH_FAULT_STEP", step.to_string())
            .env("IDGRAPH_FAULT_AFTER_WRITES", after)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        // "9" and "200" are past the op's keys: it completes normally.
        assert_eq!(
            status.success(),
            after == "9" || after == "200",
            "step {step}, fault {after}: {status}"
        );
        let s = Store::open(dir.path()).unwrap();
        let report = s.verify().unwrap();
        assert!(report.is_ok(), "step {step}, fault {after}: {report:?}");
        if step == 2 {
            // The whole batch, whichever key the crash came before.
            for i in 0..200 {
                let p = s.resolve(&format!("batch-a{i}")).unwrap().expect("whole");
                assert_eq!(p.ids.len(), 2, "fault {after}: pair {i}");
                assert_eq!(s.events(&p.ids[0]).unwrap().len(), 1, "fault {after}: {i}");
            }
            continue;
        }
        let p = s.resolve("new-a").unwrap().expect("the alias is whole");
        assert_eq!(p.ids, ["new-a", "new-b"], "step {step}, fault {after}");
        if step == 1 {
            let e = s.events("new-a").unwrap();
            assert_eq!(e.len(), 1, "step {step}, fault {after}: the event");
            assert_eq!(s.properties("new-b").unwrap()[0].name, "plan");
        }
    }
}
