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
