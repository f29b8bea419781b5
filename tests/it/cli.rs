//! The `syncline` binary as an orchestrator sees it: exit codes, the report, status, check.

use syncline::sim::SimConfig;

use crate::support::{Harness, settle};

fn syncline() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
}

#[test]
fn a_config_error_exits_2_and_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[pipeline]\nname = \"crm\"\n[staging]\nurl = \"file:///tmp/x\"\n[source]\ntype = \"hubspot\"\ntoken = \"${NOT_SET_ANYWHERE}\"\nstreams = [\"contacts\"]\n[destination]\ntype = \"postgres\"\nurl = \"postgres://u:hunter2@localhost/db\"\n",
    )
    .unwrap();
    let out = syncline()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:7"), "{stderr}");
    assert!(stderr.contains("source.token"), "{stderr}");
    assert!(stderr.contains("NOT_SET_ANYWHERE"), "{stderr}");

    let usage = syncline().args(["run"]).output().unwrap();
    assert_eq!(
        usage.status.code(),
        Some(2),
        "missing --config is a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_report_status_and_check_through_the_binary() {
    let h = Harness::start(
        SimConfig {
            contacts: 700,
            companies: 50,
            deals: 60,
            ..Default::default()
        },
        &["contacts", "companies", "deals"],
        "",
    )
    .await;
    let secret = h.sim.token().to_string();

    let check = syncline()
        .args(["check", "--config"])
        .arg(&h.config_path)
        .envs(h.env())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout)
            .lines()
            .filter(|l| l.starts_with("ok"))
            .count(),
        3
    );

    let (status, report) = h.run_binary(&["--streams", "contacts,deals"], &[]);
    assert_eq!(status.code(), Some(0));
    let report = report.unwrap();
    let names: Vec<&str> = report.streams.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(names, ["contacts", "deals"]);
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains(&secret), "the token leaked into the report");
    assert!(
        !text.contains("postgres://"),
        "the database URL leaked into the report"
    );
    let contacts = &report.streams[0];
    assert_eq!(contacts.rows_inserted, 700);
    assert!(contacts.cursor_to.is_some());
    assert!(contacts.reconciliation.matched);

    let status = syncline()
        .args(["status", "--json", "--config"])
        .arg(&h.config_path)
        .envs(h.env())
        .output()
        .unwrap();
    assert!(status.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(rows[0]["stream"], "contacts");
    assert_eq!(rows[0]["last_load_rows"], 700);
    assert_eq!(rows[0]["in_ledger"], true);
    assert_eq!(rows[1]["stream"], "companies");
    assert!(rows[1]["cursor"].is_null(), "companies never ran");

    let unknown = syncline()
        .args(["run", "--streams", "tickets", "--config"])
        .arg(&h.config_path)
        .envs(h.env())
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_staged_load_is_a_reconciliation_failure_with_exit_3() {
    let h = Harness::start(
        SimConfig {
            contacts: 300,
            companies: 1,
            deals: 1,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    assert!(h.run_binary(&[], &[]).0.success());
    h.sim.hubspot.update("contacts", 40);
    settle(&h).await;
    let (status, _) = h.run_binary(&[], &[("SYNCLINE_CRASH_AT", "after-stage")]);
    assert!(!status.success());

    // Corrupt the pending load's manifest: it now claims one row more than its files hold.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(h.stage_dir().join("crm/_state/contacts.json")).unwrap(),
    )
    .unwrap();
    let load_id = state["pending"]["load_id"].as_str().unwrap();
    let manifest_path = h
        .stage_dir()
        .join(format!("crm/contacts/loads/{load_id}/manifest.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["rows"] = serde_json::json!(manifest["rows"].as_u64().unwrap() + 1);
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let (status, report) = h.run_binary(&[], &[]);
    assert_eq!(status.code(), Some(3));
    let report = report.unwrap();
    assert_eq!(report.exit_code, 3);
    assert!(
        report.streams[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("reconciliation"),
        "{report:#?}"
    );
    // Nothing of the tampered load was applied, and the cursor did not move past it.
    let after: serde_json::Value = serde_json::from_slice(
        &std::fs::read(h.stage_dir().join("crm/_state/contacts.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(after["pending"]["load_id"], load_id);
}
