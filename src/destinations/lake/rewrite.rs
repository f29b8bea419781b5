//! A load merged into a Delta table that has rows by rewriting the table's data files under
//! syncline's own control, in one commit: the outcome of the MERGE that
//! [`super::merge::MergeClauses`] describes (the PostgreSQL destination's statements), with
//! memory bounded by a pass's share of the load's keys and a batch, never by the table or the
//! load.
//!
//! delta-rs's MERGE hash-joins the load and the table, and the join's build side, the smaller
//! of the two with every column, stays in memory and cannot spill: a million-row load into a
//! million-row table peaked at 1.67 GB, and ten times that is killed by the OOM killer, again on
//! every retry of the pending load. Here the load is held only as an index of its keys, each
//! with its version, delete flag, tombstone and a 128-bit digest of the columns an update
//! compares (50–100 bytes plus the key per row, as its vectors grow by doubling), and
//! everything else streams a batch at a time. A load of more keys than a pass takes
//! (`destination.merge_keys_per_pass`) is merged in passes, each over the keys whose hash falls
//! in its part; each pass
//!
//! 1. scans the load to index its part of the keys, and the tombstones to give each key its own;
//! 2. reads each data file's key and version columns to find the files holding a key of the
//!    part (every file, for a complete full load, whose orphans may be anywhere);
//! 3. reads those files and judges each row of the part as the MERGE's clauses would: kept,
//!    removed (a delete, an orphan, or a row the load's newer one replaces) or marked deleted,
//!    which also settles what the load does with each of its keys; the columns an update
//!    compares are read only from a file with a row of the same version as the load's (a newer
//!    one differs anyway);
//! 4. writes the files with a row not kept again, and scans the load once more to write the
//!    part's inserted and replacing rows.
//!
//! A later pass reads the files an earlier one wrote in place of the table's (and deletes them
//! when it writes them again: no commit has them). Then one commit removes the table's
//! rewritten files and adds the new ones, with the load's application transaction, so the
//! passes are one merge to any reader. A file is written only when something in it changes:
//! re-reading an overlap (the same rows again) reads the files holding its keys and writes
//! nothing.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array, new_null_array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimestampMicrosecondType};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::Column;
use datafusion::logical_expr::col;
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Add, Remove};
use deltalake::protocol::DeltaOperation;
use futures::StreamExt;
use futures::stream::BoxStream;
use hashbrown::HashTable;
use object_store::path::Path;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use tracing::{debug, info, warn};
use twox_hash::XxHash3_128;

use crate::Result;
use crate::destinations::plan::{Compare, MergePlan, Value};
use crate::load::DeleteMode;
use crate::schema::{DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, VERSION_COLUMN};

use super::LakeError;
use super::append::{data_file_writer, delete_unreferenced, file_schema};
use super::error::StepExt;
use super::merge::{MergeCounts, cast_strictly};
use super::types::TableLayout;

/// A merge rewritten and not yet committed: the actions that remove the table's changed data
/// files and add the files written in their place and the load's new rows.
pub(crate) struct Rewritten {
    removes: Vec<Remove>,
    /// The files written, which no commit references yet.
    adds: Vec<Add>,
    counts: MergeCounts,
    /// Rows of the table a complete full load removes or marks deleted because it lacks them.
    pub orphans: u64,
    key: String,
    load_id: String,
}

/// Merges the load `source` (one row per key, in the load's normalized schema, at most
/// `load_rows` rows) into `table` as the MERGE's clauses would, in passes of at most about
/// `keys_per_pass` of the load's keys each (see the module docs); `tombstones` is the table's
/// side table of hard deletes. Writes the new data files; commits nothing.
///
/// `None` when the table is one this merge does not rewrite: a column of a type syncline never
/// writes, or a column the merge compares or marks that the table lacks. delta-rs's MERGE
/// handles those.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn rewrite(
    ctx: &SessionContext,
    table: &DeltaTable,
    tombstones: Option<&DeltaTable>,
    layout: &TableLayout,
    load_id: &str,
    source: DataFrame,
    load_rows: u64,
    keys_per_pass: u64,
) -> Result<Option<Rewritten>> {
    let plan = layout.merge_plan();
    let Some(schema) = file_schema(table)? else {
        return Ok(None);
    };
    let Some(judge) = Judge::new(&plan, &schema, load_id) else {
        return Ok(None);
    };
    let shapes = Shapes::new(&plan, &schema);
    let snapshot = table.snapshot().step("read the table snapshot")?;
    let mut files: Vec<DataFile> = snapshot
        .log_data()
        .iter()
        .map(|file| DataFile::Committed {
            path: file.path().into_owned(),
            remove: file.remove_action(true),
        })
        .collect();

    let parts = load_rows.div_ceil(keys_per_pass.max(1)).max(1);
    let mut rewritten = Rewritten {
        removes: Vec::new(),
        adds: Vec::new(),
        counts: MergeCounts::default(),
        orphans: 0,
        key: judge.key.clone(),
        load_id: load_id.to_owned(),
    };
    if parts > 1 {
        info!(
            rows = load_rows,
            passes = parts,
            "merging the load in passes of about {keys_per_pass} keys (destination.merge_keys_per_pass)"
        );
    }
    for index in 0..parts {
        let part = Part { index, of: parts };
        let judged_and_written = async {
            let pass = Pass::judge(
                ctx, table, tombstones, &judge, &shapes, &files, part, &source,
            )
            .await?;
            let adds = pass
                .write(ctx, table, &judge, &shapes, &files, &source)
                .await?;
            Ok::<_, crate::Error>((pass, adds))
        };
        let finished = judged_and_written.await;
        let (pass, adds) = match finished {
            Ok(done) => done,
            Err(err) => {
                delete_unreferenced(table, written(files)).await;
                return Err(err);
            }
        };
        rewritten.counts += pass.counts;
        rewritten.orphans += pass.orphans;
        // The files this pass wrote again leave the table: one in the snapshot by a remove in
        // the commit, one an earlier pass wrote by being deleted now (no commit has it).
        let mut replaced = Vec::new();
        let mut next = Vec::with_capacity(files.len());
        for (at, file) in files.into_iter().enumerate() {
            match (pass.changed.binary_search(&at).is_ok(), file) {
                (false, file) => next.push(file),
                (true, DataFile::Committed { remove, .. }) => rewritten.removes.push(remove),
                (true, DataFile::Written(add)) => replaced.push(add),
            }
        }
        next.extend(adds.into_iter().map(DataFile::Written));
        files = next;
        delete_unreferenced(table, replaced).await;
        if index + 1 < parts {
            // A pass's files are written, the next pass's not: a kill leaves the table as it
            // was, and files no commit references.
            crate::failpoints::crash_point("lake-pass-written");
        }
    }
    rewritten.adds = written(files);
    debug!(
        passes = parts,
        removed = rewritten.removes.len(),
        added = rewritten.adds.len(),
        inserted = rewritten.counts.inserted,
        updated = rewritten.counts.updated,
        deleted = rewritten.counts.deleted,
        orphans = rewritten.orphans,
        "rewrote the table's changed files"
    );
    Ok(Some(rewritten))
}

impl Rewritten {
    /// Commits the rewrite in one commit carrying `properties` against the snapshot of `table`
    /// judged (a commit since then that touched the same files is a conflict). Returns the
    /// table as of the commit (as it was, when nothing changed: no commit is made) and what
    /// changed.
    pub(crate) async fn commit(
        self,
        table: &DeltaTable,
        properties: CommitProperties,
    ) -> Result<(DeltaTable, MergeCounts)> {
        // The new files are written and in no commit: a kill here leaves the table as it was.
        crate::failpoints::crash_point("lake-files-written");
        let mut actions: Vec<Action> = self.removes.into_iter().map(Action::Remove).collect();
        actions.extend(self.adds.into_iter().map(Action::Add));
        if actions.is_empty() {
            return Ok((table.clone(), self.counts));
        }
        let operation = DeltaOperation::Merge {
            predicate: None,
            merge_predicate: Some(format!("target.{0} = source.{0}", self.key)),
            matched_predicates: Vec::new(),
            not_matched_predicates: Vec::new(),
            not_matched_by_source_predicates: Vec::new(),
        };
        super::commit(
            table,
            actions,
            operation,
            properties,
            "merge",
            &self.load_id,
        )
        .await?;
        let mut table = table.clone();
        table
            .update_state()
            .await
            .step("read the table after the merge")?;
        Ok((table, self.counts))
    }

    /// Deletes the written files, which no commit references (best effort).
    pub(crate) async fn abandon(self, table: &DeltaTable) {
        delete_unreferenced(table, self.adds).await;
    }
}

/// One of the data files a merge judges: in the table's snapshot, or written by an earlier
/// pass of the same merge and in no commit yet.
enum DataFile {
    Committed { path: String, remove: Remove },
    Written(Add),
}

/// The files of `files` written by the merge's passes.
fn written(files: Vec<DataFile>) -> Vec<Add> {
    files
        .into_iter()
        .filter_map(|file| match file {
            DataFile::Written(add) => Some(add),
            DataFile::Committed { .. } => None,
        })
        .collect()
}

/// The share of the load's keys one pass of the merge takes: those whose hash, modulo `of`, is
/// `index`. A key's part never changes, so a table row is judged in its key's pass only.
#[derive(Debug, Clone, Copy)]
struct Part {
    index: u64,
    of: u64,
}

impl Part {
    /// Whether the key `id` (`None`: NULL, judged in the first pass) is in this part.
    fn holds(&self, id: Option<&[u8]>) -> bool {
        match id {
            _ if self.of == 1 => true,
            Some(id) => (XxHash3_128::oneshot(id) as u64) % self.of == self.index,
            None => self.index == 0,
        }
    }
}

/// One pass of a merge: its part of the load judged against the table's files as they stand
/// after the passes before it.
struct Pass {
    keys: LoadKeys,
    /// Indexes into the pass's files of those with a row not kept, ascending.
    changed: Vec<usize>,
    counts: MergeCounts,
    orphans: u64,
}

impl Pass {
    /// Indexes the load's keys in `part`, then judges the `files` that may hold one (every
    /// file, for a complete full load) and settles what the load does with each key. Reads
    /// the load once, the tombstones once, and the files; writes nothing.
    #[allow(clippy::too_many_arguments)]
    async fn judge(
        ctx: &SessionContext,
        table: &DeltaTable,
        tombstones: Option<&DeltaTable>,
        judge: &Judge,
        shapes: &Shapes,
        files: &[DataFile],
        part: Part,
        source: &DataFrame,
    ) -> Result<Pass> {
        let mut keys = LoadKeys::index(judge, source.clone(), part).await?;
        if let Some(tombstones) = tombstones {
            keys.look_up_tombstones(ctx, judge, tombstones).await?;
        }
        debug!(
            keys = keys.len(),
            part = part.index,
            of = part.of,
            "indexed the load's keys"
        );

        let mut counts = MergeCounts::default();
        let mut orphans = 0;
        let mut changed = Vec::new();
        for (at, file) in files.iter().enumerate() {
            // A complete full load judges every file, and usually re-sends most rows as they
            // are; otherwise a file is judged only if it holds a key of the load, and its
            // compared columns are read only if a row of the same version needs them.
            let columns = if judge.orphans_as_of.is_some() {
                &judge.read
            } else {
                match holds_keys(ctx, table, file, judge, &keys).await? {
                    Holds::Nothing => continue,
                    Holds::Keys => &judge.narrow,
                    Holds::Ties => &judge.read,
                }
            };
            let mut rows = scan(ctx, table, file, Some(columns)).await?;
            let mut changes = false;
            while let Some(batch) = rows.next().await {
                for (fate, entry) in judge.judge(&batch?, &keys)? {
                    changes |= fate != Fate::Keep;
                    match fate {
                        Fate::Keep => {}
                        Fate::Replace => counts.updated += 1,
                        Fate::Remove | Fate::Mark { .. } => counts.deleted += 1,
                    }
                    match entry {
                        Some(entry) => {
                            keys.outcome[entry as usize] = match fate {
                                Fate::Replace => Outcome::Replaces,
                                _ => Outcome::Settled,
                            }
                        }
                        None if fate != Fate::Keep => orphans += 1,
                        None => {}
                    }
                }
            }
            if changes {
                changed.push(at);
            }
        }
        for entry in 0..keys.len() {
            if keys.outcome[entry] != Outcome::Unmatched {
                continue;
            }
            let version = keys.version[entry];
            let newer_than_tombstone = keys.tombstone(entry).is_none_or(|t| version > t);
            keys.outcome[entry] = if !newer_than_tombstone {
                Outcome::Settled
            } else if !keys.deleted[entry] {
                counts.inserted += 1;
                Outcome::Inserted
            } else if shapes.insert_deleted.is_some() {
                counts.deleted += 1;
                Outcome::InsertedDeleted
            } else {
                Outcome::Settled
            };
        }
        debug!(
            files = changed.len(),
            inserted = counts.inserted,
            updated = counts.updated,
            deleted = counts.deleted,
            orphans,
            "judged the table's rows"
        );
        Ok(Pass {
            keys,
            changed,
            counts,
            orphans,
        })
    }

    /// Writes the changed files again and the pass's inserted and replacing rows of `source`
    /// (the load judged) into new data files in the table's file schema; returns them.
    /// Reading and judging run here and Parquet encoding in a task of its own, so the two
    /// overlap on two cores; the channel between them holds one batch.
    async fn write(
        &self,
        ctx: &SessionContext,
        table: &DeltaTable,
        judge: &Judge,
        shapes: &Shapes,
        files: &[DataFile],
        source: &DataFrame,
    ) -> Result<Vec<Add>> {
        let mut kept = Kept::new(shapes, self.keys.len())?;
        let (rows, mut to_write) = tokio::sync::mpsc::channel::<RecordBatch>(1);
        let mut writer = data_file_writer(table, &judge.schema)?;
        let encoder = tokio::spawn(async move {
            while let Some(batch) = to_write.recv().await {
                if let Err(err) = writer.write(&batch).await {
                    return (writer, Err(err));
                }
            }
            (writer, Ok(()))
        });
        let changed = self.changed.iter().map(|&at| &files[at]);
        let read = self
            .send_rows(
                ctx,
                table,
                judge,
                shapes,
                &mut kept,
                changed,
                source.clone(),
                &rows,
            )
            .await;
        drop(rows);
        let (writer, written) = encoder
            .await
            .map_err(|_| LakeError::Rewrite("the data-file writer stopped"))?;
        let written = written
            .step("write the table's data files")
            .map_err(crate::Error::from);
        match (read, written) {
            (Ok(()), Ok(())) => Ok(writer.close().await.step("write the table's data files")?),
            (Err(err), _) | (Ok(()), Err(err)) => {
                // Files already closed stay unreferenced until `VACUUM`.
                if let Err(abort) = writer.abort().await {
                    warn!(error = %abort, "could not abort an unfinished data file");
                }
                Err(err)
            }
        }
    }

    /// Writes the `changed` files again (their kept and marked rows) and the pass's inserted
    /// and replacing rows into `writer`; stops early when the writer has (it failed).
    #[allow(clippy::too_many_arguments)]
    async fn send_rows(
        &self,
        ctx: &SessionContext,
        table: &DeltaTable,
        judge: &Judge,
        shapes: &Shapes,
        kept: &mut Kept,
        changed: impl Iterator<Item = &DataFile>,
        source: DataFrame,
        writer: &tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let keys = &self.keys;
        for file in changed {
            let mut rows = scan(ctx, table, file, None).await?;
            while let Some(batch) = rows.next().await {
                let batch = conform(&batch?, &judge.schema)?;
                let fates = judge.judge(&batch, keys)?;
                kept.stash(&batch, &fates)?;
                let rewritten = judge.apply(&batch, &fates)?;
                if rewritten.num_rows() > 0 && writer.send(rewritten).await.is_err() {
                    return Ok(());
                }
            }
        }
        let mut rows = source.execute_stream().await.step("read the load")?;
        while let Some(batch) = rows.next().await {
            let batch = batch.step("read the load")?;
            let ids = KeyColumn::of(column(&batch, &judge.key)?, &judge.key_type)?;
            let mut masks = [const { Vec::new() }; 3];
            let mut replacing = Vec::new();
            for row in 0..batch.num_rows() {
                let entry = ids.get(row).and_then(|id| keys.find(id));
                let outcome = entry.map_or(Outcome::Settled, |entry| keys.outcome[entry as usize]);
                masks[0].push(outcome == Outcome::Inserted);
                masks[1].push(outcome == Outcome::Replaces);
                masks[2].push(outcome == Outcome::InsertedDeleted);
                if let (Outcome::Replaces, Some(entry)) = (outcome, entry) {
                    replacing.push(entry);
                }
            }
            let sets = [
                Some(&shapes.insert),
                Some(&shapes.replace),
                shapes.insert_deleted.as_ref(),
            ];
            for (which, (mask, set)) in masks.into_iter().zip(sets).enumerate() {
                let Some(set) = set else { continue };
                let mask = BooleanArray::from(mask);
                if mask.true_count() == 0 {
                    continue;
                }
                let rows = filter_record_batch(&batch, &mask)?;
                let kept_values = if which == 1 {
                    kept.values(&replacing)?
                } else {
                    Vec::new()
                };
                let shaped = shapes.shape(set, &rows, &judge.load_id, &kept_values)?;
                if writer.send(shaped).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// What a data file holds of the load's keys.
enum Holds {
    Nothing,
    /// Rows whose key the load carries.
    Keys,
    /// And one whose fate depends on its compared columns (see [`Judge::compares`]).
    Ties,
}

/// What the data file `file` holds of the load's keys, from its key and version columns.
async fn holds_keys(
    ctx: &SessionContext,
    table: &DeltaTable,
    file: &DataFile,
    judge: &Judge,
    keys: &LoadKeys,
) -> Result<Holds> {
    let mut rows = scan(ctx, table, file, Some(&judge.narrow[..2])).await?;
    let mut holds = Holds::Nothing;
    while let Some(batch) = rows.next().await {
        let batch = batch?;
        let ids = KeyColumn::of(column(&batch, &judge.key)?, &judge.key_type)?;
        let versions = timestamps(column(&batch, VERSION_COLUMN)?, &judge.timestamp)?;
        for row in 0..batch.num_rows() {
            if let Some(entry) = ids.get(row).and_then(|id| keys.find(id)) {
                if judge.compares(keys, entry as usize, &versions, row) {
                    return Ok(Holds::Ties);
                }
                holds = Holds::Keys;
            }
        }
    }
    Ok(holds)
}

/// The rows of the data file `file`, with `columns` (all when `None`), a batch at a time.
///
/// A file in the snapshot is read through the table (which knows its deletion vectors, say); a
/// file an earlier pass wrote is in no snapshot yet, and is read as the Parquet it is, from the
/// table's store: this merge wrote it, in the table's file schema.
async fn scan(
    ctx: &SessionContext,
    table: &DeltaTable,
    file: &DataFile,
    columns: Option<&[String]>,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    const STEP: &str = "read a data file";
    let path = match file {
        DataFile::Committed { path, .. } => path,
        DataFile::Written(add) => {
            let reader =
                crate::stage::parquet_reader(table.object_store(), Path::from(add.path.as_str()));
            let builder = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .step(STEP)?;
            let mask = match columns {
                Some(columns) => {
                    let roots = columns
                        .iter()
                        .map(|name| builder.schema().index_of(name))
                        .collect::<Result<Vec<_>, _>>()
                        .step(STEP)?;
                    ProjectionMask::roots(builder.parquet_schema(), roots)
                }
                None => ProjectionMask::all(),
            };
            let rows = builder.with_projection(mask).build().step(STEP)?;
            return Ok(rows
                .map(|batch| Ok::<_, crate::Error>(batch.step(STEP)?))
                .boxed());
        }
    };
    let provider = table
        .table_provider()
        .with_file_paths([path.clone()])
        .await
        .step(STEP)?;
    let mut rows = ctx.read_table(provider).step(STEP)?;
    if let Some(columns) = columns {
        rows = rows
            .select(
                columns
                    .iter()
                    .map(|name| col(Column::new_unqualified(name)))
                    .collect::<Vec<_>>(),
            )
            .step(STEP)?;
    }
    let rows = rows.execute_stream().await.step(STEP)?;
    Ok(rows
        .map(|batch| Ok::<_, crate::Error>(batch.step(STEP)?))
        .boxed())
}

/// The column `name` of `batch`.
fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    Ok(batch
        .column_by_name(name)
        .ok_or_else(|| LakeError::MissingColumn {
            column: name.to_owned(),
        })?)
}

/// The batch in `schema`'s types, column by column by name (a scan may hand text over as
/// views, say).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| cast_strictly(column(batch, field.name())?, field.data_type()))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The microseconds of a timestamp column, read as `ty`.
fn timestamps(column: &ArrayRef, ty: &DataType) -> Result<TimestampMicrosecondArray> {
    Ok(cast_strictly(column, ty)?
        .as_primitive::<TimestampMicrosecondType>()
        .clone())
}

/// A batch's keys as bytes to hash and compare: a text key's UTF-8, an integer key's eight
/// bytes, any other (a decimal) in Arrow's row encoding. Both sides are cast to the table's key
/// type first, so equal keys have equal bytes.
enum KeyColumn {
    Text(StringArray),
    Integer(Int64Array),
    Encoded(Rows),
}

impl KeyColumn {
    fn of(column: &ArrayRef, ty: &DataType) -> Result<KeyColumn> {
        let column = cast_strictly(column, ty)?;
        Ok(match ty {
            DataType::Utf8 => KeyColumn::Text(column.as_string::<i32>().clone()),
            DataType::Int64 => KeyColumn::Integer(column.as_primitive::<Int64Type>().clone()),
            _ => {
                let converter =
                    RowConverter::new(vec![SortField::new(ty.clone())]).step("encode the keys")?;
                KeyColumn::Encoded(
                    converter
                        .convert_columns(&[column])
                        .step("encode the keys")?,
                )
            }
        })
    }

    /// Row `row`'s key; `None` when it is NULL.
    fn get(&self, row: usize) -> Option<&[u8]> {
        match self {
            KeyColumn::Text(text) => text.is_valid(row).then(|| text.value(row).as_bytes()),
            KeyColumn::Integer(integers) => integers
                .is_valid(row)
                .then(|| &integers.values().inner().as_slice()[row * 8..(row + 1) * 8]),
            KeyColumn::Encoded(rows) => Some(rows.row(row).data()),
        }
    }
}

/// What the load does with one of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// No table row has the key (yet: the table's rows are still being judged).
    Unmatched,
    /// Nothing is written for it: a table row kept, removed or marked deleted settled it, or
    /// a tombstone holds it back.
    Settled,
    /// Its row replaces the table row (an update).
    Replaces,
    /// Its row is inserted.
    Inserted,
    /// A delete of a key the table lacks, inserted as a row marked deleted (soft deletes).
    InsertedDeleted,
}

/// The load's keys, each with what the merge needs of its row: an index, not the rows.
struct LoadKeys {
    /// The keys of the load indexed: those in this part.
    part: Part,
    /// Every key's bytes, one after another; key `i` ends at `ends[i]`.
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Key number by hash of the key's bytes.
    slots: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Microseconds.
    version: Vec<i64>,
    deleted: Vec<bool>,
    /// md5 of the compared columns in Arrow's row encoding (see [`Judge::digests`]).
    digest: Vec<u128>,
    /// Microseconds, [`NO_TOMBSTONE`] for none; empty when the table has no tombstones.
    tombstones: Vec<i64>,
    outcome: Vec<Outcome>,
}

const NO_TOMBSTONE: i64 = i64::MIN;

fn key_at<'a>(bytes: &'a [u8], ends: &[usize], entry: u32) -> &'a [u8] {
    let entry = entry as usize;
    let start = if entry == 0 { 0 } else { ends[entry - 1] };
    &bytes[start..ends[entry]]
}

impl LoadKeys {
    /// Scans `source` (one row per key) once for its keys in `part`.
    async fn index(judge: &Judge, source: DataFrame, part: Part) -> Result<LoadKeys> {
        let mut keys = LoadKeys {
            part,
            bytes: Vec::new(),
            ends: Vec::new(),
            slots: HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            version: Vec::new(),
            deleted: Vec::new(),
            digest: Vec::new(),
            tombstones: Vec::new(),
            outcome: Vec::new(),
        };
        let mut rows = source.execute_stream().await.step("read the load")?;
        while let Some(batch) = rows.next().await {
            let mut batch = batch.step("read the load")?;
            if part.of > 1 {
                // Only the part's rows are encoded for their digests.
                let ids = KeyColumn::of(column(&batch, &judge.key)?, &judge.key_type)?;
                let ours: BooleanArray = (0..batch.num_rows())
                    .map(|row| Some(part.holds(ids.get(row))))
                    .collect();
                batch = filter_record_batch(&batch, &ours)?;
            }
            let ids = KeyColumn::of(column(&batch, &judge.key)?, &judge.key_type)?;
            let versions = timestamps(column(&batch, VERSION_COLUMN)?, &judge.timestamp)?;
            let deleted = column(&batch, DELETED_COLUMN)?
                .as_boolean_opt()
                .ok_or(LakeError::Rewrite("the delete flag is not a boolean"))?
                .clone();
            let digests = judge.digests(&batch)?;
            for row in 0..batch.num_rows() {
                let id = ids.get(row).ok_or(LakeError::Rewrite("a key is NULL"))?;
                let version = if versions.is_valid(row) {
                    versions.value(row)
                } else {
                    return Err(LakeError::Rewrite("a version is NULL").into());
                };
                let deleted = deleted.is_valid(row) && deleted.value(row);
                // A delete's other columns are not compared: it never updates a row.
                let digest = if deleted {
                    0
                } else {
                    digest_of(digests.row(row).data())
                };
                keys.insert(id, version, deleted, digest)?;
            }
        }
        Ok(keys)
    }

    fn insert(&mut self, id: &[u8], version: i64, deleted: bool, digest: u128) -> Result<()> {
        let entry = u32::try_from(self.version.len())
            .map_err(|_| LakeError::Rewrite("more than 4,294,967,295 keys"))?;
        let hash = self.hasher.hash_one(id);
        if self.find(id).is_some() {
            return Err(LakeError::Rewrite("the de-duplicated load repeats a key").into());
        }
        let (bytes, ends, hasher) = (&self.bytes, &self.ends, &self.hasher);
        self.slots.insert_unique(hash, entry, |&other| {
            hasher.hash_one(key_at(bytes, ends, other))
        });
        self.bytes.extend_from_slice(id);
        self.ends.push(self.bytes.len());
        self.version.push(version);
        self.deleted.push(deleted);
        self.digest.push(digest);
        self.outcome.push(Outcome::Unmatched);
        Ok(())
    }

    fn len(&self) -> usize {
        self.version.len()
    }

    fn find(&self, id: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.slots
            .find(hash, |&entry| key_at(&self.bytes, &self.ends, entry) == id)
            .copied()
    }

    fn tombstone(&self, entry: usize) -> Option<i64> {
        self.tombstones
            .get(entry)
            .copied()
            .filter(|&version| version != NO_TOMBSTONE)
    }

    /// Gives each key the version of its tombstone, scanning the side table once.
    async fn look_up_tombstones(
        &mut self,
        ctx: &SessionContext,
        judge: &Judge,
        tombstones: &DeltaTable,
    ) -> Result<()> {
        self.tombstones = vec![NO_TOMBSTONE; self.len()];
        let provider = tombstones
            .table_provider()
            .await
            .step("read the tombstones")?;
        let mut rows = ctx
            .read_table(provider)
            .step("read the tombstones")?
            .select(vec![
                col(Column::new_unqualified(&judge.key)),
                col(Column::new_unqualified(VERSION_COLUMN)),
            ])
            .step("read the tombstones")?
            .execute_stream()
            .await
            .step("read the tombstones")?;
        while let Some(batch) = rows.next().await {
            let batch = batch.step("read the tombstones")?;
            let ids = KeyColumn::of(column(&batch, &judge.key)?, &judge.key_type)?;
            let versions = timestamps(column(&batch, VERSION_COLUMN)?, &judge.timestamp)?;
            for row in 0..batch.num_rows() {
                if let Some(entry) = ids.get(row).and_then(|id| self.find(id))
                    && versions.is_valid(row)
                {
                    let tombstone = &mut self.tombstones[entry as usize];
                    *tombstone = (*tombstone).max(versions.value(row));
                }
            }
        }
        Ok(())
    }
}

/// A row's compared columns (in Arrow's row encoding) as 128 bits: XXH3, several times faster
/// than md5 and as far from an accidental collision (which would skip one update).
fn digest_of(encoded: &[u8]) -> u128 {
    XxHash3_128::oneshot(encoded)
}

/// What becomes of one table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Deleted (by the load, or as an orphan of a complete full load).
    Remove,
    /// The load's row for its key replaces it.
    Replace,
    /// Marked deleted at `deleted_at`, with the load's id and, for a delete the load carries,
    /// the delete's version.
    Mark {
        deleted_at: i64,
        version: Option<i64>,
    },
}

/// The MERGE's clauses (see [`super::merge::MergeClauses`]) as a judgement of each table row.
struct Judge {
    /// The table's columns as its data files hold them.
    schema: SchemaRef,
    key: String,
    key_type: DataType,
    /// The type of the version and delete-time columns.
    timestamp: DataType,
    deletes: DeleteMode,
    load_id: String,
    /// A complete full load: when the source was seen without its orphans (microseconds).
    orphans_as_of: Option<i64>,
    /// The columns an update compares, in the table's types, with their encoder.
    compared: Vec<(String, DataType)>,
    encoder: RowConverter,
    /// Whether a soft-deleted table row differs from any live row (it comes back).
    soft_deleted_differs: bool,
    /// Whether the version is among the compared columns: then rows of different versions
    /// differ without their other columns being compared.
    version_compared: bool,
    /// The columns a judgement reads: the key, the version (in that order), the delete time and
    /// the load id, when the table has them.
    narrow: Vec<String>,
    /// And the compared columns, for a judgement of rows whose columns are compared.
    read: Vec<String>,
}

impl Judge {
    /// `None` when the table lacks a column the judgement reads, or a soft delete would write
    /// something other than the delete's version and the load id.
    fn new(plan: &MergePlan<'_>, schema: &SchemaRef, load_id: &str) -> Option<Judge> {
        let type_of = |name: &str| {
            schema
                .field_with_name(name)
                .ok()
                .map(|field| field.data_type().clone())
        };
        let key_type = type_of(plan.key)?;
        let timestamp = type_of(VERSION_COLUMN)?;
        let mut compared = Vec::new();
        let mut soft_deleted_differs = false;
        for term in &plan.compared {
            match term {
                Compare::Column(name) => compared.push(((*name).to_owned(), type_of(name)?)),
                Compare::SoftDeleted => soft_deleted_differs = true,
            }
        }
        let soft_delete_writes_the_version = plan.soft_delete.iter().all(|(column, value)| {
            matches!(
                (*column, value),
                (
                    DELETED_AT_COLUMN | VERSION_COLUMN,
                    Value::Incoming(VERSION_COLUMN)
                ) | (LOAD_ID_COLUMN, Value::LoadId)
            )
        });
        let soft = plan.deletes == DeleteMode::Soft;
        if !soft_delete_writes_the_version
            || (soft && type_of(DELETED_AT_COLUMN).is_none())
            || ((soft || plan.orphans.is_some()) && type_of(LOAD_ID_COLUMN).is_none())
        {
            return None;
        }
        let encoder = RowConverter::new(
            compared
                .iter()
                .map(|(_, ty)| SortField::new(ty.clone()))
                .collect(),
        )
        .ok()?;
        let mut narrow = vec![plan.key.to_owned(), VERSION_COLUMN.to_owned()];
        for name in [DELETED_AT_COLUMN, LOAD_ID_COLUMN] {
            if type_of(name).is_some() {
                narrow.push(name.to_owned());
            }
        }
        let mut read = narrow.clone();
        for (name, _) in &compared {
            if !read.contains(name) {
                read.push(name.clone());
            }
        }
        Some(Judge {
            schema: Arc::clone(schema),
            key: plan.key.to_owned(),
            key_type,
            timestamp,
            deletes: plan.deletes,
            load_id: load_id.to_owned(),
            orphans_as_of: plan.orphans.map(|orphans| orphans.as_of.timestamp_micros()),
            compared,
            encoder,
            soft_deleted_differs,
            version_compared: plan.compared.contains(&Compare::Column(VERSION_COLUMN)),
            narrow,
            read,
        })
    }

    /// The compared columns of each row of `batch` (the load's or the table's), encoded so
    /// that equal values, NULLs included, encode equally, the way `IS DISTINCT FROM` compares.
    fn digests(&self, batch: &RecordBatch) -> Result<Rows> {
        let columns = self
            .compared
            .iter()
            .map(|(name, ty)| cast_strictly(column(batch, name)?, ty))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .encoder
            .convert_columns(&columns)
            .step("encode the compared columns")?)
    }

    /// Whether the table row `row` (at `versions`) and the load's row `entry` for its key are
    /// compared column by column: a live row of the same version (of any version, when the
    /// version is not compared). A newer one differs in its version anyway.
    fn compares(
        &self,
        keys: &LoadKeys,
        entry: usize,
        versions: &TimestampMicrosecondArray,
        row: usize,
    ) -> bool {
        let same_version = versions.is_valid(row) && versions.value(row) == keys.version[entry];
        !keys.deleted[entry] && (same_version || !self.version_compared)
    }

    /// The fate of each row of `batch` (table rows, with at least the columns of
    /// [`Judge::narrow`], and those of [`Judge::read`] when a row [`Judge::compares`]) and the
    /// load's key it matched, if any.
    fn judge(&self, batch: &RecordBatch, keys: &LoadKeys) -> Result<Vec<(Fate, Option<u32>)>> {
        let ids = KeyColumn::of(column(batch, &self.key)?, &self.key_type)?;
        let entries: Vec<Option<u32>> = (0..batch.num_rows())
            .map(|row| ids.get(row).and_then(|id| keys.find(id)))
            .collect();
        if self.orphans_as_of.is_none() && entries.iter().all(Option::is_none) {
            return Ok(entries.into_iter().map(|_| (Fate::Keep, None)).collect());
        }
        let versions = timestamps(column(batch, VERSION_COLUMN)?, &self.timestamp)?;
        let deleted_at = match batch.column_by_name(DELETED_AT_COLUMN) {
            Some(deleted_at) => Some(timestamps(deleted_at, &self.timestamp)?),
            None => None,
        };
        let load_ids = match batch.column_by_name(LOAD_ID_COLUMN) {
            Some(ids) => Some(cast_strictly(ids, &DataType::Utf8)?),
            None => None,
        };
        let load_ids = load_ids.as_ref().map(|ids| ids.as_string::<i32>());
        // A live row newer than the table's differs in its version; only a row of the same
        // version needs its columns compared, so only those are encoded and hashed.
        let tied: Vec<u32> = entries
            .iter()
            .enumerate()
            .filter_map(|(row, entry)| {
                let entry = (*entry)? as usize;
                self.compares(keys, entry, &versions, row)
                    .then_some(row as u32)
            })
            .collect();
        let mut digests = vec![0u128; batch.num_rows()];
        if !tied.is_empty() {
            let encoded = self.digests(&arrow::compute::take_record_batch(
                batch,
                &UInt32Array::from(tied.clone()),
            )?)?;
            for (at, row) in tied.iter().enumerate() {
                digests[*row as usize] = digest_of(encoded.row(at).data());
            }
        }
        let fates = entries
            .iter()
            .enumerate()
            .map(|(row, entry)| {
                let version = versions.is_valid(row).then(|| versions.value(row));
                let deleted_at = deleted_at
                    .as_ref()
                    .and_then(|at| at.is_valid(row).then(|| at.value(row)));
                let fate = match entry {
                    Some(entry) => {
                        let entry = *entry as usize;
                        let differs = || {
                            (self.soft_deleted_differs && deleted_at.is_some())
                                || (self.version_compared && version != Some(keys.version[entry]))
                                || digests[row] != keys.digest[entry]
                        };
                        self.matched(
                            keys.version[entry],
                            keys.deleted[entry],
                            version,
                            deleted_at,
                            differs,
                        )
                    }
                    // Only a complete full load has orphans; a key of another part is judged
                    // in that part's pass (hashed only when orphans are judged at all).
                    None if self.orphans_as_of.is_none() || !keys.part.holds(ids.get(row)) => {
                        Fate::Keep
                    }
                    None => {
                        let load_id =
                            load_ids.and_then(|ids| ids.is_valid(row).then(|| ids.value(row)));
                        self.orphan(deleted_at, load_id)
                    }
                };
                (fate, *entry)
            })
            .collect();
        Ok(fates)
    }

    /// A table row at `version` (deleted at `deleted_at`) whose key the load carries at
    /// `incoming`, a delete when `deleted`: the MERGE's matched clauses, in order. NULL
    /// versions compare as SQL's do: never newer, never older.
    fn matched(
        &self,
        incoming: i64,
        deleted: bool,
        version: Option<i64>,
        deleted_at: Option<i64>,
        differs: impl FnOnce() -> bool,
    ) -> Fate {
        let newer_or_same = version.is_some_and(|version| incoming >= version);
        match self.deletes {
            DeleteMode::Hard if deleted => {
                if newer_or_same {
                    Fate::Remove
                } else {
                    Fate::Keep
                }
            }
            DeleteMode::Hard => {
                if newer_or_same && differs() {
                    Fate::Replace
                } else {
                    Fate::Keep
                }
            }
            DeleteMode::Soft => {
                // A row deleted at version v stays deleted against anything of version v.
                let not_deleted_at_same_version =
                    deleted_at.is_none() || version.is_some_and(|version| incoming > version);
                if !(newer_or_same && not_deleted_at_same_version) {
                    Fate::Keep
                } else if deleted {
                    Fate::Mark {
                        deleted_at: incoming,
                        version: Some(incoming),
                    }
                } else if differs() {
                    Fate::Replace
                } else {
                    Fate::Keep
                }
            }
        }
    }

    /// A table row whose key the load lacks: an orphan of a complete full load when it is live
    /// and no later load wrote it (load ids are UUIDv7, ordered by start), else kept.
    fn orphan(&self, deleted_at: Option<i64>, load_id: Option<&str>) -> Fate {
        let Some(as_of) = self.orphans_as_of else {
            return Fate::Keep;
        };
        let older_load = load_id.is_none_or(|id| id < self.load_id.as_str());
        match self.deletes {
            DeleteMode::Hard if older_load => Fate::Remove,
            DeleteMode::Soft if older_load && deleted_at.is_none() => Fate::Mark {
                deleted_at: as_of,
                version: None,
            },
            _ => Fate::Keep,
        }
    }

    /// `batch` (a data file's rows, in [`Judge::schema`]) as written again: without the rows
    /// removed or replaced, and with the marked rows' delete time, version and load id set.
    fn apply(&self, batch: &RecordBatch, fates: &[(Fate, Option<u32>)]) -> Result<RecordBatch> {
        let mark = |row: usize| match fates[row].0 {
            Fate::Mark {
                deleted_at,
                version,
            } => Some((deleted_at, version)),
            _ => None,
        };
        let mut columns = batch.columns().to_vec();
        if fates
            .iter()
            .any(|(fate, _)| matches!(fate, Fate::Mark { .. }))
        {
            for (index, field) in self.schema.fields().iter().enumerate() {
                let column = &columns[index];
                let marked: ArrayRef = match field.name().as_str() {
                    DELETED_AT_COLUMN | VERSION_COLUMN => {
                        let old = column.as_primitive::<TimestampMicrosecondType>();
                        let is_deleted_at = field.name() == DELETED_AT_COLUMN;
                        let values = (0..batch.num_rows()).map(|row| match mark(row) {
                            Some((at, _)) if is_deleted_at => Some(at),
                            Some((_, Some(version))) => Some(version),
                            _ => old.is_valid(row).then(|| old.value(row)),
                        });
                        Arc::new(
                            TimestampMicrosecondArray::from_iter(values)
                                .with_data_type(field.data_type().clone()),
                        )
                    }
                    LOAD_ID_COLUMN => {
                        let old = column.as_string::<i32>();
                        let values = (0..batch.num_rows()).map(|row| match mark(row) {
                            Some(_) => Some(self.load_id.as_str()),
                            None => old.is_valid(row).then(|| old.value(row)),
                        });
                        Arc::new(StringArray::from_iter(values))
                    }
                    _ => continue,
                };
                columns[index] = marked;
            }
        }
        let marked = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let kept = BooleanArray::from_iter(
            fates
                .iter()
                .map(|(fate, _)| Some(!matches!(fate, Fate::Remove | Fate::Replace))),
        );
        Ok(filter_record_batch(&marked, &kept)?)
    }
}

/// Where one table column's value comes from when a row of the load is written.
#[derive(Debug, Clone)]
enum Source {
    Incoming(String),
    LoadId,
    Null,
    /// The replaced table row's value of the `n`th column an update keeps (see [`Kept`]).
    Kept(usize),
}

/// What the load's written rows hold, column by column of the table.
struct Shapes {
    schema: SchemaRef,
    insert: Vec<Source>,
    /// An update: the load's row in place of the table's, with the table row's values of the
    /// columns the update does not set.
    replace: Vec<Source>,
    insert_deleted: Option<Vec<Source>>,
    /// The columns an update keeps: ones a former schema added, which the load lacks.
    kept: Vec<(String, DataType)>,
}

impl Shapes {
    fn new(plan: &MergePlan<'_>, schema: &SchemaRef) -> Shapes {
        let source = |value: &Value<'_>| match value {
            Value::Incoming(column) => Source::Incoming((*column).to_owned()),
            Value::LoadId => Source::LoadId,
            Value::Null => Source::Null,
        };
        let from = |set: &[(&str, Value<'_>)], name: &str| {
            set.iter()
                .find(|(column, _)| *column == name)
                .map(|(_, value)| source(value))
        };
        let mut insert = Vec::new();
        let mut replace = Vec::new();
        let mut insert_deleted = plan.insert_deleted.as_ref().map(|_| Vec::new());
        let mut kept = Vec::new();
        for field in schema.fields() {
            let name = field.name().as_str();
            insert.push(source(&plan.inserted(name)));
            replace.push(if name == plan.key {
                Source::Incoming(name.to_owned())
            } else if let Some(set) = from(&plan.update, name) {
                set
            } else {
                kept.push((name.to_owned(), field.data_type().clone()));
                Source::Kept(kept.len() - 1)
            });
            if let (Some(set), Some(shape)) = (&plan.insert_deleted, &mut insert_deleted) {
                shape.push(from(set, name).unwrap_or(Source::Null));
            }
        }
        Shapes {
            schema: Arc::clone(schema),
            insert,
            replace,
            insert_deleted,
            kept,
        }
    }

    /// The load's `rows` as table rows shaped by `shape`; `kept` holds the replaced rows' values
    /// of the kept columns, when `shape` is [`Shapes::replace`].
    fn shape(
        &self,
        shape: &[Source],
        rows: &RecordBatch,
        load_id: &str,
        kept: &[ArrayRef],
    ) -> Result<RecordBatch> {
        let count = rows.num_rows();
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(shape)
            .map(|(field, source)| match source {
                Source::Incoming(name) => cast_strictly(column(rows, name)?, field.data_type()),
                Source::LoadId => {
                    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
                        std::iter::repeat_n(load_id, count),
                    ));
                    cast_strictly(&ids, field.data_type())
                }
                Source::Null => Ok(new_null_array(field.data_type(), count)),
                Source::Kept(index) => kept
                    .get(*index)
                    .map(Arc::clone)
                    .ok_or(LakeError::Rewrite("a kept column was not stashed").into()),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// The table's values of the columns an update keeps (see [`Shapes::kept`]) for the rows the
/// load replaces, stashed as the changed files are written again and put into the replacing
/// rows. Empty, and free, when the table has no such column; otherwise it holds the kept
/// columns of the replaced rows only.
struct Kept {
    columns: Vec<(String, DataType)>,
    stash: Option<(RowConverter, Rows)>,
    /// Per load key, its row in the stash; `u32::MAX` for none.
    at: Vec<u32>,
}

impl Kept {
    fn new(shapes: &Shapes, keys: usize) -> Result<Kept> {
        if shapes.kept.is_empty() {
            return Ok(Kept {
                columns: Vec::new(),
                stash: None,
                at: Vec::new(),
            });
        }
        let encoder = RowConverter::new(
            shapes
                .kept
                .iter()
                .map(|(_, ty)| SortField::new(ty.clone()))
                .collect(),
        )
        .step("encode the kept columns")?;
        let rows = encoder.empty_rows(0, 0);
        Ok(Kept {
            columns: shapes.kept.clone(),
            stash: Some((encoder, rows)),
            at: vec![u32::MAX; keys],
        })
    }

    /// Stashes the kept columns of the rows of `batch` (a data file's, in the table's types)
    /// that the load replaces.
    fn stash(&mut self, batch: &RecordBatch, fates: &[(Fate, Option<u32>)]) -> Result<()> {
        let Some((encoder, stash)) = &mut self.stash else {
            return Ok(());
        };
        if !fates.iter().any(|(fate, _)| *fate == Fate::Replace) {
            return Ok(());
        }
        let columns = self
            .columns
            .iter()
            .map(|(name, _)| column(batch, name).cloned())
            .collect::<Result<Vec<_>>>()?;
        let encoded = encoder
            .convert_columns(&columns)
            .step("encode the kept columns")?;
        for (row, (fate, entry)) in fates.iter().enumerate() {
            if let (Fate::Replace, Some(entry)) = (fate, entry) {
                self.at[*entry as usize] = u32::try_from(stash.num_rows())
                    .map_err(|_| LakeError::Rewrite("more than 4,294,967,295 kept rows"))?;
                stash.push(encoded.row(row));
            }
        }
        Ok(())
    }

    /// The kept columns of the rows `entries` replace, in that order.
    fn values(&self, entries: &[u32]) -> Result<Vec<ArrayRef>> {
        let Some((encoder, stash)) = &self.stash else {
            return Ok(Vec::new());
        };
        let rows = entries
            .iter()
            .map(|&entry| match self.at[entry as usize] {
                u32::MAX => Err(LakeError::Rewrite(
                    "a replaced row's kept columns were not stashed",
                )),
                at => Ok(stash.row(at as usize)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(encoder.convert_rows(rows).step("decode the kept columns")?)
    }
}
