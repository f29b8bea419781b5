//! Benchmark: a full load of 100,000 Salesforce Accounts from the simulator (limits off) into
//! a throwaway PostgreSQL, once through Bulk API 2.0 and once through REST `queryAll`.
//! Prints records/s and the peak memory (max RSS) of each `syncline run` process. The
//! simulator runs as its own `syncline sim` process.
//!
//! `cargo bench --bench salesforce_to_postgres` (release). `SYNCLINE_BENCH_ROWS` changes the size.

#[path = "../tests/support/pg.rs"]
mod pg;
#[allow(dead_code)]
mod support;

use std::path::Path;

use support::{free_port, measure_run, wait_for_port};

fn main() {
    let rows = support::bench_rows(100_000);
    let pg = pg::TestPostgres::start();
    let port = free_port();
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["sim", "--contacts", "1", "--companies", "1", "--deals", "1"])
        .args([
            "--sf-contacts",
            "1",
            "--sf-opportunities",
            "1",
            "--sf-leads",
            "1",
            "--sf-accounts",
        ])
        .arg(rows.to_string())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn syncline sim");
    wait_for_port(port);
    let dir = tempfile::tempdir().expect("temp dir");
    for (route, threshold) in [("bulk", 1u64), ("rest", u64::MAX / 2)] {
        let config = dir.path().join(format!("{route}.toml"));
        std::fs::write(
            &config,
            format!(
                "[pipeline]\nname = \"bench_{route}\"\nbatch_rows = 10000\n[staging]\nurl = \"file://{}/stage\"\n\
                 [source]\ntype = \"salesforce\"\nlogin_url = \"http://127.0.0.1:{port}\"\nclient_id = \"sim-client\"\n\
                 client_secret = \"sim-secret\"\nstreams = [\"Account\"]\nlag_seconds = 0\nbulk_threshold = {threshold}\nbulk_poll_ms = 50\n\
                 [destination]\ntype = \"postgres\"\nurl = \"{}\"\nschema = \"bench_{route}\"\n",
                dir.path().display(),
                pg.url
            ),
        )
        .expect("write config");
        run(
            route,
            rows,
            &config,
            &dir.path().join(format!("{route}.json")),
        );
    }
    let _ = sim.kill();
}

fn run(route: &str, rows: usize, config: &Path, report: &Path) {
    let run = measure_run(route, config, report);
    let inserted = run.stream["rows_inserted"].as_u64().unwrap_or(0);
    assert_eq!(inserted as usize, rows, "every Account arrived ({route})");
    println!(
        "salesforce_to_postgres ({route}): {rows} accounts in {:.2} s = {:.0} records/s, peak RSS {:.1} MiB",
        run.elapsed.as_secs_f64(),
        rows as f64 / run.elapsed.as_secs_f64(),
        run.peak_rss_mib
    );
}
