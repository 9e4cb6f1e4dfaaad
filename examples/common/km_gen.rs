//! The KISSmetrics-like data generator shared by `gen_km` and `compare` (included with
//! `#[path]`; not an example of its own): about 70% events, 20% property sets, 10% aliases;
//! persons of 1-5 IDs (a named ID and anonymous IDs in KISSmetrics' format) plus a few of
//! thousands; 1% duplicated lines, 5% out of time order.
#![allow(dead_code)] // each example uses a part

use idgraph::rules::format_anon_id;

/// splitmix64: a small, fast, seedable generator.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
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

pub fn anon_id(seed: u64, person: u64, k: u64) -> String {
    let mut r =
        Rng(seed ^ person.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ k.wrapping_mul(0x9E37_79B9));
    let mut b = [0u8; 20];
    for chunk in b.chunks_mut(8) {
        let x = r.next().to_le_bytes();
        chunk.copy_from_slice(&x[..chunk.len()]);
    }
    format_anon_id(&b)
}

/// Writes KISSmetrics export lines, one at a time, deterministically from a seed.
pub struct KmGen {
    seed: u64,
    hubs: u64,
    persons: u64,
    rng: Rng,
    t: i64,
    recent: Vec<String>,
}

impl KmGen {
    /// A generator of about `lines` lines (it sizes the population from it).
    pub fn new(seed: u64, lines: u64, hubs: u64) -> KmGen {
        KmGen {
            seed,
            hubs,
            persons: (lines / 10).max(hubs + 1),
            rng: Rng(seed),
            t: 1_400_000_000,
            recent: Vec::new(),
        }
    }

    /// Appends the next line (with its newline) to `line`, which it clears first.
    pub fn next_line(&mut self, line: &mut String) {
        line.clear();
        let (seed, hubs, persons) = (self.seed, self.hubs, self.persons);
        let (rng, recent) = (&mut self.rng, &mut self.recent);
        let t = &mut self.t;
        // 1% duplicates of a recent line.
        if !recent.is_empty() && rng.chance(1) {
            line.push_str(&recent[rng.below(recent.len() as u64) as usize]);
            return;
        }
        *t += rng.below(3) as i64;
        // 5% out of order: up to a day earlier.
        let at = if rng.chance(5) {
            *t - rng.below(86_400) as i64
        } else {
            *t
        };
        // A few hub persons hold thousands of IDs; the rest 1-5 (a named ID + 0-4 anonymous).
        let hub = rng.chance(2);
        let p = if hub {
            rng.below(hubs)
        } else {
            hubs + rng.below(persons - hubs)
        };
        let anon_count = if hub { 3_000 } else { p % 5 };
        let named = format!("user{p}@example.com");
        let id = |rng: &mut Rng| {
            if anon_count == 0 || rng.chance(40) {
                named.clone()
            } else {
                anon_id(seed, p, rng.below(anon_count))
            }
        };
        let kind = rng.below(100);
        if kind < 10 && anon_count > 0 {
            let anon = anon_id(seed, p, rng.below(anon_count));
            let (x, y) = if rng.chance(50) {
                (&named, &anon)
            } else {
                (&anon, &named)
            };
            line.push_str(&format!(r#"{{"_p":"{x}","_t":{at},"_p2":"{y}"}}"#));
        } else if kind < 30 {
            line.push_str(&format!(r#"{{"_p":"{}","_t":{at}"#, id(rng)));
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
            line.push_str(&format!(r#"{{"_p":"{}","_t":{at},"_n":"{e}""#, id(rng)));
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
        if recent.len() < 1024 {
            recent.push(line.clone());
        } else {
            let slot = rng.below(1024) as usize;
            recent[slot] = line.clone();
        }
    }
}
