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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::SalesforceError;
use crate::load::DeadLetter;
use crate::sources::{Extracted, StopCause};
use crate::{Error, Result};

use super::KEY;
use super::client::{Failure, SalesforceClient};
use super::describe::ObjectPlan;
use super::records::BatchBuilder;
use super::soql;

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
        page.get("totalSize")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
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
            tokio::spawn(async move { client.query(&path).await })
        };
        let mut next_page = Some(fetch(soql::query_all_path(
            self.client.version_path(),
            soql,
        )));
        while let Some(request) = next_page.take() {
            let page = request.await.map_err(|source| SalesforceError::PageLost {
                object: self.plan.object.clone(),
                source,
            })??;
            let (records, next) = page_parts(page, &self.plan.object)?;
            if let Some(next) = next {
                next_page = Some(fetch(next));
            }
            let mut letters = Vec::new();
            for record in records {
                let record = match record {
                    Value::Object(record) => record,
                    other => {
                        self.records += 1;
                        letters.push(not_an_object(&other));
                        continue;
                    }
                };
                match self.builder.push_json(&record) {
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
        let cursor_field = self.plan.cursor.clone();
        tracing::info!(stream = %object, chunks = queries.len(), "object too wide for one query; reading field chunks merged by Id");
        let mut chunks: Vec<ChunkPages> = queries
            .iter()
            .map(|q| ChunkPages {
                next: Some(soql::query_all_path(self.client.version_path(), q)),
                records: VecDeque::new(),
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
                let left: usize = chunks.iter().map(|c| c.records.len()).sum();
                skipped += left as u64;
                break 'merge;
            }
            let mut max: Option<String> = None;
            for chunk in &chunks {
                let id = chunk.head_id(&object)?;
                if max.as_deref().is_none_or(|m| id > m) {
                    max = Some(id.to_string());
                }
            }
            let Some(max) = max else {
                break 'merge;
            };
            let mut aligned = true;
            for chunk in chunks.iter_mut() {
                if chunk.head_id(&object)? != max.as_str() {
                    if let Some(Value::Object(dropped)) = chunk.records.pop_front() {
                        tracing::debug!(stream = %object, id = ?dropped.get(KEY), "record missing from another field chunk; skipped, the next window reads it");
                    }
                    skipped += 1;
                    aligned = false;
                }
            }
            if !aligned {
                continue;
            }
            let parts: Vec<Map<String, Value>> = chunks
                .iter_mut()
                .filter_map(|chunk| match chunk.records.pop_front() {
                    Some(Value::Object(part)) => Some(part),
                    _ => None,
                })
                .collect();
            // The same Id with different versions changed between the chunk queries: its
            // parts describe different states, so it waits for the next window too.
            let first = parts
                .first()
                .and_then(|part| cursor_field.as_deref().and_then(|c| part.get(c)));
            if parts
                .iter()
                .any(|part| cursor_field.as_deref().and_then(|c| part.get(c)) != first)
            {
                tracing::debug!(stream = %object, id = %max, "record changed between field chunk queries; skipped, the next window reads it");
                skipped += 1;
                continue;
            }
            let mut merged = Map::new();
            for part in parts {
                for (name, value) in part {
                    if name != "attributes" {
                        merged.entry(name).or_insert(value);
                    }
                }
            }
            let mut letters = Vec::new();
            if let Err(letter) = self.builder.push_json(&merged) {
                self.dead_letter(letter, &mut letters);
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

/// The current page of one field chunk and where its next page is.
struct ChunkPages {
    next: Option<String>,
    records: VecDeque<Value>,
}

impl ChunkPages {
    /// Makes sure a record is buffered, fetching pages as needed; false once exhausted.
    async fn fill(
        &mut self,
        client: &SalesforceClient,
        object: &str,
    ) -> std::result::Result<bool, Halt> {
        while self.records.is_empty() {
            let Some(path) = self.next.take() else {
                return Ok(false);
            };
            let page = client.query(&path).await?;
            let (records, next) = page_parts(page, object)?;
            self.records = records.into();
            self.next = next;
        }
        Ok(true)
    }

    fn head_id(&self, object: &str) -> Result<&str> {
        self.records
            .front()
            .and_then(|r| r.get(KEY))
            .and_then(Value::as_str)
            .ok_or_else(|| SalesforceError::RecordWithoutId(object.to_string()).into())
    }
}

/// The records of a query page and the path of the next one (`None` when `done`).
pub(super) fn page_parts(page: Value, object: &str) -> Result<(Vec<Value>, Option<String>)> {
    let shape = |what: &'static str| -> Error {
        SalesforceError::PageShape {
            object: object.to_string(),
            what,
        }
        .into()
    };
    let Value::Object(mut page) = page else {
        return Err(shape("is not a JSON object"));
    };
    let records = match page.remove("records") {
        Some(Value::Array(records)) => records,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(shape("has a records field that is not an array")),
    };
    let done = page
        .get("done")
        .and_then(Value::as_bool)
        .ok_or_else(|| shape("has no done flag"))?;
    if done {
        return Ok((records, None));
    }
    let next = page
        .get("nextRecordsUrl")
        .and_then(Value::as_str)
        .filter(|url| !url.is_empty())
        .ok_or_else(|| shape("is not the last one but has no nextRecordsUrl"))?;
    Ok((records, Some(next_path(next))))
}

/// `nextRecordsUrl` is a path from the instance root; an absolute URL is reduced to one, so
/// that every request goes to the session's instance.
fn next_path(url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        if let Ok(parsed) = url::Url::parse(url) {
            return match parsed.query() {
                Some(query) => format!("{}?{query}", parsed.path()),
                None => parsed.path().to_string(),
            };
        }
    }
    url.to_string()
}

fn not_an_object(record: &Value) -> DeadLetter {
    DeadLetter {
        key: String::new(),
        field: None,
        reason: "the record is not a JSON object".into(),
        raw: record.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pages_yield_records_and_the_next_path() {
        let (records, next) = page_parts(
            json!({"totalSize": 3, "done": false, "nextRecordsUrl": "/services/data/v62.0/query/01g-2000",
                   "records": [{"Id": "001A"}, {"Id": "001B"}]}),
            "Account",
        )
        .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(next.as_deref(), Some("/services/data/v62.0/query/01g-2000"));

        let (records, next) = page_parts(
            json!({"totalSize": 3, "done": true, "records": [{"Id": "001C"}]}),
            "Account",
        )
        .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(next, None);

        assert!(page_parts(json!({"done": false, "records": []}), "Account").is_err());
        assert!(page_parts(json!({"records": []}), "Account").is_err());
        assert!(page_parts(json!([]), "Account").is_err());
    }

    #[test]
    fn absolute_next_urls_become_paths() {
        assert_eq!(
            next_path("https://acme.my.salesforce.com/services/data/v62.0/queryAll/01g-4000"),
            "/services/data/v62.0/queryAll/01g-4000"
        );
        assert_eq!(
            next_path("/services/data/v62.0/query/01g-2000"),
            "/services/data/v62.0/query/01g-2000"
        );
    }
}
