//! The compact form of blocks on disk (format 6, DESIGN.md "Compact blocks").
//!
//! The store's code works on blocks in their *plain* layout (length-prefixed entries whose
//! keys and values are laid out as under their own keys: [`super::push_block_event`],
//! [`super::push_packed`]); sled holds them compacted. A compact block starts with [`MARK`]
//! (a plain block cannot: its first byte is the high byte of a length of at most 1,036), then
//! a table of the block's distinct strings (event names, property names, text values), then
//! the entries with integers as varints, nodes and times as differences from the entry before,
//! and strings as indexes into the table. Plain blocks written by format 5 are read as they
//! are.
//!
//! Integers are LEB128 varints; signed ones zigzag-encoded first.
//!
//! Events: node delta · time delta (zigzag) · name index · lower-cased name (0: the name's
//! lower case, else index + 1) · property count · per property: (name index << 2 | tag) and
//! the value (tag 0 integer, zigzag; 1 float, 8 bytes LE; 2 text, index).
//!
//! ID records: node delta · first-seen delta (zigzag) · length of the rest · ID length · ID ·
//! flags byte · edge length (0: none) · edge bytes as in the plain record · property count ·
//! per property: (name index << 2 | tag), value, time minus first-seen (zigzag), apply
//! sequence.

use std::borrow::Cow;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{
    IdRecord, PropMap, StoredProp, bare_event_node, bare_event_time, decode_borrowed, decode_intro,
    encode, record_parts,
};
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::graph::Flags;
use crate::op::{Properties, Value};

/// The first byte of a compact block.
pub const MARK: u8 = 0xC6;

/// An event's value, borrowing its strings (the same bincode layout as `StoredEvent`).
#[derive(Serialize, Deserialize)]
struct EventRef<'a> {
    name: &'a str,
    #[serde(borrow)]
    properties: Vec<(&'a str, ValueRef<'a>)>,
}

/// `StoredValue`, borrowing its text.
#[derive(Serialize, Deserialize)]
enum ValueRef<'a> {
    Int(i64),
    Float(f64),
    Text(&'a str),
}

/// `StoredProp`, borrowing its strings (a `PropMap` is a list of these).
#[derive(Serialize, Deserialize)]
struct PropRef<'a> {
    name: &'a str,
    #[serde(borrow)]
    value: ValueRef<'a>,
    at: i64,
    seq: u64,
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("a compact block is damaged: {what}"))
}

fn put(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push(x as u8 | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(x: u64) -> i64 {
    (x >> 1) as i64 ^ -((x & 1) as i64)
}

/// The distinct strings of a block being compacted, in first-use order.
#[derive(Default)]
struct Table<'a> {
    index: FxHashMap<&'a str, u64>,
    bytes: Vec<u8>,
}

impl<'a> Table<'a> {
    /// The index of `s`, added when new.
    fn index(&mut self, s: &'a str) -> u64 {
        let n = self.index.len() as u64;
        *self.index.entry(s).or_insert_with(|| {
            put(&mut self.bytes, s.len() as u64);
            self.bytes.extend_from_slice(s.as_bytes());
            n
        })
    }

    fn finish(self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.bytes.len() + body.len());
        out.push(MARK);
        put(&mut out, self.index.len() as u64);
        out.extend_from_slice(&self.bytes);
        out.extend_from_slice(body);
        out
    }
}

fn put_value<'a>(out: &mut Vec<u8>, t: &mut Table<'a>, name: &'a str, v: &ValueRef<'a>) {
    let tag = match v {
        ValueRef::Int(_) => 0,
        ValueRef::Float(_) => 1,
        ValueRef::Text(_) => 2,
    };
    // The name's index with the tag in its low bits.
    put(out, t.index(name) << 2 | tag);
    match v {
        ValueRef::Int(x) => put(out, zigzag(*x)),
        ValueRef::Float(x) => out.extend_from_slice(&x.to_le_bytes()),
        ValueRef::Text(s) => put(out, t.index(s)),
    }
}

fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (i < 9 || byte <= 1).then_some((x, i + 1));
        }
    }
    None
}

/// Reads a compact block: its string table, then its entries.
struct Reader<'a> {
    rest: &'a [u8],
    /// The strings, each checked for UTF-8 when first used (a lookup uses few of them; a scan
    /// uses each many times and checks it once).
    table: Vec<TableStr<'a>>,
}

/// A string of a block's table: its bytes until first used, then the string they were found to
/// be.
#[derive(Clone, Copy)]
enum TableStr<'a> {
    Unchecked(&'a [u8]),
    Checked(&'a str),
}

impl<'a> Reader<'a> {
    /// A reader of `block`, which must start with [`MARK`].
    fn new(block: &'a [u8]) -> Result<Self> {
        let Some((&MARK, rest)) = block.split_first() else {
            return Err(corrupt("it does not start with its mark"));
        };
        let mut r = Reader {
            rest,
            table: Vec::new(),
        };
        let n = r.varint()?;
        // Each string takes at least its length byte.
        if n > r.rest.len() as u64 {
            return Err(corrupt("its string table is cut short"));
        }
        r.table.reserve(n as usize);
        for _ in 0..n {
            let len = r.varint()?;
            let s = r.take(len)?;
            r.table.push(TableStr::Unchecked(s));
        }
        Ok(r)
    }

    fn done(&self) -> bool {
        self.rest.is_empty()
    }

    fn varint(&mut self) -> Result<u64> {
        let (x, n) = read_varint(self.rest).ok_or_else(|| corrupt("a number is cut short"))?;
        self.rest = &self.rest[n..];
        Ok(x)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.rest.len() as u64 {
            return Err(corrupt("an entry is cut short"));
        }
        let (a, b) = self.rest.split_at(n as usize);
        self.rest = b;
        Ok(a)
    }

    fn string(&mut self) -> Result<&'a str> {
        let i = self.varint()?;
        self.index(i)
    }

    fn index(&mut self, i: u64) -> Result<&'a str> {
        let slot = usize::try_from(i)
            .ok()
            .and_then(|i| self.table.get_mut(i))
            .ok_or_else(|| corrupt("a string index is out of range"))?;
        match *slot {
            TableStr::Checked(s) => Ok(s),
            TableStr::Unchecked(b) => {
                let s = std::str::from_utf8(b).map_err(|_| corrupt("a string is not UTF-8"))?;
                *slot = TableStr::Checked(s);
                Ok(s)
            }
        }
    }

    /// A count of items that take at least one byte each.
    fn count(&mut self) -> Result<usize> {
        let n = self.varint()?;
        if n > self.rest.len() as u64 {
            return Err(corrupt("a count exceeds the block"));
        }
        Ok(n as usize)
    }

    fn node_after(&mut self, prev: u64) -> Result<u64> {
        let n = prev
            .checked_add(self.varint()?)
            .filter(|&n| Node::from_u64(n).is_some())
            .ok_or_else(|| corrupt("a node is out of range"))?;
        Ok(n)
    }

    fn value(&mut self) -> Result<(&'a str, ValueRef<'a>)> {
        let head = self.varint()?;
        let name = self.index(head >> 2)?;
        let v = match head & 3 {
            0 => ValueRef::Int(unzigzag(self.varint()?)),
            1 => ValueRef::Float(f64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            2 => ValueRef::Text(self.string()?),
            _ => return Err(corrupt("a value has an unknown type")),
        };
        Ok((name, v))
    }
}

/// Writes an entry's node and time as differences from the previous entry's (`prev`, then
/// updated); entries must come in node order.
fn put_step(
    out: &mut Vec<u8>,
    (node, time): (u64, i64),
    prev: &mut (u64, i64),
    what: &str,
) -> Result<()> {
    let delta = node
        .checked_sub(prev.0)
        .ok_or_else(|| Error::Corrupt(format!("a block's {what} are out of node order")))?;
    put(out, delta);
    put(out, zigzag(time.wrapping_sub(prev.1)));
    *prev = (node, time);
    Ok(())
}

/// Whether `lower` is what the key of an event named `name` holds (its lower case).
fn is_lower_of(lower: &str, name: &str) -> bool {
    if name.is_ascii() {
        lower.len() == name.len()
            && lower
                .bytes()
                .zip(name.bytes())
                .all(|(l, n)| l == n.to_ascii_lowercase())
    } else {
        name.to_lowercase() == lower
    }
}

/// A plain block of packed events ([`super::push_block_event`] entries) in compact form.
pub fn events(plain: &[u8]) -> Result<Vec<u8>> {
    let mut t = Table::default();
    let mut body = Vec::with_capacity(plain.len() / 2);
    let mut prev = (0u64, 0i64);
    for e in super::block_events(plain) {
        let (k, v) = e?;
        let node = bare_event_node(k)?.as_u64();
        let time = bare_event_time(k);
        let lower = std::str::from_utf8(&k[16..])
            .map_err(|_| Error::Corrupt("an event name is not UTF-8".into()))?;
        let ev: EventRef = decode_borrowed(v, "an event")?;
        put_step(&mut body, (node, time), &mut prev, "events")?;
        put(&mut body, t.index(ev.name));
        let lower = if is_lower_of(lower, ev.name) {
            0
        } else {
            t.index(lower) + 1
        };
        put(&mut body, lower);
        put(&mut body, ev.properties.len() as u64);
        for (name, value) in &ev.properties {
            put_value(&mut body, &mut t, name, value);
        }
    }
    Ok(t.finish(&body))
}

/// The head of one event of a compact block, read in place; its properties follow in the
/// block ([`EventsReader::properties`] or [`EventsReader::skip_properties`]).
pub struct EventHead<'a> {
    pub node: Node,
    pub time: i64,
    pub name: &'a str,
    /// The key's lower-cased name when it is not `name`'s lower case (not expected).
    pub odd_lower: Option<&'a str>,
}

impl EventHead<'_> {
    /// Writes the event's full key (`prefix`, node, time, lower-cased name) into `out`,
    /// replacing what it held.
    pub fn key_into(&self, prefix: u8, out: &mut Vec<u8>) {
        out.clear();
        out.push(prefix);
        self.push_key(out);
    }

    /// The event's key without its prefix byte (node, time, lower-cased name).
    pub fn bare_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(16 + self.name.len());
        self.push_key(&mut k);
        k
    }

    /// Appends the key without its prefix byte; an ASCII name is lower-cased on the way, not
    /// into a string of its own.
    fn push_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node.as_u64().to_be_bytes());
        out.extend_from_slice(&super::time_bytes(self.time));
        match self.odd_lower {
            Some(l) => out.extend_from_slice(l.as_bytes()),
            None if self.name.is_ascii() => {
                out.extend(self.name.bytes().map(|b| b.to_ascii_lowercase()))
            }
            None => out.extend_from_slice(self.name.to_lowercase().as_bytes()),
        }
    }
}

/// Reads a compact block of events in place, entry by entry (what `events(id)` reads: no
/// expansion, only the wanted entries' properties decoded).
pub struct EventsReader<'a> {
    r: Reader<'a>,
    node: u64,
    time: i64,
}

impl<'a> EventsReader<'a> {
    /// A reader of `compact` (a block starting with [`MARK`]).
    pub fn new(compact: &'a [u8]) -> Result<Self> {
        Ok(EventsReader {
            r: Reader::new(compact)?,
            node: 0,
            time: 0,
        })
    }

    /// The next event's head; its properties must be read or skipped before the next call.
    pub fn next_head(&mut self) -> Option<Result<EventHead<'a>>> {
        if self.r.done() {
            return None;
        }
        Some((|| {
            self.node = self.r.node_after(self.node)?;
            self.time = self.time.wrapping_add(unzigzag(self.r.varint()?));
            let name = self.r.string()?;
            let odd_lower = match self.r.varint()? {
                0 => None,
                i => Some(self.r.index(i - 1)?),
            };
            Ok(EventHead {
                node: Node::from_u64(self.node).expect("checked"),
                time: self.time,
                name,
                odd_lower,
            })
        })())
    }

    /// The current event's properties.
    pub fn properties(&mut self) -> Result<Properties> {
        let n = self.r.count()?;
        let mut props = Vec::with_capacity(n);
        for _ in 0..n {
            let (name, v) = self.r.value()?;
            props.push((name.to_owned(), v.into()));
        }
        Ok(Properties::from_vec_unchecked(props))
    }

    /// Steps over the current event's properties.
    pub fn skip_properties(&mut self) -> Result<()> {
        for _ in 0..self.r.count()? {
            self.r.value()?;
        }
        Ok(())
    }

    fn properties_ref(&mut self) -> Result<Vec<(&'a str, ValueRef<'a>)>> {
        let n = self.r.count()?;
        let mut props = Vec::with_capacity(n);
        for _ in 0..n {
            props.push(self.r.value()?);
        }
        Ok(props)
    }
}

impl From<ValueRef<'_>> for Value {
    fn from(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(x) => Value::Float(x),
            ValueRef::Text(s) => Value::Text(s.to_owned()),
        }
    }
}

/// A stored block of packed events in its plain layout: compact blocks expanded, plain ones
/// (format 5) as they are.
pub fn events_plain(stored: &[u8]) -> Result<Cow<'_, [u8]>> {
    if stored.first() != Some(&MARK) {
        return Ok(Cow::Borrowed(stored));
    }
    let mut rd = EventsReader::new(stored)?;
    let mut out = Vec::with_capacity(stored.len() * 3);
    while let Some(head) = rd.next_head() {
        let head = head?;
        let key = head.bare_key();
        let key_len = u16::try_from(key.len()).map_err(|_| corrupt("a name is too long"))?;
        let value = encode(&EventRef {
            name: head.name,
            properties: rd.properties_ref()?,
        })?;
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(&key);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(&value);
    }
    Ok(Cow::Owned(out))
}

/// A plain block of packed ID records ([`super::push_packed`] entries) in compact form.
pub fn ids(plain: &[u8]) -> Result<Vec<u8>> {
    let mut t = Table::default();
    let mut body = Vec::with_capacity(plain.len() / 2);
    let mut prev = (0u64, 0i64);
    let mut entry = Vec::new();
    for e in super::packed_iter(plain) {
        let (id, rec) = e?;
        let super::RecordParts {
            node,
            first_seen,
            flags,
            edge,
            props,
        } = record_parts(rec)?;
        let node = node.as_u64();
        put_step(&mut body, (node, first_seen), &mut prev, "ID records")?;
        // The rest behind its length, so that a reader looking for one node steps over it.
        entry.clear();
        put(&mut entry, id.len() as u64);
        entry.extend_from_slice(id);
        entry.push(flags);
        put(&mut entry, edge.len() as u64);
        entry.extend_from_slice(edge);
        let props: Vec<PropRef> = if props.is_empty() {
            Vec::new()
        } else {
            decode_borrowed(props, "the properties of an ID record")?
        };
        put(&mut entry, props.len() as u64);
        for p in &props {
            put_value(&mut entry, &mut t, p.name, &p.value);
            put(&mut entry, zigzag(p.at.wrapping_sub(first_seen)));
            put(&mut entry, p.seq);
        }
        put(&mut body, entry.len() as u64);
        body.extend_from_slice(&entry);
    }
    Ok(t.finish(&body))
}

/// Reads a compact block of ID records entry by entry, each as `(node, ID bytes, the record
/// in its plain encoding)`.
struct IdsReader<'a> {
    r: Reader<'a>,
    node: u64,
    seen: i64,
}

impl<'a> IdsReader<'a> {
    fn new(compact: &'a [u8]) -> Result<Self> {
        Ok(IdsReader {
            r: Reader::new(compact)?,
            node: 0,
            seen: 0,
        })
    }

    /// The next entry's node and, unless `want` is [`Want::Node`], its parts (else it is
    /// stepped over by its length).
    fn next(&mut self, want: Want) -> Option<Result<(Node, Option<IdEntry<'a>>)>> {
        if self.r.done() {
            return None;
        }
        Some((|| {
            self.node = self.r.node_after(self.node)?;
            self.seen = self.seen.wrapping_add(unzigzag(self.r.varint()?));
            let node = Node::from_u64(self.node).expect("checked");
            let len = self.r.varint()?;
            let entry = self.r.take(len)?;
            if want == Want::Node {
                return Ok((node, None));
            }
            let after = std::mem::replace(&mut self.r.rest, entry);
            let parts = self.entry(want);
            if self.r.rest.is_empty() {
                self.r.rest = after;
            } else if parts.is_ok() {
                return Err(corrupt("an entry holds bytes past its ID record"));
            }
            Ok((node, Some(parts?)))
        })())
    }

    /// The parts of the entry `self.r` holds (its properties only read over for
    /// [`Want::Head`]).
    fn entry(&mut self, want: Want) -> Result<IdEntry<'a>> {
        let r = &mut self.r;
        let id_len = r.varint()?;
        let id = r.take(id_len)?;
        let flags = r.take(1)?[0];
        let edge_len = r.varint()?;
        let edge = r.take(edge_len)?;
        let n = r.count()?;
        let mut props = Vec::with_capacity(if want == Want::All { n } else { 0 });
        for _ in 0..n {
            let (name, value) = r.value()?;
            let at = self.seen.wrapping_add(unzigzag(r.varint()?));
            let seq = r.varint()?;
            if want == Want::All {
                props.push(PropRef {
                    name,
                    value,
                    at,
                    seq,
                });
            }
        }
        Ok(IdEntry {
            node: self.node,
            first_seen: self.seen,
            id,
            flags,
            edge,
            props,
        })
    }
}

/// How much of an entry [`IdsReader::next`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Its node only.
    Node,
    /// All but the properties (which are read over).
    Head,
    /// Everything.
    All,
}

/// One entry of a compact block of ID records, read in place.
struct IdEntry<'a> {
    node: u64,
    first_seen: i64,
    id: &'a [u8],
    flags: u8,
    edge: &'a [u8],
    props: Vec<PropRef<'a>>,
}

impl IdEntry<'_> {
    /// The record in its plain encoding ([`IdRecord::encode`]).
    fn plain(&self, rec: &mut Vec<u8>) -> Result<()> {
        rec.clear();
        rec.extend_from_slice(&self.node.to_be_bytes());
        rec.extend_from_slice(&self.first_seen.to_be_bytes());
        rec.push(self.flags);
        if !self.edge.is_empty() || !self.props.is_empty() {
            rec.extend_from_slice(&(self.edge.len() as u32).to_be_bytes());
            rec.extend_from_slice(self.edge);
            if !self.props.is_empty() {
                rec.extend_from_slice(&encode(&self.props)?);
            }
        }
        Ok(())
    }

    /// The record decoded (no plain bytes in between).
    fn record(self) -> Result<IdRecord> {
        Ok(IdRecord {
            node: Node::from_u64(self.node).expect("checked when read"),
            first_seen: self.first_seen,
            flags: Flags::from_bits(self.flags),
            intro: decode_intro(self.edge)?,
            props: PropMap(
                self.props
                    .into_iter()
                    .map(|p| StoredProp {
                        name: p.name.to_owned(),
                        value: Value::from(p.value).into(),
                        at: p.at,
                        seq: p.seq,
                    })
                    .collect(),
            ),
        })
    }
}

/// A stored block of packed ID records in its plain layout: compact blocks expanded, plain
/// ones (format 5) as they are.
pub fn ids_plain(stored: &[u8]) -> Result<Cow<'_, [u8]>> {
    if stored.first() != Some(&MARK) {
        return Ok(Cow::Borrowed(stored));
    }
    let mut rd = IdsReader::new(stored)?;
    let mut out = Vec::with_capacity(stored.len() * 2);
    let mut rec = Vec::new();
    while let Some(entry) = rd.next(Want::All) {
        let e = entry?.1.expect("wanted");
        e.plain(&mut rec)?;
        let id_len = u16::try_from(e.id.len()).map_err(|_| corrupt("an ID is too long"))?;
        out.extend_from_slice(&id_len.to_be_bytes());
        out.extend_from_slice(e.id);
        out.extend_from_slice(&(rec.len() as u32).to_be_bytes());
        out.extend_from_slice(&rec);
    }
    Ok(Cow::Owned(out))
}

/// Calls `f` with each entry of a compact block of ID records as (ID, the record in its plain
/// encoding but without its properties): what loading the graph reads, without encoding the
/// properties only to skip them.
pub fn ids_heads(compact: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
    let mut rd = IdsReader::new(compact)?;
    let mut rec = Vec::new();
    while let Some(entry) = rd.next(Want::Head) {
        let e = entry?.1.expect("wanted");
        e.plain(&mut rec)?;
        f(e.id, &rec)?;
    }
    Ok(())
}

/// Calls `f` with each entry of a compact block of ID records as (ID, the record), decoded in
/// place (no plain bytes in between: what `verify` reads).
pub fn ids_records(compact: &[u8], mut f: impl FnMut(&[u8], IdRecord) -> Result<()>) -> Result<()> {
    let mut rd = IdsReader::new(compact)?;
    while let Some(entry) = rd.next(Want::All) {
        let e = entry?.1.expect("wanted");
        let id = e.id;
        f(id, e.record()?)?;
    }
    Ok(())
}

/// The ID and record of node `node` in a compact block of ID records, stepping over the
/// entries before it (the read path of one ID).
pub fn ids_find(compact: &[u8], node: Node) -> Result<Option<(&[u8], IdRecord)>> {
    let mut rd = IdsReader::new(compact)?;
    loop {
        // An entry's node comes before its length: step over it, and read the wanted one
        // again from where it started.
        let from = (rd.r.rest, rd.node, rd.seen);
        let Some(entry) = rd.next(Want::Node) else {
            return Ok(None);
        };
        match entry?.0.cmp(&node) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                (rd.r.rest, rd.node, rd.seen) = from;
                let e = rd.next(Want::All).expect("read once")?.1.expect("wanted");
                return Ok(Some((e.id, e.record()?)));
            }
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, IdRecord, PropMap, StoredEdge, StoredProp, StoredValue};
    use crate::op::{Cause, Properties};

    fn event_block() -> Vec<u8> {
        let mut plain = Vec::new();
        let mut props = Properties::new();
        props.insert("Price", 5).unwrap();
        props.insert("ratio", -0.5).unwrap();
        props.insert("plan", "Pro ✓").unwrap();
        for (node, at, name) in [
            (3, 1_400_000_000, "Signed Up"),
            (3, 1_400_000_000, "Viewed"),
            (3, 1_399_999_000, "Ärger"),
            (9, -5, "Signed Up"),
            (3_000_000_000, i64::MAX, "x"),
        ] {
            let (k, v) = codec::event_entry(Node::from_index(node), name, &props, at).unwrap();
            codec::push_block_event(&mut plain, &k, &v);
        }
        plain
    }

    #[test]
    fn event_blocks_expand_to_their_plain_bytes() {
        let plain = event_block();
        let compact = events(&plain).unwrap();
        assert_eq!(compact[0], MARK);
        assert!(
            compact.len() * 2 < plain.len(),
            "{} {}",
            compact.len(),
            plain.len()
        );
        assert_eq!(&*events_plain(&compact).unwrap(), &plain[..]);
        let mut unmarked = compact.clone();
        unmarked[0] = 0;
        assert!(EventsReader::new(&unmarked).is_err());
        // A plain block is read as it is.
        assert!(matches!(events_plain(&plain).unwrap(), Cow::Borrowed(_)));
        // A key whose name is not the value's lower case survives.
        let mut odd = Vec::new();
        let (mut k, v) =
            codec::event_entry(Node::from_index(1), "Abc", &Properties::new(), 7).unwrap();
        k.truncate(17);
        k.extend_from_slice(b"other");
        codec::push_block_event(&mut odd, &k, &v);
        assert_eq!(&*events_plain(&events(&odd).unwrap()).unwrap(), &odd[..]);
    }

    #[test]
    fn id_blocks_expand_to_their_plain_bytes() {
        let edge = StoredEdge {
            a: Node::from_index(1),
            b: Node::from_index(2),
            at: 9,
            cause: Cause::Alias,
            source: None,
        };
        let props = PropMap(vec![
            StoredProp {
                name: "a".into(),
                value: StoredValue::Text("x".into()),
                at: -3,
                seq: 1 << 50,
            },
            StoredProp {
                name: "b".into(),
                value: StoredValue::Float(2.5),
                at: 1_400_000_000,
                seq: 0,
            },
        ]);
        let mut plain = Vec::new();
        for (i, (intro, props)) in [
            (None, PropMap::default()),
            (Some((7, edge.clone())), PropMap::default()),
            (None, props.clone()),
            (Some((8, edge)), props),
        ]
        .into_iter()
        .enumerate()
        {
            let rec = IdRecord {
                node: Node::from_index(10 + i as u32 * 3),
                first_seen: 1_400_000_000 - i as i64,
                intro,
                props,
                ..IdRecord::default()
            };
            codec::push_packed(
                &mut plain,
                &format!("user{i}@example.com"),
                &rec.encode().unwrap(),
            );
        }
        let compact = ids(&plain).unwrap();
        assert!(compact.len() < plain.len());
        assert_eq!(&*ids_plain(&compact).unwrap(), &plain[..]);
        // One record found in place: the same ID and record bytes as the plain block's.
        for (id, rec) in codec::packed_entries(&plain).unwrap() {
            let node = codec::record_node(rec).unwrap();
            let found = ids_find(&compact, node).unwrap().unwrap();
            assert_eq!(
                (found.0, found.1),
                (id.as_bytes(), IdRecord::decode(rec).unwrap())
            );
        }
        // The heads (what loading the graph reads): the same IDs and heads, no properties.
        let mut heads = Vec::new();
        ids_heads(&compact, |id, rec| {
            heads.push((id.to_vec(), IdRecord::decode(rec)?));
            Ok(())
        })
        .unwrap();
        let want: Vec<(Vec<u8>, IdRecord)> = codec::packed_entries(&plain)
            .unwrap()
            .into_iter()
            .map(|(id, rec)| (id.as_bytes().to_vec(), IdRecord::decode_head(rec).unwrap()))
            .collect();
        assert_eq!(heads, want);
        assert!(want.iter().any(|(_, r)| r.intro.is_some()));
        assert_eq!(ids_find(&compact, Node::from_index(11)).unwrap(), None);
        assert_eq!(ids_find(&compact, Node::from_index(99)).unwrap(), None);
        assert!(matches!(ids_plain(&plain).unwrap(), Cow::Borrowed(_)));
        // Read in place, a block without its mark is an error, not read as compact.
        let mut unmarked = compact.clone();
        unmarked[0] = 0;
        assert!(ids_find(&unmarked, Node::from_index(10)).is_err());
        assert!(ids_heads(&unmarked, |_, _| Ok(())).is_err());
    }

    #[test]
    fn damaged_compact_blocks_are_errors_not_panics() {
        let e = events(&event_block()).unwrap();
        for cut in 1..e.len() {
            let _ = events_plain(&e[..cut]);
            let _ = ids_plain(&e[..cut]);
        }
        for i in 1..e.len() {
            let mut d = e.clone();
            d[i] ^= 0xff;
            let _ = events_plain(&d);
            let _ = ids_plain(&d);
        }
        assert!(events_plain(&[MARK, 5]).is_err());
        assert!(events_plain(&[MARK, 0, 0xff]).is_err());
    }
}
