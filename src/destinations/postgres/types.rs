//! The PostgreSQL side of a stream's table: which PostgreSQL type holds each staged kind of
//! value, which existing column types take it (as is, or once widened), and how PostgreSQL
//! names tables and columns. The layout itself is the shared [`crate::destinations::layout`].

use tokio_postgres::types::Type;

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
        }
    }

    /// The type as written in DDL; also exactly what `information_schema.columns.data_type`
    /// reports for it, so the two can be compared as strings.
    fn name(self) -> &'static str {
        match self {
            PgType::Bigint => "bigint",
            PgType::DoublePrecision => "double precision",
            PgType::Text => "text",
            PgType::Boolean => "boolean",
            PgType::Date => "date",
            PgType::Timestamptz => "timestamp with time zone",
        }
    }

    fn fit(self, existing: &String) -> Fit {
        if existing == self.name() || self.fits_in(existing) {
            Fit::Fits
        } else if self.widens(existing) {
            Fit::Widens
        } else {
            Fit::Drifts
        }
    }
}

impl PgType {
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
