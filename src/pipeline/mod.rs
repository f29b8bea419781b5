//! Orchestration: builds the configured source, stage and destination and runs streams through them.

use std::sync::Arc;

use object_store::ObjectStoreExt;

use crate::config::{Config, DestinationConfig, SourceConfig};
use crate::destinations::Destination;
use crate::destinations::postgres::PostgresDestination;
use crate::sources::Source;
use crate::sources::hubspot::HubspotSource;
use crate::stage::Stage;
use crate::{Error, Result};

pub mod batch;

pub use batch::{RunOptions, run};

pub fn build_source(config: &Config) -> Result<Arc<dyn Source>> {
    Ok(match &config.source {
        SourceConfig::Hubspot(h) => Arc::new(HubspotSource::new(h)?),
    })
}

pub async fn build_destination(config: &Config) -> Result<Arc<dyn Destination>> {
    Ok(match &config.destination {
        DestinationConfig::Postgres(p) => Arc::new(PostgresDestination::connect(p.url.expose(), &p.schema).await?),
    })
}

/// `syncline check`: the config parsed; now prove the stage is writable and the source and
/// destination answer. Returns one line per check.
pub async fn check(config: &Config) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let stage = Stage::open(&config.staging)?;
    let probe = stage.path(&[&config.pipeline.name, "_check", &uuid::Uuid::new_v4().to_string()]);
    stage.store().put(&probe, "ok".into()).await.map_err(|e| Error::Stage(format!("staging is not writable: {e}")))?;
    stage.store().delete(&probe).await?;
    lines.push(format!("staging: writable ({})", stage.url()));
    let source = build_source(config)?;
    source.check().await?;
    lines.push(format!("source: reachable, streams {:?} readable", config.source.streams()));
    let destination = build_destination(config).await?;
    destination.check().await?;
    lines.push("destination: reachable, ledger ready".to_string());
    Ok(lines)
}
