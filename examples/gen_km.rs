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
use idgraph::rules::format_anon_id;

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

/// splitmix64: a small, fast, seedable generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const EVENTS: &[&str] = &[
    "Visited Site",
    "Viewed Product",
    "Added to Cart",
    "Signed Up",
    "Logged In",
    "Purchased",
    "Viewed Pricing",
    "Started Trial",
    "Upgraded",
    "Canceled",
    "Opened Email",
    "Clicked Link",
    "Searched",
    "Shared",
    "Invited Friend",
    "Downloaded App",
    "Watched Video",
    "Left Review",
];
const PROPS: &[(&str, &[&str])] = &[
    ("plan", &["free", "basic", "pro", "team", "enterprise"]),
    ("country", &["NO", "SE", "DE", "US", "BR", "JP", "IN", "FR"]),
    (
        "referrer",
        &["google", "newsletter", "twitter", "direct", "partner"],
    ),
    ("device", &["desktop", "mobile", "tablet"]),
    ("campaign", &["spring", "summer", "launch", "retarget"]),
];

fn anon_id(seed: u64, person: u64, k: u64) -> String {
    let mut r =
        Rng(seed ^ person.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ k.wrapping_mul(0x9E37_79B9));
    let mut b = [0u8; 20];
    for chunk in b.chunks_mut(8) {
        let x = r.next().to_le_bytes();
        chunk.copy_from_slice(&x[..chunk.len()]);
    }
    format_anon_id(&b)
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let persons = (a.lines / 10).max(a.hubs + 1);
    let mut rng = Rng(a.seed);
    let mut t: i64 = 1_400_000_000;
    let per_file = a.lines.div_ceil(a.files.max(1));
    let mut out: Box<dyn Write> = Box::new(std::io::BufWriter::new(std::io::stdout().lock()));
    let mut file_no = 0;
    let mut recent: Vec<String> = Vec::new();
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
        // 1% duplicates of a recent line.
        if !recent.is_empty() && rng.chance(1) {
            let dup = recent[rng.below(recent.len() as u64) as usize].clone();
            out.write_all(dup.as_bytes())?;
            continue;
        }
        t += rng.below(3) as i64;
        // 5% out of order: up to a day earlier.
        let at = if rng.chance(5) {
            t - rng.below(86_400) as i64
        } else {
            t
        };
        // A few hub persons hold thousands of IDs; the rest 1-5 (a named ID + 0-4 anonymous).
        let hub = rng.chance(2);
        let p = if hub {
            rng.below(a.hubs)
        } else {
            a.hubs + rng.below(persons - a.hubs)
        };
        let anon_count = if hub { 3_000 } else { p % 5 };
        let named = format!("user{p}@example.com");
        let id = |rng: &mut Rng| {
            if anon_count == 0 || rng.chance(40) {
                named.clone()
            } else {
                anon_id(a.seed, p, rng.below(anon_count))
            }
        };
        line.clear();
        let kind = rng.below(100);
        if kind < 10 && anon_count > 0 {
            let anon = anon_id(a.seed, p, rng.below(anon_count));
            let (x, y) = if rng.chance(50) {
                (&named, &anon)
            } else {
                (&anon, &named)
            };
            line.push_str(&format!(r#"{{"_p":"{x}","_t":{at},"_p2":"{y}"}}"#));
        } else if kind < 30 {
            line.push_str(&format!(r#"{{"_p":"{}","_t":{at}"#, id(&mut rng)));
            for _ in 0..1 + rng.below(3) {
                let (k, vals) = PROPS[rng.below(PROPS.len() as u64) as usize];
                line.push_str(&format!(
                    r#","{k}":"{}""#,
                    vals[rng.below(vals.len() as u64) as usize]
                ));
            }
            line.push('}');
        } else {
            let e = EVENTS[rng.below(EVENTS.len() as u64) as usize];
            line.push_str(&format!(
                r#"{{"_p":"{}","_t":{at},"_n":"{e}""#,
                id(&mut rng)
            ));
            if rng.chance(50) {
                let (k, vals) = PROPS[rng.below(PROPS.len() as u64) as usize];
                line.push_str(&format!(
                    r#","{k}":"{}""#,
                    vals[rng.below(vals.len() as u64) as usize]
                ));
            }
            if rng.chance(20) {
                line.push_str(&format!(
                    r#","amount":{}"#,
                    rng.below(10_000) as f64 / 100.0
                ));
            }
            line.push('}');
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        if recent.len() < 1024 {
            recent.push(line.clone());
        } else {
            let slot = rng.below(1024) as usize;
            recent[slot] = line.clone();
        }
    }
    out.flush()
}
