//! What a value may hold on its way to any destination: the one rule every source and
//! destination share, decided per value at extraction.
//!
//! - Convert where nothing is lost. The one documented exception: U+0000 (NUL) in text is
//!   replaced by U+FFFD (the replacement character). PostgreSQL cannot store NUL in `text` at
//!   all, and a load holding one would fail its merge on every retry; the other destinations
//!   get the same value so that every destination holds the same rows. Each replaced value is
//!   counted in the run report (`values_replaced`), never silent.
//! - Otherwise the whole record goes to the load's dead letters, with a reason naming the
//!   column and the [`Problem`] (never the value: values can be personal data; the record
//!   itself is the dead letter's `raw`). Never a NULL in its place, never a failed merge:
//!   - timestamps and dates outside the years 0001–9999 ([`MIN_MILLIS`]..=[`MAX_MILLIS`],
//!     [`MIN_DAYS`]..=[`MAX_DAYS`]): the range PostgreSQL, Snowflake and Delta readers
//!     (Spark) all store. Past it PostgreSQL's COPY or Snowflake fails the merge, and the
//!     lake's millisecond → microsecond cast overflows;
//!   - integers outside int64 (a text column keeps them exactly as written instead);
//!   - text that is not UTF-8.
//!
//! Where it is applied: [`apply`] runs on every batch a source produces, before it is staged
//! (`pipeline::batch`), so every source × destination is covered by construction. An integer
//! past int64 and bytes that are not UTF-8 cannot reach a batch at all (Arrow holds neither),
//! so they are decided at the one point per wire format where the raw bytes are decoded, with
//! the same [`Problem`]s: the file source's JSONL and CSV readers, and each API connector's
//! converters, which dead-letter a number that is not an int64. The file source also checks
//! timestamps and dates as it decodes them, so that its dead letter names the file and line,
//! and so that the cursor it derives from the data never moves to a value the rule rejects
//! (a far-future row would otherwise carry the cursor past every later row).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray, StringArray};
use arrow::datatypes::{ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Date32Type, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::Result;
use crate::load::DeadLetter;

/// 0001-01-01T00:00:00Z as epoch milliseconds: the first instant every destination stores.
pub const MIN_MILLIS: i64 = -62_135_596_800_000;
/// 9999-12-31T23:59:59.999Z as epoch milliseconds: the last.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;
/// 0001-01-01 as days since 1970-01-01.
pub const MIN_DAYS: i32 = -719_162;
/// 9999-12-31 as days since 1970-01-01.
pub const MAX_DAYS: i32 = 2_932_896;

/// Why a value cannot go to every destination. Its text names the problem, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(
        "timestamp outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999Z, the range every destination stores"
    )]
    TimestampOutOfRange,
    #[error("date outside 0001-01-01..9999-12-31, the range every destination stores")]
    DateOutOfRange,
    #[error("integer outside int64 (-2^63..2^63-1)")]
    IntegerOutOfRange,
    /// At byte offset `byte` (counted from 0) of the `within` (a CSV field, a JSONL line).
    #[error("not valid UTF-8 (at byte offset {byte} of the {within})")]
    NotUtf8 { byte: usize, within: &'static str },
}

/// Whether `text` is an integer literal (an optional sign, then digits), whatever its size:
/// a converter that cannot read one as int64 says [`Problem::IntegerOutOfRange`].
pub fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether an epoch-millisecond timestamp is inside the years 0001–9999.
pub fn check_millis(millis: i64) -> Result<i64, Problem> {
    if (MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
        Ok(millis)
    } else {
        Err(Problem::TimestampOutOfRange)
    }
}

/// Whether a date (days since 1970-01-01) is inside the years 0001–9999.
pub fn check_days(days: i32) -> Result<i32, Problem> {
    if (MIN_DAYS..=MAX_DAYS).contains(&days) {
        Ok(days)
    } else {
        Err(Problem::DateOutOfRange)
    }
}

/// The range of a timestamp column of `unit` that every destination stores.
fn timestamp_range(unit: TimeUnit) -> (i64, i64) {
    match unit {
        TimeUnit::Second => (MIN_MILLIS / 1000, MAX_MILLIS / 1000),
        TimeUnit::Millisecond => (MIN_MILLIS, MAX_MILLIS),
        TimeUnit::Microsecond => (MIN_MILLIS * 1000, MAX_MILLIS * 1000 + 999),
        // i64 nanoseconds span 1677–2262: always inside.
        TimeUnit::Nanosecond => (i64::MIN, i64::MAX),
    }
}

/// A batch after the rule: what is staged, and what is not.
#[derive(Debug)]
pub struct Checked {
    /// The rows every destination can store, NUL replaced.
    pub batch: RecordBatch,
    /// Text values whose NUL characters were replaced.
    pub replaced: u64,
    /// The records left out, one dead letter each.
    pub rejected: Vec<DeadLetter>,
}

/// Applies the rule to one extracted batch (see the module docs). `key` names the key column.
/// A batch that needs nothing comes back as it was (no copy).
pub fn apply(batch: RecordBatch, key: &str) -> Result<Checked> {
    let (batch, replaced) = without_nul(batch)?;
    let mut failed: Vec<Option<(usize, Problem)>> = Vec::new();
    for (index, column) in batch.columns().iter().enumerate() {
        for row in out_of_range(column) {
            if failed.is_empty() {
                failed = vec![None; batch.num_rows()];
            }
            failed[row].get_or_insert((index, problem_of(column.data_type())));
        }
    }
    if failed.is_empty() {
        return Ok(Checked {
            batch,
            replaced,
            rejected: Vec::new(),
        });
    }
    let schema = batch.schema();
    let key_column = batch.column_by_name(key);
    let mut rejected = Vec::new();
    for (row, failure) in failed.iter().enumerate() {
        let Some((column, problem)) = failure else {
            continue;
        };
        let name = schema.field(*column).name();
        rejected.push(DeadLetter {
            key: key_column.map_or_else(String::new, |k| text_of(k, row)),
            field: Some(name.clone()),
            reason: format!("{name}: {problem}"),
            raw: record_json(&batch, row),
        });
    }
    let keep: BooleanArray = failed.iter().map(|f| Some(f.is_none())).collect();
    let batch = arrow::compute::filter_record_batch(&batch, &keep)?;
    Ok(Checked {
        batch,
        replaced,
        rejected,
    })
}

fn problem_of(data_type: &DataType) -> Problem {
    match data_type {
        DataType::Date32 => Problem::DateOutOfRange,
        _ => Problem::TimestampOutOfRange,
    }
}

/// The rows of a date or timestamp column outside the years 0001–9999 (none for other types).
fn out_of_range(column: &ArrayRef) -> Vec<usize> {
    use arrow::datatypes::{
        TimestampMicrosecondType as Micros, TimestampMillisecondType as Millis,
        TimestampNanosecondType as Nanos, TimestampSecondType as Seconds,
    };
    match column.data_type() {
        DataType::Date32 => rows_outside(column.as_primitive::<Date32Type>(), MIN_DAYS, MAX_DAYS),
        DataType::Timestamp(unit, _) => {
            let (min, max) = timestamp_range(*unit);
            match unit {
                TimeUnit::Second => rows_outside(column.as_primitive::<Seconds>(), min, max),
                TimeUnit::Millisecond => rows_outside(column.as_primitive::<Millis>(), min, max),
                TimeUnit::Microsecond => rows_outside(column.as_primitive::<Micros>(), min, max),
                TimeUnit::Nanosecond => rows_outside(column.as_primitive::<Nanos>(), min, max),
            }
        }
        _ => Vec::new(),
    }
}

fn rows_outside<T>(values: &PrimitiveArray<T>, min: T::Native, max: T::Native) -> Vec<usize>
where
    T: ArrowPrimitiveType,
    T::Native: PartialOrd + ArrowNativeTypeOp,
{
    // The usual batch has every value inside: the min/max kernels say so in one pass.
    let inside = arrow::compute::min(values).is_none_or(|m| m >= min)
        && arrow::compute::max(values).is_none_or(|m| m <= max);
    if inside {
        return Vec::new();
    }
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_some_and(|v| v < min || v > max))
        .map(|(row, _)| row)
        .collect()
}

fn timestamp_values(column: &ArrayRef, unit: TimeUnit) -> Vec<Option<i64>> {
    use arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    match unit {
        TimeUnit::Second => column
            .as_primitive::<TimestampSecondType>()
            .iter()
            .collect(),
        TimeUnit::Millisecond => column
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .collect(),
        TimeUnit::Microsecond => column
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect(),
        TimeUnit::Nanosecond => column
            .as_primitive::<TimestampNanosecondType>()
            .iter()
            .collect(),
    }
}

/// A value as text for a dead letter's key; empty when it cannot be shown.
fn text_of(column: &ArrayRef, row: usize) -> String {
    if column.is_null(row) {
        return String::new();
    }
    arrow::util::display::array_value_to_string(column, row).unwrap_or_default()
}

/// One row as a JSON object, the dead letter's `raw` for a record rejected after conversion
/// (the source's own bytes are gone by then). Dates and timestamps are their epoch numbers in
/// the column's unit (days, or the timestamp's unit), since the rejected ones have no
/// calendar form every reader accepts.
fn record_json(batch: &RecordBatch, row: usize) -> String {
    use serde_json::Value;
    let mut record = serde_json::Map::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let value = if column.is_null(row) {
            Value::Null
        } else {
            match column.data_type() {
                DataType::Int64 => column
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(row)
                    .into(),
                DataType::Float64 => serde_json::Number::from_f64(
                    column
                        .as_primitive::<arrow::datatypes::Float64Type>()
                        .value(row),
                )
                .map_or(Value::Null, Value::Number),
                DataType::Boolean => column.as_boolean().value(row).into(),
                DataType::Date32 => column.as_primitive::<Date32Type>().value(row).into(),
                DataType::Timestamp(unit, _) => {
                    timestamp_values(column, *unit)[row].map_or(Value::Null, Value::from)
                }
                _ => Value::String(text_of(column, row)),
            }
        };
        record.insert(field.name().clone(), value);
    }
    Value::Object(record).to_string()
}

/// `batch` with NUL in text replaced, and how many values changed. Batches without NUL
/// come back as they were (no copy).
fn without_nul(batch: RecordBatch) -> Result<(RecordBatch, u64)> {
    let mut replaced = 0u64;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    let mut changed = false;
    for column in batch.columns() {
        if column.data_type() != &DataType::Utf8 {
            columns.push(column.clone());
            continue;
        }
        let text = column.as_string::<i32>();
        // The values buffer holds every value's bytes back to back: one scan says whether
        // any value needs a look.
        if !text.value_data().contains(&0) {
            columns.push(column.clone());
            continue;
        }
        let cleaned: StringArray = text
            .iter()
            .map(|value| {
                value.map(|v| {
                    if v.contains('\0') {
                        replaced += 1;
                        v.replace('\0', "\u{FFFD}")
                    } else {
                        v.to_string()
                    }
                })
            })
            .collect();
        columns.push(Arc::new(cleaned));
        changed = true;
    }
    if !changed {
        return Ok((batch, 0));
    }
    Ok((RecordBatch::try_new(batch.schema(), columns)?, replaced))
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Date32Array, Int64Array, TimestampMicrosecondArray, TimestampMillisecondArray,
    };
    use arrow::datatypes::{Field, Schema};
    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_and_is_counted() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a\0b\0"), None, Some("plain")])),
            ],
        )
        .unwrap();
        let (cleaned, replaced) = without_nul(batch).unwrap();
        assert_eq!(replaced, 1);
        let emails = cleaned.column(1).as_string::<i32>();
        assert_eq!(emails.value(0), "a\u{FFFD}b\u{FFFD}");
        assert!(emails.is_null(1));
        assert_eq!(emails.value(2), "plain");
        let (_, again) = without_nul(cleaned).unwrap();
        assert_eq!(again, 0);
    }

    #[test]
    fn the_bounds_are_the_first_and_last_instant_and_day_of_years_1_to_9999() {
        let first = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
        let after_last = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(MIN_MILLIS, first.timestamp_millis());
        assert_eq!(MAX_MILLIS, after_last.timestamp_millis() - 1);
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let days = |y, m, d| (NaiveDate::from_ymd_opt(y, m, d).unwrap() - epoch).num_days();
        assert_eq!(i64::from(MIN_DAYS), days(1, 1, 1));
        assert_eq!(i64::from(MAX_DAYS), days(9999, 12, 31));

        assert_eq!(check_millis(MIN_MILLIS), Ok(MIN_MILLIS));
        assert_eq!(check_millis(MAX_MILLIS), Ok(MAX_MILLIS));
        assert_eq!(
            check_millis(MIN_MILLIS - 1),
            Err(Problem::TimestampOutOfRange)
        );
        assert_eq!(
            check_millis(MAX_MILLIS + 1),
            Err(Problem::TimestampOutOfRange)
        );
        assert_eq!(check_millis(i64::MIN), Err(Problem::TimestampOutOfRange));
        assert_eq!(check_days(MIN_DAYS), Ok(MIN_DAYS));
        assert_eq!(check_days(MAX_DAYS), Ok(MAX_DAYS));
        assert_eq!(check_days(MIN_DAYS - 1), Err(Problem::DateOutOfRange));
        assert_eq!(check_days(MAX_DAYS + 1), Err(Problem::DateOutOfRange));
    }

    fn batch(ids: Vec<i64>, days: Vec<Option<i32>>, millis: Vec<Option<i64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("born", DataType::Date32, true),
            Field::new(
                "seen",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Date32Array::from(days)),
                Arc::new(TimestampMillisecondArray::from(millis).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    #[test]
    fn records_outside_the_range_become_dead_letters_naming_the_column_not_the_value() {
        let input = batch(
            vec![1, 2, 3, 4, 5],
            vec![
                Some(MIN_DAYS),
                Some(MAX_DAYS + 1),
                None,
                Some(0),
                Some(MIN_DAYS - 1),
            ],
            vec![
                Some(MAX_MILLIS),
                Some(0),
                Some(9_300_000_000_000_000),
                None,
                Some(MIN_MILLIS - 1),
            ],
        );
        let checked = apply(input, "id").unwrap();
        let ids = checked
            .batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(ids.values().to_vec(), vec![1, 4]);
        // Nothing kept turned NULL.
        assert!(checked.batch.column(1).is_valid(0));
        assert!(checked.batch.column(2).is_valid(0));
        let letters: Vec<_> = checked
            .rejected
            .iter()
            .map(|l| (l.key.as_str(), l.field.as_deref(), l.reason.as_str()))
            .collect();
        assert_eq!(
            letters,
            vec![
                (
                    "2",
                    Some("born"),
                    "born: date outside 0001-01-01..9999-12-31, the range every destination stores"
                ),
                (
                    "3",
                    Some("seen"),
                    "seen: timestamp outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999Z, the range every destination stores"
                ),
                // The first failing column names the record's problem.
                (
                    "5",
                    Some("born"),
                    "born: date outside 0001-01-01..9999-12-31, the range every destination stores"
                ),
            ]
        );
        let raw: serde_json::Value = serde_json::from_str(&checked.rejected[1].raw).unwrap();
        assert_eq!(
            raw,
            serde_json::json!({"id": 3, "born": null, "seen": 9_300_000_000_000_000i64})
        );
    }

    #[test]
    fn microsecond_timestamps_have_the_same_range() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let input = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
                Arc::new(TimestampMicrosecondArray::from(vec![
                    MIN_MILLIS * 1000,
                    MIN_MILLIS * 1000 - 1,
                    MAX_MILLIS * 1000 + 999,
                    MAX_MILLIS * 1000 + 1000,
                ])),
            ],
        )
        .unwrap();
        let checked = apply(input, "id").unwrap();
        assert_eq!(checked.batch.num_rows(), 2);
        let keys: Vec<_> = checked.rejected.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["b", "d"]);
    }

    /// Every row is either staged unchanged or a dead letter, and a row is a dead letter
    /// exactly when one of its dates or timestamps is outside the range: every combination of
    /// values around both bounds, and NULL.
    #[test]
    fn every_row_is_staged_unchanged_or_dead_lettered() {
        let days = [
            None,
            Some(i32::MIN),
            Some(MIN_DAYS - 1),
            Some(MIN_DAYS),
            Some(0),
            Some(MAX_DAYS),
            Some(MAX_DAYS + 1),
            Some(i32::MAX),
        ];
        let millis = [
            None,
            Some(i64::MIN),
            Some(MIN_MILLIS - 1),
            Some(MIN_MILLIS),
            Some(-1),
            Some(MAX_MILLIS),
            Some(MAX_MILLIS + 1),
            Some(i64::MAX),
        ];
        let rows: Vec<(Option<i32>, Option<i64>)> = days
            .iter()
            .flat_map(|d| millis.iter().map(move |m| (*d, *m)))
            .collect();
        let input = batch(
            (0..rows.len() as i64).collect(),
            rows.iter().map(|r| r.0).collect(),
            rows.iter().map(|r| r.1).collect(),
        );
        let checked = apply(input, "id").unwrap();
        let bad = |r: &(Option<i32>, Option<i64>)| {
            r.0.is_some_and(|d| check_days(d).is_err())
                || r.1.is_some_and(|m| check_millis(m).is_err())
        };
        let kept: Vec<usize> = (0..rows.len()).filter(|i| !bad(&rows[*i])).collect();
        let dead: Vec<String> = (0..rows.len())
            .filter(|i| bad(&rows[*i]))
            .map(|i| i.to_string())
            .collect();
        assert_eq!(
            kept.len(),
            16,
            "four good values in each column, NULL included"
        );
        let ids = checked
            .batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        let born = checked.batch.column(1).as_primitive::<Date32Type>();
        let seen = checked
            .batch
            .column(2)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(ids.len(), kept.len());
        for (at, row) in kept.iter().enumerate() {
            assert_eq!(ids.value(at), *row as i64);
            assert_eq!(born.is_valid(at).then(|| born.value(at)), rows[*row].0);
            assert_eq!(seen.is_valid(at).then(|| seen.value(at)), rows[*row].1);
        }
        let letters: Vec<String> = checked.rejected.iter().map(|l| l.key.clone()).collect();
        assert_eq!(letters, dead);
    }
}
