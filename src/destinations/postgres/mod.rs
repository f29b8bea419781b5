//! The PostgreSQL destination: binary COPY into a session staging table, then one set-based
//! merge (delete, update, insert, then the deletes remembered: tombstones in
//! `"<schema>"."_syncline_tombstones"`, or rows marked deleted for keys the table lacks) in a
//! transaction that also records the load in the ledger table `"<schema>"."_syncline_loads"`.
//!
//! Exactly-once comes from the ledger: the merge and its ledger row commit together, a load id
//! already in the ledger is skipped, and two runs racing on one load id cannot both commit
//! (the ledger's primary key stops the second). The SQL lives in `sql/postgres/*.sql`.

pub mod config;
mod copy;
mod error;
mod sql;
mod swap;
pub(super) mod types;

use std::pin::pin;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Mutex;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Transaction};
use tracing::{debug, info, instrument};

use crate::Result;
use crate::destinations::layout::{ColumnType, Widening};
use crate::destinations::{
    ContractError, Destination, LedgerEntry, MergeOutcome, MergeRequest, MergeTimings, OpenBatches,
};
use crate::load::{DeleteMode, SchemaChange};
use crate::reconcile::Fingerprint;
use crate::reconcile::drift::{ListRequest, Listing};
use crate::reconcile::report::millis;

use copy::Direct;
pub use error::{DriverError, PostgresError};
use sql::{MergeSql, templates};
use types::TableLayout;

pub use sql::quote_ident;

/// Records per chunk of a reconcile listing.
const LIST_CHUNK: usize = 10_000;

/// A PostgreSQL database used as a destination, with all syncline tables in one schema.
///
/// One connection, used by one operation at a time: a merge holds it for its whole transaction.
pub struct PostgresDestination {
    client: Mutex<Client>,
    schema: String,
}

impl std::fmt::Debug for PostgresDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDestination")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresDestination {
    /// Connects (without TLS) and sets the session time zone to UTC. `schema` is where the
    /// destination tables and the ledger live; it is created by [`Destination::check`].
    ///
    /// The URL is never repeated in errors or logs: it may hold a password. An unparsable URL
    /// is a configuration error; an unreachable server is transient.
    pub async fn connect(url: &str, schema: &str) -> Result<Self> {
        if let Some(problem) = sql::ident_problem(schema) {
            return Err(PostgresError::BadSchemaName {
                schema: schema.to_owned(),
                problem: problem.to_owned(),
            }
            .into());
        }
        // TLS as the URL's sslmode asks; errors never quote the URL (it carries the password).
        let client = crate::tls::connect(url, "destination.url").await?;
        client
            .batch_execute(templates::SESSION_SETUP)
            .await
            .step("set up the session")?;
        Ok(PostgresDestination {
            client: Mutex::new(client),
            schema: schema.to_owned(),
        })
    }

    /// The schema holding the destination tables and the ledger.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Applies one load in one transaction: the direct path when `rows` can be read again and
    /// the table is empty, otherwise the general one (stage, de-duplicate, merge).
    async fn apply(&self, request: &MergeRequest, rows: Rows<'_>) -> Result<MergeOutcome> {
        let layout = TableLayout::from_request(request)?;
        let load_id: &(dyn ToSql + Sync) = &request.load_id;

        let mut client = self.client.lock().await;
        let tx = client.transaction().await.step("begin the merge")?;
        let layout = adopt_table(&tx, &self.schema, layout).await?;
        let statements = MergeSql::new(&self.schema, &layout);

        let committed = tx
            .query_opt(statements.ledger_lookup.as_str(), &[load_id])
            .await
            .map_err(|err| {
                if ledger_missing(&err) {
                    PostgresError::NoLedger {
                        ledger: sql::qualified(&self.schema, sql::LEDGER_TABLE),
                    }
                } else {
                    pg_error("look up the load in the ledger", err)
                }
            })?;
        if committed.is_some() {
            tx.rollback().await.step("roll back")?;
            info!("load already in the ledger; skipped");
            return Ok(MergeOutcome {
                skipped: true,
                ..MergeOutcome::default()
            });
        }

        let loading = Instant::now();
        let batches = match rows {
            Rows::Once(batches) => batches,
            Rows::Reopenable(open) => match direct(&tx, request, &layout, &statements, open).await?
            {
                DirectOutcome::Copied { received, copied } => {
                    let merging = copied;
                    let timings = MergeTimings {
                        load_ms: millis(copied.duration_since(loading)),
                        direct_copy: true,
                        ..MergeTimings::default()
                    };
                    let counts = Counts {
                        inserted: received.rows,
                        ..Counts::default()
                    };
                    return record_and_commit(
                        tx,
                        &statements,
                        request,
                        received,
                        counts,
                        merging,
                        timings,
                    )
                    .await;
                }
                DirectOutcome::NotTaken => open(),
            },
        };

        tx.batch_execute(&statements.create_stage)
            .await
            .step("create the staging table")?;
        let copied = copy::copy_batches(
            &tx,
            &statements.copy_stage,
            &layout.staged,
            layout.sending_as_text(batches),
        )
        .await?;
        debug!(rows = copied, "copied staged rows");
        let load_ms = millis(loading.elapsed());
        let merging = Instant::now();

        let received = check_received(
            &tx,
            &statements.staged_fingerprint,
            "fingerprint the staged rows",
            request,
        )
        .await?;
        tx.batch_execute(&statements.dedup_stage)
            .await
            .step("de-duplicate the staged rows")?;
        tx.batch_execute(&statements.analyze_dedup)
            .await
            .step("analyze the staged rows")?;
        let small: bool = tx
            .query_one(statements.small_beside_table.as_str(), &[])
            .await
            .step("compare the load with its table")?
            .get(0);
        if small {
            tx.batch_execute(templates::PREFER_INDEX_JOINS)
                .await
                .step("prefer index joins")?;
        }
        let delete_params: &[&(dyn ToSql + Sync)] = match layout.deletes {
            DeleteMode::Hard => &[],
            DeleteMode::Soft => std::slice::from_ref(&load_id),
        };
        let deleted = tx
            .execute(statements.delete.as_str(), delete_params)
            .await
            .step("apply deletes")?;
        let updated = tx
            .execute(statements.update.as_str(), &[load_id])
            .await
            .step("apply updates")?;
        // The insert and the recording of tombstones name the table's tombstones (`$2`).
        let table: &(dyn ToSql + Sync) = &request.table;
        let with_table = [load_id, table];
        let inserted = tx
            .execute(statements.insert.as_str(), &with_table)
            .await
            .step("apply inserts")?;
        // A delete of a key the table lacks is remembered (soft: a row marked deleted, counted
        // as a delete; hard: the tombstone every delete records, which removes no row).
        let mut deleted = deleted;
        if let Some(insert_deleted) = &statements.insert_deleted {
            deleted += tx
                .execute(insert_deleted.as_str(), &with_table)
                .await
                .step("remember deletes of keys the table lacks")?;
        }
        if let Some(record_tombstones) = &statements.record_tombstones {
            tx.execute(record_tombstones.as_str(), &with_table)
                .await
                .step("record tombstones")?;
        }
        if small {
            tx.batch_execute(templates::RESET_JOINS)
                .await
                .step("reset the join settings")?;
        }
        // A complete full load's orphans: rows whose key it lacks, written before it started.
        if let (Some(orphans), Some(as_of)) = (&statements.orphans, &request.complete) {
            if let Some(tombstones) = &orphans.tombstones {
                tx.execute(tombstones.as_str(), &with_table)
                    .await
                    .step("record the orphans' tombstones")?;
            }
            let params: &[&(dyn ToSql + Sync)] = match layout.deletes {
                DeleteMode::Hard => std::slice::from_ref(&load_id),
                DeleteMode::Soft => &[load_id, as_of],
            };
            let orphans = tx
                .execute(orphans.delete.as_str(), params)
                .await
                .step("delete the rows the source no longer has")?;
            if orphans > 0 {
                info!(
                    rows = orphans,
                    "deleted rows the full load no longer carries"
                );
            }
            deleted += orphans;
        }

        let counts = Counts {
            inserted,
            updated,
            deleted,
        };
        let timings = MergeTimings {
            load_ms,
            ..MergeTimings::default()
        };
        record_and_commit(tx, &statements, request, received, counts, merging, timings).await
    }
}

#[async_trait]
impl Destination for PostgresDestination {
    /// Creates the schema (when missing) and the ledger table.
    async fn check(&self) -> Result<()> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.step("begin")?;
        ensure_schema_and_ledger(&tx, &self.schema).await?;
        tx.commit().await.step("commit the schema and ledger")?;
        Ok(())
    }

    /// Creates the table (and schema and ledger) when missing; otherwise adds the columns it
    /// lacks and widens columns whose type the source widened, all in one transaction. Any
    /// other type difference is schema drift and changes nothing.
    #[instrument(skip_all, fields(stream = %request.stream, table = %request.table))]
    async fn ensure_table(&self, request: &MergeRequest) -> Result<SchemaChange> {
        let layout = TableLayout::from_request(request)?;
        let wanted = layout.target_columns();
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.step("begin")?;
        ensure_schema_and_ledger(&tx, &self.schema).await?;

        let rows = tx
            .query(templates::TABLE_COLUMNS, &[&self.schema, &layout.table])
            .await
            .step("read the table's columns")?;
        let change = if rows.is_empty() {
            tx.batch_execute(&sql::create_table(&self.schema, &layout, &wanted))
                .await
                .step("create the table")?;
            info!(columns = wanted.len(), "created table");
            SchemaChange {
                created_table: true,
                added_columns: Vec::new(),
            }
        } else {
            let existing = existing_columns(&rows)?;
            let alterations = layout.alterations(&existing)?;
            let mut added_columns = Vec::new();
            for column in alterations.add {
                tx.batch_execute(&sql::add_column(&self.schema, &layout.table, &column))
                    .await
                    .step("add a column")?;
                info!(column = %column.name, pg_type = %column.ty.name(), "added column");
                added_columns.push(column.name);
            }
            for Widening { column, from, to } in alterations.widen {
                tx.batch_execute(&sql::widen_column(&self.schema, &layout.table, &column, to))
                    .await
                    .step("widen a column")?;
                info!(column = %column, from = %from, to = %to.name(), "widened column");
            }
            SchemaChange {
                created_table: false,
                added_columns,
            }
        };
        tx.commit().await.step("commit the table change")?;
        Ok(change)
    }

    /// Applies one load in one transaction (see the `destinations` module contract).
    ///
    /// Before anything is applied, the count and checksum of the rows received (computed by
    /// PostgreSQL over the staging table) must equal `request.staged`; otherwise the
    /// transaction is rolled back and the error is [`ContractError::ReceivedDiffers`] (a reconciliation
    /// mismatch). A concurrent run
    /// committing the same load id first makes this merge fail and roll back.
    #[instrument(skip_all, fields(stream = %request.stream, load_id = %request.load_id))]
    async fn merge(
        &self,
        request: &MergeRequest,
        batches: BoxStream<'static, Result<RecordBatch>>,
    ) -> Result<MergeOutcome> {
        self.apply(request, Rows::Once(batches)).await
    }

    /// As `merge`; a load into an empty table is copied straight into it when it can be
    /// (see `sql::DirectSql`), and otherwise takes the general path, reading the rows again.
    #[instrument(skip_all, fields(stream = %request.stream, load_id = %request.load_id))]
    async fn merge_staged(
        &self,
        request: &MergeRequest,
        open: &OpenBatches<'_>,
    ) -> Result<MergeOutcome> {
        self.apply(request, Rows::Reopenable(open)).await
    }

    fn copies_while_staging(&self) -> bool {
        true
    }

    /// The direct path fed by the batches as they are staged: one COPY into the empty table
    /// overlapping extraction and the Parquet writer, committed once the load is staged.
    #[instrument(skip_all, fields(stream = %request.stream, load_id = %request.load_id))]
    async fn copy_while_staging(
        &self,
        request: &MergeRequest,
        batches: BoxStream<'static, Result<RecordBatch>>,
        staged: tokio::sync::oneshot::Receiver<MergeRequest>,
        idle_limit: std::time::Duration,
    ) -> Result<Option<MergeOutcome>> {
        let layout = TableLayout::from_request(request)?;
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.step("begin the merge")?;
        let layout = adopt_table(&tx, &self.schema, layout).await?;
        let statements = MergeSql::new(&self.schema, &layout);
        // A run stalled past its lease must not keep a run that took the stream over waiting
        // on the rows this transaction copied: the server ends the session instead.
        tx.batch_execute(&format!(
            "SET LOCAL idle_in_transaction_session_timeout = {}",
            idle_limit.as_millis().max(1)
        ))
        .await
        .step("limit how long the copy may wait for the stage")?;
        let loading = Instant::now();
        // A new load id: the ledger cannot hold it yet, and `record_and_commit` refuses it
        // should another run have committed it meanwhile.
        if !copy_direct(&tx, request, &layout, &statements, batches).await? {
            tx.rollback().await.step("roll back")?;
            return Ok(None);
        }
        let load_ms = millis(loading.elapsed());
        // Nothing commits before the load is durable in the stage and pending in the state.
        // While this process waits it says so every third of the limit, as its lease does:
        // only a process that stalled (and so lost its lease too) lets the limit run out.
        let mut staged = staged;
        let waiting = async {
            let mut alive =
                tokio::time::interval((idle_limit / 3).max(std::time::Duration::from_millis(100)));
            alive.tick().await;
            loop {
                tokio::select! {
                    staged = &mut staged => break Ok(staged),
                    _ = alive.tick() => {
                        tx.batch_execute("SELECT 1")
                            .await
                            .step("keep the copy's transaction open while the load is staged")?;
                    }
                }
            }
        };
        // The copy is complete, so what the table received is read back while the last files
        // are closed and the manifest written (the two are compared once both are known).
        let merging = Instant::now();
        let reading = received_fingerprint(
            &tx,
            &statements.direct.fingerprint,
            "fingerprint the copied rows",
        );
        let (received, staged): (Result<Fingerprint>, Result<_>) = tokio::join!(reading, waiting);
        let Ok(request) = staged? else {
            tx.rollback().await.step("roll back")?;
            return Ok(None);
        };
        let received = check_against(received?, &request)?;
        let timings = MergeTimings {
            load_ms,
            direct_copy: true,
            copied_while_staging: true,
            ..MergeTimings::default()
        };
        let counts = Counts {
            inserted: received.rows,
            ..Counts::default()
        };
        let outcome = record_and_commit(
            tx,
            &statements,
            &request,
            received,
            counts,
            merging,
            timings,
        )
        .await?;
        Ok(Some(outcome))
    }

    /// `Ok(false)` also when the ledger (or schema) does not exist yet.
    async fn is_committed(&self, _stream: &str, load_id: &str) -> Result<bool> {
        let client = self.client.lock().await;
        match client
            .query_opt(sql::ledger_lookup(&self.schema).as_str(), &[&load_id])
            .await
        {
            Ok(row) => Ok(row.is_some()),
            Err(err) if ledger_missing(&err) => Ok(false),
            Err(err) => Err(pg_error("look up the load in the ledger", err).into()),
        }
    }

    async fn table_fingerprint(
        &self,
        table: &str,
        key: &str,
        deletes: DeleteMode,
    ) -> Result<Option<Fingerprint>> {
        let client = self.client.lock().await;
        match client
            .query_one(
                sql::table_fingerprint(&self.schema, table, key, deletes).as_str(),
                &[],
            )
            .await
        {
            Ok(row) => fingerprint_of(&row).map(Some),
            Err(err) if ledger_missing(&err) => Ok(None),
            Err(err) => Err(pg_error("fingerprint the table", err).into()),
        }
    }

    /// One ordered binary COPY; an empty listing when the table (or schema) does not exist.
    async fn list_keys(&self, request: &ListRequest) -> Result<Listing> {
        let client = self.client.lock().await;
        let statement = sql::list_keys(&self.schema, request);
        match client.copy_out(statement.as_str()).await {
            // The COPY runs on the shared connection; the next statement waits for it.
            Ok(out) => Ok(crate::reconcile::listing::decode(
                out,
                request.int_key,
                LIST_CHUNK,
                "destination",
            )),
            Err(err) if ledger_missing(&err) => Ok(futures::stream::empty().boxed()),
            Err(err) => Err(pg_error("list the table's keys", err).into()),
        }
    }

    /// `Ok(None)` also when the ledger (or schema) does not exist yet.
    async fn last_load(&self, stream: &str) -> Result<Option<LedgerEntry>> {
        let client = self.client.lock().await;
        match client
            .query_opt(sql::ledger_last(&self.schema).as_str(), &[&stream])
            .await
        {
            Ok(Some(row)) => ledger_entry(&row).map(Some),
            Ok(None) => Ok(None),
            Err(err) if ledger_missing(&err) => Ok(None),
            Err(err) => Err(pg_error("read the ledger", err).into()),
        }
    }

    async fn drop_table(&self, table: &str) -> Result<()> {
        self.drop_model_table(table).await
    }

    async fn swap_table(&self, build: &str, target: &str) -> Result<()> {
        self.swap_model_table(build, target).await
    }
}

/// Creates the schema unless it exists (so a role without CREATE on the database can use a
/// schema made for it) and the ledger table unless it exists.
async fn ensure_schema_and_ledger(tx: &Transaction<'_>, schema: &str) -> Result<()> {
    // `IF NOT EXISTS` is not safe against a concurrent creator (the second fails on a unique
    // index of the catalog): runs started together take turns here, until this commit.
    tx.execute(templates::LOCK_LEDGER_SETUP, &[&schema])
        .await
        .step("wait for the ledger setup of another run")?;
    let exists = tx
        .query_opt(templates::SCHEMA_EXISTS, &[&schema])
        .await
        .step("look up the schema")?;
    if exists.is_none() {
        tx.batch_execute(&sql::create_schema(schema))
            .await
            .step("create the schema")?;
    }
    tx.batch_execute(&sql::create_ledger(schema))
        .await
        .step("create the ledger table")?;
    tx.batch_execute(&sql::create_tombstones(schema))
        .await
        .step("create the tombstone table")?;
    Ok(())
}

/// `(name, data type)` of each row of `sql/postgres/table_columns.sql`.
fn existing_columns(rows: &[Row]) -> Result<Vec<(String, String)>> {
    let mut existing = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0).step("read the table's columns")?;
        let data_type: String = row.try_get(1).step("read the table's columns")?;
        existing.push((name, data_type));
    }
    Ok(existing)
}

/// `layout` taking the table's columns as they are (`TableLayout::adopt`): a staged decimal
/// the table holds as text is copied as its text. The columns are read only when the load
/// stages a decimal; a table that does not exist yet changes nothing.
async fn adopt_table(
    tx: &Transaction<'_>,
    schema: &str,
    mut layout: TableLayout,
) -> Result<TableLayout> {
    if layout.has_decimals() {
        let rows = tx
            .query(templates::TABLE_COLUMNS, &[&schema, &layout.table])
            .await
            .step("read the table's columns")?;
        layout.adopt(&existing_columns(&rows)?);
    }
    Ok(layout)
}

/// Count and checksum of what the transaction received (read back by `copy`), which must equal
/// the manifest's; otherwise the load stops here, and dropping the transaction rolls it back,
/// so nothing of it is applied.
async fn check_received(
    tx: &Transaction<'_>,
    copy: &str,
    step: &'static str,
    request: &MergeRequest,
) -> Result<Fingerprint> {
    check_against(received_fingerprint(tx, copy, step).await?, request)
}

/// `received`, when it equals the manifest's fingerprint of `request`.
fn check_against(received: Fingerprint, request: &MergeRequest) -> Result<Fingerprint> {
    if received != request.staged {
        return Err(ContractError::ReceivedDiffers {
            destination: "postgres",
            load_id: request.load_id.clone(),
            received,
            staged: request.staged,
        }
        .into());
    }
    Ok(received)
}

/// The fingerprint of the rows `copy` reads back from the destination (each row's key as
/// PostgreSQL writes it as text, its version and whether it is a delete), computed here as the
/// staged batches' is. Reading them back in one binary COPY costs PostgreSQL a scan; computing
/// `md5` over the same rows in SQL (`table_fingerprint.sql`) cost it three times the CPU, most of
/// it in text and numeric arithmetic, after a full load when nothing else runs (W1: about 1 s
/// of two cores).
async fn received_fingerprint(
    tx: &Transaction<'_>,
    copy: &str,
    step: &'static str,
) -> Result<Fingerprint> {
    // A `timestamp` version column is read as `timestamptz`: both are µs since 2000 on the
    // wire, and the session's time zone is UTC, which is how the SQL fingerprint reads it.
    const FIELDS: [Type; 3] = [Type::TEXT, Type::TIMESTAMPTZ, Type::BOOL];
    let out = tx.copy_out(copy).await.step(step)?;
    let mut rows = pin!(BinaryCopyOutStream::new(out, &FIELDS));
    let mut received = Fingerprint::default();
    while let Some(row) = rows.try_next().await.step(step)? {
        let key: Option<&str> = row.try_get(0).step(step)?;
        let version: Option<DateTime<Utc>> = row.try_get(1).step(step)?;
        let deleted: Option<bool> = row.try_get(2).step(step)?;
        match (key, version) {
            (Some(key), Some(version)) => {
                received.add(key, version.timestamp_millis(), deleted == Some(true));
            }
            // Counted but adding nothing, as in SQL (`md5(NULL)`): no staged row lacks either.
            _ => received.rows += 1,
        }
    }
    Ok(received)
}

fn fingerprint_of(row: &Row) -> Result<Fingerprint> {
    let rows: i64 = row
        .try_get("row_count")
        .step("read the staged fingerprint")?;
    let checksum: String = row
        .try_get("checksum")
        .step("read the staged fingerprint")?;
    Ok(Fingerprint {
        rows: to_count(rows)?,
        checksum: parse_checksum(&checksum)?,
    })
}

fn ledger_entry(row: &Row) -> Result<LedgerEntry> {
    let rows: i64 = row.try_get("rows").step("read the ledger")?;
    let checksum: String = row.try_get("checksum").step("read the ledger")?;
    Ok(LedgerEntry {
        load_id: row.try_get("load_id").step("read the ledger")?,
        stream: row.try_get("stream").step("read the ledger")?,
        rows: to_count(rows)?,
        checksum: parse_checksum(&checksum)?,
        committed_at: row.try_get("committed_at").step("read the ledger")?,
    })
}

fn parse_checksum(text: &str) -> Result<u64, PostgresError> {
    text.parse()
        .map_err(|_| PostgresError::BadChecksum(text.to_owned()))
}

fn to_count(value: i64) -> Result<u64, PostgresError> {
    u64::try_from(value).map_err(|_| PostgresError::NegativeCount(value))
}

fn to_bigint(value: u64) -> Result<i64, PostgresError> {
    i64::try_from(value).map_err(|_| PostgresError::CountTooLarge(value))
}

/// The ledger (or its schema) does not exist yet.
fn ledger_missing(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(code) if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::INVALID_SCHEMA_NAME
    )
}

/// A driver error, naming the step that failed; [`PostgresError`] decides whether it is
/// transient, and [`DriverError`] leaves the server's DETAIL out.
fn pg_error(step: &'static str, err: tokio_postgres::Error) -> PostgresError {
    PostgresError::Statement {
        step,
        source: DriverError::new(err),
    }
}

/// Names the failed step on driver errors: `.await.step("create the table")?`.
trait PgResultExt<T> {
    fn step(self, step: &'static str) -> Result<T, PostgresError>;
}

impl<T> PgResultExt<T> for std::result::Result<T, tokio_postgres::Error> {
    fn step(self, step: &'static str) -> Result<T, PostgresError> {
        self.map_err(|err| pg_error(step, err))
    }
}

/// The rows of a load: read once (`merge`), or as often as needed (`merge_staged`).
enum Rows<'a> {
    Once(BoxStream<'static, Result<RecordBatch>>),
    Reopenable(&'a OpenBatches<'a>),
}

/// What a merge applied.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    inserted: u64,
    updated: u64,
    deleted: u64,
}

/// How the direct path ended.
enum DirectOutcome {
    /// The rows are in the table (since `copied`), and what the table received matches the
    /// manifest.
    Copied {
        received: Fingerprint,
        copied: Instant,
    },
    /// Nothing of it is left (rolled back to its savepoint, or never tried): take the general
    /// path.
    NotTaken,
}

/// The direct path with the rows `open` reads: the copy, then the check of what the table
/// received against the manifest.
async fn direct(
    tx: &Transaction<'_>,
    request: &MergeRequest,
    layout: &TableLayout,
    statements: &MergeSql,
    open: &OpenBatches<'_>,
) -> Result<DirectOutcome> {
    if !copy_direct(tx, request, layout, statements, open()).await? {
        return Ok(DirectOutcome::NotTaken);
    }
    let copied = Instant::now();
    let received = check_received(
        tx,
        &statements.direct.fingerprint,
        "fingerprint the copied rows",
        request,
    )
    .await?;
    Ok(DirectOutcome::Copied { received, copied })
}

/// The direct path (see `sql::DirectSql`): a load into an empty table with no tombstones is
/// copied straight into it. What makes it equal to the general path there: an empty table
/// has nothing to update, delete or leave orphaned, and no tombstone can refuse a row, so
/// the general path would insert every de-duplicated live row. The copy refuses deletes, and
/// the table's unique index on the key refuses a repeated key (the one case de-duplication
/// would decide), so a completed copy holds exactly the load's rows, each live, and its
/// fingerprint over the table is the one the general path checks over the staging table.
///
/// `false` when the table is not eligible, or when the load carries a delete or repeats a
/// key: then the copy is rolled back to its savepoint and nothing is in the table.
async fn copy_direct(
    tx: &Transaction<'_>,
    request: &MergeRequest,
    layout: &TableLayout,
    statements: &MergeSql,
    batches: BoxStream<'static, Result<RecordBatch>>,
) -> Result<bool> {
    let sql = &statements.direct;
    let qualified_table: &(dyn ToSql + Sync) = &sql.table;
    let table: &(dyn ToSql + Sync) = &request.table;
    let key: &(dyn ToSql + Sync) = &request.key;
    let eligible: bool = tx
        .query_one(sql.eligible.as_str(), &[table, qualified_table, key])
        .await
        .step("see whether the table is empty")?
        .try_get(0)
        .step("see whether the table is empty")?;
    if !eligible {
        return Ok(false);
    }
    tx.batch_execute(&sql.savepoint)
        .await
        .step("set a savepoint before the copy into the empty table")?;
    let carried: Vec<types::Column> = layout.carried().cloned().collect();
    let batches = layout.sending_as_text(batches);
    let why =
        match copy::copy_into_empty(tx, &sql.copy, &carried, &request.load_id, batches).await? {
            Direct::Copied(rows) => {
                debug!(rows, "copied the load straight into the empty table");
                return Ok(true);
            }
            Direct::CarriesDeletes => "the load carries deletes",
            Direct::KeyRepeats => "a key repeats in the load",
        };
    tx.batch_execute(&sql.rollback)
        .await
        .step("roll back the copy into the empty table")?;
    info!(reason = why, "the empty table takes the general merge path");
    Ok(false)
}

/// Records the load in the ledger and commits: the merge and its ledger row commit together.
async fn record_and_commit(
    tx: Transaction<'_>,
    statements: &MergeSql,
    request: &MergeRequest,
    received: Fingerprint,
    Counts {
        inserted,
        updated,
        deleted,
    }: Counts,
    merging: Instant,
    mut timings: MergeTimings,
) -> Result<MergeOutcome> {
    let load_id: &(dyn ToSql + Sync) = &request.load_id;
    let rows = to_bigint(received.rows)?;
    let checksum = received.checksum.to_string();
    let (inserted_i, updated_i, deleted_i) = (
        to_bigint(inserted)?,
        to_bigint(updated)?,
        to_bigint(deleted)?,
    );
    let ledger_params: [&(dyn ToSql + Sync); 7] = [
        load_id,
        &request.stream,
        &rows,
        &checksum,
        &inserted_i,
        &updated_i,
        &deleted_i,
    ];
    if let Err(err) = tx
        .execute(statements.ledger_insert.as_str(), &ledger_params)
        .await
    {
        if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            return Err(ContractError::CommittedMeanwhile {
                load_id: request.load_id.clone(),
            }
            .into());
        }
        return Err(pg_error("record the load in the ledger", err).into());
    }
    timings.merge_ms = millis(merging.elapsed());
    let committing = Instant::now();
    tx.commit().await.step("commit the merge")?;
    timings.commit_ms = millis(committing.elapsed());

    info!(
        rows = received.rows,
        inserted, updated, deleted, "merged load"
    );
    Ok(MergeOutcome {
        skipped: false,
        inserted,
        updated,
        deleted,
        received,
        timings,
    })
}
