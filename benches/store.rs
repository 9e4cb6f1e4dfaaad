//! The store's hot paths, each in one group with its baselines so ratios come from one run:
//! raw sled (the storage floor) and the in-memory union-find (the algorithmic floor).
//!
//! `cargo bench --bench store`; CI smoke-runs it with `cargo bench -- --test`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idgraph::forest::{self, MemForest};
use idgraph::{Cause, Config, Identity, Op, Properties, Store};
use rand::{Rng, SeedableRng, rngs::StdRng};

const IDS: usize = 100_000;

fn id(s: String) -> Identity {
    Identity::new(s).unwrap()
}

/// A store of `IDS` IDs in persons of 1-5 IDs: named `user{p}` plus anonymous `anon{p}_{k}`.
fn populated() -> (Store, Vec<String>) {
    let store = Config::temporary().open().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut names = Vec::with_capacity(IDS);
    let mut ops = Vec::new();
    let mut p = 0;
    while names.len() < IDS {
        let named = format!("user{p}");
        names.push(named.clone());
        ops.push(Op::record(
            id(named.clone()),
            "Signed Up",
            Properties::new(),
            1,
        ));
        for k in 0..rng.random_range(0..5) {
            let anon = format!("anon{p}_{k}");
            names.push(anon.clone());
            ops.push(Op::alias(id(named.clone()), id(anon), 1, Cause::Identify));
        }
        p += 1;
        if ops.len() >= 100 {
            store.apply_batch(&ops).unwrap();
            ops.clear();
        }
    }
    store.apply_batch(&ops).unwrap();
    (store, names)
}

fn raw_sled() -> sled::Db {
    let db = sled::Config::new().temporary(true).open().unwrap();
    for i in 0..IDS {
        db.insert(format!("iuser{i}"), &[0u8; 17]).unwrap();
    }
    db
}

fn bench(c: &mut Criterion) {
    let (store, names) = populated();
    let raw = raw_sled();
    let mut forest = MemForest::with_len(IDS);
    for i in 1..IDS as u32 {
        if i % 3 != 0 {
            forest::union(&mut forest, i, i - 1);
        }
    }

    let mut g = c.benchmark_group("resolve");
    g.throughput(Throughput::Elements(1));
    let mut rng = StdRng::seed_from_u64(1);
    g.bench_function("idgraph resolve (person of 1-5 IDs)", |b| {
        b.iter(|| {
            let n = &names[rng.random_range(0..names.len())];
            black_box(store.resolve(n).unwrap())
        })
    });
    g.bench_function("raw sled get", |b| {
        b.iter(|| {
            let k = format!("iuser{}", rng.random_range(0..IDS));
            black_box(raw.get(k).unwrap())
        })
    });
    g.bench_function("in-memory find", |b| {
        b.iter(|| black_box(forest::find(&forest, rng.random_range(0..IDS as u32))))
    });
    g.finish();

    let mut g = c.benchmark_group("alias");
    g.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    g.bench_function("idgraph alias (new anonymous ID onto a named ID)", |b| {
        b.iter(|| {
            n += 1;
            let named = &names[(n as usize * 7919) % names.len()];
            let op = Op::alias(
                Identity::new(named.as_str()).unwrap(),
                id(format!("new-anon-{n}")),
                2,
                Cause::Identify,
            );
            black_box(store.apply(op).unwrap())
        })
    });
    g.bench_function("raw sled insert", |b| {
        b.iter(|| {
            n += 1;
            black_box(raw.insert(format!("inew{n}"), &[0u8; 17]).unwrap())
        })
    });
    g.bench_function("in-memory union", |b| {
        b.iter(|| {
            let x = forest.push();
            black_box(forest::union(&mut forest, x, x / 2))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("idgraph record (known ID, no properties)", |b| {
        b.iter(|| {
            n += 1;
            let who = &names[(n as usize * 7919) % names.len()];
            let op = Op::record(
                Identity::new(who.as_str()).unwrap(),
                "Viewed",
                Properties::new(),
                n as i64,
            );
            black_box(store.apply(op).unwrap())
        })
    });
    let props = Properties::new()
        .with("page", "/pricing")
        .unwrap()
        .with("plan", "pro")
        .unwrap();
    g.bench_function("idgraph record (known ID, 2 properties)", |b| {
        b.iter(|| {
            n += 1;
            let who = &names[(n as usize * 7919) % names.len()];
            let op = Op::record(
                Identity::new(who.as_str()).unwrap(),
                "Viewed",
                props.clone(),
                n as i64,
            );
            black_box(store.apply(op).unwrap())
        })
    });
    // The same key shape as an event: a random node, then a time, then the name.
    g.bench_function("raw sled insert (event-shaped key)", |b| {
        b.iter(|| {
            n += 1;
            let mut key = vec![b'v'];
            key.extend_from_slice(&((n * 7919) % IDS as u64).to_be_bytes());
            key.extend_from_slice(&n.to_be_bytes());
            key.extend_from_slice(b"viewed");
            black_box(raw.insert(key, &[0u8; 12]).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
