//! The inputs of `idgraph import`: files, directories (KISSmetrics' `revisions/N.json` in
//! numeric order) and standard input, read as an [`OpSource`] with `FILE:LINE` on every error.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::resume::{self, Resumed, Tap, Tapped};
use crate::error::{Error, Result};
use crate::op::{Op, Timestamp};
use crate::source::{FilePart, OpSource};

pub use super::input::{Format, Input, MAX_LINE_BYTES, expand, expand_reporting};

/// Reads inputs as ops for [`Store::bulk_apply`](crate::Store::bulk_apply) (once). Files are read up to the size they had
/// when listed, and what was read of each is handed to the store to remember
/// ([`OpSource::file_parts`]); [`FileSource::resume`] makes use of it.
pub struct FileSource {
    inputs: Vec<Input>,
    /// Per input, the file as it was listed (`None`: standard input, or a file that could not
    /// be opened, whose error shows when it is read).
    opened: Vec<Option<resume::Opened>>,
    /// Per input, the hash of what is read of it (`None`: standard input).
    taps: Vec<Option<Rc<RefCell<Tap>>>>,
    skip_invalid: bool,
    now: Timestamp,
    on_skip: Box<dyn FnMut(&str)>,
    on_progress: Box<dyn FnMut(u64, u64)>,
    /// Lines read (blank lines not counted).
    pub lines: u64,
    /// Lines skipped as invalid.
    pub skipped: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// Bytes and lines read so far, for progress reports.
#[derive(Default)]
struct Progress {
    bytes: u64,
    lines_before: u64,
}

impl FileSource {
    /// Reads `inputs`; with `skip_invalid`, bad lines are passed to `on_skip` and skipped,
    /// otherwise the first one stops the run. `now` is the time of CSV alias rows without one.
    ///
    /// Each file is listed here (`resume::Opened`): what is read of it, hashed and remembered
    /// is the file its path named now, up to its last newline (a last line without one waits
    /// for the next run).
    pub fn new(mut inputs: Vec<Input>, skip_invalid: bool, now: Timestamp) -> Self {
        let opened: Vec<Option<resume::Opened>> = inputs
            .iter_mut()
            .map(|i| {
                let o = resume::Opened::open(i.path.as_ref()?).ok()?;
                i.size = o.line_end;
                Some(o)
            })
            .collect();
        let taps = inputs
            .iter()
            .zip(&opened)
            .map(|(i, o)| {
                let p = i.path.as_ref()?;
                let canon = match o {
                    Some(o) => o.canon.clone(),
                    None => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
                };
                Some(Rc::new(RefCell::new(Tap::new(canon))))
            })
            .collect();
        FileSource {
            inputs,
            opened,
            taps,
            skip_invalid,
            now,
            on_skip: Box::new(|_| {}),
            on_progress: Box::new(|_, _| {}),
            lines: 0,
            skipped: 0,
            bytes: 0,
        }
    }

    /// Reads only what the store has not imported yet (`known` gives what it remembers of a
    /// file by its canonical path, as [`Store::file_part`](crate::Store::file_part) does): files it imported and that are unchanged
    /// are dropped, files that grew are read from where their imported part ends.
    ///
    /// # Errors
    /// [`Error::Input`] naming every file whose imported part changed since (shorter, other
    /// bytes, or a last line without newline that grew), unless `reimport`: then such files
    /// are read again in full. I/O errors reading the files or the store.
    pub fn resume(
        &mut self,
        known: impl FnMut(&Path) -> Result<Option<FilePart>>,
        reimport: bool,
    ) -> Result<Resumed> {
        let inputs = std::mem::take(&mut self.inputs)
            .into_iter()
            .zip(std::mem::take(&mut self.opened))
            .collect();
        let (inputs, taps, resumed) = resume::plan(known, inputs, reimport)?;
        (self.inputs, self.opened) = inputs.into_iter().unzip();
        self.taps = taps
            .into_iter()
            .map(|t| t.map(|t| Rc::new(RefCell::new(t))))
            .collect();
        Ok(resumed)
    }

    /// The number of inputs left to read.
    pub fn files(&self) -> usize {
        self.inputs.len()
    }

    /// Called with `FILE:LINE: reason` for each skipped line.
    #[must_use]
    pub fn on_skip(mut self, f: impl FnMut(&str) + 'static) -> Self {
        self.on_skip = Box::new(f);
        self
    }

    /// Called now and then with the bytes and lines read so far.
    #[must_use]
    pub fn on_progress(mut self, f: impl FnMut(u64, u64) + 'static) -> Self {
        self.on_progress = Box::new(f);
        self
    }

    /// Total bytes to read of the inputs whose size is known.
    pub fn total_bytes(&self) -> u64 {
        self.inputs.iter().map(|i| i.size - i.start).sum()
    }

    /// Input `i` from where reading starts to its listed size; a file's bytes also go to its
    /// tap.
    fn open(&mut self, i: usize) -> Result<Box<dyn BufRead>> {
        let input = &self.inputs[i];
        let io = |e: std::io::Error| Error::io(&input.name, e);
        Ok(match &input.path {
            Some(p) => {
                let file: Box<dyn Read> = match &self.opened[i] {
                    Some(o) => Box::new(o.reopen(input.start).map_err(io)?),
                    None => {
                        let mut f = std::fs::File::open(p).map_err(io)?;
                        f.seek(SeekFrom::Start(input.start)).map_err(io)?;
                        Box::new(f)
                    }
                };
                let part = file.take(input.size - input.start);
                match &self.taps[i] {
                    Some(tap) => Box::new(BufReader::with_capacity(
                        1 << 20,
                        Tapped {
                            inner: part,
                            tap: tap.clone(),
                        },
                    )),
                    None => Box::new(BufReader::with_capacity(1 << 20, part)),
                }
            }
            None => Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())),
        })
    }

    /// Hands a parsed line's ops to `f`; a bad line stops the run, or is skipped (and
    /// reported) with `skip_invalid`.
    fn emit(
        &mut self,
        at: &str,
        parsed: std::result::Result<Vec<Op>, String>,
        f: &mut dyn FnMut(Op) -> Result<()>,
    ) -> Result<()> {
        match parsed {
            Ok(ops) => ops.into_iter().try_for_each(f),
            Err(reason) if self.skip_invalid => {
                self.skipped += 1;
                (self.on_skip)(&format!("{at}: {reason}"));
                Ok(())
            }
            Err(reason) => Err(Error::Input(format!("{at}: {reason}"))),
        }
    }

    fn read_json(
        &mut self,
        i: usize,
        mut reader: Box<dyn BufRead>,
        progress: &mut Progress,
        f: &mut dyn FnMut(Op) -> Result<()>,
    ) -> Result<()> {
        let name = self.inputs[i].name.clone();
        let first = self.inputs[i].first_line;
        let mut buf = Vec::with_capacity(512);
        let mut line = first;
        loop {
            let (n, whole) = read_line_bounded(&mut reader, &mut buf, MAX_LINE_BYTES)
                .map_err(|e| Error::io(format!("{name}:{}", line + 1), e))?;
            if n == 0 {
                break;
            }
            line += 1;
            progress.bytes += n as u64;
            let at = format!("{name}:{line}");
            if !whole {
                self.emit(&at, Err(super::km_json::too_long(n)), f)?;
                continue;
            }
            let Some(parsed) = super::km_json::parse_raw_line(&buf, Some(&at)) else {
                continue;
            };
            self.lines += 1;
            self.emit(&at, parsed, f)?;
            if line.is_multiple_of(8192) {
                (self.on_progress)(progress.bytes, progress.lines_before + line - first);
            }
        }
        progress.lines_before += line - first;
        Ok(())
    }

    fn read_csv(
        &mut self,
        i: usize,
        reader: Box<dyn BufRead>,
        progress: &mut Progress,
        f: &mut dyn FnMut(Op) -> Result<()>,
    ) -> Result<()> {
        let input = &self.inputs[i];
        let name = input.name.clone();
        let first = input.first_line;
        // A file read from the middle takes its columns from its first line (imported before,
        // and checked unchanged).
        let header = match (&input.path, input.start) {
            (Some(p), start) if start > 0 => {
                let io = |e| Error::io(&name, e);
                let file: Box<dyn Read> = match &self.opened[i] {
                    Some(o) => Box::new(o.reopen(0).map_err(io)?),
                    None => Box::new(std::fs::File::open(p).map_err(io)?),
                };
                csv::Reader::from_reader(file).headers().cloned()
            }
            _ => Ok(csv::StringRecord::new()),
        }
        .map_err(|e| Error::Input(format!("{name}:1: {e}")))?;
        let stop = |s: super::csv::Stop| s.error(&name);
        let header = (!header.is_empty()).then_some(header);
        let mut rdr =
            super::csv::Records::new(&name, reader, header, first, self.now).map_err(stop)?;
        let bytes_before = progress.bytes;
        while let Some(row) = rdr.next_row().map_err(stop)? {
            if row.counted {
                progress.bytes = bytes_before + row.byte;
                self.lines += 1;
            }
            self.emit(&row.at, row.parsed, f)?;
            if row.counted && row.line.is_multiple_of(8192) {
                (self.on_progress)(progress.bytes, progress.lines_before + row.line - first);
            }
        }
        progress.bytes = bytes_before + rdr.position().byte();
        progress.lines_before += rdr.position().line();
        Ok(())
    }
}

/// Reads one line (through `\n`) into `buf` (cleared first), keeping at most `max` bytes:
/// the rest of a longer line is read and dropped, so memory stays bounded whatever the input.
/// Returns the bytes the line had and whether `buf` holds all of them.
///
/// # Errors
/// What reading `r` fails with.
pub fn read_line_bounded(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    buf.clear();
    let mut total = 0;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            break;
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        // Up to `max` bytes and a two-byte line ending; more than that is cut.
        if buf.len() < max + 2 {
            let keep = take.min(max + 2 - buf.len());
            buf.extend_from_slice(&avail[..keep]);
        }
        total += take;
        r.consume(take);
        if done {
            break;
        }
    }
    let whole = total == buf.len() && line_len(buf) <= max;
    if !whole {
        buf.clear();
    }
    Ok((total, whole))
}

/// Bytes of a line without its `\n` / `\r\n` ending.
fn line_len(b: &[u8]) -> usize {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b).len()
}

impl OpSource for FileSource {
    fn for_each(&mut self, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()> {
        let mut progress = Progress::default();
        for i in 0..self.inputs.len() {
            let reader = self.open(i)?;
            match self.inputs[i].format {
                Format::KmJson => self.read_json(i, reader, &mut progress, f)?,
                Format::Csv => self.read_csv(i, reader, &mut progress, f)?,
            }
            (self.on_progress)(progress.bytes, progress.lines_before);
        }
        self.bytes = progress.bytes;
        Ok(())
    }

    fn file_parts(&mut self) -> Vec<(PathBuf, FilePart)> {
        let at = crate::op::now();
        self.taps
            .iter()
            .flatten()
            .map(|t| {
                let t = t.borrow();
                (t.path.clone(), t.part(at))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest::proptest! {
        #[test]
        fn bounded_lines_are_read_until_lines_or_cut(
            text in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\n', b'\r']), 0..60),
            max in 0usize..12,
            cap in 1usize..8,
        ) {
            // Small buffers: lines cross fill_buf boundaries.
            let mut r = std::io::BufReader::with_capacity(cap, &text[..]);
            let mut want = std::io::BufReader::new(&text[..]);
            let mut buf = Vec::new();
            loop {
                let mut line = Vec::new();
                let n = want.read_until(b'\n', &mut line).unwrap();
                let (got, whole) = super::read_line_bounded(&mut r, &mut buf, max).unwrap();
                prop_assert_eq!(got, n);
                if n == 0 {
                    break;
                }
                prop_assert_eq!(whole, super::line_len(&line) <= max);
                if whole {
                    prop_assert_eq!(&buf, &line);
                } else {
                    prop_assert!(buf.is_empty());
                }
            }
        }
    }

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
