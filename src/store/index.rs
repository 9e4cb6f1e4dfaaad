//! The graph index: who is who, in a flat file next to sled, so that a query does not wait for
//! the whole graph to be rebuilt.
//!
//! Opening a store used to rebuild the in-memory graph from every ID record and the alias log
//! (10M KISSmetrics lines, 2.7M IDs: 1.6-1.8 s and ~860 MB before the first answer). The index
//! holds what `resolve`, `events` and `properties` need — each ID's node, each node's person
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
//! | `edges`: E × 16 bytes | the alias log: (sequence number u64, node u32, node u32), in order |
//! | `table`: T × u32 | open addressing on XXH3-64 of the ID, linear probing; node + 1, 0 empty |
//! | `blob`: B bytes | the IDs |
//! | pages × u64 | XXH3-64 of each 16 KiB page of the data (everything after the header) |
//!
//! Each array starts 8-byte aligned, so no integer spans two pages.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::error::{Error, Result};
use crate::forest::Node;
use crate::graph::{Flags, Graph};

/// The index's file, in the store's directory.
pub(crate) const FILE_NAME: &str = "graph.idx";
const MAGIC: [u8; 8] = *b"IDGRAPHX";
const VERSION: u32 = 2;
const HEADER: u64 = 128;
const PAGE: u64 = 16 << 10;
/// Verified pages kept in memory (64 MiB); past it the cache starts over.
const CACHE_PAGES: usize = 4096;
/// A free node in `root`.
const FREE: u32 = u32::MAX;

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
struct Layout {
    nodes: u64,
    table: u64,
    blob_len: u64,
    root: u64,
    canon: u64,
    moff: u64,
    members: u64,
    flags: u64,
    edges: u64,
    table_at: u64,
    blob: u64,
    data_len: u64,
}

fn align8(x: u64) -> u64 {
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
        let edges_at = align8(flags + nodes);
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

/// Writes the index of `g` with `stamp` into `dir`: to a temporary file, synced, then renamed
/// over the old one (a crash leaves the old index or the new one, and a stale one is refused
/// by its stamp).
pub(crate) fn write(dir: &Path, g: &Graph, stamp: [u8; 16]) -> Result<()> {
    let io = |e: std::io::Error| Error::io(path_in(dir).display().to_string(), e);
    let n = g.len();
    let mut root = vec![FREE; n];
    let mut canon = vec![0u32; n];
    let mut count = vec![0u32; n + 1];
    let mut off = Vec::with_capacity(n + 1);
    let mut blob_len = 0u64;
    let mut largest = 0u64;
    off.push(0u64);
    for m in g.nodes() {
        if g.is_live(m) {
            let r = g.root(m);
            root[m.slot()] = r.index();
            count[r.slot() + 1] += 1;
            if r == m {
                canon[m.slot()] = g.slot(m).value.canon().index();
                largest = largest.max(u64::from(g.slot(m).size));
            }
            blob_len += g.ident(m).len() as u64;
        }
        off.push(blob_len);
    }
    for i in 0..n {
        count[i + 1] += count[i];
    }
    let live = g.live() as u64;
    let mut fill = count.clone();
    let mut members = vec![0u32; live as usize];
    for m in g.nodes().filter(|&m| g.is_live(m)) {
        let r = root[m.slot()] as usize;
        members[fill[r] as usize] = m.index();
        fill[r] += 1;
    }
    drop(fill);
    let table_len = (live * 2).next_power_of_two().max(16);
    let mut table = vec![0u32; table_len as usize];
    let mask = table_len - 1;
    for m in g.nodes().filter(|&m| g.is_live(m)) {
        let mut j = xxh3_64(g.ident(m).as_bytes()) & mask;
        while table[j as usize] != 0 {
            j = (j + 1) & mask;
        }
        table[j as usize] = m.index() + 1;
    }
    let mut edges: Vec<(u64, Node, Node)> = g
        .edges()
        .iter()
        .map(|(&(a, b), &seq)| (seq, a, b))
        .collect();
    edges.sort_unstable();
    let layout = Layout::new(n as u64, live, edges.len() as u64, table_len, blob_len);
    let counts = Counts {
        ids: live,
        persons: g.persons() as u64,
        largest_person: largest,
        edges: edges.len() as u64,
        refused: g.refused(),
    };

    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let file = File::create(&tmp).map_err(io)?;
    let mut w = PagedWriter {
        out: BufWriter::with_capacity(1 << 20, &file),
        page: Xxh3::new(),
        in_page: 0,
        written: 0,
        sums: Vec::with_capacity(layout.pages() as usize),
    };
    let sums = (|| {
        w.out.write_all(&[0u8; HEADER as usize])?;
        w.put_le(off.iter().map(|x| x.to_le_bytes()))?;
        for (at, array) in [
            (layout.root, &root),
            (layout.canon, &canon),
            (layout.moff, &count),
            (layout.members, &members),
        ] {
            w.pad_to(at)?;
            w.put_le(array.iter().map(|x| x.to_le_bytes()))?;
        }
        w.pad_to(layout.flags)?;
        w.put_le(g.nodes().map(|m| [g.flags(m).bits()]))?;
        w.pad_to(layout.edges)?;
        w.put_le(edges.iter().map(|&(seq, a, b)| {
            let mut e = [0u8; 16];
            e[..8].copy_from_slice(&seq.to_le_bytes());
            e[8..12].copy_from_slice(&a.index().to_le_bytes());
            e[12..].copy_from_slice(&b.index().to_le_bytes());
            e
        }))?;
        w.pad_to(layout.table_at)?;
        w.put_le(table.iter().map(|x| x.to_le_bytes()))?;
        w.pad_to(layout.blob)?;
        for m in g.nodes().filter(|&m| g.is_live(m)) {
            w.put(g.ident(m).as_bytes())?;
        }
        debug_assert_eq!(w.written, layout.data_len);
        w.finish()
    })()
    .map_err(io)?;
    let header = encode_header(stamp, &layout, &counts, &sums);
    file.write_all_at(&header, 0).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path_in(dir)).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// Writes the data while hashing it page by page.
struct PagedWriter<'f> {
    out: BufWriter<&'f File>,
    page: Xxh3,
    in_page: u64,
    written: u64,
    sums: Vec<u64>,
}

impl PagedWriter<'_> {
    fn put(&mut self, mut b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        while !b.is_empty() {
            let take = ((PAGE - self.in_page) as usize).min(b.len());
            self.page.update(&b[..take]);
            self.in_page += take as u64;
            b = &b[take..];
            if self.in_page == PAGE {
                self.sums.push(self.page.digest());
                self.page.reset();
                self.in_page = 0;
            }
        }
        Ok(())
    }

    /// Integers, each as its little-endian bytes, 16 KiB at a time.
    fn put_le<const N: usize>(&mut self, v: impl Iterator<Item = [u8; N]>) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(PAGE as usize);
        for x in v {
            b.extend_from_slice(&x);
            if b.len() >= PAGE as usize {
                self.put(&b)?;
                b.clear();
            }
        }
        self.put(&b)
    }

    fn pad_to(&mut self, at: u64) -> std::io::Result<()> {
        let pad = vec![0u8; (at - self.written) as usize];
        self.put(&pad)
    }

    /// Ends the last page and appends the page checksums; returns them.
    fn finish(mut self) -> std::io::Result<Vec<u64>> {
        if self.in_page > 0 {
            self.sums.push(self.page.digest());
        }
        let b: Vec<u8> = self.sums.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.out.write_all(&b)?;
        self.out.flush()?;
        Ok(self.sums)
    }
}

fn encode_header(stamp: [u8; 16], l: &Layout, c: &Counts, sums: &[u64]) -> [u8; HEADER as usize] {
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
fn header_sum(h: &[u8], sums: &[u64]) -> u64 {
    let mut x = Xxh3::new();
    x.update(&h[..112]);
    for s in sums {
        x.update(&s.to_le_bytes());
    }
    x.digest()
}

/// An index opened for reading.
pub(crate) struct GraphIndex {
    file: File,
    path: PathBuf,
    layout: Layout,
    counts: Counts,
    sums: Vec<u64>,
    /// Pages read and verified, by number.
    pages: Mutex<FxHashMap<u64, Arc<[u8]>>>,
}

impl std::fmt::Debug for GraphIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphIndex")
            .field("path", &self.path)
            .finish()
    }
}

impl GraphIndex {
    /// The index in `dir` if it is there, whole and current (its stamp is `stamp`); `Ok(None)`
    /// when it is missing, stale or of another version, `Err(Corrupt)` when it is damaged.
    /// Reads the header and the page checksums only.
    pub(crate) fn open(dir: &Path, stamp: &[u8]) -> Result<Option<GraphIndex>> {
        let path = path_in(dir);
        let io = |e: std::io::Error| Error::io(path.display().to_string(), e);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        let bad = |why: &str| Error::Corrupt(format!("the graph index {}: {why}", path.display()));
        if len < HEADER {
            return Err(bad("shorter than its header"));
        }
        let mut h = [0u8; HEADER as usize];
        file.read_exact_at(&mut h, 0).map_err(io)?;
        if h[0..8] != MAGIC {
            return Err(bad("not a graph index"));
        }
        if u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")) != VERSION {
            return Ok(None);
        }
        if h[16..32] != *stamp {
            return Ok(None);
        }
        let f = |i: usize| u64::from_le_bytes(h[32 + i * 8..40 + i * 8].try_into().expect("8"));
        let (nodes, table, blob_len, data_len, pages) = (f(0), f(6), f(7), f(8), f(9));
        let counts = Counts {
            ids: f(1),
            persons: f(2),
            largest_person: f(3),
            edges: f(4),
            refused: f(5),
        };
        if nodes > u64::from(u32::MAX)
            || counts.ids > nodes
            || !table.is_power_of_two()
            || table > len
            || blob_len > len
        {
            return Err(bad("its header is inconsistent"));
        }
        if counts.edges > len {
            return Err(bad("its header is inconsistent"));
        }
        let layout = Layout::new(nodes, counts.ids, counts.edges, table, blob_len);
        if layout.data_len != data_len
            || layout.pages() != pages
            || len != HEADER + data_len + pages * 8
        {
            return Err(bad("its size does not match its header (cut short?)"));
        }
        let mut raw = vec![0u8; (pages * 8) as usize];
        file.read_exact_at(&mut raw, HEADER + data_len)
            .map_err(io)?;
        let sums: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let want = u64::from_le_bytes(h[112..120].try_into().expect("8 bytes"));
        if header_sum(&h, &sums) != want {
            return Err(bad("its header checksum does not match"));
        }
        Ok(Some(GraphIndex {
            file,
            path,
            layout,
            counts,
            sums,
            pages: Mutex::new(FxHashMap::default()),
        }))
    }

    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    fn corrupt(&self, why: impl std::fmt::Display) -> Error {
        Error::Corrupt(format!("the graph index {}: {why}", self.path.display()))
    }

    /// Page `p`, read and checked on first use.
    fn page(&self, p: u64) -> Result<Arc<[u8]>> {
        if let Some(b) = self.pages.lock().get(&p) {
            return Ok(b.clone());
        }
        let start = p * PAGE;
        let len = PAGE.min(self.layout.data_len - start);
        let mut b = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut b, HEADER + start)
            .map_err(|e| Error::io(self.path.display().to_string(), e))?;
        if xxh3_64(&b) != self.sums[p as usize] {
            return Err(self.corrupt(format!("page {p} does not match its checksum")));
        }
        let b: Arc<[u8]> = b.into();
        let mut pages = self.pages.lock();
        if pages.len() >= CACHE_PAGES {
            pages.clear();
        }
        pages.insert(p, b.clone());
        Ok(b)
    }

    /// The `len` bytes at data offset `at` (within the data: checked by the callers).
    fn bytes(&self, at: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        let mut at = at;
        let end = at + len;
        while at < end {
            let page = self.page(at / PAGE)?;
            let from = (at % PAGE) as usize;
            let take = ((end - at) as usize).min(page.len() - from);
            out.extend_from_slice(&page[from..from + take]);
            at += take as u64;
        }
        Ok(out)
    }

    /// Element `i` of the array at `array` of `N`-byte integers, as its bytes (an aligned
    /// element never spans two pages).
    fn le_at<const N: usize>(&self, array: u64, i: u64) -> Result<[u8; N]> {
        let at = array + i * N as u64;
        let page = self.page(at / PAGE)?;
        let from = (at % PAGE) as usize;
        Ok(page[from..from + N].try_into().expect("N bytes"))
    }

    fn u32_at(&self, array: u64, i: u64) -> Result<u32> {
        self.le_at(array, i).map(u32::from_le_bytes)
    }

    fn u64_at(&self, array: u64, i: u64) -> Result<u64> {
        self.le_at(array, i).map(u64::from_le_bytes)
    }

    fn node(&self, v: u32) -> Result<Node> {
        if u64::from(v) >= self.layout.nodes {
            return Err(self.corrupt(format!("node {v} is out of range")));
        }
        Ok(Node::from_index(v))
    }

    /// `len` bytes of the data from `at`, read in order and checked page by page, without
    /// keeping the pages (for [`GraphIndex::load_graph`], which reads everything once).
    fn read_through(&self, at: u64, len: u64) -> Result<Vec<u8>> {
        let end = at + len;
        if end > self.layout.data_len {
            return Err(self.corrupt("an array runs past the data"));
        }
        let mut out = Vec::with_capacity(len as usize);
        let mut page = Vec::with_capacity(PAGE as usize);
        let mut p = at / PAGE;
        while p * PAGE < end {
            let start = p * PAGE;
            page.resize(PAGE.min(self.layout.data_len - start) as usize, 0);
            self.file
                .read_exact_at(&mut page, HEADER + start)
                .map_err(|e| Error::io(self.path.display().to_string(), e))?;
            if xxh3_64(&page) != self.sums[p as usize] {
                return Err(self.corrupt(format!("page {p} does not match its checksum")));
            }
            let from = at.max(start) - start;
            let to = end.min(start + page.len() as u64) - start;
            out.extend_from_slice(&page[from as usize..to as usize]);
            p += 1;
        }
        Ok(out)
    }

    /// The whole graph, built from the index: its IDs, flags and alias log replayed — the
    /// same graph as one rebuilt from sled, without reading the ID records (a server's start:
    /// DESIGN.md, "The graph index"). Every page is checked; anything out of place is
    /// `Error::Corrupt`, and the caller rebuilds from sled.
    pub(crate) fn load_graph(&self) -> Result<Graph> {
        let l = self.layout;
        let n = l.nodes as usize;
        let off: Vec<u64> = self
            .read_through(0, (l.nodes + 1) * 8)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let flags = self.read_through(l.flags, l.nodes)?;
        let text = String::from_utf8(self.read_through(l.blob, l.blob_len)?)
            .map_err(|_| self.corrupt("its IDs are not UTF-8"))?;
        let mut g = Graph::loading(n, text);
        for m in Node::all(n) {
            let (a, b) = (off[m.slot()], off[m.slot() + 1]);
            if b < a {
                return Err(self.corrupt(format!("the ID of node {m} is out of range")));
            }
            if b > a {
                g.add_span(m, a, b - a, Flags::from_bits(flags[m.slot()]))
                    .map_err(|e| self.corrupt(e))?;
            }
        }
        drop((off, flags));
        let raw = self.read_through(l.edges, self.counts.edges * 16)?;
        let mut edges = Vec::with_capacity(raw.len() / 16);
        for e in raw.chunks_exact(16) {
            let seq = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
            let a = self.node(u32::from_le_bytes(e[8..12].try_into().expect("4 bytes")))?;
            let b = self.node(u32::from_le_bytes(e[12..].try_into().expect("4 bytes")))?;
            if edges.last().is_some_and(|&(last, _, _)| last >= seq) {
                return Err(self.corrupt(format!("alias edge {seq} is out of order")));
            }
            edges.push((seq, a, b));
        }
        drop(raw);
        let g = g
            .finish_load(edges.into_iter(), self.counts.refused)
            .map_err(|e| self.corrupt(e))?;
        if g.live() as u64 != self.counts.ids || g.persons() as u64 != self.counts.persons {
            return Err(self.corrupt("its counts do not match its IDs and links"));
        }
        Ok(g)
    }

    /// The ID of node `n` (empty for a free node).
    pub(crate) fn ident(&self, n: Node) -> Result<String> {
        let l = &self.layout;
        let i = u64::from(n.index());
        if i >= l.nodes {
            return Err(self.corrupt(format!("node {n} is out of range")));
        }
        let (a, b) = (self.u64_at(0, i)?, self.u64_at(0, i + 1)?);
        if a > b || b > l.blob_len {
            return Err(self.corrupt(format!("the ID of node {n} is out of range")));
        }
        let raw = self.bytes(l.blob + a, b - a)?;
        String::from_utf8(raw).map_err(|_| self.corrupt(format!("the ID of node {n} is not UTF-8")))
    }

    /// The node of `id`, if the index holds it.
    pub(crate) fn lookup(&self, id: &str) -> Result<Option<Node>> {
        let l = &self.layout;
        let mask = l.table - 1;
        let mut j = xxh3_64(id.as_bytes()) & mask;
        for _ in 0..l.table {
            let v = self.u32_at(l.table_at, j)?;
            if v == 0 {
                return Ok(None);
            }
            let n = self.node(v - 1)?;
            if self.ident(n)? == id {
                return Ok(Some(n));
            }
            j = (j + 1) & mask;
        }
        Err(self.corrupt("its table has no free slot"))
    }

    /// The root node of `n`'s person (the node that stands for it in the index).
    fn root_of(&self, n: Node) -> Result<Node> {
        let r = self.u32_at(self.layout.root, u64::from(n.index()))?;
        if r == FREE {
            return Err(self.corrupt(format!("node {n} is looked up but free")));
        }
        self.node(r)
    }

    /// The canonical node of `n`'s person and its members in first-seen order.
    pub(crate) fn person(&self, n: Node) -> Result<(Node, Vec<Node>)> {
        let l = &self.layout;
        let r = self.root_of(n)?;
        let canon = self.node(self.u32_at(l.canon, u64::from(r.index()))?)?;
        let (a, b) = (
            u64::from(self.u32_at(l.moff, u64::from(r.index()))?),
            u64::from(self.u32_at(l.moff, u64::from(r.index()) + 1)?),
        );
        if a > b || b > self.counts.ids {
            return Err(self.corrupt(format!("the members of node {r} are out of range")));
        }
        let mut members = Vec::with_capacity((b - a) as usize);
        for k in a..b {
            members.push(self.node(self.u32_at(l.members, k)?)?);
        }
        if !members.contains(&n) || !members.contains(&canon) {
            return Err(self.corrupt(format!("the person of node {n} does not hold it")));
        }
        Ok((canon, members))
    }
}

/// Compares the index with the graph rebuilt from the alias log: every ID at its node, in the
/// same person with the same canonical ID, and nothing else. Calls `problem` for each
/// difference (or once, when the index cannot be read).
pub(crate) fn check(
    ix: &GraphIndex,
    g: &Graph,
    tick: &mut crate::store::verify::Tick,
    mut problem: impl FnMut(String),
) {
    let mut run = || -> Result<()> {
        if ix.counts.ids != g.live() as u64 {
            problem(format!(
                "the graph index holds {} IDs, the graph {}",
                ix.counts.ids,
                g.live()
            ));
            return Ok(());
        }
        // Free nodes at the end are not reloaded: the two may differ in length by them.
        let len = (ix.layout.nodes as usize).max(g.len());
        for n in Node::all(len) {
            tick.step();
            if n.slot() >= ix.layout.nodes as usize {
                if g.is_live(n) {
                    problem(format!("the graph index lacks {:?} (node {n})", g.ident(n)));
                }
                continue;
            }
            let id = ix.ident(n)?;
            if n.slot() >= g.len() || !g.is_live(n) {
                if !id.is_empty() {
                    problem(format!("the graph index holds {id:?} at free node {n}"));
                }
                continue;
            }
            if id != g.ident(n) {
                problem(format!(
                    "the graph index holds {id:?} at node {n}, the graph {:?}",
                    g.ident(n)
                ));
                continue;
            }
            if ix.lookup(&id)? != Some(n) {
                problem(format!("the graph index does not find {id:?}"));
                continue;
            }
            // Roots are how each side happens to be built (the order of unions, splits), not
            // what it means: each person of the graph must be, whole, one person of the index
            // with the same canonical ID. As both partition the same IDs, that is equality.
            if g.is_person_root(n) {
                let (canon, members) = ix.person(n)?;
                if canon != g.slot(n).value.canon() || members != g.members_sorted(n) {
                    problem(format!(
                        "the graph index gives the person of {id:?} other IDs or another \
                         canonical ID than the alias log"
                    ));
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        problem(format!("the graph index cannot be read: {e}"));
    }
}

/// The fuzz target `index` (see `crate::fuzz`): an index file made of `data`, then read as a
/// query would. From the first byte on: either `data` itself is the file (odd first byte:
/// what damage on disk looks like, refused by the checksums), or a file whose header sizes come
/// from `data[1..12]` and whose arrays are the rest of `data`, with checksums made to match —
/// so that the structure, not the checksums, is what the reads face. Every read must end in
/// an answer or `Error::Corrupt`, never a panic, a hang or an allocation out of proportion.
pub(crate) fn fuzz(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let stamp = [7u8; 16];
    let file = if mode % 2 == 1 || rest.len() < 11 {
        rest.to_vec()
    } else {
        let u16_at = |i: usize| u64::from(u16::from_le_bytes([rest[i], rest[i + 1]]));
        let nodes = u16_at(0) % 2048;
        let ids = u16_at(2) % (nodes + 1);
        let table = 1u64 << (rest[4] % 13);
        let blob_len = u16_at(5);
        let layout = Layout::new(nodes, ids, u64::from(rest[9]), table, blob_len);
        let counts = Counts {
            ids,
            persons: u64::from(rest[7]),
            largest_person: u64::from(rest[8]),
            edges: u64::from(rest[9]),
            refused: u64::from(rest[10]),
        };
        let mut body = rest[11..].to_vec();
        body.resize(layout.data_len as usize, 0);
        let sums: Vec<u64> = body.chunks(PAGE as usize).map(xxh3_64).collect();
        let mut f = encode_header(stamp, &layout, &counts, &sums).to_vec();
        f.extend_from_slice(&body);
        f.extend(sums.iter().flat_map(|s| s.to_le_bytes()));
        f
    };
    let dir = std::env::temp_dir().join(format!("idgraph-fuzz-index-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(path_in(&dir), &file).is_err() {
        return;
    }
    if let Ok(Some(ix)) = GraphIndex::open(&dir, &stamp) {
        for n in Node::all((ix.layout.nodes as usize).min(64)) {
            if let Ok(id) = ix.ident(n) {
                let _ = ix.lookup(&id);
            }
            let _ = ix.person(n);
        }
        for id in ["", "a", "user0@example.com"] {
            let _ = ix.lookup(id);
        }
        let _ = ix.load_graph();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
