//! Benchmark: a full sync of 100,000 HubSpot contacts from the simulator (rate limit off)
//! into a throwaway PostgreSQL, through Parquet staging. Prints rows/s and the peak memory
//! (max RSS) of the `syncline run` process. The simulator runs as its own `syncline sim`
//! process, as a CRM would, so neither its CPU nor its memory is counted as syncline's.
//! First it measures the simulator's own ceiling: a bare client paging through the same
//! list endpoint, so the connector's figure is read against a limit.
//!
//! `cargo bench --bench hubspot_to_postgres` (release). `SYNCLINE_BENCH_ROWS` changes the size.

#[path = "../tests/support/pg.rs"]
mod pg;
#[allow(dead_code)]
mod support;

use support::{hubspot_pipeline, measure_run, start_hubspot_simulator};

fn main() {
    let rows = support::bench_rows(100_000);
    let pg = pg::TestPostgres::start();
    let (mut sim, port) = start_hubspot_simulator(rows);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        hubspot_pipeline("bench", dir.path(), port, &pg.url, "bench"),
    )
    .expect("write config");

    let ceiling = simulator_ceiling(port, rows);
    let report = dir.path().join("report.json");
    let run = measure_run("hubspot", &config, &report);
    let _ = sim.kill();
    let inserted = run.stream["rows_inserted"].as_u64().unwrap_or(0);
    assert_eq!(inserted as usize, rows, "every contact arrived");
    println!(
        "hubspot_to_postgres: simulator ceiling (one bare client paging the list endpoint, every property, 100 a page, one request at a time): {:.2} s = {:.0} rows/s",
        ceiling.as_secs_f64(),
        rows as f64 / ceiling.as_secs_f64()
    );
    println!(
        "hubspot_to_postgres: {rows} contacts, {inserted} inserted in {:.2} s = {:.0} rows/s = {:.2}x the ceiling, peak RSS {:.1} MiB",
        run.elapsed.as_secs_f64(),
        rows as f64 / run.elapsed.as_secs_f64(),
        run.elapsed.as_secs_f64() / ceiling.as_secs_f64(),
        run.peak_rss_mib
    );
    println!("hubspot_to_postgres: phases {}", run.stream["phases"]);
}

/// How fast the simulator serves the full load's pages to a client that does nothing else:
/// the limit the connector's figure is read against. Reads only the paging cursor of each
/// page (the records are skipped unparsed), so it measures the server and the transfer.
fn simulator_ceiling(port: u16, rows: usize) -> std::time::Duration {
    #[derive(serde::Deserialize)]
    struct Properties {
        results: Vec<Named>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Page {
        results: Vec<serde::de::IgnoredAny>,
        paging: Option<Paging>,
    }
    #[derive(serde::Deserialize)]
    struct Paging {
        next: Option<Next>,
    }
    #[derive(serde::Deserialize)]
    struct Next {
        after: String,
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let get = |path: String| {
            client
                .get(format!("{base}{path}"))
                .bearer_auth("bench-token")
                .send()
        };
        let properties: Properties = get("/crm/v3/properties/contacts".into())
            .await
            .expect("properties")
            .json()
            .await
            .expect("properties json");
        let names: Vec<String> = properties.results.into_iter().map(|p| p.name).collect();
        let list = format!(
            "/crm/v3/objects/contacts?limit=100&archived=false&properties={}",
            names.join(",")
        );
        let started = std::time::Instant::now();
        let mut seen = 0;
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(after) => format!("{list}&after={after}"),
                None => list.clone(),
            };
            let body = get(path).await.expect("page").bytes().await.expect("body");
            let page: Page = serde_json::from_slice(&body).expect("page json");
            seen += page.results.len();
            match page.paging.and_then(|p| p.next) {
                Some(next) => after = Some(next.after),
                None => break,
            }
        }
        assert_eq!(seen, rows, "the ceiling read every contact");
        started.elapsed()
    })
}
