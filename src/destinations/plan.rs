//! What one merge writes, in no dialect: the columns a load holds, what makes an incoming row
//! differ from the table's, and what the update, insert and soft-delete clauses write. Every
//! destination renders the same plan, PostgreSQL and Snowflake into their own SQL templates
//! (`sql/postgres/*.sql`, `sql/snowflake/*.sql`), the lake into delta-rs MERGE clauses; so the
//! three agree on the merge semantics of the `destinations` module contract by construction.
//!
//! Every plan merges the incoming (de-duplicated) rows, aliased `s` in SQL, into the table,
//! aliased `t`, on the key.
//!
//! A delete is remembered even where no row is left to carry it, so that an older version of
//! the key arriving later (a re-read file, a late re-send, an overlap) cannot bring it back:
//! - soft deletes: a delete of a key the table lacks inserts a row marked deleted (the key,
//!   the version, the delete time, the load id; every other column NULL), which the ordinary
//!   update rules then treat like any soft-deleted row;
//! - hard deletes: every delete records a tombstone, the key (as text) and the newest delete
//!   version any load carried for it, in a side table ([`TOMBSTONE_TABLE`] in SQL destinations,
//!   a side Delta table in the lake). A live row whose key the table lacks is inserted only when
//!   it is newer than the key's tombstone (a delete wins a tie); that check is made in soft mode
//!   too, so the tombstones of a stream that moved from hard to soft deletes keep holding.
//!   Tombstones are never removed:
//!   a tombstone older than a live row is inert (rows the table holds are compared with the row,
//!   never with the tombstone). Because a tombstone depends only on the loads' deletes and not
//!   on the table, recording it is idempotent and may happen before the table's merge commits.
//!
//! A complete full load also deletes the table's live rows whose key it lacks, the orphans:
//! they are gone from the source (see [`Orphans`]).

use crate::load::DeleteMode;
use crate::sql::quote_ident;

/// Hard deletes' tombstones in a SQL destination: one table per schema, keyed by destination
/// table and key text, columns `table_name`, `key`, `version` (the newest delete's version) and
/// `load_id` (the load that recorded it).
pub(crate) const TOMBSTONE_TABLE: &str = "_syncline_tombstones";

/// The key's tombstone version, joined to the incoming rows where a destination's insert clause
/// can only see the incoming rows (Snowflake's and delta-rs' MERGE); NULL for no tombstone.
pub(crate) const TOMBSTONE_COLUMN: &str = "_syncline_tombstone";

/// The orphans a complete full load deletes: the table's live rows whose key the load lacks
/// and that no later load wrote. Load ids are UUIDv7, which sort by the time the load started,
/// so "no later load" is `_syncline_load_id` sorting before the full load's id (or NULL): a row
/// written by a load that started after the full load's extraction may hold a record the full
/// load could not see yet, and is kept. Hard deletes remove an orphan and record a tombstone at
/// the row's version (so a late re-send of that version cannot bring it back); soft deletes set
/// its `_syncline_deleted_at` to [`Orphans::as_of`] and its load id, keeping its version and
/// data. Either way the delete counts among the merge's deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Orphans {
    /// When the full load's extraction started: when the source was seen without the row.
    pub as_of: chrono::DateTime<chrono::Utc>,
}

/// Where a value a merge writes comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// The incoming row's column.
    Incoming(&'a str),
    /// The id of the load being merged.
    LoadId,
    /// No value: the only column ever set to it is `_syncline_deleted_at`.
    Null,
}

/// One term of the comparison that decides whether a live incoming row changes a table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compare<'a> {
    /// The column differs between the table row and the incoming row (nulls compare equal).
    Column(&'a str),
    /// The table row is soft-deleted, so a live row brings it back.
    SoftDeleted,
}

/// The merge of one load into one table (see [`super::layout::TableLayout::merge_plan`]).
#[derive(Debug, Clone)]
pub(crate) struct MergePlan<'a> {
    /// Destination table name, unquoted.
    pub table: &'a str,
    /// Key column name, unquoted.
    pub key: &'a str,
    pub deletes: DeleteMode,
    /// Every staged column in the staged schema's order: what the load's rows hold.
    pub staged: Vec<&'a str>,
    /// A live incoming row at least as new as the table row updates it only if one of these
    /// holds: the data columns, the version, and in soft-delete mode a deleted table row.
    pub compared: Vec<Compare<'a>>,
    /// What updating a table row with a live incoming row writes.
    pub update: Vec<(&'a str, Value<'a>)>,
    /// What inserting a live incoming row whose key is new writes.
    pub insert: Vec<(&'a str, Value<'a>)>,
    /// Soft deletes: what marking a table row deleted writes (the delete time is the delete's
    /// version).
    pub soft_delete: Vec<(&'a str, Value<'a>)>,
    /// Soft deletes: what a delete of a key the table lacks inserts, a row marked deleted;
    /// `None` in hard-delete mode.
    pub insert_deleted: Option<Vec<(&'a str, Value<'a>)>>,
    /// Hard deletes: every incoming delete records a tombstone (module docs). Whatever the
    /// mode, a live row whose key the table lacks is inserted only when newer than the key's
    /// tombstone.
    pub tombstones: bool,
    /// A complete full load: what it deletes besides the rows it carries; `None` otherwise.
    pub orphans: Option<Orphans>,
}

impl<'a> MergePlan<'a> {
    /// What the insert writes into the table column `column`: NULL for a column it leaves out
    /// (`_syncline_deleted_at`, or one a former schema added), as a merged insert does.
    pub(crate) fn inserted(&self, column: &str) -> Value<'a> {
        self.insert
            .iter()
            .find(|(name, _)| *name == column)
            .map_or(Value::Null, |(_, value)| *value)
    }
}

impl Value<'_> {
    /// The value as SQL over the incoming rows aliased `s`; `load_id` is how the statement
    /// spells the load id (a bind parameter or a literal).
    pub(crate) fn sql(&self, load_id: &str) -> String {
        match self {
            Value::Incoming(column) => format!("s.{}", quote_ident(column)),
            Value::LoadId => load_id.to_owned(),
            Value::Null => "NULL".to_owned(),
        }
    }
}

/// `"column" = value` for each column of `set`, as SQL (see [`Value::sql`]).
pub(crate) fn assignments(set: &[(&str, Value<'_>)], load_id: &str) -> Vec<String> {
    set.iter()
        .map(|(column, value)| format!("{} = {}", quote_ident(column), value.sql(load_id)))
        .collect()
}

/// The quoted columns of `set`, and their values as SQL, for an `INSERT (...) VALUES (...)`.
pub(crate) fn insert_lists(set: &[(&str, Value<'_>)], load_id: &str) -> (Vec<String>, Vec<String>) {
    set.iter()
        .map(|(column, value)| (quote_ident(column), value.sql(load_id)))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_values_over_the_incoming_rows() {
        let set = [
            ("Lead \"Score\"", Value::Incoming("Lead \"Score\"")),
            ("_syncline_load_id", Value::LoadId),
            ("_syncline_deleted_at", Value::Null),
        ];
        assert_eq!(
            assignments(&set, "$1::text"),
            [
                r#""Lead ""Score""" = s."Lead ""Score""""#,
                r#""_syncline_load_id" = $1::text"#,
                r#""_syncline_deleted_at" = NULL"#,
            ]
        );
        let (columns, values) = insert_lists(&set, "'load-1'");
        assert_eq!(
            columns,
            [
                r#""Lead ""Score""""#,
                r#""_syncline_load_id""#,
                r#""_syncline_deleted_at""#
            ]
        );
        assert_eq!(values, [r#"s."Lead ""Score""""#, "'load-1'", "NULL"]);
    }
}
