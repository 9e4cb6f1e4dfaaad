//! The commit strategy of one batch's writes, chosen by their size: one key is a plain insert
//! (atomic on its own); several keys up to a bound go through a redo record (written, applied
//! as plain inserts in key order, removed; finished at the next open after a crash); more, one
//! sled batch. It also tells how many of the batch's events replace a stored one.

use super::{Store, codec, events, plan::Writes, recovery};
use crate::error::Result;

/// The largest write (keys and values) of one op that goes through a redo record; a larger
/// one is a sled batch. The redo record copies every byte once more (written, then removed),
/// which past a few tens of KiB costs more than a batch's fixed cost (`cargo bench --bench
/// hostile`).
const REDO_MAX_BYTES: usize = 32 << 10;

/// The same limit for a batch of several ops: a redo record and plain inserts hold far less
/// memory than one sled batch of the same writes (BENCHMARKS.md, "Batches").
const REDO_BATCH_MAX_BYTES: usize = 4 << 20;

impl Store {
    /// Writes `writes`, the planned writes of a batch of `ops` ops, under the writer lock.
    /// Returns how many of its events replace a stored one (same ID, name and second), counted
    /// only while the data counts are kept; `None` when a lookup failed once all was written
    /// (the counts are then unknown: `stats` counts again).
    pub(super) fn commit(&self, writes: Writes, ops: usize) -> Result<Option<u64>> {
        // Planned events that replace a stored one (same ID, name and second) add nothing to
        // the count of events: a plain insert says so itself, as do the inserts of a redo
        // record's replay; a sled batch does not: one read per event key before it.
        let counting = self.counts.data.lock().is_some();
        let mut replaced = 0u64;
        let mut unknown = false;
        // An event also replaces its packed copy (DESIGN.md, "Packed events"), looked up
        // only for a node that blocks may hold, and only when no `v` key was replaced.
        let upto = self.packed_upto.load(std::sync::atomic::Ordering::Relaxed);
        let packed = |k: &[u8]| -> Result<bool> {
            Ok(codec::key_node(k)?.as_u64() < upto && events::packed_contains(&self.db, k)?)
        };
        // Blocks of packed events the batch writes (`events::pack_new`): readers must look
        // them up from the moment the graph shows their nodes.
        let packed_after = writes
            .range(vec![codec::EVENT_BLOCK]..vec![codec::EVENT_BLOCK + 1])
            .next_back()
            .map(|(k, _)| codec::key_node(k).map(|n| n.as_u64() + 1))
            .transpose()?;
        let event = |k: &[u8]| k.first() == Some(&codec::EVENT);
        // Counted after the write, from what each insert replaced, through a redo record; a
        // sled batch tells nothing of the values it replaced: looked up before it.
        let redo = writes.len() > 1
            && writes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                <= if ops == 1 {
                    REDO_MAX_BYTES
                } else {
                    REDO_BATCH_MAX_BYTES
                };
        if counting && writes.len() > 1 && !redo {
            for k in writes.keys().filter(|k| event(k)) {
                replaced += u64::from(self.db.contains_key(k)? || packed(k)?);
            }
        }
        // One key is atomic on its own and a plain insert costs a fraction of a sled batch.
        // Several keys (one op, or a batch up to REDO_BATCH_MAX_BYTES): a redo record, the
        // plain inserts in key order, and the record's removal; recovery at open finishes
        // writes whose record survived a crash. Larger: one sled batch.
        if writes.len() == 1 {
            let (k, v) = writes.into_iter().next().expect("one write");
            let event = k.first() == Some(&codec::EVENT);
            // The key is kept (a copy) only when a block may hold its event.
            let may_be_packed =
                event && counting && codec::key_node(&k).is_ok_and(|n| n.as_u64() < upto);
            let key = may_be_packed.then(|| k.clone());
            // A backup in progress keeps the value this key had at its cut (a redo record
            // does the same for its keys, in `write_redo`).
            self.preserve([&k])?;
            let old = self.db.insert(k, v)?;
            if event && old.is_some() {
                replaced += 1;
            } else if let Some(k) = key {
                // After the write: a failed lookup leaves the counts unknown, not the write
                // failed.
                match events::packed_contains(&self.db, &k) {
                    Ok(found) => replaced += u64::from(found),
                    Err(_) => unknown = true,
                }
            }
        } else if redo {
            // Events that replaced no `v` key may replace a packed copy: only below the blocks'
            // last node, looked up once the write is done (the batch's own blocks hold new
            // nodes only, past `upto`).
            let mut fresh = Vec::new();
            recovery::write_redo_telling(
                self,
                writes.into_iter().map(|(k, v)| (k, Some(v))).collect(),
                &mut |k, old| {
                    if !counting || !event(k) {
                    } else if old {
                        replaced += 1;
                    } else if codec::key_node(k).is_ok_and(|n| n.as_u64() < upto) {
                        fresh.push(k.to_vec());
                    }
                },
            )?;
            for k in fresh {
                match events::packed_contains(&self.db, &k) {
                    Ok(found) => replaced += u64::from(found),
                    // Written, not counted: the data counts are unknown from here on (and
                    // the batch goes on: its blocks must still be made visible below).
                    Err(_) => {
                        unknown = true;
                        break;
                    }
                }
            }
        } else if !writes.is_empty() {
            self.preserve(writes.keys())?;
            let mut batch = sled::Batch::default();
            for (k, v) in writes {
                batch.insert(k, v);
            }
            self.db.apply_batch(batch)?;
        }
        if let Some(upto) = packed_after {
            self.packed_upto
                .fetch_max(upto, std::sync::atomic::Ordering::Relaxed);
        }
        Ok((!unknown).then_some(replaced))
    }
}
