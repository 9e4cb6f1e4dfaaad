//! [`Config`]: how to open a store, a by-value builder whose setters document their defaults.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::id::DEFAULT_BLOCKED_IDS;
use crate::op::Limits;
use crate::store::Store;

/// How to open a [`Store`]: a by-value builder; every setter documents its default.
///
/// ```
/// # fn main() -> idgraph::Result<()> {
/// let store = idgraph::Config::temporary().max_person_size(500).open()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) path: Option<PathBuf>,
    pub(crate) temporary: bool,
    pub(crate) cache_capacity: u64,
    pub(crate) flush_every_ms: Option<u64>,
    pub(crate) blocked_ids: Vec<String>,
    pub(crate) max_person_size: u64,
    pub(crate) max_links_per_person: u32,
    pub(crate) max_refusals_logged: u64,
    pub(crate) limits: Limits,
}

/// The most IDs one person may hold, unless [`Config::max_person_size`] says otherwise.
pub const DEFAULT_MAX_PERSON_SIZE: u64 = 10_000;

impl Config {
    /// A store in the directory `path` (created when missing).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Config {
            path: Some(path.as_ref().to_path_buf()),
            temporary: false,
            cache_capacity: 256 << 20,
            flush_every_ms: Some(500),
            blocked_ids: DEFAULT_BLOCKED_IDS.iter().map(|s| s.to_string()).collect(),
            max_person_size: DEFAULT_MAX_PERSON_SIZE,
            max_links_per_person: 50_000,
            max_refusals_logged: 100_000,
            limits: Limits::default(),
        }
    }

    /// A store in a fresh temporary directory, deleted when the store is dropped.
    pub fn temporary() -> Self {
        let mut c = Config::new("");
        c.path = None;
        c.temporary = true;
        c
    }

    /// The directory. Default: none (set by [`Config::new`]).
    #[must_use]
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = Some(path.as_ref().to_path_buf());
        self.temporary = false;
        self
    }

    /// sled's page cache, in bytes. Default = 256 MiB. More helps only when the events and
    /// properties that are read often exceed it; BENCHMARKS.md ("Knobs") has the measured
    /// effect of other sizes.
    #[must_use]
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// How often sled flushes in the background; `None` = only on [`Store::flush`].
    /// Default = every 500 ms (sled's default). Data applied since the last flush can be lost in
    /// a crash; [`Store::flush`] makes everything before it durable. The interval bounds what a
    /// crash loses; its effect on speed is within the noise (BENCHMARKS.md, "Knobs").
    #[must_use]
    pub fn flush_every_ms(mut self, ms: Option<u64>) -> Self {
        self.flush_every_ms = ms;
        self
    }

    /// IDs refused as alias endpoints, compared case-insensitively and also when wrapped in
    /// quotes. Default = [`DEFAULT_BLOCKED_IDS`] (`null`, `undefined`, `guest`, `0`, ...).
    #[must_use]
    pub fn blocked_ids<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.blocked_ids = ids.into_iter().map(Into::into).collect();
        self
    }

    /// The most IDs one person may hold; a merge that would exceed it is refused.
    /// Default = 10,000.
    #[must_use]
    pub fn max_person_size(mut self, max: u64) -> Self {
        self.max_person_size = max.max(1);
        self
    }

    /// The most alias links one person may collect. The links that join IDs are always
    /// recorded (they make the person); past this many, a link between two IDs already in the
    /// same person (redundant: it changes no person) is not recorded, and counted
    /// (`Stats::links_not_recorded`). It bounds what a client repeating links into one person
    /// can store, and what `explain`, `unalias` and `links` walk. Default = 50,000 (5 per ID
    /// of the largest person allowed).
    #[must_use]
    pub fn max_links_per_person(mut self, max: u32) -> Self {
        self.max_links_per_person = max.max(1);
        self
    }

    /// The most refused merges the refusal log keeps (one record per distinct pair of IDs).
    /// Past it, a merge is refused all the same, but a pair not already in the log is not
    /// written, only counted (`Stats::refusals_not_logged`): a client pairing a blocked ID
    /// with fresh IDs can't grow the store without bound. Default = 100,000 (about 10 MB).
    #[must_use]
    pub fn max_refusals_logged(mut self, max: u64) -> Self {
        self.max_refusals_logged = max;
        self
    }

    /// What one op may carry (properties per op, value sizes); an op past a limit is refused
    /// with [`Error::Limit`](crate::Error::Limit) and nothing is stored. Default =
    /// [`Limits::default`] (256 properties, values of at most 8 KiB).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Opens (or creates) the store: checks the format version, finishes a write that a crash
    /// interrupted, and loads the graph.
    ///
    /// # Errors
    /// [`Error::IncompatibleFormat`](crate::Error::IncompatibleFormat) when the directory holds
    /// another format version; [`Error::Locked`](crate::Error::Locked) when another process
    /// holds it; [`Error::Storage`](crate::Error::Storage) when sled cannot open it;
    /// [`Error::Corrupt`](crate::Error::Corrupt) when stored records cannot be decoded.
    pub fn open(self) -> Result<Store> {
        crate::store::recovery::open(self)
    }

    /// Rewrites the store with its live data only: afterwards no file in its directory holds
    /// the bytes of anything deleted (a forgotten person's IDs, events and properties).
    /// Crash-safe (the store is the old one or the new one after a crash; the next open
    /// finishes or drops the interrupted compaction). Needs the store not in use by another
    /// process. Cost: one read of every live key and one write of it, and the disk space of
    /// the live data once more while it runs.
    ///
    /// # Errors
    /// As [`Config::open`]; [`Error::Io`](crate::Error::Io) when the directories cannot be
    /// written or renamed.
    pub fn compact(self) -> Result<crate::store::Compacted> {
        crate::store::compact::compact(self)
    }
}
