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
//! It starts `target/release/idgraph serve` on a fresh store in a temporary directory (on disk;
//! `--dir /dev/shm` for memory) and stops it with SIGTERM — or SIGKILL with `--kill9` — before
//! the check.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt, Empty};
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
}

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
        .args(["serve", "--addr", "127.0.0.1:0", "--no-demo"]);
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
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
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
                .body(Empty::<Bytes>::new())
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
            if baseline {
                continue;
            }
            let who = if path.contains(&anon) && kind == b'e' {
                &anon
            } else {
                &named
            };
            match kind {
                b'e' => acked.events.push((who.clone(), what)),
                b'a' => acked.aliases.push((anon.clone(), named.clone())),
                _ => acked.sets.push((named.clone(), "company".into(), what)),
            }
        }
    }
    acked
}

/// Prints requests/s and latency percentiles; returns the number of requests acknowledged.
fn report(what: &str, results: &[Acked], elapsed: Duration) -> usize {
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
    n
}

/// One counter from the server's `/metrics`.
async fn metric(addr: &str, name: &str) -> Option<u64> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/metrics")
        .header("host", addr)
        .body(Empty::<Bytes>::new())
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

fn main() {
    let args = Args::parse();
    let base = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let db = base.path().join("db");
    let (mut child, addr) = start_server(&db, args.sync);
    println!(
        "server {addr}{} (store in {}); {} clients, up to {} requests or {} s",
        if args.sync { " --sync" } else { "" },
        base.path().display(),
        args.clients,
        args.requests,
        args.seconds
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    if args.baseline {
        let budget = Arc::new(AtomicU64::new(args.requests));
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let t = Instant::now();
        let res: Vec<Acked> = rt.block_on(async {
            let tasks: Vec<_> = (0..args.clients)
                .map(|n| {
                    let (a, b, s) = (addr.clone(), budget.clone(), stop.clone());
                    tokio::spawn(client(n, true, a, b, deadline, s))
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        report("baseline /healthz", &res, t.elapsed());
    }
    let budget = Arc::new(AtomicU64::new(args.requests));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let kill_at = args
        .kill9
        .then(|| Instant::now() + Duration::from_secs(args.seconds) / 2);
    let started = Instant::now();
    let pid = child.id();
    let results: Vec<Acked> = rt.block_on(async {
        let killer = kill_at.map(|at| {
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            })
        });
        let tasks: Vec<_> = (0..args.clients)
            .map(|n| {
                let (a, b, s) = (addr.clone(), budget.clone(), stop.clone());
                tokio::spawn(client(n, false, a, b, deadline, s))
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        if let Some(k) = killer {
            let _ = k.await;
        }
        out
    });
    let elapsed = started.elapsed();
    let flushes = if args.kill9 {
        None
    } else {
        rt.block_on(metric(&addr, "idgraph_sync_flushes_total"))
    };
    let n = report("tracking /e /s /a", &results, elapsed);
    if let Some(f) = flushes.filter(|&f| f > 0) {
        println!(
            "group commit: {f} flushes, {:.1} requests per flush",
            n as f64 / f as f64
        );
    }
    let errors: u64 = results.iter().map(|a| a.errors).sum();
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

    // The store holds exactly what was acknowledged.
    let t = Instant::now();
    let store = Store::open(&db).expect("reopen the store");
    let mut missing = 0u64;
    let mut acked_events = 0u64;
    for a in &results {
        for (id, name) in &a.events {
            acked_events += 1;
            if !store.events(id).unwrap().iter().any(|e| &e.event == name) {
                missing += 1;
            }
        }
        for (anon, named) in &a.aliases {
            if store.canonical(anon).is_none() || store.canonical(anon) != store.canonical(named) {
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
    let stats = store.stats().unwrap();
    let extra = stats.events as i64 - acked_events as i64;
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
