//! Benchmark: `syncline reconcile` of N HubSpot contacts in the simulator (its own process,
//! rate limit off) against their copy in a throwaway PostgreSQL.
//!
//! Loads the contacts with `syncline run`, plants drift in the destination (per 1,000 rows:
//! one deleted, one set to an older version, one extra row), then measures, each as its own
//! process: the compare (`syncline reconcile`, which lists the source 100 records a page with
//! only the modified stamp), the repair (`--repair`, batch reads of the drifted ids) and the
//! compare of the repaired table. Prints seconds, keys per second, peak memory (max RSS) and
//! the API-call estimate each printed (that the calls made stay within it is a test:
//! `reconcile::hubspot_drift_is_repaired_through_batch_read_within_the_estimate`).
//!
//! `cargo bench --bench reconcile_hubspot` (release). `SYNCLINE_BENCH_ROWS` changes N
//! (default 100,000).

#[path = "../tests/support/pg.rs"]
mod pg;
#[allow(dead_code)]
mod support;

use support::{hubspot_pipeline, measure_command, start_hubspot_simulator};

fn main() {
    let rows = support::bench_rows(100_000);
    let pg = pg::TestPostgres::start();
    let (mut sim, port) = start_hubspot_simulator(rows);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("reconcile.toml");
    std::fs::write(
        &config,
        hubspot_pipeline("bench_reconcile", dir.path(), port, &pg.url, "crm"),
    )
    .expect("write config");
    let load = measure_command(&config, &["run"], dir.path());
    assert_eq!(load.code, 0, "the initial load failed: {}", load.output);
    println!(
        "reconcile_hubspot: {rows} contacts loaded in {:.2} s (peak RSS {:.1} MiB)",
        load.elapsed.as_secs_f64(),
        load.peak_rss_mib
    );

    let every = 1000;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DELETE FROM crm.contacts WHERE id % {every} = 1;
                 UPDATE crm.contacts SET _syncline_version = _syncline_version - interval '1 day'
                  WHERE id % {every} = 2;
                 CREATE TEMP TABLE extra AS SELECT * FROM crm.contacts WHERE id % {every} = 3;
                 UPDATE extra SET id = id + 1000000000;
                 INSERT INTO crm.contacts SELECT * FROM extra;"
            ))
            .await
            .expect("plant drift");
    });
    let planted = rows.div_ceil(every);

    for (what, args, code) in [
        ("compare", vec!["reconcile"], 3),
        ("repair", vec!["reconcile", "--repair"], 0),
        ("compare after repair", vec!["reconcile"], 0),
    ] {
        let run = measure_command(&config, &args, dir.path());
        assert_eq!(run.code, code, "syncline {args:?}: {}", run.output);
        println!(
            "reconcile_hubspot: {what:<21} {rows} keys in {:.2} s = {:.0} keys/s, peak RSS {:.1} MiB, {} (drift planted: ~{planted} rows per class)",
            run.elapsed.as_secs_f64(),
            rows as f64 / run.elapsed.as_secs_f64(),
            run.peak_rss_mib,
            estimate_line(&run.output),
        );
    }
    let _ = sim.kill();
}

/// What the command estimated, as it printed it ("estimate N API calls ...").
fn estimate_line(output: &str) -> String {
    output
        .lines()
        .filter(|line| line.contains("estimate"))
        .map(|line| line.trim().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
