//! The identity rules of a KISSmetrics tracker as a pure state machine
//! (`spec/identity-rules.md`): tracker commands in, [`Op`](crate::Op)s and tracking requests out.
//! No I/O, and the anonymous-ID generator is injectable, so every case is deterministic.

mod anon;
mod form;
pub mod sim;
mod url;
mod visitor;

pub use anon::{AnonIdSource, ListIds, RandomIds, format_anon_id};
pub use form::{
    Field, Form, capture, field_key, is_captured, is_identity, is_sensitive, property_name,
};
pub use url::{UrlCommands, parse as parse_url};
pub use visitor::{Effect, Visitor, encode_component, is_null_identity};
