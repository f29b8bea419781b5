//! Per-stream state in the staging object store: the cursor, the load in flight, and the run lock.
//!
//! The cursor advances only after the destination committed the load that reached it. A
//! load that was staged but whose commit was not yet recorded here is kept as `pending`: the
//! next run asks the destination's ledger whether it committed, merges it again from the
//! stage if not (the ledger makes that idempotent), and only then moves the cursor.

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Classified, ErrorKind};
use crate::load::{CursorRange, LoadMode, SetAside};
use crate::stage::Stage;
use crate::{Error, Result};

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
        "stream {stream} is being synced by pid {pid} on {host} since {since}; if that run is gone, delete {path}"
    )]
    Held {
        stream: String,
        pid: u32,
        host: String,
        since: DateTime<Utc>,
        path: String,
    },
    #[error("stream {stream} was locked by another run")]
    TakenOver { stream: String },
}

impl Classified for StateError {
    fn kind(&self) -> ErrorKind {
        match self {
            StateError::Corrupt { .. } => ErrorKind::Stage,
            StateError::Held { .. } | StateError::TakenOver { .. } => ErrorKind::Locked,
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
}

impl StateStore {
    pub fn new(stage: &Stage, pipeline: &str) -> StateStore {
        StateStore {
            stage: stage.clone(),
            pipeline: pipeline.to_string(),
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

    /// Replaces the state of a stream (a single PUT: object stores make it atomic).
    pub async fn save(&self, stream: &str, state: &StreamState) -> Result<()> {
        let path = self
            .stage
            .path(&[&self.pipeline, "_state", &format!("{stream}.json")]);
        self.stage
            .store()
            .put(&path, serde_json::to_vec_pretty(state)?.into())
            .await?;
        Ok(())
    }

    /// Takes the run lock of a stream, so two runs never overlap on it.
    ///
    /// The lock is an object created only if absent. A lock left by a process on this host
    /// that no longer runs (a crash, a SIGKILL), or older than `ttl_seconds`, is taken over.
    pub async fn lock(&self, stream: &str, ttl_seconds: u64) -> Result<StreamLock> {
        let path = self
            .stage
            .path(&[&self.pipeline, "_locks", &format!("{stream}.lock")]);
        let mine = LockOwner {
            host: hostname(),
            pid: std::process::id(),
            acquired_at: Utc::now(),
        };
        let body: PutPayload = serde_json::to_vec(&mine)?.into();
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .stage
            .store()
            .put_opts(&path, body.clone(), create)
            .await
        {
            Ok(_) => {
                return Ok(StreamLock {
                    stage: self.stage.clone(),
                    path,
                });
            }
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let existing = self.stage.store().get(&path).await?;
        let meta = existing.meta.clone();
        let holder: Option<LockOwner> = serde_json::from_slice(&existing.bytes().await?).ok();
        let abandoned = match &holder {
            Some(h) => {
                (h.host == mine.host && !process_alive(h.pid))
                    || (Utc::now() - h.acquired_at).num_seconds() > ttl_seconds as i64
            }
            None => true,
        };
        if !abandoned {
            let h = holder.expect("a live lock has an owner");
            return Err(StateError::Held {
                stream: stream.to_string(),
                pid: h.pid,
                host: h.host,
                since: h.acquired_at,
                path: path.to_string(),
            }
            .into());
        }
        // Replace only the lock we looked at: a concurrent taker makes this fail.
        let update = PutOptions {
            mode: PutMode::Update(object_store::UpdateVersion {
                e_tag: meta.e_tag,
                version: meta.version,
            }),
            ..Default::default()
        };
        match self
            .stage
            .store()
            .put_opts(&path, body.clone(), update)
            .await
        {
            Ok(_) => {}
            // Stores without conditional update (the local file system) fall back to delete + create.
            Err(object_store::Error::NotImplemented { .. }) => {
                self.stage.store().delete(&path).await?;
                let create = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                self.stage
                    .store()
                    .put_opts(&path, body, create)
                    .await
                    .map_err(|e| match e {
                        object_store::Error::AlreadyExists { .. } => {
                            Error::from(StateError::TakenOver {
                                stream: stream.to_string(),
                            })
                        }
                        other => Error::from(other),
                    })?;
            }
            Err(object_store::Error::Precondition { .. }) => {
                return Err(StateError::TakenOver {
                    stream: stream.to_string(),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        }
        tracing::warn!(stream, "took over an abandoned lock");
        Ok(StreamLock {
            stage: self.stage.clone(),
            path,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockOwner {
    host: String,
    pid: u32,
    acquired_at: DateTime<Utc>,
}

/// A held stream lock; `release` it when the run of the stream ends.
#[derive(Debug)]
pub struct StreamLock {
    stage: Stage,
    path: object_store::path::Path,
}

impl StreamLock {
    pub async fn release(self) -> Result<()> {
        self.stage.store().delete(&self.path).await?;
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence without sending anything.
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 has no effect on the target process.
    unsafe {
        libc::kill(pid, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}
