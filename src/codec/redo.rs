//! The redo record (`wintent`): the writes of one op or batch, written first, applied, then
//! removed; a record found at open is applied again.

use crate::error::{Error, Result};

/// The key of the redo record of the op being written (see `Store::apply_batch`).
pub const INTENT_KEY: &[u8] = b"wintent";

/// One write of a redo record: a key and its new value, or `None` to remove the key.
pub type RedoEntry = (Vec<u8>, Option<Vec<u8>>);

/// Value length that marks a removal in a redo record.
pub(super) const REMOVED: u32 = u32::MAX;

/// The redo record of one op's writes: count u32 BE, then per write key length u32 BE, key,
/// and value length u32 BE + value (`u32::MAX` and no value for a removal).
pub fn encode_intent(writes: &[RedoEntry]) -> Vec<u8> {
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
pub fn decode_intent(b: &[u8]) -> Result<Vec<RedoEntry>> {
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
