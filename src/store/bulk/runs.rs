//! The events of an import: held in arenas, sorted into runs (spilled to temporary files past
//! the memory budget), and merged back in key order for packing.

use crate::codec::{self};
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::op::{Properties, Timestamp};
use crate::store::events::BlockUpdate;

/// Events read, held until the memory budget is reached, then sorted into a run. Keys and
/// values live in one arena: no allocation per event.
#[derive(Default)]
pub(super) struct Buffer {
    arena: Vec<u8>,
    /// Each event: (its node, the start of its key in `arena`, key length, value length),
    /// in arrival order (in key order once [`sorted`](Self::sorted)).
    events: Vec<(u64, usize, u32, u32)>,
}

impl Buffer {
    /// Bytes held (what the memory budget counts).
    pub(super) fn bytes(&self) -> usize {
        self.arena.len() + self.events.len() * std::mem::size_of::<(u64, usize, u32, u32)>()
    }

    pub(super) fn push(
        &mut self,
        n: Node,
        event: &str,
        properties: &Properties,
        at: Timestamp,
    ) -> Result<()> {
        let start = self.arena.len();
        codec::event_key_into(&mut self.arena, n, at, event);
        let klen = self.arena.len() - start;
        codec::event_value_into(&mut self.arena, event, properties)?;
        let vlen = self.arena.len() - start - klen;
        let len = |l: usize| {
            u32::try_from(l).map_err(|_| Error::Internal(format!("an event of {l} bytes")))
        };
        self.events
            .push((n.as_u64(), start, len(klen)?, len(vlen)?));
        Ok(())
    }

    pub(super) fn key(&self, e: &(u64, usize, u32, u32)) -> &[u8] {
        &self.arena[e.1..e.1 + e.2 as usize]
    }

    pub(super) fn value(&self, e: &(u64, usize, u32, u32)) -> &[u8] {
        let from = e.1 + e.2 as usize;
        &self.arena[from..from + e.3 as usize]
    }

    /// The events in key order, one per key (the last of equal keys wins, as it would one op
    /// at a time).
    pub(super) fn sorted(mut self) -> Self {
        let mut events = std::mem::take(&mut self.events);
        // Stable: equal keys stay in arrival order. The node first, without reading the arena.
        events.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| self.key(a).cmp(self.key(b))));
        let mut out: Vec<(u64, usize, u32, u32)> = Vec::with_capacity(events.len());
        for e in events {
            match out.last_mut() {
                Some(last) if self.key(last) == self.key(&e) => *last = e,
                _ => out.push(e),
            }
        }
        self.events = out;
        self
    }

    /// The events, in their order, each as its own (key, value).
    pub(super) fn into_entries(self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
        (0..self.events.len()).map(move |i| {
            let e = &self.events[i];
            (self.key(e).to_vec(), self.value(e).to_vec())
        })
    }
}

/// The events of an import, sorted across buffers before they are packed: every buffer but
/// the last goes to a temporary file as a sorted run; the runs and the last buffer are then
/// merged in key order (of equal keys, the later run's), so that each block is written once.
pub(super) struct Runs {
    dir: Option<std::path::PathBuf>,
    files: Vec<std::fs::File>,
    pending: Option<Buffer>,
}

impl Runs {
    pub(super) fn push(&mut self, buf: Buffer) -> Result<()> {
        let sorted = buf.sorted();
        if let Some(prev) = self.pending.replace(sorted) {
            self.spill(prev)?;
        }
        Ok(())
    }

    pub(super) fn spill(&mut self, run: Buffer) -> Result<()> {
        use std::io::Write as _;
        let io = |e| Error::io("a temporary file of the import", e);
        let file = match &self.dir {
            Some(d) => tempfile::tempfile_in(d),
            None => tempfile::tempfile(),
        }
        .map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        for e in &run.events {
            let (k, v) = (run.key(e), run.value(e));
            w.write_all(&(k.len() as u32).to_le_bytes()).map_err(io)?;
            w.write_all(k).map_err(io)?;
            w.write_all(&(v.len() as u32).to_le_bytes()).map_err(io)?;
            w.write_all(v).map_err(io)?;
        }
        let mut file = w.into_inner().map_err(|e| io(e.into_error()))?;
        std::io::Seek::rewind(&mut file).map_err(io)?;
        self.files.push(file);
        Ok(())
    }

    /// Packs every event into blocks, handed to `out` in order; returns how many were new,
    /// and the blocks written.
    pub(super) fn finish(
        mut self,
        db: &sled::Db,
        block_bytes: usize,
        out: &mut dyn FnMut(BlockUpdate) -> Result<()>,
    ) -> Result<(u64, u64)> {
        let last = self.pending.take().unwrap_or_default();
        if self.files.is_empty() {
            let mut it = last.into_entries().map(Ok);
            return crate::store::events::write_sorted(db, &mut it, block_bytes, out);
        }
        let mut sources: Vec<Source> = self
            .files
            .into_iter()
            .map(|f| Box::new(RunReader(std::io::BufReader::with_capacity(1 << 16, f))) as _)
            .collect();
        sources.push(Box::new(last.into_entries().map(Ok)));
        let mut merged = Merge::new(sources)?;
        crate::store::events::write_sorted(db, &mut merged, block_bytes, out)
    }
}

impl Runs {
    pub(super) fn new(dir: Option<std::path::PathBuf>) -> Self {
        Runs {
            dir,
            files: Vec::new(),
            pending: None,
        }
    }
}

/// A sorted stream of events: a run read back, or the last buffer.
pub(super) type Source = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>>;

/// Reads a run back.
pub(super) struct RunReader(std::io::BufReader<std::fs::File>);

impl Iterator for RunReader {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        use std::io::Read as _;
        let io = |e| Error::io("a temporary file of the import", e);
        let mut len = [0u8; 4];
        match self.0.read_exact(&mut len) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(io(e))),
            Ok(()) => {}
        }
        let mut read = || -> Result<(Vec<u8>, Vec<u8>)> {
            let mut k = vec![0u8; u32::from_le_bytes(len) as usize];
            self.0.read_exact(&mut k).map_err(io)?;
            let mut l = [0u8; 4];
            self.0.read_exact(&mut l).map_err(io)?;
            let mut v = vec![0u8; u32::from_le_bytes(l) as usize];
            self.0.read_exact(&mut v).map_err(io)?;
            Ok((k, v))
        };
        Some(read())
    }
}

/// A k-way merge of sorted runs, one entry per key: of equal keys, the later run's.
pub(super) struct Merge {
    sources: Vec<Source>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(Vec<u8>, std::cmp::Reverse<usize>)>>,
    values: Vec<Option<Vec<u8>>>,
}

impl Merge {
    pub(super) fn new(mut sources: Vec<Source>) -> Result<Self> {
        let mut heap = std::collections::BinaryHeap::new();
        let mut values = vec![None; sources.len()];
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(e) = s.next() {
                let (k, v) = e?;
                values[i] = Some(v);
                heap.push(std::cmp::Reverse((k, std::cmp::Reverse(i))));
            }
        }
        Ok(Merge {
            sources,
            heap,
            values,
        })
    }

    /// Takes source `i`'s current value and moves it on.
    pub(super) fn advance(&mut self, i: usize) -> Result<Vec<u8>> {
        let v = self.values[i].take().expect("a current entry");
        if let Some(e) = self.sources[i].next() {
            let (k, nv) = e?;
            self.values[i] = Some(nv);
            self.heap.push(std::cmp::Reverse((k, std::cmp::Reverse(i))));
        }
        Ok(v)
    }
}

impl Iterator for Merge {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        let std::cmp::Reverse((key, std::cmp::Reverse(i))) = self.heap.pop()?;
        let value = match self.advance(i) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        // Equal keys of earlier runs: superseded.
        while let Some(std::cmp::Reverse((k, _))) = self.heap.peek()
            && *k == key
        {
            let std::cmp::Reverse((_, std::cmp::Reverse(j))) = self.heap.pop().expect("peeked");
            if let Err(e) = self.advance(j) {
                return Some(Err(e));
            }
        }
        Some(Ok((key, value)))
    }
}
