//! Merge semantics of the PostgreSQL destination, driven directly with Arrow batches:
//! newest version wins, older never overwrites newer, deletes, replays, new columns, and a
//! load whose received rows differ from its manifest is rolled back.

mod common;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use syncline::destinations::postgres::PostgresDestination;
use syncline::destinations::{Destination, MergeRequest};
use syncline::load::DeleteMode;
use syncline::reconcile::Fingerprint;
use syncline::reconcile::batch_fingerprint;
use syncline::schema::{deleted_field, version_field};

/// Rows as (id, name, version, deleted), plus an optional extra `tier` column.
fn batch(rows: &[(i64, &str, i64, bool)], tier: Option<&[&str]>) -> RecordBatch {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
    ];
    if let Some(tier) = tier {
        fields.push(Field::new("tier", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter_values(
            tier.iter().copied(),
        )));
    }
    fields.push(version_field());
    fields.push(deleted_field());
    columns.push(Arc::new(
        TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.2)).with_timezone("UTC"),
    ));
    columns.push(Arc::new(BooleanArray::from_iter(
        rows.iter().map(|r| Some(r.3)),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

async fn merge(
    dest: &PostgresDestination,
    load_id: &str,
    deletes: DeleteMode,
    batch: RecordBatch,
) -> syncline::Result<syncline::destinations::MergeOutcome> {
    let request = MergeRequest {
        load_id: load_id.into(),
        stream: "people".into(),
        table: "people".into(),
        key: "id".into(),
        deletes,
        schema: batch.schema(),
        staged: batch_fingerprint(&batch, "id").unwrap(),
        files: Vec::new(),
    };
    dest.ensure_table(&request).await?;
    dest.merge(&request, futures::stream::iter(vec![Ok(batch)]).boxed())
        .await
}

async fn rows(pg: &common::TestPostgres, soft: bool) -> Vec<String> {
    let (client, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let deleted = if soft {
        ", _syncline_deleted_at IS NOT NULL"
    } else {
        ""
    };
    let sql = format!(
        "SELECT concat_ws('|', id, name, (extract(epoch from _syncline_version) * 1000)::bigint{deleted}) FROM t.people ORDER BY id"
    );
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_version_wins_and_older_never_overwrites_newer() {
    let pg = tokio::task::spawn_blocking(common::TestPostgres::start)
        .await
        .unwrap();
    let dest = PostgresDestination::connect(&pg.url, "t").await.unwrap();
    dest.check().await.unwrap();

    let first = merge(
        &dest,
        "l1",
        DeleteMode::Hard,
        batch(
            &[
                (1, "a", 100, false),
                (2, "b", 100, false),
                (3, "c", 100, false),
            ],
            None,
        ),
    )
    .await
    .unwrap();
    assert_eq!((first.inserted, first.updated, first.deleted), (3, 0, 0));

    // Within one load the same key twice: the newest version wins, whatever the order.
    // Older versions of 1 never overwrite it; 2 is deleted by a newer delete.
    let second = merge(
        &dest,
        "l2",
        DeleteMode::Hard,
        batch(
            &[
                (4, "d-new", 300, false),
                (1, "a-old", 50, false),
                (4, "d-old", 200, false),
                (2, "b", 150, true),
                (3, "c", 100, false),
            ],
            None,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        (second.inserted, second.updated, second.deleted),
        (1, 0, 1),
        "{second:?}"
    );
    assert_eq!(
        rows(&pg, false).await,
        ["1|a|100", "3|c|100", "4|d-new|300"]
    );

    // A delete older than the row does not remove it; a same-version re-send changes nothing.
    let third = merge(
        &dest,
        "l3",
        DeleteMode::Hard,
        batch(&[(4, "d-new", 250, true), (3, "c", 100, false)], None),
    )
    .await
    .unwrap();
    assert_eq!(
        (third.inserted, third.updated, third.deleted),
        (0, 0, 0),
        "{third:?}"
    );

    // A replayed load id is skipped by the ledger.
    let replay = merge(
        &dest,
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "zzz", 999, false)], None),
    )
    .await
    .unwrap();
    assert!(replay.skipped);
    assert_eq!(
        rows(&pg, false).await,
        ["1|a|100", "3|c|100", "4|d-new|300"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_and_undeletes() {
    let pg = tokio::task::spawn_blocking(common::TestPostgres::start)
        .await
        .unwrap();
    let dest = PostgresDestination::connect(&pg.url, "t").await.unwrap();
    dest.check().await.unwrap();
    merge(
        &dest,
        "l1",
        DeleteMode::Soft,
        batch(&[(1, "a", 100, false), (2, "b", 100, false)], None),
    )
    .await
    .unwrap();
    let deleted = merge(
        &dest,
        "l2",
        DeleteMode::Soft,
        batch(&[(1, "a", 200, true)], None),
    )
    .await
    .unwrap();
    assert_eq!(deleted.deleted, 1);
    assert_eq!(rows(&pg, true).await, ["1|a|200|t", "2|b|100|f"]);
    let back = merge(
        &dest,
        "l3",
        DeleteMode::Soft,
        batch(&[(1, "a2", 300, false)], None),
    )
    .await
    .unwrap();
    assert_eq!((back.inserted, back.updated, back.deleted), (0, 1, 0));
    assert_eq!(rows(&pg, true).await, ["1|a2|300|f", "2|b|100|f"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_source_column_becomes_a_new_column() {
    let pg = tokio::task::spawn_blocking(common::TestPostgres::start)
        .await
        .unwrap();
    let dest = PostgresDestination::connect(&pg.url, "t").await.unwrap();
    dest.check().await.unwrap();
    merge(
        &dest,
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "a", 100, false)], None),
    )
    .await
    .unwrap();
    let request = MergeRequest {
        load_id: "l2".into(),
        stream: "people".into(),
        table: "people".into(),
        key: "id".into(),
        deletes: DeleteMode::Hard,
        schema: batch(&[], Some(&[])).schema(),
        staged: Fingerprint::default(),
        files: Vec::new(),
    };
    let change = dest.ensure_table(&request).await.unwrap();
    assert_eq!(change.added_columns, ["tier"]);
    let outcome = merge(
        &dest,
        "l2",
        DeleteMode::Hard,
        batch(
            &[(1, "a", 200, false), (2, "b", 200, false)],
            Some(&["gold", "silver"]),
        ),
    )
    .await
    .unwrap();
    assert_eq!((outcome.inserted, outcome.updated), (1, 1));
    let (client, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tiers: Vec<String> = client
        .query("SELECT tier FROM t.people ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tiers, ["gold", "silver"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_differs_from_its_manifest_is_rolled_back() {
    let pg = tokio::task::spawn_blocking(common::TestPostgres::start)
        .await
        .unwrap();
    let dest = PostgresDestination::connect(&pg.url, "t").await.unwrap();
    dest.check().await.unwrap();
    merge(
        &dest,
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "a", 100, false)], None),
    )
    .await
    .unwrap();
    let rows_in = batch(&[(1, "a", 200, false), (2, "b", 200, false)], None);
    let mut staged = batch_fingerprint(&rows_in, "id").unwrap();
    staged.rows += 1; // the manifest claims a row the destination never receives
    let request = MergeRequest {
        load_id: "l2".into(),
        stream: "people".into(),
        table: "people".into(),
        key: "id".into(),
        deletes: DeleteMode::Hard,
        schema: rows_in.schema(),
        staged,
        files: Vec::new(),
    };
    let err = dest
        .merge(&request, futures::stream::iter(vec![Ok(rows_in)]).boxed())
        .await
        .unwrap_err();
    assert!(matches!(err, syncline::Error::Reconciliation(_)), "{err}");
    assert_eq!(err.exit_code(), 3);
    assert!(!dest.is_committed("people", "l2").await.unwrap());
    assert_eq!(rows(&pg, false).await, ["1|a|100"]);
}
