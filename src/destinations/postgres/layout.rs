//! The column layout of one stream in PostgreSQL, derived from a merge request and validated
//! before any SQL is built: staged columns (what COPY writes), carried columns (what reaches
//! the destination table) and the destination's own bookkeeping columns.

use std::collections::HashSet;

use crate::config::DeleteMode;
use crate::destinations::MergeRequest;
use crate::schema::{
    DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, VERSION_COLUMN, is_system_column,
};
use crate::{Error, Result};

use super::sql::ident_problem;
use super::types::{Column, PgType};

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

        let mut seen = HashSet::new();
        let mut staged = Vec::with_capacity(request.schema.fields().len());
        for field in request.schema.fields() {
            let name = field.name();
            if let Some(problem) = ident_problem(name) {
                return Err(Error::SchemaDrift(format!(
                    "stream `{stream}`: column `{name}` {problem}"
                )));
            }
            if is_system_column(name) && name != VERSION_COLUMN && name != DELETED_COLUMN {
                return Err(Error::SchemaDrift(format!(
                    "stream `{stream}`: column `{name}` uses the reserved prefix `_syncline_`"
                )));
            }
            if !seen.insert(name.as_str()) {
                return Err(Error::SchemaDrift(format!(
                    "stream `{stream}`: column `{name}` appears twice in the staged schema"
                )));
            }
            let pg_type = PgType::from_arrow(field.data_type()).ok_or_else(|| {
                Error::SchemaDrift(format!(
                    "stream `{stream}`: column `{name}` has type {}, which the postgres \
                     destination does not support",
                    field.data_type()
                ))
            })?;
            staged.push(Column::new(name.clone(), pg_type));
        }

        let find = |name: &str| staged.iter().find(|column| column.name == name);
        if is_system_column(&request.key) || find(&request.key).is_none() {
            return Err(Error::Config(format!(
                "stream `{stream}`: key column `{}` is not a data column of the staged schema",
                request.key
            )));
        }
        match find(VERSION_COLUMN) {
            Some(column) if column.pg_type == PgType::Timestamptz => {}
            _ => {
                return Err(Error::Destination(format!(
                    "stream `{stream}`: the staged schema lacks `{VERSION_COLUMN}` as a UTC \
                     millisecond timestamp"
                )));
            }
        }
        match find(DELETED_COLUMN) {
            Some(column) if column.pg_type == PgType::Boolean => {}
            _ => {
                return Err(Error::Destination(format!(
                    "stream `{stream}`: the staged schema lacks `{DELETED_COLUMN}` as a boolean"
                )));
            }
        }

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
