//! The integration tests' harness: a throwaway PostgreSQL, the CRM simulator over HTTP, pipeline
//! configs in a temp folder, a comparison of destination tables with the simulator, and Python
//! tools in virtualenvs.
//!
//! Library paths that are still moving (issue 10) are re-exported here, so the tests name each
//! in one place.
#![allow(dead_code)]

pub mod background;
pub mod certs;
pub mod cut_proxy;
pub mod files;
pub mod pg;
pub mod snowflake;

pub use syncline::load::DeleteMode;
pub use syncline::reconcile::batch_fingerprint;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use syncline::config::Config;
use syncline::reconcile::report::RunReport;
use syncline::sim::{SimConfig, SimHandle, Simulator};
use syncline::sources::hubspot::records::parse_millis;

pub use pg::{TestPostgres, free_port};

pub struct Harness {
    pub pg: TestPostgres,
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub db_url: String,
    pub config_path: PathBuf,
}

impl Harness {
    /// Starts PostgreSQL and the simulator and writes a config for `streams` with `extra`
    /// appended (e.g. `[streams.contacts]` tables).
    pub async fn start(sim: SimConfig, streams: &[&str], extra: &str) -> Harness {
        let pg = tokio::task::spawn_blocking(TestPostgres::start)
            .await
            .expect("start postgres");
        let db_url = pg.url.clone();
        let sim = Simulator::start(sim, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("start simulator");
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("crm.toml");
        let harness = Harness {
            pg,
            sim,
            dir,
            db_url,
            config_path,
        };
        harness.write_config(streams, extra);
        harness
    }

    pub fn stage_dir(&self) -> PathBuf {
        self.dir.path().join("stage")
    }

    /// Writes a HubSpot → PostgreSQL (schema `crm`) config for `streams` with `extra` appended.
    pub fn write_config(&self, streams: &[&str], extra: &str) {
        self.write_hubspot_config(streams, "", &postgres_destination("crm"), extra);
    }

    /// Writes a HubSpot config for `streams` into `destination` (a `[destination]` table), with
    /// `pipeline` lines added to `[pipeline]` and `extra` appended.
    pub fn write_hubspot_config(
        &self,
        streams: &[&str],
        pipeline: &str,
        destination: &str,
        extra: &str,
    ) {
        let source = format!(
            r#"[source]
type = "hubspot"
base_url = "{base}"
token = "${{SIM_TOKEN}}"
streams = {streams}
lag_seconds = 0
overlap_seconds = 300
retry_base_ms = 20"#,
            base = self.sim.base_url,
            streams = toml_list(streams),
        );
        let text = config_toml(
            &format!("name = \"crm\"\nbatch_rows = 1000\n{pipeline}"),
            &self.stage_dir(),
            &source,
            destination,
            extra,
        );
        std::fs::write(&self.config_path, text).expect("write config");
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SIM_TOKEN", self.sim.token().to_string()),
            ("TEST_DATABASE_URL", self.db_url.clone()),
            ("SF_SECRET", "sim-secret".to_string()),
        ]
    }

    pub fn config(&self) -> Config {
        parse_config(&self.config_path, &self.env())
    }

    /// Runs the pipeline in this process.
    pub async fn run(&self, full_refresh: bool) -> RunReport {
        run_pipeline(&self.config(), full_refresh).await
    }

    /// Runs the `syncline` binary with extra environment; returns its status and report.
    pub fn run_binary(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (std::process::ExitStatus, Option<RunReport>) {
        let report = self
            .dir
            .path()
            .join(format!("report-{}.json", uuid::Uuid::new_v4()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--report")
            .arg(&report)
            .args(args);
        for (k, v) in self.env() {
            command.env(k, v);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let status = command.status().expect("spawn syncline");
        let report = std::fs::read(&report)
            .ok()
            .map(|b| serde_json::from_slice(&b).expect("report is JSON"));
        (status, report)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.db_url).await
    }

    /// The destination table as {id: {column: canonical text}} for the simulator's properties.
    pub async fn table(
        &self,
        object: &str,
        soft: bool,
    ) -> BTreeMap<i64, BTreeMap<String, Option<String>>> {
        let props = self.sim.hubspot.properties(object);
        let mut exprs = vec![
            "id".to_string(),
            "(extract(epoch from _syncline_version) * 1000)::bigint::text".to_string(),
        ];
        for p in &props {
            let q = format!("\"{}\"", p.name);
            exprs.push(match p.kind.as_str() {
                "datetime" => format!("(extract(epoch from {q}) * 1000)::bigint::text"),
                _ => format!("{q}::text"),
            });
        }
        let filter = if soft {
            " WHERE _syncline_deleted_at IS NULL"
        } else {
            ""
        };
        let sql = format!("SELECT {} FROM crm.\"{object}\"{filter}", exprs.join(", "));
        let rows = self
            .client()
            .await
            .query(&sql, &[])
            .await
            .expect("read destination table");
        rows.iter()
            .map(|row| {
                let id: i64 = row.get(0);
                let mut values = BTreeMap::new();
                values.insert("_version".to_string(), row.get::<_, Option<String>>(1));
                for (i, p) in props.iter().enumerate() {
                    values.insert(p.name.clone(), row.get::<_, Option<String>>(i + 2));
                }
                (id, values)
            })
            .collect()
    }

    /// The simulator's live records in the same canonical form.
    pub fn expected(&self, object: &str) -> BTreeMap<i64, BTreeMap<String, Option<String>>> {
        let props = self.sim.hubspot.properties(object);
        self.sim
            .hubspot
            .live_records(object)
            .into_iter()
            .map(|r| {
                let mut values = BTreeMap::new();
                values.insert("_version".to_string(), Some(r.updated_ms.to_string()));
                for p in &props {
                    let raw = r.properties.get(&p.name).cloned().flatten();
                    let canonical =
                        raw.filter(|v| !(v.is_empty() && p.kind != "string"))
                            .map(|v| match p.kind.as_str() {
                                "datetime" => parse_millis(&v).expect("sim datetime").to_string(),
                                "number" => {
                                    let n: f64 = v.parse().expect("sim number");
                                    n.to_string()
                                }
                                _ => v,
                            });
                    values.insert(p.name.clone(), canonical);
                }
                (r.id, values)
            })
            .collect()
    }

    /// Asserts the destination table equals the simulator's live records, row for row.
    pub async fn assert_converged(&self, object: &str, soft: bool) {
        assert_same_rows(
            object,
            &self.table(object, soft).await,
            &self.expected(object),
        );
    }

    pub async fn ledger_count(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT count(*) FROM crm._syncline_loads", &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// Asserts a destination table (`actual`, by key) holds exactly the `expected` rows.
pub fn assert_same_rows<K: Ord + std::fmt::Display, V: PartialEq + std::fmt::Debug>(
    object: &str,
    actual: &BTreeMap<K, V>,
    expected: &BTreeMap<K, V>,
) {
    assert_eq!(actual.len(), expected.len(), "{object}: row count differs");
    for (key, want) in expected {
        let got = actual
            .get(key)
            .unwrap_or_else(|| panic!("{object} {key} missing in destination"));
        assert_eq!(got, want, "{object} {key} differs");
    }
}

pub fn report_stream<'a>(
    report: &'a RunReport,
    stream: &str,
) -> &'a syncline::reconcile::report::StreamReport {
    report
        .streams
        .iter()
        .find(|s| s.stream == stream)
        .unwrap_or_else(|| panic!("no report for {stream}"))
}

/// Waits until the wall clock is past every change the simulator stamped, so a run started
/// now sees all of them inside its window `[.., now)`.
pub async fn settle(harness: &Harness) {
    let newest = ["contacts", "companies", "deals"]
        .iter()
        .flat_map(|o| harness.sim.hubspot.live_records(o))
        .map(|r| r.updated_ms)
        .max()
        .unwrap_or(0);
    while chrono::Utc::now().timestamp_millis() <= newest + 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A Python virtualenv holding `packages`, created once under `$SYNCLINE_TEST_VENVS/{name}`
/// (default: the temp dir). Concurrent tests share it: creation happens under a file lock, and
/// `probe` (Python code that imports what the caller needs) decides whether it is ready.
pub fn python_venv(name: &str, packages: &[&str], probe: &str) -> PathBuf {
    let root = std::env::var_os("SYNCLINE_TEST_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("syncline-venvs"));
    std::fs::create_dir_all(&root).expect("create the virtualenv folder");
    let venv = root.join(name);
    let ready = || {
        Command::new(venv.join("bin/python"))
            .args(["-c", probe])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return venv;
    }
    let lock = std::fs::File::create(root.join(format!("{name}.lock")))
        .expect("create the virtualenv lock file");
    lock.lock().expect("lock the virtualenv");
    if !ready() {
        let created = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .expect("python3 is installed");
        assert!(
            created.success(),
            "python3 -m venv failed (install python3-venv)"
        );
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .args(packages)
            .status()
            .expect("pip runs");
        assert!(installed.success(), "pip install {packages:?} failed");
        assert!(ready(), "{probe:?} fails after installing {packages:?}");
    }
    venv
}

/// A Python with the `deltalake` and `pyarrow` packages: an independent Delta reader.
pub fn python_with_deltalake() -> PathBuf {
    python_venv(
        "deltalake",
        &["deltalake", "pyarrow"],
        "import deltalake, pyarrow",
    )
    .join("bin/python")
}

/// A Salesforce pipeline config against the simulator (client credentials from the environment).
pub fn write_salesforce_config(
    harness: &Harness,
    streams: &[&str],
    extra_source: &str,
    extra: &str,
) {
    write_salesforce_config_with_auth(
        harness,
        streams,
        "client_secret = \"${SF_SECRET}\"",
        extra_source,
        extra,
    );
}

/// Like [`write_salesforce_config`], with `auth` (TOML lines in `[source]`) in place of the
/// client secret, e.g. `username` and `private_key_path` for the JWT bearer flow.
pub fn write_salesforce_config_with_auth(
    harness: &Harness,
    streams: &[&str],
    auth: &str,
    extra_source: &str,
    extra: &str,
) {
    let source = format!(
        r#"[source]
type = "salesforce"
login_url = "{base}"
client_id = "sim-client"
{auth}
streams = {streams}
lag_seconds = 0
overlap_seconds = 600
retry_base_ms = 20
bulk_poll_ms = 10
{extra_source}"#,
        base = harness.sim.base_url,
        streams = toml_list(streams),
    );
    let text = config_toml(
        "name = \"sf\"\nbatch_rows = 1000",
        &harness.stage_dir(),
        &source,
        &postgres_destination("crm"),
        extra,
    );
    std::fs::write(&harness.config_path, text).expect("write config");
}

impl Harness {
    /// The destination table of a Salesforce object as {Id: {field: canonical text}}.
    pub async fn sf_table(
        &self,
        object: &str,
    ) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
        let fields = self.sf_fields(object);
        let mut exprs = vec![
            "\"Id\"".to_string(),
            "(extract(epoch from _syncline_version) * 1000)::bigint::text".to_string(),
        ];
        for (name, kind) in &fields {
            let q = format!("\"{name}\"");
            exprs.push(match kind.as_str() {
                "datetime" => format!("(extract(epoch from {q}) * 1000)::bigint::text"),
                _ => format!("{q}::text"),
            });
        }
        let sql = format!("SELECT {} FROM crm.\"{object}\"", exprs.join(", "));
        let rows = self
            .client()
            .await
            .query(&sql, &[])
            .await
            .expect("read destination table");
        rows.iter()
            .map(|row| {
                let id: String = row.get(0);
                let mut values = BTreeMap::new();
                values.insert("_version".to_string(), row.get::<_, Option<String>>(1));
                for (i, (name, _)) in fields.iter().enumerate() {
                    values.insert(name.clone(), row.get::<_, Option<String>>(i + 2));
                }
                (id, values)
            })
            .collect()
    }

    /// Non-compound, non-base64 describe fields other than Id, with their types.
    pub fn sf_fields(&self, object: &str) -> Vec<(String, String)> {
        self.sim
            .salesforce
            .describe_fields(object)
            .into_iter()
            .filter(|f| {
                f.name != "Id" && !matches!(f.kind.as_str(), "address" | "location" | "base64")
            })
            .map(|f| (f.name, f.kind))
            .collect()
    }

    /// The simulator's live records of an object in the same canonical form.
    pub fn sf_expected(&self, object: &str) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
        let fields = self.sf_fields(object);
        self.sim
            .salesforce
            .live_records(object)
            .into_iter()
            .map(|r| {
                let mut values = BTreeMap::new();
                values.insert(
                    "_version".to_string(),
                    Some(r.system_modstamp_ms.to_string()),
                );
                for (name, kind) in &fields {
                    let value = r
                        .fields
                        .get(name)
                        .cloned()
                        .unwrap_or(serde_json::Value::Null);
                    let canonical = match value {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) if kind == "datetime" => Some(
                            chrono::DateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f%z")
                                .expect("sim datetime")
                                .timestamp_millis()
                                .to_string(),
                        ),
                        serde_json::Value::String(s) => Some(s),
                        serde_json::Value::Number(n) if matches!(kind.as_str(), "int" | "long") => {
                            Some(n.to_string())
                        }
                        serde_json::Value::Number(n) => {
                            Some(n.as_f64().expect("number").to_string())
                        }
                        serde_json::Value::Bool(b) => Some(b.to_string()),
                        other => Some(other.to_string()),
                    };
                    values.insert(name.clone(), canonical);
                }
                (r.id, values)
            })
            .collect()
    }

    pub async fn assert_sf_converged(&self, object: &str) {
        assert_same_rows(
            object,
            &self.sf_table(object).await,
            &self.sf_expected(object),
        );
    }
}

/// Waits until the wall clock is past every Salesforce change the simulator stamped.
pub async fn settle_sf(harness: &Harness, objects: &[&str]) {
    let newest = objects
        .iter()
        .flat_map(|o| harness.sim.salesforce.live_records(o))
        .map(|r| r.system_modstamp_ms)
        .max()
        .unwrap_or(0)
        .max(harness.sim.salesforce.now_ms());
    while chrono::Utc::now().timestamp_millis() <= newest + 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A pipeline config file's text: `[pipeline]` with the `pipeline` lines, a stage in the local
/// folder `stage`, then `source` and `destination` (whole tables, headers included) and `extra`.
pub fn config_toml(
    pipeline: &str,
    stage: &Path,
    source: &str,
    destination: &str,
    extra: &str,
) -> String {
    format!(
        "[pipeline]\n{pipeline}\n[staging]\nurl = \"file://{stage}\"\n{source}\n{destination}\n{extra}\n",
        stage = stage.display(),
    )
}

/// Writes `{dir}/lake.toml`, a pipeline `name` from the CSV exports in `{dir}/exports` (stream
/// `events`) into the lake, staged in `{dir}/stage`; `tables` holds `[source.files.events]`
/// and anything after it. Returns the file's path.
pub fn lake_events_config(dir: &Path, name: &str, tables: &str) -> std::path::PathBuf {
    let source = format!(
        "[source]\ntype = \"files\"\nurl = \"file://{}\"\nstreams = {}",
        dir.join("exports").display(),
        toml_list(&["events"]),
    );
    let config = dir.join("lake.toml");
    std::fs::write(
        &config,
        config_toml(
            &format!("name = {name:?}"),
            &dir.join("stage"),
            &source,
            "[destination]\ntype = \"lake\"",
            tables,
        ),
    )
    .expect("write config");
    config
}

/// Adds `line` (a `key = value`) to the `[destination]` of the lake config at `config`.
pub fn add_lake_destination_key(config: &Path, line: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    let destination = "[destination]\ntype = \"lake\"";
    assert!(text.contains(destination), "a lake config: {text}");
    let text = text.replace(destination, &format!("{destination}\n{line}"));
    std::fs::write(config, text).expect("write config");
}

/// A `[destination]` table for the PostgreSQL at `${TEST_DATABASE_URL}`.
pub fn postgres_destination(schema: &str) -> String {
    format!(
        "[destination]\ntype = \"postgres\"\nurl = \"${{TEST_DATABASE_URL}}\"\nschema = \"{schema}\""
    )
}

/// `names` as a TOML array of strings.
pub fn toml_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Parses the config at `path`, reading `${VAR}`s from `env` only (not the process).
pub fn parse_config(path: &Path, env: &[(&str, String)]) -> Config {
    let text = std::fs::read_to_string(path).expect("read config");
    Config::parse(&text, path, &|name| {
        env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    })
    .expect("valid config")
}

/// Runs the pipeline of `config` in this process.
pub async fn run_pipeline(config: &Config, full_refresh: bool) -> RunReport {
    let options = syncline::pipeline::RunOptions {
        streams: None,
        full_refresh,
    };
    syncline::pipeline::run(config, &options)
        .await
        .expect("run starts")
}

/// A client of the PostgreSQL at `url`, its connection driven by a spawned task.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Runs the `syncline` binary with `args` and the given stdout and stderr, and returns its exit
/// code and its peak resident set in MiB (see [`wait_with_peak_rss`]): what the memory tests
/// measure.
pub fn syncline_peak_rss<I, S>(args: I, stdout: Stdio, stderr: Stdio) -> (i32, i64)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let child = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(args)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn syncline");
    let (status, peak_kib) = wait_with_peak_rss(child.id());
    (status, peak_kib / 1024)
}

/// How long a `syncline` child of a memory test may run before it counts as hung: the slowest
/// of them takes about two minutes in a debug build on the shared 2-core machine.
const CHILD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(7 * 60);

/// Waits for the child `pid` and returns its exit code and its peak resident set in KiB, as the
/// kernel accounted it when reaping the process (so no sampling can miss the peak).
///
/// A child still running after [`CHILD_DEADLINE`] is hung: its threads' backtraces go to this
/// test's output (through `gdb`, when the machine has it), the child is killed, and the test
/// fails. A hang then costs minutes and says where it hung, instead of holding the whole suite
/// until CI's limit.
pub fn wait_with_peak_rss(pid: u32) -> (i32, i64) {
    let started = std::time::Instant::now();
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value the kernel overwrites.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own unreaped child, and both pointers are valid for the call.
        let reaped =
            unsafe { libc::wait4(pid as libc::pid_t, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid as libc::pid_t {
            break;
        }
        assert_eq!(reaped, 0, "wait4 failed");
        if started.elapsed() > CHILD_DEADLINE {
            eprintln!("{}", backtraces_of(pid));
            // SAFETY: `pid` is our own unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            // SAFETY: as above; reaps the killed child.
            unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
            panic!(
                "syncline (pid {pid}) was still running after {} s: hung (its threads' \
                 backtraces are above)",
                CHILD_DEADLINE.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss)
}

/// Every thread's backtrace of the running process `pid`, as `gdb` prints them, or why there
/// are none.
fn backtraces_of(pid: u32) -> String {
    let gdb = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(Stdio::null())
        .output();
    match gdb {
        Ok(out) => format!(
            "backtraces of the hung syncline (pid {pid}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) => format!("no backtraces of the hung syncline (pid {pid}): gdb: {err}"),
    }
}
