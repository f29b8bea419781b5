//! `syncline query` prints its result as it comes: a query of 500,000 wide rows (generated
//! by SQL, so no load has to stage them first) prints every row, in tables of 1,000 rows, and
//! the binary's peak resident memory (the kernel's `ru_maxrss` of the reaped child, as in
//! `lake_memory`) stays bounded by batches, not by the result.
//!
//! Before, `query` collected the whole result and formatted it as one table: over these rows
//! it peaked at 746 MiB (debug build). Printed as it comes: 135 MiB.

use std::process::{Command, Stdio};

use crate::support::{lake_events_config, syncline_peak_rss};

/// Peak RSS allowed, in MiB (debug build; about 110 MiB of it is the debug binary's own pages):
/// above what printing as it comes takes (135 MiB), far below collecting (746 MiB).
const PEAK_RSS_BOUND_MIB: i64 = 250;

const ROWS: usize = 500_000;

#[test]
fn a_large_query_prints_every_row_in_tables_under_a_memory_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = "[source.files.events]\nglob = \"events.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
                 [source.files.events.schema]\nid = \"int64\"\n";
    let config = lake_events_config(dir.path(), "query", extra);

    // About 110 bytes a row: some 60 MB of Arrow, several times that as one formatted table.
    let sql = "WITH a AS (SELECT unnest(range(0, 500)) AS n), \
               b AS (SELECT unnest(range(0, 1000)) AS n) \
               SELECT a.n * 1000 + b.n AS id, \
               concat(repeat('a', 100), CAST(a.n AS VARCHAR), '-', CAST(b.n AS VARCHAR)) AS note \
               FROM a CROSS JOIN b";
    let out = dir.path().join("query.out");
    let (status, peak_mib) = syncline_peak_rss(
        [
            "query".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            sql.as_ref(),
        ],
        std::fs::File::create(&out).expect("output file").into(),
        Stdio::null(),
    );
    eprintln!("peak RSS of `query` over {ROWS} rows: {peak_mib} MiB");
    assert_eq!(status, 0, "query failed");

    // Every id once, each row whole; a header per table of 1,000 rows.
    let text = std::fs::read_to_string(&out).expect("read output");
    let mut seen = vec![false; ROWS];
    let mut headers = 0;
    for line in text.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells[1..3] == ["id", "note"] {
            headers += 1;
            continue;
        }
        let id: usize = cells[1].parse().unwrap_or_else(|_| panic!("a row: {line}"));
        let (a, b) = (id / 1000, id % 1000);
        assert_eq!(cells[2], format!("{}{a}-{b}", "a".repeat(100)), "{line}");
        assert!(
            !std::mem::replace(&mut seen[id], true),
            "id {id} printed twice"
        );
    }
    let missing = seen.iter().filter(|s| !**s).count();
    assert_eq!(missing, 0, "{missing} ids were not printed");
    assert_eq!(headers, ROWS / 1000, "one table per 1,000 rows");

    assert!(
        peak_mib < PEAK_RSS_BOUND_MIB,
        "peak RSS of `query`: {peak_mib} MiB, not under {PEAK_RSS_BOUND_MIB} MiB"
    );
}

/// A result smaller than a table is one table, as before; one without rows is its header.
#[test]
fn a_small_query_prints_one_table_and_an_empty_one_its_header() {
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = "[source.files.events]\nglob = \"events.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
                 [source.files.events.schema]\nid = \"int64\"\n";
    let config = lake_events_config(dir.path(), "query", extra);
    let query = |sql: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_syncline"))
            .args(["query", "--config"])
            .arg(&config)
            .arg(sql)
            .output()
            .expect("spawn syncline");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(
        query("SELECT unnest(range(1, 4)) AS n, 'x' AS s"),
        "+---+---+\n| n | s |\n+---+---+\n| 1 | x |\n| 2 | x |\n| 3 | x |\n+---+---+\n"
    );
    assert_eq!(
        query("SELECT 1 AS n WHERE false"),
        "+---+\n| n |\n+---+\n+---+\n"
    );
}
