//! Drift between a source and a destination (`syncline reconcile`): both sides as streams of
//! (key, version or content hash) sorted by key, merged in one pass, every difference put in
//! one class. Memory holds a chunk of each side and the keys to repair, never a whole table.
//!
//! Order: integer keys ascend numerically, text keys by their UTF-8 bytes (what PostgreSQL's
//! `COLLATE "C"` and DataFusion both sort by). A side that breaks the order is an error, not
//! drift: comparing it would classify everything wrongly.
//!
//! The content hash, for streams whose versions cannot be compared across the two sides (CDC
//! versions are LSNs), is one definition computed in SQL on both: `md5` of the row's columns,
//! each as [`HashKind`]'s canonical text, `quote_nullable`d and joined by `,`.

use std::cmp::Ordering;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::error::{Classified, ErrorKind};
use crate::schema::{DELETED_COLUMN, VERSION_COLUMN};

/// At most this many example keys per class in a report.
pub const EXAMPLES: usize = 100;

/// A record key, as both sides list it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Int(value) => write!(f, "{value}"),
            Key::Text(value) => f.write_str(value),
        }
    }
}

/// One listed record: its key, its version (µs since the epoch, or the source's own integer
/// position) and, for hash comparison, its content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: Key,
    pub version: Option<i64>,
    pub hash: Option<String>,
}

/// How a column appears in the content hash: its canonical text, the same on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashKind {
    /// Decimal digits of the 64-bit integer.
    Int,
    /// PostgreSQL's shortest exact text of the float8.
    Float,
    /// `true` / `false`.
    Bool,
    /// Days since 1970-01-01.
    Date,
    /// Microseconds since the epoch (a time without zone counted as UTC).
    Timestamp,
    Text,
}

/// The content hash of each row of `batch` over `columns`, computed from Arrow values (for
/// destinations that read rows as Arrow, such as the lake, and the source rows compared with
/// them). Each column is first cast to its kind's Arrow type, so equal values hash equal
/// whatever width or unit a side stores; then every value is written as `n,` (null) or
/// `v{len}:{text},` with the text: integers and dates (days) as digits, floats as the hex of
/// their bits, booleans `t`/`f`, timestamps as µs since the epoch, text as is; md5, as hex.
pub fn arrow_row_hashes(
    batch: &RecordBatch,
    columns: &[(String, HashKind)],
) -> Result<Vec<String>> {
    let mut texts: Vec<Vec<Option<String>>> = Vec::with_capacity(columns.len());
    for (name, kind) in columns {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| crate::reconcile::FingerprintError::MissingColumn(name.clone()))?;
        let target = match kind {
            HashKind::Int => DataType::Int64,
            HashKind::Float => DataType::Float64,
            HashKind::Bool => DataType::Boolean,
            HashKind::Date => DataType::Date32,
            HashKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            HashKind::Text => DataType::Utf8,
        };
        let column = arrow::compute::cast(column, &target)?;
        let values: Vec<Option<String>> = (0..column.len())
            .map(|row| {
                if column.is_null(row) {
                    return None;
                }
                Some(match kind {
                    HashKind::Int => column.as_primitive::<Int64Type>().value(row).to_string(),
                    HashKind::Float => format!(
                        "{:016x}",
                        column.as_primitive::<Float64Type>().value(row).to_bits()
                    ),
                    HashKind::Bool => if column.as_boolean().value(row) {
                        "t"
                    } else {
                        "f"
                    }
                    .to_string(),
                    HashKind::Date => column.as_primitive::<Date32Type>().value(row).to_string(),
                    HashKind::Timestamp => column
                        .as_primitive::<TimestampMicrosecondType>()
                        .value(row)
                        .to_string(),
                    HashKind::Text => column.as_string::<i32>().value(row).to_string(),
                })
            })
            .collect();
        texts.push(values);
    }
    Ok((0..batch.num_rows())
        .map(|row| {
            let mut hasher = Md5::new();
            for values in &texts {
                match &values[row] {
                    None => hasher.update(b"n,"),
                    Some(text) => {
                        hasher.update(format!("v{}:", text.len()).as_bytes());
                        hasher.update(text.as_bytes());
                        hasher.update(b",");
                    }
                }
            }
            hasher
                .finalize()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect()
        })
        .collect())
}

/// The key of each row of `batch`'s column `key` (Int64 or text).
pub fn arrow_keys(batch: &RecordBatch, key: &str) -> Result<Vec<Key>> {
    let column = batch
        .column_by_name(key)
        .ok_or_else(|| crate::reconcile::FingerprintError::MissingColumn(key.to_string()))?;
    Ok(match column.data_type() {
        DataType::Int64 => column
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&value| Key::Int(value))
            .collect(),
        _ => {
            let text = arrow::compute::cast(column, &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            (0..text.len())
                .map(|row| Key::Text(text.value(row).to_string()))
                .collect()
        }
    })
}

/// How a stream's two sides are compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// By version: the destination's `_syncline_version` against the source's.
    Version,
    /// By content hash over these columns (name, kind), key first.
    Hash(Vec<(String, HashKind)>),
}

impl Compare {
    pub fn label(&self) -> &'static str {
        match self {
            Compare::Version => "version",
            Compare::Hash(_) => "content hash",
        }
    }
}

/// A sorted listing of one side, in chunks.
pub type Listing = BoxStream<'static, Result<Vec<Listed>>>;

/// What a source lists for a stream.
pub struct SourceListing {
    /// The key column.
    pub key: String,
    /// Whether the key is an integer (else text): the destination sorts and decodes it alike.
    pub int_key: bool,
    pub compare: Compare,
    pub items: Listing,
}

/// What a destination lists: the key column, its type, the deletes mode and how to compare.
#[derive(Debug, Clone)]
pub struct ListRequest {
    pub table: String,
    pub key: String,
    pub int_key: bool,
    pub deletes: crate::load::DeleteMode,
    pub compare: Compare,
}

/// The classes of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// In the source, not in the destination.
    Missing,
    /// The destination holds an older version (or, by hash, other values).
    Stale,
    /// The destination holds a newer version than the source: someone wrote to it.
    Ahead,
    /// In the destination, gone from the source.
    Orphaned,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Missing, Class::Stale, Class::Ahead, Class::Orphaned];

    pub fn name(self) -> &'static str {
        match self {
            Class::Missing => "missing",
            Class::Stale => "stale",
            Class::Ahead => "ahead",
            Class::Orphaned => "orphaned",
        }
    }
}

/// The count of a class and its first keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCount {
    pub count: u64,
    /// Up to [`EXAMPLES`] keys, in key order.
    pub examples: Vec<Key>,
}

/// The outcome of comparing one stream's two sides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub source_rows: u64,
    pub destination_rows: u64,
    /// Differences left out because the source changed them after the last load (or inside
    /// the lag window): the next ordinary run brings them.
    pub in_flight: u64,
    pub missing: ClassCount,
    pub stale: ClassCount,
    pub ahead: ClassCount,
    pub orphaned: ClassCount,
}

impl Drift {
    pub fn class(&self, class: Class) -> &ClassCount {
        match class {
            Class::Missing => &self.missing,
            Class::Stale => &self.stale,
            Class::Ahead => &self.ahead,
            Class::Orphaned => &self.orphaned,
        }
    }

    fn class_mut(&mut self, class: Class) -> &mut ClassCount {
        match class {
            Class::Missing => &mut self.missing,
            Class::Stale => &mut self.stale,
            Class::Ahead => &mut self.ahead,
            Class::Orphaned => &mut self.orphaned,
        }
    }

    /// Whether the destination matches the source.
    pub fn is_clean(&self) -> bool {
        Class::ALL.iter().all(|&c| self.class(c).count == 0)
    }

    fn note(&mut self, class: Class, key: &Key) {
        let entry = self.class_mut(class);
        entry.count += 1;
        if entry.examples.len() < EXAMPLES {
            entry.examples.push(key.clone());
        }
    }
}

/// One key that differs between the two sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub key: Key,
    pub class: Class,
    /// The destination's version (µs), when the destination has the key: a delete of an
    /// orphaned key must be at least as new to win the merge.
    pub destination_version: Option<i64>,
}

/// Differences past this many go to a temporary file: memory holds at most this many
/// whatever the drift (a table whose destination was emptied differs in every key).
pub const SPILL_AT: usize = 100_000;

/// Every difference of a compare, in key order, with counts per class kept as they come.
/// Memory holds at most [`SPILL_AT`] differences; the rest wait in a temporary file, read
/// back in key batches by a repair ([`Compared::into_repair_batches`]).
#[derive(Debug, Default)]
pub struct Compared {
    pub source_rows: u64,
    pub destination_rows: u64,
    /// Left out because the source changed them after the last load read.
    pub in_flight: u64,
    differences: Spool,
    /// Counts and example keys per class.
    counted: Drift,
}

impl Compared {
    fn push(&mut self, difference: Difference) -> Result<()> {
        self.counted.note(difference.class, &difference.key);
        self.differences.push(difference)
    }

    /// Whether any key differs.
    pub fn has_differences(&self) -> bool {
        self.differences.len > 0
    }

    /// Moves the differences whose key `in_flight` names out of the drift (changes a CDC slot
    /// still holds, say): the next ordinary run brings them.
    pub fn settle(&mut self, in_flight: impl Fn(&Key) -> bool) -> Result<()> {
        let old = std::mem::take(&mut self.differences);
        let spill_at = old.spill_at;
        self.differences.spill_at = spill_at;
        self.counted = Drift::default();
        let mut reader = old.into_reader()?;
        while let Some(difference) = reader.next_difference()? {
            if in_flight(&difference.key) {
                self.in_flight += 1;
            } else {
                self.push(difference)?;
            }
        }
        Ok(())
    }

    /// Counts per class with their first keys.
    pub fn drift(&self) -> Drift {
        Drift {
            source_rows: self.source_rows,
            destination_rows: self.destination_rows,
            in_flight: self.in_flight,
            ..self.counted.clone()
        }
    }

    /// What a repair does, in batches of at most `keys` keys in key order: fetch the missing
    /// and stale keys, delete the orphaned ones. Memory holds one batch.
    pub fn into_repair_batches(self, keys: usize) -> Result<RepairBatches> {
        Ok(RepairBatches {
            reader: self.differences.into_reader()?,
            keys: keys.max(1),
        })
    }

    /// Every repair key at once (small drifts and tests).
    pub fn repair_keys(self) -> Result<RepairKeys> {
        let mut all = RepairKeys::default();
        let mut batches = self.into_repair_batches(usize::MAX)?;
        while let Some(batch) = batches.next_batch()? {
            all.fetch.extend(batch.fetch);
            all.orphans.extend(batch.orphans);
        }
        Ok(all)
    }
}

/// A repair's keys, a batch at a time (see [`Compared::into_repair_batches`]).
pub struct RepairBatches {
    reader: SpoolReader,
    keys: usize,
}

impl RepairBatches {
    /// The next batch; `None` when every difference was handed out. `ahead` keys are skipped:
    /// a repair never writes over a newer destination row.
    pub fn next_batch(&mut self) -> Result<Option<RepairKeys>> {
        let mut batch = RepairKeys::default();
        while batch.fetch.len() + batch.orphans.len() < self.keys {
            let Some(difference) = self.reader.next_difference()? else {
                break;
            };
            match difference.class {
                Class::Missing | Class::Stale => batch.fetch.push(difference.key),
                Class::Orphaned => batch.orphans.push((
                    difference.key,
                    difference.destination_version.unwrap_or_default(),
                )),
                Class::Ahead => {}
            }
        }
        Ok((!batch.fetch.is_empty() || !batch.orphans.is_empty()).then_some(batch))
    }
}

/// What a repair needs: every key to fetch again and every orphan with its destination
/// version (the delete must be at least as new to win the merge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairKeys {
    pub fetch: Vec<Key>,
    pub orphans: Vec<(Key, i64)>,
}

/// Differences in key order: the first ones in a temporary file (JSON lines, removed when
/// dropped), the latest in memory.
#[derive(Debug)]
struct Spool {
    memory: Vec<Difference>,
    file: Option<SpillFile>,
    len: u64,
    spill_at: usize,
}

impl Default for Spool {
    fn default() -> Self {
        Spool {
            memory: Vec::new(),
            file: None,
            len: 0,
            spill_at: SPILL_AT,
        }
    }
}

#[derive(Debug)]
struct SpillFile {
    path: std::path::PathBuf,
    writer: Option<std::io::BufWriter<std::fs::File>>,
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.writer.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Spool {
    fn push(&mut self, difference: Difference) -> Result<()> {
        self.memory.push(difference);
        self.len += 1;
        if self.memory.len() >= self.spill_at {
            use std::io::Write;
            if self.file.is_none() {
                let path = std::env::temp_dir()
                    .join(format!("syncline-drift-{}.jsonl", uuid::Uuid::now_v7()));
                let file = std::fs::File::create(&path).map_err(DriftError::Spill)?;
                self.file = Some(SpillFile {
                    path,
                    writer: Some(std::io::BufWriter::new(file)),
                });
            }
            let writer = self
                .file
                .as_mut()
                .and_then(|f| f.writer.as_mut())
                .expect("the spill file is open while differences come");
            for difference in self.memory.drain(..) {
                serde_json::to_writer(&mut *writer, &difference).map_err(spill)?;
                writer.write_all(b"\n").map_err(DriftError::Spill)?;
            }
        }
        Ok(())
    }

    fn into_reader(mut self) -> Result<SpoolReader> {
        let lines = match self.file.as_mut() {
            None => None,
            Some(spill) => {
                use std::io::{BufRead, Write};
                if let Some(mut writer) = spill.writer.take() {
                    writer.flush().map_err(DriftError::Spill)?;
                }
                let file = std::fs::File::open(&spill.path).map_err(DriftError::Spill)?;
                Some(std::io::BufReader::new(file).lines())
            }
        };
        Ok(SpoolReader {
            lines,
            memory: std::mem::take(&mut self.memory).into_iter(),
            _file: self.file.take(),
        })
    }
}

struct SpoolReader {
    lines: Option<std::io::Lines<std::io::BufReader<std::fs::File>>>,
    memory: std::vec::IntoIter<Difference>,
    /// Keeps the file until read (dropping it removes it).
    _file: Option<SpillFile>,
}

impl SpoolReader {
    fn next_difference(&mut self) -> Result<Option<Difference>> {
        if let Some(lines) = self.lines.as_mut() {
            match lines.next() {
                Some(line) => {
                    let line = line.map_err(DriftError::Spill)?;
                    return Ok(Some(serde_json::from_str(&line).map_err(spill)?));
                }
                None => self.lines = None,
            }
        }
        Ok(self.memory.next())
    }
}

/// A listing broke the order both sides promise.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error(
        "the {side} listing of stream {stream} is not sorted by key ({previous} came before {next}); \
         nothing was compared"
    )]
    OutOfOrder {
        side: &'static str,
        stream: String,
        previous: String,
        next: String,
    },
    #[error(
        "reconcile does not support the {side} {what} yet (stream {stream}); supported: the postgres, \
         hubspot, salesforce and files sources into the postgres, lake and snowflake destinations, \
         and CDC streams (compared by content hash) into postgres and the lake"
    )]
    Unsupported {
        side: &'static str,
        what: String,
        stream: String,
    },
    /// The temporary file that holds differences past `SPILL_AT` (in the system's temp folder).
    #[error(
        "the differences of a compare could not be spilled to or read back from the temp folder"
    )]
    Spill(#[source] std::io::Error),
}

fn spill(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DriftError {
    DriftError::Spill(std::io::Error::other(err))
}

impl Classified for DriftError {
    fn kind(&self) -> ErrorKind {
        match self {
            DriftError::OutOfOrder { .. } => ErrorKind::Reconciliation,
            DriftError::Unsupported { .. } => ErrorKind::Config,
            DriftError::Spill(_) => ErrorKind::Stage,
        }
    }
}

/// One side's listing read a record at a time, checking the order.
struct Side {
    name: &'static str,
    stream: String,
    items: Listing,
    chunk: std::vec::IntoIter<Listed>,
    head: Option<Listed>,
    rows: u64,
}

impl Side {
    async fn new(name: &'static str, stream: &str, items: Listing) -> Result<Side> {
        let mut side = Side {
            name,
            stream: stream.to_string(),
            items,
            chunk: Vec::new().into_iter(),
            head: None,
            rows: 0,
        };
        side.head = side.pull().await?;
        Ok(side)
    }

    async fn pull(&mut self) -> Result<Option<Listed>> {
        loop {
            if let Some(next) = self.chunk.next() {
                return Ok(Some(next));
            }
            match self.items.next().await {
                Some(chunk) => self.chunk = chunk?.into_iter(),
                None => return Ok(None),
            }
        }
    }

    /// Takes the head and reads the next one, which must sort strictly after it.
    async fn advance(&mut self) -> Result<Listed> {
        let current = self.head.take().expect("advance only with a head");
        self.rows += 1;
        self.head = self.pull().await?;
        if let Some(next) = &self.head
            && next.key <= current.key
        {
            return Err(DriftError::OutOfOrder {
                side: self.name,
                stream: self.stream.clone(),
                previous: current.key.to_string(),
                next: next.key.to_string(),
            }
            .into());
        }
        Ok(current)
    }
}

/// Compares the two sorted listings of `stream`. A difference whose source version is at or
/// after `settled_until` is in flight, not drift (the next ordinary run brings it).
pub async fn compare(
    stream: &str,
    source: Listing,
    destination: Listing,
    settled_until: Option<i64>,
) -> Result<Compared> {
    compare_spilling(stream, source, destination, settled_until, SPILL_AT).await
}

/// [`compare`], spilling differences past `spill_at`.
async fn compare_spilling(
    stream: &str,
    source: Listing,
    destination: Listing,
    settled_until: Option<i64>,
    spill_at: usize,
) -> Result<Compared> {
    let mut compared = Compared::default();
    compared.differences.spill_at = spill_at.max(1);
    let mut src = Side::new("source", stream, source).await?;
    let mut dst = Side::new("destination", stream, destination).await?;
    let in_flight = |record: &Listed| matches!((record.version, settled_until), (Some(v), Some(until)) if v >= until);
    loop {
        let order = match (&src.head, &dst.head) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(s), Some(d)) => s.key.cmp(&d.key),
        };
        let (key, class, destination_version, source_record) = match order {
            Ordering::Less => {
                let record = src.advance().await?;
                (record.key.clone(), Class::Missing, None, Some(record))
            }
            Ordering::Greater => {
                let record = dst.advance().await?;
                (record.key, Class::Orphaned, record.version, None)
            }
            Ordering::Equal => {
                let s = src.advance().await?;
                let d = dst.advance().await?;
                let class = match (&s.hash, &d.hash) {
                    (Some(a), Some(b)) => (a != b).then_some(Class::Stale),
                    _ => match s.version.cmp(&d.version) {
                        Ordering::Equal => None,
                        Ordering::Greater => Some(Class::Stale),
                        Ordering::Less => Some(Class::Ahead),
                    },
                };
                let Some(class) = class else { continue };
                (s.key.clone(), class, d.version, Some(s))
            }
        };
        let settling = matches!(class, Class::Missing | Class::Stale)
            && source_record.as_ref().is_some_and(in_flight);
        if settling {
            compared.in_flight += 1;
        } else {
            compared.push(Difference {
                key,
                class,
                destination_version,
            })?;
        }
    }
    compared.source_rows = src.rows;
    compared.destination_rows = dst.rows;
    Ok(compared)
}

/// Deleted rows of the staged schema: the key, nulls, the version (µs since the epoch),
/// deleted = true. A reconcile's orphans and a source's own delete log (Salesforce
/// `getDeleted`) become deletes this way.
pub fn deletes_batch(schema: &SchemaRef, orphans: &[(Key, i64)]) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| -> Result<ArrayRef> {
            Ok(if i == 0 {
                match field.data_type() {
                    DataType::Int64 => std::sync::Arc::new(Int64Array::from_iter_values(
                        orphans.iter().map(|(key, _)| match key {
                            Key::Int(v) => *v,
                            Key::Text(t) => t.parse().unwrap_or_default(),
                        }),
                    )),
                    _ => std::sync::Arc::new(StringArray::from_iter_values(
                        orphans.iter().map(|(key, _)| key.to_string()),
                    )),
                }
            } else if field.name() == VERSION_COLUMN {
                let micros = arrow::array::TimestampMicrosecondArray::from_iter_values(
                    orphans.iter().map(|(_, version)| *version),
                )
                .with_timezone("UTC");
                let target = match field.data_type() {
                    DataType::Timestamp(unit, _) => DataType::Timestamp(*unit, Some("UTC".into())),
                    _ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                };
                arrow::compute::cast(&micros, &target)?
            } else if field.name() == DELETED_COLUMN {
                std::sync::Arc::new(BooleanArray::from(vec![true; orphans.len()]))
            } else {
                arrow::array::new_null_array(field.data_type(), orphans.len())
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(rows: Vec<(i64, i64)>) -> Listing {
        let rows: Vec<Listed> = rows
            .into_iter()
            .map(|(key, version)| Listed {
                key: Key::Int(key),
                version: Some(version),
                hash: None,
            })
            .collect();
        // Two chunks, so the compare crosses a chunk boundary.
        let (a, b) = rows.split_at(rows.len() / 2);
        futures::stream::iter(vec![Ok(a.to_vec()), Ok(b.to_vec())]).boxed()
    }

    #[tokio::test]
    async fn every_difference_gets_its_class() {
        let source = listing(vec![(1, 10), (2, 20), (3, 30), (4, 40), (6, 60)]);
        let destination = listing(vec![(1, 10), (3, 25), (4, 45), (5, 50), (6, 60)]);
        let compared = compare("s", source, destination, None).await.unwrap();
        let drift = compared.drift();
        let repair = compared.repair_keys().unwrap();
        assert_eq!(drift.missing.examples, [Key::Int(2)]);
        assert_eq!(drift.stale.examples, [Key::Int(3)]);
        assert_eq!(drift.ahead.examples, [Key::Int(4)]);
        assert_eq!(drift.orphaned.examples, [Key::Int(5)]);
        assert_eq!((drift.source_rows, drift.destination_rows), (5, 5));
        assert_eq!(repair.fetch, [Key::Int(2), Key::Int(3)]);
        assert_eq!(repair.orphans, [(Key::Int(5), 50)]);
        assert!(!drift.is_clean());
    }

    #[tokio::test]
    async fn changes_after_the_last_load_are_in_flight_not_drift() {
        let source = listing(vec![(1, 10), (2, 100), (3, 120)]);
        let destination = listing(vec![(1, 10), (3, 30)]);
        let compared = compare("s", source, destination, Some(100)).await.unwrap();
        let drift = compared.drift();
        let repair = compared.repair_keys().unwrap();
        assert!(drift.is_clean(), "{drift:?}");
        assert_eq!(drift.in_flight, 2);
        assert!(repair.fetch.is_empty());
    }

    #[tokio::test]
    async fn a_spilled_drift_is_repaired_in_key_batches() {
        let source = listing((1..=20).filter(|k| k % 3 != 0).map(|k| (k, k)).collect());
        let destination = listing((1..=20).filter(|k| k % 4 != 0).map(|k| (k, k)).collect());
        // Every fourth key missing, every third orphaned (but the twelfth, in neither side).
        let mut compared = compare_spilling("s", source, destination, None, 2)
            .await
            .unwrap();
        assert!(compared.differences.file.is_some(), "spilled to a file");
        let path = compared.differences.file.as_ref().unwrap().path.clone();
        let drift = compared.drift();
        assert_eq!(drift.missing.count, 4);
        assert_eq!(drift.orphaned.count, 5);
        // A CDC slot still holds key 8: in flight, not drift.
        compared.settle(|key| *key == Key::Int(8)).unwrap();
        assert_eq!((compared.drift().missing.count, compared.in_flight), (3, 1));
        let mut batches = compared.into_repair_batches(4).unwrap();
        let mut seen = Vec::new();
        while let Some(batch) = batches.next_batch().unwrap() {
            assert!(batch.fetch.len() + batch.orphans.len() <= 4);
            seen.extend(batch.fetch.into_iter().map(|k| (k, "fetch")));
            seen.extend(batch.orphans.into_iter().map(|(k, _)| (k, "delete")));
        }
        seen.sort();
        let want: Vec<(Key, &str)> = [3, 4, 6, 9, 15, 16, 18, 20]
            .into_iter()
            .map(|k| {
                let class = if k % 3 == 0 { "delete" } else { "fetch" };
                (Key::Int(k), class)
            })
            .collect();
        assert_eq!(seen, want);
        drop(batches);
        assert!(!path.exists(), "the spill file is removed");
    }

    #[tokio::test]
    async fn an_unsorted_side_is_an_error_not_drift() {
        let source = listing(vec![(1, 10), (3, 30), (2, 20), (4, 40)]);
        let destination = listing(vec![(1, 10)]);
        let err = compare("s", source, destination, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Reconciliation);
        assert!(err.to_string().contains("not sorted"), "{err}");
    }

    #[test]
    fn arrow_hashes_ignore_width_and_unit_but_not_values() {
        use arrow::array::{Float32Array, Float64Array, Int32Array, StringArray};
        use arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let columns = vec![
            ("n".to_string(), HashKind::Int),
            ("f".to_string(), HashKind::Float),
            ("s".to_string(), HashKind::Text),
        ];
        let narrow = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("n", DataType::Int32, true),
                Field::new("f", DataType::Float32, true),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(Float32Array::from(vec![Some(0.5), Some(2.0)])),
                Arc::new(StringArray::from(vec![Some("NULL"), None])),
            ],
        )
        .unwrap();
        let wide = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("n", DataType::Int64, true),
                Field::new("f", DataType::Float64, true),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(arrow::array::Int64Array::from(vec![Some(1), None])),
                Arc::new(Float64Array::from(vec![Some(0.5), Some(2.0000001)])),
                Arc::new(StringArray::from(vec![Some("NULL"), None])),
            ],
        )
        .unwrap();
        let a = arrow_row_hashes(&narrow, &columns).unwrap();
        let b = arrow_row_hashes(&wide, &columns).unwrap();
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
        assert_eq!(a[0].len(), 32);
    }

    #[tokio::test]
    async fn hashes_decide_when_both_sides_have_one() {
        let row = |key: &str, hash: &str| Listed {
            key: Key::Text(key.into()),
            version: Some(1),
            hash: Some(hash.into()),
        };
        let source = futures::stream::iter(vec![Ok(vec![row("a", "x"), row("b", "y")])]).boxed();
        let destination =
            futures::stream::iter(vec![Ok(vec![row("a", "x"), row("b", "z")])]).boxed();
        let mut compared = compare("s", source, destination, None).await.unwrap();
        let drift = compared.drift();
        assert_eq!(drift.stale.examples, [Key::Text("b".into())]);
        assert_eq!(drift.stale.count, 1);
        // A change still on its way (in a CDC slot) is not drift.
        compared
            .settle(|key| *key == Key::Text("b".into()))
            .unwrap();
        assert!(compared.drift().is_clean());
        assert_eq!(compared.drift().in_flight, 1);
    }
}
