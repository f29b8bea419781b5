//! `[source]` with `type = "salesforce"`: the keys, their defaults, which login flow they
//! select, and their validation.

use serde::Deserialize;

use crate::config::{KeyError, Secret};

/// `[source]` with `type = "salesforce"`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// Where the OAuth token is requested: your My Domain URL (client credentials need it),
    /// `https://login.salesforce.com` or `https://test.salesforce.com`. Every other call goes
    /// to the `instance_url` the token endpoint returns.
    #[serde(default = "default_salesforce_login")]
    pub login_url: String,
    /// Connected app consumer key (the JWT's `iss` in the JWT bearer flow).
    pub client_id: String,
    /// Connected app consumer secret: selects the OAuth 2.0 client-credentials flow, which
    /// logs in as the app's run-as user. Use `${VAR}`. Set either this or `username` with a
    /// private key (JWT bearer flow), not both.
    pub client_secret: Option<Secret>,
    /// The Salesforce username to act as, e.g. `integration@acme.com`: selects the OAuth 2.0
    /// JWT bearer flow (the JWT's `sub`). The user must be pre-authorized for the connected
    /// app, whose certificate must match the private key. Needs `private_key` or
    /// `private_key_path`.
    pub username: Option<String>,
    /// The RSA private key that signs the JWT bearer assertion, as PEM text
    /// (`-----BEGIN PRIVATE KEY-----` or `-----BEGIN RSA PRIVATE KEY-----`, at least 2048
    /// bits). Use `${VAR}`; a value on one line with literal `\n`s is accepted. Give this or
    /// `private_key_path`, not both.
    pub private_key: Option<Secret>,
    /// A PEM file holding that private key, read when the run starts. `${VAR}` allowed.
    pub private_key_path: Option<String>,
    /// The JWT bearer assertion's `aud`: `https://login.salesforce.com` for production,
    /// `https://test.salesforce.com` for sandboxes. Default `login_url`, so set this when
    /// `login_url` is a My Domain URL. JWT bearer flow only.
    pub audience: Option<String>,
    /// REST API version. Default `62.0`.
    #[serde(default = "default_salesforce_version")]
    pub api_version: String,
    /// sObjects to sync, e.g. `["Account", "Contact", "Opportunity", "Lead"]`.
    pub streams: Vec<String>,
    /// Full loads of objects with at least this many records go through Bulk API 2.0
    /// (falling back to REST when a job fails); smaller ones through REST. Default 50,000.
    #[serde(default = "default_bulk_threshold")]
    pub bulk_threshold: u64,
    /// Incremental windows reach back this far before the cursor (late commits). Default 600.
    #[serde(default = "default_salesforce_overlap")]
    pub overlap_seconds: u64,
    /// The window's upper bound is `now - lag_seconds`. Default 60.
    #[serde(default = "default_salesforce_lag")]
    pub lag_seconds: u64,
    /// Share of the daily API allocation this pipeline may use (0 < share <= 1). When
    /// `Sforce-Limit-Info` shows usage at or above it, the run stops cleanly with state saved
    /// and exit code 4. Default 0.8.
    #[serde(default = "default_api_budget")]
    pub api_budget: f64,
    /// Retries of 5xx and throttling answers. Default 5.
    #[serde(default = "default_salesforce_retries")]
    pub max_retries: u32,
    /// First back-off delay in milliseconds; doubles per retry up to 30 s. Default 1000.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Milliseconds between Bulk job status polls. Default 500.
    #[serde(default = "default_bulk_poll_ms")]
    pub bulk_poll_ms: u64,
}

/// How the Salesforce source logs in, as selected by which keys are set.
#[derive(Debug, Clone, Copy)]
pub enum SalesforceAuth<'a> {
    /// `client_secret` is set: the client-credentials flow.
    ClientCredentials { client_secret: &'a Secret },
    /// `username` and a private key are set: the JWT bearer flow.
    JwtBearer {
        username: &'a str,
        key: JwtKey<'a>,
        /// The assertion's `aud`: `audience`, else `login_url`.
        audience: &'a str,
    },
}

/// Where the JWT bearer flow's private key comes from.
#[derive(Debug, Clone, Copy)]
pub enum JwtKey<'a> {
    /// `private_key`: the PEM text itself.
    Pem(&'a Secret),
    /// `private_key_path`: a PEM file.
    Path(&'a str),
}

impl SalesforceConfig {
    /// The login flow the keys select. Exactly one must be configured: `client_secret`
    /// (client credentials), or `username` with one of `private_key` and `private_key_path`
    /// (JWT bearer). Pure: the key file is not read here.
    pub fn auth(&self) -> Result<SalesforceAuth<'_>, KeyError> {
        fn error<T>(key: &str, message: &str) -> Result<T, KeyError> {
            Err(KeyError::new(&["source", key], message))
        }
        let jwt_keys_set = self.username.is_some()
            || self.private_key.is_some()
            || self.private_key_path.is_some();
        if let Some(client_secret) = &self.client_secret {
            if jwt_keys_set {
                return error(
                    "client_secret",
                    "selects the client-credentials flow, but `username`/`private_key`/`private_key_path` select the JWT bearer flow; keep one flow's keys",
                );
            }
            if client_secret.expose().is_empty() {
                return error("client_secret", "is empty");
            }
            if self.audience.is_some() {
                return error(
                    "audience",
                    "applies only to the JWT bearer flow (`username` with `private_key` or `private_key_path`); remove it",
                );
            }
            return Ok(SalesforceAuth::ClientCredentials { client_secret });
        }
        if !jwt_keys_set {
            return error(
                "client_secret",
                "is missing: set `client_secret` (client-credentials flow) or `username` with `private_key` or `private_key_path` (JWT bearer flow)",
            );
        }
        let Some(username) = self.username.as_deref() else {
            return error(
                "username",
                "is missing: the JWT bearer flow (a private key is set) needs the Salesforce username to act as",
            );
        };
        if username.trim().is_empty() {
            return error("username", "is empty");
        }
        let key = match (&self.private_key, &self.private_key_path) {
            (Some(_), Some(_)) => {
                return error(
                    "private_key_path",
                    "and `private_key` are both set; give the key only once",
                );
            }
            (None, None) => {
                return error(
                    "private_key",
                    "is missing: the JWT bearer flow (`username` is set) needs `private_key` or `private_key_path`",
                );
            }
            (Some(pem), None) => {
                if pem.expose().trim().is_empty() {
                    return error("private_key", "is empty");
                }
                if !pem.expose().contains("-----BEGIN") {
                    return error(
                        "private_key",
                        "is not PEM text (no `BEGIN PRIVATE KEY` block); to name a file, use `private_key_path`",
                    );
                }
                JwtKey::Pem(pem)
            }
            (None, Some(path)) => {
                if path.trim().is_empty() {
                    return error("private_key_path", "is empty");
                }
                JwtKey::Path(path.as_str())
            }
        };
        let audience = self.audience.as_deref().unwrap_or(self.login_url.as_str());
        if url::Url::parse(audience).is_err() {
            return error(
                "audience",
                "not a URL; use https://login.salesforce.com or https://test.salesforce.com",
            );
        }
        Ok(SalesforceAuth::JwtBearer {
            username,
            key,
            audience,
        })
    }
}

fn default_salesforce_login() -> String {
    "https://login.salesforce.com".into()
}
fn default_salesforce_version() -> String {
    "62.0".into()
}
fn default_bulk_threshold() -> u64 {
    50_000
}
fn default_salesforce_overlap() -> u64 {
    600
}
fn default_salesforce_lag() -> u64 {
    60
}
fn default_api_budget() -> f64 {
    0.8
}
fn default_salesforce_retries() -> u32 {
    5
}
fn default_bulk_poll_ms() -> u64 {
    500
}
fn default_retry_base_ms() -> u64 {
    1000
}

impl SalesforceConfig {
    /// Checks what parsing cannot; errors name the key under `source`.
    pub fn validate(&self) -> Result<(), KeyError> {
        if url::Url::parse(&self.login_url).is_err() {
            return Err(KeyError::new(&["source", "login_url"], "not a URL"));
        }
        if !(self.api_budget > 0.0 && self.api_budget <= 1.0) {
            return Err(KeyError::new(
                &["source", "api_budget"],
                "must be a share of the daily limit, above 0 and at most 1",
            ));
        }
        self.auth()?;
        Ok(())
    }
}
