//! Parquet in (the `parquet` feature): the files `idgraph export ... --format parquet` and the
//! Spark job write, read back as ops. A file is the mapping (columns `id`, `person`, and
//! `first_seen` when idgraph wrote it) or the events (`_p`, `_p_original`, `_n`, `_t`,
//! `properties`: a JSON object as text). Each row is parsed as the KISSmetrics JSON line it
//! stands for ([`km_json::parse_row`](super::km_json::parse_row), which shares
//! [`parse_line`](super::km_json::parse_line)'s rules): the same ops, the same errors, at
//! `FILE:ROW`.
//! - an event row: `{"_p", "_p_original", "_n", "_t", ...properties}`, so the event is recorded
//!   under its original ID, linked to its person;
//! - a mapping row whose ID is not its person: `{"_p": person, "_p2": id, "_t": first_seen}`
//!   (the import's time when the file has no `first_seen`).

use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::km_json::Row;
use crate::error::{Error, Result};
use crate::op::{Op, Timestamp};
use crate::source::OpSource;

/// Rows per batch read.
const BATCH_ROWS: usize = 8192;

/// What a Parquet file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mapping,
    Events,
}

/// Reads Parquet files as ops, in the order given, each file's rows in order.
pub struct ParquetSource {
    files: Vec<PathBuf>,
    skip_invalid: bool,
    now: Timestamp,
    on_skip: Box<dyn FnMut(&str)>,
    /// Rows read.
    pub rows: u64,
    /// Rows skipped as invalid (with `skip_invalid`).
    pub skipped: u64,
}

impl ParquetSource {
    /// A source of `files`; `now` is the time of a mapping row without `first_seen`.
    pub fn new(files: Vec<PathBuf>, skip_invalid: bool, now: Timestamp) -> Self {
        ParquetSource {
            files,
            skip_invalid,
            now,
            on_skip: Box::new(|_| {}),
            rows: 0,
            skipped: 0,
        }
    }

    /// Calls `f` with the message of each row skipped (`FILE:ROW: reason`).
    pub fn on_skip(mut self, f: impl FnMut(&str) + 'static) -> Self {
        self.on_skip = Box::new(f);
        self
    }

    /// The files it reads.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn read_file(&mut self, i: usize, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()> {
        let path = self.files[i].clone();
        let name = path.display().to_string();
        let bad = |why: String| Error::Input(format!("{name}: {why}"));
        let file = std::fs::File::open(&path).map_err(|e| Error::io(name.clone(), e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| bad(format!("not a Parquet file ({e})")))?
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| bad(format!("cannot be read ({e})")))?;
        let kind = kind(&reader.schema()).ok_or_else(|| {
            bad(
                "its columns are neither the mapping's (id, person) nor the events' (_p, \
                 _p_original, _n, _t, properties)"
                    .into(),
            )
        })?;
        let mut row = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| bad(format!("after row {row}: {e}")))?;
            let cols = Columns::of(&batch, kind).map_err(bad)?;
            for r in 0..batch.num_rows() {
                row += 1;
                self.rows += 1;
                let at = format!("{name}:{row}");
                let parsed = match cols.row(r, kind, self.now) {
                    Ok(Some(row)) => super::km_json::parse_row(&row, Some(&at)),
                    Ok(None) => continue,
                    Err(why) => Err(why),
                };
                match parsed {
                    Ok(ops) => ops.into_iter().try_for_each(&mut *f)?,
                    Err(why) if self.skip_invalid => {
                        self.skipped += 1;
                        (self.on_skip)(&format!("{at}: {why}"));
                    }
                    Err(why) => return Err(Error::Input(format!("{at}: {why}"))),
                }
            }
        }
        Ok(())
    }
}

impl OpSource for ParquetSource {
    fn for_each(&mut self, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()> {
        for i in 0..self.files.len() {
            self.read_file(i, f)?;
        }
        Ok(())
    }
}

fn kind(schema: &arrow_schema::Schema) -> Option<Kind> {
    let has = |n: &str| schema.field_with_name(n).is_ok();
    if has("_p") && has("_n") && has("_t") {
        Some(Kind::Events)
    } else if has("id") && has("person") {
        Some(Kind::Mapping)
    } else {
        None
    }
}

/// The columns of a batch, as strings and integers whatever types the writer chose.
struct Columns {
    text: Vec<Option<ArrayRef>>,
    time: Option<ArrayRef>,
}

const EVENT_TEXT: [&str; 4] = ["_p", "_p_original", "_n", "properties"];
const MAPPING_TEXT: [&str; 2] = ["id", "person"];

impl Columns {
    fn of(batch: &RecordBatch, kind: Kind) -> std::result::Result<Columns, String> {
        let (names, time): (&[&str], &str) = match kind {
            Kind::Events => (&EVENT_TEXT, "_t"),
            Kind::Mapping => (&MAPPING_TEXT, "first_seen"),
        };
        let cast = |n: &str, to: &DataType| -> std::result::Result<Option<ArrayRef>, String> {
            match batch.column_by_name(n) {
                None => Ok(None),
                Some(c) => arrow_cast::cast(c, to)
                    .map(Some)
                    .map_err(|e| format!("column {n}: {e}")),
            }
        };
        Ok(Columns {
            text: names
                .iter()
                .map(|n| cast(n, &DataType::Utf8))
                .collect::<std::result::Result<_, _>>()?,
            time: cast(time, &DataType::Int64)?,
        })
    }

    fn text(&self, i: usize, r: usize) -> Option<&str> {
        let a = self.text[i].as_ref()?.as_string::<i32>();
        (!a.is_null(r)).then(|| a.value(r))
    }

    fn time(&self, r: usize) -> Option<i64> {
        let a = self.time.as_ref()?.as_primitive::<Int64Type>();
        (!a.is_null(r)).then(|| a.value(r))
    }

    /// The fields of row `r`; `None` for a mapping row of a person's own ID.
    fn row(
        &self,
        r: usize,
        kind: Kind,
        now: Timestamp,
    ) -> std::result::Result<Option<Row<'_>>, String> {
        Ok(Some(match kind {
            Kind::Events => Row {
                p: self.text(0, r),
                p2: None,
                original: self.text(1, r),
                n: self.text(2, r),
                t: self.time(r),
                properties: self.text(3, r),
            },
            Kind::Mapping => {
                let (Some(id), Some(person)) = (self.text(0, r), self.text(1, r)) else {
                    return Err("id and person must not be null".into());
                };
                if id == person {
                    return Ok(None);
                }
                Row {
                    p: Some(person),
                    p2: Some(id),
                    original: None,
                    n: None,
                    t: Some(self.time(r).unwrap_or(now)),
                    properties: None,
                }
            }
        }))
    }
}

/// The Parquet files under `paths`: a file as given; a directory (a Spark output folder) its
/// `*.parquet` files, in name order, skipping hidden and `_` files. `None` when a path is
/// neither a `.parquet` file nor a directory holding some.
pub fn parquet_files(paths: &[PathBuf]) -> Option<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                    name.is_some_and(|n| {
                        n.ends_with(".parquet") && !n.starts_with('.') && !n.starts_with('_')
                    }) && f.is_file()
                })
                .collect();
            if found.is_empty() {
                return None;
            }
            found.sort();
            out.extend(found);
        } else if p.extension().is_some_and(|e| e == "parquet") {
            out.push(p.clone());
        } else {
            return None;
        }
    }
    Some(out)
}
