//! Starts `idgraph serve` on a free loopback port for a test, and talks to it.
#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-read-token";

/// A running server process; killed (SIGKILL) on drop unless stopped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub db: PathBuf,
    /// What it printed after its address line (read when it stops).
    pub banner: Vec<String>,
}

impl Server {
    /// Starts `idgraph --db DB serve --addr 127.0.0.1:0 --read-token TOKEN ARGS...`.
    pub fn start(db: &Path, args: &[&str]) -> Server {
        Server::start_with(db, args, true)
    }

    /// As [`start`](Self::start); without `token`, no `--read-token` is passed.
    pub fn start_with(db: &Path, args: &[&str], token: bool) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_idgraph"));
        cmd.env_remove("IDGRAPH_READ_TOKEN")
            .arg("--db")
            .arg(db)
            .args(["serve", "--addr", "127.0.0.1:0"]);
        if token {
            cmd.args(["--read-token", TOKEN]);
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start idgraph serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read the banner");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let mut banner = vec![line.trim_end().to_string()];
        // Keep reading in the background so the pipe never fills.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        banner.extend(rx.try_iter());
        std::mem::forget(rx);
        Server {
            child,
            base: format!("http://{addr}"),
            db: db.to_path_buf(),
            banner,
        }
    }

    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits (up to 20 s) for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::mem::forget(self);
                return st;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET` with the read token; (status, body).
pub async fn api(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c
        .get(url)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("request");
    let st = r.status().as_u16();
    (st, r.text().await.unwrap())
}

/// The JSON of a query-API `GET` that must succeed.
pub async fn api_json(c: &reqwest::Client, url: &str) -> serde_json::Value {
    let (st, body) = api(c, url).await;
    assert_eq!(st, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Percent-encodes an ID for a path segment.
pub fn seg(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}
