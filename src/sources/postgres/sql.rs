//! The SQL the PostgreSQL source sends: templates from `sql/postgres_source/*.sql` (one
//! statement per file) and their rendering for one table.
//!
//! Identifiers are substituted only through [`quote_ident`] (and `crate::sql::qualified`); the few values that
//! cannot be bind parameters (COPY takes none, nor does `SET TRANSACTION SNAPSHOT`) go through
//! [`literal`]. Catalog queries keep their bind parameters and are sent as they are.

pub use crate::sql::quote_ident;
use crate::sql::render;

use super::catalog::{SourceColumn, TableSpec, ValueKind};
use crate::reconcile::drift::{HashKind, Key};
use crate::reconcile::listing;

/// The statement templates, embedded at build time.
pub mod templates {
    pub const SESSION_SETTINGS: &str =
        include_str!("../../../sql/postgres_source/session_settings.sql");
    pub const WAL_SENDER_TIMEOUT: &str =
        include_str!("../../../sql/postgres_source/wal_sender_timeout.sql");
    pub const SHOW_WAL_LEVEL: &str =
        include_str!("../../../sql/postgres_source/show_wal_level.sql");
    pub const CAN_REPLICATE: &str = include_str!("../../../sql/postgres_source/can_replicate.sql");
    pub const TABLE_COLUMNS: &str = include_str!("../../../sql/postgres_source/table_columns.sql");
    pub const CURRENT_WAL_LSN: &str =
        include_str!("../../../sql/postgres_source/current_wal_lsn.sql");
    pub const SLOT_INFO: &str = include_str!("../../../sql/postgres_source/slot_info.sql");
    pub const SLOT_LAG: &str = include_str!("../../../sql/postgres_source/slot_lag.sql");
    pub const ADVANCE_SLOT: &str = include_str!("../../../sql/postgres_source/advance_slot.sql");
    pub const DROP_SLOT: &str = include_str!("../../../sql/postgres_source/drop_slot.sql");
    pub const PUBLICATION_EXISTS: &str =
        include_str!("../../../sql/postgres_source/publication_exists.sql");
    pub(super) const CREATE_PUBLICATION: &str =
        include_str!("../../../sql/postgres_source/create_publication.sql");
    pub const REPLICA_IDENTITY: &str =
        include_str!("../../../sql/postgres_source/replica_identity.sql");
    pub const PUBLICATION_TABLES: &str =
        include_str!("../../../sql/postgres_source/publication_tables.sql");
    pub(super) const SET_PUBLICATION_TABLE: &str =
        include_str!("../../../sql/postgres_source/set_publication_table.sql");
    pub(super) const IMPORT_SNAPSHOT: &str =
        include_str!("../../../sql/postgres_source/import_snapshot.sql");
    pub(super) const CURSOR_BOUND_TIME: &str =
        include_str!("../../../sql/postgres_source/cursor_bound_time.sql");
    pub(super) const CURSOR_BOUND_INT: &str =
        include_str!("../../../sql/postgres_source/cursor_bound_int.sql");
    pub(super) const COPY_OUT: &str = include_str!("../../../sql/postgres_source/copy_out.sql");
    pub(super) const TOAST_VALUES: &str =
        include_str!("../../../sql/postgres_source/toast_values.sql");
    pub(super) const LIST_KEYS: &str = include_str!("../../../sql/postgres_source/list_keys.sql");
    pub(super) const LIST_ROWS: &str = include_str!("../../../sql/postgres_source/list_rows.sql");
    pub(crate) const PEEK_CHANGES: &str =
        include_str!("../../../sql/postgres_source/peek_changes.sql");
}

/// A string literal: single quotes, embedded ones doubled (standard_conforming_strings is on
/// in every supported server, so backslashes are literal).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Renders a template; the file's closing newline is dropped so statements log on one line.
fn statement(template: &str, vars: &[(&str, &str)]) -> String {
    let mut text = render(template, vars);
    text.truncate(text.trim_end().len());
    text
}

/// Rows at or after the saved cursor `since` (ms since the epoch for a time, else the integer).
pub fn cursor_from(cursor: &SourceColumn, since: i64) -> String {
    let column = quote_ident(&cursor.name);
    match cursor.kind {
        // `'epoch'` is typed like the column, so the comparison needs no time zone.
        ValueKind::Timestamp { with_zone } => {
            let epoch = if with_zone {
                "timestamptz"
            } else {
                "timestamp"
            };
            format!("{column} >= 'epoch'::{epoch} + {since} * interval '1 millisecond'")
        }
        _ => format!("{column} >= {since}"),
    }
}

/// Rows at least `lag_seconds` old by a time cursor; a timestamp without time zone holds UTC.
pub fn cursor_lag(cursor: &SourceColumn, lag_seconds: u64) -> String {
    let now = match cursor.kind {
        ValueKind::Timestamp { with_zone: false } => "(now() AT TIME ZONE 'UTC')",
        _ => "now()",
    };
    format!(
        "{} <= {now} - {lag_seconds} * interval '1 second'",
        quote_ident(&cursor.name)
    )
}

/// Rows up to `upper`, the server's own text of the cursor's maximum, so it round-trips.
pub fn cursor_upto(cursor: &SourceColumn, upper: &str) -> String {
    format!(
        "{} <= {}::{}",
        quote_ident(&cursor.name),
        literal(upper),
        cursor.sql_type
    )
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

pub fn create_publication(name: &str, spec: &TableSpec) -> String {
    statement(
        templates::CREATE_PUBLICATION,
        &[
            ("publication", &quote_ident(name)),
            ("table", &spec.qualified()),
        ],
    )
}

pub fn set_publication_table(name: &str, spec: &TableSpec) -> String {
    statement(
        templates::SET_PUBLICATION_TABLE,
        &[
            ("publication", &quote_ident(name)),
            ("table", &spec.qualified()),
        ],
    )
}

pub fn import_snapshot(snapshot: &str) -> String {
    statement(
        templates::IMPORT_SNAPSHOT,
        &[("snapshot", &literal(snapshot))],
    )
}

/// The maximum of the cursor column under `conditions`: as the server's text of the value
/// and as the cursor (ms since the epoch for a time, else the integer).
pub fn cursor_bound(spec: &TableSpec, cursor: &SourceColumn, conditions: &[String]) -> String {
    let template = if matches!(cursor.kind, ValueKind::Timestamp { .. }) {
        templates::CURSOR_BOUND_TIME
    } else {
        templates::CURSOR_BOUND_INT
    };
    statement(
        template,
        &[
            ("cursor", &quote_ident(&cursor.name)),
            ("table", &spec.qualified()),
            ("filter", &where_clause(conditions)),
        ],
    )
}

/// `COPY (SELECT {columns} FROM table WHERE conditions) TO STDOUT (FORMAT binary)`;
/// `columns` are select expressions built from quoted names.
pub fn copy_out(spec: &TableSpec, columns: &[String], conditions: &[String]) -> String {
    statement(
        templates::COPY_OUT,
        &[
            ("columns", &columns.join(", ")),
            ("table", &spec.qualified()),
            ("filter", &where_clause(conditions)),
        ],
    )
}

/// The current values of `columns` (as text) of the rows whose key is in `$1` (text[]).
pub fn toast_values(spec: &TableSpec, columns: &[usize]) -> String {
    let key = spec.key();
    let select: Vec<String> = columns
        .iter()
        .map(|&i| format!("{}::text", quote_ident(&spec.columns[i].name)))
        .collect();
    statement(
        templates::TOAST_VALUES,
        &[
            ("key", &quote_ident(&key.name)),
            ("columns", &select.join(", ")),
            ("table", &spec.qualified()),
            // format_type's output: a type name PostgreSQL already quoted where needed.
            ("key_type", &key.sql_type),
        ],
    )
}

/// The hash kind of each column: the canonical text both sides compute (`reconcile::listing`).
pub fn hash_columns(spec: &TableSpec) -> Vec<(String, HashKind)> {
    spec.columns
        .iter()
        .map(|column| {
            let kind = match column.kind {
                ValueKind::Int => HashKind::Int,
                ValueKind::Float | ValueKind::Float4 => HashKind::Float,
                ValueKind::Bool => HashKind::Bool,
                ValueKind::Date => HashKind::Date,
                ValueKind::Timestamp { .. } => HashKind::Timestamp,
                // A decimal's canonical text has its scale's digits (`12.50`, `0.00`) on every
                // side: PostgreSQL's `numeric(p,s)::text`, Arrow's Decimal128 as text.
                ValueKind::Text | ValueKind::Decimal { .. } => HashKind::Text,
            };
            (column.name.clone(), kind)
        })
        .collect()
}

/// `syncline reconcile`'s listing of the table, sorted by key: in cursor mode the key and the
/// cursor as the version (a row without one is version 0, as a load stages it); in CDC mode the
/// key and the content hash (the versions are LSNs, which the destination cannot match).
pub fn list_keys(spec: &TableSpec, by_hash: bool) -> String {
    let key = spec.key();
    let (select_key, order) = listing::key_sql(&key.name, key.kind == ValueKind::Int);
    let version = match (&spec.cursor, by_hash) {
        (Some(cursor), false) => {
            let column = quote_ident(&cursor.name);
            let value = match cursor.kind {
                ValueKind::Timestamp { .. } => listing::micros_sql(&column),
                _ => format!("{column}::int8"),
            };
            format!("coalesce({value}, 0)")
        }
        _ => "NULL::int8".to_string(),
    };
    let hash = if by_hash {
        listing::row_hash_sql(&hash_columns(spec))
    } else {
        "NULL::text".to_string()
    };
    statement(
        templates::LIST_KEYS,
        &[
            ("key", &select_key),
            ("version", &version),
            ("hash", &hash),
            ("table", &spec.qualified()),
            ("order", &order),
        ],
    )
}

/// `COPY` of the select expressions `columns` in key order (`reconcile::drift`'s order).
pub fn list_rows(spec: &TableSpec, columns: &[String]) -> String {
    let key = spec.key();
    let (_, order) = listing::key_sql(&key.name, key.kind == ValueKind::Int);
    statement(
        templates::LIST_ROWS,
        &[
            ("columns", &columns.join(", ")),
            ("table", &spec.qualified()),
            ("order", &order),
        ],
    )
}

/// The condition that selects the rows whose key is one of `keys` (a repair's fetch).
pub fn key_in(spec: &TableSpec, keys: &[Key]) -> String {
    let key = spec.key();
    let values: Vec<String> = keys
        .iter()
        .map(|k| match k {
            Key::Int(value) => value.to_string(),
            Key::Text(value) => literal(value),
        })
        .collect();
    let array = if key.kind == ValueKind::Int {
        format!("ARRAY[{}]::int8[]", values.join(", "))
    } else {
        // format_type's output: a type name PostgreSQL already quoted where needed.
        format!("ARRAY[{}]::text[]::{}[]", values.join(", "), key.sql_type)
    };
    format!("{} = ANY({array})", quote_ident(&key.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, kind: ValueKind, sql_type: &str) -> SourceColumn {
        SourceColumn {
            name: name.into(),
            sql_type: sql_type.into(),
            kind,
        }
    }

    fn spec() -> TableSpec {
        TableSpec {
            schema: "sales".into(),
            name: "Con\"tacts".into(),
            columns: vec![
                column("id", ValueKind::Int, "integer"),
                column("Notes", ValueKind::Text, "text"),
                column("body", ValueKind::Text, "text"),
            ],
            cursor: Some(column(
                "updated_at",
                ValueKind::Timestamp { with_zone: true },
                "timestamp with time zone",
            )),
        }
    }

    #[test]
    fn statements_quote_identifiers_and_literals() {
        let spec = spec();
        assert_eq!(
            create_publication("syncline_crm_contacts", &spec),
            r#"CREATE PUBLICATION "syncline_crm_contacts" FOR TABLE "sales"."Con""tacts""#
        );
        assert_eq!(
            import_snapshot("00000003-0000001B-1'"),
            "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'''"
        );
        let cursor = spec.cursor.clone().unwrap();
        assert_eq!(
            cursor_bound(&spec, &cursor, &[]),
            "SELECT max(\"updated_at\")::text, floor(extract(epoch FROM max(\"updated_at\")) * 1000)::int8\nFROM \"sales\".\"Con\"\"tacts\""
        );
        let counter = column("seq", ValueKind::Int, "bigint");
        assert_eq!(
            cursor_bound(&spec, &counter, &["\"seq\" >= 5".into(), "TRUE".into()]),
            "SELECT max(\"seq\")::text, max(\"seq\")::int8\nFROM \"sales\".\"Con\"\"tacts\" WHERE \"seq\" >= 5 AND TRUE"
        );
        assert_eq!(
            toast_values(&spec, &[1, 2]),
            "SELECT \"id\"::text, \"Notes\"::text, \"body\"::text\nFROM \"sales\".\"Con\"\"tacts\"\nWHERE \"id\" = ANY($1::text[]::integer[])"
        );
    }

    #[test]
    fn cursor_conditions_follow_the_column_type() {
        let spec = spec();
        let zoned = spec.cursor.clone().unwrap();
        assert_eq!(
            cursor_from(&zoned, 1500),
            "\"updated_at\" >= 'epoch'::timestamptz + 1500 * interval '1 millisecond'"
        );
        assert_eq!(
            cursor_lag(&zoned, 30),
            "\"updated_at\" <= now() - 30 * interval '1 second'"
        );
        let local = column(
            "seen",
            ValueKind::Timestamp { with_zone: false },
            "timestamp without time zone",
        );
        assert_eq!(
            cursor_from(&local, 0),
            "\"seen\" >= 'epoch'::timestamp + 0 * interval '1 millisecond'"
        );
        assert_eq!(
            cursor_lag(&local, 5),
            "\"seen\" <= (now() AT TIME ZONE 'UTC') - 5 * interval '1 second'"
        );
        let counter = column("seq", ValueKind::Int, "bigint");
        assert_eq!(cursor_from(&counter, 42), "\"seq\" >= 42");
        assert_eq!(
            cursor_upto(&zoned, "2024-05-01 10:00:00+00"),
            "\"updated_at\" <= '2024-05-01 10:00:00+00'::timestamp with time zone"
        );
    }

    #[test]
    fn static_statements_need_no_rendering() {
        for template in [
            templates::SESSION_SETTINGS,
            templates::WAL_SENDER_TIMEOUT,
            templates::SHOW_WAL_LEVEL,
            templates::CAN_REPLICATE,
            templates::TABLE_COLUMNS,
            templates::CURRENT_WAL_LSN,
            templates::SLOT_INFO,
            templates::SLOT_LAG,
            templates::ADVANCE_SLOT,
            templates::DROP_SLOT,
            templates::PUBLICATION_EXISTS,
        ] {
            assert!(!template.contains('{'), "{template}");
        }
    }
}
