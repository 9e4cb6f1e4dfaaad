//! `import` and `export`: years of KISSmetrics data in, the graph and the de-aliased events out.

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use idgraph::ingest::files::{FileSource, Format, expand_reporting};
use idgraph::{BulkOptions, Pass, now};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::args::{EventsFormat, ExportWhat, ImportArgs, InputFormat, MappingFormat};
use super::db::Db;
use super::exit::Fail;
use super::output::print_json;

pub fn import(db: &Db, args: ImportArgs) -> Result<(), Fail> {
    let ImportArgs {
        paths,
        format,
        skip_invalid,
        json,
        batch_keys,
    } = args;
    let forced = format.map(|f| match f {
        InputFormat::KmJson => Format::KmJson,
        InputFormat::Csv => Format::Csv,
    });
    let inputs = expand_reporting(&paths, forced, &mut |w| eprintln!("warning: {w}"))?;
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
                Pass::Check => "checking",
                Pass::Write => "writing",
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
    let store = db.open_rw()?;
    let opts = BulkOptions {
        batch_keys,
        ..Default::default()
    };
    let rep = match store.bulk_apply(&mut source, opts) {
        Ok(r) => r,
        Err(e @ (idgraph::Error::Input(_) | idgraph::Error::Io { .. })) => {
            bar.finish_and_clear();
            return Err(Fail::bad_input(format!("{e}; nothing was imported")));
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

pub fn export(db: &Db, what: ExportWhat) -> Result<(), Fail> {
    let Some(store) = db.open_ro()? else {
        return Ok(()); // an empty store exports nothing
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let io = |e: std::io::Error| idgraph::Error::Io {
        context: "writing the export".into(),
        source: e,
    };
    let csv_err = |e: csv::Error| idgraph::Error::Io {
        context: "writing the export".into(),
        source: e.into(),
    };
    match what {
        ExportWhat::Mapping {
            format: MappingFormat::Csv,
        } => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(["id", "person"]).map_err(csv_err)?;
            store.for_each_id(|id, person, _| w.write_record([id, person]).map_err(csv_err))?;
            w.flush().map_err(io)?;
        }
        ExportWhat::Mapping { format } => {
            store.for_each_id(|id, person, first_seen| {
                if format == MappingFormat::Jsonl {
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
        ExportWhat::Events {
            format: EventsFormat::Csv,
        } => {
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
                return Err(Fail::bad_input(format!(
                    "the events have {} property names; the CSV format holds at most 10 Prop: \
                     columns (one is _p_original): use --format km-json",
                    names.len()
                )));
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
        .map_err(|e| Fail::failure(format!("writing the export: {e}")))?;
    Ok(())
}
