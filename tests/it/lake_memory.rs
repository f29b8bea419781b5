//! The lake destination's memory is bounded by batches, not by the load: a full load of
//! 2,000,000 rows into a new Delta table, run by the `syncline` binary, whose peak resident
//! memory the test measures itself (the kernel's `ru_maxrss` of the reaped child).
//!
//! Before the lake merge streamed its load, the whole load sat in a DataFusion `MemTable` before
//! the MERGE: this test's run peaked at 445 MiB (debug build), and a large enough load (wide
//! rows) was killed by the OOM killer on every re-run. Streamed, it peaked at 239–249 MiB: the
//! Delta writer still held a whole million-row row group until it closed, and glibc kept freed
//! blocks resident in per-thread arenas. With bounded row groups and arenas: 210–220 MiB.
//!
//! About 110 MiB of any figure here is the debug binary's own pages (file-backed, counted in
//! `ru_maxrss`; a release binary is smaller). The test takes 55–120 s in a debug build on the
//! shared 2-core machine, over the 60 s aimed at: 2,000,000 rows are what the issue asks for,
//! and with fewer rows the whole load fits in one of the old million-row row groups, so the
//! bound would no longer tell the old writer from the new.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{config_toml, toml_list, wait_with_peak_rss};

const ROWS: usize = 2_000_000;

/// Peak RSS allowed for the whole run (extraction, staging and the lake merge), in MiB: above
/// what a run bounded by row groups and batches needs (210–220 MiB measured, debug build), below
/// what the million-row row groups and unbounded arenas took (239–249 MiB) and far below
/// holding the load in memory (445 MiB).
const PEAK_RSS_BOUND_MIB: i64 = 230;

#[test]
fn a_two_million_row_lake_full_load_stays_under_a_memory_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("exports folder");
    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(exports.join("events.csv")).expect("create export"),
    );
    writeln!(csv, "id,name,n").unwrap();
    for id in 0..ROWS {
        writeln!(csv, "{id},name-{id},{}", id * 7).unwrap();
    }
    csv.into_inner().expect("flush export").sync_all().unwrap();

    let source = format!(
        "[source]\ntype = \"files\"\nurl = \"file://{}\"\nstreams = {}",
        exports.display(),
        toml_list(&["events"]),
    );
    let tables = "[source.files.events]\nglob = \"events.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
                  [source.files.events.schema]\nid = \"int64\"\nname = \"utf8\"\nn = \"int64\"\n";
    let config = dir.path().join("lake.toml");
    std::fs::write(
        &config,
        config_toml(
            "name = \"memory\"",
            &dir.path().join("stage"),
            &source,
            "[destination]\ntype = \"lake\"",
            tables,
        ),
    )
    .expect("write config");

    let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
    let child = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn syncline");
    let (status, peak_kib) = wait_with_peak_rss(child.id());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert_eq!(status, 0, "syncline run failed:\n{log}");

    let peak_mib = peak_kib / 1024;
    eprintln!("peak RSS of `syncline run` loading {ROWS} rows into the lake: {peak_mib} MiB");
    assert!(
        peak_mib < PEAK_RSS_BOUND_MIB,
        "peak RSS {peak_mib} MiB is not under {PEAK_RSS_BOUND_MIB} MiB"
    );

    // Every row arrived: the run's own reconciliation checked count and checksum; the table's
    // row count is read back here too.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let count = runtime.block_on(async {
        let cfg = crate::support::parse_config(&config, &[]);
        let ctx = syncline::transform::lake_session(&cfg).await.unwrap();
        let batches = syncline::transform::query(&ctx, "SELECT count(*) FROM events")
            .await
            .unwrap();
        arrow::util::display::array_value_to_string(batches[0].column(0), 0).unwrap()
    });
    assert_eq!(count, ROWS.to_string());
}
