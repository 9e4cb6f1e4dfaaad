//! Arrow across the C data interface: the exports as streaming `pyarrow.RecordBatchReader`s,
//! `parse_lines` and `parse_csv`.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_pyarrow::{IntoPyArrow, PyArrowType, ToPyArrow};
use arrow_schema::{ArrowError, SchemaRef};
use pyo3::prelude::*;

use crate::detached;

/// Which export.
#[derive(Clone, Copy)]
pub enum Export {
    Mapping,
    Events,
}

/// Batches made ahead of the reader: the export's memory is these and the one being filled.
const AHEAD: usize = 2;

/// A reader fed by a thread that walks the store: `next` waits for its next batch. Dropping
/// it (the Python reader closed or collected) ends the walk at its next batch.
struct Streamed {
    schema: SchemaRef,
    rx: Receiver<Result<RecordBatch, ArrowError>>,
}

impl Iterator for Streamed {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl RecordBatchReader for Streamed {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

fn walk(store: &idgraph::Store, what: Export, tx: &SyncSender<Result<RecordBatch, ArrowError>>) {
    // The reader gone: stop walking (an error that nobody reads).
    let send = |b: RecordBatch| {
        tx.send(Ok(b))
            .map_err(|_| idgraph::Error::Interrupted(None))
    };
    let done = match what {
        Export::Mapping => idgraph::columnar::mapping_batches(store, send),
        Export::Events => idgraph::columnar::event_batches(store, send),
    };
    if let Err(e) = done
        && !matches!(e, idgraph::Error::Interrupted(None))
    {
        let _ = tx.send(Err(ArrowError::ExternalError(Box::new(e))));
    }
}

/// The export `what` of `store` as a `pyarrow.RecordBatchReader`.
pub fn export<'py>(
    py: Python<'py>,
    store: Arc<idgraph::Store>,
    what: Export,
) -> PyResult<Bound<'py, PyAny>> {
    let schema = match what {
        Export::Mapping => idgraph::columnar::mapping_schema(),
        Export::Events => idgraph::columnar::events_schema(),
    };
    let (tx, rx) = sync_channel(AHEAD);
    std::thread::Builder::new()
        .name("idgraph-export".into())
        .spawn(move || walk(&store, what, &tx))
        .map_err(|e| crate::IdgraphError::new_err(format!("starting the export: {e}")))?;
    let reader: Box<dyn RecordBatchReader + Send> = Box::new(Streamed { schema, rx });
    reader.into_pyarrow(py)
}

/// Parses lines of KISSmetrics JSON with the importer's own code (the rules of ``idgraph
/// import``, not a port of them).
///
/// ``batch``: a ``pyarrow.RecordBatch`` (or anything with ``__arrow_c_array__``) with
/// columns ``file`` (str: the name errors give), ``line`` (int: the line number) and ``text``
/// (the line's bytes, or str, with or without its line ending). ``blocked_ids``: the
/// blocked-ID list of the ``blocked`` column, as ``Store(blocked_ids=...)`` takes it (``None``:
/// the store's default list).
///
/// Returns ``(ops, rejected)``, two ``pyarrow.RecordBatch``: ``ops`` with columns ``file``,
/// ``line``, ``op`` (its place in the line), ``kind`` (``alias``, ``record``, ``set``), ``a``
/// (the ID; an alias's first), ``b`` (an alias's second ID), ``at`` (Unix s), ``cause``,
/// ``event``, ``event_folded`` (the name case-folded, as the store compares names),
/// ``properties`` (a JSON object as text, names sorted), ``property_list`` (one struct per
/// property in the line's order: ``name``, ``folded``, ``name_json``, ``value_json``) and
/// ``blocked`` (an alias's blocked endpoint, which refuses it); ``rejected`` with ``file``,
/// ``line``, ``error`` (``FILE:LINE: reason``, word for word what ``idgraph import`` says) and
/// ``reason``. Blank lines give neither. The GIL is released while it parses.
#[pyfunction]
#[pyo3(signature = (batch, *, blocked_ids=None))]
pub fn parse_lines<'py>(
    py: Python<'py>,
    batch: PyArrowType<RecordBatch>,
    blocked_ids: Option<Vec<String>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let batch = batch.0;
    let (ops, rejected) = detached(py, move || {
        idgraph::ingest::arrow::parse_lines(&batch, blocked_ids.as_deref())
    })?;
    Ok((ops.to_pyarrow(py)?, rejected.to_pyarrow(py)?))
}

/// Parses a whole CSV file with the importer's own code (its header, then each record, as
/// ``idgraph import`` reads a ``.csv`` file).
///
/// ``data``: the file's bytes. ``file``: the name errors give. ``now``: the time (Unix s) of an
/// alias row without a ``Timestamp`` (``None``: the current time, as the importer takes it).
/// ``blocked_ids``: as ``parse_lines`` takes it.
///
/// Returns ``(ops, rejected)``, the batches and columns of ``parse_lines`` (``line``: the line a
/// record starts on; a quoted field may span lines). Raises ``InputError`` (``FILE:LINE:
/// reason``) where the importer stops, ``--skip-invalid`` or not: a bad header, or a record
/// longer than ``MAX_LINE_BYTES``. The GIL is released while it parses.
#[pyfunction]
#[pyo3(signature = (data, *, file, now=None, blocked_ids=None))]
pub fn parse_csv<'py>(
    py: Python<'py>,
    data: &[u8],
    file: String,
    now: Option<i64>,
    blocked_ids: Option<Vec<String>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let now = now.unwrap_or_else(idgraph::now);
    let (ops, rejected) = detached(py, move || {
        idgraph::ingest::arrow::parse_csv(&file, data, now, blocked_ids.as_deref())
    })?;
    Ok((ops.to_pyarrow(py)?, rejected.to_pyarrow(py)?))
}

/// local_stars(batch) -> pyarrow.RecordBatch
///
/// The connected components of a batch of edges (columns ``u``, ``v``: 64-bit integers) as
/// star edges: ``u`` the smallest member of each component, ``v`` every other member, one row
/// each. The Spark job runs it on its links when they fit one task. The GIL is
/// released while it runs.
#[pyfunction]
pub fn local_stars<'py>(
    py: Python<'py>,
    batch: PyArrowType<RecordBatch>,
) -> PyResult<Bound<'py, PyAny>> {
    let batch = batch.0;
    let out = detached(py, move || idgraph::ingest::arrow::local_stars(&batch))?;
    out.to_pyarrow(py)
}
