//! A person's alias graph for people to look at: Graphviz DOT, and SVG rendered in-process by
//! [layout-rs](https://docs.rs/layout-rs) (no Graphviz install needed).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::op::{Link, Timestamp};

/// Largest person [`PersonGraph::to_svg`] lays out (the layout is super-linear; use DOT and
/// Graphviz for larger ones).
pub const MAX_SVG_IDS: usize = 2_000;

/// One ID of a [`PersonGraph`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GraphId {
    /// The ID.
    pub id: String,
    /// Whether the store holds it as an anonymous ID (drawn differently from named IDs).
    pub anonymous: bool,
    /// When the store first saw it (the time of the op that brought it); only from
    /// [`Store::person_graph_first_seen`](crate::Store::person_graph_first_seen).
    pub first_seen: Option<crate::op::Timestamp>,
}

/// A person's IDs and the alias links among them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PersonGraph {
    /// The canonical ID.
    pub person: String,
    /// The IDs, in the order the store first saw them.
    pub ids: Vec<GraphId>,
    /// The links, in the order they were made.
    pub links: Vec<Link>,
}

/// `"…"` with `"` and `\` escaped, as DOT wants.
fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// `YYYY-MM-DD` (UTC) of a Unix time (the civil-from-days algorithm).
pub fn date(t: Timestamp) -> String {
    let days = t.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl PersonGraph {
    /// Graphviz DOT: named IDs as filled boxes (the canonical one bold), anonymous IDs as
    /// ellipses, each link labelled with its cause and date.
    pub fn to_dot(&self) -> String {
        let mut out = format!("graph {} {{\n", quoted(&format!("person {}", self.person)));
        out.push_str("  node [fontname=\"monospace\"];\n");
        for i in &self.ids {
            let style = if i.anonymous {
                "shape=ellipse, style=dashed".to_string()
            } else {
                "shape=box, style=filled, fillcolor=\"#cfe0ff\"".to_string()
            };
            let bold = if i.id == self.person {
                ", penwidth=2"
            } else {
                ""
            };
            out.push_str(&format!("  {} [{style}{bold}];\n", quoted(&i.id)));
        }
        for l in &self.links {
            out.push_str(&format!(
                "  {} -- {} [label={}];\n",
                quoted(&l.a),
                quoted(&l.b),
                quoted(&format!("{} {}", l.cause, date(l.at)))
            ));
        }
        out.push_str("}\n");
        out
    }

    /// The graph laid out and drawn as SVG, in-process.
    ///
    /// # Errors
    /// [`Error::Input`] for a person of more than [`MAX_SVG_IDS`] IDs; [`Error::Internal`] when
    /// the layout fails.
    pub fn to_svg(&self) -> Result<String> {
        use layout::backends::svg::SVGWriter;
        use layout::gv::{DotParser, GraphBuilder};
        if self.ids.len() > MAX_SVG_IDS {
            return Err(Error::Input(format!(
                "{} has {} IDs, more than the {MAX_SVG_IDS} an SVG is drawn for; write DOT \
                 (--format dot) and render it with Graphviz",
                self.person,
                self.ids.len()
            )));
        }
        let dot = self.to_dot();
        let ast = DotParser::new(&dot).process().map_err(|e| {
            Error::Internal(format!("the DOT of {} did not parse: {e}", self.person))
        })?;
        // layout-rs panics on some inputs; keep that from taking the caller down.
        std::panic::catch_unwind(move || {
            let mut gb = GraphBuilder::new();
            gb.visit_graph(&ast);
            let mut vg = gb.get();
            let mut svg = SVGWriter::new();
            vg.do_it(false, false, false, &mut svg);
            svg.finalize()
        })
        .map_err(|_| Error::Internal(format!("the layout of {}'s graph failed", self.person)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_700_000_000), "2023-11-14");
        assert_eq!(date(-86_400), "1969-12-31");
    }

    #[test]
    fn dot_quotes_and_draws_kinds_apart() {
        let g = PersonGraph {
            person: "bob".into(),
            ids: vec![
                GraphId {
                    id: "bob".into(),
                    anonymous: false,
                    first_seen: None,
                },
                GraphId {
                    id: "a\"b\\c=".into(),
                    anonymous: true,
                    first_seen: Some(2),
                },
            ],
            links: vec![Link {
                a: "bob".into(),
                b: "a\"b\\c=".into(),
                cause: crate::Cause::Identify,
                at: 1_700_000_000,
                source: None,
            }],
        };
        let dot = g.to_dot();
        assert!(
            dot.contains("\"bob\" [shape=box, style=filled, fillcolor=\"#cfe0ff\", penwidth=2];")
        );
        assert!(dot.contains("\"a\\\"b\\\\c=\" [shape=ellipse, style=dashed];"));
        assert!(dot.contains("\"bob\" -- \"a\\\"b\\\\c=\" [label=\"identify 2023-11-14\"];"));
        let svg = g.to_svg().unwrap();
        assert!(
            svg.starts_with("<?xml") && svg.contains("<svg") && svg.contains("identify 2023-11-14")
        );
    }
}
