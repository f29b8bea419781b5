//! What is kept in the stage, and what can be done with it without the source:
//! `syncline loads` lists staged loads with their manifest figures, `syncline replay` merges
//! staged loads again (through the batch pipeline's one merge path), `syncline gc` deletes
//! merged loads past retention.
//!
//! A staged load is the only copy of data that cost API quota, so `gc` never deletes one that
//! is not in the destination's ledger, nor the latest merged load of a stream, nor the load a
//! stream has pending; it keeps dead-letter files unless asked.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, warn};

use super::batch::{RunError, StreamRunner};
use crate::config::Config;
use crate::destinations::Destination;
use crate::error::{Classified, ErrorKind};
use crate::load::LoadMode;
use crate::reconcile::report::StreamReport;
use crate::stage::{Stage, StagedLoad};
use crate::state::StateStore;
use crate::{Result, sources};

/// Mistakes in what `replay` and `gc` were asked for.
#[derive(Debug, thiserror::Error)]
pub enum LoadsError {
    #[error("stream {stream} has no staged load {load_id} with a manifest (see `syncline loads`)")]
    NoSuchLoad { stream: String, load_id: String },
    #[error("{value:?} is not an age: write a number and a unit, e.g. 30d, 12h, 90m or 45s")]
    NotAnAge { value: String },
    #[error(
        "{value:?} is not a time: write RFC 3339 (2026-12-01T00:00:00Z) or a date (2026-12-01)"
    )]
    NotATime { value: String },
}

impl Classified for LoadsError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Config
    }
}

/// `30d`, `12h`, `90m`, `45s`: how old a load must be before `gc` may delete it.
pub fn parse_age(value: &str) -> std::result::Result<Duration, LoadsError> {
    let bad = || LoadsError::NotAnAge {
        value: value.to_string(),
    };
    let value = value.trim();
    let split = value.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(
        number.checked_mul(seconds).ok_or_else(bad)?,
    ))
}

/// An RFC 3339 time, or a date meaning its midnight UTC.
pub fn parse_time(value: &str) -> std::result::Result<DateTime<Utc>, LoadsError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Ok(time.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| LoadsError::NotATime {
            value: value.to_string(),
        })
}

/// One staged load as `syncline loads` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRow {
    pub stream: String,
    pub load_id: String,
    pub created_at: Option<DateTime<Utc>>,
    pub mode: Option<LoadMode>,
    pub rows: Option<u64>,
    pub checksum: Option<u64>,
    /// The cursor range the load covers, as the source shows cursors.
    pub cursor_from: Option<String>,
    pub cursor_to: Option<String>,
    /// Bytes of everything in the load's folder.
    pub bytes: u64,
    pub dead_lettered: Option<u64>,
    /// Whether the destination's ledger has it; `None` when the destination did not answer.
    pub merged: Option<bool>,
    /// `pending`, `set aside: ...`, `staging incomplete`, `collected; dead letters kept`.
    pub note: Option<String>,
}

/// `syncline loads`: the staged loads of `stream` (or of every configured stream), oldest first.
pub async fn list(config: &Config, stream: Option<&str>) -> Result<Vec<LoadRow>> {
    let streams = selected(config, stream)?;
    let stage = Stage::open(&config.staging)?;
    let state = StateStore::new(&stage, &config.pipeline.name);
    let source = sources::build(config)?;
    let destination = crate::destinations::build(config).await.ok();
    let mut rows = Vec::new();
    for stream in &streams {
        let saved = state.load(stream).await?;
        for load in stage.list_loads(&config.pipeline.name, stream).await? {
            let merged = match (&destination, &load.manifest) {
                (Some(d), Some(_)) => d.is_committed(stream, &load.load_id).await.ok(),
                (_, None) => Some(false),
                (None, Some(_)) => None,
            };
            let note = if saved
                .pending
                .as_ref()
                .is_some_and(|p| p.load_id == load.load_id)
            {
                Some("pending".to_string())
            } else if let Some(set) = saved.set_aside.iter().find(|s| s.load_id == load.load_id) {
                Some(format!("set aside: {}", set.reason))
            } else if load.dead_letters_only {
                Some("collected; dead letters kept".to_string())
            } else if load.manifest.is_none() {
                Some("staging incomplete".to_string())
            } else {
                None
            };
            let manifest = load.manifest.as_ref();
            rows.push(LoadRow {
                stream: stream.clone(),
                load_id: load.load_id.clone(),
                created_at: manifest.map(|m| m.created_at),
                mode: manifest.map(|m| m.mode),
                rows: manifest.map(|m| m.rows),
                checksum: manifest.map(|m| m.checksum),
                cursor_from: manifest
                    .and_then(|m| m.cursor.from)
                    .map(|c| source.cursor_text(stream, c)),
                cursor_to: manifest.map(|m| source.cursor_text(stream, m.cursor.to)),
                bytes: load.bytes,
                dead_lettered: manifest.map(|m| m.dead_letter.as_ref().map_or(0, |d| d.rows)),
                merged,
                note,
            });
        }
    }
    Ok(rows)
}

/// A table of loads for a terminal.
pub fn render(rows: &[LoadRow]) -> String {
    let dash = || "-".to_string();
    let mut out = format!(
        "{:<12} {:<36} {:<20} {:<11} {:>8} {:>20} {:>10} {:<7} {}\n",
        "stream",
        "load id",
        "created",
        "mode",
        "rows",
        "checksum",
        "bytes",
        "merged",
        "cursor range"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<12} {:<36} {:<20} {:<11} {:>8} {:>20} {:>10} {:<7} {}{}\n",
            r.stream,
            r.load_id,
            r.created_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(dash),
            r.mode
                .map(|m| format!("{m:?}").to_lowercase())
                .unwrap_or_else(dash),
            r.rows.map(|v| v.to_string()).unwrap_or_else(dash),
            r.checksum.map(|v| v.to_string()).unwrap_or_else(dash),
            r.bytes,
            match r.merged {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            },
            match (&r.cursor_from, &r.cursor_to) {
                (_, None) => dash(),
                (None, Some(to)) => format!("..{to}"),
                (Some(from), Some(to)) => format!("{from}..{to}"),
            },
            r.note
                .as_ref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default(),
        ));
    }
    out
}

/// Which loads `replay` merges again.
#[derive(Debug, Clone)]
pub enum ReplaySelection {
    LoadId(String),
    /// Every complete load staged at or after this time.
    Since(DateTime<Utc>),
}

/// What `replay` did with one load.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub load_id: String,
    /// `merged` (it was not in the ledger), `re-applied` (`--force` over a merged load),
    /// `already merged` (nothing done).
    pub action: &'static str,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// `syncline replay`: merges staged loads of `stream` again, oldest first, without calling
/// the source. A load already in the ledger is left alone unless `force`: then it is merged
/// under a new ledger id (`{load_id}.replay-{uuid}`), so the destination applies it again,
/// with never-older-over-newer still holding. The stream's lease is held meanwhile; its
/// state (cursor, pending load) does not change.
pub async fn replay(
    config: &Config,
    stream: &str,
    selection: &ReplaySelection,
    force: bool,
) -> Result<Vec<Replayed>> {
    selected(config, Some(stream))?;
    let runner = StreamRunner::open(config, false).await?;
    let lock = runner
        .state
        .lock(stream, config.pipeline.lock_ttl_seconds)
        .await?;
    let outcome = replay_locked(&runner, config, stream, selection, force).await;
    lock.release().await?;
    outcome
}

async fn replay_locked(
    runner: &StreamRunner<'_>,
    config: &Config,
    stream: &str,
    selection: &ReplaySelection,
    force: bool,
) -> Result<Vec<Replayed>> {
    let loads = runner
        .stage
        .list_loads(&config.pipeline.name, stream)
        .await?;
    let mut manifests: Vec<_> = loads
        .into_iter()
        .filter_map(|l| l.manifest)
        .filter(|m| match selection {
            ReplaySelection::LoadId(id) => &m.load_id == id,
            ReplaySelection::Since(since) => m.created_at >= *since,
        })
        .collect();
    if let (ReplaySelection::LoadId(id), true) = (selection, manifests.is_empty()) {
        return Err(LoadsError::NoSuchLoad {
            stream: stream.to_string(),
            load_id: id.clone(),
        }
        .into());
    }
    manifests.sort_by_key(|m| m.created_at);
    let mut done = Vec::new();
    for manifest in manifests {
        let merged = runner
            .destination
            .is_committed(stream, &manifest.load_id)
            .await?;
        if merged && !force {
            info!(stream, load_id = %manifest.load_id, "already merged; nothing to replay");
            done.push(Replayed {
                load_id: manifest.load_id,
                action: "already merged",
                inserted: 0,
                updated: 0,
                deleted: 0,
            });
            continue;
        }
        let mut request = manifest.clone();
        if merged {
            request.load_id = format!("{}.replay-{}", manifest.load_id, uuid::Uuid::now_v7());
        }
        // The figures come from the manifest, not an extraction: compare against it.
        let mut report = StreamReport::new(stream);
        report.recovered = true;
        let outcome = runner.merge(&request, &mut report).await?;
        crate::destinations::mirror::apply(config, &runner.stage, &request).await?;
        info!(stream, load_id = %manifest.load_id, ledger_id = %request.load_id, inserted = outcome.inserted, updated = outcome.updated, deleted = outcome.deleted, "replayed");
        done.push(Replayed {
            load_id: manifest.load_id,
            action: if merged { "re-applied" } else { "merged" },
            inserted: outcome.inserted,
            updated: outcome.updated,
            deleted: outcome.deleted,
        });
    }
    Ok(done)
}

/// What `gc` decided about one staged load.
#[derive(Debug, Clone, Serialize)]
pub struct Collected {
    pub stream: String,
    pub load_id: String,
    /// Deleted (or, with `--dry-run`, would be).
    pub deleted: bool,
    /// Why it was kept, or what was deleted.
    pub reason: String,
    pub bytes: u64,
}

/// A stream `gc` left alone because a run of it holds its lease.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub stream: String,
    /// The lease refusal, naming the holder.
    pub reason: String,
}

/// What `gc` did: a decision per staged load, and the streams it could not look at.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcOutcome {
    pub decisions: Vec<Collected>,
    pub skipped: Vec<Skipped>,
}

/// `syncline gc`: deletes the staged loads that are merged and older than `older_than`,
/// never one that is not merged, never a stream's latest merged load, never its pending
/// load. Dead-letter files stay unless `dead_letters`. With `dry_run` nothing is deleted.
///
/// Each stream is collected under its lease, as a run holds it: a run of the stream can
/// then never start (or be midway) while its loads are decided and deleted, so what gc read
/// (the pending load, the latest merged one, the ledger) cannot change under it, and a
/// `replay` never reads a load gc is deleting. A stream whose lease another run holds is
/// skipped and named in `skipped`. A dry run deletes nothing and takes no lease.
pub async fn gc(
    config: &Config,
    older_than: Duration,
    dry_run: bool,
    dead_letters: bool,
) -> Result<GcOutcome> {
    let stage = Stage::open(&config.staging)?;
    let state = StateStore::new(&stage, &config.pipeline.name);
    let destination = crate::destinations::build(config).await?;
    destination.check().await?;
    let cutoff =
        Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let mut out = GcOutcome::default();
    for stream in config.source.streams() {
        let lock = if dry_run {
            None
        } else {
            match state.lock(stream, config.pipeline.lock_ttl_seconds).await {
                Ok(lock) => Some(lock),
                Err(err) if err.kind() == ErrorKind::Locked => {
                    warn!(stream, error = %err.report(), "skipped: a run holds the stream's lease");
                    out.skipped.push(Skipped {
                        stream: stream.clone(),
                        reason: err.report(),
                    });
                    continue;
                }
                Err(err) => return Err(err),
            }
        };
        let collected = gc_stream(
            &stage,
            &state,
            destination.as_ref(),
            config,
            stream,
            cutoff,
            dry_run,
            dead_letters,
        )
        .await;
        if let Some(lock) = lock {
            lock.release().await?;
        }
        out.decisions.extend(collected?);
    }
    Ok(out)
}

/// One stream's part of [`gc`], under its lease unless `dry_run`.
#[allow(clippy::too_many_arguments)]
async fn gc_stream(
    stage: &Stage,
    state: &StateStore,
    destination: &dyn Destination,
    config: &Config,
    stream: &str,
    cutoff: DateTime<Utc>,
    dry_run: bool,
    dead_letters: bool,
) -> Result<Vec<Collected>> {
    let mut out = Vec::new();
    let saved = state.load(stream).await?;
    let loads = stage.list_loads(&config.pipeline.name, stream).await?;
    let merged = merged_loads(destination, stream, &loads).await?;
    let latest = loads
        .iter()
        .zip(&merged)
        .filter(|(_, merged)| **merged)
        .filter_map(|(l, _)| l.manifest.as_ref())
        .max_by_key(|m| (m.created_at, m.load_id.clone()))
        .map(|m| m.load_id.clone());
    for (load, merged) in loads.iter().zip(merged) {
        let keep = match &load.manifest {
            // Collected earlier (so merged and past retention then); only its dead
            // letters are left, which go when asked.
            _ if load.dead_letters_only && dead_letters => None,
            _ if load.dead_letters_only => Some("collected; dead letters kept".to_string()),
            None => Some("not merged (staging incomplete)".to_string()),
            Some(_) if !merged => Some("not merged".to_string()),
            Some(_)
                if saved
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.load_id == load.load_id) =>
            {
                Some("pending".to_string())
            }
            Some(_) if latest.as_deref() == Some(load.load_id.as_str()) => {
                Some("latest merged load".to_string())
            }
            Some(m) if m.created_at > cutoff => Some("within retention".to_string()),
            Some(_) => None,
        };
        let Some(reason) = keep else {
            let bytes = if dry_run {
                load.bytes
            } else {
                // Still ours: a gc stalled past its TTL must not delete under a run.
                state.check_lease(stream).await?;
                stage.delete_load(load, !dead_letters).await?
            };
            info!(stream, load_id = %load.load_id, bytes, dry_run, "collected a merged load");
            out.push(Collected {
                stream: stream.to_string(),
                load_id: load.load_id.clone(),
                deleted: true,
                reason: if dead_letters {
                    "merged and past retention".to_string()
                } else {
                    "merged and past retention (dead letters kept)".to_string()
                },
                bytes,
            });
            continue;
        };
        out.push(Collected {
            stream: stream.to_string(),
            load_id: load.load_id.clone(),
            deleted: false,
            reason,
            bytes: 0,
        });
    }
    Ok(out)
}

async fn merged_loads(
    destination: &dyn Destination,
    stream: &str,
    loads: &[StagedLoad],
) -> Result<Vec<bool>> {
    let mut merged = Vec::new();
    for load in loads {
        merged.push(match load.manifest {
            Some(_) => destination.is_committed(stream, &load.load_id).await?,
            None => false,
        });
    }
    Ok(merged)
}

pub(super) fn selected(config: &Config, stream: Option<&str>) -> Result<Vec<String>> {
    let configured = config.source.streams();
    match stream {
        None => Ok(configured.to_vec()),
        Some(s) if configured.iter().any(|c| c == s) => Ok(vec![s.to_string()]),
        Some(s) => Err(RunError::UnknownStream {
            stream: s.to_string(),
            configured: configured.to_vec(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_times_parse_or_say_what_to_write() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_age("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_age("0s").unwrap(), Duration::ZERO);
        for bad in ["", "d", "30", "30w", "-1d", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_time("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert!(parse_time("2026-12-01T10:00:00+01:00").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
