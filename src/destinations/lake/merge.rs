//! One load applied to a Delta table: the staged batches are fingerprinted, normalized and
//! spooled to local Parquet one at a time, then, scanned from the spool, de-duplicated by key
//! with DataFusion and applied as a MERGE whose clauses mirror the PostgreSQL destination's
//! delete, update and insert statements: by syncline's own rewrite of the files holding the
//! load's keys ([`super::rewrite`]), or by delta-rs's MERGE for a table the rewrite does not
//! handle; or appended, when the table is empty and the MERGE could only insert.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::logical_expr::{Expr, Operator, binary_expr, cast, col, lit};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::merge::{InsertBuilder, UpdateBuilder};
use deltalake::protocol::SaveMode;
use futures::StreamExt;
use futures::stream::BoxStream;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tracing::warn;

use crate::Result;
use crate::destinations::plan::{Compare, TOMBSTONE_COLUMN, Value};
use crate::load::DeleteMode;
use crate::reconcile::Fingerprint;
use crate::reconcile::batch_fingerprint;
use crate::schema::{DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, VERSION_COLUMN};

use super::LakeError;
use super::error::StepExt;
use super::sql;
use super::types::{LakeType, TableLayout};

/// The merge source and target aliases used in every clause.
const SOURCE_ALIAS: &str = "source";
const TARGET_ALIAS: &str = "target";

/// A load read from its stream, checked, and spooled to local Parquet for the merge to scan.
pub(crate) struct StagedLoad {
    /// The batches in the normalized source schema (see [`TableLayout::source_schema`]), in a
    /// local Parquet file the merge scans.
    spool: Spool,
    /// Count and checksum of every row read, computed on the batches as staged.
    pub received: Fingerprint,
    /// Whether any staged row is a delete (before de-duplication).
    pub any_deleted: bool,
}

/// Rows per row group of the spool: what its writer buffers, and what a scan of it reads at once.
pub(super) const SPOOL_ROW_GROUP_ROWS: usize = 64 * 1024;

/// Memory the check for repeated keys may use before its aggregation spills to disk. A
/// million-row load's check measured no slower with it than with twice as much,
/// and it runs at a load's end, on top of what the writers leave behind.
pub(crate) const REPEATED_KEYS_MEMORY: usize = 32 * 1024 * 1024;

/// Memory the de-duplication of a load with repeated keys may use before its sort spills to
/// disk (under `TMPDIR`).
pub(crate) const DEDUP_MEMORY: usize = 64 * 1024 * 1024;

impl StagedLoad {
    /// Reads the load from its stream batch by batch, fingerprinting each batch as staged,
    /// casting it to the source schema (millisecond timestamps become Delta's microseconds) and
    /// writing it to a local Parquet spool.
    ///
    /// Memory: one batch and one row group of the spool at a time, whatever the load's size. The
    /// spool exists because the merge reads its source more than once (delta-rs scans it for the
    /// keys' range before the join; tombstones and soft-delete counts scan it again) and a stream
    /// can be read only once; the staged files themselves are not used because the rows merged
    /// must be the rows fingerprinted here, which the stream hands over.
    pub(crate) async fn spool(
        layout: &TableLayout,
        mut batches: BoxStream<'static, Result<RecordBatch>>,
    ) -> Result<StagedLoad> {
        let schema = layout.source_schema();
        let spool = Spool::create()?;
        let path = spool.file();
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|source| LakeError::Spool {
                step: "create the spool file",
                dir: spool.dir.clone(),
                source,
            })?;
        let mut writer =
            AsyncArrowWriter::try_new(file, Arc::clone(&schema), Some(spool_properties()))
                .step("spool the load")?;
        let mut received = Fingerprint::default();
        let mut any_deleted = false;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            received.merge(batch_fingerprint(&batch, &layout.key)?);
            any_deleted |= batch
                .column_by_name(DELETED_COLUMN)
                .and_then(|column| column.as_boolean_opt())
                .is_some_and(|deleted| deleted.true_count() > 0);
            if batch.num_rows() > 0 {
                writer
                    .write(&normalize(&batch, &schema)?)
                    .await
                    .step("spool the load")?;
            }
        }
        writer.close().await.step("spool the load")?;
        Ok(StagedLoad {
            spool,
            received,
            any_deleted,
        })
    }

    /// Registers the spooled rows in `ctx` as [`sql::STAGED_TABLE`], a scan of the spool file.
    async fn register(&self, ctx: &SessionContext, schema: &SchemaRef) -> Result<()> {
        self.register_file(ctx, sql::STAGED_TABLE, &self.spool.file(), schema)
            .await
    }

    /// Registers the spool's file at `path` in `ctx` as `name`, read as `schema`.
    async fn register_file(
        &self,
        ctx: &SessionContext,
        name: &str,
        path: &std::path::Path,
        schema: &SchemaRef,
    ) -> Result<()> {
        let path = path.to_str().ok_or_else(|| LakeError::Spool {
            step: "name the spool file",
            dir: self.spool.dir.clone(),
            source: std::io::Error::other("the path is not UTF-8"),
        })?;
        ctx.register_parquet(name, path, ParquetReadOptions::default().schema(schema))
            .await
            .step("register the load")?;
        Ok(())
    }

    /// The load with one row per key ([`sql::dedup`]), registered in `ctx` as
    /// [`sql::DEDUPLICATED_TABLE`]: written to a second file of the spool by a session whose
    /// sort spills to disk past [`DEDUP_MEMORY`], so de-duplicating holds no more than that at
    /// any load size (a sort in the merge's own session would hold the whole load). When that
    /// session cannot finish (its spill space ran out, say), the load is de-duplicated in
    /// memory as before, inside the merge.
    async fn deduplicate(&self, ctx: &SessionContext, layout: &TableLayout) -> Result<DataFrame> {
        match self.deduplicate_to_spool(layout).await {
            Ok((path, schema)) => {
                self.register_file(ctx, sql::DEDUPLICATED_TABLE, &path, &schema)
                    .await?;
                Ok(ctx
                    .table(sql::DEDUPLICATED_TABLE)
                    .await
                    .step("read the de-duplicated load")?)
            }
            Err(err) => {
                warn!(error = %err.report(), "could not de-duplicate the load within its memory; de-duplicating in memory");
                Ok(ctx
                    .sql(&sql::dedup(layout))
                    .await
                    .step("de-duplicate the load")?)
            }
        }
    }

    async fn deduplicate_to_spool(&self, layout: &TableLayout) -> Result<(PathBuf, SchemaRef)> {
        let ctx =
            crate::sql::bounded_session(DEDUP_MEMORY).step("limit the de-duplication's memory")?;
        self.register(&ctx, &layout.source_schema()).await?;
        let deduplicated = ctx
            .sql(&sql::dedup(layout))
            .await
            .step("de-duplicate the load")?;
        let schema: SchemaRef = Arc::new(deduplicated.schema().as_arrow().clone());
        let mut rows = deduplicated
            .execute_stream()
            .await
            .step("de-duplicate the load")?;
        let path = self.spool.dir.join("deduplicated.parquet");
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|source| LakeError::Spool {
                step: "create the de-duplicated spool file",
                dir: self.spool.dir.clone(),
                source,
            })?;
        let mut writer =
            AsyncArrowWriter::try_new(file, Arc::clone(&schema), Some(spool_properties()))
                .step("spool the de-duplicated load")?;
        while let Some(batch) = rows.next().await {
            let batch = batch.step("de-duplicate the load")?;
            writer
                .write(&batch)
                .await
                .step("spool the de-duplicated load")?;
        }
        writer.close().await.step("spool the de-duplicated load")?;
        Ok((path, schema))
    }

    /// Whether some key occurs more than once in the load. Its aggregation spills to disk past
    /// [`REPEATED_KEYS_MEMORY`], so the check holds no more than that, at any load size.
    async fn repeats_keys(&self, layout: &TableLayout) -> Result<bool> {
        let ctx = crate::sql::bounded_session(REPEATED_KEYS_MEMORY)
            .step("limit the key check's memory")?;
        self.register(&ctx, &layout.source_schema()).await?;
        let repeated = ctx
            .sql(&sql::repeated_keys(layout))
            .await
            .step("look for repeated keys")?
            .collect()
            .await
            .step("look for repeated keys")?;
        Ok(repeated.iter().any(|batch| batch.num_rows() > 0))
    }
}

/// Parquet settings of the spool's files. The spool lives for one merge on local disk: the
/// cheapest codec that still keeps its size near the staged files' (see
/// `staging.compression`), and row groups of [`SPOOL_ROW_GROUP_ROWS`].
pub(super) fn spool_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(SPOOL_ROW_GROUP_ROWS))
        .build()
}

/// A folder under the system's temporary folder (`TMPDIR`) holding one load's normalized rows
/// for the length of its merge; removed when dropped.
pub(super) struct Spool {
    pub(super) dir: PathBuf,
}

impl Spool {
    pub(super) fn create() -> Result<Spool> {
        let dir = std::env::temp_dir().join(format!("syncline-lake-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|source| LakeError::Spool {
            step: "create the spool folder",
            dir: dir.clone(),
            source,
        })?;
        Ok(Spool { dir })
    }

    pub(super) fn file(&self) -> PathBuf {
        self.dir.join("load.parquet")
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Best effort: a leftover folder in the temporary folder is harmless.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The batch with exactly the columns of `schema`, in its order and types.
pub(crate) fn normalize(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if let Some(extra) = batch
        .schema()
        .fields()
        .iter()
        .find(|field| schema.field_with_name(field.name()).is_err())
    {
        return Err(LakeError::UnexpectedColumn {
            column: extra.name().clone(),
        }
        .into());
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column =
            batch
                .column_by_name(field.name())
                .ok_or_else(|| LakeError::MissingColumn {
                    column: field.name().clone(),
                })?;
        let column = cast_strictly(column, field.data_type())?;
        columns.push(column);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// `column` as `to`, failing on a value `to` cannot hold. Not arrow's default safe cast, which
/// turns such a value (a millisecond timestamp past what microseconds hold, say) into NULL
/// without a word: the value rule (`crate::values`) keeps such values out of the stage, and one
/// that got past it fails the merge instead of vanishing.
pub(crate) fn cast_strictly(column: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if column.data_type() == to {
        return Ok(Arc::clone(column));
    }
    let strict = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(arrow::compute::cast_with_options(column, to, &strict)
        .step("cast a staged column to the table's type")?)
}

/// What one MERGE changed, as the destination reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MergeCounts {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// The counts of two merges of disjoint rows (the passes of one merge) added up.
impl std::ops::AddAssign for MergeCounts {
    fn add_assign(&mut self, other: MergeCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
    }
}

/// The side table of a stream table's tombstones (see [`super::tombstones`]).
pub(crate) struct TombstoneTable {
    /// Its handle, not loaded (it may not exist yet).
    pub unloaded: DeltaTable,
    /// The table, when it exists.
    pub existing: Option<DeltaTable>,
}

/// Applies the load to `table` in one commit carrying `properties` (which carry the load's
/// application transaction): the rewrite of [`super::rewrite`], whose memory holds the load's
/// keys and not the table, or, for a table it does not handle, delta-rs's MERGE of
/// [`MergeClauses`]. Returns the table as of the merge commit; when nothing changed, no commit
/// is made and the returned table has the version it had before.
///
/// In hard-delete mode the load's deletes are first recorded in `tombstones`, a commit of its
/// own made before the table's (see [`super::tombstones`] for why that order is safe). Whatever
/// the mode, a live row whose key the table lacks is inserted only when newer than the key's
/// tombstone.
///
/// When that MERGE could only insert every row (an empty table without tombstones, a load
/// without deletes or repeated keys), the load is appended instead ([`write_new`]), with the
/// same commit properties: no join against a table that has no rows, and no de-duplication.
/// Otherwise syncline's rewrite merges it, in passes of about `keys_per_pass` of the load's
/// keys (`super::rewrite`).
pub(crate) async fn apply(
    table: DeltaTable,
    tombstones: TombstoneTable,
    layout: &TableLayout,
    load_id: &str,
    load: StagedLoad,
    properties: CommitProperties,
    keys_per_pass: u64,
) -> Result<(DeltaTable, MergeCounts)> {
    let ctx = merge_session()?;
    load.register(&ctx, &layout.source_schema()).await?;
    let repeats_keys = match load.repeats_keys(layout).await {
        Ok(repeats) => repeats,
        // The check only chooses the cheaper path; when it cannot run (it ran out of its
        // memory or spill space, say), the general MERGE with de-duplication is right whatever
        // the load holds.
        Err(err) => {
            warn!(error = %err.report(), "could not look for repeated keys; merging with de-duplication");
            true
        }
    };
    if !repeats_keys
        && !load.any_deleted
        && tombstones.existing.is_none()
        && is_empty(&table)?
        && let Some(written) = write_new(
            &table,
            &load,
            layout,
            load_id,
            load.received.rows,
            properties.clone(),
        )
        .await?
    {
        return Ok(written);
    }
    // Without a repeated key the load is its own de-duplication: no sort of the whole load.
    let deduplicated = if repeats_keys {
        load.deduplicate(&ctx, layout).await?
    } else {
        ctx.table(sql::STAGED_TABLE).await.step("read the load")?
    };

    let TombstoneTable { unloaded, existing } = tombstones;
    let mut tombstones = existing;
    if layout.deletes == DeleteMode::Hard && load.any_deleted {
        tombstones = Some(
            super::tombstones::record(
                unloaded.clone(),
                tombstones,
                layout,
                load_id,
                &ctx,
                deduplicated.clone(),
            )
            .await?,
        );
    }

    if let Some(rewritten) = super::rewrite::rewrite(
        &ctx,
        &table,
        tombstones.as_ref(),
        layout,
        load_id,
        deduplicated.clone(),
        load.received.rows,
        keys_per_pass,
    )
    .await?
    {
        // A complete full load's orphans become tombstones before the table's commit (the
        // order `super::tombstones` explains); the query runs only when there are some.
        if layout.deletes == DeleteMode::Hard && rewritten.orphans > 0 {
            let recorded = async {
                let orphans = find_orphans(&ctx, &table, layout, load_id, deduplicated).await?;
                super::tombstones::record(unloaded, tombstones, layout, load_id, &ctx, orphans)
                    .await
            };
            if let Err(err) = recorded.await {
                rewritten.abandon(&table).await;
                return Err(err);
            }
        }
        return rewritten.commit(&table, properties).await;
    }

    // A complete full load's orphans, found over the table before the merge (`plan::Orphans`):
    // counted for the outcome and, with hard deletes, recorded as tombstones before the merge
    // (the order `super::tombstones` explains).
    // The orphans stay a query, never collected: counted by a streaming aggregate and, when
    // recorded, streamed into the tombstones' merge (a full load can orphan most of a table).
    let orphans = match layout.orphans {
        Some(_) => Some(find_orphans(&ctx, &table, layout, load_id, deduplicated.clone()).await?),
        None => None,
    };
    let orphan_count = match &orphans {
        Some(orphans) => orphans
            .clone()
            .count()
            .await
            .step("count the rows the full load lacks")? as u64,
        None => 0,
    };
    if let Some(orphans) =
        orphans.filter(|_| layout.deletes == DeleteMode::Hard && orphan_count > 0)
    {
        tombstones = Some(
            super::tombstones::record(unloaded, tombstones, layout, load_id, &ctx, orphans).await?,
        );
    }
    let guarded = tombstones.is_some();
    let source = match tombstones {
        Some(tombstones) => {
            let provider = tombstones
                .table_provider()
                .await
                .step("read the tombstones")?;
            ctx.register_table(sql::TOMBSTONES_TABLE, provider)
                .step("register the tombstones")?;
            ctx.register_table(sql::DEDUP_TABLE, deduplicated.into_view())
                .step("register the de-duplicated load")?;
            ctx.sql(&sql::with_tombstones(layout))
                .await
                .step("join the tombstones")?
        }
        None => deduplicated,
    };

    // delta-rs reports soft deletes as updates, and rows inserted already deleted as inserts;
    // count both first, over the same snapshot and with the same predicates as the merge
    // clauses, so the outcome can tell them apart.
    let soft = if layout.deletes == DeleteMode::Soft && load.any_deleted {
        count_soft_deletes(&ctx, &table, layout, guarded, source.clone()).await?
    } else {
        SoftDeletes::default()
    };

    let clauses = MergeClauses::new(layout, load_id, guarded);
    let mut builder = table
        .merge(source, clauses.on)
        .with_source_alias(SOURCE_ALIAS)
        .with_target_alias(TARGET_ALIAS)
        .with_session_state(Arc::new(ctx.state()))
        .with_writer_properties(super::data_file_properties())
        .with_commit_properties(properties);
    for clause in clauses.matched {
        builder = match clause {
            Matched::Delete { predicate } => {
                builder.when_matched_delete(|delete| delete.predicate(predicate))
            }
            Matched::Update { predicate, set } => {
                builder.when_matched_update(|update| with_updates(update.predicate(predicate), set))
            }
        }
        .step("plan the merge")?;
    }
    for Insert { predicate, set } in clauses.insert {
        builder = builder
            .when_not_matched_insert(|insert| with_inserts(insert.predicate(predicate), set))
            .step("plan the merge")?;
    }
    builder = match clauses.orphans {
        None => builder,
        Some(Matched::Delete { predicate }) => builder
            .when_not_matched_by_source_delete(|delete| delete.predicate(predicate))
            .step("plan the merge")?,
        Some(Matched::Update { predicate, set }) => builder
            .when_not_matched_by_source_update(|update| {
                with_updates(update.predicate(predicate), set)
            })
            .step("plan the merge")?,
    };

    let (table, metrics) = builder
        .await
        .map_err(|err| super::commit_error("merge", load_id, err))?;

    let inserted = metrics.num_target_rows_inserted as u64;
    let updated = metrics.num_target_rows_updated as u64;
    let counts = match layout.deletes {
        // Orphans removed are among delta-rs' deletes; orphans marked deleted among its updates.
        DeleteMode::Hard => MergeCounts {
            inserted,
            updated,
            deleted: metrics.num_target_rows_deleted as u64,
        },
        DeleteMode::Soft => MergeCounts {
            inserted: inserted.saturating_sub(soft.remembered),
            updated: updated.saturating_sub(soft.marked + orphan_count),
            deleted: soft.marked + soft.remembered + orphan_count,
        },
    };
    Ok((table, counts))
}

/// The orphans of a complete full load: `(key, version, true)` for each live row of `table`
/// whose key `deduplicated` lacks and that a load started before this one wrote. A query over
/// the table's snapshot before the merge, so running it again (to count, then to record
/// tombstones) finds the same rows.
async fn find_orphans(
    ctx: &SessionContext,
    table: &DeltaTable,
    layout: &TableLayout,
    load_id: &str,
    deduplicated: DataFrame,
) -> Result<DataFrame> {
    let target = table
        .table_provider()
        .await
        .step("read the table before the merge")?;
    ctx.register_table(sql::ORPHAN_TARGET_TABLE, target)
        .step("register the table")?;
    ctx.register_table(sql::ORPHAN_LOAD_TABLE, deduplicated.into_view())
        .step("register the de-duplicated load")?;
    Ok(ctx
        .sql(&sql::orphans(layout, load_id))
        .await
        .step("find the rows the full load lacks")?)
}

/// The session a merge plans and runs in: delta-rs's defaults with a single partition.
///
/// With more partitions DataFusion puts a repartition by data file in front of delta-rs's merge
/// barrier, and that repartition only waits for its slowest consumer when every output partition
/// holds a batch: the rows of one data file all go to one partition, so with fewer files than
/// partitions (a table of one large file, the usual case) the scan of the table ran ahead of
/// the writer rewriting it and the repartition held every batch read, memory growing with the
/// table. The repartition could spill instead, but only under a memory pool, and the merge's
/// hash join (its build side is the smaller of the load and the table) cannot spill and then
/// fails. One partition has no repartition: the scan, the join and the barrier are pulled by
/// the writer, one batch at a time. Little is lost: a table of one file was scanned by one
/// partition anyway, and delta-rs's writer encodes on a task of its own.
fn merge_session() -> Result<SessionContext> {
    let overrides = std::collections::HashMap::from([(
        "datafusion.execution.target_partitions".to_owned(),
        "1".to_owned(),
    )]);
    Ok(
        deltalake::delta_datafusion::DeltaSessionContext::new_with_session_overrides(&overrides)
            .step("configure the merge's session")?
            .into_inner(),
    )
}

/// Whether the table holds no data file: created by this load, or never given a row.
pub(crate) fn is_empty(table: &DeltaTable) -> Result<bool> {
    let snapshot = table.snapshot().step("read the table snapshot")?;
    Ok(snapshot.log_data().num_files() == 0)
}

/// Appends the load to the empty `table` in one commit carrying `properties`, as the merge's
/// insert clause would have written each row, streaming the spool into delta-rs's writer (one
/// row group at a time) instead of joining it with a table that has no rows.
///
/// The caller has checked that this is the merge's outcome: the table and its tombstones are
/// empty, and the load has no delete and no repeated key, so every row is an insert. `None`
/// when the table has a column of a type syncline never writes; the general merge handles that.
async fn write_new(
    table: &DeltaTable,
    load: &StagedLoad,
    layout: &TableLayout,
    load_id: &str,
    rows: u64,
    properties: CommitProperties,
) -> Result<Option<(DeltaTable, MergeCounts)>> {
    let plan = layout.merge_plan();
    let snapshot = table.snapshot().step("read the table's schema")?;
    let mut projection = Vec::new();
    for field in snapshot.schema().fields() {
        let Some(ty) = LakeType::from_delta(field.data_type()) else {
            return Ok(None);
        };
        let value = match plan.inserted(field.name()) {
            Value::Incoming(column) => col(Column::new_unqualified(column)),
            Value::LoadId => lit(load_id.to_owned()),
            Value::Null => lit(ScalarValue::Null),
        };
        // DataFusion's cast is strict, like `normalize`: a value the column cannot hold fails.
        projection.push(cast(value, ty.arrow_type()).alias(field.name()));
    }
    // delta-rs's own session: a plain write has no repartition to bound (see `merge_session`)
    // and may encode on every core.
    let ctx = deltalake::delta_datafusion::create_session().into_inner();
    load.register(&ctx, &layout.source_schema()).await?;
    let source = ctx
        .table(sql::STAGED_TABLE)
        .await
        .step("read the load")?
        .select(projection)
        .step("shape the load as the table")?;
    let table = table
        .clone()
        .write(Vec::new())
        .with_input_plan(source.into_unoptimized_plan())
        .with_session_state(Arc::new(ctx.state()))
        .with_save_mode(SaveMode::Append)
        .with_writer_properties(super::data_file_properties())
        .with_commit_properties(properties)
        .await
        .map_err(|err| super::commit_error("write", load_id, err))?;
    let counts = MergeCounts {
        inserted: rows,
        ..MergeCounts::default()
    };
    Ok(Some((table, counts)))
}

/// What the soft-delete clauses of a merge will do.
#[derive(Debug, Clone, Copy, Default)]
struct SoftDeletes {
    /// Table rows marked deleted (delta-rs counts them as updates).
    marked: u64,
    /// Rows inserted already deleted, for keys the table lacks (counted as inserts).
    remembered: u64,
}

async fn count_soft_deletes(
    ctx: &SessionContext,
    table: &DeltaTable,
    layout: &TableLayout,
    guarded: bool,
    source: DataFrame,
) -> Result<SoftDeletes> {
    let target = table
        .table_provider()
        .await
        .step("read the table before the merge")?;
    ctx.register_table(sql::TARGET_TABLE, target)
        .step("register the table")?;
    ctx.register_table(sql::SOURCE_TABLE, source.into_view())
        .step("register the de-duplicated load")?;
    let batches = ctx
        .sql(&sql::soft_deletes(layout, guarded))
        .await
        .step("count soft deletes")?
        .collect()
        .await
        .step("count soft deletes")?;
    let count = |column: usize| -> Result<u64> {
        let count = batches
            .iter()
            .find(|batch| batch.num_rows() > 0)
            .and_then(|batch| batch.column(column).as_primitive_opt::<Int64Type>())
            .map(|counts| {
                if counts.is_null(0) {
                    0
                } else {
                    counts.value(0)
                }
            })
            .unwrap_or(0);
        Ok(u64::try_from(count).map_err(|_| LakeError::NegativeCount(count))?)
    };
    Ok(SoftDeletes {
        marked: count(0)?,
        remembered: count(1)?,
    })
}

fn with_updates(mut update: UpdateBuilder, set: Vec<(String, Expr)>) -> UpdateBuilder {
    for (column, value) in set {
        update = update.update(Column::new_unqualified(column), value);
    }
    update
}

fn with_inserts(mut insert: InsertBuilder, set: Vec<(String, Expr)>) -> InsertBuilder {
    for (column, value) in set {
        insert = insert.set(Column::new_unqualified(column), value);
    }
    insert
}

/// A clause for a target row whose key the load carries. Clauses are tried in order; the
/// first whose predicate holds applies, and a row no clause applies to is left as it is.
#[derive(Debug)]
pub(crate) enum Matched {
    Delete {
        predicate: Expr,
    },
    Update {
        predicate: Expr,
        set: Vec<(String, Expr)>,
    },
}

/// The clause for a source row whose key the table lacks.
#[derive(Debug)]
pub(crate) struct Insert {
    pub predicate: Expr,
    pub set: Vec<(String, Expr)>,
}

/// The MERGE of one load, as DataFusion expressions over `source.*` and `target.*`. Column
/// references are built as `Column` values, never parsed from text, so any column name is safe.
///
/// The clauses are the PostgreSQL destination's statements (`sql/postgres/delete_*.sql`,
/// `update.sql`, `insert.sql`) as one MERGE:
/// - hard deletes: a delete at least as new as the row removes it;
/// - soft deletes: it sets `_syncline_deleted_at` (to the delete's version), the version and
///   the load id, unless the row is already deleted at the same version;
/// - a live row at least as new as the target row rewrites it only if something differs (any
///   data column, the version, or a soft-deleted row coming back), so re-reading an overlap
///   merges nothing; in soft mode a live row never undeletes a delete of the same version;
/// - a live row whose key is new is inserted, unless the key has a tombstone at least as new
///   (`guarded`: the source rows then carry it as `_syncline_tombstone`);
/// - soft deletes: a delete for a key the table lacks inserts a row marked deleted (hard
///   deletes record a tombstone instead, before this merge).
#[derive(Debug)]
pub(crate) struct MergeClauses {
    pub on: Expr,
    pub matched: Vec<Matched>,
    /// Tried in order, like the matched clauses.
    pub insert: Vec<Insert>,
    /// A complete full load: what happens to a target row whose key the load lacks (the
    /// orphans of `plan::Orphans`).
    pub orphans: Option<Matched>,
}

impl MergeClauses {
    pub(crate) fn new(layout: &TableLayout, load_id: &str, guarded: bool) -> MergeClauses {
        let plan = layout.merge_plan();
        let value = |value: &Value<'_>| match value {
            Value::Incoming(column) => source(column),
            Value::LoadId => lit(load_id.to_owned()),
            // Typed as the column it clears, `_syncline_deleted_at`, so the merge need not cast.
            Value::Null => lit(ScalarValue::TimestampMicrosecond(None, Some("UTC".into()))),
        };
        let set = |set: &[(&str, Value<'_>)]| -> Vec<(String, Expr)> {
            set.iter()
                .map(|(column, v)| ((*column).to_owned(), value(v)))
                .collect()
        };
        let version_is_newer_or_same = source(VERSION_COLUMN).gt_eq(target(VERSION_COLUMN));
        let is_delete = source(DELETED_COLUMN);
        let is_live = Expr::Not(Box::new(source(DELETED_COLUMN)));
        let changed = any(plan
            .compared
            .iter()
            .map(|term| match term {
                Compare::Column(column) => distinct(target(column), source(column)),
                Compare::SoftDeleted => target(DELETED_AT_COLUMN).is_not_null(),
            })
            .collect());

        let matched = match plan.deletes {
            DeleteMode::Hard => vec![
                Matched::Delete {
                    predicate: is_delete.and(version_is_newer_or_same.clone()),
                },
                Matched::Update {
                    predicate: is_live.clone().and(version_is_newer_or_same).and(changed),
                    set: set(&plan.update),
                },
            ],
            DeleteMode::Soft => {
                // A row deleted at version v stays deleted against anything of version v.
                let not_deleted_at_same_version = target(DELETED_AT_COLUMN)
                    .is_null()
                    .or(source(VERSION_COLUMN).gt(target(VERSION_COLUMN)));
                vec![
                    Matched::Update {
                        predicate: is_delete
                            .and(version_is_newer_or_same.clone())
                            .and(not_deleted_at_same_version.clone()),
                        set: set(&plan.soft_delete),
                    },
                    Matched::Update {
                        predicate: is_live
                            .clone()
                            .and(version_is_newer_or_same)
                            .and(not_deleted_at_same_version)
                            .and(changed),
                        set: set(&plan.update),
                    },
                ]
            }
        };

        let newer_than_tombstone = if guarded {
            source(TOMBSTONE_COLUMN)
                .is_null()
                .or(source(VERSION_COLUMN).gt(source(TOMBSTONE_COLUMN)))
        } else {
            lit(true)
        };
        let mut insert = vec![Insert {
            predicate: is_live.and(newer_than_tombstone.clone()),
            set: set(&plan.insert),
        }];
        if let Some(insert_deleted) = &plan.insert_deleted {
            // A tombstone at least as new already holds the delete (a stream that moved from
            // hard to soft deletes).
            insert.push(Insert {
                predicate: source(DELETED_COLUMN).and(newer_than_tombstone),
                set: set(insert_deleted),
            });
        }

        // Written by a load that started before this one (load ids are UUIDv7).
        let older_load = || {
            target(LOAD_ID_COLUMN)
                .is_null()
                .or(target(LOAD_ID_COLUMN).lt(lit(load_id.to_owned())))
        };
        let orphans = plan.orphans.map(|orphans| match plan.deletes {
            DeleteMode::Hard => Matched::Delete {
                predicate: older_load(),
            },
            DeleteMode::Soft => Matched::Update {
                predicate: target(DELETED_AT_COLUMN).is_null().and(older_load()),
                set: vec![
                    (
                        DELETED_AT_COLUMN.to_owned(),
                        lit(ScalarValue::TimestampMicrosecond(
                            Some(orphans.as_of.timestamp_micros()),
                            Some("UTC".into()),
                        )),
                    ),
                    (LOAD_ID_COLUMN.to_owned(), lit(load_id.to_owned())),
                ],
            },
        });

        MergeClauses {
            on: target(plan.key).eq(source(plan.key)),
            matched,
            insert,
            orphans,
        }
    }
}

fn source(name: &str) -> Expr {
    Expr::Column(Column::new(Some(TableReference::bare(SOURCE_ALIAS)), name))
}

fn target(name: &str) -> Expr {
    Expr::Column(Column::new(Some(TableReference::bare(TARGET_ALIAS)), name))
}

fn distinct(left: Expr, right: Expr) -> Expr {
    binary_expr(left, Operator::IsDistinctFrom, right)
}

fn any(conditions: Vec<Expr>) -> Expr {
    conditions
        .into_iter()
        .reduce(Expr::or)
        .unwrap_or_else(|| lit(false))
}

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::destinations::lake::types::table_layout;
    use crate::destinations::layout::test_request;
    use crate::schema::{LOAD_ID_COLUMN, deleted_field, version_field};

    fn layout(deletes: DeleteMode) -> TableLayout {
        let fields = batch()
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        table_layout(&test_request("people", "id", deletes, fields)).unwrap()
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            version_field(),
            deleted_field(),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(TimestampMillisecondArray::from(vec![1_000, 2_000]).with_timezone("UTC")),
                Arc::new(BooleanArray::from(vec![false, true])),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn spool_fingerprints_and_normalizes() {
        let layout = layout(DeleteMode::Hard);
        let stream = futures::stream::iter(vec![Ok(batch())]).boxed();
        let load = StagedLoad::spool(&layout, stream).await.unwrap();
        assert_eq!(load.received, batch_fingerprint(&batch(), "id").unwrap());
        assert!(load.any_deleted);
        assert!(!load.repeats_keys(&layout).await.unwrap());
        let ctx = SessionContext::new();
        load.register(&ctx, &layout.source_schema()).await.unwrap();
        let spooled = ctx
            .table(sql::STAGED_TABLE)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let versions = spooled[0].column_by_name(VERSION_COLUMN).unwrap();
        assert_eq!(
            versions.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            versions
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(1),
            2_000_000
        );
    }

    /// A millisecond timestamp past what microseconds hold fails the merge: the default
    /// (safe) cast would have staged NULL in its place.
    #[tokio::test]
    async fn a_timestamp_the_lake_cannot_hold_is_an_error_never_a_null() {
        let layout = layout(DeleteMode::Hard);
        let original = batch();
        let mut columns = original.columns().to_vec();
        columns[2] = Arc::new(
            TimestampMillisecondArray::from(vec![1_000, 9_300_000_000_000_000])
                .with_timezone("UTC"),
        );
        let overflowing = RecordBatch::try_new(original.schema(), columns).unwrap();
        let stream = futures::stream::iter(vec![Ok(overflowing)]).boxed();
        let err = StagedLoad::spool(&layout, stream)
            .await
            .err()
            .expect("the cast fails");
        assert_eq!(err.kind(), crate::error::ErrorKind::Destination, "{err}");
    }

    #[test]
    fn clauses_follow_the_delete_mode() {
        let hard = MergeClauses::new(&layout(DeleteMode::Hard), "load-1", true);
        assert!(matches!(
            hard.matched.as_slice(),
            [Matched::Delete { .. }, Matched::Update { .. }]
        ));
        assert_eq!(hard.insert.len(), 1);
        let soft = MergeClauses::new(&layout(DeleteMode::Soft), "load-1", false);
        match soft.matched.as_slice() {
            [
                Matched::Update {
                    set: delete_set, ..
                },
                Matched::Update { set: live_set, .. },
            ] => {
                let names = |set: &[(String, Expr)]| -> Vec<String> {
                    set.iter().map(|(name, _)| name.clone()).collect()
                };
                assert_eq!(
                    names(delete_set.as_slice()),
                    [DELETED_AT_COLUMN, VERSION_COLUMN, LOAD_ID_COLUMN]
                );
                assert_eq!(
                    names(live_set.as_slice()),
                    ["name", VERSION_COLUMN, LOAD_ID_COLUMN, DELETED_AT_COLUMN]
                );
            }
            other => panic!("unexpected soft clauses {other:?}"),
        }
        let inserted: Vec<Vec<&str>> = soft
            .insert
            .iter()
            .map(|insert| insert.set.iter().map(|(n, _)| n.as_str()).collect())
            .collect();
        // Live rows, then deletes of keys the table lacks as rows marked deleted.
        assert_eq!(
            inserted,
            [
                vec!["id", "name", VERSION_COLUMN, LOAD_ID_COLUMN],
                vec!["id", VERSION_COLUMN, DELETED_AT_COLUMN, LOAD_ID_COLUMN],
            ]
        );
    }
}
