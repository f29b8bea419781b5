//! Reads a table with `COPY (SELECT ...) TO STDOUT (FORMAT binary)` into staged batches:
//! the snapshot of CDC and every cursor-mode read.
//!
//! The SELECT casts each column to the wire type its staged type decodes from (int8, float8,
//! text, bool, date, timestamp[tz]), so the server does the conversions and the client only
//! copies fixed-width values and UTF-8 bytes into Arrow builders.

use std::pin::pin;

use arrow::array::{ArrayRef, BooleanArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use futures::channel::mpsc::Sender;
use futures::{SinkExt, TryStreamExt};
use tokio_postgres::CopyOutStream;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::{FromSql, Type};

use super::PostgresSourceError;
use super::catalog::{SourceColumn, TableSpec, ValueKind, quote_ident, source_error};
use super::rows::{BadValue, ColumnValues, Value, binary_i64, pg_micros_to_unix};
use crate::Result;
use crate::load::DeadLetter;
use crate::sources::Extracted;

/// Where each row's `_syncline_version` comes from.
#[derive(Debug, Clone, Copy)]
pub enum Versions {
    /// Every row gets this version (µs): the CDC snapshot's consistent point LSN.
    Constant(i64),
    /// The cursor column (selected last): a timestamp's µs, or an integer as is.
    Cursor,
}

/// What a read saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct CopySummary {
    pub rows: u64,
    /// The largest cursor value read, as the version (µs for timestamps, the integer else).
    pub max_version: Option<i64>,
    /// Rows set aside as dead letters (a value no destination can hold).
    pub dead: u64,
}

/// The `COPY (SELECT ...) TO STDOUT` statement for `spec` with `filter` (a SQL condition,
/// or empty), and the wire types of its fields.
pub fn copy_statement(spec: &TableSpec, filter: &str) -> (String, Vec<Type>) {
    let mut select = Vec::with_capacity(spec.columns.len() + 1);
    let mut types = Vec::with_capacity(spec.columns.len() + 1);
    for column in spec.columns.iter().chain(spec.cursor.iter()) {
        let (expression, wire) = wire_expression(column);
        select.push(expression);
        types.push(wire);
    }
    let conditions: &[String] = if filter.is_empty() {
        &[]
    } else {
        &[filter.to_string()]
    };
    (super::sql::copy_out(spec, &select, conditions), types)
}

/// `COPY (SELECT ... FROM table ORDER BY key) TO STDOUT (FORMAT binary)` of the staged
/// columns (no cursor) in `reconcile::drift`'s key order, and the wire types of its fields.
pub fn ordered_copy_statement(spec: &TableSpec) -> (String, Vec<Type>) {
    let (select, types): (Vec<String>, Vec<Type>) =
        spec.columns.iter().map(wire_expression).unzip();
    (super::sql::list_rows(spec, &select), types)
}

/// The select expression of a column cast to the type its staged type decodes from.
fn wire_expression(column: &SourceColumn) -> (String, Type) {
    let name = quote_ident(&column.name);
    match column.kind {
        ValueKind::Int => (format!("{name}::int8"), Type::INT8),
        ValueKind::Float | ValueKind::Float4 => (format!("{name}::float8"), Type::FLOAT8),
        ValueKind::Bool => (name, Type::BOOL),
        ValueKind::Date => (name, Type::DATE),
        // Never cast between the two: that would apply the session time zone. A timestamp
        // without time zone is staged as if it were UTC.
        ValueKind::Timestamp { with_zone: true } => (name, Type::TIMESTAMPTZ),
        ValueKind::Timestamp { with_zone: false } => (name, Type::TIMESTAMP),
        // A decimal's text has exactly its scale's fraction digits.
        ValueKind::Text | ValueKind::Decimal { .. } => (format!("{name}::text"), Type::TEXT),
    }
}

/// A field's raw bytes, whatever its type: decoding happens in `ColumnValues`.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Reads the rows of a started `COPY ... TO STDOUT (FORMAT binary)` (fields typed `types`)
/// and sends them as batches of `batch_rows` to `sender`. Returns early (with what it read)
/// when the receiver is gone.
pub async fn copy_batches(
    out: CopyOutStream,
    spec: &TableSpec,
    types: &[Type],
    versions: Versions,
    batch_rows: usize,
    sender: &mut Sender<Result<Extracted>>,
) -> Result<CopySummary> {
    let schema = spec.staged_schema();
    let data_columns = spec.columns.len();
    let mut builders: Vec<ColumnValues> = spec
        .columns
        .iter()
        .map(|c| ColumnValues::new(c.kind, batch_rows))
        .collect();
    let mut version_values: Vec<i64> = Vec::with_capacity(batch_rows);
    let mut summary = CopySummary::default();
    let cursor_is_time = matches!(
        spec.cursor.as_ref().map(|c| c.kind),
        Some(ValueKind::Timestamp { .. })
    );

    let mut rows = pin!(BinaryCopyOutStream::new(out, types));
    let mut dead: Vec<DeadLetter> = Vec::new();
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(source_error("read COPY rows"))?
    {
        // Decode the whole row first: a value no destination can hold sets the row aside as
        // a dead letter, and nothing of it reaches the builders.
        let mut raw_values: Vec<Option<Raw<'_>>> = Vec::with_capacity(data_columns);
        for index in 0..data_columns {
            raw_values.push(
                row.try_get(index)
                    .map_err(source_error("decode a COPY field"))?,
            );
        }
        let mut values: Vec<Value<'_>> = Vec::with_capacity(data_columns);
        let mut refused = None;
        for (index, raw) in raw_values.iter().enumerate() {
            let kind = spec.columns[index].kind;
            match ColumnValues::decode_binary(kind, raw.as_ref().map(|raw| raw.0)) {
                Ok(value) => values.push(value),
                Err(bad) => {
                    refused.get_or_insert((index, bad));
                    values.push(Value::Null);
                }
            }
        }
        if let Some((index, bad)) = refused {
            dead.push(dead_letter(spec, &values, index, bad));
            summary.dead += 1;
            continue;
        }
        for (builder, value) in builders.iter_mut().zip(values.drain(..)) {
            builder.append(value);
        }
        let version = match versions {
            Versions::Constant(version) => version,
            Versions::Cursor => {
                let value: Option<Raw<'_>> = row
                    .try_get(data_columns)
                    .map_err(source_error("decode the cursor field"))?;
                match value {
                    // A row without a cursor value (only a full load reads it) is version 0.
                    None => 0,
                    Some(raw) => {
                        let value = binary_i64(raw.0).map_err(|bad| {
                            let name = spec.cursor.as_ref().map_or("", |c| c.name.as_str());
                            bad_value(spec, name, bad.0)
                        })?;
                        let version = if cursor_is_time {
                            pg_micros_to_unix(value)
                        } else {
                            value
                        };
                        summary.max_version = summary.max_version.max(Some(version));
                        version
                    }
                }
            }
        };
        version_values.push(version);
        summary.rows += 1;
        if version_values.len() >= batch_rows || dead.len() >= batch_rows {
            if !dead.is_empty()
                && sender
                    .send(Ok(Extracted::DeadLetters(std::mem::take(&mut dead))))
                    .await
                    .is_err()
            {
                return Ok(summary);
            }
            if !version_values.is_empty() {
                let batch = finish_batch(&schema, &mut builders, &mut version_values)?;
                if sender.send(Ok(Extracted::Batch(batch))).await.is_err() {
                    return Ok(summary);
                }
            }
        }
    }
    if !dead.is_empty() {
        let _ = sender.send(Ok(Extracted::DeadLetters(dead))).await;
    }
    if !version_values.is_empty() {
        let batch = finish_batch(&schema, &mut builders, &mut version_values)?;
        let _ = sender.send(Ok(Extracted::Batch(batch))).await;
    }
    Ok(summary)
}

/// A row set aside because the value of column `index` cannot be staged: the record is the
/// row's decoded values as JSON (the refused one as NULL), the reason names the column.
pub fn dead_letter(
    spec: &TableSpec,
    values: &[Value<'_>],
    index: usize,
    bad: BadValue,
) -> DeadLetter {
    let key = match values.first() {
        Some(Value::Int(v)) => v.to_string(),
        Some(Value::Text(v)) => (*v).to_string(),
        _ => String::new(),
    };
    let record: serde_json::Map<String, serde_json::Value> = spec
        .columns
        .iter()
        .zip(values)
        .map(|(column, value)| (column.name.clone(), value.to_json()))
        .collect();
    DeadLetter {
        key,
        field: Some(spec.columns[index].name.clone()),
        reason: format!(
            "table {}.{}, column `{}`: {}",
            spec.schema, spec.name, spec.columns[index].name, bad.0
        ),
        raw: serde_json::Value::Object(record).to_string(),
    }
}

fn finish_batch(
    schema: &arrow::datatypes::SchemaRef,
    builders: &mut [ColumnValues],
    versions: &mut Vec<i64>,
) -> Result<RecordBatch> {
    let rows = versions.len();
    let mut columns: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
    columns.push(std::sync::Arc::new(
        TimestampMicrosecondArray::from(std::mem::take(versions)).with_timezone("UTC"),
    ));
    columns.push(std::sync::Arc::new(BooleanArray::from(vec![false; rows])));
    Ok(RecordBatch::try_new(schema.clone(), columns).map_err(PostgresSourceError::Batch)?)
}

fn bad_value(spec: &TableSpec, column: &str, why: &'static str) -> PostgresSourceError {
    PostgresSourceError::BadValue {
        reading: "source",
        schema: spec.schema.clone(),
        table: spec.name.clone(),
        column: column.to_string(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::postgres::catalog::SourceColumn;

    #[test]
    fn copy_statement_casts_to_the_decoded_wire_types() {
        let column = |name: &str, kind| SourceColumn {
            name: name.into(),
            kind,
            sql_type: String::new(),
        };
        let spec = TableSpec {
            schema: "sales".into(),
            name: "Contacts".into(),
            columns: vec![
                column("id", ValueKind::Int),
                column("amount", ValueKind::Text),
                column("seen", ValueKind::Timestamp { with_zone: false }),
            ],
            cursor: Some(column(
                "updated_at",
                ValueKind::Timestamp { with_zone: true },
            )),
        };
        let (statement, types) = copy_statement(&spec, "\"updated_at\" >= now()");
        assert_eq!(
            statement,
            "COPY (SELECT \"id\"::int8, \"amount\"::text, \"seen\", \"updated_at\" FROM \
             \"sales\".\"Contacts\" WHERE \"updated_at\" >= now()) TO STDOUT (FORMAT binary)"
        );
        assert_eq!(
            types,
            [Type::INT8, Type::TEXT, Type::TIMESTAMP, Type::TIMESTAMPTZ]
        );
    }
}
