//! Importing files into a store: what `idgraph import` does and the Python package's
//! `Store.import_files` calls, one code path for both. KISSmetrics JSON lines and CSV are read
//! from where the previous import of each file ended ([`FileSource::resume`]); Parquet files
//! (the `parquet` feature) are read whole. Everything goes through
//! [`Store::bulk_apply`]: an import that fails stops before it writes anything.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::ingest::files::{FileSource, Format, expand_reporting};
use crate::ingest::resume::Resumed;
use crate::op::now;
use crate::store::{BulkOptions, BulkReport, Store};

/// What the files are. `None` in [`ImportOptions::format`]: by name (`.csv` is CSV;
/// `.parquet` files and folders of them are Parquet; the rest is KISSmetrics JSON lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// KISSmetrics JSON lines (one op or two per line).
    KmJson,
    /// CSV with a header (`Identity`, `Timestamp`, `Event`, `Alias`, `Prop:NAME`).
    Csv,
    /// Parquet, as `export --format parquet` and the Spark job write it.
    Parquet,
}

/// How to import.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions {
    /// What the files are; `None`: by name.
    pub format: Option<ImportFormat>,
    /// Skip bad lines (each is reported to [`ImportHooks::on_skip`]) instead of stopping at
    /// the first, with nothing imported.
    pub skip_invalid: bool,
    /// Read every file again from its start, even the parts imported before.
    pub reimport: bool,
    /// Tuning of the write path.
    pub bulk: BulkOptions,
}

/// Called with each bad line skipped (`FILE:LINE: reason`).
pub type OnSkip = Box<dyn FnMut(&str)>;

/// Called with bytes read, lines read, and the bytes the import will read in all.
pub type OnProgress = Box<dyn FnMut(u64, u64, u64)>;

/// Where an import reports as it goes. Each is optional.
#[derive(Default)]
pub struct ImportHooks {
    /// A bad line skipped (`FILE:LINE: reason`), with [`ImportOptions::skip_invalid`].
    pub on_skip: Option<OnSkip>,
    /// Bytes read, lines read, and the bytes the import will read in all, every 8,192 lines.
    pub on_progress: Option<OnProgress>,
}

/// What an import did.
#[derive(Clone, Debug, Default)]
pub struct ImportReport {
    /// Files read (0: nothing new since the last import).
    pub files: usize,
    /// Lines (or rows) read, blank lines not counted.
    pub lines: u64,
    /// Bad lines skipped.
    pub skipped: u64,
    /// Bytes read.
    pub bytes: u64,
    /// What was new, grown or unchanged since the files were last imported.
    pub resumed: Resumed,
    /// What the ops did.
    pub report: BulkReport,
    /// IDs in the store after the import.
    pub ids: u64,
    /// Persons in the store after the import.
    pub persons: u64,
    /// Seconds the import took.
    pub seconds: f64,
}

impl ImportReport {
    /// The report as `idgraph import --json` prints it (the Python package returns it as a
    /// dict with the same keys).
    pub fn json(&self) -> serde_json::Value {
        let r = &self.report;
        let rs = &self.resumed;
        serde_json::json!({
            "files": self.files, "lines": self.lines, "skipped": self.skipped,
            "bytes": self.bytes, "new_files": rs.new_files,
            "grown_files": rs.grown_files,
            "unchanged_files": rs.unchanged_files,
            "reread_files": rs.reread_files,
            "known_bytes": rs.known_bytes,
            "events": r.events, "sets": r.sets, "aliases": r.aliases,
            "joined": r.joined, "refused": r.refused, "suppressed": r.suppressed,
            "new_ids": r.new_ids,
            "ids": self.ids, "persons": self.persons, "keys_written": r.keys_written,
            "seconds": self.seconds, "lines_per_second": self.lines_per_second(),
        })
    }

    /// Lines read per second.
    pub fn lines_per_second(&self) -> f64 {
        self.lines as f64 / self.seconds.max(1e-9)
    }
}

/// Imports `paths` (files, folders, `-` for standard input) into `store`, then flushes it:
/// [`plan`] then [`ImportPlan::run`]. When this returns `Ok`, the import is durable
/// (DESIGN.md, "Durability").
///
/// # Errors
/// As [`plan`] and [`ImportPlan::run`].
pub fn import_files(
    store: &Store,
    paths: &[PathBuf],
    opts: &ImportOptions,
    hooks: ImportHooks,
) -> Result<ImportReport> {
    plan(paths, opts, &mut |_| {})?.run(store, hooks)
}

/// The inputs of an import, listed and checked before any store is opened.
pub struct ImportPlan {
    inputs: Inputs,
    opts: ImportOptions,
}

enum Inputs {
    Lines(Vec<crate::ingest::files::Input>),
    Parquet(Vec<PathBuf>),
}

/// Lists what `paths` hold (files, folders, export buckets, `-` for standard input), in the
/// order they are read. A path that holds nothing to import is passed to `on_warning`, and the
/// import goes on without it.
///
/// # Errors
/// [`Error::Input`] for a path that does not exist or that a bucket's index lists wrongly;
/// `--format parquet` on paths that are not Parquet.
pub fn plan(
    paths: &[PathBuf],
    opts: &ImportOptions,
    on_warning: &mut dyn FnMut(&str),
) -> Result<ImportPlan> {
    let inputs = match parquet_inputs(paths, opts.format)? {
        Some(files) => Inputs::Parquet(files),
        None => {
            let forced = match opts.format {
                Some(ImportFormat::Csv) => Some(Format::Csv),
                Some(ImportFormat::KmJson) => Some(Format::KmJson),
                Some(ImportFormat::Parquet) | None => None,
            };
            Inputs::Lines(expand_reporting(paths, forced, &mut |w| on_warning(&w))?)
        }
    };
    Ok(ImportPlan {
        inputs,
        opts: *opts,
    })
}

impl ImportPlan {
    /// Imports the planned inputs into `store` (files imported before: only what follows their
    /// imported part, unless [`ImportOptions::reimport`]), then flushes it. When this returns
    /// `Ok`, the import is durable.
    ///
    /// # Errors
    /// [`Error::Input`] for a bad line (`FILE:LINE: reason`), [`Error::Io`] when a file cannot
    /// be read; then nothing was imported. As [`Store::bulk_apply`] otherwise.
    pub fn run(self, store: &Store, hooks: ImportHooks) -> Result<ImportReport> {
        let opts = self.opts;
        let inputs = match self.inputs {
            Inputs::Parquet(files) => return import_parquet(store, files, &opts, hooks),
            Inputs::Lines(inputs) => inputs,
        };
        let started = Instant::now();
        let total = Rc::new(Cell::new(0u64));
        let mut source = FileSource::new(inputs, opts.skip_invalid, now());
        if let Some(mut f) = hooks.on_skip {
            source = source.on_skip(move |m| f(m));
        }
        if let Some(mut f) = hooks.on_progress {
            let total = total.clone();
            source = source.on_progress(move |bytes, lines| f(bytes, lines, total.get()));
        }
        let resumed = source.resume(|p| store.file_part(p), opts.reimport)?;
        total.set(source.total_bytes());
        let files = source.files();
        let report = if files == 0 {
            BulkReport::default()
        } else {
            let rep = store.bulk_apply(&mut source, opts.bulk)?;
            store.flush()?;
            rep
        };
        let read = (source.lines, source.skipped, source.bytes);
        Ok(finish(store, started, files, resumed, report, read))
    }
}

fn finish(
    store: &Store,
    started: Instant,
    files: usize,
    resumed: Resumed,
    report: BulkReport,
    (lines, skipped, bytes): (u64, u64, u64),
) -> ImportReport {
    let stats = store.stats_quick();
    ImportReport {
        files,
        lines,
        skipped,
        bytes,
        resumed,
        report,
        ids: stats.ids,
        persons: stats.persons,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The Parquet files to import, when the paths name Parquet (`Parquet` given, or `.parquet`
/// files and folders of them, as the Spark job and `export --format parquet` write).
fn parquet_inputs(paths: &[PathBuf], format: Option<ImportFormat>) -> Result<Option<Vec<PathBuf>>> {
    #[cfg(feature = "parquet")]
    let found = crate::ingest::parquet::parquet_files(paths);
    #[cfg(not(feature = "parquet"))]
    let found: Option<Vec<PathBuf>> = {
        let _ = paths;
        None
    };
    match (format, found) {
        (Some(ImportFormat::Parquet), None) => Err(Error::Input(if cfg!(feature = "parquet") {
            "--format parquet: each path must be a .parquet file or a folder holding some".into()
        } else {
            "Parquet: this build of idgraph has no `parquet` feature".into()
        })),
        (Some(ImportFormat::Parquet) | None, found) => Ok(found),
        (Some(_), _) => Ok(None),
    }
}

/// Imports Parquet files (the whole of each: a Parquet file is not appended to, so nothing is
/// remembered of it; importing it again applies the same ops, which changes nothing).
#[cfg(feature = "parquet")]
fn import_parquet(
    store: &Store,
    files: Vec<PathBuf>,
    opts: &ImportOptions,
    hooks: ImportHooks,
) -> Result<ImportReport> {
    let started = Instant::now();
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let n = files.len();
    let mut source = crate::ingest::parquet::ParquetSource::new(files, opts.skip_invalid, now());
    if let Some(mut f) = hooks.on_skip {
        source = source.on_skip(move |m| f(m));
    }
    let report = store.bulk_apply(&mut source, opts.bulk)?;
    store.flush()?;
    let resumed = Resumed {
        new_files: n as u64,
        ..Resumed::default()
    };
    Ok(finish(
        store,
        started,
        n,
        resumed,
        report,
        (source.rows, source.skipped, bytes),
    ))
}

#[cfg(not(feature = "parquet"))]
fn import_parquet(
    _: &Store,
    _: Vec<PathBuf>,
    _: &ImportOptions,
    _: ImportHooks,
) -> Result<ImportReport> {
    unreachable!("parquet_inputs finds no Parquet without the feature")
}
