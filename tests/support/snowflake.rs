//! A throwaway Snowflake emulator per test: the `fakesnow` server (Python, DuckDB underneath)
//! from a virtualenv this module creates on first use, behind a small proxy that speaks the
//! parts of Snowflake's wire protocol fakesnow answers differently.
//!
//! The proxy forwards every request unchanged and rewrites only query results fakesnow sends
//! as Arrow (`rowsetBase64`) into Snowflake's JSON rowsets, which is what Snowflake answers
//! snowflake-connector-rs (it accepts no other format). Encodings follow Snowflake's JSON
//! results: booleans `"1"`/`"0"`, dates as days since the epoch, timestamps as
//! `"seconds.fraction"` (plus `" <offset+1440>"` for TIMESTAMP_TZ), numbers as decimal text,
//! NULL as null. It can also answer as Snowflake does for an expired session token (code
//! 390112), so tests can prove a session is replaced.

use super::free_port;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray, StructArray};
use arrow::datatypes::{DataType, Date32Type, Int32Type, Int64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use snowflake_connector_rs as sf;

/// The `fakesnow` executable, from a test virtualenv (see `python_venv`).
pub fn fakesnow_bin() -> PathBuf {
    // fakesnow fails to import with snowflake-connector-python 5.
    super::python_venv(
        "fakesnow",
        &["fakesnow[server]==0.12.1", "snowflake-connector-python<5"],
        "import fakesnow.server, snowflake.connector",
    )
    .join("bin/fakesnow")
}

/// A running fakesnow server and the proxy in front of it; both stop when dropped.
pub struct TestSnowflake {
    /// The proxy's base URL: the destination's `url`.
    pub url: String,
    /// The database the tests log into.
    pub database: String,
    fakesnow: Child,
    proxy: tokio::task::JoinHandle<()>,
    expired: Arc<Mutex<Tokens>>,
    pub dir: tempfile::TempDir,
}

#[derive(Default)]
struct Tokens {
    seen: HashSet<String>,
    expired: HashSet<String>,
    /// Queries answered "session expired".
    refused: usize,
}

impl Drop for TestSnowflake {
    fn drop(&mut self) {
        let _ = self.fakesnow.kill();
        let _ = self.fakesnow.wait();
        self.proxy.abort();
    }
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    tokens: Arc<Mutex<Tokens>>,
}

impl TestSnowflake {
    pub async fn start() -> TestSnowflake {
        let bin = tokio::task::spawn_blocking(fakesnow_bin)
            .await
            .expect("set up fakesnow");
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("fakesnow.log")).unwrap();
        let port = free_port();
        let fakesnow = Command::new(bin)
            .args(["-s", "-p", &port.to_string(), "--host", "127.0.0.1"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start fakesnow");
        let upstream = format!("http://127.0.0.1:{port}");
        // Ready when it accepts connections; it takes about a second to import.
        let mut waited = Duration::ZERO;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                waited < Duration::from_secs(60),
                "fakesnow did not start; see {}",
                dir.path().join("fakesnow.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
        }

        let tokens = Arc::new(Mutex::new(Tokens::default()));
        let state = ProxyState {
            upstream,
            http: reqwest::Client::new(),
            tokens: tokens.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let proxy = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("proxy serves");
        });
        TestSnowflake {
            url,
            database: "SYNCDB".to_string(),
            fakesnow,
            proxy,
            expired: tokens,
            dir,
        }
    }

    /// Every session opened so far is answered "session expired" from now on, as Snowflake
    /// does once a session token times out.
    pub fn expire_sessions(&self) {
        let mut tokens = self.expired.lock().unwrap();
        let seen: Vec<String> = tokens.seen.iter().cloned().collect();
        tokens.expired.extend(seen);
    }

    /// How many queries were answered "session expired" so far.
    pub fn refused_queries(&self) -> usize {
        self.expired.lock().unwrap().refused
    }

    /// `[destination]` TOML lines for this emulator (password auth; fakesnow accepts any).
    pub fn destination_toml(&self, stage_dir: &std::path::Path) -> String {
        format!(
            "[destination]\ntype = \"snowflake\"\n{}",
            self.destination_keys(stage_dir, "${SNOWFLAKE_PASSWORD}")
        )
    }

    /// The destination's config for this emulator, loading from the local stage `stage_dir`.
    pub fn config(&self, stage_dir: &std::path::Path) -> syncline::config::SnowflakeConfig {
        toml::from_str(&self.destination_keys(stage_dir, "fakesnow-accepts-any"))
            .expect("a valid snowflake destination")
    }

    /// The keys of the `[destination]` table, without `type`.
    fn destination_keys(&self, stage_dir: &std::path::Path, password: &str) -> String {
        format!(
            r#"account = "syncline-test"
user = "syncline"
password = "{password}"
database = "{database}"
schema = "crm"
url = "{url}"
stage_url = "file://{stage}"
statement_timeout_seconds = 600
"#,
            database = self.database,
            url = self.url,
            stage = stage_dir.display(),
        )
    }

    /// A session of its own, for reading what the destination wrote.
    pub async fn session(&self) -> sf::Session {
        let config = sf::ClientConfig::new(
            "reader",
            "syncline-test",
            sf::AuthConfig::password("unused"),
        )
        .with_session(
            sf::SessionConfig::new()
                .with_database(&self.database)
                .with_session_parameter("TIMEZONE", json!("UTC")),
        )
        .with_endpoint(sf::EndpointConfig::custom_base_url(
            self.url.parse().unwrap(),
        ));
        sf::Client::new(config)
            .unwrap()
            .create_session()
            .await
            .expect("open a reader session")
    }

    /// Rows of `sql` as canonical text: numbers as Rust prints them (floats as f64), booleans
    /// `true`/`false`, dates `YYYY-MM-DD`, timestamps as epoch milliseconds.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let session = self.session().await;
        let rows: Vec<sf::DynamicRow> = session
            .query(sql.to_string())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .collect()
            .await
            .unwrap();
        rows.iter()
            .map(|row| row.values().iter().map(canonical).collect())
            .collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.rows(sql).await[0][0]
            .as_deref()
            .expect("a count")
            .parse()
            .expect("an integer")
    }
}

fn canonical(value: &sf::CellValue) -> Option<String> {
    Some(match value {
        sf::CellValue::Null => return None,
        sf::CellValue::Boolean(b) => b.to_string(),
        sf::CellValue::Integer(n) => n.to_string(),
        sf::CellValue::Float(f) => f.to_string(),
        sf::CellValue::Decimal(d) => d.raw().to_string(),
        sf::CellValue::String(s) => s.clone(),
        sf::CellValue::Date(d) => d.to_string(),
        sf::CellValue::TimestampTz(t) => t.timestamp_millis().to_string(),
        sf::CellValue::TimestampLtz(t) => t.timestamp_millis().to_string(),
        sf::CellValue::TimestampNtz(t) => t.and_utc().timestamp_millis().to_string(),
        other => format!("{other:?}"),
    })
}

/// The proxy: forwards the request to fakesnow, then rewrites Arrow query results as JSON.
async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Snowflake Token=\""))
        .map(|v| v.trim_end_matches('"').to_string());
    let is_query = parts.uri.path() == "/queries/v1/query-request";
    if let Some(token) = &token {
        let mut tokens = state.tokens.lock().unwrap();
        if is_query && tokens.expired.contains(token) {
            tokens.refused += 1;
            return axum::Json(json!({
                "data": null,
                "code": "390112",
                "message": "Your session has expired. Please login again.",
                "success": false
            }))
            .into_response();
        }
        tokens.seen.insert(token.clone());
    }

    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "accept-encoding" | "connection"
        ) {
            headers.insert(name.clone(), value.clone());
        }
    }
    let upstream = state
        .http
        .request(
            parts.method.clone(),
            format!("{}{path_and_query}", state.upstream),
        )
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(response) => response,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = upstream.status();
    let content_type = upstream.headers().get("content-type").cloned();
    let bytes = upstream.bytes().await.unwrap_or_default();
    let bytes = if is_query {
        rewrite_arrow_result(&bytes).unwrap_or(bytes)
    } else {
        bytes
    };
    let mut response = (status, bytes).into_response();
    if let Some(content_type) = content_type {
        response.headers_mut().insert("content-type", content_type);
    }
    response
}

/// `Some(new body)` when the body is a successful query result in Arrow format.
fn rewrite_arrow_result(body: &Bytes) -> Option<Bytes> {
    let mut response: Value = serde_json::from_slice(body).ok()?;
    let data = response.get_mut("data")?.as_object_mut()?;
    if data.get("queryResultFormat")?.as_str()? != "arrow" {
        return None;
    }
    let rowtype = data.get("rowtype").cloned().unwrap_or(Value::Array(vec![]));
    let encoded = data
        .remove("rowsetBase64")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let rows = if encoded.is_empty() {
        Vec::new()
    } else {
        arrow_rows(&decode_base64(&encoded), &rowtype)
    };
    data.insert("returned".into(), json!(rows.len()));
    data.insert("total".into(), json!(rows.len()));
    data.insert("rowset".into(), Value::Array(rows));
    data.insert("queryResultFormat".into(), json!("json"));
    Some(Bytes::from(serde_json::to_vec(&response).unwrap()))
}

/// Every row of an Arrow IPC stream, each cell in Snowflake's JSON encoding.
fn arrow_rows(ipc: &[u8], rowtype: &Value) -> Vec<Value> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .expect("fakesnow sent an Arrow IPC stream");
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.expect("a readable Arrow batch");
        let columns: Vec<Vec<Value>> = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, array)| column_cells(array.as_ref(), &rowtype[i]))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(Value::Array(
                columns.iter().map(|column| column[row].clone()).collect(),
            ));
        }
    }
    rows
}

fn column_cells(array: &dyn Array, rowtype: &Value) -> Vec<Value> {
    let kind = rowtype["type"].as_str().unwrap_or("").to_ascii_lowercase();
    let scale = rowtype["scale"].as_u64().unwrap_or(9) as usize;
    match array.data_type() {
        // fakesnow's timestamps: struct {epoch seconds, fraction nanoseconds[, timezone]}. It
        // leaves the struct itself valid for NULL timestamps, so NULL is read from `epoch`.
        DataType::Struct(_) => {
            let array: &StructArray = array.as_struct();
            let epoch = array
                .column_by_name("epoch")
                .unwrap()
                .as_primitive::<Int64Type>();
            let fraction = array
                .column_by_name("fraction")
                .unwrap()
                .as_primitive::<Int32Type>();
            let timezone = array
                .column_by_name("timezone")
                .map(|c| c.as_primitive::<Int32Type>().clone());
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) || epoch.is_null(i) {
                        return Value::Null;
                    }
                    let mut text = epoch.value(i).to_string();
                    if scale > 0 {
                        let nanos = format!("{:09}", fraction.value(i));
                        text.push('.');
                        text.push_str(&nanos[..scale.min(9)]);
                    }
                    if kind == "timestamp_tz" {
                        let tz = timezone.as_ref().map(|t| t.value(i)).unwrap_or(1440);
                        text.push_str(&format!(" {tz}"));
                    }
                    Value::String(text)
                })
                .collect()
        }
        DataType::Boolean => {
            let array = array.as_boolean();
            (0..array.len())
                .map(|i| match array.is_null(i) {
                    true => Value::Null,
                    false => json!(if array.value(i) { "1" } else { "0" }),
                })
                .collect()
        }
        DataType::Date32 => {
            let array = array.as_primitive::<Date32Type>();
            (0..array.len())
                .map(|i| match array.is_null(i) {
                    true => Value::Null,
                    false => json!(array.value(i).to_string()),
                })
                .collect()
        }
        _ => {
            let formatter = ArrayFormatter::try_new(array, &FormatOptions::default())
                .expect("a displayable Arrow type");
            (0..array.len())
                .map(|i| match array.is_null(i) {
                    true => Value::Null,
                    false => json!(formatter.value(i).to_string()),
                })
                .collect()
        }
    }
}

/// Standard base64 (with padding), as fakesnow's `b64encode` writes it.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut buffer = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            buffer |= value(c) << (18 - 6 * i);
        }
        let produced = chunk.len() * 6 / 8;
        for i in 0..produced {
            out.push((buffer >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn the_proxy_decodes_base64() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("YWJj"), b"abc");
}
