//! `alias`, `record`, `set`: one op each, applied and flushed.

use idgraph::{AliasOutcome, Cause, Identity, Op, Outcome, Properties, now};
use serde_json::json;

use super::args::{AliasArgs, RecordArgs, SetArgs};
use super::db::Db;
use super::exit::Fail;
use super::output::print_json;

/// Properties from `name=value` arguments.
fn props(pairs: &[String]) -> Result<Properties, Fail> {
    let mut named = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Fail::bad_input(format!(
                "property {pair:?} is not name=value"
            )));
        };
        named.push((k, v));
    }
    Ok(Properties::from_pairs(named)?)
}

/// Applies one op and makes it durable.
fn write(db: &Db, op: Op) -> Result<Outcome, Fail> {
    let store = db.open_rw()?;
    let out = store.apply(op)?;
    store.flush()?;
    match &out {
        Outcome::PropertiesRefused { .. } => {
            eprintln!("idgraph: stored, but {}", out.refusal().unwrap_or_default());
        }
        Outcome::Suppressed => eprintln!("idgraph: {}", out.refusal().unwrap_or_default()),
        _ => {}
    }
    Ok(out)
}

pub fn alias(db: &Db, args: AliasArgs) -> Result<(), Fail> {
    let AliasArgs { a, b, at, json } = args;
    let op = Op::alias(
        Identity::new(&a)?,
        Identity::new(&b)?,
        at.unwrap_or_else(now),
        Cause::Api,
    );
    let Outcome::Alias(o) = write(db, op)? else {
        unreachable!("alias has an alias outcome")
    };
    let (word, text) = match &o {
        AliasOutcome::Joined { size } => (
            "joined",
            format!("joined: {a} and {b} are now one person of {size} IDs"),
        ),
        AliasOutcome::AlreadySame => ("already_same", format!("already one person: {a} and {b}")),
        AliasOutcome::Refused(r) => ("refused", format!("refused: {r}; {a} and {b} stay apart")),
    };
    if json {
        let mut v = json!({"outcome": word, "a": a, "b": b});
        match &o {
            AliasOutcome::Joined { size } => v["size"] = json!(size),
            AliasOutcome::Refused(r) => v["reason"] = json!(r.to_string()),
            AliasOutcome::AlreadySame => {}
        }
        print_json(&v);
    } else {
        println!("{text}");
    }
    Ok(())
}

pub fn record(db: &Db, args: RecordArgs) -> Result<(), Fail> {
    let op = Op::record(
        Identity::new(&args.id)?,
        args.event,
        props(&args.props)?,
        args.at.unwrap_or_else(now),
    );
    op.validate()?;
    write(db, op)?;
    Ok(())
}

pub fn set(db: &Db, args: SetArgs) -> Result<(), Fail> {
    let op = Op::set(
        Identity::new(&args.id)?,
        props(&args.props)?,
        args.at.unwrap_or_else(now),
    );
    write(db, op)?;
    Ok(())
}
