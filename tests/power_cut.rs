//! Power cuts: the store on a filesystem that loses every write not yet fsynced when the power
//! goes (`common::lossyfs`, the LazyFS method). Each scenario runs a writer in a child process
//! on the lossy mount, cuts the power at a random moment (the filesystem freezes, the writer is
//! killed, the tree goes back to what was synced, and is mounted again), then checks:
//! - the store opens and `verify` passes;
//! - everything acknowledged as durable is there: an import that returned, a `--sync` 2xx, a
//!   `flush()` that returned;
//! - no operation is half applied.
//!
//! The scenarios go on with the same store from cut to cut. CI runs a few seeded cuts of each;
//! `IDGRAPH_POWER_CUTS=40 cargo test --release --test power_cut` runs 40 of each (320 in all),
//! `IDGRAPH_POWER_CUT_SEED` picks the seed. Needs root and `/dev/fuse`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::lossyfs::{LossyFs, Mounted};
use idgraph::{Cause, Config, Identity, Op, Properties, Store};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The child process's workload, when the test binary runs as one.
const CHILD: &str = "IDGRAPH_POWER_CUT_CHILD";

fn cuts() -> usize {
    std::env::var("IDGRAPH_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn rng(scenario: u64) -> StdRng {
    let seed = std::env::var("IDGRAPH_POWER_CUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261206u64);
    StdRng::seed_from_u64(seed ^ scenario.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn id(s: &str) -> Identity {
    Identity::new(s).unwrap()
}

fn pad(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// A writer: a child process whose stdout lines are collected as they come.
struct Writer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(mut cmd: Command) -> Writer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().push(line);
            }
        });
        Writer {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// This test binary again, running `workload` on the store at `db`.
    fn child(workload: &str, db: &Path, round: usize) -> Writer {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "child_process_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, workload)
        .env("IDGRAPH_POWER_CUT_DB", db)
        .env("IDGRAPH_POWER_CUT_ROUND", round.to_string());
        Writer::start(cmd)
    }

    /// Cuts the power under the writer: freeze, kill, collect what it acknowledged, restart.
    fn cut(mut self, m: &mut Mounted) -> Vec<String> {
        m.freeze();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.take().unwrap().join().unwrap();
        m.restart();
        std::mem::take(&mut *self.lines.lock())
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().clone()
    }
}

/// The numbers `n` of the lines `ACK n` a writer printed.
fn acks(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("ACK ")?.trim().parse().ok())
        .collect()
}

fn open_and_verify(db: &Path, what: &str) -> Store {
    let store = Config::new(db)
        .open()
        .unwrap_or_else(|e| panic!("{what}: the store does not open after a power cut: {e}"));
    let rep = store.verify().unwrap();
    assert!(
        rep.is_ok(),
        "{what}: verify after a power cut: {:?}",
        rep.problems
    );
    store
}

fn event_names(store: &Store, id: &str) -> Vec<String> {
    store
        .events(id)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// The entry point of the child processes: runs the workload named in `CHILD`. Not a test of
/// its own: ignored in an ordinary run, and run (`--ignored --exact`) only by a scenario.
#[test]
#[ignore = "the child process of the power-cut scenarios, run by them"]
fn child_process_entry() {
    let workload = std::env::var(CHILD)
        .expect("run by a power-cut scenario, which names the workload in IDGRAPH_POWER_CUT_CHILD");
    let db = PathBuf::from(std::env::var("IDGRAPH_POWER_CUT_DB").unwrap());
    let round: usize = std::env::var("IDGRAPH_POWER_CUT_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    match workload.as_str() {
        "apply" => child_apply(&db, round),
        "batch" => child_batch(&db, round),
        "repair" => child_repair(&db, round),
        "compact" => child_compact(&db, round),
        "backup" => child_backup(&db, round),
        other => panic!("unknown workload {other}"),
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// One op at a time: events with properties of 10-3,000 bytes on five IDs, and a property of
/// 4 KB set on one ID every fourth op, so that its record passes sled's blob threshold (128
/// KiB) after ~130 ops. `flush()` every third op, then `ACK i`: ops 0..=i are durable.
fn child_apply(db: &Path, round: usize) {
    let store = Config::new(db).open().unwrap();
    let mut r = rng(round as u64);
    for i in 0..100_000u64 {
        let props = Properties::new()
            .with("n", i as i64)
            .unwrap()
            .with("pad", pad(r.random_range(10..3000), 'x'))
            .unwrap();
        let who = id(&format!("r{round}-u{}", i % 5));
        store
            .apply(Op::record(who, format!("E{i}").as_str(), props, i as i64))
            .unwrap();
        if i % 4 == 0 {
            let props = Properties::new()
                .with(format!("p{i}").as_str(), pad(4000, 'y'))
                .unwrap();
            store
                .apply(Op::set(id(&format!("r{round}-heavy")), props, i as i64))
                .unwrap();
        }
        if i % 3 == 2 {
            store.flush().unwrap();
            say(format!("ACK {i}"));
        }
    }
}

fn check_apply(store: &Store, round: usize, lines: &[String]) {
    let Some(&acked) = acks(lines).last() else {
        return;
    };
    for u in 0..5 {
        let names = event_names(store, &format!("r{round}-u{u}"));
        for i in (u..=acked).step_by(5) {
            assert!(
                names.contains(&format!("E{i}")),
                "round {round}: event E{i}, acknowledged (ACK {acked}), is gone"
            );
        }
    }
    let props = store.properties(&format!("r{round}-heavy")).unwrap();
    for i in (0..=acked).step_by(4) {
        assert!(
            props.iter().any(|p| p.name == format!("p{i}")),
            "round {round}: property p{i}, acknowledged (ACK {acked}), is gone"
        );
    }
}

/// Batches of 30 ops: an alias, 28 events of ~4 KB and a property set, ~120 KB in all (one
/// redo record, near or past sled's blob threshold). `flush()` after every second batch, then
/// `ACK j`.
fn child_batch(db: &Path, round: usize) {
    let store = Config::new(db).open().unwrap();
    for j in 0..100_000u64 {
        store.apply_batch(&batch(round, j)).unwrap();
        if j % 2 == 1 {
            store.flush().unwrap();
            say(format!("ACK {j}"));
        }
    }
}

fn batch(round: usize, j: u64) -> Vec<Op> {
    let (a, b) = (id(&format!("r{round}-a{j}")), id(&format!("r{round}-b{j}")));
    let mut ops = vec![Op::alias(a.clone(), b.clone(), j as i64, Cause::Api)];
    for k in 0..28u64 {
        let who = if k % 2 == 0 { a.clone() } else { b.clone() };
        let props = Properties::new()
            .with("pad", pad(4000 + k as usize, 'b'))
            .unwrap();
        ops.push(Op::record(who, format!("B{k}").as_str(), props, j as i64));
    }
    ops.push(Op::set(
        a,
        Properties::new().with("batch", j as i64).unwrap(),
        j as i64,
    ));
    ops
}

fn check_batch(store: &Store, round: usize, lines: &[String], started: u64) {
    let acked = acks(lines).last().copied();
    // Every batch the writer may have begun: acknowledged ones whole, the others whole or
    // absent.
    for j in 0..started {
        let a = format!("r{round}-a{j}");
        let events = store.events(&a).unwrap().len();
        let person = store.resolve(&a).unwrap();
        let joined = person
            .as_ref()
            .is_some_and(|p| p.ids.contains(&format!("r{round}-b{j}")));
        let set = store
            .properties(&a)
            .unwrap()
            .iter()
            .any(|p| p.name == "batch");
        let whole = events == 28 && joined && set;
        let absent = events == 0 && person.is_none() && !set;
        if acked.is_some_and(|x| j <= x) {
            assert!(
                whole,
                "round {round}: batch {j}, acknowledged, is not whole: {events} events, joined {joined}, set {set}"
            );
        } else {
            assert!(
                whole || absent,
                "round {round}: batch {j} is half applied: {events} events of 28, joined {joined}, set {set}"
            );
        }
    }
}

/// A person of 300 IDs, then one of its IDs forgotten, then a link removed, each followed by
/// `flush()` and an acknowledgement; then the store closed, which writes the graph index.
fn child_repair(db: &Path, round: usize) {
    let store = Config::new(db).open().unwrap();
    let root = id(&format!("r{round}-root"));
    let mut ops = Vec::new();
    for k in 0..300 {
        let other = id(&format!("r{round}-m{k}"));
        ops.push(Op::alias(root.clone(), other.clone(), k, Cause::Api));
        ops.push(Op::record(other, "Seen", Properties::new(), k));
    }
    let gone = id(&format!("r{round}-gone"));
    let gone2 = id(&format!("r{round}-gone2"));
    ops.push(Op::alias(gone.clone(), gone2.clone(), 1, Cause::Api));
    ops.push(Op::record(gone.clone(), "Private", Properties::new(), 1));
    store.apply_batch(&ops).unwrap();
    store.flush().unwrap();
    say("ACK 1".into());
    store.forget(gone.as_str()).unwrap().unwrap();
    store.flush().unwrap();
    say("ACK 2".into());
    store
        .unalias(root.as_str(), &format!("r{round}-m0"))
        .unwrap()
        .unwrap();
    store.flush().unwrap();
    say("ACK 3".into());
    drop(store);
    say("ACK 4".into());
    std::thread::sleep(Duration::from_secs(30));
}

fn check_repair(store: &Store, round: usize, lines: &[String]) {
    let Some(&acked) = acks(lines).last() else {
        return;
    };
    let root = format!("r{round}-root");
    let size = store.resolve(&root).unwrap().map_or(0, |p| p.ids.len());
    assert!(
        size >= 300,
        "round {round}: the person of 300 IDs has {size} after ACK {acked}"
    );
    if acked >= 2 {
        assert!(
            store.resolve(&format!("r{round}-gone2")).unwrap().is_none(),
            "round {round}: a forgotten person is back after a power cut"
        );
    }
    if acked >= 3 {
        assert_eq!(size, 300, "round {round}: the removed link is back");
    }
}

/// Events, `flush()` and `ACK i`, then a compaction, over and over: a cut during a compaction
/// must leave the old store or the new one.
fn child_compact(db: &Path, round: usize) {
    for i in 0..100_000u64 {
        let store = Config::new(db).open().unwrap();
        let who = id(&format!("r{round}-c{}", i % 3));
        let props = Properties::new().with("pad", pad(2000, 'c')).unwrap();
        store
            .apply(Op::record(who, format!("E{i}").as_str(), props, i as i64))
            .unwrap();
        store.flush().unwrap();
        drop(store);
        say(format!("ACK {i}"));
        Config::new(db).compact().unwrap();
    }
}

fn check_compact(store: &Store, round: usize, lines: &[String]) {
    let Some(&acked) = acks(lines).last() else {
        return;
    };
    for i in 0..=acked {
        let names = event_names(store, &format!("r{round}-c{}", i % 3));
        assert!(
            names.contains(&format!("E{i}")),
            "round {round}: E{i} (ACK {acked}) is gone after a cut during compaction"
        );
    }
}

/// Events with `flush()`, then a backup beside the store (`BACKUP i` once it returned), then
/// its restore into a new store (`RESTORED i`), over and over.
fn child_backup(db: &Path, round: usize) {
    let dir = db.parent().unwrap();
    let store = Config::new(db).open().unwrap();
    for i in 0..100_000u64 {
        let who = id(&format!("r{round}-b{}", i % 3));
        let props = Properties::new().with("pad", pad(3000, 'b')).unwrap();
        store
            .apply(Op::record(who, format!("E{i}").as_str(), props, i as i64))
            .unwrap();
        store.flush().unwrap();
        let file = dir.join(format!("r{round}-{i}.backup"));
        store
            .backup_to_file(&file, &idgraph::BackupOptions::default(), &|_| {})
            .unwrap();
        say(format!("BACKUP {i}"));
        let file = std::fs::File::open(&file).unwrap();
        let dest = Config::new(dir.join(format!("r{round}-{i}.restored")));
        idgraph::restore(file, "b", &dest, &Default::default(), &|_| {}).unwrap();
        say(format!("RESTORED {i}"));
    }
}

/// Every backup file and restored store there is, acknowledged or not, is whole: a file
/// restores, a store opens and verifies; each holds the events up to its number. And every
/// acknowledged one is there.
fn check_backup(round: usize, lines: &[String], dir: &Path) {
    let numbered = |prefix: &str| -> Vec<u64> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
            .collect()
    };
    let holds = |store: &Store, i: u64, what: &str| {
        for j in 0..=i {
            let names = event_names(store, &format!("r{round}-b{}", j % 3));
            assert!(names.contains(&format!("E{j}")), "{what}: E{j} is missing");
        }
    };
    let scratch = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("r{round}-")) else {
            continue;
        };
        if let Some(i) = rest.strip_suffix(".backup") {
            let i: u64 = i.parse().unwrap();
            let dest = scratch.path().join(&name);
            let f = std::fs::File::open(dir.join(&name)).unwrap();
            idgraph::restore(f, &name, &Config::new(&dest), &Default::default(), &|_| {})
                .unwrap_or_else(|e| panic!("{name} after a power cut: {e}"));
            holds(&open_and_verify(&dest, &name), i, &name);
        } else if let Some(i) = rest.strip_suffix(".restored") {
            let i: u64 = i.parse().unwrap();
            holds(&open_and_verify(&dir.join(&name), &name), i, &name);
        }
    }
    for i in numbered("BACKUP ") {
        assert!(
            dir.join(format!("r{round}-{i}.backup")).exists(),
            "backup {i} is gone"
        );
    }
    for i in numbered("RESTORED ") {
        assert!(
            dir.join(format!("r{round}-{i}.restored")).exists(),
            "restore {i} is gone"
        );
    }
}

/// Runs `rounds` cuts of a child workload on one store.
fn cut_child_rounds(
    scenario: u64,
    workload: &str,
    delay_ms: std::ops::Range<u64>,
    check: impl Fn(&Store, usize, &[String]),
) {
    cut_child_rounds_in(scenario, workload, delay_ms, |s, r, l, _| check(s, r, l));
}

/// [`cut_child_rounds`], the check also given the store's directory.
fn cut_child_rounds_in(
    scenario: u64,
    workload: &str,
    delay_ms: std::ops::Range<u64>,
    check: impl Fn(&Store, usize, &[String], &Path),
) {
    let dir = tempfile::tempdir().unwrap();
    let mut m = LossyFs::mount(dir.path());
    let db = dir.path().join("db");
    let mut r = rng(scenario);
    for round in 0..cuts() {
        let w = Writer::child(workload, &db, round);
        std::thread::sleep(Duration::from_millis(r.random_range(delay_ms.clone())));
        let lines = w.cut(&mut m);
        let store = open_and_verify(&db, &format!("{workload} round {round}"));
        check(&store, round, &lines, &db);
    }
}

#[test]
fn apply_and_flush_survive_power_cuts() {
    if !LossyFs::available() {
        return;
    }
    cut_child_rounds_in(1, "apply", 1500..3000, |store, round, lines, db| {
        check_apply(store, round, lines);
        // The heavy record passed 128 KiB after ~130 ops: sled wrote it as a blob, which is
        // what this scenario is for.
        if acks(lines).last().is_some_and(|&a| a > 400) {
            let blobs = std::fs::read_dir(db.join("blobs")).map_or(0, |d| d.count());
            assert!(
                blobs > 0,
                "round {round}: no blob was written; the scenario missed its aim"
            );
        }
    });
}

#[test]
fn batches_are_whole_or_absent_after_power_cuts() {
    if !LossyFs::available() {
        return;
    }
    cut_child_rounds(2, "batch", 300..2500, |store, round, lines| {
        // A batch the writer had begun is at most one past the last acknowledged pair.
        let started = acks(lines).last().map_or(2, |a| a + 3);
        check_batch(store, round, lines, started);
    });
}

#[test]
fn a_compaction_cut_short_leaves_the_old_store_or_the_new() {
    if !LossyFs::available() {
        return;
    }
    cut_child_rounds(6, "compact", 200..3000, check_compact);
}

#[test]
fn backups_and_restores_that_returned_survive_power_cuts() {
    if !LossyFs::available() {
        return;
    }
    let restored = std::sync::atomic::AtomicUsize::new(0);
    cut_child_rounds_in(7, "backup", 300..2500, |_, round, lines, db| {
        check_backup(round, lines, db.parent().unwrap());
        let n = lines.iter().filter(|l| l.starts_with("RESTORED ")).count();
        restored.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    });
    // The scenario missed its aim if no restore ever returned before a cut.
    assert!(
        restored.into_inner() > 0,
        "no backup was restored before a cut"
    );
}

#[test]
fn forget_unalias_and_the_index_survive_power_cuts() {
    if !LossyFs::available() {
        return;
    }
    cut_child_rounds(3, "repair", 200..3000, check_repair);
}

/// KISSmetrics JSON lines for an import round: one ID with `heavy` events (its packed block
/// passes sled's blob threshold), 200 light IDs each aliased to a named ID with two events.
fn km_lines(tag: &str, heavy: usize) -> (String, u64) {
    let mut s = String::new();
    let mut events = 0;
    for k in 0..heavy {
        s.push_str(&format!(
            "{{\"_p\":\"{tag}-heavy\",\"_t\":{k},\"_n\":\"H{k}\",\"v\":\"{}\"}}\n",
            pad(40, 'h')
        ));
        events += 1;
    }
    for k in 0..200 {
        s.push_str(&format!(
            "{{\"_p\":\"{tag}-anon{k}\",\"_t\":{k},\"_n\":\"Viewed\",\"n\":{k}}}\n"
        ));
        s.push_str(&format!(
            "{{\"_p\":\"{tag}-user{k}@x.com\",\"_t\":{},\"_p2\":\"{tag}-anon{k}\"}}\n",
            k + 1
        ));
        s.push_str(&format!(
            "{{\"_p\":\"{tag}-user{k}@x.com\",\"_t\":{},\"_n\":\"Signed Up\"}}\n",
            k + 2
        ));
        events += 2;
    }
    (s, events)
}

fn idgraph(db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idgraph"));
    c.arg("--db").arg(db);
    c
}

#[test]
fn an_import_that_returned_survives_power_cuts() {
    if !LossyFs::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = tempfile::tempdir().unwrap();
    let mut m = LossyFs::mount(dir.path());
    let db = dir.path().join("db");
    let mut r = rng(4);
    let mut imported: Vec<(String, u64)> = Vec::new();
    for round in 0..cuts() {
        // An import that returns: everything in it is acknowledged.
        let tag = format!("i{round}");
        let (lines, events) = km_lines(&tag, 3000);
        let file = input.path().join(format!("{tag}.json"));
        std::fs::write(&file, lines).unwrap();
        let out = idgraph(&db).arg("import").arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        imported.push((tag.clone(), events));
        // Then another, incremental (the first file grown), cut at a random moment, or the
        // power cut right after the first returned.
        let (more, _) = km_lines(&format!("{tag}b"), 1000);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(more.as_bytes()).unwrap();
        let w = Writer::start({
            let mut c = idgraph(&db);
            c.arg("import").arg(&file);
            c
        });
        std::thread::sleep(Duration::from_millis(r.random_range(0..800)));
        w.cut(&mut m);
        let store = open_and_verify(&db, &format!("import round {round}"));
        for (tag, events) in &imported {
            let heavy = event_names(&store, &format!("{tag}-heavy")).len() as u64;
            let mut n = heavy;
            for k in 0..200 {
                n += store.events(&format!("{tag}-user{k}@x.com")).unwrap().len() as u64;
                let person = store.resolve(&format!("{tag}-anon{k}")).unwrap();
                assert!(
                    person
                        .as_ref()
                        .is_some_and(|p| p.ids.contains(&format!("{tag}-user{k}@x.com"))),
                    "round {round}: an imported alias of {tag} is gone: {tag}-anon{k} is {person:?}"
                );
            }
            assert_eq!(n, *events, "round {round}: events of the import {tag} lost");
        }
    }
}

#[test]
fn serve_sync_acknowledgements_survive_power_cuts() {
    if !LossyFs::available() {
        return;
    }
    serve_rounds(5, true);
}

/// Without `--sync` a request is acknowledged once applied, and sled's background flush makes
/// it durable within `flush_every_ms` (500 ms): what was acknowledged 2 s before a cut is there.
#[test]
fn serve_acknowledgements_are_durable_within_the_flush_interval() {
    if !LossyFs::available() {
        return;
    }
    serve_rounds(7, false);
}

fn serve_rounds(scenario: u64, sync: bool) {
    let margin = if sync {
        Duration::ZERO
    } else {
        Duration::from_secs(2)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut m = LossyFs::mount(dir.path());
    let db = dir.path().join("db");
    let mut r = rng(scenario);
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut heavy_acked: Vec<String> = Vec::new();
    for round in 0..cuts() {
        let w = Writer::start({
            let mut c = idgraph(&db);
            c.args(["serve", "--no-demo", "--addr", "127.0.0.1:0"]);
            if sync {
                c.arg("--sync");
            }
            c
        });
        let mut base = None;
        for _ in 0..200 {
            if let Some(l) = w.lines().iter().find(|l| l.contains("listening on")) {
                base = l
                    .split("listening on ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .map(|s| s.trim_end_matches('/').to_string());
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let base = base.expect("the server said where it listens");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let got = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let clients: Vec<_> = (0..3)
            .map(|t| {
                let (base, stop, got) = (base.clone(), stop.clone(), got.clone());
                std::thread::spawn(move || {
                    let mut rr = rng(100 + t + round as u64 * 7);
                    for i in 0.. {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let who = format!("s{round}-c{t}");
                        let (url, heavy) = if t == 0 && i % 2 == 1 {
                            (
                                format!(
                                    "{base}/s?_k=demo&_p=s{round}-heavy&p{i}={}",
                                    pad(3000, 'q')
                                ),
                                Some(format!("p{i}")),
                            )
                        } else {
                            (
                                format!(
                                    "{base}/e?_k=demo&_p={who}&_n=E{i}&pad={}",
                                    pad(rr.random_range(10..3000), 'z')
                                ),
                                None,
                            )
                        };
                        if get_ok(&url) {
                            let at = std::time::Instant::now();
                            let mut g = got.lock();
                            match heavy {
                                Some(p) => g.1.push((p, at)),
                                None => g.0.push((who, format!("E{i}"), at)),
                            }
                        }
                    }
                })
            })
            .collect();
        let wait = r.random_range(500..2500) + margin.as_millis() as u64;
        std::thread::sleep(Duration::from_millis(wait));
        let cut_at = std::time::Instant::now();
        w.cut(&mut m);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
        let (events, heavy) = std::mem::take(&mut *got.lock());
        // Durable by now: with --sync, everything acknowledged; without, what was
        // acknowledged `margin` before the cut.
        let durable = |at: std::time::Instant| at + margin <= cut_at;
        acked.extend(
            events
                .into_iter()
                .filter(|e| durable(e.2))
                .map(|(who, name, _)| (who, name)),
        );
        heavy_acked.extend(
            heavy
                .into_iter()
                .filter(|h| durable(h.1))
                .map(|(p, _)| format!("{round}:{p}")),
        );
        let store = open_and_verify(&db, &format!("serve round {round}"));
        for (who, name) in &acked {
            assert!(
                event_names(&store, who).contains(name),
                "round {round}: {who} {name} was acknowledged (sync: {sync}) and is gone"
            );
        }
        for rp in &heavy_acked {
            let (rd, p) = rp.split_once(':').unwrap();
            let props = store.properties(&format!("s{rd}-heavy")).unwrap();
            assert!(
                props.iter().any(|x| x.name == p),
                "round {round}: property {p} of s{rd}-heavy was acknowledged and is gone"
            );
        }
    }
}

/// A blocking HTTP/1.1 GET of a few lines, with a short timeout (during a cut the server
/// freezes): whether it was answered 200.
fn get_ok(url: &str) -> bool {
    use std::io::Read;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    if s.read_to_end(&mut buf).is_err() {
        return false;
    }
    buf.starts_with(b"HTTP/1.1 200")
}

#[test]
fn the_filesystem_keeps_only_what_was_synced() {
    if !LossyFs::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut m = LossyFs::mount(dir.path());
    let kept = dir.path().join("kept");
    let lost = dir.path().join("lost");
    {
        let mut f = std::fs::File::create(&kept).unwrap();
        f.write_all(b"durable").unwrap();
        f.sync_all().unwrap();
        std::fs::File::open(dir.path()).unwrap().sync_all().unwrap();
        f.write_all(b" and not").unwrap();
        std::fs::write(&lost, b"never synced").unwrap();
    }
    assert_eq!(std::fs::read(&kept).unwrap(), b"durable and not");
    m.restart();
    assert_eq!(std::fs::read(&kept).unwrap(), b"durable");
    assert!(!lost.exists());
}
