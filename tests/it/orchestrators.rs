//! Orchestrators: `syncline plan`, Dagster Pipes spoken by `syncline run`, and the Python
//! integrations (`integrations/dagster`, `integrations/airflow`) run under the real Dagster and
//! Airflow, installed from PyPI into virtualenvs, against the built binary, the simulator and
//! a real PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use syncline::orchestrate::pipes::encode_param;
use syncline::sim::SimConfig;

use crate::support::Harness;

fn sim(contacts: usize, companies: usize, deals: usize) -> SimConfig {
    SimConfig {
        contacts,
        companies,
        deals,
        ..Default::default()
    }
}

const STREAMS: &[&str] = &["contacts", "companies", "deals"];

fn syncline(h: &Harness, args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
    command.args(args);
    for (k, v) in h.env() {
        command.env(k, v);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("spawn syncline")
}

async fn live_rows(h: &Harness, table: &str) -> i64 {
    h.client()
        .await
        .query_one(&format!("SELECT count(*) FROM crm.\"{table}\""), &[])
        .await
        .expect("count rows")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lists_each_stream_with_its_table_key_mode_and_check() {
    let h = Harness::start(
        sim(10, 10, 10),
        STREAMS,
        "[streams.deals]\ndeletes = \"soft\"",
    )
    .await;
    let config = h.config_path.to_str().unwrap();
    let out = syncline(&h, &["plan", "--config", config, "--json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan is JSON");
    assert_eq!(plan["pipeline"], "crm");
    assert_eq!(plan["source"], "hubspot");
    assert_eq!(plan["destination"], "postgres");
    assert_eq!(plan["models"], json!([]));
    let streams = plan["streams"].as_array().unwrap();
    let names: Vec<&str> = streams
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, STREAMS);
    let deals = &streams[2];
    assert_eq!(deals["destination_table"], "crm.deals");
    assert_eq!(deals["key"], json!(["id"]));
    assert_eq!(deals["mode"], "incremental");
    assert_eq!(deals["deletes"], "soft");
    assert_eq!(deals["checks"][0]["name"], "reconciliation");
    assert_eq!(deals["checks"][0]["severity"], "ERROR");

    let out = syncline(&h, &["plan", "--config", config], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("pipeline crm: hubspot -> postgres"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("contacts") && l.contains("crm.contacts")),
        "{text}"
    );
}

/// The messages a Pipes session wrote to its file, one JSON object a line.
fn read_messages(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each message line is JSON"))
        .collect()
}

fn pipes_env(dir: &Path, context: Value) -> (PathBuf, Vec<(&'static str, String)>) {
    let out = dir.join(format!("messages-{}.jsonl", uuid::Uuid::new_v4()));
    let env = vec![
        (
            "DAGSTER_PIPES_CONTEXT",
            encode_param(&json!({ "data": context })),
        ),
        (
            "DAGSTER_PIPES_MESSAGES",
            encode_param(&json!({ "path": out.to_str().unwrap() })),
        ),
    ];
    (out, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipes_run_reports_each_stream_once_with_the_tables_row_count_and_declared_checks() {
    let h = Harness::start(sim(120, 40, 30), STREAMS, "").await;
    let config = h.config_path.to_str().unwrap();
    // Checks are declared for contacts and deals only: companies must get none.
    let (out, env) = pipes_env(
        h.dir.path(),
        json!({
            "asset_keys": ["crm/companies", "crm/contacts", "crm/deals"],
            "run_id": "r1",
            "extras": {"syncline_checks": [
                {"asset_key": "crm/contacts", "check_name": "reconciliation"},
                {"asset_key": "crm/deals", "check_name": "reconciliation"},
            ]},
        }),
    );
    let run = syncline(&h, &["run", "--config", config], &env);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let messages = read_messages(&out);
    assert!(
        messages
            .iter()
            .all(|m| m["__dagster_pipes_version"] == "0.1"),
        "{messages:#?}"
    );
    assert_eq!(messages.first().unwrap()["method"], "opened");
    assert!(messages.first().unwrap()["params"]["extras"].is_object());
    assert_eq!(messages.last().unwrap()["method"], "closed");
    assert_eq!(messages.last().unwrap()["params"], json!({}));
    for stream in STREAMS {
        let key = format!("crm/{stream}");
        let materialized: Vec<&Value> = messages
            .iter()
            .filter(|m| {
                m["method"] == "report_asset_materialization" && m["params"]["asset_key"] == key
            })
            .collect();
        assert_eq!(materialized.len(), 1, "{stream}: {messages:#?}");
        let params = &materialized[0]["params"];
        let meta = &params["metadata"];
        assert_eq!(
            meta["dagster/row_count"],
            json!({"type": "int", "raw_value": live_rows(&h, stream).await}),
            "{stream}"
        );
        assert_eq!(
            meta["dagster/table_name"]["raw_value"],
            format!("crm.{stream}")
        );
        assert_eq!(params["data_version"], meta["load_id"]["raw_value"]);
        assert_eq!(meta["dagster/column_schema"]["type"], "table_schema");
        assert_eq!(
            meta["dagster/column_schema"]["raw_value"]["columns"][0]["name"],
            "id"
        );
        let checks: Vec<&Value> = messages
            .iter()
            .filter(|m| m["method"] == "report_asset_check" && m["params"]["asset_key"] == key)
            .collect();
        if *stream == "companies" {
            assert!(checks.is_empty(), "{checks:#?}");
        } else {
            assert_eq!(checks.len(), 1, "{stream}: {messages:#?}");
            assert_eq!(checks[0]["params"]["passed"], true);
            assert_eq!(checks[0]["params"]["severity"], "ERROR");
            assert_eq!(checks[0]["params"]["check_name"], "reconciliation");
        }
    }
    assert!(messages.iter().any(|m| m["method"] == "log"));

    // A config error still opens and closes the session, the closing naming the error.
    let (out, env) = pipes_env(h.dir.path(), json!({"asset_keys": null, "extras": {}}));
    let failed = syncline(
        &h,
        &["run", "--config", config, "--streams", "nosuch"],
        &env,
    );
    assert_eq!(failed.status.code(), Some(2));
    let messages = read_messages(&out);
    assert_eq!(messages.first().unwrap()["method"], "opened");
    let closed = messages.last().unwrap();
    assert_eq!(closed["method"], "closed");
    assert_eq!(closed["params"]["exception"]["name"], "syncline.Config");
    assert!(
        closed["params"]["exception"]["message"]
            .as_str()
            .unwrap()
            .contains("nosuch"),
        "{closed:#?}"
    );
}
