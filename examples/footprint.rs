//! What a store's bytes are: sled's keys and values by kind (the first byte of the key, as
//! DESIGN.md "On disk" lists them), next to the files of the store's directory. The first
//! measurement of "a store smaller than its input" (BENCHMARKS.md, "Footprint").
//!
//!     cargo run --release --example footprint -- STORE [--compress]
//!
//! With `--compress`, what each kind's values would take compressed one by one as a store of
//! compressed blocks would keep them: zstd at levels 1 and 3, and at level 3 with a
//! dictionary of 64 KiB trained on a sample of that kind's values (issue 34's question: how
//! small the data gets before any store overhead).
//!
//! Opens sled directly: run it on a closed store (a copy, if in doubt).

use std::collections::BTreeMap;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: footprint STORE [--compress]")?;
    let compress = std::env::args().any(|a| a == "--compress");
    let dir = Path::new(&dir);
    let mut files = 0u64;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let len = if e.file_type()?.is_dir() {
            std::fs::read_dir(e.path())?
                .map(|f| Ok(f?.metadata()?.len()))
                .sum::<std::io::Result<u64>>()?
        } else {
            e.metadata()?.len()
        };
        println!(
            "file {:<28} {:>14} bytes",
            e.file_name().to_string_lossy(),
            len
        );
        files += len;
    }
    println!("file {:<28} {files:>14} bytes", "(all)");
    let db = sled::Config::new().path(dir).open()?;
    // kind → (keys, key bytes, value bytes)
    let mut kinds: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    // kind → its values, kept for --compress (the blocks' kinds only)
    let mut values: BTreeMap<String, Vec<sled::IVec>> = BTreeMap::new();
    for kv in db.iter() {
        let (k, v) = kv?;
        let kind = match k.first() {
            Some(b'm') => format!("m {}", String::from_utf8_lossy(&k[1..])),
            Some(b'w') => "wintent".to_string(),
            Some(&b) if b.is_ascii_graphic() => (b as char).to_string(),
            Some(b) => format!("0x{b:02x}"),
            None => "(empty)".to_string(),
        };
        if compress && matches!(kind.as_str(), "p" | "b" | "e") {
            values.entry(kind.clone()).or_default().push(v.clone());
        }
        let e = kinds.entry(kind).or_default();
        e.0 += 1;
        e.1 += k.len() as u64;
        e.2 += v.len() as u64;
    }
    let (mut n, mut kb, mut vb) = (0, 0, 0);
    println!(
        "{:<22} {:>10} {:>14} {:>14} {:>10}",
        "kind", "keys", "key bytes", "value bytes", "avg value"
    );
    for (kind, (keys, k, v)) in &kinds {
        println!(
            "{kind:<22} {keys:>10} {k:>14} {v:>14} {:>10}",
            v / keys.max(&1)
        );
        (n, kb, vb) = (n + keys, kb + k, vb + v);
    }
    println!("{:<22} {n:>10} {kb:>14} {vb:>14}", "(all)");
    if compress {
        compressed(&values)?;
    }
    Ok(())
}

/// Each kind's values compressed one by one: zstd 1, zstd 3, zstd 3 with a trained dictionary.
fn compressed(
    values: &BTreeMap<String, Vec<sled::IVec>>,
) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{:<6} {:>14} {:>14} {:>14} {:>14} {:>10} {:>16}",
        "kind", "value bytes", "zstd 1", "zstd 3", "zstd 3 + dict", "dict s", "zstd 3, 64 KiB"
    );
    for (kind, vs) in values {
        let raw: usize = vs.iter().map(|v| v.len()).sum();
        let each = |level| -> std::io::Result<usize> {
            let mut c = zstd::bulk::Compressor::new(level)?;
            vs.iter().map(|v| Ok(c.compress(v)?.len())).sum()
        };
        let (z1, z3) = (each(1)?, each(3)?);
        // A sample of up to 20,000 values spread over the kind (dictionary training wants
        // ~100x the dictionary's size).
        let t = std::time::Instant::now();
        let step = (vs.len() / 20_000).max(1);
        let sample: Vec<&[u8]> = vs.iter().step_by(step).map(|v| &v[..]).collect();
        let dict = zstd::dict::from_samples(&sample, 64 << 10)?;
        let trained = t.elapsed().as_secs_f64();
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict)?;
        let zd: usize = vs
            .iter()
            .map(|v| Ok(c.compress(v)?.len()))
            .sum::<std::io::Result<usize>>()?
            + dict.len();
        // Consecutive values (key order) together, as a file of larger cold blocks would keep
        // them: groups of at least 64 KiB.
        let mut grouped = 0;
        let mut group = Vec::with_capacity(80 << 10);
        let mut c = zstd::bulk::Compressor::new(3)?;
        for (i, v) in vs.iter().enumerate() {
            group.extend_from_slice(v);
            if group.len() >= 64 << 10 || i + 1 == vs.len() {
                grouped += c.compress(&group)?.len();
                group.clear();
            }
        }
        println!("{kind:<6} {raw:>14} {z1:>14} {z3:>14} {zd:>14} {trained:>10.1} {grouped:>16}");
    }
    Ok(())
}
