//! Backups while serving: `GET /api/admin/backup` (admin token) streams one
//! ([`Store::backup`]), and `--backup-dir` takes one every `--backup-every` into a directory,
//! keeping the newest `--backup-keep`. Tracking goes on meanwhile: writes wait only while the
//! cut is installed. An erasure that comes due during a backup waits for the next check (the
//! backup holds the store).

use std::pin::Pin;
use std::task::{Context, Poll};

use super::*;
use crate::store::BackupOptions;

/// Scheduled backups (`--backup-dir`).
#[derive(Clone, Debug)]
pub struct BackupSchedule {
    /// Where the files go: `idgraph-YYYYMMDDTHHMMSSZ.backup`.
    pub dir: std::path::PathBuf,
    /// How often.
    pub every: Duration,
    /// How many of the newest files to keep (older ones are deleted after each success;
    /// at least 1).
    pub keep: usize,
}

/// The outcome of the last backups, for `/metrics`.
#[derive(Default)]
pub(super) struct BackupMetrics {
    pub(super) ok: AtomicU64,
    pub(super) failed: AtomicU64,
    /// Unix seconds, bytes, milliseconds and write pause (µs) of the last success.
    pub(super) last: Mutex<Option<(i64, u64, u64, u64)>>,
}

impl BackupMetrics {
    fn record(&self, r: &Result<crate::store::BackupReport>, took: Duration) {
        match r {
            Ok(rep) => {
                self.ok.fetch_add(1, Relaxed);
                *self.last.lock() = Some((
                    rep.taken_at,
                    rep.file_bytes,
                    took.as_millis() as u64,
                    rep.pause.as_micros() as u64,
                ));
            }
            Err(_) => {
                self.failed.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The response body of a backup: what the backup thread sends, as it sends it. An error
/// ends the body early (the client then sees a file without its trailer).
struct Streamed(
    Option<Bytes>,
    tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
);

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::io::Result<http_body::Frame<Bytes>>>> {
        if let Some(first) = self.0.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        self.1
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

/// The backup thread's output: buffered, sent in pieces of 256 KiB (waits while the client
/// is slower than the backup; the cut keeps old values meanwhile).
struct ToChannel {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ToChannel {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 256 << 10 {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.buf));
            self.tx
                .blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::other("the client went away"))?;
        }
        Ok(())
    }
}

/// A server's backups run at a lower CPU priority: tracking keeps the CPU it needs.
fn background() -> BackupOptions {
    BackupOptions {
        background: true,
        ..BackupOptions::default()
    }
}

/// `GET /api/admin/backup`: the backup file, streamed as it is taken.
pub(super) async fn backup(State(s): St, headers: HeaderMap) -> Response {
    if let Some(r) = s.deny(&headers, Access::Admin) {
        s.metrics.count("api", r.status());
        return r;
    }
    let store = match s.slot.get() {
        Ok(st) => st,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let metrics = s.backups.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut out = ToChannel {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        let r = store.backup(&mut out, &background(), &|_| {});
        metrics.record(&r, started.elapsed());
        if let Err(e) = r.and_then(|_| {
            std::io::Write::flush(&mut out).map_err(|e| Error::io("sending the backup", e))
        }) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    // The status waits for the first bytes: a backup that cannot start (another one runs,
    // the store failed) is an error status, not an empty file.
    let first = match rx.recv().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            let r = text(StatusCode::CONFLICT, e.to_string());
            s.metrics.count("api", r.status());
            return r;
        }
        None => return text(StatusCode::INTERNAL_SERVER_ERROR, "the backup stopped"),
    };
    s.metrics.count("api", StatusCode::OK);
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"idgraph.backup\"",
            ),
        ],
        axum::body::Body::new(Streamed(Some(first), rx)),
    )
        .into_response()
}

/// Takes a backup into `sched.dir` every `sched.every`, then deletes all but the newest
/// `sched.keep`. A failure is logged and counted; the next one runs on time.
pub(super) fn schedule(sched: BackupSchedule, slot: Arc<erase::StoreSlot>, m: Arc<BackupMetrics>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sched.every);
        // A backup that ran long is not followed by a burst: the next one is a period later
        // (so two never share a second, the resolution of their names).
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now: the first backup comes one period in
        loop {
            tick.tick().await;
            let (sched, slot, m) = (sched.clone(), slot.clone(), m.clone());
            let done = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let r = slot.get().and_then(|store| scheduled(&store, &sched));
                m.record(&r, started.elapsed());
                if let Err(e) = r {
                    eprintln!("idgraph: backup into {} failed: {e}", sched.dir.display());
                }
            });
            if done.await.is_err() {
                return;
            }
        }
    });
}

/// One scheduled backup, then the oldest files past `keep` deleted.
fn scheduled(store: &Store, sched: &BackupSchedule) -> Result<crate::store::BackupReport> {
    let io = |e| Error::io(sched.dir.display().to_string(), e);
    std::fs::create_dir_all(&sched.dir).map_err(io)?;
    let name = format!("idgraph-{}.backup", utc_stamp(crate::op::now()));
    let rep = store.backup_to_file(&sched.dir.join(name), &background(), &|_| {})?;
    let mut files: Vec<_> = std::fs::read_dir(&sched.dir)
        .map_err(io)?
        .filter_map(std::result::Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("idgraph-") && n.ends_with(".backup"))
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(sched.keep.max(1));
    for old in &files[..excess] {
        std::fs::remove_file(sched.dir.join(old)).map_err(io)?;
    }
    Ok(rep)
}

/// `YYYYMMDDTHHMMSSZ` of Unix time `t` (seconds): sorts as time does. The date is
/// [`crate::dot::date`]'s.
pub(crate) fn utc_stamp(t: i64) -> String {
    let secs = t.rem_euclid(86_400);
    format!(
        "{}T{:02}{:02}{:02}Z",
        crate::dot::date(t).replace('-', ""),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_stamps_are_civil_time() {
        assert_eq!(super::utc_stamp(0), "19700101T000000Z");
        assert_eq!(super::utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(super::utc_stamp(1_796_540_399), "20261206T065959Z");
    }
}
