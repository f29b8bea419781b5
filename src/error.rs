//! The crate error. Its kind decides the exit code and whether an operation may be retried.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// The user's configuration is wrong; the message names the key (and line when known).
    #[error("configuration error: {0}")]
    Config(String),
    /// A SQL query or model is wrong; the message is the engine's, pointing at the SQL.
    #[error("SQL error: {0}")]
    Sql(String),
    /// The source answered in a way we cannot use (bad status, bad body).
    #[error("source error: {0}")]
    Source(String),
    /// A transient fault (network, 429 after all retries, 5xx); the run can be retried as is.
    #[error("transient error: {0}")]
    Transient(String),
    /// The destination failed; the message says which statement or step.
    #[error("destination error: {0}")]
    Destination(String),
    /// The source schema changed in a way that cannot be applied safely; the staged data is kept.
    #[error("schema change not applied: {0}")]
    SchemaDrift(String),
    /// Counts or checksums differ between hops.
    #[error("reconciliation mismatch: {0}")]
    Reconciliation(String),
    /// Another run holds the lock of this stream.
    #[error("stream is locked: {0}")]
    Locked(String),
    #[error("staging error: {0}")]
    Stage(String),
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
    /// Process exit code for this error (documented in README): 2 for configuration and usage,
    /// 3 for reconciliation mismatches, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Sql(_) => 2,
            Error::Reconciliation(_) => 3,
            _ => 1,
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient(_))
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        // Message and SQLSTATE only: the server's DETAIL can quote row values, and the
        // driver's errors never contain the connection password.
        match err.as_db_error() {
            Some(db) => {
                Error::Destination(format!("{} (SQLSTATE {})", db.message(), db.code().code()))
            }
            None => Error::Destination(err.to_string()),
        }
    }
}
