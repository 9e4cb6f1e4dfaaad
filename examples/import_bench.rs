//! Bulk import against one op at a time, on the same files, each into a new store:
//! lines/s, keys written per line, bytes on disk per ID, peak RSS.
//!
//! ```text
//! cargo run --release --example gen_km -- --lines 1000000 --out /tmp/km1m
//! cargo run --release --example import_bench -- /tmp/km1m bulk
//! cargo run --release --example import_bench -- /tmp/km1m single
//! ```
//! (one process per mode, so that each peak RSS is its own).

use std::time::Instant;

use idgraph::ingest::files::{FileSource, expand};
use idgraph::{BulkOptions, Config, OpSource};

#[path = "common/measure.rs"]
mod measure;
use measure::peak_rss_mib;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    measure::like_idgraph_import();
    let mut args = std::env::args().skip(1);
    let data = args
        .next()
        .ok_or("usage: import_bench DATA_DIR bulk|single")?;
    let mode = args.next().unwrap_or_else(|| "bulk".into());
    let dir = tempfile::tempdir()?;
    let store = Config::new(dir.path()).open()?;
    let mut source = FileSource::new(expand(&[data.into()], None)?, false, 0);
    let t = Instant::now();
    let keys = match mode.as_str() {
        "bulk" => {
            store
                .bulk_apply(&mut source, BulkOptions::default())?
                .keys_written
        }
        "single" => {
            source.for_each(&mut |op| store.apply(op).map(|_| ()))?;
            0
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    };
    store.flush()?;
    let secs = t.elapsed().as_secs_f64();
    let stats = store.stats()?;
    println!(
        "{mode}: {} lines in {secs:.1} s = {:.0} lines/s; {} IDs, {} persons; keys written per line {}; \
         {:.0} bytes on disk per ID; peak RSS {:.0} MiB",
        source.lines,
        source.lines as f64 / secs,
        stats.ids,
        stats.persons,
        if keys > 0 {
            format!("{:.2}", keys as f64 / source.lines as f64)
        } else {
            "n/a".into()
        },
        stats.disk_bytes as f64 / stats.ids as f64,
        peak_rss_mib()
    );
    Ok(())
}

/// The same allocator as the `idgraph` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
