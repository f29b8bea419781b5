//! The lake side of a stream's table: which Delta type holds each staged kind of value, which
//! existing column types take it, how Delta names tables (folders) and columns, and what the
//! lake needs beyond the shared [`crate::destinations::layout`]: the key's type, the Delta schema
//! fields, and the Arrow schema staged batches are normalized to before the merge.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::{DataType as DeltaType, PrimitiveType, StructField};

use crate::Result;
use crate::destinations::MergeRequest;
use crate::destinations::layout::{self, ColumnType, Fit};
use crate::destinations::staged::{Naming, StagedType};
use crate::schema::is_system_column;

use super::LakeError;

/// How a stream's table looks in the lake.
pub(crate) type TableLayout = layout::TableLayout<LakeType>;
/// A column with its Delta type.
pub(crate) type Column = layout::Column<LakeType>;

/// Characters Parquet (and so Delta without column mapping) does not allow in column names,
/// plus `.`, which Delta expressions read as a path into a nested field.
const FORBIDDEN_COLUMN_CHARS: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '=', '.'];

/// The Delta types syncline writes. Every staged kind maps to exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LakeType {
    Long,
    Double,
    String,
    Boolean,
    Date,
    /// Microseconds, UTC (Delta's `timestamp`); staged millisecond timestamps are cast up.
    Timestamp,
    /// `decimal(precision, scale)`: a staged decimal, exact.
    Decimal(u8, u8),
}

impl ColumnType for LakeType {
    /// The type in the Delta table's schema.
    type Existing = DeltaType;

    const NAMING: Naming = Naming {
        destination: "lake",
        table_problem: table_name_problem,
        column_problem: column_name_problem,
        staged_case_insensitive: Some("Delta resolves column names case-insensitively"),
        table_case_insensitive: Some("Delta column names are case-insensitive"),
    };

    fn of(staged: StagedType) -> LakeType {
        match staged {
            StagedType::Integer => LakeType::Long,
            StagedType::Float => LakeType::Double,
            StagedType::Text => LakeType::String,
            StagedType::Boolean => LakeType::Boolean,
            StagedType::Date => LakeType::Date,
            StagedType::Timestamp => LakeType::Timestamp,
            StagedType::Decimal { precision, scale } => LakeType::Decimal(precision, scale),
        }
    }

    /// The type as Delta names it in a table schema.
    fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            LakeType::Long => "long",
            LakeType::Double => "double",
            LakeType::String => "string",
            LakeType::Boolean => "boolean",
            LakeType::Date => "date",
            LakeType::Timestamp => "timestamp",
            LakeType::Decimal(precision, scale) => {
                return Cow::Owned(format!("decimal({precision},{scale})"));
            }
        })
    }

    /// A column holding every value of this type and comparing with it takes the load as is
    /// (the merge casts on write). Widening a column (long to double, date to timestamp) needs
    /// a table rewrite that syncline does not do, so it is drift.
    fn fit(self, existing: &DeltaType) -> Fit {
        let fits = LakeType::from_delta(existing).is_some_and(|existing| {
            self == existing
                || matches!(
                    (self, existing),
                    (LakeType::Long, LakeType::Double) | (LakeType::Date, LakeType::Timestamp)
                )
                || holds_decimal(existing, self)
        });
        if fits { Fit::Fits } else { Fit::Drifts }
    }
}

/// Whether a decimal column `existing` holds every value of the decimal `load` exactly: at
/// least as many integer digits and as many fraction digits (the merge casts on write).
fn holds_decimal(existing: LakeType, load: LakeType) -> bool {
    match (existing, load) {
        (LakeType::Decimal(has_precision, has_scale), LakeType::Decimal(precision, scale)) => {
            has_scale >= scale && has_precision - has_scale >= precision - scale
        }
        _ => false,
    }
}

impl LakeType {
    /// The syncline type of an existing Delta column, or `None` for types syncline never writes.
    pub(crate) fn from_delta(data_type: &DeltaType) -> Option<LakeType> {
        match data_type {
            DeltaType::Primitive(PrimitiveType::Long) => Some(LakeType::Long),
            DeltaType::Primitive(PrimitiveType::Double) => Some(LakeType::Double),
            DeltaType::Primitive(PrimitiveType::String) => Some(LakeType::String),
            DeltaType::Primitive(PrimitiveType::Boolean) => Some(LakeType::Boolean),
            DeltaType::Primitive(PrimitiveType::Date) => Some(LakeType::Date),
            DeltaType::Primitive(PrimitiveType::Timestamp) => Some(LakeType::Timestamp),
            DeltaType::Primitive(PrimitiveType::Decimal(decimal)) => {
                Some(LakeType::Decimal(decimal.precision(), decimal.scale()))
            }
            _ => None,
        }
    }

    pub(crate) fn delta_type(self) -> DeltaType {
        match self {
            LakeType::Long => DeltaType::LONG,
            LakeType::Double => DeltaType::DOUBLE,
            LakeType::String => DeltaType::STRING,
            LakeType::Boolean => DeltaType::BOOLEAN,
            LakeType::Date => DeltaType::DATE,
            LakeType::Timestamp => DeltaType::TIMESTAMP,
            // `StagedType::from_arrow` admits only 1 <= precision <= 38 and scale <= precision,
            // exactly what Delta takes.
            LakeType::Decimal(precision, scale) => DeltaType::decimal(precision, scale)
                .expect("a staged decimal's precision and scale are ones Delta takes"),
        }
    }

    /// The Arrow type staged batches are normalized to before the merge: what Delta reads back
    /// for this column, so source and target compare without coercion surprises.
    pub(crate) fn arrow_type(self) -> DataType {
        match self {
            LakeType::Long => DataType::Int64,
            LakeType::Double => DataType::Float64,
            LakeType::String => DataType::Utf8,
            LakeType::Boolean => DataType::Boolean,
            LakeType::Date => DataType::Date32,
            LakeType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            LakeType::Decimal(precision, scale) => DataType::Decimal128(precision, scale as i8),
        }
    }
}

impl Column {
    /// The column as a Delta schema field. Every column is nullable: columns added later hold
    /// nulls for older rows, and a null key or value is the source's to fix, not a reason to
    /// fail a merge halfway.
    pub(crate) fn struct_field(&self) -> StructField {
        StructField::new(self.name.clone(), self.ty.delta_type(), true)
    }
}

/// The layout of a merge request in the lake: the shared checks, and a key Delta can join on
/// (an integer, a string or a decimal, which also fingerprints as its canonical text).
pub(crate) fn table_layout(request: &MergeRequest) -> Result<TableLayout> {
    let layout = TableLayout::from_request(request)?;
    let key = layout
        .staged
        .iter()
        .find(|column| column.name == layout.key);
    if !matches!(key, Some(column) if matches!(column.ty, LakeType::Long | LakeType::String | LakeType::Decimal(..)))
    {
        return Err(LakeError::KeyNotJoinable {
            stream: request.stream.clone(),
            key: request.key.clone(),
        }
        .into());
    }
    Ok(layout)
}

impl TableLayout {
    /// The Arrow schema of the merge source: every staged column (system columns included) in
    /// its normalized type. All fields are nullable so that any staged batch fits it.
    pub(crate) fn source_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .staged
            .iter()
            .map(|column| Field::new(column.name.clone(), column.ty.arrow_type(), true))
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// Why `name` cannot name a table folder, if it cannot. Names are restricted to characters
/// that need no escaping in a path or URL on any object store.
pub(crate) fn table_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    if name.len() > 255 {
        return Some("is longer than 255 bytes".to_owned());
    }
    if name.starts_with('.') {
        return Some("starts with `.`".to_owned());
    }
    if is_system_column(name) {
        return Some("uses the reserved prefix `_syncline_`".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Some("may only contain ASCII letters, digits, `_`, `-` and `.`".to_owned());
    }
    None
}

/// Why `name` cannot name a Delta column, if it cannot.
fn column_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("has an empty name".to_owned());
    }
    let bad: Vec<char> = name
        .chars()
        .filter(|c| FORBIDDEN_COLUMN_CHARS.contains(c) || c.is_control())
        .collect();
    if bad.is_empty() {
        None
    } else {
        Some(format!(
            "contains {bad:?}, which a Delta table without column mapping cannot name a column with"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::layout::test_request;
    use crate::error::{Classified, ErrorKind};
    use crate::load::DeleteMode;
    use crate::schema::{
        DELETED_COLUMN, LOAD_ID_COLUMN, VERSION_COLUMN, deleted_field, version_field,
    };

    fn request(fields: Vec<Field>, key: &str) -> MergeRequest {
        test_request("contacts", key, DeleteMode::Hard, fields)
    }

    fn fields() -> Vec<Field> {
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
            Field::new("closed_on", DataType::Date32, true),
            version_field(),
            deleted_field(),
        ]
    }

    #[test]
    fn delta_arrow_and_names_agree() {
        for t in [
            LakeType::Long,
            LakeType::Double,
            LakeType::String,
            LakeType::Boolean,
            LakeType::Date,
            LakeType::Timestamp,
            LakeType::Decimal(18, 2),
            LakeType::Decimal(38, 0),
        ] {
            assert_eq!(LakeType::from_delta(&t.delta_type()), Some(t));
            assert_eq!(LakeType::from_arrow(&t.arrow_type()), Some(t));
            assert_eq!(t.delta_type().to_string(), t.name());
        }
    }

    #[test]
    fn takes_narrower_loads_and_never_widens() {
        assert_eq!(LakeType::Long.fit(&DeltaType::LONG), Fit::Fits);
        assert_eq!(LakeType::Long.fit(&DeltaType::DOUBLE), Fit::Fits);
        assert_eq!(LakeType::Date.fit(&DeltaType::TIMESTAMP), Fit::Fits);
        assert_eq!(LakeType::Double.fit(&DeltaType::LONG), Fit::Drifts);
        assert_eq!(LakeType::String.fit(&DeltaType::LONG), Fit::Drifts);
        assert_eq!(LakeType::Long.fit(&DeltaType::INTEGER), Fit::Drifts);
        let decimal = |p, s| DeltaType::decimal(p, s).unwrap();
        let ours = LakeType::Decimal(12, 2);
        assert_eq!(ours.fit(&decimal(12, 2)), Fit::Fits);
        assert_eq!(ours.fit(&decimal(16, 4)), Fit::Fits);
        assert_eq!(ours.fit(&decimal(10, 2)), Fit::Drifts);
        assert_eq!(ours.fit(&decimal(12, 4)), Fit::Drifts);
        assert_eq!(ours.fit(&DeltaType::DOUBLE), Fit::Drifts);
    }

    #[test]
    fn a_column_differing_only_by_case_from_the_table_is_drift() {
        let layout = table_layout(&request(fields(), "id")).unwrap();
        let existing = vec![
            ("id".to_owned(), DeltaType::LONG),
            ("EMAIL".to_owned(), DeltaType::STRING),
        ];
        let err = layout.alterations(&existing).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("lake table `contacts`"), "{message}");
        assert!(
            message.contains("column `email` differs only in case from the table's column `EMAIL`"),
            "{message}"
        );
    }

    #[test]
    fn the_source_schema_normalizes_timestamps_to_microseconds() {
        let source = table_layout(&request(fields(), "id"))
            .unwrap()
            .source_schema();
        assert_eq!(
            source.field_with_name(VERSION_COLUMN).unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(source.field_with_name(DELETED_COLUMN).is_ok());
    }

    #[test]
    fn rejects_unusable_names_and_keys() {
        let mut f = fields();
        f.push(Field::new("Lead Score", DataType::Float64, true));
        let err = table_layout(&request(f, "id")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
        assert!(err.to_string().contains("Lead Score"), "{err}");

        let mut f = fields();
        f.push(Field::new("EMAIL", DataType::Utf8, true));
        let err = table_layout(&request(f, "id")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
        assert!(err.to_string().contains("EMAIL"), "{err}");

        let err = table_layout(&request(fields(), "closed_on")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
        assert!(
            err.to_string().contains("integer, a decimal or a string"),
            "{err}"
        );

        // A decimal key joins and fingerprints as its canonical text.
        let mut f = fields();
        f.push(Field::new("code", DataType::Decimal128(12, 2), true));
        assert!(table_layout(&request(f, "code")).is_ok());

        let mut r = request(fields(), "id");
        r.table = "../etc".into();
        let err = table_layout(&r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
        let mut f = fields();
        f.push(Field::new(LOAD_ID_COLUMN, DataType::Utf8, true));
        let err = table_layout(&request(f, "id")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
    }

    #[test]
    fn table_names() {
        assert_eq!(table_name_problem("contacts"), None);
        assert_eq!(table_name_problem("deal-stages_2.v1"), None);
        assert!(table_name_problem("").is_some());
        assert!(table_name_problem(".hidden").is_some());
        assert!(table_name_problem("a/b").is_some());
        assert!(table_name_problem("a b").is_some());
        assert!(table_name_problem("_syncline_x").is_some());
    }
}
