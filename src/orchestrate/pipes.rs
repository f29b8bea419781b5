//! Dagster Pipes, spoken by `syncline run` (protocol version 0.1, as the `dagster-pipes`
//! package defines it).
//!
//! Dagster starts the process with `DAGSTER_PIPES_CONTEXT` and `DAGSTER_PIPES_MESSAGES`, each
//! base64 of zlib-compressed JSON. The context is inline (`{"data": ...}`) or in a file
//! (`{"path": ...}`); messages go to a file (`{"path": ...}`, one JSON object a line) or to
//! stdout/stderr (`{"stdio": ...}`). The session sends `opened`, then for each stream as soon
//! as its load commits one `report_asset_materialization` (the figures of the load and the
//! table's live row count) and, only when Dagster declared it, one `report_asset_check` for
//! the hop-by-hop reconciliation, `log` lines, and `closed` (with the error when the run
//! failed).
//!
//! Dagster's context carries the selected asset keys but not the declared checks, so the
//! Dagster side passes these in the context's `extras`:
//! - `syncline_asset_keys`: `{stream: "escaped/asset/key"}` (default: the selected asset key
//!   whose last part is the stream's name, else the stream's name);
//! - `syncline_checks`: `[{"asset_key": ..., "check_name": "reconciliation"}]`, the checks
//!   declared on the assets; no check is reported that is not listed (Dagster fails a step
//!   that reports an undeclared check).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{Value, json};

use crate::config::Config;
use crate::config::Materialized;
use crate::destinations::Destination;
use crate::error::{Classified, ErrorKind};
use crate::load::DeleteMode;
use crate::pipeline::{RunOptions, run_observed};
use crate::reconcile::report::{RunReport, Status, StreamReport};
use crate::stage::Stage;
use crate::transform::materialize::{ModelOutcome, ModelStatus, ROW_KEY};
use crate::transform::{ModelGraph, ModelNode, ModelsReport};
use crate::{Error, Result};

use super::plan::{RECONCILIATION_CHECK, destination_table};

/// The protocol version this module speaks (`dagster_pipes.PIPES_PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: &str = "0.1";
pub const CONTEXT_VAR: &str = "DAGSTER_PIPES_CONTEXT";
pub const MESSAGES_VAR: &str = "DAGSTER_PIPES_MESSAGES";

#[derive(Debug, thiserror::Error)]
pub enum PipesError {
    #[error("{var} is set but not base64 of zlib-compressed JSON")]
    Param {
        var: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{CONTEXT_VAR} names neither \"path\" nor \"data\"")]
    ContextParams,
    #[error("cannot read the Dagster Pipes context from {}", path.display())]
    ContextFile {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{MESSAGES_VAR} names neither \"path\" nor \"stdio\": \"stdout\" or \"stderr\"")]
    MessagesParams,
    #[error("cannot write a Dagster Pipes message")]
    Write(#[source] std::io::Error),
}

impl Classified for PipesError {
    fn kind(&self) -> ErrorKind {
        match self {
            PipesError::Write(_) => ErrorKind::Transient,
            _ => ErrorKind::Config,
        }
    }
}

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    File(PathBuf),
    Stdout,
    Stderr,
}

/// An open Pipes session: a message channel and what the context says to report.
#[derive(Debug)]
pub struct Session {
    channel: Channel,
    /// The asset keys Dagster selected for this step; `None` outside an asset step.
    asset_keys: Option<Vec<String>>,
    stream_keys: BTreeMap<String, String>,
    checks: BTreeSet<(String, String)>,
    /// Serializes writes from the run and the reporter, and remembers what was materialized:
    /// the protocol allows one materialization per asset per session.
    materialized: Mutex<BTreeSet<String>>,
}

impl Session {
    /// The session Dagster asked for, when it did (`DAGSTER_PIPES_CONTEXT` is set); sends
    /// `opened`.
    pub fn from_env() -> std::result::Result<Option<Session>, PipesError> {
        let Ok(context) = std::env::var(CONTEXT_VAR) else {
            return Ok(None);
        };
        let messages = std::env::var(MESSAGES_VAR).unwrap_or_default();
        let session = Session::open(
            &decode_param(CONTEXT_VAR, &context)?,
            &decode_param(MESSAGES_VAR, &messages)?,
        )?;
        session.write(
            "opened",
            json!({"extras": {"syncline_version": env!("CARGO_PKG_VERSION")}}),
        )?;
        Ok(Some(session))
    }

    fn open(context: &Value, messages: &Value) -> std::result::Result<Session, PipesError> {
        let data = if let Some(path) = context.get("path").and_then(Value::as_str) {
            let read = std::fs::read(path)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).map_err(Into::into));
            read.map_err(|source| PipesError::ContextFile {
                path: path.into(),
                source,
            })?
        } else if let Some(data) = context.get("data") {
            data.clone()
        } else {
            return Err(PipesError::ContextParams);
        };
        let stdio = messages
            .get("stdio")
            .or_else(|| messages.get("buffered_stdio"))
            .and_then(Value::as_str);
        let channel = match (messages.get("path").and_then(Value::as_str), stdio) {
            (Some(path), _) => Channel::File(path.into()),
            (None, Some("stdout")) => Channel::Stdout,
            (None, Some("stderr")) => Channel::Stderr,
            _ => return Err(PipesError::MessagesParams),
        };
        let asset_keys = data
            .get("asset_keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            });
        let extras = data.get("extras").cloned().unwrap_or(Value::Null);
        let stream_keys = extras
            .get("syncline_asset_keys")
            .and_then(Value::as_object)
            .map(|keys| {
                keys.iter()
                    .filter_map(|(stream, key)| Some((stream.clone(), key.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let checks = extras
            .get("syncline_checks")
            .and_then(Value::as_array)
            .map(|checks| {
                checks
                    .iter()
                    .filter_map(|c| {
                        Some((
                            c.get("asset_key")?.as_str()?.to_string(),
                            c.get("check_name")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Session {
            channel,
            asset_keys,
            stream_keys,
            checks,
            materialized: Mutex::new(BTreeSet::new()),
        })
    }

    /// The asset key a stream reports under (see the module docs).
    fn asset_key(&self, stream: &str) -> String {
        if let Some(key) = self.stream_keys.get(stream) {
            return key.clone();
        }
        self.asset_keys
            .iter()
            .flatten()
            .find(|key| key.rsplit('/').next() == Some(stream))
            .cloned()
            .unwrap_or_else(|| stream.to_string())
    }

    fn write(&self, method: &str, params: Value) -> std::result::Result<(), PipesError> {
        let mut line = serde_json::to_string(&json!({
            "__dagster_pipes_version": PROTOCOL_VERSION,
            "method": method,
            "params": params,
        }))
        .expect("a JSON value serializes");
        line.push('\n');
        // The lock also keeps lines whole when the reporter and the run write at once.
        let _guard = self.materialized.lock().unwrap_or_else(|e| e.into_inner());
        let written = match &self.channel {
            Channel::File(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes())),
            Channel::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Channel::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
        };
        written.map_err(PipesError::Write)
    }

    /// Sends a `log` message (`level` as Python's logging names it: INFO, WARNING, ERROR).
    pub fn log(&self, level: &str, message: &str) {
        if let Err(err) = self.write("log", json!({"message": message, "level": level})) {
            tracing::warn!(error = %err, "could not send a log line to Dagster");
        }
    }

    /// Reports one stream that is done: its materialization when its load committed, and its
    /// reconciliation check when declared and the load got as far as being compared.
    pub fn stream_done(
        &self,
        report: &StreamReport,
        facts: &LoadFacts,
    ) -> std::result::Result<(), PipesError> {
        let asset_key = self.asset_key(&report.stream);
        let selected = self
            .asset_keys
            .as_ref()
            .is_none_or(|keys| keys.contains(&asset_key));
        if !selected {
            self.log(
                "WARNING",
                &format!(
                    "stream {} loaded, but its asset {asset_key} is not selected in this step; not reported",
                    report.stream
                ),
            );
            return Ok(());
        }
        let committed =
            matches!(report.status, Status::Success | Status::Stopped) && report.load_id.is_some();
        let compared = committed || report.status == Status::Mismatch;
        if committed {
            let first = self
                .materialized
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(asset_key.clone());
            if first {
                self.write(
                    "report_asset_materialization",
                    json!({
                        "asset_key": asset_key,
                        "data_version": report.load_id,
                        "metadata": materialization_metadata(report, facts),
                    }),
                )?;
            }
        }
        if compared
            && self
                .checks
                .contains(&(asset_key.clone(), RECONCILIATION_CHECK.to_string()))
        {
            let passed = report.status != Status::Mismatch && report.reconciliation.matched;
            self.write(
                "report_asset_check",
                json!({
                    "asset_key": asset_key,
                    "check_name": RECONCILIATION_CHECK,
                    "passed": passed,
                    "severity": "ERROR",
                    "metadata": check_metadata(report),
                }),
            )?;
        }
        let line = match report.status {
            Status::Success | Status::Stopped => format!(
                "{}: {} inserted, {} updated, {} deleted (load {})",
                report.stream,
                report.rows_inserted,
                report.rows_updated,
                report.rows_deleted,
                report.load_id.as_deref().unwrap_or("-")
            ),
            _ => format!(
                "{}: {}",
                report.stream,
                report.error.as_deref().unwrap_or("not loaded")
            ),
        };
        let level = match report.status {
            Status::Success => "INFO",
            Status::Stopped | Status::Skipped => "WARNING",
            Status::Failed | Status::Mismatch => "ERROR",
        };
        self.log(level, &line);
        if let Some(stopped) = &report.stopped {
            self.log("WARNING", &format!("{}: stopped: {stopped}", report.stream));
        }
        Ok(())
    }

    /// Whether `asset_key` may be reported in this step (Dagster fails a step that reports an
    /// asset it did not select).
    fn selected(&self, asset_key: &str) -> bool {
        self.asset_keys
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k == asset_key))
    }

    /// Reports one model of a `models run`: its materialization when it was built (not by
    /// `models test`), and each of its tests that Dagster declared as a check, when the tests
    /// ran (a model that failed before them, or was not run, reports no check).
    pub fn model_done(
        &self,
        model: &ModelNode,
        outcome: &ModelOutcome,
        facts: &ModelFacts,
    ) -> std::result::Result<(), PipesError> {
        let asset_key = self.asset_key(&model.name);
        if !self.selected(&asset_key) {
            self.log(
                "WARNING",
                &format!(
                    "model {} ran, but its asset {asset_key} is not selected in this step; not reported",
                    model.name
                ),
            );
            return Ok(());
        }
        if outcome.status == ModelStatus::Built && facts.materialized {
            let first = self
                .materialized
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(asset_key.clone());
            if first {
                self.write(
                    "report_asset_materialization",
                    json!({
                        "asset_key": asset_key,
                        "data_version": outcome.load_id,
                        "metadata": model_metadata(model, outcome, facts),
                    }),
                )?;
            }
        }
        if matches!(
            outcome.status,
            ModelStatus::Built | ModelStatus::TestsFailed
        ) {
            for check in model.checks() {
                if !self
                    .checks
                    .contains(&(asset_key.clone(), check.name.clone()))
                {
                    continue;
                }
                let failure = outcome
                    .failures
                    .iter()
                    .find(|f| f.test == check.description);
                let mut metadata = serde_json::Map::new();
                metadata.insert("test".into(), typed("text", json!(check.description)));
                metadata.insert(
                    "failing_rows".into(),
                    typed("int", json!(failure.map_or(0, |f| f.failing_rows))),
                );
                // No example rows: they are row values, kept to `models test`'s terminal.
                self.write(
                    "report_asset_check",
                    json!({
                        "asset_key": asset_key,
                        "check_name": check.name,
                        "passed": failure.is_none(),
                        "severity": check.severity,
                        "metadata": Value::Object(metadata),
                    }),
                )?;
            }
        }
        let line = match outcome.status {
            ModelStatus::Built => format!("model {}: {} rows", model.name, outcome.rows),
            ModelStatus::TestsFailed => format!(
                "model {}: {} tests failed; the previous table stays",
                model.name,
                outcome.failures.len()
            ),
            ModelStatus::Failed => format!(
                "model {}: {}",
                model.name,
                outcome.error.as_deref().unwrap_or("failed")
            ),
            ModelStatus::NotRun => {
                format!("model {}: not run (a model it reads failed)", model.name)
            }
        };
        let level = match outcome.status {
            ModelStatus::Built => "INFO",
            ModelStatus::NotRun => "WARNING",
            ModelStatus::TestsFailed | ModelStatus::Failed => "ERROR",
        };
        self.log(level, &line);
        Ok(())
    }

    /// Sends `closed`, with the failure as Pipes' exception when the run failed.
    pub fn close(&self, failure: Option<(&str, String)>) {
        let params = match failure {
            None => json!({}),
            Some((name, message)) => json!({"exception": {
                "message": message,
                "stack": [],
                "name": name,
                "cause": null,
                "context": null,
            }}),
        };
        if let Err(err) = self.write("closed", params) {
            tracing::warn!(error = %err, "could not close the Dagster Pipes session");
        }
    }
}

/// The session `ForwardLogs` sends to, once one is open.
static FORWARD_TO: std::sync::OnceLock<Arc<Session>> = std::sync::OnceLock::new();

impl Session {
    /// From now on, every log event that passes the process's filter (warnings and errors by
    /// default, more with `-v`) also reaches Dagster as a `log` message.
    pub fn forward_logs(self: &Arc<Self>) {
        let _ = FORWARD_TO.set(self.clone());
    }
}

/// A `tracing` layer that forwards events to the Pipes session set by
/// [`Session::forward_logs`]; without one it does nothing.
pub struct ForwardLogs;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ForwardLogs {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(session) = FORWARD_TO.get() else {
            return;
        };
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            _ => "DEBUG",
        };
        let mut line = LogLine::default();
        event.record(&mut line);
        // Errors writing are dropped here: reporting them would log, which comes back here.
        let _ = session.write("log", json!({"message": line.text, "level": level}));
    }
}

/// An event as one line: the message, then `field=value` for the others.
#[derive(Default)]
struct LogLine {
    text: String,
}

impl tracing::field::Visit for LogLine {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.text.insert_str(0, &format!("{value:?}"));
        } else {
            self.text.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.text.insert_str(0, value);
        } else {
            self.text.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

/// What the reporter learns after a stream's load, beside the run report.
#[derive(Debug, Clone, Default)]
pub struct LoadFacts {
    /// How far the saved cursor is behind now, when the cursor is a time.
    pub lag_seconds: Option<i64>,
    /// The source's own lag (a replication slot's retained WAL), as `status` shows it.
    pub source_lag: Option<String>,
    pub destination_table: String,
    /// The table's live rows after the load, counted by the destination.
    pub table_rows: Option<u64>,
    /// `(name, type)` of the staged columns.
    pub columns: Vec<(String, String)>,
}

/// What the reporter learns after a models run, beside the report.
#[derive(Debug, Clone, Default)]
pub struct ModelFacts {
    /// Whether the run materialized models (`models run`, not `models test`).
    pub materialized: bool,
    pub destination_table: String,
    /// The model table's rows, counted by the destination.
    pub table_rows: Option<u64>,
}

fn model_metadata(model: &ModelNode, outcome: &ModelOutcome, facts: &ModelFacts) -> Value {
    let mut m = serde_json::Map::new();
    let rows = facts.table_rows.unwrap_or(outcome.rows);
    m.insert("dagster/row_count".into(), typed("int", json!(rows)));
    m.insert(
        "dagster/table_name".into(),
        typed("text", json!(facts.destination_table)),
    );
    m.insert("rows_computed".into(), typed("int", json!(outcome.rows)));
    m.insert(
        "materialized".into(),
        typed("text", json!(model.materialized.name())),
    );
    m.insert("load_id".into(), typed("text", json!(outcome.load_id)));
    m.insert(
        "file".into(),
        typed("path", json!(model.file.display().to_string())),
    );
    Value::Object(m)
}

/// Reports a finished models run to the session, model by model in dependency order; each
/// model table's rows are counted in the destination (a count that cannot be read is left
/// out and logged: the tables are committed either way).
pub async fn report_models(
    config: &Config,
    graph: &ModelGraph,
    report: &ModelsReport,
    test_only: bool,
    session: &Session,
) -> Result<()> {
    let destination = if test_only {
        None
    } else {
        match crate::destinations::build(config).await {
            Ok(destination) => Some(destination),
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the destination to count model rows");
                None
            }
        }
    };
    for outcome in &report.models {
        let Some(model) = graph.get(&outcome.name) else {
            continue;
        };
        let mut facts = ModelFacts {
            materialized: !test_only,
            destination_table: destination_table(config, &model.name),
            table_rows: None,
        };
        if let (Some(destination), ModelStatus::Built, true) = (
            &destination,
            outcome.status,
            model.materialized != Materialized::View,
        ) {
            let key = model.key.as_deref().unwrap_or(ROW_KEY);
            match destination
                .table_fingerprint(&model.name, key, DeleteMode::Hard)
                .await
            {
                Ok(fingerprint) => facts.table_rows = fingerprint.map(|f| f.rows),
                Err(err) => {
                    tracing::warn!(model = %model.name, error = %err, "cannot count the model table's rows")
                }
            }
        }
        session.model_done(model, outcome, &facts)?;
    }
    Ok(())
}

/// The failure `closed` carries for a finished models run: none when it exits 0.
pub fn models_failure(report: &ModelsReport) -> Option<(String, String)> {
    let code = report.exit_code();
    if code == 0 {
        return None;
    }
    let failed: Vec<String> = report
        .models
        .iter()
        .filter_map(|m| match m.status {
            ModelStatus::Failed => Some(format!(
                "{}: {}",
                m.name,
                m.error.as_deref().unwrap_or("failed")
            )),
            ModelStatus::TestsFailed => Some(format!("{}: tests failed", m.name)),
            _ => None,
        })
        .chain(
            report
                .singular
                .iter()
                .map(|f| format!("singular test {} failed", f.test)),
        )
        .collect();
    let name = if code == ErrorKind::Reconciliation.exit_code() {
        "syncline.TestsFailed".to_string()
    } else {
        "syncline.ModelFailed".to_string()
    };
    Some((name, format!("exit {code}: {}", failed.join("; "))))
}

/// A value in Dagster's metadata shape.
fn typed(kind: &str, raw: Value) -> Value {
    json!({"type": kind, "raw_value": raw})
}

fn materialization_metadata(report: &StreamReport, facts: &LoadFacts) -> Value {
    let mut m = serde_json::Map::new();
    let rows = facts.table_rows.unwrap_or(report.rows_staged);
    m.insert("dagster/row_count".into(), typed("int", json!(rows)));
    m.insert(
        "dagster/table_name".into(),
        typed("text", json!(facts.destination_table)),
    );
    for (name, value) in [
        ("rows_extracted", report.rows_extracted),
        ("rows_inserted", report.rows_inserted),
        ("rows_updated", report.rows_updated),
        ("rows_deleted", report.rows_deleted),
        ("rows_dead_lettered", report.rows_dead_lettered),
        ("duration_ms", report.duration_ms),
    ] {
        m.insert(name.into(), typed("int", json!(value)));
    }
    m.insert("load_id".into(), typed("text", json!(report.load_id)));
    let mode = report
        .mode
        .map(|mode| serde_json::to_value(mode).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    m.insert("mode".into(), typed("text", mode));
    m.insert(
        "status".into(),
        typed(
            "text",
            serde_json::to_value(report.status).unwrap_or(Value::Null),
        ),
    );
    let checksum = report
        .reconciliation
        .destination
        .unwrap_or(report.reconciliation.stage)
        .checksum;
    // Text: a u64 checksum does not fit Dagster's int (a signed 64-bit integer).
    m.insert(
        "checksum".into(),
        typed("text", json!(format!("{checksum:016x}"))),
    );
    if let Some(from) = &report.cursor_from {
        m.insert("cursor_from".into(), typed("text", json!(from)));
    }
    if let Some(to) = &report.cursor_to {
        m.insert("cursor_to".into(), typed("text", json!(to)));
    }
    if let Some(usage) = &report.api_usage {
        m.insert("api_usage".into(), typed("text", json!(usage)));
    }
    if let Some(stopped) = &report.stopped {
        m.insert("stopped".into(), typed("text", json!(stopped)));
    }
    if let Some(lag) = facts.lag_seconds {
        m.insert("lag_seconds".into(), typed("int", json!(lag)));
    }
    if let Some(lag) = &facts.source_lag {
        m.insert("source_lag".into(), typed("text", json!(lag)));
    }
    if !facts.columns.is_empty() {
        let columns: Vec<Value> = facts
            .columns
            .iter()
            .map(|(name, kind)| json!({"name": name, "type": kind}))
            .collect();
        m.insert(
            "dagster/column_schema".into(),
            typed("table_schema", json!({"columns": columns})),
        );
    }
    Value::Object(m)
}

fn check_metadata(report: &StreamReport) -> Value {
    let r = &report.reconciliation;
    let mut m = serde_json::Map::new();
    m.insert("source_rows".into(), typed("int", json!(r.source.rows)));
    m.insert("stage_rows".into(), typed("int", json!(r.stage.rows)));
    m.insert(
        "source_checksum".into(),
        typed("text", json!(format!("{:016x}", r.source.checksum))),
    );
    m.insert(
        "stage_checksum".into(),
        typed("text", json!(format!("{:016x}", r.stage.checksum))),
    );
    if let Some(d) = r.destination {
        m.insert("destination_rows".into(), typed("int", json!(d.rows)));
        m.insert(
            "destination_checksum".into(),
            typed("text", json!(format!("{:016x}", d.checksum))),
        );
    }
    if let Some(error) = &report.error {
        m.insert("error".into(), typed("text", json!(error)));
    }
    Value::Object(m)
}

/// `base64 → zlib → JSON`, as `dagster_pipes.decode_param`.
pub fn decode_param(var: &'static str, value: &str) -> std::result::Result<Value, PipesError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| PipesError::Param { var, source };
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| err(e.into()))?;
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::ZlibDecoder::new(&compressed[..]),
        &mut json,
    )
    .map_err(|e| err(e.into()))?;
    serde_json::from_slice(&json).map_err(|e| err(e.into()))
}

/// `JSON → zlib → base64`, as `dagster_pipes.encode_param`.
pub fn encode_param(value: &Value) -> String {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(value.to_string().as_bytes())
        .expect("writing to memory");
    let compressed = encoder.finish().expect("writing to memory");
    base64::engine::general_purpose::STANDARD.encode(compressed)
}

/// Runs the pipeline, reporting each stream to the session as soon as it is done. The
/// destination's live row count and the staged columns are read beside the run, so the
/// next stream does not wait for them.
pub async fn run(
    config: &Config,
    options: &RunOptions,
    session: Arc<Session>,
) -> Result<RunReport> {
    let stage = Stage::open(&config.staging)?;
    let destination = crate::destinations::build(config).await?;
    // Built for its view of the cursor and its lag only; the run builds its own.
    let source = crate::sources::build(config)?;
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<StreamReport>();
    let reporter = {
        let session = session.clone();
        let config = config.clone();
        tokio::spawn(async move {
            while let Some(report) = receiver.recv().await {
                let mut facts = load_facts(&config, &stage, destination.as_ref(), &report).await;
                lag_facts(source.as_ref(), &report, &mut facts).await;
                if let Err(err) = session.stream_done(&report, &facts) {
                    tracing::warn!(stream = %report.stream, error = %err, "could not report to Dagster");
                }
            }
        })
    };
    let run = run_observed(config, options, &mut |report: &StreamReport| {
        let _ = sender.send(report.clone());
    })
    .await;
    drop(sender);
    if let Err(err) = reporter.await {
        tracing::warn!(error = %err, "the Dagster reporter stopped");
    }
    run
}

/// The source's lag after the load, as `syncline status` reports it.
async fn lag_facts(
    source: &dyn crate::sources::Source,
    report: &StreamReport,
    facts: &mut LoadFacts,
) {
    match source.lag(&report.stream).await {
        Ok(lag) => facts.source_lag = lag,
        Err(err) => {
            tracing::warn!(stream = %report.stream, error = %err, "cannot read the source's lag")
        }
    }
    // After `lag`: a source may learn there whether the cursor is a time.
    if source.cursor_is_time(&report.stream) {
        let now = chrono::Utc::now().timestamp_millis();
        facts.lag_seconds = report.cursor.map(|c| (now - c.to) / 1000);
    }
}

/// The table's live rows and the load's columns. A fact that cannot be read is left out
/// (and logged): the load itself is committed either way.
async fn load_facts(
    config: &Config,
    stage: &Stage,
    destination: &dyn Destination,
    report: &StreamReport,
) -> LoadFacts {
    let mut facts = LoadFacts {
        destination_table: destination_table(config, &report.stream),
        ..Default::default()
    };
    let Some(load_id) = &report.load_id else {
        return facts;
    };
    let manifest = match stage
        .read_manifest(&config.pipeline.name, &report.stream, load_id)
        .await
    {
        Ok(manifest) => manifest,
        Err(err) => {
            tracing::warn!(stream = %report.stream, error = %err, "cannot read the load's manifest");
            None
        }
    };
    let key = match &manifest {
        Some(m) => {
            facts.columns = m
                .schema
                .iter()
                .map(|c| (c.name.clone(), c.kind.clone()))
                .collect();
            Some(m.key.clone())
        }
        // No manifest (a load with no changes writes none): the key the config implies.
        None => super::plan::key(&config.source, &report.stream).and_then(|k| k.into_iter().next()),
    };
    if let Some(key) = key {
        let deletes = config.stream_settings(&report.stream).deletes;
        match destination
            .table_fingerprint(&report.stream, &key, deletes)
            .await
        {
            Ok(fingerprint) => facts.table_rows = fingerprint.map(|f| f.rows),
            Err(err) => {
                tracing::warn!(stream = %report.stream, error = %err, "cannot count the table's rows")
            }
        }
    }
    facts
}

/// The name Pipes shows for a failed run's exception.
pub fn failure_name(kind: ErrorKind) -> String {
    format!("syncline.{kind:?}")
}

/// The failure `closed` carries for a finished run: none when it succeeded or stopped
/// cleanly on a quota (the orchestrator retries that later, it is not an error).
pub fn run_failure(report: &RunReport) -> Option<(String, String)> {
    if matches!(report.status, Status::Success | Status::Stopped) {
        return None;
    }
    let failed: Vec<String> = report
        .streams
        .iter()
        .filter(|s| matches!(s.status, Status::Failed | Status::Mismatch))
        .map(|s| format!("{}: {}", s.stream, s.error.as_deref().unwrap_or("failed")))
        .collect();
    let name = if report.status == Status::Mismatch {
        failure_name(ErrorKind::Reconciliation)
    } else if report.exit_code == ErrorKind::Config.exit_code() {
        failure_name(ErrorKind::Config)
    } else {
        "syncline.StreamFailed".to_string()
    };
    Some((
        name,
        format!("exit {}: {}", report.exit_code, failed.join("; ")),
    ))
}

/// The failure `closed` carries when the run did not finish.
pub fn error_failure(err: &Error) -> (String, String) {
    (failure_name(err.kind()), err.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_as_dagster_pipes_encodes_them() {
        let value = json!({"path": "/tmp/x", "n": [1, 2]});
        assert_eq!(
            decode_param(CONTEXT_VAR, &encode_param(&value)).unwrap(),
            value
        );
        assert!(decode_param(CONTEXT_VAR, "not base64!").is_err());
    }

    fn report(status: Status, exit_code: i32) -> RunReport {
        let mut stream = StreamReport::new("contacts");
        stream.status = status;
        stream.error = Some("why".into());
        RunReport {
            pipeline: "crm".into(),
            status,
            started_at: chrono::Utc::now(),
            finished_at: chrono::Utc::now(),
            duration_ms: 0,
            exit_code,
            streams: vec![stream],
        }
    }

    #[test]
    fn a_quota_stop_closes_cleanly_and_a_failure_names_its_kind() {
        assert_eq!(run_failure(&report(Status::Success, 0)), None);
        assert_eq!(run_failure(&report(Status::Stopped, 4)), None);
        let (name, message) = run_failure(&report(Status::Mismatch, 3)).unwrap();
        assert_eq!(name, "syncline.Reconciliation");
        assert_eq!(message, "exit 3: contacts: why");
        assert_eq!(
            run_failure(&report(Status::Failed, 2)).unwrap().0,
            "syncline.Config"
        );
        assert_eq!(
            run_failure(&report(Status::Failed, 1)).unwrap().0,
            "syncline.StreamFailed"
        );
    }

    #[test]
    fn a_stream_reports_under_its_selected_asset_key() {
        let session = Session::open(
            &json!({"data": {"asset_keys": ["crm/contacts", "crm/deals"], "extras": {
                "syncline_asset_keys": {"deals": "warehouse/deals"}
            }}}),
            &json!({"stdio": "stderr"}),
        )
        .unwrap();
        assert_eq!(session.asset_key("contacts"), "crm/contacts");
        assert_eq!(session.asset_key("deals"), "warehouse/deals");
        assert_eq!(session.asset_key("companies"), "companies");
        assert!(Session::open(&json!({}), &json!({"stdio": "stderr"})).is_err());
        assert!(Session::open(&json!({"data": {}}), &json!({"stdio": "nowhere"})).is_err());
    }
}
