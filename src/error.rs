//! The crate error, and the one place that decides what a failure means to the process.
//!
//! Modules raise their own typed errors (`config::ConfigError`, `stage::StageError`,
//! `state::StateError`, `sources::http::HttpError`, ...) with the underlying cause kept as
//! `#[source]`, and say which [`ErrorKind`] each variant is. The kind alone decides the exit
//! code and whether an orchestrator may retry ([`ErrorKind::exit_code`],
//! [`ErrorKind::is_transient`]), so the same mistake gets the same answer in every connector.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a failure means to the user and the orchestrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's configuration (or credentials) is wrong; the message names the key.
    Config,
    /// A SQL query or model is wrong; the message points at the SQL.
    Sql,
    /// The source answered in a way we cannot use (bad status, bad body).
    Source,
    /// A fault that may pass (network, 429 after all retries, 5xx); retry the run as is.
    Transient,
    /// The destination failed; the message says which statement or step.
    Destination,
    /// The source schema changed in a way that cannot be applied safely.
    SchemaDrift,
    /// The destination does not match the source: counts or checksums differ between hops,
    /// or `syncline reconcile` found drift it did not repair.
    Reconciliation,
    /// Another run holds the stream's lock.
    Locked,
    /// Staging (Parquet, manifests, the object store) failed.
    Stage,
    /// The source's API quota (or the configured share of it) is used up. Nothing is wrong:
    /// the run stops cleanly and the next one, once the quota frees up, resumes. Not
    /// transient: the quota does not come back within the run.
    Quota,
}

impl ErrorKind {
    /// How messages of this kind start, so the user sees the class before the detail.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Config => "configuration error",
            ErrorKind::Sql => "SQL error",
            ErrorKind::Source => "source error",
            ErrorKind::Transient => "transient error",
            ErrorKind::Destination => "destination error",
            ErrorKind::SchemaDrift => "schema change not applied",
            ErrorKind::Reconciliation => "reconciliation mismatch",
            ErrorKind::Locked => "stream is locked",
            ErrorKind::Stage => "staging error",
            ErrorKind::Quota => "API quota used up",
        }
    }

    /// Process exit code (documented in README): 2 for configuration and SQL mistakes, 3 when
    /// the destination does not match the source, 4 for a clean stop on a used-up quota, 1 for everything else.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Config | ErrorKind::Sql => 2,
            ErrorKind::Reconciliation => 3,
            ErrorKind::Quota => 4,
            _ => 1,
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(self) -> bool {
        self == ErrorKind::Transient
    }
}

/// A module's typed error: it says its own kind.
pub trait Classified: std::error::Error + Send + Sync + 'static {
    fn kind(&self) -> ErrorKind;
}

/// A module's typed error behind one type, so the crate error can hold any of them.
#[derive(Debug)]
pub struct TypedError(Box<dyn Classified>);

impl std::fmt::Display for TypedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.kind().label(), self.0)
    }
}

impl std::error::Error for TypedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[derive(Debug, Error)]
pub enum Error {
    /// A module's typed error, with its cause chain.
    #[error(transparent)]
    Typed(TypedError),
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// The kind of this failure; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Typed(typed) => typed.0.kind(),
            Error::ObjectStore(err) => object_store_kind(err),
            Error::Parquet(_) | Error::Arrow(_) | Error::Io(_) | Error::Json(_) => ErrorKind::Stage,
        }
    }

    /// Process exit code for this error (see [`ErrorKind::exit_code`]).
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }

    /// The message with every cause after it (`what failed: why: why`), for the user: the
    /// typed errors keep causes as sources, which `Display` alone does not show.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(err) = cause {
            let message = err.to_string();
            // A message may already carry its cause's words (a retry's last failure).
            if !text.contains(&message) {
                text.push_str(": ");
                text.push_str(&message);
            }
            cause = err.source();
        }
        text
    }
}

/// Credentials the store refused, or that could not be found, are the user's to fix: a
/// configuration error, as rejected credentials are in every connector. The rest is staging.
fn object_store_kind(err: &object_store::Error) -> ErrorKind {
    match err {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::Config,
        object_store::Error::Generic { source, .. } => {
            if let Some(ours) = source.downcast_ref::<crate::storage::StorageError>() {
                return ours.kind();
            }
            // object_store maps 401 and 403 to the variants above, except for a list
            // request, whose error (a private type) says the status only in its text.
            let text = source.to_string();
            if ["status code: 401", "status code: 403"]
                .iter()
                .any(|status| text.contains(status))
            {
                ErrorKind::Config
            } else {
                ErrorKind::Stage
            }
        }
        _ => ErrorKind::Stage,
    }
}

impl<E: Classified> From<E> for Error {
    fn from(err: E) -> Self {
        Error::Typed(TypedError(Box::new(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_used_up_quota_is_a_clean_stop_not_a_retry() {
        assert_eq!(ErrorKind::Quota.exit_code(), 4);
        assert!(!ErrorKind::Quota.is_transient());
    }
}
