//! The only module that knows byte layouts: key prefixes, big-endian integers, the fixed-width
//! ID record, and bincode (behind [`encode`] / [`decode`]) for variable values.
//!
//! Everything lives in one sled tree so that one `apply_batch` is atomic across all of it:
//!
//! | key | value |
//! |---|---|
//! | `m` + name | metadata; `m` `format_version` → u32 BE |
//! | `i` + ID bytes | [`IdRecord`]: node u64 BE, first-seen i64 BE, flags u8 (17 bytes); then, when there is one, the alias edge that introduced the ID, and the ID's properties ([`PropMap`]) |
//! | `p` + node u64 BE | a block of ID records written by the bulk import ([`push_packed`]): the records of many IDs, the first of node `node`, in node order. An `i` key of the same ID takes precedence over its entry here |
//! | `e` + seq u64 BE | [`StoredEdge`] (bincode) |
//! | `r` + ID a + `0x00` + ID b (a < b) | [`StoredRefusal`] (bincode) |
//! | `v` + node u64 BE + time (i64, sign bit flipped) BE + lower-cased event name | [`StoredEvent`] |
//! | `f` + a file's canonical path (its OS bytes) | [`FilePart`](crate::FilePart) (bincode): how much of that file imports have read; written after the file's events |
//! | `wintent` (at most one) | the keys and values (or removals) of one op being written ([`encode_intent`]): a redo record, see `Store::apply_batch` and `Store::forget` |

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::forest::Node;
use crate::graph::Flags;
use crate::op::{Cause, Properties, RefusalReason, Timestamp, Value};

pub mod compact;

/// The format this build reads and writes. Bump on any change to the layouts above.
/// Version 2 added the intent record; a version 1 store is upgraded in place at open (its
/// marker rewritten), so that an older build, which would ignore a pending intent, refuses it.
/// Version 3 added blocks of packed ID records (`p` keys); older stores have none and are
/// upgraded the same way, so that a version-2 build, which would miss the packed IDs, refuses
/// them. Version 4 added the graph index's stamp (`m` `index_stamp`): a version-3 build
/// would write without removing it, and the index would then be believed while stale.
/// Version 6 writes blocks (`p`, `b`) in compact form (DESIGN.md, "Compact blocks"); the
/// plain blocks of older stores are read as they are, and a version-5 build, which would
/// misread a compact block, refuses the store once its marker is rewritten.
pub const FORMAT_VERSION: u32 = 6;

/// The format versions this build opens.
pub const READABLE_VERSIONS: [u32; 6] = [1, 2, 3, 4, 5, 6];

/// The key of the redo record of the op being written (see `Store::apply_batch`).
pub const INTENT_KEY: &[u8] = b"wintent";

pub const ID: u8 = b'i';
pub const PACKED: u8 = b'p';
pub const EDGE: u8 = b'e';
pub const REFUSAL: u8 = b'r';
pub const EVENT: u8 = b'v';
/// Blocks of packed events, keyed by the last node they hold (`store/events.rs`). (`w` is
/// taken: the redo record's key.)
pub const EVENT_BLOCK: u8 = b'b';
pub const FILE: u8 = b'f';

pub const FORMAT_KEY: &[u8] = b"mformat_version";

/// The stamp of the current graph index (16 bytes), absent while the index is stale
/// (`store::index`).
pub const INDEX_STAMP_KEY: &[u8] = b"mindex_stamp";

/// The counts of events, properties and IDs at the property limit, with the limit they were
/// counted for (4 × u64 BE), as of the last clean close; absent while a handle writes.
pub const DATA_COUNTS_KEY: &[u8] = b"mdata_counts";

/// The data counts under [`DATA_COUNTS_KEY`]: (events, properties, at limit, limit).
pub fn decode_data_counts(v: &[u8]) -> Option<[u64; 4]> {
    if v.len() != 32 {
        return None;
    }
    let f = |i: usize| u64::from_be_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Some([f(0), f(1), f(2), f(3)])
}

pub fn format_value() -> [u8; 4] {
    FORMAT_VERSION.to_be_bytes()
}

/// One write of a redo record: a key and its new value, or `None` to remove the key.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// Value length that marks a removal in a redo record.
const REMOVED: u32 = u32::MAX;

/// The redo record of one op's writes: count u32 BE, then per write key length u32 BE, key,
/// and value length u32 BE + value (`u32::MAX` and no value for a removal).
pub fn encode_intent(writes: &[Write]) -> Vec<u8> {
    let size: usize = writes
        .iter()
        .map(|(k, v)| 8 + k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    let mut b = Vec::with_capacity(4 + size);
    b.extend_from_slice(&(writes.len() as u32).to_be_bytes());
    for (k, v) in writes {
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k);
        match v {
            Some(v) => {
                b.extend_from_slice(&(v.len() as u32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&REMOVED.to_be_bytes()),
        }
    }
    b
}

/// The writes of a redo record.
pub fn decode_intent(b: &[u8]) -> Result<Vec<Write>> {
    let bad = || Error::Corrupt("the pending write record is damaged".into());
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let part = b
            .get(at..at.checked_add(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        at += n;
        Ok(part)
    };
    let u32_of = |x: &[u8]| u32::from_be_bytes(x.try_into().expect("4 bytes"));
    let count = u32_of(take(4)?) as usize;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let kl = u32_of(take(4)?) as usize;
        let k = take(kl)?.to_vec();
        let vl = u32_of(take(4)?);
        let v = if vl == REMOVED {
            None
        } else {
            Some(take(vl as usize)?.to_vec())
        };
        out.push((k, v));
    }
    if at != b.len() {
        return Err(bad());
    }
    Ok(out)
}

pub fn decode_format(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

fn with_prefix(prefix: u8, cap: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + cap);
    k.push(prefix);
    k
}

pub fn id_key(id: &str) -> Vec<u8> {
    let mut k = with_prefix(ID, id.len());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The value of an `i` key: the ID's node, when the store first saw it, its flags, the alias
/// edge that introduced it (if one did) and the ID's properties. Keeping the edge and the
/// properties here (instead of under keys of their own) makes the most common alias, a new ID
/// onto a known one, one sled write, and the bulk import one write per ID.
///
/// Layout: node u64 BE · first-seen i64 BE · flags u8 — 17 bytes, the whole record when there
/// is neither edge nor property; else a u32 BE length of the edge part (0: none), the edge part
/// (seq u64 BE + bincode [`StoredEdge`]), and the rest a bincode [`PropMap`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdRecord {
    pub node: Node,
    pub first_seen: Timestamp,
    pub flags: Flags,
    /// (edge sequence number, edge)
    pub intro: Option<(u64, StoredEdge)>,
    /// The latest value of each property set under this ID.
    pub props: PropMap,
}

impl IdRecord {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut b = Vec::with_capacity(17);
        b.extend_from_slice(&self.node.as_u64().to_be_bytes());
        b.extend_from_slice(&self.first_seen.to_be_bytes());
        b.push(self.flags.bits());
        if self.intro.is_none() && self.props.0.is_empty() {
            return Ok(b);
        }
        let edge = match &self.intro {
            Some((seq, e)) => {
                let mut x = seq.to_be_bytes().to_vec();
                x.extend_from_slice(&encode(e)?);
                x
            }
            None => Vec::new(),
        };
        b.extend_from_slice(&(edge.len() as u32).to_be_bytes());
        b.extend_from_slice(&edge);
        if !self.props.0.is_empty() {
            b.extend_from_slice(&encode(&self.props)?);
        }
        Ok(b)
    }

    /// Everything but the properties (what opening a store needs).
    pub fn decode_head(b: &[u8]) -> Result<Self> {
        Ok(Self::decode_parts(b)?.0)
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        let (mut rec, rest) = Self::decode_parts(b)?;
        if !rest.is_empty() {
            rec.props = decode(rest, "the properties of an ID record")?;
        }
        Ok(rec)
    }

    fn decode_parts(b: &[u8]) -> Result<(Self, &[u8])> {
        let parts = record_parts(b)?;
        let rec = IdRecord {
            node: parts.node,
            first_seen: parts.first_seen,
            flags: Flags::from_bits(parts.flags),
            intro: decode_intro(parts.edge)?,
            props: PropMap::default(),
        };
        Ok((rec, parts.props))
    }
}

/// The edge part of an ID record (seq u64 BE + bincode edge; empty: none).
fn decode_intro(edge: &[u8]) -> Result<Option<(u64, StoredEdge)>> {
    if edge.is_empty() {
        return Ok(None);
    }
    if edge.len() < 9 {
        return Err(Error::Corrupt(format!(
            "the edge part of an ID record ({} bytes) is cut short",
            edge.len()
        )));
    }
    let seq = u64::from_be_bytes(edge[..8].try_into().expect("8 bytes"));
    Ok(Some((seq, decode(&edge[8..], "the edge of an ID record")?)))
}

/// The parts of an encoded ID record, undecoded.
struct RecordParts<'a> {
    node: Node,
    first_seen: Timestamp,
    flags: u8,
    /// seq u64 BE + bincode edge; empty: none.
    edge: &'a [u8],
    /// bincode `PropMap`; empty: none.
    props: &'a [u8],
}

/// The parts of an encoded ID record.
fn record_parts(b: &[u8]) -> Result<RecordParts<'_>> {
    let bad = || Error::Corrupt(format!("an ID record of {} bytes is cut short", b.len()));
    if b.len() < 17 || (b.len() > 17 && b.len() < 21) {
        return Err(bad());
    }
    let node = record_node(b)?;
    let first_seen = i64::from_be_bytes(b[8..16].try_into().expect("8 bytes"));
    let mut parts = RecordParts {
        node,
        first_seen,
        flags: b[16],
        edge: &[],
        props: &[],
    };
    if b.len() > 17 {
        let len = u32::from_be_bytes(b[17..21].try_into().expect("4 bytes")) as usize;
        parts.edge = b.get(21..21 + len).ok_or_else(bad)?;
        parts.props = &b[21 + len..];
    }
    Ok(parts)
}

/// Target size of a block of packed ID records: sled's cost is per key (~5-8 µs) up to a few
/// KiB of value; 1M IDs written as 4 KiB blocks took 0.40 s against 5.8 s as one key each
/// (a throwaway sled program, this machine; 8 KiB blocks: 0.38 s; at 16 KiB sled
/// began creating and deleting files of its own during the run). Counted in the plain layout;
/// ~2.4 KB as stored ([`compact`]). 7 KiB plain (~4 KB stored) made a 1M-line store 2.5%
/// smaller, but a record read steps over twice the entries: `properties` of packed records
/// 1.2-1.3x slower than at 4 KiB (`cargo bench --bench store -- properties`).
pub const PACKED_BLOCK_BYTES: usize = 4096;

/// Appends one ID record to a block of packed records: ID length u16 BE, ID, record length
/// u32 BE, the record ([`IdRecord::encode`]). Entries are in node order.
pub fn push_packed(block: &mut Vec<u8>, id: &str, record: &[u8]) {
    let len = u16::try_from(id.len()).expect("an ID is at most 255 characters, 1,020 bytes");
    block.extend_from_slice(&len.to_be_bytes());
    block.extend_from_slice(id.as_bytes());
    block.extend_from_slice(&(record.len() as u32).to_be_bytes());
    block.extend_from_slice(record);
}

/// The entries of a block of length-prefixed pairs (length u16 BE · first, length u32 BE ·
/// second), as raw slices in order; `bad` for a block cut short, after which it stops.
fn prefixed_entries<'a>(
    block: &'a [u8],
    bad: &'static str,
) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8])>> {
    let bad = move || Error::Corrupt(bad.into());
    let mut rest = block;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let len = u16::from_be_bytes(rest.get(..2).ok_or_else(bad)?.try_into().expect("2"));
            let first = rest.get(2..2 + len as usize).ok_or_else(bad)?;
            let after = &rest[2 + len as usize..];
            let vlen = u32::from_be_bytes(after.get(..4).ok_or_else(bad)?.try_into().expect("4"));
            let second = after.get(4..4 + vlen as usize).ok_or_else(bad)?;
            rest = &after[4 + vlen as usize..];
            Ok((first, second))
        })();
        if entry.is_err() {
            rest = &[];
        }
        Some(entry)
    })
}

/// The entries of a block of packed ID records as raw `(ID bytes, encoded record)`, in node
/// order; an error for a block cut short.
fn packed_iter(block: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8])>> {
    prefixed_entries(block, "a block of packed ID records is cut short")
}

/// The entries of a block of packed ID records: `(ID, encoded record)` in node order.
pub fn packed_entries(block: &[u8]) -> Result<Vec<(&str, &[u8])>> {
    packed_iter(block)
        .map(|e| {
            let (id, rec) = e?;
            let id = std::str::from_utf8(id)
                .map_err(|_| Error::Corrupt("a packed ID is not UTF-8".into()))?;
            Ok((id, rec))
        })
        .collect()
}

/// The record of node `node` in a block of packed ID records, without collecting the others
/// (the read path of one ID: a scan over lengths and 8-byte node numbers).
pub fn find_packed(block: &[u8], node: Node) -> Result<Option<(&[u8], &[u8])>> {
    for entry in packed_iter(block) {
        let (id, rec) = entry?;
        match record_node(rec)?.cmp(&node) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Ok(Some((id, rec))),
            std::cmp::Ordering::Greater => break, // entries are in node order
        }
    }
    Ok(None)
}

/// The node of an encoded ID record, without decoding the rest.
pub fn record_node(record: &[u8]) -> Result<Node> {
    let n = record
        .get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| Error::Corrupt("an ID record is cut short".into()))?;
    node_of(n, "an ID record")
}

/// The node numbered `n` on disk; corrupt past the node space.
fn node_of(n: u64, what: &str) -> Result<Node> {
    Node::from_u64(n).ok_or_else(|| Error::Corrupt(format!("{what} names node {n}, out of range")))
}

/// A key of `prefix` and a u64 BE: an edge (`e` + seq), the start of a node's events (`v` +
/// node) or a block of packed records (`p` + first node).
pub fn u64_key(prefix: u8, x: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&x.to_be_bytes());
    k
}

/// The u64 after the prefix of a [`u64_key`] (or of a longer key that starts like one).
pub fn key_u64(key: &[u8]) -> Result<u64> {
    key.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::Corrupt(format!("a key of {} bytes is cut short", key.len())))
}

/// The key of alias edge `seq`.
pub fn edge_key(seq: u64) -> [u8; 9] {
    u64_key(EDGE, seq)
}

/// The key under `prefix` that starts node `node`'s range (events) or block (packed records).
pub fn node_key(prefix: u8, node: Node) -> [u8; 9] {
    u64_key(prefix, node.as_u64())
}

/// The node of a per-node key (an event, a block of packed records).
pub fn key_node(key: &[u8]) -> Result<Node> {
    node_of(key_u64(key)?, "a key")
}

/// The key of what imports have read of the file at canonical path `path` (its OS bytes).
pub fn file_key(path: &[u8]) -> Vec<u8> {
    let mut k = with_prefix(FILE, path.len());
    k.extend_from_slice(path);
    k
}

/// One alias edge of the log. Nodes are bincode integers (u64 on disk, range-checked).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEdge {
    pub a: Node,
    pub b: Node,
    pub at: Timestamp,
    pub cause: Cause,
    pub source: Option<String>,
}

pub fn refusal_key(a: &str, b: &str) -> Vec<u8> {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let mut k = with_prefix(REFUSAL, x.len() + 1 + y.len());
    k.extend_from_slice(x.as_bytes());
    k.push(0);
    k.extend_from_slice(y.as_bytes());
    k
}

/// One refused merge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRefusal {
    pub a: String,
    pub b: String,
    pub reason: RefusalReason,
    pub cause: Cause,
    pub at: Timestamp,
}

fn time_bytes(t: Timestamp) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from(b: &[u8]) -> Timestamp {
    (u64::from_be_bytes(b.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

pub fn event_key(node: Node, at: Timestamp, lower_name: &str) -> Vec<u8> {
    let mut k = with_prefix(EVENT, 16 + lower_name.len());
    k.extend_from_slice(&node.as_u64().to_be_bytes());
    k.extend_from_slice(&time_bytes(at));
    k.extend_from_slice(lower_name.as_bytes());
    k
}

/// Target size of a block of packed events: a lookup reads one block, so small blocks keep
/// reads fast (DESIGN.md, "Packed events": 1 KiB blocks read one node's events in 9.0 µs
/// against 12.4 µs for one key per event, 4 KiB blocks in 21-22 µs). Counted in the plain
/// layout: 2.25 KiB plain is ~0.8 KiB as stored ([`compact`]: 7.0M events in 160,956
/// blocks of 780 bytes on 10M `gen_km` lines).
pub const EVENT_BLOCK_BYTES: usize = 2304;

/// The key of a block of packed events whose last node is `last`.
pub fn event_block_key(last: Node) -> [u8; 9] {
    node_key(EVENT_BLOCK, last)
}

/// Appends one event to a block of packed events: its key without the prefix byte (length
/// u16 BE, then node, time and lower-cased name), its value (length u32 BE, then the value).
pub fn push_block_event(block: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let k = &key[1..];
    let len = u16::try_from(k.len()).expect("an event name is at most 255 characters");
    block.extend_from_slice(&len.to_be_bytes());
    block.extend_from_slice(k);
    block.extend_from_slice(&(value.len() as u32).to_be_bytes());
    block.extend_from_slice(value);
}

/// The events of a block as `(key without its prefix byte, value)`, in key order; an error for
/// a block cut short or an entry too short to name its node and time.
pub fn block_events(block: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8])>> {
    const BAD: &str = "a block of packed events is cut short";
    prefixed_entries(block, BAD).map(|e| {
        let (k, v) = e?;
        if k.len() < 16 {
            return Err(Error::Corrupt(BAD.into()));
        }
        Ok((k, v))
    })
}

/// The node of an event key without its prefix byte (as blocks hold them).
pub fn bare_event_node(k: &[u8]) -> Result<Node> {
    let b: [u8; 8] = k
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Corrupt("an event key is shorter than 8 bytes".into()))?;
    node_of(u64::from_be_bytes(b), "an event key")
}

/// The time of an event key without its prefix byte (blocks check the length).
pub fn bare_event_time(k: &[u8]) -> Timestamp {
    time_from(&k[8..16])
}

/// The node and time of an event key.
pub fn event_key_parts(key: &[u8]) -> Result<(Node, Timestamp)> {
    if key.len() < 17 || key[0] != EVENT {
        return Err(Error::Corrupt(
            "an event key is shorter than 17 bytes".into(),
        ));
    }
    Ok((key_node(key)?, time_from(&key[9..17])))
}

/// The key and value of an event of `node`.
pub fn event_entry(
    node: Node,
    event: &str,
    properties: &Properties,
    at: Timestamp,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut k = Vec::with_capacity(17 + event.len());
    event_key_into(&mut k, node, at, event);
    let mut v = Vec::new();
    event_value_into(&mut v, event, properties)?;
    Ok((k, v))
}

/// Appends the key of an event named `event` (any case) to `out`: what [`event_key`] of its
/// lower-cased name returns.
pub fn event_key_into(out: &mut Vec<u8>, node: Node, at: Timestamp, event: &str) {
    out.push(EVENT);
    out.extend_from_slice(&node.as_u64().to_be_bytes());
    out.extend_from_slice(&time_bytes(at));
    if event.is_ascii() {
        out.extend(event.bytes().map(|b| b.to_ascii_lowercase()));
    } else {
        out.extend_from_slice(event.to_lowercase().as_bytes());
    }
}

/// Appends an event's stored value ([`StoredEvent`]) to `out`, without copying its strings.
pub fn event_value_into(out: &mut Vec<u8>, event: &str, properties: &Properties) -> Result<()> {
    /// The properties as [`StoredEvent`]'s list of (name, [`StoredValue`]).
    struct Props<'a>(&'a Properties);
    impl Serialize for Props<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(|(k, v)| (k, StoredValueRef::from(v))))
        }
    }
    #[derive(Serialize)]
    #[serde(rename = "StoredEvent")]
    struct EventRef<'a> {
        name: &'a str,
        properties: Props<'a>,
    }
    let e = EventRef {
        name: event,
        properties: Props(properties),
    };
    bincode::serde::encode_into_std_write(e, out, config())?;
    Ok(())
}

/// An event's stored value (its node, time and lower-cased name are in the key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub name: String,
    pub properties: Vec<(String, StoredValue)>,
}

/// The name and properties of a stored event (the value under its key).
pub fn decode_event(v: &[u8]) -> Result<(String, Properties)> {
    let e: StoredEvent = decode(v, "an event")?;
    let props = e
        .properties
        .into_iter()
        .map(|(n, v)| (n, v.into()))
        .collect();
    Ok((e.name, Properties::from_vec_unchecked(props)))
}

/// All properties of one ID: the latest value of each name, sorted by lower-cased name. Kept in
/// the ID's record: a `set` of several properties is one read and one write.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PropMap(pub Vec<StoredProp>);

impl PropMap {
    /// Sets `name` unless the stored value is later; equal times: this one (applied last).
    /// The first spelling of a name is kept. A name new to the map is added only while the map
    /// holds fewer than `max` names. Returns whether anything changed, and whether `name` was
    /// refused for want of room.
    pub fn merge_within(
        &mut self,
        name: &str,
        value: StoredValue,
        at: Timestamp,
        seq: u64,
        max: usize,
    ) -> (bool, bool) {
        match self
            .0
            .binary_search_by(|p| crate::op::cmp_ignore_case(&p.name, name))
        {
            Ok(i) => {
                let p = &mut self.0[i];
                if p.at > at {
                    return (false, false);
                }
                p.value = value;
                p.at = at;
                p.seq = seq;
                (true, false)
            }
            Err(_) if self.0.len() >= max => (false, true),
            Err(i) => {
                self.0.insert(
                    i,
                    StoredProp {
                        name: name.to_owned(),
                        value,
                        at,
                        seq,
                    },
                );
                (true, false)
            }
        }
    }

    /// About the bytes the map takes encoded (names, values and a fixed allowance per entry
    /// for lengths, times and the apply sequence): what rewriting it costs.
    pub fn approx_bytes(&self) -> u64 {
        self.0
            .iter()
            .map(|p| {
                let v = match &p.value {
                    StoredValue::Text(s) => s.len(),
                    StoredValue::Int(_) | StoredValue::Float(_) => 8,
                };
                (p.name.len() + v + 24) as u64
            })
            .sum()
    }

    /// [`merge_within`](Self::merge_within) without a limit (the unit tests' shorthand).
    #[cfg(test)]
    pub fn merge(&mut self, name: &str, value: StoredValue, at: Timestamp, seq: u64) -> bool {
        self.merge_within(name, value, at, seq, usize::MAX).0
    }
}

/// A property's stored value: the latest set on one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredProp {
    /// The name as first spelled on this node.
    pub name: String,
    pub value: StoredValue,
    pub at: Timestamp,
    /// Store-wide apply order: among equal times, the higher `seq` was applied last.
    pub seq: u64,
}

/// [`Value`] in an externally tagged form that bincode can decode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StoredValue {
    Int(i64),
    Float(f64),
    Text(String),
}

/// [`StoredValue`] borrowing its text: encodes to the same bytes without a copy of the value.
#[derive(Serialize)]
#[serde(rename = "StoredValue")]
enum StoredValueRef<'a> {
    Int(i64),
    Float(f64),
    Text(&'a str),
}

impl<'a> From<&'a Value> for StoredValueRef<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Int(i) => StoredValueRef::Int(*i),
            Value::Float(x) => StoredValueRef::Float(*x),
            Value::Text(s) => StoredValueRef::Text(s),
        }
    }
}

/// Appends `v` encoded as a [`StoredValue`] to `out` (what [`encode`] of it would return).
pub fn encode_value_into(v: &Value, out: &mut Vec<u8>) -> Result<()> {
    bincode::serde::encode_into_std_write(StoredValueRef::from(v), out, config())?;
    Ok(())
}

impl From<Value> for StoredValue {
    fn from(v: Value) -> Self {
        match v {
            Value::Int(i) => StoredValue::Int(i),
            Value::Float(x) => StoredValue::Float(x),
            Value::Text(s) => StoredValue::Text(s),
        }
    }
}

impl From<StoredValue> for Value {
    fn from(v: StoredValue) -> Self {
        match v {
            StoredValue::Int(i) => Value::Int(i),
            StoredValue::Float(x) => Value::Float(x),
            StoredValue::Text(s) => Value::Text(s),
        }
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value with bincode.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(bincode::serde::encode_to_vec(v, config())?)
}

/// Decodes a value with bincode; `what` names it in the error.
///
/// A damaged length prefix must not make the decoder allocate what it claims (found by the
/// `codec` fuzzer: a string "of 2.8 GB" in a 72-byte record). bincode counts what it decodes
/// against a budget of in-memory bytes: a string its length, a number its full width (8 for
/// an `i64` stored as a 1-byte varint, 16 at most). So a value of `b.len()` bytes needs at most
/// 16 x `b.len()`; the budget is that, rounded up to a power of 16 (bincode takes it as a
/// constant).
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T> {
    decode_borrowed(b, what)
}

/// [`decode`] for a value that may borrow its strings from `b` (the same budget).
pub fn decode_borrowed<'a, T: Deserialize<'a>>(b: &'a [u8], what: &str) -> Result<T> {
    fn limited<'a, const N: usize, T: Deserialize<'a>>(
        b: &'a [u8],
    ) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::borrow_decode_from_slice(b, config().with_limit::<N>())
    }
    let decoded = match b.len() {
        0..=0x100 => limited::<0x1000, T>(b),
        0x101..=0x1000 => limited::<0x1_0000, T>(b),
        0x1001..=0x1_0000 => limited::<0x10_0000, T>(b),
        0x1_0001..=0x10_0000 => limited::<0x100_0000, T>(b),
        0x10_0001..=0x100_0000 => limited::<0x1000_0000, T>(b),
        _ => limited::<{ usize::MAX }, T>(b),
    };
    let (v, used) = decoded.map_err(|e| Error::Corrupt(format!("cannot decode {what}: {e}")))?;
    if used != b.len() {
        return Err(Error::Corrupt(format!(
            "{what} has {} trailing bytes",
            b.len() - used
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::Value;
    use proptest::prelude::*;

    proptest::proptest! {
        #[test]
        fn values_encode_alike_borrowed_or_owned(
            v in proptest::prop_oneof![
                proptest::num::i64::ANY.prop_map(Value::Int),
                proptest::num::f64::ANY.prop_map(Value::Float),
                ".{0,20}".prop_map(Value::Text),
            ],
            prefix in proptest::collection::vec(proptest::num::u8::ANY, 0..4),
        ) {
            let mut out = prefix.clone();
            super::encode_value_into(&v, &mut out).unwrap();
            let want = super::encode(&super::StoredValue::from(v)).unwrap();
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&out[prefix.len()..], &want[..]);
        }
    }

    proptest::proptest! {
        #[test]
        fn events_encode_alike_borrowed_or_owned(
            name in "[a-zA-Z é]{0,12}",
            props in proptest::collection::vec(("[a-zA-Z]{1,6}", proptest::num::i64::ANY), 0..4),
            node in 0u32..1000,
            at in proptest::num::i64::ANY,
        ) {
            let props = crate::op::Properties::from_pairs(props).unwrap();
            let (k, v) = super::event_entry(super::Node::from_index(node), &name, &props, at).unwrap();
            let owned = super::StoredEvent {
                name: name.clone(),
                properties: props.iter().map(|(k, v)| (k.to_owned(), v.clone().into())).collect(),
            };
            prop_assert_eq!(k, super::event_key(super::Node::from_index(node), at, &name.to_lowercase()));
            prop_assert_eq!(v, super::encode(&owned).unwrap());
        }
    }

    #[test]
    fn the_decode_budget_holds_every_value_the_store_writes() {
        use super::*;
        // The densest values: 1-byte varints that decode to 8- and 16-byte numbers.
        for n in [0usize, 1, 10, 300, 5000, 70_000] {
            let map = PropMap(
                (0..n)
                    .map(|i| StoredProp {
                        name: if i == 0 {
                            String::new()
                        } else {
                            format!("{i}")
                        },
                        value: StoredValue::Int(0),
                        at: 0,
                        seq: 0,
                    })
                    .collect(),
            );
            let b = encode(&map).unwrap();
            assert_eq!(decode::<PropMap>(&b, "props").unwrap(), map, "{n}");
        }
        let part = crate::FilePart {
            size: 0,
            lines: 0,
            hash: 0,
            imported_at: 0,
        };
        let b = encode(&part).unwrap();
        assert_eq!(decode::<crate::FilePart>(&b, "a file").unwrap(), part);
        // A length prefix that claims more than the value holds is refused, not allocated.
        let mut huge = vec![1u8, 0xfc];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode::<PropMap>(&huge, "props").is_err());
    }

    #[test]
    fn intents_round_trip_and_reject_damage() {
        let w = vec![
            (b"ia".to_vec(), Some(vec![1, 2, 3])),
            (b"v\0x".to_vec(), Some(Vec::new())),
            (b"ib".to_vec(), None),
        ];
        let e = encode_intent(&w);
        assert_eq!(decode_intent(&e).unwrap(), w);
        assert!(decode_intent(&e[..e.len() - 1]).is_err());
        let mut longer = e.clone();
        longer.push(0);
        assert!(decode_intent(&longer).is_err());
        assert!(decode_intent(&[]).is_err());
    }

    use super::*;

    #[test]
    fn times_sort_as_bytes() {
        let ts = [i64::MIN, -5, -1, 0, 1, 1_700_000_000, i64::MAX];
        let three = Node::from_index(3);
        let keys: Vec<_> = ts.iter().map(|t| event_key(three, *t, "x")).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for (t, k) in ts.iter().zip(&keys) {
            assert_eq!(event_key_parts(k).unwrap(), (three, *t));
        }
    }

    #[test]
    fn packed_blocks_round_trip_and_reject_damage() {
        let recs: Vec<(String, Vec<u8>)> = [3u64, 4, 9]
            .iter()
            .map(|&n| {
                let r = IdRecord {
                    node: Node::from_u64(n).unwrap(),
                    first_seen: n as i64 * 10,
                    ..IdRecord::default()
                };
                (format!("id-é{n}"), r.encode().unwrap())
            })
            .collect();
        let mut block = Vec::new();
        for (id, rec) in &recs {
            push_packed(&mut block, id, rec);
        }
        let got = packed_entries(&block).unwrap();
        assert_eq!(got.len(), 3);
        for ((id, rec), (gid, grec)) in recs.iter().zip(&got) {
            assert_eq!((id.as_str(), rec.as_slice()), (*gid, *grec));
        }
        let n = Node::from_index;
        let (id, rec) = find_packed(&block, n(4)).unwrap().unwrap();
        assert_eq!(id, "id-é4".as_bytes());
        assert_eq!(IdRecord::decode(rec).unwrap().first_seen, 40);
        assert!(find_packed(&block, n(5)).unwrap().is_none());
        assert!(find_packed(&block, n(10)).unwrap().is_none());
        assert!(packed_entries(&block[..block.len() - 1]).is_err());
        assert!(find_packed(&block[..block.len() - 1], n(9)).is_err());
        assert!(packed_entries(&[0, 5, b'a']).is_err());
    }

    #[test]
    fn records_round_trip() {
        let n = Node::from_index;
        let mut r = IdRecord {
            node: n(42),
            first_seen: -7,
            flags: Flags::ANON,
            ..IdRecord::default()
        };
        assert_eq!(r.encode().unwrap().len(), 17);
        assert_eq!(IdRecord::decode(&r.encode().unwrap()).unwrap(), r);
        r.intro = Some((
            9,
            StoredEdge {
                a: n(42),
                b: n(1),
                at: 5,
                cause: Cause::Identify,
                source: None,
            },
        ));
        assert_eq!(IdRecord::decode(&r.encode().unwrap()).unwrap(), r);
        r.props.merge("plan", StoredValue::Text("pro".into()), 3, 4);
        assert_eq!(IdRecord::decode(&r.encode().unwrap()).unwrap(), r);
        let head = IdRecord::decode_head(&r.encode().unwrap()).unwrap();
        assert!(head.props.0.is_empty() && head.intro == r.intro);
        r.intro = None;
        assert_eq!(IdRecord::decode(&r.encode().unwrap()).unwrap(), r);
        assert!(IdRecord::decode(&[1, 2]).is_err());
        assert!(IdRecord::decode(&[0; 19]).is_err());
        let mut far = r.encode().unwrap();
        far[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(
            IdRecord::decode(&far).is_err(),
            "a node past the node space is corrupt"
        );
        let p = StoredProp {
            name: "Plan".into(),
            value: StoredValue::Float(1.5),
            at: 9,
            seq: 3,
        };
        assert_eq!(decode::<StoredProp>(&encode(&p).unwrap(), "p").unwrap(), p);
        let mut m = PropMap::default();
        assert!(m.merge("Plan", StoredValue::Int(1), 5, 1));
        assert!(m.merge("color", StoredValue::Int(2), 5, 1));
        assert!(!m.merge("plan", StoredValue::Int(3), 4, 2)); // older: ignored
        assert!(m.merge("PLAN", StoredValue::Int(4), 5, 3)); // equal time: applied last wins
        assert_eq!(
            m.0.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["color", "Plan"]
        );
        assert_eq!(m.0[1].value, StoredValue::Int(4));
        assert_eq!(decode::<PropMap>(&encode(&m).unwrap(), "m").unwrap(), m);
        let e = StoredEdge {
            a: n(1),
            b: n(2),
            at: 3,
            cause: Cause::Form,
            source: Some("f:1".into()),
        };
        assert_eq!(decode::<StoredEdge>(&encode(&e).unwrap(), "e").unwrap(), e);
        let r = StoredRefusal {
            a: "a".into(),
            b: "guest".into(),
            reason: RefusalReason::BlockedId { id: "guest".into() },
            cause: Cause::Api,
            at: 1,
        };
        assert_eq!(
            decode::<StoredRefusal>(&encode(&r).unwrap(), "r").unwrap(),
            r
        );
    }
}
