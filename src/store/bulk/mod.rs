//! The bulk path: applying millions of ops from files much faster than one at a time, with the
//! same result (DESIGN.md, "Offline batch merging").
//!
//! One pass, a pipeline of four threads, reads every op, plans the whole identity graph in
//! memory (the same planner as [`Store::apply_batch`], so guardrails decide exactly as they
//! would one op at a time), aggregates properties to the latest value per ID and name, and
//! sorts the events (keyed by the nodes just planned) into runs in temporary files; a bad
//! input stops it before anything is written. Then the graph is committed, the ID records
//! (with their properties), edges and refusals are written, while a packing thread merges the
//! runs into packed blocks of events, written after the records.

mod ids;
mod pipeline;
mod props;
mod runs;

use ids::{BatchWriter, Ids};
use runs::Runs;

use crate::codec::{self};
use crate::error::{Error, Result};
use crate::source::OpSource;
use crate::store::Store;
use crate::store::events::BlockUpdate;
use crate::store::plan::{BulkPlan, DataCounts};

/// What a bulk apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BulkReport {
    /// Ops read.
    pub ops: u64,
    /// Events recorded.
    pub events: u64,
    /// Property sets (without an event).
    pub sets: u64,
    /// Alias ops.
    pub aliases: u64,
    /// Aliases that joined two persons.
    pub joined: u64,
    /// Aliases refused by a guardrail.
    pub refused: u64,
    /// Ops dropped because they name a forgotten, suppressed ID (`Store::forget`).
    pub suppressed: u64,
    /// IDs the store had not seen.
    pub new_ids: u64,
    /// sled keys written.
    pub keys_written: u64,
}

/// Tuning of the bulk path.
#[derive(Clone, Copy, Debug)]
pub struct BulkOptions {
    /// Keys per sled batch when writing; 1 = plain inserts. Default = 1: sorted plain inserts
    /// measured fastest (BENCHMARKS.md, "Bulk import").
    pub batch_keys: usize,
    /// Bytes of events held in memory (keys, values and 24 bytes of index each), sorted by key
    /// before they are written (sled inserts in key order cost less than random order). At
    /// most four such buffers exist at a time: one being filled, one queued, one being sorted
    /// and the last sorted run. Default = 32 MiB: larger buffers measured no faster and left a
    /// larger store (BENCHMARKS.md, "Knobs").
    pub memory_budget: usize,
    /// Target bytes of a block of packed events in its plain layout (DESIGN.md, "Packed
    /// events", "Compact blocks"). Default = 2.25 KiB (~0.8 KiB as stored): smaller blocks
    /// read faster, larger ones make fewer keys.
    pub event_block_bytes: usize,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            batch_keys: 1,
            memory_budget: 32 << 20,
            event_block_bytes: codec::EVENT_BLOCK_BYTES,
        }
    }
}

/// Event blocks go from the packing thread to the writing one in groups of this many bytes
/// (or one write, if larger: the rewrite of one stored block, as before).
const BLOCK_GROUP_BYTES: usize = 1 << 20;
/// Groups of event blocks built ahead of their writing, at most: ~48 MiB.
const BLOCK_GROUPS_AHEAD: usize = 48;

/// See [`Store::bulk_apply`]. The caller holds the writer lock.
/// `counts`: the store's data counts before the import, if kept; the import adds to them
/// what it wrote.
pub(crate) fn apply(
    store: &Store,
    source: &mut dyn OpSource,
    opts: BulkOptions,
    counts: Option<DataCounts>,
) -> Result<BulkReport> {
    let mut rep = BulkReport::default();
    let graph = store.graph()?;
    let before = graph.len();
    let _dir = store.path().map(std::path::Path::to_path_buf);
    let (planned, props, runs) = pipeline::read_pass(store, &graph, source, opts, &mut rep)?;
    rep.joined = planned.joined;
    rep.refused = planned.refused;
    rep.suppressed = planned.suppressed;
    let BulkPlan {
        writes,
        old_ids,
        new_ids,
        delta,
    } = planned.plan;
    let new_base = delta.base();
    drop(graph);
    store.graph_mut()?.commit(delta);
    rep.new_ids = (store.graph()?.len() - before) as u64;

    // Written in order, so that nothing on disk ever names a node whose record is not (a crash
    // leaves a store that opens; rerun the import): new ID records (an edge inside one names
    // an older record), changed ID records, the other edges and refusals, then the events
    // packed, then what was read of each file.
    let written = write_pass(
        store,
        source,
        opts,
        runs,
        Ids {
            base: new_base,
            new: new_ids,
            old: old_ids,
            props,
        },
        writes,
    );
    // Memory holds the whole import from here on; disk may hold part of it. Rather than
    // serve writes from a graph that disk does not match, the handle refuses them: reopening
    // loads what is on disk (a killed import's state; rerunning the import completes it).
    // The error itself is returned as it is; later writes get `Error::Interrupted`.
    let (written, added) = written.inspect_err(|_| {
        store
            .poisoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
    })?;
    rep.keys_written = written;
    // The counts kept for `stats`: packing tells a new event from one it replaces.
    if let Some(mut c) = counts {
        c.events += added.events;
        c.properties += added.properties;
        c.at_limit += added.at_limit;
        *store.counts.data.lock() = Some(c);
    }
    Ok(rep)
}

/// The write phase of [`apply`], after the graph is committed: the ID records, the other
/// `writes` (in key order), then the packed events, then what was read of each file. Returns
/// the keys written and the data added.
fn write_pass(
    store: &Store,
    source: &mut dyn OpSource,
    opts: BulkOptions,
    runs: Runs,
    ids: Ids,
    writes: crate::store::plan::Writes,
) -> Result<(u64, DataCounts)> {
    let db = &store.db;
    std::thread::scope(|scope| -> Result<(u64, DataCounts)> {
        // A packing thread merges the runs and builds the event blocks while this one writes
        // the ID records; the blocks wait in a channel bounded in bytes (groups of
        // BLOCK_GROUP_BYTES, BLOCK_GROUPS_AHEAD of them) and are written after them.
        let (btx, brx) = std::sync::mpsc::sync_channel::<Vec<BlockUpdate>>(BLOCK_GROUPS_AHEAD);
        let packer = scope.spawn(move || -> Result<(u64, u64)> {
            let stopped = || Error::Internal("the import's writing thread stopped".into());
            let (mut group, mut bytes) = (Vec::new(), 0);
            let packed = runs.finish(db, opts.event_block_bytes, &mut |b| {
                bytes += b.bytes();
                group.push(b);
                if bytes >= BLOCK_GROUP_BYTES {
                    bytes = 0;
                    btx.send(std::mem::take(&mut group))
                        .map_err(|_| stopped())?;
                }
                Ok(())
            })?;
            btx.send(group).map_err(|_| stopped())?;
            Ok(packed)
        });
        let mut w = BatchWriter::new(db, opts.batch_keys);
        let mut added = DataCounts::default();
        let mine = (|| -> Result<()> {
            ids.write(db, store, &mut w, &mut added)?;
            for (k, v) in writes {
                w.put(k, v)?; // in key order: a BTreeMap
            }
            w.flush()?;
            for b in brx.iter().flatten() {
                if b.folds() {
                    // A block rewrite removes the `v` keys it folds in: readers read again
                    // rather than miss an event between the old block and the keys.
                    store.removing(|| b.apply(db))?;
                } else {
                    b.apply(db)?;
                }
            }
            Ok(())
        })();
        drop(brx); // a packer waiting to send gives up
        let packed = packer
            .join()
            .expect("the bulk packing thread does not panic");
        // This thread's error first: the packer's would only be the closed channel.
        mine?;
        let (new, blocks) = packed?;
        added.events += new;
        w.written += blocks;
        if blocks > 0 {
            store.packed_upto.store(
                super::events::packed_upto(db)?,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        for (path, part) in source.file_parts() {
            let key = codec::file_key(path.as_os_str().as_encoded_bytes());
            w.put(key, codec::encode(&part)?)?;
        }
        w.flush()?;
        Ok((w.written, added))
    })
}
