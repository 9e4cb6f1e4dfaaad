//! Writes realistic KISSmetrics export data (JSON lines, the raw data export format) for tests
//! and benchmarks: about 70% events, 20% property sets, 10% aliases; persons of 1-5 IDs
//! (a named ID and anonymous IDs in KISSmetrics' format) plus a few of thousands; some
//! duplicated lines and some out of time order.
//!
//! `cargo run --release --example gen_km -- --lines 1000000 --out data` writes
//! `data/revisions/1.json`, `2.json`, ... (`--files`); without `--out`, standard output.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Lines to write.
    #[arg(long, default_value_t = 100_000)]
    lines: u64,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory to write `revisions/N.json` into (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Number of files.
    #[arg(long, default_value_t = 4)]
    files: u64,
    /// Persons holding thousands of IDs.
    #[arg(long, default_value_t = 3)]
    hubs: u64,
}

#[path = "common/km_gen.rs"]
mod km_gen;

use km_gen::KmGen;

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let mut generator = KmGen::new(a.seed, a.lines, a.hubs);
    let per_file = a.lines.div_ceil(a.files.max(1));
    let mut out: Box<dyn Write> = Box::new(std::io::BufWriter::new(std::io::stdout().lock()));
    let mut file_no = 0;
    let mut line = String::with_capacity(256);
    for i in 0..a.lines {
        if let Some(dir) = &a.out
            && i % per_file == 0
        {
            out.flush()?;
            file_no += 1;
            let dir = dir.join("revisions");
            std::fs::create_dir_all(&dir)?;
            let f = std::fs::File::create(dir.join(format!("{file_no}.json")))?;
            out = Box::new(std::io::BufWriter::with_capacity(1 << 20, f));
        }
        generator.next_line(&mut line);
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}
