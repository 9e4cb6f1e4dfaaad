//! # idgraph — an identity graph
//!
//! Decides which visitor IDs belong to one person, stores that durably on
//! [sled](https://docs.rs/sled/0.34.7), and answers "who is this?" and "what did this person
//! do?" fast. The rules are KISSmetrics': a browser gets a random anonymous ID, identifies with
//! a named ID, and aliases link IDs so that events done under any of them count for one person.
//!
//! Every source turns its input into [`Op`]s; the [`Store`] is the only thing that writes.
//!
//! ## Quick start
//! ```
//! use idgraph::{AliasOutcome, Cause, Config, Identity, Op, Properties};
//!
//! # fn main() -> idgraph::Result<()> {
//! let store = Config::temporary().open()?;
//! let anon = Identity::new("y75Fe33597qBqkR4obZZYV+wF3Y=")?;
//! let bob = Identity::new("bob@example.com")?;
//!
//! // An anonymous visit, then the visitor signs up and identifies.
//! store.apply(Op::record(anon.clone(), "Viewed Pricing", Properties::new(), 100))?;
//! store.apply(Op::alias(bob.clone(), anon.clone(), 160, Cause::Identify))?;
//! store.apply(Op::record(bob.clone(), "Signed Up", Properties::new().with("plan", "pro")?, 170))?;
//!
//! let person = store.resolve("y75Fe33597qBqkR4obZZYV+wF3Y=")?.expect("known ID");
//! assert_eq!(person.person, "bob@example.com"); // the named ID shows the person
//! assert_eq!(person.ids.len(), 2);
//!
//! let events = store.events("bob@example.com")?;
//! assert_eq!(events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
//!            ["Viewed Pricing", "Signed Up"]); // the anonymous event counts for bob
//!
//! // Guardrails: a blocked ID never squishes people together.
//! let guest = Identity::new("guest")?;
//! assert!(matches!(store.alias(&bob, &guest)?, AliasOutcome::Refused(_)));
//! assert!(store.verify()?.is_ok());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod codec;
#[cfg(feature = "parquet")]
pub mod columnar;
pub mod dot;
mod error;
pub mod forest;
#[doc(hidden)]
pub mod fuzz;
mod graph;
mod id;
pub mod import;
pub mod ingest;
mod op;
pub mod rules;
#[cfg(feature = "server")]
pub mod server;
mod source;
mod store;

pub use codec::FORMAT_VERSION;
pub use error::{Error, Result};
pub use id::{DEFAULT_BLOCKED_IDS, Identity, MAX_ID_CHARS, is_kissmetrics_anonymous};
pub use op::{
    AliasOutcome, Cause, Event, Limits, Link, Op, Outcome, Person, Properties, Property,
    RefusalReason, Timestamp, Value, now,
};
pub use source::{FilePart, OpSource};
pub use store::{
    BACKUP_FORMAT, BackupInfo, BackupOptions, BackupReport, BulkOptions, BulkReport, Compacted,
    Config, DEFAULT_MAX_PERSON_SIZE, DEFAULT_MAX_PRESERVED_BYTES, Explanation, ExportedEvent,
    Forgotten, Guardrails, Hubs, Refusal, RestoreOptions, RestoreReport, Stats, Store,
    SuppressionList, VerifyProgress, VerifyReport, check_backup, restore,
};

/// The README's examples, compiled and run as doc-tests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
