//! Entry points for the fuzzers in `fuzz/` (`cargo +nightly fuzz run TARGET`) and for
//! `tests/fuzz_corpus.rs`, which replays their checked-in corpus on stable. Each takes any
//! bytes and must return: no panic, no hang, no allocation out of proportion to its input.
//! Not part of the library's API.

use crate::codec;
use crate::ingest::km_http::{self as track, Endpoint};
use crate::op::Limits;

/// A fuzz target: any bytes in, nothing out.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/*.rs` and the corpus folders name them.
pub const TARGETS: [(&str, Target); 7] = [
    ("km_json_line", km_json_line),
    ("csv", csv),
    ("track", track),
    ("url", url),
    ("simulate", simulate),
    ("codec", codec_values),
    ("index", graph_index),
];

/// A graph index file (`graph.idx`), opened and read as queries read it; see
/// `store::index::fuzz` for how the bytes make a file.
pub fn graph_index(data: &[u8]) {
    crate::store::fuzz_index(data);
}

/// One line of a KISSmetrics JSON export (`idgraph import`).
pub fn km_json_line(data: &[u8]) {
    // The importer's reading of a raw line (length, UTF-8, blank, then `parse_line`); every op
    // it returns passes the store's own checks (it checks property names once, when built).
    if let Some(Ok(ops)) = crate::ingest::km_json::parse_raw_line(data, None) {
        for op in ops {
            if let Err(e) = op.validate() {
                panic!("parse_line returned an op the store refuses: {e}: {op:?}");
            }
        }
    }
}

/// A CSV file (`idgraph import`): its header, then each row, as the importer reads them.
pub fn csv(data: &[u8]) {
    let Ok(mut rows) = crate::ingest::csv::Records::new("fuzz.csv", data, None, 0, 0) else {
        return;
    };
    while let Ok(Some(row)) = rows.next_row() {
        if let Ok(ops) = row.parsed {
            for op in ops {
                if let Err(e) = op.validate() {
                    panic!("a CSV row gave an op the store refuses: {e}: {op:?}");
                }
            }
        }
    }
}

/// A tracking request: the first byte picks `/e`, `/s` or `/a`, the rest is its query string.
pub fn track(data: &[u8]) {
    let Some((&first, query)) = data.split_first() else {
        return;
    };
    let ep = match first % 3 {
        0 => Endpoint::Event,
        1 => Endpoint::Set,
        _ => Endpoint::Alias,
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
    let keys = ["demo".to_owned()];
    if let Ok(op) = track::parse(ep, &params, &keys, &Limits::default(), 0, String::new) {
        // What the server accepts, the store takes.
        op.validate().expect("a parsed request is a valid op");
    }
}

/// A page load through the URL API, by a fresh browser.
pub fn url(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::rules::parse_url(text);
        let line = serde_json::json!({"browser": "b", "at": 1, "visit": text}).to_string();
        simulate(line.as_bytes());
    }
}

/// Lines of `idgraph simulate`, applied in order to one simulator.
pub fn simulate(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut sim = crate::rules::sim::Simulator::with_ids("demo", |_| {
        Box::new(crate::rules::RandomIds::seeded(1))
    });
    for (n, line) in text.lines().enumerate().take(64) {
        if let Ok(line) = crate::rules::sim::parse_line(line) {
            let _ = sim.apply(n + 1, &line);
        }
    }
}

/// A value or key as stored on disk, damaged in any way: the first byte picks the decoder.
/// Each must answer `Error::Corrupt` (or decode), never panic.
pub fn codec_values(data: &[u8]) {
    let Some((&first, b)) = data.split_first() else {
        return;
    };
    match first % 10 {
        0 => drop(codec::IdRecord::decode(b)),
        1 => drop(codec::IdRecord::decode_head(b)),
        2 => drop(codec::decode_intent(b)),
        3 => {
            drop(codec::packed_entries(b));
            drop(codec::compact::ids_plain(b));
            drop(codec::compact::ids_find(
                b,
                crate::forest::Node::from_index(3),
            ));
            drop(codec::compact::ids_heads(b, |_, _| Ok(())));
        }
        4 => drop(codec::decode_event(b)),
        5 => drop(codec::decode::<codec::StoredEdge>(b, "an edge")),
        6 => drop(codec::decode::<codec::StoredRefusal>(b, "a refusal")),
        7 => drop(codec::decode::<crate::FilePart>(b, "a file record")),
        8 => {
            drop(codec::event_key_parts(b));
            drop(codec::compact::events_plain(b));
            // The same bytes as a block of packed events, read as `events(id)` reads one.
            for (k, _) in codec::block_events(b).map_while(Result::ok) {
                drop(codec::bare_event_node(k));
                let _ = codec::bare_event_time(k);
            }
        }
        _ => drop(codec::record_node(b)),
    }
}

/// Values as the store writes them, each prefixed with the byte that picks its decoder in
/// [`codec_values`]: the seed corpus of the `codec` target (and replayed with the rest).
///
/// # Panics
/// Never: every value here encodes.
pub fn codec_seeds() -> Vec<Vec<u8>> {
    use crate::forest::Node;
    use crate::op::{Cause, Properties, RefusalReason};
    let node = |i| Node::from_index(i);
    let edge = codec::StoredEdge {
        a: node(1),
        b: node(2),
        at: 1_400_000_000,
        cause: Cause::Identify,
        source: Some("GET /a?_n=b&_p=a".into()),
    };
    let props = codec::PropMap(vec![codec::StoredProp {
        name: "Plan".into(),
        value: codec::StoredValue::Text("pro".into()),
        at: 5,
        seq: 7,
    }]);
    let record = codec::IdRecord {
        node: node(3),
        first_seen: 9,
        intro: Some((4, edge.clone())),
        props,
        ..codec::IdRecord::default()
    };
    let rec = record.encode().expect("encodes");
    let bare = codec::IdRecord::default().encode().expect("encodes");
    let mut packed = Vec::new();
    codec::push_packed(&mut packed, "a@x.example", &rec);
    codec::push_packed(&mut packed, "b", &bare);
    let mut event_props = Properties::new();
    event_props.insert("price", 5).expect("a valid name");
    event_props.insert("ratio", 0.5).expect("a valid name");
    let (ekey, event) =
        codec::event_entry(node(3), "Signed Up", &event_props, 1_400_000_000).expect("encodes");
    let refusal = codec::StoredRefusal {
        a: "a".into(),
        b: "null".into(),
        reason: RefusalReason::TooLarge { size: 3, max: 2 },
        cause: Cause::Api,
        at: 1,
    };
    let file = crate::FilePart {
        size: 100,
        lines: 3,
        hash: 0xfeed,
        imported_at: 2,
    };
    let mut events = Vec::new();
    codec::push_block_event(&mut events, &ekey, &event);
    let compact_events = codec::compact::events(&events).expect("encodes");
    let mut ordered = Vec::new(); // a compact block needs its entries in node order
    codec::push_packed(&mut ordered, "b", &bare);
    codec::push_packed(&mut ordered, "a@x.example", &rec);
    let compact_ids = codec::compact::ids(&ordered).expect("encodes");
    let intent = codec::encode_intent(&[(b"ia".to_vec(), Some(rec.clone())), (ekey.clone(), None)]);
    let with = |sel: u8, b: &[u8]| [&[sel][..], b].concat();
    vec![
        with(0, &rec),
        with(0, &bare),
        with(1, &rec),
        with(2, &intent),
        with(3, &packed),
        with(4, &event),
        with(5, &codec::encode(&edge).expect("encodes")),
        with(6, &codec::encode(&refusal).expect("encodes")),
        with(7, &codec::encode(&file).expect("encodes")),
        with(8, &ekey),
        with(8, &compact_events),
        with(3, &compact_ids),
        with(9, &rec),
    ]
}
