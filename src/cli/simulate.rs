//! `simulate`: what a KISSmetrics tracker would do with a script of commands, and the ops it
//! would send, applied to the store.

use std::io::BufRead;

use idgraph::rules::sim::{Simulator, parse_line};
use idgraph::rules::{AnonIdSource, RandomIds};
use idgraph::{AliasOutcome, Outcome};

use super::args::SimulateArgs;
use super::db::Db;
use super::exit::Fail;

pub fn simulate(db: &Db, args: SimulateArgs) -> Result<(), Fail> {
    let SimulateArgs {
        file,
        dry_run,
        skip_invalid,
        json,
        key,
        seed,
    } = args;

    let name = file.display().to_string();
    let mut reader: Box<dyn BufRead> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&file).map_err(|e| Fail::bad_input(format!("{name}: {e}")))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut sim = Simulator::with_ids(&key, move |browser| -> Box<dyn AnonIdSource> {
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
    // Lines are read bounded, as the importer reads them: a longer one is a bad line.
    let (mut buf, mut n) = (Vec::new(), 0usize);
    loop {
        use idgraph::ingest::files::{MAX_LINE_BYTES, read_line_bounded};
        let (len, whole) = read_line_bounded(&mut reader, &mut buf, MAX_LINE_BYTES)
            .map_err(|e| Fail::bad_input(format!("{name}:{}: cannot read: {e}", n + 1)))?;
        if len == 0 {
            break;
        }
        n += 1;
        let text = if whole {
            std::str::from_utf8(&buf).map_err(|_| "not UTF-8".to_string())
        } else {
            Err(format!(
                "the line has {len} bytes, more than the limit of {MAX_LINE_BYTES} (max_line_bytes)"
            ))
        };
        if text.as_ref().is_ok_and(|t| t.trim().is_empty()) {
            continue;
        }
        match text
            .and_then(|t| parse_line(t.trim_end_matches(['\n', '\r'])))
            .and_then(|l| sim.apply(n, &l))
        {
            Ok((out, fx)) => {
                outcomes.push(out);
                ops.extend(fx.ops);
            }
            Err(e) if skip_invalid => {
                eprintln!("{name}:{n}: {e} (skipped)");
                skipped += 1;
            }
            Err(e) => {
                return Err(Fail::bad_input(format!(
                    "{name}:{n}: {e}; nothing was applied (--skip-invalid skips bad lines)"
                )));
            }
        }
    }
    if !dry_run && !ops.is_empty() {
        let store = db.open_rw()?;
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
