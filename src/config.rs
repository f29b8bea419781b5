//! The pipeline configuration: one TOML file per pipeline.
//!
//! Parsing is strict (unknown keys are errors) and every error names the key and the line.
//! String values may reference environment variables as `${VAR}`; they are resolved after
//! parsing, so a secret never passes through the TOML parser's error messages. Secrets are
//! held in [`Secret`], whose `Debug` and `Display` never show the value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A value that must never appear in logs, reports or errors.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub pipeline: PipelineConfig,
    pub staging: StagingConfig,
    pub source: SourceConfig,
    pub destination: DestinationConfig,
    /// Per-stream settings, keyed by stream name; every key must be one of `source.streams`.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamSettings>,
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Names the pipeline; staged files, state and locks live under this name. Letters,
    /// digits, `_` and `-` only.
    pub name: String,
    /// Rows per Arrow record batch (and the unit of memory use). Default 10,000.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Rows per staged Parquet file before a new file is started. Default 500,000.
    #[serde(default = "default_file_rows")]
    pub file_rows: usize,
    /// A lock older than this (seconds) is considered abandoned and taken over. Default 3600.
    #[serde(default = "default_lock_ttl")]
    pub lock_ttl_seconds: u64,
}

/// `[staging]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagingConfig {
    /// Where Parquet files, manifests, state and locks are written: any object_store URL
    /// (`file:///path`, `s3://bucket/prefix`, `memory://`).
    pub url: String,
    /// S3 settings for `s3://` URLs (MinIO and other S3-compatible servers need `endpoint`).
    #[serde(default)]
    pub s3: Option<S3Config>,
}

/// `[staging.s3]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:9000` for MinIO.
    pub endpoint: Option<String>,
    /// Region; default `us-east-1`.
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Allow plain `http://` endpoints (local MinIO). Default false.
    #[serde(default)]
    pub allow_http: bool,
}

/// `[source]`, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    Hubspot(HubspotConfig),
    Salesforce(SalesforceConfig),
    Postgres(PostgresSourceConfig),
    Files(crate::sources::files::FilesConfig),
}

impl SourceConfig {
    pub fn streams(&self) -> &[String] {
        match self {
            SourceConfig::Hubspot(h) => &h.streams,
            SourceConfig::Salesforce(s) => &s.streams,
            SourceConfig::Postgres(p) => &p.streams,
            SourceConfig::Files(f) => &f.streams,
        }
    }
}

/// `[source]` with `type = "postgres"`: tables of a PostgreSQL database, by logical
/// replication (`mode = "cdc"`) or by a cursor column (`mode = "cursor"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// `postgres://user:password@host:port/db`. Use `${VAR}`; it is never logged. CDC needs a
    /// user with the `REPLICATION` attribute (or a superuser) that may create publications.
    pub url: Secret,
    /// `"cdc"` (default): logical replication with the `pgoutput` plugin, an initial snapshot
    /// consistent with the slot, inserts, updates and deletes. `"cursor"`: incremental reads
    /// by each table's `cursor_column` (no deletes), for servers without logical replication.
    #[serde(default)]
    pub mode: PostgresMode,
    /// Tables to sync, each a stream; the table is `public.<stream>` unless
    /// `[source.tables.NAME] table` names another.
    pub streams: Vec<String>,
    /// Per-table settings, keyed by stream name.
    #[serde(default)]
    pub tables: BTreeMap<String, PostgresTableConfig>,
    /// CDC: replication slot and publication names are `{slot_prefix}_{stream}` (lowercased,
    /// other characters than letters, digits and `_` replaced by `_`). Default
    /// `syncline_{pipeline.name}`.
    pub slot_prefix: Option<String>,
    /// Cursor mode: only rows whose timestamp cursor is at least this many seconds old are
    /// read, so a long transaction that commits late with an older cursor value is not
    /// skipped. Default 0 (no upper bound). Integer cursors ignore it.
    #[serde(default)]
    pub lag_seconds: u64,
}

/// How the postgres source reads changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMode {
    #[default]
    Cdc,
    Cursor,
}

/// `[source.tables.NAME]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTableConfig {
    /// The source table, optionally schema-qualified (`sales.contacts`). Default: the
    /// stream name in schema `public`.
    pub table: Option<String>,
    /// The key column (one column, integer or text-like). Default: the table's primary key;
    /// a table without a single-column primary key needs it.
    pub key: Option<String>,
    /// Cursor mode (required there): a `timestamp`, `timestamptz` or integer column that
    /// grows whenever a row changes, e.g. `updated_at`.
    pub cursor_column: Option<String>,
    /// Columns to sync (the key is always included). Default: every column.
    pub columns: Option<Vec<String>>,
}

impl PostgresSourceConfig {
    /// Settings of one table (defaults when it has no `[source.tables.NAME]`).
    pub fn table(&self, stream: &str) -> PostgresTableConfig {
        self.tables.get(stream).cloned().unwrap_or_default()
    }
}

/// `[source]` with `type = "salesforce"`.
#[derive(Debug, Clone, Deserialize)]
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

/// A Salesforce login configuration that selects no flow, two flows or an incomplete one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKeyError {
    /// The key to fix, under `source`.
    pub key: &'static str,
    /// What is wrong with it; never quotes a value.
    pub message: &'static str,
}

impl fmt::Display for AuthKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`source.{}` {}", self.key, self.message)
    }
}

impl std::error::Error for AuthKeyError {}

impl SalesforceConfig {
    /// The login flow the keys select. Exactly one must be configured: `client_secret`
    /// (client credentials), or `username` with one of `private_key` and `private_key_path`
    /// (JWT bearer). Pure: the key file is not read here.
    pub fn auth(&self) -> std::result::Result<SalesforceAuth<'_>, AuthKeyError> {
        fn error<T>(
            key: &'static str,
            message: &'static str,
        ) -> std::result::Result<T, AuthKeyError> {
            Err(AuthKeyError { key, message })
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

/// `[source]` with `type = "hubspot"`.
#[derive(Debug, Clone, Deserialize)]
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

/// `[destination]`, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DestinationConfig {
    Postgres(PostgresConfig),
    Lake(LakeConfig),
    Snowflake(SnowflakeConfig),
}

/// `[destination]` with `type = "snowflake"`: loads read the staged Parquet through an external
/// stage (`COPY INTO`), then `MERGE` into one table per stream, with the `_syncline_loads` ledger.
/// Authenticate with `password` or with a key pair (`private_key` or `private_key_path`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeConfig {
    /// Account identifier, e.g. `myorg-myaccount`.
    pub account: String,
    /// Login name of the user syncline connects as.
    pub user: String,
    /// Role to use; default: the user's default role.
    pub role: Option<String>,
    /// Warehouse that runs COPY and MERGE; default: the user's default warehouse.
    pub warehouse: Option<String>,
    /// Database holding `schema`.
    pub database: String,
    /// Schema the stream tables, the ledger and syncline's stages live in (created when
    /// missing). Default `PUBLIC`.
    #[serde(default = "default_snowflake_schema")]
    pub schema: String,
    /// Password authentication. Use `${VAR}`; it is never logged.
    pub password: Option<Secret>,
    /// Key-pair authentication: the PKCS#8 private key PEM itself. Use `${VAR}`.
    pub private_key: Option<Secret>,
    /// Key-pair authentication: a file holding the PKCS#8 private key PEM.
    pub private_key_path: Option<String>,
    /// Passphrase of an encrypted private key. Use `${VAR}`.
    pub private_key_passphrase: Option<Secret>,
    /// Endpoint override, e.g. a PrivateLink URL or an emulator (`http://127.0.0.1:8080`).
    /// Default `https://{account}.snowflakecomputing.com`.
    pub url: Option<String>,
    /// The staging URL as Snowflake sees it: a load staged at `{staging.url}/x` is read from
    /// `{stage_url}/x`. Default `staging.url`. Set it when Snowflake reaches the same objects
    /// under another name (another bucket alias, or `file://` for an emulator).
    pub stage_url: Option<String>,
    /// Storage integration the external stage uses (`STORAGE_INTEGRATION = ...`): how Snowflake
    /// is allowed to read the staging bucket. Without it the bucket must be public to Snowflake.
    pub storage_integration: Option<String>,
    /// Longest time a statement may run, set as the session's `STATEMENT_TIMEOUT_IN_SECONDS`.
    /// Default 3600.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_seconds: u64,
}

fn default_snowflake_schema() -> String {
    "PUBLIC".to_string()
}
fn default_statement_timeout() -> u64 {
    3600
}

/// How syncline authenticates to Snowflake, checked by [`SnowflakeConfig::auth`].
#[derive(Debug, Clone, Copy)]
pub enum SnowflakeAuth<'a> {
    Password(&'a Secret),
    /// PEM text from `private_key`.
    KeyPem(&'a Secret),
    /// PEM file from `private_key_path`.
    KeyFile(&'a str),
}

impl SnowflakeConfig {
    /// Exactly one of `password`, `private_key` and `private_key_path`; the passphrase only with
    /// a key. Errors name the offending key.
    pub fn auth(&self) -> std::result::Result<SnowflakeAuth<'_>, AuthKeyError> {
        let auth = match (&self.password, &self.private_key, &self.private_key_path) {
            (Some(password), None, None) => SnowflakeAuth::Password(password),
            (None, Some(pem), None) => SnowflakeAuth::KeyPem(pem),
            (None, None, Some(path)) => SnowflakeAuth::KeyFile(path),
            (None, None, None) => {
                return Err(AuthKeyError {
                    key: "password",
                    message: "is missing: set `password`, or `private_key` or `private_key_path` for key-pair authentication",
                });
            }
            (Some(_), _, _) => {
                return Err(AuthKeyError {
                    key: "password",
                    message: "and a private key are both set; keep one authentication method",
                });
            }
            (None, Some(_), Some(_)) => {
                return Err(AuthKeyError {
                    key: "private_key_path",
                    message: "and `private_key` are both set; give the key only once",
                });
            }
        };
        if self.private_key_passphrase.is_some() && matches!(auth, SnowflakeAuth::Password(_)) {
            return Err(AuthKeyError {
                key: "private_key_passphrase",
                message: "applies only to key-pair authentication; remove it",
            });
        }
        Ok(auth)
    }
}

/// `[destination]` with `type = "lake"`: Delta Lake tables, one per stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Folder (object_store URL) holding one Delta table per stream. Default
    /// `{staging.url}/{pipeline.name}/lake`, i.e. on the staging object store.
    pub url: Option<String>,
}

impl Config {
    /// The root URL of the lake's Delta tables (see [`LakeConfig::url`]).
    pub fn lake_url(&self, lake: &LakeConfig) -> String {
        match &lake.url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!(
                "{}/{}/lake",
                self.staging.url.trim_end_matches('/'),
                self.pipeline.name
            ),
        }
    }
}

/// `[destination]` with `type = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db`. Use `${VAR}`; it is never logged.
    pub url: Secret,
    /// Schema the stream tables and the `_syncline_loads` ledger live in. Default `public`.
    #[serde(default = "default_schema")]
    pub schema: String,
}

/// `[streams.NAME]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// `"hard"` (default) removes deleted records; `"soft"` keeps them with `_syncline_deleted_at` set.
    #[serde(default)]
    pub deletes: DeleteMode,
}

/// How a delete at the source reaches the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    #[default]
    Hard,
    Soft,
}

fn default_batch_rows() -> usize {
    10_000
}
fn default_file_rows() -> usize {
    500_000
}
fn default_lock_ttl() -> u64 {
    3600
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
fn default_schema() -> String {
    "public".into()
}

impl Config {
    /// Reads, parses, interpolates and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses `text` (named `path` in errors) resolving `${VAR}` with `env`.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let doc = Document {
            text,
            path: path.to_path_buf(),
        };
        let mut config: Config = toml::from_str(text).map_err(|e| doc.parse_error(&e))?;
        config.interpolate(&doc, env)?;
        config.validate(&doc)?;
        Ok(config)
    }

    /// Settings of one stream (defaults when it has no `[streams.NAME]` table).
    pub fn stream_settings(&self, stream: &str) -> StreamSettings {
        self.streams.get(stream).cloned().unwrap_or_default()
    }

    fn interpolate(&mut self, doc: &Document, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        let resolve = |value: &mut String, key: &[&str]| -> Result<()> {
            *value = interpolate_value(value, env).map_err(|var| {
                doc.key_error(key, &format!("environment variable {var} is not set"))
            })?;
            Ok(())
        };
        resolve(&mut self.staging.url, &["staging", "url"])?;
        if let Some(s3) = &mut self.staging.s3 {
            if let Some(endpoint) = &mut s3.endpoint {
                resolve(endpoint, &["staging", "s3", "endpoint"])?;
            }
            if let Some(key) = &mut s3.access_key_id {
                resolve(&mut key.0, &["staging", "s3", "access_key_id"])?;
            }
            if let Some(key) = &mut s3.secret_access_key {
                resolve(&mut key.0, &["staging", "s3", "secret_access_key"])?;
            }
        }
        match &mut self.source {
            SourceConfig::Hubspot(h) => {
                resolve(&mut h.base_url, &["source", "base_url"])?;
                resolve(&mut h.token.0, &["source", "token"])?;
            }
            SourceConfig::Salesforce(s) => {
                resolve(&mut s.login_url, &["source", "login_url"])?;
                resolve(&mut s.client_id, &["source", "client_id"])?;
                if let Some(secret) = &mut s.client_secret {
                    resolve(&mut secret.0, &["source", "client_secret"])?;
                }
                if let Some(username) = &mut s.username {
                    resolve(username, &["source", "username"])?;
                }
                if let Some(key) = &mut s.private_key {
                    resolve(&mut key.0, &["source", "private_key"])?;
                }
                if let Some(path) = &mut s.private_key_path {
                    resolve(path, &["source", "private_key_path"])?;
                }
                if let Some(audience) = &mut s.audience {
                    resolve(audience, &["source", "audience"])?;
                }
            }
            SourceConfig::Postgres(p) => {
                resolve(&mut p.url.0, &["source", "url"])?;
            }
            SourceConfig::Files(f) => {
                f.order_declared_columns(|key| find_key_line(doc.text, key));
                resolve(&mut f.url, &["source", "url"])?;
                if let Some(s3) = &mut f.s3 {
                    if let Some(endpoint) = &mut s3.endpoint {
                        resolve(endpoint, &["source", "s3", "endpoint"])?;
                    }
                    if let Some(key) = &mut s3.access_key_id {
                        resolve(&mut key.0, &["source", "s3", "access_key_id"])?;
                    }
                    if let Some(key) = &mut s3.secret_access_key {
                        resolve(&mut key.0, &["source", "s3", "secret_access_key"])?;
                    }
                }
            }
        }
        match &mut self.destination {
            DestinationConfig::Postgres(p) => {
                resolve(&mut p.url.0, &["destination", "url"])?;
                resolve(&mut p.schema, &["destination", "schema"])?;
            }
            DestinationConfig::Lake(l) => {
                if let Some(url) = &mut l.url {
                    resolve(url, &["destination", "url"])?;
                }
            }
            DestinationConfig::Snowflake(s) => {
                for (value, key) in [
                    (&mut s.account, "account"),
                    (&mut s.user, "user"),
                    (&mut s.database, "database"),
                    (&mut s.schema, "schema"),
                ] {
                    resolve(value, &["destination", key])?;
                }
                for (value, key) in [
                    (&mut s.role, "role"),
                    (&mut s.warehouse, "warehouse"),
                    (&mut s.private_key_path, "private_key_path"),
                    (&mut s.url, "url"),
                    (&mut s.stage_url, "stage_url"),
                    (&mut s.storage_integration, "storage_integration"),
                ] {
                    if let Some(value) = value {
                        resolve(value, &["destination", key])?;
                    }
                }
                for (secret, key) in [
                    (&mut s.password, "password"),
                    (&mut s.private_key, "private_key"),
                    (&mut s.private_key_passphrase, "private_key_passphrase"),
                ] {
                    if let Some(secret) = secret {
                        resolve(&mut secret.0, &["destination", key])?;
                    }
                }
            }
        }
        Ok(())
    }

    fn validate(&self, doc: &Document) -> Result<()> {
        let name = &self.pipeline.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(doc.key_error(
                &["pipeline", "name"],
                "must be non-empty and use only letters, digits, `_` and `-`",
            ));
        }
        if self.pipeline.batch_rows == 0 {
            return Err(doc.key_error(&["pipeline", "batch_rows"], "must be at least 1"));
        }
        if self.pipeline.file_rows < self.pipeline.batch_rows {
            return Err(doc.key_error(&["pipeline", "file_rows"], "must be at least `batch_rows`"));
        }
        if let Err(e) = url::Url::parse(&self.staging.url) {
            return Err(doc.key_error(
                &["staging", "url"],
                &format!(
                    "not a URL ({e}); use e.g. file:///var/lib/syncline/stage or s3://bucket/prefix"
                ),
            ));
        }
        let streams = self.source.streams();
        if streams.is_empty() {
            return Err(doc.key_error(&["source", "streams"], "lists no streams"));
        }
        for (i, stream) in streams.iter().enumerate() {
            if stream.is_empty()
                || !stream
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(doc.key_error(
                    &["source", "streams"],
                    &format!("stream name {stream:?} must use only letters, digits, `_` and `-`"),
                ));
            }
            if streams[..i].contains(stream) {
                return Err(doc.key_error(
                    &["source", "streams"],
                    &format!("stream {stream:?} is listed twice"),
                ));
            }
        }
        for stream in self.streams.keys() {
            if !streams.contains(stream) {
                return Err(doc.key_error(
                    &["streams", stream],
                    &format!("stream {stream:?} is not listed in source.streams {streams:?}"),
                ));
            }
        }
        match &self.source {
            SourceConfig::Hubspot(h) => {
                if url::Url::parse(&h.base_url).is_err() {
                    return Err(doc.key_error(&["source", "base_url"], "not a URL"));
                }
                if h.token.expose().is_empty() {
                    return Err(doc.key_error(&["source", "token"], "is empty"));
                }
            }
            SourceConfig::Salesforce(s) => {
                if url::Url::parse(&s.login_url).is_err() {
                    return Err(doc.key_error(&["source", "login_url"], "not a URL"));
                }
                if !(s.api_budget > 0.0 && s.api_budget <= 1.0) {
                    return Err(doc.key_error(
                        &["source", "api_budget"],
                        "must be a share of the daily limit, above 0 and at most 1",
                    ));
                }
                if let Err(err) = s.auth() {
                    return Err(doc.key_error(&["source", err.key], err.message));
                }
            }
            SourceConfig::Postgres(p) => {
                if !(p.url.expose().starts_with("postgres://")
                    || p.url.expose().starts_with("postgresql://"))
                {
                    // Do not echo the value: it carries the password.
                    return Err(doc.key_error(
                        &["source", "url"],
                        "must start with postgres:// or postgresql://",
                    ));
                }
                for (stream, table) in &p.tables {
                    if !streams.contains(stream) {
                        return Err(doc.key_error(
                            &["source", "tables", stream],
                            &format!(
                                "stream {stream:?} is not listed in source.streams {streams:?}"
                            ),
                        ));
                    }
                    if let Some(name) = &table.table {
                        let parts: Vec<&str> = name.split('.').collect();
                        if parts.len() > 2 || parts.iter().any(|part| part.is_empty()) {
                            return Err(doc.key_error(
                                &["source", "tables", stream, "table"],
                                "must be `table` or `schema.table`",
                            ));
                        }
                    }
                }
                if p.mode == PostgresMode::Cursor {
                    for stream in streams {
                        if p.table(stream).cursor_column.is_none() {
                            return Err(doc.key_error(
                                &["source", "mode"],
                                &format!(
                                    "is \"cursor\", so stream {stream:?} needs \
                                     `[source.tables.{stream}] cursor_column` (a timestamp or \
                                     integer column that grows on every change)"
                                ),
                            ));
                        }
                    }
                }
                if let Some(prefix) = &p.slot_prefix {
                    if prefix.is_empty()
                        || !prefix
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    {
                        return Err(doc.key_error(
                            &["source", "slot_prefix"],
                            "must use only lowercase letters, digits and `_` (replication slot names)",
                        ));
                    }
                }
            }
            SourceConfig::Files(f) => {
                if let Err(err) = f.validate() {
                    let key: Vec<&str> = err.key.iter().map(String::as_str).collect();
                    return Err(doc.key_error(&key, &err.message));
                }
            }
        }
        match &self.destination {
            DestinationConfig::Postgres(p) => {
                if !(p.url.expose().starts_with("postgres://")
                    || p.url.expose().starts_with("postgresql://"))
                {
                    // Do not echo the value: it carries the password.
                    return Err(doc.key_error(
                        &["destination", "url"],
                        "must start with postgres:// or postgresql://",
                    ));
                }
                if p.schema.is_empty() {
                    return Err(doc.key_error(&["destination", "schema"], "is empty"));
                }
            }
            DestinationConfig::Lake(l) => {
                if let Some(url) = &l.url {
                    if let Err(e) = url::Url::parse(url) {
                        return Err(doc.key_error(
                            &["destination", "url"],
                            &format!("not a URL ({e}); use e.g. file:///var/lib/syncline/lake"),
                        ));
                    }
                }
            }
            DestinationConfig::Snowflake(s) => {
                for (value, key) in [
                    (&s.account, "account"),
                    (&s.user, "user"),
                    (&s.database, "database"),
                    (&s.schema, "schema"),
                ] {
                    if value.is_empty() {
                        return Err(doc.key_error(&["destination", key], "is empty"));
                    }
                }
                if let Err(err) = s.auth() {
                    return Err(doc.key_error(&["destination", err.key], err.message));
                }
                if let Some(url) = &s.url {
                    match url::Url::parse(url) {
                        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                        _ => {
                            return Err(doc.key_error(
                                &["destination", "url"],
                                "must be an http(s) URL, e.g. https://myorg-myaccount.privatelink.snowflakecomputing.com",
                            ));
                        }
                    }
                }
                if let Some(url) = &s.stage_url {
                    if let Err(e) = url::Url::parse(url) {
                        return Err(doc.key_error(
                            &["destination", "stage_url"],
                            &format!("not a URL ({e}); use e.g. s3://bucket/prefix"),
                        ));
                    }
                }
                if s.statement_timeout_seconds == 0 {
                    return Err(doc.key_error(
                        &["destination", "statement_timeout_seconds"],
                        "must be at least 1",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Replaces every `${VAR}`; `$$` stays a literal `$`. Returns the name of a missing variable.
pub fn interpolate_value(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The config text, kept to point errors at lines.
struct Document<'a> {
    text: &'a str,
    path: PathBuf,
}

impl Document<'_> {
    fn parse_error(&self, err: &toml::de::Error) -> Error {
        // Only the message and position: toml's own rendering quotes the source line, which
        // could hold a literal secret.
        match err.span() {
            Some(span) => {
                let (mut line, mut col) = line_col(self.text, span.start);
                // Inside a `type`-tagged table toml can only point at the table; find the key.
                if let Some(field) = unknown_field(err.message()) {
                    if let Some(found) = find_key_in_table(self.text, line, field) {
                        (line, col) = (found, 1);
                    }
                }
                Error::Config(format!(
                    "{}:{line}:{col}: {}",
                    self.path.display(),
                    err.message()
                ))
            }
            None => Error::Config(format!("{}: {}", self.path.display(), err.message())),
        }
    }

    fn key_error(&self, key: &[&str], message: &str) -> Error {
        let dotted = key.join(".");
        match find_key_line(self.text, key) {
            Some(line) => Error::Config(format!(
                "{}:{line}: `{dotted}` {message}",
                self.path.display()
            )),
            None => Error::Config(format!("{}: `{dotted}` {message}", self.path.display())),
        }
    }
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// The line (1-based) at or after `from` that assigns `field`, before the next table header.
fn find_key_in_table(text: &str, from: usize, field: &str) -> Option<usize> {
    for (i, raw) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let line = raw.trim();
        if line.starts_with('[') && i + 1 > from {
            return None;
        }
        if let Some((lhs, _)) = line.split_once('=') {
            if lhs.trim().trim_matches('"') == field {
                return Some(i + 1);
            }
        }
    }
    None
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// The 1-based line that assigns `key` (`[a.b]` header then `c = ...`, or `[a]` then
/// `b.c = ...`), or the header line of a table key such as `streams.contacts`.
fn find_key_line(text: &str, key: &[&str]) -> Option<usize> {
    let mut table: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = header
                .trim()
                .trim_start_matches('[')
                .split('.')
                .map(|p| p.trim().trim_matches('"').to_string())
                .collect();
            if table == key {
                return Some(i + 1);
            }
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        if line.starts_with('#') {
            continue;
        }
        let mut full = table.clone();
        full.extend(
            lhs.trim()
                .split('.')
                .map(|p| p.trim().trim_matches('"').to_string()),
        );
        if full == key {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[pipeline]
name = "crm"
[staging]
url = "file:///var/lib/syncline/stage"     # any object_store URL
[source]
type = "hubspot"
base_url = "http://127.0.0.1:8080"          # default https://api.hubapi.com
token = "${HUBSPOT_TOKEN}"                  # ${VAR} is read from the environment
streams = ["contacts", "companies", "deals"]
[destination]
type = "postgres"
url = "${DATABASE_URL}"
schema = "crm"
[streams.contacts]                          # optional per-stream settings
deletes = "soft"                            # "hard" (default) or "soft" (_syncline_deleted_at)
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "HUBSPOT_TOKEN" => Some("pat-na1-secret".into()),
            "DATABASE_URL" => Some("postgres://u:hunter2@localhost/db".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("crm.toml"), &env)
    }

    fn parse_pg(source: &str) -> Result<Config> {
        parse(&format!(
            "[pipeline]\nname = \"ops\"\n[staging]\nurl = \"file:///tmp/s\"\n\
             [destination]\ntype = \"lake\"\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://u@h/db\"\nstreams = [\"contacts\"]\n{source}"
        ))
    }

    #[test]
    fn postgres_source_settings_are_checked() {
        let config = parse_pg(
            "mode = \"cursor\"\n[source.tables.contacts]\ntable = \"sales.contacts\"\n\
             cursor_column = \"updated_at\"",
        )
        .unwrap();
        let SourceConfig::Postgres(pg) = &config.source else {
            panic!("postgres source");
        };
        assert_eq!(pg.mode, PostgresMode::Cursor);
        assert_eq!(
            pg.table("contacts").table.as_deref(),
            Some("sales.contacts")
        );

        let message = |source: &str| parse_pg(source).unwrap_err().to_string();
        let missing_cursor = message("mode = \"cursor\"");
        assert!(missing_cursor.contains("cursor_column"), "{missing_cursor}");
        let unknown_stream = message("[source.tables.deals]\nkey = \"id\"");
        assert!(
            unknown_stream.contains("source.streams"),
            "{unknown_stream}"
        );
        let bad_table = message("[source.tables.contacts]\ntable = \"a.b.c\"");
        assert!(bad_table.contains("schema.table"), "{bad_table}");
        let bad_prefix = message("slot_prefix = \"My-Slots\"");
        assert!(bad_prefix.contains("slot_prefix"), "{bad_prefix}");
        let bad_url = parse(
            "[pipeline]\nname = \"ops\"\n[staging]\nurl = \"file:///tmp/s\"\n\
             [destination]\ntype = \"lake\"\n[source]\ntype = \"postgres\"\n\
             url = \"mysql://u:hunter2@h/db\"\nstreams = [\"contacts\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(bad_url.contains("postgres://"), "{bad_url}");
        assert!(!bad_url.contains("hunter2"), "{bad_url}");
    }

    #[test]
    fn the_documented_example_parses() {
        let config = parse(EXAMPLE).unwrap();
        let SourceConfig::Hubspot(h) = &config.source else {
            panic!("hubspot source")
        };
        assert_eq!(h.token.expose(), "pat-na1-secret");
        assert_eq!(h.streams, ["contacts", "companies", "deals"]);
        assert_eq!(config.stream_settings("contacts").deletes, DeleteMode::Soft);
        assert_eq!(config.stream_settings("deals").deletes, DeleteMode::Hard);
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{config:?}").contains("pat-na1-secret"));
    }

    fn snowflake(auth: &str) -> String {
        let destination = format!(
            "[destination]\ntype = \"snowflake\"\naccount = \"acme-prod\"\nuser = \"SYNCLINE\"\n\
             database = \"RAW\"\nschema = \"crm\"\n{auth}\n"
        );
        let start = EXAMPLE.find("[destination]").unwrap();
        let end = EXAMPLE.find("[streams.contacts]").unwrap();
        format!("{}{destination}{}", &EXAMPLE[..start], &EXAMPLE[end..])
    }

    #[test]
    fn snowflake_takes_one_authentication_method() {
        let config = parse(&snowflake("password = \"${DATABASE_URL}\"")).unwrap();
        let DestinationConfig::Snowflake(s) = &config.destination else {
            panic!("snowflake destination")
        };
        assert!(matches!(s.auth(), Ok(SnowflakeAuth::Password(_))));
        assert_eq!(s.statement_timeout_seconds, 3600);
        assert_eq!(s.stage_url, None);
        assert!(!format!("{config:?}").contains("hunter2"));

        let key = parse(&snowflake(
            "private_key_path = \"/etc/k.p8\"\nprivate_key_passphrase = \"${HUBSPOT_TOKEN}\"",
        ))
        .unwrap();
        let DestinationConfig::Snowflake(s) = &key.destination else {
            panic!("snowflake destination")
        };
        assert!(matches!(s.auth(), Ok(SnowflakeAuth::KeyFile("/etc/k.p8"))));

        let none = parse(&snowflake("")).unwrap_err().to_string();
        assert!(none.contains("destination.password"), "{none}");
        assert!(none.contains("private_key"), "{none}");
        let both = parse(&snowflake(
            "password = \"x\"\nprivate_key = \"${HUBSPOT_TOKEN}\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(both.contains("both set"), "{both}");
        assert!(!both.contains("pat-na1-secret"), "{both}");
        let stray = parse(&snowflake(
            "password = \"x\"\nprivate_key_passphrase = \"y\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(stray.contains("private_key_passphrase"), "{stray}");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = EXAMPLE.replace("schema = \"crm\"", "schema = \"crm\"\nschemma = \"x\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("crm.toml:15"), "{err}");
        assert!(err.contains("schemma"), "{err}");
    }

    #[test]
    fn missing_variable_names_key_and_line() {
        let text = EXAMPLE.replace("${DATABASE_URL}", "${NOPE_URL}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("crm.toml:13"), "{err}");
        assert!(err.contains("destination.url"), "{err}");
        assert!(err.contains("NOPE_URL"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let text = EXAMPLE.replace("name = \"crm\"", "name = 7");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("crm.toml:3"), "{err}");
    }

    #[test]
    fn stream_settings_must_name_a_listed_stream() {
        let text = format!("{EXAMPLE}[streams.tickets]\ndeletes = \"soft\"\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("crm.toml:17"), "{err}");
        assert!(err.contains("tickets"), "{err}");
    }

    #[test]
    fn bad_destination_url_does_not_echo_it() {
        let text = EXAMPLE.replace("${DATABASE_URL}", "mysql://u:hunter2@x/db");
        let err = parse(&text).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("crm.toml:13"), "{err}");
    }

    const SALESFORCE: &str = r#"
[pipeline]
name = "sf"
[staging]
url = "file:///var/lib/syncline/stage"
[source]
type = "salesforce"
login_url = "https://acme.my.salesforce.com"
client_id = "3MVG9-consumer-key"
client_secret = "${SF_SECRET}"
streams = ["Account", "Lead"]
[destination]
type = "postgres"
url = "${DATABASE_URL}"
"#;

    const FAKE_PEM: &str =
        "-----BEGIN PRIVATE KEY-----\nMIIEvQ-not-a-real-key\n-----END PRIVATE KEY-----\n";

    fn sf_env(name: &str) -> Option<String> {
        match name {
            "SF_SECRET" => Some("shh-secret".into()),
            "SF_USER" => Some("integration@acme.com".into()),
            "SF_KEY_PATH" => Some("/etc/syncline/sf.pem".into()),
            "SF_PRIVATE_KEY" => Some(FAKE_PEM.into()),
            "DATABASE_URL" => Some("postgres://u:hunter2@localhost/db".into()),
            _ => None,
        }
    }

    /// The Salesforce example with its `client_secret` line replaced by `auth`.
    fn parse_sf(auth: &str) -> Result<Config> {
        let text = SALESFORCE.replace("client_secret = \"${SF_SECRET}\"", auth);
        Config::parse(&text, Path::new("sf.toml"), &sf_env)
    }

    fn salesforce(config: &Config) -> &SalesforceConfig {
        match &config.source {
            SourceConfig::Salesforce(s) => s,
            _ => panic!("salesforce source"),
        }
    }

    #[test]
    fn client_secret_selects_client_credentials() {
        let config = parse_sf("client_secret = \"${SF_SECRET}\"").unwrap();
        match salesforce(&config).auth().unwrap() {
            SalesforceAuth::ClientCredentials { client_secret } => {
                assert_eq!(client_secret.expose(), "shh-secret");
            }
            other => panic!("client credentials expected, got {other:?}"),
        }
        assert!(!format!("{config:?}").contains("shh-secret"));
    }

    #[test]
    fn username_and_key_path_select_jwt_bearer_with_interpolation() {
        let config =
            parse_sf("username = \"${SF_USER}\"\nprivate_key_path = \"${SF_KEY_PATH}\"").unwrap();
        match salesforce(&config).auth().unwrap() {
            SalesforceAuth::JwtBearer {
                username,
                key: JwtKey::Path(path),
                audience,
            } => {
                assert_eq!(username, "integration@acme.com");
                assert_eq!(path, "/etc/syncline/sf.pem");
                assert_eq!(
                    audience, "https://acme.my.salesforce.com",
                    "defaults to login_url"
                );
            }
            other => panic!("JWT bearer with a key file expected, got {other:?}"),
        }
    }

    #[test]
    fn username_and_key_text_select_jwt_bearer_with_an_audience() {
        let config = parse_sf(
            "username = \"integration@acme.com\"\nprivate_key = \"${SF_PRIVATE_KEY}\"\n\
             audience = \"https://login.salesforce.com\"",
        )
        .unwrap();
        match salesforce(&config).auth().unwrap() {
            SalesforceAuth::JwtBearer {
                key: JwtKey::Pem(pem),
                audience,
                ..
            } => {
                assert_eq!(pem.expose(), FAKE_PEM);
                assert_eq!(audience, "https://login.salesforce.com");
            }
            other => panic!("JWT bearer with PEM text expected, got {other:?}"),
        }
        assert!(!format!("{config:?}").contains("not-a-real-key"));
    }

    #[test]
    fn login_flow_mistakes_name_the_key_to_fix() {
        let cases = [
            // Both flows: the error points at the client_secret line.
            (
                "client_secret = \"${SF_SECRET}\"\nusername = \"${SF_USER}\"",
                "`source.client_secret`",
                Some("sf.toml:10:"),
            ),
            // Neither flow.
            ("", "`source.client_secret` is missing", None),
            (
                "username = \"${SF_USER}\"",
                "`source.private_key` is missing",
                None,
            ),
            (
                "private_key_path = \"${SF_KEY_PATH}\"",
                "`source.username` is missing",
                None,
            ),
            (
                "username = \"${SF_USER}\"\nprivate_key = \"${SF_PRIVATE_KEY}\"\n\
                 private_key_path = \"${SF_KEY_PATH}\"",
                "`source.private_key_path`",
                Some("sf.toml:12:"),
            ),
            (
                "username = \"\"\nprivate_key_path = \"${SF_KEY_PATH}\"",
                "`source.username` is empty",
                Some("sf.toml:10:"),
            ),
            (
                "username = \"${SF_USER}\"\nprivate_key_path = \"\"",
                "`source.private_key_path` is empty",
                Some("sf.toml:11:"),
            ),
            (
                "client_secret = \"\"",
                "`source.client_secret` is empty",
                Some("sf.toml:10:"),
            ),
            (
                "client_secret = \"${SF_SECRET}\"\naudience = \"https://login.salesforce.com\"",
                "`source.audience` applies only to the JWT bearer flow",
                Some("sf.toml:11:"),
            ),
            (
                "username = \"${SF_USER}\"\nprivate_key_path = \"${SF_KEY_PATH}\"\n\
                 audience = \"login.salesforce.com\"",
                "`source.audience` not a URL",
                Some("sf.toml:12:"),
            ),
            (
                "username = \"${SF_USER}\"\nprivate_key = \"${SF_NO_SUCH_KEY}\"",
                "`source.private_key` environment variable SF_NO_SUCH_KEY is not set",
                Some("sf.toml:11:"),
            ),
        ];
        for (auth, wanted, line) in cases {
            let err = parse_sf(auth).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{auth:?}: {err}");
            let err = err.to_string();
            assert!(err.contains(wanted), "{auth:?}: {err}");
            if let Some(line) = line {
                assert!(err.contains(line), "{auth:?}: {err}");
            }
            assert!(!err.contains("shh-secret"), "{err}");
        }
    }

    #[test]
    fn a_key_path_in_private_key_is_refused_without_echoing_it() {
        let err = parse_sf("username = \"${SF_USER}\"\nprivate_key = \"${SF_KEY_PATH}\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sf.toml:11: `source.private_key` is not PEM text"),
            "{err}"
        );
        assert!(err.contains("private_key_path"), "{err}");
        assert!(!err.contains("/etc/syncline/sf.pem"), "{err}");
    }

    #[test]
    fn interpolation_handles_text_around_variables() {
        assert_eq!(
            interpolate_value("a${HUBSPOT_TOKEN}b", &env).unwrap(),
            "apat-na1-secretb"
        );
        assert_eq!(
            interpolate_value("${MISSING}", &env).unwrap_err(),
            "MISSING"
        );
    }
}
