//! Suppressions: what makes a forgotten person stay forgotten. `forget` records a keyed hash of
//! each forgotten ID (BLAKE2b-128 keyed with the store's 32-byte secret, never the ID itself)
//! under `s` + hash. Later data naming a suppressed ID is dropped by the planner, whatever path
//! it comes by (`apply`, batches, imports, the server, `simulate`); an alias to one is refused
//! with [`RefusalReason::Suppressed`](crate::RefusalReason::Suppressed). `unsuppress` lifts it.
//!
//! The set is held in memory (16 bytes per forgotten ID); a store that never forgot pays
//! nothing: no hash is computed while it is empty. Anyone holding the store and its secret can
//! test whether a given ID was forgotten (that is what the check does), not list the IDs.

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use rustc_hash::FxHashSet;

use crate::codec;
use crate::error::{Error, Result};

/// The keyed hash of one ID.
pub(crate) type Hash = [u8; 16];

/// Suppressions written, to add to memory once the write succeeded.
pub(crate) struct Added {
    key: [u8; 32],
    hashes: Vec<Hash>,
}

/// The secret and the set, as loaded at open and kept by the writers.
pub(crate) struct Suppressions {
    key: RwLock<Option<[u8; 32]>>,
    set: RwLock<FxHashSet<Hash>>,
    /// Whether the set is empty (read without a lock on every op).
    empty: AtomicBool,
}

/// The keyed hash of `id` under `key`: BLAKE2b with a 16-byte output (RFC 7693), the same as
/// Python's `hashlib.blake2b(id, key=key, digest_size=16)` (the Spark job's).
pub(crate) fn hash(key: &[u8; 32], id: &str) -> Hash {
    let mut m = <blake2::Blake2bMac<U16> as KeyInit>::new_from_slice(key).expect("a 32-byte key");
    m.update(id.as_bytes());
    m.finalize().into_bytes().into()
}

impl Suppressions {
    /// Loads the secret and the set from sled.
    pub(crate) fn load(db: &sled::Db) -> Result<Self> {
        let key = match db.get(codec::SUPPRESS_KEY)? {
            None => None,
            Some(v) => Some(
                <[u8; 32]>::try_from(v.as_ref())
                    .map_err(|_| Error::Corrupt("the suppression key is not 32 bytes".into()))?,
            ),
        };
        let mut set = FxHashSet::default();
        for kv in db.scan_prefix([codec::SUPPRESSED]) {
            let (k, _) = kv?;
            set.insert(
                Hash::try_from(&k[1..]).map_err(|_| {
                    Error::Corrupt(format!("a suppression key of {} bytes", k.len()))
                })?,
            );
        }
        Ok(Suppressions {
            key: RwLock::new(key),
            empty: AtomicBool::new(set.is_empty()),
            set: RwLock::new(set),
        })
    }

    /// Whether `id` was forgotten and not unsuppressed. O(1) and no hashing while the set is
    /// empty.
    pub(crate) fn contains(&self, id: &str) -> bool {
        let set = self.set.read();
        if set.is_empty() {
            return false;
        }
        match &*self.key.read() {
            Some(key) => set.contains(&hash(key, id)),
            None => false,
        }
    }

    /// How many IDs are suppressed.
    pub(crate) fn len(&self) -> usize {
        self.set.read().len()
    }

    /// Whether no ID is suppressed.
    pub(crate) fn is_empty(&self) -> bool {
        self.empty.load(Ordering::Relaxed)
    }

    /// The writes that suppress `ids` (the secret too, when this is the first suppression),
    /// and what to [`add`](Self::add) once they are written.
    pub(crate) fn writes(
        &self,
        ids: &[String],
        at: crate::op::Timestamp,
    ) -> (Vec<codec::RedoEntry>, Added) {
        let mut writes = Vec::with_capacity(ids.len() + 1);
        let key = match *self.key.read() {
            Some(k) => k,
            None => {
                let k: [u8; 32] = rand::random();
                writes.push((codec::SUPPRESS_KEY.to_vec(), Some(k.to_vec())));
                k
            }
        };
        let hashes: Vec<Hash> = ids.iter().map(|id| hash(&key, id)).collect();
        for h in &hashes {
            writes.push((
                codec::suppressed_key(h).to_vec(),
                Some(at.to_be_bytes().to_vec()),
            ));
        }
        (writes, Added { key, hashes })
    }

    /// Adds written suppressions (and the secret, if it was new) to memory.
    pub(crate) fn add(&self, added: Added) {
        self.key.write().get_or_insert(added.key);
        let mut set = self.set.write();
        set.extend(added.hashes);
        self.empty.store(set.is_empty(), Ordering::Relaxed);
    }

    /// The key of `id`'s suppression, if it is suppressed.
    pub(crate) fn key_of(&self, id: &str) -> Option<[u8; 17]> {
        let h = hash((*self.key.read()).as_ref()?, id);
        self.set
            .read()
            .contains(&h)
            .then(|| codec::suppressed_key(&h))
    }

    /// Removes `id`'s suppression from the set (after its key was removed from sled).
    pub(crate) fn remove(&self, id: &str) {
        if let Some(key) = *self.key.read() {
            let mut set = self.set.write();
            set.remove(&hash(&key, id));
            self.empty.store(set.is_empty(), Ordering::Relaxed);
        }
    }

    /// The secret (hex) and the hashes (hex), for `idgraph export suppressions`.
    pub(crate) fn export(&self) -> Option<(String, Vec<String>)> {
        let key = (*self.key.read())?;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut v: Vec<String> = self.set.read().iter().map(|h| hex(h)).collect();
        v.sort();
        Some((hex(&key), v))
    }
}

impl crate::store::Store {
    /// Lifts the suppression `forget` put on `id`: data naming it is taken again. Returns
    /// whether it was suppressed.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when sled cannot be written.
    pub fn unsuppress(&self, id: &str) -> Result<bool> {
        let _w = self.writer.lock();
        self.begin_write()?;
        let Some(key) = self.suppressed.key_of(id) else {
            return Ok(false);
        };
        self.preserve([key])?;
        self.db.remove(key)?;
        self.suppressed.remove(id);
        Ok(true)
    }

    /// The suppressions, for a rebuild elsewhere (the Spark job's `--suppressions`): the
    /// store's secret and the keyed hash of every suppressed ID, in hex. `None` when nothing
    /// was ever forgotten.
    pub fn suppressions(&self) -> Option<(String, Vec<String>)> {
        self.suppressed.export()
    }

    /// Whether `id` is suppressed (forgotten, not unsuppressed).
    pub fn is_suppressed(&self, id: &str) -> bool {
        self.suppressed.contains(id)
    }

    /// Adds the suppressions of another copy of this store (`idgraph export suppressions` of
    /// the live store, for a restore of an older backup) and forgets every person with a
    /// suppressed ID. Returns the persons forgotten. Their old bytes stay in sled's log until
    /// the store is compacted.
    ///
    /// # Errors
    /// [`Error::Input`] when the list's secret is not this store's (it comes from another
    /// store); [`Error::Storage`] when sled cannot be written.
    pub(crate) fn add_suppressions(&self, list: &SuppressionList) -> Result<u64> {
        {
            let _w = self.writer.lock();
            self.begin_write()?;
            let mut batch = sled::Batch::default();
            match *self.suppressed.key.read() {
                Some(k) if k != list.key => {
                    return Err(Error::Input(format!(
                        "{}: the suppressions were exported from another store (their secret \
                         is not this store's)",
                        list.source
                    )));
                }
                Some(_) => {}
                None => batch.insert(codec::SUPPRESS_KEY, &list.key[..]),
            }
            let at = crate::op::now().to_be_bytes();
            for h in &list.hashes {
                batch.insert(&codec::suppressed_key(h)[..], &at[..]);
            }
            self.db.apply_batch(batch)?;
            self.suppressed.add(Added {
                key: list.key,
                hashes: list.hashes.clone(),
            });
        }
        let mut named = Vec::new();
        self.for_each_id(|id, _, _| {
            if self.suppressed.contains(id) {
                named.push(id.to_owned());
            }
            Ok(())
        })?;
        let mut forgotten = 0;
        for id in named {
            forgotten += u64::from(self.forget(&id)?.is_some());
        }
        Ok(forgotten)
    }
}

/// The suppressions `idgraph export suppressions` writes: JSON lines, `{"key": hex}` (the
/// store's 32-byte secret) first, then `{"suppressed": hex}` (16 bytes) per ID.
#[derive(Clone, Debug)]
pub struct SuppressionList {
    source: String,
    key: [u8; 32],
    hashes: Vec<Hash>,
}

impl SuppressionList {
    /// Reads the list in `path`. An empty file (nothing was ever forgotten) is an empty list
    /// (`None`).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Input`] with `FILE:LINE` and why
    /// for a line that is not one of the two shapes, a secret that is not first or not 32
    /// bytes, or a hash that is not 16.
    pub fn read(path: &std::path::Path) -> Result<Option<SuppressionList>> {
        use std::io::{BufRead, Read};
        /// A line is 80 bytes; past this it is not a suppressions file.
        const MAX_LINE: u64 = 1024;
        let name = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| Error::io(name.clone(), e))?;
        let mut input = std::io::BufReader::new(f);
        let mut list: Option<SuppressionList> = None;
        let mut bytes = Vec::new();
        for i in 0.. {
            let bad = |why: &str| Error::Input(format!("{name}:{}: {why}", i + 1));
            bytes.clear();
            (&mut input)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut bytes)
                .map_err(|e| Error::io(format!("{name}:{}", i + 1), e))?;
            if bytes.is_empty() {
                break;
            }
            if bytes.len() as u64 > MAX_LINE {
                return Err(bad(&format!("a line longer than {MAX_LINE} bytes")));
            }
            let line = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8"))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(&format!("not JSON ({e})")))?;
            let field = |f: &str| v.get(f).and_then(|x| x.as_str());
            match (&mut list, field("key"), field("suppressed")) {
                (None, Some(hex), None) => {
                    let key =
                        unhex::<32>(hex).ok_or_else(|| bad("the key is not 64 hex digits"))?;
                    list = Some(SuppressionList {
                        source: name.clone(),
                        key,
                        hashes: Vec::new(),
                    });
                }
                (Some(l), None, Some(hex)) => l.hashes.push(
                    unhex::<16>(hex).ok_or_else(|| bad("a suppression is not 32 hex digits"))?,
                ),
                (None, _, _) => return Err(bad(r#"the first line must be {"key": HEX}"#)),
                (Some(_), _, _) => return Err(bad(r#"expected {"suppressed": HEX}"#)),
            }
        }
        Ok(list)
    }

    /// How many IDs it suppresses.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether it suppresses nothing.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    /// The same bytes as Python's `hashlib.blake2b(b"u1", key=bytes(range(32)),
    /// digest_size=16).hexdigest()`, computed with CPython 3.11: the Spark job hashes IDs that
    /// way.
    #[test]
    fn the_keyed_hash_is_pythons_blake2b() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let h = super::hash(&key, "u1");
        let hex: String = h.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hex, PYTHON_U1);
    }

    const PYTHON_U1: &str = "0b6c2f05a174a0e82f2ac751f14e3a20";
}
