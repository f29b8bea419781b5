//! Benchmark: the cost of a stream transform. 1,000,000 JSONL contacts → the file source →
//! Parquet staging → a throwaway PostgreSQL, loaded twice into separate schemas: once as they
//! are, once with a five-column transform (drop `notes`, rename `lifecycle_stage`, hash
//! `email` and `phone`, cast `lead_score` to double) and a filter every row passes (so both
//! merge the same number of rows). Prints both runs' wall time and peak memory (max RSS of
//! the `syncline run` process) and the transform's overhead; generating the files is not timed.
//! The two loads alternate for `SYNCLINE_BENCH_ROUNDS` rounds (3 by default), each into a
//! schema dropped before it and after a `CHECKPOINT` (so no run pays for writing out an
//! earlier one's table), and the overhead is reported per round and as the median: one pair
//! of runs on this 2-core machine varies by several percent. `SYNCLINE_BENCH_BIN` runs an
//! earlier build instead, to compare two builds in one session.
//!
//! `cargo bench --bench transform_to_postgres` (release). `SYNCLINE_BENCH_ROWS` changes the
//! size.

#[path = "../tests/support/pg.rs"]
mod pg;
#[allow(dead_code)]
mod support;

use std::io::{BufWriter, Write};

use support::measure_run;

const FILES: usize = 4;
const STAGES: &[&str] = &["subscriber", "lead", "opportunity", "customer"];

fn write_contact(out: &mut impl Write, id: usize) -> std::io::Result<()> {
    // Deterministic values from the id: every run loads the same data.
    let mix = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    writeln!(
        out,
        r#"{{"id":{id},"email":"user.{id}@example.com","first_name":"First{f}","last_name":"Last{l}","phone":"+1-555-{p:07}","city":"City {c}","lifecycle_stage":"{stage}","lead_score":{score},"updated_at":"2024-03-01T10:00:00.{ms:03}Z","notes":"Met at conference {n}"}}"#,
        f = mix % 97,
        l = (mix >> 8) % 89,
        p = (mix >> 16) % 10_000_000,
        c = (mix >> 24) % 500,
        stage = STAGES[(mix >> 32) as usize % STAGES.len()],
        score = (mix >> 40) % 101,
        ms = id % 1000,
        n = (mix >> 48) % 50,
    )
}

const TRANSFORM: &str = r#"
[streams.contacts]
exclude = ["notes"]
rename = { lifecycle_stage = "stage" }
hash = ["email", "phone"]
cast = { lead_score = "double" }
filter = "lead_score >= 0"
"#;

fn main() {
    let rows = support::bench_rows(1_000_000);
    let pg = pg::TestPostgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("exports folder");
    for file in 0..FILES {
        let path = exports.join(format!("contacts-{file:02}.jsonl"));
        let mut out = BufWriter::new(std::fs::File::create(&path).expect("create export"));
        for id in (1..=rows).filter(|id| id % FILES == file) {
            write_contact(&mut out, id).expect("write export");
        }
        out.flush().expect("flush export");
    }

    let rounds = support::env_or("SYNCLINE_BENCH_ROUNDS", 3).max(1);
    let mut overheads = Vec::new();
    for round in 1..=rounds {
        let mut measured = Vec::new();
        for (load, streams) in [("plain", ""), ("transformed", TRANSFORM)] {
            // A pipeline of its own each round (a new load, not an incremental one), into a
            // schema that starts empty, on a server with nothing left to write out.
            let name = format!("{load}_{round}");
            fresh_schema(&pg.url, load);
            let run = load_once(&dir, &name, load, streams, &pg.url, rows);
            println!(
                "transform_to_postgres ({load}, round {round}): {rows} contacts in {:.2} s = {:.0} rows/s, peak RSS {:.1} MiB",
                run.elapsed.as_secs_f64(),
                rows as f64 / run.elapsed.as_secs_f64(),
                run.peak_rss_mib
            );
            measured.push(run);
        }
        let overhead = measured[1].elapsed.as_secs_f64() / measured[0].elapsed.as_secs_f64() - 1.0;
        println!(
            "transform_to_postgres (round {round}): the five-column transform costs {:+.1}% wall time ({:+.1} MiB peak RSS)",
            overhead * 100.0,
            measured[1].peak_rss_mib - measured[0].peak_rss_mib
        );
        overheads.push(overhead);
    }
    overheads.sort_by(f64::total_cmp);
    println!(
        "transform_to_postgres: the five-column transform costs {:+.1}% wall time (median of {rounds} rounds; {})",
        overheads[overheads.len() / 2] * 100.0,
        overheads
            .iter()
            .map(|o| format!("{:+.1}%", o * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Drops `schema` and checkpoints the server.
fn fresh_schema(url: &str, schema: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        for statement in [
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            "CHECKPOINT",
        ] {
            client.batch_execute(statement).await.expect(statement);
        }
    });
}

/// Loads the exports once as pipeline `name` into `schema`, with `streams` (the transform, or
/// nothing), and checks every record arrived.
fn load_once(
    dir: &tempfile::TempDir,
    name: &str,
    schema: &str,
    streams: &str,
    pg_url: &str,
    rows: usize,
) -> support::MeasuredRun {
    let config = dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"{name}\"\nbatch_rows = 10000\n[staging]\nurl = \"file://{dir}/stage\"\n\
             [source]\ntype = \"files\"\nurl = \"file://{dir}/exports\"\nstreams = [\"contacts\"]\n\
             [source.files.contacts]\nglob = \"contacts-*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
             [destination]\ntype = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n{streams}",
            dir = dir.path().display(),
            url = pg_url
        ),
    )
    .expect("write config");
    let report = dir.path().join(format!("{name}.json"));
    let run = measure_run(name, &config, &report);
    let inserted = run.stream["rows_inserted"].as_u64().unwrap_or(0);
    assert_eq!(
        inserted as usize, rows,
        "every record arrived: {}",
        run.stream
    );
    run
}
