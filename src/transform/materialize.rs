//! Running models: each selected model is evaluated by DataFusion over the streams' merged
//! state (the lake's tables, or the staging store's mirror), its tests run over the result,
//! and only a result that passes is materialized:
//!
//! - `table`: the result is staged as a load (Parquet, manifest, read back and compared),
//!   loaded into a build table beside the target through the ordinary merge (ledger row,
//!   count and checksum compared), and swapped in atomically (PostgreSQL: drop and rename in
//!   one transaction; the lake: one Delta overwrite commit). A failing test leaves the
//!   previous table as it was.
//! - `incremental`: the same load merged by key into the table (newest version wins), so
//!   rows are added and updated and none removed. After its first run, the streams it reads
//!   hold only the rows written by loads newer than the model's cursor (per stream, the
//!   newest `_syncline_load_id` it merged, saved in the stage after the load committed);
//!   `--full-refresh` recomputes everything and replaces the table.
//! - `view`: registered in the session only (lake destination only).
//!
//! Memory holds a batch, not a result: a model streams from DataFusion into the stage, and its
//! tests and the models that read it scan the staged files. A result nothing materializes (a
//! view, every model under `models test`) is staged the same way as a scratch copy, read within
//! the run and removed at its end, so each model is evaluated once. A test counts its failing
//! rows as they stream and keeps the first few as examples.
//!
//! A model that `--select` leaves out is read as its last run left it: its table in the
//! streams' merged state (the lake, or the mirror, where each model load is also applied). One
//! never built is an error that names it, unless the run builds what it lacks
//! ([`ModelsOptions::build_missing`], `run --models`). A view left out is evaluated as a view.
//!
//! Every materialized row carries the model's key (or `model_row`, numbered 1.. when the
//! model declares none), `_syncline_version` (the run's time) and the destination's own
//! bookkeeping columns. Models of one level run concurrently; a model whose dependency
//! failed is not run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use object_store::ObjectStoreExt;
use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, DestinationConfig, Materialized};
use crate::destinations::lake::LakeDestination;
use crate::destinations::{Destination, MergeOutcome, MergeRequest};
use crate::error::ErrorKind;
use crate::load::{CursorRange, DeleteMode, LoadMode};
use crate::reconcile::{Fingerprint, batch_fingerprint};
use crate::schema::{
    DELETED_AT_COLUMN, DELETED_COLUMN, LOAD_ID_COLUMN, VERSION_COLUMN, timestamp_type,
};
use crate::sql::quote_ident;
use crate::stage::{LoadWriter, Manifest, Stage, StagedFile, columns_of};
use crate::transform::graph::{ModelGraph, ModelNode, ModelTest};
use crate::transform::{TransformError, lake_session};
use crate::{Error, Result};

/// The key column added to a model that declares none.
pub const ROW_KEY: &str = "model_row";
/// Example rows shown per failing test.
const EXAMPLES: usize = 5;

/// What `models run` / `models test` do.
#[derive(Debug, Clone, Default)]
pub struct ModelsOptions {
    /// Models to run (with `--select`); every model when `None`.
    pub selected: Option<BTreeSet<String>>,
    /// Rebuild incremental models as tables.
    pub full_refresh: bool,
    /// Evaluate and test only; materialize nothing (`models test`).
    pub test_only: bool,
    /// Build a model a selected one reads that was never built, instead of failing
    /// (`run --models`, which selects by changed streams, not by name).
    pub build_missing: bool,
}

/// How one model ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Materialized (or, for `models test`, every test passed).
    Built,
    /// A test failed: nothing was materialized, the previous table stays.
    TestsFailed,
    Failed,
    /// A model it reads failed or failed its tests.
    NotRun,
}

/// One failing test: how many rows fail it and a few of them.
#[derive(Debug, Clone, Serialize)]
pub struct TestFailure {
    pub model: String,
    pub test: String,
    pub failing_rows: u64,
    /// The first failing rows as a table.
    pub examples: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelOutcome {
    pub name: String,
    pub materialized: Materialized,
    pub status: ModelStatus,
    pub rows: u64,
    pub load_id: Option<String>,
    pub failures: Vec<TestFailure>,
    pub error: Option<String>,
    /// Why an incremental model was rebuilt in full this run (`deletes in contacts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<String>,
    /// Why a model `--select` left out was built in this run (a model it selected reads it,
    /// and the merged state models read has no copy of the model's table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub built_because: Option<String>,
    #[serde(skip)]
    pub exit_code: i32,
}

/// What a models run did, model by model in dependency order, plus singular tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelsReport {
    pub models: Vec<ModelOutcome>,
    /// Failing singular tests (`models test`).
    pub singular: Vec<TestFailure>,
}

impl ModelsReport {
    /// 0 when everything passed; a failed model's exit code; 3 when only tests failed.
    pub fn exit_code(&self) -> i32 {
        if let Some(failed) = self.models.iter().find(|m| m.status == ModelStatus::Failed) {
            return failed.exit_code;
        }
        if !self.singular.is_empty()
            || self
                .models
                .iter()
                .any(|m| m.status == ModelStatus::TestsFailed)
        {
            return ErrorKind::Reconciliation.exit_code();
        }
        0
    }

    /// The report as people read it: one line per model, then a table per failing test.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for m in &self.models {
            let status = match m.status {
                ModelStatus::Built => "ok",
                ModelStatus::TestsFailed => "tests failed (previous table kept)",
                ModelStatus::Failed => "failed",
                ModelStatus::NotRun => "not run (a model it reads failed)",
            };
            out.push_str(&format!(
                "model {} ({}): {} rows, {status}\n",
                m.name,
                m.materialized.name(),
                m.rows
            ));
            if let Some(why) = &m.built_because {
                out.push_str(&format!("  built in this run: {why}\n"));
            }
            if let Some(error) = &m.error {
                out.push_str(&format!("  error: {error}\n"));
            }
        }
        let failures: Vec<&TestFailure> = self
            .models
            .iter()
            .flat_map(|m| m.failures.iter())
            .chain(self.singular.iter())
            .collect();
        if !failures.is_empty() {
            out.push_str("\nfailing tests\n");
            for f in failures {
                out.push_str(&format!(
                    "{} {}: {} failing rows\n{}\n",
                    f.model, f.test, f.failing_rows, f.examples
                ));
            }
        }
        out
    }
}

/// Runs (or with `test_only`, evaluates and tests) the selected models of `graph` in
/// dependency order. A model's own failure is in the report; an error here means nothing
/// could start (the session, the destination, a view on a destination that cannot hold one).
pub async fn run_graph(
    config: &Config,
    graph: &ModelGraph,
    options: &ModelsOptions,
) -> Result<ModelsReport> {
    let is_lake = matches!(config.destination, DestinationConfig::Lake(_));
    let chosen = |name: &str| options.selected.as_ref().is_none_or(|s| s.contains(name));
    if !is_lake && !options.test_only {
        if let Some(view) = graph
            .models
            .iter()
            .find(|m| m.materialized == Materialized::View && chosen(&m.name))
        {
            return Err(TransformError::ViewNeedsLake {
                file: view.file.clone(),
            }
            .into());
        }
    }
    let state = crate::transform::merged_state(config)?;
    let (selection, added) = selection(config, graph, options, &state).await?;
    let selected = |name: &str| selection.as_ref().is_none_or(|s| s.contains(name));
    let ctx = lake_session(config).await?;
    let target = if options.test_only {
        None
    } else {
        Some(Target::open(config).await?)
    };
    let scratch = Scratch {
        stage: Stage::open(&config.staging)?,
        files: std::sync::Mutex::new(Vec::new()),
    };
    let mut report = ModelsReport::default();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for level in &graph.levels {
        let runs = level.iter().map(|&i| {
            let model = &graph.models[i];
            let blocked = model.depends_on.iter().any(|d| failed.contains(d));
            let ctx = &ctx;
            let target = target.as_ref();
            let (state, scratch) = (&state, &scratch);
            let built_because = added.get(&model.name).cloned();
            async move {
                if !selected(&model.name) {
                    // Read by a selected model, perhaps: as its last run left it, or, a view
                    // (or a model never built, read by a singular test), evaluated as a view.
                    register_unselected(ctx, state, model)
                        .await
                        .err()
                        .map(|err| outcome(model, ModelStatus::Failed, 0).with_error(&err))
                } else if blocked {
                    Some(outcome(model, ModelStatus::NotRun, 0))
                } else {
                    let mut result = run_model(config, ctx, target, scratch, model, options).await;
                    result.built_because = built_because;
                    Some(result)
                }
            }
        });
        for result in futures::future::join_all(runs).await.into_iter().flatten() {
            if result.status != ModelStatus::Built {
                failed.insert(result.name.clone());
            }
            report.models.push(result);
        }
    }
    // Singular tests read the models as this run evaluated them (the scratch copies).
    let singular = if options.test_only {
        singular_tests(config, &ctx, graph).await
    } else {
        Ok(Vec::new())
    };
    scratch.discard().await;
    report.singular = singular?;
    Ok(report)
}

/// The models to run: `options.selected` (every model when `None`), plus, with
/// `build_missing`, the models they read that were never built. A model read by a selected one
/// and not selected itself is read from its table as its last run left it; one that has no
/// table is an error naming it and the selector that builds it.
///
/// Except where the table is in a PostgreSQL or Snowflake destination but not in the mirror
/// models read (the model was built by a version that kept no mirror of models, or the run that
/// built it stopped between the destination's commit and the mirror's): DataFusion never reads
/// back from the warehouse, so such a model is built in this run, which puts it in the mirror
/// too. The second map says why, by model, for the log and the report.
async fn selection(
    config: &Config,
    graph: &ModelGraph,
    options: &ModelsOptions,
    state: &LakeDestination,
) -> Result<(Option<BTreeSet<String>>, BTreeMap<String, String>)> {
    let mut added = BTreeMap::new();
    let Some(mut selected) = options.selected.clone() else {
        return Ok((None, added));
    };
    let mut destination: Option<Arc<dyn Destination>> = None;
    loop {
        let mut missing = Vec::new();
        for (upstream, reader) in read_unselected(graph, &selected) {
            let model = graph.get(&upstream).expect("a model of the graph");
            if model.materialized != Materialized::View
                && state.open_table(&upstream).await?.is_none()
            {
                missing.push((upstream, reader));
            }
        }
        if missing.is_empty() {
            return Ok((Some(selected), added));
        }
        if !options.build_missing {
            // The lake destination is its own merged state: nothing to look for elsewhere.
            let mirrored = !matches!(config.destination, DestinationConfig::Lake(_));
            for (upstream, reader) in missing.iter().filter(|_| mirrored) {
                let destination = match &destination {
                    Some(destination) => destination.clone(),
                    None => destination
                        .insert(crate::destinations::build(config).await?)
                        .clone(),
                };
                // A model load leaves its ledger row: the table was built.
                if destination.last_load(upstream).await?.is_some() {
                    let why = format!(
                        "{reader} reads it, and its table in the destination has no copy in \
                         the mirror models read (built by an earlier version, or the run that \
                         built it stopped before the mirror)"
                    );
                    warn!(model = %upstream, reader = %reader, "{why}: building it in this run");
                    added.insert(upstream.clone(), why);
                }
            }
            if let Some((upstream, model)) = missing
                .iter()
                .find(|(upstream, _)| !added.contains_key(upstream))
            {
                return Err(TransformError::UpstreamNotBuilt {
                    model: model.clone(),
                    upstream: upstream.clone(),
                }
                .into());
            }
        }
        selected.extend(missing.into_iter().map(|(upstream, _)| upstream));
    }
}

/// The models the `selected` ones read without selecting them, each with a selected model that
/// reads it: directly, or through views left out (a view is evaluated, so what it reads is
/// read too).
fn read_unselected(graph: &ModelGraph, selected: &BTreeSet<String>) -> Vec<(String, String)> {
    let mut read: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<(String, String)> = Vec::new();
    for model in graph.models.iter().filter(|m| selected.contains(&m.name)) {
        pending.extend(
            model
                .depends_on
                .iter()
                .map(|d| (d.clone(), model.name.clone())),
        );
    }
    while let Some((name, reader)) = pending.pop() {
        let Some(model) = graph.get(&name) else {
            continue; // a stream
        };
        if selected.contains(&name) || read.iter().any(|(seen, _)| *seen == name) {
            continue;
        }
        if model.materialized == Materialized::View {
            pending.extend(model.depends_on.iter().map(|d| (d.clone(), reader.clone())));
        }
        read.push((name, reader));
    }
    read.sort();
    read
}

/// Registers a model the run does not build under its name: its table as its last run left
/// it, the model's own columns only; a view, or a model without a table (which no selected
/// model reads, see [`selection`]), as a view of its SQL, evaluated only if read.
async fn register_unselected(
    ctx: &SessionContext,
    state: &LakeDestination,
    model: &ModelNode,
) -> Result<()> {
    if model.materialized == Materialized::View {
        return register_view(ctx, model).await;
    }
    let Some(table) = state.open_table(&model.name).await? else {
        return register_view(ctx, model).await;
    };
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|source| TransformError::Lake {
            stream: model.name.clone(),
            source,
        })?;
    let register = |source| TransformError::Register {
        stream: model.name.clone(),
        source,
    };
    let provider = table.table_provider().await.map_err(register)?;
    let bookkeeping = [
        VERSION_COLUMN,
        DELETED_COLUMN,
        LOAD_ID_COLUMN,
        DELETED_AT_COLUMN,
    ];
    let schema = provider.schema();
    let columns: Vec<&str> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|c| !bookkeeping.contains(c) && (model.key.is_some() || *c != ROW_KEY))
        .collect();
    let view = ctx
        .read_table(provider.clone())
        .and_then(|frame| frame.select_columns(&columns))
        .map_err(register)?
        .into_view();
    let _ = ctx.deregister_table(model.name.as_str());
    ctx.register_table(
        datafusion::common::TableReference::bare(model.name.as_str()),
        view,
    )
    .map_err(register)?;
    Ok(())
}

/// Runs the singular tests (`NAME.sql` in the tests folder, each returning failing rows) in
/// the session the run left: the models as it evaluated them, and the others as views.
async fn singular_tests(
    config: &Config,
    ctx: &SessionContext,
    graph: &ModelGraph,
) -> Result<Vec<TestFailure>> {
    let dir = config.models.clone().unwrap_or_default().tests;
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Ok(Vec::new());
    }
    for model in &graph.models {
        // A model that failed or did not run: its view, so a test reading it fails on it.
        if !ctx.table_exist(model.name.as_str()).unwrap_or(false) {
            register_view(ctx, model).await?;
        }
    }
    let mut failures = Vec::new();
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let sql = std::fs::read_to_string(&file).map_err(|source| TransformError::ModelFile {
            file: file.clone(),
            source,
        })?;
        let sql = sql.trim().trim_end_matches(';');
        if let Some(failure) = failure_of(ctx, "tests", &name, sql).await? {
            failures.push(failure);
        }
    }
    Ok(failures)
}

fn outcome(model: &ModelNode, status: ModelStatus, rows: u64) -> ModelOutcome {
    ModelOutcome {
        name: model.name.clone(),
        materialized: model.materialized,
        status,
        rows,
        load_id: None,
        failures: Vec::new(),
        error: None,
        rebuilt: None,
        built_because: None,
        exit_code: 0,
    }
}

impl ModelOutcome {
    fn with_error(mut self, err: &Error) -> ModelOutcome {
        self.status = ModelStatus::Failed;
        self.error = Some(err.report());
        self.exit_code = err.exit_code();
        self
    }
}

async fn register_view(ctx: &SessionContext, model: &ModelNode) -> Result<()> {
    let model_error = |source| TransformError::Model {
        model: model.name.clone(),
        source,
    };
    let frame = ctx.sql(&model.sql).await.map_err(model_error)?;
    let _ = ctx.deregister_table(model.name.as_str());
    ctx.register_table(
        datafusion::common::TableReference::bare(model.name.as_str()),
        frame.into_view(),
    )
    .map_err(model_error)?;
    Ok(())
}

/// Evaluates a query of one row (a `max`), whole.
async fn evaluate(ctx: &SessionContext, name: &str, sql: &str) -> Result<Vec<RecordBatch>> {
    let model_error = |source| TransformError::Model {
        model: name.to_string(),
        source,
    };
    let frame = ctx.sql(sql).await.map_err(model_error)?;
    Ok(frame.collect().await.map_err(model_error)?)
}

async fn run_model(
    config: &Config,
    ctx: &SessionContext,
    target: Option<&Target>,
    scratch: &Scratch,
    model: &ModelNode,
    options: &ModelsOptions,
) -> ModelOutcome {
    match try_run_model(config, ctx, target, scratch, model, options).await {
        Ok(outcome) => outcome,
        Err(err) => {
            warn!(model = %model.name, error = %err, "model failed");
            outcome(model, ModelStatus::Failed, 0).with_error(&err)
        }
    }
}

async fn try_run_model(
    config: &Config,
    ctx: &SessionContext,
    target: Option<&Target>,
    scratch: &Scratch,
    model: &ModelNode,
    options: &ModelsOptions,
) -> Result<ModelOutcome> {
    // An incremental model with a cursor reads only the rows of loads newer than it, unless
    // a stream it reads lost records since: then it is rebuilt in full (which rows of the
    // model a deleted record fed is not known, so only a full run can drop them).
    let mut rebuilt = None;
    let incremental = match target {
        Some(target) if model.materialized == Materialized::Incremental => {
            let mut cursor = if options.full_refresh {
                None
            } else {
                target.cursor(config, &model.name).await?
            };
            let mut reached = newest_loads(ctx, model).await?;
            let deletes = newest_deletes(config, ctx, model).await?;
            let mut deleted_since = Vec::new();
            for (stream, load_id) in deletes {
                let after = cursor.as_ref().and_then(|c| c.get(&stream));
                if cursor.is_some() && after.is_none_or(|after| &load_id > after) {
                    deleted_since.push(stream.clone());
                }
                // A load that only deleted writes no row: the cursor still moves past it.
                let newest = reached.entry(stream).or_default();
                if &load_id > newest {
                    *newest = load_id;
                }
            }
            if !deleted_since.is_empty() {
                let reason = format!("deletes in {}", deleted_since.join(", "));
                info!(model = %model.name, %reason, "incremental model rebuilt in full");
                rebuilt = Some(reason);
                cursor = None;
            }
            Some((cursor, reached))
        }
        _ => None,
    };
    let changed = match &incremental {
        Some((Some(cursor), reached)) => {
            Some(changed_rows_session(config, ctx, model, cursor, reached).await?)
        }
        _ => None,
    };
    let source = changed.as_ref().unwrap_or(ctx);
    let model_error = |source| TransformError::Model {
        model: model.name.clone(),
        source,
    };
    let frame = source.sql(&model.sql).await.map_err(model_error)?;
    let schema: SchemaRef = frame.schema().inner().clone();
    if let Some(key) = &model.key {
        if model.materialized != Materialized::View {
            let Ok(field) = schema.field_with_name(key) else {
                return Err(TransformError::NoKeyColumn {
                    file: model.file.clone(),
                    key: key.clone(),
                }
                .into());
            };
            check_key_type(model, field)?;
        }
    }
    let staging = match target {
        Some(target) if model.materialized != Materialized::View => Some(target),
        _ => None,
    };
    // The result streams from DataFusion into the stage, a batch at a time, and its tests and
    // dependents read the staged files. A result nothing materializes (`models test`, a view)
    // is a scratch copy, as DataFusion returned it, removed when the run ends.
    let batches = frame.execute_stream().await.map_err(model_error)?;
    let (rows, staged) = match staging {
        Some(target) => {
            let load_id = uuid::Uuid::now_v7().to_string();
            let staged =
                stage_stream(config, &target.stage, model, &load_id, &schema, batches).await?;
            register_staged(ctx, &target.stage, model, &staged, &schema).await?;
            (staged.rows, Some(staged))
        }
        None => (
            scratch.stage_result(config, ctx, model, batches).await?,
            None,
        ),
    };

    let tests = model.effective_tests();
    let mut failures = Vec::new();
    for test in &tests {
        let sql = test_sql(&model.name, test);
        if let Some(failure) = failure_of(ctx, &model.name, &test.to_string(), &sql).await? {
            failures.push(failure);
        }
    }
    if let (Some(staged), Some(key)) = (&staged, &model.key) {
        if staged.null_keys > 0 {
            let test = ModelTest::NotNull {
                column: key.clone(),
            }
            .to_string();
            failures.retain(|f| f.test != test);
            failures.push(TestFailure {
                model: model.name.clone(),
                test,
                failing_rows: staged.null_keys,
                examples: "(rows without a key are not staged, so none are shown)".to_string(),
            });
        }
    }
    let mut result = outcome(model, ModelStatus::Built, rows);
    if !failures.is_empty() {
        warn!(model = %model.name, failing = failures.len(), "model tests failed; nothing materialized");
        if let (Some(target), Some(staged)) = (staging, &staged) {
            // Never a manifest: the files are removed, and a load left half-removed is one
            // whose staging never completed.
            staged.discard(&target.stage).await;
        }
        result.status = ModelStatus::TestsFailed;
        result.failures = failures;
        return Ok(result);
    }
    let (Some(target), Some(staged)) = (staging, staged) else {
        return Ok(result);
    };
    let manifest = staged.manifest;
    target.stage.write_manifest(&manifest).await?;
    let load_id = manifest.load_id.clone();
    result.load_id = Some(load_id.clone());
    let replace =
        model.materialized == Materialized::Table || options.full_refresh || rebuilt.is_some();
    result.rebuilt = rebuilt;
    let outcome = target.load(config, model, &manifest, replace).await?;
    if !outcome.skipped && outcome.received != manifest.fingerprint() {
        return Err(TransformError::LoadDiffers {
            model: model.name.clone(),
            load_id,
        }
        .into());
    }
    // Saved only now: a run that failed before here reads the same loads again.
    if let Some((_, reached)) = incremental {
        target.save_cursor(config, &model.name, &reached).await?;
    }
    info!(model = %model.name, rows, materialized = model.materialized.name(), "model built");
    Ok(result)
}

/// An incremental model's cursor: per stream it reads, the newest load id it has merged.
/// Load ids are UUIDv7, so they sort by time, and one stream's loads commit in that order
/// (one run at a time holds its lease).
type ModelCursor = std::collections::BTreeMap<String, String>;

/// The newest load id in each stream the model reads (streams without rows are left out).
async fn newest_loads(ctx: &SessionContext, model: &ModelNode) -> Result<ModelCursor> {
    let mut reached = ModelCursor::new();
    for dep in &model.depends_on {
        let Ok(provider) = ctx.table_provider(dep.as_str()).await else {
            continue;
        };
        if provider.schema().field_with_name(LOAD_ID_COLUMN).is_err() {
            continue;
        }
        let sql = format!(
            "SELECT max({}) FROM {}",
            quote_ident(LOAD_ID_COLUMN),
            quote_ident(dep)
        );
        let batches = evaluate(ctx, &model.name, &sql).await?;
        if let Some(batch) = batches.first().filter(|b| b.num_rows() > 0) {
            let column = cast(batch.column(0), &DataType::Utf8)?;
            let values = column.as_string::<i32>();
            if values.is_valid(0) {
                reached.insert(dep.clone(), values.value(0).to_string());
            }
        }
    }
    Ok(reached)
}

/// Per stream the model reads, the newest load that deleted records of it: the newest
/// tombstone's load (hard deletes) or the newest soft-deleted row's load. Streams without
/// deletes are left out.
async fn newest_deletes(
    config: &Config,
    ctx: &SessionContext,
    model: &ModelNode,
) -> Result<ModelCursor> {
    let state = crate::transform::merged_state(config)?;
    let id = quote_ident(LOAD_ID_COLUMN);
    let mut newest = ModelCursor::new();
    for dep in &model.depends_on {
        if !config.source.streams().contains(dep) {
            continue;
        }
        let mut found: Vec<String> = Vec::new();
        if let Some(tombstones) = state.open_tombstones(dep).await? {
            let side = SessionContext::new();
            let register = |source| TransformError::Register {
                stream: dep.clone(),
                source,
            };
            let provider = tombstones.table_provider().await.map_err(register)?;
            side.register_table("tombstones", provider)
                .map_err(register)?;
            let sql = format!("SELECT max({id}) FROM tombstones");
            found.extend(first_text(&evaluate(&side, &model.name, &sql).await?)?);
        }
        if let Ok(provider) = ctx.table_provider(dep.as_str()).await {
            if provider.schema().field_with_name(DELETED_AT_COLUMN).is_ok() {
                let sql = format!(
                    "SELECT max({id}) FROM {} WHERE {} IS NOT NULL",
                    quote_ident(dep),
                    quote_ident(DELETED_AT_COLUMN)
                );
                found.extend(first_text(&evaluate(ctx, &model.name, &sql).await?)?);
            }
        }
        if let Some(max) = found.into_iter().max() {
            newest.insert(dep.clone(), max);
        }
    }
    Ok(newest)
}

/// The first value of a one-row, one-column result as text; `None` for no row or NULL.
fn first_text(batches: &[RecordBatch]) -> Result<Option<String>> {
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let column = cast(batch.column(0), &DataType::Utf8)?;
    let values = column.as_string::<i32>();
    Ok(values.is_valid(0).then(|| values.value(0).to_string()))
}

/// A session where each stream the model reads holds only the rows of loads after `cursor`
/// and up to `reached`; models it reads are as in `ctx`.
async fn changed_rows_session(
    config: &Config,
    ctx: &SessionContext,
    model: &ModelNode,
    cursor: &ModelCursor,
    reached: &ModelCursor,
) -> Result<SessionContext> {
    let changed = lake_session(config).await?;
    let model_error = |source| TransformError::Model {
        model: model.name.clone(),
        source,
    };
    for dep in &model.depends_on {
        let provider = ctx
            .table_provider(dep.as_str())
            .await
            .map_err(model_error)?;
        let _ = changed.deregister_table(dep.as_str());
        match reached.get(dep) {
            Some(newest) if config.source.streams().contains(dep) => {
                let all = format!("__all_{dep}");
                changed
                    .register_table(
                        datafusion::common::TableReference::bare(all.as_str()),
                        provider,
                    )
                    .map_err(model_error)?;
                let after = cursor.get(dep).cloned().unwrap_or_default();
                let id = quote_ident(LOAD_ID_COLUMN);
                let sql = format!(
                    "SELECT * FROM {} WHERE {id} > '{}' AND {id} <= '{}'",
                    quote_ident(&all),
                    after.replace('\'', "''"),
                    newest.replace('\'', "''")
                );
                let view = changed.sql(&sql).await.map_err(model_error)?.into_view();
                changed
                    .register_table(datafusion::common::TableReference::bare(dep.as_str()), view)
                    .map_err(model_error)?;
            }
            _ => {
                changed
                    .register_table(
                        datafusion::common::TableReference::bare(dep.as_str()),
                        provider,
                    )
                    .map_err(model_error)?;
            }
        }
    }
    Ok(changed)
}

/// The SELECT returning a test's failing rows (DataFusion SQL over the registered result).
fn test_sql(model: &str, test: &ModelTest) -> String {
    let m = quote_ident(model);
    match test {
        ModelTest::Unique { column } => {
            let c = quote_ident(column);
            format!(
                "SELECT {c}, count(*) AS occurrences FROM {m} WHERE {c} IS NOT NULL \
                 GROUP BY {c} HAVING count(*) > 1"
            )
        }
        ModelTest::NotNull { column } => {
            format!("SELECT * FROM {m} WHERE {} IS NULL", quote_ident(column))
        }
        ModelTest::AcceptedValues { column, values } => {
            let c = quote_ident(column);
            let list: Vec<String> = values
                .iter()
                .map(|v| format!("'{}'", v.replace('\'', "''")))
                .collect();
            format!(
                "SELECT * FROM {m} WHERE {c} IS NOT NULL AND CAST({c} AS VARCHAR) NOT IN ({})",
                list.join(", ")
            )
        }
        ModelTest::Relationships {
            column,
            to,
            to_column,
        } => {
            let c = quote_ident(column);
            let tc = quote_ident(to_column);
            format!(
                "SELECT * FROM {m} WHERE {c} IS NOT NULL AND {c} NOT IN \
                 (SELECT {tc} FROM {} WHERE {tc} IS NOT NULL)",
                quote_ident(to)
            )
        }
    }
}

/// Runs a test's SELECT of failing rows: counts them as they stream and keeps the first
/// [`EXAMPLES`] to show; `None` when no row fails.
async fn failure_of(
    ctx: &SessionContext,
    model: &str,
    test: &str,
    sql: &str,
) -> Result<Option<TestFailure>> {
    use futures::StreamExt;
    let model_error = |source| TransformError::Model {
        model: model.to_string(),
        source,
    };
    let frame = ctx.sql(sql).await.map_err(model_error)?;
    let mut failing = frame.execute_stream().await.map_err(model_error)?;
    let mut rows = 0u64;
    let mut examples: Vec<RecordBatch> = Vec::new();
    let mut left = EXAMPLES;
    while let Some(batch) = failing.next().await {
        let batch = batch.map_err(model_error)?;
        rows += batch.num_rows() as u64;
        if left > 0 && batch.num_rows() > 0 {
            let take = batch.num_rows().min(left);
            // A copy, so the example does not keep the whole batch's buffers alive.
            examples.push(arrow::compute::concat_batches(
                &batch.schema(),
                &[batch.slice(0, take)],
            )?);
            left -= take;
        }
    }
    if rows == 0 {
        return Ok(None);
    }
    Ok(Some(TestFailure {
        model: model.to_string(),
        test: test.to_string(),
        failing_rows: rows,
        examples: arrow::util::pretty::pretty_format_batches(&examples)?.to_string(),
    }))
}

/// A model's key must stage as an integer, text or a decimal (see
/// [`TransformError::KeyType`]): refused here, before anything is staged, rather than when
/// the load is fingerprinted.
fn check_key_type(model: &ModelNode, field: &Field) -> Result<()> {
    let staged = stageable(field.data_type()).unwrap_or_else(|| field.data_type().clone());
    if matches!(
        staged,
        DataType::Int64 | DataType::Utf8 | DataType::Decimal128(..)
    ) {
        return Ok(());
    }
    Err(TransformError::KeyType {
        file: model.file.clone(),
        model: model.name.clone(),
        key: field.name().clone(),
        data_type: field.data_type().clone(),
    }
    .into())
}

/// The stageable type of a model column (the stage holds int64, float64, utf8, boolean,
/// date32, UTC timestamps and decimals of at most 38 digits).
fn stageable(data_type: &DataType) -> Option<DataType> {
    use DataType::*;
    match data_type {
        Int64 | Float64 | Utf8 | Boolean | Date32 => None,
        Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32 | UInt64 => Some(Int64),
        // `SUM(amount)` or `CAST(x AS DECIMAL(12,2))` materializes as the same exact decimal
        // (Arrow's Decimal128 never has more than 38 digits).
        Decimal128(_, scale) if *scale >= 0 => None,
        // A negative scale (whole hundreds) becomes the same integer digits at scale 0.
        Decimal128(precision, scale) => Some(Decimal128(
            (i16::from(*precision) - i16::from(*scale)).min(38) as u8,
            0,
        )),
        // Beyond 38 digits no destination holds it exactly.
        Float16 | Float32 | Decimal256(..) => Some(Float64),
        Utf8View | LargeUtf8 => Some(Utf8),
        Date64 => Some(Date32),
        Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => None,
        Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => None,
        Timestamp(..) => Some(timestamp_type()),
        _ => None,
    }
}

/// The schema of a model's rows as a load: stageable types, the key (`model_row` when none),
/// the run's version and `_syncline_deleted`.
fn shaped_schema(schema: &SchemaRef, key: Option<&str>) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    if key.is_none() {
        fields.push(Field::new(ROW_KEY, DataType::Int64, false));
    }
    for field in schema.fields() {
        let ty = stageable(field.data_type()).unwrap_or_else(|| field.data_type().clone());
        let nullable = field.is_nullable() && Some(field.name().as_str()) != key;
        fields.push(Field::new(field.name(), ty, nullable));
    }
    fields.push(Field::new(VERSION_COLUMN, timestamp_type(), false));
    fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

/// One batch of a model's rows as a load's batch (see [`shaped_schema`]); `next_row` numbers
/// `model_row` across batches.
fn shape_batch(
    batch: &RecordBatch,
    shaped_schema: &SchemaRef,
    numbered: bool,
    version_ms: i64,
    next_row: &mut i64,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::new();
    if numbered {
        columns.push(Arc::new(Int64Array::from_iter_values(
            *next_row..*next_row + n as i64,
        )));
        *next_row += n as i64;
    }
    let model_fields = &shaped_schema.fields()[usize::from(numbered)..];
    for (column, to) in batch.columns().iter().zip(model_fields) {
        // The plan's type, made stageable; a batch whose physical type differs (a view
        // type) is cast to it as well.
        if column.data_type() == to.data_type() {
            columns.push(column.clone());
        } else {
            columns.push(cast(column, to.data_type())?);
        }
    }
    columns.push(Arc::new(
        TimestampMillisecondArray::from(vec![version_ms; n]).with_timezone("UTC"),
    ));
    columns.push(Arc::new(BooleanArray::from(vec![false; n])));
    Ok(RecordBatch::try_new(shaped_schema.clone(), columns)?)
}

/// [`shape_batch`] over a whole result (the unit tests').
#[cfg(test)]
fn shape(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    key: Option<&str>,
    version_ms: i64,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let shaped_schema = shaped_schema(schema, key);
    let mut next_row = 1;
    let out = batches
        .iter()
        .map(|b| shape_batch(b, &shaped_schema, key.is_none(), version_ms, &mut next_row))
        .collect::<Result<Vec<_>>>()?;
    Ok((shaped_schema, out))
}

/// A model's result staged as a load's files, confirmed by their footers; the manifest is
/// written only once the model's tests pass.
struct StagedResult {
    manifest: Manifest,
    /// The model's rows, those without a key included.
    rows: u64,
    /// Rows without a key: counted, not staged.
    null_keys: u64,
}

impl StagedResult {
    /// Removes the staged files of a result that is not loaded (a failing test). A file that
    /// cannot be removed is logged: without a manifest it is never taken for a load.
    async fn discard(&self, stage: &Stage) {
        for file in &self.manifest.files {
            let path = object_store::path::Path::from(file.path.as_str());
            if let Err(err) = stage.store().delete(&path).await {
                warn!(model = %self.manifest.stream, error = %err, "cannot remove a staged model file");
            }
        }
    }
}

/// Stages a model's result as it streams from DataFusion (one batch in memory at a time):
/// shaped (see [`shape`]), fingerprinted and written as Parquet, then confirmed by the footers.
async fn stage_stream(
    config: &Config,
    stage: &Stage,
    model: &ModelNode,
    load_id: &str,
    schema: &SchemaRef,
    mut batches: datafusion::physical_plan::SendableRecordBatchStream,
) -> Result<StagedResult> {
    use futures::StreamExt;
    let version_ms = chrono::Utc::now().timestamp_millis();
    let key = model.key.as_deref();
    let shaped_schema = shaped_schema(schema, key);
    let key_column = key.unwrap_or(ROW_KEY).to_string();
    let pipeline = &config.pipeline.name;
    let dir = stage.load_dir(pipeline, &model.name, load_id);
    let mut writer = LoadWriter::new(stage, dir, shaped_schema.clone(), config.pipeline.file_rows);
    let mut computed = Fingerprint::default();
    let mut next_row = 1i64;
    let mut null_keys = 0u64;
    while let Some(batch) = batches.next().await {
        let mut batch = batch.map_err(|source| TransformError::Model {
            model: model.name.clone(),
            source,
        })?;
        // A row without a key cannot be staged (the key is NOT NULL): it is counted as
        // failing the key's `not_null` test and left out, and the load is never merged.
        if let Some(key) = key {
            let column = batch.column(schema.index_of(key)?);
            if column.null_count() > 0 {
                null_keys += column.null_count() as u64;
                let keep = arrow::compute::is_not_null(column)?;
                batch = arrow::compute::filter_record_batch(&batch, &keep)?;
            }
        }
        let shaped = shape_batch(
            &batch,
            &shaped_schema,
            key.is_none(),
            version_ms,
            &mut next_row,
        )?;
        computed.merge(batch_fingerprint(&shaped, &key_column)?);
        writer.write(&shaped).await?;
    }
    let files = writer.finish().await?;
    let mut manifest = Manifest {
        format_version: 1,
        pipeline: pipeline.clone(),
        stream: model.name.clone(),
        load_id: load_id.to_string(),
        mode: LoadMode::Full,
        created_at: chrono::Utc::now(),
        key: key_column,
        schema: columns_of(&shaped_schema)?,
        cursor: CursorRange { from: None, to: 0 },
        keeps_cursor: true,
        source_state: None,
        rows: 0,
        checksum: 0,
        files,
        dead_letter: None,
        complete_as_of: None,
        // A model's result is what it merges; there is no raw load beside it.
        transform: None,
    };
    // The stage hop, as for a stream's load: the footers hold every row, and the checksum is
    // the one computed on the batches as they went to the encoder.
    let read_back = Fingerprint {
        rows: stage.footer_rows(&manifest.files).await?,
        checksum: computed.checksum,
    };
    if read_back != computed {
        return Err(TransformError::LoadDiffers {
            model: model.name.clone(),
            load_id: load_id.to_string(),
        }
        .into());
    }
    manifest.rows = read_back.rows;
    manifest.checksum = read_back.checksum;
    Ok(StagedResult {
        rows: read_back.rows + null_keys,
        null_keys,
        manifest,
    })
}

/// Registers a staged model result in `ctx` under the model's name, as the model's own
/// columns (the bookkeeping columns left out), for its tests and the models that read it.
async fn register_staged(
    ctx: &SessionContext,
    stage: &Stage,
    model: &ModelNode,
    staged: &StagedResult,
    schema: &SchemaRef,
) -> Result<()> {
    let shaped_schema = shaped_schema(schema, model.key.as_deref());
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    register_files(
        ctx,
        stage,
        &model.name,
        &staged.manifest.files,
        &shaped_schema,
        &columns,
    )
    .await
}

/// Registers staged Parquet `files` of `file_schema` in `ctx` under `name`, as their
/// `columns`.
async fn register_files(
    ctx: &SessionContext,
    stage: &Stage,
    name: &str,
    files: &[StagedFile],
    file_schema: &SchemaRef,
    columns: &[&str],
) -> Result<()> {
    let model_error = |source| TransformError::Model {
        model: name.to_string(),
        source,
    };
    let frame = if files.is_empty() {
        let empty = MemTable::try_new(file_schema.clone(), vec![vec![]]).map_err(model_error)?;
        ctx.read_table(Arc::new(empty)).map_err(model_error)?
    } else {
        let base = url::Url::parse("syncline-stage://stage/").expect("a valid URL");
        ctx.register_object_store(&base, stage.store().clone());
        let urls: Vec<String> = files
            .iter()
            .map(|f| format!("syncline-stage://stage/{}", f.path))
            .collect();
        ctx.read_parquet(
            urls,
            datafusion::prelude::ParquetReadOptions::default().schema(file_schema.as_ref()),
        )
        .await
        .map_err(model_error)?
    };
    let view = frame
        .select_columns(columns)
        .map_err(model_error)?
        .into_view();
    let _ = ctx.deregister_table(name);
    ctx.register_table(datafusion::common::TableReference::bare(name), view)
        .map_err(model_error)?;
    Ok(())
}

/// The results a run stages only to read them within the run (a view, every model under
/// `models test`): each model is evaluated once, its tests and readers scan the staged copy
/// rather than memory, and the copies are removed when the run ends.
struct Scratch {
    stage: Stage,
    files: std::sync::Mutex<Vec<StagedFile>>,
}

impl Scratch {
    /// Stages `model`'s result as it streams (one batch in memory at a time), as it is: its
    /// own types and every row. Registers it in `ctx` under the model's name; returns its
    /// rows.
    async fn stage_result(
        &self,
        config: &Config,
        ctx: &SessionContext,
        model: &ModelNode,
        mut batches: datafusion::physical_plan::SendableRecordBatchStream,
    ) -> Result<u64> {
        use futures::StreamExt;
        // The batches' own schema (the physical plan's), which the files are written in.
        let schema = batches.schema();
        let load_id = uuid::Uuid::now_v7().to_string();
        let dir = self
            .stage
            .load_dir(&config.pipeline.name, &model.name, &load_id);
        let mut writer =
            LoadWriter::new(&self.stage, dir, schema.clone(), config.pipeline.file_rows);
        let mut rows = 0u64;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|source| TransformError::Model {
                model: model.name.clone(),
                source,
            })?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).await?;
        }
        let files = writer.finish().await?;
        self.files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(files.iter().cloned());
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        register_files(ctx, &self.stage, &model.name, &files, &schema, &columns).await?;
        Ok(rows)
    }

    /// Removes every scratch copy. A file left behind (a crash, a failed removal) has no
    /// manifest, so it is never taken for a load.
    async fn discard(self) {
        let files = self
            .files
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for file in files {
            let path = object_store::path::Path::from(file.path.as_str());
            if let Err(err) = self.stage.store().delete(&path).await {
                warn!(error = %err, "cannot remove a scratch copy of a model's result");
            }
        }
    }
}

/// Where model tables go: the destination, and the stage their loads pass through.
struct Target {
    stage: Stage,
    destination: Arc<dyn Destination>,
    lake: Option<LakeDestination>,
}

impl Target {
    async fn open(config: &Config) -> Result<Target> {
        let stage = Stage::open(&config.staging)?;
        let destination = crate::destinations::build(config).await?;
        destination.check().await?;
        let lake = match &config.destination {
            DestinationConfig::Lake(lake) => Some(LakeDestination::from_config(config, lake)?),
            _ => None,
        };
        Ok(Target {
            stage,
            destination,
            lake,
        })
    }

    fn cursor_path(&self, config: &Config, model: &str) -> object_store::path::Path {
        self.stage
            .path(&[&config.pipeline.name, "_models", &format!("{model}.json")])
    }

    /// The incremental model's cursor; `None` before its first run.
    async fn cursor(&self, config: &Config, model: &str) -> Result<Option<ModelCursor>> {
        let path = self.cursor_path(config, model);
        match self.stage.store().get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                Ok(Some(serde_json::from_slice(&bytes)?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn save_cursor(&self, config: &Config, model: &str, reached: &ModelCursor) -> Result<()> {
        let path = self.cursor_path(config, model);
        self.stage
            .store()
            .put(&path, serde_json::to_vec_pretty(reached)?.into())
            .await?;
        Ok(())
    }

    /// Loads a staged model result: replacing the table, or merged by key into it; then, for
    /// a pipeline with a mirror, the same into the model's mirror table, so a run that reads
    /// the model without building it reads it as built.
    async fn load(
        &self,
        config: &Config,
        model: &ModelNode,
        manifest: &Manifest,
        replace: bool,
    ) -> Result<MergeOutcome> {
        let outcome = self.load_destination(model, manifest, replace).await?;
        crate::destinations::mirror::apply_model(config, &self.stage, manifest, replace).await?;
        Ok(outcome)
    }

    async fn load_destination(
        &self,
        model: &ModelNode,
        manifest: &Manifest,
        replace: bool,
    ) -> Result<MergeOutcome> {
        let request = |table: String| -> Result<MergeRequest> {
            Ok(MergeRequest {
                load_id: manifest.load_id.clone(),
                stream: model.name.clone(),
                table,
                key: manifest.key.clone(),
                deletes: DeleteMode::Hard,
                schema: manifest.arrow_schema()?,
                staged: manifest.fingerprint(),
                files: manifest.files.iter().map(|f| f.path.clone()).collect(),
                complete: None,
            })
        };
        match (&self.lake, replace) {
            (Some(lake), true) => {
                lake.replace_table(
                    &request(model.name.clone())?,
                    self.stage.read_load(manifest),
                )
                .await
            }
            (_, false) => {
                let request = request(model.name.clone())?;
                self.destination.ensure_table(&request).await?;
                self.destination
                    .merge(&request, self.stage.read_load(manifest))
                    .await
            }
            (None, true) => {
                // Built beside the target, then swapped in: readers never see it half-built.
                let build = format!("{}__build", model.name);
                let request = request(build.clone())?;
                self.destination.drop_table(&build).await?;
                self.destination.ensure_table(&request).await?;
                let outcome = self
                    .destination
                    .merge(&request, self.stage.read_load(manifest))
                    .await?;
                self.destination.swap_table(&build, &model.name).await?;
                Ok(outcome)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sql_quotes_every_name_and_value() {
        let sql = test_sql(
            "m",
            &ModelTest::AcceptedValues {
                column: "Stage".into(),
                values: vec!["it's".into()],
            },
        );
        assert_eq!(
            sql,
            "SELECT * FROM \"m\" WHERE \"Stage\" IS NOT NULL AND CAST(\"Stage\" AS VARCHAR) NOT IN ('it''s')"
        );
    }

    #[test]
    fn a_model_without_key_is_numbered() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::Int32Array::from(vec![7, 8]))],
        )
        .unwrap();
        let (shaped_schema, shaped) = shape(&[batch], &schema, None, 5).unwrap();
        let names: Vec<&str> = shaped_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, [ROW_KEY, "n", VERSION_COLUMN, DELETED_COLUMN]);
        assert_eq!(shaped[0].column(1).data_type(), &DataType::Int64);
        let fp = batch_fingerprint(&shaped[0], ROW_KEY).unwrap();
        assert_eq!(fp.rows, 2);
    }
}
