//! Benchmark: `syncline stream` end-to-end latency, HubSpot webhooks → PostgreSQL.
//!
//! The simulator runs as its own `syncline sim` process with webhooks on: every change it
//! makes is POSTed, signed (v3), to `syncline stream`'s receiver, which treats the events as
//! hints, reads the records by batch read and merges them (polling is set to an hour, so only
//! the webhooks bring the changes). A driver creates about 1,000 contacts per second (ten
//! every 10 ms, `POST /_sim/hubspot/contacts/insert`) for 60 s; each record's `updatedAt`
//! (the destination's `_syncline_version`) is the simulator's clock at its change. A poller
//! reads the destination every 20 ms and notes when each record became visible. Printed:
//! p50, p99 and max of simulator change → visible, the peak RSS of the `syncline stream`
//! process, and where the time goes (webhook delivery and hint window, batch read, the load's
//! phases, from the process's own log lines).
//!
//! A creation takes the path an update takes (event → hint → batch read → merge); creations
//! are driven because each is a new id, so every change is seen exactly once.
//!
//! `cargo bench --bench webhook_latency` (release). `SYNCLINE_BENCH_SECONDS` (default 60)
//! and `SYNCLINE_BENCH_RATE` (changes per second, default 1000) change the load;
//! `SYNCLINE_BENCH_WEBHOOK_FAULTS=1` turns on the simulator's delivery faults (duplicates,
//! disorder, lost answers and their retries), which are off by default: they add the
//! simulated HubSpot's own retry pauses to the figure.
//! A short debug run checks it works: `SYNCLINE_BENCH_SECONDS=5 SYNCLINE_BENCH_RATE=100
//! cargo test --bench webhook_latency`.

#[path = "../tests/support/pg.rs"]
mod pg;
#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{connect, env_or, wait_healthy};

/// Contacts the simulator starts with (the stream's first load); the driver's records get
/// the ids after them.
const SEEDED: u64 = 1_000;
/// Signs the simulator's deliveries; a throwaway value, never a real app's.
const SECRET: &str = "bench-webhook-secret";

fn main() {
    let seconds = env_or("SYNCLINE_BENCH_SECONDS", 60);
    let rate = env_or("SYNCLINE_BENCH_RATE", 1000);
    let faults = env_or("SYNCLINE_BENCH_WEBHOOK_FAULTS", 0) != 0;
    let pg = pg::TestPostgres::start();
    let dest_url = pg.create_database("dest");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = support::free_port();
    let hook_url = format!("http://127.0.0.1:{port}/webhooks/hubspot");
    let mut sim_args = vec!["--webhook-url", &hook_url, "--webhook-secret", SECRET];
    if !faults {
        sim_args.extend([
            "--webhook-duplicate-rate",
            "0",
            "--webhook-reorder-rate",
            "0",
            "--webhook-lost-answer-rate",
            "0",
        ]);
    }
    let (mut sim, sim_port) = support::start_hubspot_simulator_with(SEEDED as usize, &sim_args);
    let config = dir.path().join("stream.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"bench\"\n[staging]\nurl = \"file://{stage}\"\n\
             [source]\ntype = \"hubspot\"\nbase_url = \"http://127.0.0.1:{sim_port}\"\n\
             token = \"bench-token\"\nstreams = [\"contacts\"]\nlag_seconds = 0\n\
             [destination]\ntype = \"postgres\"\nurl = \"{dest_url}\"\nschema = \"crm\"\n\
             [stream]\nlisten = \"127.0.0.1:{port}\"\n\
             [stream.webhook]\nsecret = \"${{BENCH_WEBHOOK_SECRET}}\"\n\
             [streams.contacts]\npoll_seconds = 3600\n",
            stage = dir.path().join("stage").display()
        ),
    )
    .expect("write the config");

    let log = dir.path().join("stream.log");
    let child = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["-v", "--log-format", "json", "stream", "--config"])
        .arg(&config)
        .env("BENCH_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start syncline stream");
    let pid = child.id() as i32;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(wait_healthy(port));

    let changes = seconds * rate;
    println!(
        "driving {rate} HubSpot changes/s for {seconds} s ({changes} contacts created, webhooks {}) into syncline stream → PostgreSQL",
        if faults {
            "with the simulator's faults"
        } else {
            "without faults"
        }
    );
    let base = format!("http://127.0.0.1:{sim_port}");
    let latencies = runtime.block_on(async {
        let driver = tokio::spawn(drive(base.clone(), rate, changes));
        let seen = watch(&dest_url, changes).await;
        driver.await.expect("driver");
        seen
    });
    let webhooks = runtime.block_on(async {
        reqwest::get(format!("{base}/_sim/webhooks"))
            .await
            .expect("webhook stats")
            .text()
            .await
            .unwrap_or_default()
    });
    let metrics = runtime.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default()
    });
    // SAFETY: signalling the child we started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let (code, max_rss_kib) = support::wait_with_rusage(pid);
    let _ = sim.kill();
    let _ = sim.wait();

    support::print_latencies(
        "HubSpot change → visible in PostgreSQL (webhook, batch read, merge)",
        &latencies,
    );
    println!(
        "peak RSS of syncline stream: {:.1} MiB (exit {code} after SIGTERM)",
        max_rss_kib as f64 / 1024.0
    );
    println!("simulator's deliveries: {webhooks}");
    for line in metrics
        .lines()
        .filter(|line| line.starts_with("syncline_webhook_"))
    {
        println!("  {line}");
    }
    where_the_time_goes(&std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(code, 0, "syncline stream exits 0 on SIGTERM");
}

/// Creates `changes` contacts at `rate` per second, ten per request.
async fn drive(base: String, rate: u64, changes: u64) {
    let client = reqwest::Client::new();
    let per_tick = 10u64.min(changes.max(1));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * per_tick / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut done = 0u64;
    while done < changes {
        tick.tick().await;
        let n = per_tick.min(changes - done);
        client
            .post(format!("{base}/_sim/hubspot/contacts/insert?n={n}"))
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .expect("the simulator creates contacts");
        done += n;
    }
}

/// Polls the destination until the `changes` created contacts (ids after [`SEEDED`]) are all
/// there; returns each one's latency in seconds. Webhooks may bring records out of order, so
/// it reads from the first id not yet seen on.
async fn watch(url: &str, changes: u64) -> Vec<f64> {
    let client = connect(url).await;
    let mut latencies = Vec::with_capacity(changes as usize);
    let last = (SEEDED + changes) as i64;
    // Every id up to `floor` was seen; `seen` holds those seen after it.
    let mut floor = SEEDED as i64;
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    while floor < last {
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "changes stopped arriving"
        );
        let polled = client
            .query(
                "SELECT id, extract(epoch FROM clock_timestamp() - _syncline_version)::float8 \
                 FROM crm.contacts WHERE id > $1 ORDER BY id",
                &[&floor],
            )
            .await;
        if let Ok(found) = polled {
            for row in &found {
                let id: i64 = row.get(0);
                if seen.insert(id) {
                    latencies.push(row.get::<_, f64>(1));
                }
            }
            while seen.remove(&(floor + 1)) {
                floor += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies
}

/// Where the time of the hinted loads goes, from the JSON log: how old the hints were when
/// their batch read began (the webhook's delivery plus the `flush_ms` window that collected
/// them), and the mean of each phase of the loads that merged them.
fn where_the_time_goes(log: &str) {
    let mut phases: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut hints: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
    let mut last_phases: Option<serde_json::Value> = None;
    let mut loads = 0u64;
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &event["fields"];
        if fields["message"] == "phase timings" {
            last_phases = Some(fields.clone());
            continue;
        }
        if fields["message"] != "hinted records merged" {
            continue;
        }
        loads += 1;
        for name in [
            "keys",
            "hint_age_ms",
            "oldest_hint_age_ms",
            "read_and_load_ms",
        ] {
            if let Some(value) = fields[name].as_f64() {
                let entry = hints.entry(name).or_default();
                entry.0 += value;
                entry.1 += 1;
            }
        }
        // The load that merged these hints logged its phases just before.
        if let Some(object) = last_phases.take().as_ref().and_then(|p| p.as_object()) {
            for (name, value) in object {
                if let Some(ms) = value.as_f64().filter(|_| name.ends_with("_ms")) {
                    let entry = phases.entry(name.clone()).or_default();
                    entry.0 += ms;
                    entry.1 += 1;
                }
            }
        }
    }
    println!("where the time goes (mean over {loads} hinted loads):");
    for (name, (sum, count)) in hints {
        println!("  {name:<24} {:>8.1}", sum / count as f64);
    }
    println!("  phases of those loads (ms; extract_ms is the batch read):");
    for (name, (sum, count)) in phases {
        println!("    {name:<22} {:>8.1}", sum / count as f64);
    }
}
