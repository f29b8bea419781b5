//! Orchestrators: `syncline plan`, Dagster Pipes spoken by `syncline run`, and the Python
//! integrations (`integrations/dagster`, `integrations/airflow`) run under the real Dagster and
//! Airflow, installed from PyPI into virtualenvs, against the built binary, the simulator and
//! a real PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use syncline::orchestrate::pipes::encode_param;
use syncline::sim::{RateLimit, SimConfig};

use crate::support::{Harness, python_venv, settle};

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
    // -v: the info events (a "merged" per stream) pass the filter, so they reach Dagster too.
    let run = syncline(&h, &["-v", "run", "--config", config], &env);
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
    let logs: Vec<&Value> = messages.iter().filter(|m| m["method"] == "log").collect();
    assert!(
        logs.iter().any(|m| m["params"]["level"] == "INFO"
            && m["params"]["message"]
                .as_str()
                .unwrap()
                .starts_with("merged")),
        "{logs:#?}"
    );
    let contacts = messages
        .iter()
        .find(|m| m["method"] == "report_asset_materialization")
        .unwrap();
    assert!(
        contacts["params"]["metadata"]["lag_seconds"]["raw_value"].is_i64(),
        "{contacts:#?}"
    );

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

// ---- Dagster: the real package from PyPI, the integration in integrations/dagster ----------

fn dagster_python() -> PathBuf {
    python_venv(
        "dagster",
        &["dagster==1.13.28", "dagster-pipes==1.13.28", "pytest"],
        "import dagster, dagster_pipes, pytest",
    )
    .join("bin/python")
}

fn integration_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integrations")
        .join(name)
}

/// Runs the package's pytest suite (`-k select`), live against `h` when given; panics with
/// pytest's output when it fails.
fn pytest(python: &Path, package: &str, h: Option<&Harness>, select: &str, env: &[(&str, String)]) {
    let dir = integration_dir(package);
    let mut command = Command::new(python);
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", select])
        .current_dir(&dir)
        .env("PYTHONPATH", dir.join("src"))
        .env_remove("SYNCLINE_CONFIG")
        .env_remove("SYNCLINE_BIN");
    if let Some(h) = h {
        command
            .env("SYNCLINE_BIN", env!("CARGO_BIN_EXE_syncline"))
            .env("SYNCLINE_CONFIG", &h.config_path);
        for (k, v) in h.env() {
            command.env(k, v);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest -k {select:?} failed:\n{text}");
    assert!(
        !text.contains(" skipped") || h.is_none(),
        "live tests skipped:\n{text}"
    );
}

#[test]
fn the_dagster_package_passes_its_own_tests() {
    pytest(&dagster_python(), "dagster", None, "not live", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dagster_materializes_every_stream_and_two_subsets_run_at_once() {
    let python = tokio::task::spawn_blocking(dagster_python).await.unwrap();
    let h = Harness::start(sim(120, 40, 30), STREAMS, "").await;
    let expected: serde_json::Map<String, Value> = STREAMS
        .iter()
        .map(|s| (s.to_string(), json!(h.sim.hubspot.live_records(s).len())))
        .collect();
    pytest(
        &python,
        "dagster",
        Some(&h),
        "test_materialize_loads_every_stream or test_pipes_messages",
        &[(
            "SYNCLINE_EXPECTED_ROWS",
            Value::Object(expected).to_string(),
        )],
    );
    for stream in STREAMS {
        h.assert_converged(stream, false).await;
    }

    h.sim.hubspot.update("contacts", 30);
    h.sim.hubspot.update("deals", 10);
    settle(&h).await;
    pytest(
        &python,
        "dagster",
        Some(&h),
        "test_two_subset_runs",
        &[("SYNCLINE_SUBSET_STREAMS", "contacts,deals".to_string())],
    );
    for stream in STREAMS {
        h.assert_converged(stream, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dagster_a_reconciliation_failure_fails_its_check_and_is_not_retried() {
    let python = tokio::task::spawn_blocking(dagster_python).await.unwrap();
    let h = Harness::start(sim(200, 20, 20), STREAMS, "").await;
    assert!(h.run_binary(&[], &[]).0.success());
    h.sim.hubspot.update("contacts", 40);
    settle(&h).await;
    let (status, _) = h.run_binary(
        &["--streams", "contacts"],
        &[("SYNCLINE_CRASH_AT", "after-stage")],
    );
    assert!(!status.success());
    // The pending load's manifest now claims one row more than its files hold.
    let state: Value = serde_json::from_slice(
        &std::fs::read(h.stage_dir().join("crm/_state/contacts.json")).unwrap(),
    )
    .unwrap();
    let load_id = state["pending"]["load_id"].as_str().unwrap();
    let manifest_path = h
        .stage_dir()
        .join(format!("crm/contacts/loads/{load_id}/manifest.json"));
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["rows"] = json!(manifest["rows"].as_u64().unwrap() + 1);
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    pytest(
        &python,
        "dagster",
        Some(&h),
        "test_reconciliation_failure",
        &[("SYNCLINE_BROKEN_STREAM", "contacts".to_string())],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dagster_a_quota_stop_is_requested_again() {
    let python = tokio::task::spawn_blocking(dagster_python).await.unwrap();
    let h = Harness::start(
        SimConfig {
            rate_limit: Some(RateLimit {
                per_ten_seconds: 10_000,
                search_per_second: 10_000,
                // The properties call and four list pages of contacts: the limit is met mid-read.
                daily: 5,
            }),
            ..sim(1000, 200, 10)
        },
        &["contacts", "companies"],
        "",
    )
    .await;
    pytest(&python, "dagster", Some(&h), "test_a_quota_stop", &[]);
}

// ---- Airflow: the real package from PyPI, the operator in integrations/airflow -------------

fn airflow_python() -> PathBuf {
    python_venv(
        "airflow",
        &["apache-airflow==3.3.2", "pytest"],
        "import airflow.sdk, pytest",
    )
    .join("bin/python")
}

#[test]
fn the_airflow_package_passes_its_own_tests() {
    pytest(&airflow_python(), "airflow", None, "not live", &[]);
}

/// `airflow ARGS` in a standalone home (SQLite) under `h`, with the example DAGs.
fn airflow(python: &Path, h: &Harness, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = integration_dir("airflow");
    let mut command = Command::new(python.with_file_name("airflow"));
    command
        .args(args)
        .env("AIRFLOW_HOME", h.dir.path().join("airflow"))
        .env("AIRFLOW__CORE__DAGS_FOLDER", dir.join("example/dags"))
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("PYTHONPATH", dir.join("src"))
        .env("SYNCLINE_BIN", env!("CARGO_BIN_EXE_syncline"))
        .env("SYNCLINE_CONFIG", &h.config_path);
    for (k, v) in h.env() {
        command.env(k, v);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run airflow");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Python run against the Airflow home's metadata database; prints JSON.
fn airflow_query(python: &Path, h: &Harness, code: &str) -> Value {
    let out = Command::new(python)
        .args(["-c", code])
        .env("AIRFLOW_HOME", h.dir.path().join("airflow"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).expect("query prints JSON")
}

const ASSET_EVENTS: &str = r#"
import json
from airflow.utils.session import create_session
from airflow.models.asset import AssetEvent, AssetModel
with create_session() as s:
    rows = s.query(AssetModel.uri, AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id).all()
    print(json.dumps([[uri, extra] for uri, extra in rows]))
"#;

const REPORTS: &str = r#"
import json
from airflow.utils.session import create_session
from airflow.models.xcom import XComModel
with create_session() as s:
    rows = s.query(XComModel.value).filter(XComModel.task_id == "load", XComModel.key == "return_value").all()
    print(json.dumps([v if not isinstance(v, str) else json.loads(v) for (v,) in rows]))
"#;

const LOAD_TASKS: &str = r#"
import json
from airflow.utils.session import create_session
from airflow.models.taskinstance import TaskInstance
from airflow.models.dagrun import DagRun
with create_session() as s:
    last = s.query(DagRun).order_by(DagRun.id.desc()).first()
    tis = s.query(TaskInstance).filter(TaskInstance.run_id == last.run_id, TaskInstance.task_id == "load").all()
    print(json.dumps([[ti.map_index, str(ti.state), ti.try_number] for ti in tis]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_dags_test_loads_every_stream_and_a_config_error_is_not_retried() {
    let python = tokio::task::spawn_blocking(airflow_python).await.unwrap();
    let h = Harness::start(sim(120, 40, 30), STREAMS, "").await;
    let (ok, log) = airflow(&python, &h, &["db", "migrate"], &[]);
    assert!(ok, "{log}");
    let (ok, log) = airflow(&python, &h, &["dags", "test", "syncline_crm"], &[]);
    assert!(ok && log.contains("state=success"), "{log}");
    for stream in STREAMS {
        h.assert_converged(stream, false).await;
    }
    let events = airflow_query(&python, &h, ASSET_EVENTS);
    let events = events.as_array().unwrap();
    let asset_lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.to_lowercase().contains("asset") || l.contains("Traceback") || l.contains("rror")
        })
        .collect();
    assert_eq!(
        events.len(),
        STREAMS.len(),
        "{events:#?}\n{}",
        asset_lines.join("\n")
    );
    for stream in STREAMS {
        let event = events
            .iter()
            .find(|e| e[0] == format!("syncline://crm/{stream}"))
            .unwrap_or_else(|| panic!("no asset event for {stream}: {events:#?}"));
        assert_eq!(
            event[1]["rows_inserted"],
            json!(live_rows(&h, stream).await),
            "{event:#?}"
        );
        assert_eq!(event[1]["status"], "success");
    }
    let tasks = airflow_query(&python, &h, LOAD_TASKS);
    assert_eq!(tasks.as_array().unwrap().len(), STREAMS.len(), "{tasks:#?}");
    // Each mapped task's run report is its XCom return value.
    let reports = airflow_query(&python, &h, REPORTS);
    let mut loaded: Vec<String> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["exit_code"], 0, "{r:#?}");
            r["streams"][0]["stream"].as_str().unwrap().to_string()
        })
        .collect();
    loaded.sort();
    assert_eq!(loaded, ["companies", "contacts", "deals"], "{reports:#?}");

    // Rejected credentials are a configuration error (exit 2): each task fails at once, no retry
    // (the DAG allows 2).
    let (_, log) = airflow(
        &python,
        &h,
        &["dags", "test", "syncline_crm"],
        &[("SIM_TOKEN", "wrong-token")],
    );
    assert!(log.contains("state=failed"), "{log}");
    assert!(log.contains("AirflowFailException"), "{log}");
    let tasks = airflow_query(&python, &h, LOAD_TASKS);
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), STREAMS.len(), "{tasks:#?}");
    for task in tasks {
        assert_eq!(task[1], "failed", "{tasks:#?}");
        assert_eq!(task[2], 1, "retried: {tasks:#?}");
    }
}

// ---- Dagster: one asset per SQL model -------------------------------------------------------

const LIFECYCLE_SHARE: &str = "-- materialized: table\n-- tests: TESTS\nSELECT lifecyclestage, contacts FROM contacts_by_lifecycle WHERE contacts > 0\n";

/// The repository's HubSpot models, plus one reading another model, with `tests` on it.
fn write_models(dir: &Path, tests: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/hubspot");
    for entry in std::fs::read_dir(&repo).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.join("lifecycle_share.sql"),
        LIFECYCLE_SHARE.replace("TESTS", tests),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dagster_builds_one_asset_per_model_after_its_streams_with_its_tests_as_checks() {
    let python = tokio::task::spawn_blocking(dagster_python).await.unwrap();
    let models = tempfile::tempdir().unwrap();
    write_models(
        models.path(),
        "accepted_values(lifecyclestage: 'subscriber', 'lead', 'customer')",
    );
    let h = Harness::start(
        sim(120, 40, 30),
        STREAMS,
        &format!(
            "[models]\ndir = \"{}\"\ntests = \"{}\"\n",
            models.path().display(),
            models.path().join("no-tests").display()
        ),
    )
    .await;
    let config = h.config_path.to_str().unwrap();
    let plan = syncline(&h, &["plan", "--config", config, "--json"], &[]);
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan is JSON");
    let share = plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "lifecycle_share")
        .expect("lifecycle_share in the plan");
    assert_eq!(share["depends_on"], json!(["contacts_by_lifecycle"]));
    assert_eq!(share["destination_table"], "crm.lifecycle_share");
    assert_eq!(share["checks"][0]["name"], "accepted_values_lifecyclestage");

    let result_file = h.dir.path().join("dagster-result.json");
    let env = [(
        "SYNCLINE_RESULT_FILE",
        result_file.to_str().unwrap().to_string(),
    )];
    pytest(
        &python,
        "dagster",
        Some(&h),
        "test_streams_and_models_materialize_together",
        &env,
    );
    let result: Value = serde_json::from_slice(&std::fs::read(&result_file).unwrap()).unwrap();
    let model_names = [
        "contacts_by_lifecycle",
        "deal_pipeline",
        "duplicate_contacts",
        "lifecycle_share",
    ];
    // One materialization per stream and per model, each with the rows the destination has.
    let rows = result["rows"].as_object().unwrap();
    assert_eq!(rows.len(), STREAMS.len() + model_names.len(), "{result:#}");
    for table in STREAMS.iter().chain(&model_names) {
        assert_eq!(
            rows[*table],
            json!(live_rows(&h, table).await),
            "{table}: {result:#}"
        );
    }
    assert!(rows["lifecycle_share"].as_i64().unwrap() > 0, "{result:#}");
    let checks = result["checks"].as_object().unwrap();
    for check in [
        "contacts_by_lifecycle/accepted_values_lifecyclestage",
        "deal_pipeline/not_null_deals",
        "duplicate_contacts/unique_email",
        "lifecycle_share/accepted_values_lifecyclestage",
        "contacts/reconciliation",
    ] {
        assert_eq!(checks[check], true, "{check}: {result:#}");
    }

    // A test that fails: its check fails, the models step fails without retry, the table stays.
    let before = live_rows(&h, "lifecycle_share").await;
    write_models(models.path(), "accepted_values(lifecyclestage: 'lead')");
    pytest(
        &python,
        "dagster",
        Some(&h),
        "test_a_failing_model_test_fails_its_check",
        &env,
    );
    let result: Value = serde_json::from_slice(&std::fs::read(&result_file).unwrap()).unwrap();
    assert_eq!(
        result["checks"]["lifecycle_share/accepted_values_lifecyclestage"], false,
        "{result:#}"
    );
    assert_eq!(
        result["checks"]["contacts_by_lifecycle/accepted_values_lifecyclestage"], true,
        "{result:#}"
    );
    assert!(
        result["rows"].get("lifecycle_share").is_none(),
        "{result:#}"
    );
    assert_eq!(live_rows(&h, "lifecycle_share").await, before);
}
