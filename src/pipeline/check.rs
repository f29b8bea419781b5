//! `syncline check`: every component a run needs, each tried on its own with a short timeout
//! and at most one retry, so one run of `check` names every problem at once.

use std::future::Future;
use std::time::Duration;

use object_store::ObjectStoreExt;

use crate::config::{Config, SourceConfig};
use crate::error::{Classified, ErrorKind};
use crate::stage::{Stage, StageError};
use crate::{Error, Result, destinations, sources};

/// How hard `check` tries each component.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Longest a component's check may take.
    pub timeout: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            timeout: Duration::from_secs(10),
        }
    }
}

/// Retries an API source makes during `check` (a run keeps its configured `max_retries`).
const CHECK_RETRIES: u32 = 1;
/// Longest first back-off during `check`, in milliseconds.
const CHECK_RETRY_BASE_MS: u64 = 250;

/// One component and how its check went.
#[derive(Debug)]
pub struct Checked {
    /// What was checked, e.g. `staging`, `source stream contacts`, `destination`.
    pub component: String,
    /// What was found, or why it is not usable (the error's report says what to fix).
    pub outcome: std::result::Result<String, Error>,
}

impl Checked {
    /// The line `check` prints: `✓ component: what was found` or `✗ component: what to fix`.
    pub fn line(&self) -> String {
        match &self.outcome {
            Ok(found) => format!("✓ {}: {found}", self.component),
            Err(err) => format!("✗ {}: {}", self.component, err.report()),
        }
    }
}

/// The process exit code for a check: 0 when every component passed, else the highest exit
/// code among the failures (a configuration mistake, 2, outranks a network failure, 1).
pub fn exit_code(checks: &[Checked]) -> i32 {
    checks
        .iter()
        .filter_map(|c| c.outcome.as_ref().err())
        .map(Error::exit_code)
        .max()
        .unwrap_or(0)
}

/// A component that did not answer within [`CheckOptions::timeout`].
#[derive(Debug, thiserror::Error)]
#[error("no answer within {seconds} s; check the address and that the service is up")]
pub struct TimedOut {
    seconds: u64,
}

impl Classified for TimedOut {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Transient
    }
}

/// Checks the staging store (write and delete a probe), each stream at the source, and the
/// destination (connect, create the schema and ledger when missing), all at once, and
/// returns one result per component in that order. Never stops at the first failure.
pub async fn check(config: &Config, options: &CheckOptions) -> Vec<Checked> {
    let config = &quick_retries(config);
    let timeout = options.timeout;
    let staging = component("staging".to_string(), timeout, check_staging(config));
    let streams = config.source.streams().iter().map(|stream| {
        component(
            format!("source stream {stream}"),
            timeout,
            check_stream(config, stream),
        )
    });
    let destination = component(
        format!("destination {}", destination_type(config)),
        timeout,
        check_destination(config),
    );
    let (staging, streams, destination) =
        futures::join!(staging, futures::future::join_all(streams), destination);
    let mut checks = vec![staging];
    checks.extend(streams);
    checks.push(destination);
    checks
}

async fn component(
    name: String,
    timeout: Duration,
    work: impl Future<Output = Result<String>>,
) -> Checked {
    let outcome = match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(TimedOut {
            seconds: timeout.as_secs().max(1),
        }
        .into()),
    };
    Checked {
        component: name,
        outcome,
    }
}

/// The config with the API sources' retries cut to one short one: a source that cannot be
/// reached should be reported in seconds, not after a run's minutes of back-off.
fn quick_retries(config: &Config) -> Config {
    let mut config = config.clone();
    match &mut config.source {
        SourceConfig::Hubspot(h) => {
            h.max_retries = h.max_retries.min(CHECK_RETRIES);
            h.retry_base_ms = h.retry_base_ms.min(CHECK_RETRY_BASE_MS);
        }
        SourceConfig::Salesforce(s) => {
            s.max_retries = s.max_retries.min(CHECK_RETRIES);
            s.retry_base_ms = s.retry_base_ms.min(CHECK_RETRY_BASE_MS);
        }
        SourceConfig::Postgres(_) | SourceConfig::Files(_) => {}
    }
    config
}

async fn check_staging(config: &Config) -> Result<String> {
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
    Ok(format!("writable ({})", stage.url()))
}

/// One stream, through a source configured for it alone, so each stream gets its own line.
async fn check_stream(config: &Config, stream: &str) -> Result<String> {
    let mut config = config.clone();
    let only = vec![stream.to_string()];
    match &mut config.source {
        SourceConfig::Hubspot(h) => h.streams = only,
        SourceConfig::Salesforce(s) => s.streams = only,
        SourceConfig::Postgres(p) => p.streams = only,
        SourceConfig::Files(f) => f.streams = only,
    }
    // A transform that does not parse needs no source to say so.
    super::transform::StreamTransform::prepare(&config, stream)?;
    let source = sources::build(&config)?;
    source.check().await?;
    let mut found = vec!["readable".to_string()];
    if super::transform::ready(&config, stream, source.as_ref())
        .await?
        .is_some()
    {
        found.push("transform plans over its columns".to_string());
    }
    for finding in source.inventory().await? {
        // The inventory names the stream; this line already does.
        let finding = finding
            .strip_prefix(&format!("{stream}: "))
            .map(str::to_string)
            .unwrap_or(finding);
        found.push(finding);
    }
    Ok(found.join("; "))
}

async fn check_destination(config: &Config) -> Result<String> {
    let destination = destinations::build(config).await?;
    destination.check().await?;
    Ok("reachable, may create tables, ledger ready".to_string())
}

fn destination_type(config: &Config) -> &'static str {
    use crate::config::DestinationConfig;
    match config.destination {
        DestinationConfig::Postgres(_) => "postgres",
        DestinationConfig::Lake(_) => "lake",
        DestinationConfig::Snowflake(_) => "snowflake",
    }
}
