//! HubSpot webhooks over real HTTP: the receiver (`syncline::stream::webhook`) on a real port,
//! fed by the real `syncline sim` process with `--webhook-url` (signed deliveries with
//! duplicates, disorder, lost answers and retries), and by hand-made deliveries for the
//! signature's edge cases; many events for the same records are read once per flush.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use syncline::stream::webhook::{self, Hint, WebhookCounters, WebhookReceiver};
use tokio::sync::mpsc;

const SECRET: &str = "test-app-secret-0b1d";
/// Waits for deliveries end here; no assertion depends on how fast anything is.
const PATIENCE: Duration = Duration::from_secs(60);

struct Receiver {
    url: String,
    hints: mpsc::Receiver<Hint>,
    counters: Arc<WebhookCounters>,
}

/// The receiver on `127.0.0.1:PORT` with `contact` → `contacts`, `deal` → `deals`, a hint
/// queue of `capacity`, signing with `public_url` when given.
async fn start_receiver(capacity: usize, public_url: Option<&str>) -> Receiver {
    let (sender, hints) = mpsc::channel(capacity);
    let objects = HashMap::from([
        ("contact".to_owned(), "contacts".to_owned()),
        ("deal".to_owned(), "deals".to_owned()),
    ]);
    let receiver = WebhookReceiver::new(SECRET.to_owned(), objects, sender)
        .with_public_url(public_url.map(str::to_owned));
    let counters = receiver.counters();
    let router = receiver.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Receiver {
        url: format!("http://{address}{}", webhook::PATH),
        hints,
        counters,
    }
}

/// `syncline sim` as its own process, killed on drop.
struct SimProcess {
    child: Child,
    base_url: String,
}

impl SimProcess {
    fn start(args: &[&str]) -> SimProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_syncline"))
            .args(["sim", "--listen", "127.0.0.1:0", "--contacts", "200"])
            .args(["--companies", "20", "--deals", "50"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn syncline sim");
        let stdout = child.stdout.take().expect("sim stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base_url = loop {
            let line = lines
                .next()
                .expect("the simulator printed its base URL")
                .expect("read sim stdout");
            if let Some(url) = line.strip_prefix("HUBSPOT_BASE_URL=") {
                break url.to_owned();
            }
        };
        // The simulator prints more lines; a closed pipe would stop it.
        std::thread::spawn(move || lines.for_each(drop));
        SimProcess { child, base_url }
    }

    /// `POST /_sim/hubspot/{object}/{action}?n=N`: the ids changed.
    async fn change(&self, object: &str, action: &str, n: usize) -> Vec<i64> {
        let url = format!("{}/_sim/hubspot/{object}/{action}?n={n}", self.base_url);
        let body: Value = reqwest::Client::new()
            .post(url)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_i64().unwrap())
            .collect()
    }

    async fn webhook_stats(&self) -> Value {
        reqwest::get(format!("{}/_sim/webhooks", self.base_url))
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to a `syncline stream` and waits for it to exit.
async fn stop(stream: &mut Child) -> std::process::ExitStatus {
    // SAFETY: signalling a child process we started.
    unsafe {
        libc::kill(stream.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    loop {
        if let Some(status) = stream.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < PATIENCE, "stream did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < PATIENCE, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every change the simulator process makes arrives as exactly one hint, although every batch
/// is delivered twice, held back behind the next, often answered "lost" and retried, and the
/// first deliveries meet a full queue (503) until the engine starts reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_simulated_change_arrives_as_one_hint() {
    // A queue smaller than the first batch, and nothing reading it yet.
    let mut receiver = start_receiver(16, None).await;
    let sim = SimProcess::start(&[
        "--seed",
        "7",
        "--webhook-url",
        &receiver.url,
        "--webhook-secret",
        SECRET,
        "--webhook-duplicate-rate",
        "1",
        "--webhook-reorder-rate",
        "1",
        "--webhook-lost-answer-rate",
        "0.5",
    ]);

    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let mut record = |stream: &str, ids: Vec<i64>| {
        for id in ids {
            expected.insert((stream.to_owned(), id.to_string()));
        }
    };
    record("contacts", sim.change("contacts", "update", 20).await);
    // 20 updates make 20 to 40 events; nothing reads hints yet: the simulator meets 503s.
    let counters = Arc::clone(&receiver.counters);
    wait_until("a delivery answered 503", || {
        let counters = Arc::clone(&counters);
        async move { counters.snapshot().busy > 0 }
    })
    .await;

    let hints = Arc::new(Mutex::new(Vec::<Hint>::new()));
    let collected = Arc::clone(&hints);
    tokio::spawn(async move {
        while let Some(hint) = receiver.hints.recv().await {
            collected.lock().unwrap().push(hint);
        }
    });
    record("contacts", sim.change("contacts", "insert", 5).await);
    record("contacts", sim.change("contacts", "archive", 3).await);
    record("deals", sim.change("deals", "update", 10).await);
    record("contacts", sim.change("contacts", "update", 15).await);

    wait_until("the simulator delivered every event", || async {
        sim.webhook_stats().await["pending"] == 0
    })
    .await;
    let sent = sim.webhook_stats().await;
    let events = sent["events"].as_u64().unwrap();
    eprintln!("simulator: {sent}\nreceiver: {:?}", counters.snapshot());
    wait_until("the hints reached the engine", || {
        let hints = Arc::clone(&hints);
        async move { hints.lock().unwrap().len() as u64 >= events }
    })
    .await;

    let stats = counters.snapshot();
    let hints = hints.lock().unwrap().clone();
    eprintln!("simulator: {sent}\nreceiver: {stats:?}");
    assert_eq!(sent["gave_up"], 0, "a delivery was given up: {sent}");
    // One hint per event: nothing lost to the 503s, nothing doubled by duplicates or retries.
    assert_eq!(hints.len() as u64, events);
    assert_eq!(stats.hints, events);
    let hinted: BTreeSet<(String, String)> = hints
        .iter()
        .map(|hint| (hint.stream.clone(), hint.key.clone()))
        .collect();
    assert_eq!(hinted, expected);
    assert!(hints.iter().all(|hint| hint.occurred_at_ms > 0));
    // The faults happened: every batch went twice, some attempts were retries.
    assert!(sent["duplicated_batches"].as_u64().unwrap() > 0);
    assert!(sent["retries"].as_u64().unwrap() > 0);
    assert!(stats.duplicates > 0, "{stats:?}");
    assert_eq!(stats.unauthorized, 0);
}

/// A delivery as HubSpot makes it: POST `body` to `url` signed for `signed_url` at `ts`.
async fn post(
    url: &str,
    signed_url: &str,
    body: &str,
    secret: &str,
    ts: i64,
    headers: &[&str],
) -> reqwest::StatusCode {
    let ts = ts.to_string();
    let signature = webhook::sign_v3(secret, "POST", signed_url, body.as_bytes(), &ts);
    let mut request = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json");
    if headers.contains(&"signature") {
        request = request.header("X-HubSpot-Signature-v3", signature);
    }
    if headers.contains(&"timestamp") {
        request = request.header("X-HubSpot-Request-Timestamp", ts);
    }
    request.body(body.to_owned()).send().await.unwrap().status()
}

const BOTH: &[&str] = &["signature", "timestamp"];

fn delivery(events: &[(i64, &str, i64)]) -> String {
    let events: Vec<Value> = events
        .iter()
        .map(|(event_id, subscription, object_id)| {
            json!({"eventId": event_id, "subscriptionId": 1, "portalId": 2, "appId": 3,
                   "occurredAt": 1_700_000_000_000_i64, "subscriptionType": subscription,
                   "attemptNumber": 0, "objectId": object_id, "changeSource": "CRM"})
        })
        .collect();
    Value::Array(events).to_string()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn drain(hints: &mut mpsc::Receiver<Hint>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Ok(hint) = hints.try_recv() {
        out.push((hint.stream, hint.key));
    }
    out
}

/// A bad, missing or stale signature gets 401 and produces no hint; the same delivery
/// correctly signed is then applied once, and a replay of it (HubSpot's retry, or an
/// attacker's copy within the five minutes) is answered 200 without a second hint.
#[tokio::test]
async fn bad_missing_or_stale_signatures_get_401_and_replays_apply_once() {
    let mut receiver = start_receiver(100, None).await;
    let url = receiver.url.clone();
    let body = delivery(&[(101, "contact.propertyChange", 7)]);
    let now = now_ms();
    let unauthorized = reqwest::StatusCode::UNAUTHORIZED;

    assert_eq!(
        post(&url, &url, &body, "wrong-secret", now, BOTH).await,
        unauthorized
    );
    assert_eq!(
        post(&url, &url, &body, SECRET, now, &[]).await,
        unauthorized
    );
    assert_eq!(
        post(&url, &url, &body, SECRET, now, &["timestamp"]).await,
        unauthorized
    );
    assert_eq!(
        post(&url, &url, &body, SECRET, now, &["signature"]).await,
        unauthorized
    );
    let stale = now - 5 * 60 * 1000 - 1_000;
    assert_eq!(
        post(&url, &url, &body, SECRET, stale, BOTH).await,
        unauthorized
    );
    let other_uri = format!("{url}/other");
    assert_eq!(
        post(&url, &other_uri, &body, SECRET, now, BOTH).await,
        unauthorized
    );
    // A body changed after signing.
    let signature = webhook::sign_v3(SECRET, "POST", &url, body.as_bytes(), &now.to_string());
    let tampered = reqwest::Client::new()
        .post(&url)
        .header("X-HubSpot-Signature-v3", signature)
        .header("X-HubSpot-Request-Timestamp", now.to_string())
        .body(delivery(&[(101, "contact.propertyChange", 8)]))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), unauthorized);
    assert_eq!(drain(&mut receiver.hints), vec![]);
    assert_eq!(receiver.counters.snapshot().unauthorized, 7);

    // The rejected attempts left no trace: the genuine delivery is applied.
    assert_eq!(post(&url, &url, &body, SECRET, now_ms(), BOTH).await, 200);
    assert_eq!(
        drain(&mut receiver.hints),
        vec![("contacts".into(), "7".into())]
    );
    // Replayed (re-signed, later): 200, no second hint.
    assert_eq!(post(&url, &url, &body, SECRET, now_ms(), BOTH).await, 200);
    assert_eq!(drain(&mut receiver.hints), vec![]);
    assert_eq!(receiver.counters.snapshot().duplicates, 1);
}

/// Batches in any order give every hint; unknown object types are counted and answered 200;
/// a full queue answers 503 with Retry-After, and the retry sends only what was not sent.
#[tokio::test]
async fn out_of_order_unknown_types_and_a_full_queue() {
    let mut receiver = start_receiver(3, None).await;
    let url = receiver.url.clone();
    let later = delivery(&[
        (203, "deal.propertyChange", 30),
        (204, "contact.creation", 40),
    ]);
    let earlier = delivery(&[(202, "contact.propertyChange", 20)]);
    assert_eq!(post(&url, &url, &later, SECRET, now_ms(), BOTH).await, 200);
    assert_eq!(
        post(&url, &url, &earlier, SECRET, now_ms(), BOTH).await,
        200
    );
    let mut got = drain(&mut receiver.hints);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("contacts".into(), "20".into()),
            ("contacts".into(), "40".into()),
            ("deals".into(), "30".into())
        ]
    );

    let unknown = delivery(&[
        (205, "ticket.creation", 50),
        (206, "line_item.deletion", 51),
    ]);
    assert_eq!(
        post(&url, &url, &unknown, SECRET, now_ms(), BOTH).await,
        200
    );
    assert_eq!(drain(&mut receiver.hints), vec![]);
    assert_eq!(receiver.counters.snapshot().unknown_objects, 2);

    // Four new events, room for three: 503, and the fourth waits for HubSpot's retry.
    let four = delivery(&[
        (301, "contact.propertyChange", 1),
        (302, "contact.propertyChange", 2),
        (303, "contact.propertyChange", 3),
        (304, "contact.propertyChange", 4),
    ]);
    let ts = now_ms().to_string();
    let signature = webhook::sign_v3(SECRET, "POST", &url, four.as_bytes(), &ts);
    let busy = reqwest::Client::new()
        .post(&url)
        .header("X-HubSpot-Signature-v3", signature)
        .header("X-HubSpot-Request-Timestamp", ts)
        .body(four.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_eq!(drain(&mut receiver.hints).len(), 3);
    assert_eq!(post(&url, &url, &four, SECRET, now_ms(), BOTH).await, 200);
    assert_eq!(
        drain(&mut receiver.hints),
        vec![("contacts".into(), "4".into())]
    );
}

/// Behind a proxy HubSpot signs the public target URL, not the address syncline sees:
/// with `public_url` set, that signature holds and one for the local address does not.
#[tokio::test]
async fn the_signed_uri_is_the_public_url() {
    let public = "https://hooks.example.com/crm/hubspot";
    let mut receiver = start_receiver(10, Some(public)).await;
    let url = receiver.url.clone();
    let body = delivery(&[(401, "contact.propertyChange", 9)]);
    assert_eq!(post(&url, &url, &body, SECRET, now_ms(), BOTH).await, 401);
    assert_eq!(post(&url, public, &body, SECRET, now_ms(), BOTH).await, 200);
    assert_eq!(
        drain(&mut receiver.hints),
        vec![("contacts".into(), "9".into())]
    );

    // HubSpot signs the URI with `%3A`, `%2C` and the like decoded; so does the receiver.
    let mut receiver = start_receiver(10, Some("https://hooks.example.com/a%3Ab%2Cc")).await;
    let url = receiver.url.clone();
    let body = delivery(&[(402, "contact.propertyChange", 10)]);
    let decoded = "https://hooks.example.com/a:b,c";
    assert_eq!(
        post(&url, decoded, &body, SECRET, now_ms(), BOTH).await,
        200
    );
    assert_eq!(
        drain(&mut receiver.hints),
        vec![("contacts".into(), "10".into())]
    );
}

/// A `syncline stream` from the simulator process (sending signed webhooks to the stream's
/// receiver) into a throwaway PostgreSQL, polling only once an hour: only the webhooks (and a
/// start's catch-up load) bring changes.
struct Hooked {
    _pg: crate::support::TestPostgres,
    dest_url: String,
    dir: tempfile::TempDir,
    port: u16,
    sim: SimProcess,
}

impl Hooked {
    /// `sim_args` add to the simulator's webhook settings; `streams` are the HubSpot objects.
    async fn start(sim_args: &[&str], streams: &[&str]) -> Hooked {
        let pg = tokio::task::spawn_blocking(crate::support::TestPostgres::start)
            .await
            .unwrap();
        let dest_url = pg.create_database("dest");
        let dir = tempfile::tempdir().unwrap();
        let port = crate::support::free_port();
        let hook_url = format!("http://127.0.0.1:{port}{}", webhook::PATH);
        let mut args = vec!["--webhook-url", &hook_url, "--webhook-secret", SECRET];
        args.extend_from_slice(sim_args);
        let sim = SimProcess::start(&args);
        let polls: String = streams
            .iter()
            .map(|s| format!("[streams.{s}]\npoll_seconds = 3600\n"))
            .collect();
        let text = crate::support::config_toml(
            "name = \"hooked\"",
            &dir.path().join("stage"),
            &format!(
                "[source]\ntype = \"hubspot\"\nbase_url = \"{}\"\ntoken = \"sim-token\"\n\
                 streams = {}\nlag_seconds = 0",
                sim.base_url,
                crate::support::toml_list(streams)
            ),
            "[destination]\ntype = \"postgres\"\nurl = \"${DEST_URL}\"\nschema = \"crm\"",
            &format!(
                "[stream]\nlisten = \"127.0.0.1:{port}\"\nflush_ms = 100\n\
                 [stream.webhook]\nsecret = \"${{HUBSPOT_APP_SECRET}}\"\n{polls}"
            ),
        );
        std::fs::write(dir.path().join("stream.toml"), text).unwrap();
        Hooked {
            _pg: pg,
            dest_url,
            dir,
            port,
            sim,
        }
    }

    /// Starts `syncline -v stream`, its log appended to one file across starts.
    fn spawn(&self, crash: Option<&str>) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stream.log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
        command
            .args(["-v", "stream", "--config"])
            .arg(self.dir.path().join("stream.toml"))
            .env("DEST_URL", &self.dest_url)
            .env("HUBSPOT_APP_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(point) = crash {
            command.env("SYNCLINE_CRASH_AT", point);
        }
        command.spawn().expect("start syncline stream")
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stream.log")).unwrap_or_default()
    }
}

/// The whole path: the simulator process changes HubSpot records (updates, inserts, archives)
/// and sends its webhooks (with duplicates, disorder and retries) to `syncline stream`, which
/// fetches the hinted records by key (archived ones as deletes) and merges them into
/// PostgreSQL. Polling is set to an hour, so only the webhooks can
/// have brought the changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_bring_hubspot_changes_to_postgres_without_polling() {
    let hooked = Hooked::start(
        &[
            "--seed",
            "11",
            "--webhook-duplicate-rate",
            "0.5",
            "--webhook-reorder-rate",
            "0.5",
            "--webhook-lost-answer-rate",
            "0.2",
        ],
        &["contacts", "deals"],
    )
    .await;
    let (sim, dest_url, port) = (&hooked.sim, &hooked.dest_url, hooked.port);
    let mut stream = hooked.spawn(None);
    let logs = || hooked.logs();

    // The first load (catch-up) brings the 200 contacts and 50 deals.
    let db = crate::support::connect(&dest_url).await;
    let count = |table: &'static str| {
        let db = &db;
        async move {
            db.query_one(&format!("SELECT count(*) FROM crm.{table}"), &[])
                .await
                .map(|row| row.get::<_, i64>(0))
                .unwrap_or(-1)
        }
    };
    let start = Instant::now();
    while count("contacts").await != 200 || count("deals").await != 50 {
        assert!(
            stream.try_wait().unwrap().is_none(),
            "syncline stream exited:\n{}",
            logs()
        );
        assert!(start.elapsed() < PATIENCE, "no first load:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let updated = sim.change("contacts", "update", 10).await;
    let inserted = sim.change("contacts", "insert", 4).await;
    let deals = sim.change("deals", "update", 5).await;
    let archived = sim.change("contacts", "archive", 3).await;

    // Each changed record arrives with the version the simulator gave it.
    // (An updated or inserted record the archive then took is checked as a delete, below.)
    let live: Vec<i64> = [updated.clone(), inserted.clone()]
        .concat()
        .into_iter()
        .filter(|id| !archived.contains(id))
        .collect();
    let expected = sim_versions(&sim, "contacts", &live).await;
    let expected_deals = sim_versions(&sim, "deals", &deals).await;
    let start = Instant::now();
    loop {
        let contacts = dest_versions(&db, "contacts", &expected).await;
        let deals = dest_versions(&db, "deals", &expected_deals).await;
        let gone = db
            .query_one(
                "SELECT count(*) FROM crm.contacts WHERE id = ANY($1)",
                &[&archived],
            )
            .await
            .map(|row| row.get::<_, i64>(0) == 0)
            .unwrap_or(false);
        if contacts == expected && deals == expected_deals && gone {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "webhook changes not merged: contacts {contacts:?} != {expected:?}, \
             archived {archived:?} gone: {gone}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count("contacts").await, 204 - archived.len() as i64);
    assert!(logs().contains("fetching hinted records"), "{}", logs());

    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hints_line = metrics
        .lines()
        .find(|line| line.starts_with("syncline_webhook_events_total{outcome=\"hint\"}"))
        .unwrap_or_else(|| panic!("no webhook metrics:\n{metrics}"));
    assert_ne!(hints_line.rsplit(' ').next(), Some("0"), "{metrics}");
    // Every delivery was answered 2xx in the end.
    let stats = sim.webhook_stats().await;
    assert_eq!(stats["gave_up"], 0, "{stats}");

    let status = stop(&mut stream).await;
    assert!(status.success(), "exit {status:?}:\n{}", logs());
}

/// `id → updatedAt` (epoch ms) of `ids` as the simulator serves them (batch read).
async fn sim_versions(sim: &SimProcess, object: &str, ids: &[i64]) -> BTreeMap<i64, i64> {
    let inputs: Vec<Value> = ids.iter().map(|id| json!({"id": id.to_string()})).collect();
    let body: Value = reqwest::Client::new()
        .post(format!(
            "{}/crm/v3/objects/{object}/batch/read",
            sim.base_url
        ))
        .bearer_auth("sim-token")
        .json(&json!({"inputs": inputs, "properties": ["hs_object_id"]}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            let id = record["id"].as_str().unwrap().parse().unwrap();
            let at = chrono::DateTime::parse_from_rfc3339(record["updatedAt"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            (id, at)
        })
        .collect()
}

/// `id → _syncline_version` (epoch ms) of the rows of `table` with the keys of `wanted`.
async fn dest_versions(
    db: &tokio_postgres::Client,
    table: &str,
    wanted: &BTreeMap<i64, i64>,
) -> BTreeMap<i64, i64> {
    let ids: Vec<i64> = wanted.keys().copied().collect();
    let sql = format!(
        "SELECT id, (extract(epoch FROM _syncline_version) * 1000)::bigint \
         FROM crm.{table} WHERE id = ANY($1)"
    );
    match db.query(&sql, &[&ids]).await {
        Ok(rows) => rows.iter().map(|row| (row.get(0), row.get(1))).collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Hints under load: 200 webhook events for the same five records, made at once, are five
/// keys to the stream, not 200: each hinted load reads each record once, and the simulator
/// sees at most a batch read (and a property listing) per hinted load, however many events
/// named the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_the_same_records_are_read_once_per_flush() {
    let pg = tokio::task::spawn_blocking(crate::support::TestPostgres::start)
        .await
        .unwrap();
    let dest_url = pg.create_database("dest");
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let mut settings = syncline::sim::WebhookSettings::new(
        format!("http://127.0.0.1:{port}{}", webhook::PATH),
        SECRET,
    );
    settings.duplicate_rate = 0.0;
    settings.reorder_rate = 0.0;
    settings.lost_answer_rate = 0.0;
    let sim = syncline::sim::Simulator::start(
        syncline::sim::SimConfig {
            contacts: 50,
            companies: 1,
            deals: 1,
            webhooks: Some(settings),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let config = dir.path().join("stream.toml");
    let text = crate::support::config_toml(
        "name = \"coalesced\"",
        &dir.path().join("stage"),
        &format!(
            "[source]\ntype = \"hubspot\"\nbase_url = \"{}\"\ntoken = \"{}\"\n\
             streams = [\"contacts\"]\nlag_seconds = 0",
            sim.base_url,
            sim.token()
        ),
        "[destination]\ntype = \"postgres\"\nurl = \"${DEST_URL}\"\nschema = \"crm\"",
        &format!(
            "[stream]\nlisten = \"127.0.0.1:{port}\"\nflush_ms = 1000\n\
             [stream.webhook]\nsecret = \"${{HUBSPOT_APP_SECRET}}\"\n\
             [streams.contacts]\npoll_seconds = 3600\n"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("stream.log");
    let mut stream = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["-v", "--log-format", "json", "stream", "--config"])
        .arg(&config)
        .env("DEST_URL", &dest_url)
        .env("HUBSPOT_APP_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("start syncline stream");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let db = crate::support::connect(&dest_url).await;
    let start = Instant::now();
    loop {
        let healthy = reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .is_ok_and(|response| response.status() == 200);
        if healthy {
            break;
        }
        assert!(
            stream.try_wait().unwrap().is_none(),
            "syncline stream exited:\n{}",
            logs()
        );
        assert!(start.elapsed() < PATIENCE, "no first load:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let before = sim.hubspot.request_count();
    let ids = [3i64, 7, 11, 19, 23];
    for round in 0..40 {
        for id in ids {
            sim.hubspot
                .set_raw_property("contacts", id, "firstname", Some(&format!("v{round}")));
        }
    }
    let start = Instant::now();
    loop {
        let done = db
            .query_one(
                "SELECT count(*) FROM crm.contacts WHERE id = ANY($1) AND firstname = 'v39'",
                &[&ids.to_vec()],
            )
            .await
            .is_ok_and(|row| row.get::<_, i64>(0) == ids.len() as i64);
        if done {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the last values never arrived:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = sim.hubspot.request_count() - before;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("syncline_webhook_events_total{outcome=\"hint\"} 200"),
        "every event was a hint: {metrics}"
    );
    let fetched: Vec<u64> = logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["fields"]["message"] == "fetching hinted records")
        .filter_map(|event| event["fields"]["keys"].as_u64())
        .collect();
    assert!(!fetched.is_empty(), "{}", logs());
    assert!(
        fetched.iter().all(|keys| *keys <= ids.len() as u64),
        "a hinted load read a record more than once: keys per load {fetched:?}"
    );
    assert!(
        requests <= 2 * fetched.len() as u64,
        "{requests} requests to the simulator for {} hinted loads",
        fetched.len()
    );
    let status = stop(&mut stream).await;
    assert!(status.success(), "exit {status:?}:\n{}", logs());
    sim.shutdown().await;
}

/// A HubSpot stream killed (SIGKILL) in the load of records its webhooks named, while the CRM
/// keeps changing, and started again: the hints it had acknowledged die with it, and the next
/// start's catch-up load reads every change from the saved cursor. Nothing is lost (every
/// record at the simulator's version) and nothing doubled (each contact inserted once across
/// the ledger's loads, each load recorded once).
async fn killed_in_a_hinted_load_then_restarted_converges(point: &str) {
    let hooked = Hooked::start(
        &["--seed", "12", "--webhook-duplicate-rate", "0.5"],
        &["contacts"],
    )
    .await;
    let (sim, dest_url) = (&hooked.sim, &hooked.dest_url);
    let start_stream = |crash: Option<&str>| hooked.spawn(crash);
    let logs = || hooked.logs();
    let db = crate::support::connect(&dest_url).await;
    let count = |sql: &'static str| {
        let db = &db;
        async move {
            db.query_one(sql, &[])
                .await
                .map(|row| row.get::<_, i64>(0))
                .unwrap_or(-1)
        }
    };

    // The catch-up load is not a flush: it loads the 200 contacts and the process lives on.
    let mut stream = start_stream(Some(point));
    let start = Instant::now();
    while count("SELECT count(*) FROM crm.contacts").await != 200 {
        assert!(
            stream.try_wait().unwrap().is_none(),
            "syncline stream exited before its first flush:\n{}",
            logs()
        );
        assert!(start.elapsed() < PATIENCE, "no first load:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut changed = sim.change("contacts", "update", 10).await;
    changed.extend(sim.change("contacts", "insert", 4).await);
    // The load of the hinted records dies at the crash point.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = stream.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "not killed at {point}:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed at {point}:\n{}",
        logs()
    );
    // The CRM goes on changing while the stream is down.
    changed.extend(sim.change("contacts", "update", 5).await);
    changed.extend(sim.change("contacts", "insert", 3).await);

    let mut stream = start_stream(None);
    let expected = sim_versions(&sim, "contacts", &changed).await;
    let start = Instant::now();
    loop {
        if dest_versions(&db, "contacts", &expected).await == expected {
            break;
        }
        assert!(
            stream.try_wait().unwrap().is_none(),
            "the restarted stream exited:\n{}",
            logs()
        );
        assert!(
            start.elapsed() < PATIENCE,
            "changes not converged after the restart:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count("SELECT count(*) FROM crm.contacts").await, 207);
    // Each contact inserted once across every load, and each load in the ledger once.
    assert_eq!(
        count("SELECT sum(inserted)::bigint FROM crm._syncline_loads").await,
        207,
        "{}",
        logs()
    );
    assert_eq!(
        count("SELECT count(*) - count(DISTINCT load_id) FROM crm._syncline_loads").await,
        0
    );

    let status = stop(&mut stream).await;
    assert!(status.success(), "exit {status:?}:\n{}", logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_killed_after_staging_a_hinted_load_converges_on_restart() {
    killed_in_a_hinted_load_then_restarted_converges("flush-after-stage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_killed_after_merging_a_hinted_load_converges_on_restart() {
    killed_in_a_hinted_load_then_restarted_converges("flush-after-merge").await;
}
