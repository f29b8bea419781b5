//! What can go wrong in the Snowflake destination. Connector errors are kept (as
//! [`ConnectorError`]) as the source of the step that failed.

use std::fmt;

use snowflake_connector_rs as sf;

use crate::config::KeyError;
use crate::error::{Classified, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum SnowflakeError {
    /// The credentials keys are missing or contradict each other.
    #[error(transparent)]
    Credentials(#[from] KeyError),
    #[error("destination.private_key_path: cannot read {path}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("snowflake destination schema `{schema}` {problem}")]
    BadSchemaName {
        schema: String,
        problem: &'static str,
    },
    /// `key` is the configuration key holding the URL (`destination.url`, `staging.url`).
    #[error("{key} is not a URL")]
    NotAUrl {
        key: &'static str,
        #[source]
        source: url::ParseError,
    },
    /// The connector refused the client configuration.
    #[error("snowflake destination")]
    Client(#[source] ConnectorError),
    /// A statement or connector call failed; `step` says which.
    #[error("snowflake: {step}")]
    Statement {
        step: &'static str,
        #[source]
        source: ConnectorError,
    },
    #[error(
        "the ledger table {ledger} does not exist; run the destination check (or ensure_table) \
         before merging"
    )]
    NoLedger { ledger: String },
    #[error(
        "load {load_id}: the merge request names no staged files; the snowflake destination \
         loads from the stage"
    )]
    NoFilesInRequest { load_id: String },
    #[error("the load lists no staged files to copy into Snowflake")]
    NoStagedFiles,
    #[error(
        "staged file {file} is not in the load folder {folder}; a load's files must share one \
         folder"
    )]
    FileOutsideFolder { file: String, folder: String },
    #[error("staged folder {folder_url} is not under staging.url {staging_prefix}")]
    FolderOutsideStaging {
        folder_url: String,
        staging_prefix: String,
    },
    /// `COPY` did not load one of the load's files: nothing was merged.
    #[error(
        "load {load_id}: Snowflake's COPY reported file {file} as {status}, not LOADED; nothing \
         was merged"
    )]
    FileNotLoaded {
        load_id: String,
        file: String,
        status: String,
    },
    /// `COPY` loaded another number of rows than the manifest lists: nothing was merged.
    #[error(
        "load {load_id}: Snowflake's COPY loaded {loaded} rows from {files} files, the manifest \
         lists {staged_rows} rows; nothing was merged"
    )]
    CopyCount {
        load_id: String,
        loaded: u64,
        files: usize,
        staged_rows: u64,
    },
    #[error("load {load_id}: snowflake reported {updated} updated rows but {deleted} soft deletes")]
    SoftDeletesExceedUpdates {
        load_id: String,
        updated: u64,
        deleted: u64,
    },
    #[error("snowflake: {step}: no result row")]
    NoResultRow { step: &'static str },
    #[error("snowflake result lacks column `{column}`")]
    MissingColumn {
        column: String,
        #[source]
        source: sf::error::SchemaError,
    },
    /// `got` names the kind of value, never the value.
    #[error("snowflake returned {got} for `{column}`, expected {wanted}")]
    UnexpectedValue {
        column: String,
        wanted: &'static str,
        got: &'static str,
    },
    #[error("snowflake returned no `{column}`")]
    NoValue { column: String },
    #[error("snowflake returned `{column}` that is not a whole number: {value:?}")]
    NotAWholeNumber { column: String, value: String },
    #[error("snowflake returned a ledger checksum that is not a u64: {0:?}")]
    BadLedgerChecksum(String),
}

/// Configuration and rejected credentials are the user's to fix; a difference between what
/// `COPY` loaded and the manifest is a reconciliation mismatch; a connector failure is
/// transient when retrying may cure it (network, timeouts, an expired session).
impl Classified for SnowflakeError {
    fn kind(&self) -> ErrorKind {
        match self {
            SnowflakeError::Credentials(_)
            | SnowflakeError::KeyFile { .. }
            | SnowflakeError::BadSchemaName { .. }
            | SnowflakeError::NotAUrl { .. }
            | SnowflakeError::Client(_) => ErrorKind::Config,
            SnowflakeError::Statement { source, .. } => source.kind(),
            SnowflakeError::FileNotLoaded { .. } | SnowflakeError::CopyCount { .. } => {
                ErrorKind::Reconciliation
            }
            SnowflakeError::NoLedger { .. }
            | SnowflakeError::NoFilesInRequest { .. }
            | SnowflakeError::NoStagedFiles
            | SnowflakeError::FileOutsideFolder { .. }
            | SnowflakeError::FolderOutsideStaging { .. }
            | SnowflakeError::SoftDeletesExceedUpdates { .. }
            | SnowflakeError::NoResultRow { .. }
            | SnowflakeError::MissingColumn { .. }
            | SnowflakeError::UnexpectedValue { .. }
            | SnowflakeError::NoValue { .. }
            | SnowflakeError::NotAWholeNumber { .. }
            | SnowflakeError::BadLedgerChecksum(_) => ErrorKind::Destination,
        }
    }
}

/// A connector error, shown as Snowflake's message and code when Snowflake sent them, else
/// as the connector's own message; the statement text is not repeated.
///
/// The error's own sources are not exposed: they are the HTTP client's errors, which name
/// request URLs, and the connector warns that its errors may carry sensitive information.
#[derive(Debug)]
pub struct ConnectorError(sf::Error);

impl ConnectorError {
    pub(super) fn new(error: sf::Error) -> ConnectorError {
        ConnectorError(error)
    }

    /// The connector's error, for its kind, code and query id.
    pub fn connector(&self) -> &sf::Error {
        &self.0
    }

    fn kind(&self) -> ErrorKind {
        match self.0.kind() {
            sf::ErrorKind::Network | sf::ErrorKind::Timeout | sf::ErrorKind::SessionExpired => {
                ErrorKind::Transient
            }
            sf::ErrorKind::Auth | sf::ErrorKind::Config => ErrorKind::Config,
            _ => ErrorKind::Destination,
        }
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.snowflake_message(), self.0.snowflake_code()) {
            (Some(message), Some(code)) => write!(f, "{message} (code {code})"),
            (Some(message), None) => f.write_str(message),
            _ => fmt::Display::fmt(&self.0, f),
        }
    }
}

/// No `source()`: see the type's docs.
impl std::error::Error for ConnectorError {}
