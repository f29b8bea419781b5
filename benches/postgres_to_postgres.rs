//! Benchmark: a 1,000,000-row, 22-column contacts table moved from one PostgreSQL database to
//! another on the same throwaway server, three ways, in one run:
//! (a) the physical limit: `COPY (SELECT ...) TO STDOUT (FORMAT binary)` piped straight into
//!     `COPY ... FROM STDIN (FORMAT binary)` (no staging, no merge);
//! (b) `syncline run` in cursor mode (full load through Parquet staging and the merge);
//! (c) `syncline run` in CDC mode (slot, exported snapshot, staging, merge);
//! (d) `syncline run` in cursor mode into the lake destination (a new Delta table);
//! (e) with `lake-refresh` in `SYNCLINE_BENCH_RUNS`, the same rows loaded again into that table
//!     with `--full-refresh`: a merge into a table with rows that judges every row (in passes
//!     of `destination.merge_keys_per_pass` keys, a million by default).
//! Prints seconds, the ratio to (a), and the peak memory (max RSS) of each `syncline run`.
//!
//! `cargo bench --bench postgres_to_postgres` (release). `SYNCLINE_BENCH_ROWS` changes the size,
//! `SYNCLINE_BENCH_RUNS` which of cursor, cdc, lake and lake-refresh run (default the first
//! three; lake-refresh runs after lake).

#[path = "../tests/support/pg.rs"]
mod pg;
#[allow(dead_code)]
mod support;

use std::pin::pin;
use std::time::{Duration, Instant};

use futures::{SinkExt, TryStreamExt};
use support::{measure_run, measure_run_with};

const TABLE: &str = "(
    id bigint PRIMARY KEY,
    first_name text, last_name text, email text, phone text, company text, job_title text,
    city text, state text, country text, postal_code text, lifecycle_stage text,
    lead_status text, owner_id integer, annual_revenue double precision,
    num_employees integer, score numeric(10, 2), is_customer boolean, birth_date date,
    created_at timestamptz, updated_at timestamptz NOT NULL, notes text
)";

fn main() {
    let rows = support::bench_rows(1_000_000);
    let pg = pg::TestPostgres::start();
    let source_url = pg.create_database("source");
    let dest_url = pg.create_database("dest");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    runtime.block_on(async {
        let source = connect(&source_url).await;
        source
            .batch_execute(&format!(
                "CREATE TABLE contacts {TABLE};
                 INSERT INTO contacts
                 SELECT i, 'First' || i, 'Last' || (i % 5000), 'contact' || i || '@example.com',
                        '+1-555-' || lpad((i % 10000)::text, 4, '0'), 'Company ' || (i % 20000),
                        (ARRAY['Engineer','Manager','Director','VP','Analyst'])[1 + i % 5],
                        'City ' || (i % 900), 'ST' || (i % 50), 'US', lpad((i % 99999)::text, 5, '0'),
                        (ARRAY['lead','customer','opportunity'])[1 + i % 3],
                        (ARRAY['new','open','in_progress','unqualified'])[1 + i % 4],
                        i % 300, (i % 1000) * 1234.5, i % 5000, (i % 10000) / 100.0,
                        i % 4 = 0, date '1960-01-01' + (i % 15000),
                        timestamptz '2020-01-01' + i * interval '1 second',
                        timestamptz '2024-01-01' + i * interval '1 second',
                        CASE WHEN i % 3 = 0 THEN NULL ELSE 'note about contact ' || i END
                 FROM generate_series(1, {rows}) AS i;"
            ))
            .await
            .expect("create the source table");
        // Separate statements: VACUUM cannot run in the implicit transaction of a batch.
        for statement in ["VACUUM ANALYZE contacts", "CHECKPOINT"] {
            source.batch_execute(statement).await.expect(statement);
        }
        connect(&dest_url)
            .await
            .batch_execute(&format!("CREATE TABLE contacts {TABLE}"))
            .await
            .expect("create the limit's target table");
    });

    // Two measurements of the limit: two `psql` processes piped together (how an operator
    // would measure it) and one client copying COPY data from one connection to the other.
    // The faster one is the limit the ratios use.
    let psql = psql_limit(&pg, &source_url, &dest_url);
    runtime.block_on(async {
        connect(&dest_url)
            .await
            .batch_execute("TRUNCATE contacts")
            .await
            .expect("empty the limit's target table");
    });
    let client = runtime.block_on(copy_limit(&source_url, &dest_url));
    let limit = psql.min(client);
    println!(
        "postgres_to_postgres: {rows} rows, 22 columns; physical limit (binary COPY out -> COPY in): psql pipe {:.2} s, one client {:.2} s",
        psql.as_secs_f64(),
        client.as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let cursor = "mode = \"cursor\"\n[source.tables.contacts]\ncursor_column = \"updated_at\"\n";
    let postgres = |schema: &str| {
        format!("[destination]\ntype = \"postgres\"\nurl = \"{dest_url}\"\nschema = \"{schema}\"\n")
    };
    let lake = format!(
        "[destination]\ntype = \"lake\"\nurl = \"file://{}/lake\"\n",
        dir.path().display()
    );
    // `SYNCLINE_BENCH_RUNS` picks some of them (e.g. "cursor,lake" for a 10M-row memory run).
    let wanted = std::env::var("SYNCLINE_BENCH_RUNS").unwrap_or_else(|_| "cursor,cdc,lake".into());
    for (name, source_extra, destination) in [
        ("cursor", cursor, postgres("cursor")),
        ("cdc", "mode = \"cdc\"\n", postgres("cdc")),
        ("lake", cursor, lake),
    ] {
        if !wanted.split(',').any(|w| w.trim() == name) {
            continue;
        }
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[pipeline]\nname = \"bench_{name}\"\nbatch_rows = 10000\n[staging]\nurl = \"file://{}/stage\"\n\
                 {destination}\
                 [source]\ntype = \"postgres\"\nurl = \"{source_url}\"\nstreams = [\"contacts\"]\n{source_extra}",
                dir.path().display(),
            ),
        )
        .expect("write config");
        let report = dir.path().join(format!("{name}.json"));
        let run = measure_run(name, &config, &report);
        let elapsed = run.elapsed;
        let inserted = run.stream["rows_inserted"].as_u64().unwrap_or(0);
        assert_eq!(inserted as usize, rows, "every row arrived ({name})");
        println!(
            "postgres_to_postgres: syncline {name:<6} {:.2} s = {:.2}x the limit, {:.0} rows/s, peak RSS {:.1} MiB",
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() / limit.as_secs_f64(),
            rows as f64 / elapsed.as_secs_f64(),
            run.peak_rss_mib
        );
    }
    if wanted.split(',').any(|w| w.trim() == "lake-refresh") {
        // The lake run's table, loaded again: every row judged, none changed.
        let config = dir.path().join("lake.toml");
        let report = dir.path().join("lake-refresh.json");
        let run = measure_run_with("lake-refresh", &config, &report, &["--full-refresh"]);
        let changed = ["rows_inserted", "rows_updated", "rows_deleted"]
            .map(|count| run.stream[count].as_u64().unwrap_or(u64::MAX));
        assert_eq!(
            changed,
            [0, 0, 0],
            "a refresh of unchanged rows changes nothing"
        );
        println!(
            "postgres_to_postgres: syncline lake --full-refresh of {rows} unchanged rows {:.2} s, peak RSS {:.1} MiB",
            run.elapsed.as_secs_f64(),
            run.peak_rss_mib
        );
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Pipes the source table's binary COPY into the destination's, as fast as the server goes.
/// `psql -c "COPY ... TO STDOUT (FORMAT binary)" | psql -c "COPY ... FROM STDIN (FORMAT binary)"`.
fn psql_limit(pg: &pg::TestPostgres, source_url: &str, dest_url: &str) -> Duration {
    use std::process::{Command, Stdio};
    let psql = pg.bin_dir().join("psql");
    let started = Instant::now();
    let mut out = Command::new(&psql)
        .arg(source_url)
        .args(["-c", "COPY contacts TO STDOUT (FORMAT binary)"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run psql (COPY out)");
    let copied_in = Command::new(&psql)
        .arg(dest_url)
        .args(["-c", "COPY contacts FROM STDIN (FORMAT binary)"])
        .stdin(out.stdout.take().expect("psql stdout"))
        .stdout(Stdio::null())
        .status()
        .expect("run psql (COPY in)");
    let copied_out = out.wait().expect("wait for psql (COPY out)");
    assert!(
        copied_in.success() && copied_out.success(),
        "psql COPY pipe failed"
    );
    started.elapsed()
}

async fn copy_limit(source_url: &str, dest_url: &str) -> Duration {
    let source = connect(source_url).await;
    let mut dest = connect(dest_url).await;
    let started = Instant::now();
    let tx = dest.transaction().await.expect("begin");
    let out = source
        .copy_out("COPY (SELECT * FROM contacts) TO STDOUT (FORMAT binary)")
        .await
        .expect("COPY out");
    let sink = tx
        .copy_in::<_, bytes::Bytes>("COPY contacts FROM STDIN (FORMAT binary)")
        .await
        .expect("COPY in");
    let mut sink = pin!(sink);
    let mut out = pin!(out);
    while let Some(chunk) = out.try_next().await.expect("read COPY data") {
        // `feed`, not `send`: `send` flushes after every row, a round trip through the
        // connection's task per row (14.6 s for a million rows where the psql pipe took 2.4 s).
        sink.feed(chunk).await.expect("write COPY data");
    }
    sink.as_mut().finish().await.expect("finish COPY in");
    tx.commit().await.expect("commit");
    started.elapsed()
}
