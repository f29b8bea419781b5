//! `[destination]` with `type = "lake"`: the keys, their defaults and their validation.

use serde::Deserialize;

use crate::config::KeyError;

/// `[destination]` with `type = "lake"`: Delta Lake tables, one per stream.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Folder (object_store URL) holding one Delta table per stream. Default
    /// `{staging.url}/{pipeline.name}/lake`, i.e. on the staging object store.
    pub url: Option<String>,
}

impl LakeConfig {
    /// The root URL of the Delta tables: `url`, or the default under the staging URL.
    pub fn root_url(&self, staging_url: &str, pipeline: &str) -> String {
        match &self.url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("{}/{pipeline}/lake", staging_url.trim_end_matches('/')),
        }
    }

    /// Checks what parsing cannot; errors name the key under `destination`.
    pub fn validate(&self) -> Result<(), KeyError> {
        if let Some(url) = &self.url {
            if let Err(e) = url::Url::parse(url) {
                return Err(KeyError::new(
                    &["destination", "url"],
                    &format!("not a URL ({e}); use e.g. file:///var/lib/syncline/lake"),
                ));
            }
        }
        Ok(())
    }
}
