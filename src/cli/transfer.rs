//! `import` and `export`: years of KISSmetrics data in, the graph and the de-aliased events out.

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use std::path::PathBuf;

use idgraph::BulkOptions;
use idgraph::import::{ImportFormat, ImportHooks, ImportOptions, ImportReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::args::{EventsFormat, ExportWhat, ImportArgs, InputFormat, MappingFormat, SyncArgs};
use super::db::Db;
use super::exit::Fail;
use super::output::print_json;

/// What one import is asked to read.
struct Job<'a> {
    paths: &'a [PathBuf],
    opts: ImportOptions,
    /// The store's `max_person_size` for this import.
    max_person_size: u64,
    /// Draw a progress bar on stderr.
    progress: bool,
}

/// One line: what was read (and what was not read again), what it did, how fast.
fn summary(run: &ImportReport) -> String {
    let rs = &run.resumed;
    let mut files = vec![];
    for (n, what) in [
        (rs.new_files, "new"),
        (rs.grown_files, "grown"),
        (rs.reread_files, "read again in full"),
    ] {
        if n > 0 {
            files.push(format!("{n} {what}"));
        }
    }
    let known = if rs.unchanged_files + rs.grown_files > 0 {
        format!(
            "; {} unchanged, {} imported before not read again",
            rs.unchanged_files,
            bytes(rs.known_bytes)
        )
    } else {
        String::new()
    };
    if run.files == 0 {
        return format!(
            "nothing new: {} files unchanged since imported ({}); {} IDs in {} persons",
            rs.unchanged_files,
            bytes(rs.known_bytes),
            run.ids,
            run.persons
        );
    }
    let r = &run.report;
    format!(
        "imported {} lines ({}) from {} files ({}{known}){}: {} events, {} sets, {} aliases \
         ({} merges, {} refused){}; {} new IDs, {} IDs in {} persons; {} keys written; \
         {:.1} s ({:.0} lines/s)",
        run.lines,
        bytes(run.bytes),
        run.files,
        if files.is_empty() {
            "standard input".into()
        } else {
            files.join(", ")
        },
        if run.skipped > 0 {
            format!(" ({} bad lines skipped)", run.skipped)
        } else {
            String::new()
        },
        r.events,
        r.sets,
        r.aliases,
        r.joined,
        r.refused,
        if r.suppressed > 0 {
            format!("; {} dropped: they name forgotten IDs", r.suppressed)
        } else {
            String::new()
        },
        r.new_ids,
        run.ids,
        run.persons,
        r.keys_written,
        run.seconds,
        run.lines_per_second(),
    )
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn progress_bar(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Imports what is new in `job.paths` (files imported before: only what follows their
/// imported part).
fn import_once(db: &Db, job: &Job) -> Result<ImportReport, Fail> {
    let bar = progress_bar(job.progress);
    let shown = Rc::new(Cell::new(0u64));
    let progress = bar.clone();
    let hooks = ImportHooks {
        on_skip: Some(Box::new(move |msg| {
            let n = shown.get() + 1;
            shown.set(n);
            if n <= 20 {
                eprintln!("{msg} (skipped)");
            } else if n == 21 {
                eprintln!("... more bad lines skipped; the summary counts them");
            }
        })),
        on_progress: Some(Box::new(move |bytes, lines, total| {
            if progress.prefix().is_empty() {
                progress.set_prefix("reading");
                if total > 0 {
                    progress.set_length(total);
                }
                progress.reset_elapsed();
            }
            let secs = progress.elapsed().as_secs_f64().max(1e-3);
            progress.set_message(format!("{:.0} lines/s", lines as f64 / secs));
            progress.set_position(bytes);
            // All read: what remains is writing the IDs, links and packed events.
            if total > 0 && bytes >= total {
                progress.set_prefix("writing");
                progress.set_message("ID records, links, events");
            }
        })),
    };
    let nothing = |e: idgraph::Error| match e {
        e @ (idgraph::Error::Input(_) | idgraph::Error::Io { .. }) => {
            Fail::bad_input(format!("{e}; nothing was imported"))
        }
        e => e.into(),
    };
    let plan = idgraph::import::plan(job.paths, &job.opts, &mut |w| eprintln!("warning: {w}"))
        .map_err(nothing)?;
    let store = db.open_rw_with(|c| c.max_person_size(job.max_person_size))?;
    let run = plan.run(&store, hooks);
    bar.finish_and_clear();
    run.map_err(nothing)
}

fn format(format: Option<InputFormat>) -> Option<ImportFormat> {
    format.map(|f| match f {
        InputFormat::KmJson => ImportFormat::KmJson,
        InputFormat::Csv => ImportFormat::Csv,
        InputFormat::Parquet => ImportFormat::Parquet,
    })
}

pub fn import(db: &Db, args: ImportArgs) -> Result<(), Fail> {
    let job = Job {
        paths: &args.paths,
        opts: ImportOptions {
            format: format(args.format),
            skip_invalid: args.skip_invalid,
            reimport: args.reimport,
            bulk: BulkOptions {
                batch_keys: args.batch_keys,
                ..Default::default()
            },
        },
        max_person_size: args.max_person_size,
        progress: true,
    };
    let run = import_once(db, &job)?;
    if args.json {
        print_json(&run.json());
    } else {
        eprintln!("{}", summary(&run));
    }
    Ok(())
}

/// `import` every `--every`, one line per run on stdout (a failed run: its error, and the next
/// run tries again). The store is opened for each run only.
pub fn sync(db: &Db, args: SyncArgs) -> Result<(), Fail> {
    if args.format == Some(InputFormat::Parquet) {
        return Err(Fail::bad_input(
            "sync follows growing JSON and CSV files; import Parquet with `idgraph import`",
        ));
    }
    let job = Job {
        paths: &args.paths,
        opts: ImportOptions {
            format: format(args.format),
            skip_invalid: args.skip_invalid,
            reimport: args.reimport,
            bulk: BulkOptions::default(),
        },
        max_person_size: args.max_person_size,
        progress: false,
    };
    let mut out = std::io::stdout();
    let mut failed = 0u64;
    for run in 1u64.. {
        let started = std::time::Instant::now();
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let line = match import_once(db, &job) {
            Ok(r) => summary(&r),
            Err(e) => {
                failed += 1;
                format!("failed: {}", e.message)
            }
        };
        writeln!(out, "{stamp} {line}")
            .and_then(|()| out.flush())
            .map_err(|e| Fail::failure(format!("writing the summary: {e}")))?;
        if args.runs.is_some_and(|n| run >= n) {
            break;
        }
        std::thread::sleep(args.every.saturating_sub(started.elapsed()));
    }
    if failed > 0 {
        return Err(Fail::bad_input(format!("{failed} runs failed")));
    }
    Ok(())
}

pub fn export(db: &Db, what: ExportWhat) -> Result<(), Fail> {
    use std::io::IsTerminal;
    let (output, parquet) = match &what {
        ExportWhat::Mapping { format, output } => {
            (output.clone(), *format == MappingFormat::Parquet)
        }
        ExportWhat::Events { format, output } => (output.clone(), *format == EventsFormat::Parquet),
        ExportWhat::Suppressions => (None, false),
    };
    if parquet && output.is_none() && std::io::stdout().is_terminal() {
        return Err(Fail::bad_input(
            "Parquet is binary: name a file with -o FILE (or redirect standard output)",
        ));
    }
    // A store that does not exist exports what an empty one would (and creates nothing).
    let store = match db.open_ro()? {
        Some(s) => s,
        None => idgraph::Config::temporary().open()?,
    };
    match output {
        None => write_export(&store, what, std::io::stdout()),
        Some(path) => {
            // Whole or absent: written beside it, fsynced, renamed.
            let io = |e| idgraph::Error::Io {
                context: path.display().to_string(),
                source: e,
            };
            let partial = PathBuf::from(format!("{}.partial", path.display()));
            let result = (|| -> Result<(), Fail> {
                let f = std::fs::File::create(&partial).map_err(io)?;
                write_export(&store, what, &f)?;
                f.sync_all().map_err(io)?;
                std::fs::rename(&partial, &path).map_err(io)?;
                Ok(())
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            result
        }
    }
}

/// Writes the export `what` of `store` to `out`.
fn write_export<W: Write + Send>(
    store: &idgraph::Store,
    what: ExportWhat,
    out: W,
) -> Result<(), Fail> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let io = |e: std::io::Error| idgraph::Error::Io {
        context: "writing the export".into(),
        source: e,
    };
    let csv_err = |e: csv::Error| idgraph::Error::Io {
        context: "writing the export".into(),
        source: e.into(),
    };
    match what {
        ExportWhat::Suppressions => {
            if let Some((key, hashes)) = store.suppressions() {
                writeln!(out, "{}", serde_json::json!({ "key": key })).map_err(io)?;
                for h in hashes {
                    writeln!(out, "{}", serde_json::json!({ "suppressed": h })).map_err(io)?;
                }
            }
        }
        ExportWhat::Mapping {
            format: MappingFormat::Parquet,
            ..
        } => {
            idgraph::columnar::write_mapping(store, &mut out)?;
        }
        ExportWhat::Events {
            format: EventsFormat::Parquet,
            ..
        } => {
            idgraph::columnar::write_events(store, &mut out)?;
        }
        ExportWhat::Mapping {
            format: MappingFormat::Csv,
            ..
        } => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(["id", "person"]).map_err(csv_err)?;
            store.for_each_id(|id, person, _| w.write_record([id, person]).map_err(csv_err))?;
            w.flush().map_err(io)?;
        }
        ExportWhat::Mapping { format, .. } => {
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
            ..
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
