//! The built-in CRM simulator used by tests, benchmarks and the demo: one local HTTP server
//! answering HubSpot CRM v3 requests (list, search, properties; under `/crm/`) and
//! Salesforce REST and Bulk 2.0 requests (token, describe, SOQL query, query jobs, limits;
//! under `/services/`) from seeded, mutable in-memory data, with each vendor's limits and
//! failure modes (crm-apis.md parts A, B and C).
//!
//! [`Simulator::start`] serves on the current tokio runtime and returns a [`SimHandle`];
//! its [`HubspotSim`] and [`SalesforceSim`] let a test change records between syncs and
//! inject faults.

mod data;
pub mod hubspot;
mod ratelimit;
pub mod salesforce;
mod search;
pub mod webhooks;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use hubspot::{HubspotSim, PropertyDef, SimChange, SimRecord};
pub use salesforce::{SalesforceSim, SfField, SfRecord};
pub use webhooks::{WebhookSettings, WebhookStats};

/// How `shutdown` waits for open connections before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The public half of the test-only key pair in `tests/fixtures/`; it protects nothing.
const TEST_JWT_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/jwt-test-public.pem");

/// What the simulated account holds and how strict it is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds the initial data and every later seeded choice. Default 42.
    pub seed: u64,
    /// Initial contacts, ids `1..=contacts`. Default 1000.
    pub contacts: usize,
    /// Initial companies, ids `1..=companies`. Default 200.
    pub companies: usize,
    /// Initial deals, ids `1..=deals`. Default 300.
    pub deals: usize,
    /// The bearer token every `/crm/` request must send. Default `sim-token`.
    pub token: String,
    /// HubSpot's request limits; `None` (the default) admits everything.
    pub rate_limit: Option<RateLimit>,
    /// A record becomes searchable only this long after its last write, like HubSpot's
    /// eventually consistent search index. Default 0 (immediately).
    pub search_lag_ms: u64,
    /// Initial Salesforce Accounts, Ids `001…1` up. Default 300.
    pub sf_accounts: usize,
    /// Initial Salesforce Contacts (prefix `003`). Default 600.
    pub sf_contacts: usize,
    /// Initial Salesforce Opportunities (prefix `006`). Default 400.
    pub sf_opportunities: usize,
    /// Initial Salesforce Leads (prefix `00Q`). Default 200.
    pub sf_leads: usize,
    /// Initial `Wide__c` records (prefix `a0W`), whose 700 text fields overflow the URI
    /// limit when all are selected. Default 20.
    pub sf_wide_records: usize,
    /// The connected app's consumer key the Salesforce token endpoint accepts.
    /// Default `sim-client`.
    pub sf_client_id: String,
    /// The connected app's consumer secret. Default `sim-secret`.
    pub sf_client_secret: String,
    /// The PEM public key (`-----BEGIN PUBLIC KEY-----`) of the certificate uploaded to the
    /// connected app: JWT bearer assertions must be signed with its private key. Default:
    /// the test key pair's public half, `tests/fixtures/jwt-test-public.pem`.
    pub sf_jwt_public_key_pem: String,
    /// The user pre-authorized for the connected app, the only `sub` a JWT bearer assertion
    /// may name. Default `sim-user@example.com`.
    pub sf_username: String,
    /// The daily Salesforce API allocation (`Sforce-Limit-Info` max). Default 1,000,000.
    pub sf_daily_limit: u64,
    /// Serve every third Salesforce query page with half the batch, so connectors cannot
    /// assume full pages. Default false.
    pub sf_short_pages: bool,
    /// Status polls before a Bulk query job reaches `JobComplete`. Default 2.
    pub sf_bulk_polls: u32,
    /// Salesforce: soft-deleted records are purged from the Recycle Bin this many ms after
    /// their delete (they leave `queryAll`; `sobjects/{O}/deleted` still lists them). `None`
    /// (default): kept until a test calls `purge`.
    pub sf_purge_after_ms: Option<u64>,
    /// Salesforce: `sobjects/{O}/deleted` answers `EXCEEDED_ID_LIMIT` when a window holds
    /// more deletes than this (the real limit is 600,000; crm-apis.md A5). Default 600,000.
    pub sf_deleted_id_limit: usize,
    /// HubSpot webhooks for every HubSpot change (created, updated, archived), POSTed to a
    /// URL with signature v3 and HubSpot's duplicates, disorder and retries. `None` (default):
    /// no webhooks.
    pub webhooks: Option<WebhookSettings>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            contacts: 1_000,
            companies: 200,
            deals: 300,
            token: "sim-token".to_owned(),
            rate_limit: None,
            search_lag_ms: 0,
            sf_accounts: 300,
            sf_contacts: 600,
            sf_opportunities: 400,
            sf_leads: 200,
            sf_wide_records: 20,
            sf_client_id: "sim-client".to_owned(),
            sf_client_secret: "sim-secret".to_owned(),
            sf_jwt_public_key_pem: TEST_JWT_PUBLIC_KEY.to_owned(),
            sf_username: "sim-user@example.com".to_owned(),
            sf_daily_limit: 1_000_000,
            sf_short_pages: false,
            sf_bulk_polls: 2,
            sf_purge_after_ms: None,
            sf_deleted_id_limit: 600_000,
            webhooks: None,
        }
    }
}

/// HubSpot's per-account request budget (crm-apis.md B3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Non-search requests admitted in any rolling ten seconds.
    pub per_ten_seconds: u32,
    /// Search requests admitted in any rolling second.
    pub search_per_second: u32,
    /// Requests of any kind admitted per UTC day.
    pub daily: u32,
}

impl Default for RateLimit {
    /// The Free/Starter plan: 100 per 10 s, search 5 per second, 250,000 a day.
    fn default() -> Self {
        RateLimit {
            per_ten_seconds: 100,
            search_per_second: 5,
            daily: 250_000,
        }
    }
}

/// Starts simulator servers.
pub struct Simulator;

impl Simulator {
    /// Binds `addr` (use `127.0.0.1:0` for a free port), spawns the server on the current
    /// tokio runtime and returns at once.
    ///
    /// The server runs until [`SimHandle::shutdown`] or until the runtime stops; dropping
    /// the handle does not stop it. Fails if the address cannot be bound.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> anyhow::Result<SimHandle> {
        let hubspot = HubspotSim::new(&config);
        let emitter = hubspot
            .take_emitter()
            .map(|emitter| tokio::spawn(emitter.run()));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the CRM simulator to {addr}"))?;
        let local = listener
            .local_addr()
            .context("reading the CRM simulator's bound address")?;
        let base_url = format!("http://{local}");
        // Salesforce hands out its instance_url at login, so it needs the bound address.
        let salesforce = SalesforceSim::new(&config, &base_url);
        let (stop, stopped) = oneshot::channel::<()>();
        // HubSpot's gate is layered on its own routes only; Salesforce routes (`/services/`)
        // carry their own gate.
        let app = hubspot::router(hubspot.clone()).merge(salesforce::router(salesforce.clone()));
        let server = tokio::spawn(async move {
            let signal = async move {
                // A dropped sender means a dropped handle, which must not stop the server.
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::debug!(error = %err, "crm simulator stopped with an error");
            }
        });
        tracing::debug!(%local, "crm simulator listening");
        Ok(SimHandle {
            base_url,
            hubspot,
            salesforce,
            token: config.token,
            stop,
            server,
            emitter,
        })
    }
}

/// A running simulator.
pub struct SimHandle {
    /// `http://127.0.0.1:PORT`, to use in place of `https://api.hubapi.com`.
    pub base_url: String,
    /// The simulated HubSpot account behind the server.
    pub hubspot: HubspotSim,
    /// The simulated Salesforce org behind the server; its login URL and instance URL are
    /// both `base_url`.
    pub salesforce: SalesforceSim,
    token: String,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    /// The webhook emitter's task, when webhooks are on.
    emitter: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The bearer token the server expects.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Stops accepting connections and waits (at most a few seconds) for open ones to close.
    pub async fn shutdown(self) {
        let SimHandle {
            stop,
            server,
            emitter,
            ..
        } = self;
        // Deliveries still pending are abandoned, as a stopped HubSpot would.
        if let Some(emitter) = emitter {
            emitter.abort();
        }
        // An Err means the server task already ended; there is nothing left to stop.
        let _ = stop.send(());
        let abort = server.abort_handle();
        if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
            abort.abort();
        }
    }
}

impl fmt::Debug for SimHandle {
    // Hand-written so the token stays out of debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// For `syncline sim`: starts the simulator, prints `HUBSPOT_BASE_URL=…`,
/// `HUBSPOT_TOKEN=…`, `SALESFORCE_LOGIN_URL=…`, `SALESFORCE_CLIENT_ID=…`,
/// `SALESFORCE_CLIENT_SECRET=…` and `SALESFORCE_USERNAME=…` (the JWT bearer user) lines to
/// stdout (ready for `export`), and serves until ctrl-c.
pub async fn serve_forever(config: SimConfig, addr: SocketAddr) -> anyhow::Result<()> {
    let handle = Simulator::start(config, addr).await?;
    println!("HUBSPOT_BASE_URL={}", handle.base_url);
    println!("HUBSPOT_TOKEN={}", handle.token());
    println!("SALESFORCE_LOGIN_URL={}", handle.base_url);
    println!("SALESFORCE_CLIENT_ID={}", handle.salesforce.client_id());
    println!(
        "SALESFORCE_CLIENT_SECRET={}",
        handle.salesforce.client_secret()
    );
    println!("SALESFORCE_USERNAME={}", handle.salesforce.username());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    handle.shutdown().await;
    Ok(())
}
