//! `[destination]` with `type = "snowflake"`: the keys, their defaults, the authentication
//! they select, and their validation.

use serde::Deserialize;

use crate::config::{KeyError, Secret};

/// `[destination]` with `type = "snowflake"`: loads read the staged Parquet through an external
/// stage (`COPY INTO`), then `MERGE` into one table per stream, with the `_syncline_loads` ledger.
/// Authenticate with `password` or with a key pair (`private_key` or `private_key_path`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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
    pub fn auth(&self) -> Result<SnowflakeAuth<'_>, KeyError> {
        let auth = match (&self.password, &self.private_key, &self.private_key_path) {
            (Some(password), None, None) => SnowflakeAuth::Password(password),
            (None, Some(pem), None) => SnowflakeAuth::KeyPem(pem),
            (None, None, Some(path)) => SnowflakeAuth::KeyFile(path),
            (None, None, None) => {
                return Err(KeyError::new(
                    &["destination", "password"],
                    "is missing: set `password`, or `private_key` or `private_key_path` for key-pair authentication",
                ));
            }
            (Some(_), _, _) => {
                return Err(KeyError::new(
                    &["destination", "password"],
                    "and a private key are both set; keep one authentication method",
                ));
            }
            (None, Some(_), Some(_)) => {
                return Err(KeyError::new(
                    &["destination", "private_key_path"],
                    "and `private_key` are both set; give the key only once",
                ));
            }
        };
        if self.private_key_passphrase.is_some() && matches!(auth, SnowflakeAuth::Password(_)) {
            return Err(KeyError::new(
                &["destination", "private_key_passphrase"],
                "applies only to key-pair authentication; remove it",
            ));
        }
        Ok(auth)
    }
}

impl SnowflakeConfig {
    /// Checks what parsing cannot; errors name the key under `destination`.
    pub fn validate(&self) -> Result<(), KeyError> {
        for (value, key) in [
            (&self.account, "account"),
            (&self.user, "user"),
            (&self.database, "database"),
            (&self.schema, "schema"),
        ] {
            if value.is_empty() {
                return Err(KeyError::new(&["destination", key], "is empty"));
            }
        }
        self.auth()?;
        if let Some(url) = &self.url {
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => {
                    return Err(KeyError::new(
                        &["destination", "url"],
                        "must be an http(s) URL, e.g. https://myorg-myaccount.privatelink.snowflakecomputing.com",
                    ));
                }
            }
        }
        if let Some(url) = &self.stage_url {
            if let Err(e) = url::Url::parse(url) {
                return Err(KeyError::new(
                    &["destination", "stage_url"],
                    &format!("not a URL ({e}); use e.g. s3://bucket/prefix"),
                ));
            }
        }
        if self.statement_timeout_seconds == 0 {
            return Err(KeyError::new(
                &["destination", "statement_timeout_seconds"],
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
