//! Salesforce records to Arrow rows, from REST JSON or Bulk CSV (crm-apis.md A2, A6).
//!
//! Both wire forms go through one conversion keyed by the describe-derived column type, so a
//! record reads the same whichever API served it. A record with a value that does not convert
//! becomes a dead letter and is not appended; the run continues.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::DataType;
use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate};
use csv::ByteRecord;

use super::SalesforceError;
use crate::Result;
use crate::load::DeadLetter;
use crate::sources::cells::{Cell, ColumnBuilder};
use crate::sources::json::Wire;

use super::KEY;
use super::describe::ObjectPlan;
use super::page;

/// A value as it came off the wire.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    Missing,
    Json(&'a Wire<'a>),
    /// A Bulk CSV field: every value is text, and the empty string is null (A6).
    Text(&'a str),
}

/// Converts a wire value to the column's type; `Err` carries the reason.
pub fn convert(raw: Raw<'_>, data_type: &DataType) -> std::result::Result<Cell, String> {
    match raw {
        Raw::Missing | Raw::Json(Wire::Null) => Ok(Cell::Null),
        Raw::Text("") => Ok(Cell::Null),
        Raw::Text(text) => from_text(text, data_type),
        Raw::Json(value) => from_json(value, data_type),
    }
}

fn from_json(value: &Wire<'_>, data_type: &DataType) -> std::result::Result<Cell, String> {
    match (data_type, value) {
        (DataType::Utf8, Wire::Str(s)) => Ok(Cell::Text(s.to_string())),
        // anyType and unknown types may carry numbers or booleans; objects keep their JSON.
        (DataType::Utf8, other) => Ok(Cell::Text(json_text(other).into_owned())),
        (DataType::Boolean, Wire::Bool(b)) => Ok(Cell::Bool(*b)),
        (DataType::Int64, Wire::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Cell::Int(i)),
            None => integral(n.as_f64(), &n.to_string()),
        },
        (DataType::Float64, Wire::Number(n)) => finite(n.as_f64(), &n.to_string()),
        // CDC-style payloads and some tools send datetimes as epoch milliseconds.
        (DataType::Timestamp(..), Wire::Number(n)) => n
            .as_i64()
            .map(Cell::Millis)
            .ok_or_else(|| format!("{n} is not a datetime (epoch ms)")),
        (_, Wire::Str(s)) if s.is_empty() => Ok(Cell::Null),
        (_, Wire::Str(s)) => from_text(s, data_type),
        (_, other) => Err(format!(
            "{} is not a {}",
            short(other),
            type_name(data_type)
        )),
    }
}

/// A value's JSON text.
fn json_text<'a>(value: &'a Wire<'_>) -> Cow<'a, str> {
    match value {
        Wire::Str(s) => Cow::Owned(serde_json::Value::from(s.as_ref()).to_string()),
        other => other.text().unwrap_or(Cow::Borrowed("null")),
    }
}

fn from_text(text: &str, data_type: &DataType) -> std::result::Result<Cell, String> {
    match data_type {
        DataType::Utf8 => Ok(Cell::Text(text.to_string())),
        DataType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Cell::Bool(true)),
            "false" => Ok(Cell::Bool(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        DataType::Int64 => match text.trim().parse::<i64>() {
            Ok(i) => Ok(Cell::Int(i)),
            // Bulk writes some integers as `5.0`.
            Err(_) => integral(text.trim().parse::<f64>().ok(), text),
        },
        DataType::Float64 => finite(text.trim().parse::<f64>().ok(), text),
        DataType::Date32 => parse_date(text)
            .map(Cell::Date)
            .ok_or_else(|| format!("{text:?} is not a date (YYYY-MM-DD)")),
        DataType::Timestamp(..) => parse_millis(text)
            .map(Cell::Millis)
            .ok_or_else(|| format!("{text:?} is not a datetime")),
        other => Err(format!("unsupported column type {other}")),
    }
}

fn integral(value: Option<f64>, text: &str) -> std::result::Result<Cell, String> {
    match value {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Cell::Int(f as i64)),
        // Past int64: the value rule's reason, which does not show the value.
        _ if crate::values::is_integer(text.trim()) => {
            Err(crate::values::Problem::IntegerOutOfRange.to_string())
        }
        _ => Err(format!("{text:?} is not an integer")),
    }
}

fn finite(value: Option<f64>, text: &str) -> std::result::Result<Cell, String> {
    match value {
        Some(f) if f.is_finite() => Ok(Cell::Float(f)),
        _ => Err(format!("{text:?} is not a number")),
    }
}

fn type_name(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Boolean => "boolean",
        DataType::Int64 => "integer",
        DataType::Float64 => "number",
        DataType::Date32 => "date",
        DataType::Timestamp(..) => "datetime",
        _ => "value of this column",
    }
}

/// A value for an error message: type and a short prefix, never a whole nested record.
fn short(value: &Wire<'_>) -> String {
    let text = json_text(value);
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text.into_owned()
    }
}

/// Salesforce datetimes: REST's `2024-05-01T10:00:00.000+0000` (an offset without a colon,
/// which RFC 3339 parsers reject), Bulk's `2024-05-01T10:00:00.000Z`, any RFC 3339 offset, or
/// epoch milliseconds.
pub fn parse_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    rest_datetime(text)
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.timestamp_millis())
}

/// REST's form, `%Y-%m-%dT%H:%M:%S%.f%z`, with its format read once: `parse_from_str` reads the
/// format string again for every value, and a page holds tens of thousands of them.
fn rest_datetime(text: &str) -> chrono::ParseResult<DateTime<chrono::FixedOffset>> {
    static FORMAT: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| {
        StrftimeItems::new("%Y-%m-%dT%H:%M:%S%.f%z")
            .parse_to_owned()
            .expect("the format is valid")
    });
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, text, FORMAT.iter())?;
    parsed.to_datetime()
}

/// `YYYY-MM-DD` as days since the epoch.
pub fn parse_date(text: &str) -> Option<i32> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
    i32::try_from((date - epoch).num_days()).ok()
}

/// Where each source field sits in one Bulk CSV chunk, resolved once from its header row.
pub struct CsvLayout {
    /// Per plan field (`ObjectPlan::fields`), its column in the CSV: the cursor and
    /// `IsDeleted` are plan fields too.
    fields: Vec<Option<usize>>,
    width: usize,
}

impl CsvLayout {
    /// Maps the header row; fails when it lacks `Id` or the cursor field (every row would be
    /// unreadable, which is a contract problem, not bad data).
    pub fn new(plan: &ObjectPlan, header: &ByteRecord) -> Result<CsvLayout> {
        let position = |name: &str| header.iter().position(|h| h == name.as_bytes());
        let fields: Vec<Option<usize>> = plan.fields.iter().map(|f| position(f)).collect();
        let cursor_name = plan.cursor.as_deref().unwrap_or_default();
        let (Some(_), Some(_)) = (fields.first().copied().flatten(), position(cursor_name)) else {
            return Err(SalesforceError::CsvColumns {
                object: plan.object.clone(),
                cursor: cursor_name.to_string(),
            }
            .into());
        };
        Ok(CsvLayout {
            fields,
            width: header.len(),
        })
    }
}

/// What a column's slot holds after reading a record.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Null,
    /// The column's cell in [`Slots::cells`].
    Value,
    /// The value did not convert: the reason.
    Bad(String),
}

/// The converted fields of the record being read, one slot per plan field (`Id`, then the
/// data columns). Readers fill them as they meet each field, so no record is held as a JSON
/// tree or a row of strings; the cells are reused from record to record, text keeping its
/// allocation.
pub struct Slots {
    names: Vec<String>,
    types: Vec<DataType>,
    index: HashMap<String, usize>,
    cells: Vec<Cell>,
    state: Vec<Slot>,
    /// The part that set each slot (0: none yet), so that a split read's first chunk wins.
    owner: Vec<u16>,
    /// The column of the n-th field of the last record: Salesforce sends every record's
    /// fields in one order, so a name is mostly matched by one comparison, not a hash.
    order: Vec<usize>,
}

impl Slots {
    fn new(plan: &ObjectPlan) -> Slots {
        let names = plan.fields.clone();
        let index = names
            .iter()
            .enumerate()
            .map(|(column, name)| (name.clone(), column))
            .collect();
        Slots {
            types: plan.schema.fields()[..names.len()]
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
            index,
            cells: vec![Cell::Null; names.len()],
            state: vec![Slot::Null; names.len()],
            owner: vec![0; names.len()],
            order: Vec::new(),
            names,
        }
    }

    /// Every slot null and unset again.
    fn clear(&mut self) {
        self.state.fill(Slot::Null);
        self.owner.fill(0);
    }

    /// The column of field `name`, the `position`-th of its record; `None` when the plan
    /// does not select it.
    pub(super) fn column(&mut self, position: usize, name: &str) -> Option<usize> {
        if let Some(&column) = self.order.get(position)
            && self.names[column] == name
        {
            return Some(column);
        }
        let column = *self.index.get(name)?;
        if position < self.order.len() {
            self.order[position] = column;
        } else if position == self.order.len() {
            self.order.push(column);
        }
        Some(column)
    }

    /// Whether `part` may set `column`: no earlier part did.
    pub(super) fn takes(&self, column: usize, part: u16) -> bool {
        let owner = self.owner[column];
        owner == 0 || owner == part
    }

    /// Converts `raw` into `column`'s slot; a later value of the same part replaces it.
    pub(super) fn set(&mut self, column: usize, raw: Raw<'_>, part: u16) {
        self.owner[column] = part;
        let data_type = &self.types[column];
        let text = match raw {
            Raw::Json(Wire::Str(text)) if *data_type == DataType::Utf8 => Some(text.as_ref()),
            Raw::Text(text) if !text.is_empty() && *data_type == DataType::Utf8 => Some(text),
            _ => None,
        };
        self.state[column] = match (text, &mut self.cells[column]) {
            (Some(text), Cell::Text(cell)) => {
                cell.clear();
                cell.push_str(text);
                Slot::Value
            }
            (_, cell) => match convert(raw, data_type) {
                Ok(Cell::Null) => Slot::Null,
                Ok(converted) => {
                    *cell = converted;
                    Slot::Value
                }
                Err(reason) => Slot::Bad(reason),
            },
        };
    }

    /// The converted cell of `column`, `None` when null or not converted.
    fn cell(&self, column: usize) -> Option<&Cell> {
        match self.state[column] {
            Slot::Value => Some(&self.cells[column]),
            _ => None,
        }
    }
}

/// Accumulates converted records into record batches of the staged schema.
pub struct BatchBuilder {
    plan: Arc<ObjectPlan>,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    slots: Slots,
    /// The slots of the cursor and the soft-delete flag.
    cursor: Option<usize>,
    deleted: Option<usize>,
}

impl BatchBuilder {
    pub fn new(plan: Arc<ObjectPlan>) -> BatchBuilder {
        let columns = plan
            .schema
            .fields()
            .iter()
            .map(|f| ColumnBuilder::new(f.data_type()))
            .collect();
        let slot_of =
            |name: Option<&str>| name.and_then(|n| plan.fields.iter().position(|f| f == n));
        BatchBuilder {
            cursor: slot_of(plan.cursor.as_deref()),
            deleted: slot_of(plan.deleted.as_deref()),
            slots: Slots::new(&plan),
            plan,
            columns,
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one REST record, given as its JSON text (`attributes` and nested relationship
    /// objects are skipped unread: only the plan's fields are read). Returns the record's
    /// version (epoch ms of the cursor field). A record that is not a JSON object is a dead
    /// letter; its raw text is the record as sent.
    pub fn push_json(&mut self, record: &str) -> std::result::Result<i64, DeadLetter> {
        self.push_read(&[record], false, &|| record.to_string())
    }

    /// Appends one record of a split read from its field chunks' parts: each field is taken
    /// from the first part that has it, `attributes` from none. A dead letter's raw text is the
    /// parts merged so.
    pub fn push_parts(&mut self, parts: &[&str]) -> std::result::Result<i64, DeadLetter> {
        self.push_read(parts, true, &|| merged(parts))
    }

    fn push_read(
        &mut self,
        parts: &[&str],
        merging: bool,
        raw: &dyn Fn() -> String,
    ) -> std::result::Result<i64, DeadLetter> {
        let unreadable = |reason: String| DeadLetter {
            key: String::new(),
            field: None,
            reason,
            raw: raw(),
        };
        self.slots.clear();
        for (part, text) in (1..).zip(parts) {
            match page::read_record(text, &mut self.slots, part, merging) {
                Ok(true) => {}
                Ok(false) => return Err(unreadable("the record is not a JSON object".into())),
                Err(err) => {
                    return Err(unreadable(format!(
                        "the record is not readable JSON: {err}"
                    )));
                }
            }
        }
        self.append(raw)
    }

    /// Appends one Bulk CSV row of a chunk whose header gave `layout`.
    pub fn push_csv(
        &mut self,
        layout: &CsvLayout,
        row: &ByteRecord,
    ) -> std::result::Result<i64, DeadLetter> {
        let raw = || csv_line(row);
        let dead = |reason: String| DeadLetter {
            key: layout.fields[0]
                .and_then(|i| row.get(i))
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
            field: None,
            reason,
            raw: raw(),
        };
        if row.len() != layout.width {
            return Err(dead(format!(
                "the CSV row has {} fields, the header {}",
                row.len(),
                layout.width
            )));
        }
        // Checked field by field only when the row is not plain ASCII.
        if !row.as_slice().is_ascii()
            && let Some(i) = row.iter().position(|b| std::str::from_utf8(b).is_err())
        {
            return Err(dead(format!("CSV column {} is not valid UTF-8", i + 1)));
        }
        self.slots.clear();
        for (column, at) in layout.fields.iter().enumerate() {
            let text = at
                .and_then(|at| row.get(at))
                .and_then(|b| std::str::from_utf8(b).ok());
            if let Some(text) = text {
                self.slots.set(column, Raw::Text(text), 1);
            }
        }
        self.append(&raw)
    }

    /// Appends the record in the slots. A record without a readable Id or version, or with a
    /// value that does not convert, is returned as a dead letter and not appended.
    fn append(&mut self, raw: &dyn Fn() -> String) -> std::result::Result<i64, DeadLetter> {
        let slots = &self.slots;
        let dead = |key: &str, column: &str, reason: String| DeadLetter {
            key: key.to_string(),
            field: Some(column.to_string()),
            reason,
            raw: raw(),
        };
        let key = match slots.cell(0) {
            Some(Cell::Text(id)) if !id.is_empty() => id.as_str(),
            _ => return Err(dead("", KEY, "the record has no readable Id".into())),
        };
        let cursor_name = self.plan.cursor.as_deref().unwrap_or_default();
        let version = match self.cursor.map(|c| (slots.cell(c), &slots.state[c])) {
            Some((Some(Cell::Millis(ms)), _)) => *ms,
            Some((_, Slot::Bad(reason))) => {
                return Err(dead(key, cursor_name, format!("{cursor_name}: {reason}")));
            }
            _ => {
                return Err(dead(
                    key,
                    cursor_name,
                    format!("{cursor_name} is empty, so the record has no version"),
                ));
            }
        };
        let is_deleted = match self.deleted.map(|d| (slots.cell(d), &slots.state[d])) {
            Some((Some(Cell::Bool(b)), _)) => *b,
            Some((_, Slot::Bad(reason))) => {
                return Err(dead(key, super::describe::DELETED_FIELD, reason.clone()));
            }
            _ => false,
        };
        if let Some((column, Slot::Bad(reason))) = slots
            .state
            .iter()
            .enumerate()
            .find(|(_, slot)| matches!(slot, Slot::Bad(_)))
        {
            let name = &slots.names[column];
            return Err(dead(key, name, format!("field {name}: {reason}")));
        }
        let (data, system) = self.columns.split_at_mut(slots.names.len());
        for (column, builder) in data.iter_mut().enumerate() {
            match slots.cell(column) {
                Some(cell) => builder.append_ref(cell),
                None => builder.append(Cell::Null),
            }
        }
        system[0].append(Cell::Millis(version));
        system[1].append(Cell::Bool(is_deleted));
        self.rows += 1;
        Ok(version)
    }

    /// The rows pushed so far as a batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(self.plan.schema.clone(), arrays)
            .map_err(|e| SalesforceError::Batch(e).into())
    }
}

/// A split read's record for a dead letter: its parts merged as they were read (each field
/// from the first part that has it, no `attributes`).
fn merged(parts: &[&str]) -> String {
    let mut record = serde_json::Map::new();
    for part in parts {
        if let Ok(serde_json::Value::Object(part)) = serde_json::from_str(part) {
            for (name, value) in part {
                if name != "attributes" {
                    record.entry(name).or_insert(value);
                }
            }
        }
    }
    serde_json::Value::Object(record).to_string()
}

/// A CSV row written back as one line, for dead letters.
fn csv_line(row: &ByteRecord) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    if writer.write_byte_record(row).is_err() {
        return String::new();
    }
    match writer.into_inner() {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .trim_end_matches('\n')
            .to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::salesforce::describe::{Describe, ObjectPlan};
    use arrow::util::pretty::pretty_format_batches;
    use serde::de::DeserializeSeed;
    use serde_json::{Value, json};

    fn plan() -> Arc<ObjectPlan> {
        let describe: Describe = serde_json::from_value(json!({
            "name": "Account",
            "fields": [
                {"name": "Id", "type": "id"},
                {"name": "Name", "type": "string"},
                {"name": "IsDeleted", "type": "boolean"},
                {"name": "AnnualRevenue", "type": "currency"},
                {"name": "NumberOfEmployees", "type": "int"},
                {"name": "BillingAddress", "type": "address"},
                {"name": "BillingCity", "type": "string", "compoundFieldName": "BillingAddress"},
                {"name": "Since__c", "type": "date"},
                {"name": "SystemModstamp", "type": "datetime"}
            ]
        }))
        .unwrap();
        Arc::new(ObjectPlan::from_describe(&describe).unwrap())
    }

    fn object(value: Value) -> String {
        assert!(value.is_object());
        value.to_string()
    }

    fn wire(value: Value) -> Wire<'static> {
        crate::sources::json::WireSeed.deserialize(value).unwrap()
    }

    #[test]
    fn datetimes_parse_in_every_wire_form() {
        let expected = Some(1_714_557_600_000);
        assert_eq!(parse_millis("2024-05-01T10:00:00.000+0000"), expected);
        assert_eq!(parse_millis("2024-05-01T12:00:00.000+0200"), expected);
        assert_eq!(parse_millis("2024-05-01T10:00:00.000Z"), expected);
        assert_eq!(parse_millis("2024-05-01T10:00:00Z"), expected);
        assert_eq!(parse_millis("2024-05-01T10:00:00+00:00"), expected);
        assert_eq!(parse_millis("1714557600000"), expected);
        assert_eq!(
            parse_millis("2024-05-01T10:00:00.123+0000"),
            Some(1_714_557_600_123)
        );
        assert_eq!(parse_millis("May 1st"), None);
        assert_eq!(parse_millis(""), None);
        assert_eq!(parse_date("2024-01-31"), Some(19_753));
        assert_eq!(parse_date("31/01/2024"), None);
    }

    #[test]
    fn json_values_convert_by_column_type() {
        let ts = crate::schema::timestamp_type();
        assert_eq!(
            convert(Raw::Json(&wire(json!(12000.5))), &DataType::Float64),
            Ok(Cell::Float(12000.5))
        );
        assert_eq!(
            convert(Raw::Json(&wire(json!(42))), &DataType::Float64),
            Ok(Cell::Float(42.0))
        );
        assert_eq!(
            convert(Raw::Json(&wire(json!(7))), &DataType::Int64),
            Ok(Cell::Int(7))
        );
        assert_eq!(
            convert(Raw::Json(&wire(json!(7.0))), &DataType::Int64),
            Ok(Cell::Int(7))
        );
        assert!(convert(Raw::Json(&wire(json!(7.5))), &DataType::Int64).is_err());
        assert_eq!(
            convert(Raw::Json(&wire(json!(true))), &DataType::Boolean),
            Ok(Cell::Bool(true))
        );
        assert!(convert(Raw::Json(&wire(json!("yes"))), &DataType::Boolean).is_err());
        assert_eq!(
            convert(Raw::Json(&wire(json!(null))), &DataType::Int64),
            Ok(Cell::Null)
        );
        assert_eq!(convert(Raw::Missing, &DataType::Utf8), Ok(Cell::Null));
        assert_eq!(
            convert(Raw::Json(&wire(json!("A;B"))), &DataType::Utf8),
            Ok(Cell::Text("A;B".into()))
        );
        assert_eq!(
            convert(Raw::Json(&wire(json!(3))), &DataType::Utf8),
            Ok(Cell::Text("3".into()))
        );
        assert_eq!(
            convert(Raw::Json(&wire(json!("2024-01-31"))), &DataType::Date32),
            Ok(Cell::Date(19_753))
        );
        assert_eq!(
            convert(Raw::Json(&wire(json!("2024-05-01T10:00:00.000+0000"))), &ts),
            Ok(Cell::Millis(1_714_557_600_000))
        );
        assert!(convert(Raw::Json(&wire(json!({"city": "SF"}))), &DataType::Float64).is_err());
    }

    #[test]
    fn integers_past_int64_fail_without_showing_the_value() {
        let past = crate::values::Problem::IntegerOutOfRange.to_string();
        assert_eq!(
            convert(
                Raw::Json(&wire(json!(9223372036854775808u64))),
                &DataType::Int64
            ),
            Err(past.clone())
        );
        assert_eq!(
            convert(Raw::Text("-99999999999999999999"), &DataType::Int64),
            Err(past)
        );
        assert_eq!(
            convert(Raw::Text("9223372036854775807"), &DataType::Int64),
            Ok(Cell::Int(i64::MAX))
        );
    }

    #[test]
    fn csv_values_convert_by_column_type() {
        let ts = crate::schema::timestamp_type();
        assert_eq!(convert(Raw::Text(""), &DataType::Utf8), Ok(Cell::Null));
        assert_eq!(convert(Raw::Text(""), &DataType::Int64), Ok(Cell::Null));
        assert_eq!(
            convert(Raw::Text("12000.5"), &DataType::Float64),
            Ok(Cell::Float(12000.5))
        );
        assert_eq!(
            convert(Raw::Text("25"), &DataType::Int64),
            Ok(Cell::Int(25))
        );
        assert_eq!(
            convert(Raw::Text("25.0"), &DataType::Int64),
            Ok(Cell::Int(25))
        );
        assert_eq!(
            convert(Raw::Text("false"), &DataType::Boolean),
            Ok(Cell::Bool(false))
        );
        assert_eq!(
            convert(Raw::Text("2024-01-31"), &DataType::Date32),
            Ok(Cell::Date(19_753))
        );
        assert_eq!(
            convert(Raw::Text("2024-05-01T10:00:00.000Z"), &ts),
            Ok(Cell::Millis(1_714_557_600_000))
        );
        assert!(convert(Raw::Text("many"), &DataType::Float64).is_err());
        assert!(convert(Raw::Text("NaN"), &DataType::Float64).is_err());
    }

    #[test]
    fn rest_records_become_typed_rows() {
        let mut builder = BatchBuilder::new(plan());
        let version = builder
            .push_json(&object(json!({
                "attributes": {"type": "Account", "url": "/services/data/v62.0/sobjects/Account/001A"},
                "Id": "001A", "Name": "Acme, Inc.", "IsDeleted": false, "AnnualRevenue": 12000.5,
                "NumberOfEmployees": 25, "BillingCity": "SF", "Since__c": "2024-01-31",
                "SystemModstamp": "2024-05-01T10:00:00.000+0000",
                "BillingAddress": {"city": "SF"}, "Owner": {"attributes": {}, "Name": "Jo"}
            })))
            .unwrap();
        assert_eq!(version, 1_714_557_600_000);
        builder
            .push_json(&object(json!({
                "Id": "001B", "Name": null, "IsDeleted": true, "AnnualRevenue": null,
                "NumberOfEmployees": null, "BillingCity": null, "Since__c": null,
                "SystemModstamp": "2024-05-02T00:00:00.000Z"
            })))
            .unwrap();
        let batch = builder.finish().unwrap();
        insta::assert_snapshot!(pretty_format_batches(&[batch]).unwrap().to_string(), @r"
        +------+---------------+-------------+-----------+------------+-------------------+------------+----------------------+----------------------+-------------------+
        | Id   | AnnualRevenue | BillingCity | IsDeleted | Name       | NumberOfEmployees | Since__c   | SystemModstamp       | _syncline_version    | _syncline_deleted |
        +------+---------------+-------------+-----------+------------+-------------------+------------+----------------------+----------------------+-------------------+
        | 001A | 12000.5       | SF          | false     | Acme, Inc. | 25                | 2024-01-31 | 2024-05-01T10:00:00Z | 2024-05-01T10:00:00Z | false             |
        | 001B |               |             | true      |            |                   |            | 2024-05-02T00:00:00Z | 2024-05-02T00:00:00Z | true              |
        +------+---------------+-------------+-----------+------------+-------------------+------------+----------------------+----------------------+-------------------+
        ");
    }

    #[test]
    fn bulk_csv_rows_become_the_same_rows() {
        let csv_text = "Id,Name,SystemModstamp,IsDeleted,AnnualRevenue,NumberOfEmployees,BillingCity,Since__c\n\
                        001A,\"Acme, Inc.\",2024-05-01T10:00:00.000Z,false,12000.5,25,SF,2024-01-31\n\
                        001B,,2024-05-02T00:00:00.000Z,true,,,,\n";
        let mut reader = csv::ReaderBuilder::new().from_reader(csv_text.as_bytes());
        let layout = CsvLayout::new(&plan(), reader.byte_headers().unwrap()).unwrap();
        let mut builder = BatchBuilder::new(plan());
        let mut row = ByteRecord::new();
        while reader.read_byte_record(&mut row).unwrap() {
            builder.push_csv(&layout, &row).unwrap();
        }
        let batch = builder.finish().unwrap();
        let text = pretty_format_batches(&[batch]).unwrap().to_string();
        assert!(text.contains("| 001A | 12000.5       | SF          | false     | Acme, Inc. | 25                | 2024-01-31 | 2024-05-01T10:00:00Z | 2024-05-01T10:00:00Z | false             |"), "{text}");
        assert!(text.contains("| 001B |               |             | true      |            |                   |            | 2024-05-02T00:00:00Z | 2024-05-02T00:00:00Z | true              |"), "{text}");
    }

    #[test]
    fn unconvertible_values_are_dead_letters() {
        let mut builder = BatchBuilder::new(plan());
        let letter = builder
            .push_json(&object(json!({
                "Id": "001C", "NumberOfEmployees": "lots", "SystemModstamp": "2024-05-01T10:00:00.000+0000"
            })))
            .unwrap_err();
        assert_eq!(letter.key, "001C");
        assert_eq!(letter.field.as_deref(), Some("NumberOfEmployees"));
        assert!(
            letter.reason.contains("\"lots\" is not an integer"),
            "{}",
            letter.reason
        );
        assert!(letter.raw.contains("lots"));
        let letter = builder
            .push_json(&object(
                json!({"Id": "001D", "SystemModstamp": "yesterday"}),
            ))
            .unwrap_err();
        assert_eq!(letter.field.as_deref(), Some("SystemModstamp"));
        let letter = builder
            .push_json(&object(
                json!({"Name": "no id", "SystemModstamp": "2024-05-01T10:00:00Z"}),
            ))
            .unwrap_err();
        assert_eq!(letter.key, "");
        assert_eq!(builder.rows(), 0);

        let csv_text = "Id,SystemModstamp,NumberOfEmployees\n001E,2024-05-01T10:00:00.000Z,\"1,5\"\n001F,2024-05-01T10:00:00.000Z\n";
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(csv_text.as_bytes());
        let layout = CsvLayout::new(&plan(), reader.byte_headers().unwrap()).unwrap();
        let mut row = ByteRecord::new();
        assert!(reader.read_byte_record(&mut row).unwrap());
        let letter = builder.push_csv(&layout, &row).unwrap_err();
        assert_eq!(letter.key, "001E");
        assert_eq!(letter.raw, "001E,2024-05-01T10:00:00.000Z,\"1,5\"");
        assert!(reader.read_byte_record(&mut row).unwrap());
        let letter = builder.push_csv(&layout, &row).unwrap_err();
        assert!(letter.reason.contains("2 fields"), "{}", letter.reason);
        assert_eq!(builder.rows(), 0);
    }

    #[test]
    fn csv_headers_without_id_are_rejected() {
        let header = ByteRecord::from(vec!["Name", "SystemModstamp"]);
        assert!(CsvLayout::new(&plan(), &header).is_err());
    }

    /// Compares one typed result with the reference's: the same version, or the same dead
    /// letter (key, field, reason), whose raw text is `sent` (the record as the API sent it)
    /// or else the reference's.
    fn assert_same(
        got: std::result::Result<i64, DeadLetter>,
        want: std::result::Result<i64, DeadLetter>,
        sent: Option<&str>,
        what: &str,
    ) {
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{what}"),
            (Err(got), Err(want)) => {
                assert_eq!(
                    (&got.key, &got.field, &got.reason),
                    (&want.key, &want.field, &want.reason),
                    "{what}"
                );
                // Not compared with the reference's raw text when sent: that one was the
                // record written again from a `Value`, which may print a float differently.
                assert_eq!(got.raw, sent.unwrap_or(&want.raw), "{what}");
            }
            (got, want) => panic!("{what}: typed {got:?}, reference {want:?}"),
        }
    }

    /// Reads a page's text both ways, the typed reading through the page split the ordered
    /// reader uses, and asserts they agree: the same next page or shape problem, then record by
    /// record the same rows and dead letters.
    fn assert_pages_agree(page: &str) {
        let typed_page = crate::sources::salesforce::page::QueryPage::parse(
            bytes::Bytes::copy_from_slice(page.as_bytes()),
        )
        .expect("the typed page parses");
        let reference_page: Value = serde_json::from_str(page).expect("the page parses");
        let (records, next) = match reference::page_parts(reference_page) {
            Ok(parts) => parts,
            Err(what) => {
                let err = typed_page.next_path("Account").unwrap_err().to_string();
                assert!(err.ends_with(what), "{err} / {what}: {page}");
                return;
            }
        };
        assert_eq!(typed_page.next_path("Account").unwrap(), next, "{page}");
        assert_eq!(typed_page.records().len(), records.len(), "{page}");
        let mut typed = BatchBuilder::new(plan());
        let mut oracle = reference::ValueBuilder::new(plan());
        for (text, record) in typed_page.records().zip(&records) {
            assert_same(
                typed.push_json(text),
                oracle.push_record(record),
                Some(text),
                text,
            );
        }
        assert_eq!(typed.finish().unwrap(), oracle.finish(), "{page}");
    }

    #[test]
    fn typed_reading_agrees_with_value_reading_on_hand_written_records() {
        let stamp = r#""SystemModstamp":"2024-05-01T10:00:00.000+0000""#;
        let records = [
            // Repeated keys: the last wins.
            format!(
                r#"{{"Id":"1","Id":"2",{stamp},"NumberOfEmployees":"lots","NumberOfEmployees":5}}"#
            ),
            // Not objects.
            "5".into(),
            "null".into(),
            r#"[1,{"Id":"2"}]"#.into(),
            r#""x""#.into(),
            // Escaped names and values.
            format!(
                r#"{{"I\u0064":"3",{stamp},"N\u0061me":"\u00e9\ud83d\ude00\n\"","Billing\/City":"x"}}"#
            ),
            // Every JSON type in every column.
            format!(
                r#"{{"Id":4,{stamp},"Name":12.50,"AnnualRevenue":1e3,"IsDeleted":"TRUE","NumberOfEmployees":18446744073709551615,"Since__c":[1],"BillingCity":{{"a":null}}}}"#
            ),
            format!(
                r#"{{"Id":true,{stamp},"Name":{{"nested":["x",1.5,null]}},"AnnualRevenue":-0.0,"NumberOfEmployees":-9223372036854775808}}"#
            ),
            format!(r#"{{"Id":"5",{stamp},"NumberOfEmployees":123456789012345678901234}}"#),
            format!(r#"{{"Id":"6",{stamp},"NumberOfEmployees":"99999999999999999999"}}"#),
            format!(r#"{{"Id":"7",{stamp},"NumberOfEmployees":7.0,"AnnualRevenue":"12.5"}}"#),
            format!(r#"{{"Id":"8",{stamp},"IsDeleted":"yes"}}"#),
            format!(r#"{{"Id":"9",{stamp},"IsDeleted":1}}"#),
            format!(
                r#"{{"Id":"10",{stamp},"Since__c":"","AnnualRevenue":"","IsDeleted":"","Name":""}}"#
            ),
            // Datetimes in every wire form, and cursors that are not one.
            r#"{"Id":"11","SystemModstamp":"2024-05-01T10:00:00.000Z"}"#.into(),
            r#"{"Id":"12","SystemModstamp":"2024-05-01T12:00:00+02:00"}"#.into(),
            r#"{"Id":"13","SystemModstamp":1714557600000}"#.into(),
            r#"{"Id":"14","SystemModstamp":"1714557600000"}"#.into(),
            r#"{"Id":"15","SystemModstamp":1.5}"#.into(),
            r#"{"Id":"16","SystemModstamp":""}"#.into(),
            r#"{"Id":"17","SystemModstamp":null}"#.into(),
            r#"{"Id":"18"}"#.into(),
            r#"{"Id":"","SystemModstamp":"2024-05-01T10:00:00Z"}"#.into(),
            // Attributes and relationship objects are not fields.
            format!(
                r#"{{"attributes":{{"type":"Account","Id":"x"}},"Id":"19",{stamp},"Owner":{{"attributes":{{}},"Name":"Jo"}},"Unknown__c":1}}"#
            ),
        ];
        let page = format!(
            r#"{{"totalSize":25,"done":false,"nextRecordsUrl":"/services/data/v62.0/query/01g-2000","records":[{}]}}"#,
            records.join(",")
        );
        assert_pages_agree(&page);
        assert_pages_agree(&crate::sources::json::escaped(&page));
    }

    #[test]
    fn a_record_with_a_number_json_cannot_hold_is_a_dead_letter_not_a_failed_page() {
        let record = r#"{"Id":"1","SystemModstamp":"2024-05-01T10:00:00Z","AnnualRevenue":1e400}"#;
        let page = format!(
            r#"{{"done":true,"records":[{record},{{"Id":"2","SystemModstamp":"2024-05-01T10:00:00Z"}}]}}"#
        );
        let page =
            crate::sources::salesforce::page::QueryPage::parse(bytes::Bytes::from(page)).unwrap();
        let mut builder = BatchBuilder::new(plan());
        let texts: Vec<&str> = page.records().collect();
        let letter = builder.push_json(texts[0]).unwrap_err();
        assert_eq!(letter.raw, record);
        assert!(
            letter.reason.starts_with("the record is not readable JSON"),
            "{}",
            letter.reason
        );
        assert!(!letter.reason.contains("1e400"), "{}", letter.reason);
        assert!(builder.push_json(texts[1]).is_ok());
    }

    use proptest::prelude::*;

    /// A JSON value's text: hostile strings, numbers past every integer type, containers.
    fn json_text() -> impl Strategy<Value = String> {
        let text = prop_oneof![
            "\\PC{0,12}",
            any::<String>(),
            Just(String::new()),
            "[-+ ]?[0-9,]{0,22} ?",
            "-?[0-9]{1,4}(\\.[0-9]{0,4})?(e-?[0-9]{1,3})?",
            Just("NaN".to_string()),
            Just("inf".to_string()),
            "(?i) ?(true|false|yes) ?",
            "[0-9]{4}-[0-1][0-9]-[0-3][0-9]",
            "20[0-9]{2}-0[1-9]-[0-2][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,3})?(Z|[+-][0-1][0-9]:?[0-5][0-9])",
            "-?[0-9]{1,20}",
            Just("\u{0}\\\"\u{2028}\t".to_string()),
        ];
        prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| Value::from(f).to_string()),
            "-?[1-9][0-9]{18,29}",
            "-?(0|[1-9][0-9]{0,2})\\.0",
            "-?[0-9]\\.[0-9]{1,3}[eE][-+]?[0-9]{1,2}",
            Just("-0".to_string()),
            text.clone().prop_map(|s| Value::from(s).to_string()),
            text.clone().prop_map(|s| Value::from(s).to_string()),
            text.prop_map(|s| Value::from(s).to_string()),
            Just(r#"["a",1,null]"#.to_string()),
            Just(r#"{"nested":{"x":"é"},"attributes":{}}"#.to_string()),
        ]
    }

    fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => proptest::sample::select(vec![
                "Id", "Name", "IsDeleted", "AnnualRevenue", "NumberOfEmployees", "BillingCity",
                "Since__c", "SystemModstamp",
            ])
            .prop_map(str::to_string),
            1 => proptest::sample::select(vec![
                "attributes", "Owner", "BillingAddress", "_syncline_version", "Unknown__c", "é\u{1f600}", "",
            ])
            .prop_map(str::to_string),
        ]
    }

    fn stamp_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "\"20[0-9]{2}-0[1-9]-[0-2][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]\\.[0-9]{3}(\\+0000|Z)\"",
            1 => "[1-9][0-9]{12}",
            1 => json_text(),
        ]
    }

    /// A record's text with the fields in the given order, duplicates kept; `gap` is the
    /// whitespace around every token. Most records carry an Id and a cursor.
    fn record_text() -> impl Strategy<Value = String> {
        (
            proptest::option::weighted(
                0.9,
                prop_oneof![3 => "\"0[0-9A-Za-z]{2,17}\"", 1 => json_text()],
            ),
            proptest::option::weighted(0.9, stamp_text()),
            proptest::collection::vec((field_name(), json_text()), 0..10),
            0..3usize,
        )
            .prop_map(|(id, stamp, fields, gap)| {
                let gap = ["", " ", "\n\t "][gap];
                let mut pairs: Vec<(String, String)> = Vec::new();
                if let Some(id) = id {
                    pairs.push(("Id".into(), id));
                }
                if let Some(stamp) = stamp {
                    pairs.push(("SystemModstamp".into(), stamp));
                }
                pairs.extend(fields);
                let body: Vec<String> = pairs
                    .iter()
                    .map(|(name, value)| {
                        format!("{gap}{}{gap}:{gap}{value}{gap}", Value::from(name.as_str()))
                    })
                    .collect();
                format!("{{{}}}", body.join(","))
            })
    }

    fn page_text() -> impl Strategy<Value = String> {
        let record = prop_oneof![9 => record_text(), 1 => json_text()];
        (
            proptest::collection::vec(record, 0..6),
            proptest::option::of(any::<bool>()),
            proptest::option::of(prop_oneof![
                Just("\"/services/data/v62.0/queryAll/01g-2000\"".to_string()),
                Just(
                    "\"https://acme.my.salesforce.com/services/data/v62.0/queryAll/01g-4000\""
                        .to_string()
                ),
                Just("\"\"".to_string()),
                Just("null".to_string()),
            ]),
        )
            .prop_map(|(records, done, next)| {
                let mut fields = vec![format!("\"records\":[{}]", records.join(","))];
                if let Some(done) = done {
                    fields.push(format!("\"done\":{done}"));
                }
                if let Some(next) = next {
                    fields.push(format!("\"nextRecordsUrl\":{next}"));
                }
                format!("{{\"totalSize\":{},{}}}", records.len(), fields.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The typed reading of hostile pages and records (unicode, escapes, huge numbers,
        /// nulls, missing, extra and repeated fields, values of every JSON type, records that
        /// are not objects) agrees with the `Value` reading it replaced, as sent or with every
        /// string escaped.
        #[test]
        fn typed_reading_agrees_with_value_reading(page in page_text(), escape in any::<bool>()) {
            let page = if escape { crate::sources::json::escaped(&page) } else { page };
            assert_pages_agree(&page);
        }

        /// A split read's parts merge as the `Value` merge did: each field from the first part
        /// that has it, `attributes` from none, repeated keys within a part the last.
        #[test]
        fn split_parts_merge_as_the_value_merge_did(
            id in "\"0[0-9A-Za-z]{2,17}\"",
            stamp in stamp_text(),
            parts in proptest::collection::vec(proptest::collection::vec((field_name(), json_text()), 0..6), 1..4),
        ) {
            let texts: Vec<String> = parts
                .iter()
                .map(|fields| {
                    let mut body = vec![format!("\"Id\":{id}"), format!("\"SystemModstamp\":{stamp}")];
                    body.extend(fields.iter().map(|(name, value)| format!("{}:{value}", Value::from(name.as_str()))));
                    format!("{{{}}}", body.join(","))
                })
                .collect();
            let values: Vec<Value> = texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect();
            let borrowed: Vec<&str> = texts.iter().map(String::as_str).collect();
            let mut typed = BatchBuilder::new(plan());
            let mut oracle = reference::ValueBuilder::new(plan());
            assert_same(typed.push_parts(&borrowed), oracle.push_merged(&values), None, &texts.join(" | "));
            prop_assert_eq!(typed.finish().unwrap(), oracle.finish());
        }

        /// Bulk CSV rows convert as they did when every row became a vector of strings first.
        #[test]
        fn csv_rows_read_as_before(
            rows in proptest::collection::vec(proptest::collection::vec(
                prop_oneof![
                    Just(String::new()),
                    "\\PC{0,8}",
                    "-?[0-9]{1,20}(\\.[0-9]{1,2})?",
                    "(true|false|TRUE| yes)",
                    "20[0-9]{2}-0[1-9]-[0-2][0-9](T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]\\.000Z)?",
                ], 3..6), 1..5),
            invalid in any::<bool>(),
        ) {
            let header = ByteRecord::from(vec!["Id", "SystemModstamp", "NumberOfEmployees", "IsDeleted", "Since__c"]);
            let layout = CsvLayout::new(&plan(), &header).unwrap();
            let mut typed = BatchBuilder::new(plan());
            let mut oracle = reference::ValueBuilder::new(plan());
            for fields in rows {
                let mut row = ByteRecord::new();
                for (i, field) in fields.iter().enumerate() {
                    if invalid && i == 2 {
                        row.push_field(b"\xe9t\xe9");
                    } else {
                        row.push_field(field.as_bytes());
                    }
                }
                let got = typed.push_csv(&layout, &row);
                let want = oracle.push_csv(&layout, &row);
                match (got, want) {
                    (Ok(got), Ok(want)) => prop_assert_eq!(got, want),
                    (Err(got), Err(want)) => prop_assert_eq!(
                        (got.key, got.field, got.reason, got.raw),
                        (want.key, want.field, want.reason, want.raw)
                    ),
                    (got, want) => panic!("typed {got:?}, reference {want:?}"),
                }
            }
            prop_assert_eq!(typed.finish().unwrap(), oracle.finish());
        }
    }
}

/// The `Value` reading the typed one replaced, kept here only as the reference the typed
/// reading is held against.
#[cfg(test)]
mod reference {
    use super::*;
    use serde_json::{Map, Value};

    #[derive(Clone, Copy)]
    pub enum Raw<'a> {
        Missing,
        Json(&'a Value),
        Text(&'a str),
    }

    pub fn convert(raw: Raw<'_>, data_type: &DataType) -> std::result::Result<Cell, String> {
        match raw {
            Raw::Missing | Raw::Json(Value::Null) => Ok(Cell::Null),
            Raw::Text("") => Ok(Cell::Null),
            Raw::Text(text) => from_text(text, data_type),
            Raw::Json(value) => from_json(value, data_type),
        }
    }

    fn from_json(value: &Value, data_type: &DataType) -> std::result::Result<Cell, String> {
        match (data_type, value) {
            (DataType::Utf8, Value::String(s)) => Ok(Cell::Text(s.clone())),
            (DataType::Utf8, other) => Ok(Cell::Text(other.to_string())),
            (DataType::Boolean, Value::Bool(b)) => Ok(Cell::Bool(*b)),
            (DataType::Int64, Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Cell::Int(i)),
                None => integral(n.as_f64(), &n.to_string()),
            },
            (DataType::Float64, Value::Number(n)) => finite(n.as_f64(), &n.to_string()),
            (DataType::Timestamp(..), Value::Number(n)) => n
                .as_i64()
                .map(Cell::Millis)
                .ok_or_else(|| format!("{n} is not a datetime (epoch ms)")),
            (_, Value::String(s)) if s.is_empty() => Ok(Cell::Null),
            (_, Value::String(s)) => from_text(s, data_type),
            (_, other) => Err(format!(
                "{} is not a {}",
                short(other),
                type_name(data_type)
            )),
        }
    }

    fn short(value: &Value) -> String {
        let text = value.to_string();
        if text.chars().count() > 60 {
            format!("{}…", text.chars().take(60).collect::<String>())
        } else {
            text
        }
    }

    /// The page's records and next path, or `Err` with the shape problem.
    pub fn page_parts(
        page: Value,
    ) -> std::result::Result<(Vec<Value>, Option<String>), &'static str> {
        let Value::Object(mut page) = page else {
            return Err("is not a JSON object");
        };
        let records = match page.remove("records") {
            Some(Value::Array(records)) => records,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err("has a records field that is not an array"),
        };
        let done = page
            .get("done")
            .and_then(Value::as_bool)
            .ok_or("has no done flag")?;
        if done {
            return Ok((records, None));
        }
        let next = page
            .get("nextRecordsUrl")
            .and_then(Value::as_str)
            .filter(|url| !url.is_empty())
            .ok_or("is not the last one but has no nextRecordsUrl")?;
        Ok((records, Some(super::page::next_path(next))))
    }

    pub struct ValueBuilder {
        plan: Arc<ObjectPlan>,
        columns: Vec<ColumnBuilder>,
        cells: Vec<Cell>,
    }

    impl ValueBuilder {
        pub fn new(plan: Arc<ObjectPlan>) -> ValueBuilder {
            let columns = plan
                .schema
                .fields()
                .iter()
                .map(|f| ColumnBuilder::new(f.data_type()))
                .collect();
            ValueBuilder {
                plan,
                columns,
                cells: Vec::new(),
            }
        }

        /// One record of a page, as the ordered reader took it.
        pub fn push_record(&mut self, record: &Value) -> std::result::Result<i64, DeadLetter> {
            match record {
                Value::Object(record) => self.push_json(record),
                other => Err(DeadLetter {
                    key: String::new(),
                    field: None,
                    reason: "the record is not a JSON object".into(),
                    raw: other.to_string(),
                }),
            }
        }

        /// The parts of a split read, merged as the split reader did.
        pub fn push_merged(&mut self, parts: &[Value]) -> std::result::Result<i64, DeadLetter> {
            let mut merged = Map::new();
            for part in parts {
                for (name, value) in part.as_object().expect("parts are objects").clone() {
                    if name != "attributes" {
                        merged.entry(name).or_insert(value);
                    }
                }
            }
            self.push_json(&merged)
        }

        pub fn push_json(
            &mut self,
            record: &Map<String, Value>,
        ) -> std::result::Result<i64, DeadLetter> {
            let plan = self.plan.clone();
            let value = |name: Option<&str>| match name.and_then(|n| record.get(n)) {
                Some(v) => Raw::Json(v),
                None => Raw::Missing,
            };
            let raw = || Value::Object(record.clone()).to_string();
            self.push_with(
                |i| value(plan.fields.get(i).map(String::as_str)),
                value(plan.cursor.as_deref()),
                plan.deleted.as_deref().map(|d| value(Some(d))),
                &raw,
            )
        }

        pub fn push_csv(
            &mut self,
            layout: &CsvLayout,
            row: &ByteRecord,
        ) -> std::result::Result<i64, DeadLetter> {
            let raw = || csv_line(row);
            let key_text = || {
                layout.fields[0]
                    .and_then(|i| row.get(i))
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default()
            };
            if row.len() != layout.width {
                return Err(DeadLetter {
                    key: key_text(),
                    field: None,
                    reason: format!(
                        "the CSV row has {} fields, the header {}",
                        row.len(),
                        layout.width
                    ),
                    raw: raw(),
                });
            }
            let mut texts: Vec<&str> = Vec::with_capacity(row.len());
            for (i, bytes) in row.iter().enumerate() {
                match std::str::from_utf8(bytes) {
                    Ok(text) => texts.push(text),
                    Err(_) => {
                        return Err(DeadLetter {
                            key: key_text(),
                            field: None,
                            reason: format!("CSV column {} is not valid UTF-8", i + 1),
                            raw: raw(),
                        });
                    }
                }
            }
            let at = |column: Option<usize>| match column.and_then(|c| texts.get(c).copied()) {
                Some(text) => Raw::Text(text),
                None => Raw::Missing,
            };
            // Where the header has them, as the layout used to keep them.
            let header_column = |name: Option<&str>| {
                let name = name?;
                let field = self.plan.fields.iter().position(|f| f == name)?;
                layout.fields[field]
            };
            let cursor = header_column(self.plan.cursor.as_deref());
            let deleted = header_column(self.plan.deleted.as_deref());
            self.push_with(
                |i| at(layout.fields.get(i).copied().flatten()),
                at(cursor),
                deleted.map(|d| at(Some(d))),
                &raw,
            )
        }

        fn push_with<'a>(
            &mut self,
            field: impl Fn(usize) -> Raw<'a>,
            cursor: Raw<'a>,
            deleted: Option<Raw<'a>>,
            raw: &dyn Fn() -> String,
        ) -> std::result::Result<i64, DeadLetter> {
            let plan = self.plan.clone();
            let dead = |key: String, column: Option<&str>, reason: String| DeadLetter {
                key,
                field: column.map(str::to_string),
                reason,
                raw: raw(),
            };
            let key = match convert(field(0), &DataType::Utf8) {
                Ok(Cell::Text(id)) if !id.is_empty() => id,
                _ => {
                    return Err(dead(
                        String::new(),
                        Some(KEY),
                        "the record has no readable Id".into(),
                    ));
                }
            };
            let cursor_name = plan.cursor.as_deref().unwrap_or_default();
            let version = match convert(cursor, &crate::schema::timestamp_type()) {
                Ok(Cell::Millis(ms)) => ms,
                Ok(_) => {
                    return Err(dead(
                        key,
                        Some(cursor_name),
                        format!("{cursor_name} is empty, so the record has no version"),
                    ));
                }
                Err(reason) => {
                    return Err(dead(
                        key,
                        Some(cursor_name),
                        format!("{cursor_name}: {reason}"),
                    ));
                }
            };
            let is_deleted = match deleted.map(|d| convert(d, &DataType::Boolean)) {
                None | Some(Ok(Cell::Null)) => false,
                Some(Ok(Cell::Bool(b))) => b,
                Some(Ok(_)) => false,
                Some(Err(reason)) => {
                    return Err(dead(
                        key,
                        Some(super::super::describe::DELETED_FIELD),
                        reason,
                    ));
                }
            };
            self.cells.clear();
            self.cells.push(Cell::Text(key.clone()));
            let data_fields = &plan.schema.fields()[1..plan.schema.fields().len() - 2];
            for (offset, column) in data_fields.iter().enumerate() {
                match convert(field(offset + 1), column.data_type()) {
                    Ok(cell) => self.cells.push(cell),
                    Err(reason) => {
                        self.cells.clear();
                        return Err(dead(
                            key,
                            Some(column.name().as_str()),
                            format!("field {}: {reason}", column.name()),
                        ));
                    }
                }
            }
            self.cells.push(Cell::Millis(version));
            self.cells.push(Cell::Bool(is_deleted));
            for (builder, cell) in self.columns.iter_mut().zip(self.cells.drain(..)) {
                builder.append(cell);
            }
            Ok(version)
        }

        pub fn finish(&mut self) -> RecordBatch {
            let arrays: Vec<ArrayRef> =
                self.columns.iter_mut().map(ColumnBuilder::finish).collect();
            RecordBatch::try_new(self.plan.schema.clone(), arrays).unwrap()
        }
    }
}
