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
            .filter(|l| l.starts_with('✓'))
            .count(),
        5,
        "staging, three streams and the destination"
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

/// A PostgreSQL role `app` that must log in with the password `right` over TCP (the test
/// cluster trusts everyone else), for a destination URL whose password is wrong.
async fn require_password(pg: &crate::support::TestPostgres) -> String {
    let admin = crate::support::connect(&pg.url).await;
    admin
        .batch_execute("CREATE ROLE app LOGIN PASSWORD 'right'")
        .await
        .unwrap();
    let hba: String = admin.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all app 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    admin.execute("SELECT pg_reload_conf()", &[]).await.unwrap();
    let wrong = pg
        .url
        .replace("postgres://postgres@", "postgres://app:wrong@");
    // The server applies the new rules on its own time; wait until it refuses.
    while tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
        .await
        .is_ok()
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_component_and_exits_with_the_worst() {
    // Three broken components (staging, the source, the destination): each gets its line.
    let pg = tokio::task::spawn_blocking(crate::support::TestPostgres::start)
        .await
        .unwrap();
    let wrong_url = require_password(&pg).await;
    // A HubSpot that cannot be reached: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crm.toml");
    let source = format!(
        "[source]\ntype = \"hubspot\"\nbase_url = \"http://127.0.0.1:{port}\"\n\
         token = \"${{HUBSPOT_TOKEN}}\"\nstreams = [\"contacts\", \"deals\"]\n\
         max_retries = 8\nretry_base_ms = 1000"
    );
    // A staging folder that cannot be made: its parent is a file.
    let not_a_folder = dir.path().join("not-a-folder");
    std::fs::write(&not_a_folder, "").unwrap();
    let text = crate::support::config_toml(
        "name = \"crm\"",
        &not_a_folder.join("stage"),
        &source,
        "[destination]\ntype = \"postgres\"\nurl = \"${DATABASE_URL}\"",
        "",
    );
    std::fs::write(&path, text).unwrap();

    let out = syncline()
        .args(["check", "--config"])
        .arg(&path)
        .env("HUBSPOT_TOKEN", "pat-secret-token")
        .env("DATABASE_URL", &wrong_url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("✗ staging: "), "{stdout}");
    for (line, stream) in lines[1..3].iter().zip(["contacts", "deals"]) {
        assert!(
            line.starts_with(&format!("✗ source stream {stream}: ")),
            "{stdout}"
        );
        // One retry, not the configured eight (which would take minutes of back-off).
        assert!(line.contains("(after 1 retries)"), "{stdout}");
    }
    assert!(lines[3].starts_with("✗ destination postgres: "), "{stdout}");
    assert!(lines[3].contains("destination.url"), "{stdout}");
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused credentials (2) outrank an unreachable API (1): {stdout}"
    );
    assert!(
        !stdout.contains("wrong") && !stdout.contains("pat-secret-token"),
        "{stdout}"
    );
}

/// Example values for the variables `init` files read, shaped as the loader wants them.
fn init_env(name: &str) -> Option<String> {
    Some(
        match name {
            "DATABASE_URL" | "SOURCE_DATABASE_URL" => "postgres://app:pg-secret-pw@localhost/db",
            "HUBSPOT_TOKEN" => "pat-na1-hubspot-secret",
            "SALESFORCE_CLIENT_SECRET" => "sf-secret-value",
            "SNOWFLAKE_PASSWORD" => "snow-secret-pw",
            "AWS_SECRET_ACCESS_KEY" => "aws-secret-key",
            "SALESFORCE_CLIENT_ID" => "3MVG9-consumer-key",
            "SNOWFLAKE_ACCOUNT" => "myorg-myaccount",
            "SNOWFLAKE_USER" => "SYNCLINE",
            "SNOWFLAKE_DATABASE" => "RAW",
            "AWS_ACCESS_KEY_ID" => "AKIAEXAMPLE",
            _ => return None,
        }
        .to_string(),
    )
}

#[test]
fn init_writes_a_config_for_every_pair_that_loads_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    for source in ["hubspot", "salesforce", "postgres", "files"] {
        for destination in ["postgres", "snowflake", "lake"] {
            let path = dir.path().join(format!("{source}-{destination}.toml"));
            let out = syncline()
                .args(["init", "--source", source, "--destination", destination])
                .args(["--staging", "s3://acme/stage", "--output"])
                .arg(&path)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{source}/{destination}: {stdout}");
            let text = std::fs::read_to_string(&path).unwrap();
            // Every variable the file reads is named in the instructions.
            for var in text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split("${").nth(1))
                .filter_map(|rest| rest.split('}').next())
            {
                assert!(
                    stdout.contains(&format!("export {var}=")),
                    "{source}/{destination}: {var} not listed\n{stdout}"
                );
            }
            let config = syncline::config::Config::parse(&text, &path, &init_env);
            assert!(
                config.is_ok(),
                "{source}/{destination}: {}\n{text}",
                config.unwrap_err()
            );
        }
    }

    let path = dir.path().join("hubspot-postgres.toml");
    std::fs::write(&path, "# mine\n").unwrap();
    let again = syncline()
        .args([
            "init",
            "--source",
            "hubspot",
            "--destination",
            "lake",
            "--output",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
    let forced = syncline()
        .args([
            "init",
            "--source",
            "hubspot",
            "--destination",
            "lake",
            "--force",
            "--output",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(forced.status.success());
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("type = \"lake\"")
    );
}

#[test]
fn config_schema_is_json_and_show_fills_defaults_without_secrets() {
    let schema = syncline().args(["config", "schema"]).output().unwrap();
    assert!(schema.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).unwrap();
    assert!(schema["$defs"]["PipelineConfig"]["properties"]["batch_rows"].is_object());
    assert!(schema.to_string().contains("\"retry_base_ms\""));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crm.toml");
    for (source, destination, secrets) in [
        (
            "hubspot",
            "postgres",
            &["pat-na1-hubspot-secret", "pg-secret-pw", "aws-secret-key"][..],
        ),
        (
            "salesforce",
            "snowflake",
            &["sf-secret-value", "snow-secret-pw"][..],
        ),
        ("postgres", "lake", &["pg-secret-pw"][..]),
    ] {
        let init = syncline()
            .args([
                "init",
                "--source",
                source,
                "--destination",
                destination,
                "--force",
            ])
            .args(["--staging", "s3://acme/stage", "--output"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(init.status.success());
        let mut show = syncline();
        show.args(["config", "show", "--config"]).arg(&path);
        for name in [
            "DATABASE_URL",
            "SOURCE_DATABASE_URL",
            "HUBSPOT_TOKEN",
            "SALESFORCE_CLIENT_ID",
            "SALESFORCE_CLIENT_SECRET",
            "SNOWFLAKE_ACCOUNT",
            "SNOWFLAKE_USER",
            "SNOWFLAKE_DATABASE",
            "SNOWFLAKE_PASSWORD",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            show.env(name, init_env(name).unwrap());
        }
        let out = show.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("batch_rows: 10000"),
            "defaults are filled in:\n{text}"
        );
        assert!(text.contains("***"), "{text}");
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{source}/{destination} shows a secret:\n{text}"
            );
        }
    }
}

#[test]
fn completions_and_man_pages_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = syncline().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "completions {shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["run", "reconcile", "replay", "completions"] {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}"
            );
        }
    }
    // The bash script must be one bash accepts, not only text that names the commands.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("syncline.bash");
    let bash = syncline().args(["completions", "bash"]).output().unwrap();
    std::fs::write(&script, bash.stdout).unwrap();
    let parsed = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(parsed.success(), "bash -n rejects the completion script");

    let page = syncline().arg("man").output().unwrap();
    assert!(page.status.success());
    let page = String::from_utf8(page.stdout).unwrap();
    assert!(page.contains(".TH syncline"), "a roff page: {page:.200}");
    assert!(page.contains("reconcile"));

    let pages = dir.path().join("man");
    let wrote = syncline()
        .args(["man", "--dir"])
        .arg(&pages)
        .status()
        .unwrap();
    assert!(wrote.success());
    for name in ["syncline.1", "syncline-run.1", "syncline-config-schema.1"] {
        assert!(pages.join(name).exists(), "{name} written");
    }

    let unknown = syncline().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// Replaces the line of `text` that starts with `prefix` (a commented default, or a key whose
/// value is a real service's address) with `line`.
fn set_line(text: &str, prefix: &str, line: &str) -> String {
    assert!(
        text.lines().any(|l| l.starts_with(prefix)),
        "no line starting {prefix:?} in\n{text}"
    );
    text.lines()
        .map(|l| if l.starts_with(prefix) { line } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Every file `init` writes passes `check` once its variables are set, against the local
/// stand-ins of each source and destination: the simulator (HubSpot, Salesforce), a real
/// PostgreSQL (CDC source and destination), a folder of CSV files, the lake, and fakesnow. The
/// only edits are the addresses of the real services, which the stand-ins replace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_files_pass_check_once_their_variables_are_set() {
    let sim = syncline::sim::Simulator::start(
        SimConfig {
            contacts: 20,
            companies: 5,
            deals: 5,
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let pg = tokio::task::spawn_blocking(|| {
        crate::support::TestPostgres::start_with_wal_level("logical")
    })
    .await
    .unwrap();
    crate::support::connect(&pg.url)
        .await
        .batch_execute("CREATE TABLE public.contacts (id bigint PRIMARY KEY, email text)")
        .await
        .unwrap();
    let warehouse = pg.create_database("warehouse");
    let snowflake = crate::support::snowflake::TestSnowflake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(exports.join("contacts")).unwrap();
    std::fs::write(
        exports.join("contacts/part-1.csv"),
        "id,email\n1,a@example.com\n",
    )
    .unwrap();
    let env = [
        ("HUBSPOT_TOKEN", sim.token().to_string()),
        (
            "SALESFORCE_CLIENT_ID",
            sim.salesforce.client_id().to_string(),
        ),
        (
            "SALESFORCE_CLIENT_SECRET",
            sim.salesforce.client_secret().to_string(),
        ),
        ("SOURCE_DATABASE_URL", pg.url.clone()),
        ("DATABASE_URL", warehouse),
        ("SNOWFLAKE_ACCOUNT", "syncline-test".to_string()),
        ("SNOWFLAKE_USER", "syncline".to_string()),
        ("SNOWFLAKE_DATABASE", snowflake.database.clone()),
        ("SNOWFLAKE_PASSWORD", "fakesnow-accepts-any".to_string()),
    ];

    for source in ["hubspot", "salesforce", "postgres", "files"] {
        for destination in ["postgres", "snowflake", "lake"] {
            let pair = format!("{source}-{destination}");
            let path = dir.path().join(format!("{pair}.toml"));
            let stage = dir.path().join(format!("stage-{pair}"));
            let init = syncline()
                .args(["init", "--source", source, "--destination", destination])
                .arg("--staging")
                .arg(format!("file://{}", stage.display()))
                .arg("--output")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                init.status.success(),
                "{pair}: {}",
                String::from_utf8_lossy(&init.stderr)
            );
            let mut text = std::fs::read_to_string(&path).unwrap();
            text = match source {
                "hubspot" => set_line(
                    &text,
                    "# base_url = ",
                    &format!("base_url = \"{}\"", sim.base_url),
                ),
                "salesforce" => set_line(
                    &text,
                    "login_url = ",
                    &format!("login_url = \"{}\"", sim.base_url),
                ),
                "files" => set_line(
                    &text,
                    "url = \"file:///var/lib/syncline/exports\"",
                    &format!("url = \"file://{}\"", exports.display()),
                ),
                _ => text,
            };
            if destination == "snowflake" {
                text = set_line(&text, "# url = ", &format!("url = \"{}\"", snowflake.url));
            }
            std::fs::write(&path, &text).unwrap();

            let mut check = syncline();
            check
                .args(["check", "--config"])
                .arg(&path)
                .envs(env.iter().map(|(k, v)| (k, v)));
            let out = tokio::task::spawn_blocking(move || check.output().unwrap())
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{pair}: check failed\n{stdout}{}\n{text}",
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = stdout.lines().collect();
            assert!(lines.len() >= 3, "{pair}: {stdout}");
            assert!(
                lines.iter().all(|l| l.starts_with("✓ ")),
                "{pair}: {stdout}"
            );
        }
    }
    sim.shutdown().await;
}
