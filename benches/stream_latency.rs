//! Benchmark: `syncline stream` end-to-end latency, PostgreSQL CDC → PostgreSQL.
//!
//! A driver inserts about 1,000 rows per second (ten-row transactions every 10 ms) for 60 s
//! into a source table; each row carries `clock_timestamp()` at its insert, which is its
//! commit time to within the transaction's few hundred microseconds. A poller reads the
//! destination table every 20 ms and notes when each row became visible. Printed: p50, p99
//! and max of source commit → visible, the slot's retained WAL once everything arrived, the
//! peak RSS of the `syncline stream` process, and where the time of a flush goes (the mean of
//! each load phase, from the process's own `phase timings` log lines).
//!
//! `cargo bench --bench stream_latency` (release). `SYNCLINE_BENCH_SECONDS` (default 60) and
//! `SYNCLINE_BENCH_RATE` (rows per second, default 1000) change the load.

#[path = "../tests/support/pg.rs"]
mod pg;
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{connect, env_or, wait_healthy};

fn main() {
    let seconds: u64 = env_or("SYNCLINE_BENCH_SECONDS", 60);
    let rate: u64 = env_or("SYNCLINE_BENCH_RATE", 1000);
    let pg = pg::TestPostgres::start_with_wal_level("logical");
    let source_url = pg.create_database("source");
    let dest_url = pg.create_database("dest");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = support::free_port();
    let config = dir.path().join("stream.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"bench\"\n[staging]\nurl = \"file://{stage}\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{source_url}\"\nstreams = [\"events\"]\n\
             [destination]\ntype = \"postgres\"\nurl = \"{dest_url}\"\nschema = \"crm\"\n\
             [stream]\nlisten = \"127.0.0.1:{port}\"\n",
            stage = dir.path().join("stage").display()
        ),
    )
    .expect("write the config");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        connect(&source_url)
            .await
            .batch_execute(
                "CREATE TABLE events (id bigint PRIMARY KEY, written_at timestamptz NOT NULL, \
                 payload text)",
            )
            .await
            .expect("create the source table");
    });

    let log = dir.path().join("stream.log");
    let child = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["-v", "--log-format", "json", "stream", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start syncline stream");
    let pid = child.id() as i32;
    runtime.block_on(wait_healthy(port));

    let rows = seconds * rate;
    println!(
        "driving {rate} rows/s for {seconds} s ({rows} rows) into PostgreSQL CDC → PostgreSQL"
    );
    let latencies = runtime.block_on(async {
        let driver = tokio::spawn(drive(source_url.clone(), rate, rows));
        let seen = watch(&dest_url, rows).await;
        driver.await.expect("driver");
        seen
    });
    // Settle: the slot is confirmed after the last flush and one idle save.
    std::thread::sleep(Duration::from_secs(12));
    let lag = runtime.block_on(async {
        connect(&source_url)
            .await
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = 'syncline_bench_events'",
                &[],
            )
            .await
            .expect("slot lag")
            .get::<_, i64>(0)
    });
    // SAFETY: signalling the child we started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let (code, max_rss_kib) = support::wait_with_rusage(pid);

    support::print_latencies("source commit → visible in PostgreSQL", &latencies);
    println!("slot retained WAL afterwards: {lag} bytes");
    println!(
        "peak RSS of syncline stream: {:.1} MiB (exit {code} after SIGTERM)",
        max_rss_kib as f64 / 1024.0
    );
    where_the_time_goes(&std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(code, 0, "syncline stream exits 0 on SIGTERM");
}

/// Inserts `rows` rows at `rate` per second, ten per transaction.
async fn drive(url: String, rate: u64, rows: u64) {
    let client = connect(&url).await;
    let per_tick = 10u64;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * per_tick / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next = 1u64;
    while next <= rows {
        tick.tick().await;
        let last = (next + per_tick - 1).min(rows);
        client
            .execute(
                "INSERT INTO events SELECT i, clock_timestamp(), 'payload ' || i \
                 FROM generate_series($1::bigint, $2::bigint) AS i",
                &[&(next as i64), &(last as i64)],
            )
            .await
            .expect("insert");
        next = last + 1;
    }
}

/// Polls the destination until `rows` rows arrived; returns each row's latency in seconds.
async fn watch(url: &str, rows: u64) -> Vec<f64> {
    let client = connect(url).await;
    let mut latencies = Vec::with_capacity(rows as usize);
    let mut last = 0i64;
    let started = Instant::now();
    while (latencies.len() as u64) < rows {
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "rows stopped arriving"
        );
        let polled = client
            .query(
                "SELECT id, extract(epoch FROM clock_timestamp() - written_at)::float8 \
                 FROM crm.events WHERE id > $1 ORDER BY id",
                &[&last],
            )
            .await;
        if let Ok(found) = polled {
            for row in &found {
                last = last.max(row.get::<_, i64>(0));
                latencies.push(row.get::<_, f64>(1));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies
}

/// The mean of each load phase over the flushes that loaded rows, from the JSON log.
fn where_the_time_goes(log: &str) {
    let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut flushes = 0u64;
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &event["fields"];
        if fields["message"] != "phase timings" || fields["load_ms"].as_u64() == Some(0) {
            continue;
        }
        flushes += 1;
        if let Some(object) = fields.as_object() {
            for (name, value) in object {
                if let Some(ms) = value.as_f64().filter(|_| name.ends_with("_ms")) {
                    let entry = sums.entry(name.clone()).or_default();
                    entry.0 += ms;
                    entry.1 += 1;
                }
            }
        }
    }
    println!("where a flush's time goes (mean over {flushes} flushes that loaded rows, ms):");
    for (name, (sum, count)) in sums {
        println!("  {name:<18} {:>8.1}", sum / count as f64);
    }
}
