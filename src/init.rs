//! `syncline init`: a commented pipeline file for one source and one destination, every key
//! of the pair with its default, and the environment variables it reads.
//!
//! Keys that must be set are written as settings; keys with a default are written commented
//! out with that default. Secrets are always `${VAR}` references, never values, so the file
//! can be committed. `config::tests` and the integration tests load every pair's file with
//! the real config loader and compare its keys with the JSON Schema, so it cannot drift.

use std::fmt::Write as _;

/// The sources `init` writes a config for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Hubspot,
    Salesforce,
    Postgres,
    Files,
}

/// The destinations `init` writes a config for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    Postgres,
    Snowflake,
    Lake,
}

impl SourceKind {
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Hubspot,
        SourceKind::Salesforce,
        SourceKind::Postgres,
        SourceKind::Files,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Hubspot => "hubspot",
            SourceKind::Salesforce => "salesforce",
            SourceKind::Postgres => "postgres",
            SourceKind::Files => "files",
        }
    }
}

impl DestinationKind {
    pub const ALL: [DestinationKind; 3] = [
        DestinationKind::Postgres,
        DestinationKind::Snowflake,
        DestinationKind::Lake,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DestinationKind::Postgres => "postgres",
            DestinationKind::Snowflake => "snowflake",
            DestinationKind::Lake => "lake",
        }
    }
}

/// An environment variable the written file reads, with an example of its value's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: &'static str,
    pub example: &'static str,
    /// What the value is, for the user.
    pub meaning: &'static str,
}

/// A generated pipeline file.
#[derive(Debug, Clone)]
pub struct Template {
    /// The TOML text.
    pub text: String,
    /// The variables its settings (not its comments) read, in file order.
    pub env: Vec<EnvVar>,
}

/// Where staging goes when `--staging` is not given.
pub const DEFAULT_STAGING: &str = "file:///var/lib/syncline/stage";

/// The pipeline file for `source` into `destination`, staging at `staging`.
pub fn template(source: SourceKind, destination: DestinationKind, staging: &str) -> Template {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# syncline pipeline: {} -> {}.\n\
         # Written by `syncline init`. Commented keys show their default; uncomment to change.\n\
         # Secrets are ${{VAR}} references, read from the environment when syncline starts.\n\
         # Editor completion: `syncline config schema > syncline.schema.json`, then add\n\
         # `#:schema ./syncline.schema.json` as the first line (taplo, Even Better TOML).\n\
         # Check it with `syncline check --config FILE` before the first run.\n",
        source.name(),
        destination.name()
    );
    text.push_str(&format!(
        "[pipeline]\n\
         name = \"{}_to_{}\"                 # letters, digits, `_`, `-`; names staged files, state and locks\n\
         # batch_rows = 10000                # rows per Arrow batch (the unit of memory use)\n\
         # file_rows = 500000                # rows per staged Parquet file (at least batch_rows)\n\
         # lock_ttl_seconds = 3600           # a stream lock older than this is taken over\n\n",
        source.name(),
        destination.name()
    ));
    text.push_str(&staging_section(staging));
    text.push('\n');
    text.push_str(source_section(source));
    text.push('\n');
    text.push_str(destination_section(destination));
    text.push('\n');
    let first = match source {
        SourceKind::Hubspot => "contacts",
        SourceKind::Salesforce => "Account",
        SourceKind::Postgres | SourceKind::Files => "contacts",
    };
    let _ = write!(
        text,
        "# Per-stream settings, one table per stream of source.streams:\n\
         # [streams.{first}]\n\
         # deletes = \"hard\"                  # \"hard\" removes deleted records; \"soft\" keeps them with _syncline_deleted_at\n\
         # Transform between stage and merge (names are the source's; filter sees the output's):\n\
         # select = [\"id\", \"email\", \"properties_*\"]   # columns to keep, names or globs (the key included)\n\
         # exclude = []                      # or: columns to drop, names or globs\n\
         # rename = {{ lifecyclestage = \"stage\" }}   # a renamed key becomes the destination key\n\
         # hash = [\"email\"]                  # SHA-256 hex, salted with $SYNCLINE_HASH_SALT when set\n\
         # cast = {{ annualrevenue = \"double\" }}   # bigint, double, text, boolean, date, timestamp\n\
         # filter = \"stage <> 'other'\"        # live rows not matching are counted as filtered; deletes pass\n\
         # column_case = \"keep\"              # \"keep\", \"lower\" or \"snake\"\n\
         # sql = \"transforms/{first}.sql\"     # instead of the keys above: SELECT ... FROM {first}\n\
         # syncline stream (micro-batch mode), overriding [stream] for this stream:\n\
         # flush_rows = 10000                # flush once this many changes wait\n\
         # flush_ms = 200                    # flush once the oldest change waited this long\n\
         # poll_seconds = 30                 # between polls of a source that is not a CDC slot\n\n\
         # syncline stream: defaults by destination (see the book, Streaming):\n\
         # [stream]\n\
         # listen = \"127.0.0.1:9187\"         # /metrics, /health (and the webhook receiver)\n\
         # shutdown_seconds = 30             # SIGTERM: time for the flushes in progress\n\n\
         # A reconcile `syncline run` also runs, per stream, when the last one is older than `every`:\n\
         # [reconcile]\n\
         # every = \"24h\"                     # s, m, h, d; e.g. \"30m\", \"7d\", \"1h30m\"\n\
         # repair = false                    # true: repair the drift found; false: report it (exit 3)\n"
    );
    let env = env_vars(&text);
    Template { text, env }
}

fn staging_section(staging: &str) -> String {
    let mut text = format!(
        "[staging]\n\
         url = \"{staging}\"   # where Parquet, manifests, state and locks go: file://, s3://bucket/prefix, memory://\n\
         # compression = \"snappy\"            # staged Parquet: snappy (least CPU) | zstd (fewest bytes) | none\n"
    );
    if staging.starts_with("s3://") {
        text.push_str(
            "[staging.s3]\n\
             access_key_id = \"${AWS_ACCESS_KEY_ID}\"\n\
             secret_access_key = \"${AWS_SECRET_ACCESS_KEY}\"\n\
             # region = \"us-east-1\"\n\
             # endpoint = \"http://127.0.0.1:9000\"   # an S3-compatible server (MinIO); default AWS\n\
             # allow_http = false                   # allow http:// endpoints (local MinIO)\n\
             # virtual_hosted_style = false         # bucket.host URLs instead of host/bucket paths\n",
        );
    } else {
        text.push_str(
            "# [staging.s3]                         # for s3:// URLs\n\
             # access_key_id = \"${AWS_ACCESS_KEY_ID}\"\n\
             # secret_access_key = \"${AWS_SECRET_ACCESS_KEY}\"\n\
             # region = \"us-east-1\"\n\
             # endpoint = \"http://127.0.0.1:9000\"   # an S3-compatible server (MinIO); default AWS\n\
             # allow_http = false                   # allow http:// endpoints (local MinIO)\n\
             # virtual_hosted_style = false         # bucket.host URLs instead of host/bucket paths\n",
        );
    }
    text
}

fn source_section(source: SourceKind) -> &'static str {
    match source {
        SourceKind::Hubspot => {
            r#"[source]
type = "hubspot"
token = "${HUBSPOT_TOKEN}"            # private-app or service-key token
streams = ["contacts", "companies", "deals"]   # CRM object types
# base_url = "https://api.hubapi.com"
# overlap_seconds = 300              # each incremental window reaches back this far before the cursor
# lag_seconds = 30                   # the window ends at now - lag (search lags writes)
# max_retries = 8                    # retries of 429 and 5xx answers (`check` makes one)
# retry_base_ms = 1000               # first back-off without Retry-After; doubles, at most 30 s
"#
        }
        SourceKind::Salesforce => {
            r#"[source]
type = "salesforce"
login_url = "https://login.salesforce.com"   # your My Domain URL for client credentials
client_id = "${SALESFORCE_CLIENT_ID}"        # connected app consumer key
client_secret = "${SALESFORCE_CLIENT_SECRET}"   # client-credentials flow
# JWT bearer flow instead of client_secret: username with private_key or private_key_path.
# username = "integration@example.com"
# private_key = "${SALESFORCE_PRIVATE_KEY}"
# private_key_path = "/etc/syncline/salesforce.pem"
# audience = "https://login.salesforce.com"  # JWT only; default login_url
streams = ["Account", "Contact", "Opportunity", "Lead"]   # sObject API names
# api_version = "62.0"
# bulk_threshold = 50000             # full loads of objects this large go through Bulk API 2.0
# overlap_seconds = 600
# lag_seconds = 60
# api_budget = 0.8                   # share of the daily API allocation this pipeline may use
# max_retries = 5                    # retries of 5xx and throttling answers (`check` makes one)
# retry_base_ms = 1000
# bulk_poll_ms = 500
"#
        }
        SourceKind::Postgres => {
            r#"[source]
type = "postgres"
url = "${SOURCE_DATABASE_URL}"       # postgres://user:password@host:port/db
streams = ["contacts"]               # tables, public.<stream> unless [source.tables.NAME] says
# mode = "cdc"                       # "cdc" (logical replication) or "cursor" (needs cursor_column)
# slot_prefix = "syncline_<pipeline.name>"   # CDC slot and publication names
# lag_seconds = 0                    # cursor mode: read rows at least this old
# [source.tables.contacts]
# table = "public.contacts"          # default: the stream name in schema public
# key = "id"                         # default: the primary key
# cursor_column = "updated_at"       # required in cursor mode
# columns = ["id", "email", "updated_at"]   # default: every column
"#
        }
        SourceKind::Files => {
            r#"[source]
type = "files"
url = "file:///var/lib/syncline/exports"   # folder of the exports: file:// or s3://
streams = ["contacts"]
# [source.s3]                        # for s3:// URLs, the same keys as [staging.s3]
# endpoint = "http://127.0.0.1:9000"
# region = "us-east-1"
# access_key_id = "${AWS_ACCESS_KEY_ID}"
# secret_access_key = "${AWS_SECRET_ACCESS_KEY}"
# allow_http = false
# virtual_hosted_style = false

[source.files.contacts]
glob = "contacts/*.csv"              # relative to source.url
format = "csv"                       # "csv" or "jsonl"
key = "id"                           # the column that identifies a record
# cursor_column = "updated_at"       # rows below the saved cursor are skipped
# version_column = "updated_at"      # default: the file's last-modified time
# deleted_column = "is_deleted"      # true marks a deleted record
# infer_rows = 1000                  # records sampled to infer the schema
# delimiter = ","                    # csv only
# quote = "\""                       # csv only
# header = true                      # csv only
# null_values = [""]                 # csv only
# max_record_bytes = 16777216        # longer records are dead letters
# [source.files.contacts.schema]     # declared columns in file order; inferred when absent
# id = "int64"                       # int64, float64, utf8, boolean, date32, timestamp,
# amount = "decimal(18,2)"           # or decimal(P,S): exact, P digits, S after the point
"#
        }
    }
}

fn destination_section(destination: DestinationKind) -> &'static str {
    match destination {
        DestinationKind::Postgres => {
            r#"[destination]
type = "postgres"
url = "${DATABASE_URL}"              # postgres://user:password@host:port/db[?sslmode=require]
# schema = "public"                  # stream tables and the _syncline_loads ledger
"#
        }
        DestinationKind::Snowflake => {
            r#"[destination]
type = "snowflake"
account = "${SNOWFLAKE_ACCOUNT}"     # e.g. myorg-myaccount
user = "${SNOWFLAKE_USER}"
database = "${SNOWFLAKE_DATABASE}"
password = "${SNOWFLAKE_PASSWORD}"   # or key-pair: private_key / private_key_path
# private_key = "${SNOWFLAKE_PRIVATE_KEY}"
# private_key_path = "/etc/syncline/snowflake.p8"
# private_key_passphrase = "${SNOWFLAKE_KEY_PASSPHRASE}"
# role = "SYNCLINE_LOADER"           # default: the user's default role
# warehouse = "LOADING"              # default: the user's default warehouse
# schema = "PUBLIC"                  # created when missing
# url = "https://myorg-myaccount.snowflakecomputing.com"   # default from account
# stage_url = "s3://bucket/prefix"   # the staging URL as Snowflake sees it; default staging.url
# storage_integration = "SYNCLINE_S3"   # how Snowflake may read the staging bucket
# statement_timeout_seconds = 3600
"#
        }
        DestinationKind::Lake => {
            r#"[destination]
type = "lake"
# url = "file:///var/lib/syncline/lake"   # default: {staging.url}/{pipeline.name}/lake
# merge_keys_per_pass = 1000000   # a merge of more keys runs in passes, memory bounded by one
"#
        }
    }
}

/// What each variable `init` writes holds.
const KNOWN: &[EnvVar] = &[
    EnvVar {
        name: "AWS_ACCESS_KEY_ID",
        example: "AKIA...",
        meaning: "S3 access key of the staging bucket",
    },
    EnvVar {
        name: "AWS_SECRET_ACCESS_KEY",
        example: "...",
        meaning: "S3 secret key of the staging bucket",
    },
    EnvVar {
        name: "HUBSPOT_TOKEN",
        example: "pat-na1-...",
        meaning: "HubSpot private-app token",
    },
    EnvVar {
        name: "SALESFORCE_CLIENT_ID",
        example: "3MVG9...",
        meaning: "Salesforce connected app consumer key",
    },
    EnvVar {
        name: "SALESFORCE_CLIENT_SECRET",
        example: "...",
        meaning: "Salesforce connected app consumer secret",
    },
    EnvVar {
        name: "SOURCE_DATABASE_URL",
        example: "postgres://user:password@host:5432/app",
        meaning: "the source PostgreSQL (a user with REPLICATION for CDC)",
    },
    EnvVar {
        name: "DATABASE_URL",
        example: "postgres://user:password@host:5432/warehouse",
        meaning: "the destination PostgreSQL",
    },
    EnvVar {
        name: "SNOWFLAKE_ACCOUNT",
        example: "myorg-myaccount",
        meaning: "Snowflake account identifier",
    },
    EnvVar {
        name: "SNOWFLAKE_USER",
        example: "SYNCLINE",
        meaning: "Snowflake login name",
    },
    EnvVar {
        name: "SNOWFLAKE_DATABASE",
        example: "RAW",
        meaning: "Snowflake database",
    },
    EnvVar {
        name: "SNOWFLAKE_PASSWORD",
        example: "...",
        meaning: "Snowflake password",
    },
];

/// The `${VAR}`s of the settings (comment lines do not count), in order, each once.
fn env_vars(text: &str) -> Vec<EnvVar> {
    let mut found: Vec<EnvVar> = Vec::new();
    for line in text.lines() {
        let setting = line.split(" #").next().unwrap_or_default();
        if setting.trim_start().starts_with('#') {
            continue;
        }
        let mut rest = setting;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            let name = &after[..end];
            if let Some(known) = KNOWN.iter().find(|v| v.name == name) {
                if !found.iter().any(|v| v.name == name) {
                    found.push(known.clone());
                }
            }
            rest = &after[end + 1..];
        }
    }
    found
}

/// What to tell the user after writing the file to `path`.
pub fn next_steps(template: &Template, path: &str) -> String {
    let mut out = format!("wrote {path}\n");
    if !template.env.is_empty() {
        out.push_str("set these environment variables before running syncline:\n");
        for var in &template.env {
            let _ = writeln!(
                out,
                "  export {}='{}'   # {}",
                var.name, var.example, var.meaning
            );
        }
    }
    let _ = writeln!(out, "then: syncline check --config {path}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_pair_loads_with_its_variables_set_and_holds_no_secret_value() {
        for staging in [DEFAULT_STAGING, "s3://acme-syncline/stage"] {
            for source in SourceKind::ALL {
                for destination in DestinationKind::ALL {
                    let t = template(source, destination, staging);
                    let env = |name: &str| {
                        t.env
                            .iter()
                            .find(|v| v.name == name)
                            .map(|v| v.example.to_string())
                    };
                    let parsed = Config::parse(&t.text, std::path::Path::new("init.toml"), &env);
                    assert!(
                        parsed.is_ok(),
                        "{source:?} -> {destination:?} at {staging}: {}\n{}",
                        parsed.unwrap_err(),
                        t.text
                    );
                    for var in &t.env {
                        assert!(t.text.contains(&format!("${{{}}}", var.name)));
                    }
                }
            }
        }
    }

    #[test]
    fn the_variables_are_those_of_the_settings() {
        let t = template(
            SourceKind::Hubspot,
            DestinationKind::Postgres,
            DEFAULT_STAGING,
        );
        let names: Vec<&str> = t.env.iter().map(|v| v.name).collect();
        assert_eq!(names, ["HUBSPOT_TOKEN", "DATABASE_URL"]);
        let t = template(SourceKind::Files, DestinationKind::Lake, "s3://b/p");
        let names: Vec<&str> = t.env.iter().map(|v| v.name).collect();
        assert_eq!(names, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
    }

    /// Whether the text writes `key` as a setting or a table (`[staging.s3]`), maybe commented.
    fn writes(text: &str, written: &std::collections::BTreeSet<String>, key: &str) -> bool {
        written.contains(key)
            || text.contains(&format!(".{key}]"))
            || text.contains(&format!(".{key}."))
    }

    /// Every `key =` line of the text, set or commented out, but for the column names of a
    /// declared `schema` table (names of the user's data, not config keys).
    fn keys(text: &str) -> std::collections::BTreeSet<String> {
        let mut keys = std::collections::BTreeSet::new();
        let mut in_columns = false;
        for line in text.lines() {
            let line = line.trim_start_matches('#').trim();
            if line.starts_with('[') {
                in_columns = line
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .ends_with(".schema]");
                continue;
            }
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            if !in_columns
                && !key.is_empty()
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                keys.insert(key.to_string());
            }
        }
        keys
    }

    /// Every property name anywhere in the schema.
    fn schema_keys(value: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                    out.extend(props.keys().cloned());
                }
                for item in map.values() {
                    schema_keys(item, out);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    schema_keys(item, out);
                }
            }
            _ => {}
        }
    }

    fn def_keys(schema: &serde_json::Value, name: &str) -> Vec<String> {
        schema["$defs"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no $defs.{name} in the schema"))
            .keys()
            .cloned()
            .collect()
    }

    /// The keys of the `type = "{tag}"` variant of `[source]` (`source` true) or
    /// `[destination]`, wherever the schema put them (inline or behind a `$ref`).
    fn variant_keys(schema: &serde_json::Value, tag: &str, source: bool) -> Vec<String> {
        fn collect(schema: &serde_json::Value, object: &serde_json::Value, out: &mut Vec<String>) {
            if let Some(props) = object["properties"].as_object() {
                out.extend(props.keys().cloned());
            }
            if let Some(reference) = object["$ref"].as_str() {
                let name = reference.trim_start_matches("#/$defs/");
                collect(schema, &schema["$defs"][name], out);
            }
            for list in ["allOf", "anyOf"] {
                for item in object[list].as_array().into_iter().flatten() {
                    collect(schema, item, out);
                }
            }
        }
        fn find(value: &serde_json::Value, tag: &str, found: &mut Vec<serde_json::Value>) {
            match value {
                serde_json::Value::Object(map) => {
                    let kind = &value["properties"]["type"];
                    if kind["const"] == tag || kind["enum"] == serde_json::json!([tag]) {
                        found.push(value.clone());
                    }
                    for item in map.values() {
                        find(item, tag, found);
                    }
                }
                serde_json::Value::Array(items) => {
                    for item in items {
                        find(item, tag, found);
                    }
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        find(schema, tag, &mut found);
        for variant in found {
            let mut keys = Vec::new();
            collect(schema, &variant, &mut keys);
            if keys.iter().any(|k| k == "streams") == source {
                return keys;
            }
        }
        panic!("no type = {tag:?} variant in the schema");
    }

    #[test]
    fn init_writes_the_schema_keys_and_nothing_else() {
        let schema = Config::json_schema();
        let mut known = std::collections::BTreeSet::new();
        schema_keys(&schema, &mut known);
        let sources = [
            (SourceKind::Hubspot, vec![]),
            (SourceKind::Salesforce, vec![]),
            (SourceKind::Postgres, vec!["PostgresTableConfig"]),
            (SourceKind::Files, vec!["FileStreamConfig"]),
        ];
        for (source, source_defs) in &sources {
            for destination in DestinationKind::ALL {
                let t = template(*source, destination, "s3://b/p");
                let written = keys(&t.text);
                for key in &written {
                    assert!(
                        known.contains(key),
                        "{source:?}/{destination:?}: `{key}` is no config key"
                    );
                }
                let mut wanted = variant_keys(&schema, source.name(), true);
                wanted.extend(variant_keys(&schema, destination.name(), false));
                for key in &wanted {
                    assert!(
                        writes(&t.text, &written, key),
                        "{source:?}/{destination:?}: init does not write `{key}`"
                    );
                }
                let mut defs = source_defs.clone();
                defs.extend([
                    "PipelineConfig",
                    "StagingConfig",
                    "S3Config",
                    "StreamSettings",
                ]);
                for def in defs {
                    for key in def_keys(&schema, def) {
                        assert!(
                            writes(&t.text, &written, &key),
                            "{source:?}/{destination:?}: init does not write {def}'s `{key}`"
                        );
                    }
                }
            }
        }
    }
}
