//! PostgreSQL as a source: logical-replication CDC (`mode = "cdc"`, see [`cdc`]) or reads by
//! a cursor column (`mode = "cursor"`). Both read tables with binary COPY ([`copy`]).
//!
//! Cursors: in CDC mode the cursor is the LSN the slot may be advanced to; in cursor mode it
//! is the largest cursor value read (epoch ms for timestamp columns, the integer itself for
//! integer columns). Each extraction fixes its upper bound before reading, so the range it
//! reports is exactly what it covers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use tokio_postgres::Client;
use tracing::info;

use crate::Result;
use crate::config::{PostgresMode, PostgresSourceConfig};
use crate::load::CursorRange;
use crate::reconcile::drift::{self, Compare, Key, Listed, SourceListing};
use crate::sources::{ExtractRequest, Extracted, Extraction, Follower, Source, StopCause};

pub mod catalog;
pub mod cdc;
pub mod config;
pub mod copy;
mod error;
mod follow;
mod peek;
pub mod rows;
mod sql;

use catalog::{TableSpec, ValueKind, source_error};
use copy::{Versions, copy_batches, copy_statement};
pub use error::PostgresSourceError;

/// Batches in flight between the reading task and the pipeline.
const CHANNEL_BATCHES: usize = 2;

/// Keys per COPY when a repair fetches records by key.
const FETCH_KEYS: usize = 1000;

pub struct PostgresSource {
    config: PostgresSourceConfig,
    pipeline: String,
    /// Whether each stream's cursor column is a timestamp (learnt from the catalog).
    cursor_is_time: Mutex<HashMap<String, bool>>,
    /// The streams being followed (`syncline stream`): `committed` confirms through the
    /// follower's own connection, which holds the slot.
    following: Following,
}

type Following = Arc<Mutex<HashMap<String, Arc<follow::Confirmed>>>>;

/// Ends a follower: its task (and so its replication connection) and its registration.
struct FollowGuard {
    task: tokio::task::JoinHandle<()>,
    following: Following,
    stream: String,
    confirmed: Arc<follow::Confirmed>,
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        self.task.abort();
        let mut following = self.following.lock().expect("not poisoned");
        if following
            .get(&self.stream)
            .is_some_and(|c| Arc::ptr_eq(c, &self.confirmed))
        {
            following.remove(&self.stream);
        }
    }
}

impl PostgresSource {
    pub fn new(config: &PostgresSourceConfig, pipeline: &str) -> PostgresSource {
        PostgresSource {
            config: config.clone(),
            pipeline: pipeline.to_string(),
            cursor_is_time: Mutex::new(HashMap::new()),
            following: Following::default(),
        }
    }

    /// The replication slot and publication name of a stream: lowercase letters, digits and
    /// `_`, at most 63 bytes.
    pub fn slot_name(&self, stream: &str) -> String {
        self.config.slot_name(&self.pipeline, stream)
    }

    async fn connect(&self) -> Result<Client> {
        // TLS as the URL's sslmode asks; an unparsable URL is a configuration error whose
        // message never quotes the URL (it carries the password).
        let client = crate::tls::connect(self.config.url.expose(), "source.url").await?;
        set_up_session(&client).await?;
        Ok(client)
    }

    async fn spec(&self, client: &Client, stream: &str) -> Result<TableSpec> {
        let wants_cursor = self.config.mode == PostgresMode::Cursor;
        let spec =
            TableSpec::read(client, stream, &self.config.table(stream), wants_cursor).await?;
        if let Some(cursor) = &spec.cursor {
            self.cursor_is_time.lock().expect("not poisoned").insert(
                stream.to_string(),
                matches!(cursor.kind, ValueKind::Timestamp { .. }),
            );
        }
        Ok(spec)
    }

    async fn extract_cursor(&self, request: ExtractRequest) -> Result<Extraction> {
        let client = self.connect().await?;
        let spec = self.spec(&client, &request.stream).await?;
        let cursor = spec
            .cursor
            .clone()
            .expect("cursor mode reads the cursor column");
        let is_time = matches!(cursor.kind, ValueKind::Timestamp { .. });
        let mut conditions = Vec::new();
        if let Some(since) = request.since {
            conditions.push(sql::cursor_from(&cursor, since));
        }
        if is_time && self.config.lag_seconds > 0 {
            conditions.push(sql::cursor_lag(&cursor, self.config.lag_seconds));
        }
        // Fix the upper bound first, so the cursor covers exactly what is read.
        let bound_query = sql::cursor_bound(&spec, &cursor, &conditions);
        let bound = client
            .query_one(&bound_query, &[])
            .await
            .map_err(source_error("read the cursor's upper bound"))?;
        let upper: Option<String> = bound.get(0);
        let upper_cursor: Option<i64> = bound.get(1);
        let range = CursorRange {
            from: request.since,
            to: upper_cursor.or(request.since).unwrap_or(0),
        };
        let schema = spec.staged_schema();
        let key = spec.key().name.clone();
        info!(stream = %request.stream, from = ?range.from, to = range.to, "reading by cursor");
        let Some(upper) = upper else {
            return Ok(Extraction {
                schema,
                key,
                cursor: range,
                state: None,
                items: futures::stream::empty().boxed(),
            });
        };
        // The bound is the server's own text of the column's maximum, so it round-trips.
        conditions.push(sql::cursor_upto(&cursor, &upper));
        let (statement, types) = copy_statement(&spec, &conditions.join(" AND "));
        let batch_rows = request.batch_rows;
        // Only a full read is the whole table the estimate counts.
        let estimate = match request.since {
            None => estimate_rows(&client, &spec).await,
            Some(_) => None,
        };
        let items = spawn_reader(move |mut sender| async move {
            if let Some(total) = estimate {
                let _ = sender.send(Ok(Extracted::Estimate(total))).await;
            }
            let out = client
                .copy_out(&statement)
                .await
                .map_err(source_error("start COPY out of the source table"))?;
            copy_batches(
                out,
                &spec,
                &types,
                Versions::Cursor,
                batch_rows,
                &mut sender,
            )
            .await?;
            Ok(sender)
        });
        Ok(Extraction {
            schema,
            key,
            cursor: range,
            state: None,
            items,
        })
    }

    async fn extract_snapshot(&self, request: ExtractRequest) -> Result<Extraction> {
        let client = self.connect().await?;
        cdc::check_wal_level(&client).await?;
        let spec = self.spec(&client, &request.stream).await?;
        let slot = self.slot_name(&request.stream);
        cdc::check_replica_identity(&client, &request.stream, &spec).await?;
        cdc::ensure_publication(&client, &slot, &spec).await?;
        let created = cdc::create_slot(&client, self.config.url.expose(), &slot, &slot).await?;
        let consistent_point = created.consistent_point;
        let snapshot_version = created.snapshot_version;
        info!(stream = %request.stream, slot, lsn = %cdc::format_lsn(consistent_point), "snapshot");
        let schema = spec.staged_schema();
        let key = spec.key().name.clone();
        let (statement, types) = copy_statement(&spec, "");
        let batch_rows = request.batch_rows;
        let url = self.config.url.clone();
        let estimate = estimate_rows(&client, &spec).await;
        let items = spawn_reader(move |mut sender| async move {
            if let Some(total) = estimate {
                let _ = sender.send(Ok(Extracted::Estimate(total))).await;
            }
            let cdc::NewSlot {
                stream: replication,
                snapshot,
                ..
            } = created;
            let mut reader = crate::tls::connect(url.expose(), "source.url").await?;
            // Values cast to text in the COPY must read as the changes streamed later do.
            set_up_session(&reader).await?;
            let tx = reader
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(source_error("begin the snapshot transaction"))?;
            tx.batch_execute(&sql::import_snapshot(&snapshot))
                .await
                .map_err(source_error("import the slot's snapshot"))?;
            let out = tx
                .copy_out(&statement)
                .await
                .map_err(source_error("start COPY out of the source table"))?;
            copy_batches(
                out,
                &spec,
                &types,
                Versions::Constant(snapshot_version),
                batch_rows,
                &mut sender,
            )
            .await?;
            tx.commit()
                .await
                .map_err(source_error("end the snapshot transaction"))?;
            // The slot stays; the replication connection that held the snapshot goes, so the
            // slot can be advanced once the load commits.
            drop(replication);
            drop(client);
            Ok(sender)
        });
        Ok(Extraction {
            schema,
            key,
            cursor: CursorRange {
                from: None,
                to: consistent_point,
            },
            state: None,
            items,
        })
    }

    /// Checks a CDC stream's table, publication and slot before reading changes from
    /// `since`, and moves a slot a crash left behind the saved cursor up to it. Returns the
    /// table's spec and the slot's name.
    async fn prepare_changes(
        &self,
        client: &Client,
        stream: &str,
        since: i64,
    ) -> Result<(TableSpec, String)> {
        cdc::check_wal_level(client).await?;
        let spec = self.spec(client, stream).await?;
        let slot = self.slot_name(stream);
        cdc::check_replica_identity(client, stream, &spec).await?;
        cdc::verify_publication(client, &slot, stream, &spec).await?;
        let info = cdc::wait_inactive(client, &slot).await?;
        let confirmed = match info {
            Some(info) if info.wal_status.as_deref() != Some("lost") => info.confirmed_flush,
            _ => return Err(cdc::slot_lost(&slot, since)),
        };
        if confirmed.is_some_and(|confirmed| confirmed > since) {
            return Err(PostgresSourceError::SlotAhead {
                slot,
                at: cdc::format_lsn(confirmed.unwrap_or_default()),
                saved: cdc::format_lsn(since),
                stream: stream.to_string(),
            }
            .into());
        }
        // A crash between saving the cursor and `committed` left the slot behind: catch up.
        cdc::advance_slot(client, &slot, since).await?;
        Ok((spec, slot))
    }

    async fn extract_changes(&self, request: ExtractRequest, since: i64) -> Result<Extraction> {
        let client = self.connect().await?;
        let (spec, slot) = self
            .prepare_changes(&client, &request.stream, since)
            .await?;
        let target: String = client
            .query_one(sql::templates::CURRENT_WAL_LSN, &[])
            .await
            .map_err(source_error("read the WAL position"))?
            .get(0);
        let target = cdc::parse_lsn(&target)
            .ok_or_else(|| PostgresSourceError::UnreadableLsn(target.clone()))?
            .max(since);
        info!(stream = %request.stream, slot, from = %cdc::format_lsn(since), to = %cdc::format_lsn(target), "streaming changes");
        let schema = spec.staged_schema();
        let key = spec.key().name.clone();
        let all_columns = self.config.table(&request.stream).columns.is_none();
        let mut decoder =
            cdc::ChangeDecoder::new(spec, all_columns, request.batch_rows, since, target);
        let silence = cdc::silence_limit(&client).await?;
        let url = self.config.url.clone();
        let items = spawn_reader(move |mut sender| async move {
            let end = cdc::stream_changes(
                &client,
                url.expose(),
                &slot,
                &slot,
                since,
                silence,
                &mut decoder,
                &mut sender,
            )
            .await?;
            let (batch, dead) = decoder.finish_batch(&client).await?;
            cdc::send(&mut sender, batch, dead).await;
            if let cdc::StreamEnd::Stopped { cursor, reason } = end {
                let _ = sender
                    .send(Ok(Extracted::Stopped {
                        cursor: Some(cursor),
                        reason,
                        cause: StopCause::Stream,
                    }))
                    .await;
            }
            Ok(sender)
        });
        Ok(Extraction {
            schema,
            key,
            cursor: CursorRange {
                from: Some(since),
                to: target,
            },
            state: None,
            items,
        })
    }
}

/// Gives a session the settings every value read as text depends on (DateStyle ISO,
/// TimeZone UTC, IntervalStyle postgres, all float digits), whatever the database's or the
/// role's defaults are. The replication session gets the same (`cdc::stream_changes`).
async fn set_up_session(client: &Client) -> Result<()> {
    client
        .batch_execute(sql::templates::SESSION_SETTINGS)
        .await
        .map_err(source_error("set up the session"))?;
    Ok(())
}

/// The rows of `spec`'s table in key order, staged as a load stages them and hashed with
/// `drift::arrow_row_hashes`.
fn list_rows_hashed(client: Client, spec: TableSpec, batch_rows: usize) -> SourceListing {
    let columns = sql::hash_columns(&spec);
    let key = spec.key().name.clone();
    let int_key = spec.key().kind == ValueKind::Int;
    let (statement, types) = copy::ordered_copy_statement(&spec);
    let reader_spec = spec.clone();
    let extracted = spawn_reader(move |mut sender| async move {
        let out = client
            .copy_out(&statement)
            .await
            .map_err(source_error("start the row listing"))?;
        copy_batches(
            out,
            &reader_spec,
            &types,
            Versions::Constant(0),
            batch_rows,
            &mut sender,
        )
        .await?;
        Ok(sender)
    });
    let hash_columns = columns.clone();
    let key_column = key.clone();
    let items = extracted
        .filter_map(move |item| {
            let listed = match item {
                Ok(Extracted::Batch(batch)) => {
                    Some(drift::arrow_keys(&batch, &key_column).and_then(|keys| {
                        let hashes = drift::arrow_row_hashes(&batch, &hash_columns)?;
                        Ok(keys
                            .into_iter()
                            .zip(hashes)
                            .map(|(key, hash)| Listed {
                                key,
                                version: None,
                                hash: Some(hash),
                            })
                            .collect())
                    }))
                }
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            };
            futures::future::ready(listed)
        })
        .boxed();
    SourceListing {
        key,
        int_key,
        compare: Compare::Hash(columns),
        items,
    }
}

/// Runs `read` in its own task once the stream is first polled, and streams what it sends.
/// An error from `read` is the last item.
fn spawn_reader<F, Fut>(read: F) -> futures::stream::BoxStream<'static, Result<Extracted>>
where
    F: FnOnce(mpsc::Sender<Result<Extracted>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<mpsc::Sender<Result<Extracted>>>> + Send + 'static,
{
    futures::stream::once(async move {
        let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
        let mut on_error = sender.clone();
        tokio::spawn(async move {
            if let Err(err) = read(sender).await {
                let _ = on_error.send(Err(err)).await;
            }
        });
        receiver
    })
    .flatten()
    .boxed()
}

#[async_trait]
impl Source for PostgresSource {
    async fn check(&self) -> Result<()> {
        let client = self.connect().await?;
        if self.config.mode == PostgresMode::Cdc {
            cdc::check_wal_level(&client).await?;
            let allowed: bool = client
                .query_one(sql::templates::CAN_REPLICATE, &[])
                .await
                .map_err(source_error("read the user's attributes"))?
                .get(0);
            if !allowed {
                return Err(PostgresSourceError::NoReplicationAttribute.into());
            }
        }
        for stream in &self.config.streams {
            let spec = self.spec(&client, stream).await?;
            if self.config.mode == PostgresMode::Cdc {
                cdc::check_replica_identity(&client, stream, &spec).await?;
            }
        }
        Ok(())
    }

    async fn discover(&self, stream: &str) -> Result<arrow::datatypes::SchemaRef> {
        let client = self.connect().await?;
        Ok(self.spec(&client, stream).await?.staged_schema())
    }

    async fn extract(&self, request: ExtractRequest) -> Result<Extraction> {
        match (self.config.mode, request.since) {
            (PostgresMode::Cursor, _) => self.extract_cursor(request).await,
            (PostgresMode::Cdc, None) => self.extract_snapshot(request).await,
            (PostgresMode::Cdc, Some(since)) => self.extract_changes(request, since).await,
        }
    }

    async fn committed(
        &self,
        stream: &str,
        cursor: i64,
        _state: Option<&serde_json::Value>,
    ) -> Result<()> {
        if self.config.mode != PostgresMode::Cdc {
            return Ok(());
        }
        // A followed slot is held by its follower's connection, which reports the position.
        let followed = self
            .following
            .lock()
            .expect("not poisoned")
            .get(stream)
            .cloned();
        if let Some(confirmed) = followed {
            confirmed.0.fetch_max(cursor, Ordering::SeqCst);
            return Ok(());
        }
        // Only now, with the load in the destination, may the server drop the WAL before it.
        let client = self.connect().await?;
        cdc::advance_slot(&client, &self.slot_name(stream), cursor).await
    }

    async fn follow(
        &self,
        stream: &str,
        since: i64,
        batch_rows: usize,
        capacity: usize,
    ) -> Result<Option<Follower>> {
        if self.config.mode != PostgresMode::Cdc {
            return Ok(None);
        }
        let client = self.connect().await?;
        let (spec, slot) = self.prepare_changes(&client, stream, since).await?;
        let schema = spec.staged_schema();
        let key = spec.key().name.clone();
        let all_columns = self.config.table(stream).columns.is_none();
        // A follow never reaches its target: it reads until it is dropped.
        let decoder = cdc::ChangeDecoder::new(spec, all_columns, batch_rows, since, i64::MAX);
        let confirmed = Arc::new(follow::Confirmed(AtomicI64::new(since)));
        let lag_bytes = Arc::new(AtomicI64::new(0));
        let silence = cdc::silence_limit(&client).await?;
        let (sender, items) = tokio::sync::mpsc::channel(capacity.max(1));
        let task = follow::FollowTask {
            client,
            url: self.config.url.expose().to_string(),
            slot,
            since,
            silence,
            confirmed: confirmed.clone(),
            lag_bytes: lag_bytes.clone(),
            sender: sender.clone(),
        };
        self.following
            .lock()
            .expect("not poisoned")
            .insert(stream.to_string(), confirmed.clone());
        let task = tokio::spawn(async move {
            if let Err(err) = task.run(decoder).await {
                let _ = sender.send(Err(err)).await;
            }
        });
        Ok(Some(Follower {
            schema,
            key,
            from: since,
            items,
            lag_bytes,
            guard: Box::new(FollowGuard {
                task,
                following: self.following.clone(),
                stream: stream.to_string(),
                confirmed,
            }),
        }))
    }

    fn cursor_is_time(&self, stream: &str) -> bool {
        self.config.mode == PostgresMode::Cursor
            && self
                .cursor_is_time
                .lock()
                .expect("not poisoned")
                .get(stream)
                .copied()
                .unwrap_or(false)
    }

    fn cursor_text(&self, stream: &str, cursor: i64) -> String {
        match self.config.mode {
            PostgresMode::Cdc => cdc::format_lsn(cursor),
            PostgresMode::Cursor if self.cursor_is_time(stream) => {
                chrono::DateTime::from_timestamp_millis(cursor)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_else(|| cursor.to_string())
            }
            PostgresMode::Cursor => cursor.to_string(),
        }
    }

    /// One ordered binary COPY of key and cursor (cursor mode) or key and content hash (CDC);
    /// for a destination that hashes Arrow rows, one ordered COPY of the rows as a load stages
    /// them, hashed here.
    async fn list_keys(
        &self,
        stream: &str,
        batch_rows: usize,
        arrow_hash: bool,
    ) -> Result<SourceListing> {
        let client = self.connect().await?;
        let spec = self.spec(&client, stream).await?;
        let by_hash = self.config.mode == PostgresMode::Cdc;
        let int_key = spec.key().kind == ValueKind::Int;
        if by_hash && arrow_hash {
            return Ok(list_rows_hashed(client, spec, batch_rows));
        }
        let statement = sql::list_keys(&spec, by_hash);
        let out = client
            .copy_out(&statement)
            .await
            .map_err(source_error("start the key listing"))?;
        // The connection must outlive the COPY it serves.
        let items = crate::reconcile::listing::decode(out, int_key, batch_rows, "source")
            .inspect(move |_| {
                let _ = &client;
            })
            .boxed();
        Ok(SourceListing {
            key: spec.key().name.clone(),
            int_key,
            compare: if by_hash {
                Compare::Hash(sql::hash_columns(&spec))
            } else {
                Compare::Version
            },
            items,
        })
    }

    /// CDC: the keys the stream's slot holds changes for, peeked without consuming them.
    /// `None` in cursor mode, or when the slot does not exist (the stream never loaded).
    async fn in_flight_keys(&self, stream: &str) -> Result<Option<std::collections::HashSet<Key>>> {
        if self.config.mode != PostgresMode::Cdc {
            return Ok(None);
        }
        let client = self.connect().await?;
        let spec = self.spec(&client, stream).await?;
        let slot = self.slot_name(stream);
        if cdc::wait_inactive(&client, &slot).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(
            peek::pending_keys(&client, &slot, &slot, &spec).await?,
        ))
    }

    /// Cursor mode: a version past the saved cursor is newer than the last load read (the
    /// lag window is inside it: the cursor never passes `now - lag_seconds`).
    fn settled_until(&self, stream: &str, cursor: Option<i64>) -> Option<i64> {
        let cursor = cursor?;
        match self.config.mode {
            PostgresMode::Cdc => None,
            PostgresMode::Cursor if self.cursor_is_time(stream) => Some(cursor * 1000),
            PostgresMode::Cursor => Some(cursor + 1),
        }
    }

    /// COPYs of the rows with these keys, a thousand keys each. In CDC mode every row gets
    /// the WAL position read before the first COPY as its version: newer than anything the
    /// destination holds, older than any change the slot still has to deliver.
    async fn fetch_keys(
        &self,
        stream: &str,
        keys: Vec<Key>,
        batch_rows: usize,
    ) -> Result<Extraction> {
        let client = self.connect().await?;
        let spec = self.spec(&client, stream).await?;
        let versions = match self.config.mode {
            PostgresMode::Cursor => Versions::Cursor,
            PostgresMode::Cdc => {
                let lsn: String = client
                    .query_one(sql::templates::CURRENT_WAL_LSN, &[])
                    .await
                    .map_err(source_error("read the WAL position"))?
                    .get(0);
                Versions::Constant(
                    cdc::parse_lsn(&lsn).ok_or(PostgresSourceError::UnreadableLsn(lsn))?,
                )
            }
        };
        let schema = spec.staged_schema();
        let key = spec.key().name.clone();
        let items = spawn_reader(move |mut sender| async move {
            for chunk in keys.chunks(FETCH_KEYS) {
                let (statement, types) = copy_statement(&spec, &sql::key_in(&spec, chunk));
                let out = client
                    .copy_out(&statement)
                    .await
                    .map_err(source_error("start COPY out of the source table"))?;
                copy_batches(out, &spec, &types, versions, batch_rows, &mut sender).await?;
            }
            Ok(sender)
        });
        Ok(Extraction {
            schema,
            key,
            cursor: CursorRange { from: None, to: 0 },
            state: None,
            items,
        })
    }

    async fn lag(&self, stream: &str) -> Result<Option<String>> {
        let client = self.connect().await?;
        if self.config.mode == PostgresMode::Cursor {
            // Learn the cursor's type for `cursor_is_time`.
            self.spec(&client, stream).await?;
            return Ok(None);
        }
        let slot = self.slot_name(stream);
        let row = client
            .query_opt(sql::templates::SLOT_LAG, &[&slot])
            .await
            .map_err(source_error("read the replication slot"))?;
        Ok(Some(match row {
            Some(row) => format!(
                "slot {slot}: {} of WAL retained (wal_status {})",
                row.get::<_, Option<String>>(0)
                    .unwrap_or_else(|| "?".into()),
                row.get::<_, String>(1)
            ),
            None => format!("slot {slot}: missing (a full refresh re-creates it)"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(prefix: Option<&str>) -> PostgresSource {
        let config: PostgresSourceConfig = toml::from_str(&format!(
            "url = \"postgres://u@h/db\"\nstreams = [\"Contacts-2024\"]\n{}",
            prefix.map_or(String::new(), |p| format!("slot_prefix = \"{p}\""))
        ))
        .unwrap();
        PostgresSource::new(&config, "CRM-main")
    }

    #[test]
    fn slot_names_are_valid_replication_slot_names() {
        assert_eq!(
            source(None).slot_name("Contacts-2024"),
            "syncline_crm_main_contacts_2024"
        );
        assert_eq!(source(Some("etl")).slot_name("deals"), "etl_deals");
        assert_eq!(source(Some(&"x".repeat(70))).slot_name("a").len(), 63);
    }

    #[test]
    fn cdc_cursors_show_as_lsns() {
        let source = source(None);
        assert!(!source.cursor_is_time("Contacts-2024"));
        assert_eq!(source.cursor_text("Contacts-2024", 0x1_0000_00A0), "1/A0");
    }
}

/// The planner's estimate of a table's rows, for the progress bar; `None` when the server
/// cannot say (progress is no reason to fail a load).
async fn estimate_rows(client: &tokio_postgres::Client, spec: &TableSpec) -> Option<u64> {
    let row = client
        .query_opt(
            include_str!("../../../sql/postgres_source/estimate_rows.sql"),
            &[&spec.schema, &spec.name],
        )
        .await
        .ok()??;
    u64::try_from(row.get::<_, i64>(0)).ok().filter(|&n| n > 0)
}
