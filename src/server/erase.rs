//! Erasure while serving (`--erase-within`). `forget` removes a person's keys at once, but
//! sled keeps their old bytes in old log segments until it reclaims them. Within
//! [`ServeConfig::erase_within`] of a forget, the writer thread compacts the store: with writes
//! paused (it is the writer), it copies the live keys into a new directory beside the store
//! (`store::copy_live`); then it takes the [`StoreSlot`], so that no request gets the old
//! handle, waits for the requests that have it, closes it, swaps the directories
//! (`store::swap_in`) and opens the copy. Writes wait for the whole of it (about the time a
//! copy of the live data takes); reads only for the swap and the open.
//!
//! A forget or unalias of the admin API (which writes from the blocking pool, not the writer
//! thread) that lands after the copy began is caught by the store's removal counter: the copy
//! is dropped and the erasure runs again at the next check.

use std::time::Instant;

use super::*;

/// The store the handlers and the writer use, replaced by an erasure.
pub(crate) struct StoreSlot {
    current: parking_lot::RwLock<Option<Arc<Store>>>,
}

impl StoreSlot {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        StoreSlot {
            current: parking_lot::RwLock::new(Some(store)),
        }
    }

    /// The store now, unless an erasure is swapping it (for the async workers, which must
    /// not wait).
    pub(crate) fn try_get(&self) -> Option<Arc<Store>> {
        self.current.try_read()?.clone()
    }

    /// The store now (waits while an erasure swaps it).
    pub(crate) fn get(&self) -> Result<Arc<Store>> {
        self.current.read().clone().ok_or_else(|| {
            Error::Internal("the store could not be reopened after an erasure".into())
        })
    }
}

/// Compacts the store in the slot; see the module's docs. Called by the writer thread, so no
/// tracking op is applied meanwhile. Returns the keys copied.
pub(crate) fn erase(slot: &StoreSlot) -> Result<u64> {
    let store = slot.get()?;
    let path = store
        .path()
        .ok_or_else(|| Error::Internal("a temporary store has nothing to erase".into()))?
        .to_path_buf();
    let (removals, keys) = {
        let _w = store.writer.lock();
        store.flush()?;
        let removals = store.removals();
        match crate::store::copy_live(&store) {
            Ok(keys) => (removals, keys),
            Err(e) => {
                crate::store::drop_copy(&path);
                return Err(e);
            }
        }
    };
    // No request gets the old handle from here on; the ones that have it finish.
    let mut cur = slot.current.write();
    let old = cur.take().expect("the slot holds the store");
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&old) > 1 || old.removals() != removals {
        if old.removals() != removals || Instant::now() >= deadline {
            // Written meanwhile (a forget of the admin API), or a request holds on: the copy
            // is not the store. Again at the next check.
            *cur = Some(old);
            crate::store::drop_copy(&path);
            return Err(Error::Internal(
                "the store changed or stayed in use during the erasure; it runs again".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let config = old.config.clone();
    old.retire();
    drop(old);
    let swapped = crate::store::swap_in(&path);
    // Whatever the swap did, opening finishes or undoes it. The copy has no graph index, so
    // opening loads the graph. Should it fail, the slot stays empty and the server says so.
    *cur = Some(Arc::new(config.open()?));
    swapped.map(|()| keys)
}

/// Sends the writer an erasure when one is due: `within / 2` after the first forget since the
/// last erasure, checked every `within / 10` (at least every 50 ms, at most every minute).
pub(crate) fn schedule(within: Duration, metrics: Arc<Metrics>, writer: Writer) {
    let period = (within / 10).clamp(Duration::from_millis(50), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let due = metrics
                .erase_due
                .lock()
                .is_some_and(|t| t.elapsed() >= within / 2);
            if due && writer.erase().await.is_err() {
                return; // shutting down
            }
        }
    });
}
