//! [`Visitor`]: one browser's cookies and the tracker commands that change them.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::anon::AnonIdSource;
use super::form::{self, Form};
use super::url;
use crate::error::Result;
use crate::id::Identity;
use crate::op::{Cause, Op, Properties, Timestamp, Value};

/// What a command does: the ops for the store and the tracking requests a KISSmetrics tracker
/// sends for it, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effect {
    /// Ops for the store.
    pub ops: Vec<Op>,
    /// Request paths with their query strings (`/a?...`, `/e?...`, `/s?...`).
    pub requests: Vec<String>,
}

impl Effect {
    fn then(&mut self, other: Effect) {
        self.ops.extend(other.ops);
        self.requests.extend(other.requests);
    }
}

/// JavaScript's `encodeURIComponent` set: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Encodes a query-string component as JavaScript's `encodeURIComponent` does.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Whether `identify` treats this value as "no ID": absent, empty, or one of the strings
/// `null`, `nil`, `'null'`, `'nil'`, `"null"`, `"nil"`, `''`, `""`.
pub fn is_null_identity(id: Option<&str>) -> bool {
    match id {
        None => true,
        Some(s) => matches!(
            s,
            "" | "null" | "nil" | "'null'" | "'nil'" | "\"null\"" | "\"nil\"" | "''" | "\"\""
        ),
    }
}

/// One browser, as a KISSmetrics tracker sees it: cookies `km_ai` (anonymous ID) and `km_ni`
/// (named ID), and the commands of `_kmq`.
///
/// ```
/// use idgraph::rules::{ListIds, Visitor};
/// # fn main() -> idgraph::Result<()> {
/// let mut v = Visitor::new("demo", ListIds::new(vec!["y75Fe33597qBqkR4obZZYV+wF3Y=".into()]));
/// assert_eq!(v.current(), "y75Fe33597qBqkR4obZZYV+wF3Y="); // KM.i(): the anonymous ID
/// let fx = v.identify(Some("foo"), 10)?;
/// assert_eq!(fx.requests, ["/a?_n=foo&_p=y75Fe33597qBqkR4obZZYV%2BwF3Y%3D&_k=demo&_t=10"]);
/// assert_eq!(v.current(), "foo");
/// assert!(v.identify(Some("bar"), 11)?.requests.is_empty()); // identified: switch, no alias
/// # Ok(()) }
/// ```
pub struct Visitor {
    km_ai: String,
    km_ni: Option<String>,
    key: String,
    track_forms: bool,
    ids: Box<dyn AnonIdSource>,
}

impl std::fmt::Debug for Visitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Visitor")
            .field("km_ai", &self.km_ai)
            .field("km_ni", &self.km_ni)
            .finish()
    }
}

impl Visitor {
    /// A browser arriving with no cookies: an anonymous ID is generated into `km_ai`.
    /// `key` is the API key its requests carry (`_k`).
    pub fn new(key: &str, mut ids: impl AnonIdSource + 'static) -> Visitor {
        Visitor {
            km_ai: ids.next_anon_id(),
            km_ni: None,
            key: key.to_owned(),
            track_forms: true,
            ids: Box::new(ids),
        }
    }

    /// Replaces the cookies (a browser arriving with these); a missing, empty or invalid
    /// `km_ai` is generated anew (as km.js does: a request under it would be refused).
    pub fn set_cookies(&mut self, km_ai: Option<String>, km_ni: Option<String>) {
        self.km_ai = km_ai
            .filter(|a| Identity::new(a).is_ok())
            .unwrap_or_else(|| self.ids.next_anon_id());
        self.km_ni = km_ni;
    }

    /// Form-field tracking (default on, as in KISSmetrics).
    pub fn set_form_tracking(&mut self, on: bool) {
        self.track_forms = on;
    }

    /// The `km_ai` cookie.
    pub fn km_ai(&self) -> &str {
        &self.km_ai
    }

    /// The `km_ni` cookie.
    pub fn km_ni(&self) -> Option<&str> {
        self.km_ni.as_deref()
    }

    /// Whether the browser has a named ID.
    pub fn is_identified(&self) -> bool {
        self.km_ni.is_some()
    }

    /// `KM.i()`: the named ID when identified, else the anonymous ID.
    pub fn current(&self) -> &str {
        self.km_ni.as_deref().unwrap_or(&self.km_ai)
    }

    /// `/a?_n=<b>&_p=<a>&_k=<key>&_t=<at>`, the parameter order of the KISSmetrics tracker.
    fn alias_request(&self, a: &str, b: &str, at: Timestamp) -> String {
        format!(
            "/a?_n={}&_p={}&_k={}&_t={at}",
            encode_component(b),
            encode_component(a),
            encode_component(&self.key)
        )
    }

    /// `_k=<key>&_p=<id>&_t=<at>`, the end of `/e` and `/s` requests.
    fn tail(&self, id: &str, at: Timestamp) -> String {
        format!(
            "_k={}&_p={}&_t={at}",
            encode_component(&self.key),
            encode_component(id)
        )
    }

    /// `identify(id)`. Anonymous: `km_ni = id` and id ~ `km_ai` (one `/a` request).
    /// Identified: switch to `id`, no alias, nothing sent. A null-like `id` (see
    /// [`is_null_identity`]) does nothing when anonymous and logs out when identified.
    ///
    /// # Errors
    /// [`Error::InvalidId`](crate::Error::InvalidId) for an invalid ID; nothing changes.
    pub fn identify(&mut self, id: Option<&str>, at: Timestamp) -> Result<Effect> {
        self.identify_by(id, at, Cause::Identify)
    }

    fn identify_by(&mut self, id: Option<&str>, at: Timestamp, cause: Cause) -> Result<Effect> {
        if is_null_identity(id) {
            return Ok(self.clear_identity());
        }
        let named = Identity::new(id.unwrap_or_default())?;
        let mut fx = Effect::default();
        if self.km_ni.as_deref() == Some(named.as_str()) {
            return Ok(fx);
        }
        if self.km_ni.is_none() && named.as_str() != self.km_ai {
            let anon = Identity::new(&self.km_ai)?;
            fx.requests
                .push(self.alias_request(anon.as_str(), named.as_str(), at));
            fx.ops.push(Op::alias(named.clone(), anon, at, cause));
        }
        self.km_ni = Some(named.as_str().to_owned());
        Ok(fx)
    }

    /// `alias(a, b)`: links the two IDs; cookies unchanged; nothing sent when `a == b`.
    ///
    /// # Errors
    /// [`Error::InvalidId`](crate::Error::InvalidId) for an invalid ID.
    pub fn alias(&mut self, a: &str, b: &str, at: Timestamp) -> Result<Effect> {
        let (a, b) = (Identity::new(a)?, Identity::new(b)?);
        let mut fx = Effect::default();
        if a != b {
            fx.requests
                .push(self.alias_request(a.as_str(), b.as_str(), at));
            fx.ops.push(Op::alias(a, b, at, Cause::Alias));
        }
        Ok(fx)
    }

    /// `record(event, properties)` under the current ID.
    ///
    /// # Errors
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad event name.
    pub fn record(&mut self, event: &str, props: &Properties, at: Timestamp) -> Result<Effect> {
        let who = Identity::new(self.current())?;
        let op = Op::record(who.clone(), event, props.clone(), at);
        op.validate()?;
        let request = format!(
            "/e?{}_n={}&{}",
            query_props(props),
            encode_component(event),
            self.tail(who.as_str(), at)
        );
        Ok(Effect {
            ops: vec![op],
            requests: vec![request],
        })
    }

    /// `set(properties)` on the current ID; nothing is sent for no properties.
    ///
    /// # Errors
    /// [`Error::InvalidId`](crate::Error::InvalidId) if the current ID is invalid.
    pub fn set(&mut self, props: &Properties, at: Timestamp) -> Result<Effect> {
        if props.is_empty() {
            return Ok(Effect::default());
        }
        let who = Identity::new(self.current())?;
        let request = format!("/s?{}{}", query_props(props), self.tail(who.as_str(), at));
        Ok(Effect {
            ops: vec![Op::set(who, props.clone(), at)],
            requests: vec![request],
        })
    }

    /// `clearIdentity()`: identified, `km_ni` is removed and a new anonymous ID generated (the
    /// old IDs are not linked to it); anonymous, nothing happens.
    pub fn clear_identity(&mut self) -> Effect {
        if self.km_ni.take().is_some() {
            self.km_ai = self.ids.next_anon_id();
        }
        Effect::default()
    }

    /// The browser's cookies are cleared; on its next page it arrives as a new visitor with a
    /// new anonymous ID.
    pub fn clear_cookies(&mut self) -> Effect {
        self.km_ni = None;
        self.km_ai = self.ids.next_anon_id();
        Effect::default()
    }

    /// `trackSubmit`: records `event` with the form's captured fields as properties (they
    /// override `props` of the same name). With form tracking on, an anonymous visitor is first
    /// identified by the first captured identity field with a value; an identified one is not.
    ///
    /// # Errors
    /// As [`identify`](Self::identify) and [`record`](Self::record).
    pub fn track_submit(
        &mut self,
        event: &str,
        props: &Properties,
        form: &Form,
        at: Timestamp,
    ) -> Result<Effect> {
        crate::op::check_name("event name", event)?; // before anything changes
        let mut fx = Effect::default();
        let props = if self.track_forms {
            let (captured, identity) = form::capture(form);
            // A value that is not a valid ID (256 characters, a control character) does not
            // identify; the form is still recorded, as km.js records it.
            if !self.is_identified()
                && let Some(id) = identity
                && Identity::new(&id).is_ok()
            {
                fx.then(self.identify_by(Some(&id), at, Cause::Form)?);
            }
            form::merge(props, &captured)
        } else {
            props.clone()
        };
        fx.then(self.record(event, &props, at)?);
        Ok(fx)
    }

    /// A page load of `url`: the URL API. `kmi` / `km_i` is applied first, exactly like
    /// `identify`; then `kme` / `km_e` is recorded with the other `km_*` parameters as its
    /// properties, or, without an event, those properties are set.
    ///
    /// # Errors
    /// As [`identify`](Self::identify) and [`record`](Self::record).
    pub fn visit(&mut self, url: &str, at: Timestamp) -> Result<Effect> {
        let c = url::parse(url);
        // Everything is checked before anything changes: a visit that fails changes no
        // cookie and sends nothing. An empty `kme` is no event.
        let event = c.event.filter(|e| !e.is_empty());
        if let Some(e) = &event {
            crate::op::check_name("event name", e)?;
        }
        if let Some(id) = &c.identity
            && !is_null_identity(Some(id))
        {
            Identity::new(id)?;
        }
        // `km__p=x` would be a property `_p`: reserved and invalid names are skipped, as
        // km.js skips them.
        let props = Properties::from_pairs(
            c.properties
                .iter()
                .filter(|(n, _)| crate::op::check_property_name(n).is_ok())
                .map(|(n, v)| (n.as_str(), Value::Text(v.clone()))),
        )?;
        props.validate(&crate::op::Limits::default())?;
        let mut fx = Effect::default();
        if let Some(id) = &c.identity {
            fx.then(self.identify_by(Some(id), at, Cause::Url)?);
        }
        match &event {
            Some(e) => fx.then(self.record(e, &props, at)?),
            None => fx.then(self.set(&props, at)?),
        }
        Ok(fx)
    }
}

/// `name=value&` for each property, in order.
fn query_props(props: &Properties) -> String {
    let mut q = String::new();
    for (n, v) in props.iter() {
        q.push_str(&encode_component(n));
        q.push('=');
        q.push_str(&encode_component(&v.to_string()));
        q.push('&');
    }
    q
}
