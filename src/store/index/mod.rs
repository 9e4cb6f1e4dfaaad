//! The graph index: who is who, in a flat file next to sled, so that a query does not wait for
//! the whole graph to be rebuilt.
//!
//! Without it, opening a store rebuilds the in-memory graph from every ID record and the alias
//! log before the first answer (`docs/decisions/0003-graph-index.md`). The index holds what `resolve`, `events` and `properties` need — each ID's node, each node's person
//! and the person's canonical ID and members — in fixed-width little-endian arrays that are read
//! in place: a lookup reads the few pages it touches (with `pread`, no `mmap`: the crate has no
//! `unsafe`), each verified against its checksum the first time, so a damaged index is
//! refused, never believed.
//!
//! The alias log stays the source of truth; the index is a copy of the graph at one moment,
//! valid while the stamp in its header equals the one sled holds under `m` `index_stamp`. A
//! handle removes that key before its first write (in sled's log before the write, so a crash
//! that keeps the write also keeps the removal), and writes a new index (to a temporary file,
//! synced, then renamed) and the stamp when it is closed. A missing, stale or damaged index
//! means one full rebuild from sled, as before.
//!
//! Layout (all integers little-endian; `N` nodes handed out, `T` table slots, `B` ID bytes):
//!
//! | bytes | what |
//! |---|---|
//! | 0..128 | header: magic, version, stamp, N, counters, T, B, data length, pages, checksum |
//! | `off`: (N+1) × u64 | ID `n` is `blob[off[n]..off[n+1]]` (empty: the node is free) |
//! | `root`: N × u32 | the root node of `n`'s person (`u32::MAX`: free) |
//! | `canon`: N × u32 | at a root: the node whose ID shows the person |
//! | `moff`: (N+1) × u32 | at a root `r`: its members are `members[moff[r]..moff[r+1]]` |
//! | `members`: live × u32 | members of each person, by root, in node (first-seen) order |
//! | `flags`: N × u8 | each ID's flags (anonymous) |
//! | `hubs`: 2 × [`HUBS`] × 8 bytes | the largest persons (size u32, root u32), then the most linked IDs (links u32, node u32), best first; unused entries 0 |
//! | `edges`: E × 16 bytes | the alias log: (sequence number u64, node u32, node u32), in order |
//! | `table`: T × u32 | open addressing on XXH3-64 of the ID, linear probing; node + 1, 0 empty |
//! | `blob`: B bytes | the IDs |
//! | pages × u64 | XXH3-64 of each 16 KiB page of the data (everything after the header) |
//!
//! Each array starts 8-byte aligned, so no integer spans two pages.

mod check;
mod read;
mod write;

use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use crate::graph::Graph;

/// The index's file, in the store's directory.
pub(crate) const FILE_NAME: &str = "graph.idx";
pub(super) const MAGIC: [u8; 8] = *b"IDGRAPHX";
pub(super) const VERSION: u32 = 3;
/// Entries of each list in `hubs`: `Store::hubs` up to this `top` reads them, not the graph.
pub(crate) const HUBS: u64 = 100;
pub(super) const HEADER: u64 = 128;
pub(super) const PAGE: u64 = 16 << 10;
/// Verified pages kept in memory (64 MiB); past it the cache starts over.
pub(super) const CACHE_PAGES: usize = 4096;
/// A free node in `root`.
pub(super) const FREE: u32 = u32::MAX;

/// What the header says besides the layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub ids: u64,
    pub persons: u64,
    pub largest_person: u64,
    pub edges: u64,
    pub refused: u64,
}

/// Where each array starts, relative to the start of the data (`off` is first, at 0).
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    nodes: u64,
    table: u64,
    blob_len: u64,
    root: u64,
    canon: u64,
    moff: u64,
    members: u64,
    flags: u64,
    hubs: u64,
    edges: u64,
    table_at: u64,
    blob: u64,
    data_len: u64,
}

pub(super) fn align8(x: u64) -> u64 {
    x.div_ceil(8) * 8
}

impl Layout {
    fn new(nodes: u64, live: u64, edges: u64, table: u64, blob_len: u64) -> Layout {
        // `off` starts the data.
        let root = align8((nodes + 1) * 8);
        let canon = align8(root + nodes * 4);
        let moff = align8(canon + nodes * 4);
        let members = align8(moff + (nodes + 1) * 4);
        let flags = align8(members + live * 4);
        let hubs = align8(flags + nodes);
        let edges_at = hubs + 2 * HUBS * 8;
        let table_at = align8(edges_at + edges * 16);
        let blob = align8(table_at + table * 4);
        Layout {
            nodes,
            table,
            blob_len,
            root,
            canon,
            moff,
            members,
            flags,
            hubs,
            edges: edges_at,
            table_at,
            blob,
            data_len: blob + blob_len,
        }
    }

    fn pages(&self) -> u64 {
        self.data_len.div_ceil(PAGE)
    }
}

/// The path of the index of the store in `dir`.
pub(crate) fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// A stamp for a new index: different for every index written.
pub(crate) fn new_stamp(g: &Graph) -> [u8; 16] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut h = Xxh3::new();
    h.update(&now.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&(g.len() as u64).to_le_bytes());
    h.update(&(g.edges().len() as u64).to_le_bytes());
    h.digest128().to_le_bytes()
}

/// The 128-byte header: magic, version, stamp, layout, counters, and the checksum of it all
/// with the pages' checksums.
pub(super) fn encode_header(
    stamp: [u8; 16],
    l: &Layout,
    c: &Counts,
    sums: &[u64],
) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..32].copy_from_slice(&stamp);
    let fields = [
        l.nodes,
        c.ids,
        c.persons,
        c.largest_person,
        c.edges,
        c.refused,
        l.table,
        l.blob_len,
        l.data_len,
        sums.len() as u64,
    ];
    for (i, f) in fields.iter().enumerate() {
        h[32 + i * 8..40 + i * 8].copy_from_slice(&f.to_le_bytes());
    }
    let sum = header_sum(&h, sums);
    h[112..120].copy_from_slice(&sum.to_le_bytes());
    h
}

/// The checksum of the header (bytes 0..112) and the page checksums.
pub(super) fn header_sum(h: &[u8], sums: &[u64]) -> u64 {
    let mut x = Xxh3::new();
    x.update(&h[..112]);
    for s in sums {
        x.update(&s.to_le_bytes());
    }
    x.digest()
}

pub(crate) use check::{check, fuzz};
pub(crate) use read::GraphIndex;
pub(crate) use write::write;
