//! KISSmetrics raw data export / JSON import: one JSON object per line.
//!
//! `{"_p":"john","_t":1234567890,"_n":"Visited Site","url":"..."}` is an event,
//! `{"_p":"john","_t":1234567890,"campaign":"x"}` sets properties,
//! `{"_p":"john","_t":1234567890,"_p2":"john@example.com"}` links two IDs. `_p` and `_t`
//! (Unix seconds) are required; names starting with `_` are never properties.
//!
//! `_p_original` (written by `idgraph export events`, which replaces `_p` with the person's
//! canonical ID) restores the original attribution: the event is recorded under `_p_original`,
//! and `_p_original` is linked to `_p`. So a de-aliased export imports back exactly.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use crate::id::Identity;
use crate::op::{Cause, Op, Properties, Timestamp, Value};

/// Latest plausible time in seconds (year 2286); larger values are usually milliseconds.
const MAX_SECONDS: i64 = 9_999_999_999;

/// A JSON value as a line holds it, borrowing strings where it can.
enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Nested,
}

impl<'de> Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Val<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Owned(s)))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Val<'de>, E> {
                Ok(Val::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Val<'de>, E> {
                Ok(i64::try_from(u).map_or(Val::Float(u as f64), Val::Int))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Val<'de>, E> {
                Ok(Val::Float(x))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Val<'de>, E> {
                Ok(Val::Bool(b))
            }
            fn visit_unit<E>(self) -> Result<Val<'de>, E> {
                Ok(Val::Null)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Val<'de>, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Val::Nested)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Val<'de>, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Val::Nested)
            }
        }
        d.deserialize_any(V)
    }
}

/// A line's fields in order.
struct Fields<'a>(Vec<(Cow<'a, str>, Val<'a>)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Fields<'de>, A::Error> {
                let mut v = Vec::with_capacity(a.size_hint().unwrap_or(6));
                while let Some(k) = a.next_key::<Key<'de>>()? {
                    v.push((k.0, a.next_value::<Val<'de>>()?));
                }
                Ok(Fields(v))
            }
        }
        d.deserialize_map(V)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Val::deserialize(d)? {
            Val::Str(s) => Ok(Key(s)),
            _ => Err(serde::de::Error::custom("a key must be a string")),
        }
    }
}

fn id_field(name: &str, v: &Val) -> Result<Identity, String> {
    match v {
        Val::Str(s) => Identity::new(s.as_ref()).map_err(|e| format!("{name}: {e}")),
        Val::Int(i) => Identity::new(i.to_string()).map_err(|e| format!("{name}: {e}")),
        _ => Err(format!("{name} must be a string")),
    }
}

/// Reads a `_t`: whole seconds, as a number or a string of digits.
pub fn timestamp(v: &str) -> Result<Timestamp, String> {
    let t: i64 = v
        .trim()
        .parse()
        .map_err(|_| format!("_t {v:?} is not a whole number of seconds"))?;
    check_time(t)
}

fn check_time(t: i64) -> Result<Timestamp, String> {
    if t < 0 {
        Err(format!("_t {t} is before 1970"))
    } else if t > MAX_SECONDS {
        Err(format!(
            "_t {t} is too large for seconds (milliseconds? divide by 1000)"
        ))
    } else {
        Ok(t)
    }
}

fn time_field(v: &Val) -> Result<Timestamp, String> {
    match v {
        Val::Int(i) => check_time(*i),
        Val::Float(x) if x.fract() == 0.0 && x.abs() < 1e15 => check_time(*x as i64),
        Val::Float(x) => Err(format!("_t {x} is not a whole number of seconds")),
        Val::Str(s) => timestamp(s),
        _ => Err("_t must be a number of seconds".into()),
    }
}

/// Parses one line into its ops (an alias, an event, a set, or an alias and an event when a
/// line has both `_p2` and `_n`). `source` is kept with alias edges (e.g. `file:line`).
pub fn parse_line(text: &str, source: Option<&str>) -> Result<Vec<Op>, String> {
    let Fields(fields) =
        serde_json::from_str::<Fields>(text).map_err(|e| format!("not a JSON object: {e}"))?;
    parse_fields(fields, source)
}

/// Why a line of `total` bytes (its line ending included) is refused, past
/// [`MAX_LINE_BYTES`](super::input::MAX_LINE_BYTES).
pub fn too_long(total: usize) -> String {
    format!(
        "the line has {total} bytes, more than the limit of {} (max_line_bytes)",
        super::input::MAX_LINE_BYTES
    )
}

/// One line of a KISSmetrics JSON file as `idgraph import` reads it: `raw` is its bytes, with or
/// without its `\n` / `\r\n` ending; `source` is its `FILE:LINE`, kept with alias links. `None`
/// for a blank line; otherwise its ops or why it is refused (too long, not UTF-8, as
/// [`parse_line`]).
pub fn parse_raw_line(raw: &[u8], source: Option<&str>) -> Option<Result<Vec<Op>, String>> {
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    if body.len() > super::input::MAX_LINE_BYTES {
        let ending = if raw.ends_with(b"\n") { 0 } else { 1 };
        return Some(Err(too_long(raw.len() + ending)));
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Some(Err("not UTF-8".into()));
    };
    if text.trim().is_empty() {
        return None;
    }
    Some(parse_line(text, source))
}

/// One row of columns (a Parquet file's), parsed as the JSON line `{"_p", "_p2",
/// "_p_original", "_n", "_t", ...properties}` it stands for would be: the same rules, the same
/// errors. `properties` is a JSON object's text; a column that is `None` is a field absent.
pub struct Row<'a> {
    /// `_p`.
    pub p: Option<&'a str>,
    /// `_p2`.
    pub p2: Option<&'a str>,
    /// `_p_original`.
    pub original: Option<&'a str>,
    /// `_n`.
    pub n: Option<&'a str>,
    /// `_t`.
    pub t: Option<i64>,
    /// The properties, a JSON object.
    pub properties: Option<&'a str>,
}

/// Parses a [`Row`] (see there).
///
/// # Errors
/// As [`parse_line`]; `properties is not a JSON object`.
pub fn parse_row<'a>(row: &Row<'a>, source: Option<&str>) -> Result<Vec<Op>, String> {
    let mut fields = match row.properties {
        Some(text) => {
            serde_json::from_str::<Fields>(text)
                .map_err(|_| "properties is not a JSON object".to_string())?
                .0
        }
        None => Vec::new(),
    };
    let text = |k: &'static str, v: Option<&'a str>| {
        v.map(|v| (Cow::Borrowed(k), Val::Str(Cow::Borrowed(v))))
    };
    fields.extend(
        [
            text("_p", row.p),
            text("_p2", row.p2),
            text("_p_original", row.original),
            text("_n", row.n),
            row.t.map(|t| (Cow::Borrowed("_t"), Val::Int(t))),
        ]
        .into_iter()
        .flatten(),
    );
    parse_fields(fields, source)
}

fn parse_fields(
    fields: Vec<(Cow<'_, str>, Val<'_>)>,
    source: Option<&str>,
) -> Result<Vec<Op>, String> {
    let (mut p, mut p2, mut t, mut n, mut orig) = (None, None, None, None, None);
    let limits = crate::op::Limits::default();
    limits
        .check_count(fields.iter().filter(|(k, _)| !k.starts_with('_')).count())
        .map_err(|e| e.to_string())?;
    let mut props: Vec<(&str, Value)> = Vec::new();
    // A reserved field given twice would let the second copy override the first: refused.
    let once = |slot: bool, k: &str| {
        if slot {
            Err(format!("{k} is given twice"))
        } else {
            Ok(())
        }
    };
    for (k, v) in &fields {
        match k.as_ref() {
            "_p" => {
                once(p.is_some(), "_p")?;
                p = Some(id_field("_p", v)?);
            }
            "_p2" => {
                once(p2.is_some(), "_p2")?;
                p2 = Some(id_field("_p2", v)?);
            }
            "_p_original" => {
                once(orig.is_some(), "_p_original")?;
                orig = Some(id_field("_p_original", v)?);
            }
            "_t" => {
                once(t.is_some(), "_t")?;
                t = Some(time_field(v)?);
            }
            "_n" => {
                once(n.is_some(), "_n")?;
                match v {
                    Val::Str(s) => n = Some(s.to_string()),
                    _ => return Err("_n must be a string".into()),
                }
            }
            k if k.starts_with('_') => {}
            k => {
                let value = match v {
                    Val::Str(s) => Value::Text(s.to_string()),
                    Val::Int(i) => Value::Int(*i),
                    Val::Float(x) => Value::Float(*x),
                    Val::Bool(b) => Value::Text(b.to_string()),
                    Val::Null => continue,
                    Val::Nested => {
                        return Err(format!(
                            "property {k:?}: a value must be a string or a number"
                        ));
                    }
                };
                props.push((k, value));
            }
        }
    }
    let props = Properties::from_pairs(props).map_err(|e| e.to_string())?;
    let p = p.ok_or("missing _p (the ID)")?;
    let t = t.ok_or("missing _t (the time in seconds)")?;
    let mut ops = Vec::with_capacity(1);
    if let Some(p2) = p2 {
        ops.push(Op::Alias {
            a: p.clone(),
            b: p2,
            at: t,
            cause: Cause::Import,
            source: source.map(str::to_owned),
        });
    }
    let p = match orig {
        Some(o) if o != p => {
            ops.push(Op::Alias {
                a: p,
                b: o.clone(),
                at: t,
                cause: Cause::Import,
                source: source.map(str::to_owned),
            });
            o
        }
        _ => p,
    };
    // `Op::validate`, but for the property names: `from_pairs` checked them.
    let values = |props: &Properties| props.validate_values(&limits).map_err(|e| e.to_string());
    match n {
        Some(name) => {
            crate::op::check_name("event name", &name).map_err(|e| e.to_string())?;
            values(&props)?;
            ops.push(Op::record(p, name, props, t));
        }
        None if !props.is_empty() => {
            values(&props)?;
            ops.push(Op::set(p, props, t));
        }
        None if ops.is_empty() => {
            return Err("nothing to do: no _n (event), _p2 (alias) or property".into());
        }
        None => {}
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_kinds_of_line() {
        let ops = parse_line(r#"{"_p":"john","_t":1234567890,"_n":"Visited Site"}"#, None).unwrap();
        assert!(
            matches!(&ops[..], [Op::Record { event, at: 1234567890, .. }] if event == "Visited Site")
        );
        let ops = parse_line(
            r#"{"_t":5,"url":"http://x","_p":"john","n":3,"f":1.5}"#,
            None,
        )
        .unwrap();
        let [Op::Set { properties, .. }] = &ops[..] else {
            panic!("{ops:?}")
        };
        assert_eq!(properties.get("n"), Some(&Value::Int(3)));
        assert_eq!(properties.get("f"), Some(&Value::Float(1.5)));
        assert_eq!(properties.len(), 3);
        let ops = parse_line(r#"{"_p2":"john@x.com","_t":"7","_p":"john"}"#, Some("f:3")).unwrap();
        let [
            Op::Alias {
                a,
                b,
                at: 7,
                source,
                ..
            },
        ] = &ops[..]
        else {
            panic!("{ops:?}")
        };
        assert_eq!(
            (a.as_str(), b.as_str(), source.as_deref()),
            ("john", "john@x.com", Some("f:3"))
        );
        let ops = parse_line(r#"{"_p":"bob","_t":3,"_n":"E","_p_original":"anon"}"#, None).unwrap();
        assert!(
            matches!(&ops[..], [Op::Alias { a, b, .. }, Op::Record { id, .. }]
            if a.as_str() == "bob" && b.as_str() == "anon" && id.as_str() == "anon")
        );
        let esc = parse_line(r#"{"_p":"j\u00f6","_t":1,"_n":"A \"q\""}"#, None).unwrap();
        assert!(
            matches!(&esc[..], [Op::Record { id, event, .. }] if id.as_str() == "jö" && event == "A \"q\"")
        );
    }

    #[test]
    fn bad_lines_say_why() {
        // A property set past a limit is a bad line (it was refused only later, without its
        // position, and `--skip-invalid` could not skip it).
        let long_set = format!(r#"{{"_p":"a","_t":1,"k":"{}"}}"#, "v".repeat(9000));
        let cases = [
            ("nope", "not a JSON object"),
            (r#"[1]"#, "not a JSON object"),
            (r#"{"_t":1,"_n":"x"}"#, "missing _p"),
            (r#"{"_p":"a","_n":"x"}"#, "missing _t"),
            (r#"{"_p":"a","_t":1}"#, "nothing to do"),
            (r#"{"_p":"","_t":1,"_n":"x"}"#, "_p: invalid ID"),
            (r#"{"_p":"a","_t":1.5,"_n":"x"}"#, "not a whole number"),
            (r#"{"_p":"a","_t":-1,"_n":"x"}"#, "before 1970"),
            (r#"{"_p":"a","_t":1234567890123,"_n":"x"}"#, "milliseconds"),
            (r#"{"_p":"a","_t":"soon","_n":"x"}"#, "not a whole number"),
            (r#"{"_p":"a","_t":1,"_n":""}"#, "event name"),
            (r#"{"_p":"a","_t":1,"k":{"x":1}}"#, "string or a number"),
            (&long_set, "max_value_bytes"),
        ];
        for (line, msg) in cases {
            let e = parse_line(line, None).unwrap_err();
            assert!(e.contains(msg), "{line}: {e}");
        }
    }
}
