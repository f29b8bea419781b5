//! What a source table looks like: its columns read from the catalog, the staged type of
//! each, the key and the cursor column, and the staged schema built from them.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use tokio_postgres::Client;

use super::PostgresSourceError;
use crate::Result;
use crate::config::PostgresTableConfig;
use crate::schema::{DELETED_COLUMN, VERSION_COLUMN, deleted_field, is_system_column};

/// How a source column is staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// int2, int4, int8, oid → Int64.
    Int,
    /// float8 → Float64.
    Float,
    /// float4 → Float64: the float4's exact value widened, as binary COPY (which casts to
    /// float8) reads it. Its text form, the shortest that reads back as the same float4, is
    /// parsed as a float4 and widened too, so a snapshot and a streamed change of one value
    /// stage the same number (and a content-hash reconcile sees no difference).
    Float4,
    Bool,
    /// date → Date32.
    Date,
    /// timestamp and timestamptz → Timestamp(µs, UTC); a timestamp without time zone is
    /// read as UTC.
    Timestamp {
        with_zone: bool,
    },
    /// `numeric(p, s)` with at most 38 digits → Decimal128(p, s), exact. Read in its text
    /// form, which has exactly `s` fraction digits.
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// Everything else (text, varchar, unconstrained numeric, uuid, json, enums, ...) in its
    /// text form.
    Text,
}

impl ValueKind {
    /// The staged type for a column of the catalog type `typname` (`pg_type.typname`).
    pub fn of(typname: &str) -> ValueKind {
        match typname {
            "int2" | "int4" | "int8" | "oid" => ValueKind::Int,
            "float4" => ValueKind::Float4,
            "float8" => ValueKind::Float,
            "bool" => ValueKind::Bool,
            "date" => ValueKind::Date,
            "timestamp" => ValueKind::Timestamp { with_zone: false },
            "timestamptz" => ValueKind::Timestamp { with_zone: true },
            // numeric without (or beyond) a Decimal128's digits stays text: it is exact there,
            // and Float64 would round it.
            _ => ValueKind::Text,
        }
    }

    /// The staged type for a column of the catalog type `typname` declared as `sql_type`
    /// (`format_type`): a `numeric(p, s)` of at most 38 digits is a decimal. Unconstrained
    /// `numeric` stays text: its values may have any scale, row by row, which no one
    /// Decimal128 scale holds without rounding some of them.
    pub fn of_column(typname: &str, sql_type: &str) -> ValueKind {
        match (typname, crate::config::decimal_cast(sql_type)) {
            ("numeric", Some(Ok((precision, scale)))) if sql_type.contains('(') => {
                ValueKind::Decimal { precision, scale }
            }
            _ => ValueKind::of(typname),
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            ValueKind::Int => DataType::Int64,
            ValueKind::Float | ValueKind::Float4 => DataType::Float64,
            ValueKind::Bool => DataType::Boolean,
            ValueKind::Date => DataType::Date32,
            ValueKind::Timestamp { .. } => micros_type(),
            ValueKind::Decimal { precision, scale } => DataType::Decimal128(precision, scale as i8),
            ValueKind::Text => DataType::Utf8,
        }
    }
}

/// Timestamp(µs, UTC): staged timestamps and CDC versions.
pub fn micros_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// One column of the source table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    pub name: String,
    pub kind: ValueKind,
    /// `format_type` of the column, e.g. `character varying(80)`; used in casts.
    pub sql_type: String,
}

/// A source table as one extraction sees it.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub schema: String,
    pub name: String,
    /// The key column first, then the data columns, in table order.
    pub columns: Vec<SourceColumn>,
    /// Cursor mode: the cursor column (it may also be one of `columns`).
    pub cursor: Option<SourceColumn>,
}

impl TableSpec {
    pub fn key(&self) -> &SourceColumn {
        &self.columns[0]
    }

    /// `"schema"."table"`.
    pub fn qualified(&self) -> String {
        crate::sql::qualified(&self.schema, &self.name)
    }

    /// The staged schema: key, data columns, `_syncline_version` (µs), `_syncline_deleted`.
    pub fn staged_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| Field::new(&column.name, column.kind.data_type(), i != 0))
            .collect();
        fields.push(Field::new(VERSION_COLUMN, micros_type(), false));
        fields.push(deleted_field());
        Arc::new(Schema::new(fields))
    }

    pub fn index_of(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == column)
    }

    /// Reads the table from the catalog and applies the stream's settings. Errors name the
    /// setting to fix.
    pub async fn read(
        client: &Client,
        stream: &str,
        settings: &PostgresTableConfig,
        wants_cursor: bool,
    ) -> Result<TableSpec> {
        let (schema, name) = match settings.table.as_deref().map(|t| t.split_once('.')) {
            Some(Some((schema, name))) => (schema.to_string(), name.to_string()),
            Some(None) => (
                "public".to_string(),
                settings.table.clone().unwrap_or_default(),
            ),
            None => ("public".to_string(), stream.to_string()),
        };
        let rows = client
            .query(super::sql::templates::TABLE_COLUMNS, &[&schema, &name])
            .await
            .map_err(source_error("read the table's columns"))?;
        if rows.is_empty() {
            return Err(PostgresSourceError::NoSuchTable {
                stream: stream.to_string(),
                schema,
                table: name,
            }
            .into());
        }
        let all: Vec<(SourceColumn, bool)> = rows
            .iter()
            .map(|row| {
                (
                    SourceColumn {
                        name: row.get(0),
                        sql_type: row.get(2),
                        kind: ValueKind::of_column(row.get::<_, &str>(1), row.get(2)),
                    },
                    row.get::<_, i64>(3) > 0,
                )
            })
            .collect();
        let find = |column: &str, setting: &'static str| -> Result<SourceColumn> {
            all.iter()
                .find(|(c, _)| c.name == column)
                .map(|(c, _)| c.clone())
                .ok_or_else(|| {
                    PostgresSourceError::NoSuchColumn {
                        stream: stream.to_string(),
                        setting,
                        column: column.to_string(),
                        schema: schema.clone(),
                        table: name.clone(),
                    }
                    .into()
                })
        };
        let mut key = match &settings.key {
            Some(key) => find(key, "key")?,
            None => {
                let primary: Vec<&SourceColumn> =
                    all.iter().filter(|(_, pk)| *pk).map(|(c, _)| c).collect();
                match primary.as_slice() {
                    [one] => (*one).clone(),
                    [] => {
                        return Err(PostgresSourceError::NoPrimaryKey {
                            stream: stream.to_string(),
                            schema,
                            table: name,
                        }
                        .into());
                    }
                    _ => {
                        return Err(PostgresSourceError::CompositeKey {
                            stream: stream.to_string(),
                            schema,
                            table: name,
                        }
                        .into());
                    }
                }
            }
        };
        // A numeric key stays keyed by its text, as it always was: keys are integers or text
        // in every destination and in the fingerprints.
        if let ValueKind::Decimal { .. } = key.kind {
            key.kind = ValueKind::Text;
        }
        if !matches!(key.kind, ValueKind::Int | ValueKind::Text) {
            return Err(PostgresSourceError::KeyType {
                stream: stream.to_string(),
                column: key.name,
                sql_type: key.sql_type,
            }
            .into());
        }
        let mut columns = vec![key.clone()];
        match &settings.columns {
            Some(wanted) => {
                for column in wanted {
                    if *column != key.name {
                        columns.push(find(column, "columns")?);
                    }
                }
            }
            None => columns.extend(
                all.iter()
                    .filter(|(c, _)| c.name != key.name)
                    .map(|(c, _)| c.clone()),
            ),
        }
        if let Some(column) = columns.iter().find(|c| {
            is_system_column(&c.name) || c.name == VERSION_COLUMN || c.name == DELETED_COLUMN
        }) {
            return Err(PostgresSourceError::ReservedColumn {
                stream: stream.to_string(),
                column: column.name.clone(),
            }
            .into());
        }
        let cursor = match (&settings.cursor_column, wants_cursor) {
            (Some(column), true) => {
                let cursor = find(column, "cursor_column")?;
                if !matches!(cursor.kind, ValueKind::Int | ValueKind::Timestamp { .. }) {
                    return Err(PostgresSourceError::CursorType {
                        stream: stream.to_string(),
                        column: column.clone(),
                        sql_type: cursor.sql_type,
                    }
                    .into());
                }
                Some(cursor)
            }
            _ => None,
        };
        Ok(TableSpec {
            schema,
            name,
            columns,
            cursor,
        })
    }
}

pub use crate::sql::quote_ident;

/// The error of step `what`: a server refusal by message and SQLSTATE only (its DETAIL can
/// quote row values), else the driver's error (a broken connection) as the cause.
pub fn source_error(what: &'static str) -> impl Fn(tokio_postgres::Error) -> PostgresSourceError {
    move |source| match source.as_db_error() {
        Some(db) => PostgresSourceError::Query {
            what,
            message: db.message().to_string(),
            sqlstate: db.code().code().to_string(),
        },
        None => PostgresSourceError::Driver { what, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_catalog_types_to_staged_types() {
        for (typname, expected) in [
            ("int2", DataType::Int64),
            ("int4", DataType::Int64),
            ("int8", DataType::Int64),
            ("oid", DataType::Int64),
            ("float4", DataType::Float64),
            ("float8", DataType::Float64),
            ("numeric", DataType::Utf8),
            ("numeric(12,2)", DataType::Utf8),
            ("bool", DataType::Boolean),
            ("text", DataType::Utf8),
            ("varchar", DataType::Utf8),
            ("bpchar", DataType::Utf8),
            ("uuid", DataType::Utf8),
            ("jsonb", DataType::Utf8),
            ("json", DataType::Utf8),
            ("my_enum", DataType::Utf8),
            ("date", DataType::Date32),
            ("timestamp", micros_type()),
            ("timestamptz", micros_type()),
        ] {
            assert_eq!(ValueKind::of(typname).data_type(), expected, "{typname}");
        }
    }

    #[test]
    fn a_numeric_with_at_most_38_digits_is_a_decimal() {
        for (typname, sql_type, expected) in [
            ("numeric", "numeric(12,2)", DataType::Decimal128(12, 2)),
            ("numeric", "numeric(38,0)", DataType::Decimal128(38, 0)),
            ("numeric", "numeric(5,5)", DataType::Decimal128(5, 5)),
            // More digits than Decimal128 holds, or any scale row by row: exact as text.
            ("numeric", "numeric(39,2)", DataType::Utf8),
            ("numeric", "numeric", DataType::Utf8),
            ("int4", "integer", DataType::Int64),
            ("text", "text", DataType::Utf8),
        ] {
            assert_eq!(
                ValueKind::of_column(typname, sql_type).data_type(),
                expected,
                "{sql_type}"
            );
        }
    }

    #[test]
    fn staged_schema_puts_the_key_first_and_system_columns_last() {
        let spec = TableSpec {
            schema: "public".into(),
            name: "contacts".into(),
            columns: vec![
                SourceColumn {
                    name: "id".into(),
                    kind: ValueKind::Int,
                    sql_type: "integer".into(),
                },
                SourceColumn {
                    name: "email".into(),
                    kind: ValueKind::Text,
                    sql_type: "text".into(),
                },
            ],
            cursor: None,
        };
        let schema = spec.staged_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "email", VERSION_COLUMN, DELETED_COLUMN]);
        assert!(!schema.field(0).is_nullable());
        assert_eq!(schema.field(2).data_type(), &micros_type());
        assert_eq!(spec.qualified(), "\"public\".\"contacts\"");
    }
}
