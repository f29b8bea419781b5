//! `[destination]` with `type = "postgres"`: the keys, their defaults and their validation.

use serde::Deserialize;

use crate::config::{KeyError, Secret};

/// `[destination]` with `type = "postgres"`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db`. Use `${VAR}`; it is never logged.
    pub url: Secret,
    /// Schema the stream tables and the `_syncline_loads` ledger live in. Default `public`.
    #[serde(default = "default_schema")]
    pub schema: String,
}

fn default_schema() -> String {
    "public".into()
}

impl PostgresConfig {
    /// Checks what parsing cannot; errors name the key under `destination`.
    pub fn validate(&self) -> Result<(), KeyError> {
        let url = self.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            // Do not echo the value: it carries the password.
            return Err(KeyError::new(
                &["destination", "url"],
                "must start with postgres:// or postgresql://",
            ));
        }
        if self.schema.is_empty() {
            return Err(KeyError::new(&["destination", "schema"], "is empty"));
        }
        Ok(())
    }
}
