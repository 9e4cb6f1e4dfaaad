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
//! | `b` + node u64 BE | a block of packed events, the last of node `node` ([`push_block_event`]) |
//! | `wintent` (at most one) | the keys and values (or removals) of one op being written ([`encode_intent`]): a redo record, see `Store::apply_batch` and `Store::forget` |
//!
//! One file per layout:
//!
//! | module | owns |
//! |---|---|
//! | `keys` | prefixes and key builders |
//! | `meta` | [`FORMAT_VERSION`] and the `m` keys |
//! | `redo` | the redo record ([`RedoEntry`]) |
//! | `record` | [`IdRecord`], [`StoredEdge`], [`StoredRefusal`], [`PropMap`] |
//! | `event` | event keys and values ([`StoredEvent`]) |
//! | `block` | the plain layout of both kinds of block |
//! | [`compact`] | the compact form of blocks |

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod compact;

mod block;
mod event;
mod keys;
mod meta;
mod record;
mod redo;

pub use block::*;
pub use event::*;
pub use keys::*;
pub use meta::*;
pub use record::*;
pub use redo::*;

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
    use super::*;
    use crate::forest::Node;
    use crate::graph::Flags;
    use crate::op::{Cause, RefusalReason, Value};
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
            let (k, v) = super::event_entry(Node::from_index(node), &name, &props, at).unwrap();
            let owned = super::StoredEvent {
                name: name.clone(),
                properties: props.iter().map(|(k, v)| (k.to_owned(), v.clone().into())).collect(),
            };
            prop_assert_eq!(k, super::event_key(Node::from_index(node), at, &name.to_lowercase()));
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
