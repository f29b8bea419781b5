//! `syncline reconcile` for the file source: the files hold no order and may repeat a key, so
//! a full read of the current files is fed to DataFusion, which keeps each key's newest version
//! (a delete hides the key) and sorts by key, spilling to disk past a memory limit.

use std::sync::{Arc, Mutex};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;

use super::FilesError;
use crate::Result;
use crate::reconcile::drift::{self, Key, Listed, Listing};
use crate::schema::{DELETED_COLUMN, VERSION_COLUMN};
use crate::sources::Extracted;
use crate::sql::{quote_ident, render};

const LIST_KEYS: &str = include_str!("../../../sql/files/list_keys.sql");

/// Memory the dedup and sort may use before they spill to disk.
const SORT_MEMORY: usize = 128 * 1024 * 1024;

/// The staged batches of a full read, once, as DataFusion's one partition.
struct OneShot {
    schema: SchemaRef,
    batches: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneShot").finish_non_exhaustive()
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        self.batches
            .lock()
            .expect("one-shot partition")
            .take()
            .unwrap_or_else(|| {
                Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::empty(),
                ))
            })
    }
}

/// The current records of a full read (`items`, of the staged `schema`) as a sorted listing of
/// key and version.
pub async fn sorted_keys(
    schema: SchemaRef,
    key: &str,
    items: futures::stream::BoxStream<'static, Result<Extracted>>,
) -> Result<Listing> {
    let batches = items.filter_map(|item| {
        futures::future::ready(match item {
            Ok(Extracted::Batch(batch)) => Some(Ok(batch)),
            Ok(_) => None,
            Err(err) => Some(Err(datafusion::error::DataFusionError::External(Box::new(
                err,
            )))),
        })
    });
    let partition = OneShot {
        schema: schema.clone(),
        batches: Mutex::new(Some(Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            batches,
        )))),
    };
    let failed = |source| FilesError::Listing { source };
    let table =
        datafusion::catalog::streaming::StreamingTable::try_new(schema, vec![Arc::new(partition)])
            .map_err(failed)?;
    let ctx = crate::sql::bounded_session(SORT_MEMORY).map_err(failed)?;
    ctx.register_table("rows", Arc::new(table))
        .map_err(failed)?;
    let statement = render(
        LIST_KEYS,
        &[
            ("key", &quote_ident(key)),
            ("version", &quote_ident(VERSION_COLUMN)),
            ("deleted", &quote_ident(DELETED_COLUMN)),
        ],
    );
    let frame = ctx.sql(&statement).await.map_err(failed)?;
    let sorted = frame.execute_stream().await.map_err(failed)?;
    let micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Ok(sorted
        .map(move |batch| {
            let batch = batch.map_err(failed)?;
            let keys = drift::arrow_keys(&batch, "k")?;
            let versions = arrow::compute::cast(batch.column(1), &micros)?;
            let versions = versions.as_primitive::<TimestampMicrosecondType>();
            Ok(keys
                .into_iter()
                .enumerate()
                .map(|(row, key)| Listed {
                    key,
                    version: Some(versions.value(row)),
                    hash: None,
                })
                .collect())
        })
        .boxed())
}

/// The rows of `batch` whose key is one of `keys`.
pub fn with_keys(
    batch: &RecordBatch,
    key: &str,
    keys: &std::collections::HashSet<Key>,
) -> Result<RecordBatch> {
    let wanted: BooleanArray = drift::arrow_keys(batch, key)?
        .iter()
        .map(|k| Some(keys.contains(k)))
        .collect();
    Ok(arrow::compute::filter_record_batch(batch, &wanted)?)
}
