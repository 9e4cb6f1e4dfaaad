//! Events: `v` keys (node, time, lower-cased name) and their values, as stored one key each
//! or in blocks of packed events.

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::op::{Properties, Timestamp};

/// Target size of a block of packed events, in the plain layout (smaller as stored:
/// [`compact`]): a lookup reads one block, so small blocks keep reads fast; larger ones make
/// fewer keys (`docs/decisions/0002-packed-events.md`).
pub const EVENT_BLOCK_BYTES: usize = 2304;

/// The key of a block of packed events whose last node is `last`.
pub fn event_block_key(last: Node) -> [u8; 9] {
    node_key(EVENT_BLOCK, last)
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
