//! `idgraph.Store`: one store, open in this process.

use std::path::PathBuf;
use std::sync::Arc;

use idgraph::import::{ImportFormat, ImportHooks, ImportOptions};
use idgraph::{Config, Op, now};
use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{self, to_py};
use crate::{IdgraphError, InputError, detached};

/// Skipped lines an import report lists (it counts them all).
const SKIPS_LISTED: usize = 20;

/// An idgraph store: which visitor IDs are one person, their events and properties.
///
/// ``Store(path)`` opens the store in the directory ``path`` (created when missing);
/// ``Store()`` is a temporary store, deleted when closed. Only one process opens a store at a
/// time: a second gets ``LockedError``. Close it with ``close()`` or a ``with`` block; a store
/// that is garbage-collected is closed too.
///
/// Writes (``alias``, ``record``, ``set``, ``apply``) are atomic; they are durable after
/// ``flush()`` (and within ``flush_every_ms``, 500 ms by default). ``import_files`` returns
/// only once what it imported is durable.
#[pyclass(module = "idgraph", name = "Store", frozen)]
pub struct Store {
    inner: RwLock<Option<Arc<idgraph::Store>>>,
}

impl Store {
    fn get(&self) -> PyResult<Arc<idgraph::Store>> {
        self.inner
            .read()
            .clone()
            .ok_or_else(|| IdgraphError::new_err("the store is closed"))
    }
}

fn paths(p: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    if let Ok(one) = p.extract::<PathBuf>() {
        return Ok(vec![one]);
    }
    p.extract::<Vec<PathBuf>>()
        .map_err(|_| InputError::new_err("paths: a path or a list of paths (str or os.PathLike)"))
}

fn format(f: Option<&str>) -> PyResult<Option<ImportFormat>> {
    Ok(match f {
        None => None,
        Some("km-json" | "km_json" | "json") => Some(ImportFormat::KmJson),
        Some("csv") => Some(ImportFormat::Csv),
        Some("parquet") => Some(ImportFormat::Parquet),
        Some(other) => {
            return Err(InputError::new_err(format!(
                "format {other:?}: one of km-json, csv, parquet (or None: by file name)"
            )));
        }
    })
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (path=None, *, max_person_size=None, max_links_per_person=None,
                        blocked_ids=None, cache_capacity=None, flush_every_ms=Some(500)),
           text_signature = "(path=None, *, max_person_size=None, max_links_per_person=None, \
                             blocked_ids=None, cache_capacity=None, flush_every_ms=500)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        max_person_size: Option<u64>,
        max_links_per_person: Option<u32>,
        blocked_ids: Option<Vec<String>>,
        cache_capacity: Option<u64>,
        flush_every_ms: Option<u64>,
    ) -> PyResult<Self> {
        let mut c = match path {
            Some(p) => Config::new(p),
            None => Config::temporary(),
        };
        if let Some(n) = max_person_size {
            c = c.max_person_size(n);
        }
        if let Some(n) = max_links_per_person {
            c = c.max_links_per_person(n);
        }
        if let Some(ids) = blocked_ids {
            c = c.blocked_ids(ids);
        }
        if let Some(n) = cache_capacity {
            c = c.cache_capacity(n);
        }
        c = c.flush_every_ms(flush_every_ms);
        let store = detached(py, move || c.open())?;
        Ok(Store {
            inner: RwLock::new(Some(Arc::new(store))),
        })
    }

    /// The store's directory (``None`` for a temporary store).
    #[getter]
    fn path(&self) -> PyResult<Option<PathBuf>> {
        Ok(self.get()?.path().map(|p| p.to_path_buf()))
    }

    /// Whether ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.read().is_none()
    }

    /// Flushes and closes the store (its directory is unlocked once exports still being read
    /// end). Further calls raise ``IdgraphError``; closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.inner.write().take();
        if let Some(s) = store {
            detached(py, move || {
                s.flush()?;
                drop(s);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// ``with Store(path) as s:`` closes the store at the end of the block.
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the store.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match &*self.inner.read() {
            None => "<idgraph.Store closed>".into(),
            Some(s) => match s.path() {
                Some(p) => format!("<idgraph.Store {}>", p.display()),
                None => "<idgraph.Store temporary>".into(),
            },
        }
    }

    // ---- queries ---------------------------------------------------------------------------

    /// The person of ``id``: ``{"person": canonical ID, "ids": [its IDs, first seen first]}``,
    /// or ``None`` for an ID the store has not seen.
    fn resolve<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let p = detached(py, || s.resolve(id))?;
        to_py(py, &p)
    }

    /// The canonical ID of ``id``'s person, or ``None`` for an unknown ID.
    fn canonical(&self, py: Python<'_>, id: &str) -> PyResult<Option<String>> {
        let s = self.get()?;
        detached(py, || s.canonical(id))
    }

    /// ``id in store``: whether the store has seen ``id``.
    fn __contains__(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        let s = self.get()?;
        detached(py, || s.contains(id))
    }

    /// The events of ``id``'s person, in time order: dicts ``{"id", "event", "at",
    /// "properties"}`` (``id``: the ID it was recorded under). Empty for an unknown ID.
    fn events<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let e = detached(py, || s.events(id))?;
        to_py(py, &e)
    }

    /// The properties of ``id``'s person, each at its latest value: dicts ``{"name", "value",
    /// "at", "id"}``.
    fn props<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let p = detached(py, || s.properties(id))?;
        to_py(py, &p)
    }

    /// Why ``a`` and ``b`` are one person: ``{"same_person": bool, "edges": [links]}``, the
    /// shortest chain of links from ``a`` to ``b``; each link ``{"a", "b", "cause", "at",
    /// "source"}``.
    fn explain<'py>(&self, py: Python<'py>, a: &str, b: &str) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let e = detached(py, || s.explain(a, b))?;
        to_py(py, &e)
    }

    /// The alias links of ``id``'s person.
    fn links<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let l = detached(py, || s.links(id))?;
        to_py(py, &l)
    }

    /// The ``top`` largest persons and most linked IDs: ``{"largest": [(canonical ID,
    /// IDs)], "most_linked": [(ID, links)]}``.
    #[pyo3(signature = (top=10))]
    fn hubs<'py>(&self, py: Python<'py>, top: usize) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let h = detached(py, || s.hubs(top))?;
        to_py(py, &h)
    }

    /// Counts: ``ids``, ``persons``, ``largest_person``, ``edges``, ``events``,
    /// ``properties``, ``refused_merges``, ``disk_bytes``, ``suppressed`` ...
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let st = detached(py, || s.stats())?;
        to_py(py, &st)
    }

    /// Checks every invariant of the store: ``{"ok": bool, "problems": [...], counts ...}``.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let r = detached(py, || s.verify())?;
        let d = to_py(py, &r)?;
        d.set_item("ok", r.is_ok())?;
        Ok(d)
    }

    // ---- writes ----------------------------------------------------------------------------

    /// Links ``a`` and ``b`` as one person. ``at``: Unix seconds (default now); ``cause``:
    /// ``api`` (default), ``alias``, ``identify``, ``form``, ``url`` or ``import``. Returns
    /// ``{"outcome": "joined", "size": N}``, ``{"outcome": "already_same"}`` or
    /// ``{"outcome": "refused", "reason": ...}`` (a guardrail: a blocked ID, a person too
    /// large).
    #[pyo3(signature = (a, b, *, at=None, cause="api"))]
    fn alias<'py>(
        &self,
        py: Python<'py>,
        a: &str,
        b: &str,
        at: Option<i64>,
        cause: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let op = Op::alias(
            convert::id(a)?,
            convert::id(b)?,
            at.unwrap_or_else(now),
            convert::cause(cause)?,
        );
        self.apply_one(py, op)
    }

    /// Records that ``id`` did ``event`` (with ``properties``, also set on the person) at
    /// ``at`` (Unix seconds, default now). Returns ``{"outcome": "stored"}``, or
    /// ``properties_refused`` / ``suppressed``.
    #[pyo3(signature = (id, event, properties=None, *, at=None))]
    fn record<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        event: &str,
        properties: Option<&Bound<'py, PyDict>>,
        at: Option<i64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let op = Op::record(
            convert::id(id)?,
            event,
            convert::properties(properties)?,
            at.unwrap_or_else(now),
        );
        self.apply_one(py, op)
    }

    /// Sets ``properties`` on ``id``'s person at ``at`` (Unix seconds, default now).
    #[pyo3(signature = (id, properties, *, at=None))]
    fn set<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        properties: &Bound<'py, PyDict>,
        at: Option<i64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let op = Op::set(
            convert::id(id)?,
            convert::properties(Some(properties))?,
            at.unwrap_or_else(now),
        );
        self.apply_one(py, op)
    }

    /// Applies ``ops`` in order, atomically (all or none, also across a crash). Each op is a
    /// dict: ``{"kind": "alias", "a", "b", "at"?, "cause"?}``, ``{"kind": "record", "id",
    /// "event", "properties"?, "at"?}`` or ``{"kind": "set", "id", "properties", "at"?}``.
    /// Returns one outcome per op (see ``alias`` and ``record``).
    fn apply<'py>(&self, py: Python<'py>, ops: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let t = now();
        let ops: Vec<Op> = ops
            .try_iter()?
            .enumerate()
            .map(|(n, o)| convert::op(&o?, n, t))
            .collect::<PyResult<_>>()?;
        let s = self.get()?;
        let outcomes = detached(py, || s.apply_batch(&ops))?;
        let list = PyList::empty(py);
        for o in &outcomes {
            list.append(convert::outcome(py, o)?)?;
        }
        Ok(list)
    }

    /// Imports files into the store: KISSmetrics JSON lines, CSV, Parquet (as ``idgraph
    /// export --format parquet`` and the Spark job write), folders of them and KISSmetrics
    /// export buckets. The same path as ``idgraph import``: a file imported before is read
    /// from where that import ended. Returns ``idgraph import --json``'s report as a dict,
    /// with ``first_skipped``: the first 20 lines skipped (``FILE:LINE: reason``). A bad line
    /// raises ``InputError`` and nothing is imported, unless ``skip_invalid``. Durable when it
    /// returns.
    #[pyo3(signature = (paths, *, format=None, skip_invalid=false, reimport=false))]
    fn import_files<'py>(
        &self,
        py: Python<'py>,
        paths: &Bound<'py, PyAny>,
        format: Option<&str>,
        skip_invalid: bool,
        reimport: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let paths = self::paths(paths)?;
        let opts = ImportOptions {
            format: self::format(format)?,
            skip_invalid,
            reimport,
            ..Default::default()
        };
        let s = self.get()?;
        let (report, skips) = detached(py, move || {
            let skips = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let kept = skips.clone();
            let hooks = ImportHooks {
                on_skip: Some(Box::new(move |m| {
                    let mut k = kept.borrow_mut();
                    if k.len() < SKIPS_LISTED {
                        k.push(m.to_owned());
                    }
                })),
                on_progress: None,
            };
            let r = idgraph::import::import_files(&s, &paths, &opts, hooks)?;
            let skips = skips.borrow().clone();
            Ok((r.json(), skips))
        })?;
        let d = to_py(py, &report)?;
        d.set_item("first_skipped", skips)?;
        Ok(d)
    }

    /// Forgets ``id``'s person: every ID, link, event and property is deleted, and the IDs
    /// are suppressed so that no later data brings the person back. Returns ``{"ids",
    /// "links", "events", "refusals"}`` deleted, or ``None`` for an unknown ID.
    fn forget<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let f = detached(py, || s.forget(id))?;
        to_py(py, &f)
    }

    /// Makes every write so far durable; returns the bytes flushed.
    fn flush(&self, py: Python<'_>) -> PyResult<usize> {
        let s = self.get()?;
        detached(py, || s.flush())
    }

    // ---- Arrow out -------------------------------------------------------------------------

    /// The mapping, every ID and its person, as a ``pyarrow.RecordBatchReader`` of batches of
    /// 65,536 rows: columns ``id``, ``person`` (its canonical ID), ``first_seen`` (Unix s).
    /// It streams: batches are made as they are read. Writes to this store wait until the
    /// reader is read to its end or closed.
    fn export_mapping<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::arrow::export(py, self.get()?, crate::arrow::Export::Mapping)
    }

    /// Every event with its person now, as a ``pyarrow.RecordBatchReader`` of batches of
    /// 65,536 rows: columns ``_p`` (the person), ``_p_original`` (the ID it was recorded
    /// under), ``_n``, ``_t`` (Unix s), ``properties`` (a JSON object as text). It streams;
    /// writes to this store wait until the reader is read to its end or closed.
    fn export_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::arrow::export(py, self.get()?, crate::arrow::Export::Events)
    }
}

impl Store {
    fn apply_one<'py>(&self, py: Python<'py>, op: Op) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get()?;
        let o = detached(py, || s.apply(op))?;
        convert::outcome(py, &o)
    }
}
