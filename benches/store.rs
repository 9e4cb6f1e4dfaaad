//! The store's hot paths — resolve, alias, record, set, events of persons of 1/100/10,000 IDs,
//! import per line, backup and restore — each in one group with its baselines so ratios come from one run: raw
//! sled (the storage floor) and the in-memory union-find (the algorithmic floor).
//!
//! `cargo bench --bench store`; CI smoke-runs it with `cargo test --benches`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use idgraph::forest::{self, MemForest, Node};
use idgraph::{BulkOptions, Cause, Config, Identity, Op, Properties, Store};

#[path = "../examples/common/km_gen.rs"]
mod km_gen;
use km_gen::KmGen;
use rand::{Rng, SeedableRng, rngs::StdRng};

const IDS: usize = 100_000;

fn id(s: String) -> Identity {
    Identity::new(s).unwrap()
}

/// A store of `IDS` IDs in persons of 1-5 IDs: named `user{p}` plus anonymous `anon{p}_{k}`,
/// applied in batches of ~100 ops (each ID under a key of its own).
fn populated() -> (Store, Vec<String>) {
    populated_by(false)
}

/// The same, through `bulk_apply` when `bulk` (the ID records packed in blocks).
fn populated_by(bulk: bool) -> (Store, Vec<String>) {
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
        if ops.len() >= 100 && !bulk {
            store.apply_batch(&ops).unwrap();
            ops.clear();
        }
    }
    if bulk {
        store.bulk_apply(&mut ops, BulkOptions::default()).unwrap();
    } else {
        store.apply_batch(&ops).unwrap();
    }
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
    // Counts events and properties once: from then on the writers keep the counts, as they do
    // on a store reopened after a clean close. `uncounted` never counts (the `record` group
    // compares the two).
    store.stats().unwrap();
    let (uncounted, _) = populated();
    let raw = raw_sled();
    let mut forest = MemForest::with_len(IDS);
    for i in 1..IDS as u32 {
        if i % 3 != 0 {
            forest::union(&mut forest, Node::from_index(i), Node::from_index(i - 1));
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
        b.iter(|| {
            let n = Node::from_index(rng.random_range(0..IDS as u32));
            black_box(forest::find(&forest, n))
        })
    });
    g.finish();

    // Reading an ID's record (`properties` reads one per ID of the person): under its own key
    // (applied one batch at a time) or packed in a block by a bulk import (an own-key miss, a
    // range read and a scan of the block's ~60 entries). Same persons, same lookups.
    // Before the groups below add to `store`.
    let (bulk_store, _) = populated_by(true);
    let mut m = 0u64;
    let mut g = c.benchmark_group("properties");
    g.throughput(Throughput::Elements(1));
    for (what, s) in [("own keys", &store), ("packed by bulk import", &bulk_store)] {
        g.bench_function(format!("idgraph properties ({what})"), |b| {
            b.iter(|| {
                m += 1;
                black_box(
                    s.properties(&names[(m as usize * 7919) % names.len()])
                        .unwrap(),
                )
            })
        });
    }
    g.bench_function("raw sled get", |b| {
        b.iter(|| {
            m += 1;
            black_box(
                raw.get(format!("iuser{}", (m as usize * 7919) % IDS))
                    .unwrap(),
            )
        })
    });
    g.finish();
    drop(bulk_store);

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
            black_box(forest::union(
                &mut forest,
                x,
                Node::from_index(x.index() / 2),
            ))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    let props = Properties::new()
        .with("page", "/pricing")
        .unwrap()
        .with("plan", "pro")
        .unwrap();
    for (what, s, p) in [
        ("no properties", &store, Properties::new()),
        ("2 properties", &store, props.clone()),
        (
            "no properties; counts not kept",
            &uncounted,
            Properties::new(),
        ),
        ("2 properties; counts not kept", &uncounted, props),
    ] {
        g.bench_function(format!("idgraph record (known ID, {what})"), |b| {
            b.iter(|| {
                n += 1;
                let who = &names[(n as usize * 7919) % names.len()];
                let op = Op::record(
                    Identity::new(who.as_str()).unwrap(),
                    "Viewed",
                    p.clone(),
                    n as i64,
                );
                black_box(s.apply(op).unwrap())
            })
        });
    }
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

    // `set`: the ID's record is read, its properties merged, and rewritten (one key).
    let mut g = c.benchmark_group("set");
    g.throughput(Throughput::Elements(1));
    g.bench_function("idgraph set (known ID, 1 property)", |b| {
        b.iter(|| {
            n += 1;
            let who = &names[(n as usize * 7919) % names.len()];
            let op = Op::set(
                Identity::new(who.as_str()).unwrap(),
                Properties::new().with("plan", n as i64).unwrap(),
                n as i64,
            );
            black_box(store.apply(op).unwrap())
        })
    });
    g.bench_function("raw sled get + insert (same key)", |b| {
        b.iter(|| {
            n += 1;
            let k = format!("iuser{}", (n as usize * 7919) % IDS);
            let v = raw.get(&k).unwrap();
            black_box(raw.insert(k, v.unwrap_or_default()).unwrap())
        })
    });
    g.finish();

    // `events` of persons of 1, 100 and 10,000 IDs, two events per ID; the baseline scans
    // the same number of event-shaped keys in raw sled.
    let mut g = c.benchmark_group("events");
    // The same persons imported by the bulk path: their events packed in blocks.
    let packed = Config::temporary().open().unwrap();
    for size in [1usize, 100, 10_000] {
        let hub = format!("events-hub-{size}");
        let mut ops = Vec::new();
        for k in 0..size {
            let who = if k == 0 {
                hub.clone()
            } else {
                format!("events-{size}-{k}")
            };
            if k > 0 {
                ops.push(Op::alias(
                    id(hub.clone()),
                    id(who.clone()),
                    1,
                    Cause::Identify,
                ));
            }
            for t in 0..2 {
                ops.push(Op::record(id(who.clone()), "Viewed", Properties::new(), t));
            }
        }
        for chunk in ops.chunks(1_000) {
            store.apply_batch(chunk).unwrap();
        }
        packed
            .bulk_apply(&mut ops.clone(), BulkOptions::default())
            .unwrap();
        let raw_prefix = format!("ev{size}/");
        for k in 0..size * 2 {
            raw.insert(format!("{raw_prefix}{k:08}"), &[0u8; 12])
                .unwrap();
        }
        g.throughput(Throughput::Elements(size as u64 * 2));
        g.bench_function(format!("idgraph events (person of {size} IDs)"), |b| {
            b.iter(|| black_box(store.events(&hub).unwrap().len()))
        });
        g.bench_function(
            format!("idgraph events, packed (person of {size} IDs)"),
            |b| b.iter(|| black_box(packed.events(&hub).unwrap().len())),
        );
        g.bench_function(format!("raw sled scan ({} keys)", size * 2), |b| {
            b.iter(|| black_box(raw.scan_prefix(&raw_prefix).count()))
        });
    }
    g.finish();

    // Import per line: `bulk_apply` of 10,000 parsed KISSmetrics lines into a new store,
    // against raw sled inserting one key per line into a new tree.
    let mut g = c.benchmark_group("import");
    g.sample_size(10);
    let lines = km_lines(10_000);
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("idgraph bulk_apply (10,000 KISSmetrics lines)", |b| {
        b.iter_batched(
            || (Config::temporary().open().unwrap(), lines.clone()),
            |(s, mut ops)| black_box(s.bulk_apply(&mut ops, BulkOptions::default()).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("raw sled insert (10,000 keys)", |b| {
        b.iter_batched(
            || sled::Config::new().temporary(true).open().unwrap(),
            |db| {
                for (i, op) in lines.iter().enumerate() {
                    let who = match op {
                        Op::Alias { a, .. } => a.as_str(),
                        Op::Record { id, .. } | Op::Set { id, .. } => id.as_str(),
                    };
                    let mut k = who.as_bytes().to_vec();
                    k.extend_from_slice(&(i as u64).to_be_bytes());
                    db.insert(k, &[0u8; 17][..]).unwrap();
                }
                black_box(db)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // Backup and restore of 100,000 KISSmetrics lines: the backup against the exports a user
    // would otherwise run (mapping and events), the restore against importing the same lines.
    let mut g = c.benchmark_group("backup");
    g.sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let lines = km_lines(100_000);
    g.throughput(Throughput::Elements(lines.len() as u64));
    let src = Store::open(dir.path().join("src")).unwrap();
    src.bulk_apply(&mut lines.clone(), BulkOptions::default())
        .unwrap();
    let mut file = Vec::new();
    let opts = idgraph::BackupOptions::default();
    src.backup(&mut file, &opts, &|_| {}).unwrap();
    g.bench_function("backup (100,000 lines' store)", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(file.len());
            black_box(src.backup(&mut out, &opts, &|_| {}).unwrap())
        })
    });
    g.bench_function("export mapping + events (same store)", |b| {
        b.iter(|| {
            let mut n = 0u64;
            src.for_each_id(|i, p, _| {
                n += (i.len() + p.len()) as u64;
                Ok(())
            })
            .unwrap();
            src.for_each_event(|e| {
                n += e.event.len() as u64;
                Ok(())
            })
            .unwrap();
            black_box(n)
        })
    });
    let fresh = || dir.path().join(format!("r{}", rand::random::<u64>()));
    g.bench_function("restore (100,000 lines' backup)", |b| {
        b.iter_batched(
            fresh,
            |at| {
                let rep = idgraph::restore(
                    &file[..],
                    "bench",
                    &Config::new(&at),
                    &Default::default(),
                    &|_| {},
                )
                .unwrap();
                std::fs::remove_dir_all(&at).unwrap();
                black_box(rep)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("bulk_apply into a new store (the same lines)", |b| {
        b.iter_batched(
            || (fresh(), lines.clone()),
            |(at, mut ops)| {
                let s = Store::open(&at).unwrap();
                let rep = s.bulk_apply(&mut ops, BulkOptions::default()).unwrap();
                drop(s);
                std::fs::remove_dir_all(&at).unwrap();
                black_box(rep)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// `n` ops of the KISSmetrics export mix, parsed as `idgraph import` parses them.
fn km_lines(n: u64) -> Vec<Op> {
    let mut g = KmGen::new(1, n, 3);
    let mut line = String::new();
    let mut ops = Vec::new();
    for _ in 0..n {
        g.next_line(&mut line);
        ops.extend(idgraph::ingest::km_json::parse_line(line.trim_end(), None).unwrap());
    }
    ops
}

criterion_group!(benches, bench);
criterion_main!(benches);
