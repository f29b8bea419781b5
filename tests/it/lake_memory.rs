//! The lake destination's memory is bounded by batches, not by the load: a full load of
//! 2,000,000 rows into a new Delta table, run by the `syncline` binary, whose peak resident
//! memory the test measures itself (the kernel's `ru_maxrss` of the reaped child).
//!
//! Before the lake merge streamed its load, the whole load sat in a DataFusion `MemTable` before
//! the MERGE: this test's run peaked at 445 MiB (debug build), and a large enough load (wide
//! rows) was killed by the OOM killer on every re-run. Streamed, it peaked at 239–249 MiB: the
//! Delta writer still held a whole million-row row group until it closed, and glibc kept freed
//! blocks resident in per-thread arenas. With bounded row groups and arenas: 210–220 MiB; with
//! the key check held to 32 MiB and the freed memory handed back before it: 198 MiB.
//!
//! About 110 MiB of any figure here is the debug binary's own pages (file-backed, counted in
//! `ru_maxrss`; a release binary is smaller). The test takes 55–120 s in a debug build on the
//! shared 2-core machine, over the 60 s aimed at: 2,000,000 rows are what the issue asks for,
//! and with fewer rows the whole load fits in one of the old million-row row groups, so the
//! bound would no longer tell the old writer from the new.

use std::io::Write;
use std::process::Stdio;

use crate::support::{add_lake_destination_key, lake_events_config, syncline_peak_rss};

const ROWS: usize = 2_000_000;

/// Peak RSS allowed for the whole run (extraction, staging and the lake merge), in MiB: above
/// what a run bounded by row groups and batches needs (210–220 MiB measured, debug build), below
/// what the million-row row groups and unbounded arenas took (239–249 MiB) and far below
/// holding the load in memory (445 MiB).
const PEAK_RSS_BOUND_MIB: i64 = 230;

#[test]
fn a_two_million_row_lake_full_load_stays_under_a_memory_bound() {
    let lake = Lake::new(
        "[source.files.events]\nglob = \"events.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
         [source.files.events.schema]\nid = \"int64\"\nname = \"utf8\"\nn = \"int64\"\n",
    );
    lake.export(
        "events.csv",
        "id,name,n",
        (0..ROWS).map(|id| format!("{id},name-{id},{}", id * 7)),
    );
    let peak_mib = lake.run("load.log");
    eprintln!("peak RSS of `syncline run` loading {ROWS} rows into the lake: {peak_mib} MiB");
    assert!(
        peak_mib < PEAK_RSS_BOUND_MIB,
        "peak RSS {peak_mib} MiB is not under {PEAK_RSS_BOUND_MIB} MiB"
    );

    // Every row arrived: the run's own reconciliation checked count and checksum; the table's
    // row count is read back here too.
    assert_eq!(
        lake.query("SELECT count(*) FROM events"),
        [ROWS.to_string()]
    );
}

/// Rows of the table the merge tests change: one or two data files.
const MERGE_TABLE_ROWS: usize = 1_000_000;
/// Rows the small merge changes, spread over the whole table (every data file is rewritten).
const MERGE_CHANGED_ROWS: usize = 10_000;
/// Peak RSS allowed for the run that merges the small change into the table, in MiB (debug
/// build): above what the merge needs reading the table a batch at a time (179 MiB measured with
/// the rows' 100-character note, 190–193 MiB since the rewritten files are encoded on a task of
/// their own), below what it took while DataFusion's repartition buffered the table, which grew
/// with the table (208–211 MiB for a million rows of three narrow columns, without the note;
/// 336 MiB for three million).
const MERGE_PEAK_RSS_BOUND_MIB: i64 = 210;

/// A small change merged into a large Delta table holds batches, not the table: the merge's
/// scan of the table used to race ahead of the writer rewriting it, and DataFusion's
/// repartition in front of delta-rs's merge barrier buffered every batch read (a table of one
/// data file sends every row to one partition), so the peak grew with the table. The test
/// takes 45 s in a debug build on the shared 2-core machine when it is not busy.
#[test]
fn a_small_merge_into_a_large_lake_table_stays_under_a_memory_bound() {
    let lake = LargeTable::loaded();
    let step = MERGE_TABLE_ROWS / MERGE_CHANGED_ROWS;
    let peak_mib = lake.merge((0..MERGE_CHANGED_ROWS).map(|k| k * step));
    eprintln!(
        "peak RSS of `syncline run` merging {MERGE_CHANGED_ROWS} changed rows into \
         {MERGE_TABLE_ROWS} rows: {peak_mib} MiB"
    );
    assert!(
        peak_mib < MERGE_PEAK_RSS_BOUND_MIB,
        "peak RSS {peak_mib} MiB is not under {MERGE_PEAK_RSS_BOUND_MIB} MiB"
    );
    // The merge changed exactly the changed rows and kept every other.
    assert_eq!(
        lake.counts(),
        [MERGE_TABLE_ROWS.to_string(), MERGE_CHANGED_ROWS.to_string()]
    );
}

/// Peak RSS allowed for the run that changes every row of the table, in MiB (debug build):
/// above what the merge needs with the load held as an index of its keys (233 MiB measured,
/// 252–263 MiB with the files encoded on a task of their own), below what delta-rs's MERGE took
/// holding the load's rows in its hash join (468 MiB here; a full refresh of W4's million
/// 22-column rows took 1.67 GB in a release build).
const REPLACE_PEAK_RSS_BOUND_MIB: i64 = 300;

/// A load that changes every row of a large table holds its keys, not its rows nor the
/// table's: delta-rs's MERGE hash-joins the load with the table and keeps the smaller side,
/// every column of it, in memory, so a full refresh of a large table was killed by the OOM
/// killer on every retry. The rows here carry a 100-character note, so holding them would
/// show.
#[test]
fn a_merge_that_changes_every_row_of_a_large_lake_table_stays_under_a_memory_bound() {
    let lake = LargeTable::loaded();
    let peak_mib = lake.merge(0..MERGE_TABLE_ROWS);
    eprintln!(
        "peak RSS of `syncline run` changing every one of {MERGE_TABLE_ROWS} rows: {peak_mib} MiB"
    );
    assert!(
        peak_mib < REPLACE_PEAK_RSS_BOUND_MIB,
        "peak RSS {peak_mib} MiB is not under {REPLACE_PEAK_RSS_BOUND_MIB} MiB"
    );
    assert_eq!(
        lake.counts(),
        [MERGE_TABLE_ROWS.to_string(), MERGE_TABLE_ROWS.to_string()]
    );
}

/// Rows of the table the passes test merges a large load into.
const PASSES_TABLE_ROWS: usize = 1_000;
/// Rows of that load: new keys, and the table's rows again, newer.
const PASSES_LOAD_ROWS: usize = 1_000_000;
/// Keys per pass (`destination.merge_keys_per_pass`): four passes over the load. Each pass
/// reads the whole load twice (6–7 s a pass in a debug build: eight passes took 70 s).
const PASS_KEYS: usize = 250_000;
/// Peak RSS allowed for the run that merges the load in passes, in MiB (debug build): above
/// what the merge needs holding a quarter of the load's keys (207 MiB measured; 193 MiB in
/// passes of 125,000 keys), below what one pass holding all of them took (269 MiB).
const PASSES_PEAK_RSS_BOUND_MIB: i64 = 235;

/// A load of more keys than a pass takes is merged in passes, and the merge's index holds one
/// pass's keys, not the load's: the keys here are 40 characters, so a million of them cost
/// about 100 MB in one index. The test takes 40–50 s in a debug build.
#[test]
fn a_large_merge_in_passes_holds_one_pass_of_keys() {
    let lake = Lake::new(
        "[source.files.events]\nglob = \"*.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
         version_column = \"v\"\n\
         [source.files.events.schema]\nid = \"utf8\"\nname = \"utf8\"\nv = \"int64\"\n",
    );
    let row = |id: usize, name: &str, version: i64| format!("{id:0>40},{name}-{id},{version}");
    lake.export(
        "a-table.csv",
        "id,name,v",
        (0..PASSES_TABLE_ROWS).map(|id| row(id, "table", 1_000)),
    );
    lake.run("load.log");
    lake.merge_in_passes_of(PASS_KEYS);
    lake.export(
        "b-load.csv",
        "id,name,v",
        (0..PASSES_LOAD_ROWS).map(|id| row(id, "load", 2_000)),
    );
    let peak_mib = lake.run("merge.log");
    eprintln!(
        "peak RSS of `syncline run` merging {PASSES_LOAD_ROWS} rows in passes of {PASS_KEYS} \
         keys: {peak_mib} MiB"
    );
    assert!(
        peak_mib < PASSES_PEAK_RSS_BOUND_MIB,
        "peak RSS {peak_mib} MiB is not under {PASSES_PEAK_RSS_BOUND_MIB} MiB"
    );
    assert_eq!(
        lake.query(
            "SELECT count(*), sum(CASE WHEN name LIKE 'load-%' THEN 1 ELSE 0 END) FROM events"
        ),
        [PASSES_LOAD_ROWS.to_string(), PASSES_LOAD_ROWS.to_string()]
    );
}

/// A pipeline from CSV exports (`{dir}/exports`, stream `events`) into the lake, run by the
/// `syncline` binary.
struct Lake {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Lake {
    /// The pipeline with `tables`, the `[source.files.events]` configuration.
    fn new(tables: &str) -> Lake {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("exports")).expect("exports folder");
        let config = lake_events_config(dir.path(), "memory", tables);
        Lake { dir, config }
    }

    /// Writes the export `name`: `header`, then `lines`.
    fn export(&self, name: &str, header: &str, lines: impl Iterator<Item = String>) {
        let path = self.dir.path().join("exports").join(name);
        let mut csv = std::io::BufWriter::new(std::fs::File::create(path).expect("export"));
        writeln!(csv, "{header}").unwrap();
        for line in lines {
            writeln!(csv, "{line}").unwrap();
        }
        csv.into_inner().expect("flush export").sync_all().unwrap();
    }

    /// Sets `destination.merge_keys_per_pass` to `keys` for the runs after this.
    fn merge_in_passes_of(&self, keys: usize) {
        add_lake_destination_key(&self.config, &format!("merge_keys_per_pass = {keys}"));
    }

    /// Runs `syncline run`, its stderr to `log`; its peak RSS in MiB.
    fn run(&self, log: &str) -> i64 {
        let log = self.dir.path().join(log);
        let stderr = std::fs::File::create(&log).expect("stderr file");
        let (status, peak_mib) = syncline_peak_rss(
            ["run".as_ref(), "--config".as_ref(), self.config.as_os_str()],
            Stdio::null(),
            stderr.into(),
        );
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert_eq!(status, 0, "syncline run failed:\n{log}");
        peak_mib
    }

    /// The first row of `sql` over the lake, as text.
    fn query(&self, sql: &str) -> Vec<String> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let cfg = crate::support::parse_config(&self.config, &[]);
            let ctx = syncline::transform::lake_session(&cfg).await.unwrap();
            let batches = syncline::transform::query(&ctx, sql).await.unwrap();
            batches[0]
                .columns()
                .iter()
                .map(|column| arrow::util::display::array_value_to_string(column, 0).unwrap())
                .collect()
        })
    }
}

/// A lake table of [`MERGE_TABLE_ROWS`] rows, each with a 100-character note, which later
/// exports change.
struct LargeTable(Lake);

impl LargeTable {
    fn loaded() -> LargeTable {
        let lake = Lake::new(
            "[source.files.events]\nglob = \"*.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
             version_column = \"v\"\n\
             [source.files.events.schema]\nid = \"int64\"\nname = \"utf8\"\n\
             note = \"utf8\"\nv = \"int64\"\n",
        );
        let table = LargeTable(lake);
        table.export(
            "a-table.csv",
            (0..MERGE_TABLE_ROWS).map(|id| (id, "name", 1_000)),
        );
        table.0.run("load.log");
        table
    }

    fn export(&self, name: &str, rows: impl Iterator<Item = (usize, &'static str, i64)>) {
        self.0.export(
            name,
            "id,name,note,v",
            rows.map(|(id, name, version)| format!("{id},{name}-{id},{id:0>100},{version}")),
        );
    }

    /// Exports a newer version of the rows `ids`, renamed `changed-{id}`, and merges it; the
    /// run's peak RSS in MiB.
    fn merge(&self, ids: impl Iterator<Item = usize>) -> i64 {
        self.export("b-change.csv", ids.map(|id| (id, "changed", 2_000)));
        self.0.run("merge.log")
    }

    /// The table's rows, and how many of them are changed.
    fn counts(&self) -> Vec<String> {
        self.0.query(
            "SELECT count(*), sum(CASE WHEN name LIKE 'changed-%' THEN 1 ELSE 0 END) FROM events",
        )
    }
}
