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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub key: Key,
    pub class: Class,
    /// The destination's version (µs), when the destination has the key: a delete of an
    /// orphaned key must be at least as new to win the merge.
    pub destination_version: Option<i64>,
}

/// Every difference of a compare, in key order. Memory grows with the drift, not the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compared {
    pub source_rows: u64,
    pub destination_rows: u64,
    /// Left out because the source changed them after the last load read.
    pub in_flight: u64,
    pub differences: Vec<Difference>,
}

impl Compared {
    /// Moves the differences whose key `in_flight` names out of the drift (changes a CDC slot
    /// still holds, say): the next ordinary run brings them.
    pub fn settle(&mut self, in_flight: impl Fn(&Key) -> bool) {
        let before = self.differences.len();
        self.differences.retain(|d| !in_flight(&d.key));
        self.in_flight += (before - self.differences.len()) as u64;
    }

    /// Counts per class with their first keys.
    pub fn drift(&self) -> Drift {
        let mut drift = Drift {
            source_rows: self.source_rows,
            destination_rows: self.destination_rows,
            in_flight: self.in_flight,
            ..Drift::default()
        };
        for difference in &self.differences {
            drift.note(difference.class, &difference.key);
        }
        drift
    }

    /// What a repair does: fetch the missing and stale keys, delete the orphaned ones.
    pub fn repair_keys(&self) -> RepairKeys {
        let mut keys = RepairKeys::default();
        for difference in &self.differences {
            match difference.class {
                Class::Missing | Class::Stale => keys.fetch.push(difference.key.clone()),
                Class::Orphaned => keys.orphans.push((
                    difference.key.clone(),
                    difference.destination_version.unwrap_or_default(),
                )),
                Class::Ahead => {}
            }
        }
        keys
    }
}

/// What a repair needs: every key to fetch again and every orphan with its destination
/// version (the delete must be at least as new to win the merge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairKeys {
    pub fetch: Vec<Key>,
    pub orphans: Vec<(Key, i64)>,
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
}

impl Classified for DriftError {
    fn kind(&self) -> ErrorKind {
        match self {
            DriftError::OutOfOrder { .. } => ErrorKind::Reconciliation,
            DriftError::Unsupported { .. } => ErrorKind::Config,
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
    let mut compared = Compared::default();
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
            compared.differences.push(Difference {
                key,
                class,
                destination_version,
            });
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
        let (drift, repair) = (compared.drift(), compared.repair_keys());
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
        let (drift, repair) = (compared.drift(), compared.repair_keys());
        assert!(drift.is_clean(), "{drift:?}");
        assert_eq!(drift.in_flight, 2);
        assert!(repair.fetch.is_empty());
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
        compared.settle(|key| *key == Key::Text("b".into()));
        assert!(compared.drift().is_clean());
        assert_eq!(compared.drift().in_flight, 1);
    }
}
