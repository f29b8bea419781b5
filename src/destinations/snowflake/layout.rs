//! The Snowflake side of a stream: the Arrow → Snowflake type mapping, the column layout of
//! one stream's table (validated before any SQL is built), and what an existing table needs to
//! accept a staged load.
//!
//! | Arrow (staged)               | Snowflake        |
//! | ---------------------------- | ---------------- |
//! | Int64                        | NUMBER(38, 0)    |
//! | Float64                      | FLOAT            |
//! | Utf8                         | VARCHAR          |
//! | Boolean                      | BOOLEAN          |
//! | Date32                       | DATE             |
//! | Timestamp(ms or µs, "UTC")   | TIMESTAMP_TZ     |
//!
//! Timestamps are `TIMESTAMP_TZ` because staged timestamps are instants: `TIMESTAMP_NTZ` would
//! drop the zone and make comparisons depend on the session's `TIMEZONE`.

use arrow::datatypes::{DataType, TimeUnit};

use crate::destinations::MergeRequest;
use crate::destinations::staged::{NameRules, check_staged_schema};
use crate::load::DeleteMode;
use crate::schema::{DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, is_system_column};
use crate::{Error, Result};

/// Snowflake's identifier limit, in characters.
const MAX_IDENT_CHARS: usize = 255;

/// The Snowflake types syncline writes. Every staged Arrow type maps to exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SfType {
    Number,
    Float,
    Varchar,
    Boolean,
    Date,
    TimestampTz,
}

impl SfType {
    /// The Snowflake type for a staged Arrow type, or `None` when syncline does not load it.
    pub(crate) fn from_arrow(data_type: &DataType) -> Option<SfType> {
        match data_type {
            DataType::Int64 => Some(SfType::Number),
            DataType::Float64 => Some(SfType::Float),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(SfType::Varchar),
            DataType::Boolean => Some(SfType::Boolean),
            DataType::Date32 => Some(SfType::Date),
            DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(tz))
                if matches!(tz.as_ref(), "UTC" | "+00:00" | "Etc/UTC" | "Z") =>
            {
                Some(SfType::TimestampTz)
            }
            _ => None,
        }
    }

    /// The type as written in DDL.
    pub(crate) fn sql_name(self) -> &'static str {
        match self {
            SfType::Number => "NUMBER(38, 0)",
            SfType::Float => "FLOAT",
            SfType::Varchar => "VARCHAR",
            SfType::Boolean => "BOOLEAN",
            SfType::Date => "DATE",
            SfType::TimestampTz => "TIMESTAMP_TZ",
        }
    }

    /// Whether an existing column, as `INFORMATION_SCHEMA.COLUMNS` describes it (`DATA_TYPE`,
    /// `NUMERIC_SCALE`), takes this type's values unchanged. Snowflake cannot change a column's
    /// type in place (beyond lengths and precision), so anything else is drift.
    fn accepted_by(self, data_type: &str, scale: Option<u64>) -> bool {
        match self {
            SfType::Number => {
                (data_type == "NUMBER" && scale.unwrap_or(0) == 0) || data_type == "FLOAT"
            }
            SfType::Float => data_type == "FLOAT",
            SfType::Varchar => data_type == "TEXT",
            SfType::Boolean => data_type == "BOOLEAN",
            SfType::Date => data_type == "DATE",
            SfType::TimestampTz => data_type == "TIMESTAMP_TZ",
        }
    }
}

/// A column with its Snowflake type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub name: String,
    pub sf_type: SfType,
}

impl Column {
    pub(crate) fn new(name: impl Into<String>, sf_type: SfType) -> Column {
        Column {
            name: name.into(),
            sf_type,
        }
    }
}

/// Why `name` cannot be a Snowflake identifier as is, if it cannot.
pub(crate) fn ident_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains('\0') {
        Some("contains a NUL character")
    } else if name.chars().count() > MAX_IDENT_CHARS {
        Some("is longer than Snowflake's 255-character identifier limit")
    } else {
        None
    }
}

/// How a stream's table looks in Snowflake.
#[derive(Debug, Clone)]
pub(crate) struct TableLayout {
    /// Destination table name, unquoted.
    pub table: String,
    /// Key column name, unquoted.
    pub key: String,
    /// Every staged column in the staged schema's order, system columns included.
    pub staged: Vec<Column>,
    pub deletes: DeleteMode,
}

impl TableLayout {
    /// Validates the request's names and types. Unsupported types, reserved names and names
    /// equal but for case (`COPY ... MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE` could not tell them
    /// apart) are `Error::SchemaDrift`; a key missing from the staged schema is `Error::Config`.
    pub(crate) fn from_request(request: &MergeRequest) -> Result<TableLayout> {
        let stream = &request.stream;
        if let Some(problem) = ident_problem(&request.table) {
            return Err(Error::Config(format!(
                "stream `{stream}`: table name `{}` {problem}",
                request.table
            )));
        }
        if is_system_column(&request.table) {
            return Err(Error::Config(format!(
                "stream `{stream}`: table name `{}` uses the reserved prefix `_syncline_`",
                request.table
            )));
        }

        check_staged_schema(
            request,
            &NameRules {
                problem: &|name| ident_problem(name).map(str::to_owned),
                case_insensitive: Some(
                    "COPY matches Parquet columns to table columns case-insensitively",
                ),
            },
        )?;
        let staged = request
            .schema
            .fields()
            .iter()
            .map(|field| {
                let sf_type = SfType::from_arrow(field.data_type()).ok_or_else(|| {
                    Error::SchemaDrift(format!(
                        "stream `{stream}`: column `{}` has type {}, which the snowflake \
                         destination does not support",
                        field.name(),
                        field.data_type()
                    ))
                })?;
                Ok(Column::new(field.name().clone(), sf_type))
            })
            .collect::<Result<Vec<_>>>()?;

        Ok(TableLayout {
            table: request.table.clone(),
            key: request.key.clone(),
            staged,
            deletes: request.deletes,
        })
    }

    /// Staged columns that reach the destination table: all but `_syncline_deleted`.
    pub(crate) fn carried(&self) -> impl Iterator<Item = &Column> {
        self.staged
            .iter()
            .filter(|column| column.name != DELETED_COLUMN)
    }

    /// Data columns: neither the key nor a system column.
    pub(crate) fn data(&self) -> impl Iterator<Item = &Column> {
        self.staged
            .iter()
            .filter(|column| column.name != self.key && !is_system_column(&column.name))
    }

    /// Every column the destination table must have.
    pub(crate) fn target_columns(&self) -> Vec<Column> {
        let mut columns: Vec<Column> = self.carried().cloned().collect();
        columns.push(Column::new(LOAD_ID_COLUMN, SfType::Varchar));
        if self.deletes == DeleteMode::Soft {
            columns.push(Column::new(DELETED_AT_COLUMN, SfType::TimestampTz));
        }
        columns
    }
}

/// An existing column as `INFORMATION_SCHEMA.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExistingColumn {
    pub name: String,
    pub data_type: String,
    pub scale: Option<u64>,
}

/// The columns an existing table lacks, in the wanted order. Pure, so the decision is testable
/// without a server.
///
/// Fails with `Error::SchemaDrift` naming every column whose existing type cannot take the
/// staged values; nothing is altered then, and the staged load is kept. Existing columns the
/// load does not carry are left alone (a field the source dropped).
pub(crate) fn plan_additions(
    table: &str,
    wanted: &[Column],
    existing: &[ExistingColumn],
) -> Result<Vec<Column>> {
    let mut additions = Vec::new();
    let mut drift = Vec::new();
    for column in wanted {
        match existing.iter().find(|e| e.name == column.name) {
            None => additions.push(column.clone()),
            Some(e) if column.sf_type.accepted_by(&e.data_type, e.scale) => {}
            Some(e) => drift.push(format!(
                "column `{}` is {} in the table but the source now sends {}",
                column.name,
                e.data_type,
                column.sf_type.sql_name()
            )),
        }
    }
    if drift.is_empty() {
        Ok(additions)
    } else {
        Err(Error::SchemaDrift(format!(
            "snowflake table `{table}`: {}; change the column or the source field by hand, then \
             re-run (the staged load is kept)",
            drift.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::schema::VERSION_COLUMN;

    use arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::reconcile::Fingerprint;
    use crate::schema::{deleted_field, version_field};

    fn request(fields: Vec<Field>, deletes: DeleteMode) -> MergeRequest {
        MergeRequest {
            load_id: "load-1".into(),
            stream: "contacts".into(),
            table: "contacts".into(),
            key: "id".into(),
            deletes,
            schema: Arc::new(Schema::new(fields)),
            staged: Fingerprint::default(),
            files: Vec::new(),
        }
    }

    fn fields() -> Vec<Field> {
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
            version_field(),
            deleted_field(),
        ]
    }

    fn existing(columns: &[(&str, &str, Option<u64>)]) -> Vec<ExistingColumn> {
        columns
            .iter()
            .map(|(name, data_type, scale)| ExistingColumn {
                name: name.to_string(),
                data_type: data_type.to_string(),
                scale: *scale,
            })
            .collect()
    }

    #[test]
    fn maps_the_staged_arrow_types() {
        let cases = [
            (DataType::Int64, "NUMBER(38, 0)"),
            (DataType::Float64, "FLOAT"),
            (DataType::Utf8, "VARCHAR"),
            (DataType::Boolean, "BOOLEAN"),
            (DataType::Date32, "DATE"),
            (crate::schema::timestamp_type(), "TIMESTAMP_TZ"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "TIMESTAMP_TZ",
            ),
        ];
        for (arrow, snowflake) in cases {
            assert_eq!(
                SfType::from_arrow(&arrow).map(SfType::sql_name),
                Some(snowflake),
                "{arrow}"
            );
        }
        assert_eq!(SfType::from_arrow(&DataType::Int32), None);
        assert_eq!(
            SfType::from_arrow(&DataType::Timestamp(TimeUnit::Millisecond, None)),
            None
        );
    }

    #[test]
    fn target_columns_add_the_bookkeeping_columns() {
        let layout = TableLayout::from_request(&request(fields(), DeleteMode::Soft)).unwrap();
        let names: Vec<String> = layout
            .target_columns()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            names,
            [
                "id",
                "email",
                VERSION_COLUMN,
                LOAD_ID_COLUMN,
                DELETED_AT_COLUMN
            ]
        );
        let hard = TableLayout::from_request(&request(fields(), DeleteMode::Hard)).unwrap();
        assert!(
            hard.target_columns()
                .iter()
                .all(|c| c.name != DELETED_AT_COLUMN)
        );
    }

    #[test]
    fn names_equal_but_for_case_are_drift() {
        let mut f = fields();
        f.push(Field::new("Email", DataType::Utf8, true));
        let err = TableLayout::from_request(&request(f, DeleteMode::Hard)).unwrap_err();
        assert!(
            matches!(err, Error::SchemaDrift(ref m) if m.contains("Email")),
            "{err:?}"
        );
    }

    #[test]
    fn plans_new_columns_and_accepts_matching_ones() {
        let wanted = vec![
            Column::new("id", SfType::Number),
            Column::new("email", SfType::Varchar),
            Column::new("score", SfType::Float),
            Column::new("seats", SfType::Number),
        ];
        let plan = plan_additions(
            "contacts",
            &wanted,
            &existing(&[
                ("id", "NUMBER", Some(0)),
                ("email", "TEXT", None),
                ("seats", "FLOAT", None),
            ]),
        )
        .unwrap();
        assert_eq!(plan, vec![Column::new("score", SfType::Float)]);
    }

    #[test]
    fn incompatible_type_is_drift_naming_the_column() {
        let wanted = vec![Column::new("amount", SfType::Varchar)];
        let err = plan_additions(
            "deals",
            &wanted,
            &existing(&[("amount", "NUMBER", Some(0))]),
        )
        .unwrap_err();
        match err {
            Error::SchemaDrift(message) => {
                assert!(message.contains("`deals`"), "{message}");
                assert!(message.contains("`amount` is NUMBER"), "{message}");
                assert!(message.contains("VARCHAR"), "{message}");
            }
            other => panic!("expected schema drift, got {other:?}"),
        }
        let scaled = plan_additions(
            "deals",
            &[Column::new("amount", SfType::Number)],
            &existing(&[("amount", "NUMBER", Some(2))]),
        );
        assert!(matches!(scaled, Err(Error::SchemaDrift(_))));
    }
}
