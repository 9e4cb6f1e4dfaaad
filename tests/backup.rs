//! Backups and restores: a restore answers every query as the store did at the backup's cut,
//! taken alone or while a writer goes on; a damaged or truncated file restores nothing; a
//! person forgotten after the backup does not come back with `--suppressions`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use idgraph::{
    BackupOptions, Cause, Config, Error, Identity, Op, Properties, RestoreOptions, Store,
    SuppressionList, Value,
};
use proptest::prelude::*;

const IDS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "guest",
    "zed",
    "Yq3xGn7Kb2TtLmPc9RsW=",
];
const EVENTS: &[&str] = &["Signed Up", "Viewed", "Paid"];

fn ident(i: usize) -> Identity {
    Identity::new(IDS[i]).unwrap()
}

#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    Batch(Vec<Op>),
    Unalias(usize, usize),
    Forget(usize),
    Unsuppress(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let n = IDS.len();
    prop_oneof![
        3 => (0..n, 0..n, 0..9i64).prop_map(|(a, b, at)| Op::alias(ident(a), ident(b), at, Cause::Api)),
        4 => (0..n, 0..EVENTS.len(), 0..3i64, 0..9i64).prop_map(|(i, e, x, at)| {
            let mut p = Properties::new();
            p.insert("n", Value::from(x)).unwrap();
            Op::record(ident(i), EVENTS[e], p, at)
        }),
        2 => (0..n, 0..3i64, 0..9i64).prop_map(|(i, x, at)| {
            let mut p = Properties::new();
            p.insert("plan", Value::from(x)).unwrap();
            Op::set(ident(i), p, at)
        }),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    let n = IDS.len();
    prop_oneof![
        10 => arb_op().prop_map(Step::Op),
        2 => proptest::collection::vec(arb_op(), 1..5).prop_map(Step::Batch),
        1 => (0..n, 0..n).prop_map(|(a, b)| Step::Unalias(a, b)),
        1 => (0..n).prop_map(Step::Forget),
        1 => (0..n).prop_map(Step::Unsuppress),
    ]
}

fn apply(s: &Store, step: &Step) {
    match step {
        Step::Op(op) => {
            s.apply(op.clone()).unwrap();
        }
        Step::Batch(ops) => {
            s.apply_batch(ops).unwrap();
        }
        Step::Unalias(a, b) => {
            s.unalias(IDS[*a], IDS[*b]).unwrap();
        }
        Step::Forget(i) => {
            s.forget(IDS[*i]).unwrap();
        }
        Step::Unsuppress(i) => {
            s.unsuppress(IDS[*i]).unwrap();
        }
    }
}

/// Every answer the store gives: each ID's person, canonical ID, events, properties, links
/// and explain chains with every other ID; the refusals, hubs, stats (but for bytes on disk),
/// the exports and the suppressions.
fn answers(s: &Store) -> String {
    let mut out = String::new();
    for a in IDS {
        out += &format!(
            "{a}: {:?} {:?} {:?} {:?} {:?} {}\n",
            s.resolve(a).unwrap(),
            s.canonical(a).unwrap(),
            s.events(a).unwrap(),
            s.properties(a).unwrap(),
            s.links(a).unwrap(),
            s.is_suppressed(a),
        );
        for b in IDS {
            out += &format!("  {b}: {:?}\n", s.explain(a, b).ok());
        }
    }
    let mut stats = s.stats().unwrap();
    stats.disk_bytes = 0;
    out += &format!("{:?}\n{stats:?}\n", s.refusals().unwrap());
    let hubs = s.hubs(5).unwrap();
    out += &format!("{:?}\n", serde_json::to_string(&hubs).unwrap());
    s.for_each_id(|id, p, at| {
        out += &format!("id {id} {p} {at}\n");
        Ok(())
    })
    .unwrap();
    s.for_each_event(|e| {
        out += &format!("{e:?}\n");
        Ok(())
    })
    .unwrap();
    out + &format!("{:?}", s.suppressions())
}

fn restored(backup: &[u8], dir: &Path, opts: &RestoreOptions) -> Store {
    let dest = dir.join(format!("restored-{}", rand::random::<u32>()));
    idgraph::restore(backup, "the backup", &Config::new(&dest), opts, &|_| {}).unwrap();
    let s = Config::new(&dest).open().unwrap();
    let v = s.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    s
}

fn small_frames() -> BackupOptions {
    BackupOptions {
        frame_bytes: 64,
        ..BackupOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random ops, a backup after `cut` of them, more ops: the restore answers as the store
    /// did at the cut.
    #[test]
    fn a_restore_answers_as_the_store_did_at_the_cut(
        steps in proptest::collection::vec(arb_step(), 1..40),
        cut in 0usize..40,
        reopen in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut s = Store::open(&path).unwrap();
        let cut = cut.min(steps.len());
        for st in &steps[..cut] {
            apply(&s, st);
        }
        if reopen {
            // A store opened from its graph index, not yet loaded.
            drop(s);
            s = Store::open(&path).unwrap();
        }
        let mut file = Vec::new();
        s.backup(&mut file, &small_frames(), &|_| {}).unwrap();
        let at_cut = answers(&s);
        for st in &steps[cut..] {
            apply(&s, st);
        }
        let r = restored(&file, dir.path(), &RestoreOptions::default());
        prop_assert_eq!(answers(&r), at_cut);
    }
}

/// A writer applies random steps while a backup (of small frames, slowed down) runs: the
/// restore equals the store after some prefix of the steps, one that holds every step done
/// before the backup began.
#[test]
fn a_backup_taken_while_writing_is_a_prefix_of_the_writes() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    });
    // Across the cases, writes must have landed during backups (or the test shows nothing).
    let kept = AtomicUsize::new(0);
    let strategy = (
        proptest::collection::vec(arb_step(), 40..80),
        proptest::collection::vec(arb_step(), 60..120),
    );
    runner
        .run(&strategy, |(before, during)| {
            let dir = tempfile::tempdir().unwrap();
            let s = Arc::new(Store::open(dir.path().join("store")).unwrap());
            for st in &before {
                apply(&s, st);
            }
            // The answers after each step the writer applies (index 0: before any).
            let prefixes = Arc::new(parking_lot::Mutex::new(vec![answers(&s)]));
            let started = Arc::new(AtomicBool::new(false));
            // Steps the writer has begun: the backup may hold the last one begun.
            let begun = Arc::new(AtomicUsize::new(0));
            let writer = {
                let (s, prefixes, started, begun) =
                    (s.clone(), prefixes.clone(), started.clone(), begun.clone());
                std::thread::spawn(move || {
                    for st in &during {
                        begun.fetch_add(1, Ordering::SeqCst);
                        apply(&s, st);
                        let a = answers(&s);
                        prefixes.lock().push(a);
                        started.store(true, Ordering::SeqCst);
                    }
                })
            };
            while !started.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            let lo = prefixes.lock().len() - 1;
            let mut file = Vec::new();
            let rep = s
                .backup(&mut file, &small_frames(), &|_| {
                    std::thread::sleep(std::time::Duration::from_micros(300))
                })
                .unwrap();
            let hi = begun.load(Ordering::SeqCst);
            kept.fetch_add(rep.preserved as usize, Ordering::SeqCst);
            writer.join().unwrap();
            let r = restored(&file, dir.path(), &RestoreOptions::default());
            let got = answers(&r);
            let all = prefixes.lock();
            let found = (lo..=hi).find(|&k| all[k] == got);
            // On failure: where the restore differs from each candidate.
            let diff = |k: usize| {
                all[k]
                    .lines()
                    .zip(got.lines())
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| format!("after {k} steps: {a}\n   restored: {b}"))
                    .unwrap_or_default()
            };
            prop_assert!(
                found.is_some(),
                "the restore is none of the stores after steps {lo}..={hi} (kept {} keys):\n{}",
                rep.preserved,
                (lo..=hi).map(diff).collect::<Vec<_>>().join("\n")
            );
            Ok(())
        })
        .unwrap();
    assert!(
        kept.load(Ordering::SeqCst) > 0,
        "no write landed during a backup"
    );
}

/// Writes during a backup keep old values for it (the cut is not just the moment it ended).
#[test]
fn writes_during_a_backup_are_not_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(dir.path().join("store")).unwrap());
    for i in 0..300 {
        s.apply(Op::record(
            ident(i % IDS.len()),
            "Viewed",
            Properties::new(),
            i as i64,
        ))
        .unwrap();
    }
    let at_cut = answers(&s);
    let once = std::sync::Once::new();
    let mut file = Vec::new();
    let rep = s
        .backup(&mut file, &small_frames(), &|_| {
            once.call_once(|| {
                // From another thread, as a server's writer would: the backup holds no lock.
                let s = s.clone();
                std::thread::spawn(move || {
                    for (i, id) in IDS.iter().enumerate() {
                        s.apply(Op::record(ident(i), "Paid", Properties::new(), 100))
                            .unwrap();
                        s.forget(id).unwrap();
                    }
                })
                .join()
                .unwrap();
            })
        })
        .unwrap();
    assert!(rep.preserved > 0, "{rep:?}");
    let r = restored(&file, dir.path(), &RestoreOptions::default());
    assert_eq!(answers(&r), at_cut);
}

fn sample_backup(dir: &Path) -> Vec<u8> {
    let s = Store::open(dir.join("store")).unwrap();
    for i in 0..60 {
        let mut p = Properties::new();
        p.insert("n", Value::from(i as i64)).unwrap();
        s.apply(Op::record(ident(i % IDS.len()), EVENTS[i % 3], p, i as i64))
            .unwrap();
        s.apply(Op::alias(
            ident(i % 4),
            ident(4 + i % 3),
            i as i64,
            Cause::Api,
        ))
        .unwrap();
    }
    let mut file = Vec::new();
    s.backup(
        &mut file,
        &BackupOptions {
            frame_bytes: 512,
            ..BackupOptions::default()
        },
        &|_| {},
    )
    .unwrap();
    file
}

fn assert_nothing_restored(file: &[u8], dir: &Path, what: &str) {
    let dest = dir.join("dest");
    match idgraph::restore(
        file,
        "b.backup",
        &Config::new(&dest),
        &RestoreOptions::default(),
        &|_| {},
    ) {
        Err(Error::Backup(m)) => assert!(m.starts_with("b.backup: byte "), "{what}: {m}"),
        other => panic!("{what}: {other:?}"),
    }
    assert!(!dest.exists(), "{what}: the destination was created");
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "{what}: something was left beside it"
    );
}

/// Cut short anywhere, one byte changed anywhere, bytes added after the end: restore fails
/// with `damaged backup` naming the byte, and nothing is created.
#[test]
fn a_damaged_or_truncated_backup_restores_nothing() {
    let src = tempfile::tempdir().unwrap();
    let file = sample_backup(src.path());
    assert!(file.len() > 1000, "{} bytes", file.len());
    let dir = tempfile::tempdir().unwrap();
    let step = (file.len() / 150).max(1);
    for at in (0..file.len()).step_by(step).chain([file.len() - 1]) {
        assert_nothing_restored(&file[..at], dir.path(), &format!("cut at {at}"));
        let mut bad = file.clone();
        bad[at] ^= 0x10;
        assert_nothing_restored(&bad, dir.path(), &format!("byte {at} changed"));
    }
    let mut longer = file.clone();
    longer.push(0);
    assert_nothing_restored(&longer, dir.path(), "a byte added");
    assert_nothing_restored(b"not a backup at all", dir.path(), "not a backup");
    // Whole, it restores.
    restored(&file, dir.path(), &RestoreOptions::default());
}

/// The restore refuses a destination that exists, and leaves it as it was.
#[test]
fn a_restore_never_writes_into_an_existing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample_backup(dir.path());
    let dest = dir.path().join("taken");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("mine"), b"keep").unwrap();
    let e = idgraph::restore(
        &file[..],
        "b",
        &Config::new(&dest),
        &RestoreOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("exists"), "{e}");
    assert_eq!(std::fs::read(dest.join("mine")).unwrap(), b"keep");
}

fn suppressions_of(s: &Store, dir: &Path) -> SuppressionList {
    let (key, hashes) = s.suppressions().unwrap();
    let mut text = format!("{}\n", serde_json::json!({ "key": key }));
    for h in hashes {
        text += &format!("{}\n", serde_json::json!({ "suppressed": h }));
    }
    let p = dir.join(format!("suppressions-{}.jsonl", rand::random::<u32>()));
    std::fs::write(&p, text).unwrap();
    SuppressionList::read(&p).unwrap().unwrap()
}

/// Forget after the backup (the first forget of the store, so the backup holds no secret;
/// then a second one, so it does), restore with the live store's suppressions: the persons
/// are not there, stay suppressed, and no byte of them is in the restored directory.
#[test]
fn a_person_forgotten_after_the_backup_does_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("store")).unwrap();
    let victim = "victim.person@example.com";
    let other = "other.person@example.com";
    for (i, who) in [victim, other, "keeper@example.com"].iter().enumerate() {
        let id = Identity::new(*who).unwrap();
        let anon = Identity::new(format!("anon{i}")).unwrap();
        s.apply(Op::alias(anon.clone(), id.clone(), 1, Cause::Identify))
            .unwrap();
        let mut p = Properties::new();
        p.insert("secret_note", Value::from(format!("note of {who}")))
            .unwrap();
        s.apply(Op::record(anon, "Viewed Secret Page", p, 2))
            .unwrap();
    }
    let mut first = Vec::new();
    s.backup(&mut first, &BackupOptions::default(), &|_| {})
        .unwrap();
    s.forget(victim).unwrap().unwrap();
    let mut second = Vec::new();
    s.backup(&mut second, &BackupOptions::default(), &|_| {})
        .unwrap();
    s.forget(other).unwrap().unwrap();
    let list = suppressions_of(&s, dir.path());
    for file in [&first, &second] {
        let dest = dir.path().join(format!("r{}", rand::random::<u32>()));
        let opts = RestoreOptions {
            suppressions: Some(list.clone()),
            verify: true,
        };
        let rep = idgraph::restore(&file[..], "b", &Config::new(&dest), &opts, &|_| {}).unwrap();
        assert!(rep.verified);
        let r = Store::open(&dest).unwrap();
        for gone in [victim, other, "anon0", "anon1"] {
            assert_eq!(r.resolve(gone).unwrap(), None, "{gone}");
            assert!(r.is_suppressed(gone), "{gone}");
        }
        assert!(r.resolve("keeper@example.com").unwrap().is_some());
        // Data naming them is still dropped.
        r.apply(Op::record(
            Identity::new(victim).unwrap(),
            "Came Back",
            Properties::new(),
            3,
        ))
        .unwrap();
        assert_eq!(r.resolve(victim).unwrap(), None);
        drop(r);
        for needle in [victim, other, "note of victim", "note of other"] {
            let held = common::files_holding(&dest, needle.as_bytes());
            assert!(held.is_empty(), "{needle:?} is in {held:?}");
        }
    }
}

/// Suppressions of another store are refused, and nothing is restored.
#[test]
fn suppressions_of_another_store_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("a")).unwrap();
    s.apply(Op::record(ident(0), "Viewed", Properties::new(), 1))
        .unwrap();
    s.forget(IDS[0]).unwrap();
    let mut file = Vec::new();
    s.backup(&mut file, &BackupOptions::default(), &|_| {})
        .unwrap();
    let t = Store::open(dir.path().join("b")).unwrap();
    t.apply(Op::record(ident(1), "Viewed", Properties::new(), 1))
        .unwrap();
    t.forget(IDS[1]).unwrap();
    let opts = RestoreOptions {
        suppressions: Some(suppressions_of(&t, dir.path())),
        verify: false,
    };
    let dest = dir.path().join("dest");
    let e = idgraph::restore(&file[..], "b", &Config::new(&dest), &opts, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("another store"), "{e}");
    assert!(!dest.exists());
}

// ---- from a running server -----------------------------------------------------------------

const ADMIN: &str = "backup-admin-token";

fn idgraph(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .args(args)
        .env_remove("IDGRAPH_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A store of some size, so that a backup takes long enough for tracking to land during it.
fn populated(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("live");
    let s = Store::open(&path).unwrap();
    let ops: Vec<Op> = (0..40_000)
        .map(|i| {
            let mut p = Properties::new();
            p.insert(
                "page",
                Value::from(format!("/history/{i}/{}", "x".repeat(40))),
            )
            .unwrap();
            Op::record(
                Identity::new(format!("old-visitor-{}", i % 9000)).unwrap(),
                "Viewed",
                p,
                i,
            )
        })
        .collect();
    for chunk in ops.chunks(5000) {
        s.apply_batch(chunk).unwrap();
    }
    path
}

/// Tracking traffic (16 clients) during `idgraph backup --from`: no request fails, and every
/// request acknowledged before the backup began is in the restored store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_tracking_load_holds_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = populated(dir.path());
    let server =
        common::server::Server::start(&db, &["--admin-token", ADMIN, "--client-write-rate", "0"]);
    let base = server.base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    // (visitor, acknowledged at) per client; failures counted.
    let failures = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    let t0 = std::time::Instant::now();
    for c in 0..16 {
        let (base, stop, failures) = (base.clone(), stop.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let who = format!("live-{c}-{i}");
                let url = format!("{base}/e?_k=demo&_p={who}&_n=Viewed&_t={}", 1_000 + i);
                match http.get(&url).send().await {
                    Ok(r) if r.status().as_u16() == 200 => acked.push((who, t0.elapsed())),
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let began = t0.elapsed();
    let out = dir.path().join("live.backup");
    let (b, o) = (base.clone(), out.clone());
    let backup = tokio::task::spawn_blocking(move || {
        idgraph(&[
            "backup",
            o.to_str().unwrap(),
            "--from",
            &b,
            "--admin-token",
            ADMIN,
            "--json",
        ])
    })
    .await
    .unwrap();
    let ended = t0.elapsed();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    let report: serde_json::Value = serde_json::from_str(&ok(backup)).unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "tracking requests failed"
    );
    let during = acked
        .iter()
        .filter(|(_, at)| *at > began && *at < ended)
        .count();
    assert!(during > 0, "no request was acknowledged during the backup");
    // The metrics count it.
    let m = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("idgraph_backups_total 1\n"), "{m}");
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(
        m.contains(&format!("idgraph_last_backup_bytes {size}\n")),
        "{m}"
    );
    drop(server);
    let restored_db = dir.path().join("restored");
    ok(idgraph(&[
        "--db",
        restored_db.to_str().unwrap(),
        "restore",
        out.to_str().unwrap(),
        "--verify",
    ]));
    let r = Store::open(&restored_db).unwrap();
    let mut missing = Vec::new();
    let mut after = 0;
    for (who, at) in &acked {
        let held = !r.events(who).unwrap().is_empty();
        if *at < began && !held {
            missing.push(who.clone());
        }
        after += usize::from(*at > ended && held);
    }
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, missing: {missing:?}"
    );
    assert_eq!(
        after, 0,
        "requests acknowledged after the backup ended are in it"
    );
    assert!(r.stats().unwrap().ids >= 9000);
    assert!(report["entries"].as_u64().unwrap() > 0);
}

/// The admin token is required; a wrong one is 401 and writes no file.
#[test]
fn a_backup_from_a_server_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::server::Server::start(&dir.path().join("s"), &["--admin-token", ADMIN]);
    let out = dir.path().join("b.backup");
    let o = out.to_str().unwrap();
    let wrong = idgraph(&["backup", o, "--from", &server.base, "--admin-token", "nope"]);
    assert_eq!(wrong.status.code(), Some(3));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("401"), "{err}");
    assert!(!out.exists() && !dir.path().join("b.backup.partial").exists());
    // The store itself is the server's: a local backup says how to take one.
    let held = idgraph(&["--db", server.db.to_str().unwrap(), "backup", o]);
    assert_eq!(held.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&held.stderr).contains("--from http://"));
    let none = idgraph(&["backup", o, "--from", &server.base]);
    assert_eq!(none.status.code(), Some(2));
    ok(idgraph(&[
        "backup",
        o,
        "--from",
        &server.base,
        "--admin-token",
        ADMIN,
    ]));
    assert!(out.exists());
}

/// `serve --backup-dir D --backup-every 1s --backup-keep 2`: backups land on schedule, the
/// oldest are deleted, each restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let server = common::server::Server::start(
        &dir.path().join("s"),
        &[
            "--backup-dir",
            backups.to_str().unwrap(),
            "--backup-every",
            "1s",
            "--backup-keep",
            "2",
        ],
    );
    let t = std::time::Instant::now();
    let url = format!("{}/metrics", server.base);
    let metric = |name: &str| {
        let (url, name) = (url.clone(), format!("{name} "));
        async move {
            let m = reqwest::get(url).await.unwrap().text().await.unwrap();
            m.lines()
                .find_map(|l| l.strip_prefix(&name))
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap()
        }
    };
    while metric("idgraph_backups_total").await < 3 {
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "too slow");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(metric("idgraph_last_backup_timestamp_seconds").await > 1_700_000_000);
    assert_eq!(metric("idgraph_backups_failed_total").await, 0);
    drop(server);
    let mut names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() == 2 || names.len() == 3, "{names:?}"); // one may be in progress
    for n in names.iter().filter(|n| n.ends_with(".backup")) {
        assert!(n.starts_with("idgraph-2") && n.len() == "idgraph-20261206T070000Z.backup".len());
        let dest = dir.path().join(format!("r-{n}"));
        ok(idgraph(&[
            "--db",
            dest.to_str().unwrap(),
            "restore",
            backups.join(n).to_str().unwrap(),
        ]));
    }
}

/// The command line end to end: `backup` of a store not in use, `forget`, `export
/// suppressions`, `restore --suppressions --json` (also from standard input), and its errors:
/// an existing output, a damaged file, a bad suppressions line (`FILE:LINE`).
#[test]
fn the_command_line_backs_up_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let db = p("live");
    for (a, b) in [
        ("anon1", "victim@example.com"),
        ("anon2", "keeper@example.com"),
    ] {
        ok(idgraph(&["--db", &db, "alias", a, b]));
        ok(idgraph(&[
            "--db",
            &db,
            "record",
            a,
            "Viewed Secret",
            "note=private-note",
        ]));
    }
    let report: serde_json::Value =
        serde_json::from_str(&ok(idgraph(&["--db", &db, "backup", &p("b1"), "--json"]))).unwrap();
    assert!(report["entries"].as_u64().unwrap() > 4, "{report}");
    let again = idgraph(&["--db", &db, "backup", &p("b1")]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    ok(idgraph(&[
        "--db",
        &db,
        "forget",
        "victim@example.com",
        "--yes",
    ]));
    std::fs::write(
        p("s.jsonl"),
        ok(idgraph(&["--db", &db, "export", "suppressions"])),
    )
    .unwrap();
    let restored: serde_json::Value = serde_json::from_str(&ok(idgraph(&[
        "--db",
        &p("r1"),
        "restore",
        &p("b1"),
        "--suppressions",
        &p("s.jsonl"),
        "--verify",
        "--json",
    ])))
    .unwrap();
    assert_eq!(restored["forgotten"], 1, "{restored}");
    assert_eq!(restored["verified"], true, "{restored}");
    let gone = idgraph(&["--db", &p("r1"), "resolve", "anon1"]);
    assert_eq!(
        gone.status.code(),
        Some(1),
        "the forgotten person came back"
    );
    ok(idgraph(&["--db", &p("r1"), "resolve", "anon2"]));
    assert!(common::files_holding(dir.path().join("r1").as_path(), b"victim@example").is_empty());
    // From standard input, without suppressions: the person as at the cut.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .args(["--db", &p("r2"), "restore", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        &std::fs::read(p("b1")).unwrap(),
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let back = ok(idgraph(&["--db", &p("r2"), "resolve", "anon1", "--json"]));
    assert!(back.contains("victim@example.com"), "{back}");
    // A damaged file: exit 2, the byte named, nothing created.
    let mut bytes = std::fs::read(p("b1")).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(p("bad"), &bytes).unwrap();
    let bad = idgraph(&["--db", &p("r3"), "restore", &p("bad")]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("damaged backup") && err.contains("byte "),
        "{err}"
    );
    assert!(!dir.path().join("r3").exists());
    // A bad line of the suppressions file: FILE:LINE and why.
    std::fs::write(p("s2.jsonl"), "{\"key\": \"00\"}\n").unwrap();
    let bad = idgraph(&[
        "--db",
        &p("r4"),
        "restore",
        &p("b1"),
        "--suppressions",
        &p("s2.jsonl"),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("s2.jsonl:1: the key is not 64 hex digits"),
        "{err}"
    );
    assert!(!dir.path().join("r4").exists());
}

/// A suppressions file nobody checked: every bad line is `FILE:LINE` and why, read within a
/// bound.
#[test]
fn a_bad_suppressions_file_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let key = format!("{{\"key\": \"{}\"}}\n", "ab".repeat(32));
    for (text, why) in [
        (
            "x".repeat(5000),
            "s.jsonl:1: a line longer than 1024 bytes".to_string(),
        ),
        (
            "{\"suppressed\": \"00\"}\n".into(),
            "s.jsonl:1: the first line must be".into(),
        ),
        (
            format!("{key}{{\"suppressed\": \"zz\"}}\n"),
            "s.jsonl:2: a suppression is not 32 hex".into(),
        ),
        (
            format!("{key}\n{key}"),
            "s.jsonl:3: expected {\"suppressed\": HEX}".into(),
        ),
        (format!("{key}[1,"), "s.jsonl:2: not JSON".into()),
    ] {
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, &text).unwrap();
        let e = SuppressionList::read(&p).unwrap_err().to_string();
        assert!(e.contains(&why), "{e} (wanted {why})");
    }
    std::fs::write(dir.path().join("empty"), "").unwrap();
    assert!(
        SuppressionList::read(&dir.path().join("empty"))
            .unwrap()
            .is_none()
    );
    let p = dir.path().join("ok");
    std::fs::write(
        &p,
        format!("{key}{{\"suppressed\": \"{}\"}}\n", "0f".repeat(16)),
    )
    .unwrap();
    assert_eq!(SuppressionList::read(&p).unwrap().unwrap().len(), 1);
}
