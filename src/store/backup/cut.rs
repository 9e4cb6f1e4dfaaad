//! The consistent cut of a backup taken while writers go on. sled has no snapshots, so the
//! backup makes one: the cut is installed under the writer lock (the only pause), then the
//! scan reads sled in key order without it. A writer that changes a key the scan has not yet
//! passed first keeps the key's value as of the cut ([`Store::preserve`]); the scan emits that
//! value instead of what it reads, and, at the end, the kept values of keys that were removed
//! before the scan reached them. Keys written after the cut that did not exist at it are kept
//! as "absent" and skipped. So the backup holds exactly what sled held at the cut.
//!
//! Why it is exact: a writer keeps a key's old value before it writes the key, under the
//! cut's lock, and only while the key is past the scan's position; the scan moves its position
//! and looks up kept values under the same lock. A key the scan read before its write is
//! either already passed (nothing kept; the scan emitted the old value it read) or not yet
//! (kept; the scan emits the kept value whatever it read).

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};

/// A backup in progress.
pub(crate) struct Cut {
    state: Mutex<State>,
    /// The most bytes of old values kept ([`BackupOptions::max_preserved_bytes`]).
    ///
    /// [`BackupOptions::max_preserved_bytes`]: super::BackupOptions::max_preserved_bytes
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    /// The scan has emitted every key up to and including this one (empty: none yet; every
    /// store key is at least one byte).
    pos: Vec<u8>,
    /// The scan is over: writers keep nothing more.
    done: bool,
    /// The value at the cut of each key written since, past `pos` (`None`: absent then).
    kept: FxHashMap<Vec<u8>, Option<sled::IVec>>,
    bytes: usize,
    /// Keys kept in all (for the report).
    count: u64,
    /// Set when `kept` would pass `max_bytes`: the backup fails.
    overflow: bool,
}

/// Keys removed after the cut before the scan reached them, with their values at the cut.
pub(crate) type Removed = Vec<(Vec<u8>, sled::IVec)>;

/// What the scan emits for one key it read.
pub(crate) enum Emit {
    /// The value it read.
    AsRead,
    /// The value at the cut, kept by a writer.
    Kept(sled::IVec),
    /// Nothing: the key did not exist at the cut.
    Skip,
}

impl Cut {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Cut {
            state: Mutex::new(State::default()),
            max_bytes,
        }
    }

    /// Before a writer writes or removes `keys`: keeps the value at the cut of each the scan
    /// has not passed. The caller holds the writer lock, so sled holds the value at the cut
    /// (or a value this backup already kept).
    pub(crate) fn preserve<K: AsRef<[u8]>>(
        &self,
        db: &sled::Db,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<()> {
        let mut st = self.state.lock();
        for k in keys {
            let k = k.as_ref();
            if st.done || st.overflow {
                return Ok(());
            }
            if k <= st.pos.as_slice() || st.kept.contains_key(k) {
                continue;
            }
            let v = db.get(k)?;
            st.bytes += k.len() + v.as_ref().map_or(0, |v| v.len()) + 64;
            st.count += 1;
            if st.bytes > self.max_bytes {
                st.overflow = true;
                st.kept.clear();
                return Ok(());
            }
            st.kept.insert(k.to_vec(), v);
        }
        Ok(())
    }

    /// For a run of keys the scan read, in order: what to emit for each. Moves the scan's
    /// position to the last.
    pub(crate) fn pass(&self, keys: impl Iterator<Item = impl AsRef<[u8]>>) -> Result<Vec<Emit>> {
        let mut st = self.state.lock();
        self.check(&st)?;
        let mut out = Vec::new();
        let mut last = None;
        for k in keys {
            let k = k.as_ref();
            out.push(match st.kept.remove(k) {
                None => Emit::AsRead,
                Some(Some(v)) => Emit::Kept(v),
                Some(None) => Emit::Skip,
            });
            last = Some(k.to_vec());
        }
        if let Some(k) = last {
            st.pos = k;
        }
        Ok(out)
    }

    /// Ends the scan: the values at the cut of keys removed before the scan reached them, and
    /// how many keys writers kept in all.
    pub(crate) fn finish(&self) -> Result<(Removed, u64)> {
        let mut st = self.state.lock();
        self.check(&st)?;
        st.done = true;
        let mut rest: Removed = std::mem::take(&mut st.kept)
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        rest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok((rest, st.count))
    }

    fn check(&self, st: &State) -> Result<()> {
        if st.overflow {
            return Err(Error::Limit {
                what: "bytes of old values kept for the writes made during the backup",
                found: st.bytes,
                max: self.max_bytes,
                limit: "max_preserved_bytes",
            });
        }
        Ok(())
    }
}
