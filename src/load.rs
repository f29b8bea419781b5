//! The vocabulary of a load, shared by every layer above it: which cursor range a load
//! covers, whether it is full or incremental, how deletes reach the destination, what a
//! record that could not be converted looks like, and what a merge changed in the table's
//! schema. Nothing here does I/O; sources, the stage, destinations and the pipeline all speak
//! these types, so they live below all of them.

use serde::{Deserialize, Serialize};

/// Whether a load reads every record or only the changed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Every record of the stream (first run or `--full-refresh`).
    Full,
    /// Records changed inside the cursor range.
    Incremental,
    /// Records `syncline reconcile --repair` fetched by key, and deletes of orphaned keys;
    /// the cursor does not move.
    Repair,
}

/// The source cursor range a load covers, as epoch milliseconds (or the source's own
/// integer position, such as an LSN): `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRange {
    /// `None` for a full load.
    pub from: Option<i64>,
    pub to: i64,
}

/// How a delete at the source reaches the destination.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// The row is removed.
    #[default]
    Hard,
    /// The row stays with `_syncline_deleted_at` set.
    Soft,
}

/// One record that could not be converted, with the reason. It goes to the load's
/// dead-letter file instead of failing the load.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The record's key as text (empty when the key itself was unreadable).
    pub key: String,
    /// The field that failed, when one did.
    pub field: Option<String>,
    pub reason: String,
    /// The record exactly as the source sent it.
    pub raw: String,
}

/// A staged load that failed to merge for a reason retrying will not cure (a value the
/// destination rejects, schema drift, a staged file that no longer matches its manifest),
/// set aside so the stream goes on. Its files stay in the stage; the cursor never moved past
/// it, so the next extraction reads its range again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAside {
    pub load_id: String,
    /// Why it could not merge (the error as the failed run reported it).
    pub reason: String,
    pub set_aside_at: chrono::DateTime<chrono::Utc>,
}

/// What `ensure_table` changed before a merge: a table created, or columns added because
/// the source grew new fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaChange {
    pub created_table: bool,
    pub added_columns: Vec<String>,
}
