//! What an import reads: the paths it is given expanded into [`Input`]s — files, directories
//! (KISSmetrics' `revisions/N.json` in numeric order, or an `index.csv`'s order) and standard
//! input — each with its format and size.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// KISSmetrics JSON lines (`*.json`, `*.jsonl`, `*.ndjson`).
    KmJson,
    /// KISSmetrics CSV (`*.csv`).
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "km-json" | "json" => Ok(Format::KmJson),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("unknown format {s:?} (km-json or csv)")),
        }
    }
}

/// One input to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The file, or `None` for standard input.
    pub path: Option<PathBuf>,
    /// How errors name it.
    pub name: String,
    /// Its format.
    pub format: Format,
    /// Its size in bytes (0 when unknown): nothing past it is read, so a file that grows
    /// while it is imported gives the same ops in both passes.
    pub size: u64,
    /// Where reading starts (bytes imported before; see [`FileSource::resume`](super::files::FileSource::resume)).
    pub start: u64,
    /// Lines before `start`: the first line read is line `first_line + 1`.
    pub first_line: u64,
}

fn format_of(path: &Path, forced: Option<Format>) -> std::result::Result<Format, String> {
    if let Some(f) = forced {
        return Ok(f);
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("json" | "jsonl" | "ndjson") => Ok(Format::KmJson),
        Some("csv") => Ok(Format::Csv),
        _ => Err(format!(
            "{}: cannot tell the format from the name; use --format km-json or --format csv",
            path.display()
        )),
    }
}

/// The sort key of a file in a directory: `N.json` files by N first, the rest by name.
fn order_key(p: &Path) -> (u8, u128, String) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(stem) = name.strip_suffix(".json")
        && !stem.is_empty()
        && stem.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = stem.parse::<u128>()
    {
        return (0, n, name);
    }
    (1, 0, name)
}

/// The data files of a directory, in import order: the files its `index.csv` lists, in its
/// order, when it has one (files it lists that are missing: an error naming them; data files it
/// does not list: a warning each, not imported); else [`listed_files`] in numeric order.
/// `index.csv` itself is never data.
fn dir_files(
    dir: &Path,
    warn: &mut dyn FnMut(String),
) -> std::result::Result<Vec<PathBuf>, String> {
    let found = listed_files(dir)?;
    let index = dir.join(INDEX);
    if !index.is_file() {
        return Ok(found);
    }
    let shown = index.display();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_path(&index)
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen: std::collections::HashMap<PathBuf, u64> = std::collections::HashMap::new();
    let mut missing = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            format!("{shown}:{line}: {e}")
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        let field = rec.get(0).unwrap_or("").trim();
        if field.is_empty() {
            return Err(format!("{shown}:{line}: no file path in the first column"));
        }
        let rel = Path::new(field);
        let mut path = dir.to_path_buf();
        for c in rel.components() {
            match c {
                std::path::Component::Normal(part) => path.push(part),
                std::path::Component::CurDir => {}
                _ => {
                    return Err(format!(
                        "{shown}:{line}: {field:?} is not a path inside the export directory"
                    ));
                }
            }
        }
        if let Some(first) = seen.insert(path.clone(), line) {
            return Err(format!(
                "{shown}:{line}: {field:?} is listed twice (first on line {first})"
            ));
        }
        if !path.is_file() {
            missing.push(field.to_owned());
        }
        out.push(path);
    }
    if !missing.is_empty() {
        let n = missing.len();
        missing.truncate(10);
        return Err(format!(
            "{shown} lists {n} file{} that {} not on disk: {}{}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "is" } else { "are" },
            missing.join(", "),
            if n > 10 { ", ..." } else { "" }
        ));
    }
    for f in found.iter().filter(|f| !seen.contains_key(*f)) {
        warn(format!(
            "{}: a data file that {shown} does not list; not imported",
            f.display()
        ));
    }
    Ok(out)
}

/// The index of a KISSmetrics export bucket: a header line, then one line per file in the order
/// the files were written, the file's path (relative to the bucket) in the first column.
const INDEX: &str = "index.csv";

/// The `*.json` and `*.csv` files of a directory and of its `revisions/` folder (not its
/// `index.csv`), `N.json` in numeric order of N first, then the rest by name.
fn listed_files(dir: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for d in [dir.to_path_buf(), dir.join("revisions")] {
        if d != dir && !d.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in entries {
            let p = e.map_err(|e| format!("{}: {e}", d.display()))?.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let is_index = d == dir && p.file_name().is_some_and(|n| n == INDEX);
            if p.is_file() && !is_index && matches!(ext.as_deref(), Some("json" | "csv")) {
                out.push(p);
            }
        }
    }
    out.sort_by_key(|p| (order_key(p), p.clone()));
    Ok(out)
}

/// Turns the command line's paths into inputs: `-` is standard input; a directory gives the
/// files its `index.csv` lists, in that order (a KISSmetrics export bucket), or without one its
/// `*.json` and `*.csv` files and those of its `revisions/` folder (`N.json` in numeric order of
/// N, then the rest by name). Warnings (data files the index does not list) are dropped; see
/// [`expand_reporting`].
///
/// # Errors
/// As [`expand_reporting`].
pub fn expand(paths: &[PathBuf], forced: Option<Format>) -> Result<Vec<Input>> {
    expand_reporting(paths, forced, &mut |_| {})
}

/// [`expand`], handing each warning to `warn`.
///
/// # Errors
/// [`Error::Input`] for `-` given twice, a path that does not exist, a format that cannot be told, or an
/// `index.csv` that cannot be read, names a path outside its directory or twice, or lists files
/// that are missing (all of them named).
pub fn expand_reporting(
    paths: &[PathBuf],
    forced: Option<Format>,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    let mut stdin = false;
    for p in paths {
        if p.as_os_str() == "-" {
            if std::mem::replace(&mut stdin, true) {
                return Err(Error::Input(
                    "- (standard input) is given twice: it can be read only once".into(),
                ));
            }
            out.push(Input {
                path: None,
                name: "-".into(),
                format: forced.unwrap_or(Format::KmJson),
                size: 0,
                start: 0,
                first_line: 0,
            });
            continue;
        }
        let files = if p.is_dir() {
            let f = dir_files(p, warn).map_err(Error::Input)?;
            if f.is_empty() {
                return Err(Error::Input(format!(
                    "{}: no *.json or *.csv files",
                    p.display()
                )));
            }
            f
        } else if p.is_file() {
            vec![p.clone()]
        } else {
            return Err(Error::Input(format!(
                "{}: no such file or directory",
                p.display()
            )));
        };
        for f in files {
            let format = format_of(&f, forced).map_err(Error::Input)?;
            let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            out.push(Input {
                name: f.display().to_string(),
                path: Some(f),
                format,
                size,
                start: 0,
                first_line: 0,
            });
        }
    }
    Ok(out)
}

/// The longest line (JSON) or record (CSV) an import reads: 4 MiB, room for the largest op
/// the limits allow (256 properties of 8 KiB). A longer JSON line is a bad line (skipped with
/// `--skip-invalid`); a longer CSV record stops the import (past it the reader cannot tell
/// where the next record starts).
pub const MAX_LINE_BYTES: usize = 4 << 20;
