//! The example models as sqllogictest files (`tests/slt/models/*.slt`, as DataFusion tests its SQL):
//! the fixture streams (`tests/slt/models/fixtures/NAME.csv`, written to Parquet first, with the
//! `*date` columns as UTC timestamps like staged ones) are registered as tables, the models of
//! `models/hubspot` and `models/salesforce` as views over them, in the order of their graph.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use sqllogictest::{DBOutput, DefaultColumnType};

struct Models {
    ctx: SessionContext,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SqlError(String);

fn cell(column: &dyn Array, row: usize) -> String {
    if column.is_null(row) {
        return "NULL".into();
    }
    match column.data_type() {
        // Rust's shortest form: 750 rather than 750.0, 3000.75 as written.
        DataType::Float64 => column.as_primitive::<Float64Type>().value(row).to_string(),
        _ => arrow::util::display::array_value_to_string(column, row).expect("displayable"),
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Models {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let frame = self
            .ctx
            .sql(sql)
            .await
            .map_err(|e| SqlError(e.to_string()))?;
        let columns = frame.schema().fields().len();
        let batches = frame.collect().await.map_err(|e| SqlError(e.to_string()))?;
        let mut rows = Vec::new();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| cell(c.as_ref(), row))
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows,
        })
    }

    async fn shutdown(&mut self) {}
}

/// A fixture as a staged stream would be: dates as millisecond UTC timestamps.
fn as_staged(batch: &RecordBatch) -> RecordBatch {
    let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.name().ends_with("date") {
            fields.push(Field::new(field.name(), utc.clone(), true));
            columns.push(cast(column, &utc).expect("a fixture date"));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

async fn session(parquet_dir: &Path) -> SessionContext {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ctx = SessionContext::new();
    let mut streams = Vec::new();
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(root.join("tests/slt/models/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fixtures.sort();
    for csv in fixtures {
        let name = csv.file_stem().unwrap().to_str().unwrap().to_string();
        let staging = SessionContext::new();
        let batches = staging
            .read_csv(csv.to_str().unwrap(), CsvReadOptions::new())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let staged: Vec<RecordBatch> = batches.iter().map(as_staged).collect();
        let path = parquet_dir.join(format!("{name}.parquet"));
        let file = std::fs::File::create(&path).unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, staged[0].schema(), None).unwrap();
        for batch in &staged {
            writer.write(batch).unwrap();
        }
        writer.close().unwrap();
        ctx.register_parquet(
            datafusion::common::TableReference::bare(name.as_str()),
            path.to_str().unwrap(),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap();
        streams.push(name);
    }
    for folder in ["hubspot", "salesforce"] {
        let graph = syncline::transform::graph::build_graph(
            &root.join("models").join(folder),
            &Default::default(),
            &streams,
        )
        .expect("the example models form a graph over the fixture streams");
        for model in &graph.models {
            let view = ctx.sql(&model.sql).await.unwrap().into_view();
            ctx.register_table(
                datafusion::common::TableReference::bare(model.name.as_str()),
                view,
            )
            .unwrap();
        }
    }
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_models_pass_their_sqllogictest_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let parquet = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tests/slt/models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let ctx = session(parquet.path()).await;
        let mut runner = sqllogictest::Runner::new(move || {
            let ctx = ctx.clone();
            async move { Ok::<_, SqlError>(Models { ctx }) }
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
