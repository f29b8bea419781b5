//! The merge cases against the PostgreSQL destination on a throwaway cluster.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use syncline::destinations::Destination;
use syncline::destinations::postgres::PostgresDestination;

use super::DestinationUnderTest;
use crate::support::{DeleteMode, TestPostgres, batch_fingerprint, connect};
use syncline::schema::{deleted_field, version_field};

pub(super) struct Postgres {
    /// Kept until the test ends: dropping it stops the cluster.
    pg: TestPostgres,
    dest: PostgresDestination,
}

impl DestinationUnderTest for Postgres {
    const TYPE_NAMES: (&'static str, &'static str) = ("text", "bigint");
    const NEW_COLUMN: &'static str = "Lead Score";
    const COPIES_INTO_EMPTY: bool = true;

    async fn start(_stage: &Path) -> Postgres {
        let pg = tokio::task::spawn_blocking(TestPostgres::start)
            .await
            .expect("start postgres");
        let dest = PostgresDestination::connect(&pg.url, "t").await.unwrap();
        Postgres { pg, dest }
    }

    fn destination(&self) -> &dyn Destination {
        &self.dest
    }

    async fn rows(&self, table: &str, columns: &[&str], soft: bool) -> Vec<String> {
        let mut exprs: Vec<String> = columns
            .iter()
            .map(|c| format!("coalesce(\"{c}\"::text, 'null')"))
            .collect();
        exprs.push("(extract(epoch from _syncline_version) * 1000)::bigint::text".into());
        if soft {
            exprs.push("CASE WHEN _syncline_deleted_at IS NULL THEN 'f' ELSE 't' END".into());
        }
        let sql = format!(
            "SELECT concat_ws('|', {}) FROM t.\"{table}\"",
            exprs.join(", ")
        );
        connect(&self.pg.url)
            .await
            .query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

super::every_case!(Postgres);

/// What the destination checks a load against is its own read-back of the rows it received
/// (`key::text`, version, deleted), fingerprinted in syncline: it must agree with the staged
/// batches' fingerprint for keys and versions whose text is easy to get wrong (a `|` or
/// non-ASCII in a key, an empty key, versions before 1970 and far ahead), on the direct path
/// (a first load into an empty table) and the general one (a second load through the staging
/// table), and with the SQL fingerprint `syncline reconcile` computes over the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_received_rows_fingerprint_as_the_staged_batches_do() {
    let t = super::Target::<Postgres>::start().await;
    let keys = ["a|b", "", "ü-ß-漢字", "1|2|f", "plain"];
    let first = [
        -1_i64,
        -86_400_000_001,
        0,
        1_717_113_575_130,
        253_402_300_799_998,
    ];
    // Each newer than the first's, so the second load updates every row.
    let second = [5_i64, -1_500, 7, 1_717_113_575_131, 253_402_300_799_999];
    for (load_id, versions) in [("l1", first), ("l2", second)] {
        let batch = text_keyed(&keys, &versions);
        let outcome = t
            .merge(load_id, DeleteMode::Hard, batch.clone())
            .await
            .unwrap_or_else(|e| panic!("{load_id}: {e}"));
        let staged = batch_fingerprint(&batch, "id").unwrap();
        assert_eq!(
            outcome.received, staged,
            "{load_id}: what the destination received"
        );
        let table = t
            .dest()
            .table_fingerprint("people", "id", DeleteMode::Hard)
            .await
            .unwrap()
            .expect("the table exists");
        assert_eq!(table, staged, "{load_id}: the SQL fingerprint of the table");
    }
}

/// A destination that changes what it receives (here a trigger moving every version by a
/// millisecond) fails the load's check: exit 3, nothing committed, the table as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_changes_the_rows_it_receives_fails_the_load() {
    let t = super::Target::<Postgres>::start().await;
    let keys = ["a", "b"];
    t.merge("l1", DeleteMode::Hard, text_keyed(&keys, &[1, 2]))
        .await
        .unwrap();
    let client = connect(&t.dut.pg.url).await;
    // Emptied outside syncline, so the next load takes the direct path (a COPY into the table).
    client
        .batch_execute(
            "DELETE FROM t.people;
             CREATE FUNCTION t.shift() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN NEW._syncline_version := NEW._syncline_version + interval '1 millisecond';
             RETURN NEW; END $$;
             CREATE TRIGGER shift BEFORE INSERT ON t.people FOR EACH ROW EXECUTE FUNCTION t.shift();",
        )
        .await
        .unwrap();
    let err = t
        .merge("l2", DeleteMode::Hard, text_keyed(&keys, &[3, 4]))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(!t.dest().is_committed("people", "l2").await.unwrap());
    assert!(t.rows(&["id"], false).await.is_empty());
}

/// Every Arrow type the destination copies arrives as PostgreSQL reads it back, NULLs
/// included, at the edges of each type's range: through the direct path (a first load into
/// the empty table) and the general one (the same rows again, newer, through the staging
/// table). COPY's binary values are written by syncline itself, so an offset epoch, a numeric
/// digit out of place or a misread NULL would show here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_staged_type_arrives_as_postgres_reads_it() {
    let t = super::Target::<Postgres>::start().await;
    for (load_id, version) in [("l1", 1_i64), ("l2", 2)] {
        t.merge(load_id, DeleteMode::Hard, every_type(version))
            .await
            .unwrap_or_else(|e| panic!("{load_id}: {e}"));
        let read = connect(&t.dut.pg.url)
            .await
            .query(
                "SELECT concat_ws('|', id, coalesce(f::text, 'null'), coalesce(t, 'null'),
                   coalesce(lt, 'null'), coalesce(vt, 'null'), coalesce(b::text, 'null'),
                   coalesce(to_char(d, 'YYYY-MM-DD'), 'null'),
                   coalesce(to_char(us AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), 'null'),
                   coalesce(to_char(ms AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), 'null'),
                   coalesce(wide::text, 'null'), coalesce(narrow::text, 'null'),
                   pg_typeof(wide), pg_typeof(narrow))
                 FROM t.people ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        let read: Vec<String> = read.iter().map(|row| row.get(0)).collect();
        let types = "numeric|numeric";
        assert_eq!(
            read,
            [
                format!(
                    "1|1.5||a|b|true|0001-01-01|0001-01-01 00:00:00.000000|\
                     0001-01-01 00:00:00.000|0.0000000000|1.500|{types}"
                ),
                format!(
                    "2|-0|ü-漢字|ß|ü|false|1969-12-31|1969-12-31 23:59:59.999999|\
                     1969-12-31 23:59:59.999|-0.0000000001|-0.001|{types}"
                ),
                format!(
                    "3|NaN|x|y|z|true|2000-01-01|2000-01-01 00:00:00.000000|\
                     2000-01-01 00:00:00.000|1234567890123456789012345678.9012345678|\
                     123456789.012|{types}"
                ),
                format!(
                    "4|Infinity|long text|l|v|false|9999-12-31|9999-12-31 23:59:59.999999|\
                     9999-12-31 23:59:59.999|-9999999999999999999999999999.9999999999|\
                     -999999999.999|{types}"
                ),
                format!("5|null|null|null|null|null|null|null|null|null|null|{types}"),
            ],
            "{load_id}"
        );
    }
}

/// Five rows of every type the destination copies, the last all NULL, at `version` (ms).
fn every_type(version: i64) -> RecordBatch {
    use arrow::array::{
        Date32Array, Decimal128Array, Float64Array, Int64Array, LargeStringArray, StringViewArray,
        TimestampMicrosecondArray,
    };
    use syncline::values::{MAX_DAYS, MAX_MILLIS, MIN_DAYS, MIN_MILLIS};
    let utc = Some("UTC".into());
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("f", DataType::Float64, true),
        Field::new("t", DataType::Utf8, true),
        Field::new("lt", DataType::LargeUtf8, true),
        Field::new("vt", DataType::Utf8View, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("d", DataType::Date32, true),
        Field::new(
            "us",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, utc.clone()),
            true,
        ),
        Field::new(
            "ms",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, utc),
            true,
        ),
        Field::new("wide", DataType::Decimal128(38, 10), true),
        Field::new("narrow", DataType::Decimal128(12, 3), true),
        version_field(),
        deleted_field(),
    ]);
    let widest = 10_i128.pow(38) - 1;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
        Arc::new(Float64Array::from(vec![
            Some(1.5),
            Some(-0.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
            None,
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some("ü-漢字"),
            Some("x"),
            Some("long text"),
            None,
        ])),
        Arc::new(LargeStringArray::from(vec![
            Some("a"),
            Some("ß"),
            Some("y"),
            Some("l"),
            None,
        ])),
        Arc::new(StringViewArray::from(vec![
            Some("b"),
            Some("ü"),
            Some("z"),
            Some("v"),
            None,
        ])),
        Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            Some(true),
            Some(false),
            None,
        ])),
        Arc::new(Date32Array::from(vec![
            Some(MIN_DAYS),
            Some(-1),
            Some(10_957),
            Some(MAX_DAYS),
            None,
        ])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(MIN_MILLIS * 1000),
                Some(-1),
                Some(946_684_800_000_000),
                Some(MAX_MILLIS * 1000 + 999),
                None,
            ])
            .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMillisecondArray::from(vec![
                Some(MIN_MILLIS),
                Some(-1),
                Some(946_684_800_000),
                Some(MAX_MILLIS),
                None,
            ])
            .with_timezone("UTC"),
        ),
        Arc::new(
            Decimal128Array::from(vec![
                Some(0),
                Some(-1),
                Some(12_345_678_901_234_567_890_123_456_789_012_345_678),
                Some(-widest),
                None,
            ])
            .with_precision_and_scale(38, 10)
            .unwrap(),
        ),
        Arc::new(
            Decimal128Array::from(vec![
                Some(1_500),
                Some(-1),
                Some(123_456_789_012),
                Some(-999_999_999_999),
                None,
            ])
            .with_precision_and_scale(12, 3)
            .unwrap(),
        ),
        Arc::new(TimestampMillisecondArray::from(vec![version; 5]).with_timezone("UTC")),
        Arc::new(BooleanArray::from(vec![false; 5])),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// `id` text keys with versions in ms, none deleted.
fn text_keyed(keys: &[&str], versions: &[i64]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        version_field(),
        deleted_field(),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(keys)),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(versions.iter().copied())
                .with_timezone("UTC"),
        ),
        Arc::new(BooleanArray::from(vec![false; keys.len()])),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}
