//! The `idgraph` binary: each command's output (text and `--json`), exit statuses (0 ok,
//! 1 unknown ID, 2 bad arguments), `--db` / `IDGRAPH_DB`, and that failed commands and queries
//! on a missing store write nothing.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

fn run(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("IDGRAPH_DB")
        .output()
        .unwrap()
}

fn ok_json(db: &Path, args: &[&str]) -> Value {
    let out = run(db, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_session_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    let anon = "y75Fe33597qBqkR4obZZYV+wF3Y=";

    let out = run(
        &db,
        &[
            "record",
            anon,
            "Viewed Pricing",
            "page=/pricing",
            "--at",
            "100",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = ok_json(
        &db,
        &["alias", "bob@example.com", anon, "--json", "--at", "110"],
    );
    assert_eq!(v["outcome"], "joined");
    assert_eq!(v["size"], 2);
    let out = run(&db, &["alias", anon, "bob@example.com"]);
    assert!(
        stdout(&out).contains("already one person"),
        "{}",
        stdout(&out)
    );
    assert!(
        run(&db, &["set", "bob@example.com", "Plan=pro", "--at", "120"])
            .status
            .success()
    );

    assert_eq!(
        ok_json(&db, &["resolve", anon, "--json"]),
        json!({"person": "bob@example.com", "ids": [anon, "bob@example.com"]})
    );
    assert_eq!(
        ok_json(&db, &["events", "bob@example.com", "--json"]),
        json!([{"id": anon, "event": "Viewed Pricing", "at": 100,
                "properties": {"page": "/pricing"}}])
    );
    assert_eq!(
        ok_json(&db, &["props", anon, "--json"]),
        json!({"Plan": "pro", "page": "/pricing"})
    );
    let text = stdout(&run(&db, &["resolve", "bob@example.com"]));
    assert!(
        text.contains("person: bob@example.com") && text.contains(anon),
        "{text}"
    );

    // A refusal is an outcome: exit 0, says why.
    let out = run(&db, &["alias", "bob@example.com", "'null'"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("refused") && stdout(&out).contains("blocked"),
        "{}",
        stdout(&out)
    );

    let st = ok_json(&db, &["stats", "--json"]);
    assert_eq!(
        (st["ids"].as_u64(), st["persons"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        (st["events"].as_u64(), st["refused_merges"].as_u64()),
        (Some(1), Some(1))
    );
    let rep = ok_json(&db, &["verify", "--json"]);
    assert_eq!(rep["problem_count"], 0);
}

#[test]
fn unknown_ids_exit_1_and_missing_stores_stay_missing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never-created");
    for cmd in ["resolve", "events", "props"] {
        let out = run(&db, &[cmd, "nobody"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(
            stderr(&out).contains("unknown ID \"nobody\""),
            "{}",
            stderr(&out)
        );
    }
    assert!(run(&db, &["stats"]).status.success());
    assert!(run(&db, &["verify"]).status.success());
    assert!(!db.exists(), "a query created the store");

    assert!(run(&db, &["alias", "a", "b"]).status.success());
    assert_eq!(run(&db, &["resolve", "zed"]).status.code(), Some(1));
}

#[test]
fn bad_arguments_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    let long = "x".repeat(256);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["alias", "", "b"], "must not be empty"),
        (vec!["alias", "a", &long], "at most 255"),
        (vec!["record", "a\tb", "Viewed"], "control characters"),
        (vec!["record", "a", ""], "event name"),
        (vec!["set", "a", "novalue"], "not name=value"),
        (vec!["set", "a", "=v"], "property name"),
        (vec!["record", "a", "E", "--at", "soon"], "invalid value"),
        (vec!["resolve", ""], "must not be empty"),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, msg) in cases {
        let out = run(&db, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(msg), "{args:?}: {}", stderr(&out));
    }
    assert!(!db.exists(), "a failed command created the store");
}

#[test]
fn idgraph_db_names_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-env");
    let out = Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .args(["alias", "a", "b"])
        .env("IDGRAPH_DB", &db)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(db.exists());
    assert!(!dir.path().join("idgraph.db").exists());
    assert_eq!(
        ok_json(&db, &["resolve", "b", "--json"])["ids"],
        json!(["a", "b"])
    );
}
