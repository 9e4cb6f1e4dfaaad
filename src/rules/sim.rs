//! Replaying tracker commands: the line format of `idgraph simulate` and of the test vectors.
//!
//! One JSON object per line, naming a browser and at most one action:
//! `{"browser": "b1", "kmq": ["identify", "foo"]}` (any `_kmq.push` array),
//! `{"browser": "b1", "visit": "https://shop.example/?kmi=foo"}`,
//! `{"browser": "b1", "submit": {"event": "Signed Up", "fields": [...], "properties": {...}}}`,
//! `{"browser": "b1", "clear_cookies": true}`; optional `"at"` (Unix seconds; default: the
//! previous line's time plus one, the first line's 1) and `"cookies": {"km_ai", "km_ni"}`, set
//! before the action (a new browser starts with them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::anon::{AnonIdSource, RandomIds};
use super::form::{Field, Form};
use super::visitor::{Effect, Visitor};
use crate::op::{Properties, Timestamp, Value};

/// One parsed line.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Which browser does it.
    pub browser: String,
    /// When (Unix seconds).
    #[serde(default)]
    pub at: Option<Timestamp>,
    /// Cookies to give the browser before the action.
    #[serde(default)]
    pub cookies: Option<Cookies>,
    /// A `_kmq.push` array.
    #[serde(default)]
    pub kmq: Option<Vec<Json>>,
    /// A page load (URL API).
    #[serde(default)]
    pub visit: Option<String>,
    /// A tracked form submission.
    #[serde(default)]
    pub submit: Option<Submit>,
    /// The browser's cookies are cleared.
    #[serde(default)]
    pub clear_cookies: Option<bool>,
}

/// A browser's cookies.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cookies {
    /// The anonymous ID (generated when missing).
    #[serde(default)]
    pub km_ai: Option<String>,
    /// The named ID.
    #[serde(default)]
    pub km_ni: Option<String>,
}

/// A tracked form submission.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// The event `trackSubmit` records.
    pub event: String,
    /// The form's fields, in document order.
    #[serde(default)]
    pub fields: Vec<Field>,
    /// Properties passed to `trackSubmit`.
    #[serde(default)]
    pub properties: BTreeMap<String, Json>,
}

/// What one line did: the browser's state after it, and what it sent.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Outcome {
    /// The line number (1-based).
    pub line: usize,
    /// The browser.
    pub browser: String,
    /// Cookie `km_ai` after the line.
    pub km_ai: String,
    /// Cookie `km_ni` after the line.
    pub km_ni: Option<String>,
    /// `KM.i()` after the line.
    pub current: String,
    /// The tracking requests sent, in order.
    pub requests: Vec<String>,
}

/// Parses one line; the error says what is wrong with it.
pub fn parse_line(text: &str) -> Result<Line, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("not a valid line: {e}"))?;
    let actions = [
        line.kmq.is_some(),
        line.visit.is_some(),
        line.submit.is_some(),
        line.clear_cookies.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() > 1 {
        return Err("a line has at most one action (kmq, visit, submit or clear_cookies)".into());
    }
    if line.browser.is_empty() {
        return Err("\"browser\" must not be empty".into());
    }
    Ok(line)
}

fn json_props(obj: &serde_json::Map<String, Json>) -> Result<Properties, String> {
    crate::op::Limits::default()
        .check_count(obj.len())
        .map_err(|e| e.to_string())?;
    let mut pairs = Vec::with_capacity(obj.len());
    // As km.js: a `_` name is a KISSmetrics parameter, never a property; it is skipped.
    for (k, v) in obj.iter().filter(|(k, _)| !k.starts_with('_')) {
        let v = match v {
            Json::String(s) => Value::Text(s.clone()),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::Bool(b) => Value::Text(b.to_string()),
            _ => {
                return Err(format!(
                    "property {k:?}: a value must be a string or a number"
                ));
            }
        };
        pairs.push((k.as_str(), v));
    }
    Properties::from_pairs(pairs).map_err(|e| e.to_string())
}

fn arg_str<'a>(cmd: &str, args: &'a [Json], i: usize, what: &str) -> Result<&'a str, String> {
    match args.get(i) {
        Some(Json::String(s)) => Ok(s),
        Some(other) => Err(format!("{cmd}: {what} must be a string, not {other}")),
        None => Err(format!("{cmd}: {what} is missing")),
    }
}

fn arg_props(cmd: &str, args: &[Json], i: usize) -> Result<Properties, String> {
    match args.get(i) {
        None | Some(Json::Null) => Ok(Properties::new()),
        Some(Json::Object(o)) => json_props(o),
        Some(other) => Err(format!("{cmd}: properties must be an object, not {other}")),
    }
}

/// Makes the anonymous-ID source of a new browser, given its name.
type IdFactory = Box<dyn FnMut(&str) -> Box<dyn AnonIdSource>>;

/// Runs lines over many browsers. New browsers get anonymous IDs from `ids(browser)`.
pub struct Simulator {
    key: String,
    browsers: BTreeMap<String, Visitor>,
    ids: IdFactory,
    last_at: Option<Timestamp>,
}

impl Simulator {
    /// Browsers with random anonymous IDs; requests carry API key `key`.
    pub fn new(key: &str) -> Simulator {
        Simulator::with_ids(key, |_| Box::new(RandomIds::new()))
    }

    /// Browsers whose anonymous IDs come from `ids(browser name)`.
    pub fn with_ids(key: &str, ids: impl FnMut(&str) -> Box<dyn AnonIdSource> + 'static) -> Self {
        Simulator {
            key: key.to_owned(),
            browsers: BTreeMap::new(),
            ids: Box::new(ids),
            last_at: None,
        }
    }

    /// The browser named `name`, if a line has used it.
    pub fn browser(&self, name: &str) -> Option<&Visitor> {
        self.browsers.get(name)
    }

    /// Applies one line (numbered `n` for the outcome). On error the browser's cookies are
    /// left as they were.
    pub fn apply(&mut self, n: usize, line: &Line) -> Result<(Outcome, Effect), String> {
        let at = line.at.unwrap_or_else(|| self.last_at.map_or(1, |t| t + 1));
        if !self.browsers.contains_key(&line.browser) {
            let ids = (self.ids)(&line.browser);
            let key = self.key.clone();
            self.browsers
                .insert(line.browser.clone(), Visitor::new(&key, BoxedIds(ids)));
        }
        let v = self
            .browsers
            .get_mut(&line.browser)
            .expect("inserted above");
        let saved = (v.km_ai().to_owned(), v.km_ni().map(str::to_owned));
        if let Some(c) = &line.cookies {
            v.set_cookies(c.km_ai.clone(), c.km_ni.clone());
        }
        let fx = run(v, line, at);
        let fx = match fx {
            Ok(fx) => fx,
            Err(e) => {
                v.set_cookies(Some(saved.0), saved.1);
                return Err(e);
            }
        };
        self.last_at = Some(at);
        Ok((
            Outcome {
                line: n,
                browser: line.browser.clone(),
                km_ai: v.km_ai().to_owned(),
                km_ni: v.km_ni().map(str::to_owned),
                current: v.current().to_owned(),
                requests: fx.requests.clone(),
            },
            fx,
        ))
    }
}

struct BoxedIds(Box<dyn AnonIdSource>);

impl AnonIdSource for BoxedIds {
    fn next_anon_id(&mut self) -> String {
        self.0.next_anon_id()
    }
}

fn run(v: &mut Visitor, line: &Line, at: Timestamp) -> Result<Effect, String> {
    let e = |r: crate::Result<Effect>| r.map_err(|e| e.to_string());
    if let Some(args) = &line.kmq {
        let cmd = match args.first() {
            Some(Json::String(s)) => s.as_str(),
            _ => return Err("kmq: the first element must be a command name".into()),
        };
        return match cmd {
            "identify" => match args.get(1) {
                None | Some(Json::Null) => e(v.identify(None, at)),
                Some(Json::String(s)) => e(v.identify(Some(s), at)),
                Some(Json::Number(n)) => e(v.identify(Some(&n.to_string()), at)),
                Some(other) => Err(format!("identify: the ID must be a string, not {other}")),
            },
            "alias" => {
                let a = arg_str(cmd, args, 1, "the first ID")?;
                let b = arg_str(cmd, args, 2, "the second ID")?;
                e(v.alias(a, b, at))
            }
            "record" => {
                let name = arg_str(cmd, args, 1, "the event name")?;
                let props = arg_props(cmd, args, 2)?;
                e(v.record(name, &props, at))
            }
            "set" => {
                let props = arg_props(cmd, args, 1)?;
                e(v.set(&props, at))
            }
            "clearIdentity" => Ok(v.clear_identity()),
            "trackSubmit" | "trackClick" => Err(format!(
                "{cmd} only binds a handler; use a \"submit\" line for a submitted form"
            )),
            other => Err(format!(
                "unknown command {other:?} (identify, alias, record, set, clearIdentity)"
            )),
        };
    }
    if let Some(url) = &line.visit {
        return e(v.visit(url, at));
    }
    if let Some(s) = &line.submit {
        let props = json_props(&s.properties.clone().into_iter().collect())?;
        let form = Form {
            fields: s.fields.clone(),
        };
        return e(v.track_submit(&s.event, &props, &form, at));
    }
    if line.clear_cookies == Some(true) {
        return Ok(v.clear_cookies());
    }
    Ok(Effect::default())
}
