//! HubSpot records to Arrow: the properties API drives the schema, values arrive as strings.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, NaiveDate};
use serde_json::Value;

use crate::Result;
use crate::load::DeadLetter;
use crate::schema::{deleted_field, is_system_column, timestamp_type, version_field};
use crate::sources::cells::{Cell, ColumnBuilder};
use crate::sources::hubspot::HubspotError;

/// The key column of every HubSpot stream: the record id.
pub const KEY: &str = "id";

/// A property from `GET /crm/v3/properties/{objectType}`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Property {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The Arrow type of a HubSpot property type (crm-apis.md B4).
pub fn arrow_type(property: &Property) -> DataType {
    match property.kind.as_str() {
        // Ids are exact integers; a float would lose digits past 2^53.
        "number" if property.name == "hs_object_id" => DataType::Int64,
        "number" => DataType::Float64,
        "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "datetime" => timestamp_type(),
        // string, enumeration, phone_number, json, object_coordinates and anything new.
        _ => DataType::Utf8,
    }
}

/// The staged schema: `id`, the properties sorted by name, then the system columns.
pub fn staged_schema(properties: &[Property]) -> SchemaRef {
    let mut props: Vec<&Property> = properties
        .iter()
        .filter(|p| p.name != KEY && !is_system_column(&p.name))
        .collect();
    props.sort_by(|a, b| a.name.cmp(&b.name));
    props.dedup_by(|a, b| a.name == b.name);
    let mut fields = vec![Field::new(KEY, DataType::Int64, false)];
    fields.extend(
        props
            .iter()
            .map(|p| Field::new(&p.name, arrow_type(p), true)),
    );
    fields.push(version_field());
    fields.push(deleted_field());
    Arc::new(Schema::new(fields))
}

/// Converts a wire value to the column's type; `Err` carries the reason.
fn convert(value: Option<&Value>, data_type: &DataType) -> std::result::Result<Cell, String> {
    let text = match value {
        None | Some(Value::Null) => return Ok(Cell::Null),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(other) => other.to_string(),
    };
    if text.is_empty() && *data_type != DataType::Utf8 {
        return Ok(Cell::Null);
    }
    match data_type {
        DataType::Utf8 => Ok(Cell::Text(text)),
        DataType::Int64 => {
            let digits = text.trim().replace(',', "");
            match digits.parse() {
                Ok(value) => Ok(Cell::Int(value)),
                Err(_) if crate::values::is_integer(&digits) => {
                    Err(crate::values::Problem::IntegerOutOfRange.to_string())
                }
                Err(_) => Err(format!("{text:?} is not an integer")),
            }
        }
        DataType::Float64 => {
            let parsed: f64 = text
                .trim()
                .replace(',', "")
                .parse()
                .map_err(|_| format!("{text:?} is not a number"))?;
            if parsed.is_finite() {
                Ok(Cell::Float(parsed))
            } else {
                Err(format!("{text:?} is not a finite number"))
            }
        }
        DataType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Cell::Bool(true)),
            "false" => Ok(Cell::Bool(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        DataType::Date32 => parse_date(&text)
            .map(Cell::Date)
            .ok_or_else(|| format!("{text:?} is not a date (YYYY-MM-DD or epoch ms)")),
        DataType::Timestamp(..) => parse_millis(&text)
            .map(Cell::Millis)
            .ok_or_else(|| format!("{text:?} is not a datetime (ISO 8601 or epoch ms)")),
        other => Err(format!("unsupported column type {other}")),
    }
}

/// ISO 8601 with an offset or `Z`, or an epoch-milliseconds string (both occur, B8.6).
pub fn parse_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return text.parse().ok();
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn parse_date(text: &str) -> Option<i32> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    if let Ok(date) = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        return i32::try_from((date - epoch).num_days()).ok();
    }
    let millis: i64 = text.trim().parse().ok()?;
    i32::try_from(millis.div_euclid(86_400_000)).ok()
}

/// Accumulates converted records into record batches of the staged schema.
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    /// Reused per record to convert all cells before appending any.
    cells: Vec<Cell>,
}

impl BatchBuilder {
    pub fn new(schema: SchemaRef) -> BatchBuilder {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnBuilder::new(f.data_type()))
            .collect();
        BatchBuilder {
            schema,
            columns,
            rows: 0,
            cells: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Converts one record (the `results[]` object of list/search). A record with a value that
    /// does not convert is returned as a dead letter and not appended.
    pub fn push(&mut self, record: &Value) -> std::result::Result<(), DeadLetter> {
        let dead = |key: String, field: Option<&str>, reason: String| DeadLetter {
            key,
            field: field.map(str::to_string),
            reason,
            raw: record.to_string(),
        };
        let id_text = record.get("id").and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let Some(id_text) = id_text else {
            return Err(dead(String::new(), Some(KEY), "record has no id".into()));
        };
        let Ok(id) = id_text.parse::<i64>() else {
            let reason = if crate::values::is_integer(&id_text) {
                format!("id: {}", crate::values::Problem::IntegerOutOfRange)
            } else {
                format!("id {id_text:?} is not an integer")
            };
            return Err(dead(id_text.clone(), Some(KEY), reason));
        };
        let archived = record
            .get("archived")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let version_text = if archived {
            record.get("archivedAt").or_else(|| record.get("updatedAt"))
        } else {
            record.get("updatedAt")
        };
        let Some(version) = version_text.and_then(Value::as_str).and_then(parse_millis) else {
            return Err(dead(
                id_text,
                Some("updatedAt"),
                "record has no readable updatedAt/archivedAt".into(),
            ));
        };
        let properties = record.get("properties").and_then(Value::as_object);
        self.cells.clear();
        self.cells.push(Cell::Int(id));
        let data_fields = &self.schema.fields()[1..self.schema.fields().len() - 2];
        for field in data_fields {
            let value = properties.and_then(|p| p.get(field.name()));
            match convert(value, field.data_type()) {
                Ok(cell) => self.cells.push(cell),
                Err(reason) => {
                    return Err(dead(
                        id_text,
                        Some(field.name()),
                        format!("property {}: {reason}", field.name()),
                    ));
                }
            }
        }
        self.cells.push(Cell::Millis(version));
        self.cells.push(Cell::Bool(archived));
        for (builder, cell) in self.columns.iter_mut().zip(self.cells.drain(..)) {
            builder.append(cell);
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows pushed so far as a batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| HubspotError::Batch(e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::pretty::pretty_format_batches;
    use serde_json::json;

    fn props() -> Vec<Property> {
        [
            ("email", "string"),
            ("score", "number"),
            ("is_customer", "bool"),
            ("birth_date", "date"),
            ("last_contacted", "datetime"),
            ("hs_object_id", "number"),
        ]
        .iter()
        .map(|(n, k)| Property {
            name: n.to_string(),
            kind: k.to_string(),
        })
        .collect()
    }

    #[test]
    fn records_become_typed_rows() {
        let mut builder = BatchBuilder::new(staged_schema(&props()));
        builder.push(&json!({"id": "7", "updatedAt": "2024-01-02T03:04:05.678Z", "archived": false,
            "properties": {"email": "a@b.com", "score": "12.5", "is_customer": "true", "birth_date": "2024-01-31",
                           "last_contacted": "1704067200000", "hs_object_id": "7"}})).unwrap();
        builder.push(&json!({"id": "8", "updatedAt": "2024-01-02T00:00:00Z", "archivedAt": "2024-02-01T00:00:00+00:00", "archived": true,
            "properties": {"email": null, "score": "", "is_customer": "false", "birth_date": "1572480000000"}})).unwrap();
        let batch = builder.finish().unwrap();
        insta::assert_snapshot!(pretty_format_batches(&[batch]).unwrap().to_string(), @r"
        +----+------------+---------+--------------+-------------+----------------------+-------+--------------------------+-------------------+
        | id | birth_date | email   | hs_object_id | is_customer | last_contacted       | score | _syncline_version        | _syncline_deleted |
        +----+------------+---------+--------------+-------------+----------------------+-------+--------------------------+-------------------+
        | 7  | 2024-01-31 | a@b.com | 7            | true        | 2024-01-01T00:00:00Z | 12.5  | 2024-01-02T03:04:05.678Z | false             |
        | 8  | 2019-10-31 |         |              | false       |                      |       | 2024-02-01T00:00:00Z     | true              |
        +----+------------+---------+--------------+-------------+----------------------+-------+--------------------------+-------------------+
        ");
    }

    #[test]
    fn integers_past_int64_fail_without_showing_the_value() {
        let past = crate::values::Problem::IntegerOutOfRange.to_string();
        assert_eq!(
            convert(Some(&json!("99999999999999999999")), &DataType::Int64),
            Err(past)
        );
        assert_eq!(
            convert(Some(&json!("-9223372036854775808")), &DataType::Int64),
            Ok(Cell::Int(i64::MIN))
        );
        let mut builder = BatchBuilder::new(staged_schema(&props()));
        let letter = builder
            .push(&json!({"id": "9223372036854775808", "updatedAt": "2024-01-02T00:00:00Z"}))
            .unwrap_err();
        assert_eq!(letter.field.as_deref(), Some("id"));
        assert!(!letter.reason.contains("922337"), "{}", letter.reason);
    }

    #[test]
    fn unparsable_value_is_a_dead_letter_naming_the_property() {
        let mut builder = BatchBuilder::new(staged_schema(&props()));
        let err = builder
            .push(&json!({"id": "9", "updatedAt": "2024-01-02T00:00:00Z", "properties": {"score": "lots"}}))
            .unwrap_err();
        assert_eq!(err.key, "9");
        assert_eq!(err.field.as_deref(), Some("score"));
        assert!(
            err.reason.contains("\"lots\" is not a number"),
            "{}",
            err.reason
        );
        assert!(err.raw.contains("lots"));
        assert_eq!(builder.rows(), 0);
    }

    #[test]
    fn both_datetime_forms_parse() {
        assert_eq!(
            parse_millis("2019-12-07T16:50:06.678Z"),
            Some(1575737406678)
        );
        assert_eq!(
            parse_millis("2019-12-07T17:50:06.678+01:00"),
            Some(1575737406678)
        );
        assert_eq!(parse_millis("1575737406678"), Some(1575737406678));
        assert_eq!(parse_millis("yesterday"), None);
    }
}
