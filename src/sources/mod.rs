//! Sources: connectors that extract a stream as Arrow batches covering a cursor range.
//!
//! Contract:
//! - `discover` returns the stream's staged schema: the key column first, typed data
//!   columns, then `_syncline_version` and `_syncline_deleted` (see crate::schema).
//! - `extract` reads every record changed in `[since - overlap, upper)` (or every record for a
//!   full load) where `upper` is chosen by the source and returned as `cursor_to`. Records may
//!   repeat (overlap, ties); destinations keep the newest version per key.
//! - Batches are bounded in size and produced as they are read: memory does not grow with
//!   the number of records. Records that cannot be converted come out as dead letters.
//! - Nothing here advances state; the pipeline does, after the destination commits.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::stream::BoxStream;

use std::collections::HashSet;
use std::sync::Arc;

use crate::Result;
use crate::config::{Config, SourceConfig};
use crate::load::{CursorRange, DeadLetter};
use crate::reconcile::drift::{DriftError, Key, SourceListing};

pub mod cells;
pub mod files;
mod http;
pub mod hubspot;
mod json;
pub mod postgres;
pub mod salesforce;

/// The source the config names; pure construction, no I/O (`check` proves it answers).
pub fn build(config: &Config) -> Result<Arc<dyn Source>> {
    Ok(match &config.source {
        SourceConfig::Hubspot(h) => Arc::new(hubspot::HubspotSource::new(h)?),
        SourceConfig::Salesforce(s) => Arc::new(salesforce::SalesforceSource::new(s)?),
        SourceConfig::Postgres(p) => {
            Arc::new(postgres::PostgresSource::new(p, &config.pipeline.name))
        }
        SourceConfig::Files(f) => Arc::new(files::FilesSource::new(f)?),
    })
}

/// What to extract.
#[derive(Debug, Clone)]
pub struct ExtractRequest {
    pub stream: String,
    /// `None` for a full load; otherwise the saved cursor (epoch ms).
    pub since: Option<i64>,
    /// What the source saved with the cursor at the last commit (`Extraction::state`), e.g.
    /// the files already loaded. A full load (`since` is `None`) gets it too: it must still
    /// read everything, but keeps what the state says about versions it assigned (the file
    /// source gives bytes it loaded before the version they were first given).
    pub state: Option<serde_json::Value>,
    pub batch_rows: usize,
}

/// One unit of extracted data.
#[derive(Debug)]
pub enum Extracted {
    Batch(RecordBatch),
    DeadLetters(Vec<DeadLetter>),
    /// The cursor this load reaches, when only reading tells (the largest cursor-column
    /// value a file source saw): replaces `Extraction::cursor.to`, never moving it below
    /// the saved cursor. Sent at most once, after the last batch.
    CursorReached(i64),
    /// How many records this extraction expects to read, when the source knows cheaply (a
    /// count it makes anyway, a search total, the planner's estimate). For progress display
    /// only: never checked against what arrives, since records change while they are read.
    Estimate(u64),
    /// The source stopped early and cleanly (API quota used up, budget reached). Everything
    /// sent before covers `[from, cursor)`, so the pipeline merges it and saves `cursor`;
    /// `None` when what was sent covers no contiguous range (an unordered bulk read), in
    /// which case the rows are still merged but the cursor stays where it was. Must be the
    /// last item. A source may instead end with an error of kind `ErrorKind::Quota`: the
    /// pipeline then merges what was sent and keeps the cursor, as for `cursor: None`.
    Stopped {
        cursor: Option<i64>,
        reason: String,
        cause: StopCause,
    },
    /// Something the run report should tell about this load without failing it (deletes
    /// the source can no longer vouch for, say). `reconcile`: a reconcile of the stream
    /// finds what the warning says may be missing, so a `[reconcile]` schedule runs one now.
    Warning {
        message: String,
        reconcile: bool,
    },
}

/// Why a source stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// The API quota or the configured budget is used up. It does not come back within the
    /// run, so the pipeline stops every later stream of the run without asking the source.
    Quota,
    /// Something about this stream alone (a replication stream gone quiet); later streams
    /// run as usual.
    Stream,
}

/// A running extraction.
pub struct Extraction {
    pub schema: SchemaRef,
    pub key: String,
    /// The range this extraction covers; `to` becomes the cursor once the load commits.
    pub cursor: CursorRange,
    /// Source-specific position saved with `cursor.to` once this load commits (and handed
    /// back in the next `ExtractRequest::state`). `None` keeps what was saved.
    pub state: Option<serde_json::Value>,
    pub items: BoxStream<'static, Result<Extracted>>,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// Verifies the credentials and that every configured stream exists.
    async fn check(&self) -> Result<()>;

    /// What the source would read, one line per finding, for `syncline check` (the file
    /// source says how many files each glob matches). Called after `check` succeeded.
    async fn inventory(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// The staged schema of a stream.
    async fn discover(&self, stream: &str) -> Result<SchemaRef>;

    async fn extract(&self, request: ExtractRequest) -> Result<Extraction>;

    /// API usage as the source last reported it, e.g. `"1834/15000"` (used/limit).
    fn api_usage(&self) -> Option<String> {
        None
    }

    /// Called after a load of `stream` committed and its cursor and state were saved: a
    /// source that holds server-side position (a replication slot) releases what is now
    /// safely in the destination. Never called before the destination commit.
    async fn committed(
        &self,
        _stream: &str,
        _cursor: i64,
        _state: Option<&serde_json::Value>,
    ) -> Result<()> {
        Ok(())
    }

    /// Whether a stream's cursor is a time (epoch ms). Sources whose cursor is a log
    /// position or a number say no, and `status` shows `cursor_text` without a time lag.
    fn cursor_is_time(&self, _stream: &str) -> bool {
        true
    }

    /// How `status` and the run report show a cursor.
    fn cursor_text(&self, _stream: &str, cursor: i64) -> String {
        chrono::DateTime::from_timestamp_millis(cursor)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| cursor.to_string())
    }

    /// How far the source's own position is behind, for `status` (a replication slot's
    /// retained WAL, say). `None` when the source has no such notion.
    async fn lag(&self, _stream: &str) -> Result<Option<String>> {
        Ok(None)
    }

    /// `syncline reconcile`: every current record of `stream` as (key, version or content
    /// hash), sorted by key (`reconcile::drift` says the order), read as cheaply as the source
    /// allows and in bounded chunks. Sources that cannot list say so (a configuration error).
    /// A source that compares by content hash computes it as the destination does: in SQL
    /// (`reconcile::listing`), or from Arrow rows when `arrow_hash` (`drift::arrow_row_hashes`).
    async fn list_keys(
        &self,
        stream: &str,
        _batch_rows: usize,
        _arrow_hash: bool,
    ) -> Result<SourceListing> {
        Err(unsupported(stream))
    }

    /// The version from which a listed record may be newer than what the last load read,
    /// given the stream's saved cursor: such a difference is in flight, not drift. `None`
    /// when versions say nothing about it (everything is compared).
    fn settled_until(&self, _stream: &str, _cursor: Option<i64>) -> Option<i64> {
        None
    }

    /// Keys of `stream` the source changed but has not delivered yet (a CDC slot's pending
    /// changes): their differences are in flight, not drift. `None` when the source holds no
    /// such backlog. Called under the stream lock.
    async fn in_flight_keys(&self, _stream: &str) -> Result<Option<HashSet<Key>>> {
        Ok(None)
    }

    /// `syncline reconcile --repair` and webhook hints in `syncline stream`: the current
    /// records of `stream` with these keys, as an extraction like any other. A key the source
    /// still holds as deleted comes as a delete where the source can read it so (HubSpot's
    /// archived records); keys no longer in the source at all are left out. Its cursor range
    /// is not used: a repair never moves the cursor.
    async fn fetch_keys(
        &self,
        stream: &str,
        _keys: Vec<Key>,
        _batch_rows: usize,
    ) -> Result<Extraction> {
        Err(unsupported(stream))
    }

    /// `syncline stream`: follows `stream`'s change log continuously from the saved cursor
    /// `since` over one long-lived connection (a CDC slot), sending what it reads in commit
    /// order. `None` for sources that have no such log (they are polled). The source then
    /// treats `committed` for this stream as a confirmation sent over that connection; when
    /// the returned [`Follower`] is dropped, the connection closes.
    async fn follow(
        &self,
        _stream: &str,
        _since: i64,
        _batch_rows: usize,
        _capacity: usize,
    ) -> Result<Option<Follower>> {
        Ok(None)
    }

    /// API calls `list_keys` costs for a stream of about `rows` records.
    fn list_cost(&self, _rows: u64) -> u64 {
        0
    }

    /// API calls `fetch_keys` costs for `keys` keys.
    fn fetch_cost(&self, _keys: u64) -> u64 {
        0
    }
}

/// What a [`Follower`] read.
#[derive(Debug)]
pub enum Followed {
    /// Changes of the stream. Everything before `read_to` has been sent once this item is
    /// received (a batch cut inside a long transaction carries the end of the transaction
    /// before it: its rest follows). `committed_at`: the source commit time of the oldest
    /// transaction in the batch, when the source says it.
    Changes {
        batch: Option<RecordBatch>,
        dead: Vec<DeadLetter>,
        read_to: i64,
        committed_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// The log was read up to `read_to` and held nothing for the stream (other tables'
    /// changes, an idle server's own WAL): saving it as the cursor lets the server free it.
    Progress { read_to: i64 },
    /// The follower stopped cleanly at `read_to` (everything before it was sent), for a
    /// reason reading again from there cures (the table gained a column). The last item.
    Stopped { read_to: i64, reason: String },
}

/// A running [`Source::follow`]: a bounded channel, so a slow consumer makes the source
/// read less, never drop anything. An error is the last item.
pub struct Follower {
    pub schema: SchemaRef,
    pub key: String,
    /// The cursor the follower started at.
    pub from: i64,
    pub items: tokio::sync::mpsc::Receiver<Result<Followed>>,
    /// How many bytes of log the source retains for the stream, as last heard (the server's
    /// position minus the confirmed one); for metrics.
    pub lag_bytes: Arc<std::sync::atomic::AtomicI64>,
    /// Ends the reading task and its connection when dropped.
    pub guard: Box<dyn Send + Sync>,
}

fn unsupported(stream: &str) -> crate::Error {
    DriftError::Unsupported {
        side: "source",
        what: "type".to_string(),
        stream: stream.to_string(),
    }
    .into()
}

/// `Source::settled_until` for an API whose cursor is a modified stamp in epoch milliseconds
/// and whose listed versions are that stamp in microseconds (HubSpot, Salesforce): a record
/// modified at or after the saved cursor (which never passes `now - lag`) is newer than the
/// last load read.
pub(crate) fn settled_at_modified_cursor(cursor: Option<i64>) -> Option<i64> {
    cursor.map(|ms| ms * 1000)
}
