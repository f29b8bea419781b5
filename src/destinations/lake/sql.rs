//! The DataFusion SQL the lake destination runs around a merge: de-duplicating a load by key,
//! joining each key's tombstone, and counting the soft deletes it will apply. The statements live in `sql/lake/*.sql` at the crate
//! root; identifiers are always double-quoted (DataFusion's SQL dialect), never interpolated raw.
//! The merge itself is built from DataFusion expressions (see `merge.rs`), not SQL text.

use crate::destinations::plan::TOMBSTONE_COLUMN;
use crate::schema::{DELETED_AT_COLUMN, DELETED_COLUMN, VERSION_COLUMN};
use crate::sql::render;

use super::types::TableLayout;

const DEDUP: &str = include_str!("../../../sql/lake/dedup.sql");
const SOFT_DELETES: &str = include_str!("../../../sql/lake/soft_deletes.sql");
const WITH_TOMBSTONES: &str = include_str!("../../../sql/lake/with_tombstones.sql");
const ORPHANS: &str = include_str!("../../../sql/lake/orphans.sql");
const REPEATED_KEYS: &str = include_str!("../../../sql/lake/repeated_keys.sql");

/// The load's normalized rows, scanned from the local Parquet files they are spooled to.
pub(crate) const STAGED_TABLE: &str = "syncline_staged";
/// The de-duplicated load, scanned from the spool's second file (see
/// `merge::StagedLoad::deduplicate`).
pub(crate) const DEDUPLICATED_TABLE: &str = "syncline_deduplicated";
/// The de-duplicated load, registered as a view for the soft-delete count.
pub(crate) const SOURCE_TABLE: &str = "syncline_source";
/// The Delta table before the merge, registered for the soft-delete count.
pub(crate) const TARGET_TABLE: &str = "syncline_target";
/// The de-duplicated load, registered as a view for the tombstone join.
pub(crate) const DEDUP_TABLE: &str = "syncline_dedup";
/// The table's tombstones, registered for the tombstone join.
pub(crate) const TOMBSTONES_TABLE: &str = "syncline_tombstones";
/// The Delta table before the merge, registered to find a complete full load's orphans.
pub(crate) const ORPHAN_TARGET_TABLE: &str = "syncline_orphan_target";
/// The de-duplicated load, registered to find a complete full load's orphans.
pub(crate) const ORPHAN_LOAD_TABLE: &str = "syncline_orphan_load";

pub(crate) use crate::sql::quote_ident;

/// One row per key: the newest `_syncline_version`, a delete winning a tie.
pub(crate) fn dedup(layout: &TableLayout) -> String {
    let columns = layout
        .staged
        .iter()
        .map(|column| quote_ident(&column.name))
        .collect::<Vec<_>>()
        .join(", ");
    let key = quote_ident(&layout.key);
    let version = quote_ident(VERSION_COLUMN);
    let deleted = quote_ident(DELETED_COLUMN);
    let staged = quote_ident(STAGED_TABLE);
    render(
        DEDUP,
        &[
            ("columns", columns.as_str()),
            ("key", key.as_str()),
            ("version", version.as_str()),
            ("deleted", deleted.as_str()),
            ("staged", staged.as_str()),
        ],
    )
}

/// One key the load carries more than once, or no row when every key is unique.
pub(crate) fn repeated_keys(layout: &TableLayout) -> String {
    let key = quote_ident(&layout.key);
    let staged = quote_ident(STAGED_TABLE);
    render(
        REPEATED_KEYS,
        &[("key", key.as_str()), ("staged", staged.as_str())],
    )
}

/// The de-duplicated load with each key's tombstone version as `_syncline_tombstone` (NULL
/// for none).
pub(crate) fn with_tombstones(layout: &TableLayout) -> String {
    let key = quote_ident(&layout.key);
    let version = quote_ident(VERSION_COLUMN);
    let tombstone = quote_ident(TOMBSTONE_COLUMN);
    let dedup = quote_ident(DEDUP_TABLE);
    let tombstones = quote_ident(TOMBSTONES_TABLE);
    render(
        WITH_TOMBSTONES,
        &[
            ("key", key.as_str()),
            ("version", version.as_str()),
            ("tombstone", tombstone.as_str()),
            ("dedup", dedup.as_str()),
            ("tombstones", tombstones.as_str()),
        ],
    )
}

/// How many rows the soft-delete clauses of the merge will mark deleted (`marked`) and insert
/// already deleted for keys the table lacks (`remembered`): the same predicates, evaluated over
/// the same snapshot, before the merge runs. `guarded` when the source rows carry each key's
/// tombstone (see [`with_tombstones`]).
pub(crate) fn soft_deletes(layout: &TableLayout, guarded: bool) -> String {
    let source = quote_ident(SOURCE_TABLE);
    let target = quote_ident(TARGET_TABLE);
    let key = quote_ident(&layout.key);
    let version = quote_ident(VERSION_COLUMN);
    let deleted = quote_ident(DELETED_COLUMN);
    let deleted_at = quote_ident(DELETED_AT_COLUMN);
    let tombstone_guard = if guarded {
        let tombstone = quote_ident(TOMBSTONE_COLUMN);
        format!(" AND (s.{tombstone} IS NULL OR s.{version} > s.{tombstone})")
    } else {
        String::new()
    };
    render(
        SOFT_DELETES,
        &[
            ("tombstone_guard", tombstone_guard.as_str()),
            ("source", source.as_str()),
            ("target", target.as_str()),
            ("key", key.as_str()),
            ("version", version.as_str()),
            ("deleted", deleted.as_str()),
            ("deleted_at", deleted_at.as_str()),
        ],
    )
}

/// A complete full load's orphans (see `destinations::plan::Orphans`) as `(key, version,
/// true AS _syncline_deleted)`, the shape the tombstones are recorded from: the live rows of the
/// table before the merge whose key the load lacks, written by a load that started before
/// `load_id`.
pub(crate) fn orphans(layout: &TableLayout, load_id: &str) -> String {
    let live = match layout.deletes {
        crate::load::DeleteMode::Hard => "TRUE".to_owned(),
        crate::load::DeleteMode::Soft => format!("t.{} IS NULL", quote_ident(DELETED_AT_COLUMN)),
    };
    let load_id_value = format!("'{}'", load_id.replace('\'', "''"));
    render(
        ORPHANS,
        &[
            ("key", &quote_ident(&layout.key)),
            ("version", &quote_ident(VERSION_COLUMN)),
            ("deleted", &quote_ident(DELETED_COLUMN)),
            ("target", &quote_ident(ORPHAN_TARGET_TABLE)),
            ("load", &quote_ident(ORPHAN_LOAD_TABLE)),
            ("live", &live),
            ("load_id", &quote_ident(crate::schema::LOAD_ID_COLUMN)),
            ("load_id_value", &load_id_value),
        ],
    )
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};

    use super::*;
    use crate::destinations::lake::types::table_layout;
    use crate::destinations::layout::test_request;
    use crate::load::DeleteMode;
    use crate::schema::{deleted_field, version_field};

    fn layout() -> TableLayout {
        table_layout(&test_request(
            "contacts",
            "Id",
            DeleteMode::Soft,
            vec![
                Field::new("Id", DataType::Utf8, false),
                Field::new(r#"Lead"Score"#, DataType::Float64, true),
                version_field(),
                deleted_field(),
            ],
        ))
        .unwrap()
    }

    #[test]
    fn quote_ident_doubles_quotes() {
        assert_eq!(quote_ident("id"), r#""id""#);
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_ident(""), r#""""#);
    }

    #[test]
    fn dedup_quotes_every_identifier() {
        let sql = dedup(&layout());
        assert!(
            sql.starts_with(
                r#"SELECT "Id", "Lead""Score", "_syncline_version", "_syncline_deleted""#
            ),
            "{sql}"
        );
        assert!(sql.contains(r#"PARTITION BY "Id""#), "{sql}");
        assert!(
            sql.contains(r#"ORDER BY "_syncline_version" DESC, "_syncline_deleted" DESC"#),
            "{sql}"
        );
        assert!(sql.contains(r#"FROM "syncline_staged""#), "{sql}");
    }

    #[test]
    fn soft_deletes_joins_on_the_key() {
        let sql = soft_deletes(&layout(), false);
        assert!(sql.contains(r#"ON t."Id" = s."Id""#), "{sql}");
        assert!(sql.contains(r#"t."_syncline_deleted_at" IS NULL"#), "{sql}");
        assert!(!sql.contains("_syncline_tombstone"), "{sql}");
        let guarded = soft_deletes(&layout(), true);
        assert!(
            guarded.contains(r#"(t."Id" IS NULL AND (s."_syncline_tombstone" IS NULL OR"#),
            "{guarded}"
        );
    }

    #[test]
    fn with_tombstones_joins_on_the_key() {
        let sql = with_tombstones(&layout());
        assert!(sql.contains(r#"ON x."Id" = s."Id""#), "{sql}");
        assert!(
            sql.contains(r#"x."_syncline_version" AS "_syncline_tombstone""#),
            "{sql}"
        );
    }

    #[test]
    fn render_keeps_other_braces() {
        assert_eq!(render("a { b {c} {", &[("c", "C")]), "a { b C {");
        assert_eq!(render("{c}", &[("c", "{c}")]), "{c}");
    }
}
