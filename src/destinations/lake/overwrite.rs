//! Model tables in the lake: a model's result replaces the table's contents in one Delta
//! commit (an overwrite carrying the load's application transaction and metadata, like a
//! merge), so a reader sees the old version or the new one, never a half.

use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use std::sync::Arc;

use crate::Result;
use crate::destinations::{ContractError, MergeOutcome, MergeRequest};
use crate::reconcile::{Fingerprint, batch_fingerprint};

use super::{LakeDestination, app_id, commit_error, commit_properties, has_transaction};

/// Delta stores timestamps in microseconds.
fn for_delta(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond => {
                let to = DataType::Timestamp(TimeUnit::Microsecond, tz.clone());
                columns.push(cast(column, &to)?);
                fields.push(Field::new(field.name(), to, field.is_nullable()));
            }
            _ => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

impl LakeDestination {
    /// Replaces the table `request.table` with `batches` (creating it when missing) in one
    /// commit that records `request.load_id`; a load already recorded is skipped. The rows'
    /// count and checksum must equal `request.staged`, or nothing is written.
    pub async fn replace_table(
        &self,
        request: &MergeRequest,
        batches: Vec<RecordBatch>,
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
        let mut received = Fingerprint::default();
        let mut written = Vec::with_capacity(batches.len());
        for batch in &batches {
            received.merge(batch_fingerprint(batch, &request.key)?);
            written.push(for_delta(batch)?);
        }
        if written.is_empty() {
            // An empty result still replaces the table (and delta-rs needs a schema to write).
            written.push(for_delta(&RecordBatch::new_empty(request.schema.clone()))?);
        }
        if received != request.staged {
            return Err(ContractError::ReceivedDiffers {
                destination: "lake",
                load_id: request.load_id.clone(),
                received,
                staged: request.staged,
            }
            .into());
        }
        table
            .write(written)
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
