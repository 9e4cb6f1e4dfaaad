//! Scale check: builds a store of N IDs (persons of 1-5 IDs, one event per ID, in batches of
//! 100 ops), then reports bytes on disk per ID, peak RSS, and how long reopening takes (the
//! graph is loaded into memory at open).
//!
//! `cargo run --release --example scale -- 1000000`

use std::time::Instant;

use idgraph::{Cause, Config, Identity, Op, Properties};

#[path = "common/measure.rs"]
mod measure;
use measure::{peak_rss_mib, rss_mib};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(200_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let store = Config::new(dir.path()).open()?;
    let t = Instant::now();
    let (mut ids, mut p, mut ops) = (0usize, 0usize, Vec::with_capacity(128));
    while ids < n {
        let named = Identity::new(format!("user{p}@example.com"))?;
        ops.push(Op::record(
            named.clone(),
            "Signed Up",
            Properties::new(),
            p as i64,
        ));
        ids += 1;
        for k in 0..(p * 7 + 3) % 5 {
            let anon = Identity::new(format!("anon-{p}-{k}"))?;
            ops.push(Op::record(
                anon.clone(),
                "Viewed",
                Properties::new(),
                p as i64,
            ));
            ops.push(Op::alias(named.clone(), anon, p as i64, Cause::Identify));
            ids += 1;
        }
        p += 1;
        if ops.len() >= 100 {
            store.apply_batch(&ops)?;
            ops.clear();
        }
    }
    store.apply_batch(&ops)?;
    store.flush()?;
    let build = t.elapsed();
    let stats = store.stats()?;
    drop(store);
    let before = rss_mib();
    let t = Instant::now();
    let store = Config::new(dir.path()).open()?;
    let reopen = t.elapsed();
    let after = rss_mib();
    let t = Instant::now();
    let ok = store.verify()?.is_ok();
    let verify = t.elapsed();
    println!(
        "{} IDs, {} persons, {} events: built in {:.1} s ({:.0} ops/s in batches of ~100), \
         {:.0} bytes on disk per ID, reopen {:.2} s (RSS +{:.0} MiB), verify {:.2} s ({}), peak RSS {:.0} MiB",
        stats.ids,
        stats.persons,
        stats.events,
        build.as_secs_f64(),
        (stats.ids as f64 * 2.0 - stats.persons as f64) / build.as_secs_f64(),
        stats.disk_bytes as f64 / stats.ids as f64,
        reopen.as_secs_f64(),
        after - before,
        verify.as_secs_f64(),
        if ok { "ok" } else { "FAILED" },
        peak_rss_mib()
    );
    Ok(())
}
