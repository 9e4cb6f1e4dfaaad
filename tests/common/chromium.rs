//! Headless Chromium over WebDriver (chromedriver) for the browser tests.
#![allow(dead_code)] // each test binary uses a part

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether the browser tests should run: `IDGRAPH_SKIP_BROWSER` unset. Panics with how to get
/// the browser when it is missing.
pub fn wanted() -> bool {
    if std::env::var_os("IDGRAPH_SKIP_BROWSER").is_some() {
        eprintln!("IDGRAPH_SKIP_BROWSER set: skipped");
        return false;
    }
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists(),
        "{CHROMEDRIVER} is missing: `apt-get install chromium chromium-driver` (what .ci/run \
         does), or set IDGRAPH_SKIP_BROWSER=1"
    );
    true
}

/// chromedriver, in a process group of its own with the Chromium it starts: dropped — when a
/// test ends, or panics before its `close` — the whole group is killed, so no browser outlives
/// its test (a failed assertion once left four Chromiums running for an hour).
pub struct Driver(Child);
impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start_browser() -> (Driver, Client, tempfile::TempDir) {
    let port = free_port();
    let driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage",
                     format!("--user-data-dir={}", profile.path().display())],
        }),
    );
    let t = Instant::now();
    let client = loop {
        let mut b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        b.capabilities(caps.clone());
        match b.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => break c,
            Err(e) if t.elapsed() > Duration::from_secs(30) => panic!("chromedriver: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    (driver, client, profile)
}
