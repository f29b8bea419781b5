//! A full load into an empty table, written straight into the table's data files while it is
//! staged (see `LakeDestination::copy_while_staging`), then committed in one commit once the
//! load is staged and pending, as the merge would have inserted each row.
//!
//! Nothing is spooled: each batch is fingerprinted, cast to the table's columns and handed to
//! delta-rs's data-file writer, which holds a row group at a time. The files are not in the
//! table until the commit adds them, so a crash or a refusal leaves only unreferenced files
//! (removed here when the load is refused, otherwise by `VACUUM`). The merge's outcome is an
//! append only when the load has no delete and no repeated key: the first is seen as the
//! batches pass, the second by a scan of the written files' key column; either sends the load
//! back to the ordinary merge.

use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, new_null_array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::prelude::ParquetReadOptions;
use deltalake::DeltaTable;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Add};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::{ObjectStore, ObjectStoreExt};
use tracing::warn;

use crate::Result;
use crate::destinations::plan::Value;
use crate::reconcile::{Fingerprint, batch_fingerprint};
use crate::schema::DELETED_COLUMN;

use super::error::StepExt;
use super::merge::{REPEATED_KEYS_MEMORY, cast_strictly, normalize};
use super::sql;
use super::types::{LakeType, TableLayout};

/// Where one table column's values come from.
enum Source {
    /// The load's column of this name.
    Incoming(String),
    /// The load's id.
    LoadId,
    /// NULL (`_syncline_deleted_at`, or a column a former schema added).
    Null,
}

/// The writer of one load's data files, before any is committed.
pub(crate) struct Append {
    writer: DeltaWriter,
    /// The table's columns, as its data files hold them.
    schema: SchemaRef,
    sources: Vec<Source>,
    /// The load's columns as the merge reads them (see `merge::normalize`).
    source_schema: SchemaRef,
    key: String,
    load_id: String,
}

/// A load's data files, written and not yet committed.
pub(crate) struct Appended {
    adds: Vec<Add>,
    /// Count and checksum of every row read, computed on the batches as staged.
    pub received: Fingerprint,
    /// Whether any row is a delete: then the merge's outcome is not an append.
    pub any_deleted: bool,
}

impl Append {
    /// The writer for `load_id` into `table`, which the caller found empty and without
    /// tombstones. `None` when the table has a column of a type syncline never writes.
    pub(crate) fn new(
        table: &DeltaTable,
        layout: &TableLayout,
        load_id: &str,
    ) -> Result<Option<Append>> {
        let plan = layout.merge_plan();
        let Some(schema) = file_schema(table)? else {
            return Ok(None);
        };
        let sources = schema
            .fields()
            .iter()
            .map(|field| match plan.inserted(field.name()) {
                Value::Incoming(column) => Source::Incoming(column.to_owned()),
                Value::LoadId => Source::LoadId,
                Value::Null => Source::Null,
            })
            .collect();
        Ok(Some(Append {
            writer: data_file_writer(table, &schema)?,
            schema,
            sources,
            source_schema: layout.source_schema(),
            key: layout.key.clone(),
            load_id: load_id.to_owned(),
        }))
    }

    /// Writes every batch of `batches` into data files. Memory: one batch and the writer's
    /// open row group.
    pub(crate) async fn write(
        mut self,
        mut batches: BoxStream<'static, Result<RecordBatch>>,
    ) -> Result<Appended> {
        let mut received = Fingerprint::default();
        let mut any_deleted = false;
        while let Some(batch) = batches.next().await {
            let written = async {
                let batch = batch?;
                received.merge(batch_fingerprint(&batch, &self.key)?);
                any_deleted |= batch
                    .column_by_name(DELETED_COLUMN)
                    .and_then(|column| column.as_boolean_opt())
                    .is_some_and(|deleted| deleted.true_count() > 0);
                if batch.num_rows() > 0 {
                    let shaped = self.shape(&normalize(&batch, &self.source_schema)?)?;
                    self.writer
                        .write(&shaped)
                        .await
                        .step("write the table's data files")?;
                }
                Ok::<_, crate::Error>(())
            }
            .await;
            if let Err(err) = written {
                // Files already closed stay unreferenced until `VACUUM`.
                if let Err(abort) = self.writer.abort().await {
                    warn!(error = %abort, "could not abort an unfinished data file");
                }
                return Err(err);
            }
        }
        let adds = self
            .writer
            .close()
            .await
            .step("write the table's data files")?;
        Ok(Appended {
            adds,
            received,
            any_deleted,
        })
    }

    /// The normalized batch as the table's row: what the merge's insert clause writes.
    fn shape(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources.len());
        for (field, source) in self.schema.fields().iter().zip(&self.sources) {
            let column = match source {
                Source::Incoming(name) => {
                    let column = batch.column_by_name(name).ok_or_else(|| {
                        super::LakeError::MissingColumn {
                            column: name.clone(),
                        }
                    })?;
                    cast_strictly(column, field.data_type())?
                }
                Source::LoadId => {
                    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
                        std::iter::repeat_n(self.load_id.as_str(), rows),
                    ));
                    cast_strictly(&ids, field.data_type())?
                }
                Source::Null => new_null_array(field.data_type(), rows),
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// The table's columns as its data files hold them, in the table's order; `None` when one has a
/// type syncline never writes.
pub(super) fn file_schema(table: &DeltaTable) -> Result<Option<SchemaRef>> {
    let snapshot = table.snapshot().step("read the table's schema")?;
    let mut fields = Vec::new();
    for field in snapshot.schema().fields() {
        let Some(ty) = LakeType::from_delta(field.data_type()) else {
            return Ok(None);
        };
        fields.push(Field::new(
            field.name(),
            ty.arrow_type(),
            field.is_nullable(),
        ));
    }
    Ok(Some(Arc::new(Schema::new(fields))))
}

/// delta-rs's data-file writer for `table`'s rows in `schema` (see [`file_schema`]), with the
/// table's target file size and statistics columns. It holds a row group at a time; the files
/// it closes are in no commit until one adds them.
pub(super) fn data_file_writer(table: &DeltaTable, schema: &SchemaRef) -> Result<DeltaWriter> {
    let snapshot = table.snapshot().step("read the table's settings")?;
    let properties = snapshot.table_config();
    let config = WriterConfig::new(
        Arc::clone(schema),
        Vec::new(),
        Some(super::data_file_properties()),
        Some(NonZeroU64::from(properties.target_file_size())),
        None,
        properties.num_indexed_cols(),
        None,
    );
    Ok(DeltaWriter::new(table.object_store(), config))
}

impl Appended {
    /// Whether some key occurs more than once among the written rows, read from the files'
    /// key column; the aggregation spills past [`REPEATED_KEYS_MEMORY`].
    pub(crate) async fn repeats_keys(
        &self,
        table: &DeltaTable,
        store: Arc<dyn ObjectStore>,
        layout: &TableLayout,
    ) -> Result<bool> {
        if self.adds.is_empty() {
            return Ok(false);
        }
        return_freed_memory();
        let ctx = crate::sql::bounded_session(REPEATED_KEYS_MEMORY)
            .step("limit the key check's memory")?;
        // The files by their URLs under the table, read through the root's store (`store`).
        let url = table.table_url();
        ctx.register_object_store(url, store);
        let root = url.as_str().trim_end_matches('/');
        let files: Vec<String> = self
            .adds
            .iter()
            .map(|add| format!("{root}/{}", add.path))
            .collect();
        let written = ctx
            .read_parquet(files, ParquetReadOptions::default())
            .await
            .step("read the written files")?;
        ctx.register_table(sql::STAGED_TABLE, written.into_view())
            .step("read the written files")?;
        let repeated = ctx
            .sql(&sql::repeated_keys(layout))
            .await
            .step("look for repeated keys")?
            .collect()
            .await
            .step("look for repeated keys")?;
        Ok(repeated.iter().any(|batch| batch.num_rows() > 0))
    }

    /// Adds the files to `table` in one commit carrying `properties` (the load's application
    /// transaction and metadata). A blind append: another writer's commit since the snapshot
    /// does not conflict, and the lease keeps other runs of the stream away.
    pub(crate) async fn commit(
        self,
        table: &DeltaTable,
        load_id: &str,
        properties: CommitProperties,
    ) -> Result<()> {
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        let actions = self.adds.into_iter().map(Action::Add).collect();
        super::commit(table, actions, operation, properties, "write", load_id).await
    }

    /// Deletes the written files, which no commit references (best effort: a file left
    /// behind is only storage, until `VACUUM`).
    pub(crate) async fn abandon(self, table: &DeltaTable) {
        delete_unreferenced(table, self.adds).await;
    }
}

/// Deletes data files of `table` that no commit references (best effort: a file left behind
/// is only storage, until `VACUUM`).
pub(super) async fn delete_unreferenced(table: &DeltaTable, adds: Vec<Add>) {
    let store = table.object_store();
    for add in adds {
        let path = object_store::path::Path::from(add.path.as_str());
        if let Err(err) = store.delete(&path).await {
            warn!(error = %err, file = %add.path, "could not delete an unused data file");
        }
    }
}

/// Hands the pages the load's writers freed back to the kernel before the key check builds its
/// aggregation: glibc keeps freed blocks smaller than its `mmap` threshold in its arenas, and
/// the check's memory would stack on top of them (W4, a million rows: about 20 MB less peak).
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives free memory back to the kernel; no live block moves.
    unsafe {
        libc::malloc_trim(0);
    }
}
