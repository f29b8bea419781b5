//! Benchmark: a full sync of 100,000 HubSpot contacts from the simulator (rate limit off)
//! into a throwaway PostgreSQL, through Parquet staging. Prints rows/s and the peak memory
//! (max RSS) of the `syncline run` process. The simulator runs as its own `syncline sim`
//! process, as a CRM would, so neither its CPU nor its memory is counted as syncline's.
//!
//! `cargo bench --bench hubspot_to_postgres` (release). `SYNCLINE_BENCH_ROWS` changes the size.

#[path = "../tests/support/pg.rs"]
mod pg;
mod support;

use support::{free_port, measure_run, wait_for_port};

fn main() {
    let rows: usize = std::env::var("SYNCLINE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let pg = pg::TestPostgres::start();
    let port = free_port();
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args([
            "sim",
            "--companies",
            "1",
            "--deals",
            "1",
            "--token",
            "bench-token",
            "--contacts",
        ])
        .arg(rows.to_string())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn syncline sim");
    wait_for_port(port);

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"bench\"\nbatch_rows = 10000\n[staging]\nurl = \"file://{}/stage\"\n\
             [source]\ntype = \"hubspot\"\nbase_url = \"http://127.0.0.1:{port}\"\ntoken = \"bench-token\"\nstreams = [\"contacts\"]\nlag_seconds = 0\n\
             [destination]\ntype = \"postgres\"\nurl = \"{}\"\nschema = \"bench\"\n",
            dir.path().display(),
            pg.url
        ),
    )
    .expect("write config");

    let report = dir.path().join("report.json");
    let run = measure_run("hubspot", &config, &report);
    let _ = sim.kill();
    let inserted = run.stream["rows_inserted"].as_u64().unwrap_or(0);
    assert_eq!(inserted as usize, rows, "every contact arrived");
    println!(
        "hubspot_to_postgres: {rows} contacts, {inserted} inserted in {:.2} s = {:.0} rows/s, peak RSS {:.1} MiB",
        run.elapsed.as_secs_f64(),
        rows as f64 / run.elapsed.as_secs_f64(),
        run.peak_rss_mib
    );
}
