//! Offline batch merging: the bulk path gives exactly what applying the same ops one at a time
//! gives (property test, also onto an existing store and with tiny memory budgets), and
//! `idgraph import` / `export` behave: round trips, strict-mode atomicity, skip mode, directory
//! order, CSV quoting, huge persons, duplicate lines, `_p`/`_p2` in either order, stdin.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use idgraph::{BulkOptions, Cause, Config, Identity, Op, Properties, Store, Value};
use proptest::prelude::*;

const IDS: &[&str] = &[
    "ann",
    "bob",
    "cy",
    "dee",
    "guest",
    "AQEBAQEBAQEBAQEBAQEBAQEBAQE=",
    "eve",
    "fay",
];

fn arb_op() -> impl Strategy<Value = Op> {
    let id = (0..IDS.len()).prop_map(|i| Identity::new(IDS[i]).unwrap());
    let props = proptest::collection::vec((0..3usize, 0..3i64), 0..3).prop_map(|v| {
        let mut p = Properties::new();
        for (n, x) in v {
            p.insert(["plan", "Plan", "tier"][n], Value::Int(x))
                .unwrap();
        }
        p
    });
    prop_oneof![
        3 => (id.clone(), id.clone(), 0..4i64).prop_map(|(a, b, t)| Op::alias(a, b, t, Cause::Import)),
        4 => (id.clone(), 0..3usize, props.clone(), 0..4i64)
            .prop_map(|(i, e, p, t)| Op::record(i, ["Viewed", "viewed", "Paid"][e], p, t)),
        2 => (id, props, 0..4i64).prop_map(|(i, p, t)| Op::set(i, p, t)),
    ]
}

/// Everything a user can ask about the IDs of the pool.
fn observe(s: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for id in IDS {
        out.push(format!("{id}: {:?}", s.resolve(id).unwrap()));
        let ev: Vec<_> = s
            .events(id)
            .unwrap()
            .into_iter()
            .map(|e| (e.id, e.event, e.at, e.properties))
            .collect();
        out.push(format!("{ev:?}"));
        let pr: Vec<_> = s
            .properties(id)
            .unwrap()
            .into_iter()
            .map(|p| (p.name.to_lowercase(), p.value, p.at))
            .collect();
        out.push(format!("{pr:?}"));
    }
    // The mapping export: every ID, its person, and when the store first saw it (read from
    // packed blocks for bulk-imported IDs).
    s.for_each_id(|id, person, first_seen| {
        out.push(format!("{id} -> {person} since {first_seen}"));
        Ok(())
    })
    .unwrap();
    let mut st = s.stats().unwrap();
    st.disk_bytes = 0;
    out.push(format!("{st:?}"));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Bulk on a store built one op at a time or by an earlier bulk import (whose records
    /// are packed), then ops one at a time on top (reading and replacing packed records),
    /// then a reopen: always the same as one op at a time throughout.
    #[test]
    fn bulk_equals_one_at_a_time(
        existing in proptest::collection::vec(arb_op(), 0..10),
        existing_in_bulk in any::<bool>(),
        ops in proptest::collection::vec(arb_op(), 1..40),
        after in proptest::collection::vec(arb_op(), 0..10),
        budget in prop_oneof![Just(1usize), Just(300), Just(1 << 20)],
        batch_keys in prop_oneof![Just(1usize), Just(7)],
        event_block_bytes in prop_oneof![Just(1usize), Just(64), Just(1024)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let open = || Config::new(dir.path()).max_person_size(4).open().unwrap();
        let one = Config::temporary().max_person_size(4).open().unwrap();
        let bulk = open();
        let opts = BulkOptions { batch_keys, memory_budget: budget, event_block_bytes };
        for op in &existing {
            one.apply(op.clone()).unwrap();
            if !existing_in_bulk {
                bulk.apply(op.clone()).unwrap();
            }
        }
        if existing_in_bulk {
            bulk.bulk_apply(&mut existing.clone(), opts).unwrap();
        }
        for op in &ops {
            one.apply(op.clone()).unwrap();
        }
        let rep = bulk.bulk_apply(&mut ops.clone(), opts).unwrap();
        prop_assert_eq!(rep.ops as usize, ops.len());
        prop_assert_eq!(observe(&bulk), observe(&one));
        prop_assert!(bulk.verify().unwrap().is_ok());
        for op in &after {
            prop_assert_eq!(one.apply(op.clone()).unwrap(), bulk.apply(op.clone()).unwrap());
        }
        prop_assert_eq!(observe(&bulk), observe(&one));
        bulk.flush().unwrap();
        drop(bulk);
        let bulk = open();
        prop_assert_eq!(observe(&bulk), observe(&one));
        prop_assert!(bulk.verify().unwrap().is_ok());
    }
}

fn idgraph(db: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut c = Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = c.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = c.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = idgraph(db, args, None);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small export: persons with anonymous IDs, a person of 3,000 IDs, aliases in both orders,
/// duplicates, out-of-order times.
fn sample() -> String {
    let mut s = String::new();
    for p in 0..200 {
        let named = format!("user{p}@example.com");
        s += &format!(
            "{{\"_p\":\"{named}\",\"_t\":{},\"_n\":\"Signed Up\",\"plan\":\"p{}\"}}\n",
            1000 + p,
            p % 3
        );
        for k in 0..p % 4 {
            let anon = format!("anon-{p}-{k}");
            s += &format!(
                "{{\"_p\":\"{anon}\",\"_t\":{},\"_n\":\"Viewed\",\"n\":{k}}}\n",
                900 + p
            );
            if k % 2 == 0 {
                s += &format!(
                    "{{\"_p\":\"{named}\",\"_t\":{},\"_p2\":\"{anon}\"}}\n",
                    1001 + p
                );
            } else {
                s += &format!(
                    "{{\"_p2\":\"{named}\",\"_p\":\"{anon}\",\"_t\":{}}}\n",
                    1001 + p
                );
            }
        }
        s += &format!(
            "{{\"_p\":\"{named}\",\"_t\":{},\"country\":\"NO\"}}\n",
            500 + p
        );
    }
    for k in 0..3000 {
        s += &format!("{{\"_p\":\"hub\",\"_t\":7,\"_p2\":\"hub-{k}\"}}\n");
    }
    let dup = "{\"_p\":\"hub\",\"_t\":8,\"_n\":\"Big\"}\n";
    s += dup;
    s += dup;
    s
}

fn persons(db: &Path) -> BTreeSet<Vec<String>> {
    let mut groups = std::collections::BTreeMap::<String, Vec<String>>::new();
    for line in ok(db, &["export", "mapping", "--format", "jsonl"]).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        groups
            .entry(v["person"].as_str().unwrap().to_owned())
            .or_default()
            .push(v["id"].as_str().unwrap().to_owned());
    }
    groups
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect()
}

#[test]
fn import_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("export.json");
    std::fs::write(&data, sample()).unwrap();
    let a = dir.path().join("a");
    let out = idgraph(&a, &["import", data.to_str().unwrap(), "--json"], None);
    assert!(out.status.success(), "{}", err(&out));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["events"], 200 + 300 + 2);
    assert_eq!(rep["skipped"], 0);
    let hub = ok(&a, &["resolve", "hub-17", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&hub).unwrap()["ids"]
            .as_array()
            .unwrap()
            .len(),
        3001
    );
    assert_eq!(
        ok(&a, &["events", "hub", "--json"])
            .matches("\"Big\"")
            .count(),
        1,
        "duplicate lines are one event"
    );

    // Re-importing the same file changes nothing.
    let before = ok(&a, &["stats", "--json"]);
    let out = idgraph(&a, &["import", data.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", err(&out));
    let after = ok(&a, &["stats", "--json"]);
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("disk_bytes"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&before), strip(&after));

    // Export (alias lines + de-aliased events), import into a new store: the same persons.
    let mapping = ok(&a, &["export", "mapping", "--format", "km-json"]);
    let events = ok(&a, &["export", "events"]);
    assert!(events.lines().all(|l| l.contains("\"_p_original\"")));
    let b = dir.path().join("b");
    let out = idgraph(&b, &["import", "-"], Some(&(mapping + &events)));
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(persons(&a), persons(&b));
    // Each person has the same events, under the same original IDs (`_p_original`).
    for id in ["user7@example.com", "anon-7-2", "hub-5"] {
        let ev = |db: &Path| {
            let v: serde_json::Value =
                serde_json::from_str(&ok(db, &["events", id, "--json"])).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["id"].to_string(),
                        e["event"].to_string(),
                        e["at"].to_string(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ev(&a), ev(&b), "events of {id}");
    }
    assert!(ok(&b, &["verify"]).contains("ok"));
}

#[test]
fn strict_import_writes_nothing_on_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s");
    ok(&db, &["alias", "x", "y"]);
    let before = ok(&db, &["export", "mapping"]);
    let mut data = sample();
    data += "{\"_p\":\"late\",\"_t\":1234567890123,\"_n\":\"E\"}\n";
    let f = dir.path().join("bad.json");
    std::fs::write(&f, &data).unwrap();
    let out = idgraph(&db, &["import", f.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let line = data.lines().count();
    assert!(
        err(&out).contains(&format!("bad.json:{line}: _t 1234567890123 is too large")),
        "{}",
        err(&out)
    );
    assert!(err(&out).contains("nothing was imported"), "{}", err(&out));
    assert_eq!(ok(&db, &["export", "mapping"]), before);
    assert!(ok(&db, &["stats"]).contains("events          0"));
}

#[test]
fn skip_mode_reports_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s");
    let mut data = String::new();
    for i in 0..30 {
        data += &format!("{{\"_p\":\"u{i}\",\"_t\":1,\"_n\":\"E\"}}\n");
        data += "{\"_p\":\"\",\"_t\":1,\"_n\":\"E\"}\n"; // bad: empty ID
    }
    data += "not json\n";
    let out = idgraph(
        &db,
        &["import", "-", "--skip-invalid", "--json"],
        Some(&data),
    );
    assert!(out.status.success(), "{}", err(&out));
    let e = err(&out);
    assert!(
        e.contains("-:2: _p: invalid ID \"\": an ID must not be empty (skipped)"),
        "{e}"
    );
    assert_eq!(e.matches("(skipped)").count(), 20, "{e}");
    assert!(e.contains("more bad lines skipped"), "{e}");
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (rep["skipped"].as_u64(), rep["events"].as_u64()),
        (Some(31), Some(30))
    );
}

#[test]
fn directories_import_revisions_in_numeric_order() {
    let dir = tempfile::tempdir().unwrap();
    let rev = dir.path().join("export/revisions");
    std::fs::create_dir_all(&rev).unwrap();
    // Equal times: the value applied last wins, so the order of the files shows.
    std::fs::write(
        rev.join("2.json"),
        "{\"_p\":\"bob\",\"_t\":5,\"plan\":\"from 2\"}\n",
    )
    .unwrap();
    std::fs::write(
        rev.join("10.json"),
        "{\"_p\":\"bob\",\"_t\":5,\"plan\":\"from 10\"}\n",
    )
    .unwrap();
    std::fs::write(
        rev.join("9.json"),
        "{\"_p\":\"bob\",\"_t\":5,\"plan\":\"from 9\"}\n",
    )
    .unwrap();
    let db = dir.path().join("s");
    ok(
        &db,
        &["import", dir.path().join("export").to_str().unwrap()],
    );
    assert!(ok(&db, &["props", "bob", "--json"]).contains("\"from 10\""));
}

#[test]
fn csv_import_handles_quoting_and_explains_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.csv");
    std::fs::write(
        &f,
        "Identity,Timestamp,Event,Alias,Prop:Note\n\
         \"smith, j\",10,\"Said \"\"hi\"\"\",,\"line one\nline two\"\n\
         \"smith, j\",,,j@x.example,\n\
         j@x.example,11,,,\"a,b\"\n",
    )
    .unwrap();
    let db = dir.path().join("s");
    ok(&db, &["import", f.to_str().unwrap()]);
    let p: serde_json::Value =
        serde_json::from_str(&ok(&db, &["resolve", "j@x.example", "--json"])).unwrap();
    assert_eq!(p["ids"], serde_json::json!(["smith, j", "j@x.example"]));
    let ev: serde_json::Value =
        serde_json::from_str(&ok(&db, &["events", "j@x.example", "--json"])).unwrap();
    assert_eq!(ev[0]["event"], "Said \"hi\"");
    assert_eq!(ev[0]["properties"]["Note"], "line one\nline two");
    assert!(ok(&db, &["props", "smith, j", "--json"]).contains("\"a,b\""));

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "Identity,Timestamp,Event\nbob,1,E\nbob,2\n").unwrap();
    let out = idgraph(&db, &["import", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err(&out).contains("bad.csv:3: the row has 2 fields, the header 3"),
        "{}",
        err(&out)
    );
    let hdr = dir.path().join("hdr.csv");
    std::fs::write(&hdr, "Identity,When\nbob,1\n").unwrap();
    let out = idgraph(&db, &["import", hdr.to_str().unwrap()], None);
    assert!(
        err(&out).contains("hdr.csv:1: unknown column \"When\""),
        "{}",
        err(&out)
    );
    // The CSV export reads back.
    let csv = ok(&db, &["export", "events", "--format", "csv"]);
    assert!(
        csv.starts_with("Identity,Timestamp,Event,Prop:_p_original,Prop:Note"),
        "{csv}"
    );
}

#[test]
fn huge_persons_respect_the_size_guardrail() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = String::new();
    for k in 0..10_050 {
        data += &format!("{{\"_p\":\"hub\",\"_t\":1,\"_p2\":\"h{k}\"}}\n");
    }
    let db = dir.path().join("s");
    let out = idgraph(&db, &["import", "-", "--json"], Some(&data));
    assert!(out.status.success(), "{}", err(&out));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (rep["joined"].as_u64(), rep["refused"].as_u64()),
        (Some(9_999), Some(51))
    );
    assert!(ok(&db, &["stats"]).contains("largest person  10000"));
}

#[test]
fn unreadable_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s");
    let out = idgraph(
        &db,
        &["import", dir.path().join("nope.json").to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err(&out).contains("nope.json: no such file"),
        "{}",
        err(&out)
    );
    let f = dir.path().join("data.txt");
    std::fs::write(&f, "{}").unwrap();
    let out = idgraph(&db, &["import", f.to_str().unwrap()], None);
    assert!(err(&out).contains("--format"), "{}", err(&out));
    assert!(!db.exists() || ok(&db, &["stats"]).contains("ids             0"));
}

/// A killed import leaves a store that opens and verifies; running the import again completes
/// it, with the same persons as an uninterrupted import.
#[test]
fn a_killed_import_reopens_and_a_rerun_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = String::new();
    for r in 0..6 {
        data += &sample()
            .replace("user", &format!("r{r}user"))
            .replace("anon-", &format!("r{r}anon-"))
            .replace("hub", &format!("r{r}hub"));
    }
    let f = dir.path().join("big.json");
    std::fs::write(&f, &data).unwrap();
    let clean = dir.path().join("clean");
    let started = std::time::Instant::now();
    ok(&clean, &["import", f.to_str().unwrap()]);
    let full = started.elapsed().as_millis() as u64; // kill somewhere within such a run
    let want = persons(&clean);
    let events = |db: &Path| {
        let mut lines: Vec<String> = ok(db, &["export", "events"])
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let want_events = events(&clean);
    assert!(want_events.len() > 100);
    let mut x: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for round in 0..3 {
        let db = dir.path().join(format!("killed{round}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_idgraph"))
            .arg("--db")
            .arg(&db)
            .args(["import", f.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(std::time::Duration::from_millis(
            10 + (x >> 33) % full.max(20),
        ));
        let _ = child.kill();
        child.wait().unwrap();
        if db.exists() {
            let v = idgraph(&db, &["verify"], None);
            assert!(
                v.status.success(),
                "round {round}: {}{}",
                String::from_utf8_lossy(&v.stdout),
                err(&v)
            );
        }
        ok(&db, &["import", f.to_str().unwrap()]);
        assert_eq!(persons(&db), want, "round {round}");
        // The events too: blocks of packed events half written by the killed run are
        // merged again, never doubled.
        assert_eq!(events(&db), want_events, "round {round}");
        assert!(ok(&db, &["verify"]).contains("ok"));
        let stats = ok(&db, &["stats"]);
        assert!(
            stats.contains(&format!("events          {}", want_events.len())),
            "{stats}"
        );
    }
}

/// A KISSmetrics export bucket as delivered: `index.csv` lists the files in the order they were
/// written, and that order (not the numeric one) decides which value is applied last.
#[test]
fn an_export_bucket_imports_in_the_order_of_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let rev = bucket.join("revisions");
    std::fs::create_dir_all(&rev).unwrap();
    // Equal times: the value applied last wins.
    for n in [1, 2, 10] {
        std::fs::write(
            rev.join(format!("{n}.json")),
            format!("{{\"_p\":\"bob\",\"_t\":5,\"plan\":\"from {n}\"}}\n"),
        )
        .unwrap();
    }
    // Numeric order would end on 10.json; the index ends on 2.json.
    std::fs::write(
        bucket.join("index.csv"),
        "file,size,written\nrevisions/1.json,40,2024-01-01\nrevisions/10.json,41,2024-01-02\n./revisions/2.json,40,2024-01-03\n",
    )
    .unwrap();
    let db = dir.path().join("s");
    let out = idgraph(&db, &["import", bucket.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", err(&out));
    assert!(ok(&db, &["props", "bob", "--json"]).contains("\"from 2\""));

    // A data file the index does not list: a warning, and it is not imported.
    std::fs::write(
        rev.join("11.json"),
        "{\"_p\":\"bob\",\"_t\":6,\"plan\":\"from 11\"}\n",
    )
    .unwrap();
    let db2 = dir.path().join("s2");
    let out = idgraph(&db2, &["import", bucket.to_str().unwrap()], None);
    let e = err(&out);
    assert!(out.status.success(), "{e}");
    assert!(e.contains("11.json") && e.contains("does not list"), "{e}");
    assert!(ok(&db2, &["props", "bob", "--json"]).contains("\"from 2\""));

    // A listed file missing from disk: an error naming it, nothing imported.
    std::fs::remove_file(rev.join("10.json")).unwrap();
    let db3 = dir.path().join("s3");
    let out = idgraph(&db3, &["import", bucket.to_str().unwrap()], None);
    let e = err(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("revisions/10.json") && e.contains("not on disk"),
        "{e}"
    );
    assert!(
        !db3.exists(),
        "nothing was written: the store was not even created"
    );

    // A path that leaves the bucket is refused with its line.
    std::fs::write(bucket.join("index.csv"), "file\n../elsewhere.json\n").unwrap();
    let out = idgraph(&db3, &["import", bucket.to_str().unwrap()], None);
    let e = err(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("index.csv:2:") && e.contains("inside the export"),
        "{e}"
    );
}

/// Everything a store holds, read with the library: every ID with its person and first-seen
/// time; each person's properties (with the ID each was set under); every event; the
/// refusals; the counters.
fn state(db: &Path) -> Vec<String> {
    let s = Store::open(db).unwrap();
    let mut out = Vec::new();
    let mut persons = BTreeSet::new();
    s.for_each_id(|id, person, first| {
        out.push(format!("{id} -> {person} since {first}"));
        persons.insert(person.to_owned());
        Ok(())
    })
    .unwrap();
    for p in persons {
        out.push(format!("{p}: {:?}", s.properties(&p).unwrap()));
    }
    s.for_each_event(|e| {
        out.push(format!("{e:?}"));
        Ok(())
    })
    .unwrap();
    out.push(format!("{:?}", s.refusals().unwrap()));
    let mut st = s.stats().unwrap();
    st.disk_bytes = 0;
    out.push(format!("{st:?}"));
    out
}

fn json_ok(db: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(db, args)).unwrap()
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A growing export bucket: a second import reads only the files added and the lines appended
/// (and says so), ends as one import of everything would, and keeps line numbers true; a file
/// whose imported part changed is refused by name, or read again in full with --reimport.
#[test]
fn a_second_import_reads_only_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let rev = bucket.join("revisions");
    std::fs::create_dir_all(&rev).unwrap();
    let data = sample();
    let lines: Vec<&str> = data.lines().collect();
    let part = |a: usize, b: usize| {
        lines[a..b]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    std::fs::write(rev.join("1.json"), part(0, 300)).unwrap();
    std::fs::write(rev.join("2.json"), part(300, 500)).unwrap();
    std::fs::write(
        bucket.join("index.csv"),
        "file\nrevisions/1.json\nrevisions/2.json\n",
    )
    .unwrap();
    let db = dir.path().join("s");
    let b = bucket.to_str().unwrap();
    let first = json_ok(&db, &["import", b, "--json"]);
    assert_eq!(
        (first["new_files"].as_u64(), first["lines"].as_u64()),
        (Some(2), Some(500))
    );

    // Nothing new: nothing read.
    let again = json_ok(&db, &["import", b, "--json"]);
    assert_eq!(again["files"], 0);
    assert_eq!(again["lines"], 0);
    assert_eq!(again["unchanged_files"], 2);
    let quiet = idgraph(&db, &["import", b], None);
    assert!(
        err(&quiet).contains("nothing new: 2 files unchanged"),
        "{}",
        err(&quiet)
    );

    // Lines appended to 2.json, a new 3.json listed in the index.
    let appended = part(500, 700);
    append(&rev.join("2.json"), &appended);
    let added = part(700, lines.len());
    std::fs::write(rev.join("3.json"), &added).unwrap();
    append(&bucket.join("index.csv"), "revisions/3.json\n");
    let second = json_ok(&db, &["import", b, "--json"]);
    assert_eq!(second["new_files"], 1);
    assert_eq!(second["grown_files"], 1);
    assert_eq!(second["unchanged_files"], 1);
    assert_eq!(second["lines"].as_u64(), Some((lines.len() - 500) as u64));
    assert_eq!(
        second["bytes"].as_u64(),
        Some((appended.len() + added.len()) as u64),
        "only the new bytes are read"
    );
    let text = err(&idgraph(&db, &["import", b], None));
    assert!(text.contains("nothing new: 3 files unchanged"), "{text}");

    // The same store as one import of everything.
    let whole = dir.path().join("whole");
    ok(&whole, &["import", b]);
    assert_eq!(state(&db), state(&whole));

    // An error in appended lines names the file's own line number.
    append(
        &rev.join("3.json"),
        "{\"_p\":\"late\",\"_t\":1,\"_n\":\"L\"}\n{\"_p\":\n",
    );
    let bad_line = lines.len() - 700 + 2;
    let out = idgraph(&db, &["import", b], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err(&out).contains(&format!("3.json:{bad_line}:")),
        "{}",
        err(&out)
    );
    assert!(err(&out).contains("nothing was imported"), "{}", err(&out));
    let late = idgraph(&db, &["resolve", "late"], None);
    assert_eq!(
        late.status.code(),
        Some(1),
        "the good line before was not imported either"
    );

    // The imported part of 1.json changes: refused by name, nothing imported.
    let one = rev.join("1.json");
    let mut changed = std::fs::read_to_string(&one).unwrap();
    changed = changed.replacen("Signed Up", "Signed_Up", 1);
    std::fs::write(&one, &changed).unwrap();
    std::fs::write(rev.join("3.json"), &added).unwrap(); // the bad lines gone again
    let out = idgraph(&db, &["import", b], None);
    let e = err(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("1.json") && e.contains("have changed") && e.contains("--reimport"),
        "{e}"
    );
    // With --reimport, 1.json is read again in full (and only it).
    let re = json_ok(&db, &["import", b, "--reimport", "--json"]);
    assert_eq!(re["reread_files"], 1);
    assert_eq!(re["lines"], 300);
    assert!(ok(&db, &["events", "user0@example.com"]).contains("Signed_Up"));

    // Shorter than imported: refused.
    std::fs::write(rev.join("2.json"), part(300, 301)).unwrap();
    let e = err(&idgraph(&db, &["import", b], None));
    assert!(e.contains("2.json") && e.contains("shorter"), "{e}");
}

/// A last line without its newline (caught while it is written) is not imported: it waits for
/// the next run, which reads it once it is whole.
#[test]
fn a_last_line_without_newline_waits_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.json");
    std::fs::write(
        &f,
        "{\"_p\":\"ann\",\"_t\":1,\"_n\":\"A\"}\n{\"_p\":\"ann\",\"_t\":2,\"_n\":\"B",
    )
    .unwrap();
    let db = dir.path().join("s");
    let p = f.to_str().unwrap();
    assert_eq!(json_ok(&db, &["import", p, "--json"])["lines"], 1);
    let ev = ok(&db, &["events", "ann"]);
    assert!(ev.contains('A') && !ev.contains("\"B"), "{ev}");
    // The line is finished, and another follows: both are read, nothing is refused.
    append(&f, "\"}\n{\"_p\":\"ann\",\"_t\":3,\"_n\":\"C\"}\n");
    let second = json_ok(&db, &["import", p, "--json"]);
    assert_eq!(
        (second["grown_files"].as_u64(), second["lines"].as_u64()),
        (Some(1), Some(2))
    );
    let ev = ok(&db, &["events", "ann"]);
    assert!(
        ev.contains('A') && ev.contains('B') && ev.contains('C'),
        "{ev}"
    );
    // A CSV row caught without its newline is not imported truncated either.
    let c = dir.path().join("e.csv");
    std::fs::write(&c, "Identity,Timestamp,Event\nbob,10,Paid\nbob,11,Refun").unwrap();
    let out = json_ok(&db, &["import", c.to_str().unwrap(), "--json"]);
    assert_eq!(out["lines"], 1, "{out}"); // the header is not counted
    assert!(!ok(&db, &["events", "bob"]).contains("Refun"));
    append(&c, "ded\n");
    json_ok(&db, &["import", c.to_str().unwrap(), "--json"]);
    let ev = ok(&db, &["events", "bob"]);
    assert!(ev.contains("Refunded") && !ev.contains("\"Refun\""), "{ev}");
}

/// A file is remembered as the file its descriptor read: a symlink repointed between the
/// listing of the inputs and their reading records nothing under the other file's name.
#[test]
fn a_symlink_repointed_mid_import_records_the_file_that_was_read() {
    use idgraph::ingest::files::{FileSource, expand};
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    std::fs::write(&a, "{\"_p\":\"ann\",\"_t\":1,\"_n\":\"FromA\"}\n").unwrap();
    std::fs::write(
        &b,
        "{\"_p\":\"bob\",\"_t\":1,\"_n\":\"FromB\"}\n{\"_p\":\"bob\",\"_t\":2,\"_n\":\"More\"}\n",
    )
    .unwrap();
    let link = dir.path().join("current.json");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let store = Config::new(dir.path().join("s")).open().unwrap();
    let mut source = FileSource::new(expand(std::slice::from_ref(&link), None).unwrap(), false, 0);
    // Log rotation: the link now names the other file.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&b, &link).unwrap();
    source.resume(|p| store.file_part(p), false).unwrap();
    store
        .bulk_apply(&mut source, idgraph::BulkOptions::default())
        .unwrap();
    assert_eq!(store.events("ann").unwrap().len(), 1);
    assert!(store.events("bob").unwrap().is_empty());
    let part = store.file_part(&a).unwrap().expect("a.json is remembered");
    assert_eq!(part.size, std::fs::metadata(&a).unwrap().len());
    assert!(
        store.file_part(&b).unwrap().is_none(),
        "b.json was not read"
    );
    // The next import through the link reads b.json, in full.
    let mut again = FileSource::new(expand(std::slice::from_ref(&link), None).unwrap(), false, 0);
    again.resume(|p| store.file_part(p), false).unwrap();
    store
        .bulk_apply(&mut again, idgraph::BulkOptions::default())
        .unwrap();
    assert_eq!(store.events("bob").unwrap().len(), 2);
}

/// CSV: appended rows are read with the columns of the file's header line, and a bad appended
/// row is named by its line in the file.
#[test]
fn csv_files_resume_with_their_header() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("e.csv");
    std::fs::write(
        &f,
        "Identity,Timestamp,Event,Prop:plan\nann,10,Paid,basic\n",
    )
    .unwrap();
    let db = dir.path().join("s");
    let p = f.to_str().unwrap();
    ok(&db, &["import", p]);
    append(&f, "bob,11,Paid,pro\n");
    let second = json_ok(&db, &["import", p, "--json"]);
    assert_eq!(
        (second["grown_files"].as_u64(), second["lines"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(ok(&db, &["props", "bob", "--json"]).contains("\"pro\""));
    append(&f, "cy,12,Paid\n");
    let out = idgraph(&db, &["import", p], None);
    assert!(err(&out).contains("e.csv:4:"), "{}", err(&out));
}

/// A killed incremental import, run again, ends exactly as an uninterrupted one.
#[test]
fn a_killed_incremental_import_reruns_to_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let grown = bucket.join("1.json");
    std::fs::write(&grown, sample()).unwrap();
    let base = dir.path().join("base");
    let b = bucket.to_str().unwrap();
    ok(&base, &["import", b]);
    let mut more = String::new();
    for r in 0..4 {
        more += &sample()
            .replace("user", &format!("r{r}user"))
            .replace("anon-", &format!("r{r}anon-"));
    }
    let (appended, added) =
        more.split_at(more.len() / 2 + more[more.len() / 2..].find('\n').unwrap() + 1);
    append(&grown, appended);
    std::fs::write(bucket.join("2.json"), added).unwrap();

    let copy = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(&base).unwrap() {
            let e = e.unwrap();
            if e.path().is_dir() {
                let sub = to.join(e.file_name());
                std::fs::create_dir_all(&sub).unwrap();
                for f in std::fs::read_dir(e.path()).unwrap() {
                    let f = f.unwrap();
                    std::fs::copy(f.path(), sub.join(f.file_name())).unwrap();
                }
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    };
    let clean = dir.path().join("clean");
    copy(&clean);
    let started = std::time::Instant::now();
    ok(&clean, &["import", b]);
    let full = started.elapsed().as_millis() as u64;
    let want = state(&clean);
    let mut x: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for round in 0..3 {
        let db = dir.path().join(format!("killed{round}"));
        copy(&db);
        let mut child = Command::new(env!("CARGO_BIN_EXE_idgraph"))
            .arg("--db")
            .arg(&db)
            .args(["import", b])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(std::time::Duration::from_millis(
            5 + (x >> 33) % full.max(20),
        ));
        let _ = child.kill();
        child.wait().unwrap();
        let v = idgraph(&db, &["verify"], None);
        assert!(v.status.success(), "round {round}: {}", err(&v));
        ok(&db, &["import", b]);
        assert_eq!(state(&db), want, "round {round}");
    }
}

/// `idgraph sync` imports what is new on every run, one line each; a failed run says why and
/// the command ends with exit status 2.
#[test]
fn sync_imports_what_arrives_between_runs() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    std::fs::write(
        bucket.join("1.json"),
        "{\"_p\":\"ann\",\"_t\":1,\"_n\":\"A\"}\n",
    )
    .unwrap();
    let db = dir.path().join("s");
    let mut child = Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .arg("--db")
        .arg(&db)
        .args([
            "sync",
            bucket.to_str().unwrap(),
            "--every",
            "400ms",
            "--runs",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains("imported 1 lines") && first.contains("(1 new)"),
        "{first}"
    );
    std::fs::write(
        bucket.join("2.json"),
        "{\"_p\":\"ann\",\"_t\":2,\"_p2\":\"bob\"}\n",
    )
    .unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(rest.len(), 4, "{rest:?}");
    assert_eq!(
        rest.iter()
            .filter(|l| l.contains("from 1 files (1 new; 1 unchanged"))
            .count(),
        1,
        "{rest:?}"
    );
    assert!(
        rest[3].contains("nothing new: 2 files unchanged"),
        "{rest:?}"
    );
    assert!(ok(&db, &["resolve", "bob"]).contains("ann"));

    std::fs::write(bucket.join("3.json"), "{\"_p\":\n").unwrap();
    let out = idgraph(
        &db,
        &["sync", bucket.to_str().unwrap(), "--runs", "1"],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("failed:") && text.contains("3.json:1:"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn hostile_lines_are_refused_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s");
    let props: Vec<String> = (0..300).map(|i| format!("\"p{i}\":\"v\"")).collect();
    let cases = [
        (
            format!("{{\"_p\":\"a\",\"_t\":1,\"_n\":\"E\",{}}}", props.join(",")),
            "300 properties in one op, more than the limit of 256 (max_properties)",
        ),
        (
            format!(
                "{{\"_p\":\"a\",\"_t\":1,\"_n\":\"E\",\"v\":\"{}\"}}",
                "x".repeat(9000)
            ),
            "(max_value_bytes)",
        ),
        (
            "{\"_p\":\"a\",\"_t\":1,\"_n\":\"E\",\"_p\":\"someone\"}".into(),
            "_p is given twice",
        ),
        (
            "{\"_p\":\"a\",\"_t\":1,\"_t\":2,\"_n\":\"E\"}".into(),
            "_t is given twice",
        ),
    ];
    for (line, want) in &cases {
        let data = format!("{{\"_p\":\"ok\",\"_t\":1,\"_n\":\"E\"}}\n{line}\n");
        let f = dir.path().join("h.json");
        std::fs::write(&f, &data).unwrap();
        let out = idgraph(&db, &["import", f.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(2), "{}", err(&out));
        assert!(err(&out).contains("h.json:2: "), "{}", err(&out));
        assert!(err(&out).contains(want), "{want}: {}", err(&out));
        assert!(ok(&db, &["stats"]).contains("events          0"));
    }
    // A line past max_line_bytes (4 MiB) is a bad line, read without holding it: strict
    // stops, --skip-invalid skips it and imports the rest.
    let long = format!(
        "{{\"_p\":\"ok\",\"_t\":1,\"_n\":\"E\"}}\n{{\"_p\":\"{}\"}}\n{{\"_p\":\"ok\",\"_t\":2,\"_n\":\"F\"}}\n",
        "x".repeat(5 << 20)
    );
    let f = dir.path().join("long.json");
    std::fs::write(&f, &long).unwrap();
    let out = idgraph(&db, &["import", f.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("long.json:2: the line has 5242890 bytes, more than the limit of 4194304 (max_line_bytes)"),
        "{}",
        err(&out)
    );
    let out = idgraph(
        &db,
        &["import", "--skip-invalid", f.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", err(&out));
    assert!(ok(&db, &["stats"]).contains("events          2"));
    // A CSV record past the limit stops the import: no record boundary can be trusted after it.
    let csv = format!(
        "Identity,Timestamp,Event\na,1,E\nb,2,\"{}\"\n",
        "y".repeat(5 << 20)
    );
    let f = dir.path().join("long.csv");
    std::fs::write(&f, &csv).unwrap();
    let out = idgraph(
        &db,
        &["import", "--skip-invalid", f.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("long.csv:3: a record longer than the limit"),
        "{}",
        err(&out)
    );
    let out = idgraph(&db, &["import", "-", "-"], Some(""));
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains("given twice"), "{}", err(&out));
}

/// An export bucket of more files than the process may hold open at once imports: a file is
/// open only while it is hashed or read.
#[test]
fn a_bucket_of_more_files_than_open_descriptors_imports() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir(&bucket).unwrap();
    for i in 0..300 {
        std::fs::write(
            bucket.join(format!("{i}.json")),
            format!("{{\"_p\":\"u{i}\",\"_t\":{i},\"_n\":\"Seen\"}}\n"),
        )
        .unwrap();
    }
    let db = dir.path().join("s");
    let script = format!(
        "ulimit -n 64 && exec {} --db {} import {} --json",
        env!("CARGO_BIN_EXE_idgraph"),
        db.display(),
        bucket.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["lines"], 300, "{rep}");
}

/// A last line without its newline waits for the next run, but not one longer than a line may
/// be: that one is read, and refused as too long, instead of waiting for ever.
#[test]
fn a_last_line_too_long_to_wait_for_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.json");
    let mut text = String::from("{\"_p\":\"ann\",\"_t\":1,\"_n\":\"A\"}\n");
    text.push_str(&"x".repeat(5 << 20));
    std::fs::write(&f, text).unwrap();
    let db = dir.path().join("s");
    let out = idgraph(&db, &["import", f.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("more than the limit"), "{}", err(&out));
}

/// A file rotated between the listing and the reading (renamed away, another written in its
/// place) is not read as if it were the listed one: the import says so and writes nothing.
#[test]
fn a_file_replaced_after_listing_is_refused() {
    use idgraph::ingest::files::{FileSource, expand};
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.json");
    std::fs::write(&f, "{\"_p\":\"ann\",\"_t\":1,\"_n\":\"Old\"}\n").unwrap();
    let store = Config::new(dir.path().join("s")).open().unwrap();
    let mut source = FileSource::new(expand(std::slice::from_ref(&f), None).unwrap(), false, 0);
    std::fs::rename(&f, dir.path().join("a.json.1")).unwrap();
    std::fs::write(&f, "{\"_p\":\"bob\",\"_t\":1,\"_n\":\"New\"}\n").unwrap();
    let e = source
        .resume(|p| store.file_part(p), false)
        .and_then(|_| store.bulk_apply(&mut source, BulkOptions::default()))
        .unwrap_err();
    assert!(e.to_string().contains("replaced"), "{e}");
    assert!(store.resolve("bob").unwrap().is_none());
    assert!(store.file_part(&f).unwrap().is_none());
}
