//! The questions: `resolve`, `events`, `props`, `refused`, `hubs`, `graph`, `stats`, `verify`.
//! None of them creates a store.

use idgraph::{RefusalReason, Store};
use serde_json::json;

use super::args::{
    EventsArgs, GraphArgs, GraphFormat, HubsArgs, PropsArgs, RefusedArgs, ResolveArgs, StatsArgs,
    VerifyArgs,
};
use super::db::Db;
use super::exit::{Fail, unknown};
use super::output::{print_json, when};

pub fn resolve(db: &Db, args: ResolveArgs) -> Result<(), Fail> {
    let store = db.open_known(&[&args.id])?;
    let p = store.resolve(&args.id)?.ok_or_else(|| unknown(&args.id))?;
    if args.json {
        print_json(&p);
    } else {
        println!("person: {}", p.person);
        println!("ids ({}):", p.ids.len());
        for i in &p.ids {
            println!("  {i}");
        }
    }
    Ok(())
}

pub fn events(db: &Db, args: EventsArgs) -> Result<(), Fail> {
    let store = db.open_known(&[&args.id])?;
    let events = store.events(&args.id)?;
    if args.json {
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
    Ok(())
}

pub fn props(db: &Db, args: PropsArgs) -> Result<(), Fail> {
    let store = db.open_known(&[&args.id])?;
    let ps = store.properties(&args.id)?;
    if args.json {
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
    Ok(())
}

pub fn verify(db: &Db, args: VerifyArgs) -> Result<(), Fail> {
    use std::io::IsTerminal;
    // A bar on a terminal: verify reads the whole store (a minute for tens of millions of keys).
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let style = |t: &str| {
        indicatif::ProgressStyle::with_template(t)
            .expect("a valid template")
            .progress_chars("=> ")
    };
    let rep = db.query(|s| {
        s.verify_with(&mut |p| {
            if bar.prefix() != p.stage {
                bar.set_prefix(p.stage);
                bar.set_length(p.total);
                bar.reset();
                bar.set_style(if p.total == 0 {
                    style("{prefix:>12} {pos} {per_sec}") // not known ahead: a count
                } else {
                    style("{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                });
            }
            bar.set_position(p.done);
        })
    })?;
    bar.finish_and_clear();
    if args.json {
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
        return Err(Fail::not_found(format!(
            "{} broken invariants",
            rep.problem_count
        )));
    }
    Ok(())
}

pub fn stats(db: &Db, args: StatsArgs) -> Result<(), Fail> {
    let st = db.query(Store::stats)?;
    if args.json {
        print_json(&st);
    } else {
        println!("ids             {}", st.ids);
        println!("persons         {}", st.persons);
        println!("largest person  {}", st.largest_person);
        println!("alias edges     {}", st.edges);
        println!("refused merges  {}", st.refused_merges);
        println!("events          {}", st.events);
        println!("properties      {}", st.properties);
        if st.links_not_recorded > 0 {
            println!(
                "links not recorded (max links per person) {}",
                st.links_not_recorded
            );
        }
        if st.refusals_not_logged > 0 {
            println!(
                "refusals not logged (max refusals logged) {}",
                st.refusals_not_logged
            );
        }
        if st.ids_at_property_limit > 0 {
            println!("ids at property limit {}", st.ids_at_property_limit);
        }
        println!("bytes on disk   {}", st.disk_bytes);
    }
    Ok(())
}

pub fn refused(db: &Db, args: RefusedArgs) -> Result<(), Fail> {
    let list = db.query(Store::refusals)?;
    if args.json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|r| {
                let kind = match r.reason {
                    RefusalReason::BlockedId { .. } => "blocked_id",
                    RefusalReason::TooLarge { .. } => "too_large",
                    RefusalReason::Suppressed => "suppressed",
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

pub fn hubs(db: &Db, args: HubsArgs) -> Result<(), Fail> {
    let h = db.query(|s| s.hubs(args.top))?;
    if args.json {
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

pub fn graph(db: &Db, args: GraphArgs) -> Result<(), Fail> {
    let store = db.open_known(&[&args.id])?;
    let g = store
        .person_graph(&args.id)?
        .ok_or_else(|| unknown(&args.id))?;
    let text = match args.format {
        GraphFormat::Svg => g.to_svg()?,
        GraphFormat::Dot => g.to_dot(),
    };
    match args.output {
        Some(path) => std::fs::write(&path, text)
            .map_err(|e| Fail::failure(format!("cannot write {}: {e}", path.display())))?,
        None => print!("{text}"),
    }
    Ok(())
}
