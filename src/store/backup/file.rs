//! The backup file: a 16-byte header, then frames. Each frame is one zstd frame of entries
//! (key, value) with its own checksum and sequence number; the last frame, the trailer, says
//! how many entries and frames came before it. A file cut short has no trailer; a damaged
//! byte fails a checksum; a frame dropped, repeated or moved fails the sequence.
//!
//! ```text
//! header   "idgraph backup\n\0" (16 bytes)  version u32 BE
//! frame    kind u8 ('K' entries, 'T' trailer)  seq u32  raw_len u32  stored_len u32
//!          check u64 (xxh3-64 of the 13 bytes before it and the stored bytes)
//!          stored bytes: zstd of raw_len bytes
//! entries  (key_len u32, value_len u32, key, value)*
//! trailer  entries u64  data_bytes u64  frames u32  taken_at i64 (Unix s)  source_format u32
//! ```
//! All integers big-endian.

use std::io::{Read, Write};

use crate::error::{Error, Result};

const MAGIC: &[u8; 16] = b"idgraph backup\n\0";

/// The version of the backup file this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

/// The bytes of entries a frame holds before it is compressed and written.
pub(crate) const FRAME_TARGET: usize = 1 << 20;

/// The largest frame a reader accepts (raw bytes): bounds the memory of a restore of a
/// hostile or damaged file. An entry larger than this cannot be backed up.
pub(crate) const MAX_FRAME_RAW: usize = 256 << 20;

const FRAME_HEAD: usize = 21;
const ENTRIES: u8 = b'K';
const TRAILER: u8 = b'T';
const TRAILER_LEN: usize = 8 + 8 + 4 + 8 + 4;

/// What the trailer records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub(crate) entries: u64,
    pub(crate) data_bytes: u64,
    pub(crate) frames: u32,
    /// When the cut was taken (Unix seconds).
    pub(crate) taken_at: i64,
    /// The store format of the entries (the source's `m format_version`).
    pub(crate) source_format: u32,
}

impl Trailer {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(TRAILER_LEN);
        v.extend_from_slice(&self.entries.to_be_bytes());
        v.extend_from_slice(&self.data_bytes.to_be_bytes());
        v.extend_from_slice(&self.frames.to_be_bytes());
        v.extend_from_slice(&self.taken_at.to_be_bytes());
        v.extend_from_slice(&self.source_format.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<Trailer> {
        if b.len() != TRAILER_LEN {
            return None;
        }
        Some(Trailer {
            entries: u64::from_be_bytes(b[0..8].try_into().ok()?),
            data_bytes: u64::from_be_bytes(b[8..16].try_into().ok()?),
            frames: u32::from_be_bytes(b[16..20].try_into().ok()?),
            taken_at: i64::from_be_bytes(b[20..28].try_into().ok()?),
            source_format: u32::from_be_bytes(b[28..32].try_into().ok()?),
        })
    }
}

/// Appends one entry to a frame's raw bytes.
pub(crate) fn push_entry(buf: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
    buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
    buf.extend_from_slice(k);
    buf.extend_from_slice(v);
}

/// A frame ready to write: compressed and checksummed (done off the scanning thread).
pub(crate) struct Sealed(Vec<u8>);

/// Compresses frame `seq` of `kind` holding `raw`.
fn seal(kind: u8, seq: u32, raw: &[u8], level: i32) -> Result<Sealed> {
    let stored = zstd::bulk::compress(raw, level)
        .map_err(|e| Error::Internal(format!("zstd could not compress a frame: {e}")))?;
    let mut out = Vec::with_capacity(FRAME_HEAD + stored.len());
    out.push(kind);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    out.extend_from_slice(&(stored.len() as u32).to_be_bytes());
    let check = checksum(&out, &stored);
    out.extend_from_slice(&check.to_be_bytes());
    out.extend_from_slice(&stored);
    Ok(Sealed(out))
}

/// Seals a frame of entries.
pub(crate) fn seal_entries(seq: u32, raw: &[u8], level: i32) -> Result<Sealed> {
    seal(ENTRIES, seq, raw, level)
}

/// Seals the trailer.
pub(crate) fn seal_trailer(seq: u32, t: &Trailer) -> Result<Sealed> {
    seal(TRAILER, seq, &t.encode(), 1)
}

fn checksum(head: &[u8], stored: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(head);
    h.update(stored);
    h.digest()
}

/// Writes the header and sealed frames, counting bytes.
pub(crate) struct FileWriter<W: Write> {
    out: W,
    pub(crate) bytes: u64,
}

impl<W: Write> FileWriter<W> {
    pub(crate) fn new(mut out: W) -> Result<Self> {
        out.write_all(MAGIC).map_err(writing)?;
        out.write_all(&BACKUP_FORMAT.to_be_bytes())
            .map_err(writing)?;
        Ok(FileWriter { out, bytes: 20 })
    }

    pub(crate) fn write(&mut self, f: &Sealed) -> Result<()> {
        self.out.write_all(&f.0).map_err(writing)?;
        self.bytes += f.0.len() as u64;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<W> {
        self.out.flush().map_err(writing)?;
        Ok(self.out)
    }
}

fn writing(e: std::io::Error) -> Error {
    Error::io("writing the backup", e)
}

/// One frame read back.
pub(crate) enum Frame {
    /// The raw bytes of a frame of entries.
    Entries(Vec<u8>),
    Trailer(Trailer),
}

/// Reads and checks a backup file frame by frame. Every failure names the file, the byte
/// offset and the frame.
pub(crate) struct FileReader<R: Read> {
    inp: R,
    name: String,
    offset: u64,
    seq: u32,
    entries: u64,
    data_bytes: u64,
    done: bool,
}

impl<R: Read> FileReader<R> {
    /// Reads and checks the header.
    pub(crate) fn new(inp: R, name: &str) -> Result<Self> {
        let mut r = FileReader {
            inp,
            name: name.to_owned(),
            offset: 0,
            seq: 0,
            entries: 0,
            data_bytes: 0,
            done: false,
        };
        let mut head = [0u8; 20];
        if r.read_exact(&mut head)? < head.len() || &head[..16] != MAGIC {
            return Err(r.bad("not an idgraph backup (its first bytes are not the header)"));
        }
        let version = u32::from_be_bytes(head[16..20].try_into().expect("4 bytes"));
        if version != BACKUP_FORMAT {
            return Err(r.bad(&format!(
                "backup format version {version}; this idgraph reads version {BACKUP_FORMAT}"
            )));
        }
        Ok(r)
    }

    /// The error for damage found at the current offset.
    fn bad(&self, why: &str) -> Error {
        Error::Backup(format!(
            "{}: byte {}, frame {}: {why}",
            self.name, self.offset, self.seq
        ))
    }

    /// Reads up to `buf.len()` bytes; fewer only at the end of the input.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.inp.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(self.name.clone(), e)),
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    /// The bytes read so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The next frame, checked. After the trailer: `None`, once the input is known to end
    /// there.
    pub(crate) fn next(&mut self) -> Result<Option<Frame>> {
        if self.done {
            let mut one = [0u8; 1];
            if self.read_exact(&mut one)? > 0 {
                return Err(self.bad("bytes after the trailer"));
            }
            return Ok(None);
        }
        let at = self.offset;
        let mut head = [0u8; FRAME_HEAD];
        let got = self.read_exact(&mut head)?;
        if got < FRAME_HEAD {
            return Err(self.bad(&format!(
                "the file ends inside or before a frame's header (truncated: no trailer after {} \
                 frames of entries)",
                self.seq
            )));
        }
        let kind = head[0];
        let seq = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
        let raw_len = u32::from_be_bytes(head[5..9].try_into().expect("4 bytes")) as usize;
        let stored_len = u32::from_be_bytes(head[9..13].try_into().expect("4 bytes")) as usize;
        let check = u64::from_be_bytes(head[13..21].try_into().expect("8 bytes"));
        if raw_len > MAX_FRAME_RAW || stored_len > zstd::zstd_safe::compress_bound(MAX_FRAME_RAW) {
            return Err(self.bad("a frame's header is damaged (its length is out of bounds)"));
        }
        // Read as it arrives: a damaged length does not allocate ahead of the bytes.
        let mut stored = Vec::new();
        let n = (&mut self.inp)
            .take(stored_len as u64)
            .read_to_end(&mut stored)
            .map_err(|e| Error::io(self.name.clone(), e))?;
        self.offset += n as u64;
        if n < stored_len {
            return Err(self.bad("the file ends inside a frame (truncated)"));
        }
        if checksum(&head[..13], &stored) != check {
            self.offset = at;
            return Err(self.bad("checksum mismatch (the frame is damaged)"));
        }
        if seq != self.seq {
            self.offset = at;
            return Err(self.bad(&format!(
                "frame number {seq} where {} was due (frames lost or out of order)",
                self.seq
            )));
        }
        let raw = zstd::bulk::decompress(&stored, raw_len)
            .ok()
            .filter(|r| r.len() == raw_len)
            .ok_or_else(|| self.bad("the frame does not decompress to its length"))?;
        self.seq += 1;
        match kind {
            ENTRIES => {
                self.entries += count_entries(&raw).ok_or_else(|| self.bad("a damaged entry"))?;
                self.data_bytes += raw_len as u64;
                Ok(Some(Frame::Entries(raw)))
            }
            TRAILER => {
                let t = Trailer::decode(&raw).ok_or_else(|| self.bad("a damaged trailer"))?;
                if (t.entries, t.data_bytes, t.frames) != (self.entries, self.data_bytes, seq) {
                    return Err(self.bad(&format!(
                        "the trailer counts {} entries in {} frames, the file holds {} in {}",
                        t.entries, t.frames, self.entries, seq
                    )));
                }
                self.done = true;
                Ok(Some(Frame::Trailer(t)))
            }
            k => Err(self.bad(&format!("unknown frame kind {k}"))),
        }
    }
}

/// How many whole entries `raw` holds (`None` when one is cut short).
fn count_entries(raw: &[u8]) -> Option<u64> {
    let mut n = 0;
    for e in entries(raw) {
        e?;
        n += 1;
    }
    Some(n)
}

/// The entries of a frame's raw bytes; `None` for one cut short.
pub(crate) fn entries(raw: &[u8]) -> impl Iterator<Item = Option<(&[u8], &[u8])>> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let kl = u32::from_be_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
            let vl = u32::from_be_bytes(rest.get(4..8)?.try_into().ok()?) as usize;
            let k = rest.get(8..8 + kl)?;
            let v = rest.get(8 + kl..8 + kl + vl)?;
            rest = &rest[8 + kl + vl..];
            Some((k, v))
        })();
        if entry.is_none() {
            rest = &[];
        }
        Some(entry)
    })
}
