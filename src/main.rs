//! `idgraph`: a thin command line over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use idgraph::{AliasOutcome, Cause, Config, Identity, Op, Outcome, Properties, Store};
use serde_json::json;

/// An identity graph: which visitor IDs are one person, what each person did.
#[derive(Parser)]
#[command(version, about, max_term_width = 100)]
struct Cli {
    /// The store's directory.
    #[arg(long, global = true, env = "IDGRAPH_DB", default_value = "idgraph.db")]
    db: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Link two IDs: they become one person.
    Alias {
        /// One ID.
        a: String,
        /// The other ID.
        b: String,
        /// When, in Unix seconds (default: now).
        #[arg(long)]
        at: Option<i64>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record an event done by an ID.
    Record {
        /// Who did it.
        id: String,
        /// The event name.
        event: String,
        /// Properties of the event, as name=value.
        props: Vec<String>,
        /// When, in Unix seconds (default: now).
        #[arg(long)]
        at: Option<i64>,
    },
    /// Set properties on an ID's person.
    Set {
        /// On whom.
        id: String,
        /// Properties, as name=value (at least one).
        #[arg(required = true)]
        props: Vec<String>,
        /// When, in Unix seconds (default: now).
        #[arg(long)]
        at: Option<i64>,
    },
    /// Show the person an ID belongs to.
    Resolve {
        /// The ID.
        id: String,
        /// Print `{"person": ..., "ids": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// List a person's events, from all its IDs, in time order.
    Events {
        /// Any ID of the person.
        id: String,
        /// Print a JSON array of `{"id", "event", "at", "properties"}`.
        #[arg(long)]
        json: bool,
    },
    /// Show a person's properties (latest value of each).
    Props {
        /// Any ID of the person.
        id: String,
        /// Print a JSON object name → value.
        #[arg(long)]
        json: bool,
    },
    /// Check every invariant of the store.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Count IDs, persons, edges, events, properties, bytes on disk.
    Stats {
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay tracker commands (one JSON object per line) through the identity rules and apply
    /// the resulting ops to the store.
    Simulate {
        /// The file of commands; `-` reads standard input.
        file: PathBuf,
        /// Run the rules but leave the store untouched.
        #[arg(long)]
        dry_run: bool,
        /// Skip bad lines (each reported on stderr) instead of stopping.
        #[arg(long)]
        skip_invalid: bool,
        /// Print one JSON object per input line.
        #[arg(long)]
        json: bool,
        /// The API key the requests carry.
        #[arg(long, default_value = "demo")]
        key: String,
        /// Generate anonymous IDs from this seed (default: random).
        #[arg(long)]
        seed: Option<u64>,
    },
}

/// A failure with its exit status: 1 = not found / check failed, 2 = bad input, 3 = store error.
struct Fail(u8, String);

impl From<idgraph::Error> for Fail {
    fn from(e: idgraph::Error) -> Self {
        match e {
            idgraph::Error::InvalidId { .. } | idgraph::Error::InvalidName { .. } => {
                Fail(2, e.to_string())
            }
            _ => Fail(3, e.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprintln!("idgraph: {msg}");
            ExitCode::from(code)
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn id(s: &str) -> Result<Identity, Fail> {
    Ok(Identity::new(s)?)
}

fn props(pairs: &[String]) -> Result<Properties, Fail> {
    let mut p = Properties::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Fail(2, format!("property {pair:?} is not name=value")));
        };
        p.insert(k, v)?;
    }
    Ok(p)
}

/// Opens the store for writing (creating it when missing).
fn open_rw(db: &PathBuf) -> Result<Store, Fail> {
    Ok(Store::open(db)?)
}

/// Opens the store for a query; `None` when it does not exist (nothing is created).
fn open_ro(db: &PathBuf) -> Result<Option<Store>, Fail> {
    if !db.exists() {
        return Ok(None);
    }
    Ok(Some(Config::new(db).open()?))
}

fn unknown(id: &str) -> Fail {
    Fail(1, format!("unknown ID {id:?}: the store has never seen it"))
}

fn print_json(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON output of plain data")
    );
}

fn write(db: &PathBuf, op: Op) -> Result<Outcome, Fail> {
    let store = open_rw(db)?;
    let out = store.apply(op)?;
    store.flush()?;
    Ok(out)
}

fn run(cli: Cli) -> Result<(), Fail> {
    let db = &cli.db;
    match cli.cmd {
        Cmd::Simulate {
            file,
            dry_run,
            skip_invalid,
            json,
            key,
            seed,
        } => simulate(db, &file, dry_run, skip_invalid, json, &key, seed)?,
        Cmd::Alias { a, b, at, json } => {
            let (ia, ib) = (id(&a)?, id(&b)?);
            let op = Op::alias(ia, ib, at.unwrap_or_else(now), Cause::Api);
            let Outcome::Alias(o) = write(db, op)? else {
                unreachable!("alias has an alias outcome")
            };
            let (word, text, reason) = match &o {
                AliasOutcome::Joined { size } => (
                    "joined",
                    format!("joined: {a} and {b} are now one person of {size} IDs"),
                    None,
                ),
                AliasOutcome::AlreadySame => (
                    "already_same",
                    format!("already one person: {a} and {b}"),
                    None,
                ),
                AliasOutcome::Refused(r) => (
                    "refused",
                    format!("refused: {r}; {a} and {b} stay apart"),
                    Some(r.to_string()),
                ),
            };
            if json {
                let mut v = json!({"outcome": word, "a": a, "b": b});
                if let AliasOutcome::Joined { size } = o {
                    v["size"] = json!(size);
                }
                if let Some(r) = reason {
                    v["reason"] = json!(r);
                }
                print_json(&v);
            } else {
                println!("{text}");
            }
        }
        Cmd::Record {
            id: who,
            event,
            props: p,
            at,
        } => {
            let op = Op::record(id(&who)?, event, props(&p)?, at.unwrap_or_else(now));
            op.validate()?;
            write(db, op)?;
        }
        Cmd::Set {
            id: who,
            props: p,
            at,
        } => {
            let op = Op::set(id(&who)?, props(&p)?, at.unwrap_or_else(now));
            write(db, op)?;
        }
        Cmd::Resolve { id: who, json } => {
            id(&who)?;
            let p = match open_ro(db)? {
                Some(s) => s.resolve(&who)?,
                None => None,
            };
            let p = p.ok_or_else(|| unknown(&who))?;
            if json {
                print_json(&p);
            } else {
                println!("person: {}", p.person);
                println!("ids ({}):", p.ids.len());
                for i in &p.ids {
                    println!("  {i}");
                }
            }
        }
        Cmd::Events { id: who, json } => {
            id(&who)?;
            let store = open_ro(db)?.ok_or_else(|| unknown(&who))?;
            if !store.contains(&who) {
                return Err(unknown(&who));
            }
            let events = store.events(&who)?;
            if json {
                print_json(&events);
            } else {
                for e in &events {
                    let props: Vec<String> = e
                        .properties
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    println!("{}\t{}\t{}\t{}", e.at, e.id, e.event, props.join(" "));
                }
            }
        }
        Cmd::Props { id: who, json } => {
            id(&who)?;
            let store = open_ro(db)?.ok_or_else(|| unknown(&who))?;
            if !store.contains(&who) {
                return Err(unknown(&who));
            }
            let ps = store.properties(&who)?;
            if json {
                let mut m = serde_json::Map::new();
                for p in ps {
                    m.insert(p.name, serde_json::to_value(&p.value).expect("plain value"));
                }
                print_json(&m);
            } else {
                for p in ps {
                    println!("{} = {}\t(at {} under {})", p.name, p.value, p.at, p.id);
                }
            }
        }
        Cmd::Verify { json } => {
            let rep = match open_ro(db)? {
                Some(s) => s.verify()?,
                None => idgraph::VerifyReport::default(),
            };
            if json {
                print_json(&rep);
            } else {
                println!(
                    "checked {} IDs, {} persons, {} edges, {} events, {} properties",
                    rep.ids, rep.persons, rep.edges, rep.events, rep.properties
                );
                for p in &rep.problems {
                    println!("problem: {p}");
                }
                if rep.is_ok() {
                    println!("ok: every invariant holds");
                }
            }
            if !rep.is_ok() {
                return Err(Fail(1, format!("{} broken invariants", rep.problem_count)));
            }
        }
        Cmd::Stats { json } => {
            let st = match open_ro(db)? {
                Some(s) => s.stats()?,
                None => idgraph::Stats::default(),
            };
            if json {
                print_json(&st);
            } else {
                println!("ids             {}", st.ids);
                println!("persons         {}", st.persons);
                println!("largest person  {}", st.largest_person);
                println!("alias edges     {}", st.edges);
                println!("refused merges  {}", st.refused_merges);
                println!("events          {}", st.events);
                println!("properties      {}", st.properties);
                println!("bytes on disk   {}", st.disk_bytes);
            }
        }
    }
    Ok(())
}

fn simulate(
    db: &PathBuf,
    file: &PathBuf,
    dry_run: bool,
    skip_invalid: bool,
    json: bool,
    key: &str,
    seed: Option<u64>,
) -> Result<(), Fail> {
    use idgraph::rules::sim::{Simulator, parse_line};
    use idgraph::rules::{AnonIdSource, RandomIds};
    use std::io::BufRead;

    let name = file.display().to_string();
    let reader: Box<dyn BufRead> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).map_err(|e| Fail(2, format!("{name}: {e}")))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut sim = Simulator::with_ids(key, move |browser| -> Box<dyn AnonIdSource> {
        match seed {
            Some(s) => {
                let h = browser.bytes().fold(s ^ 0xcbf2_9ce4_8422_2325, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                Box::new(RandomIds::seeded(h))
            }
            None => Box::new(RandomIds::new()),
        }
    });
    let mut outcomes = Vec::new();
    let mut ops = Vec::new();
    let mut skipped = 0usize;
    for (i, text) in reader.lines().enumerate() {
        let n = i + 1;
        let text = text.map_err(|e| Fail(2, format!("{name}:{n}: cannot read: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(&text).and_then(|l| sim.apply(n, &l)) {
            Ok((out, fx)) => {
                outcomes.push(out);
                ops.extend(fx.ops);
            }
            Err(e) if skip_invalid => {
                eprintln!("{name}:{n}: {e} (skipped)");
                skipped += 1;
            }
            Err(e) => {
                return Err(Fail(
                    2,
                    format!(
                        "{name}:{n}: {e}; nothing was applied (--skip-invalid skips bad lines)"
                    ),
                ));
            }
        }
    }
    if !dry_run && !ops.is_empty() {
        let store = open_rw(db)?;
        let (mut joined, mut refused) = (0usize, 0usize);
        for chunk in ops.chunks(1000) {
            for o in store.apply_batch(chunk)? {
                match o {
                    Outcome::Alias(AliasOutcome::Joined { .. }) => joined += 1,
                    Outcome::Alias(AliasOutcome::Refused(_)) => refused += 1,
                    _ => {}
                }
            }
        }
        store.flush()?;
        eprintln!(
            "applied {} ops to {} ({joined} merges, {refused} refused){}",
            ops.len(),
            db.display(),
            if skipped > 0 {
                format!("; skipped {skipped} bad lines")
            } else {
                String::new()
            }
        );
    }
    for o in &outcomes {
        if json {
            println!("{}", serde_json::to_string(o).expect("plain data"));
        } else {
            println!(
                "{:>5}  {:<8}  km_ai={}  km_ni={}  KM.i()={}",
                o.line,
                o.browser,
                o.km_ai,
                o.km_ni.as_deref().unwrap_or("-"),
                o.current
            );
            for r in &o.requests {
                println!("{:>5}  {:<8}    sent {r}", "", "");
            }
        }
    }
    Ok(())
}
