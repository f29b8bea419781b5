//! `[models]`: where a pipeline's SQL models live, the settings of each model, and whether
//! the staging store keeps a Delta mirror of every stream for them to read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::KeyError;

/// `[models]`: SQL models materialized into the destination (see README, "Transforms and
/// models"). A pipeline without this table runs no models and keeps no mirror.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct ModelsConfig {
    /// Folder of models: every `**/NAME.sql` under it is the model `NAME`, one SELECT over
    /// streams and other models. Default `models` (relative to the working directory).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Folder of singular tests: every `NAME.sql` in it is a SELECT returning failing rows.
    /// Default `tests` (relative to the working directory); a missing folder holds none.
    #[serde(default = "default_tests")]
    pub tests: PathBuf,
    /// For PostgreSQL and Snowflake destinations: merge every load also into a Delta table
    /// per stream under `{staging.url}/{pipeline.name}/mirror`, with the same rules and
    /// load ids, so models read the merged state without reading back from the warehouse.
    /// Costs one more copy of each stream's live rows (Parquet, zstd) on the staging store.
    /// Default true; the lake destination needs no mirror (models read its tables).
    #[serde(default = "default_mirror")]
    pub mirror: bool,
    /// `[models.NAME]`: settings of one model; they override its header comments.
    #[serde(flatten)]
    pub models: BTreeMap<String, ModelSettings>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            dir: default_dir(),
            tests: default_tests(),
            mirror: default_mirror(),
            models: BTreeMap::new(),
        }
    }
}

/// `[models.NAME]`: the same settings a model's header comments may declare.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// `"table"` (default): replaced atomically on each run; `"incremental"`: merged by
    /// `key`; `"view"`: a view (lake destination only).
    pub materialized: Option<Materialized>,
    /// The model's key column (required for `incremental`; checked by `unique`).
    pub key: Option<String>,
    /// Tests on the model's rows: `unique(col)`, `not_null(col)`,
    /// `accepted_values(col: 'a', 'b')`, `relationships(col -> other.col)`.
    pub tests: Option<Vec<String>>,
}

/// How a model's result reaches the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Materialized {
    /// A table replaced atomically by each run.
    Table,
    /// A table whose rows are merged by key.
    Incremental,
    /// A DataFusion view over the lake (lake destination only).
    View,
}

impl Materialized {
    pub fn name(self) -> &'static str {
        match self {
            Materialized::Table => "table",
            Materialized::Incremental => "incremental",
            Materialized::View => "view",
        }
    }

    pub fn parse(text: &str) -> Option<Materialized> {
        match text {
            "table" => Some(Materialized::Table),
            "incremental" => Some(Materialized::Incremental),
            "view" => Some(Materialized::View),
            _ => None,
        }
    }
}

fn default_dir() -> PathBuf {
    PathBuf::from("models")
}
fn default_tests() -> PathBuf {
    PathBuf::from("tests")
}
fn default_mirror() -> bool {
    true
}

impl ModelsConfig {
    /// Checks what parsing cannot; errors name the key under `models`.
    pub fn validate(&self) -> Result<(), KeyError> {
        for (name, settings) in &self.models {
            if settings.materialized == Some(Materialized::Incremental) && settings.key.is_none() {
                return Err(KeyError::new(
                    &["models", name, "key"],
                    "is required when materialized = \"incremental\"",
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
    fn models_table_holds_its_keys_and_one_table_per_model() {
        let text = r#"
mirror = false
dir = "m"
[daily]
materialized = "incremental"
key = "id"
tests = ["unique(id)"]
"#;
        let config: ModelsConfig = toml::from_str(text).unwrap();
        assert!(!config.mirror);
        assert_eq!(config.dir, PathBuf::from("m"));
        let daily = &config.models["daily"];
        assert_eq!(daily.materialized, Some(Materialized::Incremental));
        assert!(config.validate().is_ok());

        let unknown = toml::from_str::<ModelsConfig>("[daily]\nmaterialised = \"table\"\n");
        assert!(unknown.is_err(), "a misspelt model key is refused");
        let keyless: ModelsConfig =
            toml::from_str("[daily]\nmaterialized = \"incremental\"\n").unwrap();
        assert_eq!(
            keyless.validate().unwrap_err().key,
            ["models", "daily", "key"]
        );
    }
}
