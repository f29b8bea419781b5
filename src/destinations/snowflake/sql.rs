//! The SQL the snowflake destination sends: templates from `sql/snowflake/*.sql` (one statement
//! per file), identifier and literal quoting, the stage URL of a load, and the statements of one
//! merge rendered for a table layout.
//!
//! Identifiers are always quoted by [`quote_ident`]. The few values in statements (load id,
//! stream, counts, the stage URL, staged file names) are syncline's own, and still go through
//! [`quote_literal`]: the connector's binds are not used because the emulator the tests run
//! against cannot bind inside `MERGE` and `COPY`.

use crate::Result;
use crate::destinations::layout::{self, column_defs};
use crate::destinations::plan::{
    Compare, TOMBSTONE_COLUMN, TOMBSTONE_TABLE, Value, assignments, insert_lists,
};
use crate::load::DeleteMode;
use crate::reconcile::drift::{Key, ListRequest};
use crate::schema::{DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, VERSION_COLUMN};
use crate::sql::{render, with_vars};

use super::SnowflakeError;
use super::types::{Column, TableLayout};

/// The statement templates, embedded at build time.
pub(crate) mod templates {
    pub const CREATE_SCHEMA: &str = include_str!("../../../sql/snowflake/create_schema.sql");
    pub const CREATE_LEDGER: &str = include_str!("../../../sql/snowflake/create_ledger.sql");
    pub const LEDGER_LOOKUP: &str = include_str!("../../../sql/snowflake/ledger_lookup.sql");
    pub const LEDGER_INSERT: &str = include_str!("../../../sql/snowflake/ledger_insert.sql");
    pub const LEDGER_LAST: &str = include_str!("../../../sql/snowflake/ledger_last.sql");
    pub const TABLE_COLUMNS: &str = include_str!("../../../sql/snowflake/table_columns.sql");
    pub const CREATE_TABLE: &str = include_str!("../../../sql/snowflake/create_table.sql");
    pub const ADD_COLUMN: &str = include_str!("../../../sql/snowflake/add_column.sql");
    pub const CREATE_STAGE: &str = include_str!("../../../sql/snowflake/create_stage.sql");
    pub const CREATE_INCOMING: &str = include_str!("../../../sql/snowflake/create_incoming.sql");
    pub const BEGIN: &str = include_str!("../../../sql/snowflake/begin.sql");
    pub const COPY_INCOMING: &str = include_str!("../../../sql/snowflake/copy_incoming.sql");
    pub const FINGERPRINT: &str = include_str!("../../../sql/snowflake/fingerprint.sql");
    pub const LIST_KEYS: &str = include_str!("../../../sql/snowflake/list_keys.sql");
    pub const MERGE: &str = include_str!("../../../sql/snowflake/merge.sql");
    pub const DELETE_HARD: &str = include_str!("../../../sql/snowflake/delete_hard.sql");
    pub const DELETE_SOFT: &str = include_str!("../../../sql/snowflake/delete_soft.sql");
    pub const SOFT_DELETED_COUNT: &str =
        include_str!("../../../sql/snowflake/soft_deleted_count.sql");
    pub const COMMIT: &str = include_str!("../../../sql/snowflake/commit.sql");
    pub const ROLLBACK: &str = include_str!("../../../sql/snowflake/rollback.sql");
    pub const DROP_INCOMING: &str = include_str!("../../../sql/snowflake/drop_incoming.sql");
    pub const CREATE_TOMBSTONES: &str =
        include_str!("../../../sql/snowflake/create_tombstones.sql");
    pub const ORPHAN_TOMBSTONES: &str =
        include_str!("../../../sql/snowflake/orphan_tombstones.sql");
    pub const DELETE_ORPHANS_HARD: &str =
        include_str!("../../../sql/snowflake/delete_orphans_hard.sql");
    pub const DELETE_ORPHANS_SOFT: &str =
        include_str!("../../../sql/snowflake/delete_orphans_soft.sql");
    pub const INSERT_DELETED: &str = include_str!("../../../sql/snowflake/insert_deleted.sql");
    pub const RECORD_TOMBSTONES: &str =
        include_str!("../../../sql/snowflake/record_tombstones.sql");
    pub const DROP_TABLE: &str = include_str!("../../../sql/snowflake/drop_table.sql");
    pub const REPLACE_TABLE: &str = include_str!("../../../sql/snowflake/replace_table.sql");
}

/// The ledger table, in the destination schema.
pub(crate) const LEDGER_TABLE: &str = "_syncline_loads";
/// Per-table names of the external stage and the transient table a load is copied into.
const STAGE_PREFIX: &str = "_syncline_stage_";
const INCOMING_PREFIX: &str = "_syncline_in_";

pub use crate::sql::{qualified, quote_ident};

/// A Snowflake string literal. Snowflake reads backslash escapes inside single quotes, so
/// backslashes are doubled as well as quotes.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

pub(crate) fn create_schema(schema: &str) -> String {
    render(
        templates::CREATE_SCHEMA,
        &[("schema", &quote_ident(schema))],
    )
}

pub(crate) fn create_ledger(schema: &str) -> String {
    render(
        templates::CREATE_LEDGER,
        &[("ledger", &qualified(schema, LEDGER_TABLE))],
    )
}

/// The side table of hard deletes' tombstones (see `destinations::plan`).
pub(crate) fn create_tombstones(schema: &str) -> String {
    render(
        templates::CREATE_TOMBSTONES,
        &[("tombstones", &qualified(schema, TOMBSTONE_TABLE))],
    )
}

pub(crate) fn ledger_lookup(schema: &str, load_id: &str) -> String {
    render(
        templates::LEDGER_LOOKUP,
        &[
            ("ledger", &qualified(schema, LEDGER_TABLE)),
            ("load_id", &quote_literal(load_id)),
        ],
    )
}

pub(crate) fn ledger_last(schema: &str, stream: &str) -> String {
    render(
        templates::LEDGER_LAST,
        &[
            ("ledger", &qualified(schema, LEDGER_TABLE)),
            ("stream", &quote_literal(stream)),
        ],
    )
}

/// What the ledger records for one committed load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LedgerRow<'a> {
    pub load_id: &'a str,
    pub stream: &'a str,
    pub rows: u64,
    pub checksum: u64,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

pub(crate) fn ledger_insert(schema: &str, row: LedgerRow<'_>) -> String {
    render(
        templates::LEDGER_INSERT,
        &[
            ("ledger", &qualified(schema, LEDGER_TABLE)),
            ("load_id", &quote_literal(row.load_id)),
            ("stream", &quote_literal(row.stream)),
            ("rows", &row.rows.to_string()),
            // Text, as postgres keeps it: a u64 checksum does not survive every client's numbers.
            ("checksum", &quote_literal(&row.checksum.to_string())),
            ("inserted", &row.inserted.to_string()),
            ("updated", &row.updated.to_string()),
            ("deleted", &row.deleted.to_string()),
        ],
    )
}

pub(crate) fn table_columns(schema: &str, table: &str) -> String {
    render(
        templates::TABLE_COLUMNS,
        &[
            ("schema", &quote_literal(schema)),
            ("table", &quote_literal(table)),
        ],
    )
}

pub(crate) fn drop_table(schema: &str, table: &str) -> String {
    render(
        templates::DROP_TABLE,
        &[("table", &qualified(schema, table))],
    )
}

/// Replaces `target` with a copy of `build` in one statement: Snowflake runs a
/// `CREATE OR REPLACE` as one transaction (the old table dropped and the new one created
/// together), so a reader sees the old rows or the new ones. `COPY GRANTS` keeps the
/// privileges granted on the old table.
pub(crate) fn replace_table(schema: &str, target: &str, build: &str) -> String {
    render(
        templates::REPLACE_TABLE,
        &[
            ("target", &qualified(schema, target)),
            ("build", &qualified(schema, build)),
        ],
    )
}

pub(crate) fn create_table(schema: &str, layout: &TableLayout, columns: &[Column]) -> String {
    layout::create_table(templates::CREATE_TABLE, schema, layout, columns)
}

pub(crate) fn add_column(schema: &str, table: &str, column: &Column) -> String {
    layout::add_column(templates::ADD_COLUMN, schema, table, column)
}

/// Count and checksum of the live rows of a destination table (see crate::reconcile), as if
/// each were an upsert at its current version. Returns `row_count`, `sum_high`, `sum_low`
/// (see [`super::fingerprint_from_sums`]).
pub(crate) fn table_fingerprint(
    schema: &str,
    table: &str,
    key: &str,
    deletes: DeleteMode,
) -> String {
    let live = match deletes {
        DeleteMode::Hard => "TRUE".to_string(),
        DeleteMode::Soft => format!("{} IS NULL", quote_ident(DELETED_AT_COLUMN)),
    };
    render(
        templates::FINGERPRINT,
        &[
            ("key", &quote_ident(key)),
            ("version", &quote_ident(VERSION_COLUMN)),
            ("deleted_flag", "'f'"),
            ("source", &qualified(schema, table)),
            ("live", &live),
        ],
    )
}

/// One page of `syncline reconcile`'s listing of a table's live rows, sorted by key: the key
/// and the version (µs) as text, after the key `after` (the last one of the page before).
/// Keyset pages, so each query is small and the listing never holds the table.
pub(crate) fn list_keys(
    schema: &str,
    request: &ListRequest,
    after: Option<&Key>,
    limit: usize,
) -> String {
    let key = quote_ident(&request.key);
    let live = match request.deletes {
        DeleteMode::Hard => "TRUE".to_string(),
        DeleteMode::Soft => format!("{} IS NULL", quote_ident(DELETED_AT_COLUMN)),
    };
    let after = match after {
        None => String::new(),
        Some(Key::Int(value)) => format!(" AND {key} > {value}"),
        Some(Key::Text(value)) => format!(
            " AND {key} > '{}'",
            value.replace('\\', "\\\\").replace('\'', "''")
        ),
    };
    render(
        templates::LIST_KEYS,
        &[
            ("key", &key),
            ("version", &quote_ident(VERSION_COLUMN)),
            ("table", &qualified(schema, &request.table)),
            ("live", &live),
            ("after", &after),
            ("limit", &limit.to_string()),
        ],
    )
}

/// Where Snowflake reads a load's staged files: the folder holding them, as a URL under
/// `stage_url`, and the file names relative to it (`COPY ... FILES = (...)`).
///
/// `files` are object store paths under the staging root (the manifest's); `staging_url` is
/// `staging.url`, and `stage_url` the same location as Snowflake names it.
pub(crate) fn stage_location(
    staging_url: &str,
    stage_url: &str,
    files: &[String],
) -> Result<(String, Vec<String>), SnowflakeError> {
    let first = files.first().ok_or(SnowflakeError::NoStagedFiles)?;
    let folder = match first.rfind('/') {
        Some(slash) => &first[..slash],
        None => "",
    };
    let mut names = Vec::with_capacity(files.len());
    for file in files {
        let name = file
            .strip_prefix(folder)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|name| !name.contains('/'))
            .ok_or_else(|| SnowflakeError::FileOutsideFolder {
                file: file.clone(),
                folder: folder.to_owned(),
            })?;
        names.push(name.to_string());
    }

    // Object store paths are relative to the store (bucket, or `/` for files): rebuild the
    // folder's URL from the staging URL's scheme and authority, then swap the staging prefix
    // for the one Snowflake sees.
    let parsed = url::Url::parse(staging_url).map_err(|source| SnowflakeError::NotAUrl {
        key: "staging.url",
        source,
    })?;
    let authority = parsed.host_str().unwrap_or("");
    let folder_url = format!("{}://{authority}/{folder}", parsed.scheme());
    let staging_prefix = staging_url.trim_end_matches('/');
    let rest = folder_url.strip_prefix(staging_prefix).ok_or_else(|| {
        SnowflakeError::FolderOutsideStaging {
            folder_url: folder_url.clone(),
            staging_prefix: staging_prefix.to_owned(),
        }
    })?;
    Ok((format!("{}{rest}/", stage_url.trim_end_matches('/')), names))
}

/// The incoming rows' columns as the MERGE reads them (`i.*`), with each staged decimal the
/// table holds as text (`TableLayout::as_text`) as its canonical text: Snowflake's
/// `TO_VARCHAR` of a `NUMBER(p, s)` keeps every digit of the scale (`12.50`).
fn incoming_row(layout: &TableLayout) -> String {
    if layout.as_text.is_empty() {
        return "i.*".to_owned();
    }
    layout
        .staged
        .iter()
        .map(|column| {
            let name = quote_ident(&column.name);
            if layout.as_text.iter().any(|c| c.name == column.name) {
                format!("TO_VARCHAR(i.{name}) AS {name}")
            } else {
                format!("i.{name}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every statement of one merge, rendered for a table layout and one load.
#[derive(Debug, Clone)]
pub(crate) struct MergeSql {
    pub ledger_lookup: String,
    pub create_stage: String,
    pub create_incoming: String,
    pub begin: String,
    pub copy_incoming: String,
    pub staged_fingerprint: String,
    pub merge: String,
    /// Soft deletes only: a row marked deleted for each delete of a key the table lacks.
    pub insert_deleted: Option<String>,
    /// Hard deletes only: a tombstone for each delete, raised to the newest delete's version.
    pub record_tombstones: Option<String>,
    /// Soft deletes only: rows this load marked deleted, run after `insert_deleted` (MERGE
    /// counts the soft deletes among its updates).
    pub soft_deleted_count: Option<String>,
    /// A complete full load: the orphans' tombstones (hard deletes), then their delete (see
    /// `plan::Orphans`); run after `soft_deleted_count`, which must not count them.
    pub orphans: Option<OrphanSql>,
    pub commit: String,
    pub rollback: String,
    pub drop_incoming: String,
}

/// The statements that delete a complete full load's orphans.
#[derive(Debug, Clone)]
pub(crate) struct OrphanSql {
    pub tombstones: Option<String>,
    pub delete: String,
}

/// What a merge needs besides the table layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MergeTarget<'a> {
    pub schema: &'a str,
    pub load_id: &'a str,
    /// URL of the load's folder as Snowflake sees it (from [`stage_location`]).
    pub stage_url: &'a str,
    pub files: &'a [String],
    pub storage_integration: Option<&'a str>,
}

impl MergeSql {
    pub(crate) fn new(target: MergeTarget<'_>, layout: &TableLayout) -> MergeSql {
        let plan = layout.merge_plan();
        let schema = target.schema;
        let table = qualified(schema, plan.table);
        let stage = qualified(schema, &format!("{STAGE_PREFIX}{}", plan.table));
        let incoming = qualified(schema, &format!("{INCOMING_PREFIX}{}", plan.table));
        let key = quote_ident(plan.key);
        let version = quote_ident(VERSION_COLUMN);
        let deleted = quote_ident(DELETED_COLUMN);
        let load_id = quote_ident(LOAD_ID_COLUMN);
        let deleted_at = quote_ident(DELETED_AT_COLUMN);
        let load_id_value = quote_literal(target.load_id);

        let changed: Vec<String> = plan
            .compared
            .iter()
            .map(|term| match term {
                Compare::Column(column) => {
                    let column = quote_ident(column);
                    format!("t.{column} IS DISTINCT FROM s.{column}")
                }
                Compare::SoftDeleted => format!("t.{deleted_at} IS NOT NULL"),
            })
            .collect();
        let mut insert = plan.insert.clone();
        let (delete_template, tie_guard) = match plan.deletes {
            DeleteMode::Hard => (templates::DELETE_HARD, String::new()),
            DeleteMode::Soft => {
                // Spelled out although it is the column's default: the statement then says
                // every column a new row gets.
                insert.push((DELETED_AT_COLUMN, Value::Null));
                // A delete wins a tie: an update at the delete's own version does not revive it.
                (
                    templates::DELETE_SOFT,
                    format!("\n    AND (t.{deleted_at} IS NULL OR s.{version} > t.{version})"),
                )
            }
        };
        let (columns, values) = insert_lists(&insert, &load_id_value);
        let update_set = assignments(&plan.update, &load_id_value);
        let soft_delete_set = assignments(&plan.soft_delete, &load_id_value);

        let tombstones = qualified(schema, TOMBSTONE_TABLE);
        let tombstone = quote_ident(TOMBSTONE_COLUMN);
        let table_name = quote_literal(plan.table);
        let incoming_row = incoming_row(layout);
        let common: [(&str, &str); 13] = [
            ("incoming_row", &incoming_row),
            ("target", &table),
            ("tombstones", &tombstones),
            ("tombstone", &tombstone),
            ("table_name", &table_name),
            ("stage", &stage),
            ("incoming", &incoming),
            ("key", &key),
            ("version", &version),
            ("deleted", &deleted),
            ("load_id", &load_id),
            ("deleted_at", &deleted_at),
            ("load_id_value", &load_id_value),
        ];
        let storage_integration = target
            .storage_integration
            .map(|name| format!("\n    STORAGE_INTEGRATION = {}", quote_ident(name)))
            .unwrap_or_default();
        let files = target
            .files
            .iter()
            .map(|name| quote_literal(name))
            .collect::<Vec<_>>()
            .join(", ");
        let delete_clause = render(
            delete_template,
            &with_vars(
                &common,
                &[("assignments", &soft_delete_set.join(",\n    "))],
            ),
        );

        MergeSql {
            ledger_lookup: ledger_lookup(schema, target.load_id),
            create_stage: render(
                templates::CREATE_STAGE,
                &with_vars(
                    &common,
                    &[
                        ("url", &quote_literal(target.stage_url)),
                        ("storage_integration", &storage_integration),
                    ],
                ),
            ),
            // The stage's own types: a decimal the table holds as text is converted in the
            // MERGE (`incoming_row`), by Snowflake's own TO_VARCHAR, not by COPY.
            create_incoming: render(
                templates::CREATE_INCOMING,
                &with_vars(
                    &common,
                    &[("column_defs", &column_defs(&layout.staged_as_sent()))],
                ),
            ),
            begin: templates::BEGIN.to_string(),
            copy_incoming: render(
                templates::COPY_INCOMING,
                &with_vars(&common, &[("files", &files)]),
            ),
            staged_fingerprint: render(
                templates::FINGERPRINT,
                &[
                    ("key", &key),
                    ("version", &version),
                    ("deleted_flag", &format!("IFF({deleted}, 't', 'f')")),
                    ("source", &incoming),
                    ("live", "TRUE"),
                ],
            ),
            merge: render(
                templates::MERGE,
                &with_vars(
                    &common,
                    &[
                        ("delete_clause", delete_clause.trim_end()),
                        ("tie_guard", &tie_guard),
                        ("changed", &changed.join("\n        OR ")),
                        ("assignments", &update_set.join(",\n    ")),
                        ("columns", &columns.join(", ")),
                        ("values", &values.join(", ")),
                    ],
                ),
            ),
            insert_deleted: plan.insert_deleted.as_ref().map(|set| {
                let (columns, values) = insert_lists(set, &load_id_value);
                render(
                    templates::INSERT_DELETED,
                    &with_vars(
                        &common,
                        &[
                            ("columns", &columns.join(", ")),
                            ("values", &values.join(", ")),
                        ],
                    ),
                )
            }),
            record_tombstones: plan
                .tombstones
                .then(|| render(templates::RECORD_TOMBSTONES, &common)),
            soft_deleted_count: (plan.deletes == DeleteMode::Soft)
                .then(|| render(templates::SOFT_DELETED_COUNT, &common)),
            orphans: plan.orphans.map(|orphans| {
                let as_of = format!(
                    "CAST({} AS TIMESTAMP_TZ)",
                    quote_literal(
                        &orphans
                            .as_of
                            .format("%Y-%m-%d %H:%M:%S%.6f+00:00")
                            .to_string()
                    )
                );
                OrphanSql {
                    tombstones: plan
                        .tombstones
                        .then(|| render(templates::ORPHAN_TOMBSTONES, &common)),
                    delete: match plan.deletes {
                        DeleteMode::Hard => render(templates::DELETE_ORPHANS_HARD, &common),
                        DeleteMode::Soft => render(
                            templates::DELETE_ORPHANS_SOFT,
                            &with_vars(&common, &[("as_of", &as_of)]),
                        ),
                    },
                }
            }),
            commit: templates::COMMIT.to_string(),
            rollback: templates::ROLLBACK.to_string(),
            drop_incoming: render(templates::DROP_INCOMING, &common),
        }
    }

    /// All statements in execution order, as one script (for review and snapshots).
    #[cfg(test)]
    pub(crate) fn script(&self) -> String {
        let mut statements = vec![
            ("ledger_lookup", &self.ledger_lookup),
            ("create_stage", &self.create_stage),
            ("create_incoming", &self.create_incoming),
            ("begin", &self.begin),
            ("copy_incoming", &self.copy_incoming),
            ("staged_fingerprint", &self.staged_fingerprint),
            ("ledger_lookup", &self.ledger_lookup),
            ("merge", &self.merge),
        ];
        if let Some(insert_deleted) = &self.insert_deleted {
            statements.push(("insert_deleted", insert_deleted));
        }
        if let Some(record_tombstones) = &self.record_tombstones {
            statements.push(("record_tombstones", record_tombstones));
        }
        if let Some(count) = &self.soft_deleted_count {
            statements.push(("soft_deleted_count", count));
        }
        if let Some(orphans) = &self.orphans {
            if let Some(tombstones) = &orphans.tombstones {
                statements.push(("orphan_tombstones", tombstones));
            }
            statements.push(("delete_orphans", &orphans.delete));
        }
        statements.push(("commit", &self.commit));
        statements.push(("drop_incoming", &self.drop_incoming));
        crate::sql::script(&statements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::layout::snapshot_request;
    use crate::destinations::snowflake::types::SfType;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"Lead "Score""#), r#""Lead ""Score""""#);
        assert_eq!(qualified("crm", "Deal Stage"), r#""crm"."Deal Stage""#);
        assert_eq!(quote_literal(r"it's a\b"), r"'it''s a\\b'");
        assert_eq!(
            add_column("crm", "contacts", &Column::new("x\"; --", SfType::Float)).trim_end(),
            r#"ALTER TABLE "crm"."contacts" ADD COLUMN IF NOT EXISTS "x""; --" FLOAT"#
        );
    }

    #[test]
    fn stage_location_maps_the_staging_prefix() {
        let files = vec![
            "stage/p/contacts/loads/L1/part-00000.parquet".to_string(),
            "stage/p/contacts/loads/L1/part-00001.parquet".to_string(),
        ];
        let (url, names) = stage_location("s3://bucket/stage", "s3://alias/x", &files).unwrap();
        assert_eq!(url, "s3://alias/x/p/contacts/loads/L1/");
        assert_eq!(names, ["part-00000.parquet", "part-00001.parquet"]);

        let local = vec!["tmp/s/p/c/loads/L/part-00000.parquet".to_string()];
        let (url, _) = stage_location("file:///tmp/s/", "file:///tmp/s", &local).unwrap();
        assert_eq!(url, "file:///tmp/s/p/c/loads/L/");

        let outside = stage_location("s3://bucket/elsewhere", "s3://bucket/elsewhere", &files);
        assert!(outside.is_err());
        let split = vec![
            "stage/a/part-0.parquet".to_string(),
            "stage/b/part-1.parquet".to_string(),
        ];
        assert!(stage_location("s3://bucket/stage", "s3://bucket/stage", &split).is_err());
    }

    fn layout(deletes: DeleteMode) -> TableLayout {
        TableLayout::from_request(&snapshot_request(deletes)).unwrap()
    }

    fn merge_sql(deletes: DeleteMode) -> MergeSql {
        let files = [
            "part-00000.parquet".to_string(),
            "part-00001.parquet".to_string(),
        ];
        MergeSql::new(
            MergeTarget {
                schema: "crm",
                load_id: "load-1",
                stage_url: "s3://bucket/stage/p/contacts/loads/load-1/",
                files: &files,
                storage_integration: Some("syncline_s3"),
            },
            &layout(deletes),
        )
    }

    #[test]
    fn create_table_sql() {
        let layout = layout(DeleteMode::Soft);
        insta::assert_snapshot!(create_table("crm", &layout, &layout.target_columns()));
    }

    #[test]
    fn merge_sql_hard_deletes() {
        insta::assert_snapshot!(merge_sql(DeleteMode::Hard).script());
    }

    #[test]
    fn merge_sql_soft_deletes() {
        insta::assert_snapshot!(merge_sql(DeleteMode::Soft).script());
    }

    #[test]
    fn ledger_and_fingerprint_sql() {
        let script = [
            create_ledger("crm"),
            ledger_insert(
                "crm",
                LedgerRow {
                    load_id: "load-1",
                    stream: "contacts",
                    rows: 3,
                    checksum: u64::MAX,
                    inserted: 1,
                    updated: 1,
                    deleted: 1,
                },
            ),
            ledger_last("crm", "contacts"),
            table_fingerprint("crm", "Contacts", "id", DeleteMode::Soft),
        ]
        .map(|statement| statement.trim_end().to_string())
        .join(";\n\n");
        insta::assert_snapshot!(script);
    }
}
