//! The graph in memory and the graph index's lifecycle: loading the graph (from the index
//! while it is current, else from sled), answering from the index until then, and making the
//! index stale before the first write and current again at close.

use parking_lot::{
    MappedRwLockReadGuard, MappedRwLockWriteGuard, RwLockReadGuard, RwLockWriteGuard,
};

use super::{Store, codec, index, recovery};
use crate::error::Result;
use crate::graph::Graph;

/// Where [`Store::load_graph_from`] builds the graph from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum GraphSource {
    /// The graph index while it is current, else sled.
    IndexIfCurrent,
    /// The ID records and the alias log in sled (`verify`, to check the index against them).
    AliasLog,
}

impl Store {
    /// Before a write, under the writer lock: refuses when the handle is poisoned, loads the
    /// graph, and makes the graph index stale — its stamp removed from sled before anything
    /// else this handle writes, so that no crash can leave a write with the old stamp.
    pub(crate) fn begin_write(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.check_writable()?;
        self.load_graph()?;
        if !self.ix.unstamped.load(SeqCst) {
            self.db.remove(codec::DATA_COUNTS_KEY)?;
            self.counts.due.store(true, SeqCst);
            self.db.remove(codec::INDEX_STAMP_KEY)?;
            self.ix.unstamped.store(true, SeqCst);
            self.ix.due.store(true, SeqCst);
        }
        Ok(())
    }

    /// Writes the graph index of the graph in memory, and its stamp, if this handle wrote or
    /// found no current index (nothing to do otherwise, or for a temporary store). Called when
    /// the handle is dropped; call it to learn whether it worked.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the index file cannot be written,
    /// [`Error::Storage`](crate::Error::Storage) when sled cannot be written.
    pub fn write_index(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let _w = self.writer.lock();
        let Some(dir) = &self.path else {
            return Ok(());
        };
        if !self.ix.due.load(SeqCst) || self.poisoned.load(SeqCst) {
            return Ok(());
        }
        let g = self.graph.read();
        let Some(g) = &*g else {
            return Ok(());
        };
        // Durable first: the stamp must not name an index of writes sled could still lose.
        self.db.flush()?;
        let stamp = index::new_stamp(g);
        index::write(dir, g, stamp)?;
        self.db.insert(codec::INDEX_STAMP_KEY, &stamp)?;
        self.db.flush()?;
        self.ix.unstamped.store(false, SeqCst);
        self.ix.due.store(false, SeqCst);
        Ok(())
    }

    /// `Err` once a write was interrupted halfway (see
    /// [`Error::Interrupted`](crate::Error::Interrupted)).
    pub(crate) fn check_writable(&self) -> Result<()> {
        recovery::check_writable(&self.poisoned)
    }

    /// Answers from the graph index while it is current and the graph not loaded
    /// (`on_index`), else from the graph, loaded now if need be (`on_graph`). An index that
    /// fails (damaged, unreadable) is not asked again: the graph is loaded from sled and the
    /// index rewritten when the handle closes.
    pub(super) fn ask<T>(
        &self,
        on_graph: impl FnOnce(&Graph) -> T,
        on_index: impl FnOnce(&index::GraphIndex) -> Result<T>,
    ) -> Result<T> {
        use std::sync::atomic::Ordering::SeqCst;
        if let Some(ix) = &self.ix.current
            && !self.ix.broken.load(SeqCst)
            && self.graph.read().is_none()
        {
            match on_index(ix) {
                Ok(v) => return Ok(v),
                Err(_) => {
                    self.ix.broken.store(true, SeqCst);
                    self.ix.due.store(true, SeqCst);
                }
            }
        }
        Ok(on_graph(&*self.graph()?))
    }

    /// Whether queries are answered from the graph index (opened current, not written since,
    /// not found damaged): the graph has not been loaded.
    pub fn answers_from_index(&self) -> bool {
        self.ix.current.is_some()
            && !self.ix.broken.load(std::sync::atomic::Ordering::SeqCst)
            && self.graph.read().is_none()
    }

    /// The graph, loaded from sled first if this handle has not loaded it yet.
    pub(crate) fn graph(&self) -> Result<MappedRwLockReadGuard<'_, Graph>> {
        self.load_graph()?;
        Ok(RwLockReadGuard::map(self.graph.read(), |g| {
            g.as_ref().expect("loaded above; never unloaded")
        }))
    }

    /// The graph to change, loaded from sled first if need be.
    pub(crate) fn graph_mut(&self) -> Result<MappedRwLockWriteGuard<'_, Graph>> {
        self.load_graph()?;
        let g = self.graph.write();
        Ok(RwLockWriteGuard::map(g, |g| {
            g.as_mut().expect("loaded above; never unloaded")
        }))
    }

    /// Loads the graph into memory now, if it is not loaded yet (a server calls it at start,
    /// so that its first write does not wait for the load). While it loads, queries go on
    /// answering from the graph index: nothing can be written before the graph is loaded, so
    /// the index and the store agree meanwhile.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Corrupt`](crate::Error::Corrupt)
    /// when the graph cannot be read from sled.
    pub fn load_graph(&self) -> Result<()> {
        self.load_graph_from(GraphSource::IndexIfCurrent)
    }

    /// [`Store::load_graph`], from the graph index only when `from` says so (and it is current):
    /// `verify` rebuilds from the alias log, to check the index against it.
    pub(super) fn load_graph_from(&self, from: GraphSource) -> Result<()> {
        if self.graph.read().is_some() {
            return Ok(());
        }
        use std::sync::atomic::Ordering::SeqCst;
        let _one = self.loading.lock();
        if self.graph.read().is_none() {
            // From the index while it is current (nothing can be written before the graph is
            // loaded): no scan of the ID records, whose pages sled would keep (DESIGN.md,
            // "What the server's memory is made of"). A damaged index: from sled.
            let from_index = match &self.ix.current {
                Some(ix) if from == GraphSource::IndexIfCurrent && !self.ix.broken.load(SeqCst) => {
                    match ix.load_graph() {
                        Ok(g) => Some(g),
                        Err(_) => {
                            // Rewritten when the handle closes, as when a query finds it damaged.
                            self.ix.broken.store(true, SeqCst);
                            self.ix.due.store(true, SeqCst);
                            None
                        }
                    }
                }
                _ => None,
            };
            let g = match from_index {
                Some(g) => g,
                None => recovery::load_graph(&self.db)?,
            };
            *self.graph.write() = Some(g);
        }
        Ok(())
    }
}

/// Readers against writes that remove data: a seqlock (DESIGN.md, "What readers observe").
impl Store {
    /// Writes that removed data so far, twice each (odd while one runs).
    #[cfg(feature = "server")]
    pub(crate) fn removals(&self) -> u64 {
        self.removals.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs a write that removes data: readers that overlap it read again.
    pub(crate) fn removing<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        use std::sync::atomic::Ordering::SeqCst;
        self.removals.fetch_add(1, SeqCst);
        let r = f();
        self.removals.fetch_add(1, SeqCst);
        r
    }

    /// Runs a read that looks at the graph, then at sled, so that it sees the store before a
    /// removing write or after it, never between (a seqlock): it waits while one is under
    /// way and reads again when one happened meanwhile. After 5 s of that it answers with
    /// what it read.
    pub(super) fn consistent<T>(&self, mut read: impl FnMut() -> Result<T>) -> Result<T> {
        use std::sync::atomic::Ordering::SeqCst;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let before = self.removals.load(SeqCst);
            let late = std::time::Instant::now() >= deadline;
            if before % 2 == 1 && !late {
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            }
            let r = read();
            if self.removals.load(SeqCst) == before || late {
                return r;
            }
        }
    }
}
