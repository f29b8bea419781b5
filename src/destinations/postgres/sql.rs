//! The SQL the postgres destination sends: templates from `sql/postgres/*.sql` (one statement
//! per file), identifier quoting, and rendering of the statements for one table layout.
//!
//! Only identifiers are ever substituted into SQL, always quoted by [`quote_ident`]; values go
//! through COPY or bind parameters.

use crate::destinations::layout::{self, ColumnType, column_defs};
use crate::destinations::plan::{Compare, TOMBSTONE_TABLE, assignments, insert_lists};
use crate::load::DeleteMode;
use crate::reconcile::drift::{self, ListRequest};
use crate::reconcile::listing;
use crate::schema::{DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, VERSION_COLUMN};

pub(crate) use crate::sql::render;
use crate::sql::with_vars;

use super::types::{Column, PgType, TableLayout};

/// The statement templates, embedded at build time.
pub(crate) mod templates {
    pub const SESSION_SETUP: &str = include_str!("../../../sql/postgres/session_setup.sql");
    pub const LOCK_LEDGER_SETUP: &str = include_str!("../../../sql/postgres/lock_ledger_setup.sql");
    pub const SCHEMA_EXISTS: &str = include_str!("../../../sql/postgres/schema_exists.sql");
    pub const CREATE_SCHEMA: &str = include_str!("../../../sql/postgres/create_schema.sql");
    pub const CREATE_LEDGER: &str = include_str!("../../../sql/postgres/create_ledger.sql");
    pub const LEDGER_LOOKUP: &str = include_str!("../../../sql/postgres/ledger_lookup.sql");
    pub const LEDGER_INSERT: &str = include_str!("../../../sql/postgres/ledger_insert.sql");
    pub const LEDGER_LAST: &str = include_str!("../../../sql/postgres/ledger_last.sql");
    pub const TABLE_COLUMNS: &str = include_str!("../../../sql/postgres/table_columns.sql");
    pub const CREATE_TABLE: &str = include_str!("../../../sql/postgres/create_table.sql");
    pub const ADD_COLUMN: &str = include_str!("../../../sql/postgres/add_column.sql");
    pub const WIDEN_COLUMN: &str = include_str!("../../../sql/postgres/widen_column.sql");
    pub const CREATE_STAGE: &str = include_str!("../../../sql/postgres/create_stage.sql");
    pub const COPY_STAGE: &str = include_str!("../../../sql/postgres/copy_stage.sql");
    pub const STAGED_FINGERPRINT: &str =
        include_str!("../../../sql/postgres/staged_fingerprint.sql");
    pub const DEDUP_STAGE: &str = include_str!("../../../sql/postgres/dedup_stage.sql");
    pub const ANALYZE_DEDUP: &str = include_str!("../../../sql/postgres/analyze_dedup.sql");
    pub const SMALL_BESIDE_TABLE: &str =
        include_str!("../../../sql/postgres/small_beside_table.sql");
    pub const PREFER_INDEX_JOINS: &str =
        include_str!("../../../sql/postgres/prefer_index_joins.sql");
    pub const RESET_JOINS: &str = include_str!("../../../sql/postgres/reset_joins.sql");
    pub const DELETE_HARD: &str = include_str!("../../../sql/postgres/delete_hard.sql");
    pub const DELETE_SOFT: &str = include_str!("../../../sql/postgres/delete_soft.sql");
    pub const UPDATE: &str = include_str!("../../../sql/postgres/update.sql");
    pub const INSERT: &str = include_str!("../../../sql/postgres/insert.sql");
    pub const INSERT_DELETED: &str = include_str!("../../../sql/postgres/insert_deleted.sql");
    pub const CREATE_TOMBSTONES: &str = include_str!("../../../sql/postgres/create_tombstones.sql");
    pub const TOMBSTONE_GUARD: &str = include_str!("../../../sql/postgres/tombstone_guard.sql");
    pub const RECORD_TOMBSTONES: &str = include_str!("../../../sql/postgres/record_tombstones.sql");
    pub const ORPHAN_TOMBSTONES: &str = include_str!("../../../sql/postgres/orphan_tombstones.sql");
    pub const DELETE_ORPHANS_HARD: &str =
        include_str!("../../../sql/postgres/delete_orphans_hard.sql");
    pub const DELETE_ORPHANS_SOFT: &str =
        include_str!("../../../sql/postgres/delete_orphans_soft.sql");
    pub const DIRECT_ELIGIBLE: &str = include_str!("../../../sql/postgres/direct_eligible.sql");
    pub const DIRECT_SAVEPOINT: &str = include_str!("../../../sql/postgres/direct_savepoint.sql");
    pub const DIRECT_ROLLBACK: &str = include_str!("../../../sql/postgres/direct_rollback.sql");
    pub const COPY_DIRECT: &str = include_str!("../../../sql/postgres/copy_direct.sql");
    pub const COPIED_FINGERPRINT: &str =
        include_str!("../../../sql/postgres/copied_fingerprint.sql");
    pub const TABLE_FINGERPRINT: &str = include_str!("../../../sql/postgres/table_fingerprint.sql");
    pub const LIST_KEYS: &str = include_str!("../../../sql/postgres/list_keys.sql");
}

/// Count and checksum of the live rows of a destination table (see crate::reconcile), as if
/// each were an upsert at its current version.
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
        templates::TABLE_FINGERPRINT,
        &[
            ("key", &quote_ident(key)),
            ("version", &quote_ident(VERSION_COLUMN)),
            ("table", &qualified(schema, table)),
            ("live", &live),
        ],
    )
}

/// `syncline reconcile`'s listing of a table's live rows, sorted by key: the key, the version
/// (µs) and, when comparing by content, the hash both sides compute (`reconcile::listing`).
pub(crate) fn list_keys(schema: &str, request: &ListRequest) -> String {
    let live = match request.deletes {
        DeleteMode::Hard => "TRUE".to_string(),
        DeleteMode::Soft => format!("{} IS NULL", quote_ident(DELETED_AT_COLUMN)),
    };
    let (key, order) = listing::key_sql(&request.key, request.int_key);
    let hash = match &request.compare {
        drift::Compare::Hash(columns) => listing::row_hash_sql(columns),
        drift::Compare::Version => "NULL::text".to_string(),
    };
    render(
        templates::LIST_KEYS,
        &[
            ("key", &key),
            (
                "version",
                &listing::micros_sql(&quote_ident(VERSION_COLUMN)),
            ),
            ("hash", &hash),
            ("table", &qualified(schema, &request.table)),
            ("live", &live),
            ("order", &order),
        ],
    )
}

/// The ledger table, in the destination schema.
pub(crate) const LEDGER_TABLE: &str = "_syncline_loads";
/// Session-local staging tables; dropped at commit or rollback.
const STAGE_TABLE: &str = "_syncline_stage_in";
const DEDUP_TABLE: &str = "_syncline_stage_dedup";

/// PostgreSQL truncates longer identifiers, which would silently map two names to one column.
const MAX_IDENT_BYTES: usize = 63;

pub use crate::sql::{qualified, quote_ident};

/// Why `name` cannot be a PostgreSQL identifier as is, if it cannot.
pub(crate) fn ident_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains('\0') {
        Some("contains a NUL character")
    } else if name.len() > MAX_IDENT_BYTES {
        Some("is longer than PostgreSQL's 63-byte identifier limit")
    } else {
        None
    }
}

pub(crate) fn create_schema(schema: &str) -> String {
    render(
        templates::CREATE_SCHEMA,
        &[("schema", quote_ident(schema).as_str())],
    )
}

pub(crate) fn create_ledger(schema: &str) -> String {
    render(
        templates::CREATE_LEDGER,
        &[("ledger", qualified(schema, LEDGER_TABLE).as_str())],
    )
}

/// The side table of hard deletes' tombstones (see `destinations::plan`).
pub(crate) fn create_tombstones(schema: &str) -> String {
    render(
        templates::CREATE_TOMBSTONES,
        &[("tombstones", qualified(schema, TOMBSTONE_TABLE).as_str())],
    )
}

pub(crate) fn ledger_lookup(schema: &str) -> String {
    render(
        templates::LEDGER_LOOKUP,
        &[("ledger", qualified(schema, LEDGER_TABLE).as_str())],
    )
}

pub(crate) fn ledger_insert(schema: &str) -> String {
    render(
        templates::LEDGER_INSERT,
        &[("ledger", qualified(schema, LEDGER_TABLE).as_str())],
    )
}

pub(crate) fn ledger_last(schema: &str) -> String {
    render(
        templates::LEDGER_LAST,
        &[("ledger", qualified(schema, LEDGER_TABLE).as_str())],
    )
}

/// `CREATE TABLE IF NOT EXISTS` with `columns`, keyed on the layout's key.
pub(crate) fn create_table(schema: &str, layout: &TableLayout, columns: &[Column]) -> String {
    layout::create_table(templates::CREATE_TABLE, schema, layout, columns)
}

pub(crate) fn add_column(schema: &str, table: &str, column: &Column) -> String {
    layout::add_column(templates::ADD_COLUMN, schema, table, column)
}

pub(crate) fn widen_column(schema: &str, table: &str, column: &str, to: PgType) -> String {
    render(
        templates::WIDEN_COLUMN,
        &[
            ("table", qualified(schema, table).as_str()),
            ("column", quote_ident(column).as_str()),
            ("type", &to.name()),
        ],
    )
}

/// Every statement of one merge, rendered for a table layout. Statements that take the load id
/// bind it as `$1`; `delete` does so only for soft deletes. `insert`, `insert_deleted` and
/// `record_tombstones` also bind the table's name as `$2` (the tombstones' `table_name`).
#[derive(Debug, Clone)]
pub(crate) struct MergeSql {
    pub ledger_lookup: String,
    pub create_stage: String,
    pub copy_stage: String,
    /// The staged rows read back for their fingerprint (see `received_fingerprint`).
    pub staged_fingerprint: String,
    pub dedup_stage: String,
    pub analyze_dedup: String,
    /// Whether the load is small beside its table: its merge then prefers index joins.
    pub small_beside_table: String,
    pub delete: String,
    pub update: String,
    pub insert: String,
    /// Soft deletes: a row marked deleted for each delete of a key the table lacks.
    pub insert_deleted: Option<String>,
    /// Hard deletes: a tombstone for each delete, raised to the newest delete's version.
    pub record_tombstones: Option<String>,
    /// A complete full load: the orphans' tombstones (hard deletes; `$1` the load id, `$2` the
    /// table), then their delete (`$1` the load id; soft deletes also `$2`, the delete time).
    /// See `plan::Orphans`.
    pub orphans: Option<OrphanSql>,
    pub ledger_insert: String,
    /// The load straight into an empty table, when it may (see [`DirectSql`]).
    pub direct: DirectSql,
}

/// A load into an empty table without tombstones needs no staging table, de-duplication or
/// joins: its rows are copied straight into the table, under a savepoint, unless a key
/// repeats (the table's unique key stops the COPY) or a row is a delete (the copy stops
/// itself); then the transaction rolls back to the savepoint and takes the general path.
#[derive(Debug, Clone)]
pub(crate) struct DirectSql {
    /// The table, schema-qualified and quoted: `eligible`'s `$2`.
    pub table: String,
    /// Whether the table is empty, has no tombstones (`$1` the table name) and a unique,
    /// immediate index on the key alone (`$2` the qualified table, `$3` the key column).
    pub eligible: String,
    pub savepoint: String,
    pub rollback: String,
    /// COPY of the carried columns and then the load id, in [`TableLayout::carried`] order.
    pub copy: String,
    /// The table's rows read back for their fingerprint (see `received_fingerprint`), every
    /// one live (the copy refused deletes).
    pub fingerprint: String,
}

/// The statements that delete a complete full load's orphans.
#[derive(Debug, Clone)]
pub(crate) struct OrphanSql {
    pub tombstones: Option<String>,
    pub delete: String,
}

impl DirectSql {
    fn new(
        target: &str,
        tombstones: &str,
        key: &str,
        version: &str,
        layout: &TableLayout,
    ) -> DirectSql {
        let columns = layout
            .carried()
            .map(|column| quote_ident(&column.name))
            .chain(std::iter::once(quote_ident(LOAD_ID_COLUMN)))
            .collect::<Vec<_>>()
            .join(", ");
        let vars: [(&str, &str); 5] = [
            ("target", target),
            ("tombstones", tombstones),
            ("key", key),
            ("version", version),
            ("columns", columns.as_str()),
        ];
        DirectSql {
            table: target.to_owned(),
            eligible: render(templates::DIRECT_ELIGIBLE, &vars),
            savepoint: render(templates::DIRECT_SAVEPOINT, &vars),
            rollback: render(templates::DIRECT_ROLLBACK, &vars),
            copy: render(templates::COPY_DIRECT, &vars),
            // The table was empty, so all it holds is what the COPY put there.
            fingerprint: render(
                templates::COPIED_FINGERPRINT,
                &[("key", key), ("version", version), ("table", target)],
            ),
        }
    }
}

impl MergeSql {
    pub(crate) fn new(schema: &str, layout: &TableLayout) -> MergeSql {
        let plan = layout.merge_plan();
        let target = qualified(schema, plan.table);
        let stage = quote_ident(STAGE_TABLE);
        let dedup = quote_ident(DEDUP_TABLE);
        let key = quote_ident(plan.key);
        let version = quote_ident(VERSION_COLUMN);
        let deleted = quote_ident(DELETED_COLUMN);
        let load_id = quote_ident(LOAD_ID_COLUMN);
        let deleted_at = quote_ident(DELETED_AT_COLUMN);
        const LOAD_ID: &str = "$1::text";

        // Row constructors compare every term at once (`IS DISTINCT FROM` treats nulls as
        // equal); a soft-deleted target row differs from every live incoming row.
        let (target_row, staged_row): (Vec<String>, Vec<String>) = plan
            .compared
            .iter()
            .map(|term| match term {
                Compare::Column(column) => {
                    let column = quote_ident(column);
                    (format!("t.{column}"), format!("s.{column}"))
                }
                Compare::SoftDeleted => (format!("t.{deleted_at} IS NOT NULL"), "false".to_owned()),
            })
            .unzip();
        let (delete_template, tie_guard) = match plan.deletes {
            DeleteMode::Hard => (templates::DELETE_HARD, String::new()),
            // A delete wins a tie: an update at the delete's own version does not revive it.
            DeleteMode::Soft => (
                templates::DELETE_SOFT,
                format!("\n  AND (t.{deleted_at} IS NULL OR s.{version} > t.{version})"),
            ),
        };

        let tombstones = qualified(schema, TOMBSTONE_TABLE);
        let common: [(&str, &str); 9] = [
            ("target", target.as_str()),
            ("tombstones", tombstones.as_str()),
            ("stage", stage.as_str()),
            ("dedup", dedup.as_str()),
            ("key", key.as_str()),
            ("version", version.as_str()),
            ("deleted", deleted.as_str()),
            ("load_id", load_id.as_str()),
            ("deleted_at", deleted_at.as_str()),
        ];
        let stage_defs = column_defs(&layout.staged);
        let staged_list = plan
            .staged
            .iter()
            .map(|column| quote_ident(column))
            .collect::<Vec<_>>()
            .join(", ");
        let update_set = assignments(&plan.update, LOAD_ID).join(",\n    ");
        let soft_delete_set = assignments(&plan.soft_delete, LOAD_ID).join(",\n    ");
        let target_row = target_row.join(", ");
        let staged_row = staged_row.join(", ");
        let (insert_columns, insert_values) = insert_lists(&plan.insert, LOAD_ID);
        let insert_columns = insert_columns.join(", ");
        let insert_values = insert_values.join(", ");
        let tombstone_guard = format!(
            "\n  {}",
            render(templates::TOMBSTONE_GUARD, &common).trim_end()
        );
        let insert_deleted = plan.insert_deleted.as_ref().map(|set| {
            let (columns, values) = insert_lists(set, LOAD_ID);
            render(
                templates::INSERT_DELETED,
                &with_vars(
                    &common,
                    &[
                        ("columns", columns.join(", ").as_str()),
                        ("values", values.join(", ").as_str()),
                        ("tombstone_guard", tombstone_guard.as_str()),
                    ],
                ),
            )
        });

        MergeSql {
            ledger_lookup: ledger_lookup(schema),
            create_stage: render(
                templates::CREATE_STAGE,
                &with_vars(&common, &[("column_defs", stage_defs.as_str())]),
            ),
            copy_stage: render(
                templates::COPY_STAGE,
                &with_vars(&common, &[("columns", staged_list.as_str())]),
            ),
            staged_fingerprint: render(templates::STAGED_FINGERPRINT, &common),
            dedup_stage: render(templates::DEDUP_STAGE, &common),
            analyze_dedup: render(templates::ANALYZE_DEDUP, &common),
            small_beside_table: render(
                templates::SMALL_BESIDE_TABLE,
                &[
                    ("dedup_text", dedup.replace('\'', "''").as_str()),
                    ("target_text", target.replace('\'', "''").as_str()),
                ],
            ),
            delete: render(
                delete_template,
                &with_vars(&common, &[("assignments", soft_delete_set.as_str())]),
            ),
            update: render(
                templates::UPDATE,
                &with_vars(
                    &common,
                    &[
                        ("assignments", update_set.as_str()),
                        ("tie_guard", tie_guard.as_str()),
                        ("target_row", target_row.as_str()),
                        ("staged_row", staged_row.as_str()),
                    ],
                ),
            ),
            insert: render(
                templates::INSERT,
                &with_vars(
                    &common,
                    &[
                        ("columns", insert_columns.as_str()),
                        ("values", insert_values.as_str()),
                        ("tombstone_guard", tombstone_guard.as_str()),
                    ],
                ),
            ),
            insert_deleted,
            record_tombstones: plan
                .tombstones
                .then(|| render(templates::RECORD_TOMBSTONES, &common)),
            orphans: plan.orphans.map(|_| OrphanSql {
                tombstones: plan
                    .tombstones
                    .then(|| render(templates::ORPHAN_TOMBSTONES, &common)),
                delete: render(
                    match plan.deletes {
                        DeleteMode::Hard => templates::DELETE_ORPHANS_HARD,
                        DeleteMode::Soft => templates::DELETE_ORPHANS_SOFT,
                    },
                    &common,
                ),
            }),
            ledger_insert: ledger_insert(schema),
            direct: DirectSql::new(&target, &tombstones, &key, &version, layout),
        }
    }

    /// All statements in execution order, as one script (for review and snapshots).
    #[cfg(test)]
    pub(crate) fn script(&self) -> String {
        let mut statements = vec![
            ("ledger_lookup", &self.ledger_lookup),
            ("create_stage", &self.create_stage),
            ("copy_stage", &self.copy_stage),
            ("staged_fingerprint", &self.staged_fingerprint),
            ("dedup_stage", &self.dedup_stage),
            ("analyze_dedup", &self.analyze_dedup),
            ("small_beside_table", &self.small_beside_table),
            ("delete", &self.delete),
            ("update", &self.update),
            ("insert", &self.insert),
        ];
        if let Some(insert_deleted) = &self.insert_deleted {
            statements.push(("insert_deleted", insert_deleted));
        }
        if let Some(record_tombstones) = &self.record_tombstones {
            statements.push(("record_tombstones", record_tombstones));
        }
        if let Some(orphans) = &self.orphans {
            if let Some(tombstones) = &orphans.tombstones {
                statements.push(("orphan_tombstones", tombstones));
            }
            statements.push(("delete_orphans", &orphans.delete));
        }
        statements.push(("ledger_insert", &self.ledger_insert));
        crate::sql::script(&statements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::layout::snapshot_request;

    #[test]
    fn quote_ident_wraps_and_doubles_quotes() {
        assert_eq!(quote_ident("contacts"), r#""contacts""#);
        assert_eq!(quote_ident("FirstName"), r#""FirstName""#);
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(
            quote_ident(r#"x"; DROP TABLE t; --"#),
            r#""x""; DROP TABLE t; --""#
        );
        assert_eq!(quote_ident(""), r#""""#);
        assert_eq!(qualified("crm", "Deal Stage"), r#""crm"."Deal Stage""#);
    }

    #[test]
    fn ident_problems() {
        assert_eq!(ident_problem("ok_name"), None);
        assert_eq!(ident_problem(&"a".repeat(63)), None);
        assert!(ident_problem(&"a".repeat(64)).is_some());
        assert!(ident_problem("").is_some());
        assert!(ident_problem("a\0b").is_some());
    }

    #[test]
    fn render_substitutes_placeholders_once() {
        let sql = render(
            "SELECT {cols} FROM {table} WHERE x = '{not a placeholder}'",
            &[("cols", r#""{table}""#), ("table", r#""t""#)],
        );
        assert_eq!(
            sql,
            r#"SELECT "{table}" FROM "t" WHERE x = '{not a placeholder}'"#
        );
    }

    #[test]
    fn render_keeps_unclosed_and_non_placeholder_braces() {
        assert_eq!(render("a { b {c} {", &[("c", "C")]), "a { b C {");
        assert_eq!(render("{Upper} {1x} {}", &[]), "{Upper} {1x} {}");
    }

    #[test]
    #[should_panic(expected = "placeholder {missing}")]
    fn render_panics_on_a_missing_value() {
        render("SELECT {missing}", &[]);
    }

    #[test]
    fn ddl_statements_quote_every_identifier() {
        assert_eq!(
            create_schema(r#"my"schema"#).trim_end(),
            r#"CREATE SCHEMA IF NOT EXISTS "my""schema""#
        );
        assert_eq!(
            add_column(
                "crm",
                "contacts",
                &Column::new("Lead Score", PgType::DoublePrecision),
            )
            .trim_end(),
            r#"ALTER TABLE "crm"."contacts" ADD COLUMN IF NOT EXISTS "Lead Score" double precision"#
        );
        assert_eq!(
            widen_column("crm", "deals", "closed", PgType::Timestamptz).trim_end(),
            r#"ALTER TABLE "crm"."deals" ALTER COLUMN "closed" TYPE timestamp with time zone USING "closed"::timestamp with time zone"#
        );
        assert!(create_ledger("crm").contains(r#""crm"."_syncline_loads""#));
        assert!(ledger_lookup("crm").contains("$1"));
        assert!(ledger_insert("crm").contains("$7"));
        assert!(ledger_last("crm").contains(r#"FROM "crm"."_syncline_loads""#));
    }

    fn layout(deletes: DeleteMode) -> TableLayout {
        TableLayout::from_request(&snapshot_request(deletes)).unwrap()
    }

    #[test]
    fn create_table_sql() {
        let layout = layout(DeleteMode::Soft);
        insta::assert_snapshot!(create_table("crm", &layout, &layout.target_columns()));
    }

    #[test]
    fn merge_sql_hard_deletes() {
        insta::assert_snapshot!(MergeSql::new("crm", &layout(DeleteMode::Hard)).script());
    }

    #[test]
    fn merge_sql_soft_deletes() {
        insta::assert_snapshot!(MergeSql::new("crm", &layout(DeleteMode::Soft)).script());
    }

    #[test]
    fn merge_sql_binds_the_load_id_only_where_expected() {
        let hard = MergeSql::new("crm", &layout(DeleteMode::Hard));
        assert!(!hard.delete.contains("$1"));
        let soft = MergeSql::new("crm", &layout(DeleteMode::Soft));
        let insert_deleted = soft.insert_deleted.as_ref().expect("soft mode");
        for statement in [&soft.delete, &soft.update, &hard.update] {
            assert!(statement.contains("$1::text"), "{statement}");
            assert!(!statement.contains("$2"), "{statement}");
        }
        // The table's tombstones are named by the table name, bound as $2.
        let record = hard.record_tombstones.as_ref().expect("hard mode");
        for statement in [&hard.insert, &soft.insert, insert_deleted, record] {
            assert!(statement.contains("$1::text"), "{statement}");
            assert!(statement.contains("$2::text"), "{statement}");
            assert!(!statement.contains("$3"), "{statement}");
        }
        assert!(soft.record_tombstones.is_none() && hard.insert_deleted.is_none());
    }
}
