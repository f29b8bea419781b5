//! The column layout of one stream's Delta table, derived from a merge request and validated
//! before anything touches storage: staged columns (what the load carries), carried columns
//! (what reaches the table), the destination's bookkeeping columns, and what an existing table
//! needs to accept a load (columns to add, or drift that must stop the stream).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::{DataType as DeltaType, PrimitiveType, StructField};

use crate::destinations::MergeRequest;
use crate::destinations::staged::is_utc;
use crate::destinations::staged::{NameRules, check_staged_schema};
use crate::load::DeleteMode;
use crate::schema::{DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, is_system_column};
use crate::{Error, Result};

/// Characters Parquet (and so Delta without column mapping) does not allow in column names,
/// plus `.`, which Delta expressions read as a path into a nested field.
const FORBIDDEN_COLUMN_CHARS: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '=', '.'];

/// The Delta types syncline writes. Every staged Arrow type maps to exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LakeType {
    Long,
    Double,
    String,
    Boolean,
    Date,
    /// Microseconds, UTC (Delta's `timestamp`); staged millisecond timestamps are cast up.
    Timestamp,
}

impl LakeType {
    /// The Delta type for a staged Arrow type, or `None` when syncline does not load it.
    pub(crate) fn from_arrow(data_type: &DataType) -> Option<LakeType> {
        match data_type {
            DataType::Int64 => Some(LakeType::Long),
            DataType::Float64 => Some(LakeType::Double),
            // Parquet readers and DataFusion may hand strings back as large or view arrays.
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(LakeType::String),
            DataType::Boolean => Some(LakeType::Boolean),
            DataType::Date32 => Some(LakeType::Date),
            DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(tz))
                if is_utc(tz) =>
            {
                Some(LakeType::Timestamp)
            }
            _ => None,
        }
    }

    /// The syncline type of an existing Delta column, or `None` for types syncline never writes.
    pub(crate) fn from_delta(data_type: &DeltaType) -> Option<LakeType> {
        match data_type {
            DeltaType::Primitive(PrimitiveType::Long) => Some(LakeType::Long),
            DeltaType::Primitive(PrimitiveType::Double) => Some(LakeType::Double),
            DeltaType::Primitive(PrimitiveType::String) => Some(LakeType::String),
            DeltaType::Primitive(PrimitiveType::Boolean) => Some(LakeType::Boolean),
            DeltaType::Primitive(PrimitiveType::Date) => Some(LakeType::Date),
            DeltaType::Primitive(PrimitiveType::Timestamp) => Some(LakeType::Timestamp),
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
        }
    }

    /// The type as Delta names it in a table schema.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LakeType::Long => "long",
            LakeType::Double => "double",
            LakeType::String => "string",
            LakeType::Boolean => "boolean",
            LakeType::Date => "date",
            LakeType::Timestamp => "timestamp",
        }
    }

    /// Whether a column of type `existing` holds every value of this type and compares with
    /// it, so the load merges into it as is (the source narrowed a field, or it always was
    /// narrower than the column). The merge casts on write.
    fn fits_in(self, existing: LakeType) -> bool {
        self == existing
            || matches!(
                (self, existing),
                (LakeType::Long, LakeType::Double) | (LakeType::Date, LakeType::Timestamp)
            )
    }
}

/// A column with its Delta type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub name: String,
    pub lake_type: LakeType,
}

impl Column {
    pub(crate) fn new(name: impl Into<String>, lake_type: LakeType) -> Column {
        Column {
            name: name.into(),
            lake_type,
        }
    }

    /// The column as a Delta schema field. Every column is nullable: columns added later hold
    /// nulls for older rows, and a null key or value is the source's to fix, not a reason to
    /// fail a merge halfway.
    pub(crate) fn struct_field(&self) -> StructField {
        StructField::new(self.name.clone(), self.lake_type.delta_type(), true)
    }
}

/// How a stream's table looks in the lake.
#[derive(Debug, Clone)]
pub(crate) struct TableLayout {
    /// Table name (a folder under the lake root).
    pub table: String,
    /// Key column name.
    pub key: String,
    /// Every staged column in the staged schema's order, system columns included.
    pub staged: Vec<Column>,
    pub deletes: DeleteMode,
}

impl TableLayout {
    /// Validates the request's names and types. Unsupported types and reserved or unusable
    /// column names are `Error::SchemaDrift`; a bad table name or a key missing from the
    /// staged schema is `Error::Config`.
    pub(crate) fn from_request(request: &MergeRequest) -> Result<TableLayout> {
        let stream = &request.stream;
        if let Some(problem) = table_name_problem(&request.table) {
            return Err(Error::Config(format!(
                "stream `{stream}`: lake table name `{}` {problem}",
                request.table
            )));
        }

        check_staged_schema(
            request,
            &NameRules {
                problem: &column_name_problem,
                case_insensitive: Some("Delta resolves column names case-insensitively"),
            },
        )?;
        let staged = request
            .schema
            .fields()
            .iter()
            .map(|field| {
                let lake_type = LakeType::from_arrow(field.data_type()).ok_or_else(|| {
                    Error::SchemaDrift(format!(
                        "stream `{stream}`: column `{}` has type {}, which the lake \
                         destination does not support",
                        field.name(),
                        field.data_type()
                    ))
                })?;
                Ok(Column::new(field.name().clone(), lake_type))
            })
            .collect::<Result<Vec<_>>>()?;
        let key = staged.iter().find(|column| column.name == request.key);
        if !matches!(key, Some(column) if matches!(column.lake_type, LakeType::Long | LakeType::String))
        {
            return Err(Error::Config(format!(
                "stream `{stream}`: key column `{}` must be an integer or a string",
                request.key
            )));
        }

        Ok(TableLayout {
            table: request.table.clone(),
            key: request.key.clone(),
            staged,
            deletes: request.deletes,
        })
    }

    /// Data columns: neither the key nor a system column.
    pub(crate) fn data(&self) -> impl Iterator<Item = &Column> {
        self.staged
            .iter()
            .filter(|column| column.name != self.key && !is_system_column(&column.name))
    }

    /// Every column the Delta table must have: the staged columns but `_syncline_deleted`,
    /// the load id, and the delete time in soft-delete mode.
    pub(crate) fn target_columns(&self) -> Vec<Column> {
        let mut columns: Vec<Column> = self
            .staged
            .iter()
            .filter(|column| column.name != DELETED_COLUMN)
            .cloned()
            .collect();
        columns.push(Column::new(LOAD_ID_COLUMN, LakeType::String));
        if self.deletes == DeleteMode::Soft {
            columns.push(Column::new(DELETED_AT_COLUMN, LakeType::Timestamp));
        }
        columns
    }

    /// The Arrow schema of the merge source: every staged column (system columns included) in
    /// its normalized type. All fields are nullable so that any staged batch fits it.
    pub(crate) fn source_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .staged
            .iter()
            .map(|column| Field::new(column.name.clone(), column.lake_type.arrow_type(), true))
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

/// Compares the columns a load needs with the table's existing columns (`(name, type)` as the
/// Delta schema holds them) and returns the columns to add. Pure, so the decision is testable
/// without storage.
///
/// Fails with `Error::SchemaDrift` naming every incompatible column; nothing is altered then,
/// so the table stays as it was and the staged data can be merged once resolved. Existing
/// columns the load does not carry are left alone (a field the source dropped). Widening a
/// column (long to double, date to timestamp) needs a table rewrite that syncline does not do,
/// so it is drift too.
pub(crate) fn plan_additions(
    table: &str,
    wanted: &[Column],
    existing: &[(String, DeltaType)],
) -> Result<Vec<Column>> {
    let mut additions = Vec::new();
    let mut drift = Vec::new();
    for column in wanted {
        if let Some((_, current)) = existing.iter().find(|(name, _)| *name == column.name) {
            let fits = LakeType::from_delta(current)
                .is_some_and(|current| column.lake_type.fits_in(current));
            if !fits {
                drift.push(format!(
                    "column `{}` is {} in the table but the source now sends {}",
                    column.name,
                    current,
                    column.lake_type.name()
                ));
            }
        } else if let Some((name, _)) = existing
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&column.name))
        {
            drift.push(format!(
                "column `{}` differs only in case from the table's column `{name}` (Delta column \
                 names are case-insensitive)",
                column.name
            ));
        } else {
            additions.push(column.clone());
        }
    }
    if drift.is_empty() {
        Ok(additions)
    } else {
        Err(Error::SchemaDrift(format!(
            "lake table `{table}`: {}; change the column or the source field by hand, then \
             re-run (the staged load is kept)",
            drift.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::Fingerprint;
    use crate::schema::VERSION_COLUMN;
    use crate::schema::{deleted_field, version_field};

    fn request(fields: Vec<Field>, key: &str, deletes: DeleteMode) -> MergeRequest {
        MergeRequest {
            load_id: "load-1".into(),
            stream: "contacts".into(),
            table: "contacts".into(),
            key: key.into(),
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
            Field::new("closed_on", DataType::Date32, true),
            version_field(),
            deleted_field(),
        ]
    }

    fn names(columns: &[Column]) -> Vec<&str> {
        columns.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn maps_the_supported_arrow_types() {
        assert_eq!(LakeType::from_arrow(&DataType::Int64), Some(LakeType::Long));
        assert_eq!(
            LakeType::from_arrow(&DataType::Float64),
            Some(LakeType::Double)
        );
        assert_eq!(
            LakeType::from_arrow(&DataType::Utf8View),
            Some(LakeType::String)
        );
        assert_eq!(
            LakeType::from_arrow(&DataType::Boolean),
            Some(LakeType::Boolean)
        );
        assert_eq!(
            LakeType::from_arrow(&DataType::Date32),
            Some(LakeType::Date)
        );
        assert_eq!(
            LakeType::from_arrow(&crate::schema::timestamp_type()),
            Some(LakeType::Timestamp)
        );
        assert_eq!(LakeType::from_arrow(&DataType::Int32), None);
        assert_eq!(
            LakeType::from_arrow(&DataType::Timestamp(TimeUnit::Millisecond, None)),
            None
        );
        for t in [
            LakeType::Long,
            LakeType::Double,
            LakeType::String,
            LakeType::Boolean,
            LakeType::Date,
            LakeType::Timestamp,
        ] {
            assert_eq!(LakeType::from_delta(&t.delta_type()), Some(t));
            assert_eq!(LakeType::from_arrow(&t.arrow_type()), Some(t));
            assert_eq!(t.delta_type().to_string(), t.name());
        }
    }

    #[test]
    fn accepts_microsecond_versions_and_data_columns() {
        let micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let fields = vec![
            Field::new("id", DataType::Int64, false),
            Field::new("changed_at", micros.clone(), true),
            Field::new(VERSION_COLUMN, micros, false),
            deleted_field(),
        ];
        let layout = TableLayout::from_request(&request(fields, "id", DeleteMode::Hard)).unwrap();
        let changed = layout.data().find(|c| c.name == "changed_at").unwrap();
        assert_eq!(changed.lake_type, LakeType::Timestamp);
    }

    #[test]
    fn target_columns_follow_the_delete_mode() {
        let soft = TableLayout::from_request(&request(fields(), "id", DeleteMode::Soft)).unwrap();
        assert_eq!(
            names(&soft.target_columns()),
            [
                "id",
                "email",
                "closed_on",
                VERSION_COLUMN,
                LOAD_ID_COLUMN,
                DELETED_AT_COLUMN
            ]
        );
        let hard = TableLayout::from_request(&request(fields(), "id", DeleteMode::Hard)).unwrap();
        assert_eq!(
            names(&hard.target_columns()),
            ["id", "email", "closed_on", VERSION_COLUMN, LOAD_ID_COLUMN]
        );
        let data: Vec<&str> = hard.data().map(|c| c.name.as_str()).collect();
        assert_eq!(data, ["email", "closed_on"]);
        let source = hard.source_schema();
        assert_eq!(
            source.field_with_name(VERSION_COLUMN).unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(source.field_with_name(DELETED_COLUMN).is_ok());
    }

    #[test]
    fn rejects_unusable_names_and_types() {
        let err =
            TableLayout::from_request(&request(fields(), "Id", DeleteMode::Hard)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");

        let mut f = fields();
        f.push(Field::new("Lead Score", DataType::Float64, true));
        let err = TableLayout::from_request(&request(f, "id", DeleteMode::Hard)).unwrap_err();
        assert!(
            matches!(err, Error::SchemaDrift(ref m) if m.contains("Lead Score")),
            "{err:?}"
        );

        let mut f = fields();
        f.push(Field::new("EMAIL", DataType::Utf8, true));
        let err = TableLayout::from_request(&request(f, "id", DeleteMode::Hard)).unwrap_err();
        assert!(
            matches!(err, Error::SchemaDrift(ref m) if m.contains("EMAIL")),
            "{err:?}"
        );

        let mut f = fields();
        f.push(Field::new(LOAD_ID_COLUMN, DataType::Utf8, true));
        let err = TableLayout::from_request(&request(f, "id", DeleteMode::Hard)).unwrap_err();
        assert!(matches!(err, Error::SchemaDrift(_)), "{err:?}");

        let mut f = fields();
        f.push(Field::new("amount", DataType::Decimal128(12, 2), true));
        let err = TableLayout::from_request(&request(f, "id", DeleteMode::Hard)).unwrap_err();
        assert!(
            matches!(err, Error::SchemaDrift(ref m) if m.contains("amount")),
            "{err:?}"
        );

        let mut r = request(fields(), "id", DeleteMode::Hard);
        r.table = "../etc".into();
        assert!(matches!(
            TableLayout::from_request(&r),
            Err(Error::Config(_))
        ));
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

    #[test]
    fn plans_additions_and_accepts_narrower_sources() {
        let wanted = vec![
            Column::new("id", LakeType::Long),
            Column::new("amount", LakeType::Long),
            Column::new("closed", LakeType::Date),
            Column::new("tier", LakeType::String),
        ];
        let existing = vec![
            ("id".to_owned(), DeltaType::LONG),
            ("amount".to_owned(), DeltaType::DOUBLE),
            ("closed".to_owned(), DeltaType::TIMESTAMP),
            ("dropped".to_owned(), DeltaType::STRING),
        ];
        let plan = plan_additions("deals", &wanted, &existing).unwrap();
        assert_eq!(plan, vec![Column::new("tier", LakeType::String)]);
    }

    #[test]
    fn incompatible_change_is_drift_naming_table_column_and_types() {
        let wanted = vec![
            Column::new("amount", LakeType::String),
            Column::new("score", LakeType::Double),
            Column::new("Owner", LakeType::String),
        ];
        let existing = vec![
            ("amount".to_owned(), DeltaType::LONG),
            ("score".to_owned(), DeltaType::LONG),
            ("owner".to_owned(), DeltaType::STRING),
        ];
        match plan_additions("deals", &wanted, &existing).unwrap_err() {
            Error::SchemaDrift(message) => {
                assert!(message.contains("`deals`"), "{message}");
                assert!(message.contains("`amount` is long"), "{message}");
                assert!(message.contains("sends string"), "{message}");
                assert!(message.contains("`score` is long"), "{message}");
                assert!(message.contains("`Owner`"), "{message}");
            }
            other => panic!("expected schema drift, got {other:?}"),
        }
    }
}
