//! Staging: Parquet (snappy by default, `staging.compression`) on any object store, one folder per pipeline/stream/load.
//!
//! Layout under the staging URL:
//! ```text
//! {pipeline}/{stream}/loads/{load_id}/part-00000.parquet   staged rows, in extraction order
//! {pipeline}/{stream}/loads/{load_id}/dead_letter/part-00000.parquet  records that could not be converted
//! {pipeline}/{stream}/loads/{load_id}/manifest.json        written last: the load is complete
//! {pipeline}/_state/{stream}.json                           cursor and pending load (crate::state)
//! {pipeline}/_locks/{stream}/{generation}.json             the stream's lease (crate::state)
//! ```
//! A load folder without a manifest is an interrupted load and is never merged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
// ParquetObjectReader is deprecated in parquet 59 in favour of a hand-written AsyncFileReader;
// it remains the maintained object_store adapter, so we keep it rather than re-implement it.
#[allow(deprecated)]
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::config::{StageCompression, StagingConfig};
use crate::error::{Classified, ErrorKind};
use crate::load::DeadLetter;
use crate::storage::open_store;
use crate::{Error, Result};

mod loads;
mod manifest;

/// What can go wrong with the stage itself (object store and Parquet failures pass through
/// as the crate error's own variants).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("`staging.url` is not a URL")]
    NotAUrl(#[source] url::ParseError),
    #[error("`staging.url` {0} is not a local path")]
    NotALocalPath(String),
    #[error("`staging.url`: cannot create {}", dir.display())]
    CreateFolder {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("staging is not writable")]
    NotWritable(#[source] object_store::Error),
    #[error(
        "staged file {file} holds {footer} rows by its footer, but {written} were written to it"
    )]
    FooterRows {
        file: String,
        footer: u64,
        written: u64,
    },
    #[error("type {0} cannot be staged")]
    UnstageableType(DataType),
    #[error("the manifest names unknown column type {0}")]
    UnknownColumnType(String),
}

impl Classified for StageError {
    fn kind(&self) -> ErrorKind {
        match self {
            StageError::NotAUrl(_)
            | StageError::NotALocalPath(_)
            | StageError::CreateFolder { .. } => ErrorKind::Config,
            _ => ErrorKind::Stage,
        }
    }
}

pub use loads::StagedLoad;
pub use manifest::{
    ColumnSpec, DeadLetterFile, Manifest, RawLoadFiles, StagedFile, columns_of, schema_of,
};

/// The staging object store and the prefix syncline owns in it.
#[derive(Clone)]
pub struct Stage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    compression: Compression,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage").field("url", &self.url).finish()
    }
}

impl Stage {
    /// Opens the store named by the staging URL. `file://` folders are created when missing.
    pub fn open(config: &StagingConfig) -> Result<Stage> {
        let url = url::Url::parse(&config.url).map_err(StageError::NotAUrl)?;
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|_| StageError::NotALocalPath(config.url.clone()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|source| StageError::CreateFolder { dir, source })?;
        }
        let (store, root) = open_store("staging.url", &url, config.s3.as_ref())?;
        Ok(Stage {
            store,
            root,
            url: config.url.clone(),
            compression: codec(config.compression),
        })
    }

    /// A stage over any store, for tests and embedded use.
    pub fn from_store(store: Arc<dyn ObjectStore>, root: Path, url: impl Into<String>) -> Stage {
        Stage {
            store,
            root,
            url: url.into(),
            compression: codec(StageCompression::default()),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `{root}/{parts...}`
    pub fn path(&self, parts: &[&str]) -> Path {
        let mut path = self.root.clone();
        for part in parts {
            path = path.join(*part);
        }
        path
    }

    pub fn load_dir(&self, pipeline: &str, stream: &str, load_id: &str) -> Path {
        self.path(&[pipeline, stream, "loads", load_id])
    }

    /// The manifest of a load, or `None` when the load never completed staging.
    pub async fn read_manifest(
        &self,
        pipeline: &str,
        stream: &str,
        load_id: &str,
    ) -> Result<Option<Manifest>> {
        let path = self
            .load_dir(pipeline, stream, load_id)
            .clone()
            .join("manifest.json");
        match self.store.get(&path).await {
            Ok(got) => Ok(Some(serde_json::from_slice(&got.bytes().await?)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the manifest; this is the last write of a load and marks it complete.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = self
            .load_dir(&manifest.pipeline, &manifest.stream, &manifest.load_id)
            .clone()
            .join("manifest.json");
        let body = serde_json::to_vec_pretty(manifest)?;
        self.store.put(&path, body.into()).await?;
        Ok(())
    }

    /// Streams the staged rows of a complete load, file by file, batch by batch. The files are
    /// decoded in a task of their own, at most [`READ_AHEAD_BATCHES`] ahead of the consumer,
    /// so decoding overlaps with what the consumer does (a COPY's encoding, say).
    pub fn read_load(&self, manifest: &Manifest) -> BoxStream<'static, Result<RecordBatch>> {
        let files = manifest.files.iter().map(|f| f.path.clone()).collect();
        read_ahead(self.read_files(files), READ_AHEAD_BATCHES)
    }

    /// Streams the rows of staged Parquet files (object store paths), file by file, decoded
    /// in the consumer's task.
    pub fn read_files(&self, files: Vec<String>) -> BoxStream<'static, Result<RecordBatch>> {
        let store = self.store.clone();
        let files: Vec<Path> = files.iter().map(|f| Path::from(f.as_str())).collect();
        stream::iter(files)
            .then(move |path| {
                let store = store.clone();
                async move {
                    let reader = parquet_reader(store, path);
                    let stream = ParquetRecordBatchStreamBuilder::new(reader)
                        .await?
                        .build()?;
                    Ok::<_, Error>(stream.map_err(Error::from))
                }
            })
            .try_flatten()
            .boxed()
    }

    /// The rows the staged `files` hold by their Parquet footers, read from the store: a file
    /// that is missing, cut short (its footer is its last bytes) or holds other rows than were
    /// written to it is an error. This is the stage hop of a load's reconciliation; the
    /// checksum of that hop is computed on the batches as they are handed to the encoder, so
    /// the rows are not decoded again: the destination's own checksum covers the files'
    /// contents whenever they are what it loads (a replay, Snowflake's COPY).
    pub async fn footer_rows(&self, files: &[StagedFile]) -> Result<u64> {
        let mut total = 0;
        for file in files {
            let reader = parquet_reader(self.store.clone(), Path::from(file.path.as_str()));
            let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
            let footer = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
            if footer != file.rows {
                return Err(StageError::FooterRows {
                    file: file.path.clone(),
                    footer,
                    written: file.rows,
                }
                .into());
            }
            total += footer;
        }
        Ok(total)
    }
}

/// Batches decoded ahead of their consumer by [`Stage::read_load`]; memory holds at most this
/// plus the one being decoded and the one being consumed.
pub const READ_AHEAD_BATCHES: usize = 1;

/// Batches waiting for the writer's task in [`LoadWriter::spawn`].
pub const WRITE_BEHIND_BATCHES: usize = 1;

/// Polls `batches` in a task of its own, keeping at most `ahead` batches ready. The task ends
/// at the stream's end, at its first error (the last item), or when the consumer drops the
/// returned stream.
fn read_ahead(
    batches: BoxStream<'static, Result<RecordBatch>>,
    ahead: usize,
) -> BoxStream<'static, Result<RecordBatch>> {
    stream::once(async move {
        let (sender, receiver) = tokio::sync::mpsc::channel(ahead);
        tokio::spawn(async move {
            let mut batches = batches;
            while let Some(item) = batches.next().await {
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        tokio_stream_of(receiver)
    })
    .flatten()
    .boxed()
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed()
}

/// A [`LoadWriter`] working in a task of its own (see [`LoadWriter::spawn`]).
pub struct SpawnedWriter {
    sender: Option<tokio::sync::mpsc::Sender<RecordBatch>>,
    task: Option<tokio::task::JoinHandle<Result<(Vec<StagedFile>, Duration)>>>,
}

impl SpawnedWriter {
    /// Queues `batch` for the writer, waiting while [`WRITE_BEHIND_BATCHES`] already wait. A
    /// writer that failed returns its error here.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let sender = self.sender.as_ref().expect("the writer is not finished");
        if sender.send(batch).await.is_ok() {
            return Ok(());
        }
        // The task ended before the load did: only an error ends it early.
        self.sender = None;
        match self.join().await {
            Err(err) => Err(err),
            Ok(_) => unreachable!("the writer's task ends early only on an error"),
        }
    }

    /// Waits for the queued batches to be written and the last file closed. Returns the
    /// files and the time the writer spent encoding and writing.
    pub async fn finish(mut self) -> Result<(Vec<StagedFile>, Duration)> {
        self.sender = None;
        self.join().await
    }

    async fn join(&mut self) -> Result<(Vec<StagedFile>, Duration)> {
        let task = self.task.take().expect("the writer's task is joined once");
        match task.await {
            Ok(outcome) => outcome,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
}

impl Drop for SpawnedWriter {
    /// A load abandoned midway (an error upstream) stops its writer; its files are never
    /// listed in a manifest.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Writes one load's batches as Parquet files, starting a new file every `file_rows` rows.
pub struct LoadWriter {
    stage: Stage,
    dir: Path,
    schema: SchemaRef,
    file_rows: usize,
    properties: WriterProperties,
    current: Option<(AsyncArrowWriter<BufWriter>, StagedFile)>,
    files: Vec<StagedFile>,
}

/// Rows per Parquet row group: what the writer buffers in memory before flushing (its pages,
/// then the encoded row group on its way to the upload).
const ROW_GROUP_ROWS: usize = 32 * 1024;

/// What a staged file's upload buffers before it sends a part: S3's smallest multipart part
/// (object_store's default is twice that, memory every open file holds).
const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;

/// The Parquet codec of `staging.compression`.
fn codec(compression: StageCompression) -> Compression {
    match compression {
        StageCompression::Snappy => Compression::SNAPPY,
        StageCompression::Zstd => {
            Compression::ZSTD(ZstdLevel::try_new(1).expect("zstd level 1 is valid"))
        }
        StageCompression::None => Compression::UNCOMPRESSED,
    }
}

/// No dictionary pages and no statistics: a staged load is written once and read whole (never
/// filtered or pruned), so the writer's time goes to compression (`staging.compression`), not to
/// dictionaries and min/max values that nothing reads (the min/max of every text value alone
/// was about 8 % of W1's user CPU).
fn writer_properties(compression: Compression) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

impl LoadWriter {
    pub fn new(stage: &Stage, dir: Path, schema: SchemaRef, file_rows: usize) -> LoadWriter {
        LoadWriter {
            stage: stage.clone(),
            dir,
            schema,
            file_rows,
            properties: writer_properties(stage.compression),
            current: None,
            files: Vec::new(),
        }
    }

    /// Stores `columns` without compression: hex digests (a transform's `hash`) are random
    /// over 16 symbols, which zstd halves at most while spending more of the writer's time on
    /// them than on every other column together.
    pub fn uncompressed(mut self, columns: &[String]) -> LoadWriter {
        let mut builder = self.properties.into_builder();
        for column in columns {
            builder = builder.set_column_compression(
                ColumnPath::from(column.as_str()),
                Compression::UNCOMPRESSED,
            );
        }
        self.properties = builder.build();
        self
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(_, f)| f.rows >= self.file_rows as u64)
        {
            self.close_current().await?;
        }
        if self.current.is_none() {
            let path = self
                .dir
                .clone()
                .join(format!("part-{:05}.parquet", self.files.len()));
            let object =
                BufWriter::with_capacity(self.stage.store.clone(), path.clone(), UPLOAD_PART_BYTES);
            let writer = AsyncArrowWriter::try_new(
                object,
                self.schema.clone(),
                Some(self.properties.clone()),
            )?;
            self.current = Some((
                writer,
                StagedFile {
                    path: path.to_string(),
                    rows: 0,
                },
            ));
        }
        let (writer, file) = self.current.as_mut().expect("a file is open");
        writer.write(batch).await?;
        file.rows += batch.num_rows() as u64;
        Ok(())
    }

    async fn close_current(&mut self) -> Result<()> {
        if let Some((writer, file)) = self.current.take() {
            writer.close().await?;
            self.files.push(file);
        }
        Ok(())
    }

    /// Closes the last file and returns the files written.
    pub async fn finish(mut self) -> Result<Vec<StagedFile>> {
        self.close_current().await?;
        Ok(self.files)
    }

    /// Moves the writer to a task of its own, so that encoding Parquet overlaps with whatever
    /// produces the batches; at most [`WRITE_BEHIND_BATCHES`] batches wait for it.
    pub fn spawn(mut self) -> SpawnedWriter {
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<RecordBatch>(WRITE_BEHIND_BATCHES);
        let task = tokio::spawn(async move {
            let mut busy = Duration::ZERO;
            while let Some(batch) = receiver.recv().await {
                let writing = Instant::now();
                self.write(&batch).await?;
                busy += writing.elapsed();
            }
            let closing = Instant::now();
            let files = self.finish().await?;
            busy += closing.elapsed();
            Ok((files, busy))
        });
        SpawnedWriter {
            sender: Some(sender),
            task: Some(task),
        }
    }
}

/// The Arrow schema of dead-letter files.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("field", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("load_id", DataType::Utf8, false),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// Collects dead letters of a load into `dead_letter.parquet` (written only when there are any).
pub struct DeadLetterWriter {
    writer: LoadWriter,
    load_id: String,
    rows: u64,
}

impl DeadLetterWriter {
    pub fn new(stage: &Stage, dir: Path, load_id: &str) -> DeadLetterWriter {
        // A single file: dead letters are few, and readers expect one path.
        let writer = LoadWriter::new(
            stage,
            dir.join("dead_letter"),
            dead_letter_schema(),
            usize::MAX,
        );
        DeadLetterWriter {
            writer,
            load_id: load_id.to_string(),
            rows: 0,
        }
    }

    pub async fn write(&mut self, letters: &[DeadLetter]) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        use arrow::array::{StringArray, TimestampMillisecondArray};
        let now = chrono::Utc::now().timestamp_millis();
        let batch = RecordBatch::try_new(
            dead_letter_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    letters.iter().map(|l| l.key.as_str()),
                )),
                Arc::new(StringArray::from_iter(
                    letters.iter().map(|l| l.field.as_deref()),
                )),
                Arc::new(StringArray::from_iter_values(
                    letters.iter().map(|l| l.reason.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    letters.iter().map(|l| l.raw.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    letters.iter().map(|_| self.load_id.as_str()),
                )),
                Arc::new(
                    TimestampMillisecondArray::from(vec![now; letters.len()]).with_timezone("UTC"),
                ),
            ],
        )?;
        self.writer.write(&batch).await?;
        self.rows += letters.len() as u64;
        Ok(())
    }

    pub async fn finish(self) -> Result<Option<DeadLetterFile>> {
        let rows = self.rows;
        let files = self.writer.finish().await?;
        Ok(files
            .into_iter()
            .next()
            .map(|f| DeadLetterFile { path: f.path, rows }))
    }
}

/// Reads every row of a dead-letter file (small by construction), for reports and tests.
pub async fn read_dead_letters(stage: &Stage, file: &DeadLetterFile) -> Result<Vec<DeadLetter>> {
    read_dead_letters_at(stage, &Path::from(file.path.as_str())).await
}

/// Reads every row of the dead-letter file at `path` (also one whose load `gc` collected).
pub async fn read_dead_letters_at(stage: &Stage, path: &Path) -> Result<Vec<DeadLetter>> {
    let reader = parquet_reader(stage.store.clone(), path.clone());
    let batches: Vec<RecordBatch> = ParquetRecordBatchStreamBuilder::new(reader)
        .await?
        .build()?
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for batch in batches {
        let text = |i: usize| batch.column(i).as_string::<i32>().clone();
        let (key, field, reason, raw) = (text(0), text(1), text(2), text(3));
        for row in 0..batch.num_rows() {
            out.push(DeadLetter {
                key: key.value(row).to_string(),
                field: (!field.is_null(row)).then(|| field.value(row).to_string()),
                reason: reason.value(row).to_string(),
                raw: raw.value(row).to_string(),
            });
        }
    }
    Ok(out)
}

/// A Parquet reader of the object at `path` in `store` (staged files, and the lake's data files
/// a merge wrote and has not committed yet).
#[allow(deprecated)]
pub(crate) fn parquet_reader(store: Arc<dyn ObjectStore>, path: Path) -> ParquetObjectReader {
    ParquetObjectReader::new(store, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    async fn one_file(stage: &Stage) -> StagedFile {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..1000))],
        )
        .unwrap();
        let dir = stage.load_dir("pipeline", "stream", "load");
        let mut writer = LoadWriter::new(stage, dir, schema, 10_000);
        writer.write(&batch).await.unwrap();
        writer.finish().await.unwrap().remove(0)
    }

    #[tokio::test]
    async fn footers_confirm_the_rows_written_and_catch_a_short_or_different_file() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::open(&StagingConfig {
            url: url::Url::from_directory_path(dir.path())
                .unwrap()
                .to_string(),
            s3: None,
            compression: StageCompression::Snappy,
        })
        .unwrap();
        let file = one_file(&stage).await;
        assert_eq!(
            stage
                .footer_rows(std::slice::from_ref(&file))
                .await
                .unwrap(),
            1000
        );

        // The writer counted other rows than the file holds.
        let miscounted = StagedFile {
            rows: 999,
            ..file.clone()
        };
        let err = stage.footer_rows(&[miscounted]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Stage);
        assert!(
            err.report()
                .contains("holds 1000 rows by its footer, but 999"),
            "{}",
            err.report()
        );

        // A file cut short has no footer; a file that is gone is no file.
        let on_disk = std::path::Path::new("/").join(&file.path);
        assert!(on_disk.starts_with(dir.path()), "{}", on_disk.display());
        let bytes = std::fs::read(&on_disk).unwrap();
        std::fs::write(&on_disk, &bytes[..bytes.len() / 2]).unwrap();
        assert!(
            stage
                .footer_rows(std::slice::from_ref(&file))
                .await
                .is_err()
        );
        std::fs::remove_file(&on_disk).unwrap();
        assert!(stage.footer_rows(&[file]).await.is_err());
    }
}
