//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong in idgraph.
///
/// Expected outcomes are not errors: an unknown ID is `Ok(None)`, a merge refused by a guardrail
/// is an [`AliasOutcome::Refused`](crate::AliasOutcome::Refused).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An ID broke one of the rules of [`Identity`](crate::Identity).
    #[error("invalid ID {shown}: {rule}")]
    InvalidId {
        /// The offending input, quoted and shortened for display.
        shown: String,
        /// Which rule it broke.
        rule: &'static str,
    },
    /// An event or property name broke a naming rule.
    #[error("invalid {what} {shown}: {rule}")]
    InvalidName {
        /// `event name` or `property name`.
        what: &'static str,
        /// The offending input, quoted and shortened for display.
        shown: String,
        /// Which rule it broke.
        rule: &'static str,
    },
    /// An op or a request went past one of the limits that bound the work and the state one
    /// input may cost ([`Limits`](crate::Limits), the server's and the importer's limits).
    #[error("{found} {what}, more than the limit of {max} ({limit})")]
    Limit {
        /// What was counted (`properties in one op`, `bytes in the value of a property`).
        what: &'static str,
        /// How many there were.
        found: usize,
        /// The limit.
        max: usize,
        /// The limit's name, as configured (`max_properties`, `--max-body`).
        limit: &'static str,
    },
    /// The directory holds a store written by another, incompatible format version.
    #[error(
        "the store at {path} has format version {found}, this idgraph reads version {expected}; \
         open it with the idgraph version that wrote it, or export and re-import the data"
    )]
    IncompatibleFormat {
        /// The store's directory.
        path: PathBuf,
        /// The version found on disk (`"none"` when the marker is missing).
        found: String,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// Bytes on disk could not be decoded: the store is damaged or was written by other software.
    #[error("corrupt store: {0}; run `idgraph verify` and restore from a backup if it fails")]
    Corrupt(String),
    /// Another process (or another open [`Store`](crate::Store) in this one) holds the store.
    #[error(
        "the store at {0} is in use by another process; stop it (for example a running \
         `idgraph serve`) or use another --db"
    )]
    Locked(PathBuf),
    /// The store holds as many IDs as one store can address.
    #[error("the store is full: at most {0} IDs fit in one store")]
    Full(u64),
    /// A write failed halfway (a storage failure between the keys of one op): this handle
    /// takes no more writes. Reopening the store finishes the op from its redo record. The
    /// source is the failure itself (`None` when an earlier write of this handle failed).
    #[error(
        "a write was interrupted by a storage failure ({}); reopen the store (opening \
         finishes the interrupted write)",
        .0.as_ref().map_or_else(|| "an earlier write of this handle failed halfway".to_string(), |e| e.to_string())
    )]
    Interrupted(#[source] Option<Box<Error>>),
    /// Input data could not be used: the message says where (`FILE:LINE`) and why.
    #[error("{0}")]
    Input(String),
    /// A file or stream outside the store could not be read or written (an input file, the
    /// spool of standard input, an export's output).
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written (a file name, `FILE:LINE`, `writing the export`).
        context: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A backup file could not be restored: it is damaged, cut short or not a backup. The
    /// message says the file, the byte offset and the frame. Nothing was restored.
    #[error("damaged backup: {0}; nothing was restored")]
    Backup(String),
    /// A failure inside idgraph rather than in its input or storage: a worker thread or task
    /// that stopped, a drawing that could not be laid out. The message says which.
    #[error("internal failure: {0}")]
    Internal(String),
    /// The storage engine failed (I/O error, disk full, another process holds the lock, ...).
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// A value could not be encoded for storage.
    #[error("encoding error: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

impl Error {
    /// An [`Error::Io`] with its context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Quotes `s` for an error message, shortening very long input.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() > MAX {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}... ({} characters)", s.chars().count())
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn interrupted_keeps_its_source() {
        let cause = Error::Storage(sled::Error::Unsupported("disk gone".into()));
        let e = Error::Interrupted(Some(Box::new(cause)));
        assert!(e.to_string().contains("disk gone"), "{e}");
        assert!(e.to_string().contains("reopen the store"), "{e}");
        let source = e.source().expect("the storage failure");
        assert!(source.to_string().contains("disk gone"));
        let later = Error::Interrupted(None);
        assert!(later.source().is_none());
        assert!(later.to_string().contains("earlier write"), "{later}");
    }

    #[test]
    fn io_says_what_was_read_and_keeps_the_failure() {
        let e = Error::io(
            "events.json:7",
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut short"),
        );
        assert_eq!(e.to_string(), "events.json:7: cut short");
        let source = e.source().expect("the I/O error");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
