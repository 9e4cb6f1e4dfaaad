//! Incremental import: what the store remembers of each file it imported (a [`FilePart`]:
//! size, newlines, XXH3-128 of the bytes read) decides what a later import reads of it —
//! nothing when it is unchanged, only the appended bytes when it grew, and an error naming it
//! when the part already imported changed (or, asked to, all of it again).

use std::cell::RefCell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use xxhash_rust::xxh3::Xxh3;

use super::input::{Input, MAX_LINE_BYTES};
use crate::error::{Error, Result};
use crate::op::Timestamp;
use crate::source::FilePart;

/// A file as an import listed it: the file its path named then, by canonical path (the
/// descriptor's, `/proc/self/fd`: a symlink is resolved once, at listing) and identity
/// (`dev`, `ino`), its size, and where its last whole line ends. Every later open of it goes
/// through [`Opened::reopen`], which refuses another file at that path (one rotated in): what
/// is hashed, read and remembered is always the file that was listed. No descriptor is held
/// between uses, so a bucket of any number of files needs one at a time.
pub(crate) struct Opened {
    pub canon: PathBuf,
    dev: u64,
    ino: u64,
    /// Its size when listed.
    pub size: u64,
    /// Just past its last newline (see [`line_end`]).
    pub line_end: u64,
}

impl Opened {
    pub fn open(path: &Path) -> std::io::Result<Opened> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(path)?;
        let canon = descriptor_path(&file).or_else(|_| std::fs::canonicalize(path))?;
        let meta = file.metadata()?;
        let line_end = line_end(&file, 0, meta.len())?;
        Ok(Opened {
            canon,
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            line_end,
        })
    }

    /// The listed file, open again at `pos`; an error when its path now names another file.
    pub fn reopen(&self, pos: u64) -> std::io::Result<std::fs::File> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let mut file = std::fs::File::open(&self.canon)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (self.dev, self.ino) {
            return Err(std::io::Error::other(format!(
                "{} was replaced by another file since the import listed it (rotated?); run \
                 the import again",
                self.canon.display()
            )));
        }
        file.seek(SeekFrom::Start(pos))?;
        Ok(file)
    }
}

/// Just past the last newline in `from..size` of `file`: where reading stops, so that a last
/// line or CSV row caught without its newline (being written) waits for the next run; `from`
/// when there is none. Looks back at most [`MAX_LINE_BYTES`] + 1 bytes: a tail longer than a
/// line may be is read (and refused by the reader as too long) rather than scanned for.
fn line_end(file: &std::fs::File, from: u64, size: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let floor = from.max(size.saturating_sub(MAX_LINE_BYTES as u64 + 1));
    let mut end = size;
    let mut buf = vec![0u8; 64 << 10];
    while end > floor {
        let n = (end - floor).min(buf.len() as u64) as usize;
        let at = end - n as u64;
        file.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            return Ok(at + i as u64 + 1);
        }
        end = at;
    }
    Ok(if floor > from { size } else { from })
}

/// The path of the file `f` is open on.
fn descriptor_path(f: &std::fs::File) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

/// The running hash and newline count of the bytes read of one file, from its start.
#[derive(Clone)]
pub(crate) struct Tap {
    /// The file's canonical path: the key of its [`FilePart`].
    pub path: PathBuf,
    hasher: Xxh3,
    lines: u64,
    size: u64,
}

impl Tap {
    /// A tap at the start of the file at canonical path `path`.
    pub fn new(path: PathBuf) -> Self {
        Tap {
            path,
            hasher: Xxh3::new(),
            lines: 0,
            size: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.lines += memchr::memchr_iter(b'\n', bytes).count() as u64;
        self.size += bytes.len() as u64;
    }

    /// The part read so far.
    pub fn part(&self, imported_at: Timestamp) -> FilePart {
        FilePart {
            size: self.size,
            lines: self.lines,
            hash: self.hasher.digest128(),
            imported_at,
        }
    }
}

/// A reader that feeds every byte it passes on to a shared [`Tap`].
pub(crate) struct Tapped<R> {
    pub inner: R,
    pub tap: Rc<RefCell<Tap>>,
}

impl<R: Read> Read for Tapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tap.borrow_mut().feed(&buf[..n]);
        Ok(n)
    }
}

/// What an import found of the files it was given, against what the store remembers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resumed {
    /// Files the store had not seen (read in full).
    pub new_files: u64,
    /// Files that grew since they were imported (only the new bytes are read).
    pub grown_files: u64,
    /// Files imported before and unchanged (not read beyond the hash check).
    pub unchanged_files: u64,
    /// Files whose imported part changed, read again in full (`--reimport`).
    pub reread_files: u64,
    /// Bytes imported before and not read again (only hashed).
    pub known_bytes: u64,
}

/// What the store knows of one file, compared with the file now.
enum Found {
    New,
    Unchanged,
    /// Grown: read from the end of the part, its tap carried over.
    Grown(Box<Tap>, FilePart),
    /// Changed, with the reason.
    Changed(String),
}

/// Compares file `input` (opened as `opened`; `input.size` bytes to its last newline) with
/// `part`.
fn compare(input: &Input, opened: &Opened, part: Option<FilePart>) -> Result<Found> {
    let Some(part) = part else {
        return Ok(Found::New);
    };
    if opened.size < part.size {
        return Ok(Found::Changed(format!(
            "it is {} bytes, shorter than the {} bytes imported before",
            opened.size, part.size
        )));
    }
    let io = |e: std::io::Error| Error::io(&input.name, e);
    let mut file = opened.reopen(0).map_err(io)?;
    let mut tap = Tap::new(opened.canon.clone());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = part.size;
    let mut last = b'\n';
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            break; // shorter than its size a moment ago: the hash says so
        }
        tap.feed(&buf[..n]);
        last = buf[n - 1];
        left -= n as u64;
    }
    if tap.part(0).hash != part.hash || tap.size != part.size {
        return Ok(Found::Changed(format!(
            "the {} bytes imported before have changed",
            part.size
        )));
    }
    if input.size <= part.size {
        return Ok(Found::Unchanged);
    }
    if last != b'\n' {
        // The part ended inside a line (imported by a build that read a last line without
        // its newline): that line must have been complete.
        let mut next = [0u8; 1];
        opened
            .reopen(part.size)
            .and_then(|mut r| r.read_exact(&mut next))
            .map_err(io)?;
        if next[0] != b'\n' && next[0] != b'\r' {
            return Ok(Found::Changed(format!(
                "its last line imported (line {}, which had no newline) has grown since",
                part.lines + 1
            )));
        }
    }
    Ok(Found::Grown(Box::new(tap), part))
}

/// Decides what to read of each input: unchanged files are dropped, grown ones start where
/// their part ends. Returns the inputs left, their taps (by index; `None` for standard input),
/// and the summary.
///
/// # Errors
/// [`Error::Input`] naming every file whose imported part changed, unless `reimport` (then
/// they are read in full); I/O errors reading a file or the store.
#[expect(
    clippy::type_complexity,
    reason = "crate-private; its one caller takes the three apart at once"
)]
pub(crate) fn plan(
    mut known: impl FnMut(&Path) -> Result<Option<FilePart>>,
    inputs: Vec<(Input, Option<Opened>)>,
    reimport: bool,
) -> Result<(Vec<(Input, Option<Opened>)>, Vec<Option<Tap>>, Resumed)> {
    let mut out = Vec::with_capacity(inputs.len());
    let mut taps = Vec::with_capacity(inputs.len());
    let mut sum = Resumed::default();
    let mut changed = Vec::new();
    for (mut input, opened) in inputs {
        if input.path.is_none() {
            out.push((input, opened));
            taps.push(None);
            continue;
        }
        let opened = match opened {
            Some(o) => o,
            None => Opened::open(input.path.as_deref().expect("checked"))
                .map_err(|e| Error::io(&input.name, e))?,
        };
        input.size = opened.line_end;
        let canon = opened.canon.clone();
        let part = known(&canon)?;
        match compare(&input, &opened, part)? {
            Found::New => {
                sum.new_files += 1;
                taps.push(Some(Tap::new(canon)));
                out.push((input, Some(opened)));
            }
            Found::Unchanged => {
                sum.unchanged_files += 1;
                sum.known_bytes += input.size;
            }
            Found::Grown(tap, part) => {
                sum.grown_files += 1;
                sum.known_bytes += part.size;
                input.start = part.size;
                input.first_line = part.lines;
                taps.push(Some(*tap));
                out.push((input, Some(opened)));
            }
            Found::Changed(_) if reimport => {
                sum.reread_files += 1;
                taps.push(Some(Tap::new(canon)));
                out.push((input, Some(opened)));
            }
            Found::Changed(why) => changed.push(format!("{}: {why}", input.name)),
        }
    }
    if !changed.is_empty() {
        return Err(Error::Input(format!(
            "{} (a file's imported part must stay as it was; --reimport reads such files again \
             in full)",
            changed.join("; ")
        )));
    }
    Ok((out, taps, sum))
}
