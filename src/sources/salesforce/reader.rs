//! The task that reads one object and forwards converted batches through a bounded channel.
//!
//! Three ways to read, chosen by `extract` before the task starts:
//! - ordered REST (`ORDER BY <cursor> ASC, Id ASC`): incremental windows and small full loads;
//!   resumable, so a quota stop reports the version of the last record sent as the cursor;
//! - Bulk API 2.0 for large full loads (see `bulk.rs`), falling back to ordered REST;
//! - split REST for objects too wide for one URI (A9.1): one query per field chunk, all
//!   ordered by Id, read in lockstep and merged by Id, holding only the current pages.
//!
//! A quota stop (403 `REQUEST_LIMIT_EXCEEDED` or the budget reached) is not a failure: the
//! rows built so far are flushed and `Extracted::Stopped` is the last item.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::SalesforceError;
use crate::load::DeadLetter;
use crate::sources::http::request_ahead;
use crate::sources::{Extracted, StopCause};
use crate::{Error, Result};

use super::client::{Failure, SalesforceClient};
use super::describe::ObjectPlan;
use super::page::{self, Head, QueryPage};
use super::records::BatchBuilder;
use super::soql;
use crate::sources::json::Wire;

/// What the reader runs.
#[derive(Debug, Clone)]
pub(super) enum Route {
    /// One ordered REST query (an incremental window, or a narrow object's full load whose
    /// size is not worth a Bulk job).
    Ordered { soql: String },
    /// A full load: count first, then Bulk (`bulk`) above the threshold, else `ordered`.
    Full { ordered: String, bulk: String },
    /// One Id-ordered REST query per field chunk.
    Split { queries: Vec<String> },
}

/// Settings the reader needs from the configuration.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub bulk_threshold: u64,
    pub bulk_poll: Duration,
}

/// Why a read ended early.
pub(super) enum Halt {
    /// The quota or budget is used up: stop cleanly.
    Quota(String),
    Failed(Error),
    /// The receiving side hung up (the pipeline failed first); stop quietly.
    Hangup,
}

impl From<Failure> for Halt {
    fn from(failure: Failure) -> Halt {
        match failure {
            Failure::Quota(reason) => Halt::Quota(reason),
            other => Halt::Failed(other.into()),
        }
    }
}

impl From<Error> for Halt {
    fn from(err: Error) -> Halt {
        Halt::Failed(err)
    }
}

impl From<SalesforceError> for Halt {
    fn from(err: SalesforceError) -> Halt {
        Halt::Failed(err.into())
    }
}

pub(super) struct Reader {
    pub(super) client: SalesforceClient,
    pub(super) plan: Arc<ObjectPlan>,
    pub(super) settings: Settings,
    pub(super) builder: BatchBuilder,
    batch_rows: usize,
    tx: mpsc::Sender<Result<Extracted>>,
    /// True while the current read is ordered by the cursor, so that its progress is a cursor.
    pub(super) ordered: bool,
    /// The version of the last record pushed by an ordered read.
    last_version: Option<i64>,
    /// Records read (rows and dead letters), for logs and the stop reason.
    pub(super) records: u64,
}

impl Reader {
    pub(super) fn new(
        client: SalesforceClient,
        plan: Arc<ObjectPlan>,
        settings: Settings,
        batch_rows: usize,
        tx: mpsc::Sender<Result<Extracted>>,
    ) -> Reader {
        Reader {
            client,
            builder: BatchBuilder::new(plan.clone()),
            plan,
            settings,
            batch_rows: batch_rows.max(1),
            tx,
            ordered: false,
            last_version: None,
            records: 0,
        }
    }

    /// Reads the route to the end (or to a stop) and reports the outcome on the channel.
    pub(super) async fn run(mut self, route: Route) {
        let outcome = match self.read(route).await {
            Ok(()) => self.flush().await,
            Err(halt) => Err(halt),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(stream = %self.plan.object, records = self.records, "salesforce object read");
            }
            Err(Halt::Hangup) => {}
            Err(Halt::Failed(err)) => {
                // The receiver may be gone already; there is nobody left to tell then.
                let _ = self.tx.send(Err(err)).await;
            }
            Err(Halt::Quota(reason)) => {
                // What was read is complete and correct: deliver it, then say why we stopped.
                if self.flush().await.is_err() {
                    return;
                }
                let cursor = if self.ordered {
                    self.last_version
                } else {
                    None
                };
                let resume = match cursor {
                    Some(ms) => format!("the next run resumes from {}", soql::datetime_literal(ms)),
                    None => "the next run reads this window again".to_string(),
                };
                let reason = format!(
                    "{reason}; stopped reading {} after {} records, {resume}",
                    self.plan.object, self.records
                );
                tracing::warn!(stream = %self.plan.object, records = self.records, cursor = ?cursor, "salesforce extraction stopped early: {reason}");
                let _ = self
                    .tx
                    .send(Ok(Extracted::Stopped {
                        cursor,
                        reason,
                        cause: StopCause::Quota,
                    }))
                    .await;
            }
        }
    }

    async fn read(&mut self, route: Route) -> std::result::Result<(), Halt> {
        match route {
            Route::Ordered { soql } => self.ordered(&soql).await,
            Route::Split { queries } => self.split(&queries).await,
            Route::Full { ordered, bulk } => {
                let total = self.count().await?;
                // Hung up: the next send finds out and stops the read.
                let _ = self.tx.send(Ok(Extracted::Estimate(total))).await;
                if total >= self.settings.bulk_threshold {
                    tracing::info!(stream = %self.plan.object, total, "full load through Bulk API 2.0");
                    if self.bulk(&bulk).await? == super::bulk::BulkOutcome::Done {
                        return Ok(());
                    }
                    tracing::info!(stream = %self.plan.object, "falling back to a REST full load");
                }
                self.ordered(&ordered).await
            }
        }
    }

    /// `SELECT COUNT() FROM O` through `queryAll` (deleted rows are read too, so they count).
    async fn count(&mut self) -> std::result::Result<u64, Halt> {
        let soql = soql::select(&["COUNT()".to_string()], &self.plan.object, None, None);
        let page = self
            .client
            .query(&soql::query_all_path(self.client.version_path(), &soql))
            .await?;
        page.total_size().ok_or_else(|| {
            Halt::Failed(SalesforceError::NoTotalSize(self.plan.object.clone()).into())
        })
    }

    /// Pages through one ordered query until `done`, never assuming a page is full (A2).
    ///
    /// The next page is requested as soon as its locator is known, so Salesforce serves it
    /// (and it is parsed) while this page is converted; one request ahead at most, so the
    /// requests sent and the budget they use are those of reading the pages one by one.
    async fn ordered(&mut self, soql: &str) -> std::result::Result<(), Halt> {
        self.ordered = true;
        let client = self.client.clone();
        let fetch = |path: String| {
            let client = client.clone();
            request_ahead(async move { client.query(&path).await })
        };
        let mut next_page =
            Some(fetch(soql::query_all_path(self.client.version_path(), soql)).await);
        while let Some(request) = next_page.take() {
            let page = request.await.map_err(|source| SalesforceError::PageLost {
                object: self.plan.object.clone(),
                source,
            })??;
            if let Some(next) = page.next_path(&self.plan.object)? {
                next_page = Some(fetch(next).await);
            }
            let mut letters = Vec::new();
            for record in page.records() {
                match self.builder.push_json(record) {
                    Ok(version) => self.last_version = Some(version),
                    Err(letter) => self.dead_letter(letter, &mut letters),
                }
                self.after_push().await?;
            }
            self.send_letters(letters).await?;
        }
        Ok(())
    }

    /// Reads the chunks' pages in lockstep: every chunk returns the same Ids in the same order,
    /// so the heads either agree (merge and emit) or the smaller ones are records missing
    /// from some chunk (they changed between the chunk queries) and are skipped; their newer
    /// SystemModstamp puts them in the next window.
    async fn split(&mut self, queries: &[String]) -> std::result::Result<(), Halt> {
        self.ordered = false;
        let object = self.plan.object.clone();
        let cursor_field = self.plan.cursor.clone().unwrap_or_default();
        tracing::info!(stream = %object, chunks = queries.len(), "object too wide for one query; reading field chunks merged by Id");
        let mut chunks: Vec<ChunkPages> = queries
            .iter()
            .map(|q| ChunkPages {
                next: Some(soql::query_all_path(self.client.version_path(), q)),
                page: None,
                at: 0,
            })
            .collect();
        let mut skipped = 0u64;
        'merge: loop {
            let mut exhausted = false;
            for chunk in chunks.iter_mut() {
                if !chunk.fill(&self.client, &object).await? {
                    exhausted = true;
                    break;
                }
            }
            if exhausted {
                // One chunk is exhausted: whatever the others still hold is missing from it.
                let left: usize = chunks.iter().map(ChunkPages::left).sum();
                skipped += left as u64;
                break 'merge;
            }
            let heads = chunks
                .iter()
                .map(|chunk| chunk.head(&object, &cursor_field))
                .collect::<Result<Vec<_>>>()?;
            let Some(max) = heads
                .iter()
                .map(|(id, _)| id)
                .max()
                .map(|id| id.to_string())
            else {
                break 'merge;
            };
            // The Ids of the heads behind the others (kept for the log).
            let behind: Vec<Option<String>> = heads
                .iter()
                .map(|(id, _)| (*id != max).then(|| id.to_string()))
                .collect();
            // The same Id with different versions changed between the chunk queries: its
            // parts describe different states, so it waits for the next window too.
            let changed = heads.iter().any(|(_, stamp)| *stamp != heads[0].1);
            drop(heads);
            if behind.iter().any(Option::is_some) {
                for (chunk, behind) in chunks.iter_mut().zip(behind) {
                    if let Some(id) = behind {
                        tracing::debug!(stream = %object, id = %id, "record missing from another field chunk; skipped, the next window reads it");
                        chunk.at += 1;
                        skipped += 1;
                    }
                }
                continue;
            }
            if changed {
                tracing::debug!(stream = %object, id = %max, "record changed between field chunk queries; skipped, the next window reads it");
                skipped += 1;
                for chunk in chunks.iter_mut() {
                    chunk.at += 1;
                }
                continue;
            }
            let mut letters = Vec::new();
            let parts: Vec<&str> = chunks.iter().map(ChunkPages::front).collect();
            if let Err(letter) = self.builder.push_parts(&parts) {
                self.dead_letter(letter, &mut letters);
            }
            for chunk in chunks.iter_mut() {
                chunk.at += 1;
            }
            self.after_push().await?;
            self.send_letters(letters).await?;
        }
        if skipped > 0 {
            tracing::info!(stream = %object, skipped, "partial records skipped while merging field chunks");
        }
        Ok(())
    }

    /// Counts a record read and flushes a full batch.
    pub(super) async fn after_push(&mut self) -> std::result::Result<(), Halt> {
        self.records += 1;
        if self.builder.rows() >= self.batch_rows {
            self.flush().await?;
        }
        Ok(())
    }

    pub(super) fn dead_letter(&self, letter: DeadLetter, letters: &mut Vec<DeadLetter>) {
        // Key and field only: reasons and raw records may quote values.
        tracing::warn!(stream = %self.plan.object, key = %letter.key, field = ?letter.field, "record sent to the dead-letter file");
        letters.push(letter);
    }

    pub(super) async fn flush(&mut self) -> std::result::Result<(), Halt> {
        if self.builder.rows() == 0 {
            return Ok(());
        }
        let batch = self.builder.finish()?;
        self.tx
            .send(Ok(Extracted::Batch(batch)))
            .await
            .map_err(|_| Halt::Hangup)
    }

    pub(super) async fn send_letters(
        &mut self,
        letters: Vec<DeadLetter>,
    ) -> std::result::Result<(), Halt> {
        if letters.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Ok(Extracted::DeadLetters(letters)))
            .await
            .map_err(|_| Halt::Hangup)
    }

    /// True once the receiving side is gone (checked while waiting on a Bulk job).
    pub(super) fn hung_up(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The current page of one field chunk, where its next page is, and the record at its head.
struct ChunkPages {
    next: Option<String>,
    page: Option<QueryPage>,
    /// The head record's index in `page`.
    at: usize,
}

impl ChunkPages {
    /// Makes sure a record is at the head, fetching pages as needed; false once exhausted.
    async fn fill(
        &mut self,
        client: &SalesforceClient,
        object: &str,
    ) -> std::result::Result<bool, Halt> {
        while self.left() == 0 {
            let Some(path) = self.next.take() else {
                return Ok(false);
            };
            let page = client.query(&path).await?;
            self.next = page.next_path(object)?;
            self.page = Some(page);
            self.at = 0;
        }
        Ok(true)
    }

    /// Records not yet taken from the current page.
    fn left(&self) -> usize {
        self.page
            .as_ref()
            .map_or(0, |page| page.len().saturating_sub(self.at))
    }

    /// The head record's JSON text (`fill` made sure there is one).
    fn front(&self) -> &str {
        self.page
            .as_ref()
            .and_then(|page| page.record(self.at))
            .unwrap_or_default()
    }

    /// The head record's Id and cursor value; a chunk whose head has no string Id cannot be
    /// merged.
    fn head(&self, object: &str, cursor: &str) -> Result<(Cow<'_, str>, Option<Wire<'_>>)> {
        let head =
            Head::read(self.front(), cursor).map_err(|source| page::unreadable(object, source))?;
        match head {
            Some(Head {
                id: Some(Wire::Str(id)),
                stamp,
            }) => Ok((id, stamp)),
            _ => Err(SalesforceError::RecordWithoutId(object.to_string()).into()),
        }
    }
}
