//! Batch mode: one run syncs the selected streams once, each exactly once into the destination.
//!
//! Per stream, in this order (the order is what makes a killed run safe to re-run):
//! 1. take the stream lock; finish a load an earlier run left pending;
//! 2. extract from the cursor, staging Parquet as batches arrive;
//! 3. read the staged files back and compare count and checksum with what was extracted;
//! 4. write the manifest (the load is now complete and replayable), then record it as pending;
//! 5. merge into the destination, which records the load id in its ledger in the same transaction;
//! 6. advance the cursor and clear `pending`.
//! A full load into a destination that can copy while staging (PostgreSQL) overlaps 5 with 2
//! to 4: the batches are copied as they are staged, and the destination commits only after 4.
//! A crash before 4 loses only staging work; between 4 and 6 the next run finds the pending load
//! and either sees it in the ledger or merges it again from the stage.
//!
//! A used-up API quota (`ErrorKind::Quota`, or `Extracted::Stopped` with `StopCause::Quota`)
//! is a clean stop wherever the source meets it: what was read is merged, that stream and every
//! later one are reported `stopped`, and the later ones never ask the source (the run exits 4).

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::{info, instrument, warn};

use super::transform::{Compiled, CopyFeed, RawFeed, StreamTransform};
use crate::config::Config;
use crate::destinations::{Destination, MergeOutcome, MergeRequest};
use crate::error::{Classified, ErrorKind};
use crate::failpoints::{crash_point, stall_point};
use crate::load::{CursorRange, LoadMode, SetAside};
use crate::reconcile::Fingerprint;
use crate::reconcile::batch_fingerprint;
use crate::reconcile::report::{ReconcileResult, RunReport, Status, StreamReport, millis};
use crate::sources::{ExtractRequest, Extracted, Extraction, Source, StopCause};
use crate::stage::{
    DeadLetterFile, DeadLetterWriter, LoadWriter, Manifest, Stage, StagedFile, columns_of,
};
use crate::state::{LastLoad, PendingLoad, StateStore, StreamState};
use crate::{Error, Result};

/// What stops a run or a stream in the pipeline itself.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("--streams names {stream:?}, which is not in source.streams {configured:?}")]
    UnknownStream {
        stream: String,
        configured: Vec<String>,
    },
    #[error(
        "stream {stream}: staged {} rows (checksum {}) but extracted {} (checksum {}); load {load_id} is kept unmerged",
        staged.rows, staged.checksum, extracted.rows, extracted.checksum
    )]
    StagedDiffers {
        stream: String,
        load_id: String,
        staged: Fingerprint,
        extracted: Fingerprint,
    },
    #[error(
        "stream {stream}: destination received {} rows (checksum {}) but load {load_id} staged {} (checksum {})",
        received.rows, received.checksum, staged.rows, staged.checksum
    )]
    ReceivedDiffers {
        stream: String,
        load_id: String,
        received: Fingerprint,
        staged: Fingerprint,
    },
    #[error(
        "stream {stream}: changes read from position {from:?} do not start at the saved cursor {saved:?}; nothing was merged and the stream restarts from the saved cursor"
    )]
    NotContiguous {
        stream: String,
        saved: Option<i64>,
        from: Option<i64>,
    },
    #[error(
        "stream {stream}: the copy into the destination stopped unexpectedly; run again (the next run finishes or redoes this load, exactly once)"
    )]
    CopyLost {
        stream: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Classified for RunError {
    fn kind(&self) -> ErrorKind {
        match self {
            RunError::CopyLost { .. } => ErrorKind::Destination,
            RunError::UnknownStream { .. } => ErrorKind::Config,
            RunError::StagedDiffers { .. } | RunError::ReceivedDiffers { .. } => {
                ErrorKind::Reconciliation
            }
            // The reader and the state disagree: reading again from the state cures it.
            RunError::NotContiguous { .. } => ErrorKind::Transient,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Streams to run; all configured streams when `None`.
    pub streams: Option<Vec<String>>,
    /// Ignore saved cursors and read every record.
    pub full_refresh: bool,
}

/// Runs the selected streams one after another and reports on each. Never panics on a
/// stream failure: the failure is in the report and decides the exit code.
pub async fn run(config: &Config, options: &RunOptions) -> Result<RunReport> {
    run_observed(config, options, &mut |_| {}).await
}

/// [`run`], handing each stream's report to `on_stream` as soon as that stream is done (its
/// load committed, or it failed or stopped), before the next stream starts: an orchestrator
/// hears of each table the moment it is loaded, not when the whole run ends.
pub async fn run_observed(
    config: &Config,
    options: &RunOptions,
    on_stream: &mut (dyn FnMut(&StreamReport) + Send),
) -> Result<RunReport> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let configured = config.source.streams();
    let selected: Vec<String> = match &options.streams {
        None => configured.to_vec(),
        Some(wanted) => {
            for stream in wanted {
                if !configured.contains(stream) {
                    return Err(RunError::UnknownStream {
                        stream: stream.clone(),
                        configured: configured.to_vec(),
                    }
                    .into());
                }
            }
            wanted.clone()
        }
    };
    // A transform that cannot parse stops the run before the source is built (exit 2).
    super::transform::prepare_all(config, &selected)?;
    let runner = StreamRunner::open(config, options.full_refresh).await?;
    let mut reports = Vec::new();
    for stream in &selected {
        let mut report = runner.run(stream, LoadInput::Extract).await;
        // Only after the stream's load committed, and not on a source whose quota is gone.
        if report.status == Status::Success && runner.quota.get().is_none() {
            report.reconcile = super::reconcile::scheduled(
                config,
                &runner.state,
                &runner.source,
                &runner.destination,
                stream,
                report.reconcile_recommended,
            )
            .await;
            if let Some(stopped) = report
                .reconcile
                .as_ref()
                .filter(|r| r.result == ReconcileResult::Stopped)
            {
                let _ = runner.quota.set(format!(
                    "the API quota ran out during the scheduled reconcile of {stream} at {}",
                    stopped
                        .at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
        }
        on_stream(&report);
        reports.push(report);
    }
    let (status, exit_code) = run_status(&reports);
    Ok(RunReport {
        pipeline: config.pipeline.name.clone(),
        status,
        started_at,
        finished_at: chrono::Utc::now(),
        duration_ms: started.elapsed().as_millis() as u64,
        exit_code,
        streams: reports,
    })
}

/// The run's status and exit code from its streams' loads, then their scheduled reconciles:
/// a reconcile that could not run fails the run, drift left unrepaired is exit 3 (the
/// destination does not match the source), a quota stop during one is exit 4.
fn run_status(reports: &[StreamReport]) -> (Status, i32) {
    let reconciled = || reports.iter().filter_map(|r| r.reconcile.as_ref());
    let status = if reports.iter().any(|r| r.status == Status::Failed)
        || reconciled().any(|r| r.result == ReconcileResult::Failed)
    {
        Status::Failed
    } else if reports.iter().any(|r| r.status == Status::Mismatch)
        || reconciled().any(|r| r.result == ReconcileResult::Drift)
    {
        Status::Mismatch
    } else if reports.iter().any(|r| r.status == Status::Stopped)
        || reconciled().any(|r| r.result == ReconcileResult::Stopped)
    {
        Status::Stopped
    } else {
        Status::Success
    };
    let exit_code = match status {
        Status::Success | Status::Skipped => 0,
        Status::Mismatch => ErrorKind::Reconciliation.exit_code(),
        Status::Stopped => ErrorKind::Quota.exit_code(),
        // A configuration mistake (bad credentials, say) in every failed stream is the
        // user's to fix, not worth an orchestrator's retry.
        Status::Failed
            if reports
                .iter()
                .filter(|r| r.status == Status::Failed)
                .all(|r| r.error_exit_code == Some(2))
                && !reconciled().any(|r| r.result == ReconcileResult::Failed) =>
        {
            2
        }
        Status::Failed => 1,
    };
    (status, exit_code)
}

/// `syncline reconcile --repair`: merges the records a reconcile fetched by key (and the
/// deletes of orphaned keys) into `stream` as an ordinary load: locked, staged, read back,
/// recorded in the ledger with the merge, exactly once. The cursor stays where it was. A
/// failure is in the report, as for `run`.
pub async fn repair(
    config: &Config,
    source: Arc<dyn Source>,
    destination: Arc<dyn Destination>,
    stream: &str,
    extraction: Extraction,
) -> Result<StreamReport> {
    let stage = Stage::open(&config.staging)?;
    let runner = StreamRunner {
        config,
        state: StateStore::new(&stage, &config.pipeline.name),
        stage,
        source,
        destination,
        full_refresh: false,
        quota: OnceLock::new(),
    };
    Ok(runner.run(stream, LoadInput::Repair(extraction)).await)
}

/// What one load of a stream reads.
pub enum LoadInput {
    /// An ordinary load: extract from the saved cursor (`Source::extract`).
    Extract,
    /// Records fetched by key (`reconcile --repair`, webhook hints in `syncline stream`):
    /// staged and merged like any load, mode `repair`; the cursor does not move.
    Repair(Extraction),
    /// Changes a long-lived reader already read (`syncline stream`'s CDC flushes), covering
    /// `extraction.cursor`, whose `from` must be the saved cursor. A range the saved cursor
    /// already covers (a flush retried after its load committed) is skipped: nothing is
    /// staged, nothing moves.
    Read(Extraction),
}

/// What staging an extraction produced.
struct StagedItems {
    files: Vec<StagedFile>,
    dead_letter: Option<DeadLetterFile>,
    /// Count and checksum of the rows as the source sent them.
    extracted: Fingerprint,
    /// The range covered: the extraction's, moved by a clean stop or a reached cursor.
    cursor: CursorRange,
    /// A clean stop covered no contiguous range: the saved cursor must stay.
    keeps_cursor: bool,
}

/// Batches waiting for the destination's COPY in [`StreamRunner::stage_and_copy`]: the
/// extraction runs at most this far ahead of it (memory stays bounded by batches in flight).
const COPY_AHEAD_BATCHES: usize = 2;

/// Where staging sends each batch beside its Parquet: the destination's copy, or the stream's
/// transform (which copies what it makes).
enum Tee {
    Copy(CopyFeed),
    Transform(RawFeed),
}

impl Tee {
    /// A staged batch's fingerprint, and the batch to send on (a transform may take each row's
    /// hash with it).
    fn fingerprint(&self, batch: &RecordBatch, key: &str) -> Result<(Fingerprint, RecordBatch)> {
        match self {
            Tee::Copy(_) => Ok((batch_fingerprint(batch, key)?, batch.clone())),
            Tee::Transform(feed) => feed.fingerprint(batch, key),
        }
    }

    /// `false` when the receiver is gone: the destination gave up the copy, or the transform
    /// failed (and says why when it is finished).
    async fn send(&self, batch: RecordBatch) -> bool {
        match self {
            Tee::Copy(copy) => copy.send(batch).await.is_ok(),
            Tee::Transform(feed) => feed.send(batch).await,
        }
    }
}

/// An extraction the source has started, not yet read.
struct Started {
    load_id: String,
    mode: LoadMode,
    since: Option<i64>,
    /// When it was asked for: a complete full load holds every record the source had then.
    at: chrono::DateTime<chrono::Utc>,
    extraction: Extraction,
}

/// Runs loads of single streams: the one path every load takes (`run`, `replay`,
/// `reconcile --repair`, and each flush of `syncline stream`).
pub struct StreamRunner<'a> {
    config: &'a Config,
    pub(crate) stage: Stage,
    pub(crate) state: StateStore,
    pub(crate) source: Arc<dyn Source>,
    pub(crate) destination: Arc<dyn Destination>,
    full_refresh: bool,
    /// Why the source's API quota ran out, once it did in this run: it does not come back
    /// within the run, so every later stream stops without asking the source.
    quota: OnceLock<String>,
}

impl<'a> StreamRunner<'a> {
    /// Opens the stage, builds the source (without calling it) and checks the destination.
    pub async fn open(config: &'a Config, full_refresh: bool) -> Result<StreamRunner<'a>> {
        let stage = Stage::open(&config.staging)?;
        let source = crate::sources::build(config)?;
        let destination = crate::destinations::build(config).await?;
        destination.check().await?;
        Ok(StreamRunner {
            config,
            state: StateStore::new(&stage, &config.pipeline.name),
            stage,
            source,
            destination,
            full_refresh,
            quota: OnceLock::new(),
        })
    }

    /// The source every load of this runner reads.
    pub fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    /// Takes the lease of `stream` for as long as the caller holds it (`syncline stream`
    /// holds it for the life of the process); loads then run with [`StreamRunner::run_held`].
    pub async fn lock(&self, stream: &str) -> Result<crate::state::StreamLock> {
        self.state
            .lock(stream, self.config.pipeline.lock_ttl_seconds)
            .await
    }

    /// The saved state of `stream`.
    pub async fn saved(&self, stream: &str) -> Result<StreamState> {
        self.state.load(stream).await
    }

    /// One stream's load, its lease taken for the load and released after.
    async fn run(&self, stream: &str, input: LoadInput) -> StreamReport {
        let started = Instant::now();
        let mut report = StreamReport::new(stream);
        let outcome = match self
            .state
            .lock(stream, self.config.pipeline.lock_ttl_seconds)
            .await
        {
            Err(err) => Err(err),
            Ok(lock) => {
                let outcome = self.sync(stream, &mut report, input).await;
                self.note_failure_of(stream, &outcome).await;
                if let Err(err) = lock.release().await {
                    warn!(stream, error = %err, "could not release the stream lock");
                }
                outcome
            }
        };
        self.finish_report(stream, started, report, outcome)
    }

    /// One load of `stream` under a lease the caller took with [`StreamRunner::lock`].
    pub async fn run_held(&self, stream: &str, input: LoadInput) -> StreamReport {
        let started = Instant::now();
        let mut report = StreamReport::new(stream);
        let outcome = self.sync(stream, &mut report, input).await;
        self.note_failure_of(stream, &outcome).await;
        self.finish_report(stream, started, report, outcome)
    }

    /// The report of a load from its outcome: status, error and timings.
    fn finish_report(
        &self,
        stream: &str,
        started: Instant,
        mut report: StreamReport,
        outcome: Result<()>,
    ) -> StreamReport {
        report.duration_ms = started.elapsed().as_millis() as u64;
        report.api_usage = self.source.api_usage();
        let p = &report.phases;
        info!(
            stream,
            extract_ms = p.extract_ms,
            convert_ms = p.convert_ms,
            parquet_write_ms = p.parquet_write_ms,
            read_back_ms = p.read_back_ms,
            manifest_ms = p.manifest_ms,
            ensure_table_ms = p.ensure_table_ms,
            load_ms = p.load_ms,
            merge_ms = p.merge_ms,
            commit_ms = p.commit_ms,
            state_ms = p.state_ms,
            total_ms = report.duration_ms,
            "phase timings"
        );
        match outcome {
            Ok(()) if report.stopped.is_some() => report.status = Status::Stopped,
            Ok(()) => report.status = Status::Success,
            // Met at login, a describe or the extraction's first call: nothing was read, and
            // nothing is wrong but the quota.
            Err(err) if err.kind() == ErrorKind::Quota => {
                warn!(stream, reason = %err, "API quota used up; the run stops cleanly");
                let reason = err.report();
                let _ = self.quota.set(reason.clone());
                report.stopped = Some(reason);
                report.status = Status::Stopped;
            }
            Err(err) => {
                report.status = if err.kind() == ErrorKind::Reconciliation {
                    Status::Mismatch
                } else {
                    Status::Failed
                };
                warn!(stream, error = %err, "stream failed");
                report.error = Some(err.report());
                report.error_exit_code = Some(err.exit_code());
                report.retryable = Some(err.is_transient());
            }
        }
        report
    }

    /// One stream's load, step by step (see the module docs for why in this order).
    #[instrument(skip_all, fields(stream))]
    async fn sync(&self, stream: &str, report: &mut StreamReport, input: LoadInput) -> Result<()> {
        let mut state = self.state.load(stream).await?;
        if let Some(pending) = state.pending.clone() {
            report.recovered = true;
            self.finish_pending(stream, &mut state, &pending, report)
                .await?;
        }
        // A load left pending needs only the stage and the destination; a new one needs the
        // source, whose quota is gone for this run.
        if let Some(reason) = self.quota.get() {
            report.stopped = Some(format!(
                "not read: the API quota ran out earlier in this run ({reason})"
            ));
            return Ok(());
        }
        // A flush of `syncline stream` (changes read, or records fetched for its webhook
        // hints, which load as repairs) has crash points of its own, so a test can kill the
        // process mid-flush rather than in its first (catch-up) load.
        let flush = !matches!(input, LoadInput::Extract);
        // Planned against the discovered columns before any record is read.
        let transform = super::transform::ready(self.config, stream, self.source.as_ref()).await?;
        // A full load goes to a destination that can take it while it is staged.
        if matches!(input, LoadInput::Extract)
            && (self.full_refresh || state.cursor.is_none())
            && self.destination.copies_while_staging()
        {
            return self
                .stage_and_copy(stream, &mut state, report, transform.as_ref())
                .await;
        }
        let transform = transform.as_ref().map(|(transform, _)| transform);
        let manifest = match input {
            LoadInput::Extract => {
                self.extract_and_stage(stream, &state, report, transform)
                    .await?
            }
            LoadInput::Read(extraction) => {
                if extraction.cursor.from != state.cursor {
                    // A flush retried after its load committed (an earlier attempt's pending
                    // load was finished above): nothing is left to do.
                    if state
                        .cursor
                        .is_some_and(|saved| saved >= extraction.cursor.to)
                    {
                        info!(stream, "changes already loaded; nothing to do");
                        return Ok(());
                    }
                    return Err(RunError::NotContiguous {
                        stream: stream.to_string(),
                        saved: state.cursor,
                        from: extraction.cursor.from,
                    }
                    .into());
                }
                let load_id = uuid::Uuid::now_v7().to_string();
                report.load_id = Some(load_id.clone());
                report.mode = Some(LoadMode::Incremental);
                self.stage_extraction(
                    stream,
                    state.cursor,
                    load_id,
                    LoadMode::Incremental,
                    extraction,
                    report,
                    None,
                    transform,
                )
                .await?
            }
            LoadInput::Repair(extraction) => {
                let load_id = uuid::Uuid::now_v7().to_string();
                report.load_id = Some(load_id.clone());
                report.mode = Some(LoadMode::Repair);
                info!(stream, load_id, "staging a repair");
                // The range stays the saved cursor's: a repair never moves it.
                let extraction = Extraction {
                    cursor: CursorRange {
                        from: state.cursor,
                        to: state.cursor.unwrap_or_default(),
                    },
                    ..extraction
                };
                self.stage_extraction(
                    stream,
                    state.cursor,
                    load_id,
                    LoadMode::Repair,
                    extraction,
                    report,
                    None,
                    transform,
                )
                .await?
            }
        };
        if manifest.rows == 0 {
            return self
                .commit_empty(stream, &mut state, &manifest, report)
                .await;
        }
        self.write_pending(stream, &mut state, &manifest, report, flush)
            .await?;
        self.merge_and_commit(stream, &mut state, &manifest, report, flush)
            .await
    }

    /// A full load staged and, at the same time, copied into the destination (steps 2 to 6
    /// with 5 overlapping 2 to 4; see `Destination::copy_while_staging`): every batch goes to
    /// the Parquet writer and, through a bounded channel, to the destination's COPY. The
    /// destination commits only once step 4 is done, so a crash anywhere leaves what the
    /// ordinary order leaves. When the destination does not take the load (a table that is
    /// not empty, a repeated key, a delete), the staged load is merged the ordinary way.
    /// A stream with a transform sends its transformed batches to the copy.
    async fn stage_and_copy(
        &self,
        stream: &str,
        state: &mut StreamState,
        report: &mut StreamReport,
        transform: Option<&(StreamTransform, Compiled)>,
    ) -> Result<()> {
        let started = self.start_extraction(stream, state, report).await?;
        let (key, schema) = match transform {
            Some((_, output)) => (output.key.clone(), output.schema.clone()),
            None => (
                started.extraction.key.clone(),
                started.extraction.schema.clone(),
            ),
        };
        let request = MergeRequest {
            load_id: started.load_id.clone(),
            stream: stream.to_string(),
            table: stream.to_string(),
            key,
            deletes: self.config.stream_settings(stream).deletes,
            schema,
            staged: Fingerprint::default(),
            files: Vec::new(),
            complete: None,
        };
        self.state.check_lease(stream).await?;
        self.ensure_table(&request, report).await?;

        let (tee, copied) = tokio::sync::mpsc::channel(COPY_AHEAD_BATCHES);
        let (ready, staged) = tokio::sync::oneshot::channel();
        let staging = async {
            let manifest = self
                .stage_started(
                    stream,
                    started,
                    report,
                    Some(tee),
                    transform.map(|(transform, _)| transform),
                )
                .await?;
            if manifest.rows > 0 {
                self.write_pending(stream, state, &manifest, report, false)
                    .await?;
                // The lease is proved once more just before the destination may commit.
                self.state.check_lease(stream).await?;
                // Not taken by the destination: it already gave up the copy.
                let _ = ready.send(merge_request(self.config, &manifest)?);
            }
            Ok::<_, Error>(manifest)
        };
        let batches = futures::stream::unfold(copied, |mut copied| async move {
            copied.recv().await.map(|batch| (Ok(batch), copied))
        })
        .boxed();
        // A task of its own: encoding the COPY runs on another core than the extraction loop.
        let destination = self.destination.clone();
        let idle_limit = Duration::from_secs(self.config.pipeline.lock_ttl_seconds);
        let copying = tokio::spawn(async move {
            destination
                .copy_while_staging(&request, batches, staged, idle_limit)
                .await
        });
        let staged = staging.await;
        // A staging failure dropped `ready`: the destination rolls back and the task ends.
        let copied = copying.await.map_err(|source| RunError::CopyLost {
            stream: stream.to_string(),
            source,
        })?;
        let manifest = staged?;
        if manifest.rows == 0 {
            return self.commit_empty(stream, state, &manifest, report).await;
        }
        match copied {
            Ok(Some(outcome)) => {
                let outcome = self.took(&manifest, report, outcome)?;
                crash_point("after-merge");
                let state_started = Instant::now();
                self.commit_state(stream, state, &manifest, &outcome, true)
                    .await?;
                report.phases.state_ms += millis(state_started.elapsed());
                Ok(())
            }
            Ok(None) => {
                self.merge_and_commit(stream, state, &manifest, report, false)
                    .await
            }
            Err(err) => Err(self.record_failure(stream, state, err).await),
        }
    }

    /// A load with no rows: nothing to merge, the window is covered, so the cursor may move on.
    async fn commit_empty(
        &self,
        stream: &str,
        state: &mut StreamState,
        manifest: &Manifest,
        report: &mut StreamReport,
    ) -> Result<()> {
        info!(stream, "no changes");
        report.reconciliation.destination = Some(Fingerprint::default());
        report.reconciliation.matched = true;
        let nothing = MergeOutcome {
            skipped: true,
            ..Default::default()
        };
        self.commit_state(stream, state, manifest, &nothing, true)
            .await
    }

    /// Step 4: the manifest makes the load complete and replayable, then the state records
    /// it as pending.
    async fn write_pending(
        &self,
        stream: &str,
        state: &mut StreamState,
        manifest: &Manifest,
        report: &mut StreamReport,
        flush: bool,
    ) -> Result<()> {
        let manifest_started = Instant::now();
        self.stage.write_manifest(manifest).await?;
        state.pending = Some(PendingLoad {
            load_id: manifest.load_id.clone(),
            mode: manifest.mode,
            cursor: manifest.cursor,
            failure: None,
        });
        self.state.save(stream, state).await?;
        report.phases.manifest_ms += millis(manifest_started.elapsed());
        crash_point(if flush {
            "flush-after-stage"
        } else {
            "after-stage"
        });
        stall_point("after-stage").await;
        Ok(())
    }

    /// Steps 5 and 6 for a pending load.
    async fn merge_and_commit(
        &self,
        stream: &str,
        state: &mut StreamState,
        manifest: &Manifest,
        report: &mut StreamReport,
        flush: bool,
    ) -> Result<()> {
        let outcome = match self.merge(manifest, report).await {
            Ok(outcome) => outcome,
            Err(err) => return Err(self.record_failure(stream, state, err).await),
        };
        crash_point(if flush {
            "flush-after-merge"
        } else {
            "after-merge"
        });
        let state_started = Instant::now();
        self.commit_state(stream, state, manifest, &outcome, true)
            .await?;
        report.phases.state_ms += millis(state_started.elapsed());
        Ok(())
    }

    /// Extracts from the saved cursor into a new staged load, and proves the staged files
    /// hold exactly what was extracted. Returns the load's manifest, not yet written.
    async fn extract_and_stage(
        &self,
        stream: &str,
        state: &StreamState,
        report: &mut StreamReport,
        transform: Option<&StreamTransform>,
    ) -> Result<Manifest> {
        let started = self.start_extraction(stream, state, report).await?;
        self.stage_started(stream, started, report, None, transform)
            .await
    }

    /// Asks the source for the records changed since the saved cursor (all of them for a
    /// full load); nothing is read yet.
    async fn start_extraction(
        &self,
        stream: &str,
        state: &StreamState,
        report: &mut StreamReport,
    ) -> Result<Started> {
        let since = if self.full_refresh {
            None
        } else {
            state.cursor
        };
        let load_id = uuid::Uuid::now_v7().to_string();
        report.load_id = Some(load_id.clone());
        let mode = if since.is_some() {
            LoadMode::Incremental
        } else {
            LoadMode::Full
        };
        report.mode = Some(mode);

        let at = chrono::Utc::now();
        let extraction = self
            .source
            .extract(ExtractRequest {
                stream: stream.to_string(),
                since,
                // A full load gets it too (see `ExtractRequest::state`).
                state: state.source_state.clone(),
                batch_rows: self.config.pipeline.batch_rows,
            })
            .await?;
        info!(stream, load_id, ?mode, "extracting");
        Ok(Started {
            load_id,
            mode,
            since,
            at,
            extraction,
        })
    }

    /// Stages a started extraction (each batch also sent to `tee`, when given) and proves the
    /// staged files hold exactly what was extracted. Returns the manifest, not yet written.
    async fn stage_started(
        &self,
        stream: &str,
        started: Started,
        report: &mut StreamReport,
        tee: Option<CopyFeed>,
        transform: Option<&StreamTransform>,
    ) -> Result<Manifest> {
        let Started {
            load_id,
            mode,
            since,
            at,
            extraction,
        } = started;
        let mut manifest = self
            .stage_extraction(
                stream, since, load_id, mode, extraction, report, tee, transform,
            )
            .await?;
        // Only a full load that read everything proves the rows it lacks are gone: one that
        // stopped early did not see them, and a dead-lettered record is still at the source.
        if mode == LoadMode::Full
            && report.stopped.is_none()
            && manifest.dead_letter.is_none()
            && !manifest.keeps_cursor
        {
            manifest.complete_as_of = Some(at);
        }
        Ok(manifest)
    }

    /// Stages what `extraction` yields as load `load_id` and proves the staged files hold
    /// exactly that. Returns the load's manifest, not yet written. A repair keeps the cursor.
    /// A stream's transform runs on the batches as they are staged: the manifest is then
    /// the transformed load's, with the raw load kept in it, and `tee` gets the transformed
    /// batches.
    #[allow(clippy::too_many_arguments)]
    async fn stage_extraction(
        &self,
        stream: &str,
        since: Option<i64>,
        load_id: String,
        mode: LoadMode,
        extraction: Extraction,
        report: &mut StreamReport,
        tee: Option<CopyFeed>,
        transform: Option<&StreamTransform>,
    ) -> Result<Manifest> {
        report.set_cursor(extraction.cursor, |c| self.source.cursor_text(stream, c));
        let pipeline = &self.config.pipeline.name;
        let schema = columns_of(&extraction.schema)?;
        let key = extraction.key.clone();
        let source_state = extraction.state.clone();
        let dir = self.stage.load_dir(pipeline, stream, &load_id);
        let (tee, transforming) = match transform {
            Some(transform) => {
                let (feed, running) = transform
                    .start(
                        &self.stage,
                        extraction.schema.clone(),
                        &key,
                        &load_id,
                        dir.clone(),
                        (
                            self.config.pipeline.batch_rows,
                            self.config.pipeline.file_rows,
                        ),
                        tee,
                    )
                    .await?;
                (Some(Tee::Transform(feed)), Some(running))
            }
            None => (tee.map(Tee::Copy), None),
        };
        let staged = self
            .stage_items(stream, since, &load_id, dir, extraction, report, tee)
            .await?;
        report.set_cursor(staged.cursor, |c| self.source.cursor_text(stream, c));

        let mut manifest = Manifest {
            format_version: 1,
            pipeline: pipeline.clone(),
            stream: stream.to_string(),
            load_id: load_id.clone(),
            mode,
            created_at: chrono::Utc::now(),
            key,
            schema,
            cursor: staged.cursor,
            keeps_cursor: staged.keeps_cursor || mode == LoadMode::Repair,
            source_state: if staged.keeps_cursor || mode == LoadMode::Repair {
                None
            } else {
                source_state
            },
            rows: 0,
            checksum: 0,
            files: staged.files,
            dead_letter: staged.dead_letter,
            complete_as_of: None,
            transform: None,
        };
        // The stage hop: the files' footers hold every row extracted, and the checksum is the
        // one computed on those same batches as they went to the encoder.
        let read_back_started = Instant::now();
        let read_back = Fingerprint {
            rows: self.stage.footer_rows(&manifest.files).await?,
            checksum: staged.extracted.checksum,
        };
        report.phases.read_back_ms += millis(read_back_started.elapsed());
        report.rows_staged = read_back.rows;
        report.reconciliation.stage = read_back;
        if read_back != staged.extracted {
            return Err(RunError::StagedDiffers {
                stream: stream.to_string(),
                load_id,
                staged: read_back,
                extracted: staged.extracted,
            }
            .into());
        }
        manifest.rows = read_back.rows;
        manifest.checksum = read_back.checksum;
        match transforming {
            Some(running) => running.finish(manifest, report).await,
            None => Ok(manifest),
        }
    }

    /// Writes what the extraction yields to the stage as it arrives: batches to Parquet,
    /// dead letters to their own file, and the cursor the source reached.
    async fn stage_items(
        &self,
        stream: &str,
        since: Option<i64>,
        load_id: &str,
        dir: object_store::path::Path,
        extraction: Extraction,
        report: &mut StreamReport,
        mut tee: Option<Tee>,
    ) -> Result<StagedItems> {
        // Parquet is encoded in a task of its own, overlapping the value rule and the
        // fingerprint of the next batch (the source reads ahead in its own task too).
        let mut writer = LoadWriter::new(
            &self.stage,
            dir.clone(),
            extraction.schema.clone(),
            self.config.pipeline.file_rows,
        )
        .spawn();
        let mut dead_letters = DeadLetterWriter::new(&self.stage, dir, load_id);
        let mut extracted = Fingerprint::default();
        let progress = progress_bar(stream);
        let mut items = extraction.items;
        let mut cursor = extraction.cursor;
        let mut keeps_cursor = false;
        let (mut extract, mut convert, mut write) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        loop {
            let waited = Instant::now();
            let Some(item) = items.next().await else {
                break;
            };
            extract += waited.elapsed();
            let item = match item {
                // A source that cannot say how far it got: what it sent is merged, and the
                // cursor stays where it was.
                Err(err) if err.kind() == ErrorKind::Quota => Extracted::Stopped {
                    cursor: None,
                    reason: err.report(),
                    cause: StopCause::Quota,
                },
                item => item?,
            };
            match item {
                Extracted::Stopped {
                    cursor: reached,
                    reason,
                    cause,
                } => {
                    warn!(stream, reason = %reason, "source stopped early; merging what was read");
                    if cause == StopCause::Quota {
                        let _ = self.quota.set(reason.clone());
                    }
                    match reached {
                        // Never move the cursor backwards: a stop inside the overlap still
                        // covers everything up to the saved cursor.
                        Some(reached) => cursor.to = since.map_or(reached, |s| reached.max(s)),
                        None => keeps_cursor = true,
                    }
                    report.stopped = Some(reason);
                    break;
                }
                Extracted::Batch(batch) => {
                    let converting = Instant::now();
                    let checked = crate::values::apply(batch, &extraction.key)?;
                    if checked.replaced > 0 {
                        warn!(
                            stream,
                            values = checked.replaced,
                            "replaced NUL characters in text values (U+0000 becomes U+FFFD)"
                        );
                        report.values_replaced += checked.replaced;
                    }
                    if !checked.rejected.is_empty() {
                        warn!(
                            stream,
                            records = checked.rejected.len(),
                            "records with a value no destination can store go to the dead letters"
                        );
                        dead_letters.write(&checked.rejected).await?;
                    }
                    let batch = checked.batch;
                    if batch.num_rows() == 0 {
                        convert += converting.elapsed();
                        continue;
                    }
                    let (fingerprint, sent) = match &tee {
                        Some(tee) => {
                            let (fingerprint, sent) = tee.fingerprint(&batch, &extraction.key)?;
                            (fingerprint, Some(sent))
                        }
                        None => (batch_fingerprint(&batch, &extraction.key)?, None),
                    };
                    extracted.merge(fingerprint);
                    convert += converting.elapsed();
                    // A closed channel: the destination gave up the copy (see `stage_and_copy`),
                    // or the transform failed (its task says why).
                    if let (Some(out), Some(sent)) = (&tee, sent)
                        && !out.send(sent).await
                    {
                        tee = None;
                    }
                    // Counted in the writer's own time (below), not while waiting for it.
                    writer.write(batch).await?;
                    if let Some(bar) = &progress {
                        bar.set_position(extracted.rows);
                    }
                }
                Extracted::DeadLetters(letters) => {
                    let writing = Instant::now();
                    dead_letters.write(&letters).await?;
                    write += writing.elapsed();
                }
                Extracted::Estimate(total) => {
                    if let Some(bar) = &progress {
                        show_total(bar, total);
                    }
                }
                Extracted::Warning { message, reconcile } => {
                    warn!(stream, warning = %message, "source warning");
                    report.warnings.push(message);
                    report.reconcile_recommended |= reconcile;
                }
                Extracted::CursorReached(reached) => {
                    cursor.to = since.map_or(reached, |s| reached.max(s));
                }
            }
        }
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        let (files, encoding) = writer.finish().await?;
        let writing = Instant::now();
        let dead_letter = dead_letters.finish().await?;
        write += writing.elapsed() + encoding;
        report.phases.extract_ms += millis(extract);
        report.phases.convert_ms += millis(convert);
        report.phases.parquet_write_ms += millis(write);
        report.rows_extracted = extracted.rows;
        report.rows_dead_lettered = dead_letter.as_ref().map_or(0, |d| d.rows);
        report.dead_letter_file = dead_letter.as_ref().map(|d| d.path.clone());
        report.reconciliation.source = extracted;
        Ok(StagedItems {
            files,
            dead_letter,
            extracted,
            cursor,
            keeps_cursor,
        })
    }

    /// Merges a complete staged load and checks what the destination received. `replay`
    /// merges through here too: there is one merge path.
    pub(super) async fn merge(
        &self,
        manifest: &Manifest,
        report: &mut StreamReport,
    ) -> Result<MergeOutcome> {
        let request = merge_request(self.config, manifest)?;
        // A run that lost its stream's lease must not merge: another run owns the stream now.
        self.state.check_lease(&manifest.stream).await?;
        self.ensure_table(&request, report).await?;
        let open = || self.stage.read_load(manifest);
        let outcome = self.destination.merge_staged(&request, &open).await?;
        self.took(manifest, report, outcome)
    }

    /// Creates the destination table, or adds the columns it lacks, and reports a change.
    async fn ensure_table(&self, request: &MergeRequest, report: &mut StreamReport) -> Result<()> {
        let ensuring = Instant::now();
        let change = self.destination.ensure_table(request).await?;
        report.phases.ensure_table_ms += millis(ensuring.elapsed());
        if change.created_table || !change.added_columns.is_empty() {
            info!(stream = %request.stream, created = change.created_table, added = ?change.added_columns, "table schema changed");
        }
        if change != Default::default() {
            report.schema_change = Some(change);
        }
        Ok(())
    }

    /// What the destination said it applied, into the report, checked against the manifest.
    fn took(
        &self,
        manifest: &Manifest,
        report: &mut StreamReport,
        outcome: MergeOutcome,
    ) -> Result<MergeOutcome> {
        report.rows_inserted += outcome.inserted;
        report.rows_updated += outcome.updated;
        report.rows_deleted += outcome.deleted;
        report.phases.load_ms += outcome.timings.load_ms;
        report.phases.merge_ms += outcome.timings.merge_ms;
        report.phases.commit_ms += outcome.timings.commit_ms;
        report.phases.direct_copy |= outcome.timings.direct_copy;
        report.phases.copied_while_staging |= outcome.timings.copied_while_staging;
        if outcome.skipped {
            report.skipped_as_replay = true;
            report.reconciliation.matched =
                report.reconciliation.source == report.reconciliation.stage;
            info!(stream = %manifest.stream, load_id = %manifest.load_id, "load already in the ledger; nothing applied");
            return Ok(outcome);
        }
        report.reconciliation.destination = Some(outcome.received);
        report.reconciliation.matched = outcome.received == manifest.fingerprint()
            && (report.recovered || report.reconciliation.source == manifest.raw_fingerprint());
        if outcome.received != manifest.fingerprint() {
            return Err(RunError::ReceivedDiffers {
                stream: manifest.stream.clone(),
                load_id: manifest.load_id.clone(),
                received: outcome.received,
                staged: manifest.fingerprint(),
            }
            .into());
        }
        info!(stream = %manifest.stream, load_id = %manifest.load_id, inserted = outcome.inserted, updated = outcome.updated, deleted = outcome.deleted, "merged");
        Ok(outcome)
    }

    async fn commit_state(
        &self,
        stream: &str,
        state: &mut StreamState,
        manifest: &Manifest,
        outcome: &MergeOutcome,
        this_run: bool,
    ) -> Result<()> {
        // After the destination committed the load, before the state says so (see `mirror`).
        crate::destinations::mirror::apply(self.config, &self.stage, manifest).await?;
        if !manifest.keeps_cursor {
            state.cursor = Some(manifest.cursor.to);
            if manifest.source_state.is_some() {
                state.source_state = manifest.source_state.clone();
            }
        }
        state.pending = None;
        if !outcome.skipped {
            let committed_at = chrono::Utc::now();
            state.record_load(LastLoad {
                load_id: manifest.load_id.clone(),
                committed_at,
                rows: manifest.rows,
                inserted: outcome.inserted,
                updated: outcome.updated,
                deleted: outcome.deleted,
                // The load id (UUIDv7) was minted when extraction began; a load an earlier
                // run left pending has no duration worth showing.
                duration_ms: this_run
                    .then(|| load_started_ms(&manifest.load_id))
                    .flatten()
                    .map(|started| (committed_at.timestamp_millis() - started).max(0) as u64),
                dead_lettered: manifest.dead_letter.as_ref().map_or(0, |d| d.rows),
            });
        }
        self.state.save(stream, state).await?;
        // A repair read no new position: nothing for the source to release (and a CDC slot
        // may be gone, which is why the repair ran).
        if let Some(cursor) = state.cursor.filter(|_| manifest.mode != LoadMode::Repair) {
            self.source
                .committed(stream, cursor, state.source_state.as_ref())
                .await?;
        }
        Ok(())
    }

    /// [`note_failure`](Self::note_failure) for a load that failed (a quota stop is no failure).
    async fn note_failure_of(&self, stream: &str, outcome: &Result<()>) {
        if let Err(err) = outcome
            && err.kind() != ErrorKind::Quota
        {
            self.note_failure(stream, err).await;
        }
    }

    /// Counts a failed run in the stream's state (`status`, `ui`), while this run still
    /// holds the lease; a run that lost it writes nothing, as always.
    async fn note_failure(&self, stream: &str, err: &Error) {
        let noted = async {
            let mut state = self.state.load(stream).await?;
            state.record_failure(err.report());
            self.state.save(stream, &state).await
        };
        if let Err(save) = noted.await {
            warn!(stream, error = %save, "could not record the failure in the stream's state");
        }
    }

    /// Notes on the pending load why its merge failed, when retrying will not cure it, so
    /// the next run sets it aside instead of failing on it forever. Returns the error.
    async fn record_failure(&self, stream: &str, state: &mut StreamState, err: Error) -> Error {
        if let Some(pending) = state.pending.as_mut().filter(|_| sets_aside(&err)) {
            pending.failure = Some(err.report());
            if let Err(save) = self.state.save(stream, state).await {
                warn!(stream, error = %save, "could not record why the pending load failed");
            }
        }
        err
    }

    /// Gives up on the pending load (it stays in the stage, listed by `status`) and lets the
    /// stream go on: the cursor did not move past it, so the next extraction covers its range.
    async fn set_aside(
        &self,
        stream: &str,
        state: &mut StreamState,
        reason: &str,
        report: &mut StreamReport,
    ) -> Result<()> {
        let Some(pending) = state.pending.take() else {
            return Ok(());
        };
        warn!(stream, load_id = %pending.load_id, reason, "setting aside a staged load that cannot merge; its range is read again");
        let set_aside = SetAside {
            load_id: pending.load_id,
            reason: reason.to_string(),
            set_aside_at: chrono::Utc::now(),
        };
        state.set_aside.push(set_aside.clone());
        self.state.save(stream, state).await?;
        report.set_aside.push(set_aside);
        Ok(())
    }

    /// Completes a load an interrupted run left between staging and the state commit.
    async fn finish_pending(
        &self,
        stream: &str,
        state: &mut StreamState,
        pending: &PendingLoad,
        report: &mut StreamReport,
    ) -> Result<()> {
        let pipeline = &self.config.pipeline.name;
        match self
            .stage
            .read_manifest(pipeline, stream, &pending.load_id)
            .await?
        {
            None => {
                // Staging never completed; the cursor did not move, so the next extraction re-reads it.
                warn!(stream, load_id = %pending.load_id, "discarding a load whose staging never completed");
                state.pending = None;
                self.state.save(stream, state).await?;
            }
            Some(manifest) => {
                info!(stream, load_id = %pending.load_id, "finishing a load left pending by an earlier run");
                let mut recovered = StreamReport::new(stream);
                recovered.recovered = true;
                let outcome = if self
                    .destination
                    .is_committed(stream, &pending.load_id)
                    .await?
                {
                    MergeOutcome {
                        skipped: true,
                        ..Default::default()
                    }
                } else if let Some(failure) = &pending.failure {
                    // It failed before for a reason retrying will not cure: merging it
                    // again would fail again, forever.
                    return self.set_aside(stream, state, failure, report).await;
                } else {
                    match self.merge(&manifest, &mut recovered).await {
                        Ok(outcome) => outcome,
                        // A full refresh reads the whole range again: it never waits for a
                        // load that cannot merge.
                        Err(err) if self.full_refresh && sets_aside(&err) => {
                            return self.set_aside(stream, state, &err.report(), report).await;
                        }
                        Err(err) => return Err(self.record_failure(stream, state, err).await),
                    }
                };
                report.rows_inserted += recovered.rows_inserted;
                report.rows_updated += recovered.rows_updated;
                report.rows_deleted += recovered.rows_deleted;
                let p = &recovered.phases;
                report.phases.ensure_table_ms += p.ensure_table_ms;
                report.phases.load_ms += p.load_ms;
                report.phases.merge_ms += p.merge_ms;
                report.phases.commit_ms += p.commit_ms;
                report.phases.direct_copy |= p.direct_copy;
                let state_started = Instant::now();
                self.commit_state(stream, state, &manifest, &outcome, false)
                    .await?;
                report.phases.state_ms += millis(state_started.elapsed());
            }
        }
        Ok(())
    }
}

/// What the destination is asked to merge for a staged load.
fn merge_request(config: &Config, manifest: &Manifest) -> Result<MergeRequest> {
    Ok(MergeRequest {
        load_id: manifest.load_id.clone(),
        stream: manifest.stream.clone(),
        table: manifest.stream.clone(),
        key: manifest.key.clone(),
        deletes: config.stream_settings(&manifest.stream).deletes,
        schema: manifest.arrow_schema()?,
        staged: manifest.fingerprint(),
        files: manifest.files.iter().map(|f| f.path.clone()).collect(),
        complete: manifest.complete_as_of,
    })
}

/// Whether a merge failure condemns the load rather than the moment: the destination
/// rejected its rows or schema, or its staged files no longer match the manifest. Network,
/// lock and configuration failures leave the load as good as it was.
fn sets_aside(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Destination
            | ErrorKind::SchemaDrift
            | ErrorKind::Reconciliation
            | ErrorKind::Stage
    )
}

/// A spinner counting rows, on a terminal only (a log file or an orchestrator's capture gets
/// the one-line summary instead). It becomes a bar with a percentage and ETA once the source
/// says how many records to expect.
fn progress_bar(stream: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix}: {human_pos} rows ({per_sec}) {elapsed}")
            .expect("progress template is valid"),
    );
    bar.set_prefix(stream.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}

/// Turns the spinner into a bar once a total is known. The total is an estimate: a bar that
/// overshoots it keeps counting (indicatif caps the percentage, the row count stays true).
fn show_total(bar: &ProgressBar, total: u64) {
    bar.set_length(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix}: [{bar:30}] {percent:>3}% {human_pos}/{human_len} rows ({per_sec}, ETA {eta})",
        )
        .expect("progress template is valid")
        .progress_chars("=> "),
    );
}

/// When a load began, from its id (a UUIDv7 carries its creation time in milliseconds).
fn load_started_ms(load_id: &str) -> Option<i64> {
    let (seconds, nanos) = uuid::Uuid::parse_str(load_id)
        .ok()?
        .get_timestamp()?
        .to_unix();
    Some(seconds as i64 * 1000 + i64::from(nanos / 1_000_000))
}
