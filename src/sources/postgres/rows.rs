//! Typed Arrow builders for source rows, fed either binary COPY values (snapshot and cursor
//! reads) or the text values logical replication sends.
//!
//! Binary COPY values arrive in the types the read query casts to (int8, float8, text, bool,
//! date, timestamp[tz]), so decoding is a fixed-width read; no per-cell `String` is made.
//! Text values come from a session set up by `session_settings.sql` (DateStyle ISO, TimeZone
//! UTC), whatever the database's or the role's defaults: dates read `2024-05-01`, years past
//! 9999 and before Christ included (`0044-03-15 BC`), and a zone offset may carry seconds
//! (`+05:53:28`, the local mean time of zones before 1900), so every text value round-trips.
//!
//! A value is decoded whole before anything is appended ([`ColumnValues::decode_binary`],
//! [`ColumnValues::decode_text`], then [`ColumnValues::append`]), so a row with one value that
//! cannot be staged is set aside as a dead letter by the caller, and the builders stay aligned.
//! `infinity` and `-infinity` dates and timestamps are such values: no destination type holds
//! them, and turning them into NULL would be a silent loss.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

use super::catalog::ValueKind;

/// Days from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Why an infinite date or timestamp is not staged.
const INFINITE: BadValue = BadValue("infinity has no value a destination can store");

/// One column's builder.
pub enum ColumnValues {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Micros(TimestampMicrosecondBuilder),
    Text(StringBuilder),
    /// The builder, its precision and its scale.
    Decimal(Decimal128Builder, u8, u8),
}

/// One decoded value, ready to append to its column's builder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// µs since 1970-01-01 UTC.
    Micros(i64),
    /// A decimal's unscaled integer and its scale.
    Decimal(i128, u8),
    Text(&'a str),
}

/// Why a value could not be converted; never includes the value (it may be personal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(pub &'static str);

impl ColumnValues {
    pub fn new(kind: ValueKind, capacity: usize) -> ColumnValues {
        match kind {
            ValueKind::Int => ColumnValues::Int(Int64Builder::with_capacity(capacity)),
            ValueKind::Float | ValueKind::Float4 => {
                ColumnValues::Float(Float64Builder::with_capacity(capacity))
            }
            ValueKind::Bool => ColumnValues::Bool(BooleanBuilder::with_capacity(capacity)),
            ValueKind::Date => ColumnValues::Date(Date32Builder::with_capacity(capacity)),
            ValueKind::Timestamp { .. } => ColumnValues::Micros(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            ValueKind::Text => {
                ColumnValues::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            ValueKind::Decimal { precision, scale } => ColumnValues::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(precision, scale as i8)
                    .expect("the catalog admits 1 to 38 digits and a scale within them"),
                precision,
                scale,
            ),
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
            ColumnValues::Decimal(b, ..) => b.append_null(),
        }
    }

    /// Decodes a binary COPY value (`None` is NULL) of a column of `kind`.
    pub fn decode_binary(kind: ValueKind, value: Option<&[u8]>) -> Result<Value<'_>, BadValue> {
        let Some(bytes) = value else {
            return Ok(Value::Null);
        };
        Ok(match kind {
            ValueKind::Int => Value::Int(i64::from_be_bytes(fixed(bytes)?)),
            // Read as float8: the COPY query casts float4 up, which keeps its exact value.
            ValueKind::Float | ValueKind::Float4 => Value::Float(f64::from_be_bytes(fixed(bytes)?)),
            ValueKind::Bool => Value::Bool(fixed::<1>(bytes)?[0] != 0),
            ValueKind::Date => match i32::from_be_bytes(fixed(bytes)?) {
                i32::MAX | i32::MIN => return Err(INFINITE),
                days => Value::Date(days.saturating_add(PG_EPOCH_DAYS)),
            },
            ValueKind::Timestamp { .. } => match i64::from_be_bytes(fixed(bytes)?) {
                i64::MAX | i64::MIN => return Err(INFINITE),
                micros => Value::Micros(micros.saturating_add(PG_EPOCH_MICROS)),
            },
            ValueKind::Text => Value::Text(
                std::str::from_utf8(bytes).map_err(|_| BadValue("text is not valid UTF-8"))?,
            ),
            // The COPY query reads a decimal as its text.
            ValueKind::Decimal { scale, .. } => Value::Decimal(
                parse_decimal(
                    std::str::from_utf8(bytes).map_err(|_| BadValue("text is not valid UTF-8"))?,
                    scale,
                )?,
                scale,
            ),
        })
    }

    /// Decodes a value in PostgreSQL's text output form (DateStyle ISO) of a column of `kind`.
    pub fn decode_text(kind: ValueKind, value: Option<&str>) -> Result<Value<'_>, BadValue> {
        let Some(text) = value else {
            return Ok(Value::Null);
        };
        Ok(match kind {
            ValueKind::Int => Value::Int(
                text.parse()
                    .map_err(|_| BadValue("not an integer in text form"))?,
            ),
            ValueKind::Float => Value::Float(
                text.parse()
                    .map_err(|_| BadValue("not a float in text form"))?,
            ),
            // The float4 the text names, widened exactly as binary COPY widens it.
            ValueKind::Float4 => Value::Float(f64::from(
                text.parse::<f32>()
                    .map_err(|_| BadValue("not a float in text form"))?,
            )),
            ValueKind::Bool => Value::Bool(match text {
                "t" => true,
                "f" => false,
                _ => return Err(BadValue("not a boolean in text form")),
            }),
            ValueKind::Date => Value::Date(parse_date(text)?),
            ValueKind::Timestamp { with_zone } => Value::Micros(parse_timestamp(text, with_zone)?),
            ValueKind::Text => Value::Text(text),
            ValueKind::Decimal { scale, .. } => Value::Decimal(parse_decimal(text, scale)?, scale),
        })
    }

    /// Appends a decoded value; a value of another kind than the column's is a bug.
    pub fn append(&mut self, value: Value<'_>) {
        match (self, value) {
            (builder, Value::Null) => builder.append_null(),
            (ColumnValues::Int(b), Value::Int(v)) => b.append_value(v),
            (ColumnValues::Float(b), Value::Float(v)) => b.append_value(v),
            (ColumnValues::Bool(b), Value::Bool(v)) => b.append_value(v),
            (ColumnValues::Date(b), Value::Date(v)) => b.append_value(v),
            (ColumnValues::Micros(b), Value::Micros(v)) => b.append_value(v),
            (ColumnValues::Text(b), Value::Text(v)) => b.append_value(v),
            (ColumnValues::Decimal(b, ..), Value::Decimal(v, _)) => b.append_value(v),
            (_, value) => unreachable!("a {value:?} decoded for a column of another kind"),
        }
    }

    /// Decodes and appends a binary COPY value (`None` is NULL).
    pub fn append_binary(&mut self, value: Option<&[u8]>) -> Result<(), BadValue> {
        let value = ColumnValues::decode_binary(self.kind(), value)?;
        self.append(value);
        Ok(())
    }

    /// Decodes and appends a value in PostgreSQL's text output form (DateStyle ISO).
    pub fn append_text(&mut self, value: Option<&str>, kind: ValueKind) -> Result<(), BadValue> {
        let value = ColumnValues::decode_text(kind, value)?;
        self.append(value);
        Ok(())
    }

    /// The kind this builder holds (timestamps as with a zone: binary values do not differ).
    fn kind(&self) -> ValueKind {
        match self {
            ColumnValues::Int(_) => ValueKind::Int,
            ColumnValues::Float(_) => ValueKind::Float,
            ColumnValues::Bool(_) => ValueKind::Bool,
            ColumnValues::Date(_) => ValueKind::Date,
            ColumnValues::Micros(_) => ValueKind::Timestamp { with_zone: true },
            ColumnValues::Text(_) => ValueKind::Text,
            ColumnValues::Decimal(_, precision, scale) => ValueKind::Decimal {
                precision: *precision,
                scale: *scale,
            },
        }
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
            ColumnValues::Decimal(b, ..) => Arc::new(b.finish()),
        }
    }
}

impl Value<'_> {
    /// The value as JSON, for a dead letter's record.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Int(v) => v.into(),
            Value::Float(v) => serde_json::Number::from_f64(v)
                .map_or_else(|| v.to_string().into(), serde_json::Value::Number),
            Value::Bool(v) => v.into(),
            Value::Date(days) => NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(days.into())))
                .map_or_else(|| days.to_string(), |d| d.to_string())
                .into(),
            Value::Micros(micros) => chrono::DateTime::from_timestamp_micros(micros)
                .map_or_else(|| micros.to_string(), |t| t.to_rfc3339())
                .into(),
            Value::Text(v) => v.into(),
            // As text, every digit kept.
            Value::Decimal(unscaled, scale) => {
                <arrow::datatypes::Decimal128Type as arrow::datatypes::DecimalType>::format_decimal(
                    unscaled,
                    38,
                    scale as i8,
                )
                .into()
            }
        }
    }
}

/// The unscaled integer of a `numeric(p, s)` value in PostgreSQL's text form (an optional
/// `-`, digits, and at most `scale` fraction digits; PostgreSQL writes exactly `scale`).
/// `NaN`, which a constrained numeric may hold, has no value any destination's decimal holds.
fn parse_decimal(text: &str, scale: u8) -> Result<i128, BadValue> {
    const NOT_A_DECIMAL: BadValue = BadValue("not a decimal in text form");
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Err(BadValue(
            "NaN or infinity, which no destination's decimal column holds",
        ));
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (integer, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if integer.is_empty() || !all_digits(integer) || !all_digits(fraction) {
        return Err(NOT_A_DECIMAL);
    }
    if fraction.len() > usize::from(scale) {
        return Err(BadValue("more fraction digits than the column's scale"));
    }
    let mut unscaled: i128 = 0;
    let padding = usize::from(scale) - fraction.len();
    for digit in integer
        .bytes()
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', padding))
    {
        unscaled = unscaled
            .checked_mul(10)
            .and_then(|n| n.checked_add(i128::from(digit - b'0')))
            .ok_or(BadValue("more digits than a decimal holds"))?;
    }
    Ok(if negative { -unscaled } else { unscaled })
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

/// `text` without a trailing ` BC`, and whether it had one.
fn era(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    }
}

/// `YYYY-MM-DD` (four or more year digits, ` BC` after) as a date. PostgreSQL's year 1 BC
/// is the proleptic year 0, 2 BC is -1, and so on.
fn date_part(text: &str, before_christ: bool) -> Result<NaiveDate, BadValue> {
    const NOT_A_DATE: BadValue = BadValue("not an ISO date");
    let mut parts = text.splitn(3, '-');
    let (Some(year), Some(month), Some(day)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NOT_A_DATE);
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(year) && year.len() >= 4 && digits(month) && digits(day)) {
        return Err(NOT_A_DATE);
    }
    let year: i32 = year.parse().map_err(|_| NOT_A_DATE)?;
    let year = if before_christ { 1 - year } else { year };
    let month: u32 = month.parse().map_err(|_| NOT_A_DATE)?;
    let day: u32 = day.parse().map_err(|_| NOT_A_DATE)?;
    NaiveDate::from_ymd_opt(year, month, day).ok_or(NOT_A_DATE)
}

/// An ISO date (`2024-05-01`, `0044-03-15 BC`) → days since 1970-01-01.
pub fn parse_date(text: &str) -> Result<i32, BadValue> {
    if text == "infinity" || text == "-infinity" {
        return Err(INFINITE);
    }
    let (text, before_christ) = era(text);
    let date = date_part(text, before_christ)?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a date");
    i32::try_from((date - epoch).num_days()).map_err(|_| BadValue("date out of range"))
}

/// An ISO timestamp (`2024-05-01 12:00:00.5+02`, `1850-06-01 12:00:00+05:53:28`,
/// `0044-03-15 12:00:00+00 BC`; without a zone, read as UTC) → µs since 1970-01-01 UTC.
pub fn parse_timestamp(text: &str, with_zone: bool) -> Result<i64, BadValue> {
    const NOT_A_TIMESTAMP: BadValue = BadValue("not an ISO timestamp");
    if text == "infinity" || text == "-infinity" {
        return Err(INFINITE);
    }
    let (text, before_christ) = era(text);
    let (date, rest) = text.split_once(' ').ok_or(NOT_A_TIMESTAMP)?;
    let date = date_part(date, before_christ).map_err(|_| NOT_A_TIMESTAMP)?;
    // The offset starts at the first sign after the time (times never hold one).
    let (time, offset) = match rest.find(['+', '-']) {
        Some(at) if with_zone => (&rest[..at], Some(&rest[at..])),
        Some(_) => return Err(NOT_A_TIMESTAMP),
        None if with_zone => return Err(NOT_A_TIMESTAMP),
        None => (rest, None),
    };
    let time = NaiveTime::parse_from_str(time, "%H:%M:%S%.f").map_err(|_| NOT_A_TIMESTAMP)?;
    let local = NaiveDateTime::new(date, time);
    let utc = match offset {
        None => local.and_utc(),
        Some(offset) => {
            let seconds = offset_seconds(offset).ok_or(NOT_A_TIMESTAMP)?;
            FixedOffset::east_opt(seconds)
                .and_then(|zone| zone.from_local_datetime(&local).single())
                .ok_or(NOT_A_TIMESTAMP)?
                .to_utc()
        }
    };
    Ok(utc.timestamp_micros())
}

/// `+HH`, `+HH:MM` or `+HH:MM:SS` (or `-`) → seconds east of UTC.
fn offset_seconds(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let mut total = 0i32;
    let mut parts = 0;
    for (part, scale) in rest.split(':').zip([3600, 60, 1]) {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        total += part.parse::<i32>().ok()? * scale;
        parts += 1;
    }
    (parts == rest.split(':').count()).then_some(sign * total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_read_from_their_text_with_the_scale_digits() {
        assert_eq!(parse_decimal("12345.67", 2), Ok(1_234_567));
        assert_eq!(parse_decimal("-0.01", 2), Ok(-1));
        assert_eq!(parse_decimal("0.00", 2), Ok(0));
        // Fewer fraction digits than the scale are padded (a text a PostgreSQL never writes
        // for a constrained numeric, but exact all the same).
        assert_eq!(parse_decimal("5", 2), Ok(500));
        assert_eq!(
            parse_decimal("99999999999999999999999999999999999999", 0),
            Ok(10i128.pow(38) - 1)
        );
        for bad in [
            "NaN",
            "Infinity",
            "-Infinity",
            "",
            "1.2.3",
            "1e5",
            "-",
            "12.345",
        ] {
            assert!(parse_decimal(bad, 2).is_err(), "{bad}");
        }
        let kind = ValueKind::Decimal {
            precision: 12,
            scale: 2,
        };
        let mut column = ColumnValues::new(kind, 2);
        column.append_binary(Some(b"12345.67")).unwrap();
        column.append_text(None, kind).unwrap();
        let array = column.finish();
        assert_eq!(
            array.data_type(),
            &arrow::datatypes::DataType::Decimal128(12, 2)
        );
        assert_eq!(
            arrow::util::display::array_value_to_string(&array, 0).unwrap(),
            "12345.67"
        );
        assert!(array.is_null(1));
        assert_eq!(
            Value::Decimal(-1, 2).to_json(),
            serde_json::Value::String("-0.01".into())
        );
    }
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
        assert_eq!(
            times.append_binary(Some(&i64::MAX.to_be_bytes())),
            Err(INFINITE),
            "infinity has no staged value"
        );
        let times = times.finish();
        assert_eq!(times.len(), 1, "nothing appended for the refused value");
        assert_eq!(
            times.as_primitive::<TimestampMicrosecondType>().value(0),
            946_684_801_500_000
        );

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
            Ok(946_684_801_500_000)
        );
        assert_eq!(
            parse_timestamp("2000-01-01 02:00:01.5+02", true),
            Ok(946_684_801_500_000)
        );
        assert_eq!(
            parse_timestamp("2000-01-01 05:30:01.5+05:30", true),
            Ok(946_684_801_500_000)
        );
        assert_eq!(
            parse_timestamp("2000-01-01 00:00:01.5", false),
            Ok(946_684_801_500_000)
        );
        assert_eq!(
            parse_timestamp("2000-01-01 00:00:01", false),
            Ok(946_684_801_000_000)
        );
        assert_eq!(parse_timestamp("infinity", true), Err(INFINITE));
        assert_eq!(parse_date("-infinity"), Err(INFINITE));
        assert_eq!(parse_date("2000-01-02"), Ok(10_958));
        assert!(parse_date("01/02/2000").is_err());
        assert!(parse_date("02.01.2000").is_err());
    }

    #[test]
    fn dates_before_christ_and_after_9999_parse() {
        let days = |y, m, d| {
            (NaiveDate::from_ymd_opt(y, m, d).unwrap()
                - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
            .num_days() as i32
        };
        // 1 BC is the proleptic year 0.
        assert_eq!(parse_date("0001-01-01 BC"), Ok(days(0, 1, 1)));
        assert_eq!(parse_date("0044-03-15 BC"), Ok(days(-43, 3, 15)));
        assert_eq!(parse_date("4713-01-01 BC"), Ok(days(-4712, 1, 1)));
        assert_eq!(parse_date("12000-01-01"), Ok(days(12_000, 1, 1)));
        let micros = |y, m, d, h, min, s| {
            NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_opt(h, min, s)
                .unwrap()
                .and_utc()
                .timestamp_micros()
        };
        assert_eq!(
            parse_timestamp("0044-03-15 12:00:00+00 BC", true),
            Ok(micros(-43, 3, 15, 12, 0, 0))
        );
        assert_eq!(
            parse_timestamp("0100-01-01 10:00:00 BC", false),
            Ok(micros(-99, 1, 1, 10, 0, 0))
        );
        assert_eq!(
            parse_timestamp("12000-01-01 00:00:00+00", true),
            Ok(micros(12_000, 1, 1, 0, 0, 0))
        );
    }

    #[test]
    fn zone_offsets_with_seconds_parse() {
        // Asia/Kolkata's local mean time before 1900, as PostgreSQL prints it.
        let noon_utc = NaiveDate::from_ymd_opt(1850, 6, 1)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        assert_eq!(
            parse_timestamp("1850-06-01 17:53:28+05:53:28", true),
            Ok(noon_utc)
        );
        assert_eq!(
            parse_timestamp("1850-06-01 07:03:58-04:56:02", true),
            Ok(noon_utc)
        );
        assert_eq!(
            parse_timestamp("1850-06-01 12:00:00+00", true),
            Ok(noon_utc)
        );
        assert!(parse_timestamp("1850-06-01 12:00:00+5", true).is_err());
        assert!(parse_timestamp("1850-06-01 12:00:00+05:53:28:01", true).is_err());
        assert!(parse_timestamp("1850-06-01 12:00:00", true).is_err());
        assert!(parse_timestamp("1850-06-01 12:00:00+00", false).is_err());

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

        // A float4's text form stages the float4's value widened, as binary COPY reads it.
        let mut single = ColumnValues::new(ValueKind::Float4, 2);
        single.append_text(Some("1.1"), ValueKind::Float4).unwrap();
        single
            .append_binary(Some(&f64::from(1.1f32).to_be_bytes()))
            .unwrap();
        let single = single.finish();
        let single = single.as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(single.value(0), 1.100000023841858);
        assert_eq!(single.value(0), single.value(1));

        let mut bools = ColumnValues::new(ValueKind::Bool, 1);
        assert!(bools.append_text(Some("yes"), ValueKind::Bool).is_err());
    }
}
