//! HTTP access to HubSpot CRM v3: bearer auth, retries with back-off on 429 and 5xx.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{HubspotConfig, Secret};
use crate::{Error, Result};

/// A HubSpot API client. Cloning shares the connection pool.
#[derive(Clone)]
pub struct HubspotClient {
    http: reqwest::Client,
    base_url: String,
    token: Secret,
    max_retries: u32,
    retry_base: Duration,
}

/// The documented error body; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    message: Option<String>,
    category: Option<String>,
    policy_name: Option<String>,
}

impl HubspotClient {
    pub fn new(config: &HubspotConfig) -> Result<HubspotClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("syncline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Source(format!("cannot build the HTTP client: {e}")))?;
        Ok(HubspotClient {
            http,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            token: config.token.clone(),
            max_retries: config.max_retries,
            retry_base: Duration::from_millis(config.retry_base_ms),
        })
    }

    pub async fn get(&self, path_and_query: &str) -> Result<Value> {
        self.send(Method::GET, path_and_query, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Sends a request, retrying what HubSpot documents as retryable. The error names the
    /// endpoint path, never the token.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{}", self.base_url, path);
        let endpoint = path.split('?').next().unwrap_or(path).to_string();
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.token.expose());
            if let Some(body) = body {
                request = request.json(body);
            }
            let outcome = request.send().await;
            let retry_after = match outcome {
                Err(err) => {
                    // Connection resets and timeouts are transient; report without the URL's query.
                    let reason = format!("{method} {endpoint}: {}", without_url(&err));
                    if attempt >= self.max_retries {
                        return Err(Error::Transient(reason));
                    }
                    tracing::warn!(endpoint, attempt, error = %reason, "request failed, retrying");
                    None
                }
                Ok(response) => {
                    let status = response.status();
                    let header_wait = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    if status.is_success() {
                        let bytes = response.bytes().await.map_err(|e| {
                            Error::Transient(format!(
                                "{method} {endpoint}: reading the body: {}",
                                without_url(&e)
                            ))
                        })?;
                        return serde_json::from_slice(&bytes).map_err(|e| {
                            Error::Source(format!(
                                "{method} {endpoint}: the response is not the documented JSON: {e}"
                            ))
                        });
                    }
                    let text = response.text().await.unwrap_or_default();
                    let error: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
                    let message = error
                        .message
                        .clone()
                        .unwrap_or_else(|| text.chars().take(200).collect());
                    match status {
                        StatusCode::TOO_MANY_REQUESTS
                            if error.policy_name.as_deref() == Some("DAILY") =>
                        {
                            return Err(Error::Source(format!(
                                "{method} {endpoint}: the daily HubSpot API limit is used up; the run stops with state saved and can resume after the limit resets"
                            )));
                        }
                        StatusCode::UNAUTHORIZED => {
                            return Err(Error::Source(format!(
                                "{method} {endpoint}: HubSpot rejected the token (401 {}); check source.token",
                                error.category.unwrap_or_default()
                            )));
                        }
                        StatusCode::FORBIDDEN => {
                            return Err(Error::Source(format!(
                                "{method} {endpoint}: the token lacks a scope (403 {}): {message}",
                                error.category.unwrap_or_default()
                            )));
                        }
                        s if is_retryable(s) => {
                            if attempt >= self.max_retries {
                                return Err(Error::Transient(format!(
                                    "{method} {endpoint}: still {s} after {attempt} retries: {message}"
                                )));
                            }
                            tracing::debug!(
                                endpoint,
                                attempt,
                                status = s.as_u16(),
                                "retryable answer"
                            );
                            header_wait
                        }
                        s => {
                            return Err(Error::Source(format!(
                                "{method} {endpoint}: HTTP {s}: {message}"
                            )));
                        }
                    }
                }
            };
            let backoff = self
                .retry_base
                .saturating_mul(1 << attempt.min(10))
                .min(Duration::from_secs(30));
            // Retry-After when given (plus a margin, as HubSpot's limits are rolling windows).
            let wait = retry_after.map(|d| d + self.retry_base).unwrap_or(backoff);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        423 | 429 | 477 | 500 | 502 | 503 | 504 | 524
    )
}

/// What went wrong, without reqwest's rendering of the URL.
fn without_url(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "the body was cut short"
    } else {
        "request failed"
    }
}
