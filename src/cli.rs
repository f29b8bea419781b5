//! Command-line definitions (clap). Behaviour lives in the library; `main` maps results to exit codes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "syncline",
    version,
    about = "Move CRM data into a warehouse through Parquet staging, exactly once"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logging (-v info, -vv debug). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoTarget {
    Lake,
    Postgres,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Build the models in dependency order, testing each before it replaces its table;
    /// exit 3 when a test fails (the previous table stays).
    Run(ModelsArgs),
    /// Evaluate the models and run their tests and the singular tests; materialize
    /// nothing. Prints the failures with example rows; exit 3 when one fails.
    Test(ModelsArgs),
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Folder of `**/*.sql` models (default: `[models] dir`, else `models`).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// `NAME`, `NAME+` (with every model downstream) or `+NAME` (with every model upstream);
    /// several, comma-separated, select them all (`a,b+`).
    #[arg(long)]
    pub select: Option<String>,
    /// Rebuild incremental models as whole tables.
    #[arg(long)]
    pub full_refresh: bool,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync the configured streams once (batch mode).
    Run(RunArgs),
    /// Keep the selected streams flowing until SIGTERM/SIGINT (micro-batch mode): CDC
    /// slots read continuously, other sources polled, each flush an exactly-once load;
    /// serves /metrics and /health.
    Stream(StreamArgs),
    /// Validate the config, then check staging, every stream at the source and the
    /// destination, each on one line (✓/✗); exit with the worst failure's code.
    Check(CheckArgs),
    /// Compare the destination with the source, key by key, and with --repair fix the
    /// drift (exit 0 clean, 3 drift remains).
    Reconcile(ReconcileArgs),
    /// Show, per stream, the last successful load, the cursor and row counts, and the run
    /// that holds its lease now.
    Status(StatusArgs),
    /// Serve a read-only status page of the pipeline (per stream: last load, cursor and
    /// lag, reconcile, failures, dead letters, the run holding it, a chart of recent loads).
    Ui(UiArgs),
    /// Run the whole job locally: simulator -> staging -> lake (or PostgreSQL), changes,
    /// an incremental sync, the example models and a reconcile.
    Demo(DemoArgs),
    /// Run SQL over the lake tables of a pipeline (tables are named after streams).
    Query(QueryArgs),
    /// Build and test the SQL models (`models/**/NAME.sql`) in dependency order.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Serve the built-in CRM simulator (HubSpot CRM v3) until interrupted.
    Sim(SimArgs),
    /// List staged loads with their manifest figures and whether each is merged.
    Loads(LoadsArgs),
    /// Merge staged loads again without calling the source.
    Replay(ReplayArgs),
    /// Show the rows a stream's transform makes of its last staged load, as a table (for
    /// writing a transform: edit the config, preview again; nothing is merged).
    Preview(PreviewArgs),
    /// Delete staged loads that are merged and past retention.
    Gc(GcArgs),
    /// Show the dead letters of staged loads grouped by reason, or export them all.
    Deadletters(DeadlettersArgs),
    /// Write a commented pipeline config for a source and a destination, every key with its
    /// default, and print the environment variables it reads.
    Init(InitArgs),
    /// What a run would load: streams, destination tables, keys, checks (for orchestrators).
    Plan(PlanArgs),
    /// The config file's JSON Schema, or a config as syncline resolves it.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or with --dir write one page per command into a folder.
    Man {
        /// Write `syncline.1` and a `syncline-COMMAND.1` per subcommand here.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct DeadlettersArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only this stream's dead letters.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only this load's dead letters (see `syncline loads`).
    #[arg(long)]
    pub load_id: Option<String>,
    /// Example records shown per group.
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
    /// Write every dead letter (stream, load_id, key, field, reason, raw) instead of groups.
    #[arg(long, value_enum)]
    pub export: Option<ExportFormat>,
    /// Where the export goes (default stdout).
    #[arg(long, short, requires = "export")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print JSON (the shape the Dagster and Airflow integrations read).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LoadsArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only this stream's loads.
    #[arg(long)]
    pub stream: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// The stream whose transform to run.
    #[arg(long)]
    pub stream: String,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["load_id", "since"])))]
pub struct ReplayArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    #[arg(long)]
    pub stream: String,
    /// The load to merge again (see `syncline loads`).
    #[arg(long)]
    pub load_id: Option<String>,
    /// Every load staged at or after this time (RFC 3339, or a date for its midnight UTC).
    #[arg(long, value_parser = |v: &str| crate::pipeline::loads::parse_time(v).map_err(|e| e.to_string()))]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Apply loads that are already merged again (older never overwrites newer).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitSource {
    Hubspot,
    Salesforce,
    Postgres,
    Files,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitDestination {
    Postgres,
    Snowflake,
    Lake,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long, value_enum)]
    pub source: InitSource,
    #[arg(long, value_enum)]
    pub destination: InitDestination,
    /// Staging URL (`file:///path`, `s3://bucket/prefix`). Default
    /// file:///var/lib/syncline/stage.
    #[arg(long)]
    pub staging: Option<String>,
    /// File to write ("-" for stdout).
    #[arg(long, short, default_value = "syncline.toml")]
    pub output: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Retention: loads staged more recently than this are kept (30d, 12h, 90m, 45s).
    #[arg(long, value_parser = |v: &str| crate::pipeline::loads::parse_age(v).map_err(|e| e.to_string()))]
    pub older_than: std::time::Duration,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete the loads' dead-letter files too (kept by default).
    #[arg(long)]
    pub dead_letters: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the JSON Schema of the pipeline config (for editors' TOML plugins).
    Schema,
    /// Print the config as syncline resolves it: defaults filled in, secrets masked.
    Show {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Comma-separated streams to run (default: all in source.streams).
    #[arg(long, value_delimiter = ',')]
    pub streams: Option<Vec<String>>,
    /// Ignore saved cursors and read every record again.
    #[arg(long)]
    pub full_refresh: bool,
    /// Write the JSON run report to this file ("-" for stdout).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// After the sync, build the models that read a stream that changed.
    #[arg(long)]
    pub models: bool,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Pipeline config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Comma-separated streams to keep flowing (default: all in source.streams).
    #[arg(long, value_delimiter = ',')]
    pub streams: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Pipeline config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Comma-separated streams to compare (default: all in source.streams).
    #[arg(long, value_delimiter = ',')]
    pub streams: Option<Vec<String>>,
    /// Fetch the missing and stale records by key and delete the orphaned ones, as an
    /// ordinary load.
    #[arg(long)]
    pub repair: bool,
    /// Print the API-call estimate only; compare nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the JSON report to this file ("-" for stdout, instead of the table).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Seconds each component may take before it is reported as not answering.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the `syncline ui` page (from the stage alone) to this file instead.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UiArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Address to serve the page on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8484")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's config, staged files and lake tables.
    #[arg(long, default_value = "syncline-demo")]
    pub dir: PathBuf,
    /// Where the demo merges to.
    #[arg(long, value_enum, default_value_t = DemoTarget::Lake)]
    pub destination: DemoTarget,
    /// PostgreSQL URL for `--destination postgres` (or set DATABASE_URL).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub url: Option<String>,
    #[arg(long, default_value_t = 5000)]
    pub contacts: usize,
    #[arg(long, default_value_t = 1000)]
    pub companies: usize,
    #[arg(long, default_value_t = 1500)]
    pub deals: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// The SQL to run.
    pub sql: String,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 1000)]
    pub contacts: usize,
    #[arg(long, default_value_t = 200)]
    pub companies: usize,
    #[arg(long, default_value_t = 300)]
    pub deals: usize,
    /// Bearer token clients must send.
    #[arg(long, default_value = "sim-token")]
    pub token: String,
    /// Requests per 10 s allowed on non-search endpoints (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub rate_limit: u32,
    /// Salesforce Accounts to generate.
    #[arg(long, default_value_t = 300)]
    pub sf_accounts: usize,
    /// Salesforce Contacts to generate.
    #[arg(long, default_value_t = 600)]
    pub sf_contacts: usize,
    /// Salesforce Opportunities to generate.
    #[arg(long, default_value_t = 400)]
    pub sf_opportunities: usize,
    /// Salesforce Leads to generate.
    #[arg(long, default_value_t = 200)]
    pub sf_leads: usize,
    /// Salesforce daily API request limit.
    #[arg(long, default_value_t = 1_000_000)]
    pub sf_daily_limit: u64,
    /// Salesforce: purge soft-deleted records from the Recycle Bin this many ms after their
    /// delete (they leave `queryAll`; `sobjects/{O}/deleted` still lists them). Default: never.
    #[arg(long)]
    pub sf_purge_after_ms: Option<u64>,
    /// Salesforce: more deletes than this in one `sobjects/{O}/deleted` window is answered
    /// `EXCEEDED_ID_LIMIT`, as Salesforce does past 600,000.
    #[arg(long, default_value_t = 600_000)]
    pub sf_deleted_id_limit: usize,
    /// POST a signed HubSpot webhook for every HubSpot change (record created, updated,
    /// archived) to this URL, e.g. `http://127.0.0.1:9000/webhooks/hubspot`.
    #[arg(long, requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// The app secret that signs the webhooks (signature v3).
    #[arg(long, env = "SYNCLINE_SIM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Share (0 to 1) of webhook batches delivered twice.
    #[arg(long, default_value_t = 0.1, value_parser = rate)]
    pub webhook_duplicate_rate: f64,
    /// Share (0 to 1) of webhook batches shuffled, and of batches held back behind the next.
    #[arg(long, default_value_t = 0.1, value_parser = rate)]
    pub webhook_reorder_rate: f64,
    /// Share (0 to 1) of 2xx answers treated as lost, so the delivery is retried.
    #[arg(long, default_value_t = 0.05, value_parser = rate)]
    pub webhook_lost_answer_rate: f64,
    /// Attempts per webhook delivery before giving up (HubSpot: 10).
    #[arg(long, default_value_t = 10)]
    pub webhook_max_attempts: u32,
}

/// A share from 0 to 1.
fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a share from 0 to 1")),
    }
}
