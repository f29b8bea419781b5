//! Per-stream state in the staging object store: the cursor, the load in flight, the recent
//! loads, totals and failures (`status` and `ui` show them), and the stream's lease (`lease`),
//! without which no state is written; `holder` reads who has it without taking it.
//!
//! The cursor advances only after the destination committed the load that reached it. A
//! load that was staged but whose commit was not yet recorded here is kept as `pending`: the
//! next run asks the destination's ledger whether it committed, merges it again from the
//! stage if not (the ledger makes that idempotent), and only then moves the cursor.

mod lease;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

pub use lease::{Fence, Lease, LeaseHolder, run_id};

use crate::Result;
use crate::error::{Classified, ErrorKind};
use crate::load::{CursorRange, LoadMode, SetAside};
use crate::reconcile::report::ReconcileOutcome;
use crate::stage::Stage;

/// The leases this process holds, by stream: `save` proves the stream's is still ours.
type Leases = Arc<Mutex<HashMap<String, Fence>>>;

/// What can go wrong with a stream's state and lock.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state of stream {stream} at {path} is corrupt")]
    Corrupt {
        stream: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "stream {stream} is being synced by pid {pid} on {host} (run {run_id}) since {since}; its lease (in {path}) expires at {until} unless that run renews it"
    )]
    Held {
        stream: String,
        pid: u32,
        host: String,
        run_id: String,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        path: String,
    },
    #[error(
        "stream {stream}: this run lost its lease to another run (it was not renewed in time); stopped before writing state or merging"
    )]
    TakenOver { stream: String },
    #[error("stream {stream}: state written without holding the stream's lease (a bug)")]
    NotLocked { stream: String },
}

impl Classified for StateError {
    fn kind(&self) -> ErrorKind {
        match self {
            StateError::Corrupt { .. } => ErrorKind::Stage,
            StateError::Held { .. }
            | StateError::TakenOver { .. }
            | StateError::NotLocked { .. } => ErrorKind::Locked,
        }
    }
}

/// What syncline remembers about one stream between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// Upper bound (epoch ms, exclusive) of the last committed load; `None` before the first.
    pub cursor: Option<i64>,
    /// Source-specific position saved with the cursor (files loaded, replication LSN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_state: Option<serde_json::Value>,
    /// A staged load whose destination commit has not been confirmed here yet.
    pub pending: Option<PendingLoad>,
    /// The last load that committed.
    pub last_load: Option<LastLoad>,
    /// Staged loads that could never merge, newest last (kept in the stage; see `SetAside`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<SetAside>,
    /// The last reconcile of the stream (`syncline reconcile`, or scheduled by `run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile: Option<ReconcileOutcome>,
    /// The last [`HISTORY`] committed loads, oldest first (`syncline ui` charts them). State
    /// written before it was kept starts with none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<LastLoad>,
    /// Rows merged by every load since the stream's first; `None` in state written before
    /// totals were kept, where they are unknown (they are not guessed from the history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<LoadTotals>,
    /// The stream's runs that failed since its last committed load (cleared by the next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StreamFailure>,
}

/// How many committed loads a stream's state keeps in `history`: enough for a chart of the
/// recent loads, few enough that the state stays one small object.
pub const HISTORY: usize = 30;

impl StreamState {
    /// Records a load the destination committed: the last load, the bounded history and the
    /// totals, and clears the failures it ends.
    pub fn record_load(&mut self, load: LastLoad) {
        // A stream without a load yet counts from zero; an older state's totals stay unknown.
        if self.totals.is_none() && self.last_load.is_none() {
            self.totals = Some(LoadTotals::default());
        }
        if let Some(totals) = self.totals.as_mut() {
            totals.loads += 1;
            totals.inserted += load.inserted;
            totals.updated += load.updated;
            totals.deleted += load.deleted;
            totals.dead_lettered += load.dead_lettered;
        }
        self.history.push(load.clone());
        if self.history.len() > HISTORY {
            self.history.drain(..self.history.len() - HISTORY);
        }
        self.last_load = Some(load);
        self.failure = None;
    }

    /// Records a run of the stream that failed (`reason` is the error's report, which never
    /// holds a secret or a row value).
    pub fn record_failure(&mut self, reason: String) {
        let count = self.failure.as_ref().map_or(0, |f| f.count) + 1;
        self.failure = Some(StreamFailure {
            at: Utc::now(),
            count,
            reason,
        });
    }
}

/// Sums over a stream's committed loads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadTotals {
    pub loads: u64,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub dead_lettered: u64,
}

impl LoadTotals {
    /// Live rows in the destination by syncline's own count (hard deletes; a soft delete
    /// keeps its row, flagged).
    pub fn live_rows(&self) -> u64 {
        self.inserted.saturating_sub(self.deleted)
    }
}

/// Failed runs of a stream since its last committed load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFailure {
    /// When the last of them failed.
    pub at: DateTime<Utc>,
    /// How many runs failed in a row.
    pub count: u64,
    /// The last one's error report.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLoad {
    pub load_id: String,
    pub mode: LoadMode,
    pub cursor: CursorRange,
    /// Why merging it failed in a way retrying will not cure; the next run sets it aside
    /// instead of failing on it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastLoad {
    pub load_id: String,
    pub committed_at: DateTime<Utc>,
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// From the start of its staging to the state commit; absent in older state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Records of the load that went to the dead letters instead.
    #[serde(default)]
    pub dead_lettered: u64,
}

/// Reads and writes stream state and locks under `{pipeline}/_state` and `{pipeline}/_locks`.
#[derive(Debug, Clone)]
pub struct StateStore {
    stage: Stage,
    pipeline: String,
    leases: Leases,
}

impl StateStore {
    pub fn new(stage: &Stage, pipeline: &str) -> StateStore {
        StateStore {
            stage: stage.clone(),
            pipeline: pipeline.to_string(),
            leases: Leases::default(),
        }
    }

    pub async fn load(&self, stream: &str) -> Result<StreamState> {
        let path = self
            .stage
            .path(&[&self.pipeline, "_state", &format!("{stream}.json")]);
        match self.stage.store().get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                serde_json::from_slice(&bytes).map_err(|source| {
                    StateError::Corrupt {
                        stream: stream.to_string(),
                        path: path.to_string(),
                        source,
                    }
                    .into()
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(StreamState::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the state of a stream (a single PUT: object stores make it atomic), once the
    /// stream's lease proved to be still ours: a run that lost it writes nothing.
    pub async fn save(&self, stream: &str, state: &StreamState) -> Result<()> {
        self.check_lease(stream).await?;
        let path = self
            .stage
            .path(&[&self.pipeline, "_state", &format!("{stream}.json")]);
        self.stage
            .store()
            .put(&path, serde_json::to_vec_pretty(state)?.into())
            .await?;
        Ok(())
    }

    /// Takes the lease of a stream, so two runs never overlap on it (see `lease`): it is
    /// renewed in the background until released, taken over by another run only after
    /// `ttl_seconds` without renewal, and every `save` of this stream's state proves it is
    /// still ours first.
    pub async fn lock(&self, stream: &str, ttl_seconds: u64) -> Result<StreamLock> {
        let dir = self.stage.path(&[&self.pipeline, "_locks", stream]);
        let lease = Lease::acquire(
            self.stage.store().clone(),
            dir,
            stream,
            std::time::Duration::from_secs(ttl_seconds),
        )
        .await?;
        self.leases
            .lock()
            .expect("lease registry is not poisoned")
            .insert(stream.to_string(), lease.fence());
        Ok(StreamLock {
            lease,
            leases: self.leases.clone(),
            stream: stream.to_string(),
        })
    }

    /// Who holds the stream's lease now (`None`: nobody, or its last run released it).
    pub async fn lease_holder(&self, stream: &str) -> Result<Option<LeaseHolder>> {
        let dir = self.stage.path(&[&self.pipeline, "_locks", stream]);
        lease::holder(self.stage.store().as_ref(), &dir).await
    }

    /// Fails unless this run still holds the stream's lease (and extends it): call before a
    /// write only the holder may make, such as a merge.
    pub async fn check_lease(&self, stream: &str) -> Result<()> {
        let fence = self
            .leases
            .lock()
            .expect("lease registry is not poisoned")
            .get(stream)
            .cloned();
        match fence {
            Some(fence) => fence.check().await,
            None => Err(StateError::NotLocked {
                stream: stream.to_string(),
            }
            .into()),
        }
    }
}

/// A held stream lease; `release` it when the run of the stream ends.
#[derive(Debug)]
pub struct StreamLock {
    lease: Lease,
    leases: Leases,
    stream: String,
}

impl StreamLock {
    pub async fn release(self) -> Result<()> {
        self.leases
            .lock()
            .expect("lease registry is not poisoned")
            .remove(&self.stream);
        self.lease.release().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(n: u64) -> LastLoad {
        LastLoad {
            load_id: format!("load-{n}"),
            committed_at: Utc::now(),
            rows: n,
            inserted: n,
            updated: 1,
            deleted: 1,
            duration_ms: Some(5),
            dead_lettered: 2,
        }
    }

    /// A state file written before history, totals, failures and durations were kept.
    const OLD_STATE: &str = r#"{
      "cursor": 1700000000000,
      "pending": null,
      "last_load": {"load_id": "old", "committed_at": "2026-01-02T03:04:05Z",
                    "rows": 10, "inserted": 7, "updated": 3, "deleted": 0}
    }"#;

    #[test]
    fn an_older_state_file_reads_and_its_unknown_totals_stay_unknown() {
        let mut state: StreamState = serde_json::from_str(OLD_STATE).unwrap();
        assert_eq!(state.last_load.as_ref().unwrap().duration_ms, None);
        assert!(state.history.is_empty() && state.totals.is_none());
        state.record_load(load(4));
        // Its earlier loads were never counted: a total from now on would be wrong.
        assert_eq!(state.totals, None);
        assert_eq!(state.history.len(), 1);
        let again: StreamState =
            serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(again, state);
    }

    #[test]
    fn history_is_bounded_and_totals_count_every_load() {
        let mut state = StreamState::default();
        state.record_failure("boom".into());
        state.record_failure("boom again".into());
        assert_eq!(state.failure.as_ref().unwrap().count, 2);
        for n in 1..=(HISTORY as u64 + 5) {
            state.record_load(load(n));
        }
        assert_eq!(state.failure, None, "a committed load ends the failures");
        assert_eq!(state.history.len(), HISTORY);
        assert_eq!(state.history[0].load_id, "load-6", "the oldest went first");
        let totals = state.totals.unwrap();
        let n = HISTORY as u64 + 5;
        assert_eq!(totals.loads, n);
        assert_eq!(totals.inserted, n * (n + 1) / 2);
        assert_eq!(totals.live_rows(), n * (n + 1) / 2 - n);
        assert_eq!(totals.dead_lettered, 2 * n);
    }
}
