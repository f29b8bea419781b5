//! `[source]` with `type = "postgres"`: the keys, their defaults and their validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{KeyError, Secret};

/// `[source]` with `type = "postgres"`: tables of a PostgreSQL database, by logical
/// replication (`mode = "cdc"`) or by a cursor column (`mode = "cursor"`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// `postgres://user:password@host:port/db`. Use `${VAR}`; it is never logged. CDC needs a
    /// user with the `REPLICATION` attribute (or a superuser) that may create publications.
    pub url: Secret,
    /// `"cdc"` (default): logical replication with the `pgoutput` plugin, an initial snapshot
    /// consistent with the slot, inserts, updates and deletes. `"cursor"`: incremental reads
    /// by each table's `cursor_column` (no deletes), for servers without logical replication.
    #[serde(default)]
    pub mode: PostgresMode,
    /// Tables to sync, each a stream; the table is `public.<stream>` unless
    /// `[source.tables.NAME] table` names another.
    pub streams: Vec<String>,
    /// Per-table settings, keyed by stream name.
    #[serde(default)]
    pub tables: BTreeMap<String, PostgresTableConfig>,
    /// CDC: replication slot and publication names are `{slot_prefix}_{stream}` (lowercased,
    /// other characters than letters, digits and `_` replaced by `_`). Default
    /// `syncline_{pipeline.name}`.
    pub slot_prefix: Option<String>,
    /// Cursor mode: only rows whose timestamp cursor is at least this many seconds old are
    /// read, so a long transaction that commits late with an older cursor value is not
    /// skipped. Default 0 (no upper bound). Integer cursors ignore it.
    #[serde(default)]
    pub lag_seconds: u64,
}

/// How the postgres source reads changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMode {
    #[default]
    Cdc,
    Cursor,
}

/// `[source.tables.NAME]`
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresTableConfig {
    /// The source table, optionally schema-qualified (`sales.contacts`). Default: the
    /// stream name in schema `public`.
    pub table: Option<String>,
    /// The key column (one column, integer or text-like). Default: the table's primary key;
    /// a table without a single-column primary key needs it.
    pub key: Option<String>,
    /// Cursor mode (required there): a `timestamp`, `timestamptz` or integer column that
    /// grows whenever a row changes, e.g. `updated_at`.
    pub cursor_column: Option<String>,
    /// Columns to sync (the key is always included). Default: every column.
    pub columns: Option<Vec<String>>,
}

impl PostgresSourceConfig {
    /// Settings of one table (defaults when it has no `[source.tables.NAME]`).
    pub fn table(&self, stream: &str) -> PostgresTableConfig {
        self.tables.get(stream).cloned().unwrap_or_default()
    }
}

impl PostgresSourceConfig {
    /// The replication slot and publication name of a stream (CDC): `{slot_prefix}_{stream}`
    /// with the prefix defaulting to `syncline_{pipeline}`, lowercase letters, digits and `_`,
    /// at most 63 bytes (PostgreSQL's limit).
    pub fn slot_name(&self, pipeline: &str, stream: &str) -> String {
        let prefix = match &self.slot_prefix {
            Some(prefix) => prefix.clone(),
            None => format!("syncline_{pipeline}"),
        };
        let mut name: String = format!("{prefix}_{stream}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        name.truncate(63);
        name
    }

    /// CDC: two streams whose slot names come out the same would take each other's slot and
    /// publication, each reading the other's changes or none; refuse that before any run.
    pub fn validate_slot_names(&self, pipeline: &str) -> Result<(), KeyError> {
        if self.mode != PostgresMode::Cdc {
            return Ok(());
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for stream in &self.streams {
            let slot = self.slot_name(pipeline, stream);
            if let Some(first) = seen.insert(slot.clone(), stream) {
                return Err(KeyError::new(
                    &["source", "streams"],
                    &format!(
                        "streams {first:?} and {stream:?} would share the replication slot and \
                         publication {slot:?} (names are lowercased, other characters become `_`, \
                         and cut at 63 bytes); rename one, or shorten `slot_prefix`"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks what parsing cannot; errors name the key under `source`.
    pub fn validate(&self) -> Result<(), KeyError> {
        let url = self.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            // Do not echo the value: it carries the password.
            return Err(KeyError::new(
                &["source", "url"],
                "must start with postgres:// or postgresql://",
            ));
        }
        let streams = &self.streams;
        for (stream, table) in &self.tables {
            if !streams.contains(stream) {
                return Err(KeyError::new(
                    &["source", "tables", stream],
                    &format!("stream {stream:?} is not listed in source.streams {streams:?}"),
                ));
            }
            if let Some(name) = &table.table {
                let parts: Vec<&str> = name.split('.').collect();
                if parts.len() > 2 || parts.iter().any(|part| part.is_empty()) {
                    return Err(KeyError::new(
                        &["source", "tables", stream, "table"],
                        "must be `table` or `schema.table`",
                    ));
                }
            }
        }
        if self.mode == PostgresMode::Cursor {
            for stream in streams {
                if self.table(stream).cursor_column.is_none() {
                    return Err(KeyError::new(
                        &["source", "mode"],
                        &format!(
                            "is \"cursor\", so stream {stream:?} needs \
                             `[source.tables.{stream}] cursor_column` (a timestamp or \
                             integer column that grows on every change)"
                        ),
                    ));
                }
            }
        }
        if let Some(prefix) = &self.slot_prefix {
            if prefix.is_empty()
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(KeyError::new(
                    &["source", "slot_prefix"],
                    "must use only lowercase letters, digits and `_` (replication slot names)",
                ));
            }
        }
        Ok(())
    }
}
