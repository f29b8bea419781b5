//! Arrow → PostgreSQL type mapping, and what an existing table needs to accept a staged load:
//! columns to add, columns to widen, or drift that must stop the stream.

use arrow::datatypes::{DataType, TimeUnit};
use tokio_postgres::types::Type;

use crate::destinations::staged::is_utc;
use crate::{Error, Result};

/// The PostgreSQL types syncline writes. Every staged Arrow type maps to exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PgType {
    Bigint,
    DoublePrecision,
    Text,
    Boolean,
    Date,
    Timestamptz,
}

impl PgType {
    /// The PostgreSQL type for a staged Arrow type, or `None` when syncline does not load it.
    pub(crate) fn from_arrow(data_type: &DataType) -> Option<PgType> {
        match data_type {
            DataType::Int64 => Some(PgType::Bigint),
            DataType::Float64 => Some(PgType::DoublePrecision),
            // Parquet readers and DataFusion may hand strings back as large or view arrays.
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(PgType::Text),
            DataType::Boolean => Some(PgType::Boolean),
            DataType::Date32 => Some(PgType::Date),
            // timestamptz holds microseconds, so both staged units load without loss.
            DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(tz))
                if is_utc(tz) =>
            {
                Some(PgType::Timestamptz)
            }
            _ => None,
        }
    }

    /// The type as written in DDL; also exactly what `information_schema.columns.data_type`
    /// reports for it, so the two can be compared as strings.
    pub(crate) fn sql_name(self) -> &'static str {
        match self {
            PgType::Bigint => "bigint",
            PgType::DoublePrecision => "double precision",
            PgType::Text => "text",
            PgType::Boolean => "boolean",
            PgType::Date => "date",
            PgType::Timestamptz => "timestamp with time zone",
        }
    }

    /// The type binary COPY encodes values as.
    pub(crate) fn wire_type(self) -> Type {
        match self {
            PgType::Bigint => Type::INT8,
            PgType::DoublePrecision => Type::FLOAT8,
            PgType::Text => Type::TEXT,
            PgType::Boolean => Type::BOOL,
            PgType::Date => Type::DATE,
            PgType::Timestamptz => Type::TIMESTAMPTZ,
        }
    }

    /// Whether a column of type `existing` may be altered to this type without losing values
    /// the column already holds (the source widened the field).
    fn widens(self, existing: &str) -> bool {
        match self {
            PgType::Bigint => matches!(existing, "smallint" | "integer"),
            PgType::DoublePrecision => {
                matches!(existing, "smallint" | "integer" | "bigint" | "real")
            }
            PgType::Text => matches!(existing, "character varying" | "character"),
            PgType::Timestamptz => existing == "date",
            PgType::Boolean | PgType::Date => false,
        }
    }

    /// Whether a column of type `existing` already holds every value of this type, and compares
    /// with it, so nothing needs to change (the source narrowed a field we had widened).
    fn fits_in(self, existing: &str) -> bool {
        match self {
            PgType::Bigint => matches!(existing, "double precision" | "numeric"),
            PgType::DoublePrecision => existing == "numeric",
            PgType::Date => existing == "timestamp with time zone",
            PgType::Text | PgType::Boolean | PgType::Timestamptz => false,
        }
    }
}

/// A column with its PostgreSQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub name: String,
    pub pg_type: PgType,
}

impl Column {
    pub(crate) fn new(name: impl Into<String>, pg_type: PgType) -> Column {
        Column {
            name: name.into(),
            pg_type,
        }
    }
}

/// One change an existing destination table needs before a load can be merged into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Alteration {
    /// The source grew a field.
    Add(Column),
    /// The source widened a field's type; the existing values convert without loss.
    Widen {
        column: String,
        from: String,
        to: PgType,
    },
}

/// Compares the columns a load needs with the table's existing columns (`(name, data_type)` as
/// `information_schema.columns` reports them). Pure, so the decision is testable without a server.
///
/// Fails with `Error::SchemaDrift` naming every incompatible column; in that case nothing is
/// altered, so the table stays as it was and the staged data can be merged once resolved.
/// Existing columns the load does not carry are left alone (a field the source dropped).
pub(crate) fn plan_alterations(
    table: &str,
    wanted: &[Column],
    existing: &[(String, String)],
) -> Result<Vec<Alteration>> {
    let mut alterations = Vec::new();
    let mut drift = Vec::new();
    for column in wanted {
        let Some((_, current)) = existing.iter().find(|(name, _)| *name == column.name) else {
            alterations.push(Alteration::Add(column.clone()));
            continue;
        };
        let target = column.pg_type;
        if current == target.sql_name() || target.fits_in(current) {
            continue;
        }
        if target.widens(current) {
            alterations.push(Alteration::Widen {
                column: column.name.clone(),
                from: current.clone(),
                to: target,
            });
        } else {
            drift.push(format!(
                "column `{}` is {} in the table but the source now sends {}",
                column.name,
                current,
                target.sql_name()
            ));
        }
    }
    if drift.is_empty() {
        Ok(alterations)
    } else {
        Err(Error::SchemaDrift(format!(
            "postgres table `{table}`: {}; change the column or the source field by hand, then \
             re-run (the staged load is kept)",
            drift.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(columns: &[(&str, &str)]) -> Vec<(String, String)> {
        columns
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn maps_the_supported_arrow_types() {
        assert_eq!(PgType::from_arrow(&DataType::Int64), Some(PgType::Bigint));
        assert_eq!(
            PgType::from_arrow(&DataType::Float64),
            Some(PgType::DoublePrecision)
        );
        assert_eq!(PgType::from_arrow(&DataType::Utf8), Some(PgType::Text));
        assert_eq!(PgType::from_arrow(&DataType::Utf8View), Some(PgType::Text));
        assert_eq!(
            PgType::from_arrow(&DataType::Boolean),
            Some(PgType::Boolean)
        );
        assert_eq!(PgType::from_arrow(&DataType::Date32), Some(PgType::Date));
        assert_eq!(
            PgType::from_arrow(&crate::schema::timestamp_type()),
            Some(PgType::Timestamptz)
        );
        assert_eq!(
            PgType::from_arrow(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            )),
            Some(PgType::Timestamptz)
        );
    }

    #[test]
    fn rejects_unsupported_arrow_types() {
        assert_eq!(PgType::from_arrow(&DataType::Int32), None);
        assert_eq!(
            PgType::from_arrow(&DataType::Timestamp(TimeUnit::Millisecond, None)),
            None
        );
        assert_eq!(
            PgType::from_arrow(&DataType::Timestamp(TimeUnit::Microsecond, None)),
            None
        );
        assert_eq!(
            PgType::from_arrow(&DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("UTC".into())
            )),
            None
        );
        assert_eq!(PgType::from_arrow(&DataType::Decimal128(10, 2)), None);
    }

    #[test]
    fn adds_missing_columns_and_keeps_matching_ones() {
        let wanted = vec![
            Column::new("id", PgType::Bigint),
            Column::new("email", PgType::Text),
            Column::new("score", PgType::DoublePrecision),
        ];
        let plan = plan_alterations(
            "contacts",
            &wanted,
            &existing(&[("id", "bigint"), ("email", "text")]),
        )
        .unwrap();
        assert_eq!(
            plan,
            vec![Alteration::Add(Column::new(
                "score",
                PgType::DoublePrecision
            ))]
        );
    }

    #[test]
    fn widens_safe_type_changes() {
        let wanted = vec![
            Column::new("amount", PgType::DoublePrecision),
            Column::new("closed", PgType::Timestamptz),
        ];
        let plan = plan_alterations(
            "deals",
            &wanted,
            &existing(&[("amount", "bigint"), ("closed", "date")]),
        )
        .unwrap();
        assert_eq!(
            plan,
            vec![
                Alteration::Widen {
                    column: "amount".into(),
                    from: "bigint".into(),
                    to: PgType::DoublePrecision
                },
                Alteration::Widen {
                    column: "closed".into(),
                    from: "date".into(),
                    to: PgType::Timestamptz
                },
            ]
        );
    }

    #[test]
    fn keeps_a_column_that_is_already_wider() {
        let wanted = vec![Column::new("amount", PgType::Bigint)];
        let plan = plan_alterations(
            "deals",
            &wanted,
            &existing(&[("amount", "double precision")]),
        )
        .unwrap();
        assert!(plan.is_empty());
    }

    #[test]
    fn incompatible_change_is_drift_naming_table_column_and_types() {
        let wanted = vec![
            Column::new("amount", PgType::Text),
            Column::new("new", PgType::Text),
        ];
        let err =
            plan_alterations("deals", &wanted, &existing(&[("amount", "bigint")])).unwrap_err();
        match err {
            Error::SchemaDrift(message) => {
                assert!(message.contains("`deals`"), "{message}");
                assert!(message.contains("`amount`"), "{message}");
                assert!(message.contains("bigint"), "{message}");
                assert!(message.contains("text"), "{message}");
            }
            other => panic!("expected schema drift, got {other:?}"),
        }
    }
}
