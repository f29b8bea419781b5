//! `syncline stream` against real PostgreSQL (source and destination databases on one
//! throwaway cluster), run as a child process: a CDC stream under continuous writes killed
//! mid-flush and restarted converges with every load in the ledger once; SIGTERM exits 0
//! with the state saved; an idle CDC stream under other tables' WAL keeps its slot's
//! retained WAL bounded; a configuration error in one stream leaves the others flowing, and a
//! database URL the server refuses is one; a slow destination bounds what the stream reads
//! (backpressure) and loses nothing; a destination error is retried and shown on `/health`;
//! `/health`, `/metrics` and `syncline status` answer while it runs.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{TestPostgres, config_toml, connect, free_port};

/// A generous bound on anything the stream must get done: never a timing assertion, only
/// how long a test waits before it calls a hang a failure.
const PATIENCE: Duration = Duration::from_secs(180);

const COMPARED: &str = "id::text, email, n::text";

struct Setup {
    _pg: TestPostgres,
    dir: tempfile::TempDir,
    source_url: String,
    dest_url: String,
    config: PathBuf,
    port: u16,
}

impl Setup {
    /// A source database with `contacts` (1,000 rows) and a config streaming `streams`.
    async fn start(streams: &[&str]) -> Setup {
        Setup::start_with(streams, "", "").await
    }

    /// [`Setup::start`] with more `[source]` and `[stream]` keys.
    async fn start_with(streams: &[&str], source_extra: &str, stream_extra: &str) -> Setup {
        let pg = tokio::task::spawn_blocking(|| TestPostgres::start_with_wal_level("logical"))
            .await
            .unwrap();
        let source_url = pg.create_database("source");
        let dest_url = pg.create_database("dest");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("stream.toml");
        let port = free_port();
        let list = streams
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = config_toml(
            "name = \"live\"\nbatch_rows = 500",
            &dir.path().join("stage"),
            &format!(
                "[source]\ntype = \"postgres\"\nurl = \"${{SOURCE_URL}}\"\nstreams = [{list}]\n{source_extra}"
            ),
            "[destination]\ntype = \"postgres\"\nurl = \"${DEST_URL}\"\nschema = \"crm\"",
            &format!(
                "[stream]\nlisten = \"127.0.0.1:{port}\"\nflush_ms = 100\nshutdown_seconds = 60\n{stream_extra}"
            ),
        );
        std::fs::write(&config, text).unwrap();
        let setup = Setup {
            _pg: pg,
            dir,
            source_url,
            dest_url,
            config,
            port,
        };
        setup
            .source()
            .await
            .batch_execute(
                "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, n integer,
                                        updated_at timestamptz NOT NULL DEFAULT now());
                 INSERT INTO contacts SELECT i, 'c' || i || '@example.com', i
                 FROM generate_series(1, 1000) AS i;",
            )
            .await
            .unwrap();
        setup
    }

    async fn source(&self) -> tokio_postgres::Client {
        connect(&self.source_url).await
    }

    async fn dest(&self) -> tokio_postgres::Client {
        connect(&self.dest_url).await
    }

    fn stream(&self, env: &[(&str, &str)]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
        command
            .args(["-v", "stream", "--config"])
            .arg(&self.config)
            .env("SOURCE_URL", &self.source_url)
            .env("DEST_URL", &self.dest_url)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(
                    self.dir
                        .path()
                        .join(format!("stream-{}.log", uuid::Uuid::new_v4())),
                )
                .unwrap(),
            ));
        for (k, v) in env {
            command.env(k, v);
        }
        command.spawn().expect("start syncline stream")
    }

    /// Everything the stream processes logged so far.
    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        out
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    async fn wait_healthy(&self, child: &mut Child) {
        let started = Instant::now();
        loop {
            if let Some((200, _)) = self.get("/health").await {
                return;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("syncline stream exited: {status:?}\n{}", self.logs());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "never healthy: {:?}\n{}",
                self.get("/health").await,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn rows(&self, client: &tokio_postgres::Client, table: &str) -> Vec<Vec<Option<String>>> {
        match client
            .query(&format!("SELECT {COMPARED} FROM {table} ORDER BY id"), &[])
            .await
        {
            Ok(rows) => rows
                .iter()
                .map(|row| (0..row.len()).map(|i| row.get(i)).collect())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits until the destination holds exactly the source's rows.
    async fn wait_converged(&self, child: &mut Child) {
        let (source, dest) = (self.source().await, self.dest().await);
        let started = Instant::now();
        loop {
            let want = self.rows(&source, "contacts").await;
            let have = self.rows(&dest, "crm.contacts").await;
            if want == have {
                return;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("syncline stream exited: {status:?}\n{}", self.logs());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "never converged: source {} rows, destination {}\n{}",
                want.len(),
                have.len(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn state(&self, stream: &str) -> serde_json::Value {
        let path = self
            .dir
            .path()
            .join(format!("stage/live/_state/{stream}.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    async fn ledger(&self) -> Vec<String> {
        self.dest()
            .await
            .query(
                "SELECT load_id FROM crm._syncline_loads ORDER BY load_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    async fn slot(&self, stream: &str) -> (i64, i64) {
        let row = self
            .source()
            .await
            .query_one(
                "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&format!("syncline_live_{stream}")],
            )
            .await
            .unwrap();
        (lsn(&row.get::<_, String>(0)), lsn(&row.get::<_, String>(1)))
    }
}

fn lsn(text: &str) -> i64 {
    syncline::sources::postgres::cdc::parse_lsn(text).expect("an LSN")
}

/// Sends SIGTERM and waits for the exit.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: signalling a child process we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    wait(child)
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("syncline stream did not exit");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Inserts, updates and deletes contacts in small transactions until `stop` is set.
async fn keep_writing(url: String, stop: Arc<AtomicBool>, first: i64) -> i64 {
    let client = connect(&url).await;
    let mut round = 0i64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let id = first + round;
        client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO contacts VALUES ({id}, 'new{round}@example.com', {round});
                 UPDATE contacts SET n = n + 1, email = email || '.u' WHERE id = {};
                 DELETE FROM contacts WHERE id = {};
                 COMMIT;",
                1 + (round * 7) % 1000,
                1 + (round * 13) % 1000,
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    round
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdc_stream_killed_mid_flush_converges_and_sigterm_saves_state() {
    let setup = Setup::start(&["contacts"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(keep_writing(
        setup.source_url.clone(),
        stop.clone(),
        100_000,
    ));

    // Killed between a flush's merge and its state commit.
    let mut child = setup.stream(&[("SYNCLINE_CRASH_AT", "flush-after-merge")]);
    let status = tokio::task::block_in_place(|| wait(&mut child));
    assert_eq!(
        status.signal(),
        Some(9),
        "killed mid-flush: {status:?}\n{}",
        setup.logs()
    );
    let pending = setup.state("contacts")["pending"]["load_id"]
        .as_str()
        .expect("the killed flush is pending")
        .to_string();
    assert!(
        setup.ledger().await.contains(&pending),
        "the killed flush had committed its merge"
    );

    // Killed again between a flush's staging and its merge.
    let mut child = setup.stream(&[("SYNCLINE_CRASH_AT", "flush-after-stage")]);
    let status = tokio::task::block_in_place(|| wait(&mut child));
    assert_eq!(status.signal(), Some(9), "{status:?}\n{}", setup.logs());

    let mut child = setup.stream(&[]);
    setup.wait_healthy(&mut child).await;
    // `syncline status` answers while the stream runs.
    let status = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["status", "--config"])
        .arg(&setup.config)
        .env("SOURCE_URL", &setup.source_url)
        .env("DEST_URL", &setup.dest_url)
        .output()
        .unwrap();
    assert!(
        status.status.success() && String::from_utf8_lossy(&status.stdout).contains("contacts"),
        "{status:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    assert!(rounds > 0);
    setup.wait_converged(&mut child).await;

    let (_, metrics) = setup.get("/metrics").await.expect("/metrics answers");
    assert!(
        metrics.contains("syncline_stream_loads_total{stream=\"contacts\"}")
            && metrics.contains("syncline_stream_latency_seconds_count{stream=\"contacts\"}")
            && metrics.contains("syncline_stream_slot_lag_bytes{stream=\"contacts\"}"),
        "{metrics}"
    );

    let status = tokio::task::block_in_place(|| terminate(&mut child));
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0\n{}", setup.logs());
    let state = setup.state("contacts");
    assert!(state["pending"].is_null(), "{state}");
    let cursor = state["cursor"].as_i64().expect("a cursor");
    let (confirmed, _) = setup.slot("contacts").await;
    assert_eq!(
        confirmed, cursor,
        "the slot is confirmed at the saved cursor"
    );

    // Each load once: the pending one was finished, not merged again under another id.
    let ledger = setup.ledger().await;
    assert_eq!(ledger.iter().filter(|id| **id == pending).count(), 1);
    let rows: Vec<(String, i64, i64)> = setup
        .dest()
        .await
        .query(
            "SELECT load_id, rows, inserted + updated + deleted FROM crm._syncline_loads",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(rows.len() > 2, "{rows:?}");

    // A new start finds nothing pending and nothing to redo.
    let mut child = setup.stream(&[]);
    setup.wait_healthy(&mut child).await;
    let status = tokio::task::block_in_place(|| terminate(&mut child));
    assert_eq!(status.code(), Some(0));
    assert_eq!(setup.ledger().await, ledger, "nothing loaded twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cdc_stream_lets_its_slot_free_other_tables_wal() {
    let setup = Setup::start(&["contacts"]).await;
    let source = setup.source().await;
    source
        .batch_execute("CREATE TABLE other (id bigserial PRIMARY KEY, payload text)")
        .await
        .unwrap();
    let mut child = setup.stream(&[]);
    setup.wait_healthy(&mut child).await;
    let (start, _) = setup.slot("contacts").await;
    // About 40 MB of WAL that holds nothing for the stream.
    for _ in 0..20 {
        source
            .batch_execute(
                "INSERT INTO other (payload) SELECT repeat('x', 200) FROM generate_series(1, 10000)",
            )
            .await
            .unwrap();
    }
    let written_to: String = source
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let written_to = lsn(&written_to);
    assert!(written_to - start > 20 << 20, "the traffic wrote WAL");
    let started = Instant::now();
    loop {
        let (confirmed, _) = setup.slot("contacts").await;
        if confirmed >= written_to {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the slot stayed {} bytes behind\n{}",
            written_to - confirmed,
            setup.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nothing was loaded for it: advancing over WAL is not a load.
    assert_eq!(setup.ledger().await.len(), 1, "only the snapshot");
    let status = tokio::task::block_in_place(|| terminate(&mut child));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_error_stops_one_stream_and_the_others_flow() {
    let setup = Setup::start(&["contacts", "ghosts"]).await;
    let mut child = setup.stream(&[]);
    let started = Instant::now();
    let health = loop {
        if let Some((status, body)) = setup.get("/health").await
            && body.contains("ghosts: stopped")
            && body.contains("contacts: flowing")
        {
            break (status, body);
        }
        assert!(
            started.elapsed() < PATIENCE && child.try_wait().unwrap().is_none(),
            "{:?}\n{}",
            setup.get("/health").await,
            setup.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health.0, 503, "not every stream flows: {}", health.1);
    assert!(health.1.contains("configuration error"), "{}", health.1);

    setup
        .source()
        .await
        // One transaction larger than a batch (500 rows): it reaches the buffer in parts,
        // and a flush may fall between them.
        .batch_execute(
            "INSERT INTO contacts VALUES (5000, 'late@example.com', 1);
             UPDATE contacts SET n = n + 1;",
        )
        .await
        .unwrap();
    setup.wait_converged(&mut child).await;

    // The destination drops every connection: the stream fails, starts over with a new
    // one, and nothing is lost.
    let dest = setup.dest().await;
    dest.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = 'dest' AND pid <> pg_backend_pid()",
    )
    .await
    .unwrap();
    setup
        .source()
        .await
        .batch_execute("UPDATE contacts SET email = 'after the cut' WHERE id < 100")
        .await
        .unwrap();
    setup.wait_converged(&mut child).await;
    let (status, metrics) = setup.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("syncline_stream_up{stream=\"contacts\"} 1")
            && metrics.contains("syncline_stream_up{stream=\"ghosts\"} 0")
            && metrics.contains("syncline_stream_errors_total{stream=\"ghosts\"} 1")
            && !metrics.contains("syncline_stream_errors_total{stream=\"contacts\"} 0"),
        "{metrics}"
    );
    let status = tokio::task::block_in_place(|| terminate(&mut child));
    assert_eq!(status.code(), Some(0), "{}", setup.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_be_followed_is_polled_with_ordinary_loads() {
    let setup = Setup::start_with(
        &["contacts"],
        "mode = \"cursor\"\n[source.tables.contacts]\ncursor_column = \"updated_at\"",
        "[streams.contacts]\npoll_seconds = 1",
    )
    .await;
    let mut child = setup.stream(&[]);
    setup.wait_healthy(&mut child).await;
    setup.wait_converged(&mut child).await;
    setup
        .source()
        .await
        .batch_execute(
            "INSERT INTO contacts VALUES (5000, 'polled@example.com', 1, now());
             UPDATE contacts SET email = 'changed', updated_at = now() WHERE id = 7;",
        )
        .await
        .unwrap();
    setup.wait_converged(&mut child).await;
    let status = tokio::task::block_in_place(|| terminate(&mut child));
    assert_eq!(status.code(), Some(0), "{}", setup.logs());
    assert!(setup.ledger().await.len() >= 2, "the snapshot and a poll");
}

/// The value of `name{stream="STREAM"}` in a `/metrics` text, if it is there.
fn metric(metrics: &str, name: &str, stream: &str) -> Option<f64> {
    let prefix = format!("{name}{{stream=\"{stream}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

/// Row count and a checksum of `id`, `email` and `n` of `table`.
async fn checksum(client: &tokio_postgres::Client, table: &str) -> (i64, i64) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*)::bigint, coalesce(sum(hashtext(id::text || ':' || email || ':' \
                 || n::text)::bigint), 0)::bigint FROM {table}"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The ledger's sums over every load: rows staged, inserted, updated, deleted.
async fn ledger_sums(client: &tokio_postgres::Client) -> (i64, i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT sum(rows)::bigint, sum(inserted)::bigint, sum(updated)::bigint, \
             sum(deleted)::bigint FROM crm._syncline_loads",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// Backpressure: the test holds a lock on the destination table, so a flush waits in its
/// merge, while the source writes 60 MB of changes. The stream reads only as far as its
/// bounded buffers: its buffer depth (`/metrics`) never passes `flush_rows` plus one batch,
/// and the server keeps the rest (its walsender has not sent most of the WAL). Once the lock
/// goes, every change arrives exactly once: same rows and checksum, and the ledger counts
/// each row in one load only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_slows_the_reading_and_loses_nothing() {
    const FLUSH_ROWS: f64 = 1000.0;
    const BATCH_ROWS: f64 = 500.0;
    const TRANSACTIONS: i64 = 60;
    let setup = Setup::start_with(&["contacts"], "", "flush_rows = 1000").await;
    let mut child = setup.stream(&[]);
    setup.wait_healthy(&mut child).await;
    setup.wait_converged(&mut child).await;

    // The slow destination: an open transaction holding the table.
    let locker = setup.dest().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE crm.contacts IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();

    // Watches the buffer depth from now until the end.
    let done = Arc::new(AtomicBool::new(false));
    let port = setup.port;
    let watcher = tokio::spawn({
        let done = done.clone();
        async move {
            let mut deepest = 0f64;
            while !done.load(Ordering::Relaxed) {
                if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await
                    && let Ok(text) = response.text().await
                    && let Some(rows) = metric(&text, "syncline_stream_buffer_rows", "contacts")
                {
                    deepest = deepest.max(rows);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            deepest
        }
    });

    // 60,000 new rows of about 1 kB each, in transactions of 1,000.
    let source = setup.source().await;
    for t in 0..TRANSACTIONS {
        let first = 100_000 + t * 1000;
        source
            .execute(
                "INSERT INTO contacts (id, email, n) \
                 SELECT i, repeat('x', 1000) || i, i % 97 FROM generate_series($1::bigint, $2::bigint) AS i",
                &[&first, &(first + 999)],
            )
            .await
            .unwrap();
    }
    let written: i64 = source
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The stream had time to read all it would; it is still stalled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent: i64 = source
        .query_one(
            "SELECT coalesce(max(pg_wal_lsn_diff(r.sent_lsn, '0/0')), 0)::bigint \
             FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
             WHERE s.slot_name = 'syncline_live_contacts'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the stream exited\n{}",
        setup.logs()
    );
    assert!(sent > 0, "no walsender for the slot\n{}", setup.logs());
    assert!(
        written - sent > 16 << 20,
        "the server sent {} of the 60 MB written while the destination was stalled: \
         the stream kept reading\n{}",
        written - sent,
        setup.logs()
    );

    // The destination recovers.
    locker.batch_execute("COMMIT").await.unwrap();
    let dest = setup.dest().await;
    let started = Instant::now();
    loop {
        let want = checksum(&source, "contacts").await;
        let have = checksum(&dest, "crm.contacts").await;
        if want == have {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the stream exited\n{}",
            setup.logs()
        );
        assert!(
            started.elapsed() < PATIENCE,
            "never converged: source {want:?}, destination {have:?}\n{}",
            setup.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    done.store(true, Ordering::Relaxed);
    let deepest = watcher.await.unwrap();
    assert!(
        deepest > 0.0 && deepest <= FLUSH_ROWS + BATCH_ROWS,
        "buffer depth reached {deepest} rows (bound {})",
        FLUSH_ROWS + BATCH_ROWS
    );
    let rows = 1000 + TRANSACTIONS * 1000;
    assert_eq!(
        ledger_sums(&dest).await,
        (rows, rows, 0, 0),
        "each row staged and inserted once (rows, inserted, updated, deleted)"
    );
    let status = tokio::task::block_in_place(|| terminate(&mut child));
    assert_eq!(status.code(), Some(0), "{}", setup.logs());
}

/// A destination error (here: the table locked past the session's `lock_timeout`) is
/// retried with a growing pause, and `/health` says so (503, `retrying` with the reason)
/// meanwhile; once the destination is back, the stream flows again with every change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_error_is_retried_and_shown_on_health_until_it_recovers() {
    let setup = Setup::start(&["contacts"]).await;
    let separator = if setup.dest_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let impatient = format!(
        "{}{separator}options=-c%20lock_timeout%3D300",
        setup.dest_url
    );
    let mut child = setup.stream(&[("DEST_URL", &impatient)]);
    setup.wait_healthy(&mut child).await;
    setup.wait_converged(&mut child).await;

    let locker = setup.dest().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE crm.contacts IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    setup
        .source()
        .await
        .batch_execute(
            "INSERT INTO contacts (id, email, n) SELECT i, 'late' || i, 1 \
             FROM generate_series(2000, 2099) AS i;
             UPDATE contacts SET n = n + 1 WHERE id <= 10;",
        )
        .await
        .unwrap();

    // Two failed attempts at least: the first and a retry after its pause.
    let started = Instant::now();
    let health = loop {
        let health = setup.get("/health").await;
        let errors = match setup.get("/metrics").await {
            Some((_, text)) => metric(&text, "syncline_stream_errors_total", "contacts"),
            None => None,
        };
        if let Some((status, body)) = &health
            && body.contains("contacts: retrying")
            && errors.is_some_and(|errors| errors >= 2.0)
        {
            break (*status, body.clone());
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the stream exited\n{}",
            setup.logs()
        );
        assert!(
            started.elapsed() < PATIENCE,
            "no retries shown: {health:?}, errors {errors:?}\n{}",
            setup.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health.0, 503, "{}", health.1);
    assert!(
        health.1.contains("55P03"),
        "the reason is shown: {}",
        health.1
    );
    assert!(
        setup.logs().contains("retrying from its saved state"),
        "{}",
        setup.logs()
    );

    locker.batch_execute("COMMIT").await.unwrap();
    setup.wait_converged(&mut child).await;
    setup.wait_healthy(&mut child).await;
    let dest = setup.dest().await;
    assert_eq!(
        ledger_sums(&dest).await,
        (1000 + 100 + 10, 1000 + 100, 10, 0),
        "each change in one load (rows, inserted, updated, deleted)"
    );
    let status = tokio::task::block_in_place(|| terminate(&mut child));
    assert_eq!(status.code(), Some(0), "{}", setup.logs());
}

/// A PostgreSQL URL the server refuses for what it asks (a database that does not exist,
/// a session parameter it does not know) is a configuration error: the stream stops with
/// the reason on `/health` (the process exits 2, no stream left), rather than being retried
/// for ever as if the server were down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_url_the_server_refuses_stops_the_stream_as_a_configuration_error() {
    let setup = Setup::start(&["contacts"]).await;
    let base = setup.dest_url.rsplit_once('/').unwrap().0.to_string();
    for (url, reason) in [
        (format!("{base}/no_such_database"), "3D000"),
        (
            format!("{}?options=-c%20no_such_setting%3D1", setup.dest_url),
            "42704",
        ),
    ] {
        let mut child = setup.stream(&[("DEST_URL", &url)]);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if let Some((_, metrics)) = setup.get("/metrics").await
                && metric(&metrics, "syncline_stream_errors_total", "contacts")
                    .is_some_and(|errors| errors >= 2.0)
            {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "retried as if transient: {:?}\n{}",
                    setup.get("/health").await,
                    setup.logs()
                );
            }
            assert!(started.elapsed() < PATIENCE, "{}", setup.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status.code(), Some(2), "{}", setup.logs());
        let logs = setup.logs();
        assert!(
            logs.contains("configuration error") && logs.contains(reason),
            "{logs}"
        );
    }
}
