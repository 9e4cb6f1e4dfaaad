//! Form-field capture for `trackSubmit` (`spec/identity-rules.md`, "Form-field capture").

use serde::Deserialize;

use crate::op::{Properties, Value};

/// One field of a submitted form, as the browser sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Field {
    /// The `name` attribute.
    pub name: String,
    /// `input`, `select` or `textarea` (default `input`).
    #[serde(default = "input")]
    pub tag: String,
    /// The `type` of an `<input>` (default `text`).
    #[serde(rename = "type", default = "text")]
    pub kind: String,
    /// The value (for a select: the selected option's value).
    pub value: String,
    /// Whether a radio button or checkbox is checked.
    pub checked: bool,
    /// The CSS classes (`km_include`, `km_ignore` matter here).
    pub classes: Vec<String>,
    /// The `class` attribute as written: more classes, separated by ASCII whitespace (spaces,
    /// tabs, newlines), as a browser splits it.
    #[serde(rename = "class")]
    pub class_attr: String,
}

fn input() -> String {
    "input".into()
}
fn text() -> String {
    "text".into()
}

impl Field {
    /// A text input.
    pub fn text(name: &str, value: &str) -> Field {
        Field {
            name: name.into(),
            tag: "input".into(),
            kind: "text".into(),
            value: value.into(),
            ..Field::default()
        }
    }

    /// An `<input>` of the given type.
    pub fn input(kind: &str, name: &str, value: &str) -> Field {
        Field {
            kind: kind.into(),
            ..Field::text(name, value)
        }
    }

    /// Adds a CSS class.
    #[must_use]
    pub fn class(mut self, c: &str) -> Field {
        self.classes.push(c.into());
        self
    }

    /// Marks a radio button or checkbox checked.
    #[must_use]
    pub fn checked(mut self) -> Field {
        self.checked = true;
        self
    }

    fn has_class(&self, c: &str) -> bool {
        self.classes.iter().any(|x| x == c)
            || self.class_attr.split_ascii_whitespace().any(|x| x == c)
    }
}

/// A submitted form: its fields in document order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Form {
    /// The fields.
    pub fields: Vec<Field>,
}

/// The property name of a field: its name with the first `a[b]` rewritten to `a_b`, and a
/// trailing `[]` (a multi-value field) removed.
pub fn property_name(name: &str) -> String {
    let base = name.strip_suffix("[]").unwrap_or(name);
    if let Some(open) = base.find('[')
        && let Some(len) = base[open..].find(']')
    {
        let close = open + len;
        if open > 0 {
            return format!(
                "{}_{}{}",
                &base[..open],
                &base[open + 1..close],
                &base[close + 1..]
            );
        }
    }
    base.to_owned()
}

/// The key the capture rules test: the property name without `_` and `-`, lower-cased.
pub fn field_key(name: &str) -> String {
    property_name(name)
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .collect::<String>()
        .to_lowercase()
}

const SENSITIVE: &[&str] = &[
    "pass",
    "billing",
    "creditcard",
    "cardnum",
    "ccnum",
    "exp",
    "seccode",
    "securitycode",
    "securitynum",
    "cvc",
    "cvv",
    "ssn",
    "socialsec",
    "socsec",
    "csc",
];

/// Whether a key matches the sensitive pattern
/// `/pass|billing|creditcard|cardnum|^cc|ccnum|exp|seccode|securitycode|securitynum|cvc|cvv|ssn|socialsec|socsec|csc/i`.
pub fn is_sensitive(key: &str) -> bool {
    let k = key.to_lowercase();
    k.starts_with("cc") || SENSITIVE.iter().any(|s| k.contains(s))
}

/// Whether a key matches the identity pattern `/userid|login|username|email/i`.
pub fn is_identity(key: &str) -> bool {
    let k = key.to_lowercase();
    ["userid", "login", "username", "email"]
        .iter()
        .any(|s| k.contains(s))
}

/// Whether a field is a password input: never captured, whatever its name or classes.
pub fn is_password(f: &Field) -> bool {
    f.tag.eq_ignore_ascii_case("input") && f.kind.eq_ignore_ascii_case("password")
}

/// Whether the capture rules 1-7 take this field.
pub fn is_captured(f: &Field) -> bool {
    if f.name.is_empty() || is_password(f) {
        return false; // rule 5 and privacy, which even km_include does not override
    }
    if f.has_class("km_include") {
        return true; // rule 1
    }
    if f.has_class("km_ignore") {
        return false; // rule 2
    }
    let tag = f.tag.to_lowercase();
    let kind = f.kind.to_lowercase();
    let key = field_key(&f.name);
    let ok_tag = match tag.as_str() {
        "select" => true,
        "input" => matches!(kind.as_str(), "text" | "radio" | "checkbox") || is_identity(&key),
        _ => false, // rule 3: textarea and anything else
    };
    if !ok_tag || is_sensitive(&key) {
        return false; // rules 3, 4, 6
    }
    if tag == "input" && matches!(kind.as_str(), "radio" | "checkbox") {
        return f.checked; // rule 7
    }
    true
}

/// What a form gives: its captured fields as properties (in first-appearance order; `[]`
/// fields joined with `,` in sorted order), and the value of the first captured identity field
/// with a non-empty value.
pub fn capture(form: &Form) -> (Vec<(String, String)>, Option<String>) {
    let mut props: Vec<(String, Vec<String>, bool)> = Vec::new();
    // Property names are case-insensitive (as in the store): the index of each folded name.
    let mut index: rustc_hash::FxHashMap<String, usize> = rustc_hash::FxHashMap::default();
    let mut identity = None;
    for f in form.fields.iter().filter(|f| is_captured(f)) {
        let name = property_name(&f.name);
        let multi = f.name.ends_with("[]");
        let key = field_key(&f.name);
        // A sensitive field never identifies, even when km_include captures it.
        if identity.is_none() && !f.value.is_empty() && is_identity(&key) && !is_sensitive(&key) {
            identity = Some(f.value.clone());
        }
        match index.get(crate::op::fold_case(&name).as_ref()) {
            Some(&i) => {
                let (_, vals, m) = &mut props[i];
                if multi || *m {
                    vals.push(f.value.clone());
                } else {
                    *vals = vec![f.value.clone()];
                }
            }
            None => {
                index.insert(crate::op::fold_case(&name).into_owned(), props.len());
                props.push((name, vec![f.value.clone()], multi));
            }
        }
    }
    let props = props
        .into_iter()
        .map(|(n, mut vals, multi)| {
            if multi {
                vals.sort();
            }
            (n, vals.join(","))
        })
        .collect();
    (props, identity)
}

/// `call` overridden by the captured form values (same name, ignoring case).
pub(crate) fn merge(call: &Properties, captured: &[(String, String)]) -> Properties {
    // Captured names come from HTML `name` attributes; skip any a store would reject (and the
    // reserved `_` names: a field named `_p` must not redirect the event).
    let captured = captured
        .iter()
        .filter(|(n, _)| crate::op::check_property_name(n).is_ok())
        .map(|(n, v)| (n.clone(), Value::Text(v.clone())));
    let call = call.iter().map(|(n, v)| (n.to_owned(), v.clone()));
    Properties::from_pairs(call.chain(captured)).expect("names checked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert_eq!(property_name("user[email]"), "user_email");
        assert_eq!(property_name("a[b][c]"), "a_b[c]");
        assert_eq!(property_name("colors[]"), "colors");
        assert_eq!(property_name("plain"), "plain");
        assert_eq!(field_key("user[e-mail]"), "useremail");
        assert_eq!(field_key("User_Name"), "username");
    }

    #[test]
    fn patterns() {
        for k in [
            "password",
            "ccnumber",
            "cc",
            "creditcard",
            "expiry",
            "cvv2",
            "ssn",
            "csc",
        ] {
            assert!(is_sensitive(k), "{k}");
        }
        for k in ["name", "company", "accent", "colors"] {
            assert!(!is_sensitive(k), "{k}");
        }
        for k in ["userid", "useremail", "email", "login", "username", "EMAIL"] {
            assert!(is_identity(k), "{k}");
        }
        assert!(!is_identity("name"));
    }
}
