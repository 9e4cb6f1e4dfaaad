//! The KISSmetrics tracking API (`/e`, `/s`, `/a`): request parameters to an [`Op`].
//!
//! Pure: no I/O, so every rule of `spec/tracking-api.md` is unit-tested here.

use crate::id::Identity;
use crate::op::{Cause, Limits, Op, Properties, Timestamp};

/// Which tracking endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/e`: record an event.
    Event,
    /// `/s`: set properties.
    Set,
    /// `/a`: alias two IDs.
    Alias,
}

impl Endpoint {
    /// The path without the slash (`e`, `s`, `a`).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Event => "e",
            Endpoint::Set => "s",
            Endpoint::Alias => "a",
        }
    }
}

/// The parameters that belong to the request rather than to its properties. Every parameter
/// whose name starts with `_` is never a property; these are also refused when given twice.
pub const RESERVED: [&str; 5] = ["_k", "_p", "_n", "_t", "_d"];

/// Turns the parameters of one tracking request into the op it asks for.
///
/// `keys` are the accepted API keys; `limits` bound the properties (checked before they are
/// parsed); `now` is the receive time, used unless `_d=1`.
/// `source` is kept with an alias edge (where the link came from).
///
/// # Errors
/// A one-line reason naming the parameter: a missing `_k`/`_p`/`_n`, an unknown key, an invalid
/// ID, a bad `_t`, a `/s` with no property, a bad event or property name.
pub fn parse(
    endpoint: Endpoint,
    params: &[(String, String)],
    keys: &[String],
    limits: &Limits,
    now: Timestamp,
    source: impl FnOnce() -> String,
) -> Result<Op, String> {
    parse_op(endpoint, params, keys, limits, now, source).map_err(|r| r.reason)
}

/// Why a tracking request was refused: the one-line reason, and the limit it went past, if
/// that is why ([`Error::Limit`](crate::Error::Limit)'s name).
#[derive(Debug)]
pub struct Rejected {
    /// The one-line reason, naming the parameter.
    pub reason: String,
    /// The name of the limit the request went past, if that is why.
    pub limit: Option<&'static str>,
}

impl From<String> for Rejected {
    fn from(reason: String) -> Self {
        Rejected {
            reason,
            limit: None,
        }
    }
}

impl From<&str> for Rejected {
    fn from(reason: &str) -> Self {
        Rejected::from(reason.to_owned())
    }
}

impl From<crate::Error> for Rejected {
    fn from(e: crate::Error) -> Self {
        let limit = match &e {
            crate::Error::Limit { limit, .. } => Some(*limit),
            _ => None,
        };
        Rejected {
            reason: e.to_string(),
            limit,
        }
    }
}

/// [`parse`], with the limit a refusal went past kept typed.
///
/// # Errors
/// As [`parse`].
pub fn parse_op(
    endpoint: Endpoint,
    params: &[(String, String)],
    keys: &[String],
    limits: &Limits,
    now: Timestamp,
    source: impl FnOnce() -> String,
) -> Result<Op, Rejected> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // A parameter of the request itself given twice (a property named `_p` appended by a
    // careless tracker, or an injected one) would make the request mean two things: refused.
    for name in RESERVED {
        if params.iter().filter(|(k, _)| k == name).nth(1).is_some() {
            return Err(format!("{name} is given twice").into());
        }
    }
    let key = get("_k").ok_or("missing _k (the API key)")?;
    if !keys.iter().any(|k| k == key) {
        return Err(format!("unknown API key _k={key:?}").into());
    }
    let at = match (get("_t"), get("_d")) {
        (Some(t), d) => {
            let t = crate::ingest::km_json::timestamp(t)
                .map_err(|e| format!("{e} (_t is a Unix time in whole seconds)"))?;
            if d == Some("1") { t } else { now }
        }
        (None, Some("1")) => return Err("_d=1 needs _t (the time to apply)".into()),
        (None, _) => now,
    };
    let id = |name: &str, what: &str| -> Result<Identity, String> {
        let v = get(name).ok_or_else(|| format!("missing {name} ({what})"))?;
        Identity::new(v).map_err(|e| format!("{name}: {e}"))
    };
    let p = id("_p", "the ID")?;
    let props = || -> Result<Properties, Rejected> {
        let named = params.iter().filter(|(k, _)| !k.starts_with('_'));
        limits.check_count(named.clone().count())?;
        Ok(Properties::from_pairs(
            named.map(|(k, v)| (k.as_str(), v.as_str())),
        )?)
    };
    let op = match endpoint {
        Endpoint::Event => {
            let name = get("_n").ok_or("missing _n (the event name)")?;
            Op::record(p, name, props()?, at)
        }
        Endpoint::Set => {
            let props = props()?;
            if props.is_empty() {
                return Err("a /s request needs at least one property".into());
            }
            Op::set(p, props, at)
        }
        Endpoint::Alias => {
            let n = id("_n", "the other ID")?;
            Op::Alias {
                a: n,
                b: p,
                at,
                cause: Cause::Api,
                source: Some(source()),
            }
        }
    };
    op.validate_with(limits)?;
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(s.as_bytes()).into_owned().collect()
    }
    fn keys() -> Vec<String> {
        vec!["k1".into()]
    }
    fn p(e: Endpoint, s: &str) -> Result<Op, String> {
        parse(e, &q(s), &keys(), &Limits::default(), 1000, || {
            "test".into()
        })
    }

    #[test]
    fn event_with_properties_uses_receive_time_without_d() {
        let op = p(
            Endpoint::Event,
            "_k=k1&_p=bob&_n=Signed+Up&plan=pro&_t=5&_c=x",
        )
        .unwrap();
        let Op::Record {
            id,
            event,
            properties,
            at,
        } = op
        else {
            panic!("not a record")
        };
        assert_eq!(
            (id.as_str(), event.as_str(), at),
            ("bob", "Signed Up", 1000)
        );
        assert_eq!(properties.iter().count(), 1);
        assert_eq!(properties.get("plan").unwrap().to_string(), "pro");
    }

    #[test]
    fn d1_applies_t() {
        let Op::Set { at, .. } = p(Endpoint::Set, "_k=k1&_p=bob&a=1&_d=1&_t=77").unwrap() else {
            panic!()
        };
        assert_eq!(at, 77);
    }

    #[test]
    fn alias_takes_both_ids_in_any_order() {
        let Op::Alias { a, b, cause, .. } = p(Endpoint::Alias, "_k=k1&_p=x&_n=y").unwrap() else {
            panic!()
        };
        assert_eq!((a.as_str(), b.as_str(), cause), ("y", "x", Cause::Api));
    }

    #[test]
    fn every_bad_input_has_a_reason() {
        let long = "x".repeat(256);
        for (e, s, why) in [
            (Endpoint::Event, "_p=a&_n=b", "missing _k"),
            (Endpoint::Event, "_k=nope&_p=a&_n=b", "unknown API key"),
            (Endpoint::Event, "_k=k1&_n=b", "missing _p"),
            (Endpoint::Event, "_k=k1&_p=a", "missing _n"),
            (Endpoint::Alias, "_k=k1&_p=a", "missing _n"),
            (Endpoint::Alias, "_k=k1&_p=a&_n=", "_n: invalid ID"),
            (
                Endpoint::Event,
                &format!("_k=k1&_p={long}&_n=b"),
                "_p: invalid ID",
            ),
            (Endpoint::Event, "_k=k1&_p=a&_n=b&_t=soon", "_t \"soon\""),
            (Endpoint::Event, "_k=k1&_p=a&_n=b&_t=-1&_d=1", "before 1970"),
            (Endpoint::Event, "_k=k1&_p=a&_n=b&_p=c", "_p is given twice"),
            (Endpoint::Event, "_k=k1&_p=a&_n=b&_n=c", "_n is given twice"),
            (
                Endpoint::Alias,
                "_k=k1&_p=a&_n=b&_k=k1",
                "_k is given twice",
            ),
            (Endpoint::Event, "_k=k1&_p=a&_n=b&_d=1", "_d=1 needs _t"),
            (Endpoint::Set, "_k=k1&_p=a&_t=3", "at least one property"),
            (Endpoint::Event, "_k=k1&_p=a&_n=", "event name"),
            (Endpoint::Event, "_k=k1&_p=a&_n=%01", "event name"),
        ] {
            let err = p(e, s).expect_err(s);
            assert!(err.contains(why), "{s}: {err}");
            assert!(!err.contains('\n'));
        }
    }
}
