//! Bad input and guardrails: every validation rule gives a clear error and writes nothing;
//! every guardrail refusal is an outcome (never an error), is counted, and changes nothing else;
//! a directory of another format version is refused at open.

use idgraph::{
    AliasOutcome, Cause, Config, Error, Identity, Op, Outcome, Properties, RefusalReason, Store,
};

fn id(s: &str) -> Identity {
    Identity::new(s).unwrap()
}

fn snapshot(s: &Store) -> (idgraph::Stats, Option<idgraph::Person>) {
    let mut st = s.stats().unwrap();
    st.disk_bytes = 0;
    (st, s.resolve("a").unwrap())
}

#[test]
fn id_rules_name_the_rule() {
    let cases: [(String, &str); 5] = [
        (String::new(), "must not be empty"),
        ("x".repeat(256), "at most 255 characters"),
        ("new\nline".into(), "control characters"),
        ("nul\0".into(), "control characters"),
        ("tab\t".into(), "control characters"),
    ];
    for (input, rule) in cases {
        let e = Identity::new(&input).unwrap_err();
        assert!(matches!(e, Error::InvalidId { .. }), "{e:?}");
        assert!(e.to_string().contains(rule), "{input:?}: {e}");
    }
    // The limit counts characters: 255 four-byte characters are fine.
    assert!(Identity::new("😀".repeat(255)).is_ok());
    assert!(Identity::new("😀".repeat(256)).is_err());
    // Serde input is validated too.
    assert!(serde_json::from_str::<Identity>("\"\"").is_err());
}

#[test]
fn a_bad_name_fails_the_whole_batch_and_writes_nothing() {
    let s = Config::temporary().open().unwrap();
    s.apply(Op::alias(id("a"), id("b"), 1, Cause::Api)).unwrap();
    let before = snapshot(&s);
    let bad_event = vec![
        Op::alias(id("a"), id("c"), 2, Cause::Api),
        Op::record(id("a"), "", Properties::new(), 2),
    ];
    let e = s.apply_batch(&bad_event).unwrap_err();
    assert!(
        e.to_string().contains("event name") && e.to_string().contains("empty"),
        "{e}"
    );
    let e = s
        .apply(Op::record(id("a"), "x\u{1}", Properties::new(), 2))
        .unwrap_err();
    assert!(e.to_string().contains("control"), "{e}");
    let e = Properties::new().with("", "v").unwrap_err();
    assert!(e.to_string().contains("property name"), "{e}");
    let e = Properties::new().with("k".repeat(256), "v").unwrap_err();
    assert!(e.to_string().contains("at most 255"), "{e}");
    assert_eq!(snapshot(&s), before);
    assert!(!s.contains("c").unwrap());
}

#[test]
fn ops_past_the_limits_are_typed_errors_and_write_nothing() {
    let s = Config::temporary().open().unwrap();
    s.apply(Op::alias(id("a"), id("b"), 1, Cause::Api)).unwrap();
    let before = snapshot(&s);
    let many = Properties::from_pairs((0..300).map(|i| (format!("p{i}"), i as i64))).unwrap();
    let e = s.apply(Op::set(id("a"), many.clone(), 2)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Limit {
                found: 300,
                max: 256,
                limit: "max_properties",
                ..
            }
        ),
        "{e}"
    );
    let e = s
        .apply_batch(&[
            Op::alias(id("a"), id("c"), 2, Cause::Api),
            Op::record(id("a"), "E", many.clone(), 2),
        ])
        .unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e}");
    let long = Properties::new().with("v", "x".repeat(8193)).unwrap();
    let e = s.apply(Op::set(id("a"), long, 2)).unwrap_err();
    assert!(e.to_string().contains("(max_value_bytes)"), "{e}");
    assert_eq!(snapshot(&s), before);
    assert!(!s.contains("c").unwrap());
    // Limits are the store's to choose.
    let loose = Config::temporary()
        .limits(idgraph::Limits {
            max_properties: 300,
            ..Default::default()
        })
        .open()
        .unwrap();
    loose.apply(Op::set(id("a"), many, 2)).unwrap();
    assert_eq!(loose.properties("a").unwrap().len(), 300);
}

#[test]
fn blocked_ids_are_refused_counted_and_keep_their_events() {
    let s = Config::temporary().open().unwrap();
    for blocked in [
        "guest",
        "GUEST",
        "'null'",
        "\"undefined\"",
        "[object Object]",
        "0",
        "NaN",
    ] {
        let before = s.stats().unwrap().refused_merges;
        let out = s
            .apply(Op::alias(id("alice"), id(blocked), 1, Cause::Identify))
            .unwrap();
        assert_eq!(
            out,
            Outcome::Alias(AliasOutcome::Refused(RefusalReason::BlockedId {
                id: blocked.into()
            }))
        );
        assert_eq!(s.stats().unwrap().refused_merges, before + 1);
        assert!(
            !s.contains(blocked).unwrap(),
            "{blocked} registered by a refused alias"
        );
    }
    // Refusing again the same pair changes nothing.
    let n = s.stats().unwrap().refused_merges;
    s.apply(Op::alias(id("guest"), id("alice"), 2, Cause::Api))
        .unwrap();
    assert_eq!(s.stats().unwrap().refused_merges, n);
    // Events under a blocked ID are kept.
    s.apply(Op::record(id("guest"), "Viewed", Properties::new(), 3))
        .unwrap();
    assert_eq!(s.events("guest").unwrap().len(), 1);
    assert!(!s.contains("alice").unwrap());
    // A custom list replaces the default.
    let s = Config::temporary().blocked_ids(["house"]).open().unwrap();
    let out = s.alias(&id("bob"), &id("'House'")).unwrap();
    assert!(matches!(out, AliasOutcome::Refused(_)));
    assert_eq!(
        s.alias(&id("bob"), &id("guest")).unwrap(),
        AliasOutcome::Joined { size: 2 }
    );
}

#[test]
fn max_person_size_refuses_and_reports_the_sizes() {
    let s = Config::temporary().max_person_size(3).open().unwrap();
    assert_eq!(
        s.alias(&id("a"), &id("b")).unwrap(),
        AliasOutcome::Joined { size: 2 }
    );
    assert_eq!(
        s.alias(&id("c"), &id("d")).unwrap(),
        AliasOutcome::Joined { size: 2 }
    );
    assert_eq!(
        s.alias(&id("a"), &id("d")).unwrap(),
        AliasOutcome::Refused(RefusalReason::TooLarge { size: 4, max: 3 })
    );
    assert_eq!(s.resolve("a").unwrap().unwrap().ids, ["a", "b"]);
    // A refused merge registers nothing: an ID new to the store stays unknown.
    let s2 = Config::temporary().max_person_size(2).open().unwrap();
    s2.alias(&id("a"), &id("b")).unwrap();
    assert_eq!(
        s2.alias(&id("a"), &id("new")).unwrap(),
        AliasOutcome::Refused(RefusalReason::TooLarge { size: 3, max: 2 })
    );
    assert!(!s2.contains("new").unwrap());
    assert_eq!(s2.stats().unwrap().ids, 2);
    assert_eq!(s.stats().unwrap().refused_merges, 1);
    let r = &s.refusals().unwrap()[0];
    assert_eq!((r.a.as_str(), r.b.as_str()), ("a", "d"));
    assert!(r.reason.to_string().contains("4 IDs"));
}

#[test]
fn self_alias_registers_and_repeats_change_nothing() {
    let s = Config::temporary().open().unwrap();
    assert_eq!(
        s.alias(&id("a"), &id("a")).unwrap(),
        AliasOutcome::AlreadySame
    );
    assert_eq!(s.resolve("a").unwrap().unwrap().ids, ["a"]);
    assert_eq!(
        s.alias(&id("a"), &id("b")).unwrap(),
        AliasOutcome::Joined { size: 2 }
    );
    let before = snapshot(&s);
    assert_eq!(
        s.alias(&id("b"), &id("a")).unwrap(),
        AliasOutcome::AlreadySame
    );
    assert_eq!(snapshot(&s), before);
}

#[test]
fn canonical_prefers_the_first_named_id() {
    let s = Config::temporary().open().unwrap();
    let anon = "y75Fe33597qBqkR4obZZYV+wF3Y=";
    s.apply(Op::record(id(anon), "Viewed", Properties::new(), 1))
        .unwrap();
    assert_eq!(s.resolve(anon).unwrap().unwrap().person, anon);
    s.apply(Op::alias(id("bob"), id(anon), 2, Cause::Identify))
        .unwrap();
    s.apply(Op::alias(id("robert"), id("bob"), 3, Cause::Api))
        .unwrap();
    assert_eq!(s.resolve("robert").unwrap().unwrap().person, "bob");
    // An ID the source marks anonymous (km_ai of an identify) never shows the person.
    s.apply(Op::alias(id("carol"), id("tmp-123"), 4, Cause::Identify))
        .unwrap();
    s.apply(Op::alias(id("tmp-123"), id("bob"), 5, Cause::Api))
        .unwrap();
    assert_eq!(s.canonical("tmp-123").unwrap().unwrap(), "bob");
}

#[test]
fn another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"mformat_version", &99u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let e = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(e, Error::IncompatibleFormat { expected: 7, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("format version 99"), "{e}");

    // Versions 1 (before the redo record), 2 (before packed ID records), 3 (before the
    // graph index), 4 (before packed events), 5 (before compact blocks) and 6 (before
    // suppressions) open and are upgraded in place, so that an older build refuses the store
    // from then on.
    for old in [1u32, 2, 3, 4, 5, 6] {
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(b"mformat_version", &old.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        drop(Store::open(dir.path()).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        {
            let db = sled::open(dir.path()).unwrap();
            assert_eq!(
                db.get(b"mformat_version").unwrap().unwrap().as_ref(),
                idgraph::FORMAT_VERSION.to_be_bytes()
            );
        }
    }

    let other = tempfile::tempdir().unwrap();
    {
        let db = sled::open(other.path()).unwrap();
        db.insert(b"somebody else's", b"data").unwrap();
        db.flush().unwrap();
    }
    let e = Store::open(other.path()).unwrap_err();
    assert!(e.to_string().contains("not an idgraph store"), "{e}");
}

#[test]
fn a_store_open_elsewhere_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Locked(_)), "{e:?}");
    assert!(e.to_string().contains("in use"), "{e}");
}

#[test]
fn store_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Store>();
    shared::<std::sync::Arc<Store>>();
}

/// `verify` reads the blocks of packed ID records a bulk import writes, and reports damage
/// to them: entries out of node order, and an own `i` key that replaces another ID's entry.
#[test]
fn verify_reports_damaged_packed_records() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["p-a", "p-b", "p-c"];
    {
        let s = Store::open(dir.path()).unwrap();
        let mut ops: Vec<Op> = names
            .iter()
            .map(|n| Op::record(id(n), "Seen", Properties::new(), 1))
            .collect();
        s.bulk_apply(&mut ops, idgraph::BulkOptions::default())
            .unwrap();
        assert!(s.verify().unwrap().is_ok());
        assert_eq!(s.verify().unwrap().ids, 3);
        s.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    // The block (one key `p` + node 0): entries of u16 length, ID, u32 length, record.
    let entries = |v: &[u8]| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = v;
        while !rest.is_empty() {
            let il = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let rl = u32::from_be_bytes(rest[2 + il..6 + il].try_into().unwrap()) as usize;
            out.push(rest[..6 + il + rl].to_vec());
            rest = &rest[6 + il + rl..];
        }
        out
    };
    // sled holds the block compact (format 6); a plain block, as format 5 wrote it, is read
    // as it is: the test writes plain ones. Each record is node u64 BE, first-seen i64 BE
    // (the first op's time), flags (0: named).
    let block: Vec<u8> = names
        .iter()
        .enumerate()
        .flat_map(|(node, name)| {
            let mut e = (name.len() as u16).to_be_bytes().to_vec();
            e.extend_from_slice(name.as_bytes());
            e.extend_from_slice(&17u32.to_be_bytes());
            e.extend_from_slice(&(node as u64).to_be_bytes());
            e.extend_from_slice(&1i64.to_be_bytes());
            e.push(0);
            e
        })
        .collect();
    let key = {
        let db = sled::open(dir.path()).unwrap();
        let mut blocks = db.scan_prefix(b"p");
        let (k, v) = blocks.next().unwrap().unwrap();
        assert!(blocks.next().is_none(), "one block for three IDs");
        assert_eq!(v[0], 0xC6, "a compact block");
        k.to_vec()
    };
    let tamper = |value: Vec<u8>, extra: Option<(&[u8], Vec<u8>)>| {
        let db = sled::open(dir.path()).unwrap();
        db.insert(&key, value).unwrap();
        if let Some((k, v)) = extra {
            db.insert(k, v).unwrap();
        }
        db.flush().unwrap();
    };
    let problems = || {
        let s = Store::open(dir.path()).unwrap();
        let p = s.verify().unwrap().problems;
        drop(s);
        std::thread::sleep(std::time::Duration::from_millis(50));
        p
    };

    // The plain block in place of the compact one: the same store.
    tamper(block.clone(), None);
    assert_eq!(problems(), Vec::<String>::new());

    // Entries out of order: the store still opens (nodes are in the records), verify says so.
    let mut e = entries(&block);
    e.swap(0, 2);
    tamper(e.concat(), None);
    let p = problems();
    assert!(p.iter().any(|p| p.contains("out of order")), "{p:?}");

    // An own key of another ID on node 1 shadows "p-b"'s entry.
    let node1 = entries(&block)[1][2 + 3 + 4..].to_vec(); // the record of node 1
    tamper(block.clone(), Some((b"iintruder", node1)));
    let p = problems();
    assert!(
        p.iter()
            .any(|p| p.contains("p-b") && p.contains("another ID")),
        "{p:?}"
    );
}

/// `verify` reads every event — packed in blocks (read where they lie) and under `v` keys —
/// and reports damage to them: an event of a node no ID holds, an event value that does not
/// decode, a block that cannot be read.
#[test]
fn verify_reports_damaged_events() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        let mut ops: Vec<Op> = (0..40)
            .map(|i| {
                let mut props = Properties::new();
                props.insert("n", i).unwrap();
                Op::record(id(&format!("e-{}", i % 5)), "Viewed", props, i)
            })
            .collect();
        s.bulk_apply(&mut ops, idgraph::BulkOptions::default())
            .unwrap();
        // One more, not packed: a `v` key.
        s.apply(Op::record(id("e-1"), "Later", Properties::new(), 99))
            .unwrap();
        let rep = s.verify().unwrap();
        assert!(rep.is_ok(), "{:?}", rep.problems);
        assert_eq!(rep.events, 41);
        s.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (loose, block) = {
        let db = sled::open(dir.path()).unwrap();
        let loose = db.scan_prefix(b"v").next().unwrap().unwrap();
        let block = db.scan_prefix(b"b").next().unwrap().unwrap();
        (
            (loose.0.to_vec(), loose.1.to_vec()),
            (block.0.to_vec(), block.1.to_vec()),
        )
    };
    let problems = |writes: &[(Vec<u8>, Vec<u8>)]| {
        {
            let db = sled::open(dir.path()).unwrap();
            for (k, v) in writes {
                db.insert(k, v.clone()).unwrap();
            }
            db.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let rep = s.verify().unwrap();
        drop(s);
        std::thread::sleep(std::time::Duration::from_millis(50));
        rep
    };
    // The same event on node 4,000, which no ID holds (key: `v`, node u64 BE, ...).
    let mut orphan = loose.0.clone();
    orphan[1..9].copy_from_slice(&4000u64.to_be_bytes());
    let rep = problems(&[(orphan.clone(), loose.1.clone())]);
    assert!(
        rep.problems
            .iter()
            .any(|p| p.contains("belongs to no known ID: node 4000")),
        "{:?}",
        rep.problems
    );
    // A value that does not decode, under the loose key.
    let rep = problems(&[(loose.0.clone(), vec![0xff; 3])]);
    assert!(rep.problem_count >= 2, "{:?}", rep.problems);
    assert!(
        rep.problems.iter().any(|p| p.contains("an event")),
        "{:?}",
        rep.problems
    );
    // The block cut short: it cannot be read.
    let cut = block.1[..block.1.len() - 3].to_vec();
    let rep = problems(&[(block.0.clone(), cut), (loose.0.clone(), loose.1.clone())]);
    assert!(!rep.is_ok(), "a cut block went unnoticed");
    // Repaired: only the orphan is left, once, and the kept count that misses it.
    let rep = problems(&[(block.0.clone(), block.1.clone())]);
    assert_eq!(rep.problem_count, 2, "{:?}", rep.problems);
    assert!(
        rep.problems[1].contains("the store holds 42"),
        "{:?}",
        rep.problems
    );
}

/// Keeping the event count, a write looks an event up in its block of packed events once the
/// write is done (does it replace a packed copy?). When that lookup fails — a damaged block —
/// the write, already on disk, is done all the same: the graph takes it and the kept counts are
/// dropped (`stats` counts again), rather than the op failing after its keys were written.
#[test]
fn a_failed_count_lookup_after_a_write_does_not_fail_the_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        let mut ops: Vec<Op> = (0..40)
            .map(|i| Op::record(id(&format!("e-{}", i % 5)), "Viewed", Properties::new(), i))
            .collect();
        s.bulk_apply(&mut ops, idgraph::BulkOptions::default())
            .unwrap();
        assert_eq!(s.stats().unwrap().events, 40); // counted, then kept and saved at close
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    {
        let db = sled::open(dir.path()).unwrap();
        let (k, _) = db.scan_prefix(b"b").next().unwrap().unwrap();
        db.insert(k, vec![0xC6, 0xff, 0xff]).unwrap(); // a compact block's mark, then garbage
        db.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    // The counts are kept (saved at close): a scan would meet the damaged block.
    assert_eq!(s.stats().unwrap().events, 40);
    // One key (an event under a packed ID), then a batch through a redo record: an event with
    // a property (its ID's record rewritten too) and an alias of two new IDs.
    s.apply(Op::record(id("e-2"), "Solo", Properties::new(), 100))
        .unwrap();
    let mut props = Properties::new();
    props.insert("plan", "pro").unwrap();
    s.apply_batch(&[
        Op::record(id("e-1"), "Paid", props, 101),
        Op::alias(id("n-1"), id("n-2"), 102, Cause::Api),
    ])
    .unwrap();
    let p = s
        .resolve("n-2")
        .unwrap()
        .expect("the batch's new IDs are known");
    assert_eq!(p.ids.len(), 2, "{p:?}");
    // The counts were dropped, not kept wrong: asked for, they are counted by a scan, which
    // meets the damaged block.
    assert!(s.stats().is_err());
}

/// Gives half of its ops, then fails (a file that vanished while it was read, a disk that
/// failed).
struct FailsHalfway(Vec<Op>);

impl idgraph::OpSource for FailsHalfway {
    fn for_each(&mut self, f: &mut dyn FnMut(Op) -> idgraph::Result<()>) -> idgraph::Result<()> {
        for (i, op) in self.0.iter().enumerate() {
            if i == self.0.len() / 2 {
                return Err(idgraph::Error::Input("the input went away".into()));
            }
            f(op.clone())?;
        }
        Ok(())
    }
}

#[test]
fn a_bulk_apply_whose_input_fails_halfway_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ops: Vec<Op> = (0..4000)
        .map(|i| {
            Op::record(
                id(&format!("u{}", i % 7)),
                "E",
                idgraph::Properties::new(),
                i,
            )
        })
        .chain([Op::alias(id("u1"), id("u2"), 5000, idgraph::Cause::Api)])
        .collect();
    {
        let s = Config::new(dir.path()).open().unwrap();
        s.apply(Op::alias(id("a"), id("b"), 1, idgraph::Cause::Api))
            .unwrap();
        // A small memory budget: the events read before the failure were sorted into runs.
        let opts = idgraph::BulkOptions {
            memory_budget: 4 << 10,
            ..Default::default()
        };
        let e = s
            .bulk_apply(&mut FailsHalfway(ops.clone()), opts)
            .unwrap_err();
        assert!(e.to_string().contains("the input went away"), "{e}");
        // Nothing was written, nothing planned stays in memory: the handle goes on.
        assert!(s.resolve("u0").unwrap().is_none());
        assert_eq!(s.counts(), (2, 1));
        s.apply(Op::alias(id("x"), id("y"), 2, idgraph::Cause::Api))
            .unwrap();
        assert!(s.verify().unwrap().is_ok());
        s.bulk_apply(&mut ops.clone(), Default::default()).unwrap();
        assert_eq!(s.events("u0").unwrap().len(), 572);
    }
    // It reopens whole.
    let s = Config::new(dir.path()).open().unwrap();
    assert!(s.verify().unwrap().is_ok());
    assert_eq!(s.resolve("u2").unwrap().unwrap().ids, ["u1", "u2"]);
}

#[test]
fn an_id_keeps_at_most_max_properties_per_id_names_alike_in_apply_and_bulk() {
    let limits = idgraph::Limits {
        max_properties_per_id: 3,
        ..Default::default()
    };
    let props = |pairs: &[(&str, &str)]| Properties::from_pairs(pairs.iter().copied()).unwrap();
    let ops = vec![
        Op::set(id("a"), props(&[("p1", "1"), ("P2", "2")]), 1),
        Op::set(id("a"), props(&[("p3", "3"), ("p4", "4")]), 2),
        Op::set(id("a"), props(&[("p1", "new"), ("p5", "5")]), 3),
        Op::record(id("a"), "Bought", props(&[("p9", "9"), ("p2", "two")]), 4),
        Op::set(id("b"), props(&[("q", "1")]), 5),
    ];
    let one = Config::temporary().limits(limits).open().unwrap();
    let outcomes: Vec<Outcome> = ops
        .iter()
        .map(|op| one.apply(op.clone()).unwrap())
        .collect();
    let refused = |n| Outcome::PropertiesRefused { refused: n, max: 3 };
    assert_eq!(
        outcomes,
        [
            Outcome::Stored,
            refused(1),
            refused(1),
            refused(1),
            Outcome::Stored
        ]
    );
    let bulk = Config::temporary().limits(limits).open().unwrap();
    bulk.bulk_apply(&mut ops.clone(), Default::default())
        .unwrap();
    for s in [&one, &bulk] {
        let got: Vec<(String, String)> = s
            .properties("a")
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.value.to_string()))
            .collect();
        assert_eq!(
            got,
            [("p1", "new"), ("P2", "two"), ("p3", "3")].map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        // The event keeps every property it was sent with.
        assert_eq!(s.events("a").unwrap()[0].properties.len(), 2);
        assert_eq!(s.stats().unwrap().ids_at_property_limit, 1);
        assert!(s.verify().unwrap().is_ok());
    }
    let why = refused(2).refusal().unwrap();
    assert!(why.ends_with("(max_properties_per_id)"), "{why}");
}

#[test]
fn a_person_collects_at_most_max_links_per_person_links_alike_in_apply_and_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let open = |sub: &str| {
        Config::new(dir.path().join(sub))
            .max_links_per_person(3)
            .open()
            .unwrap()
    };
    let link = |a: &str, b: &str, t| Op::alias(id(a), id(b), t, Cause::Api);
    let ops = vec![
        link("a", "b", 1),
        link("b", "c", 2),
        link("c", "d", 3), // 3 links: the person is full
        link("a", "c", 4), // redundant: not recorded
        link("a", "d", 5), // redundant: not recorded
        link("d", "e", 6), // joins: always recorded
    ];
    let one = open("one");
    let outcomes: Vec<Outcome> = ops
        .iter()
        .map(|op| one.apply(op.clone()).unwrap())
        .collect();
    assert_eq!(outcomes[3], Outcome::Alias(AliasOutcome::AlreadySame));
    assert_eq!(
        outcomes[5],
        Outcome::Alias(AliasOutcome::Joined { size: 5 })
    );
    let bulk = open("bulk");
    bulk.bulk_apply(&mut ops.clone(), Default::default())
        .unwrap();
    for s in [&one, &bulk] {
        assert_eq!(s.links("a").unwrap().len(), 4);
        let st = s.stats().unwrap();
        assert_eq!((st.edges, st.links_not_recorded), (4, 2));
        assert!(s.verify().unwrap().is_ok());
    }
    // Splitting recounts each part: unalias c-d leaves {a,b,c} with 2 links, {d,e} with 1;
    // the first part has room again.
    one.unalias("c", "d").unwrap();
    assert!(one.verify().unwrap().is_ok());
    one.apply(link("a", "c", 7)).unwrap();
    assert_eq!(one.links("a").unwrap().len(), 3);
    drop((one, bulk));
    // Reopened, the counts are rebuilt from the alias log.
    let one = open("one");
    assert!(one.verify().unwrap().is_ok());
    one.apply(link("b", "a", 8)).unwrap(); // has an edge already: nothing
    one.apply(link("d", "a", 9)).unwrap(); // joins {d,e}: recorded
    assert_eq!(one.links("a").unwrap().len(), 5);
    assert!(one.verify().unwrap().is_ok());
}

#[test]
fn the_refusal_log_keeps_at_most_max_refusals_logged_pairs_alike_in_apply_and_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let open = |sub: &str| {
        Config::new(dir.path().join(sub))
            .max_refusals_logged(2)
            .open()
            .unwrap()
    };
    // "undefined" is blocked by default: every link to it is refused.
    let link = |b: &str, t| Op::alias(id("undefined"), id(b), t, Cause::Api);
    let ops = vec![
        link("x1", 1),
        link("x2", 2), // the log is full
        link("x3", 3), // refused, counted, not written
        link("x1", 4), // a pair the log holds: its record is updated
        link("x4", 5), // refused, counted, not written
    ];
    let one = open("one");
    for op in &ops {
        assert!(matches!(
            one.apply(op.clone()).unwrap(),
            Outcome::Alias(AliasOutcome::Refused(RefusalReason::BlockedId { .. }))
        ));
    }
    let bulk = open("bulk");
    bulk.bulk_apply(&mut ops.clone(), Default::default())
        .unwrap();
    for s in [&one, &bulk] {
        let logged: Vec<_> = s
            .refusals()
            .unwrap()
            .into_iter()
            .map(|r| (r.b, r.at))
            .collect();
        assert_eq!(logged, [("x1".to_owned(), 4), ("x2".to_owned(), 2)]);
        let st = s.stats().unwrap();
        assert_eq!((st.refused_merges, st.refusals_not_logged), (2, 2));
        let g = s.guardrails();
        assert_eq!((g.refusals_logged, g.refusals_not_logged), (2, 2));
        assert!(s.verify().unwrap().is_ok());
    }
    // Forgetting a logged pair's ID makes room again.
    one.forget("x2").unwrap();
    one.apply(link("x5", 6)).unwrap();
    assert_eq!(one.refusals().unwrap().len(), 2);
    drop((one, bulk));
    // Reopened: the log's size is counted from disk, the per-handle count starts over.
    let one = open("one");
    assert_eq!(one.guardrails().refusals_logged, 2);
    one.apply(link("x6", 7)).unwrap();
    let st = one.stats().unwrap();
    assert_eq!((st.refused_merges, st.refusals_not_logged), (2, 1));
    assert!(one.verify().unwrap().is_ok());
}

/// A damaged compact block (format 6) is an error where it is read and a problem `verify`
/// reports; the store still opens, and the other IDs still answer.
#[test]
fn damaged_compact_blocks_are_reported_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("c-{i}")).collect();
    {
        let s = Store::open(dir.path()).unwrap();
        let mut ops: Vec<Op> = names
            .iter()
            .map(|n| {
                let mut p = Properties::new();
                p.insert("plan", "pro").unwrap();
                Op::record(id(n), "Seen", p, 1)
            })
            .collect();
        s.bulk_apply(&mut ops, idgraph::BulkOptions::default())
            .unwrap();
        assert!(s.verify().unwrap().is_ok());
        assert_eq!(s.events("c-39").unwrap().len(), 1);
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    for prefix in [b"b", b"p"] {
        let (key, good) = {
            let db = sled::open(dir.path()).unwrap();
            let (k, v) = db.scan_prefix(prefix).next().unwrap().unwrap();
            assert_eq!(v[0], 0xC6, "compact");
            // A string index past the table: the last entry's bytes made all 0x7f.
            let mut bad = v.to_vec();
            let n = bad.len();
            bad[n - 3..].fill(0x7f);
            db.insert(&k, bad).unwrap();
            db.flush().unwrap();
            (k.to_vec(), v.to_vec())
        };
        {
            let s = Store::open(dir.path()).unwrap();
            if prefix == b"b" {
                let report = s.verify().unwrap();
                assert!(
                    report.problems.iter().any(|p| p.contains("compact block")),
                    "{:?}",
                    report.problems
                );
                let e = s.events("c-39").unwrap_err();
                assert!(e.to_string().contains("compact block"), "{e}");
            } else {
                // `verify` rebuilds the graph from the ID records: it cannot, and says why.
                let e = s.verify().unwrap_err();
                assert!(e.to_string().contains("compact block"), "{e}");
                let e = s.properties("c-39").unwrap_err();
                assert!(e.to_string().contains("compact block"), "{e}");
            }
            // The graph (from its index) still answers.
            assert_eq!(s.canonical("c-39").unwrap().as_deref(), Some("c-39"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let db = sled::open(dir.path()).unwrap();
        db.insert(&key, good).unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert!(s.verify().unwrap().is_ok());
}
