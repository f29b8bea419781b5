//! A model's memory is bounded by batches, not by its result: `syncline models run` (a table
//! model replacing its lake table) and `syncline models test` (the model evaluated, tested and
//! read by a singular test that fails on half its rows) over a model of 1,000,000 wide rows,
//! each run by the binary, whose peak resident memory the test measures itself (the kernel's
//! `ru_maxrss` of the reaped child, as in `lake_memory`).
//!
//! The rows come from a cross join of a 1,000-row view with itself, so no sync has to load them
//! first: what is measured is what the models code does with a result, not the stream's load.
//!
//! Before models streamed, `models run` read the whole staged result back into memory for the
//! lake's overwrite, and `models test` held the result in a `MemTable` and the singular test's
//! failing rows in a `Vec`: they peaked at 526 and 484 MiB (debug build). Streamed: 221 and
//! 155 MiB. The test takes about 60 s in a debug build on the shared 2-core machine.

use std::process::Stdio;

use crate::support::{lake_events_config, syncline_peak_rss};

/// Peak RSS allowed for each command, in MiB (debug build; about 110 MiB of it is the debug
/// binary's own pages): above what streaming takes (221 MiB for `models run`, whose lake
/// overwrite holds a row group of the spool and one of the Delta file), far below holding the
/// result (484–526 MiB).
const PEAK_RSS_BOUND_MIB: i64 = 300;

const ROWS: u64 = 1_000_000;

#[test]
fn a_million_row_model_runs_and_tests_under_a_memory_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let models = dir.path().join("models");
    let tests = dir.path().join("tests");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::write(
        models.join("ids.sql"),
        "-- materialized: view\nSELECT unnest(range(0, 1000)) AS n",
    )
    .unwrap();
    // Three text columns of about 110 bytes: some 350 MB of rows in Arrow.
    std::fs::write(
        models.join("wide.sql"),
        "SELECT a.n * 1000 + b.n AS id, \
         concat(repeat('a', 100), CAST(a.n AS VARCHAR), '-', CAST(b.n AS VARCHAR)) AS note, \
         concat(repeat('b', 100), CAST(b.n AS VARCHAR), '-', CAST(a.n AS VARCHAR)) AS body, \
         concat(CAST(a.n * b.n AS VARCHAR), repeat('c', 100)) AS tail \
         FROM ids a CROSS JOIN ids b",
    )
    .unwrap();
    // Fails on every even id: 500,000 failing rows, of which the report shows a few.
    std::fs::write(
        tests.join("odd_ids_only.sql"),
        "SELECT id, note FROM wide WHERE id % 2 = 0",
    )
    .unwrap();

    let extra = format!(
        "[source.files.events]\nglob = \"events.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
         [source.files.events.schema]\nid = \"int64\"\n\
         [models]\ndir = \"{}\"\ntests = \"{}\"\n",
        models.display(),
        tests.display()
    );
    let config = lake_events_config(dir.path(), "memory", &extra);

    let run = |command: &str| {
        let out = dir.path().join(format!("{command}.log"));
        let (status, peak_mib) = syncline_peak_rss(
            [
                "models".as_ref(),
                command.as_ref(),
                "--config".as_ref(),
                config.as_os_str(),
            ],
            std::fs::File::create(&out).expect("log file").into(),
            Stdio::null(),
        );
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        (status, peak_mib, text)
    };

    let (status, run_mib, text) = run("run");
    eprintln!("peak RSS of `models run` over {ROWS} rows: {run_mib} MiB");
    assert_eq!(status, 0, "models run failed:\n{text}");
    assert!(
        text.contains(&format!("model wide (table): {ROWS} rows, ok")),
        "{text}"
    );

    let (status, test_mib, text) = run("test");
    eprintln!("peak RSS of `models test` over {ROWS} rows: {test_mib} MiB");
    assert_eq!(status, 3, "the singular test fails:\n{text}");
    assert!(
        text.contains(&format!("tests odd_ids_only: {} failing rows", ROWS / 2)),
        "{text}"
    );

    // The lake table holds every row.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let count = runtime.block_on(async {
        let cfg = crate::support::parse_config(&config, &[]);
        let syncline::config::DestinationConfig::Lake(lake) = &cfg.destination else {
            unreachable!("a lake pipeline")
        };
        let lake = syncline::destinations::lake::LakeDestination::from_config(&cfg, lake).unwrap();
        let table = lake
            .open_table("wide")
            .await
            .unwrap()
            .expect("the model's Delta table");
        let ctx = datafusion::prelude::SessionContext::new();
        table
            .update_datafusion_session(&ctx.state())
            .expect("register the store");
        ctx.register_table("wide", table.table_provider().await.unwrap())
            .unwrap();
        let batches = syncline::transform::query(&ctx, "SELECT count(*) FROM wide")
            .await
            .unwrap();
        arrow::util::display::array_value_to_string(batches[0].column(0), 0).unwrap()
    });
    assert_eq!(count, ROWS.to_string());

    assert!(
        run_mib < PEAK_RSS_BOUND_MIB && test_mib < PEAK_RSS_BOUND_MIB,
        "peak RSS: models run {run_mib} MiB, models test {test_mib} MiB; not both under {PEAK_RSS_BOUND_MIB} MiB"
    );
}
