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
    /// sled's page cache in MiB (more is faster for large imports, and uses more memory).
    #[arg(long, global = true, env = "IDGRAPH_CACHE_MB", default_value_t = 256)]
    cache_mb: u64,
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
    /// Import KISSmetrics exports (JSON lines) and CSV files fast.
    Import {
        /// Files, directories (their *.json and *.csv files and revisions/ folder) or `-`.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The format, when the file names do not tell it.
        #[arg(long, value_parser = ["km-json", "csv"])]
        format: Option<String>,
        /// Skip bad lines (each reported on stderr, up to 20, then counted) instead of stopping.
        #[arg(long)]
        skip_invalid: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Keys per sled batch while writing.
        #[arg(long, default_value_t = idgraph::BulkOptions::default().batch_keys, hide = true)]
        batch_keys: usize,
    },
    /// Export the store: every ID with its person, or every event de-aliased.
    Export {
        #[command(subcommand)]
        what: ExportWhat,
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
    /// Why two IDs are one person: the shortest chain of alias links between them, each with
    /// its cause, time and source.
    Explain {
        /// One ID.
        a: String,
        /// The other ID.
        b: String,
        /// Print `{"same_person": bool, "edges": [{"a", "b", "cause", "at", "source"}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Remove the direct link between two IDs and split their person along the links that
    /// remain; events and properties follow their IDs.
    Unalias {
        /// One ID.
        a: String,
        /// The other ID.
        b: String,
        /// Print the resulting persons as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a whole person: every ID, link, event and property (privacy requests).
    Forget {
        /// Any ID of the person.
        id: String,
        /// Do not ask for confirmation (required when not on a terminal).
        #[arg(long)]
        yes: bool,
        /// Print what was deleted as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the merges the guardrails refused (blocked IDs, persons too large).
    Refused {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The largest persons and the IDs with the most links: where squished identities show up.
    Hubs {
        /// How many of each.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a person's alias graph: Graphviz DOT, or SVG drawn in-process.
    Graph {
        /// Any ID of the person.
        id: String,
        /// `dot` or `svg`.
        #[arg(long, default_value = "dot", value_parser = ["dot", "svg"])]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Run the tracking server: the KISSmetrics HTTP API (/e /s /a), the browser tracker
    /// (/km.js), a JSON query API (/api/...), /healthz, /metrics and a demo page (/).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// An accepted API key (repeat for several). Without one, the key `demo` is accepted.
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Bearer token of the query API. Without it the API is off, except that on a loopback
        /// address with the demo on, a random token is made for the demo page and printed.
        #[arg(long, env = "IDGRAPH_READ_TOKEN")]
        read_token: Option<String>,
        /// Bearer token of the endpoints that change the store (POST /api/unalias, DELETE
        /// /api/people/ID). Without it they are off.
        #[arg(long, env = "IDGRAPH_ADMIN_TOKEN")]
        admin_token: Option<String>,
        /// Acknowledge a request only once its data is flushed to disk (group commit).
        #[arg(long)]
        sync: bool,
        /// Do not serve the demo page at /.
        #[arg(long)]
        no_demo: bool,
    },
}

#[derive(Subcommand)]
enum ExportWhat {
    /// Every ID with its person's canonical ID.
    Mapping {
        /// `csv` (id,person), `jsonl` ({"id", "person"}) or `km-json` (alias lines `_p`/`_p2`,
        /// importable with `idgraph import`).
        #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl", "km-json"])]
        format: String,
    },
    /// Every event, with `_p` replaced by its person's canonical ID and the original ID kept in
    /// `_p_original`.
    Events {
        /// `km-json` (one JSON object per line) or `csv`.
        #[arg(long, default_value = "km-json", value_parser = ["km-json", "csv"])]
        format: String,
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
            idgraph::Error::Input(_) => Fail(2, e.to_string()),
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

/// The store the command line names, and how to open it.
struct Db {
    path: PathBuf,
    cache_mb: u64,
}

impl Db {
    fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }
}

fn config(db: &Db) -> Config {
    Config::new(&db.path).cache_capacity(db.cache_mb.max(1) << 20)
}

/// Opens the store for writing (creating it when missing).
fn open_rw(db: &Db) -> Result<Store, Fail> {
    Ok(config(db).open()?)
}

/// Opens the store for a query; `None` when it does not exist (nothing is created).
fn open_ro(db: &Db) -> Result<Option<Store>, Fail> {
    if !db.path.exists() {
        return Ok(None);
    }
    Ok(Some(config(db).open()?))
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

fn write(db: &Db, op: Op) -> Result<Outcome, Fail> {
    let store = open_rw(db)?;
    let out = store.apply(op)?;
    store.flush()?;
    Ok(out)
}

fn run(cli: Cli) -> Result<(), Fail> {
    let db = &Db {
        path: cli.db.clone(),
        cache_mb: cli.cache_mb,
    };
    match cli.cmd {
        Cmd::Import {
            paths,
            format,
            skip_invalid,
            json,
            batch_keys,
        } => import(
            db,
            &paths,
            format.as_deref(),
            skip_invalid,
            json,
            batch_keys,
        )?,
        Cmd::Export { what } => export(db, what)?,
        Cmd::Simulate {
            file,
            dry_run,
            skip_invalid,
            json,
            key,
            seed,
        } => simulate(db, &file, dry_run, skip_invalid, json, &key, seed)?,
        Cmd::Explain { a, b, json } => explain(db, &a, &b, json)?,
        Cmd::Unalias { a, b, json } => unalias(db, &a, &b, json)?,
        Cmd::Forget { id: who, yes, json } => forget(db, &who, yes, json)?,
        Cmd::Refused { json } => refused(db, json)?,
        Cmd::Hubs { top, json } => hubs(db, top, json)?,
        Cmd::Graph {
            id: who,
            format,
            output,
        } => graph(db, &who, &format, output.as_deref())?,
        Cmd::Serve {
            addr,
            keys,
            read_token,
            admin_token,
            sync,
            no_demo,
        } => serve(db, addr, keys, read_token, admin_token, sync, !no_demo)?,
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
    db: &Db,
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

fn import(
    db: &Db,
    paths: &[PathBuf],
    format: Option<&str>,
    skip_invalid: bool,
    json: bool,
    batch_keys: usize,
) -> Result<(), Fail> {
    use idgraph::ingest::files::{FileSource, Format, expand};
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::cell::Cell;
    use std::rc::Rc;

    let forced = format.map(|f| f.parse::<Format>().expect("clap checked the value"));
    let inputs = expand(paths, forced)?;
    let files = inputs.len();
    let started = std::time::Instant::now();
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let reported = Rc::new(Cell::new(0u64));
    let shown = reported.clone();
    let progress = bar.clone();
    let mut source = FileSource::new(inputs, skip_invalid, now())
        .on_skip(move |msg| {
            let n = shown.get() + 1;
            shown.set(n);
            if n <= 20 {
                eprintln!("{msg} (skipped)");
            } else if n == 21 {
                eprintln!("... more bad lines skipped; the summary counts them");
            }
        })
        .on_progress(move |pass, bytes, lines| {
            let prefix = match pass {
                idgraph::Pass::Check => "checking",
                idgraph::Pass::Write => "writing",
            };
            if progress.prefix() != prefix {
                progress.set_prefix(prefix);
                progress.reset_elapsed();
            }
            let secs = progress.elapsed().as_secs_f64().max(1e-3);
            progress.set_message(format!("{:.0} lines/s", lines as f64 / secs));
            progress.set_position(bytes);
        });
    let total = source.total_bytes();
    if total > 0 {
        bar.set_length(total);
    }
    let store = open_rw(db)?;
    let opts = idgraph::BulkOptions {
        batch_keys,
        ..Default::default()
    };
    let rep = match store.bulk_apply(&mut source, opts) {
        Ok(r) => r,
        Err(e @ idgraph::Error::Input(_)) => {
            bar.finish_and_clear();
            return Err(Fail(2, format!("{e}; nothing was imported")));
        }
        Err(e) => return Err(e.into()),
    };
    store.flush()?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let stats = store.stats_quick();
    let rate = source.lines as f64 / secs.max(1e-9);
    if json {
        print_json(&json!({
            "files": files, "lines": source.lines, "skipped": source.skipped,
            "events": rep.events, "sets": rep.sets, "aliases": rep.aliases,
            "joined": rep.joined, "refused": rep.refused, "new_ids": rep.new_ids,
            "ids": stats.ids, "persons": stats.persons, "keys_written": rep.keys_written,
            "seconds": secs, "lines_per_second": rate,
        }));
    } else {
        eprintln!(
            "imported {} lines from {files} files{}: {} events, {} sets, {} aliases ({} merges, {} refused); \
             {} new IDs, {} IDs in {} persons; {} keys written; {secs:.1} s ({rate:.0} lines/s)",
            source.lines,
            if source.skipped > 0 {
                format!(" ({} bad lines skipped)", source.skipped)
            } else {
                String::new()
            },
            rep.events,
            rep.sets,
            rep.aliases,
            rep.joined,
            rep.refused,
            rep.new_ids,
            stats.ids,
            stats.persons,
            rep.keys_written,
        );
    }
    Ok(())
}

fn export(db: &Db, what: ExportWhat) -> Result<(), Fail> {
    use std::io::Write;
    let Some(store) = open_ro(db)? else {
        return Ok(()); // an empty store exports nothing
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let io = |e: std::io::Error| idgraph::Error::Input(format!("writing the export: {e}"));
    let csv_err = |e: csv::Error| idgraph::Error::Input(format!("writing the export: {e}"));
    match what {
        ExportWhat::Mapping { format } if format == "csv" => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(["id", "person"]).map_err(csv_err)?;
            store.for_each_id(|id, person, _| w.write_record([id, person]).map_err(csv_err))?;
            w.flush().map_err(io)?;
        }
        ExportWhat::Mapping { format } => {
            store.for_each_id(|id, person, first_seen| {
                if format == "jsonl" {
                    writeln!(out, "{}", json!({"id": id, "person": person})).map_err(io)
                } else if id != person {
                    writeln!(
                        out,
                        "{}",
                        json!({"_p": person, "_t": first_seen, "_p2": id})
                    )
                    .map_err(io)
                } else {
                    Ok(())
                }
            })?;
        }
        ExportWhat::Events { format } if format == "csv" => {
            // One pass for the property names (CSV needs its columns up front), one to write.
            let mut names: Vec<String> = Vec::new();
            store.for_each_event(|e| {
                for (k, _) in e.properties.iter() {
                    if !names.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                        names.push(k.to_owned());
                    }
                }
                Ok(())
            })?;
            if names.len() > 9 {
                return Err(Fail(
                    2,
                    format!(
                        "the events have {} property names; the CSV format holds at most 10 Prop: \
                         columns (one is _p_original): use --format km-json",
                        names.len()
                    ),
                ));
            }
            let mut w = csv::Writer::from_writer(&mut out);
            let mut header = vec![
                "Identity".to_string(),
                "Timestamp".into(),
                "Event".into(),
                "Prop:_p_original".into(),
            ];
            header.extend(names.iter().map(|n| format!("Prop:{n}")));
            w.write_record(&header).map_err(csv_err)?;
            store.for_each_event(|e| {
                let mut row = vec![e.person, e.at.to_string(), e.event, e.id];
                for n in &names {
                    row.push(
                        e.properties
                            .get(n)
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                    );
                }
                w.write_record(&row).map_err(csv_err)
            })?;
            w.flush().map_err(io)?;
        }
        ExportWhat::Events { .. } => {
            store.for_each_event(|e| {
                let mut m = serde_json::Map::new();
                m.insert("_p".into(), json!(e.person));
                m.insert("_t".into(), json!(e.at));
                m.insert("_n".into(), json!(e.event));
                m.insert("_p_original".into(), json!(e.id));
                for (k, v) in e.properties.iter() {
                    m.insert(k.to_owned(), serde_json::to_value(v).expect("plain value"));
                }
                writeln!(out, "{}", serde_json::Value::Object(m)).map_err(io)
            })?;
        }
    }
    out.flush()
        .map_err(|e| Fail(3, format!("writing the export: {e}")))?;
    Ok(())
}

/// sled allocates and frees small buffers at a high rate; mimalloc is measurably faster than
/// the system allocator for it and returns freed memory sooner (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!` that does not panic when stdout is gone (a server outlives its terminal).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn serve(
    db: &Db,
    addr: std::net::SocketAddr,
    mut keys: Vec<String>,
    read_token: Option<String>,
    admin_token: Option<String>,
    sync: bool,
    demo: bool,
) -> Result<(), Fail> {
    use idgraph::server::{ServeConfig, demo_may_hold_token};
    use rand::RngCore;
    for (flag, t) in [
        ("--read-token", &read_token),
        ("--admin-token", &admin_token),
    ] {
        if t.as_deref() == Some("") {
            return Err(Fail(
                2,
                format!("{flag} must not be empty (anybody could present an empty token)"),
            ));
        }
    }
    if admin_token.is_some() && admin_token == read_token {
        return Err(Fail(
            2,
            "--admin-token must differ from --read-token (the demo page may hold the read token)"
                .into(),
        ));
    }
    let store = std::sync::Arc::new(open_rw(db)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail(3, format!("cannot start the async runtime: {e}")))?;
    let demo_key = keys.is_empty();
    if demo_key {
        keys.push("demo".into());
    }
    let loopback = demo_may_hold_token(addr);
    let made_token = demo && loopback && read_token.is_none();
    let read_token = read_token.or_else(|| {
        made_token.then(|| {
            let mut b = [0u8; 16];
            rand::rng().fill_bytes(&mut b);
            b.iter().map(|x| format!("{x:02x}")).collect()
        })
    });
    let cfg = ServeConfig {
        keys,
        read_token: read_token.clone(),
        admin_token: admin_token.clone(),
        sync,
        demo,
        demo_token: demo && loopback,
        ..ServeConfig::default()
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Fail(2, format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Fail(3, format!("cannot read the listening address: {e}")))?;
        say!(
            "idgraph listening on http://{local} (store {})",
            db.display()
        );
        if demo_key {
            say!("no --key given: accepting the API key \"demo\"");
        }
        match (&read_token, made_token) {
            (Some(t), true) => say!("query API read token (made for the demo page): {t}"),
            (Some(_), false) => say!("query API on (bearer token from --read-token)"),
            (None, _) => say!("query API off (start with --read-token to turn it on)"),
        }
        if admin_token.is_some() {
            say!("admin API on (unalias, forget; bearer token from --admin-token)");
        }
        if demo {
            say!("demo page: http://{local}/");
        }
        if sync {
            say!("--sync: each request is acknowledged once flushed to disk");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        idgraph::server::serve(store, listener, cfg, shutdown_signal())
            .await
            .map_err(Fail::from)?;
        say!("idgraph stopped: everything acknowledged is flushed");
        Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Opens the store for a query about `ids`; unknown IDs (or no store) exit 1.
fn open_known(db: &Db, ids: &[&str]) -> Result<Store, Fail> {
    for i in ids {
        id(i)?;
    }
    let store = open_ro(db)?.ok_or_else(|| unknown(ids[0]))?;
    if let Some(u) = ids.iter().find(|i| !store.contains(i)) {
        return Err(unknown(u));
    }
    Ok(store)
}

/// `on 2023-11-14 (t=1700000000)`.
fn when(at: i64) -> String {
    format!("on {} (t={at})", idgraph::dot::date(at))
}

/// `1 ID`, `2 IDs`.
fn ids(n: usize) -> String {
    format!("{n} ID{}", if n == 1 { "" } else { "s" })
}

fn explain(db: &Db, a: &str, b: &str, json: bool) -> Result<(), Fail> {
    let store = open_known(db, &[a, b])?;
    let e = store.explain(a, b)?;
    if json {
        print_json(&e);
    } else if !e.same_person {
        println!("different persons: {a} and {b} are not linked");
    } else if e.edges.is_empty() {
        println!("the same ID: {a}");
    } else {
        println!(
            "one person: {a} and {b} are joined by {} link{}:",
            e.edges.len(),
            if e.edges.len() == 1 { "" } else { "s" }
        );
        for (i, l) in e.edges.iter().enumerate() {
            let source = l
                .source
                .as_deref()
                .map(|s| format!(", from {s}"))
                .unwrap_or_default();
            println!(
                "  {}. {} ~ {}  ({} {}{source})",
                i + 1,
                l.a,
                l.b,
                l.cause,
                when(l.at)
            );
        }
    }
    Ok(())
}

fn unalias(db: &Db, a: &str, b: &str, json: bool) -> Result<(), Fail> {
    let store = open_known(db, &[a, b])?;
    let Some(persons) = store.unalias(a, b)? else {
        return Err(Fail(
            1,
            format!(
                "no direct link between {a} and {b}; nothing changed (`idgraph explain {a} {b}` \
                 shows what joins them)"
            ),
        ));
    };
    store.flush()?;
    if json {
        print_json(&persons);
    } else if persons.len() == 1 {
        println!(
            "unlinked {a} and {b}; other links still make them one person ({})",
            ids(persons[0].ids.len())
        );
    } else {
        println!("unlinked {a} and {b}; now {} persons:", persons.len());
        for p in &persons {
            println!("  {} ({})", p.person, ids(p.ids.len()));
        }
    }
    Ok(())
}

fn forget(db: &Db, who: &str, yes: bool, json: bool) -> Result<(), Fail> {
    use std::io::{BufRead, IsTerminal, Write};
    let store = open_known(db, &[who])?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Fail(
                2,
                format!("refusing to forget {who} without confirmation: pass --yes"),
            ));
        }
        let p = store.resolve(who)?.ok_or_else(|| unknown(who))?;
        let events = store.events(who)?.len();
        eprint!(
            "forget {} for good: {} and {events} events? This cannot be undone. Type yes: ",
            p.person,
            ids(p.ids.len())
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Fail(2, format!("cannot read the answer: {e}")))?;
        if answer.trim() != "yes" {
            return Err(Fail(2, "not confirmed; nothing changed".into()));
        }
    }
    let f = store.forget(who)?.ok_or_else(|| unknown(who))?;
    store.flush()?;
    if json {
        print_json(&f);
    } else {
        println!(
            "forgot {}, {} links, {} events and {} refused merges of {who}'s person",
            ids(f.ids.len()),
            f.links,
            f.events,
            f.refusals
        );
    }
    Ok(())
}

fn refused(db: &Db, json: bool) -> Result<(), Fail> {
    let list = match open_ro(db)? {
        Some(s) => s.refusals()?,
        None => Vec::new(),
    };
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|r| {
                let kind = match r.reason {
                    idgraph::RefusalReason::BlockedId { .. } => "blocked_id",
                    idgraph::RefusalReason::TooLarge { .. } => "too_large",
                };
                json!({"a": r.a, "b": r.b, "reason": kind, "why": r.reason.to_string(),
                       "cause": r.cause, "at": r.at})
            })
            .collect();
        print_json(&rows);
    } else if list.is_empty() {
        println!("no refused merges");
    } else {
        for r in &list {
            println!(
                "{} ~ {}  {}  ({} {})",
                r.a,
                r.b,
                r.reason,
                r.cause,
                when(r.at)
            );
        }
    }
    Ok(())
}

fn hubs(db: &Db, top: usize, json: bool) -> Result<(), Fail> {
    let h = match open_ro(db)? {
        Some(s) => s.hubs(top),
        None => idgraph::Hubs::default(),
    };
    if json {
        print_json(&h);
    } else {
        println!("largest persons (IDs, canonical ID):");
        for (p, n) in &h.largest {
            println!("  {n:>8}  {p}");
        }
        println!("most linked IDs (links, ID):");
        for (i, n) in &h.most_linked {
            println!("  {n:>8}  {i}");
        }
    }
    Ok(())
}

fn graph(db: &Db, who: &str, format: &str, output: Option<&std::path::Path>) -> Result<(), Fail> {
    let store = open_known(db, &[who])?;
    let g = store.person_graph(who)?.ok_or_else(|| unknown(who))?;
    let text = if format == "svg" {
        g.to_svg()?
    } else {
        g.to_dot()
    };
    match output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Fail(3, format!("cannot write {}: {e}", path.display())))?,
        None => print!("{text}"),
    }
    Ok(())
}
