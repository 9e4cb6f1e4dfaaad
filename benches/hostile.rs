//! What the most expensive requests the limits allow cost, next to a typical request in the
//! same run: parsing (`track::parse`, what runs on the async workers) and applying (what the
//! writer thread does). #14's goal: the worst request ≤ 10 ms of CPU.
//!
//! `cargo bench --bench hostile`; CI smoke-runs it with `cargo test --benches`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use idgraph::ingest::km_http::{self as track, Endpoint};
use idgraph::{Config, Limits, Op, Store};

/// The form body of a tracking request: `_k`, `_p`, `_n`, then `props` properties named by
/// `name(i)` with values of `value_len` bytes.
fn body(props: usize, value_len: usize, name: impl Fn(usize) -> String) -> String {
    let mut b = String::from("_k=demo&_p=victim&_n=Bought");
    let value = "v".repeat(value_len);
    for i in 0..props {
        b.push_str(&format!("&{}={value}", name(i)));
    }
    b
}

fn parse(body: &str) -> Op {
    let params: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    track::parse(
        Endpoint::Event,
        &params,
        &["demo".to_owned()],
        &Limits::default(),
        1_700_000_000,
        String::new,
    )
    .expect("a valid request")
}

fn bench(c: &mut Criterion) {
    let max_bytes = idgraph::server::ServeConfig::default().max_request_bytes;
    let typical = body(5, 12, |i| format!("prop{i}"));
    // The largest body allowed with the most properties allowed: 256 names, values filling
    // 64 KiB.
    let value_len = (max_bytes - 600 - 256 * 12) / 256;
    let worst_ascii = body(256, value_len, |i| format!("Prop{i:04}"));
    // Names whose case folding takes the slow path (a capital sigma: its lower case depends
    // on its neighbours) and which all fold alike but for their last characters.
    let worst_fold = body(256, value_len - 24, |i| format!("ΣΣΣΣΣΣΣΣ{i:04}"));
    for b in [&worst_ascii, &worst_fold] {
        assert!(b.len() <= max_bytes, "{} bytes", b.len());
    }

    let mut g = c.benchmark_group("hostile/parse");
    for (name, b) in [
        ("typical", &typical),
        ("worst_ascii", &worst_ascii),
        ("worst_fold", &worst_fold),
    ] {
        g.bench_function(name, |x| x.iter(|| black_box(parse(b))));
    }
    g.finish();

    // Applying: an event with its properties written, and the ID's record rewritten with them.
    let mut g = c.benchmark_group("hostile/apply");
    // The worst case: an ID that already holds the most names it may keep
    // (max_properties_per_id, 1,024), so each op rewrites all of them.
    let fill: Vec<Op> = (0..4)
        .map(|k| parse(&body(256, value_len, |i| format!("Fill{k}_{i:04}"))))
        .collect();
    // An ID filled through the library (no request-size limit there): the most names, each
    // with the longest value allowed.
    let max_value = Limits::default().max_value_bytes;
    let fill_max: Vec<Op> = (0..4)
        .map(|k| {
            let props = (0..256).map(|i| (format!("Big{k}_{i:04}"), "b".repeat(max_value)));
            let props = idgraph::Properties::from_pairs(props).unwrap();
            Op::set(idgraph::Identity::new("victim").unwrap(), props, 1)
        })
        .collect();
    for (name, b, prefill) in [
        ("typical", &typical, None),
        ("worst_ascii", &worst_ascii, None),
        ("worst_on_a_full_id", &worst_ascii, Some(&fill)),
        ("typical_on_an_id_of_max_bytes", &typical, Some(&fill_max)),
    ] {
        let store: Store = Config::temporary().open().unwrap();
        for op in prefill.into_iter().flatten() {
            store.apply(op.clone()).unwrap();
        }
        let op = parse(b);
        let mut t = 0;
        g.bench_function(name, |x| {
            x.iter_batched(
                || {
                    t += 1;
                    with_time(&op, t)
                },
                |op| store.apply(op).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// `op` at time `t` (a new event each time, not a duplicate).
fn with_time(op: &Op, t: i64) -> Op {
    match op.clone() {
        Op::Record {
            id,
            event,
            properties,
            ..
        } => Op::Record {
            id,
            event,
            properties,
            at: t,
        },
        other => other,
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
