//! The pipeline configuration: one TOML file per pipeline.
//!
//! Parsing is strict (unknown keys are errors) and every error names the key and the line.
//! String values may reference environment variables as `${VAR}`; they are resolved after
//! parsing, so a secret never passes through the TOML parser's error messages. Secrets are
//! held in [`Secret`], whose `Debug` and `Display` never show the value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::Result;
use crate::error::{Classified, ErrorKind};
use crate::load::DeleteMode;
use crate::storage::S3Config;

mod document;
mod schedule;
mod transform;

pub use crate::destinations::lake::config::LakeConfig;
pub use crate::destinations::postgres::config::PostgresConfig;
pub use crate::destinations::snowflake::config::{SnowflakeAuth, SnowflakeConfig};
pub use crate::sources::files::config::FilesConfig;
pub use crate::sources::hubspot::config::HubspotConfig;
pub use crate::sources::postgres::config::{
    PostgresMode, PostgresSourceConfig, PostgresTableConfig,
};
pub use crate::sources::salesforce::config::{JwtKey, SalesforceAuth, SalesforceConfig};
pub use crate::stream::config::{StreamConfig, WebhookConfig};
pub use crate::transform::config::{Materialized, ModelSettings, ModelsConfig};
use document::Document;
pub use schedule::ReconcileConfig;
pub use transform::{CAST_TYPES, ColumnCase, decimal_cast};

/// A value that must never appear in logs, reports or errors.
#[derive(Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub pipeline: PipelineConfig,
    pub staging: StagingConfig,
    pub source: SourceConfig,
    pub destination: DestinationConfig,
    /// Per-stream settings, keyed by stream name; every key must be one of `source.streams`.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamSettings>,
    /// SQL models materialized into the destination; absent: no models and no mirror.
    #[serde(default)]
    pub models: Option<ModelsConfig>,
    /// A reconcile `syncline run` runs by itself, per stream, on a schedule (see README,
    /// "Reconcile"). None when the section is absent.
    #[serde(default)]
    pub reconcile: Option<ReconcileConfig>,
    /// `syncline stream` (micro-batch mode): flush thresholds, the HTTP listener, the
    /// webhook receiver. Absent: every default.
    #[serde(default)]
    pub stream: Option<StreamConfig>,
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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
    /// Seconds a stream lease lasts without renewal; the run holding it renews it every third
    /// of this, and another run takes it over only once it expired. 10 to 604800 (7 days).
    /// Default 3600.
    #[serde(default = "default_lock_ttl")]
    pub lock_ttl_seconds: u64,
}

/// `[staging]`
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StagingConfig {
    /// Where Parquet files, manifests, state and locks are written: any object_store URL
    /// (`file:///path`, `s3://bucket/prefix`, `memory://`).
    pub url: String,
    /// S3 settings for `s3://` URLs (MinIO and other S3-compatible servers need `endpoint`).
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// How staged Parquet files are compressed. Default `snappy`.
    #[serde(default)]
    pub compression: StageCompression,
}

/// `staging.compression`: the codec of staged Parquet files. Every load is encoded while it is
/// extracted, so the codec's speed is paid on every run, and its ratio on every byte kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StageCompression {
    /// Fast, about 2.5× smaller than the data; what Snowflake, Spark and DuckDB all read.
    #[default]
    Snappy,
    /// zstd level 1: about a third smaller than `snappy`, for about 10 % more CPU per load.
    Zstd,
    /// No compression: the least CPU, the most bytes.
    None,
}

/// `[source]`, selected by `type`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    Hubspot(HubspotConfig),
    Salesforce(SalesforceConfig),
    Postgres(PostgresSourceConfig),
    Files(FilesConfig),
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

/// `[destination]`, selected by `type`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DestinationConfig {
    Postgres(PostgresConfig),
    Lake(LakeConfig),
    Snowflake(SnowflakeConfig),
}

/// `[streams.NAME]`
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// `"hard"` (default) removes deleted records; `"soft"` keeps them with `_syncline_deleted_at` set.
    #[serde(default)]
    pub deletes: DeleteMode,
    // The transform between stage and merge (README, "Transforms and models"); checked in
    // `transform.rs`. Column names in `select`, `exclude`, `rename`, `hash` and `cast` are the
    // source's; `filter` sees the output's.
    /// Columns to keep, by name or glob (`properties_*`); the key must be among them, and
    /// `_syncline_version` and `_syncline_deleted` are always kept. Default: every column.
    #[serde(default)]
    pub select: Option<Vec<String>>,
    /// Columns to drop, by name or glob; cannot drop the key or syncline's own columns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// New names for columns, `{ source_name = "new_name" }`. Renaming the key makes the
    /// new name the destination table's key.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Columns whose values are replaced by their SHA-256 (hex), salted with the environment
    /// variable SYNCLINE_HASH_SALT when it is set (for PII). Not the key.
    #[serde(default)]
    pub hash: Vec<String>,
    /// Column types to cast to, `{ column = "bigint" }`: bigint, double, text, boolean,
    /// date, timestamp or decimal(P,S) (P at most 38; also numeric(P,S), number(P,S)). A
    /// value that does not convert fails the load (nothing is merged); extra fraction digits
    /// round half away from zero.
    #[serde(default)]
    pub cast: BTreeMap<String, String>,
    /// A SQL predicate over the output columns (after rename); live rows for which it is not
    /// true are left out and counted as `rows_filtered`. Deletes always pass.
    #[serde(default)]
    pub filter: Option<String>,
    /// `"keep"` (default), `"lower"` or `"snake"`: how output column names are written
    /// (names set by `rename` are kept as written).
    #[serde(default)]
    pub column_case: ColumnCase,
    /// Instead of the keys above, a SQL file (relative to this config file) holding one
    /// `SELECT ... FROM <stream>`; it must keep the key (it may rename it),
    /// `_syncline_version` and `_syncline_deleted`. Deletes pass it unchanged.
    #[serde(default)]
    pub sql: Option<std::path::PathBuf>,
    /// `syncline stream`: flush this stream once this many changes wait (overrides
    /// `[stream] flush_rows`).
    #[serde(default)]
    pub flush_rows: Option<usize>,
    /// `syncline stream`: flush this stream once its oldest change waited this many
    /// milliseconds (overrides `[stream] flush_ms`).
    #[serde(default)]
    pub flush_ms: Option<u64>,
    /// `syncline stream`: seconds between two polls of a source that is not followed
    /// continuously (HubSpot, Salesforce, files, PostgreSQL in cursor mode). Default 30 for
    /// HubSpot and Salesforce, 60 for files, 5 for PostgreSQL.
    #[serde(default)]
    pub poll_seconds: Option<u64>,
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

/// The shortest stream lease `lock_ttl_seconds` may ask for (see `Config::validate`).
pub const MIN_LOCK_TTL_SECONDS: u64 = 10;
/// The longest: 7 days.
pub const MAX_LOCK_TTL_SECONDS: u64 = 7 * 86_400;

impl Config {
    /// Reads, parses, interpolates and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses `text` (named `path` in errors) resolving `${VAR}` in every string value with
    /// `env`.
    ///
    /// The text is first deserialized as written, so syntax, type and unknown-key errors
    /// point at a line and can never quote a resolved secret; then every string value is
    /// interpolated and the result deserialized again.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let doc = Document::new(text, path);
        let mut values: toml::Table = text.parse().map_err(|e| doc.parse_error(&e))?;
        // As written, `${VAR}` in an enum-valued key (`deletes = "${DELETES}"`) is not a
        // variant yet; such an error waits for the resolved pass, which either succeeds or
        // shows this error (it quotes only the text as written, never a resolved value).
        let as_written = toml::from_str::<Config>(text).err();
        if let Some(err) = &as_written {
            if !err.message().contains("${") {
                return Err(doc.parse_error(err).into());
            }
        }
        for (key, value) in values.iter_mut() {
            interpolate(value, &mut vec![key.clone()], &doc, env)?;
        }
        let mut config: Config = match toml::Value::Table(values).try_into() {
            Ok(config) => config,
            Err(resolved) => {
                return Err(match &as_written {
                    Some(err) => doc.parse_error(err),
                    // The resolved pass's message could quote a secret; say where to look.
                    None => {
                        drop(resolved);
                        ConfigError::Resolved(path.to_path_buf())
                    }
                }
                .into());
            }
        };
        if let SourceConfig::Files(files) = &mut config.source {
            files.order_declared_columns(|key| doc.key_line(key));
        }
        config
            .validate()
            .map_err(|err| doc.key_error(&err.key_path(), &err.message))?;
        // A transform's SQL file is named relative to the config file, wherever syncline runs.
        for settings in config.streams.values_mut() {
            if let Some(sql) = settings.sql.as_mut().filter(|p| p.is_relative()) {
                *sql = path.parent().unwrap_or(Path::new("")).join(&*sql);
            }
        }
        Ok(config)
    }

    /// The JSON Schema of the config file, generated from these types (and their `///`
    /// comments), for editors and `syncline config schema`.
    pub fn json_schema() -> serde_json::Value {
        let schema = schemars::schema_for!(Config);
        let mut value = schema.to_value();
        if let Some(object) = value.as_object_mut() {
            object.insert("title".into(), "syncline pipeline configuration".into());
        }
        value
    }

    /// The resolved config for people to read (`syncline config show`): every default
    /// filled in, `${VAR}`s resolved, and secrets shown as `***` by [`Secret`]'s `Debug`.
    pub fn show(&self) -> String {
        format!("{self:#?}\n")
    }

    /// Settings of one stream (defaults when it has no `[streams.NAME]` table).
    pub fn stream_settings(&self, stream: &str) -> StreamSettings {
        self.streams.get(stream).cloned().unwrap_or_default()
    }

    /// `[stream]`, with every default when the section is absent.
    pub fn stream_config(&self) -> StreamConfig {
        self.stream.clone().unwrap_or_default()
    }

    /// The root URL of the lake's Delta tables (see [`LakeConfig::url`]).
    pub fn lake_url(&self, lake: &LakeConfig) -> String {
        lake.root_url(&self.staging.url, &self.pipeline.name)
    }

    /// Whether loads are also merged into the staging store's Delta mirror (`[models]` with
    /// `mirror = true` and a destination other than the lake, whose tables models read).
    pub fn mirrors(&self) -> bool {
        !matches!(self.destination, DestinationConfig::Lake(_))
            && self.models.as_ref().is_some_and(|m| m.mirror)
    }

    /// Checks what parsing cannot: the pipeline's own keys here, each connector's keys in
    /// its own `validate`.
    fn validate(&self) -> std::result::Result<(), KeyError> {
        let name = &self.pipeline.name;
        if !is_plain_name(name) {
            return Err(KeyError::new(
                &["pipeline", "name"],
                "must be non-empty and use only letters, digits, `_` and `-`",
            ));
        }
        if self.pipeline.batch_rows == 0 {
            return Err(KeyError::new(
                &["pipeline", "batch_rows"],
                "must be at least 1",
            ));
        }
        // A lease must outlast a renewal with room to spare: the holder renews every third of
        // it, and one renewal can take seconds (an S3 request retried with backoff) while
        // hosts' clocks may differ by a second or two. Too short, and a live run's stream is
        // handed to another run; 0 would exclude nobody at all. Too long, and a crashed run on
        // another machine keeps its streams locked for that long.
        let ttl = self.pipeline.lock_ttl_seconds;
        if !(MIN_LOCK_TTL_SECONDS..=MAX_LOCK_TTL_SECONDS).contains(&ttl) {
            return Err(KeyError::new(
                &["pipeline", "lock_ttl_seconds"],
                &format!(
                    "is {ttl}; must be between {MIN_LOCK_TTL_SECONDS} and {MAX_LOCK_TTL_SECONDS} (7 days): the holder renews its lease every third of this, and a shorter lease can expire while its run is alive (one slow S3 request, a little clock skew)"
                ),
            ));
        }
        if self.pipeline.file_rows < self.pipeline.batch_rows {
            return Err(KeyError::new(
                &["pipeline", "file_rows"],
                "must be at least `batch_rows`",
            ));
        }
        if let Err(e) = url::Url::parse(&self.staging.url) {
            return Err(KeyError::new(
                &["staging", "url"],
                &format!(
                    "not a URL ({e}); use e.g. file:///var/lib/syncline/stage or s3://bucket/prefix"
                ),
            ));
        }
        let streams = self.source.streams();
        if streams.is_empty() {
            return Err(KeyError::new(&["source", "streams"], "lists no streams"));
        }
        for (i, stream) in streams.iter().enumerate() {
            if !is_plain_name(stream) {
                return Err(KeyError::new(
                    &["source", "streams"],
                    &format!("stream name {stream:?} must use only letters, digits, `_` and `-`"),
                ));
            }
            if streams[..i].contains(stream) {
                return Err(KeyError::new(
                    &["source", "streams"],
                    &format!("stream {stream:?} is listed twice"),
                ));
            }
        }
        for (stream, settings) in &self.streams {
            if !streams.contains(stream) {
                return Err(KeyError::new(
                    &["streams", stream],
                    &format!("stream {stream:?} is not listed in source.streams {streams:?}"),
                ));
            }
            settings.validate_transform(stream)?;
        }
        match &self.source {
            SourceConfig::Hubspot(h) => h.validate()?,
            SourceConfig::Salesforce(s) => s.validate()?,
            SourceConfig::Postgres(p) => {
                p.validate()?;
                p.validate_slot_names(&self.pipeline.name)?;
            }
            SourceConfig::Files(f) => f.validate()?,
        }
        match &self.destination {
            DestinationConfig::Postgres(p) => p.validate()?,
            DestinationConfig::Lake(l) => l.validate()?,
            DestinationConfig::Snowflake(s) => s.validate()?,
        }
        if let Some(models) = &self.models {
            models.validate()?;
        }
        if let Some(stream) = &self.stream {
            stream.validate(&self.source)?;
        }
        for (stream, settings) in &self.streams {
            for (key, zero) in [
                ("flush_rows", settings.flush_rows == Some(0)),
                ("flush_ms", settings.flush_ms == Some(0)),
                ("poll_seconds", settings.poll_seconds == Some(0)),
            ] {
                if zero {
                    return Err(KeyError::new(
                        &["streams", stream, key],
                        "must be at least 1",
                    ));
                }
            }
        }
        if let Some(reconcile) = &self.reconcile {
            reconcile.validate()?;
            // Found now rather than after every run's load: a CDC stream is compared by a
            // content hash that Snowflake does not compute.
            if let (SourceConfig::Postgres(p), DestinationConfig::Snowflake(_)) =
                (&self.source, &self.destination)
                && p.mode == PostgresMode::Cdc
            {
                return Err(KeyError::new(
                    &["reconcile"],
                    "cannot be scheduled: CDC streams are compared by content hash, which the snowflake destination does not compute; remove [reconcile] or use mode = \"cursor\"",
                ));
            }
        }
        Ok(())
    }
}

/// Letters, digits, `_` and `-`, at least one: names that become object store paths.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A config file that cannot be used. Messages never quote a value (it could be a secret).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type; `at` is `file:line:column`.
    #[error("{at}: {message}")]
    Syntax { at: String, message: String },
    /// A key whose value is not usable; `at` is `file:line` when the line is known.
    #[error("{at}: `{key}` {message}")]
    Key {
        at: String,
        key: String,
        message: String,
    },
    #[error("{}: a value that uses ${{VAR}} is not valid once the variable is resolved; check the variables' values",
        .0.display()
    )]
    Resolved(std::path::PathBuf),
}

impl Classified for ConfigError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Config
    }
}

/// A key to fix and what is wrong with it. The message never quotes a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` {message}", key.join("."))]
pub struct KeyError {
    /// The key's path from the top of the file, e.g. `["source", "files", "contacts", "glob"]`.
    pub key: Vec<String>,
    pub message: String,
}

impl KeyError {
    pub fn new(key: &[&str], message: &str) -> KeyError {
        KeyError {
            key: key.iter().map(|k| k.to_string()).collect(),
            message: message.to_string(),
        }
    }

    fn key_path(&self) -> Vec<&str> {
        self.key.iter().map(String::as_str).collect()
    }
}

/// Resolves `${VAR}` in every string under `value`; `key` is its path, for errors.
fn interpolate(
    value: &mut toml::Value,
    key: &mut Vec<String>,
    doc: &Document,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    match value {
        toml::Value::String(text) => {
            *text = interpolate_value(text, env).map_err(|var| {
                let path: Vec<&str> = key.iter().map(String::as_str).collect();
                doc.key_error(&path, &format!("environment variable {var} is not set"))
            })?;
        }
        toml::Value::Array(items) => {
            for item in items {
                interpolate(item, key, doc, env)?;
            }
        }
        toml::Value::Table(table) => {
            for (name, item) in table.iter_mut() {
                key.push(name.clone());
                interpolate(item, key, doc, env)?;
                key.pop();
            }
        }
        _ => {}
    }
    Ok(())
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
    fn a_lease_too_short_to_renew_or_absurdly_long_is_refused() {
        let with_ttl = |ttl: u64| {
            parse(&EXAMPLE.replace(
                "name = \"crm\"",
                &format!("name = \"crm\"\nlock_ttl_seconds = {ttl}"),
            ))
        };
        for ttl in [0, 1, 9, 604_801, u64::MAX / 1000] {
            let err = with_ttl(ttl).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Config, "{ttl}");
            assert_eq!(err.exit_code(), 2);
            assert!(
                err.to_string().contains("pipeline.lock_ttl_seconds")
                    && err.to_string().contains("between 10 and 604800"),
                "{err}"
            );
        }
        for ttl in [10, 300, 604_800] {
            assert!(with_ttl(ttl).is_ok(), "{ttl}");
        }
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
    fn cdc_streams_whose_slot_names_collide_are_refused() {
        let with_streams = |streams: &str, extra: &str| {
            parse(&format!(
                "[pipeline]\nname = \"ops\"\n[staging]\nurl = \"file:///tmp/s\"\n\
                 [destination]\ntype = \"lake\"\n[source]\ntype = \"postgres\"\n\
                 url = \"postgres://u@h/db\"\nstreams = {streams}\n{extra}"
            ))
        };
        // Case and punctuation fold into the same slot name.
        let err = with_streams("[\"contacts\", \"Contacts\"]", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`source.streams`"), "{err}");
        assert!(err.contains("syncline_ops_contacts"), "{err}");
        assert!(with_streams("[\"a-b\", \"a_b\"]", "").is_err());
        // Names that differ only past 63 bytes collide once cut.
        let long = "x".repeat(60);
        let err = with_streams(&format!("[\"{long}1\", \"{long}2\"]"), "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("63 bytes"), "{err}");
        // Cursor mode uses no slots; distinct names are fine in CDC.
        let cursor = "mode = \"cursor\"\n[source.tables.contacts]\ncursor_column = \"u\"\n\
                      [source.tables.Contacts]\ncursor_column = \"u\"";
        assert!(with_streams("[\"contacts\", \"Contacts\"]", cursor).is_ok());
        assert!(with_streams("[\"contacts\", \"deals\"]", "").is_ok());
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
            assert_eq!(
                err.kind(),
                crate::error::ErrorKind::Config,
                "{auth:?}: {err}"
            );
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

    #[test]
    fn every_string_value_may_use_a_variable() {
        // Keys the old hand-written list did not know: a pipeline name, a stream name in a
        // list, a per-stream table setting and an enum value.
        let text = EXAMPLE
            .replace("name = \"crm\"", "name = \"${PIPELINE}\"")
            .replace("\"deals\"]", "\"${THIRD_STREAM}\"]")
            .replace("deletes = \"soft\"", "deletes = \"${DELETES}\"");
        let env = |name: &str| match name {
            "PIPELINE" => Some("crm_prod".to_string()),
            "THIRD_STREAM" => Some("deals".to_string()),
            "DELETES" => Some("soft".to_string()),
            other => env(other),
        };
        let config = Config::parse(&text, Path::new("crm.toml"), &env).unwrap();
        assert_eq!(config.pipeline.name, "crm_prod");
        assert_eq!(config.source.streams(), ["contacts", "companies", "deals"]);
        assert_eq!(config.stream_settings("contacts").deletes, DeleteMode::Soft);

        // A variable that resolves to no variant: the error points at the line as written.
        let bad = |name: &str| match name {
            "DELETES" => Some("sometimes".to_string()),
            other => env(other),
        };
        let err = Config::parse(&text, Path::new("crm.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("crm.toml:") && err.contains("${DELETES}"),
            "{err}"
        );
        assert!(!err.contains("sometimes"), "{err}");
    }

    #[test]
    fn a_resolved_value_that_breaks_validation_is_named_by_key_without_its_value() {
        let text = EXAMPLE.replace("name = \"crm\"", "name = \"${PIPELINE}\"");
        let env = |name: &str| match name {
            "PIPELINE" => Some("not/a name hunter2".to_string()),
            other => env(other),
        };
        let err = Config::parse(&text, Path::new("crm.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`pipeline.name`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
