//! The column layout of one stream's table, the same in every destination: the staged columns
//! (what a load carries), the carried columns (what reaches the table), the bookkeeping columns
//! the destination adds, and what an existing table needs before a load can be merged into it
//! (columns to add, columns to widen, or drift that must stop the stream).
//!
//! Each destination only says, through [`ColumnType`], which of its types holds each staged
//! kind of value, how an existing column's type takes it, and how it names things.
//!
//! One compatibility rule is shared beyond a type's own [`ColumnType::fit`]: a staged decimal
//! whose table column holds text (a table created when the same field was staged as text, as
//! PostgreSQL-source `numeric(p,s)` columns were before decimals) loads as text, the decimal's
//! canonical string with its scale (`12.50`, [`crate::schema::decimal_strings`]), which is what
//! such tables already hold; see [`TableLayout::adopt`]. Text holds every decimal exactly, so
//! nothing is lost; a decimal into any other type keeps to `fit` (an integer or float column
//! would round it: drift).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::MergeRequest;
use super::plan::{Compare, MergePlan, Orphans, Value};
use super::staged::{Naming, StagedType, check_staged_schema};
use crate::Result;
use crate::error::{Classified, ErrorKind};
use crate::load::DeleteMode;
use crate::schema::{
    DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, VERSION_COLUMN, decimal_strings,
    is_system_column,
};
use crate::sql::render;
use crate::sql::{qualified, quote_ident};

/// Why a merge request's table and columns cannot be laid out in a destination, or an
/// existing table cannot take them. Names the stream or table and the columns, never values.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A table name the destination cannot use: the user's to fix in the stream's config.
    #[error("stream `{stream}`: {destination} table name `{table}` {problem}")]
    BadTableName {
        stream: String,
        destination: &'static str,
        table: String,
        problem: String,
    },
    /// The key the config names is not a data column of what the source sends.
    #[error("stream `{stream}`: key column `{key}` is not a data column of the staged schema")]
    KeyNotStaged { stream: String, key: String },
    #[error("stream `{stream}`: column `{column}` {problem}")]
    UnusableColumn {
        stream: String,
        column: String,
        problem: String,
    },
    #[error("stream `{stream}`: column `{column}` uses the reserved prefix `_syncline_`")]
    ReservedColumn { stream: String, column: String },
    #[error(
        "stream `{stream}`: columns `{first}` and `{second}` differ only by case, which the \
         destination cannot tell apart ({why})"
    )]
    ColumnsDifferByCase {
        stream: String,
        first: String,
        second: String,
        why: &'static str,
    },
    #[error("stream `{stream}`: column `{column}` appears twice in the staged schema")]
    DuplicateColumn { stream: String, column: String },
    #[error(
        "stream `{stream}`: column `{column}` has type {data_type}, which the {destination} \
         destination does not support"
    )]
    UnsupportedType {
        stream: String,
        column: String,
        data_type: DataType,
        destination: &'static str,
    },
    /// Existing columns that cannot take what the source now sends; nothing was altered.
    #[error(
        "{destination} table `{table}`: {}; change the column or the source field by hand, then \
         re-run (the staged load is kept)",
        drift_list(columns)
    )]
    Drift {
        destination: &'static str,
        table: String,
        columns: Vec<ColumnDrift>,
    },
    /// Staging wrote a schema without proper system columns: a bug in staging, not the source.
    #[error(
        "stream `{stream}`: the staged schema lacks `{VERSION_COLUMN}` as a UTC millisecond or \
         microsecond timestamp"
    )]
    NoVersionColumn { stream: String },
    #[error("stream `{stream}`: the staged schema lacks `{DELETED_COLUMN}` as a boolean")]
    NoDeletedColumn { stream: String },
}

/// Names the config or SQL gets wrong are configuration errors; what the source changed is
/// schema drift; a broken staged schema is the destination's.
impl Classified for LayoutError {
    fn kind(&self) -> ErrorKind {
        match self {
            LayoutError::BadTableName { .. } | LayoutError::KeyNotStaged { .. } => {
                ErrorKind::Config
            }
            LayoutError::UnusableColumn { .. }
            | LayoutError::ReservedColumn { .. }
            | LayoutError::ColumnsDifferByCase { .. }
            | LayoutError::DuplicateColumn { .. }
            | LayoutError::UnsupportedType { .. }
            | LayoutError::Drift { .. } => ErrorKind::SchemaDrift,
            LayoutError::NoVersionColumn { .. } | LayoutError::NoDeletedColumn { .. } => {
                ErrorKind::Destination
            }
        }
    }
}

/// One existing column that cannot take what a load sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnDrift {
    /// The column's type cannot hold the source's values.
    Type {
        column: String,
        /// As the destination's catalog names it.
        table_type: String,
        source_type: String,
    },
    /// A new column whose name differs only in case from an existing one, in a destination
    /// that folds names.
    Case {
        column: String,
        existing: String,
        why: &'static str,
    },
}

impl fmt::Display for ColumnDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnDrift::Type {
                column,
                table_type,
                source_type,
            } => write!(
                f,
                "column `{column}` is {table_type} in the table but the source now sends \
                 {source_type}"
            ),
            ColumnDrift::Case {
                column,
                existing,
                why,
            } => write!(
                f,
                "column `{column}` differs only in case from the table's column `{existing}` \
                 ({why})"
            ),
        }
    }
}

fn drift_list(columns: &[ColumnDrift]) -> String {
    columns
        .iter()
        .map(ColumnDrift::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A destination's column type.
pub(crate) trait ColumnType: Copy + Eq + fmt::Debug {
    /// An existing column's type as the destination's catalog describes it; its `Display` is
    /// how drift messages name it.
    type Existing: fmt::Display;

    /// How the destination names tables and columns.
    const NAMING: Naming;

    /// The type that holds every value of a staged kind.
    fn of(staged: StagedType) -> Self;

    /// The type as the destination spells it (DDL, logs, drift messages); owned only for
    /// the types with parameters (a decimal's precision and scale).
    fn name(self) -> Cow<'static, str>;

    /// What an existing column of type `existing` needs to take this type's values.
    fn fit(self, existing: &Self::Existing) -> Fit;

    /// The type for a staged Arrow type, or `None` when syncline does not load it.
    fn from_arrow(data_type: &DataType) -> Option<Self> {
        StagedType::from_arrow(data_type).map(Self::of)
    }
}

/// How an existing column takes the values of the type a load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// As it is: the same type, or one that holds and compares every value (the source
    /// narrowed a field, or it always was narrower than the column).
    Fits,
    /// After it is altered to the load's type, which loses none of the values it holds (the
    /// source widened the field). Only destinations that can alter a type in place say so.
    Widens,
    /// Not at all: someone must change the column or the source field.
    Drifts,
}

/// A column with its destination type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column<T> {
    pub name: String,
    pub ty: T,
}

impl<T> Column<T> {
    pub(crate) fn new(name: impl Into<String>, ty: T) -> Column<T> {
        Column {
            name: name.into(),
            ty,
        }
    }
}

/// How a stream's table looks in a destination.
#[derive(Debug, Clone)]
pub(crate) struct TableLayout<T> {
    /// Destination table name, unquoted.
    pub table: String,
    /// Key column name, unquoted.
    pub key: String,
    /// Every staged column in the staged schema's order, system columns included.
    pub staged: Vec<Column<T>>,
    pub deletes: DeleteMode,
    /// A complete full load's orphans (see [`MergeRequest::complete`]).
    pub orphans: Option<Orphans>,
    /// Staged decimal columns, by name: the ones the text rule may apply to.
    decimals: Vec<String>,
    /// Staged decimal columns the existing table holds as text, with their staged type (see
    /// [`TableLayout::adopt`]); in `staged` they have the destination's text type.
    pub as_text: Vec<Column<T>>,
}

/// What an existing table needs before a load can be merged into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alterations<T> {
    /// Columns the table lacks (the source grew fields), in the table layout's order.
    pub add: Vec<Column<T>>,
    /// Columns whose type the source widened; the values they hold convert without loss.
    pub widen: Vec<Widening<T>>,
}

/// One column to alter to a wider type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Widening<T> {
    pub column: String,
    /// The column's type now, as the destination's catalog names it.
    pub from: String,
    pub to: T,
}

impl<T: ColumnType> TableLayout<T> {
    /// Validates the request's names and types. A bad table name or a key missing from the
    /// staged schema is a configuration error; unsupported types and reserved or unusable
    /// column names are schema drift (see [`check_staged_schema`] and [`LayoutError`]).
    pub(crate) fn from_request(request: &MergeRequest) -> Result<TableLayout<T>, LayoutError> {
        let naming = T::NAMING;
        let stream = &request.stream;
        let table_problem = (naming.table_problem)(&request.table).or_else(|| {
            is_system_column(&request.table)
                .then(|| "uses the reserved prefix `_syncline_`".to_owned())
        });
        if let Some(problem) = table_problem {
            return Err(LayoutError::BadTableName {
                stream: stream.clone(),
                destination: naming.destination,
                table: request.table.clone(),
                problem,
            });
        }

        check_staged_schema(request, &naming)?;
        let decimals = request
            .schema
            .fields()
            .iter()
            .filter(|field| {
                matches!(
                    StagedType::from_arrow(field.data_type()),
                    Some(StagedType::Decimal { .. })
                )
            })
            .map(|field| field.name().clone())
            .collect();
        let staged = request
            .schema
            .fields()
            .iter()
            .map(|field| {
                let ty = T::from_arrow(field.data_type()).ok_or_else(|| {
                    LayoutError::UnsupportedType {
                        stream: stream.clone(),
                        column: field.name().clone(),
                        data_type: field.data_type().clone(),
                        destination: naming.destination,
                    }
                })?;
                Ok(Column::new(field.name().clone(), ty))
            })
            .collect::<Result<Vec<_>, LayoutError>>()?;

        Ok(TableLayout {
            table: request.table.clone(),
            key: request.key.clone(),
            staged,
            deletes: request.deletes,
            orphans: request.complete.map(|as_of| Orphans { as_of }),
            decimals,
            as_text: Vec::new(),
        })
    }

    /// How an existing column of type `current` takes the staged column `column` under the
    /// text rule (module docs): `Some` when `column` is a staged decimal the column does not
    /// take as a decimal but takes as text (as is, or once widened to the text type). The one
    /// place that rule is decided, for the check ([`Self::alterations`]) and the merge
    /// ([`Self::adopt`]) alike.
    fn takes_as_text(&self, column: &Column<T>, current: &T::Existing) -> Option<Fit> {
        if !self.decimals.contains(&column.name) || column.ty.fit(current) != Fit::Drifts {
            return None;
        }
        match T::of(StagedType::Text).fit(current) {
            Fit::Drifts => None,
            fit => Some(fit),
        }
    }

    /// Takes the existing table's columns (`(name, type)` as the destination's catalog
    /// reports them) into the layout before a merge: each staged decimal the table holds as
    /// text (see [`Self::takes_as_text`]) gets the destination's text type in `staged`, and
    /// joins [`Self::as_text`] with its staged type, so the destination converts its values to
    /// their canonical strings on the way in. Pure; anything else is left to
    /// [`Self::alterations`], which `ensure_table` ran before.
    pub(crate) fn adopt(&mut self, existing: &[(String, T::Existing)]) {
        let text = T::of(StagedType::Text);
        let mut as_text = Vec::new();
        for column in &self.staged {
            let current = existing.iter().find(|(name, _)| *name == column.name);
            if let Some((_, current)) = current {
                if self.takes_as_text(column, current).is_some() {
                    as_text.push(column.clone());
                }
            }
        }
        for column in &mut self.staged {
            if as_text.iter().any(|decimal| decimal.name == column.name) {
                column.ty = text;
            }
        }
        self.as_text = as_text;
    }

    /// Whether the load stages a decimal, so that [`Self::adopt`] may change something (a
    /// destination reads the table's columns before a merge only then).
    pub(crate) fn has_decimals(&self) -> bool {
        !self.decimals.is_empty()
    }

    /// `batches` with every column of [`Self::as_text`] replaced by its canonical strings
    /// ([`crate::schema::decimal_strings`]); `batches` as they are when there is none.
    pub(crate) fn sending_as_text(
        &self,
        batches: BoxStream<'static, Result<RecordBatch>>,
    ) -> BoxStream<'static, Result<RecordBatch>> {
        if self.as_text.is_empty() {
            return batches;
        }
        let names: Vec<String> = self.as_text.iter().map(|c| c.name.clone()).collect();
        batches
            .map(move |batch| decimals_as_text(batch?, &names))
            .boxed()
    }

    /// Every staged column with the type the stage holds it in (a column in
    /// [`Self::as_text`] with its staged decimal type, not the text it loads as).
    pub(crate) fn staged_as_sent(&self) -> Vec<Column<T>> {
        self.staged
            .iter()
            .map(|column| {
                self.as_text
                    .iter()
                    .find(|decimal| decimal.name == column.name)
                    .unwrap_or(column)
                    .clone()
            })
            .collect()
    }

    /// Staged columns that reach the destination table: all but `_syncline_deleted`.
    pub(crate) fn carried(&self) -> impl Iterator<Item = &Column<T>> {
        self.staged
            .iter()
            .filter(|column| column.name != DELETED_COLUMN)
    }

    /// Data columns: neither the key nor a system column.
    pub(crate) fn data(&self) -> impl Iterator<Item = &Column<T>> {
        self.staged
            .iter()
            .filter(|column| column.name != self.key && !is_system_column(&column.name))
    }

    /// Every column the destination table must have: the carried columns, the load id, and
    /// the delete time in soft-delete mode.
    pub(crate) fn target_columns(&self) -> Vec<Column<T>> {
        let mut columns: Vec<Column<T>> = self.carried().cloned().collect();
        columns.push(Column::new(LOAD_ID_COLUMN, T::of(StagedType::Text)));
        if self.deletes == DeleteMode::Soft {
            columns.push(Column::new(DELETED_AT_COLUMN, T::of(StagedType::Timestamp)));
        }
        columns
    }

    /// Compares the table's columns with the existing ones (`(name, type)` as the
    /// destination's catalog reports them). Pure, so the decision is testable without a server.
    ///
    /// Fails with [`LayoutError::Drift`] naming every incompatible column with both types; then
    /// nothing is to be altered, so the table stays as it was and the staged load can be merged
    /// once resolved. Existing columns the load does not carry are left alone (a field the
    /// source dropped).
    pub(crate) fn alterations(
        &self,
        existing: &[(String, T::Existing)],
    ) -> Result<Alterations<T>, LayoutError> {
        let mut alterations = Alterations {
            add: Vec::new(),
            widen: Vec::new(),
        };
        let mut drift = Vec::new();
        for column in self.target_columns() {
            let same_name = existing.iter().find(|(name, _)| *name == column.name);
            let other_case = || {
                let why = T::NAMING.table_case_insensitive?;
                let (name, _) = existing
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(&column.name))?;
                Some((name, why))
            };
            if let Some((_, current)) = same_name {
                // A decimal into a text column loads as text (module docs).
                let (fit, to) = match self.takes_as_text(&column, current) {
                    Some(fit) => (fit, T::of(StagedType::Text)),
                    None => (column.ty.fit(current), column.ty),
                };
                match fit {
                    Fit::Fits => {}
                    Fit::Widens => alterations.widen.push(Widening {
                        column: column.name,
                        from: current.to_string(),
                        to,
                    }),
                    Fit::Drifts => drift.push(ColumnDrift::Type {
                        column: column.name,
                        table_type: current.to_string(),
                        source_type: column.ty.name().into_owned(),
                    }),
                }
            } else if let Some((name, why)) = other_case() {
                drift.push(ColumnDrift::Case {
                    column: column.name,
                    existing: name.clone(),
                    why,
                });
            } else {
                alterations.add.push(column);
            }
        }
        if drift.is_empty() {
            Ok(alterations)
        } else {
            Err(LayoutError::Drift {
                destination: T::NAMING.destination,
                table: self.table.clone(),
                columns: drift,
            })
        }
    }

    /// What a merge into this table writes, in no dialect.
    pub(crate) fn merge_plan(&self) -> MergePlan<'_> {
        let data: Vec<&str> = self.data().map(|column| column.name.as_str()).collect();

        // A live row rewrites a table row only if something differs, so re-reading an overlap
        // merges nothing; bringing back a soft-deleted row is a difference.
        let mut compared: Vec<Compare<'_>> = data.iter().map(|c| Compare::Column(c)).collect();
        compared.push(Compare::Column(VERSION_COLUMN));
        let mut update: Vec<(&str, Value<'_>)> =
            data.iter().map(|c| (*c, Value::Incoming(c))).collect();
        update.push((VERSION_COLUMN, Value::Incoming(VERSION_COLUMN)));
        update.push((LOAD_ID_COLUMN, Value::LoadId));
        if self.deletes == DeleteMode::Soft {
            compared.push(Compare::SoftDeleted);
            update.push((DELETED_AT_COLUMN, Value::Null));
        }

        let mut insert: Vec<(&str, Value<'_>)> = self
            .carried()
            .map(|column| (column.name.as_str(), Value::Incoming(&column.name)))
            .collect();
        insert.push((LOAD_ID_COLUMN, Value::LoadId));

        MergePlan {
            table: &self.table,
            key: &self.key,
            deletes: self.deletes,
            staged: self.staged.iter().map(|c| c.name.as_str()).collect(),
            compared,
            update,
            insert,
            soft_delete: vec![
                (DELETED_AT_COLUMN, Value::Incoming(VERSION_COLUMN)),
                (VERSION_COLUMN, Value::Incoming(VERSION_COLUMN)),
                (LOAD_ID_COLUMN, Value::LoadId),
            ],
            // Only what says which key was deleted when: the row's data is unknown.
            insert_deleted: (self.deletes == DeleteMode::Soft).then(|| {
                vec![
                    (self.key.as_str(), Value::Incoming(&self.key)),
                    (VERSION_COLUMN, Value::Incoming(VERSION_COLUMN)),
                    (DELETED_AT_COLUMN, Value::Incoming(VERSION_COLUMN)),
                    (LOAD_ID_COLUMN, Value::LoadId),
                ]
            }),
            tombstones: self.deletes == DeleteMode::Hard,
            orphans: self.orphans,
        }
    }
}

/// `batch` with its decimal columns named in `names` replaced by their canonical strings.
fn decimals_as_text(batch: RecordBatch, names: &[String]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match column.as_any().downcast_ref::<Decimal128Array>() {
            Some(decimals) if names.contains(field.name()) => {
                fields.push(Field::new(
                    field.name(),
                    DataType::Utf8,
                    field.is_nullable(),
                ));
                columns.push(Arc::new(decimal_strings(decimals)));
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(Arc::clone(column));
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Column definitions for SQL DDL (`"name" type`, one a line), in the given order.
pub(crate) fn column_defs<T: ColumnType>(columns: &[Column<T>]) -> String {
    columns
        .iter()
        .map(|column| format!("{} {}", quote_ident(&column.name), column.ty.name()))
        .collect::<Vec<_>>()
        .join(",\n    ")
}

/// A SQL destination's `CREATE TABLE` template (`{table}`, `{column_defs}`, `{key}`) rendered
/// with `columns`, keyed on the layout's key.
pub(crate) fn create_table<T: ColumnType>(
    template: &str,
    schema: &str,
    layout: &TableLayout<T>,
    columns: &[Column<T>],
) -> String {
    render(
        template,
        &[
            ("table", &qualified(schema, &layout.table)),
            ("column_defs", &column_defs(columns)),
            ("key", &quote_ident(&layout.key)),
        ],
    )
}

/// A SQL destination's `ADD COLUMN` template (`{table}`, `{column}`, `{type}`) rendered.
pub(crate) fn add_column<T: ColumnType>(
    template: &str,
    schema: &str,
    table: &str,
    column: &Column<T>,
) -> String {
    render(
        template,
        &[
            ("table", &qualified(schema, table)),
            ("column", &quote_ident(&column.name)),
            ("type", &column.ty.name()),
        ],
    )
}

/// A merge request of `fields` into `table` (stream of the same name), for tests.
#[cfg(test)]
pub(crate) fn test_request(
    table: &str,
    key: &str,
    deletes: DeleteMode,
    fields: Vec<arrow::datatypes::Field>,
) -> MergeRequest {
    MergeRequest {
        load_id: "load-1".into(),
        stream: table.into(),
        table: table.into(),
        key: key.into(),
        deletes,
        schema: std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        staged: crate::reconcile::Fingerprint::default(),
        files: Vec::new(),
        complete: None,
    }
}

/// The request the SQL snapshot tests render: a table whose name needs quoting for its case,
/// and a column whose name holds a double quote.
#[cfg(test)]
pub(crate) fn snapshot_request(deletes: DeleteMode) -> MergeRequest {
    use arrow::datatypes::Field;

    use crate::schema::{deleted_field, version_field};

    test_request(
        "Contacts",
        "id",
        deletes,
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
            Field::new(r#"Lead "Score""#, DataType::Float64, true),
            Field::new("closed_on", DataType::Date32, true),
            version_field(),
            deleted_field(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Field;

    use super::*;
    use crate::schema::{deleted_field, version_field};

    /// A destination of four types: an integer load fits a float column, and a float load
    /// widens an integer column.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Toy {
        Int,
        Float,
        Text,
        Time,
    }

    impl ColumnType for Toy {
        type Existing = String;

        const NAMING: Naming = Naming {
            destination: "toy",
            table_problem: |name| name.contains('/').then(|| "contains `/`".to_owned()),
            column_problem: |name| name.is_empty().then(|| "has an empty name".to_owned()),
            staged_case_insensitive: None,
            table_case_insensitive: None,
        };

        fn of(staged: StagedType) -> Toy {
            match staged {
                StagedType::Integer | StagedType::Boolean => Toy::Int,
                StagedType::Float | StagedType::Decimal { .. } => Toy::Float,
                StagedType::Text => Toy::Text,
                StagedType::Date | StagedType::Timestamp => Toy::Time,
            }
        }

        fn name(self) -> Cow<'static, str> {
            Cow::Borrowed(match self {
                Toy::Int => "int",
                Toy::Float => "float",
                Toy::Text => "text",
                Toy::Time => "time",
            })
        }

        fn fit(self, existing: &String) -> Fit {
            match (self, existing.as_str()) {
                (ty, existing) if ty.name() == existing => Fit::Fits,
                (Toy::Int, "float") => Fit::Fits,
                (Toy::Float, "int") => Fit::Widens,
                _ => Fit::Drifts,
            }
        }
    }

    fn request(fields: Vec<Field>, key: &str, deletes: DeleteMode) -> MergeRequest {
        test_request("contacts", key, deletes, fields)
    }

    fn fields() -> Vec<Field> {
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
            version_field(),
            deleted_field(),
        ]
    }

    fn layout(deletes: DeleteMode) -> TableLayout<Toy> {
        TableLayout::from_request(&request(fields(), "id", deletes)).unwrap()
    }

    fn names<'a>(columns: impl IntoIterator<Item = &'a Column<Toy>>) -> Vec<&'a str> {
        columns.into_iter().map(|c| c.name.as_str()).collect()
    }

    fn existing(columns: &[(&str, &str)]) -> Vec<(String, String)> {
        columns
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn each_destination_maps_every_staged_kind() {
        use crate::destinations::lake::types::LakeType;
        use crate::destinations::postgres::types::PgType;
        use crate::destinations::snowflake::types::SfType;

        let mappings = [
            (StagedType::Integer, "bigint", "NUMBER(38, 0)", "long"),
            (StagedType::Float, "double precision", "FLOAT", "double"),
            (StagedType::Text, "text", "VARCHAR", "string"),
            (StagedType::Boolean, "boolean", "BOOLEAN", "boolean"),
            (StagedType::Date, "date", "DATE", "date"),
            (
                StagedType::Timestamp,
                "timestamp with time zone",
                "TIMESTAMP_TZ",
                "timestamp",
            ),
        ];
        let decimal = StagedType::Decimal {
            precision: 18,
            scale: 2,
        };
        let mappings = mappings.into_iter().chain([(
            decimal,
            "numeric(18,2)",
            "NUMBER(18, 2)",
            "decimal(18,2)",
        )]);
        for (kind, postgres, snowflake, lake) in mappings {
            assert_eq!(
                (
                    PgType::of(kind).name(),
                    SfType::of(kind).name(),
                    LakeType::of(kind).name()
                ),
                (postgres.into(), snowflake.into(), lake.into()),
                "{kind:?}"
            );
        }
        // A staged Decimal128 keeps its precision and scale in every destination.
        let decimal = DataType::Decimal128(10, 2);
        assert_eq!(PgType::from_arrow(&decimal), Some(PgType::Numeric(10, 2)));
        assert_eq!(SfType::from_arrow(&decimal), Some(SfType::Decimal(10, 2)));
        assert_eq!(
            LakeType::from_arrow(&decimal),
            Some(LakeType::Decimal(10, 2))
        );
        // Decimals no destination holds (more than 38 digits, a negative scale) stay
        // unsupported everywhere.
        for unsupported in [DataType::Decimal256(40, 2), DataType::Decimal128(10, -2)] {
            assert_eq!(PgType::from_arrow(&unsupported), None);
            assert_eq!(SfType::from_arrow(&unsupported), None);
            assert_eq!(LakeType::from_arrow(&unsupported), None);
        }
    }

    #[test]
    fn splits_staged_carried_data_and_target_columns() {
        let soft = layout(DeleteMode::Soft);
        assert_eq!(
            names(&soft.staged),
            ["id", "email", VERSION_COLUMN, DELETED_COLUMN]
        );
        assert_eq!(names(soft.carried()), ["id", "email", VERSION_COLUMN]);
        assert_eq!(names(soft.data()), ["email"]);
        let target = soft.target_columns();
        assert_eq!(
            names(&target),
            [
                "id",
                "email",
                VERSION_COLUMN,
                LOAD_ID_COLUMN,
                DELETED_AT_COLUMN
            ]
        );
        // The bookkeeping columns take the destination's text and timestamp types.
        assert_eq!(target[3].ty, Toy::Text);
        assert_eq!(target[4].ty, Toy::Time);

        let hard = layout(DeleteMode::Hard);
        assert_eq!(
            names(&hard.target_columns()),
            ["id", "email", VERSION_COLUMN, LOAD_ID_COLUMN]
        );
    }

    #[test]
    fn rejects_bad_table_names_keys_and_types() {
        let mut bad_table = request(fields(), "id", DeleteMode::Hard);
        bad_table.table = "a/b".into();
        let err = TableLayout::<Toy>::from_request(&bad_table).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
        assert!(
            err.to_string()
                .contains("toy table name `a/b` contains `/`"),
            "{err}"
        );
        bad_table.table = "_syncline_x".into();
        let err = TableLayout::<Toy>::from_request(&bad_table).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
        assert!(err.to_string().contains("reserved prefix"), "{err}");

        let err = TableLayout::<Toy>::from_request(&request(fields(), "Id", DeleteMode::Hard))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");

        let mut f = fields();
        f.push(Field::new("amount", DataType::Decimal256(40, 2), true));
        let err =
            TableLayout::<Toy>::from_request(&request(f, "id", DeleteMode::Hard)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("`amount`")
                && message.contains("the toy destination does not support"),
            "{message}"
        );

        let mut f = fields();
        f.push(Field::new(LOAD_ID_COLUMN, DataType::Utf8, true));
        let err =
            TableLayout::<Toy>::from_request(&request(f, "id", DeleteMode::Hard)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
    }

    #[test]
    fn adds_missing_columns_and_keeps_matching_and_wider_ones() {
        let layout = layout(DeleteMode::Soft);
        let plan = layout
            .alterations(&existing(&[
                ("id", "float"),
                ("email", "text"),
                (VERSION_COLUMN, "time"),
                ("dropped", "text"),
            ]))
            .unwrap();
        assert_eq!(
            plan,
            Alterations {
                add: vec![
                    Column::new(LOAD_ID_COLUMN, Toy::Text),
                    Column::new(DELETED_AT_COLUMN, Toy::Time),
                ],
                widen: Vec::new(),
            }
        );
    }

    #[test]
    fn widens_a_column_the_source_widened() {
        let mut f = fields();
        f.push(Field::new("score", DataType::Float64, true));
        let layout = TableLayout::<Toy>::from_request(&request(f, "id", DeleteMode::Hard)).unwrap();
        let plan = layout
            .alterations(&existing(&[
                ("id", "int"),
                ("email", "text"),
                ("score", "int"),
                (VERSION_COLUMN, "time"),
                (LOAD_ID_COLUMN, "text"),
            ]))
            .unwrap();
        assert_eq!(
            plan,
            Alterations {
                add: Vec::new(),
                widen: vec![Widening {
                    column: "score".into(),
                    from: "int".into(),
                    to: Toy::Float,
                }],
            }
        );
    }

    #[test]
    fn drift_names_the_table_every_column_and_both_types() {
        let layout = layout(DeleteMode::Hard);
        let err = layout
            .alterations(&existing(&[("id", "text"), ("email", "int")]))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
        match &err {
            LayoutError::Drift { columns, .. } => {
                assert_eq!(columns.len(), 2, "{columns:?}");
                let message = err.to_string();
                assert!(message.starts_with("toy table `contacts`: "), "{message}");
                assert!(
                    message
                        .contains("column `id` is text in the table but the source now sends int"),
                    "{message}"
                );
                assert!(
                    message.contains(
                        "column `email` is int in the table but the source now sends text"
                    ),
                    "{message}"
                );
                assert!(message.contains("the staged load is kept"), "{message}");
            }
            other => panic!("expected schema drift, got {other:?}"),
        }
    }

    #[test]
    fn a_decimal_loads_as_text_into_a_text_column_and_drifts_into_a_number_column() {
        let mut f = fields();
        f.push(Field::new("amount", DataType::Decimal128(18, 2), true));
        let staged = TableLayout::<Toy>::from_request(&request(f, "id", DeleteMode::Hard)).unwrap();
        assert!(staged.has_decimals());
        let table = |amount: &str| {
            existing(&[
                ("id", "int"),
                ("email", "text"),
                ("amount", amount),
                (VERSION_COLUMN, "time"),
                (LOAD_ID_COLUMN, "text"),
            ])
        };

        // A text column takes the decimal as text: nothing to alter, and the merge's layout
        // sends the column as text while remembering its staged type.
        let text = table("text");
        assert_eq!(
            staged.alterations(&text).unwrap(),
            Alterations {
                add: Vec::new(),
                widen: Vec::new(),
            }
        );
        let mut merging = staged.clone();
        merging.adopt(&text);
        assert_eq!(merging.as_text, [Column::new("amount", Toy::Float)]);
        let amount = |layout: &TableLayout<Toy>| {
            layout
                .staged
                .iter()
                .find(|c| c.name == "amount")
                .unwrap()
                .ty
        };
        assert_eq!(amount(&merging), Toy::Text);
        assert_eq!(
            merging
                .staged_as_sent()
                .iter()
                .find(|c| c.name == "amount")
                .unwrap()
                .ty,
            Toy::Float
        );
        // Adopting is idempotent, and the check passes on the adopted layout too.
        assert!(merging.alterations(&text).unwrap().widen.is_empty());

        // Any other column keeps to the type's own `fit` (an integer or float column would
        // round a decimal); here drift, and the merge's layout is unchanged.
        let err = staged.alterations(&table("time")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
        assert!(
            err.to_string()
                .contains("column `amount` is time in the table but the source now sends float"),
            "{err}"
        );
        let mut merging = staged.clone();
        merging.adopt(&table("time"));
        assert!(merging.as_text.is_empty());
        assert_eq!(amount(&merging), Toy::Float);

        // A text column the source sends text for is no decimal: the rule does not apply.
        let plain = layout(DeleteMode::Hard);
        assert!(!plain.has_decimals());
    }

    #[test]
    fn a_decimal_widens_a_postgres_varchar_to_text_and_drifts_into_a_double() {
        use crate::destinations::postgres::types::PgType;

        let mut f = fields();
        f.push(Field::new("amount", DataType::Decimal128(18, 2), true));
        let staged =
            TableLayout::<PgType>::from_request(&request(f, "id", DeleteMode::Hard)).unwrap();
        let table = |amount: &str| {
            existing(&[
                ("id", "bigint"),
                ("email", "text"),
                ("amount", amount),
                (VERSION_COLUMN, "timestamp with time zone"),
                (LOAD_ID_COLUMN, "text"),
            ])
        };
        assert_eq!(
            staged
                .alterations(&table("character varying"))
                .unwrap()
                .widen,
            [Widening {
                column: "amount".into(),
                from: "character varying".into(),
                to: PgType::Text,
            }]
        );
        for lossy in ["double precision", "bigint", "boolean"] {
            let err = staged.alterations(&table(lossy)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{lossy}: {err:?}");
        }
    }

    #[test]
    fn a_case_insensitive_table_refuses_a_column_differing_only_by_case() {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        struct Folding(Toy);
        impl ColumnType for Folding {
            type Existing = String;
            const NAMING: Naming = Naming {
                table_case_insensitive: Some("names fold"),
                ..Toy::NAMING
            };
            fn of(staged: StagedType) -> Folding {
                Folding(Toy::of(staged))
            }
            fn name(self) -> Cow<'static, str> {
                self.0.name()
            }
            fn fit(self, existing: &String) -> Fit {
                self.0.fit(existing)
            }
        }

        let existing = existing(&[("ID", "int"), ("email", "text")]);
        let folding =
            TableLayout::<Folding>::from_request(&request(fields(), "id", DeleteMode::Hard))
                .unwrap();
        let err = folding.alterations(&existing).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
        assert!(
            err.to_string().contains(
                "column `id` differs only in case from the table's column `ID` (names fold)"
            ),
            "{err}"
        );
        // Where names keep their case, it is a new column.
        let plan = layout(DeleteMode::Hard).alterations(&existing).unwrap();
        assert_eq!(names(&plan.add), ["id", VERSION_COLUMN, LOAD_ID_COLUMN]);
    }

    fn set_columns<'a>(set: &[(&'a str, Value<'a>)]) -> Vec<&'a str> {
        set.iter().map(|(column, _)| *column).collect()
    }

    #[test]
    fn merge_plan_lists_what_each_clause_writes() {
        // The key need not come first.
        let staged = vec![
            Field::new("email", DataType::Utf8, true),
            Field::new("id", DataType::Int64, false),
            version_field(),
            deleted_field(),
        ];
        let hard =
            TableLayout::<Toy>::from_request(&request(staged.clone(), "id", DeleteMode::Hard))
                .unwrap();
        let plan = hard.merge_plan();
        assert_eq!((plan.table, plan.key), ("contacts", "id"));
        assert_eq!(plan.staged, ["email", "id", VERSION_COLUMN, DELETED_COLUMN]);
        assert_eq!(
            plan.compared,
            [Compare::Column("email"), Compare::Column(VERSION_COLUMN)]
        );
        assert_eq!(
            plan.update,
            [
                ("email", Value::Incoming("email")),
                (VERSION_COLUMN, Value::Incoming(VERSION_COLUMN)),
                (LOAD_ID_COLUMN, Value::LoadId),
            ]
        );
        assert_eq!(
            set_columns(&plan.insert),
            ["email", "id", VERSION_COLUMN, LOAD_ID_COLUMN]
        );
        assert!(plan.tombstones);
        assert!(plan.insert_deleted.is_none());

        let soft =
            TableLayout::<Toy>::from_request(&request(staged, "id", DeleteMode::Soft)).unwrap();
        let plan = soft.merge_plan();
        assert_eq!(plan.compared.last(), Some(&Compare::SoftDeleted));
        assert_eq!(plan.update.last(), Some(&(DELETED_AT_COLUMN, Value::Null)));
        // A row inserted live has no delete time: the column's default.
        assert_eq!(
            set_columns(&plan.insert),
            ["email", "id", VERSION_COLUMN, LOAD_ID_COLUMN]
        );
        assert_eq!(
            plan.soft_delete,
            [
                (DELETED_AT_COLUMN, Value::Incoming(VERSION_COLUMN)),
                (VERSION_COLUMN, Value::Incoming(VERSION_COLUMN)),
                (LOAD_ID_COLUMN, Value::LoadId),
            ]
        );
        // A delete of a key the table lacks is remembered as a row marked deleted.
        assert!(!plan.tombstones);
        assert_eq!(
            plan.insert_deleted.as_deref().map(set_columns),
            Some(vec![
                "id",
                VERSION_COLUMN,
                DELETED_AT_COLUMN,
                LOAD_ID_COLUMN
            ])
        );
    }
}
