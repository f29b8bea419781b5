//! `syncline stream`: micro-batch mode. One long-running process keeps every selected
//! stream flowing until SIGTERM or SIGINT.
//!
//! Per stream, one task holds the stream's lease for the life of the process and loops:
//! 1. a catch-up load, an ordinary one (`LoadInput::Extract`): it finishes a load an earlier
//!    process left pending, takes the snapshot on a first start, and reads what changed while
//!    nothing ran;
//! 2. then a source that can be followed (a PostgreSQL CDC slot, `Source::follow`) is read
//!    continuously over one replication connection; what it sends is buffered and flushed
//!    when `flush_rows` changes wait or the oldest waited `flush_ms`. Every flush is an
//!    ordinary load (`LoadInput::Read`): staged, read back, merged with its ledger row, state
//!    saved after the commit, and only then the slot confirmed (`Source::committed`). WAL
//!    that held nothing for the stream is saved as the cursor every [`IDLE_SAVE`], so the
//!    slot advances over it while the stream is idle.
//!    Other sources are polled every `poll_seconds` with ordinary loads; webhook hints
//!    (`[stream.webhook]`) are fetched by key (`Source::fetch_keys`) and merged as repair
//!    loads, which never move the cursor (polling stays the safety net).
//!
//! Failures: a configuration error (exit code 2 in batch mode) stops that stream with its
//! message on `/health` and in the log, and the others go on; anything else is retried
//! after a pause that doubles up to [`BACKOFF_MAX`], from the saved state (what was buffered
//! is read again). Nothing is dropped: a full buffer stops the reading (bounded channels).
//!
//! Shutdown: the flush in progress finishes, what is buffered is flushed, state is saved,
//! leases are released; the process exits 0, or 1 when that took longer than
//! `shutdown_seconds`. A SIGKILL at any point leaves at most a pending load, which the next
//! start finishes (step 1).

pub mod config;
pub mod metrics;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::error::{Classified, ErrorKind};
use crate::load::{CursorRange, DeadLetter};
use crate::pipeline::batch::{LoadInput, RunError, StreamRunner};
use crate::reconcile::drift::Key;
use crate::reconcile::report::{Status, StreamReport};
use crate::sources::{Extracted, Extraction, Followed, Follower};
use crate::{Error, Result};
use metrics::{Metrics, Phase};
use webhook::Hint;

/// How often a CDC stream with no change of its own saves the position the server read to
/// (which lets the slot free the WAL before it).
pub const IDLE_SAVE: Duration = Duration::from_secs(10);

/// The longest pause between two attempts of a failing stream.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Items (one per committed transaction, or a full batch) in flight between a follower and
/// its stream's buffer: room for a flush's worth of small transactions, so a flush in
/// progress does not stall the reader at once; bounded, so a slow destination does.
const FOLLOW_CAPACITY: usize = 16;

/// Hints waiting per stream before the webhook receiver waits for room.
const HINT_CAPACITY: usize = 10_000;

/// What stops `syncline stream` as a whole.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("[stream] listen = {addr:?}: cannot listen there")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch for SIGTERM and SIGINT")]
    Signals(#[source] std::io::Error),
    /// One stream's load failed; the message is the load's error as its report has it.
    #[error("stream {stream}: {message}")]
    Load {
        stream: String,
        message: String,
        exit_code: i32,
    },
    #[error("stream {stream}: the change reader ended without saying why")]
    FollowerGone { stream: String },
    #[error("every stream stopped: {0}")]
    AllStopped(String),
}

impl Classified for StreamError {
    fn kind(&self) -> ErrorKind {
        match self {
            StreamError::Listen { .. } => ErrorKind::Config,
            StreamError::Signals(_) | StreamError::FollowerGone { .. } => ErrorKind::Transient,
            StreamError::Load { exit_code: 2, .. } => ErrorKind::Config,
            StreamError::Load { .. } => ErrorKind::Transient,
            StreamError::AllStopped(_) => ErrorKind::Config,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Streams to keep flowing; all configured streams when `None`.
    pub streams: Option<Vec<String>>,
}

/// Flush and poll settings of one stream, resolved from `[streams.NAME]`, `[stream]` and
/// the destination's defaults.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    flush_rows: usize,
    flush_ms: u64,
    poll_seconds: u64,
}

impl Thresholds {
    fn of(config: &Config, stream: &str) -> Thresholds {
        let pipeline = config.stream_config();
        let settings = config.stream_settings(stream);
        let (rows, ms) = config::destination_defaults(&config.destination);
        Thresholds {
            flush_rows: settings.flush_rows.or(pipeline.flush_rows).unwrap_or(rows),
            flush_ms: settings.flush_ms.or(pipeline.flush_ms).unwrap_or(ms),
            poll_seconds: settings
                .poll_seconds
                .unwrap_or_else(|| config::default_poll_seconds(&config.source)),
        }
    }
}

/// Runs the selected streams until SIGTERM or SIGINT; returns the exit code (0 after a
/// clean shutdown, 1 when it took longer than `shutdown_seconds`).
pub async fn run(config: &Config, options: &StreamOptions) -> Result<u8> {
    let configured = config.source.streams();
    let selected: Vec<String> = match &options.streams {
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
    let settings = config.stream_config();
    crate::pipeline::transform::prepare_all(config, &selected)?;
    let metrics = Arc::new(Metrics::new(&selected));

    let (stop, stopping) = watch::channel(false);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(StreamError::Signals)?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(StreamError::Signals)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM: finishing the flushes in progress"),
            _ = interrupt.recv() => info!("SIGINT: finishing the flushes in progress"),
        }
        let _ = stop.send(true);
    });

    // Hints from the webhook receiver, routed to their stream's poller.
    let mut hint_queues: HashMap<String, mpsc::Receiver<Hint>> = HashMap::new();
    let mut webhook = None;
    if let Some(hook) = &settings.webhook {
        let (sender, mut hints) = mpsc::channel::<Hint>(HINT_CAPACITY);
        let mut routes = HashMap::new();
        for stream in &selected {
            let (queue, receiver) = mpsc::channel(HINT_CAPACITY);
            routes.insert(stream.clone(), queue);
            hint_queues.insert(stream.clone(), receiver);
        }
        tokio::spawn(async move {
            while let Some(hint) = hints.recv().await {
                if let Some(queue) = routes.get(&hint.stream) {
                    // Waits for room: a hint is never dropped here.
                    let _ = queue.send(hint).await;
                }
            }
        });
        let mut objects: HashMap<String, String> = configured
            .iter()
            .map(|stream| (config::object_type(stream), stream.clone()))
            .collect();
        objects.extend(hook.objects.clone());
        objects.retain(|_, stream| selected.contains(stream));
        let receiver =
            webhook::WebhookReceiver::new(hook.secret.expose().to_string(), objects, sender)
                .with_public_url(hook.public_url.clone());
        metrics.attach_webhook(receiver.counters());
        webhook = Some(receiver.router());
    }
    serve(&settings.listen, metrics.clone(), webhook, stopping.clone()).await?;

    let streams = selected.iter().map(|stream| {
        let flow = Flow {
            config,
            stream: stream.clone(),
            thresholds: Thresholds::of(config, stream),
            metrics: metrics.clone(),
            stopping: stopping.clone(),
        };
        let hints = hint_queues.remove(stream);
        async move { flow.run(hints).await }
    });
    let mut all = std::pin::pin!(futures::future::join_all(streams));
    let mut deadline = stopping.clone();
    let shutdown = Duration::from_secs(settings.shutdown_seconds);
    let outcomes = tokio::select! {
        outcomes = &mut all => outcomes,
        _ = async {
            let _ = deadline.wait_for(|stop| *stop).await;
            tokio::time::sleep(shutdown).await;
        } => {
            error!(
                shutdown_seconds = settings.shutdown_seconds,
                "the flushes in progress did not finish in time; exiting without them (the next start reads them again)"
            );
            return Ok(1);
        }
    };
    if *stopping.borrow() {
        info!("every stream stopped; state saved");
        return Ok(0);
    }
    // Every stream stopped by itself: each had an error that retrying does not cure.
    let reasons: Vec<String> = outcomes.into_iter().filter_map(|o| o.err()).collect();
    Err(StreamError::AllStopped(reasons.join("; ")).into())
}

/// Binds the listener and serves `/metrics`, `/health` and the webhook receiver until the
/// process stops.
async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    webhook: Option<axum::Router>,
    mut stopping: watch::Receiver<bool>,
) -> Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StreamError::Listen {
            addr: listen.to_string(),
            source,
        })?;
    let rendered = metrics.clone();
    let mut app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = rendered.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let (healthy, body) = metrics.health();
                    let status = if healthy {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, body)
                }
            }),
        );
    if let Some(webhook) = webhook {
        app = app.merge(webhook);
    }
    info!(address = listen, "serving /metrics and /health");
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
        if let Err(err) = server.await {
            warn!(error = %err, "the HTTP listener stopped");
        }
    });
    Ok(())
}

/// One stream's task.
struct Flow<'a> {
    config: &'a Config,
    stream: String,
    thresholds: Thresholds,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
}

/// Changes read and not yet flushed.
struct Buffer {
    batches: Vec<RecordBatch>,
    dead: Vec<DeadLetter>,
    rows: usize,
    /// Everything before it has been read.
    read_to: i64,
    /// When the oldest change in the buffer arrived.
    since: Option<Instant>,
    /// Source commit times of what is buffered, with the rows each covers.
    committed_at: Vec<(chrono::DateTime<chrono::Utc>, usize)>,
}

impl Buffer {
    fn new(read_to: i64) -> Buffer {
        Buffer {
            batches: Vec::new(),
            dead: Vec::new(),
            rows: 0,
            read_to,
            since: None,
            committed_at: Vec::new(),
        }
    }

    fn has_changes(&self) -> bool {
        self.rows > 0 || !self.dead.is_empty()
    }

    /// What is buffered, as an extraction from the saved cursor `from`.
    fn extraction(&self, schema: &SchemaRef, key: &str, from: i64) -> Extraction {
        let items: Vec<Result<Extracted>> = self
            .batches
            .iter()
            .map(|batch| Ok(Extracted::Batch(batch.clone())))
            .chain((!self.dead.is_empty()).then(|| Ok(Extracted::DeadLetters(self.dead.clone()))))
            .collect();
        Extraction {
            schema: schema.clone(),
            key: key.to_string(),
            cursor: CursorRange {
                from: Some(from),
                to: self.read_to,
            },
            state: None,
            items: futures::stream::iter(items).boxed(),
        }
    }

    fn clear(&mut self) {
        self.batches.clear();
        self.dead.clear();
        self.rows = 0;
        self.since = None;
        self.committed_at.clear();
    }
}

impl Flow<'_> {
    /// Keeps the stream flowing until the process stops (`Ok`), or returns why it stopped
    /// for good.
    async fn run(self, mut hints: Option<mpsc::Receiver<Hint>>) -> std::result::Result<(), String> {
        let stream = self.stream.clone();
        let mut pause = Duration::from_secs(1);
        loop {
            if self.stopped() {
                self.metrics.set_phase(&stream, Phase::Finished, None);
                return Ok(());
            }
            self.metrics.set_phase(&stream, Phase::Starting, None);
            // A runner of its own per attempt: its own destination connection (merges of
            // different streams do not wait for each other), and a fresh one after a failure
            // (a connection the destination dropped is not reused).
            let outcome = match StreamRunner::open(self.config, false).await {
                Err(err) => Err(err),
                Ok(runner) => self.attempt(&runner, &mut hints, &mut pause).await,
            };
            match outcome {
                Ok(()) if self.stopped() => {
                    self.metrics.set_phase(&stream, Phase::Finished, None);
                    return Ok(());
                }
                // A follower that stopped cleanly (the table gained a column): start over.
                Ok(()) => continue,
                Err(err) if stops_the_stream(&err) => {
                    let reason = err.report();
                    error!(stream, error = %reason, "the stream stops; the others go on");
                    self.metrics.failed(&stream);
                    self.metrics
                        .set_phase(&stream, Phase::Stopped, Some(reason.clone()));
                    return Err(format!("{stream}: {reason}"));
                }
                Err(err) => {
                    let reason = err.report();
                    warn!(stream, error = %reason, retry_in_s = pause.as_secs(), "the stream failed; retrying from its saved state");
                    self.metrics.failed(&stream);
                    self.metrics
                        .set_phase(&stream, Phase::Retrying, Some(reason));
                    self.pause(pause).await;
                    pause = (pause * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One attempt: the lease, then the stream's flow until it ends.
    async fn attempt(
        &self,
        runner: &StreamRunner<'_>,
        hints: &mut Option<mpsc::Receiver<Hint>>,
        pause: &mut Duration,
    ) -> Result<()> {
        let lock = runner.lock(&self.stream).await?;
        let outcome = self.flow(runner, hints, pause).await;
        if let Err(err) = lock.release().await {
            warn!(stream = %self.stream, error = %err, "could not release the stream lease");
        }
        outcome
    }

    fn stopped(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Sleeps, or less when the process stops.
    async fn pause(&self, pause: Duration) {
        let mut stopping = self.stopping.clone();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }

    /// Catch-up, then follow or poll; `Ok` when the process stops or the follower asks to
    /// start over.
    async fn flow(
        &self,
        runner: &StreamRunner<'_>,
        hints: &mut Option<mpsc::Receiver<Hint>>,
        pause: &mut Duration,
    ) -> Result<()> {
        let stream = &self.stream;
        self.load(runner, LoadInput::Extract).await?;
        *pause = Duration::from_secs(1);
        let saved = runner.saved(stream).await?;
        let follower = match saved.cursor {
            Some(cursor) => {
                runner
                    .source()
                    .follow(
                        stream,
                        cursor,
                        self.config.pipeline.batch_rows,
                        FOLLOW_CAPACITY,
                    )
                    .await?
            }
            None => None,
        };
        self.metrics.set_phase(stream, Phase::Flowing, None);
        match follower {
            Some(follower) => self.follow(runner, follower, pause).await,
            None => self.poll(runner, hints, pause).await,
        }
    }

    /// One load; a failed one is an error.
    async fn load(&self, runner: &StreamRunner<'_>, input: LoadInput) -> Result<StreamReport> {
        let report = runner.run_held(&self.stream, input).await;
        match report.status {
            Status::Failed | Status::Mismatch => Err(StreamError::Load {
                stream: self.stream.clone(),
                message: report.error.clone().unwrap_or_default(),
                exit_code: report.error_exit_code.unwrap_or(1),
            }
            .into()),
            _ => {
                self.metrics.loaded(
                    &self.stream,
                    report.rows_inserted + report.rows_updated + report.rows_deleted,
                );
                Ok(report)
            }
        }
    }

    /// Reads the follower, flushing on size, age, idle progress and shutdown.
    async fn follow(
        &self,
        runner: &StreamRunner<'_>,
        follower: Follower,
        pause: &mut Duration,
    ) -> Result<()> {
        let stream = &self.stream;
        let Follower {
            schema,
            key,
            from,
            mut items,
            lag_bytes,
            guard,
        } = follower;
        let flush_age = Duration::from_millis(self.thresholds.flush_ms);
        let mut cursor = from;
        let mut buffer = Buffer::new(from);
        let mut saved_at = Instant::now();
        let mut stopping = self.stopping.clone();
        let outcome = loop {
            self.metrics
                .slot_lag(stream, lag_bytes.load(Ordering::Relaxed));
            self.metrics.buffer(stream, buffer.rows as u64);
            let due = buffer.since.map(|since| since + flush_age);
            let idle_due =
                (!buffer.has_changes() && buffer.read_to > cursor).then_some(saved_at + IDLE_SAVE);
            let flush = tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => {
                    // What was read goes in before the process ends.
                    if buffer.has_changes() {
                        self.flush(runner, &schema, &key, &mut cursor, &mut buffer, pause).await?;
                    }
                    break Ok(());
                }
                _ = sleep_until(due), if due.is_some() => true,
                _ = sleep_until(idle_due), if idle_due.is_some() => true,
                item = items.recv() => match item {
                    None => break Err(StreamError::FollowerGone { stream: stream.clone() }.into()),
                    Some(Err(err)) => break Err(err),
                    Some(Ok(Followed::Changes { batch, dead, read_to, committed_at })) => {
                        let rows = batch.as_ref().map_or(0, |b| b.num_rows());
                        if let Some(batch) = batch {
                            buffer.batches.push(batch);
                        }
                        buffer.dead.extend(dead);
                        buffer.rows += rows;
                        buffer.read_to = buffer.read_to.max(read_to);
                        buffer.since.get_or_insert_with(Instant::now);
                        if let Some(at) = committed_at {
                            buffer.committed_at.push((at, rows));
                        }
                        buffer.rows >= self.thresholds.flush_rows
                    }
                    Some(Ok(Followed::Progress { read_to })) => {
                        buffer.read_to = buffer.read_to.max(read_to);
                        false
                    }
                    Some(Ok(Followed::Stopped { read_to, reason })) => {
                        info!(stream, reason, "the change reader stopped; flushing and starting over");
                        buffer.read_to = buffer.read_to.max(read_to);
                        self.flush(runner, &schema, &key, &mut cursor, &mut buffer, pause).await?;
                        break Ok(());
                    }
                },
            };
            if flush && (buffer.has_changes() || buffer.read_to > cursor) {
                self.flush(runner, &schema, &key, &mut cursor, &mut buffer, pause)
                    .await?;
                saved_at = Instant::now();
            }
        };
        // The replication connection closes before the lease is released.
        drop(items);
        drop(guard);
        if outcome.is_ok() && self.stopped() && cursor > from {
            // The follower may not have reported the last commit before it closed: confirm it
            // now, so the slot keeps no WAL the destination already has.
            if let Err(err) = runner.source().committed(stream, cursor, None).await {
                warn!(stream, error = %err.report(), "could not confirm the last position to the slot; the next start does");
            }
        }
        outcome
    }

    /// Loads what is buffered. A failure ends the follow: the stream starts over from its
    /// saved state with a fresh runner (a destination connection that broke is not reused),
    /// and what was buffered is read again from the slot, which kept it.
    async fn flush(
        &self,
        runner: &StreamRunner<'_>,
        schema: &SchemaRef,
        key: &str,
        cursor: &mut i64,
        buffer: &mut Buffer,
        pause: &mut Duration,
    ) -> Result<()> {
        let extraction = buffer.extraction(schema, key, *cursor);
        self.load(runner, LoadInput::Read(extraction)).await?;
        let now = chrono::Utc::now();
        for (at, rows) in &buffer.committed_at {
            let seconds = (now - *at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.metrics.latency_n(&self.stream, seconds, *rows as u64);
        }
        *cursor = (*cursor).max(buffer.read_to);
        buffer.clear();
        *pause = Duration::from_secs(1);
        self.metrics.set_phase(&self.stream, Phase::Flowing, None);
        Ok(())
    }

    /// Polls with ordinary loads every `poll_seconds`, and merges hinted records by key in
    /// between.
    async fn poll(
        &self,
        runner: &StreamRunner<'_>,
        hints: &mut Option<mpsc::Receiver<Hint>>,
        pause: &mut Duration,
    ) -> Result<()> {
        let stream = &self.stream;
        let every = Duration::from_secs(self.thresholds.poll_seconds);
        let flush_age = Duration::from_millis(self.thresholds.flush_ms);
        let mut next_poll = Instant::now() + every;
        let mut hinted: BTreeMap<String, i64> = BTreeMap::new();
        let mut hinted_since: Option<Instant> = None;
        let mut stopping = self.stopping.clone();
        loop {
            let hints_due = hinted_since.map(|since| since + flush_age);
            let apply = tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => return Ok(()),
                _ = tokio::time::sleep_until(next_poll) => {
                    self.load(runner, LoadInput::Extract).await?;
                    self.metrics.set_phase(stream, Phase::Flowing, None);
                    *pause = Duration::from_secs(1);
                    next_poll = Instant::now() + every;
                    false
                }
                _ = sleep_until(hints_due), if hints_due.is_some() => true,
                hint = recv(hints), if hints.is_some() => match hint {
                    Some(hint) => {
                        let at = hinted.entry(hint.key).or_insert(hint.occurred_at_ms);
                        *at = (*at).min(hint.occurred_at_ms);
                        hinted_since.get_or_insert_with(Instant::now);
                        hinted.len() >= self.thresholds.flush_rows
                    }
                    None => {
                        *hints = None;
                        false
                    }
                },
            };
            if apply && !hinted.is_empty() {
                let keys = std::mem::take(&mut hinted);
                hinted_since = None;
                self.apply_hints(runner, keys).await?;
            }
        }
    }

    /// Fetches the hinted records by key and merges them as one repair load (the cursor does
    /// not move: the next poll still reads the same window).
    async fn apply_hints(
        &self,
        runner: &StreamRunner<'_>,
        hinted: BTreeMap<String, i64>,
    ) -> Result<()> {
        let stream = &self.stream;
        let keys: Vec<Key> = hinted
            .keys()
            .map(|key| match key.parse::<i64>() {
                Ok(number) => Key::Int(number),
                Err(_) => Key::Text(key.clone()),
            })
            .collect();
        info!(stream, keys = keys.len(), "fetching hinted records");
        // How long the hints waited before their batch read: the webhook's delivery plus
        // the `flush_ms` window that collected them (for "where the time goes").
        let fetch_started = Instant::now();
        let started_ms = chrono::Utc::now().timestamp_millis();
        let ages = hinted.values().map(|at| (started_ms - at).max(0));
        let hint_age_ms = ages.clone().sum::<i64>() / hinted.len().max(1) as i64;
        let oldest_hint_age_ms = ages.max().unwrap_or(0);
        let extraction = runner
            .source()
            .fetch_keys(stream, keys, self.config.pipeline.batch_rows)
            .await?;
        self.load(runner, LoadInput::Repair(extraction)).await?;
        let now = chrono::Utc::now().timestamp_millis();
        for at in hinted.values() {
            self.metrics
                .latency_n(stream, (now - at).max(0) as f64 / 1000.0, 1);
        }
        info!(
            stream,
            keys = hinted.len(),
            hint_age_ms,
            oldest_hint_age_ms,
            read_and_load_ms = fetch_started.elapsed().as_millis() as u64,
            "hinted records merged"
        );
        Ok(())
    }
}

async fn recv(hints: &mut Option<mpsc::Receiver<Hint>>) -> Option<Hint> {
    match hints {
        Some(hints) => hints.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether an error stops the stream for good rather than for a pause: the user must fix
/// something (configuration, SQL, an incompatible schema change).
fn stops_the_stream(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Config | ErrorKind::Sql | ErrorKind::SchemaDrift
    )
}
