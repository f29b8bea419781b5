//! Benchmark: a full sync of 100,000 HubSpot contacts from the simulator (rate limit off)
//! into a throwaway PostgreSQL, through Parquet staging. Prints rows/s and the peak memory
//! (max RSS) of the `syncline` process; the simulator runs in this process, not in that one.
//!
//! `cargo bench --bench hubspot_to_postgres` (release). `SYNCLINE_BENCH_ROWS` changes the size.

#[path = "../tests/common/pg.rs"]
mod pg;

use std::time::Instant;

use syncline::sim::{SimConfig, Simulator};

fn main() {
    let rows: usize = std::env::var("SYNCLINE_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pg = pg::TestPostgres::start();
    let sim = runtime
        .block_on(Simulator::start(
            SimConfig { contacts: rows, companies: 1, deals: 1, ..Default::default() },
            "127.0.0.1:0".parse().unwrap(),
        ))
        .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"bench\"\nbatch_rows = 10000\n[staging]\nurl = \"file://{}/stage\"\n\
             [source]\ntype = \"hubspot\"\nbase_url = \"{}\"\ntoken = \"{}\"\nstreams = [\"contacts\"]\nlag_seconds = 0\n\
             [destination]\ntype = \"postgres\"\nurl = \"{}\"\nschema = \"bench\"\n",
            dir.path().display(),
            sim.base_url,
            sim.token(),
            pg.url
        ),
    )
    .expect("write config");

    // The simulator serves from this process's runtime while the child runs.
    let _guard = runtime.enter();
    let report = dir.path().join("report.json");
    let started = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--report")
        .arg(&report)
        .spawn()
        .expect("spawn syncline");
    let (status, max_rss_kib) = runtime.block_on(tokio::task::spawn_blocking(move || wait_with_rusage(child.id() as i32))).expect("wait");
    let elapsed = started.elapsed();
    assert_eq!(status, 0, "syncline run failed");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    let inserted = report["streams"][0]["rows_inserted"].as_u64().unwrap_or(0);
    println!(
        "hubspot_to_postgres: {rows} contacts, {inserted} inserted in {:.2} s = {:.0} rows/s, peak RSS {:.1} MiB",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        max_rss_kib as f64 / 1024.0
    );
}

/// Waits for the child and returns its exit code and maximum resident set size in KiB.
fn wait_with_rusage(pid: i32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    (code, usage.ru_maxrss)
}
