//! The inputs of `idgraph import`: files, directories (KISSmetrics' `revisions/N.json` in
//! numeric order) and standard input, read as an [`OpSource`] with `FILE:LINE` on every error.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::op::{Op, Timestamp};
use crate::store::{OpSource, Pass};

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
    /// Its size in bytes (0 when unknown).
    pub size: u64,
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
/// [`Error::Input`] for a path that does not exist, a format that cannot be told, or an
/// `index.csv` that cannot be read, names a path outside its directory or twice, or lists files
/// that are missing (all of them named).
pub fn expand_reporting(
    paths: &[PathBuf],
    forced: Option<Format>,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(Input {
                path: None,
                name: "-".into(),
                format: forced.unwrap_or(Format::KmJson),
                size: 0,
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
            });
        }
    }
    Ok(out)
}

/// Reads inputs as ops for [`Store::bulk_apply`](crate::Store::bulk_apply). Standard input is
/// copied to a temporary file on the first pass so the second can read it again.
pub struct FileSource {
    inputs: Vec<Input>,
    skip_invalid: bool,
    now: Timestamp,
    spool: Option<tempfile::NamedTempFile>,
    on_skip: Box<dyn FnMut(&str)>,
    on_progress: Box<dyn FnMut(Pass, u64, u64)>,
    /// Lines read in the check pass (blank lines not counted).
    pub lines: u64,
    /// Lines skipped as invalid.
    pub skipped: u64,
    /// Bytes read in the check pass.
    pub bytes: u64,
}

impl FileSource {
    /// Reads `inputs`; with `skip_invalid`, bad lines are passed to `on_skip` and skipped,
    /// otherwise the first one stops the run. `now` is the time of CSV alias rows without one.
    pub fn new(inputs: Vec<Input>, skip_invalid: bool, now: Timestamp) -> Self {
        FileSource {
            inputs,
            skip_invalid,
            now,
            spool: None,
            on_skip: Box::new(|_| {}),
            on_progress: Box::new(|_, _, _| {}),
            lines: 0,
            skipped: 0,
            bytes: 0,
        }
    }

    /// Called with `FILE:LINE: reason` for each skipped line.
    #[must_use]
    pub fn on_skip(mut self, f: impl FnMut(&str) + 'static) -> Self {
        self.on_skip = Box::new(f);
        self
    }

    /// Called now and then with the bytes and lines read so far in the pass.
    #[must_use]
    pub fn on_progress(mut self, f: impl FnMut(Pass, u64, u64) + 'static) -> Self {
        self.on_progress = Box::new(f);
        self
    }

    /// Total bytes of the inputs whose size is known.
    pub fn total_bytes(&self) -> u64 {
        self.inputs.iter().map(|i| i.size).sum()
    }

    fn open(&mut self, i: usize, pass: Pass) -> Result<Box<dyn BufRead>> {
        let input = &self.inputs[i];
        let io = |e: std::io::Error| Error::io(&input.name, e);
        Ok(match (&input.path, pass) {
            (Some(p), _) => Box::new(BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(p).map_err(io)?,
            )),
            (None, Pass::Check) => Box::new(BufReader::new(std::io::stdin())),
            (None, Pass::Write) => {
                let spool = self
                    .spool
                    .as_ref()
                    .expect("stdin spooled in the check pass");
                Box::new(BufReader::with_capacity(
                    1 << 20,
                    spool.reopen().map_err(io)?,
                ))
            }
        })
    }
}

impl OpSource for FileSource {
    fn for_each(&mut self, pass: Pass, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()> {
        let mut done = 0u64;
        let mut lines_before = 0u64;
        for i in 0..self.inputs.len() {
            let reader = self.open(i, pass)?;
            let mut spool = match (&self.inputs[i].path, pass) {
                (None, Pass::Check) => {
                    let t = tempfile::NamedTempFile::new()
                        .map_err(|e| Error::io("spooling standard input", e))?;
                    let w = t
                        .reopen()
                        .map_err(|e| Error::io("spooling standard input", e))?;
                    self.spool = Some(t);
                    Some(std::io::BufWriter::new(w))
                }
                _ => None,
            };
            let name = self.inputs[i].name.clone();
            let mut emit = |line: u64,
                            parsed: std::result::Result<Vec<Op>, String>,
                            me: &mut FileSource|
             -> Result<()> {
                match parsed {
                    Ok(ops) => {
                        for op in ops {
                            f(op)?;
                        }
                        Ok(())
                    }
                    Err(reason) if me.skip_invalid => {
                        if pass == Pass::Check {
                            me.skipped += 1;
                            (me.on_skip)(&format!("{name}:{line}: {reason}"));
                        }
                        Ok(())
                    }
                    Err(reason) => Err(Error::Input(format!("{name}:{line}: {reason}"))),
                }
            };
            match self.inputs[i].format {
                Format::KmJson => {
                    let mut reader = reader;
                    let mut buf = Vec::with_capacity(512);
                    let mut line = 0u64;
                    loop {
                        buf.clear();
                        let n = reader
                            .read_until(b'\n', &mut buf)
                            .map_err(|e| Error::io(format!("{name}:{}", line + 1), e))?;
                        if n == 0 {
                            break;
                        }
                        if let Some(s) = spool.as_mut() {
                            s.write_all(&buf)
                                .map_err(|e| Error::io("spooling standard input", e))?;
                        }
                        line += 1;
                        done += n as u64;
                        let text = match std::str::from_utf8(&buf) {
                            Ok(t) => t.trim_end_matches(['\n', '\r']),
                            Err(_) => {
                                emit(line, Err("not UTF-8".into()), self)?;
                                continue;
                            }
                        };
                        if text.trim().is_empty() {
                            continue;
                        }
                        if pass == Pass::Check {
                            self.lines += 1;
                        }
                        let source = format!("{name}:{line}");
                        let parsed = super::km_json::parse_line(text, Some(&source));
                        emit(line, parsed, self)?;
                        if line.is_multiple_of(8192) {
                            (self.on_progress)(pass, done, lines_before + line);
                        }
                    }
                    lines_before += line;
                }
                Format::Csv => {
                    // Spool standard input first: the CSV reader owns its reader.
                    let reader: Box<dyn Read> = match spool.as_mut() {
                        Some(s) => {
                            let mut r = reader;
                            std::io::copy(&mut r, s)
                                .map_err(|e| Error::io("spooling standard input", e))?;
                            s.flush()
                                .map_err(|e| Error::io("spooling standard input", e))?;
                            let t = self.spool.as_ref().expect("spool");
                            Box::new(
                                t.reopen()
                                    .map_err(|e| Error::io("spooling standard input", e))?,
                            )
                        }
                        None => reader,
                    };
                    let mut rdr = csv::ReaderBuilder::new()
                        .has_headers(true)
                        .from_reader(reader);
                    let header = rdr
                        .headers()
                        .map_err(|e| Error::Input(format!("{name}:1: {e}")))?
                        .clone();
                    let cols = super::csv::columns(&header)
                        .map_err(|e| Error::Input(format!("{name}:1: {e}")))?;
                    let mut rec = csv::StringRecord::new();
                    let done_before = done;
                    loop {
                        let line = rdr.position().line() + 1;
                        match rdr.read_record(&mut rec) {
                            Ok(false) => break,
                            Ok(true) => {
                                let line = rec.position().map_or(line, |p| p.line());
                                done = rec.position().map_or(done, |p| done_before + p.byte());
                                if pass == Pass::Check {
                                    self.lines += 1;
                                }
                                let source = format!("{name}:{line}");
                                let parsed =
                                    super::csv::parse_row(&cols, &rec, self.now, Some(&source));
                                emit(line, parsed, self)?;
                                if line.is_multiple_of(8192) {
                                    (self.on_progress)(pass, done, lines_before + line);
                                }
                            }
                            Err(e) => {
                                let line = e.position().map_or(line, |p| p.line());
                                let reason = match e.kind() {
                                    csv::ErrorKind::UnequalLengths {
                                        expected_len, len, ..
                                    } => {
                                        format!(
                                            "the row has {len} fields, the header {expected_len}"
                                        )
                                    }
                                    _ => e.to_string(),
                                };
                                emit(line, Err(reason), self)?;
                            }
                        }
                    }
                    lines_before += rdr.position().line();
                }
            }
            if let Some(mut s) = spool {
                s.flush()
                    .map_err(|e| Error::io("spooling standard input", e))?;
            }
            (self.on_progress)(pass, done, lines_before);
        }
        if pass == Pass::Check {
            self.bytes = done;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_read_revisions_in_numeric_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("revisions")).unwrap();
        for f in [
            "revisions/10.json",
            "revisions/9.json",
            "revisions/2.json",
            "b.csv",
            "a.json",
            "notes.txt",
            "revisions/x.json",
        ] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        let names: Vec<String> = expand(&[d.path().to_path_buf()], None)
            .unwrap()
            .into_iter()
            .map(|i| {
                i.path
                    .unwrap()
                    .strip_prefix(d.path())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "revisions/2.json",
                "revisions/9.json",
                "revisions/10.json",
                "a.json",
                "b.csv",
                "revisions/x.json"
            ]
        );
        let e = expand(&[d.path().join("notes.txt")], None).unwrap_err();
        assert!(e.to_string().contains("--format"), "{e}");
        assert!(
            expand(&[d.path().join("missing")], None)
                .unwrap_err()
                .to_string()
                .contains("no such file")
        );
    }
}
