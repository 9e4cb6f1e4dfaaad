//! The identity rules (`spec/identity-rules.md`) through `rules::Visitor` and the simulator:
//! every row of the seed's table and every listed consequence, as data in
//! `tests/vectors/identity-rules.json` (cookies, `KM.i()` and requests after each step, persons
//! and events in the store at the end); plus a property test that the store's partition is
//! exactly the one the visitors' alias requests imply.

use std::collections::{BTreeMap, BTreeSet};

use idgraph::rules::sim::{Simulator, parse_line};
use idgraph::rules::{Field, Form, ListIds, Visitor};
use idgraph::{Config, Properties, Store};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    key: String,
    anon_ids: BTreeMap<String, Vec<String>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    row: String,
    steps: Vec<Step>,
    persons: Vec<Vec<String>>,
    #[serde(default)]
    events: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Step {
    #[serde(rename = "do")]
    line: serde_json::Value,
    expect: Expect,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Expect {
    km_ai: String,
    km_ni: Option<String>,
    current: String,
    requests: Vec<String>,
}

fn vectors() -> Vectors {
    let text = include_str!("vectors/identity-rules.json");
    serde_json::from_str(text).unwrap()
}

#[test]
fn every_table_row_and_consequence_holds() {
    let v = vectors();
    let rows: BTreeSet<&str> = v.cases.iter().map(|c| c.row.as_str()).collect();
    assert!(rows.len() >= 20, "the vectors lost cases: {rows:?}");
    for case in &v.cases {
        let ids = v.anon_ids.clone();
        let mut sim = Simulator::with_ids(&v.key, move |b| {
            Box::new(ListIds::new(ids.get(b).cloned().unwrap_or_default()))
        });
        let store = Config::temporary().open().unwrap();
        for (i, step) in case.steps.iter().enumerate() {
            let line = parse_line(&step.line.to_string()).unwrap();
            // A command that fails (km.js warns in the console) must change nothing: the
            // expected state is the browser's as it was, with no request.
            let (got, ops) = match sim.apply(i + 1, &line) {
                Ok((out, fx)) => (
                    Expect {
                        km_ai: out.km_ai,
                        km_ni: out.km_ni,
                        current: out.current,
                        requests: out.requests,
                    },
                    fx.ops,
                ),
                Err(_) => {
                    let b = sim.browser(&line.browser).expect("a browser it has seen");
                    let got = Expect {
                        km_ai: b.km_ai().to_owned(),
                        km_ni: b.km_ni().map(str::to_owned),
                        current: b.current().to_owned(),
                        requests: Vec::new(),
                    };
                    (got, Vec::new())
                }
            };
            assert_eq!(
                got,
                step.expect,
                "{} ({}): step {}",
                case.name,
                case.row,
                i + 1
            );
            store.apply_batch(&ops).unwrap();
        }
        check_persons(&store, case);
    }
}

fn check_persons(store: &Store, case: &Case) {
    let mut total = 0;
    for want in &case.persons {
        let got = store
            .resolve(&want[0])
            .unwrap()
            .unwrap_or_else(|| panic!("{}: {} is unknown", case.name, want[0]));
        let (mut g, mut w) = (got.ids.clone(), want.clone());
        g.sort();
        w.sort();
        assert_eq!(g, w, "{}: the person of {}", case.name, want[0]);
        total += want.len();
    }
    assert_eq!(
        store.stats().unwrap().ids as usize,
        total,
        "{}: the store holds IDs the case does not list",
        case.name
    );
    for (id, names) in &case.events {
        let got: Vec<String> = store
            .events(id)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(&got, names, "{}: events of {id}'s person", case.name);
    }
}

#[test]
fn a_failed_command_changes_nothing() {
    let mut v = Visitor::new(
        "k",
        ListIds::new(vec!["AQEBAQEBAQEBAQEBAQEBAQEBAQE=".into()]),
    );
    let long = "x".repeat(256);
    assert!(v.identify(Some(&long), 1).is_err());
    assert!(!v.is_identified());
    let form = Form {
        fields: vec![Field::text("email", "a@b.example")],
    };
    // A bad event name fails before the form's email identifies the visitor.
    assert!(v.track_submit("", &Properties::new(), &form, 1).is_err());
    assert!(!v.is_identified());
    assert!(v.visit(&format!("/?kmi=foo&kme={long}"), 1).is_err());
    assert!(!v.is_identified());
    assert!(v.visit(&format!("/?kmi={long}&kme=E"), 1).is_err());
    assert!(!v.is_identified());
    // An empty kme is no event: the identify goes through.
    assert!(v.visit("/?kmi=foo&kme=", 1).is_ok());
    assert!(v.is_identified());
    assert!(v.alias("a", "", 1).is_err());
}

#[test]
fn form_tracking_off_records_without_fields_or_identity() {
    let mut v = Visitor::new(
        "k",
        ListIds::new(vec!["AQEBAQEBAQEBAQEBAQEBAQEBAQE=".into()]),
    );
    v.set_form_tracking(false);
    let form = Form {
        fields: vec![Field::text("email", "a@b.example")],
    };
    let fx = v
        .track_submit("Signed Up", &Properties::new(), &form, 7)
        .unwrap();
    assert_eq!(
        fx.requests,
        ["/e?_n=Signed%20Up&_k=k&_p=AQEBAQEBAQEBAQEBAQEBAQEBAQE%3D&_t=7"]
    );
    assert!(!v.is_identified());
}

#[test]
fn bad_lines_are_explained() {
    let cases = [
        ("{", "not a valid line"),
        (
            r#"{"browser":"b","kmq":["identify","x"],"visit":"/"}"#,
            "at most one action",
        ),
        (
            r#"{"browser":"b","kmqq":["identify","x"]}"#,
            "unknown field",
        ),
        (r#"{"kmq":["identify","x"]}"#, "missing field `browser`"),
    ];
    for (line, msg) in cases {
        let e = parse_line(line).unwrap_err();
        assert!(e.contains(msg), "{line}: {e}");
    }
    let mut sim = Simulator::new("k");
    let run = |sim: &mut Simulator, l: &str| sim.apply(1, &parse_line(l).unwrap()).map(|_| ());
    for (line, msg) in [
        (
            r#"{"browser":"b","kmq":["fly"]}"#,
            "unknown command \"fly\"",
        ),
        (
            r#"{"browser":"b","kmq":["alias","a"]}"#,
            "the second ID is missing",
        ),
        (
            r#"{"browser":"b","kmq":["record","E",[1]]}"#,
            "properties must be an object",
        ),
        (
            r#"{"browser":"b","kmq":["set",{"k":[1]}]}"#,
            "must be a string or a number",
        ),
        (r#"{"browser":"b","kmq":["identify",""]}"#, ""),
        (
            r#"{"browser":"b","kmq":["trackSubmit","f","E"]}"#,
            "use a \"submit\" line",
        ),
    ] {
        match run(&mut sim, line) {
            Err(e) => assert!(e.contains(msg) && !msg.is_empty(), "{line}: {e}"),
            Ok(()) => assert!(msg.is_empty(), "{line} should fail with {msg}"),
        }
    }
}

/// One random tracker command for browser `b`.
fn arb_line() -> impl Strategy<Value = String> {
    let browser = prop_oneof![Just("b1"), Just("b2"), Just("b3")];
    let name = prop_oneof![Just("ann"), Just("bob"), Just("cy"), Just("")];
    let action = prop_oneof![
        3 => name.clone().prop_map(|n| format!(r#""kmq":["identify","{n}"]"#)),
        2 => (name.clone(), name.clone()).prop_map(|(a, b)| format!(r#""kmq":["alias","{a}x","{b}y"]"#)),
        3 => Just(r#""kmq":["record","Viewed"]"#.to_string()),
        1 => Just(r#""kmq":["clearIdentity"]"#.to_string()),
        1 => Just(r#""clear_cookies":true"#.to_string()),
        2 => name.clone().prop_map(|n| format!(r#""visit":"/?kmi={n}&kme=Landed""#)),
        2 => name.prop_map(|n| format!(
            r#""submit":{{"event":"Sent","fields":[{{"name":"email","value":"{n}"}},{{"name":"pass","type":"password","value":"p"}}]}}"#
        )),
    ];
    (browser, action).prop_map(|(b, a)| format!(r#"{{"browser":"{b}",{a}}}"#))
}

fn query_param(req: &str, key: &str) -> Option<String> {
    let q = req.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The store's persons are exactly the connected components of the alias requests sent.
    #[test]
    fn store_partition_equals_the_requests(lines in proptest::collection::vec(arb_line(), 1..30)) {
        let mut sim = Simulator::with_ids("k", |b| {
            let seed = b.bytes().map(u64::from).sum::<u64>();
            Box::new(idgraph::rules::RandomIds::seeded(seed))
        });
        let store = Config::temporary().open().unwrap();
        let mut ids: BTreeSet<String> = BTreeSet::new();
        let mut links: Vec<(String, String)> = Vec::new();
        for (i, text) in lines.iter().enumerate() {
            let (_, fx) = sim.apply(i + 1, &parse_line(text).unwrap()).unwrap();
            for r in &fx.requests {
                let p = query_param(r, "_p").unwrap();
                ids.insert(p.clone());
                if r.starts_with("/a?") {
                    let n = query_param(r, "_n").unwrap();
                    ids.insert(n.clone());
                    links.push((p, n));
                }
            }
            store.apply_batch(&fx.ops).unwrap();
        }
        // Reference: components of the alias requests over every ID a request named.
        let mut label: BTreeMap<String, usize> = ids.iter().cloned().enumerate().map(|(i, s)| (s, i)).collect();
        for (a, b) in &links {
            let (la, lb) = (label[a], label[b]);
            for l in label.values_mut() { if *l == lb { *l = la; } }
        }
        for id in &ids {
            let mut want: Vec<String> = label.iter().filter(|(_, l)| **l == label[id]).map(|(s, _)| s.clone()).collect();
            want.sort();
            let mut got = store.resolve(id).unwrap().unwrap().ids;
            got.sort();
            prop_assert_eq!(got, want, "person of {}", id);
        }
        prop_assert_eq!(store.stats().unwrap().ids as usize, ids.len());
    }
}
