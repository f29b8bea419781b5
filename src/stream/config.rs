//! `[stream]`: the keys of `syncline stream` (micro-batch mode), pipeline-wide, and the
//! defaults each destination gets when a key is left out. Per-stream overrides live in
//! `[streams.NAME]` (`flush_rows`, `flush_ms`, `poll_seconds`).
//!
//! Why the defaults differ by destination: a flush is a load (stage, merge, ledger row,
//! state). PostgreSQL merges a small load in milliseconds and charges nothing per merge, so
//! it flushes often (200 ms). Every Snowflake MERGE resumes a warehouse, billed by the
//! second with a minimum of a minute, so it flushes at most every 60 s. Every lake merge
//! writes a Delta commit and small Parquet files that later reads pay for, so it flushes
//! every 10 s.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{DestinationConfig, KeyError, Secret, SourceConfig};

/// `[stream]`
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Address the HTTP listener binds: `/metrics` (Prometheus text), `/health`, and with
    /// `[stream.webhook]` the HubSpot webhook receiver. Default `127.0.0.1:9187`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A stream flushes (loads what it buffered) once this many changes wait. Default by
    /// destination: postgres 10,000; lake and snowflake 100,000.
    #[serde(default)]
    pub flush_rows: Option<usize>,
    /// A stream flushes once its oldest buffered change waited this long (milliseconds).
    /// Default by destination: postgres 200, lake 10,000, snowflake 60,000.
    #[serde(default)]
    pub flush_ms: Option<u64>,
    /// On SIGTERM or SIGINT, how long the flushes in progress may take to commit before the
    /// process gives up on them and exits 1 (whatever did not commit is read again by the
    /// next start). Default 30.
    #[serde(default = "default_shutdown_seconds")]
    pub shutdown_seconds: u64,
    /// The HubSpot webhook receiver; absent: no receiver (polling only).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// `[stream.webhook]`
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The HubSpot app's client secret, which signs every delivery (signature v3); use
    /// `${HUBSPOT_WEBHOOK_SECRET}`.
    pub secret: Secret,
    /// Which stream a webhook's `objectType` hints, `{ contact = "contacts" }`. Default: each
    /// configured HubSpot stream under its singular (`contacts` → `contact`, `companies` →
    /// `company`).
    #[serde(default)]
    pub objects: BTreeMap<String, String>,
    /// The target URL exactly as set in the HubSpot app's webhook settings, e.g.
    /// `https://hooks.example.com/webhooks/hubspot`: HubSpot signs the URL it called, which a
    /// proxy or load balancer in front of syncline rewrites. Absent: `http://` plus the
    /// request's `Host` header and path, right only when HubSpot reaches syncline directly.
    #[serde(default)]
    pub public_url: Option<String>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            listen: default_listen(),
            flush_rows: None,
            flush_ms: None,
            shutdown_seconds: default_shutdown_seconds(),
            webhook: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9187".to_string()
}

fn default_shutdown_seconds() -> u64 {
    30
}

/// Flush thresholds a destination gets when neither `[stream]` nor `[streams.NAME]` sets
/// them (see the module docs for why).
pub fn destination_defaults(destination: &DestinationConfig) -> (usize, u64) {
    match destination {
        DestinationConfig::Postgres(_) => (10_000, 200),
        DestinationConfig::Lake(_) => (100_000, 10_000),
        DestinationConfig::Snowflake(_) => (100_000, 60_000),
    }
}

/// How often a polled source is asked for changes when `[streams.NAME] poll_seconds` is
/// not set: API sources every 30 s (their quotas are shared with other integrations), file
/// exports every 60 s, PostgreSQL in cursor mode every 5 s.
pub fn default_poll_seconds(source: &SourceConfig) -> u64 {
    match source {
        SourceConfig::Hubspot(_) | SourceConfig::Salesforce(_) => 30,
        SourceConfig::Files(_) => 60,
        SourceConfig::Postgres(_) => 5,
    }
}

/// The `objectType` HubSpot webhooks name for a stream: its singular.
pub fn object_type(stream: &str) -> String {
    let lower = stream.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = lower.strip_suffix('s') {
        stem.to_string()
    } else {
        lower
    }
}

impl StreamConfig {
    /// Checks what parsing cannot; `streams` are the source's.
    pub fn validate(&self, source: &SourceConfig) -> Result<(), KeyError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(KeyError::new(
                &["stream", "listen"],
                "must be an address with a port, e.g. 127.0.0.1:9187 or 0.0.0.0:9187",
            ));
        }
        if self.flush_rows == Some(0) {
            return Err(KeyError::new(
                &["stream", "flush_rows"],
                "must be at least 1",
            ));
        }
        if self.flush_ms == Some(0) {
            return Err(KeyError::new(&["stream", "flush_ms"], "must be at least 1"));
        }
        if self.shutdown_seconds == 0 {
            return Err(KeyError::new(
                &["stream", "shutdown_seconds"],
                "must be at least 1",
            ));
        }
        if let Some(webhook) = &self.webhook {
            if !matches!(source, SourceConfig::Hubspot(_)) {
                return Err(KeyError::new(
                    &["stream", "webhook"],
                    "receives HubSpot webhooks only; remove it or use a hubspot source",
                ));
            }
            if webhook.secret.expose().is_empty() {
                return Err(KeyError::new(
                    &["stream", "webhook", "secret"],
                    "is empty; set it to the HubSpot app's client secret",
                ));
            }
            if let Some(url) = &webhook.public_url {
                let web = url::Url::parse(url)
                    .is_ok_and(|parsed| matches!(parsed.scheme(), "http" | "https"));
                if !web {
                    return Err(KeyError::new(
                        &["stream", "webhook", "public_url"],
                        "is not an http(s) URL; set it to the target URL of the HubSpot app",
                    ));
                }
            }
            for (object, stream) in &webhook.objects {
                if !source.streams().contains(stream) {
                    return Err(KeyError::new(
                        &["stream", "webhook", "objects", object],
                        &format!("stream {stream:?} is not listed in source.streams"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspot_streams_map_to_their_object_types() {
        assert_eq!(object_type("contacts"), "contact");
        assert_eq!(object_type("companies"), "company");
        assert_eq!(object_type("deals"), "deal");
        assert_eq!(object_type("tickets"), "ticket");
    }
}
