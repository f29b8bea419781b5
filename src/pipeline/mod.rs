//! Orchestration: builds the configured source, stage and destination and runs streams through them.

use std::sync::Arc;

use object_store::ObjectStoreExt;

use crate::config::{Config, DestinationConfig, LakeConfig, SourceConfig};
use crate::destinations::Destination;
use crate::destinations::lake::LakeDestination;
use crate::destinations::postgres::PostgresDestination;
use crate::destinations::snowflake::SnowflakeDestination;
use crate::sources::Source;
use crate::sources::files::FilesSource;
use crate::sources::hubspot::HubspotSource;
use crate::sources::postgres::PostgresSource;
use crate::sources::salesforce::SalesforceSource;
use crate::stage::Stage;
use crate::{Error, Result};

pub mod batch;

pub use batch::{RunOptions, run};

pub fn build_source(config: &Config) -> Result<Arc<dyn Source>> {
    Ok(match &config.source {
        SourceConfig::Hubspot(h) => Arc::new(HubspotSource::new(h)?),
        SourceConfig::Salesforce(s) => Arc::new(SalesforceSource::new(s)?),
        SourceConfig::Postgres(p) => Arc::new(PostgresSource::new(p, &config.pipeline.name)),
        SourceConfig::Files(f) => Arc::new(FilesSource::new(f)?),
    })
}

pub async fn build_destination(config: &Config) -> Result<Arc<dyn Destination>> {
    Ok(match &config.destination {
        DestinationConfig::Postgres(p) => {
            Arc::new(PostgresDestination::connect(p.url.expose(), &p.schema).await?)
        }
        DestinationConfig::Lake(l) => Arc::new(build_lake(config, l)?),
        DestinationConfig::Snowflake(s) => {
            Arc::new(SnowflakeDestination::new(s, &config.staging.url)?)
        }
    })
}

/// The lake destination, with the staging S3 settings when the lake is on S3.
pub fn build_lake(config: &Config, lake: &LakeConfig) -> Result<LakeDestination> {
    let url = config.lake_url(lake);
    let mut options = std::collections::HashMap::new();
    if url.starts_with("s3://") {
        if let Some(s3) = &config.staging.s3 {
            if let Some(endpoint) = &s3.endpoint {
                options.insert("aws_endpoint".to_string(), endpoint.clone());
            }
            options.insert(
                "aws_region".to_string(),
                s3.region.clone().unwrap_or_else(|| "us-east-1".into()),
            );
            if let Some(key) = &s3.access_key_id {
                options.insert("aws_access_key_id".to_string(), key.expose().to_string());
            }
            if let Some(key) = &s3.secret_access_key {
                options.insert(
                    "aws_secret_access_key".to_string(),
                    key.expose().to_string(),
                );
            }
            if s3.allow_http {
                options.insert("aws_allow_http".to_string(), "true".to_string());
            }
        }
    }
    LakeDestination::new(&url, options)
}

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
        .map_err(|e| Error::Stage(format!("staging is not writable: {e}")))?;
    stage.store().delete(&probe).await?;
    lines.push(format!("staging: writable ({})", stage.url()));
    let source = build_source(config)?;
    source.check().await?;
    lines.push(format!(
        "source: reachable, streams {:?} readable",
        config.source.streams()
    ));
    if let SourceConfig::Files(files) = &config.source {
        for (stream, glob, count) in FilesSource::new(files)?.matches().await? {
            lines.push(format!(
                "source: {stream}: {count} file(s) match glob {glob:?}"
            ));
        }
    }
    let destination = build_destination(config).await?;
    destination.check().await?;
    lines.push("destination: reachable, ledger ready".to_string());
    Ok(lines)
}
