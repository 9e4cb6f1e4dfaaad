//! Where ops come from: an [`OpSource`] is what [`Store::bulk_apply`](crate::Store::bulk_apply)
//! reads, and a [`FilePart`] what imports remember of each file. Parsers make ops; only the
//! store writes. Neither type knows the store.

use crate::error::Result;
use crate::op::{Op, Timestamp};

/// A stream of ops: [`Store::bulk_apply`](crate::Store::bulk_apply) reads it once.
pub trait OpSource {
    /// Calls `f` with every op, in order (once per import).
    ///
    /// # Errors
    /// Bad input ([`Error::Input`](crate::Error::Input), with its position), a file that cannot be read
    /// ([`Error::Io`](crate::Error::Io)), or whatever `f` returns.
    fn for_each(&mut self, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()>;

    /// What was read of each file, to remember once everything read is written (the last
    /// thing an import writes, so a crash before it leaves the files to be read again). Asked
    /// after [`OpSource::for_each`]; none by default.
    fn file_parts(&mut self) -> Vec<(std::path::PathBuf, FilePart)> {
        Vec::new()
    }
}

/// What imports have read of one file: its first `size` bytes, which hold `lines` newlines and
/// hash to `hash` (XXH3-128). An import that finds the file grown reads only what follows; one
/// that finds those bytes changed refuses it (see `idgraph import --reimport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilePart {
    /// Bytes read, from the start of the file.
    pub size: u64,
    /// Newlines in them: the next line read is line `lines + 1`.
    pub lines: u64,
    /// The XXH3-128 hash of those bytes.
    pub hash: u128,
    /// When they were imported (seconds since the epoch).
    pub imported_at: Timestamp,
}

/// The ops of a vector, copied (the vector is left as it was).
impl OpSource for Vec<Op> {
    fn for_each(&mut self, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()> {
        for op in self.iter() {
            f(op.clone())?;
        }
        Ok(())
    }
}

/// The ops of a vector, moved (`ops.into_iter()`): no copy of each op.
impl OpSource for std::vec::IntoIter<Op> {
    fn for_each(&mut self, f: &mut dyn FnMut(Op) -> Result<()>) -> Result<()> {
        self.try_for_each(f)
    }
}
