//! The PostgreSQL side of a stream's table: which PostgreSQL type holds each staged kind of
//! value, which existing column types take it (as is, or once widened), and how PostgreSQL
//! names tables and columns. The layout itself is the shared [`crate::destinations::layout`].

use std::borrow::Cow;

use crate::destinations::layout::{self, ColumnType, Fit};
use crate::destinations::staged::{Naming, StagedType};

use super::sql::ident_problem;

/// How a stream's table looks in PostgreSQL.
pub(crate) type TableLayout = layout::TableLayout<PgType>;
/// A column with its PostgreSQL type.
pub(crate) type Column = layout::Column<PgType>;

/// The PostgreSQL types syncline writes. Every staged kind maps to exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PgType {
    Bigint,
    DoublePrecision,
    Text,
    Boolean,
    Date,
    Timestamptz,
    /// `numeric(precision, scale)`: a staged decimal, exact.
    Numeric(u8, u8),
}

impl ColumnType for PgType {
    /// `information_schema.columns.data_type`.
    type Existing = String;

    const NAMING: Naming = Naming {
        destination: "postgres",
        table_problem: |name| ident_problem(name).map(str::to_owned),
        column_problem: |name| ident_problem(name).map(str::to_owned),
        // Identifiers are always quoted, so case is kept and compared.
        staged_case_insensitive: None,
        table_case_insensitive: None,
    };

    fn of(staged: StagedType) -> PgType {
        match staged {
            StagedType::Integer => PgType::Bigint,
            StagedType::Float => PgType::DoublePrecision,
            StagedType::Text => PgType::Text,
            StagedType::Boolean => PgType::Boolean,
            StagedType::Date => PgType::Date,
            // timestamptz holds microseconds, so both staged units load without loss.
            StagedType::Timestamp => PgType::Timestamptz,
            StagedType::Decimal { precision, scale } => PgType::Numeric(precision, scale),
        }
    }

    /// The type as written in DDL; also exactly what `sql/postgres/table_columns.sql` reports
    /// for it (`information_schema.columns.data_type`, a constrained numeric with its
    /// precision and scale), so the two can be compared as strings.
    fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            PgType::Bigint => "bigint",
            PgType::DoublePrecision => "double precision",
            PgType::Text => "text",
            PgType::Boolean => "boolean",
            PgType::Date => "date",
            PgType::Timestamptz => "timestamp with time zone",
            PgType::Numeric(precision, scale) => {
                return Cow::Owned(format!("numeric({precision},{scale})"));
            }
        })
    }

    fn fit(self, existing: &String) -> Fit {
        if *existing == self.name() || self.fits_in(existing) {
            Fit::Fits
        } else if self.widens(existing) {
            Fit::Widens
        } else {
            Fit::Drifts
        }
    }
}

impl PgType {
    /// Whether a column of type `existing` may be altered to this type without losing values
    /// the column already holds (the source widened the field).
    ///
    /// Not `bigint` to `double precision`: a double keeps 53 bits, so every integer above 2^53
    /// the column holds would round. Nor `bigint` to `numeric`, which keeps the integers but
    /// takes doubles through PostgreSQL's float-to-numeric cast, which keeps 15 significant
    /// digits: every later float load would round instead. So an integer column the source now
    /// sends floats for is schema drift, as in Snowflake and the lake, which cannot alter a
    /// column's type at all; whoever fixes it chooses which loss, if any, they accept.
    fn widens(self, existing: &str) -> bool {
        match self {
            PgType::Bigint => matches!(existing, "smallint" | "integer"),
            // integer and smallint fit in a double's 53 bits; real is a narrower double.
            PgType::DoublePrecision => matches!(existing, "smallint" | "integer" | "real"),
            PgType::Text => matches!(existing, "character varying" | "character"),
            PgType::Timestamptz => existing == "date",
            // A numeric with no more integer digits and no more fraction digits converts
            // exactly (the source raised the precision or the scale).
            PgType::Numeric(precision, scale) => {
                numeric_parts(existing).is_some_and(|(had_precision, had_scale)| {
                    had_scale <= scale && had_precision - had_scale <= precision - scale
                })
            }
            PgType::Boolean | PgType::Date => false,
        }
    }

    /// Whether a column of type `existing` already holds every value of this type, and compares
    /// with it, so nothing needs to change (the source narrowed a field we had widened).
    ///
    /// Integers and doubles into any numeric column are taken as before precision and scale
    /// were compared (a value that does not fit fails the merge, as it always did).
    fn fits_in(self, existing: &str) -> bool {
        let numeric = existing == "numeric" || numeric_parts(existing).is_some();
        match self {
            PgType::Bigint => existing == "double precision" || numeric,
            PgType::DoublePrecision => numeric,
            PgType::Date => existing == "timestamp with time zone",
            // Unconstrained numeric holds every decimal; a constrained one holds ours when it
            // has at least as many integer and fraction digits.
            PgType::Numeric(precision, scale) => {
                existing == "numeric"
                    || numeric_parts(existing).is_some_and(|(has_precision, has_scale)| {
                        has_scale >= scale && has_precision - has_scale >= precision - scale
                    })
            }
            PgType::Text | PgType::Boolean | PgType::Timestamptz => false,
        }
    }
}

/// The precision and scale of `numeric(p,s)` as `sql/postgres/table_columns.sql` reports it.
fn numeric_parts(existing: &str) -> Option<(u8, u8)> {
    let inner = existing.strip_prefix("numeric(")?.strip_suffix(')')?;
    let (precision, scale) = inner.split_once(',')?;
    let precision: u8 = precision.trim().parse().ok()?;
    let scale: u8 = scale.trim().parse().ok()?;
    (scale <= precision).then_some((precision, scale))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::DataType;

    use super::*;

    #[test]
    fn fits_widens_or_drifts() {
        let fit = |ty: PgType, existing: &str| ty.fit(&existing.to_owned());
        assert_eq!(fit(PgType::Text, "text"), Fit::Fits);
        assert_eq!(fit(PgType::Bigint, "double precision"), Fit::Fits);
        assert_eq!(fit(PgType::Bigint, "numeric"), Fit::Fits);
        assert_eq!(fit(PgType::Date, "timestamp with time zone"), Fit::Fits);
        assert_eq!(fit(PgType::Bigint, "integer"), Fit::Widens);
        assert_eq!(fit(PgType::DoublePrecision, "integer"), Fit::Widens);
        // A double would round a bigint above 2^53.
        assert_eq!(fit(PgType::DoublePrecision, "bigint"), Fit::Drifts);
        assert_eq!(fit(PgType::Text, "character varying"), Fit::Widens);
        assert_eq!(fit(PgType::Timestamptz, "date"), Fit::Widens);
        assert_eq!(fit(PgType::Text, "bigint"), Fit::Drifts);
        assert_eq!(fit(PgType::Boolean, "text"), Fit::Drifts);
        assert_eq!(fit(PgType::Bigint, "numeric(20,0)"), Fit::Fits);
    }

    #[test]
    fn a_decimal_fits_widens_or_drifts_by_its_digits() {
        let fit = |ty: PgType, existing: &str| ty.fit(&existing.to_owned());
        let ours = PgType::Numeric(12, 2);
        assert_eq!(fit(ours, "numeric(12,2)"), Fit::Fits);
        assert_eq!(fit(ours, "numeric"), Fit::Fits);
        // More integer and fraction digits already: nothing to change.
        assert_eq!(fit(ours, "numeric(16,4)"), Fit::Fits);
        // The source raised the precision or the scale: the column converts exactly.
        assert_eq!(fit(ours, "numeric(10,2)"), Fit::Widens);
        assert_eq!(fit(ours, "numeric(10,0)"), Fit::Widens);
        // The source lowered the scale under values the column holds: someone decides.
        assert_eq!(fit(ours, "numeric(12,4)"), Fit::Drifts);
        assert_eq!(fit(ours, "double precision"), Fit::Drifts);
        assert_eq!(fit(ours, "bigint"), Fit::Drifts);
        assert_eq!(fit(ours, "text"), Fit::Drifts);
        assert_eq!(ours.name(), "numeric(12,2)");
    }

    #[test]
    fn names_longer_than_postgres_keeps_are_drift() {
        use arrow::datatypes::Field;

        use crate::destinations::layout::test_request;
        use crate::error::{Classified, ErrorKind};
        use crate::load::DeleteMode;
        use crate::schema::{deleted_field, version_field};

        let request = test_request(
            "contacts",
            "id",
            DeleteMode::Hard,
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new("x".repeat(64), DataType::Utf8, true),
                version_field(),
                deleted_field(),
            ],
        );
        let err = TableLayout::from_request(&request).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
        assert!(err.to_string().contains("63-byte"), "{err}");
    }
}
