//! Reading the graph index in place: pages read with `pread` and verified once each.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::xxh3_64;

use super::*;
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::graph::{Flags, Graph};
use crate::store::repair::{Hubs, Ranked, Top};

/// An index opened for reading.
pub(crate) struct GraphIndex {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) layout: Layout,
    pub(super) counts: Counts,
    pub(super) sums: Vec<u64>,
    /// Pages read and verified, by number.
    pub(super) pages: Mutex<FxHashMap<u64, Arc<[u8]>>>,
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

    pub(super) fn corrupt(&self, why: impl std::fmt::Display) -> Error {
        Error::Corrupt(format!("the graph index {}: {why}", self.path.display()))
    }

    /// Page `p`, read and checked on first use.
    pub(super) fn page(&self, p: u64) -> Result<Arc<[u8]>> {
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
    pub(super) fn bytes(&self, at: u64, len: u64) -> Result<Vec<u8>> {
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
    pub(super) fn le_at<const N: usize>(&self, array: u64, i: u64) -> Result<[u8; N]> {
        let at = array + i * N as u64;
        let page = self.page(at / PAGE)?;
        let from = (at % PAGE) as usize;
        Ok(page[from..from + N].try_into().expect("N bytes"))
    }

    pub(super) fn u32_at(&self, array: u64, i: u64) -> Result<u32> {
        self.le_at(array, i).map(u32::from_le_bytes)
    }

    pub(super) fn u64_at(&self, array: u64, i: u64) -> Result<u64> {
        self.le_at(array, i).map(u64::from_le_bytes)
    }

    pub(super) fn node(&self, v: u32) -> Result<Node> {
        if u64::from(v) >= self.layout.nodes {
            return Err(self.corrupt(format!("node {v} is out of range")));
        }
        Ok(Node::from_index(v))
    }

    /// `len` bytes of the data from `at`, read in order and checked page by page, without
    /// keeping the pages (for [`GraphIndex::load_graph`], which reads everything once).
    pub(super) fn read_through(&self, at: u64, len: u64) -> Result<Vec<u8>> {
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

    /// [`Store::hubs`](crate::Store::hubs) from the index: up to [`HUBS`] of each, its
    /// `hubs` array (written with the index, one page); more, [`GraphIndex::hubs_scan`].
    pub(crate) fn hubs(&self, top: usize) -> Result<Hubs> {
        if top as u64 > HUBS {
            return self.hubs_scan(top);
        }
        let raw = self.bytes(self.layout.hubs, 2 * HUBS * 8)?;
        let (largest, linked) = raw.split_at((HUBS * 8) as usize);
        let list = |part: &[u8]| -> Result<Ranked> {
            let mut out = Vec::with_capacity(top);
            for e in part.chunks_exact(8).take(top) {
                let count = u32::from_le_bytes(e[..4].try_into().expect("4 bytes"));
                if count == 0 {
                    break;
                }
                out.push((
                    count,
                    self.node(u32::from_le_bytes(e[4..].try_into().expect("4 bytes")))?,
                ));
            }
            Ok(out)
        };
        self.name_hubs(list(largest)?, list(linked)?)
    }

    /// The IDs of [`hubs_of`](crate::store::repair::hubs_of)'s lists.
    fn name_hubs(&self, largest: Ranked, linked: Ranked) -> Result<Hubs> {
        let named = |v: Ranked| -> Result<Vec<(String, u64)>> {
            v.into_iter()
                .map(|(count, n)| Ok((self.ident(n)?, u64::from(count))))
                .collect()
        };
        Ok(Hubs {
            largest: named(largest)?,
            most_linked: named(linked)?,
        })
    }

    /// [`Store::hubs`](crate::Store::hubs) for any `top`, from the index's `moff` and `canon`
    /// arrays (a person's size is its root's run of members; other nodes have none) and its
    /// alias log,
    /// read once in order, a chunk at a time (each page checked), without keeping the pages.
    /// Memory: a degree per node and one chunk, whatever the store's size.
    pub(crate) fn hubs_scan(&self, top: usize) -> Result<Hubs> {
        /// Nodes (or links) per read.
        const CHUNK: u64 = 1 << 18;
        let l = self.layout;
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
        let mut largest = Top::new(top);
        let mut at = 0;
        while at < l.nodes {
            let n = CHUNK.min(l.nodes - at);
            let moff = self.read_through(l.moff + at * 4, (n + 1) * 4)?;
            let canon = self.read_through(l.canon + at * 4, n * 4)?;
            let mut from = u32_of(&moff[..4]);
            for (i, next) in moff[4..].chunks_exact(4).enumerate() {
                let to = u32_of(next);
                if to != from {
                    let node = at + i as u64;
                    let size = to.checked_sub(from).ok_or_else(|| {
                        self.corrupt(format!("the members of node {node} are out of range"))
                    })?;
                    let c = &canon[i * 4..i * 4 + 4];
                    largest.offer(size, self.node(u32_of(c))?);
                }
                from = to;
            }
            at += n;
        }
        let mut degree = vec![0u32; l.nodes as usize];
        let mut at = 0;
        while at < self.counts.edges {
            let n = CHUNK.min(self.counts.edges - at);
            for e in self
                .read_through(l.edges + at * 16, n * 16)?
                .chunks_exact(16)
            {
                let (a, b) = (self.node(u32_of(&e[8..12]))?, self.node(u32_of(&e[12..]))?);
                if a != b {
                    for v in [a, b] {
                        degree[v.slot()] = degree[v.slot()].saturating_add(1);
                    }
                }
            }
            at += n;
        }
        let mut linked = Top::new(top);
        for (i, &d) in degree.iter().enumerate() {
            if d > 0 {
                linked.offer(d, self.node(i as u32)?);
            }
        }
        drop(degree);
        self.name_hubs(largest.into_sorted(), linked.into_sorted())
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
    pub(super) fn root_of(&self, n: Node) -> Result<Node> {
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
