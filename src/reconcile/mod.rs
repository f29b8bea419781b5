//! Counts and order-independent checksums, compared at every hop (source → stage → destination).
//!
//! A row's fingerprint is the first 8 bytes of `md5("{key}|{version_ms}|{t|f}")` read as a
//! big-endian u64; a set's checksum is the wrapping sum of its rows' fingerprints, so it does not
//! depend on order or batching. The same function is computable in SQL (see
//! `sql/postgres/staged_fingerprint.sql`), so a destination proves what it received.

use arrow::array::{Array, AsArray, RecordBatch};
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
    use std::io::Write;
    // `|`, an i64 (at most 20 characters), `|` and the flag.
    let mut rest = [0u8; 24];
    let written = {
        let mut free = &mut rest[..];
        // 23 bytes at most: writing to the array cannot fail.
        let _ = write!(free, "|{version_ms}|{}", if deleted { 't' } else { 'f' });
        24 - free.len()
    };
    first_eight(
        Md5::new()
            .chain_update(key)
            .chain_update(&rest[..written])
            .finalize(),
    )
}

/// Appends what [`row_hash`] hashes to `text`: `{key}|{version_ms}|{t|f}`.
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
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| FingerprintError::MissingColumn(name.to_string()))
    };
    let keys = column(key)?;
    // Versions are hashed as milliseconds whatever their unit, as every destination does.
    let version_column = column(VERSION_COLUMN)?;
    let version_ms: Box<dyn Fn(usize) -> i64> = match version_column.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let values = version_column.as_primitive::<TimestampMillisecondType>();
            Box::new(move |row| values.value(row))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let values = version_column.as_primitive::<TimestampMicrosecondType>();
            Box::new(move |row| values.value(row).div_euclid(1000))
        }
        other => return Err(FingerprintError::VersionType(other.clone()).into()),
    };
    let deleted = column(DELETED_COLUMN)?
        .as_boolean_opt()
        .ok_or(FingerprintError::DeletedType)?;
    let mut fingerprint = Fingerprint::default();
    // One buffer for every row's text: no allocation per row.
    let mut text = String::with_capacity(64);
    let mut add = |text: &mut String| {
        fingerprint.rows += 1;
        fingerprint.checksum = fingerprint.checksum.wrapping_add(hash_text(text));
        text.clear();
    };
    match keys.data_type() {
        DataType::Int64 => {
            let keys = keys.as_primitive::<arrow::datatypes::Int64Type>();
            for row in 0..batch.num_rows() {
                row_text(
                    &mut text,
                    keys.value(row),
                    version_ms(row),
                    deleted.value(row),
                );
                add(&mut text);
            }
        }
        DataType::Utf8 => {
            let keys = keys.as_string::<i32>();
            for row in 0..batch.num_rows() {
                row_text(
                    &mut text,
                    keys.value(row),
                    version_ms(row),
                    deleted.value(row),
                );
                add(&mut text);
            }
        }
        // A decimal key is its canonical text (`12.50`), which is what each destination's
        // SQL fingerprint reads from a `numeric(p,s)`, `NUMBER(p,s)` or text key column.
        DataType::Decimal128(..) => {
            let keys = crate::schema::decimal_strings(keys.as_primitive());
            for row in 0..batch.num_rows() {
                row_text(
                    &mut text,
                    keys.value(row),
                    version_ms(row),
                    deleted.value(row),
                );
                add(&mut text);
            }
        }
        other => return Err(FingerprintError::KeyType(other.clone()).into()),
    }
    Ok(fingerprint)
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
