//! Turning one line (JSONL) or record (CSV) into typed cells, and inferring column types
//! from a sample with the same converters, so an inferred type always reads its sample.
//!
//! JSONL lines are deserialized straight into the row buffer (no `serde_json::Value` per
//! row); the buffer keeps its text allocations from row to row.

use std::collections::HashMap;
use std::fmt::{self, Write};

use arrow::compute::kernels::cast::parse_string_to_decimal_native;
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::datatypes::{Date32Type, Decimal128Type, DecimalType};
use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use serde_json::value::RawValue;

use super::config::ColumnType;
use super::layout::Layout;
use crate::sources::cells::Cell;
use crate::values::{self, Problem, is_integer};

/// The cells of the row being read, one per layout column, reused from row to row.
pub struct Row {
    pub cells: Vec<Cell>,
    spare: Vec<String>,
    /// The column whose value failed to convert, for the dead letter.
    pub failed: Option<usize>,
}

impl Row {
    pub fn new(columns: usize) -> Row {
        Row {
            cells: vec![Cell::Null; columns],
            spare: Vec::new(),
            failed: None,
        }
    }

    /// Empties every cell, keeping text buffers for the next row.
    pub fn clear(&mut self) {
        for cell in &mut self.cells {
            if let Cell::Text(text) = std::mem::replace(cell, Cell::Null) {
                self.spare.push(text);
            }
        }
        self.failed = None;
    }

    pub fn set(&mut self, column: usize, value: Cell) {
        if let Cell::Text(text) = std::mem::replace(&mut self.cells[column], value) {
            self.spare.push(text);
        }
    }

    /// The column's text buffer, emptied, for the caller to fill.
    pub fn text_mut(&mut self, column: usize) -> &mut String {
        let cell = &mut self.cells[column];
        if !matches!(cell, Cell::Text(_)) {
            *cell = Cell::Text(self.spare.pop().unwrap_or_default());
        }
        match cell {
            Cell::Text(text) => {
                text.clear();
                text
            }
            _ => unreachable!("the cell was just made text"),
        }
    }

    pub fn set_text(&mut self, column: usize, value: &str) {
        self.text_mut(column).push_str(value);
    }

    /// The key as text for a dead letter (empty when unread).
    pub fn key_text(&self) -> String {
        match &self.cells[0] {
            Cell::Int(v) => v.to_string(),
            Cell::Text(v) => v.clone(),
            _ => String::new(),
        }
    }
}

/// Converts a text value (a CSV field, a JSON string) to a non-text column type. A value of
/// the right form that no destination can store (an integer past int64, a date outside the
/// years 0001–9999) fails with the value rule's reason, which does not show the value.
pub fn convert_text(kind: ColumnType, text: &str) -> Result<Cell, String> {
    let trimmed = text.trim();
    let converted = match kind {
        ColumnType::Utf8 => Some(Cell::Text(text.to_string())),
        ColumnType::Int64 => match trimmed.parse() {
            Ok(value) => Some(Cell::Int(value)),
            Err(_) if is_integer(trimmed) => return Err(Problem::IntegerOutOfRange.to_string()),
            Err(_) => None,
        },
        ColumnType::Float64 => trimmed.parse().ok().map(Cell::Float),
        ColumnType::Boolean => parse_bool(trimmed).map(Cell::Bool),
        ColumnType::Date32 => match Date32Type::parse(trimmed) {
            Some(days) => Some(Cell::Date(
                values::check_days(days).map_err(|p| p.to_string())?,
            )),
            None => None,
        },
        ColumnType::Decimal(precision, scale) => {
            return parse_decimal(trimmed, precision, scale).map(Cell::Decimal);
        }
        ColumnType::Timestamp => match parse_millis(trimmed) {
            Some(ms) => Some(Cell::Millis(
                values::check_millis(ms).map_err(|p| p.to_string())?,
            )),
            // Epoch milliseconds past int64 are outside the years 0001–9999 too.
            None if is_integer(trimmed) => {
                return Err(Problem::TimestampOutOfRange.to_string());
            }
            None => None,
        },
    };
    converted.ok_or_else(|| format!("{} is not {}", quoted(text), kind_name(kind)))
}

/// RFC 3339 and its common variants (space separator, no offset = UTC, date only), or an
/// integer taken as epoch milliseconds.
pub fn parse_millis(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    string_to_datetime(&chrono::Utc, text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

fn kind_name(kind: ColumnType) -> String {
    match kind {
        ColumnType::Int64 => "an integer (int64)".into(),
        ColumnType::Float64 => "a number (float64)".into(),
        ColumnType::Utf8 => "text".into(),
        ColumnType::Boolean => "a boolean".into(),
        ColumnType::Date32 => "a date (YYYY-MM-DD)".into(),
        ColumnType::Timestamp => "a timestamp (RFC 3339 or epoch milliseconds)".into(),
        ColumnType::Decimal(precision, scale) => format!("a decimal({precision},{scale})"),
    }
}

/// A number as written (`-12.345`, `.5`, `1.5e3`; a JSON number or a string holding one) as
/// the digits of a `decimal(precision, scale)`: exact, never through a float. More fraction
/// digits than the scale round as the stream `cast` rounds (it is the same arrow parser: half
/// away from zero). The reasons never show the value: a dead letter's `raw` has it.
pub fn parse_decimal(text: &str, precision: u8, scale: u8) -> Result<i128, String> {
    let not_a_number =
        || format!("not a number, which a decimal({precision},{scale}) column needs");
    let too_long = || {
        format!(
            "more digits than decimal({precision},{scale}) holds ({} before the point, {scale} \
             after): declare more digits",
            precision - scale
        )
    };
    let Some(number) = Number::read(text) else {
        return Err(not_a_number());
    };
    let plain = match number.plain(precision, scale) {
        Plain::Text(plain) => plain,
        Plain::Zero => return Ok(0),
        Plain::TooLong => return Err(too_long()),
    };
    let value = parse_string_to_decimal_native::<Decimal128Type>(&plain, scale.into())
        .map_err(|_| too_long())?;
    Decimal128Type::validate_decimal_precision(value, precision, scale as i8)
        .map_err(|_| too_long())?;
    Ok(value)
}

/// A number's parts: `-12.5e3` is negative, digits `125`, point after 2 of them, exponent 3.
struct Number<'a> {
    negative: bool,
    integer: &'a str,
    fraction: &'a str,
    exponent: Option<&'a str>,
}

/// A number without an exponent, or what it comes to when writing one out is not needed.
enum Plain {
    Text(String),
    Zero,
    TooLong,
}

impl<'a> Number<'a> {
    /// `[+-]digits[.digits][(e|E)[+-]digits]`, with digits on at least one side of the point;
    /// `None` for anything else (`NaN`, `1,5`, `0x10`, an empty string).
    fn read(text: &'a str) -> Option<Number<'a>> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if !digits(integer) || !digits(fraction) || integer.len() + fraction.len() == 0 {
            return None;
        }
        if let Some(exponent) = exponent {
            let unsigned = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
            if unsigned.is_empty() || !digits(unsigned) {
                return None;
            }
        }
        Some(Number {
            negative,
            integer,
            fraction,
            exponent,
        })
    }

    /// The number without its exponent, for arrow's parser (which reads none), and without
    /// fraction digits past the one that decides the rounding (they cannot change it, and
    /// arrow would refuse more than 76). A value too small to reach the scale's last digit
    /// is zero; one with more integer digits than the precision is too long; neither is
    /// written out, so `1e999999999` costs nothing.
    fn plain(&self, precision: u8, scale: u8) -> Plain {
        let Some(exponent) = self.exponent else {
            return Plain::Text(self.text(self.integer, self.fraction, scale));
        };
        let digits: String = [self.integer, self.fraction].concat();
        let significant = digits.trim_start_matches('0');
        if significant.is_empty() {
            return Plain::Zero;
        }
        // Where the point falls among the significant digits once the exponent is applied;
        // an exponent past i64 is far beyond either bound below.
        let exponent: i64 = exponent.parse().unwrap_or(if exponent.starts_with('-') {
            i64::MIN / 2
        } else {
            i64::MAX / 2
        });
        let point = (self.integer.len() as i64 - (digits.len() - significant.len()) as i64)
            .saturating_add(exponent);
        if point > i64::from(precision) {
            return Plain::TooLong;
        }
        // Below half a unit of the scale's last digit: rounds to zero.
        if point < -i64::from(scale) - 1 {
            return Plain::Zero;
        }
        Plain::Text(if point <= 0 {
            let fraction = format!("{}{significant}", "0".repeat((-point) as usize));
            self.text("0", &fraction, scale)
        } else if point as usize >= significant.len() {
            let integer = format!(
                "{significant}{}",
                "0".repeat(point as usize - significant.len())
            );
            self.text(&integer, "", scale)
        } else {
            let (integer, fraction) = significant.split_at(point as usize);
            self.text(integer, fraction, scale)
        })
    }

    fn text(&self, integer: &str, fraction: &str, scale: u8) -> String {
        let sign = if self.negative { "-" } else { "" };
        let fraction = &fraction[..fraction.len().min(usize::from(scale) + 1)];
        format!("{sign}{integer}.{fraction}")
    }
}

/// A value quoted for an error message, cut short when long.
fn quoted(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// Reads JSONL lines of one layout into a [`Row`].
pub struct JsonRows {
    by_name: HashMap<String, usize>,
    names: Vec<String>,
    kinds: Vec<ColumnType>,
    /// The column of the n-th field of the previous line: lines of an export repeat their
    /// field order, so a string compare usually replaces a hash lookup.
    order: Vec<Option<usize>>,
}

impl JsonRows {
    pub fn new(layout: &Layout) -> JsonRows {
        JsonRows {
            by_name: layout
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect(),
            names: layout.columns.iter().map(|c| c.name.clone()).collect(),
            kinds: layout.columns.iter().map(|c| c.kind).collect(),
            order: Vec::new(),
        }
    }

    /// Parses one line (a JSON object) into `row`, which must be clear. Fields the layout
    /// does not have are skipped; missing ones stay null. The reason of a failure starts with
    /// the column whose value failed, when one did.
    pub fn parse(&mut self, line: &[u8], row: &mut Row) -> Result<(), String> {
        let mut de = serde_json::Deserializer::from_slice(line);
        let seed = RowSeed {
            rows: &mut *self,
            row: &mut *row,
        };
        let Err(err) = seed.deserialize(&mut de).and_then(|()| de.end()) else {
            return Ok(());
        };
        // serde_json's own words for bytes that are not UTF-8 ("invalid unicode code point")
        // do not say so; the value rule's do, with where. Only failed lines pay for the scan.
        let reason = match std::str::from_utf8(line) {
            Err(bad) => Problem::NotUtf8 {
                byte: bad.valid_up_to(),
                within: "line",
            }
            .to_string(),
            Ok(_) => err.to_string(),
        };
        Err(match row.failed {
            Some(column) => format!("{}: {reason}", self.names[column]),
            None => reason,
        })
    }
}

struct RowSeed<'a> {
    rows: &'a mut JsonRows,
    row: &'a mut Row,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut position = 0;
        loop {
            let key = KeySeed {
                rows: &mut *self.rows,
                position,
            };
            let Some(column) = map.next_key_seed(key)? else {
                break;
            };
            position += 1;
            match column {
                Some(index) => {
                    self.row.failed = Some(index);
                    map.next_value_seed(CellSeed {
                        kind: self.rows.kinds[index],
                        row: &mut *self.row,
                        index,
                    })?;
                    self.row.failed = None;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Resolves a field name to its column (`None`: not in the layout).
struct KeySeed<'a> {
    rows: &'a mut JsonRows,
    position: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        let rows = self.rows;
        if let Some(Some(guess)) = rows.order.get(self.position) {
            if rows.names[*guess] == name {
                return Ok(Some(*guess));
            }
        }
        let found = rows.by_name.get(name).copied();
        match rows.order.get_mut(self.position) {
            Some(slot) => *slot = found,
            None => rows.order.push(found),
        }
        Ok(found)
    }
}

/// 2^63 as a double: int64 holds the integral doubles in `[-2^63, 2^63)`.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// Converts one JSON value into the row's cell of a column.
struct CellSeed<'a> {
    kind: ColumnType,
    row: &'a mut Row,
    index: usize,
}

impl CellSeed<'_> {
    fn mismatch<E: de::Error>(&self, found: &str) -> E {
        E::custom(format!("{found} is not {}", kind_name(self.kind)))
    }
}

impl<'de> DeserializeSeed<'de> for CellSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.kind == ColumnType::Utf8 {
            // A text column takes a number exactly as written: serde_json reads an integer
            // past u64 as a double, which would turn 99999999999999999999 into 1e20.
            let raw = <&RawValue>::deserialize(deserializer)?;
            return self.set_raw_text(raw.get()).map_err(de::Error::custom);
        }
        if let ColumnType::Decimal(precision, scale) = self.kind {
            // So does a decimal column: a double would already have lost 0.1.
            let raw = <&RawValue>::deserialize(deserializer)?;
            return self
                .set_raw_decimal(raw.get(), precision, scale)
                .map_err(de::Error::custom);
        }
        deserializer.deserialize_any(self)
    }
}

impl CellSeed<'_> {
    /// Sets a decimal column from one JSON value's text: a number or a string holding one.
    fn set_raw_decimal(self, raw: &str, precision: u8, scale: u8) -> Result<(), String> {
        let found = match raw.as_bytes().first() {
            Some(b'n') => {
                self.row.set(self.index, Cell::Null);
                return Ok(());
            }
            Some(b'"') => {
                let text: String = serde_json::from_str(raw).map_err(|e| e.to_string())?;
                let value = parse_decimal(text.trim(), precision, scale)?;
                self.row.set(self.index, Cell::Decimal(value));
                return Ok(());
            }
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b't' | b'f') => "a boolean",
            _ => {
                let value = parse_decimal(raw, precision, scale)?;
                self.row.set(self.index, Cell::Decimal(value));
                return Ok(());
            }
        };
        Err(format!("{found} is not {}", kind_name(self.kind)))
    }

    /// Sets a text column from one JSON value's text: a string unescaped, a number, `true`
    /// or `false` as written, nested values as compact JSON.
    fn set_raw_text(self, raw: &str) -> Result<(), serde_json::Error> {
        match raw.as_bytes().first() {
            Some(b'n') => self.row.set(self.index, Cell::Null),
            Some(b'"') if !raw.contains('\\') => {
                self.row.set_text(self.index, &raw[1..raw.len() - 1]);
            }
            Some(b'"') => {
                let text: String = serde_json::from_str(raw)?;
                self.row.set_text(self.index, &text);
            }
            Some(b'{' | b'[') => {
                let value: serde_json::Value = serde_json::from_str(raw)?;
                let _ = write!(self.row.text_mut(self.index), "{value}");
            }
            _ => self.row.set_text(self.index, raw),
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for CellSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&kind_name(self.kind))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.row.set(self.index, Cell::Null);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match self.kind {
            ColumnType::Boolean => self.row.set(self.index, Cell::Bool(v)),
            ColumnType::Utf8 => self
                .row
                .set_text(self.index, if v { "true" } else { "false" }),
            _ => return Err(self.mismatch(if v { "true" } else { "false" })),
        }
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let cell = match self.kind {
            ColumnType::Int64 => Cell::Int(v),
            ColumnType::Float64 => Cell::Float(v as f64),
            ColumnType::Timestamp => Cell::Millis(values::check_millis(v).map_err(E::custom)?),
            ColumnType::Utf8 => {
                let _ = write!(self.row.text_mut(self.index), "{v}");
                return Ok(());
            }
            _ => return Err(self.mismatch(&v.to_string())),
        };
        self.row.set(self.index, cell);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) if self.kind == ColumnType::Float64 => self.visit_f64(v as f64),
            Err(_) if self.kind == ColumnType::Utf8 => {
                let _ = write!(self.row.text_mut(self.index), "{v}");
                Ok(())
            }
            Err(_) if self.kind == ColumnType::Int64 => Err(E::custom(Problem::IntegerOutOfRange)),
            Err(_) if self.kind == ColumnType::Timestamp => {
                Err(E::custom(Problem::TimestampOutOfRange))
            }
            Err(_) => Err(self.mismatch(&v.to_string())),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let cell = match self.kind {
            ColumnType::Float64 => Cell::Float(v),
            // 3.0 is an integer; 3.5 is not. [-2^63, 2^63) converts exactly.
            ColumnType::Int64 if v.fract() == 0.0 && (-I64_BOUND..I64_BOUND).contains(&v) => {
                Cell::Int(v as i64)
            }
            // An integer literal past u64 reaches here as a double.
            ColumnType::Int64 if v.fract() == 0.0 => {
                return Err(E::custom(Problem::IntegerOutOfRange));
            }
            ColumnType::Utf8 => {
                let _ = write!(self.row.text_mut(self.index), "{v}");
                return Ok(());
            }
            _ => return Err(self.mismatch(&v.to_string())),
        };
        self.row.set(self.index, cell);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.kind == ColumnType::Utf8 {
            self.row.set_text(self.index, v);
            return Ok(());
        }
        let cell = convert_text(self.kind, v).map_err(E::custom)?;
        self.row.set(self.index, cell);
        Ok(())
    }

    // Nested values land in text columns as their JSON text.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        if self.kind != ColumnType::Utf8 {
            return Err(self.mismatch("an object"));
        }
        let value = serde_json::Value::deserialize(MapAccessDeserializer::new(map))?;
        let _ = write!(self.row.text_mut(self.index), "{value}");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        if self.kind != ColumnType::Utf8 {
            return Err(self.mismatch("an array"));
        }
        let value = serde_json::Value::deserialize(SeqAccessDeserializer::new(seq))?;
        let _ = write!(self.row.text_mut(self.index), "{value}");
        Ok(())
    }
}

/// Column types inferred from sample values, in first-seen order.
#[derive(Debug, Default)]
pub struct Inference {
    columns: Vec<(String, Option<ColumnType>)>,
    by_name: HashMap<String, usize>,
}

impl Inference {
    /// Registers a column (so all-null and empty columns keep their place).
    pub fn column(&mut self, name: &str) -> usize {
        if let Some(&at) = self.by_name.get(name) {
            return at;
        }
        self.columns.push((name.to_string(), None));
        self.by_name
            .insert(name.to_string(), self.columns.len() - 1);
        self.columns.len() - 1
    }

    /// Widens a column's type to cover one more observed value.
    pub fn observe(&mut self, column: usize, seen: ColumnType) {
        let slot = &mut self.columns[column].1;
        *slot = Some(match *slot {
            None => seen,
            Some(current) => widen(current, seen),
        });
    }

    /// The columns; a column that was always null is text.
    pub fn finish(self) -> Vec<(String, ColumnType)> {
        self.columns
            .into_iter()
            .map(|(name, kind)| (name, kind.unwrap_or(ColumnType::Utf8)))
            .collect()
    }

    /// Observes one JSONL line; a line that does not parse is skipped (it will be a dead
    /// letter when loaded).
    pub fn observe_json_line(&mut self, line: &[u8]) {
        let mut de = serde_json::Deserializer::from_slice(line);
        let _ = de::Deserializer::deserialize_map(&mut de, InferLine(self));
    }
}

/// The narrowest type covering both.
fn widen(a: ColumnType, b: ColumnType) -> ColumnType {
    use ColumnType::*;
    match (a, b) {
        _ if a == b => a,
        (Int64, Float64) | (Float64, Int64) => Float64,
        (Date32, Timestamp) | (Timestamp, Date32) => Timestamp,
        _ => Utf8,
    }
}

/// The type a text value (a CSV field) reads as. An integer past int64 makes its column text,
/// which keeps it exactly (a float64 column would round it).
pub fn classify_text(text: &str) -> ColumnType {
    let text = text.trim();
    if text.parse::<i64>().is_ok() {
        ColumnType::Int64
    } else if is_integer(text) {
        ColumnType::Utf8
    } else if text.parse::<f64>().is_ok() && text.bytes().any(|b| b.is_ascii_digit()) {
        ColumnType::Float64
    } else if matches!(text.to_ascii_lowercase().as_str(), "true" | "false") {
        ColumnType::Boolean
    } else {
        classify_string(text)
    }
}

/// The type a string value reads as: a date, a timestamp, or text.
fn classify_string(text: &str) -> ColumnType {
    if text.len() == 10 && Date32Type::parse(text).is_some() {
        ColumnType::Date32
    } else if text.len() > 10 && string_to_datetime(&chrono::Utc, text).is_ok() {
        ColumnType::Timestamp
    } else {
        ColumnType::Utf8
    }
}

struct InferLine<'a>(&'a mut Inference);

impl<'de> Visitor<'de> for InferLine<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let column = self.0.column(&name);
            // The value's text, so a number is classified as written (serde_json would read an
            // integer past u64 as a double).
            let raw: &'de RawValue = map.next_value()?;
            let raw = raw.get();
            let seen = match raw.as_bytes().first() {
                Some(b'n') => continue,
                Some(b't' | b'f') => ColumnType::Boolean,
                Some(b'"') => {
                    let text: std::borrow::Cow<'_, str> = if raw.contains('\\') {
                        serde_json::from_str::<String>(raw)
                            .map_err(de::Error::custom)?
                            .into()
                    } else {
                        raw[1..raw.len() - 1].into()
                    };
                    classify_string(&text)
                }
                Some(b'{' | b'[') => ColumnType::Utf8,
                // A number: past int64, an integer is text so that it is kept exactly.
                _ if raw.parse::<i64>().is_ok() => ColumnType::Int64,
                _ if is_integer(raw) => ColumnType::Utf8,
                _ => ColumnType::Float64,
            };
            self.0.observe(column, seen);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::files::config::FileStreamConfig;

    fn stream(key: &str) -> FileStreamConfig {
        toml::from_str(&format!(
            "glob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"{key}\"\n"
        ))
        .unwrap()
    }

    fn layout(columns: &[(&str, ColumnType)]) -> Layout {
        Layout::new(
            "contacts",
            &stream(columns[0].0),
            columns.iter().map(|(n, k)| (n.to_string(), *k)).collect(),
        )
        .unwrap()
    }

    #[test]
    fn json_lines_fill_typed_cells_in_any_field_order() {
        let layout = layout(&[
            ("id", ColumnType::Int64),
            ("email", ColumnType::Utf8),
            ("score", ColumnType::Float64),
            ("vip", ColumnType::Boolean),
            ("born", ColumnType::Date32),
            ("updated_at", ColumnType::Timestamp),
            ("tags", ColumnType::Utf8),
        ]);
        let mut rows = JsonRows::new(&layout);
        let mut row = Row::new(layout.columns.len());
        rows.parse(
            br#"{"id": 7, "email": "a@x.io", "score": 3, "vip": true, "born": "1990-05-01", "updated_at": "2024-01-02T03:04:05.006Z", "tags": ["a", 1], "extra": {"x": 1}}"#,
            &mut row,
        )
        .unwrap();
        assert_eq!(
            row.cells,
            vec![
                Cell::Int(7),
                Cell::Text("a@x.io".into()),
                Cell::Float(3.0),
                Cell::Bool(true),
                Cell::Date(7425),
                Cell::Millis(1_704_164_645_006),
                Cell::Text(r#"["a",1]"#.into()),
            ]
        );
        row.clear();
        // Another order, a missing field, a null, an escaped string and a numeric string.
        rows.parse(
            br#"{"email": "b\"@x.io", "id": "8", "vip": null, "updated_at": 1704164645007}"#,
            &mut row,
        )
        .unwrap();
        assert_eq!(row.cells[0], Cell::Int(8));
        assert_eq!(row.cells[1], Cell::Text("b\"@x.io".into()));
        assert_eq!(row.cells[2], Cell::Null);
        assert_eq!(row.cells[3], Cell::Null);
        assert_eq!(row.cells[5], Cell::Millis(1_704_164_645_007));
    }

    #[test]
    fn json_errors_name_the_column() {
        let layout = layout(&[("id", ColumnType::Int64), ("score", ColumnType::Float64)]);
        let mut rows = JsonRows::new(&layout);
        let mut row = Row::new(2);
        let err = rows
            .parse(br#"{"id": 1, "score": "high"}"#, &mut row)
            .unwrap_err();
        assert!(err.contains("\"high\" is not a number"), "{err}");
        assert_eq!(row.failed, Some(1));
        row.clear();
        let err = rows.parse(br#"{"id": 1.5}"#, &mut row).unwrap_err();
        assert!(err.contains("is not an integer"), "{err}");
        row.clear();
        assert!(rows.parse(br#"{"id": 1"#, &mut row).is_err());
        row.clear();
        assert!(rows.parse(br#"[1, 2]"#, &mut row).is_err());
        row.clear();
        assert!(rows.parse(br#"{"id": 1} trailing"#, &mut row).is_err());
    }

    #[test]
    fn text_converts_to_each_type() {
        assert_eq!(convert_text(ColumnType::Int64, " 42 "), Ok(Cell::Int(42)));
        assert_eq!(
            convert_text(ColumnType::Float64, "2.5"),
            Ok(Cell::Float(2.5))
        );
        assert_eq!(
            convert_text(ColumnType::Boolean, "TRUE"),
            Ok(Cell::Bool(true))
        );
        assert_eq!(
            convert_text(ColumnType::Date32, "1970-01-02"),
            Ok(Cell::Date(1))
        );
        assert_eq!(
            convert_text(ColumnType::Timestamp, "1970-01-01 00:00:01.5"),
            Ok(Cell::Millis(1500))
        );
        assert_eq!(
            convert_text(ColumnType::Timestamp, "1970-01-01T01:00:00+01:00"),
            Ok(Cell::Millis(0))
        );
        assert!(convert_text(ColumnType::Int64, "4x").is_err());
        assert!(convert_text(ColumnType::Date32, "yesterday").is_err());
    }

    #[test]
    fn inference_widens_and_keeps_first_seen_order() {
        let mut inference = Inference::default();
        for line in [
            r#"{"id": 1, "score": 1, "at": "2024-01-01T00:00:00Z", "day": "2024-01-01", "mixed": 1, "nothing": null}"#,
            r#"{"id": 2, "score": 2.5, "at": "2024-01-01", "day": "2024-01-02", "mixed": "x", "late": true}"#,
            "not json",
        ] {
            inference.observe_json_line(line.as_bytes());
        }
        assert_eq!(
            inference.finish(),
            vec![
                ("id".to_string(), ColumnType::Int64),
                ("score".to_string(), ColumnType::Float64),
                ("at".to_string(), ColumnType::Timestamp),
                ("day".to_string(), ColumnType::Date32),
                ("mixed".to_string(), ColumnType::Utf8),
                ("nothing".to_string(), ColumnType::Utf8),
                ("late".to_string(), ColumnType::Boolean),
            ]
        );
    }

    #[test]
    fn values_no_destination_can_store_fail_with_the_rule_s_reason_not_the_value() {
        let reason = |kind, text| convert_text(kind, text).unwrap_err();
        assert_eq!(
            convert_text(ColumnType::Int64, "-9223372036854775808"),
            Ok(Cell::Int(i64::MIN))
        );
        assert_eq!(
            reason(ColumnType::Int64, "9223372036854775808"),
            Problem::IntegerOutOfRange.to_string()
        );
        assert_eq!(
            reason(ColumnType::Int64, "-99999999999999999999"),
            Problem::IntegerOutOfRange.to_string()
        );
        assert_eq!(
            convert_text(ColumnType::Date32, "0001-01-01"),
            Ok(Cell::Date(values::MIN_DAYS))
        );
        assert_eq!(
            convert_text(ColumnType::Date32, "9999-12-31"),
            Ok(Cell::Date(values::MAX_DAYS))
        );
        assert_eq!(
            reason(ColumnType::Date32, "0000-12-31"),
            Problem::DateOutOfRange.to_string()
        );
        assert_eq!(
            convert_text(ColumnType::Timestamp, "0001-01-01T00:00:00Z"),
            Ok(Cell::Millis(values::MIN_MILLIS))
        );
        assert_eq!(
            convert_text(ColumnType::Timestamp, "9999-12-31 23:59:59.999"),
            Ok(Cell::Millis(values::MAX_MILLIS))
        );
        for text in [
            "0000-12-31T23:59:59.999Z",
            "253402300800000",
            "-62135596800001",
            "99999999999999999999",
        ] {
            assert_eq!(
                reason(ColumnType::Timestamp, text),
                Problem::TimestampOutOfRange.to_string(),
                "{text}"
            );
        }
    }

    #[test]
    fn json_numbers_past_int64_are_dead_letters_in_integer_columns_and_exact_in_text() {
        let layout = layout(&[
            ("id", ColumnType::Int64),
            ("code", ColumnType::Utf8),
            ("at", ColumnType::Timestamp),
        ]);
        let mut rows = JsonRows::new(&layout);
        let mut row = Row::new(3);
        rows.parse(
            br#"{"id": 1, "code": 99999999999999999999, "at": 253402300799999}"#,
            &mut row,
        )
        .unwrap();
        assert_eq!(row.cells[1], Cell::Text("99999999999999999999".into()));
        assert_eq!(row.cells[2], Cell::Millis(values::MAX_MILLIS));
        for (line, column) in [
            (&br#"{"id": 9223372036854775808}"#[..], "id"),
            (br#"{"id": -99999999999999999999}"#, "id"),
            (br#"{"id": 1, "at": 253402300800000}"#, "at"),
            (br#"{"id": 1, "at": 18446744073709551615}"#, "at"),
        ] {
            row.clear();
            let err = rows.parse(line, &mut row).unwrap_err();
            assert!(err.starts_with(&format!("{column}: ")), "{err}");
            assert!(!err.contains("99999") && !err.contains("2534023"), "{err}");
        }
        row.clear();
        let err = rows
            .parse(b"{\"id\": 1, \"code\": \"a\xffb\"}", &mut row)
            .unwrap_err();
        assert_eq!(err, "code: not valid UTF-8 (at byte offset 20 of the line)");
        // Strings are unescaped, numbers and nested values kept as before.
        row.clear();
        rows.parse(br#"{"id": 2, "code": "a\"b"}"#, &mut row)
            .unwrap();
        assert_eq!(row.cells[1], Cell::Text("a\"b".into()));
        row.clear();
        rows.parse(br#"{"id": 2, "code": {"x": [1, 2.50]}}"#, &mut row)
            .unwrap();
        assert_eq!(row.cells[1], Cell::Text(r#"{"x":[1,2.5]}"#.into()));
    }

    #[test]
    fn an_integer_past_int64_makes_its_inferred_column_text() {
        assert_eq!(classify_text("99999999999999999999"), ColumnType::Utf8);
        assert_eq!(classify_text("-9223372036854775809"), ColumnType::Utf8);
        assert_eq!(classify_text("9223372036854775807"), ColumnType::Int64);
        let mut inference = Inference::default();
        for line in [
            r#"{"big": 99999999999999999999, "small": 1, "float": 1.5, "exp": 1e3, "s": "x"y"}"#,
            r#"{"big": 2, "small": 2, "float": 2, "exp": 2, "s": "z"}"#,
        ] {
            inference.observe_json_line(line.as_bytes());
        }
        assert_eq!(
            inference.finish(),
            vec![
                ("big".to_string(), ColumnType::Utf8),
                ("small".to_string(), ColumnType::Int64),
                ("float".to_string(), ColumnType::Float64),
                ("exp".to_string(), ColumnType::Float64),
                ("s".to_string(), ColumnType::Utf8),
            ]
        );
    }

    #[test]
    fn decimals_parse_exactly_and_round_half_away_from_zero_as_the_cast_does() {
        let d = |text| parse_decimal(text, 18, 2);
        for (text, digits) in [
            ("0.1", 10),
            ("12345.67", 1_234_567),
            ("2.345", 235),
            ("-2.345", -235),
            ("2.3449999", 234),
            ("+7", 700),
            (".5", 50),
            ("5.", 500),
            ("-0.001", 0),
            ("1.5e3", 150_000),
            ("125E-3", 13),
            ("-0.0125e+2", -125),
            ("1e-300", 0),
            ("0e99999999999999999999999", 0),
            ("9999999999999999.99", 999_999_999_999_999_999),
            // More fraction digits than arrow's parser takes: only the first past the scale
            // decides the rounding.
            (
                "0.10000000000000000555111512312578270211815834045410156250000000000000000000000001",
                10,
            ),
        ] {
            assert_eq!(d(text), Ok(digits), "{text}");
        }
        for text in [
            "12345678901234567",
            "9999999999999999.995",
            "1e17",
            "1e99999999999999999999999",
            "123456789012345678901234567890123456789012345678901234567890123456789012345678901",
        ] {
            let reason = d(text).unwrap_err();
            assert!(
                reason.starts_with(
                    "more digits than decimal(18,2) holds (16 before the point, 2 after)"
                ),
                "{text}: {reason}"
            );
            assert!(
                !reason.contains("12345") && !reason.contains("999"),
                "{reason}"
            );
        }
        for text in [
            "", "abc", "NaN", "inf", "1,5", "1e", "--1", "1.2.3", "0x10", ".", "1 2",
        ] {
            assert_eq!(
                d(text),
                Err("not a number, which a decimal(18,2) column needs".into()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn json_decimals_read_numbers_and_strings_as_written() {
        let layout = layout(&[
            ("id", ColumnType::Int64),
            ("amount", ColumnType::Decimal(38, 10)),
        ]);
        let mut rows = JsonRows::new(&layout);
        let mut row = Row::new(2);
        for (line, digits) in [
            (&br#"{"id": 1, "amount": 0.1}"#[..], Some(1_000_000_000)),
            (br#"{"id": 1, "amount": "0.1"}"#, Some(1_000_000_000)),
            // Past what a double holds exactly.
            (
                br#"{"id": 1, "amount": 1234567890123456789012345678.0123456789}"#,
                Some(12_345_678_901_234_567_890_123_456_780_123_456_789),
            ),
            (br#"{"id": 1, "amount": null}"#, None),
        ] {
            row.clear();
            rows.parse(line, &mut row).unwrap();
            assert_eq!(row.cells[1], digits.map_or(Cell::Null, Cell::Decimal));
        }
        for (line, says) in [
            (
                &br#"{"id": 1, "amount": true}"#[..],
                "a boolean is not a decimal(38,10)",
            ),
            (
                br#"{"id": 1, "amount": [1]}"#,
                "an array is not a decimal(38,10)",
            ),
            (br#"{"id": 1, "amount": "ten"}"#, "not a number"),
            (
                br#"{"id": 1, "amount": 1234567890123456789012345678901}"#,
                "more digits than decimal(38,10)",
            ),
        ] {
            row.clear();
            let err = rows.parse(line, &mut row).unwrap_err();
            assert!(err.starts_with("amount: ") && err.contains(says), "{err}");
            assert!(!err.contains("ten") && !err.contains("12345"), "{err}");
        }
    }

    #[test]
    fn csv_text_classifies() {
        assert_eq!(classify_text("12"), ColumnType::Int64);
        assert_eq!(classify_text("-1.5e3"), ColumnType::Float64);
        assert_eq!(classify_text("false"), ColumnType::Boolean);
        assert_eq!(classify_text("2024-02-29"), ColumnType::Date32);
        assert_eq!(classify_text("2024-02-29 10:00:00"), ColumnType::Timestamp);
        assert_eq!(classify_text("inf"), ColumnType::Utf8);
        assert_eq!(classify_text("hello"), ColumnType::Utf8);
    }
}
