//! Harness for the file source: export files in a temp folder, a throwaway PostgreSQL as the
//! destination, and helpers to read the destination and the dead letters back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use syncline::config::Config;
use syncline::load::DeadLetter;
use syncline::reconcile::report::{RunReport, StreamReport};
use syncline::stage::{DeadLetterFile, Stage};

use super::pg::TestPostgres;

pub struct FilesHarness {
    pub pg: TestPostgres,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl FilesHarness {
    pub async fn start() -> FilesHarness {
        let pg = tokio::task::spawn_blocking(TestPostgres::start)
            .await
            .expect("start postgres");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("exports")).expect("exports folder");
        let config_path = dir.path().join("files.toml");
        FilesHarness {
            pg,
            dir,
            config_path,
        }
    }

    pub fn exports(&self) -> PathBuf {
        self.dir.path().join("exports")
    }

    /// Writes a config whose source reads the exports folder; `tables` holds the
    /// `[source.files.NAME]` tables (and anything after them).
    pub fn write_config(&self, streams: &[&str], tables: &str) {
        std::fs::write(
            &self.config_path,
            files_config(self.dir.path(), streams, tables),
        )
        .expect("write config");
    }

    /// Writes a config like [`FilesHarness::write_config`] whose destination is the lake (Delta
    /// tables under the stage) instead of PostgreSQL.
    /// Exports `contacts/{file}` as JSONL contacts `ids`, each named `{name} {id}`, modified at
    /// `mtime_ms`, for the lake's `contacts` stream ([`FilesHarness::write_contacts_lake_config`]).
    pub fn write_contacts(
        &self,
        file: &str,
        ids: std::ops::RangeInclusive<u64>,
        name: &str,
        mtime_ms: i64,
    ) {
        let lines: String = ids
            .map(|id| format!("{{\"id\": {id}, \"name\": \"{name} {id}\"}}\n"))
            .collect();
        self.write_file(&format!("contacts/{file}"), &lines, mtime_ms);
    }

    /// A lake pipeline of the one stream `contacts`, JSONL keyed by `id`.
    pub fn write_contacts_lake_config(&self) {
        self.write_lake_config(
            &["contacts"],
            "[source.files.contacts]\nglob = \"contacts/*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n",
        );
    }

    /// Adds `line` (a `key = value`) to the lake config's `[destination]`.
    pub fn add_destination_key(&self, line: &str) {
        super::add_lake_destination_key(&self.config_path, line);
    }

    pub fn write_lake_config(&self, streams: &[&str], tables: &str) {
        let source = format!(
            "[source]\ntype = \"files\"\nurl = \"file://{dir}/exports\"\nstreams = {streams}",
            dir = self.dir.path().display(),
            streams = super::toml_list(streams),
        );
        let text = super::config_toml(
            "name = \"files\"\nbatch_rows = 1000",
            &self.dir.path().join("stage"),
            &source,
            "[destination]\ntype = \"lake\"",
            tables,
        );
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// Writes an export file with the given last-modified time (epoch ms), which is the
    /// version of its rows when there is no version column.
    pub fn write_file(&self, relative: &str, content: &str, modified_ms: i64) {
        self.write_bytes(relative, content.as_bytes(), modified_ms);
    }

    /// [`FilesHarness::write_file`] for content that need not be UTF-8.
    pub fn write_bytes(&self, relative: &str, content: &[u8], modified_ms: i64) {
        let path = self.exports().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).expect("folder");
        std::fs::write(&path, content).expect("write export");
        let modified = std::time::UNIX_EPOCH + std::time::Duration::from_millis(modified_ms as u64);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(modified))
            .expect("set mtime");
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("TEST_DATABASE_URL", self.pg.url.clone())]
    }

    pub fn config(&self) -> Config {
        super::parse_config(&self.config_path, &self.env())
    }

    pub async fn run(&self, full_refresh: bool) -> RunReport {
        super::run_pipeline(&self.config(), full_refresh).await
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        super::connect(&self.pg.url).await
    }

    /// Every row of a destination table as text, ordered by the first column's value, with the
    /// given columns (SQL expressions; the first must be a plain column).
    pub async fn rows(&self, table: &str, columns: &[&str]) -> Vec<Vec<Option<String>>> {
        let exprs: Vec<String> = columns.iter().map(|c| format!("({c})::text")).collect();
        let sql = format!(
            // Qualified, so the order is the column's own, not its text's.
            "SELECT {} FROM files.\"{table}\" AS src ORDER BY src.{}",
            exprs.join(", "),
            columns[0]
        );
        self.client()
            .await
            .query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|row| (0..columns.len()).map(|i| row.get(i)).collect())
            .collect()
    }

    /// The destination column types of a table, in table order (system columns left out).
    pub async fn column_types(&self, table: &str) -> Vec<(String, String)> {
        self.client()
            .await
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = 'files' AND table_name = $1 \
                 AND column_name NOT LIKE '\\_syncline\\_%' ORDER BY ordinal_position",
                &[&table],
            )
            .await
            .expect("columns")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    pub async fn ledger_count(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT count(*) FROM files._syncline_loads", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The dead letters a stream's load wrote.
    pub async fn dead_letters(&self, stream: &StreamReport) -> Vec<DeadLetter> {
        let Some(path) = &stream.dead_letter_file else {
            return Vec::new();
        };
        let stage = Stage::open(&self.config().staging).unwrap();
        let file = DeadLetterFile {
            path: path.clone(),
            rows: stream.rows_dead_lettered,
        };
        syncline::stage::read_dead_letters(&stage, &file)
            .await
            .expect("read dead letters")
    }

    /// Every row `sql` returns over the lake destination's tables, as text.
    pub async fn lake_rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let ctx = syncline::transform::lake_session(&self.config())
            .await
            .unwrap();
        let batches = syncline::transform::query(&ctx, sql).await.unwrap();
        let mut rows = Vec::new();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|column| {
                            column.is_valid(row).then(|| {
                                arrow::util::display::array_value_to_string(column, row).unwrap()
                            })
                        })
                        .collect(),
                );
            }
        }
        rows
    }

    /// Runs the `syncline` binary; returns its exit code and stderr.
    pub fn run_binary(&self, args: &[&str]) -> (i32, String) {
        run_binary(&self.config_path, args, &self.env())
    }

    /// Runs the `syncline` binary, which must succeed (`what` says which run failed), and
    /// gives its report's first stream.
    pub fn run_reported(&self, args: &[&str], what: &str) -> serde_json::Value {
        let report_path = self.dir.path().join("report.json");
        let mut args = args.to_vec();
        args.extend(["--report", report_path.to_str().unwrap()]);
        let (code, stderr) = self.run_binary(&args);
        assert_eq!(code, 0, "{what}: {stderr}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
        report["streams"][0].clone()
    }

    /// Runs the `syncline` binary with extra environment variables (crash points, say).
    pub fn run_binary_env(&self, args: &[&str], extra: &[(&'static str, &str)]) -> (i32, String) {
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        run_binary(&self.config_path, args, &env)
    }
}

/// A pipeline config reading `{dir}/exports` into the `files` schema of `${TEST_DATABASE_URL}`;
/// `tables` holds the `[source.files.NAME]` tables (and anything after them).
pub fn files_config(dir: &Path, streams: &[&str], tables: &str) -> String {
    let source = format!(
        "[source]\ntype = \"files\"\nurl = \"file://{dir}/exports\"\nstreams = {streams}",
        dir = dir.display(),
        streams = super::toml_list(streams),
    );
    super::config_toml(
        "name = \"files\"\nbatch_rows = 1000",
        &dir.join("stage"),
        &source,
        &super::postgres_destination("files"),
        tables,
    )
}

/// Runs `syncline run --config` with the environment; returns the exit code and stderr.
pub fn run_binary(
    config: &std::path::Path,
    args: &[&str],
    env: &[(&'static str, String)],
) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
    command.arg("run").arg("--config").arg(config).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("spawn syncline");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A moto S3 server (`moto_server`, from PyPI's `moto[server]` in a test virtualenv) on a
/// free port, with one bucket; stopped on drop.
pub struct Moto {
    pub endpoint: String,
    child: std::process::Child,
}

impl Moto {
    /// # Panics
    ///
    /// When moto cannot be installed or does not start.
    pub async fn start(bucket: &str) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let venv = tokio::task::spawn_blocking(|| {
            super::python_venv("moto", &["moto[server]"], "import moto.server")
        })
        .await
        .expect("install moto");
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server runs");
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            // moto ignores signatures: a plain PUT creates the bucket.
            if let Ok(answer) = client
                .put(format!("{}/{bucket}", moto.endpoint))
                .send()
                .await
            {
                assert!(answer.status().is_success(), "create bucket: {answer:?}");
                return moto;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("moto_server did not start on port {port}");
    }

    /// A moto server that checks request signatures against its own IAM users, with one
    /// bucket; returns the server and the access key id and secret of a user allowed
    /// everything. Any other key is refused (HTTP 403).
    ///
    /// # Panics
    ///
    /// When moto cannot be installed, does not start, or never enforces authentication.
    pub async fn start_with_auth(bucket: &str) -> (Moto, String, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let venv = tokio::task::spawn_blocking(|| {
            super::python_venv("moto", &["moto[server]"], "import moto.server")
        })
        .await
        .expect("install moto");
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // Authentication starts after the setup script's actions and its probes.
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "10")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server runs");
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        // Connecting is not an action: wait for the port without spending one.
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let endpoint = moto.endpoint.clone();
        let bucket = bucket.to_string();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(venv.join("bin/python"))
                .arg("-c")
                .arg(include_str!("moto_auth_setup.py"))
                .args([&endpoint, &bucket])
                .output()
                .expect("python runs")
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "moto auth setup: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let (key, secret) = text.trim().split_once(' ').expect("KEY SECRET");
        (moto, key.to_string(), secret.to_string())
    }

    /// The bucket as an object store, to put export files in.
    pub fn store(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("s3 store")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
