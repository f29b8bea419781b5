//! `syncline demo`: the whole job on a fresh machine, with nothing installed but syncline.
//!
//! Starts the CRM simulator in-process, writes a pipeline under a folder, runs a full sync into
//! the lake (Delta tables on the local staging store) or PostgreSQL (Salesforce leads through
//! a stream transform that hashes their emails), applies a round of changes
//! at the source and syncs incrementally, runs the example models, reconciles every table with
//! the simulator's state, and summarises.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::error::{Classified, ErrorKind};
use crate::load::DeleteMode;
use crate::reconcile::Fingerprint;
use crate::reconcile::report::{RunReport, Status};
use crate::sim::{SimConfig, SimHandle, Simulator};
use crate::{Result, pipeline, transform};

/// The HubSpot streams the demo syncs.
pub const STREAMS: [&str; 3] = ["contacts", "companies", "deals"];
/// The Salesforce objects the demo syncs.
pub const SF_OBJECTS: [&str; 4] = ["Account", "Contact", "Opportunity", "Lead"];

#[derive(Debug, Clone)]
pub enum DemoDestination {
    Lake,
    Postgres { url: String },
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub destination: DemoDestination,
    pub contacts: usize,
    pub companies: usize,
    pub deals: usize,
}

/// What the demo did, per step; printed as text and checked by tests.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub destination: String,
    pub full: Vec<StepStream>,
    pub incremental: Vec<StepStream>,
    /// The source changes the demo made before the incremental sync.
    pub changes: Changes,
    pub models: Vec<ModelSummary>,
    pub reconcile: Vec<ReconcileStream>,
    pub full_ms: u64,
    pub incremental_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepStream {
    pub stream: String,
    pub extracted: u64,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub duration_ms: u64,
    /// The stream has a transform (`[streams.NAME]`): what was merged is its output.
    pub transformed: bool,
    /// Rows its filter dropped.
    pub filtered: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Changes {
    pub contacts_updated: usize,
    pub contacts_inserted: usize,
    pub contacts_archived: usize,
    pub deals_updated: usize,
    pub companies_archived: usize,
    pub sf_accounts_updated: usize,
    pub sf_contacts_inserted: usize,
    pub sf_opportunities_deleted: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub rows: usize,
    pub status: transform::materialize::ModelStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileStream {
    pub stream: String,
    pub source: Fingerprint,
    pub destination: Fingerprint,
    pub matched: bool,
}

impl DemoSummary {
    pub fn all_matched(&self) -> bool {
        self.reconcile.iter().all(|r| r.matched)
    }
}

/// What stops the demo before its summary.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create the demo folder {}", dir.display())]
    Folder {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the simulator")]
    Simulator(#[source] anyhow::Error),
    /// A sync failed; `errors` are the failed streams' own messages.
    #[error("the demo sync failed: {errors}")]
    SyncFailed { mismatch: bool, errors: String },
    /// An example model failed; `error` is its own report.
    #[error("example model {model} failed: {error}")]
    Model { model: String, error: String },
}

impl Classified for DemoError {
    fn kind(&self) -> ErrorKind {
        match self {
            DemoError::Folder { .. } => ErrorKind::Config,
            DemoError::Simulator(_) => ErrorKind::Source,
            DemoError::SyncFailed { mismatch: true, .. } => ErrorKind::Reconciliation,
            DemoError::SyncFailed { .. } => ErrorKind::Destination,
            DemoError::Model { .. } => ErrorKind::Sql,
        }
    }
}

/// The demo, step by step: simulator and configs, a full sync, changes at the source, an
/// incremental sync, the example models, and a reconcile of every table with the simulator.
pub async fn run(options: &DemoOptions) -> Result<DemoSummary> {
    let setup = set_up(options).await?;
    let full_refresh = pipeline::RunOptions {
        full_refresh: true,
        ..Default::default()
    };
    let started = Instant::now();
    let full = sync_both(&setup, &full_refresh).await?;
    let full_ms = started.elapsed().as_millis() as u64;

    let changes = change_sources(&setup.sim, options);
    wait_past_changes(&setup.sim).await;

    let started = Instant::now();
    let incremental = sync_both(&setup, &pipeline::RunOptions::default()).await?;
    let incremental_ms = started.elapsed().as_millis() as u64;

    let models = run_example_models(&setup).await?;
    let reconcile = reconcile_with_simulator(&setup).await?;
    let Setup {
        sim,
        dir,
        config_path,
        ..
    } = setup;
    sim.shutdown().await;

    Ok(DemoSummary {
        dir,
        config: config_path,
        destination: match &options.destination {
            DemoDestination::Lake => "lake".into(),
            DemoDestination::Postgres { .. } => "postgres".into(),
        },
        full: steps(&full),
        incremental: steps(&incremental),
        changes,
        models,
        reconcile,
        full_ms,
        incremental_ms,
    })
}

/// The running simulator and the two pipelines the demo wrote for it.
struct Setup {
    sim: SimHandle,
    dir: PathBuf,
    config_path: PathBuf,
    config: Config,
    sf_config: Config,
}

async fn set_up(options: &DemoOptions) -> Result<Setup> {
    std::fs::create_dir_all(&options.dir).map_err(|source| DemoError::Folder {
        dir: options.dir.clone(),
        source,
    })?;
    let dir = options.dir.canonicalize()?;
    let sim = Simulator::start(
        SimConfig {
            contacts: options.contacts,
            companies: options.companies,
            deals: options.deals,
            ..Default::default()
        },
        "127.0.0.1:0".parse().expect("a socket address"),
    )
    .await
    .map_err(DemoError::Simulator)?;
    let config_path = dir.join("crm.toml");
    let sf_config_path = dir.join("salesforce.toml");
    transform::write_example_models(&dir.join("models"))?;
    std::fs::write(&config_path, demo_config(&dir, &sim, &options.destination))?;
    std::fs::write(
        &sf_config_path,
        demo_salesforce_config(&dir, &sim, &options.destination),
    )?;
    let database_url = match &options.destination {
        DemoDestination::Postgres { url } => Some(url.clone()),
        DemoDestination::Lake => None,
    };
    let env = |name: &str| match name {
        "DATABASE_URL" => database_url.clone(),
        other => std::env::var(other).ok(),
    };
    let config = Config::parse(&std::fs::read_to_string(&config_path)?, &config_path, &env)?;
    let sf_config = Config::parse(
        &std::fs::read_to_string(&sf_config_path)?,
        &sf_config_path,
        &env,
    )?;
    Ok(Setup {
        sim,
        dir,
        config_path,
        config,
        sf_config,
    })
}

/// Runs the HubSpot pipeline, then the Salesforce one; one report with both's streams.
async fn sync_both(setup: &Setup, options: &pipeline::RunOptions) -> Result<RunReport> {
    let mut report = pipeline::run(&setup.config, options).await?;
    ensure_success(&report)?;
    let salesforce = pipeline::run(&setup.sf_config, options).await?;
    ensure_success(&salesforce)?;
    report.streams.extend(salesforce.streams);
    Ok(report)
}

/// Updates, inserts, archives and deletes at both simulated CRMs.
fn change_sources(sim: &SimHandle, options: &DemoOptions) -> Changes {
    let hubspot = &sim.hubspot;
    let salesforce = &sim.salesforce;
    // Archive and delete before inserting, so the summary's figures are exact: a new record
    // removed at once would never reach the destination.
    let contacts_archived = hubspot
        .archive("contacts", options.contacts / 100 + 1)
        .len();
    let sf_opportunities_deleted = salesforce.delete("Opportunity", 7).len();
    Changes {
        contacts_archived,
        contacts_updated: hubspot.update("contacts", options.contacts / 10).len(),
        contacts_inserted: hubspot.insert("contacts", options.contacts / 50 + 1).len(),
        deals_updated: hubspot.update("deals", options.deals / 10).len(),
        companies_archived: hubspot
            .archive("companies", options.companies / 100 + 1)
            .len(),
        sf_accounts_updated: salesforce.update("Account", 30).len(),
        sf_contacts_inserted: salesforce.insert("Contact", 12).len(),
        sf_opportunities_deleted,
    }
}

/// Materializes the example models of each pipeline into its destination (tested first).
async fn run_example_models(setup: &Setup) -> Result<Vec<ModelSummary>> {
    let mut models = Vec::new();
    for config in [&setup.config, &setup.sf_config] {
        let report = transform::models_command(config, None, None, false, false).await?;
        for m in report.models {
            if let Some(error) = m.error {
                return Err(DemoError::Model {
                    model: m.name,
                    error,
                }
                .into());
            }
            models.push(ModelSummary {
                name: m.name,
                rows: m.rows as usize,
                status: m.status,
            });
        }
    }
    Ok(models)
}

/// Count and checksum of every destination table against the simulator's live records.
async fn reconcile_with_simulator(setup: &Setup) -> Result<Vec<ReconcileStream>> {
    let hubspot = &setup.sim.hubspot;
    let salesforce = &setup.sim.salesforce;
    let destination = crate::destinations::build(&setup.config).await?;
    let mut reconcile = Vec::new();
    for stream in STREAMS {
        let mut source = Fingerprint::default();
        for record in hubspot.live_records(stream) {
            source.add(&record.id.to_string(), record.updated_ms, false);
        }
        let found = destination
            .table_fingerprint(stream, "id", DeleteMode::Hard)
            .await?
            .unwrap_or_default();
        reconcile.push(ReconcileStream {
            stream: stream.to_string(),
            source,
            destination: found,
            matched: source == found,
        });
    }
    for object in SF_OBJECTS {
        let mut source = Fingerprint::default();
        for record in salesforce.live_records(object) {
            source.add(&record.id, record.system_modstamp_ms, false);
        }
        let found = destination
            .table_fingerprint(object, "Id", DeleteMode::Hard)
            .await?
            .unwrap_or_default();
        reconcile.push(ReconcileStream {
            stream: object.to_string(),
            source,
            destination: found,
            matched: source == found,
        });
    }
    Ok(reconcile)
}

fn ensure_success(report: &RunReport) -> Result<()> {
    if report.status == Status::Success {
        return Ok(());
    }
    let errors: Vec<String> = report
        .streams
        .iter()
        .filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.stream)))
        .collect();
    Err(DemoError::SyncFailed {
        mismatch: report.status == Status::Mismatch,
        errors: errors.join("; "),
    }
    .into())
}

fn steps(report: &RunReport) -> Vec<StepStream> {
    report
        .streams
        .iter()
        .map(|s| StepStream {
            stream: s.stream.clone(),
            extracted: s.rows_extracted,
            inserted: s.rows_inserted,
            updated: s.rows_updated,
            deleted: s.rows_deleted,
            duration_ms: s.duration_ms,
            transformed: s.reconciliation.transformed.is_some(),
            filtered: s.rows_filtered,
        })
        .collect()
}

/// The simulator stamps changes with its clock; the sync's window ends at "now", so wait
/// until now is past the newest change.
async fn wait_past_changes(sim: &SimHandle) {
    let newest = STREAMS
        .iter()
        .flat_map(|s| sim.hubspot.live_records(s))
        .map(|r| r.updated_ms)
        .max()
        .unwrap_or(0);
    while chrono::Utc::now().timestamp_millis() <= newest + 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn demo_config(dir: &Path, sim: &SimHandle, destination: &DemoDestination) -> String {
    let destination = match destination {
        DemoDestination::Lake => {
            format!("type = \"lake\"\nurl = \"file://{}/lake\"", dir.display())
        }
        DemoDestination::Postgres { .. } => {
            "type = \"postgres\"\nurl = \"${DATABASE_URL}\"\nschema = \"demo\"".to_string()
        }
    };
    format!(
        r#"# Written by `syncline demo`. The simulator it points at ran only during the demo;
# `syncline query`, `syncline status` and `syncline ui` still work on what it synced.
[pipeline]
name = "demo"

[staging]
url = "file://{stage}"

[source]
type = "hubspot"
base_url = "{base}"
token = "{token}"   # the simulator's token, not a real secret
streams = ["contacts", "companies", "deals"]
lag_seconds = 0     # the simulator indexes instantly; keep the default 30 against HubSpot

[destination]
{destination}

# The example models, materialized as tables by `syncline models run --config crm.toml`.
[models]
dir = "{models}/hubspot"
tests = "{models}/tests/hubspot"
"#,
        models = dir.join("models").display(),
        stage = dir.join("stage").display(),
        base = sim.base_url,
        token = sim.token(),
    )
}

fn demo_salesforce_config(dir: &Path, sim: &SimHandle, destination: &DemoDestination) -> String {
    let destination = match destination {
        DemoDestination::Lake => {
            format!("type = \"lake\"\nurl = \"file://{}/lake\"", dir.display())
        }
        DemoDestination::Postgres { .. } => {
            "type = \"postgres\"\nurl = \"${DATABASE_URL}\"\nschema = \"demo\"".to_string()
        }
    };
    format!(
        r#"# Written by `syncline demo`: Salesforce (the simulator) into the same destination.
[pipeline]
name = "demo_salesforce"

[staging]
url = "file://{stage}"

[source]
type = "salesforce"
login_url = "{base}"
client_id = "sim-client"
client_secret = "sim-secret"   # the simulator's, not a real secret
streams = ["Account", "Contact", "Opportunity", "Lead"]
bulk_threshold = 500           # Account and Contact load through Bulk API 2.0
bulk_poll_ms = 20
lag_seconds = 0

[destination]
{destination}

# A stream transform (see the transforms chapter of the docs): the leads' emails reach the
# destination only as SHA-256 digests (salted with SYNCLINE_HASH_SALT when it is set) and
# Company is renamed; the raw load stays staged as the audit copy.
[streams.Lead]
hash = ["Email"]
rename = {{ Company = "company_name" }}

[models]
dir = "{models}/salesforce"
tests = "{models}/tests/salesforce"
"#,
        models = dir.join("models").display(),
        stage = dir.join("stage").display(),
        base = sim.base_url,
    )
}

/// The human summary printed by `syncline demo`.
pub fn render(summary: &DemoSummary) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(
        &mut out,
        format!(
            "syncline demo: HubSpot simulator -> Parquet staging -> {}",
            summary.destination
        ),
    );
    line(&mut out, String::new());
    line(
        &mut out,
        format!("full sync ({:.1} s)", summary.full_ms as f64 / 1000.0),
    );
    for s in &summary.full {
        let transformed = match s.transformed {
            true => format!("    transformed, {} filtered", s.filtered),
            false => String::new(),
        };
        line(
            &mut out,
            format!(
                "  {:<12} {:>7} rows loaded    {:>6} ms{transformed}",
                s.stream, s.inserted, s.duration_ms
            ),
        );
    }
    let c = &summary.changes;
    line(
        &mut out,
        format!(
            "changes at the source: contacts {} updated, {} new, {} archived; deals {} updated; companies {} archived",
            c.contacts_updated,
            c.contacts_inserted,
            c.contacts_archived,
            c.deals_updated,
            c.companies_archived
        ),
    );
    line(
        &mut out,
        format!(
            "incremental sync ({:.1} s)",
            summary.incremental_ms as f64 / 1000.0
        ),
    );
    for s in &summary.incremental {
        line(
            &mut out,
            format!(
                "  {:<12} {:>6} read  {:>6} inserted  {:>6} updated  {:>6} deleted",
                s.stream, s.extracted, s.inserted, s.updated, s.deleted
            ),
        );
    }
    if summary.models.is_empty() {
        line(&mut out, "models: none".into());
    } else {
        line(&mut out, "models".into());
        for m in &summary.models {
            let status = match m.status {
                transform::materialize::ModelStatus::Built => "table",
                transform::materialize::ModelStatus::TestsFailed => "tests failed",
                _ => "not built",
            };
            line(
                &mut out,
                format!("  {:<30} {:>4} rows  {status}", m.name, m.rows),
            );
        }
    }
    line(
        &mut out,
        "reconcile (source state vs destination: count and checksum)".into(),
    );
    for r in &summary.reconcile {
        line(
            &mut out,
            format!(
                "  {:<12} source {:>7} rows  destination {:>7} rows  {}",
                r.stream,
                r.source.rows,
                r.destination.rows,
                if r.matched { "match" } else { "MISMATCH" }
            ),
        );
    }
    line(&mut out, String::new());
    line(
        &mut out,
        format!(
            "data:    staged Parquet and manifests under {}/stage/demo",
            summary.dir.display()
        ),
    );
    if summary.destination == "lake" {
        line(
            &mut out,
            format!(
                "         Delta tables under {}/lake (readable by DuckDB, Spark, Polars, deltalake)",
                summary.dir.display()
            ),
        );
    } else {
        line(
            &mut out,
            "         PostgreSQL schema \"demo\", ledger in demo._syncline_loads".into(),
        );
    }
    line(&mut out, "next:".into());
    let config = summary.config.display();
    if summary.destination == "lake" {
        line(
            &mut out,
            format!(
                "  syncline query --config {config} \"SELECT lifecyclestage, count(*) FROM contacts GROUP BY 1\""
            ),
        );
    }
    line(&mut out, format!("  syncline status --config {config}"));
    line(
        &mut out,
        format!(
            "  syncline preview --config {} --stream Lead   # the leads as transformed: Email hashed, Company renamed",
            summary.dir.join("salesforce.toml").display()
        ),
    );
    line(
        &mut out,
        format!(
            "  syncline ui --config {config}   # the same as a page, at http://127.0.0.1:8484/"
        ),
    );
    line(
        &mut out,
        "  syncline sim   # serve the simulator, then point your own pipeline at it".into(),
    );
    out
}
