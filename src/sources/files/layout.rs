//! The staged layout of a file stream: which columns there are, in what order, with which
//! types, and which of them carry the key, cursor, version and delete flag.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::FilesError;
use super::config::{ColumnType, FileStreamConfig};
use crate::config::KeyError;
use crate::schema::{deleted_field, timestamp_type, version_field};
use crate::{Error, Result};

/// One data column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnType,
}

/// Data columns in staged order (the key first), and the staged schema they make.
#[derive(Debug)]
pub struct Layout {
    pub schema: SchemaRef,
    pub columns: Vec<Column>,
    /// Indexes into `columns`.
    pub cursor: Option<usize>,
    pub version: Option<usize>,
    pub deleted: Option<usize>,
    by_name: HashMap<String, usize>,
}

impl Layout {
    /// Builds the layout from columns in file order (declared or inferred). `stream` names
    /// the config table in errors.
    pub fn new(
        stream: &str,
        config: &FileStreamConfig,
        file_columns: Vec<(String, ColumnType)>,
    ) -> Result<Layout> {
        let key_error = |name: &str, message: String| -> Error {
            FilesError::Key(KeyError::new(&["source", "files", stream, name], &message)).into()
        };
        let Some(key_at) = file_columns.iter().position(|(n, _)| *n == config.key) else {
            return Err(key_error(
                "key",
                format!(
                    "names {:?}, which the files do not have (columns: {})",
                    config.key,
                    names(&file_columns)
                ),
            ));
        };
        let mut columns: Vec<Column> = Vec::with_capacity(file_columns.len());
        let (key_name, key_kind) = &file_columns[key_at];
        columns.push(Column {
            name: key_name.clone(),
            // Keys stage as int64 or utf8; anything else is compared as text.
            kind: match key_kind {
                ColumnType::Int64 => ColumnType::Int64,
                _ => ColumnType::Utf8,
            },
        });
        for (i, (name, kind)) in file_columns.iter().enumerate() {
            if i != key_at {
                columns.push(Column {
                    name: name.clone(),
                    kind: *kind,
                });
            }
        }
        let by_name: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let find = |setting: &str,
                    column: &Option<String>,
                    allowed: &[ColumnType],
                    wanted: &str| {
            let Some(column) = column else {
                return Ok(None);
            };
            let Some(&at) = by_name.get(column) else {
                return Err(key_error(
                    setting,
                    format!(
                        "names {column:?}, which the files do not have (columns: {})",
                        names(&file_columns)
                    ),
                ));
            };
            if !allowed.contains(&columns[at].kind) {
                return Err(key_error(
                    setting,
                    format!(
                        "names {column:?}, which holds {:?} values; it must be {wanted} (declare its type in [source.files.{stream}.schema])",
                        columns[at].kind
                    ),
                ));
            }
            Ok(Some(at))
        };
        let cursor = find(
            "cursor_column",
            &config.cursor_column,
            &[ColumnType::Int64, ColumnType::Timestamp],
            "int64 or timestamp",
        )?;
        let version = find(
            "version_column",
            &config.version_column,
            &[ColumnType::Int64, ColumnType::Timestamp],
            "timestamp or int64 (epoch milliseconds)",
        )?;
        let deleted = find(
            "deleted_column",
            &config.deleted_column,
            &[ColumnType::Boolean],
            "boolean",
        )?;
        let mut fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(&c.name, data_type(c.kind), i != 0))
            .collect();
        fields.push(version_field());
        fields.push(deleted_field());
        Ok(Layout {
            schema: Arc::new(Schema::new(fields)),
            columns,
            cursor,
            version,
            deleted,
            by_name,
        })
    }

    /// The column of a name, if the layout has it.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

/// The staged Arrow type of a column type.
pub fn data_type(kind: ColumnType) -> DataType {
    match kind {
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Utf8 => DataType::Utf8,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Date32 => DataType::Date32,
        ColumnType::Timestamp => timestamp_type(),
        ColumnType::Decimal(precision, scale) => DataType::Decimal128(precision, scale as i8),
    }
}

fn names(columns: &[(String, ColumnType)]) -> String {
    columns
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
