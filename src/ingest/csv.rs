//! KISSmetrics CSV import: columns `Identity`, `Timestamp` (seconds; not required for an alias
//! row), `Event`, `Alias`, and up to ten `Prop:<name>` columns. A row with `Alias` links
//! `Identity` and `Alias`; with `Event` records it; with only properties sets them.
//! `Prop:_p_original` (from `idgraph export events --format csv`) works as `_p_original` does in
//! JSON lines: the row is recorded under it, and it is linked to `Identity`.

use crate::id::Identity;
use crate::op::{Cause, Op, Properties, Timestamp, Value};

/// Which column holds what.
#[derive(Clone, Debug)]
pub struct Columns {
    identity: usize,
    timestamp: Option<usize>,
    event: Option<usize>,
    alias: Option<usize>,
    original: Option<usize>,
    props: Vec<(usize, String)>,
}

/// Reads the header row.
pub fn columns(header: &csv::StringRecord) -> Result<Columns, String> {
    let (mut identity, mut timestamp, mut event, mut alias) = (None, None, None, None);
    let mut original = None;
    let mut props = Vec::new();
    for (i, h) in header.iter().enumerate() {
        let h = h.trim();
        let lower = h.to_ascii_lowercase();
        let slot = match lower.as_str() {
            "identity" => &mut identity,
            "timestamp" => &mut timestamp,
            "event" => &mut event,
            "alias" => &mut alias,
            "prop:_p_original" => &mut original,
            _ if lower.starts_with("prop:") && h.len() > 5 => {
                props.push((i, h[5..].to_owned()));
                continue;
            }
            _ => {
                return Err(format!(
                    "unknown column {h:?} (expected Identity, Timestamp, Event, Alias, Prop:<name>)"
                ));
            }
        };
        if slot.replace(i).is_some() {
            return Err(format!("column {h:?} appears twice"));
        }
    }
    if props.len() > 10 {
        return Err(format!("{} Prop: columns; at most 10", props.len()));
    }
    Ok(Columns {
        identity: identity.ok_or("no Identity column")?,
        timestamp,
        event,
        alias,
        original,
        props,
    })
}

/// Turns one row into ops. `now` is the time of an alias row without a timestamp.
pub fn parse_row(
    c: &Columns,
    row: &csv::StringRecord,
    now: Timestamp,
    source: Option<&str>,
) -> Result<Vec<Op>, String> {
    let cell = |i: Option<usize>| i.and_then(|i| row.get(i)).unwrap_or("");
    let id = Identity::new(cell(Some(c.identity))).map_err(|e| format!("Identity: {e}"))?;
    let ts = cell(c.timestamp);
    let at = if ts.trim().is_empty() {
        None
    } else {
        Some(super::km_json::timestamp(ts).map_err(|e| e.replace("_t", "Timestamp"))?)
    };
    let props = Properties::from_pairs(c.props.iter().filter_map(|(i, name)| {
        let v = row.get(*i).unwrap_or("");
        (!v.is_empty()).then(|| (name.as_str(), Value::Text(v.to_owned())))
    }))
    .map_err(|e| e.to_string())?;
    let (event, alias) = (cell(c.event), cell(c.alias));
    let mut ops = Vec::with_capacity(1);
    let original = cell(c.original);
    let id = if original.is_empty() || original == id.as_str() {
        id
    } else {
        let o = Identity::new(original).map_err(|e| format!("Prop:_p_original: {e}"))?;
        ops.push(Op::Alias {
            a: id,
            b: o.clone(),
            at: at.unwrap_or(now),
            cause: Cause::Import,
            source: source.map(str::to_owned),
        });
        o
    };
    if !alias.is_empty() {
        let b = Identity::new(alias).map_err(|e| format!("Alias: {e}"))?;
        ops.push(Op::Alias {
            a: id.clone(),
            b,
            at: at.unwrap_or(now),
            cause: Cause::Import,
            source: source.map(str::to_owned),
        });
    }
    if !event.is_empty() || !props.is_empty() {
        let at = at.ok_or("Timestamp is required for an event or properties")?;
        let op = if event.is_empty() {
            Op::set(id, props, at)
        } else {
            Op::record(id, event, props, at)
        };
        op.validate().map_err(|e| e.to_string())?;
        ops.push(op);
    }
    if ops.is_empty() {
        return Err("nothing to do: no Event, Alias or Prop: value".into());
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cells: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(cells.to_vec())
    }

    #[test]
    fn rows_become_ops() {
        let c = columns(&rec(&[
            "Identity",
            "Timestamp",
            "Event",
            "Alias",
            "Prop:Plan",
        ]))
        .unwrap();
        let ops = parse_row(&c, &rec(&["bob", "10", "Signed Up", "", "pro"]), 99, None).unwrap();
        assert!(
            matches!(&ops[..], [Op::Record { at: 10, properties, .. }] if properties.get("plan") == Some(&"pro".into()))
        );
        let ops = parse_row(&c, &rec(&["bob", "", "", "bob@x", ""]), 99, None).unwrap();
        assert!(matches!(&ops[..], [Op::Alias { at: 99, .. }]));
        let ops = parse_row(&c, &rec(&["bob", "5", "", "", "team"]), 99, None).unwrap();
        assert!(matches!(&ops[..], [Op::Set { at: 5, .. }]));
    }

    #[test]
    fn bad_rows_and_headers_say_why() {
        assert!(
            columns(&rec(&["Timestamp"]))
                .unwrap_err()
                .contains("no Identity")
        );
        assert!(
            columns(&rec(&["Identity", "Colour"]))
                .unwrap_err()
                .contains("unknown column")
        );
        let c = columns(&rec(&["identity", "timestamp", "event"])).unwrap();
        let e = parse_row(&c, &rec(&["bob", "", "E"]), 0, None).unwrap_err();
        assert!(e.contains("Timestamp is required"), "{e}");
        let e = parse_row(&c, &rec(&["bob", "x", "E"]), 0, None).unwrap_err();
        assert!(e.contains("Timestamp \"x\""), "{e}");
        let e = parse_row(&c, &rec(&["", "1", "E"]), 0, None).unwrap_err();
        assert!(e.contains("Identity: invalid ID"), "{e}");
        let e = parse_row(&c, &rec(&["bob", "1", ""]), 0, None).unwrap_err();
        assert!(e.contains("nothing to do"), "{e}");
    }
}
