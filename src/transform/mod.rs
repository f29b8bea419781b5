//! SQL over synced data with DataFusion: the streams' merged state (the lake's Delta tables, or
//! the staging store's mirror) registered by stream name, and SQL models run over them.
//!
//! A model is a file `models/**/NAME.sql` holding one SELECT over streams and other models;
//! [`graph`] orders them by what they read, [`materialize`] runs them.

use std::path::Path;

use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;

use crate::Result;
use crate::config::{Config, DestinationConfig};
use crate::destinations::lake::LakeDestination;
use crate::error::{Classified, ErrorKind};

pub mod config;
pub mod graph;
pub mod materialize;

pub use graph::{ModelGraph, ModelNode, ModelTest, model_graph};
pub use materialize::{ModelsOptions, ModelsReport};

/// `syncline models run` (or with `test_only`, `models test`): the graph of `dir` (default
/// `[models] dir`), the `--select`ed models, and for `models test` the singular tests too.
pub async fn models_command(
    config: &Config,
    dir: Option<&Path>,
    select: Option<&str>,
    full_refresh: bool,
    test_only: bool,
) -> Result<ModelsReport> {
    let graph = model_graph(config, dir)?;
    // Several selectors, comma-separated, select the union (one orchestrator step may run
    // any subset of the models).
    let selected = match select {
        Some(selectors) => {
            let mut chosen = std::collections::BTreeSet::new();
            for selector in selectors
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                chosen.extend(graph.select(selector)?);
            }
            Some(chosen)
        }
        None => None,
    };
    let options = ModelsOptions {
        selected,
        full_refresh,
        test_only,
        build_missing: false,
    };
    materialize::run_graph(config, &graph, &options).await
}

/// `syncline run --models`: builds the models that read (directly or through other models)
/// a stream whose load changed rows, and any model they read that was never built. Nothing
/// when the pipeline has no `[models]`.
pub async fn changed_models(config: &Config, changed: &[String]) -> Result<ModelsReport> {
    if config.models.is_none() {
        return Ok(ModelsReport::default());
    }
    let graph = model_graph(config, None)?;
    let options = ModelsOptions {
        selected: Some(graph.downstream_of(changed)),
        build_missing: true,
        ..ModelsOptions::default()
    };
    materialize::run_graph(config, &graph, &options).await
}

/// The example models shipped in `models/`, by folder (`hubspot`, `salesforce`, and their
/// singular tests under `tests/`), compiled in so `syncline demo` runs anywhere.
pub fn example_models() -> Vec<(&'static str, &'static str, &'static str)> {
    macro_rules! model {
        ($folder:literal, $name:literal) => {
            (
                $folder,
                $name,
                include_str!(concat!("../../models/", $folder, "/", $name, ".sql")),
            )
        };
    }
    vec![
        model!("hubspot", "contacts_by_lifecycle"),
        model!("hubspot", "deal_pipeline"),
        model!("hubspot", "duplicate_contacts"),
        model!("salesforce", "contacts_with_company"),
        model!("salesforce", "opportunities_by_stage"),
        model!("salesforce", "opportunities_won_by_account"),
        model!("tests/salesforce", "won_means_closed_won"),
    ]
}

/// Writes the example models under `dir` (`dir/hubspot/*.sql`, `dir/salesforce/*.sql`,
/// `dir/tests/salesforce/*.sql`).
pub fn write_example_models(dir: &Path) -> std::io::Result<()> {
    for (folder, name, sql) in example_models() {
        let folder = dir.join(folder);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join(format!("{name}.sql")), sql)?;
    }
    Ok(())
}

/// What can go wrong running SQL over the lake.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("cannot read the models folder {}", dir.display())]
    ModelsFolder {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`syncline query` and models read the lake destination or the staging mirror; this pipeline's destination.type is not \"lake\" and it has no [models] table with mirror = true (query PostgreSQL with psql)"
    )]
    NotALake,
    #[error("lake: register the store of {stream}")]
    Lake {
        stream: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    #[error("lake: open {stream} for queries")]
    Register {
        stream: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// The user's SQL; DataFusion's message (the cause) points at the problem.
    #[error("the query failed")]
    Query(#[source] datafusion::error::DataFusionError),
    #[error("model {model}")]
    Model {
        model: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("cannot read the model {}", file.display())]
    ModelFile {
        file: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the SQL does not parse", file.display())]
    ModelSql {
        file: std::path::PathBuf,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("{}: a model is one SELECT; this file holds {statements} statements", file.display())]
    NotOneSelect {
        file: std::path::PathBuf,
        statements: usize,
    },
    #[error("{}: {message}", file.display())]
    Header {
        file: std::path::PathBuf,
        message: String,
    },
    #[error("[models.{name}] tests: {message}")]
    ConfiguredTest { name: String, message: String },
    #[error("two models are named {name}: {} and {}", first.display(), second.display())]
    DuplicateModel {
        name: String,
        first: std::path::PathBuf,
        second: std::path::PathBuf,
    },
    #[error("[models.{name}] names no model in {}", dir.display())]
    UnknownModelSettings {
        name: String,
        dir: std::path::PathBuf,
    },
    #[error("{}: `{name}` is neither a stream of this pipeline nor a model", file.display())]
    UnknownName {
        file: std::path::PathBuf,
        name: String,
    },
    #[error("{}: model {name} reads itself through a cycle: {path}", file.display())]
    Cycle {
        file: std::path::PathBuf,
        name: String,
        path: String,
    },
    #[error("{}: model {name} has the name of a stream; its table would replace the stream's", file.display())]
    ModelNamedLikeStream {
        file: std::path::PathBuf,
        name: String,
    },
    #[error("--select {selector}: no model of that name")]
    UnknownSelection { selector: String },
    #[error(
        "model {model} reads model {upstream}, which this run does not select and which was never built; run them together with --select +{model}"
    )]
    UpstreamNotBuilt { model: String, upstream: String },
    #[error(
        "{}: materialized: view needs the lake destination (a view is DataFusion's); use table",
        file.display()
    )]
    ViewNeedsLake { file: std::path::PathBuf },
    #[error("{}: the key column {key} is not in the model's result", file.display())]
    NoKeyColumn {
        file: std::path::PathBuf,
        key: String,
    },
    /// A key every destination compares and fingerprints exactly: an integer, text, or a
    /// decimal (by its canonical text). A float is not one: destinations print a double with
    /// different digits, so the fingerprints of one load would not agree.
    #[error(
        "{}: model {model}: the key column {key} is {data_type}; a key must be an integer, text \
         or a decimal (cast it in the model's SQL, e.g. `CAST({key} AS BIGINT)` or \
         `CAST({key} AS DECIMAL(18,2))`)",
        file.display()
    )]
    KeyType {
        file: std::path::PathBuf,
        model: String,
        key: String,
        data_type: arrow::datatypes::DataType,
    },
    #[error(
        "model {model}: load {load_id} reached the destination with other rows than were staged; nothing was swapped in"
    )]
    LoadDiffers { model: String, load_id: String },
}

impl Classified for TransformError {
    fn kind(&self) -> ErrorKind {
        match self {
            TransformError::ModelsFolder { .. }
            | TransformError::NotALake
            | TransformError::ModelFile { .. }
            | TransformError::ConfiguredTest { .. }
            | TransformError::UnknownModelSettings { .. }
            | TransformError::UnknownSelection { .. }
            | TransformError::UpstreamNotBuilt { .. }
            | TransformError::ViewNeedsLake { .. }
            | TransformError::KeyType { .. } => ErrorKind::Config,
            TransformError::LoadDiffers { .. } => ErrorKind::Reconciliation,
            TransformError::ModelSql { .. }
            | TransformError::NotOneSelect { .. }
            | TransformError::Header { .. }
            | TransformError::DuplicateModel { .. }
            | TransformError::ModelNamedLikeStream { .. }
            | TransformError::UnknownName { .. }
            | TransformError::Cycle { .. }
            | TransformError::NoKeyColumn { .. } => ErrorKind::Sql,
            TransformError::Lake { .. } | TransformError::Register { .. } => ErrorKind::Destination,
            TransformError::Query(_) | TransformError::Model { .. } => ErrorKind::Sql,
        }
    }
}

/// A DataFusion session with each stream's lake table registered under the stream's name.
/// Streams that have not synced yet are left out.
pub async fn lake_session(config: &Config) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    register_lake_tables(&ctx, config).await?;
    Ok(ctx)
}

/// Registers the lake tables of one pipeline in `ctx` (several pipelines can share a session).
pub async fn register_lake_tables(ctx: &SessionContext, config: &Config) -> Result<()> {
    let destination = merged_state(config)?;
    for stream in config.source.streams() {
        if let Some(table) = destination.open_table(stream).await? {
            table
                .update_datafusion_session(&ctx.state())
                .map_err(|source| TransformError::Lake {
                    stream: stream.clone(),
                    source,
                })?;
            let register = |source| TransformError::Register {
                stream: stream.clone(),
                source,
            };
            let provider = table.table_provider().await.map_err(register)?;
            ctx.register_table(
                datafusion::common::TableReference::bare(stream.as_str()),
                provider,
            )
            .map_err(register)?;
        }
    }
    Ok(())
}

/// Where the streams' merged state is kept for DataFusion: the lake destination itself, or
/// the staging store's mirror of a PostgreSQL or Snowflake pipeline.
pub(crate) fn merged_state(config: &Config) -> Result<LakeDestination> {
    match &config.destination {
        DestinationConfig::Lake(lake) => LakeDestination::from_config(config, lake),
        _ if config.mirrors() => crate::destinations::mirror::mirror_lake(config),
        _ => Err(TransformError::NotALake.into()),
    }
}

/// Runs one SQL statement; errors are the user's SQL errors, reported as DataFusion words them.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let frame = ctx.sql(sql).await.map_err(TransformError::Query)?;
    Ok(frame.collect().await.map_err(TransformError::Query)?)
}

/// `syncline query`: runs one SQL statement and writes its result to `out` as it comes, a
/// table of `rows_per_table` rows at a time (each with its own header and column widths), so
/// a result of any size is printed in the memory of a few batches. A result without rows is
/// one table of just the header. Returns the rows written.
pub async fn print_query(
    ctx: &SessionContext,
    sql: &str,
    rows_per_table: usize,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    use futures::StreamExt;

    let rows_per_table = rows_per_table.max(1);
    let frame = ctx.sql(sql).await.map_err(TransformError::Query)?;
    let mut batches = frame
        .execute_stream()
        .await
        .map_err(TransformError::Query)?;
    let schema = batches.schema();
    let mut table: Vec<RecordBatch> = Vec::new();
    let mut table_rows = 0;
    let mut written = 0u64;
    let mut print = |table: &mut Vec<RecordBatch>| -> Result<()> {
        writeln!(
            out,
            "{}",
            arrow::util::pretty::pretty_format_batches(table)?
        )?;
        table.clear();
        Ok(())
    };
    while let Some(batch) = batches.next().await {
        let mut batch = batch.map_err(TransformError::Query)?;
        // Cut at table boundaries; slices share the batch's buffers.
        while batch.num_rows() > 0 {
            let take = (rows_per_table - table_rows).min(batch.num_rows());
            table.push(batch.slice(0, take));
            batch = batch.slice(take, batch.num_rows() - take);
            table_rows += take;
            written += take as u64;
            if table_rows == rows_per_table {
                print(&mut table)?;
                table_rows = 0;
            }
        }
    }
    if table_rows > 0 {
        print(&mut table)?;
    } else if written == 0 {
        print(&mut vec![RecordBatch::new_empty(schema)])?;
    }
    out.flush()?;
    Ok(written)
}
