//! Metadata under `m` keys: the format version, the graph index's stamp, the data counts.

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
/// Version 7 adds suppressions (`s` keys and `m` `suppress_key`): a version-6 build would
/// ignore them and let a forgotten person back in, so it must refuse the store.
pub const FORMAT_VERSION: u32 = 7;

/// The format versions this build opens.
pub const READABLE_VERSIONS: [u32; 7] = [1, 2, 3, 4, 5, 6, 7];

pub const FORMAT_KEY: &[u8] = b"mformat_version";

/// The stamp of the current graph index (16 bytes), absent while the index is stale
/// (`store::index`).
pub const INDEX_STAMP_KEY: &[u8] = b"mindex_stamp";

/// The store's 32-byte secret for the keyed hashes of suppressed IDs, made by the first
/// `forget` (`store/suppress.rs`).
pub const SUPPRESS_KEY: &[u8] = b"msuppress_key";

/// The counts of events, properties and IDs at the property limit, with the limit they were
/// counted for (4 × u64 BE), as of the last clean close; absent while a handle writes.
pub const DATA_COUNTS_KEY: &[u8] = b"mdata_counts";

/// The value of [`DATA_COUNTS_KEY`]: (events, properties, at limit, limit), 4 × u64 BE.
pub fn encode_data_counts(counts: [u64; 4]) -> [u8; 32] {
    let mut v = [0u8; 32];
    for (i, x) in counts.iter().enumerate() {
        v[i * 8..i * 8 + 8].copy_from_slice(&x.to_be_bytes());
    }
    v
}

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

pub fn decode_format(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}
