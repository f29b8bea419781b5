//! Orchestration: runs streams through the configured source, stage and destination, and
//! proves before a run that all three answer (`syncline check`).

use object_store::ObjectStoreExt;

use crate::config::Config;
use crate::stage::{Stage, StageError};
use crate::{Result, destinations, sources};

pub mod batch;
pub mod loads;
pub mod reconcile;

pub use batch::{RunOptions, run};
pub use reconcile::{ReconcileOptions, ReconcileReport, reconcile};

/// `syncline check`: the config parsed; now prove the stage is writable and the source and
/// destination answer. Returns one line per check.
pub async fn check(config: &Config) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let stage = Stage::open(&config.staging)?;
    let probe = stage.path(&[
        &config.pipeline.name,
        "_check",
        &uuid::Uuid::new_v4().to_string(),
    ]);
    stage
        .store()
        .put(&probe, "ok".into())
        .await
        .map_err(StageError::NotWritable)?;
    stage.store().delete(&probe).await?;
    lines.push(format!("staging: writable ({})", stage.url()));
    let source = sources::build(config)?;
    source.check().await?;
    lines.push(format!(
        "source: reachable, streams {:?} readable",
        config.source.streams()
    ));
    for finding in source.inventory().await? {
        lines.push(format!("source: {finding}"));
    }
    let destination = destinations::build(config).await?;
    destination.check().await?;
    lines.push("destination: reachable, ledger ready".to_string());
    Ok(lines)
}
