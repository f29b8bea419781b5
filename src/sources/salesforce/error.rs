//! What can go wrong reading Salesforce, each failure with its kind.

use arrow::error::ArrowError;

use crate::config::KeyError;
use crate::error::{Classified, ErrorKind};
use crate::sources::http::Call;

#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    /// The login keys select no flow, or two.
    #[error(transparent)]
    Auth(#[from] KeyError),
    #[error("source.api_version {0:?} is not an API version such as \"62.0\"")]
    ApiVersion(String),
    #[error("source.private_key_path: cannot read the key file {path}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{key_name} holds a public key or certificate; give the private key whose certificate is uploaded to the connected app"
    )]
    PublicKey { key_name: &'static str },
    /// The key cannot sign. The library's error is not kept as the cause: PEM decoding
    /// errors can cite bytes of the key.
    #[error(
        "{key_name} {reason}; expected PEM text with a `BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY` block"
    )]
    UnusableKey {
        key_name: &'static str,
        reason: &'static str,
    },
    /// A configured stream names no object; `detail` is what the API said or a spelling hint.
    #[error("source.streams: Salesforce has no object named {stream:?}{detail}")]
    NoSuchObject { stream: String, detail: String },
    /// A 2xx token answer without the fields a session needs; the body holds the token, so
    /// it is never quoted.
    #[error("{0}: the token response lacks access_token or instance_url")]
    TokenShape(Call),
    /// The API quota (or the configured share of it) ran out outside a read (login, describe):
    /// the pipeline stops the stream and the rest of the run cleanly.
    #[error("{0}; run again once the Salesforce API quota frees up")]
    Quota(String),
    #[error("describe of {stream}: unexpected shape")]
    DescribeShape {
        stream: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("global describe: the answer has no sobjects list")]
    NoObjectList,
    #[error("Salesforce object {0} has no Id field, so its records cannot be keyed")]
    NoIdField(String),
    #[error(
        "Salesforce object {0} has neither SystemModstamp nor LastModifiedDate as a datetime field, so it cannot be read incrementally"
    )]
    NoCursorField(String),
    #[error("{object}: not even Id and {cursor} fit in one query URI for this instance")]
    UriTooShort { object: String, cursor: String },
    #[error("COUNT() of {0}: the answer has no totalSize")]
    NoTotalSize(String),
    #[error("a record of {0} has no Id, so field chunks cannot be merged")]
    RecordWithoutId(String),
    /// A record of a page that parsed whole but not on its own (a number JSON cannot hold);
    /// serde_json's message gives the place, never the value.
    #[error("query of {object}: a record is not readable JSON")]
    RecordJson {
        object: String,
        #[source]
        source: serde_json::Error,
    },
    /// The task fetching a query page ahead panicked or was aborted.
    #[error("query of {object}: a page request was lost")]
    PageLost {
        object: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A query page that is not the documented shape; `what` says how.
    #[error("query of {object}: the page {what}")]
    PageShape { object: String, what: &'static str },
    /// A `sobjects/{O}/deleted` answer that is not the documented shape (A5).
    #[error("deleted records of {object}: the answer {what}")]
    DeletedShape { object: String, what: &'static str },
    #[error("Bulk job for {0}: the creation answer has no usable id")]
    NoJobId(String),
    #[error("Bulk job {job} of {object}: the status answer has no state")]
    NoJobState { job: String, object: String },
    #[error("Bulk results of {object}: unreadable CSV header")]
    CsvHeader {
        object: String,
        #[source]
        source: csv::Error,
    },
    #[error("Bulk results of {object}: unreadable CSV")]
    Csv {
        object: String,
        #[source]
        source: csv::Error,
    },
    #[error("Bulk results of {object} lack the Id or {cursor} column")]
    CsvColumns { object: String, cursor: String },
    #[error("building a batch")]
    Batch(#[source] ArrowError),
}

impl Classified for SalesforceError {
    fn kind(&self) -> ErrorKind {
        match self {
            SalesforceError::Auth(_)
            | SalesforceError::ApiVersion(_)
            | SalesforceError::KeyFile { .. }
            | SalesforceError::PublicKey { .. }
            | SalesforceError::UnusableKey { .. }
            | SalesforceError::NoSuchObject { .. } => ErrorKind::Config,
            SalesforceError::Quota(_) => ErrorKind::Quota,
            _ => ErrorKind::Source,
        }
    }
}
