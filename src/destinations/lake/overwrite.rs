//! Model tables in the lake: a model's result replaces the table's contents in one Delta
//! commit (an overwrite carrying the load's application transaction and metadata, like a
//! merge), so a reader sees the old version or the new one, never a half.
//!
//! The rows stream through: each batch is fingerprinted and spooled to local Parquet as it
//! arrives, and delta-rs's writer scans the spool one row group at a time, so memory holds a
//! batch and a row group whatever the table's size (as the merge's, see [`super::merge`]).

use std::sync::Arc;

use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use futures::StreamExt;
use futures::stream::BoxStream;
use parquet::arrow::AsyncArrowWriter;

use crate::Result;
use crate::destinations::{ContractError, MergeOutcome, MergeRequest};
use crate::reconcile::{Fingerprint, batch_fingerprint};

use super::LakeError;
use super::error::StepExt;
use super::merge::{Spool, spool_properties};
use super::{LakeDestination, app_id, commit_error, commit_properties, has_transaction};

/// `schema` as Delta stores it: timestamps in microseconds.
fn delta_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond => Field::new(
                field.name(),
                DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
                field.is_nullable(),
            ),
            _ => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The batch in `schema` (see [`delta_schema`]).
fn for_delta(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if column.data_type() == field.data_type() {
            columns.push(column.clone());
        } else {
            columns.push(cast(column, field.data_type())?);
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

impl LakeDestination {
    /// Replaces the table `request.table` with the rows of `batches` (creating it when
    /// missing) in one commit that records `request.load_id`; a load already recorded is
    /// skipped. The rows' count and checksum must equal `request.staged`, or nothing is
    /// written.
    ///
    /// Memory: one batch and one row group at a time. The rows are spooled to a local Parquet
    /// file (under `TMPDIR`) first, because the fingerprint must be checked before the commit
    /// and a stream can be read only once.
    pub async fn replace_table(
        &self,
        request: &MergeRequest,
        mut batches: BoxStream<'static, Result<RecordBatch>>,
    ) -> Result<MergeOutcome> {
        let table = match self.open_table(&request.table).await? {
            Some(table) => {
                if has_transaction(&table, &app_id(&request.load_id)).await? {
                    return Ok(MergeOutcome {
                        skipped: true,
                        ..MergeOutcome::default()
                    });
                }
                table
            }
            None => self.unloaded_table(&request.table)?,
        };
        let schema = delta_schema(&request.schema);
        let spool = Spool::create()?;
        let path = spool.file();
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|source| LakeError::Spool {
                step: "create the spool file",
                dir: spool.dir.clone(),
                source,
            })?;
        let mut writer = AsyncArrowWriter::try_new(file, schema.clone(), Some(spool_properties()))
            .step("spool the model's rows")?;
        let mut received = Fingerprint::default();
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            received.merge(batch_fingerprint(&batch, &request.key)?);
            if batch.num_rows() > 0 {
                writer
                    .write(&for_delta(&batch, &schema)?)
                    .await
                    .step("spool the model's rows")?;
            }
        }
        writer.close().await.step("spool the model's rows")?;
        if received != request.staged {
            return Err(ContractError::ReceivedDiffers {
                destination: "lake",
                load_id: request.load_id.clone(),
                received,
                staged: request.staged,
            }
            .into());
        }

        let ctx: SessionContext = deltalake::delta_datafusion::create_session().into_inner();
        let path = path.to_str().ok_or_else(|| LakeError::Spool {
            step: "name the spool file",
            dir: spool.dir.clone(),
            source: std::io::Error::other("the path is not UTF-8"),
        })?;
        // An empty result still replaces the table: the spool holds the schema and no row.
        let rows = ctx
            .read_parquet(path, ParquetReadOptions::default().schema(schema.as_ref()))
            .await
            .step("read the spooled rows")?;
        table
            .write(Vec::new())
            .with_input_plan(rows.into_unoptimized_plan())
            .with_session_state(Arc::new(ctx.state()))
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite)
            .with_writer_properties(super::data_file_properties())
            .with_commit_properties(commit_properties(request, received))
            .await
            .map_err(|err| commit_error("overwrite", &request.load_id, err))?;
        Ok(MergeOutcome {
            skipped: false,
            inserted: received.rows,
            updated: 0,
            deleted: 0,
            received,
            // A model's table is replaced whole; its phases are not broken down.
            timings: Default::default(),
        })
    }
}
