//! `syncline status`: per stream, when it last synced, its cursor and row counts, who holds
//! its lease now, its recent loads and failures. `collect` also asks the source for its lag
//! and the destination's ledger; `from_state` reads the stage only (`syncline ui`).

use serde::Serialize;

use crate::Result;
use crate::config::Config;
use crate::load::SetAside;
use crate::reconcile::report::ReconcileOutcome;
use crate::stage::Stage;
use crate::state::{LastLoad, LeaseHolder, LoadTotals, StateStore, StreamFailure};

#[derive(Debug, Serialize)]
pub struct StreamStatus {
    pub stream: String,
    /// Cursor as ISO time (records changed before it are in the destination), or as the
    /// source's own position (a WAL LSN for CDC streams).
    pub cursor: Option<String>,
    /// Seconds between the cursor and now (time cursors only).
    pub lag_seconds: Option<i64>,
    /// The source's own lag, e.g. the WAL a replication slot still holds.
    pub source_lag: Option<String>,
    pub last_load_id: Option<String>,
    pub last_load_at: Option<String>,
    pub last_load_rows: Option<u64>,
    pub last_load_inserted: Option<u64>,
    pub last_load_updated: Option<u64>,
    pub last_load_deleted: Option<u64>,
    /// From the load's extraction to its state commit.
    pub last_load_duration_ms: Option<u64>,
    pub last_load_dead_lettered: Option<u64>,
    /// A load staged but not yet confirmed committed; the next run finishes it.
    pub pending_load_id: Option<String>,
    /// Whether the destination ledger has the last load (None when it was not asked).
    pub in_ledger: Option<bool>,
    /// Staged loads that could never merge, set aside so the stream went on (kept in the
    /// stage under their load id).
    pub set_aside: Vec<SetAside>,
    /// The stream's last reconcile (`syncline reconcile`, or scheduled by `run`).
    pub last_reconcile: Option<ReconcileOutcome>,
    /// Runs that failed since the last committed load.
    pub failure: Option<StreamFailure>,
    /// Sums over every committed load (unknown for state written before they were kept).
    pub totals: Option<LoadTotals>,
    /// The recent committed loads, oldest first.
    pub history: Vec<LastLoad>,
    /// Who holds the stream's lease now (`null`: no run is syncing it).
    pub lease: Option<LeaseHolder>,
}

pub async fn collect(config: &Config) -> Result<Vec<StreamStatus>> {
    gather(config, true).await
}

/// The status from the stage alone: no source or destination is called, no lease taken.
/// Lag is the cursor's age where the source's cursor is a time it knows without asking.
pub async fn from_state(config: &Config) -> Result<Vec<StreamStatus>> {
    gather(config, false).await
}

async fn gather(config: &Config, ask: bool) -> Result<Vec<StreamStatus>> {
    let stage = Stage::open(&config.staging)?;
    let state = StateStore::new(&stage, &config.pipeline.name);
    let destination = if ask {
        crate::destinations::build(config).await.ok()
    } else {
        None
    };
    // Building a source calls nothing.
    let source = crate::sources::build(config)?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for stream in config.source.streams() {
        let s = state.load(stream).await?;
        let lease = state.lease_holder(stream).await?;
        // A source that cannot be reached still leaves the rest of the status worth showing.
        let source_lag = if ask {
            match source.lag(stream).await {
                Ok(lag) => lag,
                Err(err) => Some(format!("unknown ({err})")),
            }
        } else {
            None
        };
        // After `lag`: a source may learn there whether the cursor is a time.
        let is_time = source.cursor_is_time(stream);
        let in_ledger = match (&destination, &s.last_load) {
            (Some(d), Some(l)) => d.is_committed(stream, &l.load_id).await.ok(),
            _ => None,
        };
        let last = s.last_load.as_ref();
        out.push(StreamStatus {
            stream: stream.clone(),
            cursor: s.cursor.map(|c| source.cursor_text(stream, c)),
            lag_seconds: s.cursor.filter(|_| is_time).map(|c| (now - c) / 1000),
            source_lag,
            last_load_id: last.map(|l| l.load_id.clone()),
            last_load_at: last.map(|l| {
                l.committed_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
            last_load_rows: last.map(|l| l.rows),
            last_load_inserted: last.map(|l| l.inserted),
            last_load_updated: last.map(|l| l.updated),
            last_load_deleted: last.map(|l| l.deleted),
            last_load_duration_ms: last.and_then(|l| l.duration_ms),
            last_load_dead_lettered: last.map(|l| l.dead_lettered),
            pending_load_id: s.pending.map(|p| p.load_id),
            in_ledger,
            set_aside: s.set_aside,
            last_reconcile: s.last_reconcile,
            failure: s.failure,
            totals: s.totals,
            history: s.history,
            lease,
        });
    }
    Ok(out)
}

pub fn render(rows: &[StreamStatus]) -> String {
    let mut out = format!(
        "{:<16} {:<24} {:>8} {:<22} {:>9} {:>9} {:>9} {:>9}\n",
        "stream", "cursor", "lag(s)", "last load at", "rows", "inserted", "updated", "deleted"
    );
    let dash = || "-".to_string();
    for r in rows {
        out.push_str(&format!(
            "{:<16} {:<24} {:>8} {:<22} {:>9} {:>9} {:>9} {:>9}{}\n",
            r.stream,
            r.cursor.clone().unwrap_or_else(|| "never synced".into()),
            r.lag_seconds.map(|l| l.to_string()).unwrap_or_else(dash),
            r.last_load_at.clone().unwrap_or_else(dash),
            r.last_load_rows.map(|v| v.to_string()).unwrap_or_else(dash),
            r.last_load_inserted
                .map(|v| v.to_string())
                .unwrap_or_else(dash),
            r.last_load_updated
                .map(|v| v.to_string())
                .unwrap_or_else(dash),
            r.last_load_deleted
                .map(|v| v.to_string())
                .unwrap_or_else(dash),
            r.pending_load_id
                .as_ref()
                .map(|p| format!("  (pending load {p})"))
                .unwrap_or_default(),
        ));
        if let Some(lease) = &r.lease {
            let time = |t: &chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            out.push_str(&format!(
                "{:<16} lease: held by pid {} on {} (run {}) since {}, {} {}\n",
                "",
                lease.pid,
                lease.host,
                if lease.run_id.is_empty() {
                    "unknown"
                } else {
                    &lease.run_id
                },
                time(&lease.since),
                if lease.expired {
                    "expired at"
                } else {
                    "expires at"
                },
                time(&lease.expires_at),
            ));
        }
        if let Some(lag) = &r.source_lag {
            out.push_str(&format!("{:<16} source lag: {lag}\n", ""));
        }
        if let Some(failure) = &r.failure {
            out.push_str(&format!(
                "{:<16} failed {} time(s) since the last load, last at {}: {}\n",
                "",
                failure.count,
                failure
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                failure.reason
            ));
        }
        if let Some(reconcile) = &r.last_reconcile {
            out.push_str(&format!(
                "{:<16} last reconcile: {}\n",
                "",
                reconcile.summary()
            ));
        }
        for load in &r.set_aside {
            out.push_str(&format!(
                "{:<16} set aside: load {} at {}: {}\n",
                "",
                load.load_id,
                load.set_aside_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                load.reason
            ));
        }
    }
    out
}
