//! Python values to the store's types and back.

use idgraph::{AliasOutcome, Cause, Identity, Op, Outcome, Properties, Timestamp, Value};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};

use crate::{InputError, py_err};

/// Any serde value of the store (a report, a person, events) as Python dicts and lists.
pub fn to_py<'py, T: serde::Serialize>(py: Python<'py>, v: &T) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, v).map_err(PyErr::from)
}

/// An ID, checked by the store's rules.
pub fn id(s: &str) -> PyResult<Identity> {
    Identity::new(s).map_err(py_err)
}

/// A property value: `str`, `int` or `float` (a `bool` is the text `true` / `false`, as the
/// importer reads JSON's).
fn value(v: &Bound<'_, PyAny>, name: &str) -> PyResult<Value> {
    if v.is_instance_of::<PyBool>() {
        let b: bool = v.extract()?;
        return Ok(Value::Text(if b { "true" } else { "false" }.into()));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(Value::Text(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        return v
            .extract::<i64>()
            .map(Value::Int)
            .map_err(|_| InputError::new_err(format!("property {name:?}: {v} is out of range")));
    }
    if v.is_instance_of::<PyFloat>() {
        let x: f64 = v.extract()?;
        if !x.is_finite() {
            return Err(InputError::new_err(format!(
                "property {name:?}: {x} is not a finite number"
            )));
        }
        return Ok(Value::Float(x));
    }
    Err(InputError::new_err(format!(
        "property {name:?}: a value must be a str, an int or a float, not {}",
        v.get_type().name()?
    )))
}

/// Properties from a dict of name to value (`None`: none).
pub fn properties(d: Option<&Bound<'_, PyDict>>) -> PyResult<Properties> {
    let mut p = Properties::new();
    if let Some(d) = d {
        for (k, v) in d.iter() {
            let name: String = k.extract().map_err(|_| {
                InputError::new_err(format!("a property name must be a str, not {k:?}"))
            })?;
            let v = value(&v, &name)?;
            p.insert(name, v).map_err(py_err)?;
        }
    }
    Ok(p)
}

/// A link's cause by its name (`identify`, `alias`, `form`, `url`, `import`, `api`).
pub fn cause(s: &str) -> PyResult<Cause> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        InputError::new_err(format!(
            "cause {s:?}: one of identify, alias, form, url, import, api"
        ))
    })
}

/// What one op did, as a dict: `{"outcome": "joined", "size": N}`, `already_same`,
/// `{"outcome": "refused", "reason": ...}`, `stored`, `{"outcome": "properties_refused",
/// "refused": N, "max": M}` or `suppressed`.
pub fn outcome<'py>(py: Python<'py>, o: &Outcome) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match o {
        Outcome::Alias(AliasOutcome::Joined { size }) => {
            d.set_item("outcome", "joined")?;
            d.set_item("size", size)?;
        }
        Outcome::Alias(AliasOutcome::AlreadySame) => d.set_item("outcome", "already_same")?,
        Outcome::Alias(AliasOutcome::Refused(r)) => {
            d.set_item("outcome", "refused")?;
            d.set_item("reason", r.to_string())?;
        }
        Outcome::Stored => d.set_item("outcome", "stored")?,
        Outcome::PropertiesRefused { refused, max } => {
            d.set_item("outcome", "properties_refused")?;
            d.set_item("refused", refused)?;
            d.set_item("max", max)?;
        }
        Outcome::Suppressed => d.set_item("outcome", "suppressed")?,
    }
    Ok(d)
}

/// A required item of an op dict.
fn item<'py>(d: &Bound<'py, PyDict>, k: &str, n: usize) -> PyResult<Bound<'py, PyAny>> {
    d.get_item(k)?
        .ok_or_else(|| InputError::new_err(format!("op {n}: missing {k:?}")))
}

fn text(d: &Bound<'_, PyDict>, k: &str, n: usize) -> PyResult<String> {
    item(d, k, n)?
        .extract()
        .map_err(|_| InputError::new_err(format!("op {n}: {k:?} must be a str")))
}

/// One op of `Store.apply` from its dict: `{"kind": "alias", "a", "b", "at"?, "cause"?}`,
/// `{"kind": "record", "id", "event", "properties"?, "at"?}`, `{"kind": "set", "id",
/// "properties", "at"?}`. `at` defaults to `now`, `cause` to `api`. `a` is accepted for `id`
/// (the column `parse_lines` gives).
pub fn op(d: &Bound<'_, PyAny>, n: usize, now: Timestamp) -> PyResult<Op> {
    let d = d
        .cast::<PyDict>()
        .map_err(|_| InputError::new_err(format!("op {n}: a dict, not {d:?}")))?;
    let at = match d.get_item("at")? {
        Some(v) if !v.is_none() => v
            .extract::<i64>()
            .map_err(|_| InputError::new_err(format!("op {n}: \"at\" must be an int")))?,
        _ => now,
    };
    let kind = text(d, "kind", n)?;
    let who = || match d.get_item("id")? {
        Some(_) => text(d, "id", n),
        None => text(d, "a", n),
    };
    let props = || -> PyResult<Properties> {
        match d.get_item("properties")? {
            Some(p) if !p.is_none() => properties(Some(p.cast::<PyDict>().map_err(|_| {
                InputError::new_err(format!("op {n}: \"properties\" must be a dict"))
            })?)),
            _ => Ok(Properties::new()),
        }
    };
    match kind.as_str() {
        "alias" => {
            let cause = match d.get_item("cause")? {
                Some(c) if !c.is_none() => cause(&text(d, "cause", n)?)?,
                _ => Cause::Api,
            };
            Ok(Op::alias(
                id(&text(d, "a", n)?)?,
                id(&text(d, "b", n)?)?,
                at,
                cause,
            ))
        }
        "record" => Ok(Op::record(id(&who()?)?, text(d, "event", n)?, props()?, at)),
        "set" => Ok(Op::set(id(&who()?)?, props()?, at)),
        k => Err(InputError::new_err(format!(
            "op {n}: kind {k:?} is not alias, record or set"
        ))),
    }
}
