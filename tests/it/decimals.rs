//! Exact decimals end to end: a `cast = { col = "decimal(P,S)" }` stream transform stages
//! Decimal128(P,S) and loads PostgreSQL `numeric(P,S)`, Snowflake `NUMBER(P,S)` (the emulator)
//! and a Delta `decimal(P,S)` with every digit, reconciled at every hop; a change of precision
//! or scale widens or drifts like any other type change; a value the precision cannot hold
//! fails the load with nothing merged and nothing lost; SQL models keep their decimals.

use syncline::reconcile::report::{RunReport, Status, StreamReport};

use crate::support::files::FilesHarness;
use crate::support::{config_toml, parse_config, report_stream, run_pipeline, toml_list};

/// 2024-03-01T00:00:00Z.
const T0: i64 = 1_709_251_200_000;
const HOUR: i64 = 3_600_000;

const INVOICES: &str = r#"
[source.files.invoices]
glob = "invoices/*.jsonl"
format = "jsonl"
key = "id"
version_column = "updated_at"
[source.files.invoices.schema]
id = "int64"
amount = "utf8"
updated_at = "timestamp"
"#;

fn cast(to: &str) -> String {
    format!("{INVOICES}\n[streams.invoices]\ncast = {{ amount = \"{to}\" }}\n")
}

fn invoice(id: i64, amount: Option<&str>, minute: i64) -> String {
    let amount = amount.map_or("null".to_owned(), |a| format!("\"{a}\""));
    format!(r#"{{"id": {id}, "amount": {amount}, "updated_at": "2024-03-01T10:{minute:02}:00Z"}}"#)
        + "\n"
}

/// The source's amounts and what `decimal(18,2)` makes of them: a fourth fraction digit
/// rounds half away from zero, as PostgreSQL's own cast does.
const AMOUNTS: &[(i64, Option<&str>, Option<&str>)] = &[
    (1, Some("12345.67"), Some("12345.67")),
    (2, Some("-0.01"), Some("-0.01")),
    (3, Some("0"), Some("0.00")),
    (4, Some("2.345"), Some("2.35")),
    (5, Some("-2.345"), Some("-2.35")),
    (6, None, None),
    (7, Some("9999999999999999.99"), Some("9999999999999999.99")),
];

fn first_export(h: &FilesHarness) {
    let rows: String = AMOUNTS
        .iter()
        .map(|(id, amount, _)| invoice(*id, *amount, *id))
        .collect();
    h.write_file("invoices/part-1.jsonl", &rows, T0 + HOUR);
}

fn expected(scale_digits: usize) -> Vec<Vec<Option<String>>> {
    AMOUNTS
        .iter()
        .map(|(id, _, loaded)| {
            let loaded = loaded.map(|text| {
                let (_, fraction) = text.split_once('.').unwrap();
                format!("{text}{}", "0".repeat(scale_digits - fraction.len()))
            });
            vec![Some(id.to_string()), loaded]
        })
        .collect()
}

/// The stream's report, after checking it reconciled: source = stage, raw = transformed (no
/// filter), transformed = destination.
fn reconciled(report: &RunReport) -> &StreamReport {
    let invoices = report_stream(report, "invoices");
    assert_eq!(invoices.status, Status::Success, "{invoices:#?}");
    let r = &invoices.reconciliation;
    assert_eq!(r.source, r.stage, "{invoices:#?}");
    assert_eq!(r.transformed, Some(r.stage), "{invoices:#?}");
    assert_eq!(r.destination, r.transformed, "{invoices:#?}");
    assert!(r.matched, "{invoices:#?}");
    invoices
}

async fn pg_numeric_type(h: &FilesHarness, column: &str) -> (String, i32, i32) {
    let row = h
        .client()
        .await
        .query_one(
            "SELECT data_type::text, numeric_precision::int, numeric_scale::int \
             FROM information_schema.columns \
             WHERE table_schema = 'files' AND table_name = 'invoices' AND column_name = $1",
            &[&column],
        )
        .await
        .expect("the column exists");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decimal_cast_loads_exact_values_into_postgres_widens_and_drifts() {
    let h = FilesHarness::start().await;
    first_export(&h);
    h.write_config(&["invoices"], &cast("decimal(18,2)"));

    let report = h.run(false).await;
    let invoices = reconciled(&report);
    assert_eq!(
        invoices.rows_inserted,
        AMOUNTS.len() as u64,
        "{invoices:#?}"
    );
    assert_eq!(
        pg_numeric_type(&h, "amount").await,
        ("numeric".to_owned(), 18, 2)
    );
    assert_eq!(h.rows("invoices", &["id", "amount"]).await, expected(2));

    // The source now sends more digits on both sides of the point: the column widens in
    // place (every value it holds converts exactly) and keeps its values.
    h.write_config(&["invoices"], &cast("numeric(20,4)"));
    h.write_file(
        "invoices/part-2.jsonl",
        &invoice(8, Some("1.2345"), 30),
        T0 + 2 * HOUR,
    );
    let report = h.run(false).await;
    reconciled(&report);
    assert_eq!(
        pg_numeric_type(&h, "amount").await,
        ("numeric".to_owned(), 20, 4)
    );
    let mut wanted = expected(4);
    wanted.push(vec![Some("8".into()), Some("1.2345".into())]);
    assert_eq!(h.rows("invoices", &["id", "amount"]).await, wanted);

    // Fewer fraction digits and more integer digits than the column has: neither holds the
    // other, so someone decides. Schema drift naming both types; nothing was altered.
    h.write_config(&["invoices"], &cast("decimal(30,2)"));
    h.write_file(
        "invoices/part-3.jsonl",
        &invoice(9, Some("5"), 40),
        T0 + 3 * HOUR,
    );
    let report = h.run(false).await;
    let invoices = report_stream(&report, "invoices");
    assert_eq!(invoices.status, Status::Failed, "{invoices:#?}");
    let error = invoices.error.clone().unwrap_or_default();
    assert!(
        error.contains(
            "column `amount` is numeric(20,4) in the table but the source now sends numeric(30,2)"
        ),
        "{error}"
    );
    assert_eq!(
        pg_numeric_type(&h, "amount").await,
        ("numeric".to_owned(), 20, 4)
    );
}

/// A value the precision cannot hold fails the transform the way any failed cast does: the
/// run fails, nothing is merged, the raw load stays staged and no cursor moves, so the row is
/// loaded once the cast is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_large_for_the_precision_fails_the_load_and_loads_once_the_cast_is_fixed() {
    let h = FilesHarness::start().await;
    let rows = [
        invoice(1, Some("10.00"), 1),
        // 17 integer digits: decimal(18,2) holds 16.
        invoice(2, Some("12345678901234567.5"), 2),
    ]
    .concat();
    h.write_file("invoices/part-1.jsonl", &rows, T0 + HOUR);
    h.write_config(&["invoices"], &cast("decimal(18,2)"));

    let report = h.run(false).await;
    let invoices = report_stream(&report, "invoices");
    assert_eq!(invoices.status, Status::Failed, "{invoices:#?}");
    assert_eq!(invoices.rows_inserted, 0, "{invoices:#?}");
    let error = invoices.error.clone().unwrap_or_default();
    assert!(
        error.contains("a value a cast cannot convert") && !error.contains("12345678901234567"),
        "the error says what failed and never quotes the value: {error}"
    );
    // The table may exist (a full load into PostgreSQL is copied while it is staged, into a
    // table created first), but no row of the failed load is in it.
    let client = h.client().await;
    let exists: bool = client
        .query_one("SELECT to_regclass('files.invoices') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    if exists {
        let rows: i64 = client
            .query_one("SELECT count(*) FROM files.invoices", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "nothing was merged");
    }

    h.write_config(&["invoices"], &cast("decimal(20,2)"));
    let report = h.run(false).await;
    reconciled(&report);
    assert_eq!(
        h.rows("invoices", &["id", "amount"]).await,
        [("1", "10.00"), ("2", "12345678901234567.50")]
            .iter()
            .map(|(id, amount)| vec![Some(id.to_string()), Some(amount.to_string())])
            .collect::<Vec<_>>()
    );
}

/// `check` (and `run`, before anything is read) refuses a decimal no destination holds,
/// naming the stream, the column and what to write instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_decimal_without_digits_or_beyond_38_naming_what_to_write() {
    let h = FilesHarness::start().await;
    first_export(&h);
    for (to, says) in [
        ("decimal(40,2)", "1 to 38 digits"),
        ("decimal", "write decimal(P,S)"),
        ("numeric(4,6)", "more than the precision"),
    ] {
        h.write_config(&["invoices"], &cast(to));
        let config = h.config_path.display().to_string();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
            .args(["check", "--config", &config])
            .envs(h.env())
            .output()
            .expect("spawn syncline");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(2), "{to}: {out}");
        assert!(
            out.contains("streams.invoices.cast") && out.contains("amount") && out.contains(says),
            "{to}: {out}"
        );
        let (code, stderr) = h.run_binary(&[]);
        assert_eq!(code, 2, "{to}: {stderr}");
        assert!(stderr.contains(says), "{to}: {stderr}");
        assert!(
            !h.dir.path().join("stage/files/invoices/loads").exists(),
            "{to}: a load was staged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decimal_cast_loads_snowflake_number_with_every_digit() {
    use crate::support::snowflake::TestSnowflake;

    let h = FilesHarness::start().await;
    first_export(&h);
    let snowflake = TestSnowflake::start().await;
    let stage = h.dir.path().join("stage");
    let source = format!(
        "[source]\ntype = \"files\"\nurl = \"file://{}/exports\"\nstreams = {}",
        h.dir.path().display(),
        toml_list(&["invoices"]),
    );
    let destination = snowflake
        .destination_toml(&stage)
        .replace("${SNOWFLAKE_PASSWORD}", "fakesnow-accepts-any");
    let text = config_toml(
        "name = \"files\"\nbatch_rows = 1000",
        &stage,
        &source,
        &destination,
        &cast("decimal(18,2)"),
    );
    std::fs::write(&h.config_path, text).unwrap();
    let config = parse_config(&h.config_path, &[]);

    let report = run_pipeline(&config, false).await;
    reconciled(&report);
    let types = snowflake
        .rows(
            "SELECT \"DATA_TYPE\", \"NUMERIC_PRECISION\", \"NUMERIC_SCALE\" \
             FROM INFORMATION_SCHEMA.COLUMNS \
             WHERE \"TABLE_SCHEMA\" = 'crm' AND \"TABLE_NAME\" = 'invoices' AND \"COLUMN_NAME\" = 'amount'",
        )
        .await;
    assert_eq!(
        types,
        [[Some("NUMBER".into()), Some("18".into()), Some("2".into())]],
        "{types:?}"
    );
    let rows = snowflake
        .rows("SELECT \"id\", TO_VARCHAR(\"amount\") FROM \"crm\".\"invoices\" ORDER BY \"id\"")
        .await;
    assert_eq!(rows, expected(2));

    // Loading the same stream again with the same type takes the existing column as is.
    h.write_file(
        "invoices/part-2.jsonl",
        &invoice(8, Some("0.5"), 30),
        T0 + 2 * HOUR,
    );
    let report = run_pipeline(&config, false).await;
    reconciled(&report);
    assert_eq!(
        snowflake
            .rows("SELECT TO_VARCHAR(\"amount\") FROM \"crm\".\"invoices\" WHERE \"id\" = 8")
            .await,
        [[Some("0.50".into())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decimal_cast_loads_a_delta_decimal_in_the_lake() {
    let h = FilesHarness::start().await;
    first_export(&h);
    h.write_lake_config(&["invoices"], &cast("decimal(18,2)"));
    let report = h.run(false).await;
    reconciled(&report);

    let ctx = syncline::transform::lake_session(&h.config())
        .await
        .unwrap();
    let batches = syncline::transform::query(&ctx, "SELECT id, amount FROM invoices ORDER BY id")
        .await
        .unwrap();
    let amount = batches[0].schema().field(1).data_type().clone();
    assert_eq!(amount, arrow::datatypes::DataType::Decimal128(18, 2));
    let mut rows = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|column| {
                        column.is_valid(row).then(|| {
                            arrow::util::display::array_value_to_string(column, row).unwrap()
                        })
                    })
                    .collect::<Vec<_>>(),
            );
        }
    }
    assert_eq!(rows, expected(2));
}

/// An earlier version's load: `amount` staged as text (as PostgreSQL-source `numeric(p,s)`
/// columns were before decimals), holding the strings a `decimal(18,2)` prints.
const OLD_AMOUNTS: &[(i64, Option<&str>)] = &[
    (1, Some("12.50")),
    (2, Some("-0.01")),
    (3, Some("0.00")),
    (4, Some("9999999999999999.99")),
];

/// What the upgraded pipeline stages next: row 1 again, unchanged (same version, same value),
/// and two new rows, one without a scale's worth of digits and one NULL.
fn upgrade_export(h: &FilesHarness) {
    let rows = [
        invoice(1, Some("12.5"), 1),
        invoice(5, Some("7.1"), 5),
        invoice(6, None, 6),
    ]
    .concat();
    h.write_file("invoices/part-2.jsonl", &rows, T0 + 2 * HOUR);
}

/// The earlier version's run succeeded (no transform: nothing to reconcile beyond the stage).
fn old_run(report: &RunReport) {
    let invoices = report_stream(report, "invoices");
    assert_eq!(invoices.status, Status::Success, "{invoices:#?}");
    assert_eq!(invoices.rows_inserted, OLD_AMOUNTS.len() as u64);
}

fn old_export(h: &FilesHarness) {
    let rows: String = OLD_AMOUNTS
        .iter()
        .map(|(id, amount)| invoice(*id, *amount, *id))
        .collect();
    h.write_file("invoices/part-1.jsonl", &rows, T0 + HOUR);
}

/// Every invoice after the upgrade, `amount` as the text the column holds.
fn upgraded_rows() -> Vec<Vec<Option<String>>> {
    OLD_AMOUNTS
        .iter()
        .copied()
        .chain([(5, Some("7.10")), (6, None)])
        .map(|(id, amount)| vec![Some(id.to_string()), amount.map(str::to_owned)])
        .collect()
}

/// The upgraded load took the text column as it is: reconciled, the new rows inserted, the
/// row sent again unchanged compared equal (not rewritten).
fn upgraded(report: &RunReport) {
    let invoices = reconciled(report);
    assert_eq!(
        (invoices.rows_inserted, invoices.rows_updated),
        (2, 0),
        "{invoices:#?}"
    );
}

/// A re-run with nothing new changes nothing.
fn no_op(report: &RunReport) {
    let invoices = report_stream(report, "invoices");
    assert_eq!(invoices.status, Status::Success, "{invoices:#?}");
    assert_eq!(
        (
            invoices.rows_inserted,
            invoices.rows_updated,
            invoices.rows_deleted
        ),
        (0, 0, 0),
        "{invoices:#?}"
    );
}

/// An upgrade: a table an earlier version created with the column as text, holding its rows,
/// takes a load staging decimals as their exact text instead of stopping on drift; a float
/// column, which would round them, still drifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decimal_loads_as_its_text_into_a_postgres_text_column_an_earlier_version_made() {
    let h = FilesHarness::start().await;
    old_export(&h);
    h.write_config(&["invoices"], INVOICES);
    old_run(&h.run(false).await);
    assert_eq!(
        h.column_types("invoices").await,
        [
            ("id".to_owned(), "bigint".to_owned()),
            ("amount".to_owned(), "text".to_owned()),
            (
                "updated_at".to_owned(),
                "timestamp with time zone".to_owned()
            )
        ]
    );

    h.write_config(&["invoices"], &cast("decimal(18,2)"));
    upgrade_export(&h);
    upgraded(&h.run(false).await);
    assert_eq!(h.rows("invoices", &["id", "amount"]).await, upgraded_rows());
    assert_eq!(
        h.column_types("invoices").await[1],
        ("amount".to_owned(), "text".to_owned()),
        "the column is left as it was"
    );
    no_op(&h.run(false).await);
    assert_eq!(h.rows("invoices", &["id", "amount"]).await, upgraded_rows());

    // A float column would round a decimal: that stays drift, and nothing is altered.
    h.client()
        .await
        .batch_execute(
            "ALTER TABLE files.invoices ALTER COLUMN amount TYPE double precision \
             USING amount::double precision",
        )
        .await
        .unwrap();
    h.write_file(
        "invoices/part-3.jsonl",
        &invoice(7, Some("1.25"), 7),
        T0 + 3 * HOUR,
    );
    let report = h.run(false).await;
    let invoices = report_stream(&report, "invoices");
    assert_eq!(invoices.status, Status::Failed, "{invoices:#?}");
    let error = invoices.error.clone().unwrap_or_default();
    assert!(
        error.contains(
            "column `amount` is double precision in the table but the source now sends \
             numeric(18,2)"
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decimal_loads_as_its_text_into_a_snowflake_varchar_column_an_earlier_version_made() {
    use crate::support::snowflake::TestSnowflake;

    let h = FilesHarness::start().await;
    old_export(&h);
    let snowflake = TestSnowflake::start().await;
    let stage = h.dir.path().join("stage");
    let source = format!(
        "[source]\ntype = \"files\"\nurl = \"file://{}/exports\"\nstreams = {}",
        h.dir.path().display(),
        toml_list(&["invoices"]),
    );
    let destination = snowflake
        .destination_toml(&stage)
        .replace("${SNOWFLAKE_PASSWORD}", "fakesnow-accepts-any");
    let write = |streams: &str| {
        let text = config_toml(
            "name = \"files\"\nbatch_rows = 1000",
            &stage,
            &source,
            &destination,
            streams,
        );
        std::fs::write(&h.config_path, text).unwrap();
        parse_config(&h.config_path, &[])
    };
    let config = write(INVOICES);
    old_run(&run_pipeline(&config, false).await);
    let amount_type = "SELECT \"DATA_TYPE\" FROM INFORMATION_SCHEMA.COLUMNS \
         WHERE \"TABLE_SCHEMA\" = 'crm' AND \"TABLE_NAME\" = 'invoices' AND \"COLUMN_NAME\" = 'amount'";
    assert_eq!(snowflake.rows(amount_type).await, [[Some("TEXT".into())]]);

    let config = write(&cast("decimal(18,2)"));
    upgrade_export(&h);
    upgraded(&run_pipeline(&config, false).await);
    let rows = "SELECT \"id\", \"amount\" FROM \"crm\".\"invoices\" ORDER BY \"id\"";
    assert_eq!(snowflake.rows(rows).await, upgraded_rows());
    assert_eq!(snowflake.rows(amount_type).await, [[Some("TEXT".into())]]);
    no_op(&run_pipeline(&config, false).await);
    assert_eq!(snowflake.rows(rows).await, upgraded_rows());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decimal_loads_as_its_text_into_a_lake_string_column_an_earlier_version_made() {
    let h = FilesHarness::start().await;
    old_export(&h);
    h.write_lake_config(&["invoices"], INVOICES);
    old_run(&h.run(false).await);

    h.write_lake_config(&["invoices"], &cast("decimal(18,2)"));
    upgrade_export(&h);
    upgraded(&h.run(false).await);
    let lake_rows = || async {
        let ctx = syncline::transform::lake_session(&h.config())
            .await
            .unwrap();
        let batches =
            syncline::transform::query(&ctx, "SELECT id, amount FROM invoices ORDER BY id")
                .await
                .unwrap();
        use arrow::datatypes::DataType;
        assert!(
            matches!(
                batches[0].schema().field(1).data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            ),
            "the column is left a string: {:?}",
            batches[0].schema()
        );
        let mut rows = Vec::new();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|column| {
                            column.is_valid(row).then(|| {
                                arrow::util::display::array_value_to_string(column, row).unwrap()
                            })
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
        rows
    };
    assert_eq!(lake_rows().await, upgraded_rows());
    no_op(&h.run(false).await);
    assert_eq!(lake_rows().await, upgraded_rows());
    // A full refresh is taken while it is staged (spooled into the table with rows): the same
    // rule applies there.
    let refreshed = h.run(true).await;
    assert!(
        refreshed.streams[0].reconciliation.matched,
        "{refreshed:#?}"
    );
    assert_eq!(lake_rows().await, upgraded_rows());
}
