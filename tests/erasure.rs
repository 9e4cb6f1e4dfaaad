//! Erasure that is physical, and sticks. After `forget` and `compact`, no file in the store's
//! directory holds a byte of the forgotten person (its IDs, the names and values of its events
//! and properties); and no later data brings it back: an import of the same file renamed, with
//! `--reimport`, an alias, a tracking request. `unsuppress` lifts the suppression.

mod common;

use std::path::Path;
use std::process::Command;

use common::files_holding;
use common::server::{Server, api};
use idgraph::{AliasOutcome, Cause, Config, Identity, Op, Outcome, Properties, RefusalReason};

const VICTIM: &str = "victim.person@example.com";
const ANON: &str = "Vq3xGn7Kb2TtLmPc9RsWdYfHzJ0=";
const CARD: &str = "4111111111119876";
const SECRET_EVENT: &str = "Viewed Divorce Lawyers";
const SECRET_PROP: &str = "ssn_last_four";

fn idgraph(db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idgraph"));
    c.arg("--db").arg(db);
    c
}

fn run(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The body of a `GET`.
async fn text(c: &reqwest::Client, url: &str) -> String {
    c.get(url).send().await.unwrap().text().await.unwrap()
}

/// The victim's lines, and a crowd around it, as a KISSmetrics export.
fn export_lines() -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{{\"_p\":\"{ANON}\",\"_t\":10,\"_n\":\"{SECRET_EVENT}\",\"{SECRET_PROP}\":\"0042\"}}\n"
    ));
    s.push_str(&format!(
        "{{\"_p\":\"{VICTIM}\",\"_t\":11,\"_p2\":\"{ANON}\"}}\n"
    ));
    s.push_str(&format!(
        "{{\"_p\":\"{VICTIM}\",\"_t\":12,\"_n\":\"Paid\",\"card\":\"{CARD}\"}}\n"
    ));
    for k in 0..500 {
        s.push_str(&format!(
            "{{\"_p\":\"crowd{k}@example.org\",\"_t\":{k},\"_n\":\"Viewed\",\"n\":{k}}}\n"
        ));
    }
    s
}

fn secrets() -> [&'static str; 5] {
    [VICTIM, ANON, CARD, SECRET_EVENT, SECRET_PROP]
}

/// A store in a new directory with the export imported: (its directory, the store, the file).
fn imported() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    let file = dir.path().join("export.json");
    std::fs::write(&file, export_lines()).unwrap();
    run(idgraph(&db).arg("import").arg(&file));
    (dir, db, file)
}

#[test]
fn forget_then_compact_leaves_no_byte_of_the_person() {
    let (dir, db, _) = imported();
    // Online writes too: a record of its own, and a property on the victim's record.
    run(idgraph(&db).args(["set", VICTIM, &format!("card_backup={CARD}")]));
    run(idgraph(&db).args(["record", ANON, SECRET_EVENT, "again=1"]));
    for s in secrets() {
        assert!(
            !files_holding(&db, s.as_bytes()).is_empty(),
            "{s} is on disk before"
        );
    }
    run(idgraph(&db).args(["forget", VICTIM, "--yes"]));
    let after_forget: Vec<&str> = secrets()
        .into_iter()
        .filter(|s| !files_holding(&db, s.as_bytes()).is_empty())
        .collect();
    // sled is log-structured: forget alone leaves old values in old segments.
    assert!(
        !after_forget.is_empty(),
        "forget alone left nothing (the test would not show what compact does)"
    );
    let out = run(idgraph(&db).arg("compact"));
    assert!(out.contains("compacted"), "{out}");
    for s in secrets() {
        let hits = files_holding(&db, s.as_bytes());
        assert!(
            hits.is_empty(),
            "{s} is still on disk after compact: {hits:?}"
        );
    }
    // The rest is whole.
    let store = Config::new(&db).open().unwrap();
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(store.events("crowd7@example.org").unwrap().len(), 1);
    assert!(store.resolve(VICTIM).unwrap().is_none());
    assert!(!dir.path().join("store.compact-old").exists());
    assert!(!dir.path().join("store.compact-new").exists());
}

#[test]
fn a_forgotten_person_does_not_come_back() {
    let (dir, db, file) = imported();
    run(idgraph(&db).args(["forget", ANON, "--yes"]));
    // The same file renamed: a new file to the importer, the same people.
    let renamed = dir.path().join("renamed.json");
    std::fs::rename(&file, &renamed).unwrap();
    let out = run(idgraph(&db).arg("import").arg(&renamed).arg("--json"));
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rep["suppressed"], 3, "{out}");
    run(idgraph(&db).arg("import").arg(&renamed).arg("--reimport"));
    let store = Config::new(&db).open().unwrap();
    for id in [VICTIM, ANON] {
        assert!(store.resolve(id).unwrap().is_none(), "{id} came back");
    }
    assert!(store.is_suppressed(VICTIM));
    assert_eq!(store.events("crowd3@example.org").unwrap().len(), 1);
    // An alias to a suppressed ID is refused with its own reason, and names neither.
    let newcomer = Identity::new("newcomer@example.com").unwrap();
    let out = store
        .apply(Op::alias(
            newcomer.clone(),
            Identity::new(VICTIM).unwrap(),
            50,
            Cause::Identify,
        ))
        .unwrap();
    assert_eq!(
        out,
        Outcome::Alias(AliasOutcome::Refused(RefusalReason::Suppressed))
    );
    assert!(!out.refusal().unwrap().contains(VICTIM));
    let back = || {
        Op::record(
            Identity::new(VICTIM).unwrap(),
            "Back",
            Properties::new(),
            60,
        )
    };
    assert_eq!(store.apply(back()).unwrap(), Outcome::Suppressed);
    assert!(store.resolve(VICTIM).unwrap().is_none());
    assert!(
        store
            .refusals()
            .unwrap()
            .iter()
            .all(|r| r.a != VICTIM && r.b != VICTIM)
    );
    // Lifted: the ID is taken again.
    assert!(store.unsuppress(VICTIM).unwrap());
    assert!(!store.unsuppress(VICTIM).unwrap());
    store.apply(back()).unwrap();
    assert_eq!(store.events(VICTIM).unwrap().len(), 1);
    // Still suppressed: the other ID of the person (each forgotten ID is suppressed).
    assert!(store.is_suppressed(ANON));
    drop(store);
    // The list leaves the store as keyed hashes, never the IDs.
    let out = run(idgraph(&db).args(["export", "suppressions"]));
    assert_eq!(out.lines().count(), 2, "{out}"); // the key, ANON
    assert!(!out.contains(ANON) && !out.contains(VICTIM));
}

#[tokio::test]
async fn a_tracking_request_does_not_bring_a_forgotten_person_back() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("db"), &["--admin-token", "admin-secret"]);
    let c = reqwest::Client::new();
    let b = &srv.base;
    let id = "forgotten%40example.com";
    let get = |u: String| {
        let c = c.clone();
        async move { c.get(u).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(format!("{b}/e?_k=demo&_p={id}&_n=Visit")).await, 200);
    let del = c
        .delete(format!("{b}/api/people/{id}"))
        .header("Authorization", "Bearer admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    // The request log (where the explorer's recent IDs come from) forgets it too.
    let (_, log) = api(&c, &format!("{b}/api/requests")).await;
    assert!(!log.contains("forgotten"), "{log}");
    assert_eq!(get(format!("{b}/e?_k=demo&_p={id}&_n=Again")).await, 200);
    assert_eq!(api(&c, &format!("{b}/api/people/{id}")).await.0, 404);
    let metrics = text(&c, &format!("{b}/metrics")).await;
    assert!(metrics.contains("idgraph_suppressed_total 1"), "{metrics}");
}

/// A running server erases within `--erase-within`: after a forget of the admin API, no file
/// of its store holds the person's bytes, while it goes on serving.
#[tokio::test]
async fn a_running_server_erases_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let srv = Server::start(
        &db,
        &["--admin-token", "admin-secret", "--erase-within", "1s"],
    );
    let c = reqwest::Client::new();
    let b = &srv.base;
    let get = |u: String| {
        let c = c.clone();
        async move { c.get(u).send().await.unwrap().status().as_u16() }
    };
    let victim = "erased.person%40example.com";
    for i in 0..20 {
        let u = format!("{b}/e?_k=demo&_p={victim}&_n=Secret+Visit&card={CARD}&i={i}");
        assert_eq!(get(u).await, 200);
        assert_eq!(get(format!("{b}/e?_k=demo&_p=stays{i}&_n=Kept")).await, 200);
    }
    let needle = b"erased.person@example.com";
    let del = c
        .delete(format!("{b}/api/people/{victim}"))
        .header("Authorization", "Bearer admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let t = std::time::Instant::now();
    while !files_holding(&db, needle).is_empty() || !files_holding(&db, CARD.as_bytes()).is_empty()
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "still on disk after {:?}: {:?}",
            t.elapsed(),
            files_holding(&db, needle)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // It goes on serving, with everything else.
    assert_eq!(get(format!("{b}/e?_k=demo&_p=after&_n=Later")).await, 200);
    let (st, body) = api(&c, &format!("{b}/api/people/stays7/events")).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("Kept"), "{body}");
    assert_eq!(api(&c, &format!("{b}/api/people/after")).await.0, 200);
    let metrics = text(&c, &format!("{b}/metrics")).await;
    assert!(!metrics.contains("idgraph_erasures_total 0"), "{metrics}");
}
