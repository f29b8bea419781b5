//! HubSpot records to Arrow: the properties API drives the schema, values arrive as strings
//! and are converted as the page is read (see [`super::page`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, NaiveDate};
use serde_json::value::RawValue;

use crate::Result;
use crate::load::DeadLetter;
use crate::schema::{deleted_field, is_system_column, timestamp_type, version_field};
use crate::sources::cells::{Cell, ColumnBuilder};
use crate::sources::hubspot::HubspotError;
use crate::sources::hubspot::page::Head;
use crate::sources::json::Wire;

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

/// Converts a value's text (not empty) to a column type other than text; `Err` carries the
/// reason. Numbers may carry thousands separators; surrounding blanks are ignored.
fn convert(text: &str, data_type: &DataType) -> std::result::Result<Cell, String> {
    match data_type {
        DataType::Utf8 => Ok(Cell::Text(text.to_string())),
        DataType::Int64 => {
            let digits = without_commas(text.trim());
            match digits.parse() {
                Ok(value) => Ok(Cell::Int(value)),
                Err(_) if crate::values::is_integer(&digits) => {
                    Err(crate::values::Problem::IntegerOutOfRange.to_string())
                }
                Err(_) => Err(format!("{text:?} is not an integer")),
            }
        }
        DataType::Float64 => {
            let parsed: f64 = without_commas(text.trim())
                .parse()
                .map_err(|_| format!("{text:?} is not a number"))?;
            if parsed.is_finite() {
                Ok(Cell::Float(parsed))
            } else {
                Err(format!("{text:?} is not a finite number"))
            }
        }
        DataType::Boolean => {
            let word = text.trim();
            if word.eq_ignore_ascii_case("true") {
                Ok(Cell::Bool(true))
            } else if word.eq_ignore_ascii_case("false") {
                Ok(Cell::Bool(false))
            } else {
                Err(format!("{text:?} is not true or false"))
            }
        }
        DataType::Date32 => parse_date(text)
            .map(Cell::Date)
            .ok_or_else(|| format!("{text:?} is not a date (YYYY-MM-DD or epoch ms)")),
        DataType::Timestamp(..) => parse_millis(text)
            .map(Cell::Millis)
            .ok_or_else(|| format!("{text:?} is not a datetime (ISO 8601 or epoch ms)")),
        other => Err(format!("unsupported column type {other}")),
    }
}

/// Copies only when there is a separator to drop.
fn without_commas(text: &str) -> Cow<'_, str> {
    if text.contains(',') {
        Cow::Owned(text.replace(',', ""))
    } else {
        Cow::Borrowed(text)
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

/// What a record's property slot holds after reading.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Null,
    /// The column's cell in [`Slots::cells`].
    Value,
    /// The value did not convert: the reason.
    Bad(String),
}

/// The converted properties of the record being read, one slot per data column (the staged
/// schema without `id` and the system columns). The paging reader fills them as it meets
/// each property, so no record is held as a JSON tree; the cells are reused from record to
/// record, text keeping its allocation.
pub struct Slots {
    names: Vec<String>,
    types: Vec<DataType>,
    index: HashMap<String, usize>,
    cells: Vec<Cell>,
    state: Vec<Slot>,
    /// The column of the n-th property of the last record: HubSpot sends every record's
    /// properties in one order, so a name is mostly matched by one comparison, not a hash.
    order: Vec<usize>,
}

impl Slots {
    fn new(fields: &[Arc<Field>]) -> Slots {
        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(column, name)| (name.clone(), column))
            .collect();
        Slots {
            types: fields.iter().map(|f| f.data_type().clone()).collect(),
            index,
            cells: vec![Cell::Null; names.len()],
            state: vec![Slot::Null; names.len()],
            order: Vec::new(),
            names,
        }
    }

    /// Every slot null again.
    pub(super) fn clear(&mut self) {
        self.state.fill(Slot::Null);
    }

    /// The column of property `name`, the `position`-th of its record; `None` when the
    /// staged schema does not hold it.
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

    /// Converts `value` into `column`'s slot; a later value for the same name replaces it.
    pub(super) fn set(&mut self, column: usize, value: &Wire<'_>) {
        let data_type = &self.types[column];
        self.state[column] = match value.text() {
            None => Slot::Null,
            Some(text) if text.is_empty() && *data_type != DataType::Utf8 => Slot::Null,
            Some(text) => match (&mut self.cells[column], data_type) {
                (Cell::Text(cell), DataType::Utf8) => {
                    cell.clear();
                    cell.push_str(&text);
                    Slot::Value
                }
                (cell, _) => match convert(&text, data_type) {
                    Ok(converted) => {
                        *cell = converted;
                        Slot::Value
                    }
                    Err(reason) => Slot::Bad(reason),
                },
            },
        };
    }
}

/// Accumulates converted records into record batches of the staged schema.
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    slots: Slots,
}

impl BatchBuilder {
    pub fn new(schema: SchemaRef) -> BatchBuilder {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnBuilder::new(f.data_type()))
            .collect();
        let fields = schema.fields();
        let slots = Slots::new(&fields[1..fields.len() - 2]);
        BatchBuilder {
            schema,
            columns,
            rows: 0,
            slots,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Reads one record (a `results[]` entry of list, search or batch read), its properties
    /// into this builder's slots: [`BatchBuilder::append`] it before reading the next. JSON
    /// that does not parse is a dead letter.
    pub fn read<'a>(&mut self, raw: &'a RawValue) -> std::result::Result<Head<'a>, DeadLetter> {
        Head::read(raw, Some(&mut self.slots)).map_err(|err| DeadLetter {
            key: String::new(),
            field: None,
            reason: format!("record is not readable JSON: {err}"),
            raw: raw.get().to_string(),
        })
    }

    /// Appends the record last read. A record without a readable id or version, or with a
    /// value that does not convert, is returned as a dead letter and not appended.
    pub fn append(&mut self, head: &Head<'_>) -> std::result::Result<(), DeadLetter> {
        let dead = |key: &str, field: &str, reason: String| DeadLetter {
            key: key.to_string(),
            field: Some(field.to_string()),
            reason,
            raw: head.raw.to_string(),
        };
        let Some(id_text) = head.id_text() else {
            return Err(dead("", KEY, "record has no id".into()));
        };
        let Ok(id) = id_text.parse::<i64>() else {
            let reason = if crate::values::is_integer(id_text) {
                format!("id: {}", crate::values::Problem::IntegerOutOfRange)
            } else {
                format!("id {id_text:?} is not an integer")
            };
            return Err(dead(id_text, KEY, reason));
        };
        let Some(version) = head.version_text().and_then(parse_millis) else {
            return Err(dead(
                id_text,
                "updatedAt",
                "record has no readable updatedAt/archivedAt".into(),
            ));
        };
        let slots = &self.slots;
        if let Some((column, Slot::Bad(reason))) = slots
            .state
            .iter()
            .enumerate()
            .find(|(_, slot)| matches!(slot, Slot::Bad(_)))
        {
            let name = &slots.names[column];
            return Err(dead(id_text, name, format!("property {name}: {reason}")));
        }
        let (first, rest) = self.columns.split_first_mut().expect("the id column");
        first.append(Cell::Int(id));
        let (data, system) = rest.split_at_mut(slots.names.len());
        for ((builder, slot), cell) in data.iter_mut().zip(&slots.state).zip(&slots.cells) {
            match slot {
                Slot::Value => builder.append_ref(cell),
                _ => builder.append(Cell::Null),
            }
        }
        system[0].append(Cell::Millis(version));
        system[1].append(Cell::Bool(head.archived));
        self.rows += 1;
        Ok(())
    }

    /// Reads and appends one record.
    pub fn push(&mut self, raw: &RawValue) -> std::result::Result<(), DeadLetter> {
        let head = self.read(raw)?;
        self.append(&head)
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
    use serde_json::{Value, json};

    fn raw(record: Value) -> Box<RawValue> {
        RawValue::from_string(record.to_string()).unwrap()
    }

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
        builder.push(&raw(json!({"id": "7", "updatedAt": "2024-01-02T03:04:05.678Z", "archived": false,
            "properties": {"email": "a@b.com", "score": "12.5", "is_customer": "true", "birth_date": "2024-01-31",
                           "last_contacted": "1704067200000", "hs_object_id": "7"}}))).unwrap();
        builder.push(&raw(json!({"id": "8", "updatedAt": "2024-01-02T00:00:00Z", "archivedAt": "2024-02-01T00:00:00+00:00", "archived": true,
            "properties": {"email": null, "score": "", "is_customer": "false", "birth_date": "1572480000000"}}))).unwrap();
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
        assert_eq!(convert("99999999999999999999", &DataType::Int64), Err(past));
        assert_eq!(
            convert("-9223372036854775808", &DataType::Int64),
            Ok(Cell::Int(i64::MIN))
        );
        let mut builder = BatchBuilder::new(staged_schema(&props()));
        let letter = builder
            .push(&raw(
                json!({"id": "9223372036854775808", "updatedAt": "2024-01-02T00:00:00Z"}),
            ))
            .unwrap_err();
        assert_eq!(letter.field.as_deref(), Some("id"));
        assert!(!letter.reason.contains("922337"), "{}", letter.reason);
    }

    #[test]
    fn unparsable_value_is_a_dead_letter_naming_the_property() {
        let mut builder = BatchBuilder::new(staged_schema(&props()));
        let err = builder
            .push(&raw(json!({"id": "9", "updatedAt": "2024-01-02T00:00:00Z", "properties": {"score": "lots"}})))
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

    /// The reading before typed deserialisation (a `serde_json::Value` per record), kept
    /// verbatim as the oracle the typed reading must agree with.
    mod reference {
        use super::super::*;
        use serde_json::Value;

        fn convert(
            value: Option<&Value>,
            data_type: &DataType,
        ) -> std::result::Result<Cell, String> {
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

        pub struct ValueBuilder {
            schema: SchemaRef,
            columns: Vec<ColumnBuilder>,
            cells: Vec<Cell>,
        }

        impl ValueBuilder {
            pub fn new(schema: SchemaRef) -> ValueBuilder {
                let columns = schema
                    .fields()
                    .iter()
                    .map(|f| ColumnBuilder::new(f.data_type()))
                    .collect();
                ValueBuilder {
                    schema,
                    columns,
                    cells: Vec::new(),
                }
            }

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
                let Some(version) = version_text.and_then(Value::as_str).and_then(parse_millis)
                else {
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
                Ok(())
            }

            pub fn finish(&mut self) -> RecordBatch {
                let arrays: Vec<ArrayRef> =
                    self.columns.iter_mut().map(ColumnBuilder::finish).collect();
                RecordBatch::try_new(self.schema.clone(), arrays).unwrap()
            }
        }
    }

    /// Reads a page's text both ways, the typed reading through the page split the
    /// connector uses, and asserts they agree record by record: the same rows, the same dead
    /// letters (key, field, reason; the raw text is the record as it came).
    fn assert_readings_agree(page: &str) {
        use crate::sources::hubspot::page::PageBody;
        let schema = staged_schema(&props());
        let reference_page: Value = serde_json::from_str(page).expect("the page parses");
        let records = reference_page["results"].as_array().expect("results");
        let body = PageBody::new(
            crate::sources::http::Call::new(reqwest::Method::GET, "/crm/v3/objects/contacts"),
            bytes::Bytes::copy_from_slice(page.as_bytes()),
        );
        let typed_page = body.parse("contacts").expect("the typed page parses");
        assert_eq!(typed_page.results.len(), records.len());
        let mut typed = BatchBuilder::new(schema.clone());
        let mut oracle = reference::ValueBuilder::new(schema);
        for (raw, record) in typed_page.results.iter().zip(records) {
            let got = typed.push(raw);
            let want = oracle.push(record);
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(want)) => {
                    assert_eq!(
                        (&got.key, &got.field, &got.reason),
                        (&want.key, &want.field, &want.reason),
                        "{}",
                        raw.get()
                    );
                    let got_raw: Value = serde_json::from_str(&got.raw).unwrap();
                    assert_eq!(&got_raw, record);
                }
                (got, want) => panic!("{}: typed {got:?}, reference {want:?}", raw.get()),
            }
        }
        assert_eq!(typed.finish().unwrap(), oracle.finish(), "{page}");
    }

    #[test]
    fn typed_reading_agrees_with_value_reading_on_hand_written_records() {
        let stamp = r#""updatedAt":"2024-01-02T00:00:00Z""#;
        let records = [
            // Repeated keys: the last wins, a repeated `properties` replaces the first.
            format!(
                r#"{{"id":"1","id":"2",{stamp},"properties":{{"score":"lots"}},"properties":{{"score":"1","score":"2,5"}}}}"#
            ),
            format!(r#"{{"id":"3",{stamp},"properties":{{"score":"lots"}},"properties":null}}"#),
            // Not objects.
            "5".into(),
            "null".into(),
            "[1,{\"id\":\"2\"}]".into(),
            "\"x\"".into(),
            // Escaped names and values.
            format!(
                r#"{{"i\u0064":"4",{stamp},"properties":{{"em\u0061il":"\u00e9\ud83d\ude00\n\"","sc\/ore":"1"}}}}"#
            ),
            // Properties of every JSON type.
            format!(
                r#"{{"id":6,{stamp},"properties":{{"email":12.50,"score":1e3,"is_customer":true,"hs_object_id":18446744073709551615,"birth_date":[1],"last_contacted":{{"a":null}}}}}}"#
            ),
            format!(
                r#"{{"id":7,{stamp},"properties":{{"email":{{"nested":["x",1.5,null]}},"score":-0.0,"hs_object_id":-9223372036854775808}}}}"#
            ),
            // Archived without a string archivedAt does not fall back to updatedAt.
            format!(r#"{{"id":"8",{stamp},"archived":true,"archivedAt":null}}"#),
            format!(
                r#"{{"id":"9",{stamp},"archived":"true","archivedAt":"2024-02-01T00:00:00Z"}}"#
            ),
            format!(r#"{{"id":"10","archived":true,"archivedAt":"1704067200000","updatedAt":5}}"#),
            format!(r#"{{"id":"11",{stamp},"properties":"nope"}}"#),
            format!(r#"{{"id":1.0,{stamp}}}"#),
            format!(r#"{{"id":1e20,{stamp}}}"#),
            format!(r#"{{"id":"  12",{stamp}}}"#),
            format!(
                r#"{{"id":"13",{stamp},"properties":{{"score":" 1,234.5 ","hs_object_id":"1,000","is_customer":" TRUE ","birth_date":"","email":""}}}}"#
            ),
        ];
        let page = format!(
            r#"{{"results":[{}],"paging":{{"next":{{"after":"14"}}}},"total":14}}"#,
            records.join(",")
        );
        assert_readings_agree(&page);
        let typed = PageBody::new(
            crate::sources::http::Call::new(reqwest::Method::GET, "/x"),
            bytes::Bytes::from(page.clone()),
        );
        let parsed = typed.parse("contacts").unwrap();
        assert_eq!(parsed.next_after.as_deref(), Some("14"));
        assert_eq!(parsed.total, Some(14));
    }

    use crate::sources::hubspot::page::PageBody;
    use proptest::prelude::*;

    fn text_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,12}",
            any::<String>(),
            Just(String::new()),
            "[-+ ]?[0-9,]{0,22} ?",
            "-?[0-9]{1,4}(\\.[0-9]{0,4})?(e-?[0-9]{1,3})?",
            Just("inf".to_string()),
            Just("NaN".to_string()),
            Just("1e400".to_string()),
            "(?i)(true|false|yes)",
            "[0-9]{4}-[0-1][0-9]-[0-3][0-9]",
            "20[0-9]{2}-0[1-9]-[0-2][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,3})?(Z|[+-][0-1][0-9]:[0-5][0-9])",
            "-?[0-9]{1,19}",
            Just("\u{0}\\\"\u{2028}\t".to_string()),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text_value().prop_map(Value::String),
            text_value().prop_map(Value::String),
            text_value().prop_map(Value::String),
            Just(json!(["a", 1, null])),
            Just(json!({"nested": {"x": "\u{e9}"}})),
        ]
    }

    fn property_name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => proptest::sample::select(vec![
                "email", "score", "is_customer", "birth_date", "last_contacted", "hs_object_id",
            ])
            .prop_map(str::to_string),
            1 => proptest::sample::select(vec!["id", "_syncline_version", "unknown_new", "\u{e9}moji\u{1f600}", ""])
                .prop_map(str::to_string),
        ]
    }

    fn stamp() -> impl Strategy<Value = Value> {
        prop_oneof![
            "20[0-9]{2}-0[1-9]-[0-2][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,3})?Z"
                .prop_map(Value::String),
            "[0-9]{13}".prop_map(Value::String),
            json_value(),
        ]
    }

    fn record() -> impl Strategy<Value = Value> {
        let id = prop_oneof![
            "[0-9]{1,20}".prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            json_value(),
        ];
        let properties = prop_oneof![
            4 => proptest::collection::btree_map(property_name(), json_value(), 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => json_value(),
        ];
        (
            proptest::option::of(id),
            proptest::option::of(stamp()),
            proptest::option::of(stamp()),
            proptest::option::of(prop_oneof![
                any::<bool>().prop_map(Value::Bool),
                json_value()
            ]),
            proptest::option::of(properties),
            proptest::option::of(json_value()),
        )
            .prop_map(|(id, updated, archived_at, archived, properties, extra)| {
                let mut record = serde_json::Map::new();
                for (key, value) in [
                    ("id", id),
                    ("updatedAt", updated),
                    ("archivedAt", archived_at),
                    ("archived", archived),
                    ("properties", properties),
                    ("createdAt", extra),
                ] {
                    if let Some(value) = value {
                        record.insert(key.to_string(), value);
                    }
                }
                Value::Object(record)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The typed reading of hostile records (unicode, escapes, huge numbers, nulls,
        /// missing and extra properties, values of every JSON type) agrees with the `Value`
        /// reading it replaced, written compact, pretty or with every string escaped.
        #[test]
        fn typed_reading_agrees_with_value_reading(
            records in proptest::collection::vec(record(), 1..6),
            form in 0..3u8,
        ) {
            let page = json!({"results": records, "paging": {"next": {"after": "7"}}});
            let text = match form {
                0 => page.to_string(),
                1 => serde_json::to_string_pretty(&page).unwrap(),
                _ => crate::sources::json::escaped(&page.to_string()),
            };
            assert_readings_agree(&text);
        }
    }
}
