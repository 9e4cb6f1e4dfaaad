//! Keys: one prefix byte per kind of entry, then big-endian integers and IDs, so that sled
//! orders every kind by what its readers scan (a node's events by time, edges by sequence).

use super::*;
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::op::Timestamp;

pub const ID: u8 = b'i';
pub const PACKED: u8 = b'p';
pub const EDGE: u8 = b'e';
pub const REFUSAL: u8 = b'r';
pub const EVENT: u8 = b'v';
/// Blocks of packed events, keyed by the last node they hold (`store/events.rs`). (`w` is
/// taken: the redo record's key.)
pub const EVENT_BLOCK: u8 = b'b';
pub const FILE: u8 = b'f';
/// Suppressions: `s` + the keyed hash of a forgotten ID (`store/suppress.rs`).
pub const SUPPRESSED: u8 = b's';

pub(super) fn with_prefix(prefix: u8, cap: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + cap);
    k.push(prefix);
    k
}

pub fn id_key(id: &str) -> Vec<u8> {
    let mut k = with_prefix(ID, id.len());
    k.extend_from_slice(id.as_bytes());
    k
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

pub fn refusal_key(a: &str, b: &str) -> Vec<u8> {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let mut k = with_prefix(REFUSAL, x.len() + 1 + y.len());
    k.extend_from_slice(x.as_bytes());
    k.push(0);
    k.extend_from_slice(y.as_bytes());
    k
}

pub(super) fn time_bytes(t: Timestamp) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(super) fn time_from(b: &[u8]) -> Timestamp {
    (u64::from_be_bytes(b.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

pub fn event_key(node: Node, at: Timestamp, lower_name: &str) -> Vec<u8> {
    let mut k = with_prefix(EVENT, 16 + lower_name.len());
    k.extend_from_slice(&node.as_u64().to_be_bytes());
    k.extend_from_slice(&time_bytes(at));
    k.extend_from_slice(lower_name.as_bytes());
    k
}

/// The key of a suppression: `s` + the 16-byte keyed hash of the forgotten ID.
pub fn suppressed_key(hash: &[u8; 16]) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = SUPPRESSED;
    k[1..].copy_from_slice(hash);
    k
}
