//! Columnar output (the `parquet` feature): the mapping and the events as Arrow record
//! batches, written as Parquet (zstd). The columns are the Spark job's, so that either side
//! reads the other's files:
//!
//! | file | columns |
//! |---|---|
//! | mapping | `id`, `person` (its canonical ID), `first_seen` (Unix s) |
//! | events | `_p` (the person), `_p_original` (the ID it was recorded under), `_n`, `_t` (Unix s), `properties` (a JSON object, as text) |
//!
//! Both stream: a batch of [`BATCH_ROWS`] rows is written as soon as it is full.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::store::{ExportedEvent, Store};

/// Rows per record batch (and per Parquet row group at most).
pub const BATCH_ROWS: usize = 65_536;

/// The mapping's columns.
pub fn mapping_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("person", DataType::Utf8, false),
        Field::new("first_seen", DataType::Int64, false),
    ]))
}

/// The events' columns.
pub fn events_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("_p", DataType::Utf8, false),
        Field::new("_p_original", DataType::Utf8, false),
        Field::new("_n", DataType::Utf8, false),
        Field::new("_t", DataType::Int64, false),
        Field::new("properties", DataType::Utf8, false),
    ]))
}

fn arrow_err(e: arrow_schema::ArrowError) -> Error {
    Error::Internal(format!("building a record batch: {e}"))
}

fn writing(e: parquet::errors::ParquetError) -> Error {
    Error::io("writing the Parquet export", std::io::Error::other(e))
}

/// Rows of the mapping, filled then taken as a batch.
#[derive(Default)]
struct MappingRows {
    id: StringBuilder,
    person: StringBuilder,
    first_seen: Int64Builder,
    len: usize,
}

impl MappingRows {
    fn push(&mut self, id: &str, person: &str, at: i64) {
        self.id.append_value(id);
        self.person.append_value(person);
        self.first_seen.append_value(at);
        self.len += 1;
    }

    fn take(&mut self, schema: &Arc<Schema>) -> Result<RecordBatch> {
        self.len = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.person.finish()),
            Arc::new(self.first_seen.finish()),
        ];
        RecordBatch::try_new(schema.clone(), cols).map_err(arrow_err)
    }
}

/// Rows of events, filled then taken as a batch.
#[derive(Default)]
struct EventRows {
    person: StringBuilder,
    original: StringBuilder,
    name: StringBuilder,
    at: Int64Builder,
    properties: StringBuilder,
    len: usize,
}

impl EventRows {
    fn push(&mut self, e: &ExportedEvent) {
        self.person.append_value(&e.person);
        self.original.append_value(&e.id);
        self.name.append_value(&e.event);
        self.at.append_value(e.at);
        self.properties.append_value(e.properties.to_json());
        self.len += 1;
    }

    fn take(&mut self, schema: &Arc<Schema>) -> Result<RecordBatch> {
        self.len = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.person.finish()),
            Arc::new(self.original.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.at.finish()),
            Arc::new(self.properties.finish()),
        ];
        RecordBatch::try_new(schema.clone(), cols).map_err(arrow_err)
    }
}

fn writer<W: Write + Send>(out: W, schema: &Arc<Schema>) -> Result<ArrowWriter<W>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(writing)?))
        .set_max_row_group_row_count(Some(BATCH_ROWS * 16))
        .build();
    ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(writing)
}

/// Calls `f` with the mapping (every ID, its person, when first seen) in record batches of at
/// most [`BATCH_ROWS`] rows, in first-seen order. Writers wait while it runs.
///
/// # Errors
/// What `f` returns; [`Error::Storage`] when the store cannot be read.
pub fn mapping_batches(store: &Store, mut f: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
    let schema = mapping_schema();
    let mut rows = MappingRows::default();
    store.for_each_id(|id, person, at| {
        rows.push(id, person, at);
        if rows.len >= BATCH_ROWS {
            f(rows.take(&schema)?)?;
        }
        Ok(())
    })?;
    if rows.len > 0 {
        f(rows.take(&schema)?)?;
    }
    Ok(())
}

/// Calls `f` with every event (as `export events` lists them) in record batches of at most
/// [`BATCH_ROWS`] rows. Streams: memory stays one batch. Writers wait while it runs.
///
/// # Errors
/// What `f` returns; [`Error::Storage`] or [`Error::Corrupt`] when an event cannot be read.
pub fn event_batches(store: &Store, mut f: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
    let schema = events_schema();
    let mut rows = EventRows::default();
    store.for_each_event(|e| {
        rows.push(&e);
        if rows.len >= BATCH_ROWS {
            f(rows.take(&schema)?)?;
        }
        Ok(())
    })?;
    if rows.len > 0 {
        f(rows.take(&schema)?)?;
    }
    Ok(())
}

/// Writes the mapping to `out` as a Parquet file; returns the rows written.
///
/// # Errors
/// [`Error::Io`] when `out` fails; as [`mapping_batches`].
pub fn write_mapping<W: Write + Send>(store: &Store, out: W) -> Result<u64> {
    let mut w = writer(out, &mapping_schema())?;
    let mut n = 0;
    mapping_batches(store, |b| {
        n += b.num_rows() as u64;
        w.write(&b).map_err(writing)
    })?;
    w.close().map_err(writing)?;
    Ok(n)
}

/// Writes the events to `out` as a Parquet file; returns the rows written.
///
/// # Errors
/// [`Error::Io`] when `out` fails; as [`event_batches`].
pub fn write_events<W: Write + Send>(store: &Store, out: W) -> Result<u64> {
    let mut w = writer(out, &events_schema())?;
    let mut n = 0;
    event_batches(store, |b| {
        n += b.num_rows() as u64;
        w.write(&b).map_err(writing)
    })?;
    w.close().map_err(writing)?;
    Ok(n)
}
