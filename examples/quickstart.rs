//! A short story on the default store (`./idgraph.db`, or `IDGRAPH_DB`): an anonymous visitor
//! browses, signs up, logs in on a second device; events from every ID count for one person.
//!
//! `cargo run --release --example quickstart`, then explore with the CLI, e.g.
//! `cargo run --release -- events bob@example.com`.

use idgraph::{AliasOutcome, Cause, Identity, Op, Outcome, Properties, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("IDGRAPH_DB").unwrap_or_else(|_| "idgraph.db".into());
    let store = Store::open(&path)?;
    let laptop = Identity::new("y75Fe33597qBqkR4obZZYV+wF3Y=")?; // km_ai on the laptop
    let phone = Identity::new("Qm9iJ3MgcGhvbmUgY29va2llIQ=")?; // km_ai on the phone
    let bob = Identity::new("bob@example.com")?;
    let t = 1_700_000_000;

    let story = vec![
        (
            "laptop, anonymous",
            Op::record(
                laptop.clone(),
                "Viewed Pricing",
                Properties::new().with("plan", "pro")?,
                t,
            ),
        ),
        (
            "signs up: identify(bob) aliases the anonymous ID",
            Op::alias(bob.clone(), laptop.clone(), t + 60, Cause::Identify),
        ),
        (
            "as bob",
            Op::record(
                bob.clone(),
                "Signed Up",
                Properties::new().with("plan", "pro")?,
                t + 61,
            ),
        ),
        (
            "phone, anonymous",
            Op::record(phone.clone(), "Opened App", Properties::new(), t + 3600),
        ),
        (
            "logs in on the phone",
            Op::alias(bob.clone(), phone.clone(), t + 3660, Cause::Identify),
        ),
        (
            "someone identifies as \"guest\"",
            Op::alias(
                Identity::new("guest")?,
                phone.clone(),
                t + 3700,
                Cause::Identify,
            ),
        ),
    ];
    for (what, op) in story {
        let outcome = match store.apply(op)? {
            Outcome::Alias(AliasOutcome::Joined { size }) => {
                format!("joined, person now has {size} IDs")
            }
            Outcome::Alias(AliasOutcome::AlreadySame) => "already one person".into(),
            Outcome::Alias(AliasOutcome::Refused(why)) => format!("refused: {why}"),
            Outcome::Stored => "stored".into(),
            o @ Outcome::PropertiesRefused { .. } => {
                format!("stored; {}", o.refusal().unwrap_or_default())
            }
            o @ Outcome::Suppressed => o.refusal().unwrap_or_default(),
        };
        println!("{what:50} -> {outcome}");
    }
    store.flush()?;

    let person = store
        .resolve(phone.as_str())?
        .expect("the phone's ID is known");
    println!(
        "\nwho is {phone}? person {:?} with IDs {:?}",
        person.person, person.ids
    );
    println!("what did they do?");
    for e in store.events(phone.as_str())? {
        println!("  {}  {:<12} under {}", e.at, e.event, e.id);
    }
    for p in store.properties(bob.as_str())? {
        println!("property {} = {} (set under {})", p.name, p.value, p.id);
    }
    let report = store.verify()?;
    println!(
        "\nstore at {path}: {} IDs, {} persons, verify: {}",
        report.ids,
        report.persons,
        if report.is_ok() { "ok" } else { "PROBLEMS" }
    );
    Ok(())
}
