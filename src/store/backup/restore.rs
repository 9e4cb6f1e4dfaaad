//! Restoring a backup into a new store. The entries go into `DEST.restoring` (a directory of
//! its own); once the trailer checked out, the store is opened there (the graph loaded, its
//! index written at close), suppressions applied and, if they forgot anyone, the store
//! compacted; only then is the directory renamed to `DEST`. A damaged or truncated file, or
//! any failure, removes `DEST.restoring` and leaves `DEST` absent.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::file::{self, FileReader, Frame};
use crate::error::{Error, Result};
use crate::op::Timestamp;
use crate::store::compact::{parent, sibling};
use crate::store::recovery::sync_dir;
use crate::store::{Config, SuppressionList};

/// How a backup is restored.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// The live store's suppressions (`idgraph export suppressions`): every person with an
    /// ID suppressed there is forgotten in the restored store, and the IDs stay suppressed,
    /// so that a restore never brings back someone forgotten after the backup was taken.
    pub suppressions: Option<SuppressionList>,
    /// Run [`Store::verify`](crate::Store::verify) on the restored store before it is moved
    /// into place; a broken invariant fails the restore.
    pub verify: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    /// Keys written.
    pub entries: u64,
    /// Bytes of keys and values.
    pub data_bytes: u64,
    /// When the backup's cut was taken.
    pub taken_at: Timestamp,
    /// The store format the backup's entries are in (upgraded at open when older).
    pub source_format: u32,
    /// IDs in the restored store.
    pub ids: u64,
    /// Persons forgotten because of the suppressions given.
    pub forgotten: u64,
    /// Whether [`RestoreOptions::verify`] ran (and passed).
    pub verified: bool,
}

/// Restores the backup read from `from` (named `name` in errors) into a new store at
/// `config`'s path, opened with `config`. `progress` is called with the bytes read so far.
///
/// # Errors
/// [`Error::Backup`] for a damaged, truncated or foreign file (nothing is created);
/// [`Error::Io`] when the destination exists or cannot be written; [`Error::Input`] for
/// suppressions of another store; [`Error::Corrupt`] when `verify` finds a problem;
/// [`Error::Storage`].
pub fn restore(
    from: impl Read,
    name: &str,
    config: &Config,
    opts: &RestoreOptions,
    progress: &dyn Fn(u64),
) -> Result<RestoreReport> {
    let dest = config
        .path
        .clone()
        .ok_or_else(|| Error::Internal("a restore needs a directory".into()))?;
    let io = |e| Error::io(dest.display().to_string(), e);
    if dest.exists() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the destination exists; restore into a new directory",
        )));
    }
    let work = sibling(&dest, ".restoring");
    if work.exists() {
        // Left by a restore that crashed: never a store anyone opened.
        std::fs::remove_dir_all(&work).map_err(io)?;
    }
    let result = restore_into(from, name, config, &work, opts, progress).and_then(|rep| {
        std::fs::rename(&work, &dest).map_err(io)?;
        sync_dir(&parent(&dest)).map_err(io)?;
        Ok(rep)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

fn restore_into(
    from: impl Read,
    name: &str,
    config: &Config,
    work: &Path,
    opts: &RestoreOptions,
    progress: &dyn Fn(u64),
) -> Result<RestoreReport> {
    let mut rep = write_entries(from, name, work, progress)?;
    let mut at_work = config.clone();
    at_work.path = Some(PathBuf::from(work));
    {
        let store = open_own(&at_work)?;
        if let Some(list) = &opts.suppressions {
            rep.forgotten = store.add_suppressions(list)?;
        }
        if opts.verify {
            let v = store.verify()?;
            if !v.is_ok() {
                return Err(Error::Corrupt(format!(
                    "the restored store fails verify: {}",
                    v.problems.join("; ")
                )));
            }
            rep.verified = true;
        }
        rep.ids = store.stats()?.ids;
        store.flush()?;
        // Closing writes the graph index and the counts.
    }
    if rep.forgotten > 0 {
        // forget removed keys; their bytes stay in sled's log until compacted.
        at_work.compact()?;
    }
    Ok(rep)
}

/// Opens the restore's own directory. No one else has it, but sled's I/O threads may hold its
/// lock a moment after the handle that wrote it closed ([`Config::open`] waits 1 s for
/// that); on a loaded machine, longer.
fn open_own(config: &Config) -> Result<crate::store::Store> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match config.clone().open() {
            Err(Error::Locked(_)) if std::time::Instant::now() < deadline => {}
            r => return r,
        }
    }
}

/// What a backup file holds, from its trailer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackupInfo {
    /// Keys (entries).
    pub entries: u64,
    /// Bytes of keys and values, uncompressed.
    pub data_bytes: u64,
    /// When its cut was taken.
    pub taken_at: Timestamp,
    /// The store format of its entries.
    pub source_format: u32,
}

/// Reads a whole backup and checks every frame and the trailer, writing nothing: what
/// [`restore`] would refuse, this refuses.
///
/// # Errors
/// As [`restore`] for the file.
pub fn check_backup(from: impl Read, name: &str) -> Result<BackupInfo> {
    let mut r = FileReader::new(from, name)?;
    let mut info = None;
    while let Some(frame) = r.next()? {
        if let Frame::Trailer(t) = frame {
            info = Some(BackupInfo {
                entries: t.entries,
                data_bytes: t.data_bytes,
                taken_at: t.taken_at,
                source_format: t.source_format,
            });
        }
    }
    info.ok_or_else(|| Error::Backup(format!("{name}: no trailer")))
}

/// The entries of the file into a new sled directory at `work`, made durable.
fn write_entries(
    from: impl Read,
    name: &str,
    work: &Path,
    progress: &dyn Fn(u64),
) -> Result<RestoreReport> {
    let mut r = FileReader::new(from, name)?;
    let db = sled::Config::new()
        .path(work)
        .create_new(true)
        .open()
        .map_err(Error::from)?;
    let mut rep = RestoreReport::default();
    while let Some(frame) = r.next()? {
        match frame {
            Frame::Entries(raw) => {
                let mut batch = sled::Batch::default();
                for e in file::entries(&raw) {
                    let (k, v) =
                        e.ok_or_else(|| Error::Backup(format!("{name}: a damaged entry")))?;
                    batch.insert(k, v);
                }
                db.apply_batch(batch)?;
                progress(r.offset());
            }
            Frame::Trailer(t) => {
                rep.entries = t.entries;
                rep.data_bytes = t.data_bytes;
                rep.taken_at = t.taken_at;
                rep.source_format = t.source_format;
            }
        }
    }
    db.flush()?;
    Ok(rep)
}
