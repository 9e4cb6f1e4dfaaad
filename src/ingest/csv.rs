//! KISSmetrics CSV import: columns `Identity`, `Timestamp` (seconds; not required for an alias
//! row), `Event`, `Alias`, and up to ten `Prop:<name>` columns. A row with `Alias` links
//! `Identity` and `Alias`; with `Event` records it; with only properties sets them.
//! `Prop:_p_original` (from `idgraph export events --format csv`) works as `_p_original` does in
//! JSON lines: the row is recorded under it, and it is linked to `Identity`.

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;

use super::input::MAX_LINE_BYTES;
use crate::id::Identity;
use crate::op::{Cause, Op, Properties, Timestamp, Value};

/// Which column holds what.
#[derive(Clone, Debug)]
pub struct Columns {
    identity: usize,
    timestamp: Option<usize>,
    event: Option<usize>,
    alias: Option<usize>,
    original: Option<usize>,
    props: Vec<(usize, String)>,
}

/// Reads the header row.
pub fn columns(header: &csv::StringRecord) -> Result<Columns, String> {
    let (mut identity, mut timestamp, mut event, mut alias) = (None, None, None, None);
    let mut original = None;
    let mut props = Vec::new();
    for (i, h) in header.iter().enumerate() {
        let h = h.trim();
        let lower = h.to_ascii_lowercase();
        let slot = match lower.as_str() {
            "identity" => &mut identity,
            "timestamp" => &mut timestamp,
            "event" => &mut event,
            "alias" => &mut alias,
            "prop:_p_original" => &mut original,
            _ if lower.starts_with("prop:") && h.len() > 5 => {
                props.push((i, h[5..].to_owned()));
                continue;
            }
            _ => {
                return Err(format!(
                    "unknown column {h:?} (expected Identity, Timestamp, Event, Alias, Prop:<name>)"
                ));
            }
        };
        if slot.replace(i).is_some() {
            return Err(format!("column {h:?} appears twice"));
        }
    }
    if props.len() > 10 {
        return Err(format!("{} Prop: columns; at most 10", props.len()));
    }
    Ok(Columns {
        identity: identity.ok_or("no Identity column")?,
        timestamp,
        event,
        alias,
        original,
        props,
    })
}

/// Turns one row into ops. `now` is the time of an alias row without a timestamp.
pub fn parse_row(
    c: &Columns,
    row: &csv::StringRecord,
    now: Timestamp,
    source: Option<&str>,
) -> Result<Vec<Op>, String> {
    let cell = |i: Option<usize>| i.and_then(|i| row.get(i)).unwrap_or("");
    let id = Identity::new(cell(Some(c.identity))).map_err(|e| format!("Identity: {e}"))?;
    let ts = cell(c.timestamp);
    let at = if ts.trim().is_empty() {
        None
    } else {
        Some(super::km_json::timestamp(ts).map_err(|e| e.replace("_t", "Timestamp"))?)
    };
    let props = Properties::from_pairs(c.props.iter().filter_map(|(i, name)| {
        let v = row.get(*i).unwrap_or("");
        (!v.is_empty()).then(|| (name.as_str(), Value::Text(v.to_owned())))
    }))
    .map_err(|e| e.to_string())?;
    let (event, alias) = (cell(c.event), cell(c.alias));
    let mut ops = Vec::with_capacity(1);
    let original = cell(c.original);
    let id = if original.is_empty() || original == id.as_str() {
        id
    } else {
        let o = Identity::new(original).map_err(|e| format!("Prop:_p_original: {e}"))?;
        ops.push(Op::Alias {
            a: id,
            b: o.clone(),
            at: at.unwrap_or(now),
            cause: Cause::Import,
            source: source.map(str::to_owned),
        });
        o
    };
    if !alias.is_empty() {
        let b = Identity::new(alias).map_err(|e| format!("Alias: {e}"))?;
        ops.push(Op::Alias {
            a: id.clone(),
            b,
            at: at.unwrap_or(now),
            cause: Cause::Import,
            source: source.map(str::to_owned),
        });
    }
    if !event.is_empty() || !props.is_empty() {
        let at = at.ok_or("Timestamp is required for an event or properties")?;
        let op = if event.is_empty() {
            Op::set(id, props, at)
        } else {
            Op::record(id, event, props, at)
        };
        op.validate().map_err(|e| e.to_string())?;
        ops.push(op);
    }
    if ops.is_empty() {
        return Err("nothing to do: no Event, Alias or Prop: value".into());
    }
    Ok(ops)
}

/// A CSV file's records, read as `idgraph import` reads them: the header first (or given, for
/// a file read from the middle), then each record with its line and its ops or why it is bad.
/// One reading for the importer ([`FileSource`](super::files::FileSource)), the Arrow parse of
/// whole files ([`parse_csv`](super::arrow::parse_csv): the Python package, the Spark job) and
/// the fuzzer.
///
/// Lines are counted here, not taken from the `csv` crate, whose record positions are a line
/// short after a blank line and when the reader starts without a header (rust-csv issues 208
/// and 184): a record's line is one more than the newlines before its first byte.
pub struct Records<R> {
    rdr: ::csv::Reader<Tallied<R>>,
    tally: Rc<RefCell<Tally>>,
    header_len: usize,
    cols: Columns,
    rec: ::csv::StringRecord,
    name: String,
    first: u64,
    now: Timestamp,
}

/// Why a CSV file cannot be read on: its header is bad, or a record is longer than
/// [`MAX_LINE_BYTES`] (past it the reader cannot tell where the next record starts). It stops
/// an import, `--skip-invalid` or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// The line: 1 for the header; the line the long record starts on.
    pub line: u64,
    /// Why, as the importer says it after `FILE:LINE: `.
    pub reason: String,
}

impl Stop {
    /// The error that stops reading `file`: `FILE:LINE: reason`, as the importer says it.
    pub fn error(self, file: &str) -> crate::Error {
        crate::Error::Input(format!("{file}:{}: {}", self.line, self.reason))
    }
}

/// One record of a CSV file.
#[derive(Debug)]
pub struct Row {
    /// The line it starts on.
    pub line: u64,
    /// `NAME:LINE`: where it is, as errors and alias links name it.
    pub at: String,
    /// Its ops, or why the record is bad.
    pub parsed: Result<Vec<Op>, String>,
    /// A record with as many fields as the header: a row read (good or bad), which the
    /// importer counts. Not one the CSV reader refused or of another length.
    pub counted: bool,
    /// The byte offset where it starts, within what this reader read.
    pub byte: u64,
}

impl<R: Read> Records<R> {
    /// Reads `reader` as the CSV file `name` whose first line here is line `first` + 1.
    /// `header`: the file's header, when `reader` starts past it (a file read from the
    /// middle); `None` reads the header from `reader`. `now` is the time of an alias row
    /// without a timestamp.
    ///
    /// # Errors
    /// A header that cannot be read, or names unknown or repeated columns.
    pub fn new(
        name: &str,
        reader: R,
        header: Option<::csv::StringRecord>,
        first: u64,
        now: Timestamp,
    ) -> Result<Self, Stop> {
        let tally = Rc::new(RefCell::new(Tally::default()));
        let mut rdr = ::csv::ReaderBuilder::new()
            .has_headers(header.is_none())
            .from_reader(Tallied {
                inner: reader,
                tally: tally.clone(),
            });
        let stop = |reason: String| Stop { line: 1, reason };
        let header = match header {
            Some(h) => h,
            None => rdr.headers().map_err(|e| stop(e.to_string()))?.clone(),
        };
        let cols = columns(&header).map_err(stop)?;
        Ok(Records {
            rdr,
            tally,
            header_len: header.len(),
            cols,
            rec: ::csv::StringRecord::new(),
            name: name.to_owned(),
            first,
            now,
        })
    }

    /// The next record; `None` at the end of the file.
    ///
    /// # Errors
    /// A record longer than [`MAX_LINE_BYTES`], or the reader failing.
    pub fn next_row(&mut self) -> Result<Option<Row>, Stop> {
        let before = self.rdr.position().byte();
        self.tally.borrow_mut().since = 0;
        let read = self.rdr.read_record(&mut self.rec);
        // Where the record starts (the `csv` crate's position is before the blank lines it
        // skipped), and its line.
        let start = match &read {
            Ok(_) => self.rec.position(),
            Err(e) => e.position(),
        }
        .map_or(before, |p| p.byte());
        let line = self.first + self.tally.borrow_mut().line_at(start);
        let at = format!("{}:{line}", self.name);
        let (parsed, counted) = match read {
            Ok(false) => return Ok(None),
            Ok(true) if self.rec.len() != self.header_len => {
                // A file read from the middle has no first row to set the length.
                let reason = format!(
                    "the row has {} fields, the header {}",
                    self.rec.len(),
                    self.header_len
                );
                (Err(reason), false)
            }
            Ok(true) => (parse_row(&self.cols, &self.rec, self.now, Some(&at)), true),
            Err(e) => {
                if let ::csv::ErrorKind::Io(io) = e.kind() {
                    let reason = match io.get_ref() {
                        Some(x) if x.is::<RecordTooLong>() => RecordTooLong.to_string(),
                        _ => e.to_string(),
                    };
                    return Err(Stop { line, reason });
                }
                let reason = match e.kind() {
                    ::csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => format!("the row has {len} fields, the header {expected_len}"),
                    _ => e.to_string(),
                };
                (Err(reason), false)
            }
        };
        Ok(Some(Row {
            line,
            at,
            parsed,
            counted,
            byte: start,
        }))
    }

    /// Where the reader is: bytes and lines read so far.
    pub fn position(&self) -> &::csv::Position {
        self.rdr.position()
    }
}

/// What [`Tallied`] saw of the bytes it read.
#[derive(Default)]
struct Tally {
    /// Bytes read since the current record started (reset before each record): past
    /// [`MAX_LINE_BYTES`] the read fails, which bounds the memory of one record.
    since: u64,
    /// Bytes read and not yet forgotten: from `head` on, those from `base` on (at most a
    /// record and the CSV reader's read-ahead); before `head`, counted and kept only until
    /// the next read drops them (one move per read, not one per record).
    pending: Vec<u8>,
    head: usize,
    base: u64,
    /// Newlines before `base`.
    lines: u64,
}

impl Tally {
    /// The line of the record whose position the `csv` crate gives as `byte`: blank lines
    /// there are skipped first, as the reader skips them. Forgets the bytes before it.
    fn line_at(&mut self, byte: u64) -> u64 {
        let rest = &self.pending[self.head..];
        let from = usize::try_from(byte.saturating_sub(self.base))
            .unwrap_or(usize::MAX)
            .min(rest.len());
        let skip = rest[from..]
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        let upto = from + skip;
        self.lines += memchr::memchr_iter(b'\n', &rest[..upto]).count() as u64;
        self.head += upto;
        self.base += upto as u64;
        self.lines + 1
    }

    /// Keeps `bytes`, just read.
    fn keep(&mut self, bytes: &[u8]) {
        self.pending.drain(..self.head);
        self.head = 0;
        self.pending.extend_from_slice(bytes);
    }
}

/// A reader that tallies what it reads ([`Tally`]) and fails once a record grows past
/// [`MAX_LINE_BYTES`].
struct Tallied<R> {
    inner: R,
    tally: Rc<RefCell<Tally>>,
}

/// The error [`Tallied`] fails with.
#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a record longer than the limit of {MAX_LINE_BYTES} bytes (max_line_bytes)"
        )
    }
}

impl std::error::Error for RecordTooLong {}

impl<R: Read> Read for Tallied<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut t = self.tally.borrow_mut();
        if t.since > MAX_LINE_BYTES as u64 {
            return Err(std::io::Error::other(RecordTooLong));
        }
        let n = self.inner.read(out)?;
        t.since += n as u64;
        t.keep(&out[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cells: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(cells.to_vec())
    }

    #[test]
    fn rows_become_ops() {
        let c = columns(&rec(&[
            "Identity",
            "Timestamp",
            "Event",
            "Alias",
            "Prop:Plan",
        ]))
        .unwrap();
        let ops = parse_row(&c, &rec(&["bob", "10", "Signed Up", "", "pro"]), 99, None).unwrap();
        assert!(
            matches!(&ops[..], [Op::Record { at: 10, properties, .. }] if properties.get("plan") == Some(&"pro".into()))
        );
        let ops = parse_row(&c, &rec(&["bob", "", "", "bob@x", ""]), 99, None).unwrap();
        assert!(matches!(&ops[..], [Op::Alias { at: 99, .. }]));
        let ops = parse_row(&c, &rec(&["bob", "5", "", "", "team"]), 99, None).unwrap();
        assert!(matches!(&ops[..], [Op::Set { at: 5, .. }]));
    }

    /// Every record's line, as `Records` tells it.
    fn lines_of(data: &[u8], header: Option<csv::StringRecord>, first: u64) -> Vec<u64> {
        let mut rows = Records::new("f.csv", data, header, first, 0).unwrap();
        let mut out = Vec::new();
        while let Some(row) = rows.next_row().unwrap() {
            assert_eq!(row.at, format!("f.csv:{}", row.line));
            out.push(row.line);
        }
        out
    }

    proptest::proptest! {
        /// Lines against a model that writes the file: blank lines (LF or CRLF) anywhere,
        /// quoted fields spanning lines, rows good and bad; and the same file read from the
        /// middle with its header given (as a resumed import reads it).
        #[test]
        fn records_are_numbered_by_their_first_line(
            rows in proptest::collection::vec((0usize..3, proptest::bool::ANY, 0usize..3, 0u8..3), 1..12),
            cut in 0usize..12,
        ) {
            let mut data = b"Identity,Timestamp,Prop:Note\n".to_vec();
            let (mut line, mut want, mut starts) = (2u64, Vec::new(), Vec::new());
            for (i, &(blanks, crlf, breaks, kind)) in rows.iter().enumerate() {
                let end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
                for _ in 0..blanks {
                    data.extend_from_slice(end);
                    line += 1;
                }
                want.push(line);
                starts.push((data.len(), line - 1));
                let note = format!("\"{}\"", "x\n".repeat(breaks));
                let time = if kind == 0 { "x" } else { "5" }; // a bad row too
                let cells = if kind == 2 { format!("id{i},{time}") } else { format!("id{i},{time},{note}") };
                data.extend_from_slice(cells.as_bytes());
                data.extend_from_slice(end);
                line += 1 + if kind == 2 { 0 } else { breaks as u64 };
            }
            proptest::prop_assert_eq!(lines_of(&data, None, 0), want.clone());
            let cut = cut.min(rows.len() - 1);
            let (at, before) = starts[cut];
            let header = csv::StringRecord::from(vec!["Identity", "Timestamp", "Prop:Note"]);
            proptest::prop_assert_eq!(lines_of(&data[at..], Some(header), before), want[cut..].to_vec());
        }
    }

    #[test]
    fn a_record_past_the_limit_stops_at_its_first_line() {
        let mut data = b"Identity,Timestamp,Event\nbob,1,E\n\n\"".to_vec();
        // Past the limit by more than the CSV reader's read-ahead (the bytes it holds before a
        // record starts are not counted against it).
        data.resize(data.len() + MAX_LINE_BYTES + (64 << 10), b'y');
        let mut rows = Records::new("f.csv", &data[..], None, 0, 0).unwrap();
        assert_eq!(rows.next_row().unwrap().unwrap().line, 2);
        let stop = rows.next_row().unwrap_err();
        assert_eq!(stop.line, 4);
        assert!(
            stop.reason.contains("a record longer than the limit"),
            "{stop:?}"
        );
        let stop = Records::new("f.csv", &b"Identity,Identity\n"[..], None, 0, 0)
            .err()
            .unwrap();
        assert_eq!(
            (stop.line, stop.reason.contains("appears twice")),
            (1, true)
        );
    }

    #[test]
    fn bad_rows_and_headers_say_why() {
        assert!(
            columns(&rec(&["Timestamp"]))
                .unwrap_err()
                .contains("no Identity")
        );
        assert!(
            columns(&rec(&["Identity", "Colour"]))
                .unwrap_err()
                .contains("unknown column")
        );
        let c = columns(&rec(&["identity", "timestamp", "event"])).unwrap();
        let e = parse_row(&c, &rec(&["bob", "", "E"]), 0, None).unwrap_err();
        assert!(e.contains("Timestamp is required"), "{e}");
        let e = parse_row(&c, &rec(&["bob", "x", "E"]), 0, None).unwrap_err();
        assert!(e.contains("Timestamp \"x\""), "{e}");
        let e = parse_row(&c, &rec(&["", "1", "E"]), 0, None).unwrap_err();
        assert!(e.contains("Identity: invalid ID"), "{e}");
        let e = parse_row(&c, &rec(&["bob", "1", ""]), 0, None).unwrap_err();
        assert!(e.contains("nothing to do"), "{e}");
    }
}
