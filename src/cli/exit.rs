//! Exit statuses, named: what a script can rely on (README.md, "Command line").

use std::process::ExitCode;

/// Why the command failed, as its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 1: an unknown ID, nothing to change, or a check that failed (`verify`).
    NotFound = 1,
    /// 2: bad input: an invalid ID or name, a bad line of a file, a file that cannot be read,
    /// a missing confirmation.
    BadInput = 2,
    /// 3: the store (or idgraph itself) failed.
    Failure = 3,
}

/// A failure with its exit status and the message printed on stderr.
#[derive(Debug)]
pub struct Fail {
    pub exit: Exit,
    pub message: String,
}

impl Fail {
    pub fn new(exit: Exit, message: impl Into<String>) -> Fail {
        Fail {
            exit,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Fail {
        Fail::new(Exit::NotFound, message)
    }

    pub fn bad_input(message: impl Into<String>) -> Fail {
        Fail::new(Exit::BadInput, message)
    }

    pub fn failure(message: impl Into<String>) -> Fail {
        Fail::new(Exit::Failure, message)
    }

    /// Prints the message and gives the exit status.
    pub fn report(self) -> ExitCode {
        eprintln!("idgraph: {}", self.message);
        ExitCode::from(self.exit as u8)
    }
}

impl From<idgraph::Error> for Fail {
    fn from(e: idgraph::Error) -> Self {
        use idgraph::Error as E;
        let exit = match e {
            E::InvalidId { .. }
            | E::InvalidName { .. }
            | E::Limit { .. }
            | E::Input(_)
            | E::Backup(_)
            | E::Io { .. } => Exit::BadInput,
            _ => Exit::Failure,
        };
        Fail::new(exit, e.to_string())
    }
}

/// An ID the store has never seen.
pub fn unknown(id: &str) -> Fail {
    Fail::not_found(format!("unknown ID {id:?}: the store has never seen it"))
}
