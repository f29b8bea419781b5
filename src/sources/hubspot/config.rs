//! `[source]` with `type = "hubspot"`: the keys, their defaults and their validation.

use serde::Deserialize;

use crate::config::{KeyError, Secret};

/// `[source]` with `type = "hubspot"`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubspotConfig {
    /// API base URL. Default `https://api.hubapi.com`.
    #[serde(default = "default_hubspot_url")]
    pub base_url: String,
    /// Private-app or service-key token (a Bearer token). Use `${VAR}`.
    pub token: Secret,
    /// CRM object types to sync, e.g. `["contacts", "companies", "deals"]`.
    pub streams: Vec<String>,
    /// How far (seconds) each incremental window reaches back before the saved cursor, to
    /// catch late-indexed and same-timestamp records. Default 300.
    #[serde(default = "default_overlap")]
    pub overlap_seconds: u64,
    /// The window's upper bound is `now - lag_seconds`, because search lags writes. Default 30.
    #[serde(default = "default_lag")]
    pub lag_seconds: u64,
    /// Retries of a request answered 429 or 5xx before the run fails. Default 8.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// First back-off delay in milliseconds when no `Retry-After` is given; doubles per retry
    /// up to 30 s. Default 1000.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
}

fn default_hubspot_url() -> String {
    "https://api.hubapi.com".into()
}
fn default_overlap() -> u64 {
    300
}
fn default_lag() -> u64 {
    30
}
fn default_retries() -> u32 {
    8
}
fn default_retry_base_ms() -> u64 {
    1000
}

impl HubspotConfig {
    /// Checks what parsing cannot; errors name the key under `source`.
    pub fn validate(&self) -> Result<(), KeyError> {
        if url::Url::parse(&self.base_url).is_err() {
            return Err(KeyError::new(&["source", "base_url"], "not a URL"));
        }
        if self.token.expose().is_empty() {
            return Err(KeyError::new(&["source", "token"], "is empty"));
        }
        Ok(())
    }
}
