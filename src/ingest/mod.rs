//! Parsers from the wire formats of `spec/tracking-api.md` to [`Op`](crate::Op)s, with the
//! position of every error, and the file walker of `idgraph import`.

#[cfg(feature = "parquet")]
pub mod arrow;
pub mod csv;
pub mod files;
mod input;
pub mod km_http;
pub mod km_json;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod resume;
