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

/// Limits on one op's content, checked before anything is stored; past one, the op is refused
/// with [`Error::Limit`] naming it. Names are also limited to 255 characters (a fixed rule, as
/// for IDs). The defaults hold every legitimate KISSmetrics payload seen (a few dozen
/// properties, URLs and user agents of a few KB) with a wide margin, and bound what one hostile
/// op costs: 256 names of 255 characters and values of 8 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most properties one event or set may carry. Default = 256.
    pub max_properties: usize,
    /// Longest property value, in bytes of UTF-8 (a number is always short). Default = 8,192.
    pub max_value_bytes: usize,
    /// Most property names one ID keeps. An op that brings new names to an ID holding this
    /// many is stored, but those names are not kept on the ID
    /// ([`Outcome::PropertiesRefused`]); names it has are still updated. Every op on an ID
    /// rewrites its record, so this bounds what an op costs. Default = 1,024.
    pub max_properties_per_id: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_properties: 256,
            max_value_bytes: 8192,
            max_properties_per_id: 1024,
        }
    }
}

impl Limits {
    /// Checks the number of properties before they are parsed one by one (a cheap refusal of a
    /// request carrying far too many).
    ///
    /// # Errors
    /// [`Error::Limit`] when `count` is past [`max_properties`](Self::max_properties).
    pub fn check_count(&self, count: usize) -> Result<()> {
        if count > self.max_properties {
            return Err(Error::Limit {
                what: "properties in one op",
                found: count,
                max: self.max_properties,
                limit: "max_properties",
            });
        }
        Ok(())
    }

    fn check_value(&self, v: &Value) -> Result<()> {
        if let Value::Text(t) = v
            && t.len() > self.max_value_bytes
        {
            return Err(Error::Limit {
                what: "bytes in the value of a property",
                found: t.len(),
                max: self.max_value_bytes,
                limit: "max_value_bytes",
            });
        }
        Ok(())
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

    /// Builds from pairs in order, as repeated [`insert`](Self::insert)s would, in time linear
    /// in the number of pairs (one lower-cased copy of each name; no allocation per
    /// comparison). The parsers of requests and files use this.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name (the first one in order).
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self>
    where
        N: Into<String>,
        V: Into<Value>,
    {
        // Few names (the usual event) are compared in place; past `LINEAR`, through a map of
        // their folded forms.
        const LINEAR: usize = 16;
        let pairs = pairs.into_iter();
        let mut out: Vec<(String, Value)> = Vec::with_capacity(pairs.size_hint().0);
        let mut index: rustc_hash::FxHashMap<String, usize> = rustc_hash::FxHashMap::default();
        for (name, value) in pairs {
            let name = name.into();
            check_property_name(&name)?;
            if out.len() < LINEAR {
                match out.iter().position(|(n, _)| eq_ignore_case(n, &name)) {
                    Some(i) => out[i].1 = value.into(),
                    None => out.push((name, value.into())),
                }
                continue;
            }
            if index.is_empty() {
                for (i, (n, _)) in out.iter().enumerate() {
                    index.insert(fold_case(n).into_owned(), i);
                }
            }
            match index.entry(fold_case(&name).into_owned()) {
                std::collections::hash_map::Entry::Occupied(e) => out[*e.get()].1 = value.into(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push((name, value.into()));
                }
            }
        }
        Ok(Properties(out))
    }

    /// Adds or replaces `name`. Linear in the number of entries (no allocation per
    /// comparison); to build from many pairs, [`from_pairs`](Self::from_pairs) is linear in
    /// total.
    ///
    /// # Errors
    /// [`Error::InvalidName`] when `name` is empty, longer than 255 characters, or holds a
    /// control character.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let name = name.into();
        check_property_name(&name)?;
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| eq_ignore_case(n, &name)) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
        Ok(())
    }

    /// The properties as one JSON object, names in sorted order: the `properties` column of
    /// `export events` and of the Parquet files.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(16 + 24 * self.0.len());
        self.write_json(&mut out);
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// Appends [`to_json`](Self::to_json)'s text to `out` (no allocation of its own but the
    /// order of the names).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut by_name: Vec<&(String, Value)> = self.0.iter().collect();
        by_name.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.push(b'{');
        for (i, (k, v)) in by_name.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, k).expect("writing to memory");
            out.push(b':');
            serde_json::to_writer(&mut *out, v).expect("writing to memory");
        }
        out.push(b'}');
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

    pub(crate) fn validate(&self, limits: &Limits) -> Result<()> {
        limits.check_count(self.0.len())?;
        for (n, v) in &self.0 {
            check_property_name(n)?;
            limits.check_value(v)?;
        }
        Ok(())
    }

    /// [`validate`](Self::validate) of properties whose names were checked when they were
    /// built ([`from_pairs`](Self::from_pairs)): the count and the values.
    pub(crate) fn validate_values(&self, limits: &Limits) -> Result<()> {
        limits.check_count(self.0.len())?;
        self.0.iter().try_for_each(|(_, v)| limits.check_value(v))
    }
}

/// `s` lower-cased exactly as [`str::to_lowercase`] does, borrowed when it already is (the
/// common case: ASCII names in lower case cost no allocation).
pub(crate) fn fold_case(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(s.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(s)
        }
    } else {
        std::borrow::Cow::Owned(s.to_lowercase())
    }
}

/// Compares `a` and `b` as their [`str::to_lowercase`] forms compare, without allocating
/// unless a name holds a capital sigma (whose lower case depends on its neighbours).
pub(crate) fn cmp_ignore_case(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        let (x, y) = (a.as_bytes(), b.as_bytes());
        return x
            .iter()
            .map(u8::to_ascii_lowercase)
            .cmp(y.iter().map(u8::to_ascii_lowercase));
    }
    if a.contains('Σ') || b.contains('Σ') {
        return a.to_lowercase().cmp(&b.to_lowercase());
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .cmp(b.chars().flat_map(char::to_lowercase))
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a == b || cmp_ignore_case(a, b).is_eq()
}

/// Checks a property name: a name ([`check_name`]) that does not start with `_`. Names with `_`
/// are KISSmetrics' own parameters (`_p`, `_n`, `_t`, `_k`, `_d`, `_p2`, ...): as a property
/// one would be sent, exported and imported as the parameter it shadows.
pub(crate) fn check_property_name(s: &str) -> Result<()> {
    check_name("property name", s)?;
    if s.starts_with('_') {
        return Err(Error::InvalidName {
            what: "property name",
            shown: shown(s),
            rule: "a name starting with _ is reserved for KISSmetrics parameters (_p, _n, _t, ...)",
        });
    }
    Ok(())
}

/// Checks an event or property name: 1 to 255 characters, no control characters.
pub(crate) fn check_name(what: &'static str, s: &str) -> Result<()> {
    let rule = if s.is_empty() {
        Some("a name must not be empty")
    } else if s.len() > 255 && s.chars().count() > 255 {
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

    /// Checks the parts that the type system does not (event and property names), and the
    /// default [`Limits`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad event or property name; [`Error::Limit`] past a limit.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(&Limits::default())
    }

    /// As [`validate`](Self::validate), with the given limits.
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn validate_with(&self, limits: &Limits) -> Result<()> {
        match self {
            Op::Alias { .. } => Ok(()),
            Op::Record {
                event, properties, ..
            } => {
                check_name("event name", event)?;
                properties.validate(limits)
            }
            Op::Set { properties, .. } => properties.validate(limits),
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
    /// An endpoint was forgotten (`forget`) and is suppressed: data naming it is dropped
    /// until `unsuppress`. The ID is not named, here or in the refusal log.
    Suppressed,
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
            RefusalReason::Suppressed => write!(
                f,
                "an ID of the link was forgotten and is suppressed (idgraph unsuppress lifts it)"
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
    /// An [`Op::Record`] or [`Op::Set`] was stored, but `refused` of its property names, new
    /// to the ID, were not kept on the ID: it already holds `max` names
    /// ([`Limits::max_properties_per_id`]). An event keeps all its properties.
    PropertiesRefused {
        /// Names not kept.
        refused: usize,
        /// The limit.
        max: usize,
    },
    /// An [`Op::Record`] or [`Op::Set`] named a forgotten, suppressed ID: nothing was stored.
    Suppressed,
}

impl Outcome {
    /// Why part of the op was not kept, for humans (`None` when all of it was).
    pub fn refusal(&self) -> Option<String> {
        match self {
            Outcome::Alias(AliasOutcome::Refused(why)) => Some(why.to_string()),
            Outcome::Suppressed => Some(
                "the ID was forgotten and is suppressed: nothing stored (idgraph unsuppress \
                 lifts it)"
                    .into(),
            ),
            Outcome::PropertiesRefused { refused, max } => Some(format!(
                "{refused} property names not kept on the ID: it holds {max}, the most allowed \
                 (max_properties_per_id)"
            )),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Names from a few letters whose case folding is interesting: ASCII, `ß`, Greek sigma in
    /// its three forms, the Kelvin sign (lower-cases to `k`), the dotted capital I.
    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop::sample::select(vec![
                "a", "A", "k", "K", "\u{212A}", "ß", "Σ", "σ", "ς", "İ", "i",
            ]),
            1..5,
        )
        .prop_map(|v| v.concat())
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Value::Float),
            "[a-z\"\\\\\u{0}-\u{1f}é☃]{0,8}".prop_map(Value::Text),
        ]
    }

    proptest! {
        /// `to_json` writes what serde_json's own map of the values prints (the export's form
        /// before it was written directly): names sorted, the same escapes and numbers.
        #[test]
        fn to_json_is_serde_jsons_map(pairs in proptest::collection::vec(
            ("[a-zA-Z\"\\\\é☃ ]{1,6}", value()), 0..8)) {
            let mut p = Properties::new();
            for (k, v) in pairs {
                p.insert(k, v).unwrap();
            }
            let mut m = serde_json::Map::new();
            for (k, v) in p.iter() {
                m.insert(k.to_owned(), serde_json::to_value(v).unwrap());
            }
            prop_assert_eq!(p.to_json(), serde_json::Value::Object(m).to_string());
        }
    }

    proptest! {
        /// The comparison used for sorted property maps orders exactly as the lower-cased
        /// strings do (stored maps were sorted that way).
        #[test]
        fn cmp_ignore_case_orders_as_to_lowercase(a in name(), b in name()) {
            prop_assert_eq!(cmp_ignore_case(&a, &b), a.to_lowercase().cmp(&b.to_lowercase()));
            prop_assert_eq!(fold_case(&a).into_owned(), a.to_lowercase());
        }

        /// `from_pairs` (linear) builds what repeated `insert`s of the reference model build:
        /// first spelling kept, last value wins, order of first appearance.
        #[test]
        fn from_pairs_equals_the_reference_model(pairs in proptest::collection::vec((name(), 0i64..5), 0..40)) {
            let mut model: Vec<(String, Value)> = Vec::new();
            for (n, v) in &pairs {
                match model.iter_mut().find(|(m, _)| m.to_lowercase() == n.to_lowercase()) {
                    Some(slot) => slot.1 = Value::Int(*v),
                    None => model.push((n.clone(), Value::Int(*v))),
                }
            }
            let built = Properties::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), *v))).unwrap();
            let mut inserted = Properties::new();
            for (n, v) in &pairs {
                inserted.insert(n.as_str(), *v).unwrap();
            }
            prop_assert_eq!(&built, &Properties::from_vec_unchecked(model));
            prop_assert_eq!(built, inserted);
        }
    }

    #[test]
    fn limits_name_themselves_and_bound_count_and_value_size() {
        let limits = Limits::default();
        let many = Properties::from_pairs((0..257).map(|i| (format!("p{i}"), 1i64))).unwrap();
        let op = Op::set(Identity::new("x").unwrap(), many, 1);
        let e = op.validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "257 properties in one op, more than the limit of 256 (max_properties)"
        );
        let big = Properties::new().with("note", "v".repeat(8193)).unwrap();
        let op = Op::record(Identity::new("x").unwrap(), "E", big, 1);
        assert!(
            op.validate()
                .unwrap_err()
                .to_string()
                .contains("(max_value_bytes)")
        );
        let loose = Limits {
            max_value_bytes: 10_000,
            ..limits
        };
        assert!(op.validate_with(&loose).is_ok());
    }

    #[test]
    fn from_pairs_reports_the_first_bad_name() {
        let e = Properties::from_pairs([("ok", 1i64), ("", 2), ("\u{7}", 3)]).unwrap_err();
        assert!(e.to_string().contains("must not be empty"), "{e}");
    }

    #[test]
    fn reserved_names_are_never_properties() {
        for name in ["_p", "_n", "_t", "_k", "_d", "_p2", "_anything"] {
            let e = Properties::from_pairs([(name, "x")])
                .unwrap_err()
                .to_string();
            assert!(e.contains("reserved for KISSmetrics parameters"), "{e}");
            assert!(Properties::new().insert(name, "x").is_err());
        }
        let smuggled = Op::set(
            Identity::new("a").unwrap(),
            Properties(vec![("_p".into(), Value::Text("b".into()))]),
            0,
        );
        assert!(smuggled.validate().is_err());
        assert!(Properties::from_pairs([("p_", "x"), ("a_p", "y")]).is_ok());
    }
}
