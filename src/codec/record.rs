//! The ID record (`i` keys and entries of `p` blocks), with the alias edge that introduced
//! the ID and its properties; alias edges (`e`) and refusals (`r`).

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::graph::Flags;
use crate::op::{Cause, RefusalReason, Timestamp, Value};

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
pub(super) fn decode_intro(edge: &[u8]) -> Result<Option<(u64, StoredEdge)>> {
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
pub(super) struct RecordParts<'a> {
    pub(super) node: Node,
    pub(super) first_seen: Timestamp,
    pub(super) flags: u8,
    /// seq u64 BE + bincode edge; empty: none.
    pub(super) edge: &'a [u8],
    /// bincode `PropMap`; empty: none.
    pub(super) props: &'a [u8],
}

/// The parts of an encoded ID record.
pub(super) fn record_parts(b: &[u8]) -> Result<RecordParts<'_>> {
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

/// The node of an encoded ID record, without decoding the rest.
pub fn record_node(record: &[u8]) -> Result<Node> {
    let n = record
        .get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| Error::Corrupt("an ID record is cut short".into()))?;
    node_of(n, "an ID record")
}

/// The node numbered `n` on disk; corrupt past the node space.
pub(super) fn node_of(n: u64, what: &str) -> Result<Node> {
    Node::from_u64(n).ok_or_else(|| Error::Corrupt(format!("{what} names node {n}, out of range")))
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

/// One refused merge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRefusal {
    pub a: String,
    pub b: String,
    pub reason: RefusalReason,
    pub cause: Cause,
    pub at: Timestamp,
}

/// All properties of one ID: the latest value of each name, sorted by lower-cased name. Kept in
/// the ID's record: a `set` of several properties is one read and one write.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PropMap(pub Vec<StoredProp>);

impl PropMap {
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
pub(super) enum StoredValueRef<'a> {
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
