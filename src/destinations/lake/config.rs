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
    /// How many of a load's keys one pass of a merge into a table with rows takes; a larger
    /// load is merged in several passes, each reading the files that hold its keys, and
    /// committed as one. Memory holds an index of one pass's keys (50–100 bytes plus the key
    /// each). Default 1,000,000.
    pub merge_keys_per_pass: Option<u64>,
}

/// `destination.merge_keys_per_pass`'s default: a million-key pass indexes 50–150 MB.
pub const DEFAULT_MERGE_KEYS_PER_PASS: u64 = 1_000_000;

impl LakeConfig {
    /// The root URL of the Delta tables: `url`, or the default under the staging URL.
    pub fn root_url(&self, staging_url: &str, pipeline: &str) -> String {
        match &self.url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("{}/{pipeline}/lake", staging_url.trim_end_matches('/')),
        }
    }

    /// `merge_keys_per_pass`, or its default.
    pub fn merge_keys_per_pass(&self) -> u64 {
        self.merge_keys_per_pass
            .unwrap_or(DEFAULT_MERGE_KEYS_PER_PASS)
    }

    /// Checks what parsing cannot; errors name the key under `destination`.
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.merge_keys_per_pass == Some(0) {
            return Err(KeyError::new(
                &["destination", "merge_keys_per_pass"],
                "must be at least 1 (the default is 1000000)",
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_pass_of_no_keys_is_a_configuration_error_naming_the_key() {
        let lake: LakeConfig = toml::from_str("merge_keys_per_pass = 0").unwrap();
        let err = lake.validate().unwrap_err().to_string();
        assert!(err.contains("merge_keys_per_pass"), "{err}");
        let lake: LakeConfig = toml::from_str("").unwrap();
        assert_eq!(lake.merge_keys_per_pass(), DEFAULT_MERGE_KEYS_PER_PASS);
    }
}
