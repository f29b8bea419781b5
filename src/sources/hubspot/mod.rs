//! The HubSpot CRM v3 source.
//!
//! - Schema: the properties API (B4) drives typed Arrow columns.
//! - Full load: the list endpoint (B1), 100 records a page, then `archived=true` for deletes.
//! - Incremental: the search endpoint (B2) over a fixed window `[since - overlap, now - lag)`
//!   on the modified-date property, sorted by `hs_object_id`, every page a fresh query for
//!   `hs_object_id > last id read`. Results are computed per request, so an offset would skip
//!   a record whenever one leaves the set mid-read; a key does not, and never meets the
//!   10,000-result cap, so any number of changes, even all with one timestamp, is read. Deletes come from
//!   `archived=true` (search never returns archived records), filtered on `archivedAt`.
//! - Pages are converted and forwarded as they arrive through a bounded channel, so memory
//!   holds at most a few batches whatever the stream's size. A page's records are read
//!   straight into the column builders (see [`page`]), and the next page is requested
//!   before this one is converted (list and search, one request ahead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::HubspotConfig;
use crate::error::ErrorKind;
use crate::load::{CursorRange, DeadLetter};
use crate::reconcile::drift::{Compare, Key, Listed, SourceListing};
use crate::sources::http::request_ahead;
use crate::sources::{ExtractRequest, Extracted, Extraction, Source};
use crate::{Error, Result};

pub use error::HubspotError;

mod client;
pub mod config;
mod error;
pub mod page;
pub mod records;

pub use client::HubspotClient;
use page::{Head, PageBody};
use records::{BatchBuilder, KEY, Property, staged_schema};

/// List pages hold at most 100 records (B1).
const LIST_LIMIT: usize = 100;
/// Batch read takes at most 100 ids a request (B5).
const BATCH_READ_LIMIT: usize = 100;
/// Search pages hold at most 200 records (B2).
const SEARCH_LIMIT: usize = 200;
/// HubSpot answers 414 past about 16,300 characters; Airbyte chunks at 15,000 (B1).
const MAX_PROPERTIES_PARAM: usize = 15_000;

pub struct HubspotSource {
    client: HubspotClient,
    config: HubspotConfig,
    properties: Mutex<HashMap<String, Arc<Vec<Property>>>>,
}

/// The property incremental reads filter on (B2): contacts differ from every other object.
pub fn modified_property(stream: &str) -> &'static str {
    if stream == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

impl HubspotSource {
    pub fn new(config: &HubspotConfig) -> Result<HubspotSource> {
        Ok(HubspotSource {
            client: HubspotClient::new(config)?,
            config: config.clone(),
            properties: Mutex::default(),
        })
    }

    async fn properties(&self, stream: &str) -> Result<Arc<Vec<Property>>> {
        if let Some(found) = self
            .properties
            .lock()
            .expect("properties cache")
            .get(stream)
        {
            return Ok(found.clone());
        }
        #[derive(serde::Deserialize)]
        struct Properties {
            results: Vec<Property>,
        }
        let body = self.client.properties(stream).await?;
        let parsed: Properties =
            serde_json::from_value(body).map_err(|source| HubspotError::PropertiesShape {
                stream: stream.to_string(),
                source,
            })?;
        let props = Arc::new(parsed.results);
        self.properties
            .lock()
            .expect("properties cache")
            .insert(stream.to_string(), props.clone());
        Ok(props)
    }
}

#[async_trait]
impl Source for HubspotSource {
    async fn check(&self) -> Result<()> {
        for stream in &self.config.streams {
            let props = self.properties(stream).await?;
            let modified = modified_property(stream);
            if !props.iter().any(|p| p.name == modified) {
                return Err(HubspotError::NoModifiedProperty {
                    stream: stream.clone(),
                    property: modified.to_string(),
                }
                .into());
            }
        }
        Ok(())
    }

    async fn discover(&self, stream: &str) -> Result<SchemaRef> {
        Ok(staged_schema(&self.properties(stream).await?))
    }

    /// The list endpoint, ordered by id, with only the modified stamp asked for, 100 a page.
    async fn list_keys(
        &self,
        stream: &str,
        _batch_rows: usize,
        _arrow_hash: bool,
    ) -> Result<SourceListing> {
        let client = self.client.clone();
        let stream_name = stream.to_string();
        let items =
            futures::stream::try_unfold(Some(None), move |after: Option<Option<String>>| {
                let client = client.clone();
                let stream = stream_name.clone();
                async move {
                    let Some(after) = after else {
                        return Ok(None);
                    };
                    let (listed, next) = key_page(&client, &stream, after.as_deref()).await?;
                    Ok(Some((listed, next.map(Some))))
                }
            })
            .boxed();
        Ok(SourceListing {
            key: KEY.to_string(),
            int_key: true,
            compare: Compare::Version,
            items,
        })
    }

    fn settled_until(&self, _stream: &str, cursor: Option<i64>) -> Option<i64> {
        crate::sources::settled_at_modified_cursor(cursor)
    }

    /// Batch read (B5), 100 ids a request, every staged property asked for.
    async fn fetch_keys(
        &self,
        stream: &str,
        keys: Vec<Key>,
        batch_rows: usize,
    ) -> Result<Extraction> {
        let (schema, names) = self.property_names(stream).await?;
        let (tx, rx) = mpsc::channel::<Result<Extracted>>(2);
        let mut reader = Reader {
            client: self.client.clone(),
            stream: stream.to_string(),
            properties: names,
            properties_param: String::new(),
            builder: BatchBuilder::new(schema.clone()),
            batch_rows,
            tx,
        };
        tokio::spawn(async move {
            let tx = reader.tx.clone();
            if let Err(err) = reader.batch_read(&keys).await {
                let _ = tx.send(Err(err)).await;
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
        rows / LIST_LIMIT as u64 + 1
    }

    fn fetch_cost(&self, keys: u64) -> u64 {
        keys.div_ceil(BATCH_READ_LIMIT as u64)
    }

    async fn extract(&self, request: ExtractRequest) -> Result<Extraction> {
        let props = self.properties(&request.stream).await?;
        let schema = staged_schema(&props);
        let names: Vec<String> = schema.fields()[1..schema.fields().len() - 2]
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let properties_param = names.join(",");
        if properties_param.len() > MAX_PROPERTIES_PARAM {
            return Err(HubspotError::TooManyProperties {
                stream: request.stream,
                properties: names.len(),
                characters: properties_param.len(),
            }
            .into());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let upper = now - (self.config.lag_seconds as i64) * 1000;
        let cursor = match request.since {
            None => CursorRange {
                from: None,
                to: upper,
            },
            Some(since) => CursorRange {
                from: Some(since - (self.config.overlap_seconds as i64) * 1000),
                // Never move the cursor backwards, whatever the clocks do.
                to: upper.max(since),
            },
        };
        // Two batches in flight: one being staged, one being filled.
        let (tx, rx) = mpsc::channel::<Result<Extracted>>(2);
        let reader = Reader {
            client: self.client.clone(),
            stream: request.stream.clone(),
            properties: names,
            properties_param,
            builder: BatchBuilder::new(schema.clone()),
            batch_rows: request.batch_rows,
            tx,
        };
        tokio::spawn(async move {
            let mut reader = reader;
            let tx = reader.tx.clone();
            if let Err(err) = reader.run(cursor).await {
                // Rows read before the daily limit are good: the pipeline merges them (and
                // keeps the cursor) when the quota error follows them.
                if err.kind() == ErrorKind::Quota && reader.flush().await.is_err() {
                    return;
                }
                // The receiver may be gone (the pipeline failed first); nothing more to tell then.
                let _ = tx.send(Err(err)).await;
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
            cursor,
            items,
        })
    }
}

impl HubspotSource {
    /// The property names a stream's staged schema holds, as one request parameter.
    async fn property_names(&self, stream: &str) -> Result<(SchemaRef, Vec<String>)> {
        let props = self.properties(stream).await?;
        let schema = staged_schema(&props);
        let names = schema.fields()[1..schema.fields().len() - 2]
            .iter()
            .map(|f| f.name().clone())
            .collect();
        Ok((schema, names))
    }
}

/// One list page of ids and modified stamps; the `after` of the next page, if any.
async fn key_page(
    client: &HubspotClient,
    stream: &str,
    after: Option<&str>,
) -> Result<(Vec<Listed>, Option<String>)> {
    let mut path = format!(
        "/crm/v3/objects/{}?limit={LIST_LIMIT}&archived=false&properties={}",
        encode(stream),
        encode(modified_property(stream))
    );
    if let Some(after) = after {
        path.push_str(&format!("&after={}", encode(after)));
    }
    let body = client.get_page(&path).await?;
    let page = body.parse(stream)?;
    let mut listed = Vec::with_capacity(page.results.len());
    for raw in &page.results {
        // The staged version is `updatedAt` (see `records`); a record without a readable id
        // or stamp is what a load dead-letters, so it counts as missing.
        let Ok(head) = Head::read(raw, None) else {
            continue;
        };
        if let Some(id) = head.id() {
            listed.push(Listed {
                key: Key::Int(id),
                version: head.updated_millis().map(|ms| ms * 1000),
                hash: None,
            });
        }
    }
    Ok((listed, page.next_after))
}

/// Reads one stream's pages and forwards converted batches.
struct Reader {
    client: HubspotClient,
    stream: String,
    properties: Vec<String>,
    properties_param: String,
    builder: BatchBuilder,
    batch_rows: usize,
    tx: mpsc::Sender<Result<Extracted>>,
}

/// The receiving side hung up; stop reading quietly.
struct Hangup;

impl From<Hangup> for Error {
    fn from(_: Hangup) -> Error {
        HubspotError::Cancelled.into()
    }
}

impl Reader {
    async fn run(&mut self, cursor: CursorRange) -> Result<()> {
        match cursor.from {
            None => {
                self.list(false, None).await?;
                self.list(true, None).await?;
            }
            Some(from) => {
                self.search(from, cursor.to).await?;
                self.list(true, Some(from)).await?;
            }
        }
        self.flush().await?;
        Ok(())
    }

    /// Pages through the list endpoint. With `archived`, only archived records come back; with
    /// `archived_since`, those archived before it are skipped (they were delivered before).
    ///
    /// The list is ordered by id and `after` is taken as given, never computed: HubSpot's
    /// cursor names the next id, so a record archived or modified mid-read shifts no other
    /// record past a page boundary (unlike search's offset, see [`Reader::search`]).
    async fn list(&mut self, archived: bool, archived_since: Option<i64>) -> Result<()> {
        let base = format!(
            "/crm/v3/objects/{}?limit={LIST_LIMIT}&archived={archived}&properties={}",
            encode(&self.stream),
            encode(&self.properties_param)
        );
        let path = |after: Option<&str>| {
            let mut path = base.clone();
            if let Some(after) = after {
                path.push_str(&format!("&after={}", encode(after)));
            }
            path
        };
        // The next page is requested as soon as its cursor is known, so the server works on
        // it while this page is converted and staged; at most one request is ahead.
        let client = self.client.clone();
        let fetch = |path: String| {
            let client = client.clone();
            request_ahead(async move { client.get_page(&path).await })
        };
        let mut next_page = Some(fetch(path(None)).await);
        while let Some(request) = next_page.take() {
            let body = self.page(request).await?;
            let page = body.parse(&self.stream)?;
            if let Some(next) = &page.next_after {
                next_page = Some(fetch(path(Some(next))).await);
            }
            let mut letters = Vec::new();
            for raw in &page.results {
                let appended = self.builder.read(raw).and_then(|head| {
                    match archived_since {
                        // Archived before the window: delivered by an earlier run.
                        Some(since) if head.archived_millis().is_some_and(|at| at < since) => {
                            Ok(())
                        }
                        _ => self.builder.append(&head),
                    }
                });
                self.take(appended, &mut letters).await?;
            }
            self.send_letters(letters).await?;
        }
        Ok(())
    }

    /// Searches `[from, to)` on the modified date by key (B2, recommendation): every page is a
    /// fresh query for ids above the last one read, sorted by id, from `after` 0.
    ///
    /// Search computes its results per request, so a record modified or archived mid-read
    /// leaves the result set between two pages. A numeric offset would then skip the record
    /// at the next page boundary, lost unless it changes again within the overlap; a key
    /// cannot skip. It also never nears the 10,000-result cap, however many records changed.
    ///
    /// The next page's query needs only this page's last id, so it is sent before this page
    /// is converted: the server works on it meanwhile, one request ahead at most.
    async fn search(&mut self, from: i64, to: i64) -> Result<()> {
        let modified = modified_property(&self.stream);
        let path = format!("/crm/v3/objects/{}/search", encode(&self.stream));
        let (client, properties) = (self.client.clone(), self.properties.clone());
        let fetch = |last_id: Option<i64>| {
            let mut filters = vec![
                json!({"propertyName": modified, "operator": "GTE", "value": from.to_string()}),
                json!({"propertyName": modified, "operator": "LT", "value": to.to_string()}),
            ];
            if let Some(last) = last_id {
                filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": last.to_string()}));
            }
            let body = json!({
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                "properties": properties,
                "limit": SEARCH_LIMIT,
                "after": "0",
            });
            let client = client.clone();
            let path = path.clone();
            request_ahead(async move { client.post_page(&path, &body).await })
        };
        let mut last_id: Option<i64> = None;
        let mut next_page = Some(fetch(None).await);
        while let Some(request) = next_page.take() {
            let body = self.page(request).await?;
            let page = body.parse(&self.stream)?;
            if last_id.is_none() {
                // The first page's `total` counts the whole window: later pages count only
                // the ids above the last one read.
                if let Some(total) = page.total {
                    self.tx
                        .send(Ok(Extracted::Estimate(total)))
                        .await
                        .map_err(|_| Hangup)?;
                }
            }
            // Stop only when `paging.next` is absent, never on a short page (B2). A page
            // that cannot be followed fails the read after its records are delivered.
            let mut stop = Ok(());
            if page.next_after.is_some() {
                let page_last = page
                    .results
                    .last()
                    .and_then(|raw| Head::read(raw, None).ok())
                    .and_then(|head| head.id());
                match (page_last, last_id) {
                    (None, _) => {
                        stop = Err(HubspotError::NoLastId {
                            stream: self.stream.clone(),
                        });
                    }
                    // A key that does not grow would read the same page forever.
                    (Some(last), Some(previous)) if last <= previous => {
                        stop = Err(HubspotError::KeyNotAdvancing {
                            stream: self.stream.clone(),
                            previous,
                            last,
                        });
                    }
                    (Some(last), _) => {
                        last_id = Some(last);
                        next_page = Some(fetch(last_id).await);
                    }
                }
            }
            let mut letters = Vec::new();
            for raw in &page.results {
                let appended = self.builder.push(raw);
                self.take(appended, &mut letters).await?;
            }
            self.send_letters(letters).await?;
            stop?;
        }
        Ok(())
    }

    /// Reads `keys` through batch read; ids the source no longer has are left out (B5).
    async fn batch_read(&mut self, keys: &[Key]) -> Result<()> {
        for chunk in keys.chunks(BATCH_READ_LIMIT) {
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|key| json!({"id": key.to_string()}))
                .collect();
            let body = json!({"inputs": inputs, "properties": self.properties});
            let answer = self
                .client
                .post_page(
                    &format!("/crm/v3/objects/{}/batch/read", encode(&self.stream)),
                    &body,
                )
                .await?;
            let page = answer.parse(&self.stream)?;
            let mut letters = Vec::new();
            let mut found = std::collections::HashSet::new();
            for raw in &page.results {
                let appended = self.builder.read(raw).and_then(|head| {
                    if let Some(id) = head.id_string() {
                        found.insert(id.to_owned());
                    }
                    self.builder.append(&head)
                });
                self.take(appended, &mut letters).await?;
            }
            // Ids the live read left out may be archived (a `*.deletion` webhook names them):
            // the archived read returns those as deletes, at their `archivedAt`. What is in
            // neither (purged) stays left out.
            let absent: Vec<Value> = chunk
                .iter()
                .map(ToString::to_string)
                .filter(|id| !found.contains(id))
                .map(|id| json!({"id": id}))
                .collect();
            if !absent.is_empty() {
                let body = json!({"inputs": absent, "properties": self.properties});
                let answer = self
                    .client
                    .post_page(
                        &format!(
                            "/crm/v3/objects/{}/batch/read?archived=true",
                            encode(&self.stream)
                        ),
                        &body,
                    )
                    .await?;
                for raw in &answer.parse(&self.stream)?.results {
                    let appended = self.builder.push(raw);
                    self.take(appended, &mut letters).await?;
                }
            }
            self.send_letters(letters).await?;
        }
        self.flush().await?;
        Ok(())
    }

    /// The request of a page fetched ahead, awaited.
    async fn page(&self, request: tokio::task::JoinHandle<Result<PageBody>>) -> Result<PageBody> {
        request.await.map_err(|source| HubspotError::PageLost {
            stream: self.stream.clone(),
            source,
        })?
    }

    /// Takes the outcome of one record: appended or skipped (a full batch goes on), or a
    /// dead letter.
    async fn take(
        &mut self,
        appended: std::result::Result<(), DeadLetter>,
        letters: &mut Vec<DeadLetter>,
    ) -> std::result::Result<(), Hangup> {
        if let Err(letter) = appended {
            tracing::warn!(stream = %self.stream, key = %letter.key, field = ?letter.field, "record sent to the dead-letter file");
            letters.push(letter);
        }
        if self.builder.rows() >= self.batch_rows {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::result::Result<(), Hangup> {
        if self.builder.rows() == 0 {
            return Ok(());
        }
        let batch = self.builder.finish();
        self.tx
            .send(batch.map(Extracted::Batch))
            .await
            .map_err(|_| Hangup)
    }

    async fn send_letters(&mut self, letters: Vec<DeadLetter>) -> std::result::Result<(), Hangup> {
        if letters.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Ok(Extracted::DeadLetters(letters)))
            .await
            .map_err(|_| Hangup)
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::sim::{SimConfig, Simulator};

    #[tokio::test]
    async fn an_unknown_object_type_is_a_configuration_error_naming_the_stream() {
        let sim = Simulator::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let config: HubspotConfig = serde_json::from_value(json!({
            "base_url": sim.base_url,
            "token": sim.token(),
            "streams": ["widgets"],
            "max_retries": 0,
        }))
        .unwrap();
        let source = HubspotSource::new(&config).unwrap();
        let err = source.discover("widgets").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let text = err.report();
        assert!(text.contains("source.streams"), "{text}");
        assert!(text.contains("\"widgets\""), "{text}");
        // A known object type still reads.
        assert!(source.discover("contacts").await.is_ok());
        sim.shutdown().await;
    }
}
