//! The store the command line names (`--db`, `--cache-mb`), and how each kind of command opens
//! it: writers create it, queries never do.

use std::path::PathBuf;

use idgraph::{Config, Identity, Store};

use super::exit::{Fail, unknown};

/// The store the command line names, and how to open it.
pub struct Db {
    pub path: PathBuf,
    pub cache_mb: u64,
}

impl Db {
    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }

    pub fn config(&self) -> Config {
        Config::new(&self.path).cache_capacity(self.cache_mb.max(1) << 20)
    }

    /// Opens the store for writing (creating it when missing).
    pub fn open_rw(&self) -> Result<Store, Fail> {
        Ok(self.config().open()?)
    }

    /// Opens the store for writing with the settings `f` makes of the default ones.
    pub fn open_rw_with(
        &self,
        f: impl FnOnce(idgraph::Config) -> idgraph::Config,
    ) -> Result<Store, Fail> {
        Ok(f(self.config()).open()?)
    }

    /// Opens the store for a query; `None` when it does not exist (nothing is created).
    pub fn open_ro(&self) -> Result<Option<Store>, Fail> {
        if !self.path.exists() {
            return Ok(None);
        }
        Ok(Some(self.config().open()?))
    }

    /// Answers `q` from the store; on a store that does not exist, what an empty store would
    /// answer (`T::default()`), and nothing is created.
    pub fn query<T: Default>(
        &self,
        q: impl FnOnce(&Store) -> idgraph::Result<T>,
    ) -> Result<T, Fail> {
        match self.open_ro()? {
            Some(s) => Ok(q(&s)?),
            None => Ok(T::default()),
        }
    }

    /// Opens the store for a query about `ids`: invalid IDs exit 2, unknown ones (or no store)
    /// exit 1.
    pub fn open_known(&self, ids: &[&str]) -> Result<Store, Fail> {
        for i in ids {
            Identity::new(*i)?;
        }
        let store = self.open_ro()?.ok_or_else(|| unknown(ids[0]))?;
        for u in ids {
            if !store.contains(u)? {
                return Err(unknown(u));
            }
        }
        Ok(store)
    }
}
