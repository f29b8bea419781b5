//! The column layout of one stream in PostgreSQL, derived from a merge request and validated
//! before any SQL is built: staged columns (what COPY writes), carried columns (what reaches
//! the destination table) and the destination's own bookkeeping columns.

use crate::destinations::MergeRequest;
use crate::load::DeleteMode;
use crate::schema::{DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, is_system_column};
use crate::{Error, Result};

use super::sql::ident_problem;
use super::types::{Column, PgType};
use crate::destinations::staged::{NameRules, check_staged_schema};

/// How a stream's table looks in PostgreSQL.
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
    /// Validates the request's names and types. Unsupported types and reserved or unusable
    /// names are `Error::SchemaDrift`; a key missing from the staged schema is `Error::Config`.
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
                case_insensitive: None,
            },
        )?;
        let staged = request
            .schema
            .fields()
            .iter()
            .map(|field| {
                let pg_type = PgType::from_arrow(field.data_type()).ok_or_else(|| {
                    Error::SchemaDrift(format!(
                        "stream `{stream}`: column `{}` has type {}, which the postgres \
                         destination does not support",
                        field.name(),
                        field.data_type()
                    ))
                })?;
                Ok(Column::new(field.name().clone(), pg_type))
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
        columns.push(Column::new(LOAD_ID_COLUMN, PgType::Text));
        if self.deletes == DeleteMode::Soft {
            columns.push(Column::new(DELETED_AT_COLUMN, PgType::Timestamptz));
        }
        columns
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::schema::VERSION_COLUMN;

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::reconcile::Fingerprint;
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
            version_field(),
            deleted_field(),
        ]
    }

    #[test]
    fn splits_staged_carried_and_data_columns() {
        let layout = TableLayout::from_request(&request(fields(), "id", DeleteMode::Soft)).unwrap();
        let names = |columns: Vec<&Column>| -> Vec<String> {
            columns.into_iter().map(|c| c.name.clone()).collect()
        };
        assert_eq!(names(layout.data().collect()), vec!["email"]);
        assert_eq!(
            names(layout.carried().collect()),
            vec!["id", "email", VERSION_COLUMN]
        );
        assert_eq!(
            names(layout.target_columns().iter().collect()),
            vec![
                "id",
                "email",
                VERSION_COLUMN,
                LOAD_ID_COLUMN,
                DELETED_AT_COLUMN
            ]
        );
    }

    #[test]
    fn hard_delete_tables_have_no_deleted_at() {
        let layout = TableLayout::from_request(&request(fields(), "id", DeleteMode::Hard)).unwrap();
        assert!(
            layout
                .target_columns()
                .iter()
                .all(|c| c.name != DELETED_AT_COLUMN)
        );
    }

    #[test]
    fn unknown_key_is_a_config_error() {
        let err =
            TableLayout::from_request(&request(fields(), "Id", DeleteMode::Hard)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }

    #[test]
    fn unsupported_type_is_drift() {
        let mut f = fields();
        f.push(Field::new("amount", DataType::Decimal128(12, 2), true));
        let err = TableLayout::from_request(&request(f, "id", DeleteMode::Hard)).unwrap_err();
        assert!(
            matches!(err, Error::SchemaDrift(ref m) if m.contains("amount")),
            "{err:?}"
        );
    }

    #[test]
    fn reserved_and_overlong_names_are_drift() {
        let mut f = fields();
        f.push(Field::new(LOAD_ID_COLUMN, DataType::Utf8, true));
        let err = TableLayout::from_request(&request(f, "id", DeleteMode::Hard)).unwrap_err();
        assert!(matches!(err, Error::SchemaDrift(_)), "{err:?}");

        let mut f = fields();
        f.push(Field::new("x".repeat(64), DataType::Utf8, true));
        let err = TableLayout::from_request(&request(f, "id", DeleteMode::Hard)).unwrap_err();
        assert!(
            matches!(err, Error::SchemaDrift(ref m) if m.contains("63")),
            "{err:?}"
        );
    }
}
