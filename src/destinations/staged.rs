//! The checks every destination makes of a merge request's staged schema before it maps the
//! columns onto its own types: usable and unreserved column names, no two columns the
//! destination cannot tell apart, a key among the data columns, and the two system columns.
//! Also the staged types themselves ([`StagedType`]): what any destination may be asked to load.

use std::collections::HashMap;

use arrow::datatypes::{DataType, TimeUnit};

use super::MergeRequest;
use super::layout::LayoutError;
use crate::schema::{DELETED_COLUMN, MAX_DECIMAL_PRECISION, VERSION_COLUMN, is_system_column};

/// The kinds of value a staged column holds. Several Arrow types carry one kind (Parquet
/// readers and DataFusion may hand strings back as large or view arrays; timestamps come in
/// milliseconds or microseconds); each destination maps every kind to exactly one of its types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StagedType {
    Integer,
    Float,
    Text,
    Boolean,
    Date,
    /// An instant: a UTC timestamp in milliseconds or microseconds.
    Timestamp,
    /// An exact decimal of at most 38 digits, `scale` of them after the point (Arrow's
    /// `Decimal128(precision, scale)`, with `0 <= scale <= precision`): what PostgreSQL's
    /// `numeric(p, s)`, Snowflake's `NUMBER(p, s)` and Delta's `decimal(p, s)` all hold.
    Decimal {
        precision: u8,
        scale: u8,
    },
}

impl StagedType {
    /// The kind of a staged Arrow type, or `None` when syncline does not load it.
    pub(crate) fn from_arrow(data_type: &DataType) -> Option<StagedType> {
        match data_type {
            DataType::Int64 => Some(StagedType::Integer),
            DataType::Float64 => Some(StagedType::Float),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(StagedType::Text),
            DataType::Boolean => Some(StagedType::Boolean),
            DataType::Date32 => Some(StagedType::Date),
            // Every destination keeps at least microseconds, so both units load without loss.
            DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(tz))
                if is_utc(tz) =>
            {
                Some(StagedType::Timestamp)
            }
            // A negative scale (whole hundreds, ...) has no PostgreSQL or Delta counterpart.
            DataType::Decimal128(precision, scale)
                if (1..=MAX_DECIMAL_PRECISION).contains(precision)
                    && *scale >= 0
                    && (*scale as u8) <= *precision =>
            {
                Some(StagedType::Decimal {
                    precision: *precision,
                    scale: *scale as u8,
                })
            }
            _ => None,
        }
    }
}

/// How a destination treats table and column names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Naming {
    /// The destination's name in messages (`postgres`, `snowflake`, `lake`).
    pub destination: &'static str,
    /// Why the destination cannot use a table name, when it cannot.
    pub table_problem: fn(&str) -> Option<String>,
    /// Why the destination cannot use a column name, when it cannot.
    pub column_problem: fn(&str) -> Option<String>,
    /// `Some(why)` when staged names that differ only by case collide in the destination.
    pub staged_case_insensitive: Option<&'static str>,
    /// `Some(why)` when a new column may not differ only by case from an existing one.
    pub table_case_insensitive: Option<&'static str>,
}

/// Unusable or reserved column names and colliding names are schema drift (the source changed
/// shape); a key that is not a staged data column is a configuration error; a staged schema
/// without proper system columns is a destination error (staging is broken, not the source).
/// See [`LayoutError`].
pub(crate) fn check_staged_schema(
    request: &MergeRequest,
    names: &Naming,
) -> Result<(), LayoutError> {
    let stream = || request.stream.clone();
    let mut seen: HashMap<String, &str> = HashMap::new();
    for field in request.schema.fields() {
        let name = field.name();
        if let Some(problem) = (names.column_problem)(name) {
            return Err(LayoutError::UnusableColumn {
                stream: stream(),
                column: name.clone(),
                problem,
            });
        }
        if is_system_column(name) && name != VERSION_COLUMN && name != DELETED_COLUMN {
            return Err(LayoutError::ReservedColumn {
                stream: stream(),
                column: name.clone(),
            });
        }
        let folded = match names.staged_case_insensitive {
            Some(_) => name.to_lowercase(),
            None => name.clone(),
        };
        if let Some(other) = seen.insert(folded, name.as_str()) {
            return Err(match names.staged_case_insensitive {
                Some(why) => LayoutError::ColumnsDifferByCase {
                    stream: stream(),
                    first: other.to_owned(),
                    second: name.clone(),
                    why,
                },
                None => LayoutError::DuplicateColumn {
                    stream: stream(),
                    column: name.clone(),
                },
            });
        }
    }

    if is_system_column(&request.key) || request.schema.field_with_name(&request.key).is_err() {
        return Err(LayoutError::KeyNotStaged {
            stream: stream(),
            key: request.key.clone(),
        });
    }
    let utc_timestamp =
        |data_type: &DataType| StagedType::from_arrow(data_type) == Some(StagedType::Timestamp);
    if !matches!(request.schema.field_with_name(VERSION_COLUMN), Ok(f) if utc_timestamp(f.data_type()))
    {
        return Err(LayoutError::NoVersionColumn { stream: stream() });
    }
    if !matches!(request.schema.field_with_name(DELETED_COLUMN), Ok(f) if f.data_type() == &DataType::Boolean)
    {
        return Err(LayoutError::NoDeletedColumn { stream: stream() });
    }
    Ok(())
}

/// Whether an Arrow timestamp's time zone is UTC under one of its spellings.
fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "+00:00" | "Etc/UTC" | "Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_kinds_of_arrow_types() {
        let kinds = [
            (DataType::Int64, StagedType::Integer),
            (DataType::Float64, StagedType::Float),
            (DataType::Utf8, StagedType::Text),
            (DataType::LargeUtf8, StagedType::Text),
            (DataType::Utf8View, StagedType::Text),
            (DataType::Boolean, StagedType::Boolean),
            (DataType::Date32, StagedType::Date),
            (crate::schema::timestamp_type(), StagedType::Timestamp),
            (
                DataType::Decimal128(10, 2),
                StagedType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            (
                DataType::Decimal128(38, 0),
                StagedType::Decimal {
                    precision: 38,
                    scale: 0,
                },
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                StagedType::Timestamp,
            ),
        ];
        for (arrow, kind) in kinds {
            assert_eq!(StagedType::from_arrow(&arrow), Some(kind), "{arrow}");
        }
        for unsupported in [
            DataType::Int32,
            DataType::Decimal128(10, -2),
            DataType::Decimal256(40, 2),
            DataType::Timestamp(TimeUnit::Millisecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Paris".into())),
        ] {
            assert_eq!(StagedType::from_arrow(&unsupported), None, "{unsupported}");
        }
    }
}
