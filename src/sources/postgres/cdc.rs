//! Logical-replication CDC: the publication and slot of a stream, the snapshot read through
//! the slot's exported snapshot, and the decoding of pgoutput changes into staged rows.
//!
//! Positions: the cursor is an LSN (as i64). A snapshot covers everything before the slot's
//! consistent point; a streaming read covers `[since, target)` where `target` is the WAL end
//! read when the extraction starts. The slot is advanced (`committed`) only after the
//! destination committed, so an interrupted run re-reads from the saved cursor.
//!
//! Versions: a streamed change's `_syncline_version` is its transaction's commit LSN plus
//! the change's sequence number for its key within the transaction (capped at 15; the commit
//! record is longer than that, so no other transaction's LSN is reached). Snapshot rows carry
//! the consistent point, which every streamed commit is at or after.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, BooleanArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use futures::SinkExt;
use futures::channel::mpsc::Sender;
use pg_walstream::{
    CancellationToken, ChangeEvent, ColumnValue, EventType, LogicalReplicationStream,
    ReplicationError, ReplicationSlotOptions, ReplicationStreamConfig, RowData,
};
use tokio_postgres::Client;

use tracing::{info, warn};

use super::PostgresSourceError;
use super::catalog::{TableSpec, source_error};
use super::rows::ColumnValues;
use super::sql::{self, templates};
use crate::sources::Extracted;
use crate::{Error, Result};

/// How long a streaming read waits for the next message before it gives up on reaching the
/// target position and stops where it safely is.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// Highest per-key sequence number added to a commit LSN.
const MAX_SEQUENCE: i64 = 15;

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
    let row = client
        .query_one(templates::SHOW_DATESTYLE, &[])
        .await
        .map_err(source_error("read DateStyle"))?;
    let style: String = row.get(0);
    if !style.starts_with("ISO") {
        return Err(PostgresSourceError::DateStyle(style).into());
    }
    Ok(())
}

/// The replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub active: bool,
    pub confirmed_flush: Option<i64>,
    pub wal_status: Option<String>,
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

fn replication_error(what: &'static str) -> impl Fn(ReplicationError) -> PostgresSourceError {
    move |source| PostgresSourceError::Replication { what, source }
}

/// A created slot whose exported snapshot is still held by the replication connection.
pub struct NewSlot {
    pub stream: LogicalReplicationStream,
    pub snapshot: String,
    pub consistent_point: i64,
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
    let consistent_point = slot_info(client, slot)
        .await?
        .and_then(|info| info.confirmed_flush)
        .ok_or_else(|| PostgresSourceError::NoConfirmedPosition(slot.to_string()))?;
    Ok(NewSlot {
        stream,
        snapshot,
        consistent_point,
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
    commit_lsn: i64,
    sequence: HashMap<String, i64>,
    rows: Vec<ChangeRow>,
    /// The end of the last complete transaction.
    pub last_commit_end: i64,
    pub batches: u64,
}

impl ChangeDecoder {
    pub fn new(spec: TableSpec, all_columns: bool, batch_rows: usize, since: i64) -> Self {
        let relation = spec.columns.iter().map(|c| c.name.clone()).collect();
        ChangeDecoder {
            spec,
            all_columns,
            batch_rows,
            relation,
            commit_lsn: since,
            sequence: HashMap::new(),
            rows: Vec::new(),
            last_commit_end: since,
            batches: 0,
        }
    }

    fn is_ours(&self, schema: &str, table: &str) -> bool {
        schema == self.spec.schema && table == self.spec.name
    }

    /// Takes one event; `Some(reason)` when the read must stop before this transaction.
    fn take(&mut self, event: ChangeEvent) -> Result<Option<String>> {
        match event.event_type {
            EventType::Begin { final_lsn, .. } => {
                self.commit_lsn = final_lsn.value() as i64;
                self.sequence.clear();
            }
            EventType::Commit { end_lsn, .. } => {
                self.last_commit_end = end_lsn.value() as i64;
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
                self.push(row);
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
                        self.push(delete);
                    }
                }
                self.push(row);
            }
            EventType::Delete {
                schema,
                table,
                old_data,
                ..
            } if self.is_ours(&schema, &table) => {
                let key = self.key_of(&old_data)?;
                let row = self.delete_row(key);
                self.push(row);
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

    fn push(&mut self, mut row: ChangeRow) {
        let key = row.values[0].clone().unwrap_or_default();
        let sequence = self.sequence.entry(key).or_insert(0);
        row.version = self.commit_lsn + (*sequence).min(MAX_SEQUENCE);
        *sequence += 1;
        self.rows.push(row);
    }

    fn full(&self) -> bool {
        self.rows.len() >= self.batch_rows
    }

    /// The buffered rows as a staged batch (unchanged TOAST values fetched first).
    pub async fn finish_batch(&mut self, client: &Client) -> Result<Option<RecordBatch>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        self.fill_unchanged(client).await?;
        let rows = std::mem::take(&mut self.rows);
        let mut builders: Vec<ColumnValues> = self
            .spec
            .columns
            .iter()
            .map(|c| ColumnValues::new(c.kind, rows.len()))
            .collect();
        for row in &rows {
            for ((builder, value), column) in
                builders.iter_mut().zip(&row.values).zip(&self.spec.columns)
            {
                builder
                    .append_text(value.as_deref(), column.kind)
                    .map_err(|bad| PostgresSourceError::BadValue {
                        reading: "replication",
                        schema: self.spec.schema.clone(),
                        table: self.spec.name.clone(),
                        column: column.name.clone(),
                        why: bad.0,
                    })?;
            }
        }
        let mut columns: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.version))
                .with_timezone("UTC"),
        ));
        columns.push(Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.deleted)),
        )));
        self.batches += 1;
        Ok(Some(
            RecordBatch::try_new(self.spec.staged_schema(), columns)
                .map_err(PostgresSourceError::Batch)?,
        ))
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

/// Streams changes from `since` until the WAL position `target`, sending staged batches.
/// The replication connection is closed before this returns.
pub async fn stream_changes(
    client: &Client,
    url: &str,
    slot: &str,
    publication: &str,
    since: i64,
    target: i64,
    decoder: &mut ChangeDecoder,
    sender: &mut Sender<Result<Extracted>>,
) -> Result<StreamEnd> {
    let config = ReplicationStreamConfig::builder(slot, publication)
        .with_stop_at_lsn(pg_walstream::Lsn::new(target as u64));
    let mut stream = LogicalReplicationStream::new(&replication_url(url), config)
        .await
        .map_err(replication_error("connect"))?;
    stream
        .start(Some(since as u64))
        .await
        .map_err(replication_error("start replication"))?;
    let cancel = CancellationToken::new();
    let end = loop {
        let event = match tokio::time::timeout(IDLE_LIMIT, stream.next_event(&cancel)).await {
            Err(_) => {
                break StreamEnd::Stopped {
                    cursor: decoder.last_commit_end,
                    reason: format!(
                        "no replication message for {}s before reaching LSN {}",
                        IDLE_LIMIT.as_secs(),
                        format_lsn(target)
                    ),
                };
            }
            Ok(Err(ReplicationError::StreamStopped(_))) => break StreamEnd::Reached,
            Ok(Err(err)) => return Err(replication_error("read changes")(err).into()),
            Ok(Ok(event)) => event,
        };
        if let Some(reason) = decoder.take(event)? {
            break StreamEnd::Stopped {
                cursor: decoder.last_commit_end,
                reason,
            };
        }
        if decoder.full() {
            if let Some(batch) = decoder.finish_batch(client).await? {
                if sender.send(Ok(Extracted::Batch(batch))).await.is_err() {
                    break StreamEnd::Reached;
                }
                if decoder.batches == 2 {
                    crate::failpoints::crash_point("cdc-mid-stream");
                }
            }
        }
    };
    // Only a slot no connection uses can be advanced later.
    drop(stream);
    Ok(end)
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
    fn changes_get_commit_lsn_versions_in_order_per_key() {
        let lsn = pg_walstream::Lsn::new;
        let now = chrono::Utc::now();
        let mut decoder = ChangeDecoder::new(spec(), true, 100, 500);
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
                (Some("1"), 1000, false, vec![]),
                (Some("1"), 1001, false, vec![2]),
                (Some("2"), 1000, true, vec![]),
                (Some("3"), 1000, false, vec![]),
                (Some("1"), 1002, true, vec![]),
            ]
        );
        assert_eq!(decoder.last_commit_end, 1048);

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
        assert_eq!(decoder.last_commit_end, 1048);
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
