//! Writing the graph index: to a temporary file, page by page with each page's checksum,
//! synced, then renamed over the old one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::*;
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::graph::Graph;

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
        w.pad_to(layout.hubs)?;
        let hubs = crate::store::repair::hubs_of(g, HUBS as usize);
        for list in [&hubs.0, &hubs.1] {
            let entries = list.iter().map(|&(count, n)| (count, n.index()));
            let pad = std::iter::repeat_n((0, 0), HUBS as usize - list.len());
            w.put_le(entries.chain(pad).map(|(count, n): (u32, u32)| {
                let mut e = [0u8; 8];
                e[..4].copy_from_slice(&count.to_le_bytes());
                e[4..].copy_from_slice(&n.to_le_bytes());
                e
            }))?;
        }
        debug_assert_eq!(w.written, layout.edges);
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
    // The rename is durable before the stamp naming this index is written.
    crate::store::recovery::sync_dir(dir).map_err(io)?;
    Ok(())
}

/// Writes the data while hashing it page by page.
pub(super) struct PagedWriter<'f> {
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
