//! Validated IDs ([`Identity`]) and the internal node number ([`NodeId`]).

use std::fmt;

use crate::error::{Error, Result, shown};

/// Longest ID accepted, in characters (Unicode scalar values, not bytes).
pub const MAX_ID_CHARS: usize = 255;

/// A validated visitor ID: 1 to 255 characters, none of them a control character.
///
/// IDs are compared byte for byte: case-sensitive and never trimmed, so `Foo`, `foo` and
/// ` foo` are three different IDs.
///
/// ```
/// use idgraph::Identity;
/// assert!(Identity::new("alice@example.com").is_ok());
/// assert!(Identity::new("").is_err());
/// assert!(Identity::new("tab\there").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Identity(Box<str>);

impl Identity {
    /// Validates `s` as an ID.
    ///
    /// # Errors
    /// [`Error::InvalidId`] naming the rule that `s` broke: empty, longer than 255 characters,
    /// or holding a control character (tab, newline, NUL, ...).
    pub fn new(s: impl AsRef<str>) -> Result<Self> {
        let s = s.as_ref();
        check_id(s)?;
        Ok(Identity(s.into()))
    }

    /// The ID as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the ID has the KISSmetrics anonymous format: standard base64 of a 20-byte digest,
    /// exactly 28 characters ending in one `=` (e.g. `y75Fe33597qBqkR4obZZYV+wF3Y=`).
    pub fn is_kissmetrics_anonymous(&self) -> bool {
        is_kissmetrics_anonymous(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Identity::new(s).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn check_id(s: &str) -> Result<()> {
    let rule = if s.is_empty() {
        Some("an ID must not be empty")
    } else if s.chars().count() > MAX_ID_CHARS {
        Some("an ID must be at most 255 characters long")
    } else if s.chars().any(char::is_control) {
        Some("an ID must not contain control characters (tab, newline, NUL, ...)")
    } else {
        None
    };
    match rule {
        Some(rule) => Err(Error::InvalidId {
            shown: shown(s),
            rule,
        }),
        None => Ok(()),
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl AsRef<str> for Identity {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Identity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Identity::new(s)
    }
}

impl TryFrom<&str> for Identity {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Identity::new(s)
    }
}

impl TryFrom<String> for Identity {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        check_id(&s)?;
        Ok(Identity(s.into_boxed_str()))
    }
}

/// Whether `s` has the KISSmetrics anonymous-ID format (see
/// [`Identity::is_kissmetrics_anonymous`]).
pub fn is_kissmetrics_anonymous(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 28
        && b[27] == b'='
        && b[..27]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        // 20 bytes encode to 27 base64 digits whose last one carries 2 padding bits (zero).
        && matches!(b[26], b'A' | b'E' | b'I' | b'M' | b'Q' | b'U' | b'Y' | b'c' | b'g' | b'k' | b'o' | b's' | b'w' | b'0' | b'4' | b'8')
}

/// The values refused as alias endpoints by default: each would squish many people into one.
/// Compared case-insensitively, also when wrapped in quotes (`'null'`, `"guest"`).
pub const DEFAULT_BLOCKED_IDS: &[&str] = &[
    "",
    "null",
    "nil",
    "undefined",
    "anonymous",
    "guest",
    "0",
    "-1",
    "none",
    "[object object]",
    "nan",
    "true",
    "false",
    "unknown",
];

/// A blocked-ID list, normalized as it is compared ([`blocked_key`]), and the rule that
/// applies it: the store's planner and `ingest::arrow::parse_lines` ask it the same question.
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockedIds(rustc_hash::FxHashSet<String>);

impl BlockedIds {
    pub(crate) fn new<S: AsRef<str>>(ids: impl IntoIterator<Item = S>) -> Self {
        BlockedIds(ids.into_iter().map(|s| blocked_key(s.as_ref())).collect())
    }

    /// The endpoint that refuses an alias of `a` and `b`: the first of them on the list (`a`
    /// asked first). None for an alias of an ID to itself: it merges nothing, so it refuses
    /// nothing.
    pub(crate) fn refusing<'a>(&self, a: &'a Identity, b: &'a Identity) -> Option<&'a Identity> {
        if a == b {
            return None;
        }
        [a, b]
            .into_iter()
            .find(|x| self.0.contains(&blocked_key(x.as_str())))
    }
}

/// Normalizes an ID for the blocked-ID comparison: surrounding quotes removed (repeatedly),
/// lower-cased.
pub(crate) fn blocked_key(s: &str) -> String {
    let mut t = s.trim();
    loop {
        let b = t.as_bytes();
        if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'' || b[0] == b'`') && b[b.len() - 1] == b[0]
        {
            t = t[1..t.len() - 1].trim();
        } else {
            break;
        }
    }
    t.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_named() {
        let err = |s: &str| Identity::new(s).unwrap_err().to_string();
        assert!(err("").contains("must not be empty"));
        assert!(err(&"x".repeat(256)).contains("at most 255"));
        assert!(err("a\nb").contains("control characters"));
        assert!(err("\u{7f}").contains("control characters"));
        // 255 multi-byte characters are fine: the limit counts characters, not bytes.
        assert!(Identity::new("é".repeat(255)).is_ok());
        assert!(Identity::new("é".repeat(256)).is_err());
        // not trimmed, case-sensitive
        assert_ne!(Identity::new(" a").unwrap(), Identity::new("a").unwrap());
        assert_ne!(Identity::new("A").unwrap(), Identity::new("a").unwrap());
    }

    #[test]
    fn anonymous_format() {
        assert!(is_kissmetrics_anonymous("y75Fe33597qBqkR4obZZYV+wF3Y="));
        assert!(!is_kissmetrics_anonymous("y75Fe33597qBqkR4obZZYV+wF3Y"));
        assert!(!is_kissmetrics_anonymous("y75Fe33597qBqkR4obZZYV+wF3Z="));
        assert!(!is_kissmetrics_anonymous("alice@example.com"));
    }

    #[test]
    fn the_first_blocked_endpoint_refuses_an_alias_but_not_a_self_alias() {
        let list = BlockedIds::new(["Guest", "'null'"]);
        let id = |s: &str| Identity::new(s).unwrap();
        let (guest, null, bob) = (id("\"GUEST\""), id("NULL"), id("bob"));
        assert_eq!(list.refusing(&guest, &bob), Some(&guest));
        assert_eq!(list.refusing(&bob, &null), Some(&null));
        assert_eq!(list.refusing(&null, &guest), Some(&null), "a first");
        assert_eq!(list.refusing(&guest, &guest), None);
        assert_eq!(list.refusing(&bob, &id("ann")), None);
    }

    #[test]
    fn blocked_keys_strip_quotes_and_case() {
        assert_eq!(blocked_key("'NULL'"), "null");
        assert_eq!(blocked_key("\"'Guest'\""), "guest");
        assert_eq!(blocked_key("''"), "");
        assert_eq!(blocked_key("[object Object]"), "[object object]");
        assert_eq!(blocked_key("'bob"), "'bob");
    }
}
