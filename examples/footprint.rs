//! What a store's bytes are: sled's keys and values by kind (the first byte of the key, as
//! DESIGN.md "On disk" lists them), next to the files of the store's directory. The first
//! measurement of "a store smaller than its input" (BENCHMARKS.md, "Footprint").
//!
//!     cargo run --release --example footprint -- STORE
//!
//! Opens sled directly: run it on a closed store (a copy, if in doubt).

use std::collections::BTreeMap;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: footprint STORE")?;
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
    for kv in db.iter() {
        let (k, v) = kv?;
        let kind = match k.first() {
            Some(b'm') => format!("m {}", String::from_utf8_lossy(&k[1..])),
            Some(b'w') => "wintent".to_string(),
            Some(&b) if b.is_ascii_graphic() => (b as char).to_string(),
            Some(b) => format!("0x{b:02x}"),
            None => "(empty)".to_string(),
        };
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
    Ok(())
}
