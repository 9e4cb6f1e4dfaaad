//! `idgraph._idgraph`: the idgraph store as a Python extension module. `idgraph/__init__.py`
//! re-exports it; `idgraph/_idgraph.pyi` types it. Each call is the crate's own code: the
//! store, `idgraph::import` (what `idgraph import` runs), `idgraph::columnar` (the exports as
//! Arrow) and `idgraph::ingest::arrow::{parse_lines, parse_csv}` (the importer's reading of
//! a line, of a CSV file).
//!
//! The GIL is released while the store works: a long import, an export's batches, a parse
//! leave other Python threads running.

mod arrow;
mod convert;
mod store;

use pyo3::create_exception;

/// mimalloc for the Rust side of the module (Python keeps its own allocator).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    idgraph,
    IdgraphError,
    PyException,
    "An error of the idgraph store; the message is the store's."
);
create_exception!(
    idgraph,
    InputError,
    IdgraphError,
    "Bad input: an invalid ID or name, a value past a limit, a bad line (`FILE:LINE: reason`)."
);
create_exception!(
    idgraph,
    LockedError,
    IdgraphError,
    "The store is open in another process (a server, another Store)."
);
create_exception!(
    idgraph,
    CorruptError,
    IdgraphError,
    "The store (or a backup) is damaged, or of a format this version cannot read."
);

/// The Python exception for a store error, with the store's message.
pub(crate) fn py_err(e: idgraph::Error) -> PyErr {
    use idgraph::Error as E;
    let msg = e.to_string();
    match e {
        E::InvalidId { .. } | E::InvalidName { .. } | E::Limit { .. } | E::Input(_) => {
            InputError::new_err(msg)
        }
        E::Locked(_) => LockedError::new_err(msg),
        E::Corrupt(_) | E::IncompatibleFormat { .. } | E::Backup(_) => CorruptError::new_err(msg),
        _ => IdgraphError::new_err(msg),
    }
}

/// Runs `f` without the GIL and turns its error into the Python exception.
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> idgraph::Result<T> + Send,
) -> PyResult<T> {
    py.detach(f).map_err(py_err)
}

#[pymodule]
fn _idgraph(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<store::Store>()?;
    m.add_function(wrap_pyfunction!(arrow::parse_lines, m)?)?;
    m.add_function(wrap_pyfunction!(arrow::parse_csv, m)?)?;
    m.add_function(wrap_pyfunction!(arrow::local_stars, m)?)?;
    m.add("IdgraphError", py.get_type::<IdgraphError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add("CorruptError", py.get_type::<CorruptError>())?;
    m.add("FORMAT_VERSION", idgraph::FORMAT_VERSION)?;
    m.add("MAX_LINE_BYTES", idgraph::ingest::files::MAX_LINE_BYTES)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
