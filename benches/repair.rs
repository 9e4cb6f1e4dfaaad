//! `unalias` and `forget` touch only the one person: cost against person size (10, 1,000 and
//! 100,000 IDs), each next to a raw-sled baseline doing the same number of key writes, in one
//! run. The store around the person holds 100,000 other IDs, so a cost that grew with the
//! store would show.
//!
//! `cargo bench --bench repair` (the 100,000-ID cases rebuild the person for every forget:
//! about two minutes); CI smoke-runs it with `cargo test --benches`, on smaller sizes (`sizes`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use idgraph::{Cause, Config, Identity, Op, Properties, Store};

/// (other IDs, person sizes). Under `cargo bench` (criterion gets `--bench`) the measured ones;
/// in criterion's test mode (`cargo test --benches`, or `--test`: each benchmark once, CI's
/// smoke run; criterion's own rule) a tenth of the other IDs and no 100,000-ID person — the
/// same code in seconds, not a minute.
fn sizes() -> (usize, &'static [usize]) {
    let flag = |f: &str| std::env::args().any(|a| a == f);
    if flag("--bench") && !flag("--test") {
        (100_000, &[10, 1_000, 100_000])
    } else {
        (10_000, &[10, 1_000])
    }
}

fn id(s: String) -> Identity {
    Identity::new(s).unwrap()
}

/// A store of `others` IDs in pairs, plus nothing else.
fn store(others: usize) -> Store {
    let s = Config::temporary().max_person_size(1 << 20).open().unwrap();
    let ops: Vec<Op> = (0..others / 2)
        .map(|i| Op::alias(id(format!("o{i}")), id(format!("o{i}b")), 1, Cause::Import))
        .collect();
    for chunk in ops.chunks(1_000) {
        s.apply_batch(chunk).unwrap();
    }
    s
}

/// Adds person `p`: a named hub linked to `size - 1` anonymous IDs (a squished identity's
/// shape), one event per ID.
fn person(s: &Store, p: &str, size: usize) {
    let hub = format!("{p}-hub");
    let mut ops = vec![Op::record(id(hub.clone()), "Seen", Properties::new(), 1)];
    for k in 1..size {
        let leaf = format!("{p}-{k}");
        ops.push(Op::alias(
            id(hub.clone()),
            id(leaf.clone()),
            1,
            Cause::Identify,
        ));
        ops.push(Op::record(id(leaf), "Seen", Properties::new(), 1));
    }
    for chunk in ops.chunks(1_000) {
        s.apply_batch(chunk).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let (others, sizes) = sizes();
    let s = store(others);
    let raw = sled::Config::new().temporary(true).open().unwrap();

    let mut g = c.benchmark_group("unalias");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &size in sizes {
        let p = format!("u{size}");
        person(&s, &p, size);
        let hub = format!("{p}-hub");
        g.bench_with_input(
            BenchmarkId::new("idgraph unalias", size),
            &size,
            |b, &size| {
                let mut k = 0;
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        k = k % (size - 1) + 1;
                        let leaf = format!("{p}-{k}");
                        let start = Instant::now();
                        black_box(s.unalias(&hub, &leaf).unwrap().unwrap());
                        t += start.elapsed();
                        s.apply(Op::alias(id(hub.clone()), id(leaf), 2, Cause::Identify))
                            .unwrap();
                    }
                    t
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("raw sled remove 1 key", size),
            &size,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for i in 0..iters {
                        let key = format!("e{i}");
                        raw.insert(key.as_bytes(), &[0u8; 40][..]).unwrap();
                        let start = Instant::now();
                        black_box(raw.remove(key.as_bytes()).unwrap());
                        t += start.elapsed();
                    }
                    t
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("forget");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &size in sizes {
        let mut n = 0;
        g.bench_with_input(
            BenchmarkId::new("idgraph forget", size),
            &size,
            |b, &size| {
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        let p = format!("f{size}-{n}");
                        person(&s, &p, size);
                        let start = Instant::now();
                        black_box(s.forget(&format!("{p}-hub")).unwrap().unwrap());
                        t += start.elapsed();
                    }
                    t
                })
            },
        );
        // The floor: one sled batch deleting the same keys (an ID record and an event per ID).
        g.bench_with_input(
            BenchmarkId::new("raw sled batch remove 2 keys per ID", size),
            &size,
            |b, &size| {
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        let mut batch = sled::Batch::default();
                        for k in 0..size {
                            for key in [format!("i{k}"), format!("v{k}")] {
                                raw.insert(key.as_bytes(), &[0u8; 40][..]).unwrap();
                                batch.remove(key.as_bytes());
                            }
                        }
                        let start = Instant::now();
                        raw.apply_batch(batch).unwrap();
                        t += start.elapsed();
                    }
                    t
                })
            },
        );
    }
    g.finish();
    assert!(s.verify().unwrap().is_ok());
}

criterion_group!(benches, bench);
criterion_main!(benches);
