//! What can go wrong in the PostgreSQL destination. Driver errors are kept (as
//! [`DriverError`]) as the source of the step that failed.

use std::fmt;

use arrow::datatypes::DataType;

use crate::error::{Classified, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("postgres destination schema `{schema}` {problem}")]
    BadSchemaName { schema: String, problem: String },
    /// A statement or driver call failed; `step` says which.
    #[error("postgres: {step}")]
    Statement {
        step: &'static str,
        #[source]
        source: DriverError,
    },
    #[error(
        "the ledger table {ledger} does not exist; run the destination check (or ensure_table) \
         before merging"
    )]
    NoLedger { ledger: String },
    #[error("postgres returned a checksum that is not a u64: {0:?}")]
    BadChecksum(String),
    #[error("postgres returned a negative row count: {0}")]
    NegativeCount(i64),
    #[error("row count {0} does not fit a bigint")]
    CountTooLarge(u64),
    /// The batches being copied do not match the load's schema.
    #[error("a staged batch lacks the column `{column}`")]
    BatchLacksColumn { column: String },
    #[error(
        "staged column `{column}` has type {batch_type} in a batch, which does not match \
         {load_type} in the load's schema"
    )]
    BatchColumnType {
        column: String,
        batch_type: DataType,
        load_type: String,
    },
    #[error(
        "staged column `{column}` has type {data_type}, which the postgres destination does not \
         support"
    )]
    UnsupportedType { column: String, data_type: DataType },
    #[error("staged column `{column}` has an unexpected array layout")]
    ArrayLayout { column: String },
    /// Never names the value: it may be personal data.
    #[error(
        "staged column `{column}`, row {row} of its batch: the value is outside the supported \
         range"
    )]
    OutOfRange { column: String, row: usize },
    /// A value its column's wire type cannot carry; the encoder's reason names no value.
    #[error("postgres: {step}: cannot encode staged column `{column}` for COPY")]
    Encode {
        step: &'static str,
        column: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Bad names and URLs are the user's to fix; batches that do not match their load's schema
/// are schema drift; a driver failure is transient when retrying may cure it.
impl Classified for PostgresError {
    fn kind(&self) -> ErrorKind {
        match self {
            PostgresError::BadSchemaName { .. } => ErrorKind::Config,
            PostgresError::Statement { source, .. } if source.is_transient() => {
                ErrorKind::Transient
            }
            PostgresError::BatchLacksColumn { .. }
            | PostgresError::BatchColumnType { .. }
            | PostgresError::UnsupportedType { .. } => ErrorKind::SchemaDrift,
            PostgresError::Statement { .. }
            | PostgresError::NoLedger { .. }
            | PostgresError::BadChecksum(_)
            | PostgresError::NegativeCount(_)
            | PostgresError::CountTooLarge(_)
            | PostgresError::ArrayLayout { .. }
            | PostgresError::OutOfRange { .. }
            | PostgresError::Encode { .. } => ErrorKind::Destination,
        }
    }
}

/// A driver error, shown as the server's message, SQLSTATE and hint.
///
/// The server's DETAIL is left out on purpose, and the error's own sources are not exposed
/// (the driver's `DbError` prints DETAIL): PostgreSQL puts row values there ("Key
/// (email)=(...) already exists", "Failing row contains (...)"), and record values must not
/// reach logs or run reports. The message, SQLSTATE and hint say what to fix.
#[derive(Debug)]
pub struct DriverError(tokio_postgres::Error);

impl DriverError {
    pub(super) fn new(err: tokio_postgres::Error) -> DriverError {
        DriverError(err)
    }

    /// The driver's error, for its SQLSTATE and the like.
    pub fn driver(&self) -> &tokio_postgres::Error {
        &self.0
    }

    /// Connection losses, serialization failures, deadlocks and server shutdowns.
    fn is_transient(&self) -> bool {
        let err = &self.0;
        if err.is_closed() {
            return true;
        }
        match err.code() {
            Some(code) => {
                let code = code.code();
                code.starts_with("08")
                    || matches!(
                        code,
                        "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
                    )
            }
            None => {
                std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
            }
        }
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "{} (SQLSTATE {})", db.message(), db.code().code())?;
                if let Some(hint) = db.hint() {
                    write!(f, "; hint: {hint}")?;
                }
                Ok(())
            }
            // The driver's own message already names its cause (`error connecting to
            // server: ...`).
            None => fmt::Display::fmt(&self.0, f),
        }
    }
}

/// No `source()`: see the type's docs.
impl std::error::Error for DriverError {}
