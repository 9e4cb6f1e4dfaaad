//! A failing store says so: the server's store on a small tmpfs filled to the brim. After the
//! first failed write `/healthz` answers 503 within a second, writes are refused at once (503),
//! no write answered with an error is applied, and once space is back the store opens,
//! verifies and holds every acknowledged write. Needs root (it mounts the tmpfs).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::Server;
use idgraph::Config;

fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs of `size` on `dir`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs (root needed)");
        Tmpfs(dir.to_path_buf())
    }

    fn grow(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `GET path` on `base` with a timeout: `Some(status)`, or `None` when no answer came.
fn get(base: &str, path: &str, timeout: Duration) -> Option<u16> {
    let host = base.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(12)]).to_string();
    head.get(9..12)?.parse().ok()
}

#[test]
fn a_full_disk_is_reported_and_loses_no_acknowledged_write() {
    if !root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let fs = Tmpfs::mount(&mnt, "3m");
    let db = mnt.join("db");
    let srv = Server::start(&db, &["--sync", "--shutdown-grace", "1s"]);
    let pad: String = std::iter::repeat_n('x', 3000).collect();
    let (mut acked, mut refused, mut unanswered) = (Vec::new(), Vec::new(), 0);
    let mut first_failure = None;
    let mut healthz_503_after = None;
    for i in 0..4000 {
        let path = format!("/e?_k=demo&_p=u{}&_n=E{i}&pad={pad}", i % 10);
        match get(&srv.base, &path, Duration::from_secs(2)) {
            Some(200) => acked.push(i),
            Some(503) => refused.push(i),
            Some(other) => panic!("request {i}: status {other}"),
            None => unanswered += 1,
        }
        if acked.len() < i + 1 && first_failure.is_none() {
            first_failure = Some(Instant::now());
        }
        if let Some(t) = first_failure
            && healthz_503_after.is_none()
            && get(&srv.base, "/healthz", Duration::from_secs(2)) == Some(503)
        {
            healthz_503_after = Some(t.elapsed());
        }
        if refused.len() >= 20 {
            break;
        }
    }
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the disk filled"
    );
    assert!(
        refused.len() >= 20,
        "the disk never filled: {} acknowledged",
        acked.len()
    );
    let after = healthz_503_after.expect("/healthz never said the store is failing");
    assert!(
        after < Duration::from_secs(1),
        "/healthz said so after {after:?}"
    );
    let metrics = get(&srv.base, "/metrics", Duration::from_secs(2));
    assert_eq!(metrics, Some(200));
    srv.kill9();
    // Space is back: the store opens, verifies and holds every acknowledged write; no write
    // answered with an error is in it.
    fs.grow("64m");
    let store = Config::new(&db)
        .open()
        .expect("the store opens once space is back");
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    let names = |u: usize| -> Vec<String> {
        store
            .events(&format!("u{u}"))
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    };
    let all: Vec<Vec<String>> = (0..10).map(names).collect();
    for i in &acked {
        assert!(
            all[i % 10].contains(&format!("E{i}")),
            "acknowledged E{i} is gone"
        );
    }
    for i in &refused {
        assert!(
            !all[i % 10].contains(&format!("E{i}")),
            "E{i}, answered 503, was applied"
        );
    }
    eprintln!(
        "{} acknowledged, {unanswered} unanswered (outcome unknown), {} refused; /healthz 503 \
         after {after:?}",
        acked.len(),
        refused.len()
    );
}
