//! Counts and order-independent checksums, compared at every hop (source → stage → destination).
//!
//! A row's fingerprint is the first 8 bytes of `md5("{key}|{version_ms}|{t|f}")` read as a
//! big-endian u64; a set's checksum is the wrapping sum of its rows' fingerprints, so it does not
//! depend on order or batching. The same function is computable in SQL (see
//! `sql/postgres/staged_fingerprint.sql`), so a destination proves what it received.

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::error::{Classified, ErrorKind};
use crate::schema::{DELETED_COLUMN, VERSION_COLUMN};

pub mod drift;
pub mod listing;
pub mod report;

/// Row count plus order-independent checksum of a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub rows: u64,
    pub checksum: u64,
}

impl Fingerprint {
    pub fn add(&mut self, key: &str, version_ms: i64, deleted: bool) {
        self.rows += 1;
        self.checksum = self
            .checksum
            .wrapping_add(row_hash(key, version_ms, deleted));
    }

    pub fn merge(&mut self, other: Fingerprint) {
        self.rows += other.rows;
        self.checksum = self.checksum.wrapping_add(other.checksum);
    }
}

/// The fingerprint of one row. Keep in sync with `sql/postgres/table_fingerprint.sql`.
///
/// Hashes the key and the rest (`|{version_ms}|{t|f}`, written on the stack) one after the
/// other, which is the md5 of their concatenation: no allocation per row, where a destination's
/// million rows read back go through here one at a time.
pub fn row_hash(key: &str, version_ms: i64, deleted: bool) -> u64 {
    RowRest::default().hash(key.as_bytes(), version_ms, deleted)
}

/// What follows the key in a row's hashed text, `|{version_ms}|{t|f}`, written with `itoa`
/// into a buffer on the stack: `core::fmt` cost about a third of a row's hash.
#[derive(Default)]
struct RowRest {
    version: itoa::Buffer,
    text: [u8; 24],
}

impl RowRest {
    /// [`row_hash`] of a key's text, with this buffer for the rest.
    fn hash(&mut self, key: &[u8], version_ms: i64, deleted: bool) -> u64 {
        first_eight(
            Md5::new()
                .chain_update(key)
                .chain_update(self.text(version_ms, deleted))
                .finalize(),
        )
    }

    fn text(&mut self, version_ms: i64, deleted: bool) -> &[u8] {
        // `|`, an i64 (at most 20 characters), `|` and the flag: 23 bytes at most.
        let version = self.version.format(version_ms).as_bytes();
        let end = 1 + version.len();
        self.text[0] = b'|';
        self.text[1..end].copy_from_slice(version);
        self.text[end] = b'|';
        self.text[end + 1] = if deleted { b't' } else { b'f' };
        &self.text[..end + 2]
    }
}

/// The text [`row_hash`] hashes, `{key}|{version_ms}|{t|f}`, for the tests to hash whole.
#[cfg(test)]
fn row_text(text: &mut String, key: impl std::fmt::Display, version_ms: i64, deleted: bool) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "{key}|{version_ms}|{}",
        if deleted { 't' } else { 'f' }
    );
}

/// The first 8 bytes of the md5 of `text`, big-endian.
#[cfg(test)]
fn hash_text(text: &str) -> u64 {
    first_eight(Md5::digest(text.as_bytes()))
}

/// The first 8 bytes of an md5 digest, big-endian.
fn first_eight(digest: md5::digest::Output<Md5>) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A batch without the shape every staged batch has; a bug upstream, not bad data (records
/// that cannot be converted become dead letters before this point).
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("batch lacks column {0}")]
    MissingColumn(String),
    #[error("{VERSION_COLUMN} is {0}, not a millisecond or microsecond timestamp")]
    VersionType(DataType),
    #[error("{DELETED_COLUMN} is not boolean")]
    DeletedType,
    #[error("unsupported key type {0}")]
    KeyType(DataType),
}

impl Classified for FingerprintError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Stage
    }
}

/// Count and checksum of a batch that has the key, `_syncline_version` and `_syncline_deleted`.
pub fn batch_fingerprint(batch: &RecordBatch, key: &str) -> Result<Fingerprint> {
    let mut fingerprint = Fingerprint::default();
    for_each_row_hash(batch, key, |hash| {
        fingerprint.rows += 1;
        fingerprint.checksum = fingerprint.checksum.wrapping_add(hash);
    })?;
    Ok(fingerprint)
}

/// Each row's [`row_hash`], in row order: what a transform carries through its plan beside
/// the rows (see `pipeline::transform`), so the rows it keeps are summed, not hashed again.
pub fn row_hashes(batch: &RecordBatch, key: &str) -> Result<UInt64Array> {
    let mut hashes = Vec::with_capacity(batch.num_rows());
    for_each_row_hash(batch, key, |hash| hashes.push(hash))?;
    Ok(UInt64Array::from(hashes))
}

/// The fingerprint of the rows a [`row_hashes`] column holds, all of them or only those
/// `selected` marks: a carried column's rows are summed, not hashed again.
pub fn carried_fingerprint(hashes: &UInt64Array, selected: Option<&BooleanArray>) -> Fingerprint {
    let mut fingerprint = Fingerprint::default();
    for (row, hash) in hashes.values().iter().enumerate() {
        if selected.is_none_or(|s| s.value(row)) {
            fingerprint.rows += 1;
            fingerprint.checksum = fingerprint.checksum.wrapping_add(*hash);
        }
    }
    fingerprint
}

/// Calls `each` with every row's [`row_hash`], in row order.
fn for_each_row_hash(batch: &RecordBatch, key: &str, mut each: impl FnMut(u64)) -> Result<()> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| FingerprintError::MissingColumn(name.to_string()))
    };
    let keys = column(key)?;
    // Versions are hashed as milliseconds whatever their unit, as every destination does.
    let version_column = column(VERSION_COLUMN)?;
    let versions_ms: Vec<i64> = match version_column.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => version_column
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => version_column
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .iter()
            .map(|micros| micros.div_euclid(1000))
            .collect(),
        other => return Err(FingerprintError::VersionType(other.clone()).into()),
    };
    let deleted = column(DELETED_COLUMN)?
        .as_boolean_opt()
        .ok_or(FingerprintError::DeletedType)?;
    let mut rest = RowRest::default();
    let mut hash =
        |key: &[u8], row: usize| each(rest.hash(key, versions_ms[row], deleted.value(row)));
    match keys.data_type() {
        DataType::Int64 => {
            let keys = keys.as_primitive::<arrow::datatypes::Int64Type>();
            let mut text = itoa::Buffer::new();
            for (row, key) in keys.values().iter().enumerate() {
                hash(text.format(*key).as_bytes(), row);
            }
        }
        DataType::Utf8 => {
            let keys = keys.as_string::<i32>();
            for row in 0..batch.num_rows() {
                hash(keys.value(row).as_bytes(), row);
            }
        }
        // A decimal key is its canonical text (`12.50`), which is what each destination's
        // SQL fingerprint reads from a `numeric(p,s)`, `NUMBER(p,s)` or text key column.
        DataType::Decimal128(..) => {
            let keys = crate::schema::decimal_strings(keys.as_primitive());
            for row in 0..batch.num_rows() {
                hash(keys.value(row).as_bytes(), row);
            }
        }
        other => return Err(FingerprintError::KeyType(other.clone()).into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// `row_hash` hashes its parts one after the other; that must be the hash of the one
        /// text `batch_fingerprint` and every destination's SQL build.
        #[test]
        fn a_row_hashes_as_its_whole_text(
            key in ".{0,40}",
            version_ms in proptest::prelude::any::<i64>(),
            deleted in proptest::prelude::any::<bool>(),
        ) {
            let mut text = String::new();
            row_text(&mut text, &key, version_ms, deleted);
            proptest::prop_assert_eq!(row_hash(&key, version_ms, deleted), hash_text(&text));
        }
    }

    proptest::proptest! {
        /// A batch's fingerprint is the sum of its rows' whole texts hashed, whatever the
        /// key's type and the version's unit (`itoa` writes what `Display` writes).
        #[test]
        fn a_batch_hashes_as_its_rows_texts(
            rows in proptest::collection::vec(
                (proptest::prelude::any::<i64>(), -(1i64 << 50)..(1i64 << 50), proptest::prelude::any::<bool>()),
                0..40,
            ),
        ) {
            use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
            use std::sync::Arc;
            let mut expected = Fingerprint::default();
            for (key, micros, deleted) in &rows {
                let mut text = String::new();
                row_text(&mut text, key, micros.div_euclid(1000), *deleted);
                expected.rows += 1;
                expected.checksum = expected.checksum.wrapping_add(hash_text(&text));
            }
            let versions = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1));
            let deleted = BooleanArray::from_iter(rows.iter().map(|r| Some(r.2)));
            for keys in [
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as arrow::array::ArrayRef,
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.to_string()))),
            ] {
                let batch = RecordBatch::try_from_iter([
                    ("id", keys),
                    (VERSION_COLUMN, Arc::new(versions.clone()) as _),
                    (DELETED_COLUMN, Arc::new(deleted.clone()) as _),
                ])
                .unwrap();
                proptest::prop_assert_eq!(batch_fingerprint(&batch, "id").unwrap(), expected);
                let hashes = row_hashes(&batch, "id").unwrap();
                proptest::prop_assert_eq!(carried_fingerprint(&hashes, None), expected);
            }
        }
    }

    #[test]
    fn checksum_ignores_order() {
        let mut a = Fingerprint::default();
        a.add("1", 10, false);
        a.add("2", 20, true);
        let mut b = Fingerprint::default();
        b.add("2", 20, true);
        b.add("1", 10, false);
        assert_eq!(a, b);
        let mut c = Fingerprint::default();
        c.add("2", 21, true);
        c.add("1", 10, false);
        assert_ne!(a.checksum, c.checksum);
    }

    #[test]
    fn a_batch_fingerprint_is_the_sum_of_its_row_hashes() {
        use arrow::array::{BooleanArray, Int64Array, StringArray, TimestampMillisecondArray};
        use std::sync::Arc;
        let versions = TimestampMillisecondArray::from(vec![1_700_000_000_000, -5]);
        let deleted = BooleanArray::from(vec![false, true]);
        for keys in [
            Arc::new(Int64Array::from(vec![42, -7])) as arrow::array::ArrayRef,
            Arc::new(StringArray::from(vec!["42", "-7"])),
        ] {
            let batch = RecordBatch::try_from_iter([
                ("id", keys),
                (VERSION_COLUMN, Arc::new(versions.clone()) as _),
                (DELETED_COLUMN, Arc::new(deleted.clone()) as _),
            ])
            .unwrap();
            let mut expected = Fingerprint::default();
            expected.add("42", 1_700_000_000_000, false);
            expected.add("-7", -5, true);
            assert_eq!(batch_fingerprint(&batch, "id").unwrap(), expected);
        }
    }

    #[test]
    fn a_decimal_key_fingerprints_as_its_canonical_text() {
        use arrow::array::{BooleanArray, Decimal128Array, TimestampMillisecondArray};
        use std::sync::Arc;
        let keys = Decimal128Array::from(vec![1250, -1, 0])
            .with_precision_and_scale(18, 2)
            .unwrap();
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(keys) as arrow::array::ArrayRef),
            (
                VERSION_COLUMN,
                Arc::new(TimestampMillisecondArray::from(vec![1, 2, 3])) as _,
            ),
            (
                DELETED_COLUMN,
                Arc::new(BooleanArray::from(vec![false, false, true])) as _,
            ),
        ])
        .unwrap();
        let mut expected = Fingerprint::default();
        expected.add("12.50", 1, false);
        expected.add("-0.01", 2, false);
        expected.add("0.00", 3, true);
        assert_eq!(batch_fingerprint(&batch, "id").unwrap(), expected);
    }

    #[test]
    fn row_hash_matches_an_independent_md5() {
        // int(hashlib.md5(b'42|1700000000000|f').hexdigest()[:16], 16), computed with Python.
        assert_eq!(
            row_hash("42", 1_700_000_000_000, false),
            14357795719854844729
        );
    }
}
