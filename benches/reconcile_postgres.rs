//! Benchmark: `syncline reconcile` of an N-row PostgreSQL table (cursor mode) against its
//! copy in another PostgreSQL database on the same throwaway server.
//!
//! Loads the table with `syncline run`, plants drift in the destination (0.1% of the rows
//! each deleted, set to an older version, and one extra row per 1,000), then measures, each
//! as its own process: the compare (`syncline reconcile`), the repair (`--repair`) and the
//! compare of the repaired table. Prints seconds, keys per second and the peak memory (max
//! RSS) of each.
//!
//! `cargo bench --bench reconcile_postgres` (release). `SYNCLINE_BENCH_ROWS` changes N
//! (default 1,000,000); a small N in a debug build (`cargo test --bench reconcile_postgres`)
//! proves it works, not how fast it is.

#[path = "../tests/support/pg.rs"]
mod pg;
#[allow(dead_code)]
mod support;

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
                "CREATE TABLE contacts (
                    id bigint PRIMARY KEY, email text, company text, score double precision,
                    updated_at timestamptz NOT NULL
                 );
                 INSERT INTO contacts
                 SELECT i, 'contact' || i || '@example.com', 'Company ' || (i % 20000),
                        (i % 1000) * 1.5, timestamptz '2024-01-01' + i * interval '1 second'
                 FROM generate_series(1, {rows}) AS i;"
            ))
            .await
            .expect("create the source table");
        source
            .batch_execute("VACUUM ANALYZE contacts")
            .await
            .expect("vacuum");
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("reconcile.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"bench_reconcile\"\nbatch_rows = 10000\n[staging]\nurl = \"file://{}/stage\"\n\
             [destination]\ntype = \"postgres\"\nurl = \"{dest_url}\"\nschema = \"crm\"\n\
             [source]\ntype = \"postgres\"\nurl = \"{source_url}\"\nstreams = [\"contacts\"]\n\
             mode = \"cursor\"\n[source.tables.contacts]\ncursor_column = \"updated_at\"\n",
            dir.path().display(),
        ),
    )
    .expect("write config");
    let load = support::measure_command(&config, &["run"], dir.path());
    assert_eq!(load.code, 0, "the initial load failed");
    println!(
        "reconcile_postgres: {rows} rows loaded in {:.2} s (peak RSS {:.1} MiB)",
        load.elapsed.as_secs_f64(),
        load.peak_rss_mib
    );

    let every = 1000;
    runtime.block_on(async {
        connect(&dest_url)
            .await
            .batch_execute(&format!(
                "DELETE FROM crm.contacts WHERE id % {every} = 1;
                 UPDATE crm.contacts SET _syncline_version = _syncline_version - interval '1 hour'
                  WHERE id % {every} = 2;
                 CREATE TEMP TABLE extra AS SELECT * FROM crm.contacts WHERE id % {every} = 3;
                 UPDATE extra SET id = id + {rows};
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
        let run = support::measure_command(&config, &args, dir.path());
        assert_eq!(run.code, code, "syncline {args:?}: {}", run.output);
        println!(
            "reconcile_postgres: {what:<21} {rows} keys in {:.2} s = {:.0} keys/s, peak RSS {:.1} MiB (drift planted: ~{planted} rows per class)",
            run.elapsed.as_secs_f64(),
            rows as f64 / run.elapsed.as_secs_f64(),
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
