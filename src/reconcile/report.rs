//! The machine-readable run report (`syncline run --report PATH`).

use serde::{Deserialize, Serialize};

use super::Fingerprint;
use crate::load::{CursorRange, LoadMode, SchemaChange, SetAside};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    Failed,
    /// Counts or checksums differed between hops.
    Mismatch,
    /// Not run because an earlier failure stopped the run.
    Skipped,
    /// The source stopped early and cleanly (API quota); what was read is merged and the
    /// cursor saved, so the next run resumes. Also a stream not read at all because the
    /// quota ran out earlier in the run.
    Stopped,
}

/// Count and checksum of a load at each hop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// As extracted from the source (before staging).
    pub source: Fingerprint,
    /// Read back from the staged Parquet files.
    pub stage: Fingerprint,
    /// As received by the destination, computed by the destination itself. `None` when the
    /// load was already committed (replayed) and nothing was sent.
    pub destination: Option<Fingerprint>,
    /// Written by the stream's transform (what the destination receives), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformed: Option<Fingerprint>,
    /// Live rows the transform's filter left out: `stage = transformed + filtered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered: Option<Fingerprint>,
    pub matched: bool,
}

/// Where one stream's time went, in milliseconds per phase, summed over the loads of the run
/// (a load finished for an earlier run included). Phases that overlap in time (a source that
/// reads ahead while a batch is written) are each counted in full, so the sum may exceed the
/// stream's `duration_ms`; a phase that did not run is 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTimings {
    /// Waiting for the source's next batch: its queries or API calls and their decoding.
    pub extract_ms: u64,
    /// The value rule (`values::apply`) and the extraction's count and checksum.
    pub convert_ms: u64,
    /// Encoding the batches (and dead letters) as Parquet and writing them to the stage.
    pub parquet_write_ms: u64,
    /// Reading the staged files back and proving they hold what was extracted.
    pub read_back_ms: u64,
    /// Writing the manifest and recording the load as pending.
    pub manifest_ms: u64,
    /// Creating or altering the destination table.
    pub ensure_table_ms: u64,
    /// Sending the staged rows to the destination, reading them from the stage included
    /// (PostgreSQL's COPY, Snowflake's COPY INTO, the lake's spool).
    pub load_ms: u64,
    /// The merge's statements, checking what the destination received included.
    pub merge_ms: u64,
    /// The destination's commit of the merge and its ledger row.
    pub commit_ms: u64,
    /// Saving the advanced cursor and telling the source.
    pub state_ms: u64,
    /// The load went straight into an empty table (PostgreSQL: one COPY, no staging table,
    /// no merge statements).
    pub direct_copy: bool,
    /// The load was copied into the destination while it was being staged (PostgreSQL, a
    /// full load into an empty table): `load_ms` overlaps extraction and Parquet writing.
    #[serde(default)]
    pub copied_while_staging: bool,
}

/// Milliseconds of a duration, for the report.
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamReport {
    pub stream: String,
    pub status: Status,
    pub load_id: Option<String>,
    pub mode: Option<LoadMode>,
    /// The load was recovered from an earlier interrupted run rather than extracted now.
    pub recovered: bool,
    /// The destination already had this load in its ledger; nothing was applied.
    pub skipped_as_replay: bool,
    pub rows_extracted: u64,
    pub rows_staged: u64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_deleted: u64,
    pub rows_dead_lettered: u64,
    /// Live rows the stream's transform filter left out (counted, never silently lost).
    #[serde(default)]
    pub rows_filtered: u64,
    /// Text values changed on the way to the destination by the one rule every destination
    /// shares (`crate::values`: NUL becomes U+FFFD).
    #[serde(default)]
    pub values_replaced: u64,
    pub dead_letter_file: Option<String>,
    pub cursor: Option<CursorRange>,
    pub cursor_from: Option<String>,
    pub cursor_to: Option<String>,
    pub duration_ms: u64,
    pub reconciliation: Reconciliation,
    /// Where the stream's time went, phase by phase.
    #[serde(default)]
    pub phases: PhaseTimings,
    pub schema_change: Option<SchemaChange>,
    /// Loads of earlier runs that could never merge and were set aside by this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<SetAside>,
    /// Why the source stopped early, or why the stream was not read (status `stopped`).
    pub stopped: Option<String>,
    /// The source's API usage after the run, e.g. `"1834/15000"`, when it reports one.
    pub api_usage: Option<String>,
    pub error: Option<String>,
    /// The exit code this stream's error alone would give (2: configuration, 3: mismatch, 1: other).
    pub error_exit_code: Option<i32>,
    /// Whether re-running as is may succeed (network faults, throttling after all retries).
    pub retryable: Option<bool>,
    /// What the source warned about this load (deletes that may have been missed, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// A reconcile of the stream is recommended (`warnings` say why); a `[reconcile]`
    /// schedule runs one in this run, whatever `every` says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconcile_recommended: bool,
    /// The scheduled reconcile (`[reconcile] every`) this run ran after the stream's load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileOutcome>,
}

impl StreamReport {
    pub fn new(stream: &str) -> StreamReport {
        StreamReport {
            stream: stream.to_string(),
            status: Status::Skipped,
            load_id: None,
            mode: None,
            recovered: false,
            skipped_as_replay: false,
            rows_extracted: 0,
            rows_staged: 0,
            rows_inserted: 0,
            rows_updated: 0,
            rows_deleted: 0,
            rows_dead_lettered: 0,
            rows_filtered: 0,
            values_replaced: 0,
            dead_letter_file: None,
            cursor: None,
            cursor_from: None,
            cursor_to: None,
            duration_ms: 0,
            reconciliation: Reconciliation::default(),
            phases: PhaseTimings::default(),
            schema_change: None,
            set_aside: Vec::new(),
            stopped: None,
            api_usage: None,
            error: None,
            error_exit_code: None,
            retryable: None,
            warnings: Vec::new(),
            reconcile_recommended: false,
            reconcile: None,
        }
    }

    /// Records the cursor range, shown as `text` renders a cursor (an ISO time, an LSN, ...).
    pub fn set_cursor(&mut self, cursor: CursorRange, text: impl Fn(i64) -> String) {
        self.cursor_from = cursor.from.map(&text);
        self.cursor_to = Some(text(cursor.to));
        self.cursor = Some(cursor);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub pipeline: String,
    pub status: Status,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: u64,
    /// The process exit code this report corresponds to (see README).
    pub exit_code: i32,
    pub streams: Vec<StreamReport>,
}

/// What a stream's reconcile ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileResult {
    /// Both sides matched.
    Clean,
    /// Differences remain: not repaired, or `ahead` rows a repair never overwrites.
    Drift,
    /// Every difference found was repaired.
    Repaired,
    /// The API quota ran out; what was repaired is merged, the next reconcile finds the rest.
    Stopped,
    /// The reconcile could not compare or its repair failed (`error` says why).
    Failed,
}

/// A stream's reconcile in short: kept in the stream's state (`status` shows the last one)
/// and in the run report of a run that scheduled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileOutcome {
    pub at: chrono::DateTime<chrono::Utc>,
    pub result: ReconcileResult,
    pub missing: u64,
    pub stale: u64,
    pub ahead: u64,
    pub orphaned: u64,
    pub in_flight: u64,
    /// Rows the repair inserted, updated and deleted.
    #[serde(default)]
    pub repaired_rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReconcileOutcome {
    /// One line for people: `drift at 2026-01-02T03:04:05Z (missing 1, stale 0, ...)`.
    pub fn summary(&self) -> String {
        let result = match self.result {
            ReconcileResult::Clean => "clean",
            ReconcileResult::Drift => "drift",
            ReconcileResult::Repaired => "repaired",
            ReconcileResult::Stopped => "stopped (API quota)",
            ReconcileResult::Failed => "failed",
        };
        let mut line = format!(
            "{result} at {} (missing {}, stale {}, ahead {}, orphaned {}, in flight {}",
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.missing,
            self.stale,
            self.ahead,
            self.orphaned,
            self.in_flight
        );
        if self.repaired_rows > 0 {
            line.push_str(&format!("; {} rows repaired", self.repaired_rows));
        }
        line.push(')');
        if let Some(error) = &self.error {
            line.push_str(&format!(": {error}"));
        }
        line
    }
}
