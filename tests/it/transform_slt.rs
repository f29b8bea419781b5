//! The declarative stream transforms as sqllogictest files (`tests/slt/transforms/*.slt`), run over a
//! fixture load staged as real Parquet.
//!
//! Besides plain SQL (run by DataFusion over the tables below), a statement may be
//!
//! ```text
//! statement ok
//! transform contacts
//! select = ["id", "email"]      <- the body of a [streams.contacts] table
//! ```
//!
//! which runs that transform through `pipeline::transform` over the staged fixture (as a
//! run would: transformed Parquet written beside the raw files, `raw = transformed +
//! filtered` checked) and registers the result as `contacts_out`, its figures as
//! `transform_counts(transformed, filtered)`. A configuration error is the statement's error
//! (`statement error <regex>`). `contacts_raw` is the fixture as staged.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use syncline::config::Config;
use syncline::pipeline::transform::{RawLoad, StreamTransform};
use syncline::reconcile::{Fingerprint, batch_fingerprint};
use syncline::stage::{LoadWriter, Stage, StagedFile};

const T0: i64 = 1_709_251_200_000;

/// Ten contacts; 4 and 8 are `other`, 9 is a delete whose row says `other` too.
fn fixture() -> RecordBatch {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("FirstName", DataType::Utf8, true),
        Field::new("lifecyclestage", DataType::Utf8, true),
        Field::new("annualrevenue", DataType::Utf8, true),
        Field::new("properties_city", DataType::Utf8, true),
        Field::new("properties_zip", DataType::Utf8, true),
        Field::new("notes", DataType::Utf8, true),
        Field::new(
            "_syncline_version",
            syncline::schema::timestamp_type(),
            false,
        ),
        Field::new("_syncline_deleted", DataType::Boolean, false),
    ]));
    let ids: Vec<i64> = (1..=10).collect();
    let text = |f: &dyn Fn(i64) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(ids.iter().map(|&i| f(i))))
    };
    let stage = |i: i64| {
        Some(match i {
            4 | 8 | 9 => "other".to_string(),
            i if i % 2 == 0 => "customer".to_string(),
            _ => "lead".to_string(),
        })
    };
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            text(&|i| (i != 10).then(|| format!("user{i}@example.com"))),
            text(&|i| Some(format!("Name{i}"))),
            text(&stage),
            text(&|i| Some(format!("{}.50", i * 100))),
            text(&|i| Some(format!("city{i}"))),
            text(&|i| Some(format!("{:05}", i))),
            text(&|_| Some("private".to_string())),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(ids.iter().map(|i| T0 + i))
                    .with_timezone("UTC"),
            ),
            Arc::new(BooleanArray::from_iter(ids.iter().map(|&i| Some(i == 9)))),
        ],
    )
    .expect("fixture batch")
}

struct TransformDb {
    dir: tempfile::TempDir,
    stage: Stage,
    raw_files: Vec<StagedFile>,
    raw_schema: SchemaRef,
    raw: Fingerprint,
    ctx: SessionContext,
    runs: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

impl TransformDb {
    async fn new() -> TransformDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let stage_dir = dir.path().join("stage");
        std::fs::create_dir_all(&stage_dir).unwrap();
        let stage = Stage::open(&syncline::config::StagingConfig {
            url: format!("file://{}", stage_dir.display()),
            s3: None,
            compression: Default::default(),
        })
        .expect("stage");
        let batch = fixture();
        let mut writer = LoadWriter::new(
            &stage,
            stage.load_dir("slt", "contacts", "raw"),
            batch.schema(),
            4,
        );
        // Two rows at a time, so the load spans several files, as a large one would.
        for start in (0..batch.num_rows()).step_by(2) {
            writer.write(&batch.slice(start, 2)).await.unwrap();
        }
        let raw_files = writer.finish().await.unwrap();
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_information_schema(true),
        );
        ctx.register_table(
            "contacts_raw",
            Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap()),
        )
        .unwrap();
        TransformDb {
            raw: batch_fingerprint(&batch, "id").unwrap(),
            raw_schema: batch.schema(),
            dir,
            stage,
            raw_files,
            ctx,
            runs: 0,
        }
    }

    fn config(&self, body: &str) -> Result<Config, SltError> {
        let text = format!(
            "[pipeline]\nname = \"slt\"\n[staging]\nurl = \"file://{dir}/stage\"\n\
             [source]\ntype = \"files\"\nurl = \"file://{dir}\"\nstreams = [\"contacts\"]\n\
             [source.files.contacts]\nglob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
             [destination]\ntype = \"lake\"\n[streams.contacts]\n{body}\n",
            dir = self.dir.path().display()
        );
        Config::parse(&text, &self.dir.path().join("slt.toml"), &|_| None)
            .map_err(|e| SltError(e.report()))
    }

    async fn transform(&mut self, body: &str) -> Result<u64, SltError> {
        // `@sql` starts a SQL transform's file body.
        let body = match body.split_once("@sql") {
            Some((_, sql)) => {
                std::fs::write(self.dir.path().join("contacts.sql"), sql).unwrap();
                "sql = \"contacts.sql\"".to_string()
            }
            None => body.to_string(),
        };
        let config = self.config(&body)?;
        let fail = |e: syncline::Error| SltError(e.report());
        let transform = StreamTransform::prepare(&config, "contacts")
            .map_err(fail)?
            .ok_or_else(|| SltError("no transform keys".into()))?;
        transform
            .compile(&self.raw_schema, "id")
            .await
            .map_err(fail)?;
        self.runs += 1;
        let done = transform
            .run(
                &self.stage,
                RawLoad {
                    load_id: "raw",
                    key: "id",
                    schema: self.raw_schema.clone(),
                    files: &self.raw_files,
                    fingerprint: self.raw,
                },
                self.stage
                    .load_dir("slt", "contacts", &format!("run-{}", self.runs)),
                3,
                4,
            )
            .await
            .map_err(fail)?;
        let paths = done.files.iter().map(|f| f.path.clone()).collect();
        let batches: Vec<RecordBatch> = self
            .stage
            .read_files(paths)
            .try_collect()
            .await
            .map_err(fail)?;
        let schema = syncline::stage::schema_of(&done.schema).map_err(fail)?;
        let table =
            MemTable::try_new(schema, vec![batches]).map_err(|e| SltError(e.to_string()))?;
        let _ = self.ctx.deregister_table("contacts_out");
        self.ctx
            .register_table("contacts_out", Arc::new(table))
            .map_err(|e| SltError(e.to_string()))?;
        let _ = self.ctx.deregister_table("transform_counts");
        self.ctx
            .register_table(
                "transform_counts",
                Arc::new(
                    MemTable::try_new(
                        Arc::new(Schema::new(vec![
                            Field::new("key", DataType::Utf8, false),
                            Field::new("transformed", DataType::Int64, false),
                            Field::new("filtered", DataType::Int64, false),
                        ])),
                        vec![vec![
                            RecordBatch::try_new(
                                Arc::new(Schema::new(vec![
                                    Field::new("key", DataType::Utf8, false),
                                    Field::new("transformed", DataType::Int64, false),
                                    Field::new("filtered", DataType::Int64, false),
                                ])),
                                vec![
                                    Arc::new(StringArray::from(vec![done.key.clone()])),
                                    Arc::new(Int64Array::from(vec![done.transformed.rows as i64])),
                                    Arc::new(Int64Array::from(vec![done.filtered.rows as i64])),
                                ],
                            )
                            .unwrap(),
                        ]],
                    )
                    .unwrap(),
                ),
            )
            .map_err(|e| SltError(e.to_string()))?;
        Ok(done.transformed.rows)
    }
}

#[async_trait::async_trait]
impl AsyncDB for TransformDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if let Some(body) = sql.trim_start().strip_prefix("transform contacts") {
            let rows = self.transform(body).await?;
            return Ok(DBOutput::StatementComplete(rows));
        }
        let frame = self
            .ctx
            .sql(sql)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let types = frame
            .schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int64 | DataType::Int32 => DefaultColumnType::Integer,
                DataType::Float64 => DefaultColumnType::FloatingPoint,
                DataType::Utf8 | DataType::Utf8View => DefaultColumnType::Text,
                _ => DefaultColumnType::Any,
            })
            .collect();
        let batches = frame.collect().await.map_err(|e| SltError(e.to_string()))?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters: Vec<ArrayFormatter> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_transforms_over_staged_parquet() {
    // SAFETY: set before any other thread reads the environment in this test process
    // (nextest runs each test in its own process).
    unsafe { std::env::set_var("SYNCLINE_HASH_SALT", "pepper") };
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt/transforms");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .expect("tests/slt/transforms")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", folder.display());
    for file in files {
        let db = TransformDb::new().await;
        let mut slot = Some(db);
        let mut runner = sqllogictest::Runner::new(move || {
            let db = slot.take().expect("one connection per file");
            async move { Ok::<_, SltError>(db) }
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
