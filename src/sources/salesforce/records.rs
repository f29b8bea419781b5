//! Salesforce records to Arrow rows, from REST JSON or Bulk CSV (crm-apis.md A2, A6).
//!
//! Both wire forms go through one conversion keyed by the describe-derived column type, so a
//! record reads the same whichever API served it. A record with a value that does not convert
//! becomes a dead letter and is not appended; the run continues.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::DataType;
use chrono::{DateTime, NaiveDate};
use csv::ByteRecord;
use serde_json::{Map, Value};

use super::SalesforceError;
use crate::Result;
use crate::load::DeadLetter;
use crate::sources::cells::{Cell, ColumnBuilder};

use super::KEY;
use super::describe::ObjectPlan;

/// A value as it came off the wire.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    Missing,
    Json(&'a Value),
    /// A Bulk CSV field: every value is text, and the empty string is null (A6).
    Text(&'a str),
}

/// Converts a wire value to the column's type; `Err` carries the reason.
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
        // anyType and unknown types may carry numbers or booleans; objects keep their JSON.
        (DataType::Utf8, other) => Ok(Cell::Text(other.to_string())),
        (DataType::Boolean, Value::Bool(b)) => Ok(Cell::Bool(*b)),
        (DataType::Int64, Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Cell::Int(i)),
            None => integral(n.as_f64(), &n.to_string()),
        },
        (DataType::Float64, Value::Number(n)) => finite(n.as_f64(), &n.to_string()),
        // CDC-style payloads and some tools send datetimes as epoch milliseconds.
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
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
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
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `YYYY-MM-DD` as days since the epoch.
pub fn parse_date(text: &str) -> Option<i32> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
    i32::try_from((date - epoch).num_days()).ok()
}

/// Where each source field sits in one Bulk CSV chunk, resolved once from its header row.
pub struct CsvLayout {
    /// Per plan field (`ObjectPlan::fields`), its column in the CSV.
    fields: Vec<Option<usize>>,
    cursor: usize,
    deleted: Option<usize>,
    width: usize,
}

impl CsvLayout {
    /// Maps the header row; fails when it lacks `Id` or the cursor field (every row would be
    /// unreadable, which is a contract problem, not bad data).
    pub fn new(plan: &ObjectPlan, header: &ByteRecord) -> Result<CsvLayout> {
        let position = |name: &str| header.iter().position(|h| h == name.as_bytes());
        let fields: Vec<Option<usize>> = plan.fields.iter().map(|f| position(f)).collect();
        let cursor_name = plan.cursor.as_deref().unwrap_or_default();
        let (Some(_), Some(cursor)) = (fields.first().copied().flatten(), position(cursor_name))
        else {
            return Err(SalesforceError::CsvColumns {
                object: plan.object.clone(),
                cursor: cursor_name.to_string(),
            }
            .into());
        };
        Ok(CsvLayout {
            fields,
            cursor,
            deleted: plan.deleted.as_deref().and_then(position),
            width: header.len(),
        })
    }
}

/// Accumulates converted records into record batches of the staged schema.
pub struct BatchBuilder {
    plan: Arc<ObjectPlan>,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    /// Reused per record: all cells are converted before any is appended.
    cells: Vec<Cell>,
}

impl BatchBuilder {
    pub fn new(plan: Arc<ObjectPlan>) -> BatchBuilder {
        let columns = plan
            .schema
            .fields()
            .iter()
            .map(|f| ColumnBuilder::new(f.data_type()))
            .collect();
        BatchBuilder {
            plan,
            columns,
            rows: 0,
            cells: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one REST record (`attributes` and nested relationship objects are ignored: only
    /// the plan's fields are read). Returns the record's version (epoch ms of the cursor field).
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

    /// Appends one Bulk CSV row of a chunk whose header gave `layout`.
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
        self.push_with(
            |i| at(layout.fields.get(i).copied().flatten()),
            at(Some(layout.cursor)),
            layout.deleted.map(|d| at(Some(d))),
            &raw,
        )
    }

    /// Converts and appends one record. `field(i)` is the value of `plan.fields[i]`.
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
                return Err(dead(key, Some(super::describe::DELETED_FIELD), reason));
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
    use serde_json::json;

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

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
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
            convert(Raw::Json(&json!(12000.5)), &DataType::Float64),
            Ok(Cell::Float(12000.5))
        );
        assert_eq!(
            convert(Raw::Json(&json!(42)), &DataType::Float64),
            Ok(Cell::Float(42.0))
        );
        assert_eq!(
            convert(Raw::Json(&json!(7)), &DataType::Int64),
            Ok(Cell::Int(7))
        );
        assert_eq!(
            convert(Raw::Json(&json!(7.0)), &DataType::Int64),
            Ok(Cell::Int(7))
        );
        assert!(convert(Raw::Json(&json!(7.5)), &DataType::Int64).is_err());
        assert_eq!(
            convert(Raw::Json(&json!(true)), &DataType::Boolean),
            Ok(Cell::Bool(true))
        );
        assert!(convert(Raw::Json(&json!("yes")), &DataType::Boolean).is_err());
        assert_eq!(
            convert(Raw::Json(&json!(null)), &DataType::Int64),
            Ok(Cell::Null)
        );
        assert_eq!(convert(Raw::Missing, &DataType::Utf8), Ok(Cell::Null));
        assert_eq!(
            convert(Raw::Json(&json!("A;B")), &DataType::Utf8),
            Ok(Cell::Text("A;B".into()))
        );
        assert_eq!(
            convert(Raw::Json(&json!(3)), &DataType::Utf8),
            Ok(Cell::Text("3".into()))
        );
        assert_eq!(
            convert(Raw::Json(&json!("2024-01-31")), &DataType::Date32),
            Ok(Cell::Date(19_753))
        );
        assert_eq!(
            convert(Raw::Json(&json!("2024-05-01T10:00:00.000+0000")), &ts),
            Ok(Cell::Millis(1_714_557_600_000))
        );
        assert!(convert(Raw::Json(&json!({"city": "SF"})), &DataType::Float64).is_err());
    }

    #[test]
    fn integers_past_int64_fail_without_showing_the_value() {
        let past = crate::values::Problem::IntegerOutOfRange.to_string();
        assert_eq!(
            convert(Raw::Json(&json!(9223372036854775808u64)), &DataType::Int64),
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
}
