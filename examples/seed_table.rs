//! The seed's table ("How KISSmetrics handles identities when using the JavaScript API"),
//! replayed row by row through idgraph's rules: for each row, the browser's state, the action,
//! what the tracker sends, the cookies after, and who each ID belongs to in the store.
//!
//! `cargo run --example seed_table`

use idgraph::rules::{Effect, Field, Form, ListIds, Visitor};
use idgraph::{Config, Properties, Store};

type Action = fn(&mut Visitor) -> idgraph::Result<Effect>;

struct Row {
    identified: bool,
    action: &'static str,
    seed: &'static str,
    run: Action,
}

fn form() -> Form {
    Form {
        fields: vec![
            Field::text("user[email]", "foo@example.com"),
            Field::input("password", "password", "hunter2"),
        ],
    }
}

const ROWS: &[Row] = &[
    Row {
        identified: false,
        action: "arrives having never visited (or after clearing cookies)",
        seed: "our JavaScript Library generates a random ID and saves it to a cookie km_ai",
        run: |v| v.record("Visited Site", &Properties::new(), 1),
    },
    Row {
        identified: false,
        action: "_kmq.push(['identify', 'foo'])",
        seed: "identifies the visitor as foo ... sets km_ni ... aliases foo to the current Anonymous ID",
        run: |v| v.identify(Some("foo"), 1),
    },
    Row {
        identified: false,
        action: "_kmq.push(['identify', ''])",
        seed: "call it with an empty string to preserve the generated anonymous ID",
        run: |v| v.identify(Some(""), 1),
    },
    Row {
        identified: false,
        action: "submits a tracked form (email + password fields)",
        seed: "we'll record the event ... detect username or email fields ... call identify",
        run: |v| v.track_submit("Signed Up", &Properties::new(), &form(), 1),
    },
    Row {
        identified: false,
        action: "arrives via a link with ?kmi=foo",
        seed: "handled exactly like identify above",
        run: |v| v.visit("https://shop.example/?kmi=foo", 1),
    },
    Row {
        identified: false,
        action: "_kmq.push(['alias', 'foo', 'bar'])",
        seed: "foo and bar are aliased together",
        run: |v| v.alias("foo", "bar", 1),
    },
    Row {
        identified: false,
        action: "KM.i()",
        seed: "we return the value of the km_ai cookie",
        run: |_| Ok(Effect::default()),
    },
    Row {
        identified: false,
        action: "_kmq.push(['clearIdentity'])",
        seed: "nothing happens",
        run: |v| Ok(v.clear_identity()),
    },
    Row {
        identified: true,
        action: "_kmq.push(['identify', 'foo'])",
        seed: "the tracking is switched to foo ... Does not do any aliasing",
        run: |v| v.identify(Some("foo"), 1),
    },
    Row {
        identified: true,
        action: "submits a tracked form (email + password fields)",
        seed: "we will set those as properties, but won't try to re-identify the visitor",
        run: |v| v.track_submit("Signed Up", &Properties::new(), &form(), 1),
    },
    Row {
        identified: true,
        action: "arrives via a link with ?kmi=foo",
        seed: "handled exactly like identify above",
        run: |v| v.visit("https://shop.example/?kmi=foo", 1),
    },
    Row {
        identified: true,
        action: "_kmq.push(['alias', 'foo', 'bar'])",
        seed: "foo and bar are aliased together",
        run: |v| v.alias("foo", "bar", 1),
    },
    Row {
        identified: true,
        action: "KM.i()",
        seed: "we return the value of the km_ni cookie",
        run: |_| Ok(Effect::default()),
    },
    Row {
        identified: true,
        action: "_kmq.push(['clearIdentity'])",
        seed: "clears the current Named ID and generates a new Anonymous ID",
        run: |v| Ok(v.clear_identity()),
    },
];

fn cookies(v: &Visitor) -> String {
    format!(
        "km_ai={}  km_ni={}  KM.i()={}",
        v.km_ai(),
        v.km_ni().unwrap_or("(none)"),
        v.current()
    )
}

fn persons(store: &Store, ids: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for id in ids {
        if let Ok(Some(p)) = store.resolve(id)
            && !seen.contains(&p.person)
        {
            seen.push(p.person.clone());
            out.push(format!("person {:?} = {{{}}}", p.person, p.ids.join(", ")));
        }
    }
    out
}

fn main() -> idgraph::Result<()> {
    for (i, row) in ROWS.iter().enumerate() {
        let ids = vec![
            "AQEBAQEBAQEBAQEBAQEBAQEBAQE=".to_string(),
            "AgICAgICAgICAgICAgICAgICAgI=".to_string(),
        ];
        let mut v = Visitor::new("demo", ListIds::new(ids.clone()));
        let store = Config::temporary().open()?;
        let state = if row.identified {
            // An identified browser: it identified as "bill" on an earlier visit.
            store.apply_batch(&v.identify(Some("bill"), 0)?.ops)?;
            "identified as bill"
        } else {
            "anonymous"
        };
        println!("{}. {state} browser: {}", i + 1, row.action);
        println!("   the seed says: {}", row.seed);
        println!("   before: {}", cookies(&v));
        let fx = (row.run)(&mut v)?;
        for r in &fx.requests {
            println!("   sends:  {r}");
        }
        if fx.requests.is_empty() {
            println!("   sends:  nothing");
        }
        store.apply_batch(&fx.ops)?;
        println!("   after:  {}", cookies(&v));
        let mut known: Vec<String> = ids.clone();
        known.extend(["bill", "foo", "bar", "foo@example.com"].map(String::from));
        let ps = persons(&store, &known);
        if ps.is_empty() {
            println!("   store:  no IDs yet (nothing was sent)");
        }
        for p in ps {
            println!("   store:  {p}");
        }
        println!();
    }
    Ok(())
}
