//! The mirror: for PostgreSQL and Snowflake pipelines with `[models]`, every load is also
//! merged into a Delta table per stream under `{staging.url}/{pipeline}/mirror`, so SQL models
//! read each stream's merged state with DataFusion and never read back from the warehouse.
//!
//! It is the lake destination's merge, so it keeps the same rules (newest version wins,
//! deletes and tombstones, a complete full load's orphans) and the same idempotency: the load
//! id is recorded in the Delta commit and a load already there is skipped. The pipeline
//! applies a load to the mirror after the destination committed it and before the stream's
//! state is committed; a crash in between leaves the load pending, and the next run, finding
//! it in the destination's ledger, applies it to the mirror again (a no-op when the mirror
//! already has it) before it commits the state. A pipeline that turns the mirror on later
//! fills it with one `syncline run --full-refresh`.
//!
//! Each model load is applied to the model's own mirror table too ([`apply_model`]), so a
//! `models run --select` that reads a model without building it reads the model as built.

use crate::Result;
use crate::config::{Config, LakeConfig};
use crate::destinations::lake::LakeDestination;
use crate::destinations::{Destination, MergeRequest};
use crate::load::DeleteMode;
use crate::stage::{Manifest, Stage};

/// The mirror's Delta tables: `{staging.url}/{pipeline.name}/mirror/{stream}`.
pub fn mirror_lake(config: &Config) -> Result<LakeDestination> {
    let url = format!(
        "{}/{}/mirror",
        config.staging.url.trim_end_matches('/'),
        config.pipeline.name
    );
    LakeDestination::from_config(
        config,
        &LakeConfig {
            url: Some(url),
            ..LakeConfig::default()
        },
    )
}

/// Merges one staged load into the stream's mirror table, when the pipeline keeps a mirror
/// (`Config::mirrors`). Idempotent by load id; an empty load changes nothing.
pub async fn apply(config: &Config, stage: &Stage, manifest: &Manifest) -> Result<()> {
    if !config.mirrors() || manifest.rows == 0 {
        return Ok(());
    }
    let lake = mirror_lake(config)?;
    let request = MergeRequest {
        load_id: manifest.load_id.clone(),
        stream: manifest.stream.clone(),
        table: manifest.stream.clone(),
        key: manifest.key.clone(),
        deletes: config.stream_settings(&manifest.stream).deletes,
        schema: manifest.arrow_schema()?,
        staged: manifest.fingerprint(),
        files: manifest.files.iter().map(|f| f.path.clone()).collect(),
        complete: manifest.complete_as_of,
    };
    lake.ensure_table(&request).await?;
    let outcome = lake.merge(&request, stage.read_load(manifest)).await?;
    tracing::info!(
        stream = %manifest.stream,
        load_id = %manifest.load_id,
        skipped = outcome.skipped,
        "mirrored the load for models"
    );
    Ok(())
}

/// Applies a model's staged load to the model's mirror table, when the pipeline keeps a mirror,
/// after the destination committed it: `replace`d in one commit (a `table` model, or a rebuilt
/// incremental one) or merged by key (an `incremental` one). Idempotent by load id. A run that
/// fails between the destination's commit and this one leaves the mirror at the model's
/// previous run until the model is built again.
pub async fn apply_model(
    config: &Config,
    stage: &Stage,
    manifest: &Manifest,
    replace: bool,
) -> Result<()> {
    if !config.mirrors() {
        return Ok(());
    }
    let lake = mirror_lake(config)?;
    let request = MergeRequest {
        load_id: manifest.load_id.clone(),
        stream: manifest.stream.clone(),
        table: manifest.stream.clone(),
        key: manifest.key.clone(),
        deletes: DeleteMode::Hard,
        schema: manifest.arrow_schema()?,
        staged: manifest.fingerprint(),
        files: manifest.files.iter().map(|f| f.path.clone()).collect(),
        complete: None,
    };
    if replace {
        lake.replace_table(&request, stage.read_load(manifest))
            .await?;
    } else {
        lake.ensure_table(&request).await?;
        lake.merge(&request, stage.read_load(manifest)).await?;
    }
    tracing::info!(model = %manifest.stream, load_id = %manifest.load_id, "mirrored the model's load");
    Ok(())
}
