//! Values a destination cannot store (issue 18, class 2): timestamps and dates outside the
//! years 0001–9999, integers that do not fit int64, text that is not UTF-8. Each record holding
//! one goes to the dead letters with a reason that names the column and the problem (never the
//! value); every other record arrives exactly, nothing becomes NULL, the run succeeds and
//! reconciles, in PostgreSQL and in the lake alike. A JSON or CSV integer too big for int64 in a
//! text column (declared or inferred) is kept exact.

use std::collections::BTreeSet;

use syncline::reconcile::report::{RunReport, Status};

use crate::support::files::FilesHarness;
use crate::support::snowflake::TestSnowflake;
use crate::support::{Harness, TestPostgres, report_stream, settle};

/// 2024-03-01T00:00:00Z.
const T0: i64 = 1_709_251_200_000;

const STREAMS: &[&str] = &["people", "accounts", "orders"];

const TABLES: &str = "\
[source.files.people]
glob = \"people*.jsonl\"
format = \"jsonl\"
key = \"id\"
cursor_column = \"updated_at\"
[source.files.people.schema]
id = \"int64\"
name = \"utf8\"
n = \"int64\"
code = \"utf8\"
born = \"date32\"
seen = \"timestamp\"
updated_at = \"timestamp\"
[source.files.accounts]
glob = \"accounts*.csv\"
format = \"csv\"
key = \"id\"
[source.files.accounts.schema]
id = \"int64\"
name = \"utf8\"
n = \"int64\"
seen = \"timestamp\"
[source.files.orders]
glob = \"orders*.csv\"
format = \"csv\"
key = \"id\"
";

/// One good row per edge (the first and last instant and day of the range, int64's extremes,
/// integers past int64 in a text column) and one bad row per kind.
fn people() -> Vec<u8> {
    let good =
        |id: i64, rest: &str, at: i64| format!("{{\"id\": {id}, {rest}, \"updated_at\": {at}}}\n");
    let mut file = String::new();
    file += &good(
        1,
        r#""name": "ana", "n": 5, "code": "a1", "born": "1990-05-01", "seen": "2024-01-02T03:04:05.006Z""#,
        T0,
    );
    file += &good(
        2,
        r#""name": "bo", "n": -9223372036854775808, "code": 99999999999999999999, "born": "0001-01-01", "seen": "0001-01-01T00:00:00Z""#,
        T0 + 1,
    );
    file += &good(
        3,
        r#""name": "cy", "n": 9223372036854775807, "code": 18446744073709551615, "born": "9999-12-31", "seen": "9999-12-31T23:59:59.999Z""#,
        T0 + 2,
    );
    // Year 0.
    file += &good(
        4,
        r#""name": "d", "seen": "0000-12-31T23:59:59.999Z""#,
        T0 + 3,
    );
    // Past what a µs timestamp holds: the lake's ms → µs cast overflowed to NULL.
    file += &good(5, r#""name": "e", "seen": 9300000000000000"#, T0 + 4);
    file += &good(6, r#""name": "f", "n": 9223372036854775808"#, T0 + 5);
    file += &good(7, r#""name": "g", "n": 99999999999999999999"#, T0 + 6);
    let mut bytes = file.into_bytes();
    bytes.extend_from_slice(
        b"{\"id\": 8, \"name\": \"h\xff\xfei\", \"updated_at\": 1709251200007}\n",
    );
    let mut rest = String::new();
    rest += &good(9, r#""name": "i", "born": "0000-01-01""#, T0 + 8);
    // +275760-09-13, JavaScript's largest date: as the cursor it would have moved the stream
    // past every later row.
    rest += "{\"id\": 10, \"name\": \"j\", \"updated_at\": 8640000000000000}\n";
    // 10000-01-01T00:00:00Z.
    rest += &good(11, r#""name": "k", "seen": 253402300800000"#, T0 + 10);
    bytes.extend_from_slice(rest.as_bytes());
    bytes
}

fn accounts() -> Vec<u8> {
    let mut file =
        b"id,name,n,seen\n1,ok,5,2024-01-01T00:00:00Z\n2,b\xffd,6,2024-01-01T00:00:00Z\n".to_vec();
    file.extend_from_slice(
        b"3,ok,99999999999999999999,2024-01-01T00:00:00Z\n4,ok,7,9300000000000000\n\
          5,ok,8,0000-06-01 00:00:00\n6,edge,-9223372036854775808,9999-12-31 23:59:59.999\n",
    );
    file
}

const ORDERS: &str = "id,total\n1,10\n2,99999999999999999999\n3,-99999999999999999999\n";

/// The values of the bad rows, none of which may appear in a reason.
const BAD_VALUES: &[&str] = &[
    "0000-",
    "9300000000000000",
    "9223372036854775808",
    "99999999999999999999",
    "8640000000000000",
    "253402300800000",
];

fn expected_rows() -> [(&'static str, Vec<Vec<Option<String>>>); 3] {
    let row = |values: &[&str]| values.iter().map(|v| Some(v.to_string())).collect();
    [
        (
            "people",
            vec![
                row(&["1", "ana", "5", "a1", "1990-05-01", "1704164645006"]),
                row(&[
                    "2",
                    "bo",
                    "-9223372036854775808",
                    "99999999999999999999",
                    "0001-01-01",
                    "-62135596800000",
                ]),
                row(&[
                    "3",
                    "cy",
                    "9223372036854775807",
                    "18446744073709551615",
                    "9999-12-31",
                    "253402300799999",
                ]),
            ],
        ),
        (
            "accounts",
            vec![
                row(&["1", "ok", "5", "1704067200000"]),
                row(&["6", "edge", "-9223372036854775808", "253402300799999"]),
            ],
        ),
        (
            "orders",
            vec![
                row(&["1", "10"]),
                row(&["2", "99999999999999999999"]),
                row(&["3", "-99999999999999999999"]),
            ],
        ),
    ]
}

/// (stream, key, field) of every dead letter expected, with a word its reason must hold.
const EXPECTED_DEAD: &[(&str, &str, &str, &str)] = &[
    ("people", "4", "seen", "0001-01-01"),
    ("people", "5", "seen", "0001-01-01"),
    ("people", "6", "n", "int64"),
    ("people", "7", "n", "int64"),
    ("people", "8", "name", "UTF-8"),
    ("people", "9", "born", "0001-01-01"),
    ("people", "10", "updated_at", "0001-01-01"),
    ("people", "11", "seen", "0001-01-01"),
    ("accounts", "2", "name", "UTF-8"),
    ("accounts", "3", "n", "int64"),
    ("accounts", "4", "seen", "0001-01-01"),
    ("accounts", "5", "seen", "0001-01-01"),
];

/// Writes the export files, runs once and checks the report and the dead letters.
async fn first_run(h: &FilesHarness) -> RunReport {
    h.write_bytes("people1.jsonl", &people(), T0);
    h.write_bytes("accounts1.csv", &accounts(), T0);
    h.write_file("orders1.csv", ORDERS, T0);
    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    assert_eq!(report.exit_code, 0);
    let mut dead = BTreeSet::new();
    for stream in STREAMS {
        let stream = report_stream(&report, stream);
        assert!(stream.reconciliation.matched, "{stream:#?}");
        for letter in h.dead_letters(stream).await {
            let field = letter.field.clone().unwrap_or_default();
            let (_, _, _, word) = EXPECTED_DEAD
                .iter()
                .find(|(s, k, f, _)| *s == stream.stream && *k == letter.key && *f == field)
                .unwrap_or_else(|| {
                    panic!("unexpected dead letter in {}: {letter:?}", stream.stream)
                });
            assert!(letter.reason.contains(word), "{letter:?}");
            for value in BAD_VALUES {
                assert!(
                    !letter.reason.contains(value),
                    "the reason shows the value: {letter:?}"
                );
            }
            assert!(!letter.raw.is_empty(), "{letter:?}");
            dead.insert((stream.stream.clone(), letter.key.clone(), field));
        }
    }
    let expected: BTreeSet<_> = EXPECTED_DEAD
        .iter()
        .map(|(s, k, f, _)| (s.to_string(), k.to_string(), f.to_string()))
        .collect();
    assert_eq!(dead, expected);
    report
}

/// A later export: the stream's cursor was not moved by the dead-lettered far-future row.
fn second_export(h: &FilesHarness) {
    h.write_file(
        "people2.jsonl",
        &format!(
            "{{\"id\": 12, \"name\": \"late\", \"n\": 1, \"code\": \"z\", \"born\": \"2000-01-01\", \"seen\": 0, \"updated_at\": {}}}\n",
            T0 + 20
        ),
        T0 + 60_000,
    );
}

fn late_row() -> Vec<Option<String>> {
    ["12", "late", "1", "z", "2000-01-01", "0"]
        .iter()
        .map(|v| Some(v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_from_files_are_dead_letters_and_the_rest_arrives_in_postgres() {
    let h = FilesHarness::start().await;
    h.write_config(STREAMS, TABLES);
    first_run(&h).await;
    let columns = |stream: &str| -> Vec<&'static str> {
        match stream {
            "people" => vec![
                "id",
                "name",
                "n",
                "code",
                "born",
                "(extract(epoch FROM seen) * 1000)::bigint",
            ],
            "accounts" => vec![
                "id",
                "name",
                "n",
                "(extract(epoch FROM seen) * 1000)::bigint",
            ],
            _ => vec!["id", "total"],
        }
    };
    for (stream, rows) in expected_rows() {
        assert_eq!(h.rows(stream, &columns(stream)).await, rows, "{stream}");
    }

    second_export(&h);
    let second = h.run(false).await;
    assert_eq!(second.status, Status::Success, "{second:#?}");
    let people = h.rows("people", &columns("people")).await;
    assert_eq!(people.last(), Some(&late_row()), "{people:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_from_files_are_dead_letters_and_the_rest_arrives_in_the_lake() {
    let h = FilesHarness::start().await;
    h.write_lake_config(STREAMS, TABLES);
    first_run(&h).await;
    let sql = |stream: &str| match stream {
        "people" => {
            "SELECT id, name, n, code, born, CAST(seen AS BIGINT) / 1000 FROM people ORDER BY id"
        }
        "accounts" => "SELECT id, name, n, CAST(seen AS BIGINT) / 1000 FROM accounts ORDER BY id",
        _ => "SELECT id, total FROM orders ORDER BY id",
    };
    for (stream, rows) in expected_rows() {
        assert_eq!(h.lake_rows(sql(stream)).await, rows, "{stream}");
    }

    second_export(&h);
    let second = h.run(false).await;
    assert_eq!(second.status, Status::Success, "{second:#?}");
    let people = h.lake_rows(sql("people")).await;
    assert_eq!(people.last(), Some(&late_row()), "{people:?}");
}

fn hubspot_sim() -> syncline::sim::SimConfig {
    syncline::sim::SimConfig {
        contacts: 300,
        companies: 10,
        deals: 10,
        ..Default::default()
    }
}

/// Gives two contacts a `createdate` no destination can store, changes a few more, runs, and
/// checks that the run succeeded with exactly those two records as dead letters.
async fn run_with_hubspot_dates_out_of_range(h: &Harness) {
    assert_eq!(h.run(false).await.status, Status::Success);
    // +275760-09-13 as epoch milliseconds, and year 0.
    h.sim
        .hubspot
        .set_raw_property("contacts", 17, "createdate", Some("8640000000000000"));
    h.sim
        .hubspot
        .set_raw_property("contacts", 18, "createdate", Some("0000-06-01T00:00:00Z"));
    h.sim.hubspot.update("contacts", 20);
    settle(h).await;
    let report = h.run(false).await;
    let contacts = report_stream(&report, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert_eq!(report.exit_code, 0);
    assert!(contacts.reconciliation.matched, "{contacts:#?}");
    assert_eq!(contacts.rows_dead_lettered, 2, "{contacts:#?}");
    let stage = syncline::stage::Stage::open(&h.config().staging).unwrap();
    let letters = syncline::stage::read_dead_letters(
        &stage,
        &syncline::stage::DeadLetterFile {
            path: contacts.dead_letter_file.clone().unwrap(),
            rows: 2,
        },
    )
    .await
    .unwrap();
    let mut keys: Vec<_> = letters
        .iter()
        .map(|l| (l.key.clone(), l.field.clone()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("17".to_string(), Some("createdate".to_string())),
            ("18".to_string(), Some("createdate".to_string()))
        ]
    );
    for letter in &letters {
        assert!(letter.reason.contains("0001-01-01"), "{letter:?}");
        assert!(!letter.reason.contains("8640000000000000"), "{letter:?}");
        assert!(letter.raw.contains("createdate"), "{letter:?}");
    }
}

/// The same rule for an API source: a HubSpot datetime the destination cannot store is a dead
/// letter, the record keeps its earlier version, and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_datetime_out_of_range_is_a_dead_letter_and_the_run_succeeds() {
    let h = Harness::start(hubspot_sim(), &["contacts"], "").await;
    run_with_hubspot_dates_out_of_range(&h).await;
    // The two records keep the version loaded before, never a NULL.
    let nulls: i64 = h
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM crm.contacts WHERE createdate IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nulls, 0);
}

/// And into Snowflake (the fakesnow emulator): the rule runs before staging, so Snowflake's
/// `COPY INTO` never sees the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_datetime_out_of_range_is_a_dead_letter_in_snowflake_too() {
    let h = Harness::start(hubspot_sim(), &["contacts"], "").await;
    let snowflake = TestSnowflake::start().await;
    let destination = snowflake
        .destination_toml(&h.stage_dir())
        .replace("${SNOWFLAKE_PASSWORD}", "fakesnow-accepts-any");
    h.write_hubspot_config(&["contacts"], "file_rows = 1000", &destination, "");
    run_with_hubspot_dates_out_of_range(&h).await;
    let nulls = snowflake
        .count("SELECT COUNT(*) FROM \"crm\".\"contacts\" WHERE \"createdate\" IS NULL")
        .await;
    assert_eq!(nulls, 0);
}

/// The same rule for the PostgreSQL source, whose dates and timestamps reach years PostgreSQL
/// stores but other destinations do not (BC, past 9999): such a record is a dead letter in
/// every destination alike, and the rest arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_source_dates_outside_years_1_to_9999_are_dead_letters() {
    let pg = tokio::task::spawn_blocking(TestPostgres::start)
        .await
        .unwrap();
    let source_url = pg.create_database("source");
    let dest_url = pg.create_database("dest");
    crate::support::connect(&source_url)
        .await
        .batch_execute(
            "CREATE TABLE people (id bigint PRIMARY KEY, born date, seen timestamptz,
                                  updated_at timestamptz NOT NULL);
             INSERT INTO people VALUES
               (1, '0001-01-01', '0001-01-01 00:00:00+00', '2024-01-01 00:00:00+00'),
               (2, '0044-03-15 BC', '2024-01-01 00:00:00+00', '2024-01-01 00:00:01+00'),
               (3, '2024-01-01', '10000-01-01 00:00:00+00', '2024-01-01 00:00:02+00'),
               (4, '9999-12-31', '9999-12-31 23:59:59.999999+00', '2024-01-01 00:00:03+00');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pg.toml");
    std::fs::write(
        &config,
        crate::support::config_toml(
            "name = \"pgsync\"",
            &dir.path().join("stage"),
            "[source]\ntype = \"postgres\"\nurl = \"${SOURCE_URL}\"\nstreams = [\"people\"]\n\
             mode = \"cursor\"\n[source.tables.people]\ncursor_column = \"updated_at\"",
            "[destination]\ntype = \"postgres\"\nurl = \"${DEST_URL}\"\nschema = \"crm\"",
            "",
        ),
    )
    .unwrap();
    let env = [
        ("SOURCE_URL", source_url.clone()),
        ("DEST_URL", dest_url.clone()),
    ];
    let parsed = crate::support::parse_config(&config, &env);
    let report = crate::support::run_pipeline(&parsed, false).await;
    let people = report_stream(&report, "people");
    assert_eq!(people.status, Status::Success, "{people:#?}");
    assert_eq!(report.exit_code, 0);
    assert!(people.reconciliation.matched, "{people:#?}");
    assert_eq!(people.rows_dead_lettered, 2, "{people:#?}");
    let rows: Vec<(String, String, String)> = crate::support::connect(&dest_url)
        .await
        .query(
            "SELECT id::text, born::text, (extract(epoch FROM seen) * 1000000)::bigint::text \
             FROM crm.people ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "1".to_string(),
                "0001-01-01".to_string(),
                "-62135596800000000".to_string()
            ),
            (
                "4".to_string(),
                "9999-12-31".to_string(),
                "253402300799999999".to_string()
            ),
        ]
    );
}
