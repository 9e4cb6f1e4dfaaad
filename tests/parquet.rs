//! Parquet out of `export` and into `import`: a round trip equals the JSON-lines one, DuckDB
//! reads the files as they are (the same rows as `export --format jsonl` / `km-json`), and a
//! bad file or row says where.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};

fn idgraph(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// KISSmetrics lines: aliases, events with text, integer and float properties, sets.
fn km_lines() -> String {
    let mut s = String::new();
    for i in 0..300 {
        let anon = format!("anon{i}");
        let named = format!("user{}@example.com", i % 90);
        s += &format!(
            "{{\"_p\":\"{anon}\",\"_t\":{},\"_n\":\"Viewed Page\",\"url\":\"/p/{i}\",\"n\":{i},\"x\":{}.5}}\n",
            1_000 + i,
            i % 7
        );
        if i % 3 == 0 {
            s += &format!(
                "{{\"_p\":\"{anon}\",\"_t\":{},\"_p2\":\"{named}\"}}\n",
                1_000 + i
            );
        }
        if i % 5 == 0 {
            s += &format!(
                "{{\"_p\":\"{named}\",\"_t\":{},\"_n\":\"Paid\",\"amount\":{}}}\n",
                2_000 + i,
                i * 3
            );
            s += &format!(
                "{{\"_p\":\"{named}\",\"_t\":{},\"plan\":\"pro\"}}\n",
                2_000 + i
            );
        }
    }
    s
}

fn sorted(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// A store from `km_lines`, with its Parquet exports beside it.
fn exported(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::write(dir.join("in.json"), km_lines()).unwrap();
    ok(idgraph(
        &src,
        &["import", dir.join("in.json").to_str().unwrap()],
    ));
    for (what, file) in [("events", "ev.parquet"), ("mapping", "map.parquet")] {
        let out = dir.join(file);
        ok(idgraph(
            &src,
            &[
                "export",
                what,
                "--format",
                "parquet",
                "-o",
                out.to_str().unwrap(),
            ],
        ));
        assert!(!dir.join(format!("{file}.partial")).exists());
    }
    src
}

/// Events out as Parquet and back in give the store the JSON-lines round trip gives; the
/// mapping and the events together bring back every event under the same person.
#[test]
fn a_parquet_round_trip_equals_the_json_lines_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = exported(dir.path());
    let jsonl = ok(idgraph(&src, &["export", "events"]));
    std::fs::write(dir.path().join("ev.jsonl"), &jsonl).unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    ok(idgraph(
        &a,
        &["import", dir.path().join("ev.parquet").to_str().unwrap()],
    ));
    ok(idgraph(
        &b,
        &["import", dir.path().join("ev.jsonl").to_str().unwrap()],
    ));
    for what in ["events", "mapping"] {
        assert_eq!(
            ok(idgraph(&a, &["export", what])),
            ok(idgraph(&b, &["export", what])),
            "export {what}"
        );
    }
    // A folder of Parquet files (as the Spark job writes them), mapping first.
    let folder = dir.path().join("out");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(
        dir.path().join("map.parquet"),
        folder.join("part-0.parquet"),
    )
    .unwrap();
    std::fs::copy(dir.path().join("ev.parquet"), folder.join("part-1.parquet")).unwrap();
    std::fs::write(folder.join("_SUCCESS"), "").unwrap();
    let rep: serde_json::Value = serde_json::from_str(&ok(idgraph(
        &c,
        &["import", folder.to_str().unwrap(), "--json"],
    )))
    .unwrap();
    assert_eq!(rep["files"], 2, "{rep}");
    assert_eq!(
        sorted(&ok(idgraph(&c, &["export", "events"]))),
        sorted(&jsonl)
    );
}

/// DuckDB reads both files as they are: the same rows as `export events` (km-json) and
/// `export mapping --format jsonl`.
#[test]
fn duckdb_reads_the_parquet_exports() {
    let dir = tempfile::tempdir().unwrap();
    let src = exported(dir.path());
    std::fs::write(
        dir.path().join("ev.jsonl"),
        ok(idgraph(&src, &["export", "events"])),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("map.jsonl"),
        ok(idgraph(&src, &["export", "mapping", "--format", "jsonl"])),
    )
    .unwrap();
    let script = r#"
import json, sys, duckdb
d = sys.argv[1]
con = duckdb.connect()
rows = con.sql(f"SELECT _p, _p_original, _n, _t, properties FROM '{d}/ev.parquet'").fetchall()
got = sorted((p, o, n, t, json.dumps(json.loads(props), sort_keys=True)) for p, o, n, t, props in rows)
want = []
for line in open(f"{d}/ev.jsonl"):
    e = json.loads(line)
    props = {k: v for k, v in e.items() if not k.startswith("_")}
    want.append((e["_p"], e["_p_original"], e["_n"], e["_t"], json.dumps(props, sort_keys=True)))
assert got == sorted(want), "events differ"
m = sorted(con.sql(f"SELECT id, person FROM '{d}/map.parquet'").fetchall())
w = sorted((r["id"], r["person"]) for r in map(json.loads, open(f"{d}/map.jsonl")))
assert m == w, "mapping differs"
print(len(got), len(m))
"#;
    let out = Command::new("python3")
        .args(["-c", script, dir.path().to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "DuckDB (pip install -r tests/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = String::from_utf8_lossy(&out.stdout);
    let n: Vec<u64> = counts
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(n[0] >= 300 && n[1] >= 300, "{counts}");
}

fn write_parquet(path: &Path, cols: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A Parquet file of other columns, and a bad row: `FILE:ROW` and why, exit 2, nothing
/// imported; with `--skip-invalid` the bad row is skipped and the rest imported.
#[test]
fn a_bad_parquet_file_or_row_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let other = dir.path().join("other.parquet");
    write_parquet(
        &other,
        vec![("x", Arc::new(Int64Array::from(vec![1])) as ArrayRef)],
    );
    let out = idgraph(&db, &["import", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("neither the mapping's"), "{err}");
    let bad = dir.path().join("bad.parquet");
    let text = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
    write_parquet(
        &bad,
        vec![
            ("_p", text(vec!["a", "b", "c", "d"])),
            ("_p_original", text(vec!["a", "b", "", "d"])),
            ("_n", text(vec!["E", "E", "E", "E"])),
            (
                "_t",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef,
            ),
            ("properties", text(vec!["{}", "[1]", "{}", "{\"k\":1}"])),
        ],
    );
    let out = idgraph(&db, &["import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.parquet:2: properties is not a JSON object"),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(!idgraph(&db, &["resolve", "a"]).status.success());
    let out = idgraph(
        &db,
        &["import", bad.to_str().unwrap(), "--skip-invalid", "--json"],
    );
    let rep: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(rep["skipped"], 2, "{rep}");
    assert_eq!(rep["events"], 2, "{rep}");
    ok(idgraph(&db, &["resolve", "d"]));
    // `--format parquet` on something else.
    let out = idgraph(
        &db,
        &[
            "import",
            "--format",
            "parquet",
            dir.path().join("none.json").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}
