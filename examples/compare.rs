//! Side-by-side comparison: the same seeded workloads through idgraph and through what a team
//! would otherwise use, in one run, one process per measurement (so each peak RSS is its own).
//!
//! Systems:
//! - idgraph: `bulk_apply`, `apply_batch` in batches of `--batch`, and one `apply` per op;
//! - SQLite, the approach most teams write first: `ids(id TEXT PRIMARY KEY, person INTEGER)`
//!   indexed on `person`, a merge re-points every ID of the smaller person; events and
//!   properties in their own tables with the same dedup rules as idgraph; WAL mode,
//!   `synchronous=NORMAL`, transactions of `--batch` ops (and one op per transaction);
//! - an in-memory union-find over interned IDs (the floor no persistent store can beat);
//! - raw sled inserting, and reading, one key per op (the storage floor).
//!
//! Workloads (seeded): `alias` (anonymous → named links with return visits and a few persons of
//! thousands of IDs), `events` (the KISSmetrics export mix of `gen_km`: ~70% events, 20% sets,
//! 10% aliases), `reads` (random lookups of known IDs after loading `alias`).
//!
//! ```text
//! cargo run --release --example compare                      # 300,000 ops per workload
//! cargo run --release --example compare -- --ops 1000000 --batch 10000
//! cargo run --release --example compare -- --only reads --json
//! ```
//! Stores live in a temporary directory on disk (`--dir` to choose).

#[path = "common/km_gen.rs"]
mod km_gen;
#[path = "common/measure.rs"]
mod measure;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use idgraph::forest::{self, MemForest, Node};
use idgraph::{BulkOptions, Cause, Config, Identity, Op, Store};
use km_gen::{KmGen, Rng, anon_id};
use measure::{dir_size, peak_rss_mib};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// Ops per workload (lookups for `reads`).
    #[arg(long, default_value_t = 300_000)]
    ops: u64,
    /// Ops per transaction / batch for the batched modes.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Ops of the one-at-a-time modes (they are slow; default: `--ops`).
    #[arg(long)]
    single_ops: Option<u64>,
    /// Seed of the workloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only this workload (`alias`, `events`, `reads`).
    #[arg(long)]
    only: Option<String>,
    /// Where the stores live (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the results as JSON lines instead of the table.
    #[arg(long)]
    json: bool,
    /// sled cache for idgraph and raw sled, MiB (`Config::cache_capacity`).
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// sled's background flush interval for idgraph, ms; 0 = only explicit flushes
    /// (`Config::flush_every_ms`).
    #[arg(long, default_value_t = 500)]
    flush_ms: u64,
    /// Memory for sorting events in `bulk_apply`, MiB (`BulkOptions::memory_budget`).
    #[arg(long, default_value_t = BulkOptions::default().memory_budget >> 20)]
    budget_mb: usize,
    /// Only the systems whose name starts with one of these (comma-separated), e.g. `idgraph`.
    #[arg(long)]
    systems: Option<String>,
    /// Internal: run one measurement (`WORKLOAD SYSTEM`) and print it as JSON.
    #[arg(long, num_args = 2, hide = true)]
    child: Option<Vec<String>>,
}

/// One measurement.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Row {
    workload: String,
    system: String,
    ops: u64,
    secs: f64,
    ids: u64,
    peak_rss_mib: f64,
    disk_bytes: u64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

const SYSTEMS: &[(&str, &[&str])] = &[
    (
        "alias",
        &[
            "idgraph bulk",
            "idgraph batch",
            "idgraph apply",
            "sqlite batch",
            "sqlite autocommit",
            "in-memory union-find",
            "raw sled insert",
        ],
    ),
    (
        "events",
        &[
            "idgraph bulk",
            "idgraph batch",
            "idgraph apply",
            "sqlite batch",
            "sqlite autocommit",
            "raw sled insert",
        ],
    ),
    (
        "reads",
        &[
            "idgraph canonical",
            "idgraph resolve",
            "sqlite lookup",
            "sqlite resolve",
            "in-memory union-find",
            "raw sled get",
        ],
    ),
];

fn main() {
    let args = Args::parse();
    if let Some(c) = &args.child {
        let row = child(&args, &c[0], &c[1]);
        println!("{}", serde_json::to_string(&row).unwrap());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut rows: Vec<Row> = Vec::new();
    for (workload, systems) in SYSTEMS {
        if args.only.as_deref().is_some_and(|o| o != *workload) {
            continue;
        }
        for system in *systems {
            if let Some(only) = &args.systems
                && !only.split(',').any(|p| system.starts_with(p.trim()))
            {
                continue;
            }
            let mut cmd = Command::new(&exe);
            cmd.args(["--child", workload, system])
                .args(["--ops", &args.ops.to_string()])
                .args(["--batch", &args.batch.to_string()])
                .args(["--seed", &args.seed.to_string()])
                .args(["--cache-mb", &args.cache_mb.to_string()])
                .args(["--flush-ms", &args.flush_ms.to_string()])
                .args(["--budget-mb", &args.budget_mb.to_string()]);
            if let Some(n) = args.single_ops {
                cmd.args(["--single-ops", &n.to_string()]);
            }
            if let Some(d) = &args.dir {
                cmd.arg("--dir").arg(d);
            }
            let out = cmd.output().expect("run a measurement");
            // The child's notes (what it wrote), shown with its row.
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            if !out.status.success() {
                eprintln!("{workload} / {system} failed");
                std::process::exit(1);
            }
            let row: Row = serde_json::from_slice(&out.stdout).expect("a measurement");
            if args.json {
                println!("{}", serde_json::to_string(&row).unwrap());
            } else {
                eprintln!("  {workload:<7} {system:<22} {:>10.0} ops/s", row.rate());
            }
            rows.push(row);
        }
    }
    if !args.json {
        table(&args, &rows);
    }
}

fn table(args: &Args, rows: &[Row]) {
    println!(
        "\n{} ops per workload (one-at-a-time modes: {}), batches/transactions of {}, seed {}; \
         idgraph: cache {} MiB, flush every {} ms, bulk budget {} MiB\n",
        args.ops,
        args.single_ops.unwrap_or(args.ops),
        args.batch,
        args.seed,
        args.cache_mb,
        args.flush_ms,
        args.budget_mb
    );
    println!(
        "| workload | system | ops | ops/s | vs SQLite | vs in-memory UF | vs raw sled | peak RSS MiB | disk bytes/ID |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let same = |prefix: &str| {
            rows.iter()
                .filter(|x| x.workload == r.workload && x.system.starts_with(prefix))
                .map(Row::rate)
                .fold(f64::NAN, f64::max)
        };
        // The SQLite baseline of a mode: batched against batched, one-at-a-time against
        // one-at-a-time, lookups against lookups.
        let sqlite = if r.system.ends_with("apply") || r.system.ends_with("autocommit") {
            same("sqlite autocommit")
        } else if r.workload == "reads" {
            if r.system.ends_with("resolve") {
                same("sqlite resolve")
            } else {
                same("sqlite lookup")
            }
        } else {
            same("sqlite batch")
        };
        let ratio = |b: f64| {
            if b.is_nan() {
                "—".to_string()
            } else {
                format!("{:.2}x", r.rate() / b)
            }
        };
        let disk = if r.disk_bytes > 0 && r.ids > 0 {
            format!("{:.0}", r.disk_bytes as f64 / r.ids as f64)
        } else {
            "—".into()
        };
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.0} | {} |",
            r.workload,
            r.system,
            r.ops,
            r.rate(),
            ratio(sqlite),
            ratio(same("in-memory union-find")),
            ratio(same("raw sled")),
            r.peak_rss_mib,
            disk
        );
    }
}

// ---------------------------------------------------------------- workloads

fn id(s: &str) -> Identity {
    Identity::new(s).unwrap()
}

/// Anonymous → named links: persons of 1-5 IDs, 2% of links into 3 persons of thousands,
/// 5% named-to-named (a work address), return visits repeating earlier links.
fn alias_ops(n: u64, seed: u64) -> Vec<Op> {
    let mut rng = Rng(seed ^ 0xA11A5);
    let persons = (n / 2).max(10);
    (0..n)
        .map(|i| {
            let (p, k) = if rng.chance(2) {
                (rng.below(3), rng.below(5_000))
            } else {
                let p = 3 + rng.below(persons);
                (p, rng.below(p % 5 + 1))
            };
            let named = format!("user{p}@example.com");
            let other = if rng.chance(5) {
                format!("user{p}@work.example")
            } else {
                anon_id(seed, p, k)
            };
            Op::alias(id(&named), id(&other), i as i64, Cause::Import)
        })
        .collect()
}

/// The KISSmetrics export mix, parsed as `idgraph import` parses it.
fn event_ops(n: u64, seed: u64) -> Vec<Op> {
    let mut g = KmGen::new(seed, n, 3);
    let mut line = String::new();
    let mut ops = Vec::with_capacity(n as usize);
    for _ in 0..n {
        g.next_line(&mut line);
        ops.extend(idgraph::ingest::km_json::parse_line(line.trim_end(), None).unwrap());
    }
    ops
}

/// Every ID an op names (each op's first ID is its key for raw sled).
fn op_ids(op: &Op) -> (&str, Option<&str>) {
    match op {
        Op::Alias { a, b, .. } => (a.as_str(), Some(b.as_str())),
        Op::Record { id, .. } | Op::Set { id, .. } => (id.as_str(), None),
    }
}

// ---------------------------------------------------------------- one measurement

/// The same allocator as the `idgraph` binary (SQLite allocates with its own `malloc` calls,
/// which this does not change).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn child(args: &Args, workload: &str, system: &str) -> Row {
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let path = tmp.path().join("store");
    let single = args.single_ops.unwrap_or(args.ops);
    let mut ops = match workload {
        "events" => event_ops(args.ops, args.seed),
        _ => alias_ops(args.ops, args.seed),
    };
    if system.ends_with("apply") || system.ends_with("autocommit") {
        ops.truncate(single as usize);
    }
    let n_ops = if workload == "reads" {
        args.ops
    } else {
        ops.len() as u64
    };
    let config = || {
        Config::new(&path)
            .cache_capacity(args.cache_mb << 20)
            .flush_every_ms((args.flush_ms > 0).then_some(args.flush_ms))
            .max_person_size(1 << 20)
    };
    let (secs, ids, disk) = match (workload, system) {
        ("reads", s) => reads(args, s, &ops, &path, config),
        (_, "idgraph bulk") => {
            measure::like_idgraph_import();
            let store = config().open().unwrap();
            let t = Instant::now();
            let rep = store
                .bulk_apply(&mut ops.into_iter(), bulk_options(args))
                .unwrap();
            store.flush().unwrap();
            eprintln!(
                "  ({workload}: idgraph bulk wrote {} sled keys, {:.3} per op)",
                rep.keys_written,
                rep.keys_written as f64 / rep.ops.max(1) as f64
            );
            finish_idgraph(store, t, &path)
        }
        (_, "idgraph batch") => {
            let store = config().open().unwrap();
            let t = Instant::now();
            for chunk in ops.chunks(args.batch) {
                store.apply_batch(chunk).unwrap();
            }
            store.flush().unwrap();
            finish_idgraph(store, t, &path)
        }
        (_, "idgraph apply") => {
            let store = config().open().unwrap();
            let t = Instant::now();
            for op in ops {
                store.apply(op).unwrap();
            }
            store.flush().unwrap();
            finish_idgraph(store, t, &path)
        }
        (_, "sqlite batch") | (_, "sqlite autocommit") => {
            let mut db = Sqlite::open(&path);
            let batch = if system == "sqlite batch" {
                args.batch
            } else {
                1
            };
            let t = Instant::now();
            for chunk in ops.chunks(batch) {
                db.apply(chunk);
            }
            db.checkpoint();
            let secs = t.elapsed().as_secs_f64();
            (secs, db.ids(), sqlite_size(&path))
        }
        (_, "in-memory union-find") => {
            let t = Instant::now();
            let mut uf = MemUf::default();
            for op in &ops {
                if let (a, Some(b)) = op_ids(op) {
                    uf.union(a, b);
                } else {
                    uf.intern(op_ids(op).0);
                }
            }
            (t.elapsed().as_secs_f64(), uf.ids.len() as u64, 0)
        }
        (_, "raw sled insert") => {
            let db = sled_open(&path, args.cache_mb);
            let t = Instant::now();
            for (i, op) in ops.iter().enumerate() {
                let mut k = op_ids(op).0.as_bytes().to_vec();
                k.extend_from_slice(&(i as u64).to_be_bytes());
                db.insert(k, &[0u8; 17][..]).unwrap();
            }
            db.flush().unwrap();
            let secs = t.elapsed().as_secs_f64();
            let n = db.len() as u64;
            drop(db);
            (secs, n, dir_size(&path))
        }
        other => panic!("unknown system {other:?}"),
    };
    Row {
        workload: workload.into(),
        system: system.into(),
        ops: n_ops,
        secs,
        ids,
        peak_rss_mib: peak_rss_mib(),
        disk_bytes: disk,
    }
}

fn bulk_options(args: &Args) -> BulkOptions {
    BulkOptions {
        memory_budget: args.budget_mb << 20,
        ..BulkOptions::default()
    }
}

fn finish_idgraph(store: Store, t: Instant, path: &Path) -> (f64, u64, u64) {
    let secs = t.elapsed().as_secs_f64();
    let ids = store.stats_quick().ids;
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(100));
    (secs, ids, dir_size(path))
}

fn sled_open(path: &Path, cache_mb: u64) -> sled::Db {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_mb << 20)
        .open()
        .unwrap()
}

/// Loads the alias workload into the system, then times `args.ops` random lookups of known IDs.
fn reads(
    args: &Args,
    system: &str,
    ops: &[Op],
    path: &Path,
    config: impl Fn() -> Config,
) -> (f64, u64, u64) {
    let mut known: Vec<&str> = Vec::new();
    for op in ops {
        let (a, b) = op_ids(op);
        known.push(a);
        known.extend(b);
    }
    let mut rng = Rng(args.seed ^ 0x5EAD);
    let picks: Vec<&str> = (0..args.ops)
        .map(|_| known[rng.below(known.len() as u64) as usize])
        .collect();
    let mut hits = 0u64;
    match system {
        "idgraph canonical" | "idgraph resolve" => {
            let store = config().open().unwrap();
            store
                .bulk_apply(&mut ops.to_vec(), BulkOptions::default())
                .unwrap();
            let t = Instant::now();
            for k in &picks {
                if system == "idgraph canonical" {
                    hits += store.canonical(k).unwrap().is_some() as u64;
                } else {
                    hits += store.resolve(k).unwrap().is_some() as u64;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(hits, args.ops);
            let (_, ids, disk) = finish_idgraph(store, Instant::now(), path);
            (secs, ids, disk)
        }
        "sqlite lookup" | "sqlite resolve" => {
            let mut db = Sqlite::open(path);
            for chunk in ops.chunks(args.batch) {
                db.apply(chunk);
            }
            db.checkpoint();
            let t = Instant::now();
            for k in &picks {
                if system == "sqlite lookup" {
                    hits += db.person(k).is_some() as u64;
                } else {
                    hits += db.resolve(k).is_some() as u64;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(hits, args.ops);
            (secs, db.ids(), sqlite_size(path))
        }
        "in-memory union-find" => {
            let mut uf = MemUf::default();
            for op in ops {
                if let (a, Some(b)) = op_ids(op) {
                    uf.union(a, b);
                }
            }
            let t = Instant::now();
            for k in &picks {
                let n = uf.ids[*k];
                hits += (forest::find(&uf.forest, n) <= Node::MAX) as u64;
            }
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(hits, args.ops);
            (secs, uf.ids.len() as u64, 0)
        }
        "raw sled get" => {
            let db = sled_open(path, args.cache_mb);
            for k in &known {
                db.insert(k.as_bytes(), &[0u8; 17][..]).unwrap();
            }
            db.flush().unwrap();
            let t = Instant::now();
            for k in &picks {
                hits += db.get(k.as_bytes()).unwrap().is_some() as u64;
            }
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(hits, args.ops);
            let n = db.len() as u64;
            drop(db);
            (secs, n, dir_size(path))
        }
        other => panic!("unknown system {other:?}"),
    }
}

// ---------------------------------------------------------------- in-memory union-find

#[derive(Default)]
struct MemUf {
    ids: FxHashMap<String, Node>,
    forest: MemForest,
}

impl MemUf {
    fn intern(&mut self, s: &str) -> Node {
        if let Some(&n) = self.ids.get(s) {
            return n;
        }
        let n = self.forest.push();
        self.ids.insert(s.to_owned(), n);
        n
    }
    fn union(&mut self, a: &str, b: &str) {
        let (x, y) = (self.intern(a), self.intern(b));
        forest::union(&mut self.forest, x, y);
    }
}

// ---------------------------------------------------------------- the SQLite approach

struct Sqlite {
    conn: rusqlite::Connection,
}

fn sqlite_size(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            std::fs::metadata(format!("{}{s}", path.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

impl Sqlite {
    fn open(path: &Path) -> Sqlite {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE ids (id TEXT PRIMARY KEY, person INTEGER NOT NULL);
             CREATE INDEX ids_person ON ids(person);
             CREATE TABLE events (id TEXT NOT NULL, name_lower TEXT NOT NULL, at INTEGER NOT NULL,
                                  name TEXT NOT NULL, props TEXT NOT NULL,
                                  PRIMARY KEY (id, name_lower, at));
             CREATE TABLE props (id TEXT NOT NULL, name_lower TEXT NOT NULL, name TEXT NOT NULL,
                                 value TEXT NOT NULL, at INTEGER NOT NULL,
                                 PRIMARY KEY (id, name_lower));",
        )
        .unwrap();
        Sqlite { conn }
    }

    /// The person of `id`, adding it as a new person when unknown.
    fn ensure(tx: &rusqlite::Transaction, id: &str) -> i64 {
        let mut q = tx
            .prepare_cached("SELECT person FROM ids WHERE id = ?1")
            .unwrap();
        if let Ok(p) = q.query_row([id], |r| r.get::<_, i64>(0)) {
            return p;
        }
        let mut ins = tx
            .prepare_cached(
                "INSERT INTO ids (id, person) VALUES (?1, (SELECT COALESCE(MAX(person), 0) + 1 FROM ids))",
            )
            .unwrap();
        ins.execute([id]).unwrap();
        q.query_row([id], |r| r.get(0)).unwrap()
    }

    fn apply(&mut self, ops: &[Op]) {
        let tx = self.conn.transaction().unwrap();
        for op in ops {
            match op {
                Op::Alias { a, b, .. } => {
                    let (pa, pb) = (Self::ensure(&tx, a.as_str()), Self::ensure(&tx, b.as_str()));
                    if pa != pb {
                        let mut count = tx
                            .prepare_cached("SELECT COUNT(*) FROM ids WHERE person = ?1")
                            .unwrap();
                        let na: i64 = count.query_row([pa], |r| r.get(0)).unwrap();
                        let nb: i64 = count.query_row([pb], |r| r.get(0)).unwrap();
                        let (keep, gone) = if na >= nb { (pa, pb) } else { (pb, pa) };
                        tx.prepare_cached("UPDATE ids SET person = ?1 WHERE person = ?2")
                            .unwrap()
                            .execute([keep, gone])
                            .unwrap();
                    }
                }
                Op::Record {
                    id,
                    event,
                    properties,
                    at,
                } => {
                    Self::ensure(&tx, id.as_str());
                    let props = serde_json::to_string(properties).unwrap();
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO events (id, name_lower, at, name, props)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .unwrap()
                    .execute(rusqlite::params![
                        id.as_str(),
                        event.to_lowercase(),
                        at,
                        event,
                        props
                    ])
                    .unwrap();
                    Self::set(&tx, id.as_str(), properties, *at);
                }
                Op::Set { id, properties, at } => {
                    Self::ensure(&tx, id.as_str());
                    Self::set(&tx, id.as_str(), properties, *at);
                }
            }
        }
        tx.commit().unwrap();
    }

    fn set(tx: &rusqlite::Transaction, id: &str, props: &idgraph::Properties, at: i64) {
        let mut up = tx
            .prepare_cached(
                "INSERT INTO props (id, name_lower, name, value, at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id, name_lower) DO UPDATE SET value = excluded.value, at = excluded.at
                 WHERE excluded.at >= props.at",
            )
            .unwrap();
        for (n, v) in props.iter() {
            up.execute(rusqlite::params![
                id,
                n.to_lowercase(),
                n,
                v.to_string(),
                at
            ])
            .unwrap();
        }
    }

    fn checkpoint(&self) {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }

    fn ids(&self) -> u64 {
        self.conn
            .query_row("SELECT COUNT(*) FROM ids", [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    }

    fn person(&self, id: &str) -> Option<i64> {
        self.conn
            .prepare_cached("SELECT person FROM ids WHERE id = ?1")
            .unwrap()
            .query_row([id], |r| r.get(0))
            .ok()
    }

    /// The person and all its IDs (what `Store::resolve` answers).
    fn resolve(&self, id: &str) -> Option<Vec<String>> {
        let p = self.person(id)?;
        let mut q = self
            .conn
            .prepare_cached("SELECT id FROM ids WHERE person = ?1")
            .unwrap();
        let ids = q
            .query_map([p], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        Some(ids)
    }
}
