//! Salesforce → Parquet staging → PostgreSQL over HTTP against the simulator: Bulk full
//! loads, REST incrementals, deletes, wide objects, quota stops, expiring sessions and the
//! JWT bearer login.

use std::path::{Path, PathBuf};

use syncline::pipeline::RunOptions;
use syncline::reconcile::report::Status;
use syncline::sim::SimConfig;

use crate::support::{
    Harness, settle_sf, write_salesforce_config, write_salesforce_config_with_auth,
};

fn sim() -> SimConfig {
    SimConfig {
        contacts: 1,
        companies: 1,
        deals: 1,
        sf_accounts: 700,
        sf_contacts: 900,
        sf_opportunities: 300,
        sf_leads: 150,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_full_load_then_rest_incremental_with_deletes_converge() {
    let h = Harness::start(sim(), &["contacts"], "").await;
    write_salesforce_config(
        &h,
        &["Account", "Contact", "Opportunity", "Lead"],
        "bulk_threshold = 500",
        "",
    );

    let first = h.run(false).await;
    assert_eq!(first.status, Status::Success, "{first:#?}");
    assert!(
        h.sim.salesforce.bulk_jobs_created() >= 2,
        "Account and Contact are above the bulk threshold"
    );
    for object in ["Account", "Contact", "Opportunity", "Lead"] {
        h.assert_sf_converged(object).await;
    }
    let usage = first.streams[0]
        .api_usage
        .clone()
        .expect("api usage reported");
    assert!(usage.contains('/'), "{usage}");

    let sf = &h.sim.salesforce;
    let deleted = sf.delete("Account", 25);
    let updated = sf.update("Account", 120);
    let inserted = sf.insert("Contact", 60);
    sf.update("Opportunity", 40);
    sf.delete("Lead", 5);
    settle_sf(&h, &["Account", "Contact", "Opportunity", "Lead"]).await;
    let jobs_before = sf.bulk_jobs_created();

    let second = h.run(false).await;
    assert_eq!(second.status, Status::Success, "{second:#?}");
    assert_eq!(
        sf.bulk_jobs_created(),
        jobs_before,
        "incremental runs use REST"
    );
    for object in ["Account", "Contact", "Opportunity", "Lead"] {
        h.assert_sf_converged(object).await;
    }
    let account = &second.streams[0];
    assert_eq!(account.rows_deleted, deleted.len() as u64);
    assert_eq!(
        account.rows_updated,
        updated.iter().filter(|id| !deleted.contains(id)).count() as u64
    );
    assert_eq!(second.streams[1].rows_inserted, inserted.len() as u64);
    assert_eq!(second.streams[3].rows_deleted, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bulk_job_falls_back_to_rest() {
    let h = Harness::start(sim(), &["contacts"], "").await;
    write_salesforce_config(&h, &["Account"], "bulk_threshold = 10", "");
    h.sim.salesforce.fail_next_bulk_job();
    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    assert_eq!(h.sim.salesforce.bulk_jobs_created(), 1);
    h.assert_sf_converged("Account").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_object_loads_completely_through_split_queries() {
    let h = Harness::start(
        SimConfig {
            sf_wide_records: 40,
            ..sim()
        },
        &["contacts"],
        "",
    )
    .await;
    write_salesforce_config(&h, &["Wide__c"], "", "");
    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    assert_eq!(report.streams[0].rows_inserted, 40);
    h.assert_sf_converged("Wide__c").await;

    h.sim.salesforce.update("Wide__c", 7);
    settle_sf(&h, &["Wide__c"]).await;
    let report = h.run(false).await;
    assert_eq!(report.streams[0].rows_updated, 7, "{report:#?}");
    h.assert_sf_converged("Wide__c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_runs_out_mid_run_then_the_next_run_converges() {
    let h = Harness::start(
        SimConfig {
            sf_short_pages: true,
            ..sim()
        },
        &["contacts"],
        "",
    )
    .await;
    write_salesforce_config(&h, &["Account", "Contact"], "bulk_threshold = 100000", "");
    // Leave room for login, describes, counts and a page or two: the quota ends mid-stream.
    h.sim.salesforce.set_api_usage(0, 6);
    let (status, report) = {
        let env: Vec<(String, String)> = h
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        h.run_binary(&[], &env)
    };
    assert_eq!(status.code(), Some(4), "stopped cleanly with exit code 4");
    let report = report.expect("a report");
    assert_eq!(report.status, Status::Stopped);
    let stopped: Vec<_> = report
        .streams
        .iter()
        .filter_map(|s| s.stopped.as_deref())
        .collect();
    assert!(!stopped.is_empty(), "{report:#?}");
    assert!(
        stopped[0].contains("limit") || stopped[0].contains("budget"),
        "{stopped:?}"
    );
    // The stream being read and every later one stop; none fails on the quota.
    assert!(
        report
            .streams
            .iter()
            .all(|s| s.error.is_none() && matches!(s.status, Status::Success | Status::Stopped)),
        "{report:#?}"
    );
    assert_eq!(report.streams[1].status, Status::Stopped, "{report:#?}");

    h.sim.salesforce.set_api_usage(0, 1_000_000);
    let next = h.run(false).await;
    assert_eq!(next.status, Status::Success, "{next:#?}");
    h.assert_sf_converged("Account").await;
    h.assert_sf_converged("Contact").await;
}

/// Runs the binary against the harness; returns the exit code and the report.
fn run_binary(h: &Harness) -> (Option<i32>, syncline::reconcile::report::RunReport) {
    let (status, report) = h.run_binary(&[], &[]);
    (status.code(), report.expect("a report"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_runs_out_at_a_later_streams_describe_which_stops_cleanly() {
    let h = Harness::start(sim(), &["contacts"], "").await;
    write_salesforce_config(&h, &["Account", "Contact"], "bulk_threshold = 100000", "");
    // Account's full load takes its describe, a count and one page of 700 records; other
    // integrations of the org use up the rest right after, so Contact's describe is refused.
    h.sim.salesforce.exhaust_api_after(3);
    let (code, report) = run_binary(&h);
    assert_eq!(code, Some(4), "{report:#?}");
    assert_eq!(report.status, Status::Stopped);
    let (account, contact) = (&report.streams[0], &report.streams[1]);
    assert_eq!(account.status, Status::Success, "{account:#?}");
    assert_eq!(account.rows_inserted, 700);
    assert_eq!(contact.status, Status::Stopped, "{contact:#?}");
    let reason = contact.stopped.as_deref().unwrap_or_default();
    assert!(
        reason.contains("REQUEST_LIMIT_EXCEEDED") && reason.contains("Contact/describe"),
        "{reason}"
    );
    assert_eq!(contact.error, None);
    assert!(contact.api_usage.is_some(), "{contact:#?}");
    h.assert_sf_converged("Account").await;

    h.sim.salesforce.set_api_usage(0, 1_000_000);
    let next = h.run(false).await;
    assert_eq!(next.status, Status::Success, "{next:#?}");
    h.assert_sf_converged("Account").await;
    h.assert_sf_converged("Contact").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_used_up_before_the_run_stops_every_stream_without_asking_again() {
    let h = Harness::start(sim(), &["contacts"], "").await;
    write_salesforce_config(
        &h,
        &["Account", "Contact", "Opportunity"],
        "bulk_threshold = 100000",
        "",
    );
    h.sim.salesforce.exhaust_api_after(0);
    let (code, report) = run_binary(&h);
    assert_eq!(code, Some(4), "{report:#?}");
    assert_eq!(report.status, Status::Stopped);
    for stream in &report.streams {
        assert_eq!(stream.status, Status::Stopped, "{stream:#?}");
        assert_eq!(stream.error, None, "{stream:#?}");
        let reason = stream.stopped.as_deref().unwrap_or_default();
        assert!(reason.contains("REQUEST_LIMIT_EXCEEDED"), "{reason}");
    }
    assert_eq!(
        h.sim.salesforce.request_count(),
        1,
        "a quota does not come back within the run: later streams never ask"
    );

    // The configured budget is met the same way: at the first call, before any stream reads.
    h.sim.salesforce.set_api_usage(90, 100);
    write_salesforce_config(
        &h,
        &["Account", "Contact", "Opportunity"],
        "bulk_threshold = 100000\napi_budget = 0.5",
        "",
    );
    let (code, report) = run_binary(&h);
    assert_eq!(code, Some(4), "{report:#?}");
    assert!(
        report.streams.iter().all(|s| s.status == Status::Stopped),
        "{report:#?}"
    );

    h.sim.salesforce.set_api_usage(0, 1_000_000);
    let next = h.run(false).await;
    assert_eq!(next.status, Status::Success, "{next:#?}");
    for object in ["Account", "Contact", "Opportunity"] {
        h.assert_sf_converged(object).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_met_at_the_count_or_the_bulk_job_stops_cleanly() {
    let h = Harness::start(sim(), &["contacts"], "").await;
    write_salesforce_config(&h, &["Account", "Contact"], "bulk_threshold = 10", "");
    // Account's describe, then its count, then the creation of its Bulk job.
    for (admitted, refused) in [(1, "queryAll"), (2, "jobs/query")] {
        h.sim.salesforce.set_api_usage(0, 1_000_000);
        h.sim.salesforce.exhaust_api_after(admitted);
        let (code, report) = run_binary(&h);
        assert_eq!(code, Some(4), "{report:#?}");
        for stream in &report.streams {
            assert_eq!(stream.status, Status::Stopped, "{stream:#?}");
            assert_eq!(stream.error, None, "{stream:#?}");
        }
        let reason = report.streams[0].stopped.as_deref().unwrap_or_default();
        assert!(
            reason.contains("REQUEST_LIMIT_EXCEEDED") && reason.contains(refused),
            "{reason}"
        );
    }
    h.sim.salesforce.set_api_usage(0, 1_000_000);
    let next = h.run(false).await;
    assert_eq!(next.status, Status::Success, "{next:#?}");
    h.assert_sf_converged("Account").await;
    h.assert_sf_converged("Contact").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_expires_mid_run_is_renewed_and_the_run_continues() {
    let h = Harness::start(
        SimConfig {
            sf_short_pages: true,
            ..sim()
        },
        &["contacts"],
        "",
    )
    .await;
    write_salesforce_config(&h, &["Account", "Contact"], "bulk_threshold = 100000", "");
    h.sim.salesforce.expire_sessions_after(4);
    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    assert!(
        h.sim.salesforce.sessions_expired() >= 1,
        "the session really expired during the run"
    );
    h.assert_sf_converged("Account").await;
    h.assert_sf_converged("Contact").await;
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `[source]` lines selecting the JWT bearer flow as the simulator's user, keyed by `key`.
fn jwt_auth(key: &Path) -> String {
    format!(
        "username = \"sim-user@example.com\"\nprivate_key_path = \"{}\"",
        key.display()
    )
}

/// Runs the pipeline expecting it to fail, and returns every error message it produced:
/// the run's own error, or the failed streams' errors.
async fn failed_run(h: &Harness) -> String {
    match syncline::pipeline::run(&h.config(), &RunOptions::default()).await {
        Err(err) => err.to_string(),
        Ok(report) => {
            assert_eq!(report.status, Status::Failed, "{report:#?}");
            let errors: Vec<String> = report
                .streams
                .iter()
                .filter_map(|stream| stream.error.clone())
                .collect();
            assert!(!errors.is_empty(), "{report:#?}");
            errors.join("\n")
        }
    }
}

/// No line of any fixture key (nor a PEM armour line) may reach an error message.
fn assert_no_key_material(message: &str) {
    assert!(!message.contains("-----BEGIN"), "{message}");
    for name in [
        "jwt-test-private.pem",
        "jwt-test-public.pem",
        "jwt-other-private.pem",
    ] {
        let text = std::fs::read_to_string(fixture(name)).expect("fixture key");
        // Short lines (a final `IDAQAB`) could match by chance; 16 characters cannot.
        let body = text
            .lines()
            .filter(|line| !line.starts_with("-----") && line.len() >= 16);
        for line in body {
            assert!(!message.contains(line), "{name} leaked into: {message}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_login_loads_and_a_wrong_key_is_a_config_error() {
    let h = Harness::start(sim(), &["contacts"], "").await;
    let auth = jwt_auth(&fixture("jwt-test-private.pem"));
    write_salesforce_config_with_auth(&h, &["Lead"], &auth, "", "");
    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    h.assert_sf_converged("Lead").await;
    let sf = &h.sim.salesforce;
    assert!(sf.jwt_logins() >= 1, "the run logged in with an assertion");

    // A session that expires mid-run is renewed with a freshly signed assertion.
    let logins = sf.jwt_logins();
    sf.expire_sessions_after(1);
    let report = h.run(true).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    assert!(sf.sessions_expired() >= 1, "the session really expired");
    assert!(
        sf.jwt_logins() >= logins + 2,
        "a login, then a renewal: {} after {logins}",
        sf.jwt_logins()
    );
    h.assert_sf_converged("Lead").await;

    // A key the connected app does not hold: the token endpoint refuses the assertion.
    let auth = jwt_auth(&fixture("jwt-other-private.pem"));
    write_salesforce_config_with_auth(&h, &["Lead"], &auth, "", "");
    let logins = sf.jwt_logins();
    let message = failed_run(&h).await;
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(message.contains("configuration error"), "{message}");
    assert_no_key_material(&message);
    assert_eq!(sf.jwt_logins(), logins);

    // Not a private key at all (a public key, garbage): refused before any request.
    let public_key = h.dir.path().join("public-as-private.pem");
    std::fs::copy(fixture("jwt-test-public.pem"), &public_key).expect("copy the public key");
    let garbage = h.dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .expect("write garbage");
    for key in [&public_key, &garbage] {
        write_salesforce_config_with_auth(&h, &["Lead"], &jwt_auth(key), "", "");
        let requests = sf.token_requests();
        let message = failed_run(&h).await;
        assert!(message.contains("private_key"), "{message}");
        assert!(message.contains("configuration error"), "{message}");
        assert_no_key_material(&message);
        assert_eq!(sf.token_requests(), requests, "no login was attempted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_exit_2_and_never_show_the_secret() {
    let h = Harness::start(sim(), &["contacts"], "").await;
    write_salesforce_config(&h, &["Lead"], "", "");
    let (status, report) = h.run_binary(&[], &[("SF_SECRET", "not-the-secret-xyz")]);
    assert_eq!(
        status.code(),
        Some(2),
        "a rejected login is the user's to fix"
    );
    let report = report.expect("a report");
    let stream = &report.streams[0];
    assert_eq!(stream.retryable, Some(false));
    let error = stream.error.clone().unwrap_or_default();
    assert!(error.contains("client_secret"), "{error}");
    assert!(
        !serde_json::to_string(&report)
            .unwrap()
            .contains("not-the-secret-xyz")
    );
}

/// On a terminal, a full load whose source counts its records first shows a bar with the
/// total and a percentage; piped (as an orchestrator captures it), stderr has no progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_a_progress_bar_with_the_counted_total() {
    let h = Harness::start(
        SimConfig {
            sf_accounts: 6000,
            ..sim()
        },
        &["contacts"],
        "",
    )
    .await;
    write_salesforce_config(&h, &["Account"], "", "");
    // `script` gives the child a pseudo-terminal as stderr, as a person's shell would.
    let command = format!(
        "{} run --config {}",
        env!("CARGO_BIN_EXE_syncline"),
        h.config_path.display()
    );
    let mut script = std::process::Command::new("script");
    script.args(["-qefc", &command, "/dev/null"]);
    for (k, v) in h.env() {
        script.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || script.output().expect("script runs"))
        .await
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("/6,000 rows") && screen.contains('%'),
        "a bar against the COUNT() total: {screen}"
    );

    let (status, _) = h.run_binary(&["--full-refresh"], &[]);
    assert!(status.success());
    let piped = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["run", "--full-refresh", "--config"])
        .arg(&h.config_path)
        .envs(h.env())
        .output()
        .unwrap();
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains("rows ("),
        "no progress when piped: {stderr}"
    );
}

/// Ids of `object` the destination holds, of `ids`.
async fn held(h: &Harness, object: &str, ids: &[String]) -> Vec<String> {
    let rows = h
        .client()
        .await
        .query(
            &format!("SELECT \"Id\" FROM crm.\"{object}\" WHERE \"Id\" = ANY($1) ORDER BY 1"),
            &[&ids],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_and_purged_between_runs_are_deleted_through_get_deleted() {
    let h = Harness::start(sim(), &["contacts"], "").await;
    write_salesforce_config(&h, &["Account"], "bulk_threshold = 100000", "");
    let first = h.run(false).await;
    assert_eq!(first.status, Status::Success, "{first:#?}");

    // Deleted, then purged from the Recycle Bin: queryAll no longer returns them.
    let sf = &h.sim.salesforce;
    let deleted = sf.delete("Account", 4);
    assert_eq!(sf.purge("Account"), deleted);
    assert!(sf.deleted_ids("Account").is_empty());
    settle_sf(&h, &["Account"]).await;
    assert_eq!(held(&h, "Account", &deleted).await, deleted);

    let requests = sf.request_count();
    let second = h.run(false).await;
    assert_eq!(second.status, Status::Success, "{second:#?}");
    let account = &second.streams[0];
    assert_eq!(account.rows_deleted, deleted.len() as u64, "{account:#?}");
    assert!(account.warnings.is_empty(), "{account:#?}");
    assert!(held(&h, "Account", &deleted).await.is_empty());
    h.assert_sf_converged("Account").await;
    // The incremental run: describe, the delete log and one queryAll page.
    assert_eq!(sf.request_count() - requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_log_window_over_the_id_limit_is_asked_for_in_halves() {
    // Salesforce refuses a `deleted/` window listing more than 600,000 ids; the simulator
    // refuses more than two here.
    let config = SimConfig {
        sf_deleted_id_limit: 2,
        ..sim()
    };
    let h = Harness::start(config, &["contacts"], "").await;
    write_salesforce_config(&h, &["Account"], "bulk_threshold = 100000", "");
    let first = h.run(false).await;
    assert_eq!(first.status, Status::Success, "{first:#?}");

    // Six deletes spread over the last minutes, inside the next run's overlap (600 s), stamped
    // in the past so only the delete log (not queryAll's cursor) can tell of them.
    let sf = &h.sim.salesforce;
    let now = sf.now_ms();
    let mut deleted = Vec::new();
    for minutes_ago in [1, 2, 3, 4, 6, 8] {
        deleted.extend(sf.delete_late("Account", 1, now - minutes_ago * 60_000));
    }
    deleted.sort();
    assert_eq!(sf.purge("Account"), deleted);
    settle_sf(&h, &["Account"]).await;

    let second = h.run(false).await;
    assert_eq!(second.status, Status::Success, "{second:#?}");
    let account = &second.streams[0];
    assert_eq!(account.rows_deleted, deleted.len() as u64, "{account:#?}");
    assert!(held(&h, "Account", &deleted).await.is_empty());
    h.assert_sf_converged("Account").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_older_than_the_delete_log_are_reported_and_a_scheduled_reconcile_runs_at_once() {
    let h = Harness::start(sim(), &["contacts"], "").await;
    write_salesforce_config(
        &h,
        &["Account"],
        "bulk_threshold = 100000",
        "[reconcile]\nevery = \"24h\"\nrepair = true",
    );
    let first = h.run(false).await;
    assert_eq!(first.status, Status::Success, "{first:#?}");
    let scheduled = first.streams[0]
        .reconcile
        .as_ref()
        .expect("first reconcile");
    assert_eq!(
        scheduled.result,
        syncline::reconcile::report::ReconcileResult::Clean
    );

    let sf = &h.sim.salesforce;
    let deleted = sf.delete("Account", 3);
    sf.purge("Account");
    settle_sf(&h, &["Account"]).await;
    // Salesforce trimmed its delete log past those deletes: getDeleted cannot list them.
    sf.trim_delete_log(sf.now_ms() + 1);

    let second = h.run(false).await;
    let account = &second.streams[0];
    assert_eq!(account.rows_deleted, 0, "{account:#?}");
    assert!(account.reconcile_recommended, "{account:#?}");
    assert_eq!(account.warnings.len(), 1, "{account:#?}");
    let warning = &account.warnings[0];
    assert!(
        warning.contains("earliestDateAvailable")
            && warning.contains("syncline reconcile --repair"),
        "{warning}"
    );
    // Within `every`, yet the warning runs the reconcile now, which removes them.
    let repaired = account.reconcile.as_ref().expect("reconciled at once");
    assert_eq!(
        repaired.result,
        syncline::reconcile::report::ReconcileResult::Repaired,
        "{repaired:#?}"
    );
    assert_eq!(repaired.orphaned, deleted.len() as u64, "{repaired:#?}");
    assert_eq!(second.status, Status::Success, "{second:#?}");
    assert!(held(&h, "Account", &deleted).await.is_empty());
    h.assert_sf_converged("Account").await;
}
