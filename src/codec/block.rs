//! The plain block layout shared by blocks of packed ID records (`p`) and of packed events
//! (`b`): length-prefixed pairs in node order. Compact blocks are in `compact`.

use super::*;
use crate::error::{Error, Result};
use crate::forest::Node;

/// Target size of a block of packed ID records, in the plain layout (smaller as stored:
/// [`compact`]). sled's cost is per key up to a few KiB of value, so larger blocks write
/// faster; a record read steps over the entries before it, so smaller blocks read faster
/// (BENCHMARKS.md, "Knobs").
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
pub(super) fn prefixed_entries<'a>(
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
pub(super) fn packed_iter(block: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8])>> {
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
