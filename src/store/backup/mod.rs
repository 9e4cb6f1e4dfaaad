//! Backups and restores (DESIGN.md, "Backups"). A backup is every live sled key of one
//! consistent cut (`cut.rs`), in a versioned, checksummed, compressed file (`file.rs`). It
//! holds what rebuilds the store exactly (IDs and flags, links with cause, time and source,
//! events, properties with their times, refusals, suppressions and their secret, file parts,
//! the kept counts) and nothing else: no old log segments, so no forgotten data, and no graph
//! index (rebuilt by the restore). A restore (`restore.rs`) writes the entries into a new
//! store beside the destination and moves it into place only once all of it checked out.

mod cut;
mod file;
mod restore;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Store, codec};
use crate::error::{Error, Result};
use crate::op::{Timestamp, now};

pub(crate) use cut::Cut;
pub use file::BACKUP_FORMAT;
pub use restore::{BackupInfo, RestoreOptions, RestoreReport, check_backup, restore};

/// How a backup is taken.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// zstd level of the frames (1-19; default 1: the backup runs at the speed of the scan).
    pub level: i32,
    /// The most bytes of old values the backup keeps for keys writers change while it runs
    /// (default [`DEFAULT_MAX_PRESERVED_BYTES`]). Past it the backup fails with
    /// [`Error::Limit`]; the writes are never held back.
    pub max_preserved_bytes: usize,
    /// Run the backup's threads (the scan and the compression) at a lower CPU priority
    /// (Linux: nice 10), so that a server's tracking keeps the CPU it needs; the backup takes
    /// longer on a busy machine. Default: off (a backup of a store not in use).
    pub background: bool,
    /// Bytes of entries per frame before compression (default 1 MiB; at most 256 MiB, the
    /// largest frame a restore reads). Smaller frames compress worse.
    pub frame_bytes: usize,
}

/// The default of [`BackupOptions::max_preserved_bytes`]: 1 GiB.
pub const DEFAULT_MAX_PRESERVED_BYTES: usize = 1 << 30;

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            level: 1,
            max_preserved_bytes: DEFAULT_MAX_PRESERVED_BYTES,
            frame_bytes: file::FRAME_TARGET,
            background: false,
        }
    }
}

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupReport {
    /// Keys (entries) in the backup.
    pub entries: u64,
    /// Bytes of keys and values, uncompressed.
    pub data_bytes: u64,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// When the cut was taken.
    pub taken_at: Timestamp,
    /// How long writes waited for the cut (the writer lock held to install it).
    #[serde(serialize_with = "micros")]
    pub pause: Duration,
    /// Keys that writers changed during the backup before the scan reached them: their values
    /// at the cut were kept for it.
    pub preserved: u64,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

/// Lowers the calling thread's CPU priority (Linux: nice 10; elsewhere nothing). The thread
/// is one of the backup's own, which end with it.
fn lower_priority() {
    // On Linux each thread has its own nice value, named by its thread ID.
    #[cfg(target_os = "linux")]
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
}

/// Keys a backup leaves out: the graph index's stamp (the restore builds its own index), the
/// counts (the cut's own are written instead) and a redo record (never pending at a cut).
fn left_out(k: &[u8]) -> bool {
    k == codec::INDEX_STAMP_KEY || k == codec::DATA_COUNTS_KEY || k == codec::INTENT_KEY
}

/// Removes the cut when the backup ends, however it ends.
struct Installed<'a>(&'a Store);

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        *self.0.cut.write() = None;
    }
}

impl Store {
    /// Before a writer writes or removes `keys` (it holds the writer lock): keeps their
    /// values as of the cut of a backup in progress. Nothing while none runs.
    pub(crate) fn preserve<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) -> Result<()> {
        let cut = self.cut.read().clone();
        match cut {
            Some(cut) => cut.preserve(&self.db, keys),
            None => Ok(()),
        }
    }

    /// Waits until no backup runs (the bulk path writes without [`preserve`](Self::preserve)).
    pub(crate) fn wait_for_backup(&self) {
        while self.cut.read().is_some() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes a backup of the store to `out`: every write acknowledged before the call, and
    /// no half op (DESIGN.md, "Backups"). Writers go on meanwhile; they wait only while the
    /// cut is installed ([`BackupReport::pause`]). [`bulk_apply`](Self::bulk_apply) waits
    /// for the backup to end. `progress` is called with the bytes scanned so far.
    ///
    /// # Errors
    /// [`Error::Io`] when `out` fails; [`Error::Storage`] when sled cannot be read;
    /// [`Error::Limit`] past [`BackupOptions::max_preserved_bytes`]; [`Error::Internal`]
    /// when another backup of this handle runs; [`Error::Interrupted`] for a handle a failed
    /// write poisoned.
    pub fn backup(
        &self,
        out: &mut dyn Write,
        opts: &BackupOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<BackupReport> {
        let started = Instant::now();
        let cut = {
            let _w = self.writer.lock();
            let waited = started.elapsed();
            self.check_writable()?;
            let mut slot = self.cut.write();
            if slot.is_some() {
                return Err(Error::Internal(
                    "another backup of this store is running; try again when it ends".into(),
                ));
            }
            let cut = Arc::new(Cut::new(opts.max_preserved_bytes));
            *slot = Some(cut.clone());
            let counts = self.counts.data.lock().map(|c| {
                let limit = self.policy.limits.max_properties_per_id as u64;
                codec::encode_data_counts([c.events, c.properties, c.at_limit, limit])
            });
            (cut, counts, now(), started.elapsed() - waited)
        };
        let _installed = Installed(self);
        let (cut, counts, taken_at, pause) = cut;
        let mut w = file::FileWriter::new(out)?;
        // Three stages: the scan (sled in key order, through the cut), the compression, and
        // this thread writing to `out` (which need not be `Send`).
        let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (sealed_tx, sealed_rx) = std::sync::mpsc::sync_channel::<file::Sealed>(4);
        let (data_bytes, entries, preserved) = std::thread::scope(|s| -> Result<_> {
            let frame = opts.frame_bytes.clamp(1, file::MAX_FRAME_RAW / 2);
            let background = opts.background;
            let scan = s.spawn(move || {
                if background {
                    lower_priority();
                }
                self.scan(&cut, counts, frame, raw_tx, progress)
            });
            let seal = s.spawn(move || -> Result<u32> {
                if background {
                    lower_priority();
                }
                let mut seq = 0u32;
                for raw in raw_rx {
                    let sealed = file::seal_entries(seq, &raw, opts.level)?;
                    if sealed_tx.send(sealed).is_err() {
                        break; // the writer failed: it says why
                    }
                    seq += 1;
                }
                Ok(seq)
            });
            // Dropping the receiver on a failure stops the stages before it.
            let written = sealed_rx.into_iter().try_for_each(|f| w.write(&f));
            let panicked = |_| Error::Internal("a thread of the backup panicked".into());
            let sealed = seal.join().map_err(panicked)?;
            let scanned = scan.join().map_err(panicked)?;
            written?;
            let seq = sealed?;
            let (data_bytes, entries, preserved) = scanned?;
            let source_format = self
                .db
                .get(codec::FORMAT_KEY)?
                .and_then(|v| codec::decode_format(&v))
                .unwrap_or(codec::FORMAT_VERSION);
            let t = file::Trailer {
                entries,
                data_bytes,
                frames: seq,
                taken_at,
                source_format,
            };
            w.write(&file::seal_trailer(seq, &t)?)?;
            Ok((data_bytes, entries, preserved))
        })?;
        let file_bytes = w.bytes;
        w.finish()?;
        Ok(BackupReport {
            entries,
            data_bytes,
            file_bytes,
            taken_at,
            pause,
            preserved,
        })
    }

    /// The scan of a backup: sled in key order, each run of keys passed through the cut,
    /// sent as the raw bytes of one frame. Returns the bytes and entries sent and the keys
    /// writers kept.
    fn scan(
        &self,
        cut: &Cut,
        counts: Option<[u8; 32]>,
        frame_bytes: usize,
        tx: std::sync::mpsc::SyncSender<Vec<u8>>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(u64, u64, u64)> {
        let closed = || Error::Internal("the backup's writer stopped".into());
        let (mut bytes, mut entries) = (0u64, 0u64);
        let mut iter = self.db.iter();
        let mut run: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        let send = |raw: Vec<u8>, bytes: &mut u64| -> Result<()> {
            if raw.len() > file::MAX_FRAME_RAW {
                return Err(Error::Limit {
                    what: "bytes in one frame of a backup (an entry too large to back up)",
                    found: raw.len(),
                    max: file::MAX_FRAME_RAW,
                    limit: "MAX_FRAME_RAW",
                });
            }
            *bytes += raw.len() as u64;
            progress(*bytes);
            tx.send(raw).map_err(|_| closed())
        };
        loop {
            run.clear();
            let mut run_bytes = 0;
            for kv in iter.by_ref() {
                let (k, v) = kv?;
                run_bytes += k.len() + v.len() + 8;
                run.push((k, v));
                if run_bytes >= frame_bytes {
                    break;
                }
            }
            if run.is_empty() {
                break;
            }
            let emits = cut.pass(run.iter().map(|(k, _)| k))?;
            let mut raw = Vec::with_capacity(run_bytes);
            for ((k, v), e) in run.iter().zip(emits) {
                if left_out(k) {
                    continue;
                }
                let v = match &e {
                    cut::Emit::AsRead => v,
                    cut::Emit::Kept(old) => old,
                    cut::Emit::Skip => continue,
                };
                file::push_entry(&mut raw, k, v);
                entries += 1;
            }
            if !raw.is_empty() {
                send(raw, &mut bytes)?;
            }
        }
        let (rest, preserved) = cut.finish()?;
        let mut raw = Vec::new();
        for (k, v) in rest.iter().filter(|(k, _)| !left_out(k)) {
            file::push_entry(&mut raw, k, v);
            entries += 1;
        }
        if let Some(c) = counts {
            file::push_entry(&mut raw, codec::DATA_COUNTS_KEY, &c);
            entries += 1;
        }
        if !raw.is_empty() {
            send(raw, &mut bytes)?;
        }
        Ok((bytes, entries, preserved))
    }

    /// [`backup`](Self::backup) into the file `path`, which must not exist: written as
    /// `PATH.partial`, fsynced, then renamed, so that `path` is only ever a whole backup.
    ///
    /// # Errors
    /// As [`backup`](Self::backup); [`Error::Io`] when the file cannot be created (it
    /// exists) or written.
    pub fn backup_to_file(
        &self,
        path: &Path,
        opts: &BackupOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<BackupReport> {
        let io = |e| Error::io(path.display().to_string(), e);
        if path.exists() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the backup file exists; name a new file",
            )));
        }
        let partial = super::compact::sibling(path, ".partial");
        let result = (|| {
            let f = std::fs::File::create(&partial).map_err(io)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
            let r = self.backup(&mut out, opts, progress)?;
            let f = out.into_inner().map_err(|e| io(e.into_error()))?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&partial, path).map_err(io)?;
            super::recovery::sync_dir(&super::compact::parent(path)).map_err(io)?;
            Ok(r)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }
}
