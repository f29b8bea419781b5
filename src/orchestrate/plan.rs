//! `syncline plan`: what a run of a config would load, read from the config alone (no source,
//! stage or destination is called), so an orchestrator can declare its assets at import time.
//!
//! The JSON shape is a contract with `integrations/dagster` and `integrations/airflow`:
//! fields may be added, never renamed or removed.

use serde::Serialize;

use crate::config::{Config, DestinationConfig, SourceConfig};
use crate::load::DeleteMode;
use crate::sources::postgres::config::PostgresMode;

/// The name of the hop-by-hop count and checksum check every stream's load passes through.
pub const RECONCILIATION_CHECK: &str = "reconciliation";

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub pipeline: String,
    /// The source's `type`.
    pub source: &'static str,
    /// The destination's `type`.
    pub destination: &'static str,
    pub streams: Vec<StreamPlan>,
    /// SQL models of the pipeline's `[models]`, each after what it reads: name, file,
    /// materialization, key, tests and `depends_on` (streams and models), so an orchestrator
    /// can put one asset per model downstream of the streams it reads.
    pub models: Vec<ModelPlan>,
}

/// A model as an orchestrator declares it: the node, where its table lands, and its tests
/// as named checks (`syncline models run` reports each under that name).
#[derive(Debug, Clone, Serialize)]
pub struct ModelPlan {
    #[serde(flatten)]
    pub node: crate::transform::ModelNode,
    pub destination_table: String,
    pub checks: Vec<crate::transform::graph::ModelCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamPlan {
    pub name: String,
    /// Where the stream lands: `schema.table` (PostgreSQL, Snowflake) or the Delta table's URL.
    pub destination_table: String,
    /// The key columns. `None` when the source finds them at run time (a PostgreSQL table's
    /// primary key).
    pub key: Option<Vec<String>>,
    /// How changes are read: `incremental` (a modified-time cursor), `cdc` (logical
    /// replication) or `cursor` (a column that grows).
    pub mode: &'static str,
    pub deletes: DeleteMode,
    pub checks: Vec<CheckPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckPlan {
    pub name: &'static str,
    pub description: &'static str,
    /// `ERROR`: a failed check fails the load (exit 3).
    pub severity: &'static str,
}

/// The plan of `config`.
pub fn plan(config: &Config) -> crate::Result<Plan> {
    // Only a pipeline with `[models]` has models to orchestrate; a cycle or an unknown name
    // is the same configuration error `models run` gives.
    let models = match config.models {
        Some(_) => crate::transform::model_graph(config, None)?
            .models
            .into_iter()
            .map(|node| ModelPlan {
                destination_table: destination_table(config, &node.name),
                checks: node.checks(),
                node,
            })
            .collect(),
        None => Vec::new(),
    };
    let streams = config
        .source
        .streams()
        .iter()
        .map(|stream| StreamPlan {
            name: stream.clone(),
            destination_table: destination_table(config, stream),
            key: key(&config.source, stream),
            mode: mode(&config.source),
            deletes: config.stream_settings(stream).deletes,
            checks: vec![CheckPlan {
                name: RECONCILIATION_CHECK,
                description: "row count and checksum agree at every hop: source, stage, destination",
                severity: "ERROR",
            }],
        })
        .collect();
    Ok(Plan {
        pipeline: config.pipeline.name.clone(),
        source: match config.source {
            SourceConfig::Hubspot(_) => "hubspot",
            SourceConfig::Salesforce(_) => "salesforce",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Files(_) => "files",
        },
        destination: match config.destination {
            DestinationConfig::Postgres(_) => "postgres",
            DestinationConfig::Lake(_) => "lake",
            DestinationConfig::Snowflake(_) => "snowflake",
        },
        streams,
        models,
    })
}

/// The table a stream merges into, as a user would name it (destinations quote it themselves).
pub fn destination_table(config: &Config, stream: &str) -> String {
    match &config.destination {
        DestinationConfig::Postgres(pg) => format!("{}.{stream}", pg.schema),
        DestinationConfig::Snowflake(sf) => format!("{}.{}.{stream}", sf.database, sf.schema),
        DestinationConfig::Lake(lake) => format!("{}/{stream}", config.lake_url(lake)),
    }
}

/// The key columns the config names or implies.
pub fn key(source: &SourceConfig, stream: &str) -> Option<Vec<String>> {
    match source {
        SourceConfig::Hubspot(_) => Some(vec!["id".to_string()]),
        SourceConfig::Salesforce(_) => Some(vec!["Id".to_string()]),
        SourceConfig::Files(files) => files.files.get(stream).map(|f| vec![f.key.clone()]),
        SourceConfig::Postgres(pg) => pg.table(stream).key.map(|k| vec![k]),
    }
}

fn mode(source: &SourceConfig) -> &'static str {
    match source {
        SourceConfig::Postgres(pg) if pg.mode == PostgresMode::Cdc => "cdc",
        SourceConfig::Postgres(_) => "cursor",
        _ => "incremental",
    }
}

/// The short text form: one line per stream.
pub fn render(plan: &Plan) -> String {
    let mut out = format!(
        "pipeline {}: {} -> {}\n",
        plan.pipeline, plan.source, plan.destination
    );
    for s in &plan.streams {
        let key = s
            .key
            .as_ref()
            .map_or("(primary key)".to_string(), |k| k.join(","));
        let checks: Vec<&str> = s.checks.iter().map(|c| c.name).collect();
        out.push_str(&format!(
            "{:<16} -> {:<40} key {:<12} {:<11} deletes {:<4} checks {}\n",
            s.name,
            s.destination_table,
            key,
            s.mode,
            format!("{:?}", s.deletes).to_lowercase(),
            checks.join(",")
        ));
    }
    out
}
