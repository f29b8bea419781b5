//! What can go wrong reading HubSpot, each failure with its kind.

use arrow::error::ArrowError;

use crate::error::{Classified, ErrorKind};
use crate::sources::http::Call;

#[derive(Debug, thiserror::Error)]
pub enum HubspotError {
    /// The properties API answered JSON that is not a property list.
    #[error("properties of {stream}: unexpected shape")]
    PropertiesShape {
        stream: String,
        #[source]
        source: serde_json::Error,
    },
    /// A configured stream names no object type; `detail` is what the API said.
    #[error("source.streams: HubSpot has no object type named {stream:?}{detail}")]
    NoSuchObject { stream: String, detail: String },
    /// Incremental reads filter on the modified-date property; without it there is no cursor.
    #[error("stream {stream} has no {property} property, so it cannot be read incrementally")]
    NoModifiedProperty { stream: String, property: String },
    #[error(
        "stream {stream} has {properties} properties ({characters} characters); requests split across property chunks are not supported yet"
    )]
    TooManyProperties {
        stream: String,
        properties: usize,
        characters: usize,
    },
    /// The daily quota is a stop of the whole run, not a fault that passes within it.
    #[error(
        "{call}: the daily HubSpot API limit is used up; the run stops with state saved and can resume after the limit resets"
    )]
    DailyLimit { call: Call },
    /// The consumer of the batches went away (the run was cancelled).
    #[error("extraction cancelled")]
    Cancelled,
    /// The task fetching a page panicked or was aborted.
    #[error("{stream}: a page request was lost")]
    PageLost {
        stream: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("search of {stream}: a page with more to follow had no readable id")]
    NoLastId { stream: String },
    /// Search ignored the `hs_object_id > last` filter; reading on would never end.
    #[error(
        "search of {stream}: a page ended at id {last}, not after the previous page's {previous}"
    )]
    KeyNotAdvancing {
        stream: String,
        previous: i64,
        last: i64,
    },
    #[error("{stream}: the response has no results array")]
    NoResults { stream: String },
    #[error("building a batch")]
    Batch(#[source] ArrowError),
}

impl Classified for HubspotError {
    fn kind(&self) -> ErrorKind {
        match self {
            HubspotError::NoSuchObject { .. } => ErrorKind::Config,
            HubspotError::DailyLimit { .. } => ErrorKind::Quota,
            _ => ErrorKind::Source,
        }
    }
}
