//! The one pass of a bulk import as a pipeline of threads: read and parse, plan the graph,
//! aggregate properties and key the events, sort the events into runs.

use super::props::PropAgg;
use super::runs::{Buffer, Runs};
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::op::{AliasOutcome, Op, Outcome, RefusalReason};
use crate::source::OpSource;
use crate::store::Store;
use crate::store::plan::Planner;

/// Ops handed from the reading thread to the planning thread at a time.
pub(super) const OPS_PER_CHUNK: usize = 1024;
/// Chunks of ops read but not yet planned, at most (bounds the memory between the two).
pub(super) const OP_CHUNKS_IN_FLIGHT: usize = 8;

/// What the planning thread made of the ops.
pub(super) struct Planned {
    pub(super) plan: crate::store::plan::BulkPlan,
    pub(super) joined: u64,
    pub(super) refused: u64,
    pub(super) suppressed: u64,
}

/// The planning thread of [`apply`]: plans every op received on `ops`, in order, and hands
/// the events and property sets on with their nodes, in the same order.
pub(super) fn plan(
    store: &Store,
    graph: &crate::graph::Graph,
    ops: std::sync::mpsc::Receiver<Vec<Op>>,
    data: std::sync::mpsc::SyncSender<Vec<(Node, Op)>>,
) -> Result<Planned> {
    let mut planner = Planner::new(store, graph);
    planner.graph_only = true;
    let (mut joined, mut refused, mut suppressed) = (0, 0, 0);
    let stopped = || Error::Internal("the bulk aggregating thread stopped".into());
    for chunk in ops {
        let mut out = Vec::with_capacity(chunk.len());
        for op in chunk {
            match planner.apply(&op)? {
                Outcome::Alias(AliasOutcome::Joined { .. }) => joined += 1,
                Outcome::Alias(AliasOutcome::Refused(RefusalReason::Suppressed))
                | Outcome::Suppressed => {
                    // Dropped: names a forgotten ID.
                    suppressed += 1;
                    continue;
                }
                Outcome::Alias(AliasOutcome::Refused(_)) => refused += 1,
                _ => {}
            }
            if let Op::Record { id, .. } | Op::Set { id, .. } = &op {
                let n = planner
                    .last_node()
                    .ok_or_else(|| Error::Internal(format!("{id} was planned but has no node")))?;
                out.push((n, op));
            }
        }
        data.send(out).map_err(|_| stopped())?;
    }
    Ok(Planned {
        plan: planner.finish_bulk()?,
        joined,
        refused,
        suppressed,
    })
}

/// The aggregating thread of [`apply`]: the latest value of every property, and the events
/// handed to the sorter in buffers of `memory_budget` bytes.
pub(super) fn aggregate(
    store: &Store,
    data: std::sync::mpsc::Receiver<Vec<(Node, Op)>>,
    events: std::sync::mpsc::SyncSender<Buffer>,
    memory_budget: usize,
) -> Result<PropAgg> {
    let mut props = PropAgg::new(store.policy.limits.max_properties_per_id);
    let mut buf = Buffer::default();
    let stopped = || Error::Internal("the bulk sorter thread stopped".into());
    for (n, op) in data.into_iter().flatten() {
        let (properties, at) = match &op {
            Op::Record { properties, at, .. } | Op::Set { properties, at, .. } => (properties, *at),
            Op::Alias { .. } => continue,
        };
        if !properties.is_empty() {
            // Store-wide apply order, as one op at a time would take it.
            props.add(n, properties, at, store.db.generate_id()?)?;
        }
        if let Op::Record { event, .. } = &op {
            buf.push(n, event, properties, at)?;
            if buf.bytes() >= memory_budget {
                events
                    .send(std::mem::take(&mut buf))
                    .map_err(|_| stopped())?;
            }
        }
    }
    events.send(buf).map_err(|_| stopped())?;
    Ok(props)
}

/// The one pass of [`apply`](super::apply), on four threads in a pipeline: this one reads,
/// parses and validates the ops; a planning thread plans the graph; an aggregating thread
/// keeps the latest value of each property and keys the events by the nodes just planned; a
/// sorting thread sorts them into runs in temporary files. Ops go in order through each
/// channel, so the result is the one a single thread would make. Nothing reaches sled before
/// the whole input is read: a bad line stops the import with nothing written.
pub(super) fn read_pass(
    store: &Store,
    graph: &crate::graph::Graph,
    source: &mut dyn OpSource,
    opts: super::BulkOptions,
    rep: &mut super::BulkReport,
) -> Result<(Planned, PropAgg, Runs)> {
    let dir = store.path().map(std::path::Path::to_path_buf);
    let (otx, orx) = std::sync::mpsc::sync_channel::<Vec<Op>>(OP_CHUNKS_IN_FLIGHT);
    let (etx, erx) = std::sync::mpsc::sync_channel::<Buffer>(1);
    std::thread::scope(|scope| -> Result<(Planned, PropAgg, Runs)> {
        let spill_dir = dir.clone();
        let sorter = scope.spawn(move || -> Result<Runs> {
            let mut runs = Runs::new(spill_dir);
            for buf in erx {
                runs.push(buf)?;
            }
            Ok(runs)
        });
        let (dtx, drx) = std::sync::mpsc::sync_channel::<Vec<(Node, Op)>>(OP_CHUNKS_IN_FLIGHT);
        let aggregating = scope.spawn(move || aggregate(store, drx, etx, opts.memory_budget));
        let planning = scope.spawn(move || plan(store, graph, orx, dtx));
        let mut chunk = Vec::with_capacity(OPS_PER_CHUNK);
        let stopped = || Error::Internal("the bulk planning thread stopped".into());
        let read = source.for_each(&mut |op| {
            op.validate_with(&store.policy.limits)?;
            rep.ops += 1;
            match &op {
                Op::Alias { .. } => rep.aliases += 1,
                Op::Record { .. } => rep.events += 1,
                Op::Set { .. } => rep.sets += 1,
            }
            chunk.push(op);
            if chunk.len() == OPS_PER_CHUNK {
                otx.send(std::mem::take(&mut chunk))
                    .map_err(|_| stopped())?;
                chunk.reserve(OPS_PER_CHUNK);
            }
            Ok(())
        });
        let sent = read.and_then(|()| otx.send(chunk).map_err(|_| stopped()));
        drop(otx);
        let planned = planning
            .join()
            .expect("the bulk planning thread does not panic");
        let props = aggregating
            .join()
            .expect("the bulk aggregating thread does not panic");
        let runs = sorter
            .join()
            .expect("the bulk sorter thread does not panic");
        // A failing thread stops the one before it (the sorter the aggregating, which stops
        // the planning, which stops the reading): report the first error, not the closed
        // channels it left behind.
        let runs = runs?;
        let props = props?;
        let planned = planned?;
        sent?;
        Ok((planned, props, runs))
    })
}
