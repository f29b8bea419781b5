//! Per-stream state in the staging object store: the cursor, the load in flight, and the
//! stream's lease (`lease`), without which no state is written.
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
