//! The Salesforce source (crm-apis.md PART A).
//!
//! - Auth: OAuth 2.0 client credentials or JWT bearer (an RS256 assertion signed with the
//!   configured private key) against `login_url`; every other call goes to the
//!   `instance_url` the token endpoint returns. An expired session logs in again (A1, A7).
//! - Schema: describe drives typed Arrow columns, re-read once per run (A4, A3 rule 4).
//! - Incremental: `queryAll` over a window bounded on both sides,
//!   `[since - overlap, max(now - lag, since))` on SystemModstamp, ordered by SystemModstamp
//!   then Id. `queryAll` returns soft-deleted rows with `IsDeleted = true`, which become
//!   deletes (A2, A3).
//! - Records deleted and then purged from the Recycle Bin (no longer in `queryAll`) are
//!   listed by `sobjects/{O}/deleted` for the incremental window (A5), one call per window,
//!   and become deletes too. When the delete log no longer reaches back to the window's
//!   start (`earliestDateAvailable`, or a window older than 30 days), the load says so with
//!   a warning that recommends a reconcile.
//! - Full load: `[-inf, now - lag)`, through Bulk API 2.0 when the object holds at least
//!   `bulk_threshold` records (falling back to REST when Bulk cannot serve it), else REST (A6).
//! - Wide objects whose field list does not fit in one URI are read as field chunks merged by
//!   Id (A9.1).
//! - Quota: `Sforce-Limit-Info` is recorded from every answer; reaching `api_budget` or a 403
//!   `REQUEST_LIMIT_EXCEEDED` ends the extraction cleanly with `Extracted::Stopped` (A7).
//! - Pages are converted and forwarded as they arrive through a bounded channel, so memory
//!   holds at most a few batches and the current pages whatever the object's size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::Result;
use crate::config::SalesforceConfig;
use crate::load::CursorRange;
use crate::reconcile::drift::{Compare, Key, Listed, SourceListing};
use crate::sources::{ExtractRequest, Extracted, Extraction, Source, json};

mod bulk;
mod client;
pub mod config;
pub mod describe;
mod error;
mod jwt;
mod page;
mod reader;
pub mod records;
mod soql;

use client::Failure;
pub use client::SalesforceClient;
use describe::{Describe, ObjectPlan};
pub use error::SalesforceError;
use reader::{Reader, Route, Settings};

/// The key column of every Salesforce stream: the 18-character record Id.
pub const KEY: &str = "Id";

/// How far back `sobjects/{O}/deleted` may start (A5).
const DELETED_WINDOW_MS: i64 = 30 * 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// REST query pages hold up to 2,000 records (A2).
const QUERY_PAGE: u64 = 2_000;
/// Ids per `WHERE Id IN (...)` of a repair: 200 keep the URI far below its limit.
const FETCH_IDS: usize = 200;

/// Reads the configured sObjects. One instance lives for one run: describes are cached per
/// instance, so every run sees fields added since the last one.
pub struct SalesforceSource {
    client: SalesforceClient,
    config: SalesforceConfig,
    plans: Mutex<HashMap<String, Arc<ObjectPlan>>>,
}

impl SalesforceSource {
    /// Builds the source; no request is sent until the first call.
    pub fn new(config: &SalesforceConfig) -> Result<SalesforceSource> {
        Ok(SalesforceSource {
            client: SalesforceClient::new(config)?,
            config: config.clone(),
            plans: Mutex::default(),
        })
    }

    /// The object's describe turned into a read plan, fetched once per instance.
    async fn plan(&self, stream: &str) -> Result<Arc<ObjectPlan>> {
        if let Some(found) = self
            .plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
        {
            return Ok(found.clone());
        }
        let path = self
            .client
            .data_path(&format!("sobjects/{}/describe", soql::encode(stream)));
        let body = match self.client.get_json(&path).await {
            Ok(body) => body,
            Err(Failure::Api(api))
                if api.status == 404 || api.code == "NOT_FOUND" || api.code == "INVALID_TYPE" =>
            {
                return Err(SalesforceError::NoSuchObject {
                    stream: stream.to_string(),
                    detail: format!(" ({}: {})", api.code, api.message),
                }
                .into());
            }
            Err(other) => return Err(other.into()),
        };
        let describe: Describe =
            serde_json::from_value(body).map_err(|source| SalesforceError::DescribeShape {
                stream: stream.to_string(),
                source,
            })?;
        let plan = Arc::new(ObjectPlan::from_describe(&describe)?);
        self.plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream.to_string(), plan.clone());
        Ok(plan)
    }

    /// The deletes Salesforce logged for `stream` in the incremental window `cursor`
    /// (`sobjects/{O}/deleted`, A5; one API call, more when a window holds over 600,000), as a batch of deletes at their
    /// `deletedDate`, and a warning when the log no longer reaches back to the window's start.
    /// The server ignores seconds: the start is taken down and the end up to the minute (a
    /// delete just after the window's end applied now is still a delete the source made).
    async fn logged_deletes(
        &self,
        stream: &str,
        cursor: CursorRange,
        schema: &SchemaRef,
    ) -> Result<Vec<Extracted>> {
        let Some(from) = cursor.from else {
            return Ok(Vec::new());
        };
        let now = chrono::Utc::now().timestamp_millis();
        let oldest = now - DELETED_WINDOW_MS;
        // A start older than 30 days is refused; ask from a minute inside the window instead.
        let start = (from - from.rem_euclid(MINUTE_MS))
            .max(oldest - oldest.rem_euclid(MINUTE_MS) + 2 * MINUTE_MS);
        let end = (cursor.to + MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS;
        let end = end.max(start + MINUTE_MS);
        let shape = |what| SalesforceError::DeletedShape {
            object: stream.to_string(),
            what,
        };
        let mut deletes = Vec::new();
        let mut earliest: Option<i64> = None;
        // Windows still to ask for, the earliest last; a window with more than 600,000 deletes
        // is refused (`EXCEEDED_ID_LIMIT`, A5) and asked for again as two halves.
        let mut windows = vec![(start, end)];
        while let Some((start, end)) = windows.pop() {
            let path = self.client.data_path(&format!(
                "sobjects/{}/deleted/?start={}&end={}",
                soql::encode(stream),
                soql::encode(&soql::datetime_literal(start)),
                soql::encode(&soql::datetime_literal(end)),
            ));
            let body = match self.client.get_json(&path).await {
                Ok(body) => body,
                Err(Failure::Api(api))
                    if api.code == "EXCEEDED_ID_LIMIT" && end - start > MINUTE_MS =>
                {
                    let middle = start + ((end - start) / MINUTE_MS / 2) * MINUTE_MS;
                    tracing::info!(
                        stream,
                        "too many deletes in one getDeleted window; asking for each half"
                    );
                    windows.push((middle, end));
                    windows.push((start, middle));
                    continue;
                }
                Err(other) => return Err(other.into()),
            };
            let listed = body
                .get("deletedRecords")
                .and_then(Value::as_array)
                .ok_or_else(|| shape("has no deletedRecords list"))?;
            for record in listed {
                let id = record
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| shape("lists a record without an id"))?;
                let at = record
                    .get("deletedDate")
                    .and_then(Value::as_str)
                    .and_then(records::parse_millis)
                    .ok_or_else(|| shape("lists a record without a readable deletedDate"))?;
                deletes.push((Key::Text(id.to_string()), at.saturating_mul(1000)));
            }
            // The log's start as the latest answer gives it (it only moves later).
            let answered = body
                .get("earliestDateAvailable")
                .and_then(Value::as_str)
                .and_then(records::parse_millis);
            earliest = earliest.max(answered);
        }
        let mut items = Vec::new();
        if !deletes.is_empty() {
            tracing::info!(
                stream,
                deletes = deletes.len(),
                "deletes listed by getDeleted"
            );
            items.push(Extracted::Batch(crate::reconcile::drift::deletes_batch(
                schema, &deletes,
            )?));
        }
        let reaches_back = earliest.unwrap_or(start).max(start);
        if reaches_back > from {
            items.push(Extracted::Warning {
                message: format!(
                    "stream {stream}: Salesforce lists deletes only from {} on (getDeleted's earliestDateAvailable, at most 30 days back), but this load's window starts at {}: records deleted and purged from the Recycle Bin in between may still be in the destination; run `syncline reconcile --repair --streams {stream}` (or `syncline run --full-refresh --streams {stream}`) to remove them",
                    soql::datetime_literal(reaches_back),
                    soql::datetime_literal(from),
                ),
                reconcile: true,
            });
        }
        Ok(items)
    }

    fn settings(&self) -> Settings {
        Settings {
            bulk_threshold: self.config.bulk_threshold,
            bulk_poll: Duration::from_millis(self.config.bulk_poll_ms.max(1)),
        }
    }
}

/// Seconds from the configuration as milliseconds, saturating rather than wrapping.
fn millis(seconds: u64) -> i64 {
    i64::try_from(seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
}

/// The window an extraction covers (A3): bounded above by `now - lag` so that a run reads a
/// fixed set, overlapping the previous window by `overlap` for late commits, and never
/// moving the cursor backwards.
fn window(since: Option<i64>, now: i64, overlap_seconds: u64, lag_seconds: u64) -> CursorRange {
    let upper = now.saturating_sub(millis(lag_seconds));
    match since {
        None => CursorRange {
            from: None,
            to: upper,
        },
        Some(since) => CursorRange {
            from: Some(since.saturating_sub(millis(overlap_seconds))),
            to: upper.max(since),
        },
    }
}

#[async_trait]
impl Source for SalesforceSource {
    /// Logs in, lists the org's objects, and checks every configured stream exists and can be
    /// planned (Id and a cursor field).
    async fn check(&self) -> Result<()> {
        let body = self
            .client
            .get_json(&self.client.data_path("sobjects"))
            .await?;
        let objects = body
            .get("sobjects")
            .and_then(Value::as_array)
            .ok_or(SalesforceError::NoObjectList)?;
        let name_of = |o: &Value| o.get("name").and_then(Value::as_str).map(str::to_string);
        for stream in &self.config.streams {
            let found = objects
                .iter()
                .find(|o| name_of(*o).as_deref() == Some(stream.as_str()));
            let Some(found) = found else {
                let hint = objects
                    .iter()
                    .filter_map(|o| name_of(o))
                    .find(|name| name.eq_ignore_ascii_case(stream))
                    .map(|name| format!(" (did you mean {name:?}? use the API name exactly)"))
                    .unwrap_or_default();
                return Err(SalesforceError::NoSuchObject {
                    stream: stream.clone(),
                    detail: hint,
                }
                .into());
            };
            if found.get("queryable").and_then(Value::as_bool) == Some(false) {
                tracing::warn!(stream = %stream, "object is not queryable; it will be skipped");
                continue;
            }
            self.plan(stream).await?;
        }
        Ok(())
    }

    async fn discover(&self, stream: &str) -> Result<SchemaRef> {
        Ok(self.plan(stream).await?.schema.clone())
    }

    async fn extract(&self, request: ExtractRequest) -> Result<Extraction> {
        let plan = self.plan(&request.stream).await?;
        let schema = plan.schema.clone();
        let cursor = window(
            request.since,
            chrono::Utc::now().timestamp_millis(),
            self.config.overlap_seconds,
            self.config.lag_seconds,
        );
        let Some(cursor_field) = plan.cursor.clone().filter(|_| plan.queryable) else {
            tracing::warn!(stream = %request.stream, "object is not queryable; nothing to extract");
            return Ok(Extraction {
                state: None,
                schema,
                key: KEY.to_string(),
                cursor,
                items: futures::stream::empty().boxed(),
            });
        };
        let instance_url = self.client.instance_url().await?;
        let chunks = soql::field_chunks(
            &plan.fields,
            &plan.anchor_fields(),
            soql::field_list_budget(&instance_url),
        )
        .ok_or_else(|| SalesforceError::UriTooShort {
            object: plan.object.clone(),
            cursor: cursor_field.clone(),
        })?;
        let filter = soql::window_filter(&cursor_field, cursor.from, cursor.to);
        let route = if chunks.len() > 1 {
            // Bulk is not used for split objects: its CSV chunks could not be merged in order.
            Route::Split {
                queries: chunks
                    .iter()
                    .map(|chunk| {
                        soql::select(chunk, &plan.object, Some(&filter), Some(soql::ID_ORDER))
                    })
                    .collect(),
            }
        } else {
            let ordered = soql::select(
                &plan.fields,
                &plan.object,
                Some(&filter),
                Some(&soql::cursor_order(&cursor_field)),
            );
            match cursor.from {
                None => Route::Full {
                    ordered,
                    // Bulk 2.0 discourages ORDER BY (it disables PK chunking) and rejects
                    // compound fields, which the plan never selects (A6).
                    bulk: soql::select(&plan.fields, &plan.object, Some(&filter), None),
                },
                Some(_) => Route::Ordered { soql: ordered },
            }
        };
        // Deletes purged from the Recycle Bin no longer show in queryAll: ask the delete log.
        let logged = self
            .logged_deletes(&request.stream, cursor, &schema)
            .await?;
        // Two batches in flight: one being staged, one being filled.
        let (tx, rx) = mpsc::channel::<Result<Extracted>>(2);
        let reader = Reader::new(
            self.client.clone(),
            plan,
            self.settings(),
            request.batch_rows,
            tx,
        );
        tokio::spawn(reader.run(route));
        let items = futures::stream::iter(logged.into_iter().map(Ok))
            .chain(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            }))
            .boxed();
        Ok(Extraction {
            state: None,
            schema,
            key: KEY.to_string(),
            cursor,
            items,
        })
    }

    /// `SELECT Id, <cursor> FROM O WHERE IsDeleted = false ORDER BY Id` through REST, no
    /// other field: one call per 2,000 records.
    async fn list_keys(
        &self,
        stream: &str,
        _batch_rows: usize,
        _arrow_hash: bool,
    ) -> Result<SourceListing> {
        let plan = self.plan(stream).await?;
        let Some(cursor_field) = plan.cursor.clone().filter(|_| plan.queryable) else {
            return Ok(SourceListing {
                key: KEY.to_string(),
                int_key: false,
                compare: Compare::Version,
                items: futures::stream::empty().boxed(),
            });
        };
        let soql = soql::select(
            &[KEY.to_string(), cursor_field.clone()],
            &plan.object,
            Some("IsDeleted = false"),
            Some(soql::ID_ORDER),
        );
        let first = soql::query_all_path(self.client.version_path(), &soql);
        let client = self.client.clone();
        let object = plan.object.clone();
        let items = futures::stream::try_unfold(Some(first), move |path: Option<String>| {
            let client = client.clone();
            let object = object.clone();
            let cursor_field = cursor_field.clone();
            async move {
                let Some(path) = path else {
                    return Ok(None);
                };
                let page = client.query(&path).await?;
                let next = page.next_path(&object)?;
                let mut listed = Vec::with_capacity(page.len());
                for record in page.records() {
                    let head = page::Head::read(record, &cursor_field)
                        .map_err(|source| page::unreadable(&object, source))?;
                    // Records that are not objects or have no string Id are not listed.
                    let Some(head) = head else { continue };
                    let Some(id) = head.id() else { continue };
                    let version = match &head.stamp {
                        Some(json::Wire::Str(stamp)) => records::parse_millis(stamp),
                        _ => None,
                    };
                    listed.push(Listed {
                        key: Key::Text(id.to_string()),
                        version: version.map(|ms| ms * 1000),
                        hash: None,
                    });
                }
                Ok::<_, crate::Error>(Some((listed, next)))
            }
        })
        .boxed();
        Ok(SourceListing {
            key: KEY.to_string(),
            int_key: false,
            compare: Compare::Version,
            items,
        })
    }

    fn settled_until(&self, _stream: &str, cursor: Option<i64>) -> Option<i64> {
        crate::sources::settled_at_modified_cursor(cursor)
    }

    /// `queryAll` of every staged field `WHERE Id IN (...)`, 200 ids a query.
    async fn fetch_keys(
        &self,
        stream: &str,
        keys: Vec<Key>,
        batch_rows: usize,
    ) -> Result<Extraction> {
        let plan = self.plan(stream).await?;
        let schema = plan.schema.clone();
        let queries: Vec<String> = keys
            .chunks(FETCH_IDS)
            .map(|chunk| {
                let ids: Vec<String> = chunk
                    .iter()
                    .map(|key| {
                        format!(
                            "'{}'",
                            key.to_string().replace('\\', "\\\\").replace('\'', "\\'")
                        )
                    })
                    .collect();
                soql::select(
                    &plan.fields,
                    &plan.object,
                    Some(&format!("Id IN ({})", ids.join(","))),
                    Some(soql::ID_ORDER),
                )
            })
            .collect();
        let (tx, rx) = mpsc::channel::<Result<Extracted>>(2);
        let client = self.client.clone();
        let settings = self.settings();
        tokio::spawn(async move {
            for soql in queries {
                if tx.is_closed() {
                    return;
                }
                Reader::new(
                    client.clone(),
                    plan.clone(),
                    settings.clone(),
                    batch_rows,
                    tx.clone(),
                )
                .run(Route::Ordered { soql })
                .await;
            }
        });
        let items = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        Ok(Extraction {
            state: None,
            schema,
            key: KEY.to_string(),
            cursor: CursorRange { from: None, to: 0 },
            items,
        })
    }

    fn list_cost(&self, rows: u64) -> u64 {
        rows / QUERY_PAGE + 1
    }

    fn fetch_cost(&self, keys: u64) -> u64 {
        keys.div_ceil(FETCH_IDS as u64)
    }

    fn api_usage(&self) -> Option<String> {
        self.client
            .usage()
            .map(|(used, max)| format!("{used}/{max}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_load_window_ends_lag_before_now() {
        let now = 1_714_557_600_000;
        assert_eq!(
            window(None, now, 600, 60),
            CursorRange {
                from: None,
                to: now - 60_000
            }
        );
    }

    #[test]
    fn incremental_window_overlaps_and_never_goes_back() {
        let now = 1_714_557_600_000;
        let since = now - 3_600_000;
        assert_eq!(
            window(Some(since), now, 600, 60),
            CursorRange {
                from: Some(since - 600_000),
                to: now - 60_000
            }
        );
        // A saved cursor ahead of `now - lag` (clock skew) is kept, not moved back.
        let ahead = now - 10_000;
        assert_eq!(
            window(Some(ahead), now, 600, 60),
            CursorRange {
                from: Some(ahead - 600_000),
                to: ahead
            }
        );
    }

    #[test]
    fn new_validates_the_api_version() {
        let config: SalesforceConfig = toml::from_str(
            r#"
            client_id = "abc"
            client_secret = "shh"
            streams = ["Account"]
            api_version = "latest"
            "#,
        )
        .unwrap();
        let err = SalesforceSource::new(&config).err().unwrap().to_string();
        assert!(err.contains("source.api_version"), "{err}");
        assert!(!err.contains("shh"));
    }
}
