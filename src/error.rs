//! The error of a command, as the person who ran it sees it.
//!
//! A command fails for one of a few reasons, and the reason decides what the user should do:
//! something they gave is wrong (a flag, a source, a connections file: fix it and run again),
//! a local resource cannot be used (a file, a directory, `/dev/fuse`, a socket), S3 refused or
//! failed (explained for the bucket at hand), or the mount could not be made or served. Each
//! becomes one line on standard error, `pailfs: ...`, with the underlying error kept as the
//! source (the filesystem core's own errors, with their errno table, are `fs::error`).

use crate::fs::error::FsError;
use crate::store::StoreError;

/// What went wrong underneath a failed step.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Toml(#[from] toml::ser::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Something the user gave is wrong; the message says which value and what to do.
    #[error("{0}")]
    Invalid(String),
    /// A step failed because of `cause`: `what` names the step and the file, key or address.
    #[error("{what}: {cause}")]
    Failed {
        what: String,
        #[source]
        cause: Cause,
    },
    /// The mount could not be made or ended badly; the message says what to do.
    #[error("{0}")]
    Mount(String),
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// Step `what` failed because of `cause`.
    pub fn failed(what: impl Into<String>, cause: impl Into<Cause>) -> CliError {
        CliError::Failed {
            what: what.into(),
            cause: cause.into(),
        }
    }
}

impl CliError {
    /// The same error, said of `what` (a value inside a bigger input, a step of a command).
    pub fn within(self, what: impl std::fmt::Display) -> CliError {
        match self {
            CliError::Invalid(m) => CliError::Invalid(format!("{what}: {m}")),
            CliError::Mount(m) => CliError::Mount(format!("{what}: {m}")),
            CliError::Failed { what: w, cause } => CliError::Failed {
                what: format!("{what}: {w}"),
                cause,
            },
        }
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> CliError {
        CliError::Invalid(message.to_string())
    }
}

/// The validators of user input (`config::parse_size`, `Source::parse`, `validate_label`,
/// clap's value parsers) answer a one-line message: input that is wrong.
impl From<String> for CliError {
    fn from(message: String) -> CliError {
        CliError::Invalid(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_names_the_step_and_keeps_its_cause() {
        let e = CliError::failed(
            "cannot read /etc/pailfs/connections.toml",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        let line = e.to_string();
        assert!(
            line.starts_with("cannot read /etc/pailfs/connections.toml: "),
            "{line}"
        );
        assert!(!line.contains('\n'));
        assert!(std::error::Error::source(&e).is_some());
        let e: CliError = String::from("--part-size must be at least 5M").into();
        assert!(matches!(e, CliError::Invalid(_)));
    }
}
