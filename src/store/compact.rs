//! `compact`: the store rewritten with its live data only, so that nothing of a forgotten
//! person stays on disk. sled is log-structured: `forget` removes keys, but their old values
//! stay in old log segments (and blobs) until sled happens to reclaim them. Compacting copies
//! every live key, in order, into a new sled directory beside the store, makes it durable,
//! and swaps the two directories; the old one is then deleted.
//!
//! Crash safety: the new directory is `STORE.compact-new` until it is complete, which a marker
//! file inside it (`COMPACTED`, fsynced) says. The swap renames `STORE` to `STORE.compact-old`,
//! then `STORE.compact-new` to `STORE`, fsyncs the parent, and deletes the old directory.
//! Opening a store finishes or undoes a compaction a crash interrupted
//! ([`finish_interrupted`]): whatever the moment, the store is the old one or the new one,
//! never neither, never half.

use std::path::{Path, PathBuf};

use crate::codec;
use crate::error::{Error, Result};
use crate::store::recovery::sync_dir;
use crate::store::{Config, Store};

/// The marker of a complete new directory.
const MARKER: &str = "COMPACTED";

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// Keys copied.
    pub keys: u64,
    /// Bytes the store's directory held before.
    pub bytes_before: u64,
    /// Bytes it holds after.
    pub bytes_after: u64,
}

pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

pub(crate) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Bytes of every file under `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(std::result::Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Before a store at `path` is opened: finishes a compaction that a crash interrupted after
/// its new directory was complete, or drops one that was not.
pub(crate) fn finish_interrupted(path: &Path) -> Result<()> {
    let io = |e| Error::io(path.display().to_string(), e);
    let new = sibling(path, ".compact-new");
    let old = sibling(path, ".compact-old");
    let complete = new.join(MARKER).exists();
    if !path.exists() {
        if complete {
            std::fs::rename(&new, path).map_err(io)?;
        } else if old.exists() {
            std::fs::rename(&old, path).map_err(io)?;
        } else {
            return Ok(());
        }
        sync_dir(&parent(path)).map_err(io)?;
    }
    for leftover in [&new, &old] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover).map_err(io)?;
            sync_dir(&parent(path)).map_err(io)?;
        }
    }
    let marker = path.join(MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(io)?;
        sync_dir(path).map_err(io)?;
    }
    Ok(())
}

/// Rewrites the store at `path` (not in use by another process) with its live data only; see
/// the module's docs.
pub(crate) fn compact(config: Config) -> Result<Compacted> {
    let path = config
        .path
        .clone()
        .ok_or_else(|| Error::Internal("a temporary store has nothing to compact".into()))?;
    let bytes_before = dir_bytes(&path);
    // Opening finishes any redo record and any earlier compaction, and holds the lock.
    let store = config.clone().open()?;
    let keys = copy_live(&store)?;
    // The old handle must not write its index or counts into the directory being retired.
    store.retire();
    drop(store);
    swap_in(&path)?;
    // Opened once more: the graph is loaded from the copy and its index written at close.
    drop(config.open()?);
    Ok(Compacted {
        keys,
        bytes_before,
        bytes_after: dir_bytes(&path),
    })
}

/// Copies every live key of `store`, in order, into a new sled directory beside it
/// (`STORE.compact-new`), made durable and marked complete. Writes must be paused (the caller
/// holds the writer, or no one else has the store); readers may go on. Returns the keys
/// copied.
pub(crate) fn copy_live(store: &Store) -> Result<u64> {
    let path = store
        .path()
        .ok_or_else(|| Error::Internal("a temporary store has nothing to compact".into()))?
        .to_path_buf();
    let io = |e| Error::io(path.display().to_string(), e);
    let new = sibling(&path, ".compact-new");
    if new.exists() {
        std::fs::remove_dir_all(&new).map_err(io)?;
    }
    let mut keys = 0;
    {
        let dst = sled::Config::new()
            .path(&new)
            .create_new(true)
            .open()
            .map_err(Error::from)?;
        // Batches bounded in keys and in bytes: an ID record may hold megabytes.
        let mut batch = sled::Batch::default();
        let (mut in_batch, mut bytes) = (0, 0);
        for kv in store.db.iter() {
            let (k, v) = kv?;
            // The graph index is rebuilt, not copied; a redo record cannot be left between
            // whole writes.
            if k.as_ref() == codec::INDEX_STAMP_KEY || k.as_ref() == codec::INTENT_KEY {
                continue;
            }
            bytes += k.len() + v.len();
            batch.insert(k, v);
            in_batch += 1;
            keys += 1;
            if in_batch == 10_000 || bytes >= 8 << 20 {
                dst.apply_batch(std::mem::take(&mut batch))?;
                (in_batch, bytes) = (0, 0);
            }
        }
        dst.apply_batch(batch)?;
        dst.flush()?;
    }
    std::fs::write(new.join(MARKER), b"complete\n").map_err(io)?;
    std::fs::File::open(new.join(MARKER))
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    sync_dir(&new).map_err(io)?;
    sync_dir(&parent(&path)).map_err(io)?;
    Ok(keys)
}

/// Puts the complete copy in the store's place, once no handle has the store open: renames
/// the store to `STORE.compact-old` and the copy to `STORE`, then deletes the old one.
pub(crate) fn swap_in(path: &Path) -> Result<()> {
    let io = |e| Error::io(path.display().to_string(), e);
    let (new, old) = (sibling(path, ".compact-new"), sibling(path, ".compact-old"));
    std::fs::rename(path, &old).map_err(io)?;
    std::fs::rename(&new, path).map_err(io)?;
    sync_dir(&parent(path)).map_err(io)?;
    std::fs::remove_dir_all(&old).map_err(io)?;
    std::fs::remove_file(path.join(MARKER)).map_err(io)?;
    sync_dir(path).map_err(io)?;
    sync_dir(&parent(path)).map_err(io)
}

/// Drops an incomplete copy (after a failure of [`copy_live`]).
#[cfg(feature = "server")]
pub(crate) fn drop_copy(path: &Path) {
    let _ = std::fs::remove_dir_all(sibling(path, ".compact-new"));
}

impl Store {
    /// Marks the handle as one whose directory is about to be replaced: closing it writes
    /// neither the graph index nor the counts.
    pub(crate) fn retire(&self) {
        self.poisoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
