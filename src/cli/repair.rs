//! Looking into a person and repairing it: `explain`, `unalias`, `forget`.

use std::io::{BufRead, IsTerminal, Write};

use super::args::{CompactArgs, ExplainArgs, ForgetArgs, UnaliasArgs, UnsuppressArgs};
use super::db::Db;
use super::exit::{Fail, unknown};
use super::output::{count, ids, print_json, when};

pub fn explain(db: &Db, args: ExplainArgs) -> Result<(), Fail> {
    let ExplainArgs { a, b, json } = args;
    let store = db.open_known(&[&a, &b])?;
    let e = store.explain(&a, &b)?;
    if json {
        print_json(&e);
    } else if !e.same_person {
        println!("different persons: {a} and {b} are not linked");
    } else if e.edges.is_empty() {
        println!("the same ID: {a}");
    } else {
        println!(
            "one person: {a} and {b} are joined by {}:",
            count(e.edges.len(), "link")
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

pub fn unalias(db: &Db, args: UnaliasArgs) -> Result<(), Fail> {
    let UnaliasArgs { a, b, json } = args;
    let store = db.open_known(&[&a, &b])?;
    let Some(persons) = store.unalias(&a, &b)? else {
        return Err(Fail::not_found(format!(
            "no direct link between {a} and {b}; nothing changed (`idgraph explain {a} {b}` \
             shows what joins them)"
        )));
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

pub fn forget(db: &Db, args: ForgetArgs) -> Result<(), Fail> {
    let who = args.id.as_str();
    let store = db.open_known(&[who])?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Fail::bad_input(format!(
                "refusing to forget {who} without confirmation: pass --yes"
            )));
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
            .map_err(|e| Fail::bad_input(format!("cannot read the answer: {e}")))?;
        if answer.trim() != "yes" {
            return Err(Fail::bad_input("not confirmed; nothing changed"));
        }
    }
    let f = store.forget(who)?.ok_or_else(|| unknown(who))?;
    store.flush()?;
    if args.json {
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

pub fn unsuppress(db: &Db, args: UnsuppressArgs) -> Result<(), Fail> {
    let store = db.open_rw()?;
    if store.unsuppress(&args.id)? {
        store.flush()?;
        println!(
            "{} is no longer suppressed: data naming it is taken again",
            args.id
        );
        Ok(())
    } else {
        Err(Fail::not_found(format!("{} is not suppressed", args.id)))
    }
}

pub fn compact(db: &Db, args: CompactArgs) -> Result<(), Fail> {
    let c = db.config().compact()?;
    if args.json {
        print_json(&c);
    } else {
        println!(
            "compacted: {} of live data; {} before, {} after",
            count(c.keys as usize, "key"),
            indicatif::HumanBytes(c.bytes_before),
            indicatif::HumanBytes(c.bytes_after)
        );
    }
    Ok(())
}
