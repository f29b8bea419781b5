//! Logical-replication CDC: the publication and slot of a stream, the snapshot read through
//! the slot's exported snapshot, and the decoding of pgoutput changes into staged rows.
//!
//! Positions: the cursor is an LSN (as i64). A snapshot covers everything before the slot's
//! consistent point; a streaming read covers `[since, target)` where `target` is the WAL end
//! read when the extraction starts. The slot is advanced (`committed`) only after the
//! destination committed, so an interrupted run re-reads from the saved cursor.
//!
//! How a read ends: when a transaction committing at or after `target` has been read, or when
//! the server, between two transactions, says it has read its WAL up to `target` (a keepalive
//! carries the walsender's read position; everything that committed below it was sent before
//! the keepalive). WAL that holds nothing for the stream (other tables, a big transaction
//! elsewhere, a backlog) sends no change at all, only keepalives: each one is progress, and
//! between transactions it moves the position the read may stop at, so a run that must stop
//! early (the connection went silent and let go of the slot, see [`silence_limit`]; a column
//! appeared) still saves a cursor past the WAL it read, and the next run does not read it
//! again. The replication
//! session never confirms anything itself: its status updates report the saved cursor.
//!
//! Versions: a streamed change's `_syncline_version` is the LSN of the change's own WAL
//! record: pgoutput stamps each change message with it (`change_cb_wrapper` in logical.c
//! sets the write location to `change->lsn`), so no state is kept per key and a
//! transaction's size does not matter. It orders every key's changes:
//! - within a transaction changes arrive in WAL order and each is its own record, so two
//!   changes of one key never share an LSN (rows of one multi-row insert share a record but
//!   are different keys; a key change yields a delete of the old key and a row of the new one
//!   at one LSN, again two keys);
//! - between transactions, two writers of one key wait for each other (the row lock, the
//!   unique index of the key), so the later writer's change is written after the earlier
//!   writer committed. This needs the key to be unique by an index checked at once: the
//!   primary key, or a unique column whose constraint is not `DEFERRABLE`.
//!
//! Snapshot rows carry the slot's `restart_lsn` as it was when the slot was created: decoding
//! starts reading WAL there, so every change the slot will ever stream is at or after it. The
//! consistent point would not do: a transaction that began before it and commits after is
//! streamed whole, and its early changes have LSNs below the consistent point, so they would
//! lose to the older snapshot value. Changes read through an earlier slot (before a full
//! refresh) were in the WAL before the new slot reserved its start, so the full load wins over
//! them. A tie with a snapshot row can only be with a later load, and a later load wins ties.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, BooleanArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use futures::SinkExt;
use futures::channel::mpsc::Sender;
use pg_walstream::{
    CancellationToken, ChangeEvent, ColumnValue, EventType, LogicalReplicationStream, Lsn,
    PgOutputDecoder, PgReplicationConnection, ReplicationError, ReplicationSlotOptions,
    ReplicationStreamConfig, RowData, parse_keepalive_message,
};
use tokio_postgres::Client;

use tracing::{info, warn};

use super::PostgresSourceError;
use super::catalog::{TableSpec, source_error};
use super::copy::dead_letter;
use super::rows::{ColumnValues, Value};
use super::sql::{self, templates};
use crate::load::DeadLetter;
use crate::sources::Extracted;
use crate::{Error, Result};

/// How often a streaming read that hears nothing asks the server for a keepalive.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The pgoutput protocol version the stream asks for (no streaming of open transactions:
/// the server sends a transaction when it commits).
pub(super) const PROTOCOL_VERSION: u32 = 1;

/// `X/Y`, as PostgreSQL writes LSNs.
pub fn format_lsn(lsn: i64) -> String {
    pg_walstream::format_lsn(lsn as u64)
}

pub fn parse_lsn(text: &str) -> Option<i64> {
    let (high, low) = text.split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    if high > u32::MAX as u64 || low > u32::MAX as u64 {
        return None;
    }
    i64::try_from((high << 32) | low).ok()
}

/// Fails with a configuration error unless the server runs with `wal_level = logical`.
pub async fn check_wal_level(client: &Client) -> Result<()> {
    let row = client
        .query_one(templates::SHOW_WAL_LEVEL, &[])
        .await
        .map_err(source_error("read wal_level"))?;
    let level: String = row.get(0);
    if level != "logical" {
        return Err(PostgresSourceError::WalLevel(level).into());
    }
    Ok(())
}

/// The replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub active: bool,
    pub confirmed_flush: Option<i64>,
    pub wal_status: Option<String>,
    /// Where decoding starts reading WAL: no change the slot streams is before it.
    pub restart: Option<i64>,
}

pub async fn slot_info(client: &Client, slot: &str) -> Result<Option<SlotInfo>> {
    let row = client
        .query_opt(templates::SLOT_INFO, &[&slot])
        .await
        .map_err(source_error("read the replication slot"))?;
    Ok(row.map(|row| SlotInfo {
        active: row.get(0),
        confirmed_flush: row.get::<_, Option<String>>(1).and_then(|t| parse_lsn(&t)),
        wal_status: row.get(2),
        restart: row.get::<_, Option<String>>(3).and_then(|t| parse_lsn(&t)),
    }))
}

/// Waits until no connection uses the slot: a replication connection we just closed takes
/// a moment to end server-side, and only then can the slot be advanced or dropped.
pub async fn wait_inactive(client: &Client, slot: &str) -> Result<Option<SlotInfo>> {
    for _ in 0..100 {
        match slot_info(client, slot).await? {
            Some(info) if info.active => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return Ok(other),
        }
    }
    Err(PostgresSourceError::SlotInUse(slot.to_string()).into())
}

/// Creates the stream's publication (`FOR TABLE`) when it is missing, and points an
/// existing one at exactly the stream's table: a full load (snapshot) starts the stream
/// anew, so whatever the publication covered before (another table, after `table` changed
/// in the config) is repaired here.
pub async fn ensure_publication(client: &Client, name: &str, spec: &TableSpec) -> Result<()> {
    let exists = client
        .query_opt(templates::PUBLICATION_EXISTS, &[&name])
        .await
        .map_err(source_error("look up the publication"))?
        .is_some();
    if !exists {
        info!(publication = name, "creating the publication");
        client
            .batch_execute(&sql::create_publication(name, spec))
            .await
            .map_err(source_error("create the publication"))?;
        return Ok(());
    }
    let covered = publication_tables(client, name).await?;
    if covered != [(spec.schema.clone(), spec.name.clone())] {
        info!(publication = name, ?covered, table = %spec.qualified(), "repairing the publication's tables");
        client
            .batch_execute(&sql::set_publication_table(name, spec))
            .await
            .map_err(source_error("repair the publication"))?;
    }
    Ok(())
}

/// CDC needs every delete to carry the key: a table without a replica identity (NOTHING, or
/// DEFAULT without a primary key) is refused before a publication would cover it (after
/// which PostgreSQL refuses the application's deletes on it).
pub async fn check_replica_identity(client: &Client, stream: &str, spec: &TableSpec) -> Result<()> {
    let row = client
        .query_one(templates::REPLICA_IDENTITY, &[&spec.schema, &spec.name])
        .await
        .map_err(source_error("read the table's replica identity"))?;
    let (identity, has_primary_key): (String, bool) = (row.get(0), row.get(1));
    let keyless = identity == "n" || (identity == "d" && !has_primary_key);
    if keyless {
        return Err(PostgresSourceError::NoReplicaIdentity {
            table: spec.qualified(),
            stream: stream.to_string(),
        }
        .into());
    }
    Ok(())
}

/// Before streaming from the slot: the publication must cover exactly the stream's table,
/// or the slot would stream another table's changes, or none, without a word.
pub async fn verify_publication(
    client: &Client,
    name: &str,
    stream: &str,
    spec: &TableSpec,
) -> Result<()> {
    let covered = publication_tables(client, name).await?;
    if covered == [(spec.schema.clone(), spec.name.clone())] {
        return Ok(());
    }
    Err(PostgresSourceError::PublicationMismatch {
        publication: name.to_string(),
        covered: covered
            .iter()
            .map(|(schema, table)| format!("{schema}.{table}"))
            .collect::<Vec<_>>()
            .join(", "),
        table: format!("{}.{}", spec.schema, spec.name),
        stream: stream.to_string(),
    }
    .into())
}

async fn publication_tables(client: &Client, name: &str) -> Result<Vec<(String, String)>> {
    Ok(client
        .query(templates::PUBLICATION_TABLES, &[&name])
        .await
        .map_err(source_error("list the publication's tables"))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// Moves the slot's confirmed position to `lsn` when it is behind (idempotent).
pub async fn advance_slot(client: &Client, slot: &str, lsn: i64) -> Result<()> {
    let Some(info) = wait_inactive(client, slot).await? else {
        return Err(slot_lost(slot, lsn));
    };
    if info
        .confirmed_flush
        .is_some_and(|confirmed| confirmed >= lsn)
    {
        return Ok(());
    }
    client
        .query_one(templates::ADVANCE_SLOT, &[&slot, &format_lsn(lsn)])
        .await
        .map_err(source_error("advance the replication slot"))?;
    Ok(())
}

pub fn slot_lost(slot: &str, since: i64) -> Error {
    PostgresSourceError::SlotLost {
        slot: slot.to_string(),
        since: format_lsn(since),
    }
    .into()
}

/// `url` with `replication=database`, as a replication connection needs.
pub fn replication_url(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}replication=database")
}

pub(super) fn replication_error(
    what: &'static str,
) -> impl Fn(ReplicationError) -> PostgresSourceError {
    move |source| PostgresSourceError::Replication { what, source }
}

/// A created slot whose exported snapshot is still held by the replication connection.
pub struct NewSlot {
    pub stream: LogicalReplicationStream,
    pub snapshot: String,
    pub consistent_point: i64,
    /// The version of the snapshot's rows: the slot's `restart_lsn`, below every change the
    /// slot streams (see the module comment).
    pub snapshot_version: i64,
}

/// Creates `slot` with an exported snapshot (dropping an old slot of that name first: a full
/// load starts the stream over).
pub async fn create_slot(
    client: &Client,
    url: &str,
    slot: &str,
    publication: &str,
) -> Result<NewSlot> {
    if wait_inactive(client, slot).await?.is_some() {
        info!(slot, "dropping the replication slot for a full load");
        client
            .execute(templates::DROP_SLOT, &[&slot])
            .await
            .map_err(source_error("drop the replication slot"))?;
    }
    let config = ReplicationStreamConfig::builder(slot, publication).with_slot_options(
        ReplicationSlotOptions {
            snapshot: Some("export".to_string()),
            ..Default::default()
        },
    );
    let mut stream = LogicalReplicationStream::new(&replication_url(url), config)
        .await
        .map_err(replication_error("connect"))?;
    stream
        .ensure_replication_slot()
        .await
        .map_err(replication_error("create the replication slot"))?;
    let snapshot = stream
        .exported_snapshot_name()
        .ok_or_else(|| PostgresSourceError::NoSnapshot(slot.to_string()))?
        .to_string();
    // The consistent point is the new slot's confirmed position.
    let info = slot_info(client, slot).await?;
    let (Some(consistent_point), Some(restart)) = (
        info.as_ref().and_then(|info| info.confirmed_flush),
        info.as_ref().and_then(|info| info.restart),
    ) else {
        return Err(PostgresSourceError::NoConfirmedPosition(slot.to_string()).into());
    };
    Ok(NewSlot {
        stream,
        snapshot,
        consistent_point,
        snapshot_version: restart.min(consistent_point),
    })
}

/// One decoded change, in text form, waiting to become a staged row.
struct ChangeRow {
    /// One value per spec column (key first); `None` is NULL.
    values: Vec<Option<String>>,
    /// Spec columns whose value was an unchanged TOAST marker: fetched from the table.
    unchanged: Vec<usize>,
    version: i64,
    deleted: bool,
}

/// How a streaming read ended.
pub enum StreamEnd {
    /// The target position was reached: everything before it was read.
    Reached,
    /// It stopped early at `cursor` (the end of the last complete transaction).
    Stopped { cursor: i64, reason: String },
}

/// Decodes pgoutput events for one table into staged batches.
pub struct ChangeDecoder {
    spec: TableSpec,
    /// Whether every table column is synced (a new column then needs a new schema).
    all_columns: bool,
    batch_rows: usize,
    /// Column names of the table as the newest Relation message describes it.
    relation: HashSet<String>,
    rows: Vec<ChangeRow>,
    /// Where the read ends: a transaction committing at or after it ends the read.
    target: i64,
    /// Between a Begin and its Commit.
    in_transaction: bool,
    /// Everything before it has been read: the end of the last complete transaction, or the
    /// server's read position in a keepalive between transactions.
    pub read_to: i64,
    pub batches: u64,
}

impl ChangeDecoder {
    pub fn new(
        spec: TableSpec,
        all_columns: bool,
        batch_rows: usize,
        since: i64,
        target: i64,
    ) -> Self {
        let relation = spec.columns.iter().map(|c| c.name.clone()).collect();
        ChangeDecoder {
            spec,
            all_columns,
            batch_rows,
            relation,
            rows: Vec::new(),
            target,
            in_transaction: false,
            read_to: since,
            batches: 0,
        }
    }

    /// The server has read its WAL up to `wal_end` (a keepalive). Between transactions,
    /// nothing before it is still to come: the read may stop there.
    pub fn server_read_to(&mut self, wal_end: i64) {
        if !self.in_transaction {
            self.read_to = self.read_to.max(wal_end);
        }
    }

    /// Whether everything before the target has been read.
    pub fn reached(&self) -> bool {
        !self.in_transaction && self.read_to >= self.target
    }

    fn is_ours(&self, schema: &str, table: &str) -> bool {
        schema == self.spec.schema && table == self.spec.name
    }

    /// Takes one event; `Some(reason)` when the read must stop before this transaction.
    pub(super) fn take(&mut self, event: ChangeEvent) -> Result<Option<String>> {
        let lsn = event.lsn.value() as i64;
        match event.event_type {
            EventType::Begin { .. } => {
                self.in_transaction = true;
            }
            EventType::Commit { end_lsn, .. } => {
                self.in_transaction = false;
                self.read_to = self.read_to.max(end_lsn.value() as i64);
            }
            EventType::Relation {
                namespace,
                relation_name,
                columns,
                ..
            } if self.is_ours(&namespace, &relation_name) => {
                let names: HashSet<String> = columns.iter().map(|c| c.name.to_string()).collect();
                if self.all_columns {
                    if let Some(new) = names.iter().find(|n| self.spec.index_of(n).is_none()) {
                        return Ok(Some(format!(
                            "table {}.{} gained column `{new}` during the run; the next run \
                             reads it with the new schema",
                            self.spec.schema, self.spec.name
                        )));
                    }
                }
                self.relation = names;
            }
            EventType::Insert {
                schema,
                table,
                data,
                ..
            } if self.is_ours(&schema, &table) => {
                let row = self.live_row(&data, None)?;
                self.push(row, lsn);
            }
            EventType::Update {
                schema,
                table,
                old_data,
                new_data,
                ..
            } if self.is_ours(&schema, &table) => {
                let row = self.live_row(&new_data, old_data.as_ref())?;
                if let Some(old) = &old_data {
                    let old_key = self.key_of(old)?;
                    if row.values[0].as_deref() != Some(old_key.as_str()) {
                        // The key changed: the old key is gone.
                        let delete = self.delete_row(old_key);
                        self.push(delete, lsn);
                    }
                }
                self.push(row, lsn);
            }
            EventType::Delete {
                schema,
                table,
                old_data,
                ..
            } if self.is_ours(&schema, &table) => {
                let key = self.key_of(&old_data)?;
                let row = self.delete_row(key);
                self.push(row, lsn);
            }
            EventType::Truncate { tables, .. } => {
                warn!(
                    ?tables,
                    "TRUNCATE is not replicated; run a full refresh to remove the rows"
                );
            }
            _ => {}
        }
        Ok(None)
    }

    fn key_of(&self, data: &RowData) -> Result<String> {
        match data.get(&self.spec.key().name) {
            Some(ColumnValue::Text(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
            _ => Err(PostgresSourceError::NoKeyValue {
                schema: self.spec.schema.clone(),
                table: self.spec.name.clone(),
                key: self.spec.key().name.clone(),
            }
            .into()),
        }
    }

    fn live_row(&self, data: &RowData, old: Option<&RowData>) -> Result<ChangeRow> {
        let mut values = Vec::with_capacity(self.spec.columns.len());
        let mut unchanged = Vec::new();
        for (index, column) in self.spec.columns.iter().enumerate() {
            let value = match data.get(&column.name) {
                Some(ColumnValue::Text(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
                Some(ColumnValue::Binary(bytes)) => {
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                Some(ColumnValue::Null) => None,
                // In the relation but not in the tuple: an unchanged TOASTed value. Take it
                // from the old tuple (REPLICA IDENTITY FULL) or fetch it later; never NULL.
                None if self.relation.contains(&column.name) => {
                    match old.and_then(|old| old.get(&column.name)) {
                        Some(ColumnValue::Text(bytes)) => {
                            Some(String::from_utf8_lossy(bytes).into_owned())
                        }
                        _ => {
                            unchanged.push(index);
                            None
                        }
                    }
                }
                // Not in the relation: the change predates the column.
                None => None,
            };
            values.push(value);
        }
        if values[0].is_none() {
            return Err(PostgresSourceError::NullKey {
                schema: self.spec.schema.clone(),
                table: self.spec.name.clone(),
                key: self.spec.key().name.clone(),
            }
            .into());
        }
        Ok(ChangeRow {
            values,
            unchanged,
            version: 0,
            deleted: false,
        })
    }

    fn delete_row(&self, key: String) -> ChangeRow {
        let mut values = vec![None; self.spec.columns.len()];
        values[0] = Some(key);
        ChangeRow {
            values,
            unchanged: Vec::new(),
            version: 0,
            deleted: true,
        }
    }

    /// Buffers a change made by the WAL record at `lsn`, which is its version.
    fn push(&mut self, mut row: ChangeRow, lsn: i64) {
        row.version = lsn;
        self.rows.push(row);
    }

    pub(super) fn full(&self) -> bool {
        self.rows.len() >= self.batch_rows
    }

    /// Whether changes are buffered, waiting for `finish_batch`.
    pub(super) fn has_rows(&self) -> bool {
        !self.rows.is_empty()
    }

    /// The buffered rows as a staged batch (unchanged TOAST values fetched first), and the
    /// rows set aside because a value cannot be staged.
    pub async fn finish_batch(
        &mut self,
        client: &Client,
    ) -> Result<(Option<RecordBatch>, Vec<DeadLetter>)> {
        if self.rows.is_empty() {
            return Ok((None, Vec::new()));
        }
        self.fill_unchanged(client).await?;
        let rows = std::mem::take(&mut self.rows);
        let mut builders: Vec<ColumnValues> = self
            .spec
            .columns
            .iter()
            .map(|c| ColumnValues::new(c.kind, rows.len()))
            .collect();
        let mut dead = Vec::new();
        let mut staged: Vec<&ChangeRow> = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values: Vec<Value<'_>> = Vec::with_capacity(row.values.len());
            let mut refused = None;
            for (index, (value, column)) in row.values.iter().zip(&self.spec.columns).enumerate() {
                match ColumnValues::decode_text(column.kind, value.as_deref()) {
                    Ok(value) => values.push(value),
                    Err(bad) => {
                        refused.get_or_insert((index, bad));
                        values.push(match value {
                            Some(text) => Value::Text(text),
                            None => Value::Null,
                        });
                    }
                }
            }
            if let Some((index, bad)) = refused {
                dead.push(dead_letter(&self.spec, &values, index, bad));
                continue;
            }
            for (builder, value) in builders.iter_mut().zip(values) {
                builder.append(value);
            }
            staged.push(row);
        }
        if staged.is_empty() {
            return Ok((None, dead));
        }
        let mut columns: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter_values(staged.iter().map(|r| r.version))
                .with_timezone("UTC"),
        ));
        columns.push(Arc::new(BooleanArray::from_iter(
            staged.iter().map(|r| Some(r.deleted)),
        )));
        self.batches += 1;
        let batch = RecordBatch::try_new(self.spec.staged_schema(), columns)
            .map_err(PostgresSourceError::Batch)?;
        Ok((Some(batch), dead))
    }

    /// Fetches the current value of unchanged TOASTed columns by key, one query per batch.
    /// A later change of the row still wins: it has a higher version.
    async fn fill_unchanged(&mut self, client: &Client) -> Result<()> {
        let mut needed: Vec<usize> = self
            .rows
            .iter()
            .flat_map(|r| r.unchanged.iter().copied())
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        needed.sort_unstable();
        needed.dedup();
        let keys: Vec<String> = self
            .rows
            .iter()
            .filter(|r| !r.unchanged.is_empty())
            .filter_map(|r| r.values[0].clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let statement = sql::toast_values(&self.spec, &needed);
        let current: HashMap<String, Vec<Option<String>>> = client
            .query(&statement, &[&keys])
            .await
            .map_err(source_error("fetch unchanged TOAST values"))?
            .into_iter()
            .map(|row| {
                let key: String = row.get(0);
                let values = (0..needed.len()).map(|i| row.get(i + 1)).collect();
                (key, values)
            })
            .collect();
        for row in &mut self.rows {
            let Some(values) = row.values[0].as_ref().and_then(|k| current.get(k)) else {
                // The row is gone by now; its delete comes later with a higher version.
                continue;
            };
            for &column in &row.unchanged {
                let position = needed
                    .iter()
                    .position(|&n| n == column)
                    .expect("every unchanged column is in `needed`");
                row.values[column] = values[position].clone();
            }
            row.unchanged.clear();
        }
        Ok(())
    }
}

/// How long a streaming read waits without hearing anything from the server (neither a
/// change nor a keepalive) before it looks whether its walsender still holds the slot. The
/// server sends a keepalive at least every half `wal_sender_timeout` while it reads WAL and
/// answers the heartbeat this read sends every [`HEARTBEAT`], but one WAL record can keep it
/// silent for minutes (the replay of a huge transaction spilled to disk): while the slot is
/// held the read goes on waiting, and it stops (where it safely is) only once it is not.
pub async fn silence_limit(client: &Client) -> Result<Duration> {
    let millis: i64 = client
        .query_one(templates::WAL_SENDER_TIMEOUT, &[])
        .await
        .map_err(source_error("read wal_sender_timeout"))?
        .get(0);
    let timeout = Duration::from_millis(millis.max(0) as u64);
    Ok(timeout.max(Duration::from_secs(60)) * 2)
}

/// Streams changes from `since` until the WAL position `target`, sending staged batches
/// and dead letters. The replication connection is closed before this returns.
#[allow(clippy::too_many_arguments)]
pub async fn stream_changes(
    client: &Client,
    url: &str,
    slot: &str,
    publication: &str,
    since: i64,
    silence: Duration,
    decoder: &mut ChangeDecoder,
    sender: &mut Sender<Result<Extracted>>,
) -> Result<StreamEnd> {
    let mut connection = PgReplicationConnection::connect(&replication_url(url))
        .map_err(replication_error("connect"))?;
    // The walsender formats the values it sends with its own session settings, which come
    // from the database's and the role's defaults unless set here.
    connection
        .exec(templates::SESSION_SETTINGS)
        .map_err(replication_error("set up the replication session"))?;
    let publications = format!("\"{publication}\"");
    let protocol = PROTOCOL_VERSION.to_string();
    connection
        .start_replication(
            slot,
            since as u64,
            &[
                ("proto_version", protocol.as_str()),
                ("publication_names", publications.as_str()),
            ],
        )
        .map_err(replication_error("start replication"))?;
    let mut wal = PgOutputDecoder::with_protocol_version(PROTOCOL_VERSION);
    let cancel = CancellationToken::new();
    // The server's position as last heard, reported back in status updates (never as
    // flushed: the slot moves only after the destination commit).
    let mut heard_to = since as u64;
    let mut last_heard = tokio::time::Instant::now();
    let end = loop {
        if decoder.reached() {
            break StreamEnd::Reached;
        }
        // Reading a frame is cancel-safe: a partial frame stays in the connection's buffer.
        let frame =
            match tokio::time::timeout(HEARTBEAT, connection.get_copy_data_async(&cancel)).await {
                Err(_) => {
                    if last_heard.elapsed() >= silence {
                        // One WAL record can keep the server busy for minutes without a
                        // word (the commit of a huge transaction spilled to disk is replayed
                        // whole). While our walsender holds the slot it is still working.
                        let holding = slot_info(client, slot)
                            .await?
                            .is_some_and(|info| info.active);
                        if !holding {
                            break StreamEnd::Stopped {
                                cursor: decoder.read_to,
                                reason: format!(
                                    "the replication connection went silent for {}s and let \
                                     go of the slot before reaching LSN {}",
                                    silence.as_secs(),
                                    format_lsn(decoder.target)
                                ),
                            };
                        }
                        info!(
                            slot,
                            "the server is still reading WAL for the slot; waiting for it"
                        );
                        last_heard = tokio::time::Instant::now();
                    }
                    connection
                        .send_standby_status_update(heard_to, since as u64, since as u64, true)
                        .await
                        .map_err(replication_error("send a status update"))?;
                    continue;
                }
                Ok(Err(err)) => return Err(replication_error("read changes")(err).into()),
                Ok(Ok(frame)) => frame,
            };
        last_heard = tokio::time::Instant::now();
        match frame.first() {
            Some(b'k') => {
                let keepalive = parse_keepalive_message(&frame)
                    .map_err(replication_error("read a keepalive"))?;
                heard_to = heard_to.max(keepalive.wal_end);
                decoder.server_read_to(keepalive.wal_end as i64);
                if keepalive.reply_requested {
                    connection
                        .send_standby_status_update(heard_to, since as u64, since as u64, false)
                        .await
                        .map_err(replication_error("send a status update"))?;
                }
            }
            Some(b'w') if frame.len() >= 25 => {
                let start = u64::from_be_bytes(frame[1..9].try_into().expect("8 bytes"));
                let wal_end = u64::from_be_bytes(frame[9..17].try_into().expect("8 bytes"));
                heard_to = heard_to.max(wal_end);
                let body = frame.slice(25..);
                if body.is_empty() {
                    continue;
                }
                let Some(event) = wal
                    .decode_message(body, Lsn::new(start))
                    .map_err(replication_error("decode a change"))?
                else {
                    continue;
                };
                if let Some(reason) = decoder.take(event)? {
                    break StreamEnd::Stopped {
                        cursor: decoder.read_to,
                        reason,
                    };
                }
                if decoder.full() {
                    let (batch, dead) = decoder.finish_batch(client).await?;
                    if !send(sender, batch, dead).await {
                        break StreamEnd::Reached;
                    }
                    if decoder.batches == 2 {
                        crate::failpoints::crash_point("cdc-mid-stream");
                    }
                }
            }
            _ => warn!("unexpected replication message"),
        }
    };
    // Only a slot no connection uses can be advanced later.
    drop(connection);
    Ok(end)
}

/// Sends a finished batch and its dead letters; false when the receiver is gone.
pub async fn send(
    sender: &mut Sender<Result<Extracted>>,
    batch: Option<RecordBatch>,
    dead: Vec<DeadLetter>,
) -> bool {
    if !dead.is_empty() && sender.send(Ok(Extracted::DeadLetters(dead))).await.is_err() {
        return false;
    }
    match batch {
        Some(batch) => sender.send(Ok(Extracted::Batch(batch))).await.is_ok(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_format_and_parse_as_postgres_writes_them() {
        assert_eq!(format_lsn(0x1_6B37_4D48), "1/6B374D48");
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(parse_lsn("1/6B374D48"), Some(0x1_6B37_4D48));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(parse_lsn("1/123456789"), None);
    }

    fn spec() -> TableSpec {
        use super::super::catalog::{SourceColumn, ValueKind};
        let column = |name: &str, kind| SourceColumn {
            name: name.into(),
            kind,
            sql_type: "text".into(),
        };
        TableSpec {
            schema: "public".into(),
            name: "contacts".into(),
            columns: vec![
                column("id", ValueKind::Int),
                column("email", ValueKind::Text),
                column("big", ValueKind::Text),
            ],
            cursor: None,
        }
    }

    fn row(pairs: &[(&str, Option<&str>)]) -> RowData {
        RowData::from_pairs(
            pairs
                .iter()
                .map(|(name, value)| (*name, value.map_or(ColumnValue::Null, ColumnValue::text)))
                .collect(),
        )
    }

    fn relation(columns: &[&str]) -> ChangeEvent {
        ChangeEvent::relation(
            16384,
            "public",
            "contacts",
            pg_walstream::ReplicaIdentity::Default,
            columns
                .iter()
                .map(|name| pg_walstream::RelationColumn {
                    name: (*name).into(),
                    type_id: 25,
                    type_modifier: -1,
                    is_key: *name == "id",
                })
                .collect(),
            pg_walstream::Lsn::new(0),
        )
    }

    #[test]
    fn changes_are_versioned_by_their_own_wal_position() {
        let lsn = pg_walstream::Lsn::new;
        let now = chrono::Utc::now();
        let mut decoder = ChangeDecoder::new(spec(), true, 100, 500, 5000);
        let events = vec![
            ChangeEvent::begin(7, lsn(1000), now, lsn(990)),
            relation(&["id", "email", "big"]),
            ChangeEvent::insert(
                "public",
                "contacts",
                16384,
                row(&[("id", Some("1")), ("email", Some("a")), ("big", Some("x"))]),
                lsn(991),
            ),
            // `big` is absent: an unchanged TOASTed value.
            ChangeEvent::update(
                "public",
                "contacts",
                16384,
                None,
                row(&[("id", Some("1")), ("email", Some("b"))]),
                pg_walstream::ReplicaIdentity::Default,
                vec![],
                lsn(992),
            ),
            // The key changed from 2 to 3.
            ChangeEvent::update(
                "public",
                "contacts",
                16384,
                Some(row(&[("id", Some("2")), ("email", None), ("big", None)])),
                row(&[("id", Some("3")), ("email", Some("c")), ("big", None)]),
                pg_walstream::ReplicaIdentity::Default,
                vec![],
                lsn(993),
            ),
            ChangeEvent::delete(
                "public",
                "contacts",
                16384,
                row(&[("id", Some("1")), ("email", None), ("big", None)]),
                pg_walstream::ReplicaIdentity::Default,
                vec![],
                lsn(994),
            ),
            ChangeEvent::commit(now, lsn(995), lsn(1000), lsn(1048)),
        ];
        for event in events {
            assert_eq!(decoder.take(event).unwrap(), None);
        }
        let seen: Vec<(Option<&str>, i64, bool, Vec<usize>)> = decoder
            .rows
            .iter()
            .map(|r| {
                (
                    r.values[0].as_deref(),
                    r.version,
                    r.deleted,
                    r.unchanged.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (Some("1"), 991, false, vec![]),
                (Some("1"), 992, false, vec![2]),
                (Some("2"), 993, true, vec![]),
                (Some("3"), 993, false, vec![]),
                (Some("1"), 994, true, vec![]),
            ]
        );
        assert_eq!(decoder.read_to, 1048);

        // A column the extraction does not know stops before the transaction naming it.
        assert_eq!(
            decoder
                .take(ChangeEvent::begin(8, lsn(2000), now, lsn(1990)))
                .unwrap(),
            None
        );
        let stop = decoder
            .take(relation(&["id", "email", "big", "note"]))
            .unwrap()
            .expect("stops");
        assert!(stop.contains("`note`"), "{stop}");
        assert_eq!(decoder.read_to, 1048);
    }

    #[test]
    fn a_key_changed_many_times_never_ties_and_nothing_is_kept_per_key() {
        let lsn = pg_walstream::Lsn::new;
        let now = chrono::Utc::now();
        let mut decoder = ChangeDecoder::new(spec(), true, 10_000, 500, 1_000_000);
        decoder
            .take(ChangeEvent::begin(7, lsn(900_000), now, lsn(600)))
            .unwrap();
        let update = |at: u64, email: String| {
            ChangeEvent::update(
                "public",
                "contacts",
                16384,
                None,
                row(&[("id", Some("1")), ("email", Some(&email)), ("big", None)]),
                pg_walstream::ReplicaIdentity::Default,
                vec![],
                lsn(at),
            )
        };
        for change in 0..40u64 {
            decoder
                .take(update(1000 + change * 72, format!("v{change}")))
                .unwrap();
        }
        let versions: Vec<i64> = decoder.rows.iter().map(|r| r.version).collect();
        assert_eq!(versions.len(), 40);
        assert!(
            versions.windows(2).all(|pair| pair[0] < pair[1]),
            "every change of the key is newer than the one before: {versions:?}"
        );
        // A version depends on the change alone: the same change after 10k changes of other
        // keys in the same transaction gets the same version (nothing is kept per key).
        let mut fresh = ChangeDecoder::new(spec(), true, 100_000, 500, 1_000_000);
        for key in 0..10_000u64 {
            let id = (key + 10).to_string();
            fresh
                .take(ChangeEvent::insert(
                    "public",
                    "contacts",
                    16384,
                    row(&[("id", Some(&id)), ("email", None), ("big", None)]),
                    lsn(100 + key * 8),
                ))
                .unwrap();
        }
        fresh.take(update(1000 + 39 * 72, "v39".into())).unwrap();
        assert_eq!(fresh.rows.last().unwrap().version, versions[39]);
    }

    #[test]
    fn keepalives_between_transactions_move_the_read_position() {
        let lsn = pg_walstream::Lsn::new;
        let now = chrono::Utc::now();
        let mut decoder = ChangeDecoder::new(spec(), true, 100, 500, 9000);
        decoder.server_read_to(4000);
        assert_eq!(
            decoder.read_to, 4000,
            "WAL that held nothing for the stream"
        );
        assert!(!decoder.reached());
        decoder
            .take(ChangeEvent::begin(7, lsn(6000), now, lsn(5000)))
            .unwrap();
        // Inside a transaction the server's position is before its commit: no stop there.
        decoder.server_read_to(9500);
        assert_eq!(decoder.read_to, 4000);
        assert!(!decoder.reached());
        decoder
            .take(ChangeEvent::commit(now, lsn(6000), lsn(6048), lsn(6048)))
            .unwrap();
        assert_eq!(decoder.read_to, 6048);
        assert!(!decoder.reached());
        decoder.server_read_to(9000);
        assert!(decoder.reached());
    }

    #[test]
    fn replication_urls_ask_for_a_database_connection() {
        assert_eq!(
            replication_url("postgres://u@h/db"),
            "postgres://u@h/db?replication=database"
        );
        assert_eq!(
            replication_url("postgres://u@h/db?sslmode=disable"),
            "postgres://u@h/db?sslmode=disable&replication=database"
        );
    }
}
