//! `syncline reconcile`: proof that the destination as a whole equals the source now, and the
//! repair of what does not.
//!
//! Per stream: take the stream lock (so no run merges mid-compare), list both sides sorted
//! by key (`Source::list_keys`, `Destination::list_keys`), compare them in one pass
//! (`reconcile::drift`), release the lock. With `--repair`, the missing and stale keys are
//! fetched from the source by key and the orphaned ones become deletes, and all of it is
//! merged as an ordinary load (`batch::repair`): staged, in the ledger, exactly once. Rows
//! whose destination version is newer than the source's (`ahead`) are reported and left: a
//! merge never writes an older version over a newer one.

use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Config;
use crate::destinations::Destination;
use crate::error::ErrorKind;
use crate::reconcile::drift::{self, Compared, Drift, ListRequest, RepairKeys};
use crate::reconcile::report::{ReconcileOutcome, ReconcileResult, Status, StreamReport};
use crate::sources::{Extracted, Source};
use crate::stage::Stage;
use crate::state::StateStore;
use crate::{Result, destinations, sources};

use super::batch::RunError;

/// Orphan deletes per staged batch.
const DELETE_BATCH: usize = 10_000;
/// Keys (to fetch or delete) per repair load: a repair's memory holds one batch of keys.
const REPAIR_BATCH: usize = drift::SPILL_AT;

#[derive(Debug, Clone, Default)]
pub struct ReconcileOptions {
    /// Streams to compare; all configured streams when `None`.
    pub streams: Option<Vec<String>>,
    /// Fetch the missing and stale records, delete the orphaned ones.
    pub repair: bool,
    /// Only estimate the API calls; compare nothing.
    pub dry_run: bool,
}

/// What a stream's reconcile found and did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamDrift {
    pub stream: String,
    /// `version` or `content hash`.
    pub compared_by: Option<String>,
    /// API calls estimated for listing the source (from the destination's row count).
    pub estimated_list_calls: u64,
    /// API calls estimated for the repair's fetches (known once compared).
    pub estimated_repair_calls: Option<u64>,
    pub drift: Option<Drift>,
    /// The repair load, when one ran.
    pub repair: Option<StreamReport>,
    /// Drift the repair does not fix (`ahead` rows), or all of it when not repaired.
    pub unrepaired: u64,
    /// Why the stream stopped early and cleanly (the source's API quota ran out).
    pub stopped: Option<String>,
    pub error: Option<String>,
    pub error_exit_code: Option<i32>,
}

/// The JSON report of `syncline reconcile --report PATH`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub pipeline: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub repair: bool,
    pub dry_run: bool,
    /// 0 clean (or fully repaired), 3 drift remains, 1/2 a stream failed.
    pub exit_code: i32,
    pub streams: Vec<StreamDrift>,
}

/// Compares (and with `repair`, repairs) the selected streams. A stream's failure is in its
/// report and decides the exit code; `progress` hears each line worth telling before it happens
/// (the estimate before a repair starts).
pub async fn reconcile(
    config: &Config,
    options: &ReconcileOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<ReconcileReport> {
    let started_at = chrono::Utc::now();
    let configured = config.source.streams();
    let selected = match &options.streams {
        None => configured.to_vec(),
        Some(wanted) => {
            if let Some(stream) = wanted.iter().find(|s| !configured.contains(s)) {
                return Err(RunError::UnknownStream {
                    stream: stream.clone(),
                    configured: configured.to_vec(),
                }
                .into());
            }
            wanted.clone()
        }
    };
    let stage = Stage::open(&config.staging)?;
    let state = StateStore::new(&stage, &config.pipeline.name);
    let source = sources::build(config)?;
    let destination = destinations::build(config).await?;
    destination.check().await?;
    let mut streams = Vec::new();
    for stream in &selected {
        streams.push(
            reconcile_one(
                config,
                &state,
                &source,
                &destination,
                stream,
                options,
                progress,
            )
            .await,
        );
    }
    let quota = ErrorKind::Quota.exit_code();
    let failed: Vec<i32> = streams
        .iter()
        .filter_map(|s| s.error_exit_code)
        .filter(|&code| code != quota)
        .collect();
    let exit_code = if !failed.is_empty() {
        if failed.iter().all(|&code| code == 2) {
            2
        } else {
            1
        }
    } else if streams.iter().any(|s| s.stopped.is_some()) {
        // The quota ran out: what was repaired is merged; the next reconcile finds the rest.
        quota
    } else if streams.iter().any(|s| s.unrepaired > 0) {
        ErrorKind::Reconciliation.exit_code()
    } else {
        0
    };
    Ok(ReconcileReport {
        pipeline: config.pipeline.name.clone(),
        started_at,
        finished_at: chrono::Utc::now(),
        repair: options.repair,
        dry_run: options.dry_run,
        exit_code,
        streams,
    })
}

/// Reconciles one stream (with `options.repair`, repairs it) and, unless `dry_run`, records
/// the outcome in the stream's state for `status` and the schedule. A failure is in the
/// report, never returned.
pub(super) async fn reconcile_one(
    config: &Config,
    state: &StateStore,
    source: &Arc<dyn Source>,
    destination: &Arc<dyn Destination>,
    stream: &str,
    options: &ReconcileOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> StreamDrift {
    let mut report = StreamDrift {
        stream: stream.to_string(),
        compared_by: None,
        estimated_list_calls: 0,
        estimated_repair_calls: None,
        drift: None,
        repair: None,
        unrepaired: 0,
        stopped: None,
        error: None,
        error_exit_code: None,
    };
    let outcome = reconcile_stream(
        config,
        state,
        source,
        destination,
        stream,
        options,
        &mut report,
        progress,
    )
    .await;
    match outcome {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::Quota => {
            warn!(stream, reason = %err, "API quota used up; reconcile stops cleanly");
            report.stopped = Some(err.report());
        }
        Err(err) => {
            warn!(stream, error = %err, "reconcile failed");
            report.error = Some(err.report());
            report.error_exit_code = Some(err.exit_code());
        }
    }
    if !options.dry_run {
        record(config, state, stream, report.outcome(chrono::Utc::now())).await;
    }
    report
}

/// `syncline run` with `[reconcile]`: reconciles `stream` (after its load committed) when its
/// last reconcile is older than `every`, failed or stopped on the quota, or it never had one,
/// or the load's source recommended one (`recommended`). `None` when not due.
pub(super) async fn scheduled(
    config: &Config,
    state: &StateStore,
    source: &Arc<dyn Source>,
    destination: &Arc<dyn Destination>,
    stream: &str,
    recommended: bool,
) -> Option<ReconcileOutcome> {
    let schedule = config.reconcile.as_ref()?;
    // A transformed stream differs from its source by design (filtered rows, hashes, new
    // names), so it is never compared; the rest of the pipeline keeps its schedule.
    if config.stream_settings(stream).has_transform() {
        return None;
    }
    let last = match state.load(stream).await {
        Ok(saved) => saved.last_reconcile,
        Err(err) => {
            return Some(failed_outcome(stream, &err));
        }
    };
    let due = match &last {
        _ if recommended => true,
        None => true,
        // One that could not finish is tried again by the next run.
        Some(last)
            if matches!(
                last.result,
                ReconcileResult::Failed | ReconcileResult::Stopped
            ) =>
        {
            true
        }
        Some(last) => {
            let every =
                chrono::Duration::from_std(schedule.interval()).unwrap_or(chrono::Duration::MAX);
            last.at
                .checked_add_signed(every)
                .is_none_or(|next| next <= chrono::Utc::now())
        }
    };
    if !due {
        return None;
    }
    info!(
        stream,
        repair = schedule.repair,
        "scheduled reconcile is due"
    );
    let options = ReconcileOptions {
        streams: None,
        repair: schedule.repair,
        dry_run: false,
    };
    let report = reconcile_one(
        config,
        state,
        source,
        destination,
        stream,
        &options,
        &mut |line| info!("{line}"),
    )
    .await;
    Some(report.outcome(chrono::Utc::now()))
}

fn failed_outcome(stream: &str, err: &crate::Error) -> ReconcileOutcome {
    warn!(stream, error = %err, "scheduled reconcile could not start");
    ReconcileOutcome {
        at: chrono::Utc::now(),
        result: ReconcileResult::Failed,
        missing: 0,
        stale: 0,
        ahead: 0,
        orphaned: 0,
        in_flight: 0,
        repaired_rows: 0,
        error: Some(err.report()),
    }
}

/// Saves `outcome` as the stream's last reconcile, under the stream's lease (state writes
/// prove it). A reconcile's result is worth less than a run's progress: a lease another run
/// holds, or a failed write, is logged and the outcome not kept.
async fn record(config: &Config, state: &StateStore, stream: &str, outcome: ReconcileOutcome) {
    let saved = async {
        let lock = state.lock(stream, config.pipeline.lock_ttl_seconds).await?;
        let written = async {
            let mut current = state.load(stream).await?;
            current.last_reconcile = Some(outcome);
            state.save(stream, &current).await
        }
        .await;
        if let Err(err) = lock.release().await {
            warn!(stream, error = %err, "could not release the stream lock");
        }
        written
    }
    .await;
    if let Err(err) = saved {
        warn!(stream, error = %err, "could not save the reconcile's result in the stream state");
    }
}

impl StreamDrift {
    /// The reconcile in short, as the stream's state keeps it.
    pub fn outcome(&self, at: chrono::DateTime<chrono::Utc>) -> ReconcileOutcome {
        let drift = self.drift.clone().unwrap_or_default();
        let result = if self.error.is_some() {
            ReconcileResult::Failed
        } else if self.stopped.is_some() {
            ReconcileResult::Stopped
        } else if self.unrepaired > 0 {
            ReconcileResult::Drift
        } else if self.repair.is_some() {
            ReconcileResult::Repaired
        } else {
            ReconcileResult::Clean
        };
        ReconcileOutcome {
            at,
            result,
            missing: drift.missing.count,
            stale: drift.stale.count,
            ahead: drift.ahead.count,
            orphaned: drift.orphaned.count,
            in_flight: drift.in_flight,
            repaired_rows: self
                .repair
                .as_ref()
                .map_or(0, |l| l.rows_inserted + l.rows_updated + l.rows_deleted),
            error: self.error.clone(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn reconcile_stream(
    config: &Config,
    state: &StateStore,
    source: &Arc<dyn Source>,
    destination: &Arc<dyn Destination>,
    stream: &str,
    options: &ReconcileOptions,
    report: &mut StreamDrift,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<()> {
    let deletes = config.stream_settings(stream).deletes;
    // Source records and a transformed table differ by design (filtered rows, hashes, names).
    if config.stream_settings(stream).has_transform() {
        return Err(super::transform::StreamTransformError::NotReconcilable {
            stream: stream.to_string(),
        }
        .into());
    }
    // The staged schema's first column is the key (the `sources` contract).
    let schema = source.discover(stream).await?;
    let key = schema.field(0).name().clone();
    // The row count costs a scan of the destination: only worth it when listing costs calls.
    let rows = if source.list_cost(1_000_000) > 0 {
        destination
            .table_fingerprint(stream, &key, deletes)
            .await?
            .map_or(0, |f| f.rows)
    } else {
        0
    };
    report.estimated_list_calls = source.list_cost(rows);
    progress(format!(
        "{stream}: estimate {} API calls to list the source{}{}",
        report.estimated_list_calls,
        if rows > 0 {
            format!(" (~{rows} rows)")
        } else {
            String::new()
        },
        if options.repair {
            format!(
                ", then {} per 100 records to repair",
                source.fetch_cost(100)
            )
        } else {
            String::new()
        }
    ));
    if options.dry_run {
        return Ok(());
    }

    // Under the lock no run merges mid-compare, and a CDC slot can be peeked.
    let lock = state.lock(stream, config.pipeline.lock_ttl_seconds).await?;
    let compared = compare_stream(config, state, source, destination, stream, deletes).await;
    if let Err(err) = lock.release().await {
        warn!(stream, error = %err, "could not release the stream lock");
    }
    let (compared_by, compared) = compared?;
    let drift = compared.drift();
    report.compared_by = Some(compared_by);
    report.unrepaired = drift::Class::ALL
        .iter()
        .map(|&c| drift.class(c).count)
        .sum();
    info!(
        stream,
        missing = drift.missing.count,
        stale = drift.stale.count,
        ahead = drift.ahead.count,
        orphaned = drift.orphaned.count,
        in_flight = drift.in_flight,
        "compared"
    );
    let fetch = drift.missing.count + drift.stale.count;
    let orphaned = drift.orphaned.count;
    report.estimated_repair_calls = Some(source.fetch_cost(fetch));
    report.drift = Some(drift);
    if !options.repair || (fetch == 0 && orphaned == 0) {
        return Ok(());
    }

    progress(format!(
        "{stream}: repairing {fetch} records (estimate {} API calls) and deleting {orphaned} orphaned",
        source.fetch_cost(fetch),
    ));
    // One ordinary load per batch of keys, so memory holds a batch whatever the drift.
    let mut batches = compared.into_repair_batches(REPAIR_BATCH)?;
    while let Some(keys) = batches.next_batch()? {
        let extraction =
            repair_extraction(source, stream, keys, config.pipeline.batch_rows).await?;
        let load = super::batch::repair(
            config,
            source.clone(),
            destination.clone(),
            stream,
            extraction,
        )
        .await?;
        let failed = matches!(load.status, Status::Failed | Status::Mismatch);
        let load_error = load.error.clone();
        let load_exit = load.error_exit_code;
        let stopped = load.stopped.clone();
        report.repair = Some(match report.repair.take() {
            None => load,
            Some(earlier) => combine(earlier, load),
        });
        if stopped.is_some() {
            // Part of the repair is merged; the drift stands until the next reconcile.
            report.stopped = stopped;
            return Ok(());
        }
        if failed {
            report.error = load_error;
            report.error_exit_code = load_exit.or(Some(1));
            return Ok(());
        }
    }
    // What a repair cannot fix: a destination newer than the source.
    report.unrepaired = report.drift.as_ref().map_or(0, |d| d.ahead.count);
    Ok(())
}

/// The repair loads of one reconcile as one report: counts summed, the latest load's id,
/// status and reconciliation (every earlier one succeeded, or the repair stopped there).
fn combine(earlier: StreamReport, mut later: StreamReport) -> StreamReport {
    later.rows_extracted += earlier.rows_extracted;
    later.rows_staged += earlier.rows_staged;
    later.rows_inserted += earlier.rows_inserted;
    later.rows_updated += earlier.rows_updated;
    later.rows_deleted += earlier.rows_deleted;
    later.rows_dead_lettered += earlier.rows_dead_lettered;
    later.values_replaced += earlier.values_replaced;
    later.duration_ms += earlier.duration_ms;
    later.reconciliation.matched &= earlier.reconciliation.matched;
    later
}

/// Lists both sides under the stream lock and compares them.
async fn compare_stream(
    config: &Config,
    state: &StateStore,
    source: &Arc<dyn Source>,
    destination: &Arc<dyn Destination>,
    stream: &str,
    deletes: crate::load::DeleteMode,
) -> Result<(String, Compared)> {
    let saved = state.load(stream).await?;
    let listing = source
        .list_keys(
            stream,
            config.pipeline.batch_rows,
            destination.hashes_rows_as_arrow(),
        )
        .await?;
    let request = ListRequest {
        table: stream.to_string(),
        key: listing.key.clone(),
        int_key: listing.int_key,
        deletes,
        compare: listing.compare.clone(),
    };
    let destination_items = destination.list_keys(&request).await?;
    let settled_until = source.settled_until(stream, saved.cursor);
    let mut compared =
        drift::compare(stream, listing.items, destination_items, settled_until).await?;
    // Checked after the compare, so a change committed while it ran is seen too.
    if compared.has_differences()
        && let Some(in_flight) = source.in_flight_keys(stream).await?
    {
        compared.settle(|key| in_flight.contains(key))?;
    }
    Ok((listing.compare.label().to_string(), compared))
}

/// The source's records for the missing and stale keys, then a delete for every orphaned key
/// at its destination version (a delete wins a tie, so it applies).
async fn repair_extraction(
    source: &Arc<dyn Source>,
    stream: &str,
    keys: RepairKeys,
    batch_rows: usize,
) -> Result<crate::sources::Extraction> {
    let mut extraction = source.fetch_keys(stream, keys.fetch, batch_rows).await?;
    let schema = extraction.schema.clone();
    let mut deletes = Vec::new();
    for chunk in keys.orphans.chunks(DELETE_BATCH) {
        deletes.push(drift::deletes_batch(&schema, chunk).map(Extracted::Batch));
    }
    extraction.items = extraction
        .items
        .chain(futures::stream::iter(deletes))
        .boxed();
    Ok(extraction)
}

/// The summary table `syncline reconcile` prints.
pub fn render(report: &ReconcileReport) -> String {
    let mut out = format!(
        "{:<16} {:<13} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9}  {}\n",
        "stream",
        "compared by",
        "source",
        "destination",
        "missing",
        "stale",
        "ahead",
        "orphaned",
        "in flight",
        "result"
    );
    for stream in &report.streams {
        let result = match (&stream.error, &stream.repair, stream.unrepaired) {
            (Some(_), _, _) => "failed".to_string(),
            _ if stream.stopped.is_some() => "stopped: API quota used up".to_string(),
            _ if report.dry_run => "estimate only".to_string(),
            (None, Some(load), 0) => format!(
                "repaired ({} inserted, {} updated, {} deleted)",
                load.rows_inserted, load.rows_updated, load.rows_deleted
            ),
            (None, Some(_), left) => format!("repaired; {left} ahead left as they are"),
            (None, None, 0) => "clean".to_string(),
            (None, None, _) => "drift".to_string(),
        };
        let d = stream.drift.clone().unwrap_or_default();
        out.push_str(&format!(
            "{:<16} {:<13} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9}  {}\n",
            stream.stream,
            stream.compared_by.as_deref().unwrap_or("-"),
            d.source_rows,
            d.destination_rows,
            d.missing.count,
            d.stale.count,
            d.ahead.count,
            d.orphaned.count,
            d.in_flight,
            result
        ));
        if let Some(error) = &stream.error {
            out.push_str(&format!("                 error: {error}\n"));
        }
    }
    out
}
