//! The file source: CSV and JSONL exports on any object store (`file://`, `s3://`).
//!
//! - A stream is the files under `source.url` whose relative path matches its glob, read in
//!   path order. Each file is streamed (never held whole in memory) on a blocking thread and
//!   cut into batches of `batch_rows`.
//! - Incremental by file: the state saved with the cursor lists every file seen (size, e_tag,
//!   last-modified). A listed file that is unchanged is never read again; a new or changed
//!   file is read in full, and the merge keeps the newest version of each key.
//! - Row versions come from the data (`version_column`) where the stream has one; otherwise
//!   they are the file's last-modified time, which a touch or a copy moves without changing a
//!   byte. So that such a re-read never puts older rows over newer ones, a stream without a
//!   version column remembers each file's content (an MD5 of its bytes, computed before the
//!   file is read) and the version its rows were first given: a new or changed file whose
//!   bytes are those of a file already loaded (the same path touched, or a copy under another
//!   name) is not read again, only remembered under its new metadata, and a full load
//!   (`--full-refresh`, which also gets the saved state) reads every content once at the
//!   version it was first given.
//! - The cursor is the largest `cursor_column` value read (rows below the saved cursor are
//!   skipped, rows at it re-read), else the newest last-modified time of the files.
//! - Lines that do not parse or convert become dead letters naming file and line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::Result;
use crate::load::CursorRange;
use crate::reconcile::drift::{Compare, Key, SourceListing};
use crate::schema::{deleted_field, version_field};
use crate::sources::{ExtractRequest, Extracted, Extraction, Source};
use crate::storage::open_store;

pub mod config;
mod error;
mod layout;
mod listing;
mod parse;
mod reader;

use config::ColumnType;
pub use config::{FileStreamConfig, FilesConfig};
pub use error::FilesError;
use error::ReadError;
use layout::Layout;
use md5::{Digest, Md5};
use reader::{FileToRead, Load, LoadError, ObjectReader, infer_columns};

/// The cursor of a `cursor_column` stream that has read no row yet: below any value a file
/// holds, yet far enough from `i64::MIN` that a lag computed from it cannot overflow.
const NOTHING_READ: i64 = i64::MIN / 2;

/// The files loaded so far, saved with the cursor (`Extraction::state`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct FilesState {
    /// Relative path → the version of the file that was loaded.
    files: BTreeMap<String, LoadedFile>,
}

/// A file as it was when it was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LoadedFile {
    #[serde(flatten)]
    version: FileVersion,
    /// The MD5 of its bytes (hex), for streams whose row versions are file times; absent for
    /// streams with a version column and in states saved before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    /// The version its rows were given, when not its last-modified time: the time of the
    /// file whose identical content was loaded first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rows_version: Option<i64>,
}

impl LoadedFile {
    fn rows_version(&self) -> i64 {
        self.rows_version.unwrap_or(self.version.last_modified)
    }
}

/// What tells one version of a file from another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileVersion {
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e_tag: Option<String>,
    /// Epoch milliseconds.
    last_modified: i64,
}

/// A file that matches a stream's glob.
#[derive(Debug, Clone)]
struct Listed {
    location: Path,
    relative: String,
    version: FileVersion,
}

pub struct FilesSource {
    config: FilesConfig,
    store: Arc<dyn ObjectStore>,
    root: Path,
    layouts: Mutex<HashMap<String, Arc<Layout>>>,
}

impl FilesSource {
    pub fn new(config: &FilesConfig) -> Result<FilesSource> {
        let url = url::Url::parse(&config.url).map_err(FilesError::NotAUrl)?;
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|_| FilesError::NotALocalPath(config.url.clone()))?;
            if !dir.is_dir() {
                return Err(FilesError::NoSuchFolder(config.url.clone()).into());
            }
        }
        let (store, root) = open_store("source.url", &url, config.s3.as_ref())?;
        Ok(FilesSource {
            config: config.clone(),
            store,
            root,
            layouts: Mutex::default(),
        })
    }

    fn stream_config(&self, stream: &str) -> Result<&FileStreamConfig> {
        self.config
            .stream(stream)
            .ok_or_else(|| FilesError::NoSuchStream(stream.to_string()).into())
    }

    /// The files matching the stream's glob, in path order.
    async fn list(&self, stream: &str) -> Result<Vec<Listed>> {
        let config = self.stream_config(stream)?;
        let glob = globset::GlobBuilder::new(&config.glob)
            // `*` stays inside a folder; `**` crosses folders.
            .literal_separator(true)
            .build()
            .map_err(|source| FilesError::BadGlob {
                stream: stream.to_string(),
                source,
            })?
            .compile_matcher();
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&self.root))
            .try_collect()
            .await
            .map_err(|source| FilesError::List {
                url: self.config.url.clone(),
                source,
            })?;
        let mut listed: Vec<Listed> = objects
            .into_iter()
            .filter_map(|meta| {
                let relative = meta
                    .location
                    .prefix_match(&self.root)?
                    .map(|part| part.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/");
                glob.is_match(&relative).then(|| Listed {
                    relative,
                    version: FileVersion {
                        size: meta.size,
                        e_tag: meta.e_tag.clone(),
                        last_modified: meta.last_modified.timestamp_millis(),
                    },
                    location: meta.location,
                })
            })
            .collect();
        listed.sort_by(|a, b| a.relative.cmp(&b.relative));
        Ok(listed)
    }

    /// The contents (see [`FilesSource::content_of`]) of the listed files that `extract` needs
    /// one for and has none saved, by relative path: one file per core at a time, since each
    /// digest reads a whole file before any of it is loaded.
    async fn contents_of(
        &self,
        listed: &[Listed],
        loaded: &FilesState,
        full: bool,
        by_content: bool,
    ) -> Result<HashMap<String, String>> {
        if !by_content {
            return Ok(HashMap::new());
        }
        let needed = listed.iter().filter(|f| {
            let saved = loaded
                .files
                .get(&f.relative)
                .filter(|saved| saved.version == f.version);
            match saved {
                Some(saved) => full && saved.content.is_none(),
                None => true,
            }
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let digests: Vec<_> = needed
            .map(|f| {
                let (store, location) = (self.store.clone(), f.location.clone());
                let relative = f.relative.clone();
                async move {
                    Ok((
                        relative.clone(),
                        content_of(store, location, relative).await?,
                    ))
                }
            })
            .collect();
        futures::stream::iter(digests)
            .buffered(cores)
            .try_collect()
            .await
    }

    /// The stream's layout: declared, or inferred from the first matching file with records.
    async fn layout(&self, stream: &str, listed: &[Listed]) -> Result<Arc<Layout>> {
        if let Some(found) = self.layouts.lock().expect("layouts").get(stream) {
            return Ok(found.clone());
        }
        let config = self.stream_config(stream)?;
        let columns = match config.declared() {
            Some(declared) => declared,
            None => self.infer(stream, config, listed).await?,
        };
        let layout = Arc::new(Layout::new(stream, config, columns)?);
        self.layouts
            .lock()
            .expect("layouts")
            .insert(stream.to_string(), layout.clone());
        Ok(layout)
    }

    async fn infer(
        &self,
        stream: &str,
        config: &FileStreamConfig,
        listed: &[Listed],
    ) -> Result<Vec<(String, ColumnType)>> {
        for file in listed {
            let (store, location, config) =
                (self.store.clone(), file.location.clone(), config.clone());
            let handle = Handle::current();
            let columns = tokio::task::spawn_blocking(move || {
                let reader = ObjectReader::open(&handle, &store, &location)?;
                infer_columns(&config, reader, config.infer_rows)
            })
            .await
            .map_err(FilesError::InferenceStopped)?
            .map_err(|source| FilesError::Infer {
                file: file.relative.clone(),
                source,
            })?;
            if !columns.is_empty() {
                return Ok(columns);
            }
        }
        Err(FilesError::NothingToInfer {
            stream: stream.to_string(),
            glob: config.glob.clone(),
        }
        .into())
    }
}

#[async_trait]
impl Source for FilesSource {
    async fn check(&self) -> Result<()> {
        for stream in &self.config.streams {
            self.list(stream).await?;
        }
        Ok(())
    }

    /// How many files each stream's glob matches.
    async fn inventory(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for stream in &self.config.streams {
            let count = self.list(stream).await?.len();
            let glob = &self.stream_config(stream)?.glob;
            out.push(format!("{stream}: {count} file(s) match glob {glob:?}"));
        }
        Ok(out)
    }

    async fn discover(&self, stream: &str) -> Result<SchemaRef> {
        let listed = self.list(stream).await?;
        Ok(self.layout(stream, &listed).await?.schema.clone())
    }

    async fn extract(&self, request: ExtractRequest) -> Result<Extraction> {
        let stream = request.stream.as_str();
        let config = self.stream_config(stream)?.clone();
        let listed = self.list(stream).await?;
        let full = request.since.is_none();
        let loaded: FilesState = match request.state.map(serde_json::from_value) {
            None => FilesState::default(),
            Some(Ok(saved)) => saved,
            // A full load is how a broken state is repaired: it starts from no state.
            Some(Err(err)) if full => {
                warn!(stream, error = %err, "the saved file list is unreadable; a full load starts without it");
                FilesState::default()
            }
            Some(Err(source)) => {
                return Err(FilesError::BadState {
                    stream: stream.to_string(),
                    source,
                }
                .into());
            }
        };
        // A file's time is the version of its rows only when the stream has no version
        // column; then bytes loaded before keep the version they were first given, so a touch
        // or a copy never makes them newer than what was loaded since.
        let by_content = config.version_column.is_none();
        let mut versions: HashMap<String, i64> = HashMap::new();
        for saved in loaded.files.values() {
            if let Some(content) = &saved.content {
                let version = saved.rows_version();
                versions
                    .entry(content.clone())
                    .and_modify(|v| *v = (*v).min(version))
                    .or_insert(version);
            }
        }
        let mut contents = self.contents_of(&listed, &loaded, full, by_content).await?;
        let mut read_now: HashSet<String> = HashSet::new();
        let mut to_read = Vec::new();
        let mut files = BTreeMap::new();
        let mut already_loaded = 0usize;
        for f in &listed {
            let saved = loaded
                .files
                .get(&f.relative)
                .filter(|saved| saved.version == f.version);
            if let (Some(saved), false) = (saved, full) {
                files.insert(f.relative.clone(), saved.clone());
                continue;
            }
            let mut file = FileToRead {
                location: f.location.clone(),
                relative: f.relative.clone(),
                version_ms: f.version.last_modified,
            };
            if !by_content {
                to_read.push(file);
                files.insert(
                    f.relative.clone(),
                    LoadedFile {
                        version: f.version.clone(),
                        content: None,
                        rows_version: None,
                    },
                );
                continue;
            }
            let content = match saved.and_then(|saved| saved.content.clone()) {
                Some(content) => content,
                None => contents
                    .remove(&f.relative)
                    .expect("contents_of digests every file without a saved content"),
            };
            let known = versions.get(&content).copied();
            file.version_ms = known.unwrap_or(f.version.last_modified);
            files.insert(
                f.relative.clone(),
                LoadedFile {
                    version: f.version.clone(),
                    content: Some(content.clone()),
                    rows_version: (file.version_ms != f.version.last_modified)
                        .then_some(file.version_ms),
                },
            );
            // An incremental load does not read bytes loaded before; a full load reads every
            // content once, at the version it was first given.
            let read_before = if full {
                !read_now.insert(content.clone())
            } else {
                known.is_some()
            };
            if read_before {
                already_loaded += 1;
                continue;
            }
            versions.entry(content).or_insert(file.version_ms);
            to_read.push(file);
        }
        if already_loaded > 0 {
            info!(
                stream,
                files = already_loaded,
                "not reading files whose content was loaded before (touched or copied)"
            );
        }
        // Files that disappeared are forgotten: the state stays as large as the listing.
        let state = FilesState { files };
        let since = request.since;
        let cursor = CursorRange {
            from: since,
            to: match &config.cursor_column {
                // Raised by what the files hold (Extracted::CursorReached).
                Some(_) => since.unwrap_or(NOTHING_READ),
                None => listed
                    .iter()
                    .map(|f| f.version.last_modified)
                    .chain(since)
                    .max()
                    .unwrap_or(0),
            },
        };
        let state = Some(serde_json::to_value(&state)?);
        if to_read.is_empty() {
            return Ok(Extraction {
                schema: match config.declared() {
                    Some(_) => self.layout(stream, &listed).await?.schema.clone(),
                    None => key_only_schema(&config.key),
                },
                key: config.key.clone(),
                cursor,
                state,
                items: futures::stream::empty().boxed(),
            });
        }
        let layout = self.layout(stream, &listed).await?;
        // Two batches in flight: one being staged, one being filled.
        let (tx, rx) = mpsc::channel::<Result<Extracted>>(2);
        let load = Load {
            handle: Handle::current(),
            store: self.store.clone(),
            layout: layout.clone(),
            since: config.cursor_column.as_ref().and(since),
            config,
            batch_rows: request.batch_rows,
            tx: tx.clone(),
        };
        tokio::task::spawn_blocking(move || match load.run(to_read) {
            Ok(()) | Err(LoadError::Hangup) => {}
            // The receiver may be gone (the pipeline failed first); nothing more to tell then.
            Err(LoadError::Failed(err)) => {
                let _ = tx.blocking_send(Err(err));
            }
        });
        let items = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        Ok(Extraction {
            schema: layout.schema.clone(),
            key: layout.columns[0].name.clone(),
            cursor,
            state,
            items,
        })
    }

    /// Reads every current file (as a full load would), keeps each key's newest version and
    /// sorts by key in DataFusion, spilling to disk past a memory limit.
    async fn list_keys(
        &self,
        stream: &str,
        batch_rows: usize,
        _arrow_hash: bool,
    ) -> Result<SourceListing> {
        let extraction = self.extract(full_read(stream, batch_rows)).await?;
        let int_key = extraction
            .schema
            .field_with_name(&extraction.key)
            .map(|f| f.data_type() == &arrow::datatypes::DataType::Int64)
            .unwrap_or(false);
        let items =
            listing::sorted_keys(extraction.schema, &extraction.key, extraction.items).await?;
        Ok(SourceListing {
            key: extraction.key,
            int_key,
            compare: Compare::Version,
            items,
        })
    }

    /// Without a cursor or version column, a row's version is its file's modification time
    /// and the cursor the newest one loaded: a file changed since is newer.
    fn settled_until(&self, stream: &str, cursor: Option<i64>) -> Option<i64> {
        let config = self.config.stream(stream)?;
        if config.cursor_column.is_some() || config.version_column.is_some() {
            return None;
        }
        cursor.map(|ms| (ms + 1) * 1000)
    }

    /// Reads every current file and keeps the rows with these keys (the merge keeps each
    /// key's newest).
    async fn fetch_keys(
        &self,
        stream: &str,
        keys: Vec<Key>,
        batch_rows: usize,
    ) -> Result<Extraction> {
        let extraction = self.extract(full_read(stream, batch_rows)).await?;
        let key = extraction.key.clone();
        let keys: std::collections::HashSet<Key> = keys.into_iter().collect();
        let items = extraction
            .items
            .filter_map(move |item| {
                futures::future::ready(match item {
                    Ok(Extracted::Batch(batch)) => {
                        Some(listing::with_keys(&batch, &key, &keys).map(Extracted::Batch))
                    }
                    // A repair neither re-files dead letters nor moves the cursor.
                    Ok(_) => None,
                    Err(err) => Some(Err(err)),
                })
            })
            .boxed();
        Ok(Extraction {
            items,
            ..extraction
        })
    }

    fn cursor_is_time(&self, stream: &str) -> bool {
        let Some(config) = self.config.stream(stream) else {
            return true;
        };
        let Some(column) = &config.cursor_column else {
            return true;
        };
        let declared = config
            .declared()
            .and_then(|d| d.into_iter().find(|(n, _)| n == column).map(|(_, t)| t));
        let inferred = self
            .layouts
            .lock()
            .expect("layouts")
            .get(stream)
            .and_then(|l| l.cursor.map(|at| l.columns[at].kind));
        declared.or(inferred) == Some(ColumnType::Timestamp)
    }

    fn cursor_text(&self, stream: &str, cursor: i64) -> String {
        if cursor == NOTHING_READ {
            return "none yet".into();
        }
        if self.cursor_is_time(stream) {
            return chrono::DateTime::from_timestamp_millis(cursor)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| cursor.to_string());
        }
        cursor.to_string()
    }
}

/// A read of every current file.
/// The MD5 of a file's bytes (hex), read as a stream on a blocking thread: memory holds a
/// buffer, not the file.
async fn content_of(
    store: Arc<dyn ObjectStore>,
    location: object_store::path::Path,
    relative: String,
) -> Result<String> {
    let handle = Handle::current();
    let digest = tokio::task::spawn_blocking(move || -> Result<String, ReadError> {
        let mut reader = ObjectReader::open(&handle, &store, &location)?;
        let mut hasher = Md5::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(format!("{:x}", hasher.finalize()))
    })
    .await
    .map_err(FilesError::ChecksumStopped)?;
    digest.map_err(|source| {
        FilesError::Read {
            file: relative,
            source,
        }
        .into()
    })
}

fn full_read(stream: &str, batch_rows: usize) -> ExtractRequest {
    ExtractRequest {
        stream: stream.to_string(),
        since: None,
        state: None,
        batch_rows,
    }
}

/// The schema of a load that reads no file (nothing new): the key and system columns.
fn key_only_schema(key: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(key, arrow::datatypes::DataType::Utf8, false),
        version_field(),
        deleted_field(),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_saved_before_contents_were_kept_still_reads() {
        let saved = serde_json::json!({
            "files": {"a.jsonl": {"size": 10, "e_tag": "x", "last_modified": 5}}
        });
        let state: FilesState = serde_json::from_value(saved).unwrap();
        let a = &state.files["a.jsonl"];
        assert_eq!(
            a.version,
            FileVersion {
                size: 10,
                e_tag: Some("x".into()),
                last_modified: 5
            }
        );
        assert_eq!(a.content, None);
        assert_eq!(a.rows_version(), 5);

        // The content sits beside the metadata, and round-trips.
        let mut files = BTreeMap::new();
        files.insert(
            "b.csv".to_owned(),
            LoadedFile {
                version: FileVersion {
                    size: 3,
                    e_tag: None,
                    last_modified: 7,
                },
                content: Some("9e107d9d372bb6826bd81d3542a419d6".into()),
                rows_version: Some(2),
            },
        );
        let state = FilesState { files };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"files": {"b.csv": {
                "size": 3, "last_modified": 7, "content": "9e107d9d372bb6826bd81d3542a419d6",
                "rows_version": 2
            }}})
        );
        assert_eq!(serde_json::from_value::<FilesState>(json).unwrap(), state);
    }
}
