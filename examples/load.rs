//! Load test of `idgraph serve` (on demand, not in CI).
//!
//! N concurrent clients, each on its own keep-alive HTTP/1.1 connection, play visitors of a
//! KISSmetrics site against the tracking API on loopback: anonymous page views (`/e`), an
//! identify (`/a`, anonymous ID onto a new named ID), events and property sets (`/s`) under the
//! named ID. It stops after `--requests` requests or `--seconds`, whichever comes first, and
//! reports requests/s and latency percentiles. Then it checks the store holds exactly what was
//! acknowledged: every acknowledged event, alias and property, and no event that was not.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example load -- --clients 64 --requests 300000
//! cargo run --release --example load -- --sync --clients 256 --seconds 20
//! cargo run --release --example load -- --sync --kill9 --seconds 10   # crash, then check
//! ```
//! It starts the release `idgraph` built beside it (`idgraph serve`) on a fresh store in a temporary directory (on disk;
//! `--dir /dev/shm` for memory) and stops it with SIGTERM — or SIGKILL with `--kill9` — before
//! the check.
//!
//! `--attack` runs the same clients twice on one server, `--seconds` each: first alone (the
//! clean run), then next to attackers sending the worst requests the server's limits allow —
//! `fat`: POSTs of 256 properties filling `max_request_bytes`, to an ID holding
//! `max_properties_per_id` names (every op rewrites them all); `links`: redundant aliases
//! within one person of 1,000 IDs; `oversize`: 2 MB bodies and 60 KB requests with an invalid
//! key (each refused with 400, kept in the request log); `slow`: connections that send their
//! headers or body one byte a second. It reports the legitimate clients' throughput and p99 in
//! both runs, side by side, the server's peak RSS in each, and checks that everything
//! acknowledged (the attackers' events too) is in the store. Every client connects from its own
//! loopback address (127.1.x.y) and every attacker from its own (127.2.0.y; the slow one
//! 127.2.1.1), as on the internet: the server's write budgets and connection limits are per
//! client address (Linux routes all of 127/8 to loopback).
//!
//! ```text
//! cargo run --release --example load -- --attack --clients 64 --seconds 20
//! ```
//!
//! `--backup` takes a backup from the server a third into the run (`GET /api/admin/backup`),
//! reports tracking's throughput and latency during it against the rest of the run and the
//! write pause the server measured, then restores it and checks that it holds every event
//! acknowledged before it began. `--preload PATH` imports PATH first (a store of real size).
//!
//! ```text
//! cargo run --release --example load -- --backup --preload /tmp/km10m --seconds 30
//! ```

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use idgraph::Store;

#[derive(Parser)]
struct Args {
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Stop after this many requests in all.
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// ... or after this many seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Run the server with --sync (acknowledge after flush).
    #[arg(long)]
    sync: bool,
    /// Stop the server with SIGKILL instead of SIGTERM before checking.
    #[arg(long)]
    kill9: bool,
    /// Where the store lives (default: the system's temporary directory, on disk here, so
    /// that `--sync` pays real flushes).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also run the same clients against `/healthz` first (no store work): the HTTP stack's
    /// ceiling on this machine, as a baseline in the same run.
    #[arg(long)]
    baseline: bool,
    /// Run the clients alone, then again next to attackers (see the top of this file).
    #[arg(long)]
    attack: bool,
    /// Attackers of each kind (fat, links, oversize), each on its own connection.
    #[arg(long, default_value_t = 2)]
    attackers: usize,
    /// Which attackers to run (comma-separated: fat, links, oversize, slow).
    #[arg(long, value_delimiter = ',', default_value = "fat,links,oversize,slow")]
    kinds: Vec<String>,
    /// Bytes of each property value the fat attacker sends (the server's limit: 8192).
    #[arg(long, default_value_t = 8192)]
    fat_value_bytes: usize,
    /// Connections the slow attacker holds open (one byte a second each).
    #[arg(long, default_value_t = 256)]
    slow_connections: usize,
    /// A third into the run, take a backup from the server (`GET /api/admin/backup`); report
    /// throughput and latency during it against the rest of the run and the write pause the
    /// server measured, then restore it and check that it holds every event acknowledged
    /// before it began.
    #[arg(long)]
    backup: bool,
    /// Import these files or directories into the store before the server starts (a store of
    /// real size for --backup).
    #[arg(long)]
    preload: Option<PathBuf>,
}

const ADMIN_TOKEN: &str = "load-admin-token";

/// What a client had acknowledged.
#[derive(Default)]
struct Acked {
    /// (ID, event name) of each acknowledged `/e`.
    events: Vec<(String, String)>,
    /// (anonymous ID, named ID) of each acknowledged `/a`.
    aliases: Vec<(String, String)>,
    /// (ID, property name, value) of each acknowledged `/s`.
    sets: Vec<(String, String, String)>,
    latencies_us: Vec<u32>,
    /// When each request was sent (aligned with `latencies_us`).
    sent: Vec<Instant>,
    /// When each event was acknowledged (aligned with `events`).
    events_at: Vec<Instant>,
    errors: u64,
}

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("idgraph"));
    match bin {
        Some(b) if b.exists() => b,
        _ => panic!("build the server first: cargo build --release"),
    }
}

fn start_server(db: &std::path::Path, sync: bool) -> (Child, String) {
    let mut cmd = Command::new(server_binary());
    cmd.arg("--db")
        .arg(db)
        .args(["serve", "--addr", "127.0.0.1:0", "--no-demo"])
        .args(["--admin-token", ADMIN_TOKEN]);
    if sync {
        cmd.arg("--sync");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("start idgraph serve");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || for _ in out.lines() {}); // keep the pipe drained
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address line")
        .to_string();
    (child, addr)
}

async fn client(
    n: usize,
    baseline: bool,
    addr: String,
    budget: Arc<AtomicU64>,
    deadline: Instant,
    stop: Arc<AtomicBool>,
) -> Acked {
    let mut acked = Acked::default();
    let mut send = connect(&addr, client_ip(n)).await;
    let mut visitor = 0u64;
    'visitors: loop {
        visitor += 1;
        let anon = format!("c{n}v{visitor}anon=");
        let named = format!("c{n}v{visitor}@example.com");
        // A visit: 3 anonymous page views, identify, 2 events, a property set, 2 more events.
        let steps: Vec<(String, u8, String)> = vec![
            (
                format!("/e?_n=Viewed+Home&url=%2F&_k=demo&_p={anon}"),
                b'e',
                "Viewed Home".into(),
            ),
            (
                format!("/e?_n=Viewed+Pricing&_k=demo&_p={anon}"),
                b'e',
                "Viewed Pricing".into(),
            ),
            (
                format!("/e?_n=Viewed+Signup&_k=demo&_p={anon}"),
                b'e',
                "Viewed Signup".into(),
            ),
            (
                format!("/a?_n={}&_p={anon}&_k=demo", enc(&named)),
                b'a',
                String::new(),
            ),
            (
                format!("/e?_n=Signed+Up&plan=pro&_k=demo&_p={}", enc(&named)),
                b'e',
                "Signed Up".into(),
            ),
            (
                format!("/e?_n=Invited+Friend&_k=demo&_p={}", enc(&named)),
                b'e',
                "Invited Friend".into(),
            ),
            (
                format!("/s?company=Acme+{visitor}&_k=demo&_p={}", enc(&named)),
                b's',
                format!("Acme {visitor}"),
            ),
            (
                format!("/e?_n=Created+Project&_k=demo&_p={}", enc(&named)),
                b'e',
                "Created Project".into(),
            ),
            (
                format!("/e?_n=Billed&amount=10&_k=demo&_p={}", enc(&named)),
                b'e',
                "Billed".into(),
            ),
        ];
        for (path, kind, what) in steps {
            if stop.load(Ordering::Relaxed)
                || Instant::now() >= deadline
                || budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_err()
            {
                break 'visitors;
            }
            let path = if baseline { "/healthz" } else { path.as_str() };
            let req = hyper::Request::get(path)
                .header("host", addr.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let t = Instant::now();
            let ok = match send.send_request(req).await {
                Ok(r) => {
                    let status = r.status();
                    let _ = r.into_body().collect().await;
                    status == 200
                }
                Err(_) => false,
            };
            if !ok {
                acked.errors += 1;
                stop.store(true, Ordering::Relaxed); // the server is gone (or failing)
                break 'visitors;
            }
            acked
                .latencies_us
                .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            acked.sent.push(t);
            if baseline {
                continue;
            }
            let who = if path.contains(&anon) && kind == b'e' {
                &anon
            } else {
                &named
            };
            match kind {
                b'e' => {
                    acked.events.push((who.clone(), what));
                    acked.events_at.push(Instant::now());
                }
                b'a' => acked.aliases.push((anon.clone(), named.clone())),
                _ => acked.sets.push((named.clone(), "company".into(), what)),
            }
        }
    }
    acked
}

/// Prints requests/s and latency percentiles; returns the number of requests acknowledged and
/// the p99 latency (ms).
fn report(what: &str, results: &[Acked], elapsed: Duration) -> (usize, f64) {
    let mut lat: Vec<u32> = results
        .iter()
        .flat_map(|a| a.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let n = lat.len();
    println!(
        "{what}: {n} requests acknowledged in {:.2} s: {:.0} requests/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        pct(&lat, 1.0)
    );
    (n, pct(&lat, 0.99))
}

/// One counter from the server's `/metrics`.
async fn metric(addr: &str, name: &str) -> Option<u64> {
    let mut send = try_connect(addr, IpAddr::from([127, 0, 0, 1])).await?;
    let req = hyper::Request::get("/metrics")
        .header("host", addr)
        .body(Full::new(Bytes::new()))
        .ok()?;
    let body = send
        .send_request(req)
        .await
        .ok()?
        .into_body()
        .collect()
        .await
        .ok()?;
    let text = String::from_utf8(body.to_bytes().to_vec()).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Runs `args.clients` clients until `args.requests` requests or `args.seconds`; each
/// client's acknowledgements.
async fn run_clients(args: &Args, addr: &str, baseline: bool) -> Vec<Acked> {
    let budget = Arc::new(AtomicU64::new(args.requests));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.clients)
        .map(|n| {
            let (a, b, s) = (addr.to_string(), budget.clone(), stop.clone());
            tokio::spawn(client(n, baseline, a, b, deadline, s))
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// One run of the legitimate clients (and, with `attack`, the attackers next to them).
struct Phase {
    results: Vec<Acked>,
    elapsed: Duration,
    attack: Option<AttackReport>,
    peak_rss_kib: u64,
    backup: Option<BackupRun>,
}

/// A backup taken during a run.
struct BackupRun {
    began: Instant,
    ended: Instant,
    bytes: u64,
    file: PathBuf,
}

/// `GET /api/admin/backup` into `file`, streamed.
async fn take_backup(addr: &str, file: PathBuf) -> BackupRun {
    use std::io::Write;
    let began = Instant::now();
    let mut send = connect(addr, IpAddr::from([127, 0, 0, 1])).await;
    let req = hyper::Request::get("/api/admin/backup")
        .header("host", addr)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.expect("the backup request");
    assert_eq!(resp.status(), 200, "the backup was refused");
    let mut body = resp.into_body();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("the backup's body").into_data() {
            bytes += data.len() as u64;
            out.write_all(&data).unwrap();
        }
    }
    out.flush().unwrap();
    BackupRun {
        began,
        ended: Instant::now(),
        bytes,
        file,
    }
}

/// Throughput and latency inside the backup's window against outside it.
fn report_backup(results: &[Acked], b: &BackupRun, started: Instant, elapsed: Duration) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for a in results {
        for (t, l) in a.sent.iter().zip(&a.latencies_us) {
            if *t >= b.began && *t < b.ended {
                inside.push(*l);
            } else {
                outside.push(*l);
            }
        }
    }
    inside.sort_unstable();
    outside.sort_unstable();
    let window = b.ended - b.began;
    let rest = elapsed.saturating_sub(window).max(Duration::from_millis(1));
    let (r_in, r_out) = (
        inside.len() as f64 / window.as_secs_f64(),
        outside.len() as f64 / rest.as_secs_f64(),
    );
    println!(
        "backup: {:.1} MiB in {:.2} s (began {:.2} s into the run)",
        b.bytes as f64 / (1 << 20) as f64,
        window.as_secs_f64(),
        (b.began - started).as_secs_f64()
    );
    println!(
        "  during it: {r_in:.0} requests/s, {:.2}x the rest of the run's {r_out:.0}; p99 {:.2} ms \
         (rest {:.2}), max {:.2} ms (rest {:.2})",
        r_in / r_out,
        pct(&inside, 0.99),
        pct(&outside, 0.99),
        pct(&inside, 1.0),
        pct(&outside, 1.0)
    );
}

fn run_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    addr: &str,
    pid: u32,
    attack: bool,
    kill_at: Option<Instant>,
    backup_to: Option<PathBuf>,
) -> Phase {
    let sampler = RssSampler::start(pid);
    let attackers = attack.then(|| Attack::start(rt, args, addr));
    let started = Instant::now();
    let (results, backup): (Vec<Acked>, Option<BackupRun>) = rt.block_on(async {
        let killer = kill_at.map(|at| {
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            })
        });
        let backup = backup_to.map(|file| {
            let (addr, at) = (addr.to_string(), Duration::from_secs(args.seconds) / 3);
            tokio::spawn(async move {
                tokio::time::sleep(at).await;
                take_backup(&addr, file).await
            })
        });
        let out = run_clients(args, addr, false).await;
        if let Some(k) = killer {
            let _ = k.await;
        }
        let backup = match backup {
            Some(b) => Some(b.await.unwrap()),
            None => None,
        };
        (out, backup)
    });
    let elapsed = started.elapsed();
    let attack = attackers.map(|a| a.stop(rt));
    Phase {
        results,
        elapsed,
        attack,
        peak_rss_kib: sampler.stop(),
        backup,
    }
}

fn main() {
    let args = Args::parse();
    let base = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let db = base.path().join("db");
    // Events in the store before the run (--preload): not the clients'.
    let mut preloaded = 0;
    if let Some(p) = &args.preload {
        let t = Instant::now();
        let st = Command::new(server_binary())
            .arg("--db")
            .arg(&db)
            .arg("import")
            .arg(p)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "preloading {} failed", p.display());
        preloaded = Store::open(&db).unwrap().stats().unwrap().events as i64;
        println!(
            "preloaded {} in {:.1} s",
            p.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let (mut child, addr) = start_server(&db, args.sync);
    println!(
        "server {addr}{} (store in {}); {} clients, up to {} requests or {} s{}",
        if args.sync { " --sync" } else { "" },
        base.path().display(),
        args.clients,
        args.requests,
        args.seconds,
        if args.attack { " per run" } else { "" },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    if args.baseline {
        let t = Instant::now();
        let res = rt.block_on(run_clients(&args, &addr, true));
        report("baseline /healthz", &res, t.elapsed());
    }
    let pid = child.id();
    let kill_at = args
        .kill9
        .then(|| Instant::now() + Duration::from_secs(args.seconds) / 2);
    let backup_to = args.backup.then(|| base.path().join("during-load.backup"));
    let started = Instant::now();
    let mut phases = vec![run_phase(&rt, &args, &addr, pid, false, kill_at, backup_to)];
    if args.attack && !args.kill9 {
        phases.push(run_phase(&rt, &args, &addr, pid, true, None, None));
    }
    let pause_us = rt.block_on(metric(&addr, "idgraph_last_backup_pause_microseconds"));
    let flushes = if args.kill9 {
        None
    } else {
        rt.block_on(metric(&addr, "idgraph_sync_flushes_total"))
    };
    let mut summary = Vec::new();
    for p in &phases {
        let what = if p.attack.is_some() {
            "tracking /e /s /a, next to the attackers"
        } else {
            "tracking /e /s /a"
        };
        let (n, p99) = report(what, &p.results, p.elapsed);
        println!(
            "  server peak RSS {:.0} MiB",
            p.peak_rss_kib as f64 / 1024.0
        );
        if let Some(a) = &p.attack {
            a.print();
        }
        summary.push((n, n as f64 / p.elapsed.as_secs_f64(), p99));
    }
    if let Some(b) = &phases[0].backup {
        report_backup(&phases[0].results, b, started, phases[0].elapsed);
        println!(
            "  the server's write pause for the cut: {} µs",
            pause_us.unwrap_or_default()
        );
    }
    if let [(_, clean, clean_p99), (_, hostile, hostile_p99)] = summary[..] {
        println!(
            "legitimate clients under attack: {:.2}x the clean run's requests/s (goal >= 0.5x), \
             p99 {:.2}x (goal <= 2x)",
            hostile / clean,
            hostile_p99 / clean_p99
        );
    }
    if let Some(f) = flushes.filter(|&f| f > 0) {
        let n: usize = summary.iter().map(|(n, ..)| n).sum();
        println!(
            "group commit: {f} flushes, {:.1} requests per flush",
            n as f64 / f as f64
        );
    }
    let errors: u64 = phases
        .iter()
        .flat_map(|p| &p.results)
        .map(|a| a.errors)
        .sum();
    if args.kill9 {
        let _ = child.wait();
        println!("server killed with SIGKILL; {errors} requests in flight were not acknowledged");
    } else {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let st = child.wait().unwrap();
        assert!(st.success(), "server exit: {st}");
        assert_eq!(errors, 0, "failed requests without a crash");
    }

    if let Some(b) = &phases[0].backup {
        check_backup(b, &phases[0].results, &base.path().join("restored"));
    }
    // The store holds exactly what was acknowledged.
    let t = Instant::now();
    let store = Store::open(&db).expect("reopen the store");
    let mut missing = 0u64;
    let mut acked_events = 0u64;
    for a in phases.iter().flat_map(|p| &p.results) {
        for (id, name) in &a.events {
            acked_events += 1;
            if !store.events(id).unwrap().iter().any(|e| &e.event == name) {
                missing += 1;
            }
        }
        for (anon, named) in &a.aliases {
            let canon = |i: &str| store.canonical(i).unwrap();
            if canon(anon).is_none() || canon(anon) != canon(named) {
                missing += 1;
            }
        }
        for (id, prop, value) in &a.sets {
            let ok = store
                .properties(id)
                .unwrap()
                .iter()
                .any(|p| &p.name == prop && p.value.to_string() == *value);
            if !ok {
                missing += 1;
            }
        }
    }
    // The attackers' acknowledged events: each has its own name, so each is stored once.
    for a in phases.iter().filter_map(|p| p.attack.as_ref()) {
        for (id, n) in &a.fat_events {
            acked_events += n;
            let stored = store.events(id).unwrap().len() as u64;
            missing += n.saturating_sub(stored);
        }
    }
    let stats = store.stats().unwrap();
    let extra = stats.events as i64 - preloaded - acked_events as i64;
    let report = store.verify().unwrap();
    println!(
        "check ({:.1} s): {missing} acknowledged ops missing; store has {} events for {acked_events} \
         acknowledged ({extra:+} not acknowledged: in flight at the kill); verify {}",
        t.elapsed().as_secs_f64(),
        stats.events,
        if report.is_ok() { "ok" } else { "FAILED" }
    );
    assert_eq!(missing, 0, "acknowledged data is missing");
    assert!(report.is_ok(), "{report:?}");
    if !args.kill9 {
        assert_eq!(extra, 0, "the store holds events nobody acknowledged");
    } else {
        assert!(
            extra >= 0 && extra as u64 <= errors,
            "more unacknowledged events than requests in flight"
        );
    }
}

/// Restores the backup taken during the run and checks that it holds every event
/// acknowledged before the backup began.
fn check_backup(b: &BackupRun, results: &[Acked], dest: &std::path::Path) {
    let t = Instant::now();
    let st = Command::new(server_binary())
        .arg("--db")
        .arg(dest)
        .arg("restore")
        .arg(&b.file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "the restore failed");
    let restored = t.elapsed();
    let store = Store::open(dest).expect("open the restored store");
    let (mut before, mut missing) = (0u64, 0u64);
    for a in results {
        for ((id, name), at) in a.events.iter().zip(&a.events_at) {
            if *at < b.began {
                before += 1;
                let held = store.events(id).unwrap().iter().any(|e| &e.event == name);
                missing += u64::from(!held);
            }
        }
    }
    println!(
        "backup check: restored in {:.2} s; {missing} of {before} events acknowledged before \
         the backup began are missing from it",
        restored.as_secs_f64()
    );
    assert_eq!(missing, 0, "the backup lost acknowledged events");
}

/// Samples the server's resident memory every 50 ms; `stop` returns the peak (KiB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak.max(rss_kib(pid).unwrap_or(0))
        });
        RssSampler { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the attackers sent and how the server answered.
#[derive(Default)]
struct AttackReport {
    /// Per kind: requests sent, answered 200, answered 4xx, connections the server cut.
    counts: std::collections::BTreeMap<&'static str, [u64; 4]>,
    /// (ID, events acknowledged) of each fat attacker.
    fat_events: Vec<(String, u64)>,
}

impl AttackReport {
    fn add(&mut self, kind: &'static str, c: [u64; 4]) {
        let e = self.counts.entry(kind).or_default();
        for i in 0..4 {
            e[i] += c[i];
        }
    }

    fn print(&self) {
        for (kind, [sent, ok, refused, cut]) in &self.counts {
            println!(
                "  attacker {kind:>8}: {sent} requests, {ok} answered 200, {refused} answered 4xx, \
                 {cut} connections cut by the server"
            );
        }
    }
}

/// What an HTTP attacker returns: its kind, its counts, and (fat) its ID and events acked.
type AttackerResult = (&'static str, [u64; 4], Option<(String, u64)>);

/// The attackers of one run: async tasks for those that speak HTTP properly, threads for the
/// ones that abuse the socket.
struct Attack {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<AttackerResult>>,
    threads: Vec<std::thread::JoinHandle<(&'static str, [u64; 4])>>,
}

impl Attack {
    fn start(rt: &tokio::runtime::Runtime, args: &Args, addr: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut threads = Vec::new();
        let on = |k: &str| args.kinds.iter().any(|x| x == k);
        for a in 0..args.attackers {
            if on("fat") {
                tasks.push(rt.spawn(fat(a, args.fat_value_bytes, addr.to_string(), stop.clone())));
            }
            if on("links") {
                tasks.push(rt.spawn(links(a, addr.to_string(), stop.clone())));
            }
            if on("oversize") {
                let (addr, s) = (addr.to_string(), stop.clone());
                threads.push(std::thread::spawn(move || oversize(a, &addr, &s)));
            }
        }
        if on("slow") {
            let (addr, s, n) = (addr.to_string(), stop.clone(), args.slow_connections);
            threads.push(std::thread::spawn(move || slow(n, &addr, &s)));
        }
        Attack {
            stop,
            tasks,
            threads,
        }
    }

    fn stop(self, rt: &tokio::runtime::Runtime) -> AttackReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut r = AttackReport::default();
        for t in self.tasks {
            let (kind, c, fat) = rt.block_on(t).unwrap();
            r.add(kind, c);
            r.fat_events.extend(fat);
        }
        for t in self.threads {
            let (kind, c) = t.join().unwrap();
            r.add(kind, c);
        }
        r
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive HTTP/1.1 connection to the server.
async fn try_connect(addr: &str, from: IpAddr) -> Option<Sender> {
    let stream = tcp_from(addr, from).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(send)
}

async fn connect(addr: &str, from: IpAddr) -> Sender {
    try_connect(addr, from)
        .await
        .expect("connect to the server")
}

/// A TCP connection to `addr` from the loopback address `from` (all of 127/8 is loopback on
/// Linux). Each client, and each attacker, has its own address, as on the internet: the
/// server keeps a write budget per client address.
async fn tcp_from(addr: &str, from: IpAddr) -> std::io::Result<tokio::net::TcpStream> {
    let to: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(std::net::SocketAddr::new(from, 0))?;
    s.connect(to).await
}

/// [`tcp_from`] for the attackers that run on threads: a blocking std stream.
fn std_tcp_from(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    from: IpAddr,
) -> std::io::Result<std::net::TcpStream> {
    let s = rt.block_on(tcp_from(addr, from))?.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// A runtime of one thread for an attacker thread's connects.
fn io_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a tokio runtime")
}

/// The address of legitimate client `n`: 127.1.x.y.
fn client_ip(n: usize) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        1,
        (n / 250) as u8,
        (n % 250 + 1) as u8,
    ))
}

/// The address of attacker `a` (all its kinds): 127.2.0.y; the slow attacker's: 127.2.1.1.
fn attacker_ip(a: usize) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 2, 0, (a % 250 + 1) as u8))
}

/// Sends one attacker request, counting it in `c` (sent, 200, other status, connection cut;
/// a cut connection is reopened). Whether it was answered 200.
async fn attack_once(
    send: &mut Sender,
    (addr, from): (&str, IpAddr),
    req: hyper::Request<Full<Bytes>>,
    c: &mut [u64; 4],
) -> bool {
    c[0] += 1;
    match send.send_request(req).await {
        Ok(r) => {
            let ok = r.status() == 200;
            let _ = r.into_body().collect().await;
            c[if ok { 1 } else { 2 }] += 1;
            ok
        }
        Err(_) => {
            c[3] += 1;
            *send = connect(addr, from).await;
            false
        }
    }
}

/// The server's default `max_request_bytes`, `max_value_bytes` and `max_properties_per_id`.
const MAX_REQUEST_BYTES: usize = 65_536;
const MAX_VALUE_BYTES: usize = 8192;
const MAX_PROPERTIES_PER_ID: usize = 1024;

/// POSTs filling `MAX_REQUEST_BYTES` with values of `MAX_VALUE_BYTES`, each with its own event
/// name, to one ID: the first requests fill the ID to `MAX_PROPERTIES_PER_ID` names of the
/// longest value (8 MB), every later one updates some of them — and so rewrites all 8 MB.
async fn fat(a: usize, value_bytes: usize, addr: String, stop: Arc<AtomicBool>) -> AttackerResult {
    let id = format!("attacker-fat-{a}");
    let mut send = connect(&addr, attacker_ip(a)).await;
    let mut c = [0u64; 4];
    let mut acked = 0;
    let mut k = 0usize;
    // name (`&n1023=`) and value per pair
    let per_request = ((MAX_REQUEST_BYTES - 64) / (value_bytes + 8)).min(256);
    let value = "v".repeat(value_bytes.clamp(8, MAX_VALUE_BYTES) - 8);
    while !stop.load(Ordering::Relaxed) {
        let mut body = format!("_n=Fat+{k}&_k=demo&_p={id}");
        for j in 0..per_request {
            let name = (k * per_request + j) % MAX_PROPERTIES_PER_ID;
            body.push_str(&format!("&n{name}={k:08}{value}"));
        }
        assert!(body.len() <= MAX_REQUEST_BYTES);
        let req = hyper::Request::post("/e")
            .header("host", addr.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        acked += u64::from(attack_once(&mut send, (&addr, attacker_ip(a)), req, &mut c).await);
        k += 1;
    }
    ("fat", c, Some((id, acked)))
}

/// Redundant aliases within one person: the first links join 1,000 IDs, the rest link random
/// pairs of them (until `max_links_per_person`, then not recorded).
async fn links(a: usize, addr: String, stop: Arc<AtomicBool>) -> AttackerResult {
    let mut send = connect(&addr, attacker_ip(a)).await;
    let mut c = [0u64; 4];
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ a as u64;
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (i, j) = if k < 999 {
            (k, k + 1)
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1000, (x >> 32) % 1000)
        };
        let path = format!("/a?_n=attacker-links-{a}-{i}&_p=attacker-links-{a}-{j}&_k=demo");
        let req = hyper::Request::get(path)
            .header("host", addr.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        attack_once(&mut send, (&addr, attacker_ip(a)), req, &mut c).await;
        k += 1;
    }
    ("links", c, None)
}

/// Requests the server must refuse: a 2 MB body (refused on its declared length, the
/// connection closed), then 60 KB with an invalid key (read, refused, logged), in turn.
fn oversize(a: usize, addr: &str, stop: &AtomicBool) -> (&'static str, [u64; 4]) {
    use std::io::{Read, Write};
    let mut c = [0u64; 4];
    let big = vec![b'x'; 2_000_000];
    let mut k = 0u64;
    let rt = io_runtime();
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = std_tcp_from(&rt, addr, attacker_ip(a)) else {
            continue;
        };
        let body: Vec<u8> = if k.is_multiple_of(2) {
            big.clone()
        } else {
            format!("_n=x&_p=attacker-oversize-{a}&_k={}", "k".repeat(60_000)).into_bytes()
        };
        let head = format!(
            "POST /e HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        c[0] += 1;
        let _ = s
            .write_all(head.as_bytes())
            .and_then(|()| s.write_all(&body));
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        match answer.get(9..12) {
            Some(b"200") => c[1] += 1,
            Some(code) if code[0] == b'4' => c[2] += 1,
            _ => c[3] += 1,
        }
        k += 1;
    }
    ("oversize", c)
}

/// `n` connections sending one byte a second: half of them a request line and headers that
/// never end, half a body that never ends. A connection the server cuts is reopened.
fn slow(n: usize, addr: &str, stop: &AtomicBool) -> (&'static str, [u64; 4]) {
    use std::io::{Read, Write};
    let mut c = [0u64; 4];
    let rt = io_runtime();
    let from = IpAddr::from([127, 2, 1, 1]);
    let open = |i: usize, c: &mut [u64; 4]| -> Option<std::net::TcpStream> {
        let mut s = std_tcp_from(&rt, addr, from).ok()?;
        c[0] += 1;
        if i % 2 == 1 {
            let head =
                format!("POST /e HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 60000\r\n\r\n_k=demo");
            s.write_all(head.as_bytes()).ok()?;
        } else {
            s.write_all(b"GET /e?_k=demo").ok()?;
        }
        s.set_nonblocking(true).ok()?;
        Some(s)
    };
    let mut conns: Vec<Option<std::net::TcpStream>> = (0..n).map(|i| open(i, &mut c)).collect();
    while !stop.load(Ordering::Relaxed) {
        for (i, slot) in conns.iter_mut().enumerate() {
            let alive = slot.as_mut().is_some_and(|s| {
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(got) => {
                        if buf[..got].starts_with(b"HTTP/1.1 4") {
                            c[2] += 1;
                        }
                        false
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        s.write_all(b"x").is_ok()
                    }
                    Err(_) => false,
                }
            });
            if !alive {
                c[3] += 1;
                *slot = open(i, &mut c);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    ("slow", c)
}
