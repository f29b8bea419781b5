//! The lake destination: one Delta Lake table per stream under a root URL (`file://` or
//! `s3://`), merged with delta-rs and readable by DataFusion, DuckDB, Spark and others.
//!
//! Exactly-once comes from the Delta log itself, not from a ledger table. Every load commits
//! with an application transaction (`txn` action) whose app id is `syncline:{load_id}`, in the
//! same commit as the merge's data files, so a load is either entirely in the table's history
//! or not at all:
//! - a load whose app id is already in the table's snapshot is skipped ([`Destination::merge`]
//!   returns `skipped`) and [`Destination::is_committed`] reports it;
//! - two runs racing on one load id cannot both commit: delta-rs' conflict checker rejects the
//!   second commit because a winning commit carries the same app id;
//! - a load that changes nothing (every row already there) still commits an empty `MERGE`
//!   carrying its app id, so a replay is recognised.
//!
//! The log keeps one `txn` entry per load (checkpoints carry them forward); that is the price
//! of a replay check that needs no other storage. Do not set the table property
//! `delta.setTransactionRetentionDuration`: expired entries would make old loads replayable
//! (harmless for the rows, since older never overwrites newer, but no longer skipped).
//!
//! The commit's `commitInfo` also carries `syncline_load_id`, `syncline_stream`, `syncline_rows`
//! and `syncline_checksum`; [`Destination::last_load`] reads the newest one from the history.
//! History is subject to Delta's log retention (30 days by default): a stream idle for longer
//! reports no last load, while the replay check (which reads the snapshot, checkpoints
//! included) keeps working.
//!
//! A merge: the load's batches are read one at a time while their count and checksum are
//! computed, cast to the table's types and spooled to a local Parquet file (see
//! `merge::StagedLoad::spool`); a mismatch with the manifest stops before anything is written.
//! A full load is taken while it is staged (`copy_while_staging`), on another core than the
//! extraction: into an empty table it is written straight into data files and added in one
//! commit once the load is staged and pending (see `append`); into a table with rows it is
//! spooled, and the merge waits for the staged load likewise. The merge then scans the spool as
//! a stream. A load into an empty table (no data files, no
//! tombstone table) with no delete and no repeated key is a plain append of new files, its
//! memory bounded by row groups. Otherwise DataFusion keeps the newest row per key (a delete
//! wins a tie; skipped when no key repeats) and the load is applied with the same rules as the
//! PostgreSQL destination (see `merge::MergeClauses`) by rewriting the data files that hold its
//! keys, in one commit (see `rewrite`): memory holds an index of the load's keys and batches,
//! not the load's rows nor the table (delta-rs's MERGE, still used for a table with a column
//! of a type syncline never writes, holds one side of its join in memory). Hard deletes'
//! tombstones live in a side Delta table, recorded in a commit of its own just before the
//! table's (see `tombstones` for why that order survives a crash between the two).
//!
//! Tables are named after their stream (`{root}/{stream}`): [`Destination::is_committed`] and
//! [`Destination::last_load`] only get the stream name. Staged millisecond timestamps are
//! stored as Delta `timestamp` (microseconds, UTC). Column names that Delta cannot hold without
//! column mapping (spaces, `,;{}()=`, dots) are schema drift.

mod append;
pub mod config;
mod error;
mod merge;
mod overwrite;
mod rewrite;
mod s3;
mod sql;
mod tombstones;
pub(super) mod types;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use deltalake::kernel::transaction::{
    CommitBuilder, CommitConflictError, CommitProperties, TableReference, TransactionError,
};
use deltalake::kernel::{Action, CommitInfo, DataType as DeltaType, StructField, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde_json::Value;
use tracing::{debug, info, instrument};
use url::Url;

use crate::Result;
use crate::config::{Config, LakeConfig};
use crate::destinations::layout::ColumnType;
use crate::destinations::{
    ContractError, Destination, LedgerEntry, MergeOutcome, MergeRequest, MergeTimings,
};
use crate::load::{DeleteMode, SchemaChange};
use crate::reconcile::Fingerprint;
use crate::reconcile::drift::{self, Compare, ListRequest, Listed, Listing};
use crate::reconcile::report::millis;
use crate::schema::{DELETED_AT_COLUMN, VERSION_COLUMN};

pub use error::LakeError;

/// Names of the key and version in a reconcile listing; reserved names, so no data column
/// hashed beside them can clash.
const LIST_KEY: &str = "_syncline_list_key";
const LIST_VERSION: &str = "_syncline_list_version";
/// Memory a reconcile listing's sort may use before it spills to disk.
const LIST_SORT_MEMORY: usize = 128 * 1024 * 1024;
use config::DEFAULT_MERGE_KEYS_PER_PASS;
use error::{StepExt, StepFailure};
use merge::StagedLoad;
use types::{TableLayout, table_layout, table_name_problem};

/// Rows per row group of the Delta data files syncline writes (merges, appends, tombstones,
/// model overwrites), and the encoded bytes past which a row group closes earlier (wide rows).
///
/// delta-rs's writer keeps the row group it is filling in memory and uploads it when it
/// closes; with parquet's default (1,048,576 rows) that row group was most of a data file, so
/// a load's memory grew with its size up to a million rows. Bounded here, a writer holds one
/// row group of at most this size, plus its upload's parts, whatever the load's size. Files
/// still roll at the table's target file size (`delta.targetFileSize`, 100 MiB by default):
/// small row groups, not small files.
const DATA_FILE_ROW_GROUP_ROWS: usize = 64 * 1024;
const DATA_FILE_ROW_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// Parquet settings of the Delta data files: delta-rs's own (Snappy) with bounded row groups.
fn data_file_properties() -> parquet::file::properties::WriterProperties {
    parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(DATA_FILE_ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(DATA_FILE_ROW_GROUP_BYTES))
        .build()
}

/// Commit metadata keys (in each load's `commitInfo`).
const META_LOAD_ID: &str = "syncline_load_id";
const META_STREAM: &str = "syncline_stream";
const META_ROWS: &str = "syncline_rows";
const META_CHECKSUM: &str = "syncline_checksum";

/// The application transaction id recording one load in a table's log.
fn app_id(load_id: &str) -> String {
    format!("syncline:{load_id}")
}

/// Delta Lake tables under one root URL, one table per stream.
///
/// Holds no connection: every operation opens the table's latest snapshot, so several
/// processes may use one lake (each stream is written by one run at a time, under its lock).
pub struct LakeDestination {
    root: Url,
    /// Passed to deltalake and object_store; may hold secrets, so never logged or shown.
    storage_options: HashMap<String, String>,
    /// How many of a load's keys one pass of a merge indexes (`destination.merge_keys_per_pass`).
    merge_keys_per_pass: u64,
}

impl std::fmt::Debug for LakeDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeDestination")
            .field("root", &redacted(&self.root))
            .finish_non_exhaustive()
    }
}

impl LakeDestination {
    /// The lake the config names, on the staging store's S3 settings when it is on S3.
    pub fn from_config(config: &Config, lake: &LakeConfig) -> Result<Self> {
        let url = config.lake_url(lake);
        let options = match &config.staging.s3 {
            Some(s3) if url.starts_with("s3") => s3.options().into_iter().collect(),
            _ => HashMap::new(),
        };
        Ok(LakeDestination::new(&url, options)?
            .with_merge_keys_per_pass(lake.merge_keys_per_pass()))
    }

    /// Merges a load of more than `keys` keys into a table with rows in passes of about `keys`
    /// keys each: the merge's memory holds an index of one pass's keys (see
    /// `destination.merge_keys_per_pass`).
    pub fn with_merge_keys_per_pass(mut self, keys: u64) -> Self {
        self.merge_keys_per_pass = keys.max(1);
        self
    }

    /// Tables live at `{root}/{table}`; root is a `file:///abs/path` or `s3://bucket/prefix`
    /// URL. `storage_options` are passed to deltalake and object_store for s3 (keys like
    /// `aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_secret_access_key`,
    /// `aws_allow_http`).
    ///
    /// A `file://` root is created when missing. Any other scheme, or a root that is not a
    /// URL, is a configuration error. Nothing is contacted: [`Destination::check`] does that.
    pub fn new(root: &str, storage_options: HashMap<String, String>) -> Result<Self> {
        let url = Url::parse(root).map_err(LakeError::RootNotAUrl)?;
        match url.scheme() {
            "file" => {
                let dir = local_dir(&url)?;
                std::fs::create_dir_all(&dir)
                    .map_err(|source| LakeError::RootNotCreatable { dir, source })?;
            }
            "s3" | "s3a" => s3::register_handlers(),
            other => return Err(LakeError::UnsupportedScheme(other.to_owned()).into()),
        }
        Ok(LakeDestination {
            root: url,
            storage_options,
            merge_keys_per_pass: DEFAULT_MERGE_KEYS_PER_PASS,
        })
    }

    /// Opens the Delta table of `table` (for `syncline query` and tests); `Ok(None)` when it
    /// does not exist yet. An invalid table name is a configuration error.
    pub async fn open_table(&self, table: &str) -> Result<Option<DeltaTable>> {
        open_existing(self.unloaded_table(table)?).await
    }

    /// The side table of `table`'s hard-delete tombstones (key, `_syncline_version`, the
    /// `_syncline_load_id` that recorded it), for models that must see deletes; `Ok(None)`
    /// when no load of `table` carried a delete.
    pub async fn open_tombstones(&self, table: &str) -> Result<Option<DeltaTable>> {
        Ok(self.tombstone_table(table).await?.existing)
    }

    /// The side table of `table`'s tombstones (see `tombstones`), opened when it exists.
    async fn tombstone_table(&self, table: &str) -> Result<merge::TombstoneTable> {
        let mut url = self.root.clone();
        let path = format!(
            "{}/{}/{}",
            url.path().trim_end_matches('/'),
            tombstones::TOMBSTONES_FOLDER,
            table
        );
        url.set_path(&path);
        let unloaded = DeltaTableBuilder::from_url(url)
            .and_then(|builder| {
                builder
                    .with_storage_options(self.storage_options.clone())
                    .build()
            })
            .step("locate the tombstone table")?;
        let existing = open_existing(unloaded.clone()).await?;
        Ok(merge::TombstoneTable { unloaded, existing })
    }

    /// The URL of `table`'s folder (`{root}/{table}`).
    pub fn table_url(&self, table: &str) -> String {
        self.table_location(table).to_string()
    }

    fn table_location(&self, table: &str) -> Url {
        let mut url = self.root.clone();
        let path = format!("{}/{}", url.path().trim_end_matches('/'), table);
        url.set_path(&path);
        url
    }

    /// The table's handle, not loaded (so it works before the table exists).
    fn unloaded_table(&self, table: &str) -> Result<DeltaTable, LakeError> {
        if let Some(problem) = table_name_problem(table) {
            return Err(LakeError::BadTableName {
                table: table.to_owned(),
                problem,
            });
        }
        DeltaTableBuilder::from_url(self.table_location(table))
            .and_then(|builder| {
                builder
                    .with_storage_options(self.storage_options.clone())
                    .build()
            })
            .step("locate the table")
    }

    /// The table, which must exist (`ensure_table` creates it).
    async fn existing_table(&self, table: &str) -> Result<DeltaTable> {
        Ok(self
            .open_table(table)
            .await?
            .ok_or_else(|| LakeError::NoTable {
                table: table.to_owned(),
            })?)
    }
}

impl LakeDestination {
    /// The rest of a merge once the load is spooled: the check of what was received against
    /// the manifest, then one commit (see the module docs). `load_ms` is the spool's time;
    /// `spooled_while_staging` says it overlapped the extraction.
    async fn apply_spooled(
        &self,
        request: &MergeRequest,
        layout: &TableLayout,
        table: DeltaTable,
        load: StagedLoad,
        load_ms: u64,
        spooled_while_staging: bool,
    ) -> Result<MergeOutcome> {
        let merging = Instant::now();
        let received = load.received;
        if received != request.staged {
            return Err(ContractError::ReceivedDiffers {
                destination: "the lake destination",
                load_id: request.load_id.clone(),
                received,
                staged: request.staged,
            }
            .into());
        }
        debug!(rows = received.rows, "read the staged rows");

        let properties = commit_properties(request, received);
        let version_before = table.version();
        let (table, counts) = if received.rows == 0 {
            (table, merge::MergeCounts::default())
        } else {
            let tombstones = self.tombstone_table(&layout.table).await?;
            merge::apply(
                table,
                tombstones,
                layout,
                &request.load_id,
                load,
                properties.clone(),
                self.merge_keys_per_pass,
            )
            .await?
        };
        if table.version() == version_before {
            // delta-rs makes no commit when a merge changes nothing; the load id must still
            // reach the log, or a replay could not tell this load was applied.
            commit_load_only(&table, &request.load_id, properties).await?;
            debug!("nothing changed; recorded the load with an empty commit");
        }
        // delta-rs commits inside its merge: the commit is counted with the merge.
        let timings = MergeTimings {
            load_ms,
            merge_ms: millis(merging.elapsed()),
            commit_ms: 0,
            copied_while_staging: spooled_while_staging,
            ..MergeTimings::default()
        };

        info!(
            rows = received.rows,
            inserted = counts.inserted,
            updated = counts.updated,
            deleted = counts.deleted,
            "merged load"
        );
        Ok(MergeOutcome {
            skipped: false,
            inserted: counts.inserted,
            updated: counts.updated,
            deleted: counts.deleted,
            received,
            timings,
        })
    }
}

impl LakeDestination {
    /// The object store of the root URL, and the root's path in it.
    fn root_store(&self) -> Result<(Box<dyn object_store::ObjectStore>, object_store::path::Path)> {
        let options = self
            .storage_options
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()));
        Ok(object_store::parse_url_opts(&self.root, options).step("open the root")?)
    }

    /// A full load into an empty table: its data files are written as it is staged (see
    /// `append`) and added in one commit once it is staged, as the merge would have inserted
    /// them. A delete or a repeated key sends it back to the ordinary merge (`Ok(None)`).
    async fn append_while_staging(
        &self,
        table: DeltaTable,
        append: append::Append,
        batches: BoxStream<'static, Result<RecordBatch>>,
        staged: tokio::sync::oneshot::Receiver<MergeRequest>,
    ) -> Result<Option<MergeOutcome>> {
        let writing = Instant::now();
        let appended = append.write(batches).await?;
        let load_ms = millis(writing.elapsed());
        let Ok(request) = staged.await else {
            appended.abandon(&table).await;
            return Ok(None);
        };
        let merging = Instant::now();
        let received = appended.received;
        if received != request.staged {
            appended.abandon(&table).await;
            return Err(ContractError::ReceivedDiffers {
                destination: "the lake destination",
                load_id: request.load_id.clone(),
                received,
                staged: request.staged,
            }
            .into());
        }
        let layout = layout_into(&request, &table)?;
        let (store, _) = self.root_store()?;
        if appended.any_deleted
            || appended
                .repeats_keys(&table, std::sync::Arc::from(store), &layout)
                .await?
        {
            debug!("the load carries a delete or repeats a key; merging it instead");
            appended.abandon(&table).await;
            return Ok(None);
        }
        appended
            .commit(
                &table,
                &request.load_id,
                commit_properties(&request, received),
            )
            .await?;
        info!(
            rows = received.rows,
            inserted = received.rows,
            "appended load"
        );
        Ok(Some(MergeOutcome {
            skipped: false,
            inserted: received.rows,
            updated: 0,
            deleted: 0,
            received,
            timings: MergeTimings {
                load_ms,
                merge_ms: millis(merging.elapsed()),
                commit_ms: 0,
                copied_while_staging: true,
                direct_copy: true,
                ..MergeTimings::default()
            },
        }))
    }
}

#[async_trait]
impl Destination for LakeDestination {
    /// Creates a `file://` root when missing, then writes and deletes a probe object under the
    /// root, so a root that is unreachable or read-only fails here rather than mid-merge.
    async fn check(&self) -> Result<()> {
        if self.root.scheme() == "file" {
            let dir = local_dir(&self.root)?;
            if let Err(source) = tokio::fs::create_dir_all(&dir).await {
                return Err(LakeError::CreateRoot { dir, source }.into());
            }
        }
        let (store, root) = self.root_store()?;
        let probe = root
            .join("_syncline_check")
            .join(uuid::Uuid::new_v4().to_string());
        store
            .put(&probe, "ok".into())
            .await
            .step("write to the root")?;
        store.delete(&probe).await.step("delete the probe object")?;
        Ok(())
    }

    /// Creates the table when missing; otherwise adds the columns it lacks (one commit). A
    /// column whose type differs incompatibly is schema drift and changes nothing.
    #[instrument(skip_all, fields(stream = %request.stream, table = %request.table))]
    async fn ensure_table(&self, request: &MergeRequest) -> Result<SchemaChange> {
        let layout = table_layout(request)?;
        let wanted = layout.target_columns();
        let Some(table) = self.open_table(&layout.table).await? else {
            let fields: Vec<StructField> = wanted.iter().map(|c| c.struct_field()).collect();
            self.unloaded_table(&layout.table)?
                .create()
                .with_columns(fields)
                .with_save_mode(SaveMode::ErrorIfExists)
                .await
                .step("create the table")?;
            info!(columns = wanted.len(), "created table");
            return Ok(SchemaChange {
                created_table: true,
                added_columns: Vec::new(),
            });
        };

        let existing = existing_columns(&table)?;
        // Delta types never widen (see `LakeType::fit`): a table only ever gains columns.
        let additions = layout.alterations(&existing)?.add;
        if additions.is_empty() {
            return Ok(SchemaChange::default());
        }
        let fields: Vec<StructField> = additions.iter().map(|c| c.struct_field()).collect();
        table
            .add_columns()
            .with_fields(fields)
            .await
            .step("add columns")?;
        for column in &additions {
            info!(column = %column.name, delta_type = %column.ty.name(), "added column");
        }
        Ok(SchemaChange {
            created_table: false,
            added_columns: additions.into_iter().map(|c| c.name).collect(),
        })
    }

    /// Applies one load in one Delta commit (see the module docs).
    ///
    /// The count and checksum of the rows read from `batches` must equal `request.staged`;
    /// otherwise nothing is written and the error is [`ContractError::ReceivedDiffers`] (a reconciliation
    /// mismatch). A concurrent run
    /// committing the same load id first makes this merge fail without effect.
    #[instrument(skip_all, fields(stream = %request.stream, load_id = %request.load_id))]
    async fn merge(
        &self,
        request: &MergeRequest,
        batches: BoxStream<'static, Result<RecordBatch>>,
    ) -> Result<MergeOutcome> {
        let table = self.existing_table(&request.table).await?;
        let layout = layout_into(request, &table)?;
        if has_transaction(&table, &app_id(&request.load_id)).await? {
            info!("load already committed to the table; skipped");
            return Ok(MergeOutcome {
                skipped: true,
                ..MergeOutcome::default()
            });
        }

        let spooling = Instant::now();
        let load = StagedLoad::spool(&layout, layout.sending_as_text(batches)).await?;
        let load_ms = millis(spooling.elapsed());
        self.apply_spooled(request, &layout, table, load, load_ms, false)
            .await
    }

    fn copies_while_staging(&self) -> bool {
        true
    }

    /// A full load spooled as it is staged: the spool (fingerprint, normalization, local
    /// Parquet) runs on another core than the extraction and the stage's Parquet writer, and
    /// the Delta commit waits for the complete, pending load, as after `merge`'s own spool.
    /// Nothing reaches the table before that, so giving up (staging failed) writes nothing.
    #[instrument(skip_all, fields(stream = %request.stream, load_id = %request.load_id))]
    async fn copy_while_staging(
        &self,
        request: &MergeRequest,
        batches: BoxStream<'static, Result<RecordBatch>>,
        staged: tokio::sync::oneshot::Receiver<MergeRequest>,
        _idle_limit: std::time::Duration,
    ) -> Result<Option<MergeOutcome>> {
        let table = self.existing_table(&request.table).await?;
        let layout = layout_into(request, &table)?;
        let batches = layout.sending_as_text(batches);
        let tombstones = self.tombstone_table(&layout.table).await?;
        if tombstones.existing.is_none()
            && merge::is_empty(&table)?
            && let Some(append) = append::Append::new(&table, &layout, &request.load_id)?
        {
            return self
                .append_while_staging(table, append, batches, staged)
                .await;
        }
        let spooling = Instant::now();
        let load = StagedLoad::spool(&layout, batches).await?;
        let load_ms = millis(spooling.elapsed());
        let Ok(request) = staged.await else {
            return Ok(None);
        };
        // The staged request knows what the load covers (a complete full load's orphans).
        let table = self.existing_table(&request.table).await?;
        let layout = layout_into(&request, &table)?;
        let outcome = self
            .apply_spooled(&request, &layout, table, load, load_ms, true)
            .await?;
        Ok(Some(outcome))
    }

    /// Looks for the load's application transaction in the latest snapshot of the table
    /// named `stream`; `Ok(false)` when that table does not exist.
    async fn is_committed(&self, stream: &str, load_id: &str) -> Result<bool> {
        match self.open_table(stream).await? {
            Some(table) => has_transaction(&table, &app_id(load_id)).await,
            None => Ok(false),
        }
    }

    /// Scans the key, version and (soft mode) delete-time columns with DataFusion and
    /// fingerprints the live rows as the PostgreSQL destination does in SQL.
    async fn table_fingerprint(
        &self,
        table: &str,
        key: &str,
        deletes: DeleteMode,
    ) -> Result<Option<Fingerprint>> {
        let Some(delta) = self.open_table(table).await? else {
            return Ok(None);
        };
        let ctx = datafusion::prelude::SessionContext::new();
        delta
            .update_datafusion_session(&ctx.state())
            .step("register the table's store")?;
        let provider = delta
            .table_provider()
            .await
            .step("open the table for reading")?;
        let frame = ctx.read_table(provider).step("read the table")?;
        let live = match deletes {
            DeleteMode::Hard => frame,
            DeleteMode::Soft => frame
                .filter(
                    datafusion::prelude::col(datafusion::common::Column::new_unqualified(
                        DELETED_AT_COLUMN,
                    ))
                    .is_null(),
                )
                .step("filter deleted rows")?,
        };
        let projected = live
            .select(vec![
                datafusion::prelude::col(datafusion::common::Column::new_unqualified(key)),
                datafusion::prelude::cast(
                    datafusion::prelude::col(datafusion::common::Column::new_unqualified(
                        VERSION_COLUMN,
                    )),
                    arrow::datatypes::DataType::Timestamp(
                        arrow::datatypes::TimeUnit::Millisecond,
                        Some("UTC".into()),
                    ),
                )
                .alias(VERSION_COLUMN),
            ])
            .step("project the key and version")?;
        let mut batches = projected.execute_stream().await.step("scan the table")?;
        let mut fingerprint = Fingerprint::default();
        while let Some(batch) = batches.try_next().await.step("scan the table")? {
            let keys = batch.column(0);
            let versions = batch
                .column(1)
                .as_primitive_opt::<arrow::datatypes::TimestampMillisecondType>()
                .ok_or(LakeError::VersionNotATimestamp)?;
            for row in 0..batch.num_rows() {
                let key_text = arrow::util::display::array_value_to_string(keys, row)
                    .step("fingerprint the table")?;
                fingerprint.add(&key_text, versions.value(row), false);
            }
        }
        Ok(Some(fingerprint))
    }

    /// Key and version (µs) of the live rows, sorted by DataFusion (integers numerically,
    /// text by bytes); compared by content, the hashed columns too, hashed here from Arrow
    /// (`drift::arrow_row_hashes`), as the source hashes what it would stage.
    async fn list_keys(&self, request: &ListRequest) -> Result<Listing> {
        use datafusion::common::Column;
        use datafusion::prelude::{cast, col};
        let Some(delta) = self.open_table(&request.table).await? else {
            return Ok(futures::stream::empty().boxed());
        };
        // The sort spills to disk past this, so a listing never holds the table.
        let ctx = crate::sql::bounded_session(LIST_SORT_MEMORY).step("limit the sort's memory")?;
        delta
            .update_datafusion_session(&ctx.state())
            .step("register the table's store")?;
        let provider = delta
            .table_provider()
            .await
            .step("open the table for reading")?;
        let frame = ctx.read_table(provider).step("read the table")?;
        let live = match request.deletes {
            DeleteMode::Hard => frame,
            DeleteMode::Soft => frame
                .filter(col(Column::new_unqualified(DELETED_AT_COLUMN)).is_null())
                .step("filter deleted rows")?,
        };
        let key_type = if request.int_key {
            arrow::datatypes::DataType::Int64
        } else {
            arrow::datatypes::DataType::Utf8
        };
        let micros = arrow::datatypes::DataType::Timestamp(
            arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        );
        let mut projection = vec![
            cast(col(Column::new_unqualified(&request.key)), key_type).alias(LIST_KEY),
            cast(col(Column::new_unqualified(VERSION_COLUMN)), micros).alias(LIST_VERSION),
        ];
        let hashed = match &request.compare {
            Compare::Hash(columns) => {
                projection.extend(
                    columns
                        .iter()
                        .map(|(name, _)| col(Column::new_unqualified(name))),
                );
                Some(columns.clone())
            }
            Compare::Version => None,
        };
        let sorted = live
            .select(projection)
            .step("project the key and version")?
            .sort(vec![col(LIST_KEY).sort(true, false)])
            .step("sort by key")?;
        let batches = sorted.execute_stream().await.step("scan the table")?;
        Ok(batches
            .map(move |batch| {
                let batch = batch.step("scan the table")?;
                let versions = batch
                    .column(1)
                    .as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()
                    .ok_or(LakeError::VersionNotATimestamp)?;
                let keys = drift::arrow_keys(&batch, LIST_KEY)?;
                let hashes = match &hashed {
                    Some(columns) => drift::arrow_row_hashes(&batch, columns)?
                        .into_iter()
                        .map(Some)
                        .collect(),
                    None => vec![None; batch.num_rows()],
                };
                Ok(keys
                    .into_iter()
                    .zip(hashes)
                    .enumerate()
                    .map(|(row, (key, hash))| Listed {
                        key,
                        version: Some(versions.value(row)),
                        hash,
                    })
                    .collect())
            })
            .boxed())
    }

    fn hashes_rows_as_arrow(&self) -> bool {
        true
    }

    /// The newest commit in the history of the table named `stream` that records a load;
    /// `Ok(None)` when the table does not exist or records none (within log retention).
    async fn last_load(&self, stream: &str) -> Result<Option<LedgerEntry>> {
        let Some(table) = self.open_table(stream).await? else {
            return Ok(None);
        };
        let mut history = table.history(None);
        while let Some(info) = history.try_next().await.step("read the table history")? {
            if let Some(entry) = ledger_entry(&info, stream)? {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }
}

/// The layout of `request` into `table`: a staged decimal the table holds as a string is
/// merged as its text (see `TableLayout::adopt`).
fn layout_into(request: &MergeRequest, table: &DeltaTable) -> Result<TableLayout> {
    let mut layout = table_layout(request)?;
    if layout.has_decimals() {
        layout.adopt(&existing_columns(table)?);
    }
    Ok(layout)
}

/// `(name, type)` of each column of the table's schema.
fn existing_columns(table: &DeltaTable) -> Result<Vec<(String, DeltaType)>> {
    Ok(table
        .snapshot()
        .step("read the table's schema")?
        .schema()
        .fields()
        .map(|field| (field.name().clone(), field.data_type().clone()))
        .collect())
}

/// The table at `delta`'s location, loaded; `Ok(None)` when there is none.
async fn open_existing(mut delta: DeltaTable) -> Result<Option<DeltaTable>> {
    let exists = delta
        .verify_deltatable_existence()
        .await
        .step("look for the table")?;
    if !exists {
        return Ok(None);
    }
    match delta.load().await {
        Ok(()) => Ok(Some(delta)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(err) => Err(err.at("open the table").into()),
    }
}

/// Whether the table's latest snapshot holds the application transaction `app_id`.
async fn has_transaction(table: &DeltaTable, app_id: &str) -> Result<bool> {
    let log_store = table.log_store();
    let version = table
        .snapshot()
        .step("read the table snapshot")?
        .transaction_version(log_store.as_ref(), app_id)
        .await
        .step("look up the load in the table log")?;
    Ok(version.is_some())
}

/// The load's application transaction plus the metadata `last_load` reads back.
fn commit_properties(request: &MergeRequest, received: Fingerprint) -> CommitProperties {
    CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id(&request.load_id), 1))
        .with_metadata([
            (
                META_LOAD_ID.to_owned(),
                Value::String(request.load_id.clone()),
            ),
            (
                META_STREAM.to_owned(),
                Value::String(request.stream.clone()),
            ),
            (META_ROWS.to_owned(), Value::from(received.rows)),
            // As a string: JSON readers other than serde_json lose precision past 2^53.
            (
                META_CHECKSUM.to_owned(),
                Value::String(received.checksum.to_string()),
            ),
        ])
}

/// Commits no data, only the load's application transaction and metadata, on top of the
/// table's current snapshot. Recorded as a `MERGE` without a predicate, which delta-rs' conflict
/// checker treats as having read the whole table: if another writer changed the table since
/// that snapshot, this commit fails instead of claiming a state it did not check.
async fn commit_load_only(
    table: &DeltaTable,
    load_id: &str,
    properties: CommitProperties,
) -> Result<()> {
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: None,
        matched_predicates: Vec::new(),
        not_matched_predicates: Vec::new(),
        not_matched_by_source_predicates: Vec::new(),
    };
    commit(
        table,
        Vec::new(),
        operation,
        properties,
        "record the load",
        load_id,
    )
    .await
}

/// Commits `actions` to `table` as `operation`, against the snapshot the handle holds (a commit
/// since then that conflicts fails this one), with `properties` (the load's application
/// transaction and metadata). `step` names the commit in an error.
async fn commit(
    table: &DeltaTable,
    actions: Vec<Action>,
    operation: DeltaOperation,
    properties: CommitProperties,
    step: &'static str,
    load_id: &str,
) -> Result<()> {
    let snapshot = table.snapshot().step("read the table snapshot")?;
    CommitBuilder::from(properties)
        .with_actions(actions)
        .build(
            Some(snapshot as &dyn TableReference),
            table.log_store(),
            operation,
        )
        .await
        .map_err(|err| commit_error(step, load_id, err))?;
    Ok(())
}

/// A ledger entry from a commit that records a load, `None` for other commits.
fn ledger_entry(info: &CommitInfo, stream: &str) -> Result<Option<LedgerEntry>, LakeError> {
    let Some(load_id) = info.info.get(META_LOAD_ID).and_then(Value::as_str) else {
        return Ok(None);
    };
    let malformed = |what: &'static str| LakeError::MalformedCommit {
        load_id: load_id.to_owned(),
        table: stream.to_owned(),
        what,
    };
    let rows = info
        .info
        .get(META_ROWS)
        .and_then(json_u64)
        .ok_or_else(|| malformed(META_ROWS))?;
    let checksum = info
        .info
        .get(META_CHECKSUM)
        .and_then(json_u64)
        .ok_or_else(|| malformed(META_CHECKSUM))?;
    let millis = info
        .timestamp
        .or(info.in_commit_timestamp)
        .ok_or_else(|| malformed("timestamp"))?;
    let committed_at =
        chrono::DateTime::from_timestamp_millis(millis).ok_or_else(|| malformed("timestamp"))?;
    let stream = info
        .info
        .get(META_STREAM)
        .and_then(Value::as_str)
        .unwrap_or(stream);
    Ok(Some(LedgerEntry {
        load_id: load_id.to_owned(),
        stream: stream.to_owned(),
        rows,
        checksum,
        committed_at,
    }))
}

fn json_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// The local folder of a `file://` URL.
fn local_dir(url: &Url) -> Result<PathBuf, LakeError> {
    url.to_file_path()
        .map_err(|()| LakeError::RootNotALocalPath {
            root: redacted(url),
        })
}

/// The URL without a password, for messages.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("redacted"));
    }
    shown.to_string()
}

/// A failed commit. Losing the race for the load's own application transaction means another
/// run committed this load meanwhile; that gets a message saying so.
fn commit_error(step: &'static str, load_id: &str, err: DeltaTableError) -> crate::Error {
    match err {
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
        } => ContractError::CommittedMeanwhile {
            load_id: load_id.to_owned(),
        }
        .into(),
        other => other.at(step).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_urls_join_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = format!("file://{}/lake/", dir.path().display());
        let lake = LakeDestination::new(&root, HashMap::new()).unwrap();
        assert!(dir.path().join("lake").is_dir());
        assert_eq!(
            lake.table_url("contacts"),
            format!("file://{}/lake/contacts", dir.path().display())
        );
    }

    #[test]
    fn s3_roots_keep_their_prefix_and_other_schemes_are_config_errors() {
        let lake = LakeDestination::new("s3://bucket/warehouse", HashMap::new()).unwrap();
        assert_eq!(lake.table_url("deals"), "s3://bucket/warehouse/deals");
        let lake = LakeDestination::new("s3://bucket", HashMap::new()).unwrap();
        assert_eq!(lake.table_url("deals"), "s3://bucket/deals");
        let err = LakeDestination::new("gs://bucket/x", HashMap::new()).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config, "{err:?}");
        let err = LakeDestination::new("not a url", HashMap::new()).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config, "{err:?}");
        // The parser's reason is kept as the cause.
        assert!(
            err.report().ends_with(
                "is not a URL; use file:///abs/path or s3://bucket/prefix: \
                 relative URL without a base"
            ),
            "{}",
            err.report()
        );
    }

    #[test]
    fn debug_never_shows_storage_options() {
        let options = HashMap::from([("aws_secret_access_key".to_owned(), "hunter2".to_owned())]);
        let lake = LakeDestination::new("s3://bucket/x", options).unwrap();
        assert!(!format!("{lake:?}").contains("hunter2"));
    }

    #[test]
    fn ledger_entries_come_from_syncline_commits_only() {
        let mut info = CommitInfo {
            timestamp: Some(1_700_000_000_000),
            ..CommitInfo::default()
        };
        assert_eq!(ledger_entry(&info, "people").unwrap(), None);
        info.info
            .insert(META_LOAD_ID.into(), Value::String("l1".into()));
        info.info
            .insert(META_STREAM.into(), Value::String("people".into()));
        info.info.insert(META_ROWS.into(), Value::from(3u64));
        info.info
            .insert(META_CHECKSUM.into(), Value::String(u64::MAX.to_string()));
        let entry = ledger_entry(&info, "people").unwrap().unwrap();
        assert_eq!(entry.load_id, "l1");
        assert_eq!(entry.rows, 3);
        assert_eq!(entry.checksum, u64::MAX);
        assert_eq!(entry.committed_at.timestamp_millis(), 1_700_000_000_000);
        info.info.remove(META_ROWS);
        assert!(ledger_entry(&info, "people").is_err());
    }
}
