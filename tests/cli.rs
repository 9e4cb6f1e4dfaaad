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

fn run_stdin(db: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const SIM: &str = r#"{"browser": "b1", "kmq": ["record", "Viewed", {"k": "v"}], "at": 10}
{"browser": "b1", "kmq": ["identify", "foo"]}
{"browser": "b2", "cookies": {"km_ai": "AQEBAQEBAQEBAQEBAQEBAQEBAQE="}, "submit": {"event": "Signed Up", "fields": [
  {"name": "user[email]", "value": "a@b.c"}]}}
"#;

#[test]
fn simulate_replays_commands_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    // The submit line spans two lines on purpose: it is a bad line (not JSON).
    let out = run_stdin(&db, &["simulate", "-", "--json"], SIM);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("idgraph: -:3: not a valid line"),
        "{}",
        stderr(&out)
    );
    assert!(!db.exists(), "a failed simulate wrote the store");

    let good = SIM.replace("[\n  {", "[{");
    let file = dir.path().join("cmds.jsonl");
    std::fs::write(&file, &good).unwrap();
    let f = file.to_str().unwrap();
    let out = run(&db, &["simulate", f, "--json", "--dry-run", "--seed", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!db.exists(), "--dry-run wrote the store");
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[1]["km_ni"], "foo");
    assert_eq!(lines[1]["current"], "foo");
    let anon = lines[0]["km_ai"].as_str().unwrap();
    assert_eq!(anon.len(), 28);
    assert_eq!(
        lines[1]["requests"],
        json!([format!(
            "/a?_n=foo&_p={}&_k=demo&_t=11",
            anon.replace('/', "%2F")
                .replace('+', "%2B")
                .replace('=', "%3D")
        )])
    );
    assert_eq!(
        lines[2]["requests"],
        json!([
            "/a?_n=a%40b.c&_p=AQEBAQEBAQEBAQEBAQEBAQEBAQE%3D&_k=demo&_t=12",
            "/e?user_email=a%40b.c&_n=Signed%20Up&_k=demo&_p=a%40b.c&_t=12"
        ])
    );
    // The same seed gives the same anonymous IDs.
    let again = run(&db, &["simulate", f, "--json", "--dry-run", "--seed", "3"]);
    assert_eq!(stdout(&again), stdout(&out));

    let out = run(&db, &["simulate", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("KM.i()=foo"), "{}", stdout(&out));
    let p = ok_json(&db, &["resolve", "a@b.c", "--json"]);
    assert_eq!(p["ids"], json!(["a@b.c", "AQEBAQEBAQEBAQEBAQEBAQEBAQE="]));
    assert_eq!(
        ok_json(&db, &["resolve", "foo", "--json"])["ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn simulate_can_skip_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    let input = "{\"browser\":\"b\",\"kmq\":[\"alias\",\"x\",\"y\"]}\n{\"browser\":\"b\",\"kmq\":[\"fly\"]}\nnot json\n{\"browser\":\"b\",\"kmq\":[\"alias\",\"y\",\"z\"]}\n";
    let out = run_stdin(&db, &["simulate", "-", "--skip-invalid", "--json"], input);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("-:2: unknown command \"fly\"") && err.contains("-:3: not a valid line"),
        "{err}"
    );
    assert!(err.contains("skipped 2 bad lines"), "{err}");
    assert_eq!(stdout(&out).lines().count(), 2);
    assert_eq!(
        ok_json(&db, &["resolve", "z", "--json"])["ids"],
        json!(["x", "y", "z"])
    );
}

/// `explain`, `unalias`, `forget`, `refused`, `hubs`, `graph`.
#[test]
fn explain_unalias_forget_and_friends() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    let anon = "y75Fe33597qBqkR4obZZYV+wF3Y=";
    for (a, b, at) in [
        ("bob@x.example", anon, "100"),
        ("bob@x.example", "bob@work.example", "200"),
        ("carol", "carol2", "300"),
        ("bob@work.example", "guest", "400"),
    ] {
        assert!(run(&db, &["alias", a, b, "--at", at]).status.success());
    }
    let e = ok_json(&db, &["explain", anon, "bob@work.example", "--json"]);
    assert_eq!(
        e,
        json!({"same_person": true, "edges": [
            {"a": anon, "b": "bob@x.example", "cause": "api", "at": 100, "source": null},
            {"a": "bob@x.example", "b": "bob@work.example", "cause": "api", "at": 200, "source": null},
        ]})
    );
    let text = stdout(&run(&db, &["explain", "bob@work.example", anon]));
    assert!(text.contains("joined by 2 links"), "{text}");
    assert!(
        text.contains("1. bob@work.example ~ bob@x.example  (api on 1970-01-01 (t=200))"),
        "{text}"
    );
    let e = ok_json(&db, &["explain", anon, "carol", "--json"]);
    assert_eq!(e, json!({"same_person": false, "edges": []}));
    assert_eq!(
        run(&db, &["explain", anon, "nobody"]).status.code(),
        Some(1)
    );

    let r = ok_json(&db, &["refused", "--json"]);
    assert_eq!(r[0]["reason"], "blocked_id");
    assert_eq!(
        (r[0]["a"].as_str(), r[0]["b"].as_str()),
        (Some("bob@work.example"), Some("guest"))
    );
    let h = ok_json(&db, &["hubs", "--top", "1", "--json"]);
    assert_eq!(
        h,
        json!({"largest": [["bob@x.example", 3]], "most_linked": [["bob@x.example", 2]]})
    );

    let dot = stdout(&run(&db, &["graph", anon]));
    assert!(dot.starts_with("graph \"person bob@x.example\" {"), "{dot}");
    assert!(
        dot.contains(&format!("\"{anon}\" [shape=ellipse, style=dashed];")),
        "{dot}"
    );
    assert!(dot.contains("[label=\"api 1970-01-01\"]"), "{dot}");
    let svg_path = dir.path().join("p.svg");
    assert!(
        run(
            &db,
            &[
                "graph",
                anon,
                "--format",
                "svg",
                "-o",
                svg_path.to_str().unwrap()
            ]
        )
        .status
        .success()
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains("<svg") && svg.contains("bob@work.example"));

    // unalias: no direct link → exit 1, nothing changed.
    let out = run(&db, &["unalias", anon, "bob@work.example"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no direct link"), "{}", stderr(&out));
    assert_eq!(
        ok_json(&db, &["resolve", anon, "--json"])["ids"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let p = ok_json(
        &db,
        &["unalias", "bob@work.example", "bob@x.example", "--json"],
    );
    assert_eq!(p.as_array().unwrap().len(), 2);
    assert_eq!(
        ok_json(&db, &["resolve", "bob@work.example", "--json"])["ids"],
        json!(["bob@work.example"])
    );

    // forget: no terminal and no --yes → exit 2, nothing changed.
    let out = run(&db, &["forget", "carol"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--yes"));
    assert!(run(&db, &["resolve", "carol"]).status.success());
    let f = ok_json(&db, &["forget", "carol2", "--yes", "--json"]);
    assert_eq!(f["ids"], json!(["carol", "carol2"]));
    assert_eq!(run(&db, &["resolve", "carol"]).status.code(), Some(1));
    assert_eq!(
        run(&db, &["forget", "carol", "--yes"]).status.code(),
        Some(1)
    );
    assert!(run(&db, &["verify"]).status.success());
}

/// On a terminal, `forget` asks and only `yes` goes ahead (a pseudo-terminal via `script`).
#[test]
fn forget_asks_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no `script` (util-linux): skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    assert!(run(&db, &["alias", "dan", "dan2"]).status.success());
    let bin = env!("CARGO_BIN_EXE_idgraph");
    for (answer, gone) in [("no", false), ("yes", true)] {
        let cmd = format!("{bin} --db {} forget dan", db.display());
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        std::thread::sleep(std::time::Duration::from_millis(300));
        writeln!(child.stdin.as_mut().unwrap(), "{answer}").unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Type yes:"), "{text}");
        assert_eq!(out.status.success(), gone, "{answer}: {text}");
        assert_eq!(
            run(&db, &["resolve", "dan"]).status.success(),
            !gone,
            "{answer}"
        );
    }
}

#[test]
fn simulate_reads_lines_bounded_by_max_line_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s");
    let long = format!(
        "{{\"browser\":\"b\",\"kmq\":[\"record\",\"{}\"]}}\n",
        "x".repeat(5 << 20)
    );
    let input = format!("{long}{{\"browser\":\"b\",\"at\":1,\"kmq\":[\"record\",\"E\"]}}\n");
    let out = run_stdin(
        &db,
        &["simulate", "-", "--skip-invalid", "--dry-run"],
        &input,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "-:1: the line has {} bytes, more than the limit of 4194304 (max_line_bytes) (skipped)",
            long.len()
        )),
        "{err}"
    );
}
