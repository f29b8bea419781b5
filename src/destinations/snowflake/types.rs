//! The Snowflake side of a stream's table: which Snowflake type holds each staged kind of
//! value, which existing column types take it, and how Snowflake names tables and columns. The
//! layout itself is the shared [`crate::destinations::layout`].
//!
//! | Staged (Arrow)               | Snowflake        |
//! | ---------------------------- | ---------------- |
//! | Int64                        | NUMBER(38, 0)    |
//! | Float64                      | FLOAT            |
//! | Utf8                         | VARCHAR          |
//! | Boolean                      | BOOLEAN          |
//! | Date32                       | DATE             |
//! | Timestamp(ms or µs, "UTC")   | TIMESTAMP_TZ     |
//! | Decimal128(p, s), p <= 38    | NUMBER(p, s)     |
//!
//! Timestamps are `TIMESTAMP_TZ` because staged timestamps are instants: `TIMESTAMP_NTZ` would
//! drop the zone and make comparisons depend on the session's `TIMEZONE`.

use std::borrow::Cow;
use std::fmt;

use crate::destinations::layout::{self, ColumnType, Fit};
use crate::destinations::staged::{Naming, StagedType};

/// How a stream's table looks in Snowflake.
pub(crate) type TableLayout = layout::TableLayout<SfType>;
/// A column with its Snowflake type.
pub(crate) type Column = layout::Column<SfType>;

/// Snowflake's identifier limit, in characters.
const MAX_IDENT_CHARS: usize = 255;

/// The Snowflake types syncline writes. Every staged kind maps to exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SfType {
    Number,
    Float,
    Varchar,
    Boolean,
    Date,
    TimestampTz,
    /// `NUMBER(precision, scale)`: a staged decimal, exact.
    Decimal(u8, u8),
}

/// An existing column's type as `INFORMATION_SCHEMA.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExistingType {
    /// `DATA_TYPE`: `NUMBER`, `FLOAT`, `TEXT`, ...
    pub data_type: String,
    /// `NUMERIC_SCALE`, for numbers.
    pub scale: Option<u64>,
    /// `NUMERIC_PRECISION`, for numbers.
    pub precision: Option<u64>,
}

impl fmt::Display for ExistingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.data_type.as_str(), self.precision, self.scale) {
            ("NUMBER", Some(precision), Some(scale)) => write!(f, "NUMBER({precision}, {scale})"),
            (data_type, ..) => f.write_str(data_type),
        }
    }
}

impl ColumnType for SfType {
    type Existing = ExistingType;

    const NAMING: Naming = Naming {
        destination: "snowflake",
        table_problem: |name| ident_problem(name).map(str::to_owned),
        column_problem: |name| ident_problem(name).map(str::to_owned),
        staged_case_insensitive: Some(
            "COPY matches Parquet columns to table columns case-insensitively",
        ),
        // The MERGE names the table's columns quoted, case and all.
        table_case_insensitive: None,
    };

    fn of(staged: StagedType) -> SfType {
        match staged {
            StagedType::Integer => SfType::Number,
            StagedType::Float => SfType::Float,
            StagedType::Text => SfType::Varchar,
            StagedType::Boolean => SfType::Boolean,
            StagedType::Date => SfType::Date,
            StagedType::Timestamp => SfType::TimestampTz,
            StagedType::Decimal { precision, scale } => SfType::Decimal(precision, scale),
        }
    }

    /// The type as written in DDL.
    fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            SfType::Number => "NUMBER(38, 0)",
            SfType::Float => "FLOAT",
            SfType::Varchar => "VARCHAR",
            SfType::Boolean => "BOOLEAN",
            SfType::Date => "DATE",
            SfType::TimestampTz => "TIMESTAMP_TZ",
            SfType::Decimal(precision, scale) => {
                return Cow::Owned(format!("NUMBER({precision}, {scale})"));
            }
        })
    }

    /// Snowflake cannot change a column's type in place (beyond lengths and precision), so a
    /// column either takes the values unchanged or is drift.
    fn fit(self, existing: &ExistingType) -> Fit {
        let data_type = existing.data_type.as_str();
        let accepted = match self {
            SfType::Number => {
                (data_type == "NUMBER" && existing.scale.unwrap_or(0) == 0) || data_type == "FLOAT"
            }
            SfType::Float => data_type == "FLOAT",
            SfType::Varchar => data_type == "TEXT",
            SfType::Boolean => data_type == "BOOLEAN",
            SfType::Date => data_type == "DATE",
            SfType::TimestampTz => data_type == "TIMESTAMP_TZ",
            // A NUMBER with at least as many integer and fraction digits holds every value
            // exactly; any other change of precision or scale is drift.
            SfType::Decimal(precision, scale) => {
                let (precision, scale) = (u64::from(precision), u64::from(scale));
                let has_scale = existing.scale.unwrap_or(0);
                let has_precision = existing.precision.unwrap_or(38);
                data_type == "NUMBER"
                    && has_scale >= scale
                    && has_precision.saturating_sub(has_scale) >= precision - scale
            }
        };
        if accepted { Fit::Fits } else { Fit::Drifts }
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

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};

    use super::*;
    use crate::destinations::layout::test_request;
    use crate::error::{Classified, ErrorKind};
    use crate::load::DeleteMode;
    use crate::schema::{deleted_field, version_field};

    #[test]
    fn takes_matching_columns_and_never_widens() {
        let fit = |ty: SfType, data_type: &str, scale: Option<u64>| {
            ty.fit(&ExistingType {
                data_type: data_type.to_owned(),
                scale,
                precision: scale.map(|_| 38),
            })
        };
        assert_eq!(fit(SfType::Number, "NUMBER", Some(0)), Fit::Fits);
        assert_eq!(fit(SfType::Number, "FLOAT", None), Fit::Fits);
        assert_eq!(fit(SfType::Varchar, "TEXT", None), Fit::Fits);
        assert_eq!(fit(SfType::Number, "NUMBER", Some(2)), Fit::Drifts);
        assert_eq!(fit(SfType::Float, "NUMBER", Some(0)), Fit::Drifts);
        assert_eq!(fit(SfType::Varchar, "NUMBER", Some(0)), Fit::Drifts);
    }

    #[test]
    fn a_decimal_takes_a_number_with_as_many_digits() {
        let fit = |ty: SfType, precision: u64, scale: u64| {
            ty.fit(&ExistingType {
                data_type: "NUMBER".to_owned(),
                scale: Some(scale),
                precision: Some(precision),
            })
        };
        let ours = SfType::Decimal(12, 2);
        assert_eq!(ours.name(), "NUMBER(12, 2)");
        assert_eq!(fit(ours, 12, 2), Fit::Fits);
        assert_eq!(fit(ours, 16, 4), Fit::Fits);
        assert_eq!(fit(ours, 10, 2), Fit::Drifts);
        assert_eq!(fit(ours, 12, 4), Fit::Drifts);
        // An integer column would drop the fraction.
        assert_eq!(fit(ours, 38, 0), Fit::Drifts);
        let float = ExistingType {
            data_type: "FLOAT".to_owned(),
            scale: None,
            precision: None,
        };
        assert_eq!(ours.fit(&float), Fit::Drifts);
        assert_eq!(
            ExistingType {
                data_type: "NUMBER".to_owned(),
                scale: Some(4),
                precision: Some(12),
            }
            .to_string(),
            "NUMBER(12, 4)"
        );
    }

    #[test]
    fn names_equal_but_for_case_are_drift() {
        let request = test_request(
            "contacts",
            "id",
            DeleteMode::Hard,
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new("email", DataType::Utf8, true),
                Field::new("Email", DataType::Utf8, true),
                version_field(),
                deleted_field(),
            ],
        );
        let err = TableLayout::from_request(&request).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("Email") && message.contains("COPY"),
            "{message}"
        );
    }
}
