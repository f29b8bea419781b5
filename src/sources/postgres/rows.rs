//! Typed Arrow builders for source rows, fed either binary COPY values (snapshot and cursor
//! reads) or the text values logical replication sends.
//!
//! Binary COPY values arrive in the types the read query casts to (int8, float8, text, bool,
//! date, timestamp[tz]), so decoding is a fixed-width read; no per-cell `String` is made.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime};

use super::catalog::ValueKind;

/// Days from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One column's builder.
pub enum ColumnValues {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Micros(TimestampMicrosecondBuilder),
    Text(StringBuilder),
}

/// Why a value could not be converted; never includes the value (it may be personal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(pub &'static str);

impl ColumnValues {
    pub fn new(kind: ValueKind, capacity: usize) -> ColumnValues {
        match kind {
            ValueKind::Int => ColumnValues::Int(Int64Builder::with_capacity(capacity)),
            ValueKind::Float => ColumnValues::Float(Float64Builder::with_capacity(capacity)),
            ValueKind::Bool => ColumnValues::Bool(BooleanBuilder::with_capacity(capacity)),
            ValueKind::Date => ColumnValues::Date(Date32Builder::with_capacity(capacity)),
            ValueKind::Timestamp { .. } => ColumnValues::Micros(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            ValueKind::Text => {
                ColumnValues::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
        }
    }

    pub fn append_null(&mut self) {
        match self {
            ColumnValues::Int(b) => b.append_null(),
            ColumnValues::Float(b) => b.append_null(),
            ColumnValues::Bool(b) => b.append_null(),
            ColumnValues::Date(b) => b.append_null(),
            ColumnValues::Micros(b) => b.append_null(),
            ColumnValues::Text(b) => b.append_null(),
        }
    }

    /// Appends a binary COPY value (`None` is NULL).
    pub fn append_binary(&mut self, value: Option<&[u8]>) -> Result<(), BadValue> {
        let Some(bytes) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            ColumnValues::Int(b) => b.append_value(i64::from_be_bytes(fixed(bytes)?)),
            ColumnValues::Float(b) => b.append_value(f64::from_be_bytes(fixed(bytes)?)),
            ColumnValues::Bool(b) => b.append_value(fixed::<1>(bytes)?[0] != 0),
            ColumnValues::Date(b) => match i32::from_be_bytes(fixed(bytes)?) {
                // ±infinity have no Date32 value.
                i32::MAX | i32::MIN => b.append_null(),
                days => b.append_value(days.saturating_add(PG_EPOCH_DAYS)),
            },
            ColumnValues::Micros(b) => match i64::from_be_bytes(fixed(bytes)?) {
                i64::MAX | i64::MIN => b.append_null(),
                micros => b.append_value(micros.saturating_add(PG_EPOCH_MICROS)),
            },
            ColumnValues::Text(b) => b.append_value(
                std::str::from_utf8(bytes).map_err(|_| BadValue("text is not valid UTF-8"))?,
            ),
        }
        Ok(())
    }

    /// Appends a value in PostgreSQL's text output form (DateStyle ISO).
    pub fn append_text(&mut self, value: Option<&str>, kind: ValueKind) -> Result<(), BadValue> {
        let Some(text) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            ColumnValues::Int(b) => b.append_value(
                text.parse()
                    .map_err(|_| BadValue("not an integer in text form"))?,
            ),
            ColumnValues::Float(b) => b.append_value(
                text.parse()
                    .map_err(|_| BadValue("not a float in text form"))?,
            ),
            ColumnValues::Bool(b) => b.append_value(match text {
                "t" => true,
                "f" => false,
                _ => return Err(BadValue("not a boolean in text form")),
            }),
            ColumnValues::Date(b) => match parse_date(text)? {
                Some(days) => b.append_value(days),
                None => b.append_null(),
            },
            ColumnValues::Micros(b) => {
                let with_zone = matches!(kind, ValueKind::Timestamp { with_zone: true });
                match parse_timestamp(text, with_zone)? {
                    Some(micros) => b.append_value(micros),
                    None => b.append_null(),
                }
            }
            ColumnValues::Text(b) => b.append_value(text),
        }
        Ok(())
    }

    /// The column so far; the builder is empty afterwards.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnValues::Int(b) => Arc::new(b.finish()),
            ColumnValues::Float(b) => Arc::new(b.finish()),
            ColumnValues::Bool(b) => Arc::new(b.finish()),
            ColumnValues::Date(b) => Arc::new(b.finish()),
            ColumnValues::Micros(b) => Arc::new(b.finish()),
            ColumnValues::Text(b) => Arc::new(b.finish()),
        }
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], BadValue> {
    bytes
        .try_into()
        .map_err(|_| BadValue("binary value has an unexpected length"))
}

/// A binary COPY int8/timestamp value as i64 (cursor and version values).
pub fn binary_i64(bytes: &[u8]) -> Result<i64, BadValue> {
    Ok(i64::from_be_bytes(fixed(bytes)?))
}

/// Converts a binary timestamp (µs since 2000-01-01) to µs since 1970-01-01.
pub fn pg_micros_to_unix(micros: i64) -> i64 {
    micros.saturating_add(PG_EPOCH_MICROS)
}

/// `YYYY-MM-DD` → days since 1970-01-01; `None` for ±infinity.
pub fn parse_date(text: &str) -> Result<Option<i32>, BadValue> {
    if text == "infinity" || text == "-infinity" {
        return Ok(None);
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| BadValue("not an ISO date (DateStyle must be ISO)"))?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a date");
    Ok(Some((date - epoch).num_days() as i32))
}

/// An ISO timestamp (`2024-05-01 12:00:00.5+02` with a zone, or without one, read as UTC)
/// → µs since 1970-01-01 UTC; `None` for ±infinity.
pub fn parse_timestamp(text: &str, with_zone: bool) -> Result<Option<i64>, BadValue> {
    if text == "infinity" || text == "-infinity" {
        return Ok(None);
    }
    let micros = if with_zone {
        DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
            .map_err(|_| BadValue("not an ISO timestamptz (DateStyle must be ISO)"))?
            .timestamp_micros()
    } else {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .map_err(|_| BadValue("not an ISO timestamp (DateStyle must be ISO)"))?
            .and_utc()
            .timestamp_micros()
    };
    Ok(Some(micros))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Int64Type, TimestampMicrosecondType};

    #[test]
    fn binary_values_decode_to_staged_values() {
        let mut ints = ColumnValues::new(ValueKind::Int, 2);
        ints.append_binary(Some(&42i64.to_be_bytes())).unwrap();
        ints.append_binary(None).unwrap();
        let ints = ints.finish();
        assert_eq!(ints.as_primitive::<Int64Type>().value(0), 42);
        assert!(ints.is_null(1));

        let mut dates = ColumnValues::new(ValueKind::Date, 1);
        dates.append_binary(Some(&1i32.to_be_bytes())).unwrap(); // 2000-01-02
        assert_eq!(dates.finish().as_primitive::<Date32Type>().value(0), 10_958);

        let mut times = ColumnValues::new(ValueKind::Timestamp { with_zone: true }, 2);
        times
            .append_binary(Some(&1_500_000i64.to_be_bytes()))
            .unwrap();
        times.append_binary(Some(&i64::MAX.to_be_bytes())).unwrap();
        let times = times.finish();
        assert_eq!(
            times.as_primitive::<TimestampMicrosecondType>().value(0),
            946_684_801_500_000
        );
        assert!(times.is_null(1), "infinity has no staged value");

        let mut text = ColumnValues::new(ValueKind::Text, 1);
        assert_eq!(
            text.append_binary(Some(&[0xff, 0xfe])),
            Err(BadValue("text is not valid UTF-8"))
        );
    }

    #[test]
    fn text_values_parse_like_their_binary_twins() {
        assert_eq!(
            parse_timestamp("2000-01-01 00:00:01.5+00", true),
            Ok(Some(946_684_801_500_000))
        );
        assert_eq!(
            parse_timestamp("2000-01-01 02:00:01.5+02", true),
            Ok(Some(946_684_801_500_000))
        );
        assert_eq!(
            parse_timestamp("2000-01-01 05:30:01.5+05:30", true),
            Ok(Some(946_684_801_500_000))
        );
        assert_eq!(
            parse_timestamp("2000-01-01 00:00:01.5", false),
            Ok(Some(946_684_801_500_000))
        );
        assert_eq!(
            parse_timestamp("2000-01-01 00:00:01", false),
            Ok(Some(946_684_801_000_000))
        );
        assert_eq!(parse_timestamp("infinity", true), Ok(None));
        assert_eq!(parse_date("2000-01-02"), Ok(Some(10_958)));
        assert!(parse_date("01/02/2000").is_err());

        let mut floats = ColumnValues::new(ValueKind::Float, 3);
        floats.append_text(Some("1.5"), ValueKind::Float).unwrap();
        floats.append_text(Some("NaN"), ValueKind::Float).unwrap();
        floats
            .append_text(Some("-Infinity"), ValueKind::Float)
            .unwrap();
        let floats = floats.finish();
        let floats = floats.as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(floats.value(0), 1.5);
        assert!(floats.value(1).is_nan());
        assert_eq!(floats.value(2), f64::NEG_INFINITY);

        let mut bools = ColumnValues::new(ValueKind::Bool, 1);
        assert!(bools.append_text(Some("yes"), ValueKind::Bool).is_err());
    }
}
