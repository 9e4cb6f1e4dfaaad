//! [`Op`], the one currency every source produces, and what the store answers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, shown};
use crate::id::Identity;

/// Unix time in whole seconds.
pub type Timestamp = i64;

/// The current Unix time in whole seconds (0 for a clock set before 1970): the time of an op
/// that does not carry one.
pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            Timestamp::try_from(d.as_secs()).unwrap_or(Timestamp::MAX)
        })
}

/// Where an alias link came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// A tracker's `identify` on an anonymous browser (named ID ~ `km_ai`).
    Identify,
    /// An explicit `alias(a, b)` call.
    Alias,
    /// An identity field of a tracked form (`trackSubmit`).
    Form,
    /// A URL API link carrying `kmi` / `km_i`.
    Url,
    /// A data file (KISSmetrics export, CSV).
    Import,
    /// The HTTP tracking API (`/a`) or a direct library call.
    Api,
}

impl Cause {
    /// The lower-case name used in output (`identify`, `alias`, `form`, `url`, `import`, `api`).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Identify => "identify",
            Cause::Alias => "alias",
            Cause::Form => "form",
            Cause::Url => "url",
            Cause::Import => "import",
            Cause::Api => "api",
        }
    }

    /// Whether the source says the link's second ID (`b`) is the browser's anonymous ID.
    pub fn marks_b_anonymous(self) -> bool {
        matches!(self, Cause::Identify | Cause::Form | Cause::Url)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A property value: text or a number, as KISSmetrics carries them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Text (case-sensitive).
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

/// Named property values in the order given. Names are case-insensitive: a later entry whose
/// name equals an earlier one (ignoring case) replaces its value and keeps the first spelling.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties(Vec<(String, Value)>);

impl Serialize for Properties {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (n, v) in &self.0 {
            m.serialize_entry(n, v)?;
        }
        m.end()
    }
}

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Properties(Vec::new())
    }

    /// Adds or replaces `name`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] when `name` is empty, longer than 255 characters, or holds a
    /// control character.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let name = name.into();
        check_name("property name", &name)?;
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| eq_ignore_case(n, &name)) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
        Ok(())
    }

    /// Builder form of [`insert`](Self::insert).
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Result<Self> {
        self.insert(name, value)?;
        Ok(self)
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(n, _)| eq_ignore_case(n, name))
            .map(|(_, v)| v)
    }

    /// Builds from pairs without validating names (for data read back from the store).
    pub(crate) fn from_vec_unchecked(v: Vec<(String, Value)>) -> Self {
        Properties(v)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (n, _) in &self.0 {
            check_name("property name", n)?;
        }
        Ok(())
    }
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// Checks an event or property name: 1 to 255 characters, no control characters.
pub(crate) fn check_name(what: &'static str, s: &str) -> Result<()> {
    let rule = if s.is_empty() {
        Some("a name must not be empty")
    } else if s.chars().count() > 255 {
        Some("a name must be at most 255 characters long")
    } else if s.chars().any(char::is_control) {
        Some("a name must not contain control characters")
    } else {
        None
    };
    match rule {
        Some(rule) => Err(Error::InvalidName {
            what,
            shown: shown(s),
            rule,
        }),
        None => Ok(()),
    }
}

/// One change to the store. Every source (tracker rules, HTTP API, files) produces these.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `a` and `b` are the same person.
    Alias {
        /// One ID. For [`Cause::Identify`], [`Cause::Form`] and [`Cause::Url`] the named ID.
        a: Identity,
        /// The other ID. For [`Cause::Identify`], [`Cause::Form`] and [`Cause::Url`] the browser's
        /// anonymous ID, which the store then marks anonymous.
        b: Identity,
        /// When the link was made.
        at: Timestamp,
        /// Where it came from.
        cause: Cause,
        /// Where exactly, when known: a file and line, a request. Kept with the edge.
        source: Option<String>,
    },
    /// `id` did `event` at `at`; the properties are also set on the person.
    Record {
        /// Who did it.
        id: Identity,
        /// The event name (case-insensitive; 1 to 255 characters).
        event: String,
        /// The event's properties.
        properties: Properties,
        /// When.
        at: Timestamp,
    },
    /// Set properties on `id`'s person.
    Set {
        /// On whom.
        id: Identity,
        /// The values.
        properties: Properties,
        /// When (later times win; equal times: the one applied last).
        at: Timestamp,
    },
}

impl Op {
    /// An alias link with no source detail.
    pub fn alias(a: Identity, b: Identity, at: Timestamp, cause: Cause) -> Op {
        Op::Alias {
            a,
            b,
            at,
            cause,
            source: None,
        }
    }

    /// An event.
    pub fn record(
        id: Identity,
        event: impl Into<String>,
        properties: Properties,
        at: Timestamp,
    ) -> Op {
        Op::Record {
            id,
            event: event.into(),
            properties,
            at,
        }
    }

    /// A property change.
    pub fn set(id: Identity, properties: Properties, at: Timestamp) -> Op {
        Op::Set { id, properties, at }
    }

    /// Checks the parts that the type system does not (event and property names).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad event or property name.
    pub fn validate(&self) -> Result<()> {
        match self {
            Op::Alias { .. } => Ok(()),
            Op::Record {
                event, properties, ..
            } => {
                check_name("event name", event)?;
                properties.validate()
            }
            Op::Set { properties, .. } => properties.validate(),
        }
    }
}

/// Why a guardrail refused a merge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// An endpoint is on the blocked-ID list.
    BlockedId {
        /// The blocked ID.
        id: String,
    },
    /// The merged person would have more IDs than allowed.
    TooLarge {
        /// The size the merge would have produced.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::BlockedId { id } => write!(
                f,
                "{id:?} is a blocked ID (it would squish unrelated people into one)"
            ),
            RefusalReason::TooLarge { size, max } => write!(
                f,
                "the merged person would have {size} IDs, more than the maximum of {max}"
            ),
        }
    }
}

/// What an alias did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AliasOutcome {
    /// Two persons became one, now of `size` IDs.
    Joined {
        /// IDs in the merged person.
        size: u64,
    },
    /// The two IDs already were one person (also `alias(a, a)`).
    AlreadySame,
    /// A guardrail refused the merge; nothing changed but the refusal log.
    Refused(RefusalReason),
}

/// What applying one [`Op`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The outcome of an [`Op::Alias`].
    Alias(AliasOutcome),
    /// An [`Op::Record`] or [`Op::Set`] was stored.
    Stored,
}

/// A person as [`Store::resolve`](crate::Store::resolve) shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Person {
    /// The canonical ID: the named ID the store saw first, else the anonymous ID it saw first.
    pub person: String,
    /// All of the person's IDs, in the order the store first saw them.
    pub ids: Vec<String>,
}

/// One alias link between two IDs of a person, as [`Store::links`](crate::Store::links)
/// returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    /// One ID (the first argument of the alias that made the link).
    pub a: String,
    /// The other ID.
    pub b: String,
    /// Where the link came from.
    pub cause: Cause,
    /// When it was made.
    pub at: Timestamp,
    /// Where exactly, when known (a file and line, a request).
    pub source: Option<String>,
}

/// One stored event, as [`Store::events`](crate::Store::events) returns it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// The ID it was recorded under.
    pub id: String,
    /// The event name as stored.
    pub event: String,
    /// When.
    pub at: Timestamp,
    /// Its properties.
    pub properties: Properties,
}

/// One property of a person, as [`Store::properties`](crate::Store::properties) returns it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Property {
    /// The name as first spelled.
    pub name: String,
    /// The current value.
    pub value: Value,
    /// When it was set.
    pub at: Timestamp,
    /// The ID it was set under.
    pub id: String,
}
