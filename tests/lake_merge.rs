//! Merge semantics of the lake (Delta Lake) destination, driven directly with Arrow batches
//! against a Delta table in a temp folder: newest version wins, older never overwrites newer,
//! deletes, replays, new columns, a load whose received rows differ from its manifest changes
//! nothing, and incompatible type changes are schema drift. Results are read back through
//! DataFusion, as `syncline query` and other engines read them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimestampMillisecondType};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use syncline::destinations::lake::LakeDestination;
use syncline::destinations::{Destination, MergeOutcome, MergeRequest};
use syncline::load::DeleteMode;
use syncline::reconcile::Fingerprint;
use syncline::reconcile::batch_fingerprint;
use syncline::schema::{deleted_field, timestamp_type, version_field};

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

/// A lake in a fresh temp folder (kept alive by the returned guard).
fn lake() -> (tempfile::TempDir, LakeDestination) {
    let dir = tempfile::tempdir().unwrap();
    let root = format!("file://{}/lake", dir.path().display());
    let dest = LakeDestination::new(&root, HashMap::new()).unwrap();
    (dir, dest)
}

fn request(load_id: &str, deletes: DeleteMode, batch: &RecordBatch) -> MergeRequest {
    MergeRequest {
        load_id: load_id.into(),
        stream: "people".into(),
        table: "people".into(),
        key: "id".into(),
        deletes,
        schema: batch.schema(),
        staged: batch_fingerprint(batch, "id").unwrap(),
        files: Vec::new(),
    }
}

async fn merge(
    dest: &LakeDestination,
    load_id: &str,
    deletes: DeleteMode,
    batch: RecordBatch,
) -> syncline::Result<MergeOutcome> {
    let request = request(load_id, deletes, &batch);
    dest.ensure_table(&request).await?;
    dest.merge(&request, futures::stream::iter(vec![Ok(batch)]).boxed())
        .await
}

/// Runs `sql` over the `people` table as it is now.
async fn query(dest: &LakeDestination, sql: &str) -> Vec<RecordBatch> {
    let table = dest
        .open_table("people")
        .await
        .unwrap()
        .expect("the people table exists");
    let ctx = SessionContext::new();
    ctx.register_table("people", table.table_provider().await.unwrap())
        .unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// `id|name|version_ms` (plus `|t` or `|f` for soft-deleted or not), sorted.
async fn rows(dest: &LakeDestination, soft: bool) -> Vec<String> {
    let deleted = if soft {
        ", _syncline_deleted_at IS NOT NULL AS deleted"
    } else {
        ""
    };
    let batches = query(
        dest,
        &format!("SELECT id, name, _syncline_version{deleted} FROM people"),
    )
    .await;
    let mut out = Vec::new();
    for batch in &batches {
        let ids = cast(batch.column(0), &DataType::Int64).unwrap();
        let names = cast(batch.column(1), &DataType::Utf8).unwrap();
        let versions = cast(batch.column(2), &timestamp_type()).unwrap();
        let (ids, names, versions) = (
            ids.as_primitive::<Int64Type>(),
            names.as_string::<i32>(),
            versions.as_primitive::<TimestampMillisecondType>(),
        );
        for row in 0..batch.num_rows() {
            let mut line = format!(
                "{}|{}|{}",
                ids.value(row),
                names.value(row),
                versions.value(row)
            );
            if soft {
                line.push_str(if batch.column(3).as_boolean().value(row) {
                    "|t"
                } else {
                    "|f"
                });
            }
            out.push(line);
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_version_wins_and_older_never_overwrites_newer() {
    let (_dir, dest) = lake();
    dest.check().await.unwrap();
    assert!(dest.last_load("people").await.unwrap().is_none());
    assert!(!dest.is_committed("people", "l1").await.unwrap());

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
    assert!(!first.skipped);

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
        rows(&dest, false).await,
        ["1|a|100", "3|c|100", "4|d-new|300"]
    );

    // A delete older than the row does not remove it; a same-version re-send changes nothing.
    // Nothing changes, yet the load is recorded.
    let third_rows = batch(&[(4, "d-new", 250, true), (3, "c", 100, false)], None);
    let third_fingerprint = batch_fingerprint(&third_rows, "id").unwrap();
    let third = merge(&dest, "l3", DeleteMode::Hard, third_rows)
        .await
        .unwrap();
    assert_eq!(
        (third.inserted, third.updated, third.deleted),
        (0, 0, 0),
        "{third:?}"
    );
    assert_eq!(third.received, third_fingerprint);
    assert!(dest.is_committed("people", "l3").await.unwrap());
    let last = dest
        .last_load("people")
        .await
        .unwrap()
        .expect("a last load");
    assert_eq!(
        (last.load_id.as_str(), last.stream.as_str()),
        ("l3", "people")
    );
    assert_eq!(
        (last.rows, last.checksum),
        (third_fingerprint.rows, third_fingerprint.checksum)
    );

    // A replayed load id is skipped, and so is a replay of the load that changed nothing.
    let replay = merge(
        &dest,
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "zzz", 999, false)], None),
    )
    .await
    .unwrap();
    assert!(replay.skipped);
    let replay = merge(
        &dest,
        "l3",
        DeleteMode::Hard,
        batch(&[(3, "zzz", 999, false)], None),
    )
    .await
    .unwrap();
    assert!(replay.skipped);
    assert_eq!(
        rows(&dest, false).await,
        ["1|a|100", "3|c|100", "4|d-new|300"]
    );
    assert_eq!(
        dest.last_load("people").await.unwrap().unwrap().load_id,
        "l3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_and_undeletes() {
    let (_dir, dest) = lake();
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
    assert_eq!(
        (deleted.inserted, deleted.updated, deleted.deleted),
        (0, 0, 1),
        "{deleted:?}"
    );
    assert_eq!(rows(&dest, true).await, ["1|a|200|t", "2|b|100|f"]);

    // A live row of the same version as the delete does not bring it back; a newer one does.
    let tie = merge(
        &dest,
        "l3",
        DeleteMode::Soft,
        batch(&[(1, "a", 200, false)], None),
    )
    .await
    .unwrap();
    assert_eq!(
        (tie.inserted, tie.updated, tie.deleted),
        (0, 0, 0),
        "{tie:?}"
    );
    let back = merge(
        &dest,
        "l4",
        DeleteMode::Soft,
        batch(&[(1, "a2", 300, false)], None),
    )
    .await
    .unwrap();
    assert_eq!(
        (back.inserted, back.updated, back.deleted),
        (0, 1, 0),
        "{back:?}"
    );
    assert_eq!(rows(&dest, true).await, ["1|a2|300|f", "2|b|100|f"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_source_column_becomes_a_new_column() {
    let (_dir, dest) = lake();
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
    assert!(!change.created_table);
    assert_eq!(change.added_columns, ["tier"]);
    assert!(
        dest.ensure_table(&request)
            .await
            .unwrap()
            .added_columns
            .is_empty()
    );
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
    let batches = query(
        &dest,
        "SELECT CAST(id AS VARCHAR) || '|' || tier FROM people",
    )
    .await;
    let mut tiers: Vec<String> = Vec::new();
    for batch in &batches {
        let column = cast(batch.column(0), &DataType::Utf8).unwrap();
        tiers.extend(
            column
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or("null").to_owned()),
        );
    }
    tiers.sort();
    assert_eq!(tiers, ["1|gold", "2|silver"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_differs_from_its_manifest_changes_nothing() {
    let (_dir, dest) = lake();
    merge(
        &dest,
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "a", 100, false)], None),
    )
    .await
    .unwrap();
    let rows_in = batch(&[(1, "a", 200, false), (2, "b", 200, false)], None);
    let mut request = request("l2", DeleteMode::Hard, &rows_in);
    request.staged.rows += 1; // the manifest claims a row the destination never receives
    let err = dest
        .merge(&request, futures::stream::iter(vec![Ok(rows_in)]).boxed())
        .await
        .unwrap_err();
    assert!(matches!(err, syncline::Error::Reconciliation(_)), "{err}");
    assert_eq!(err.exit_code(), 3);
    assert!(!dest.is_committed("people", "l2").await.unwrap());
    assert_eq!(rows(&dest, false).await, ["1|a|100"]);
    assert_eq!(
        dest.last_load("people").await.unwrap().unwrap().load_id,
        "l1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_type_change_is_schema_drift() {
    let (_dir, dest) = lake();
    merge(
        &dest,
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "a", 100, false)], None),
    )
    .await
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Int64, true),
        version_field(),
        deleted_field(),
    ]));
    let request = MergeRequest {
        load_id: "l2".into(),
        stream: "people".into(),
        table: "people".into(),
        key: "id".into(),
        deletes: DeleteMode::Hard,
        schema,
        staged: Fingerprint::default(),
        files: Vec::new(),
    };
    match dest.ensure_table(&request).await.unwrap_err() {
        syncline::Error::SchemaDrift(message) => {
            assert!(message.contains("`people`"), "{message}");
            assert!(message.contains("`name`"), "{message}");
            assert!(message.contains("string"), "{message}");
            assert!(message.contains("long"), "{message}");
        }
        other => panic!("expected schema drift, got {other:?}"),
    }
    assert_eq!(rows(&dest, false).await, ["1|a|100"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_load_is_recorded() {
    let (_dir, dest) = lake();
    merge(
        &dest,
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "a", 100, false)], None),
    )
    .await
    .unwrap();
    let empty = merge(&dest, "l2", DeleteMode::Hard, batch(&[], None))
        .await
        .unwrap();
    assert_eq!(
        (
            empty.inserted,
            empty.updated,
            empty.deleted,
            empty.received.rows
        ),
        (0, 0, 0, 0)
    );
    assert!(dest.is_committed("people", "l2").await.unwrap());
    assert!(
        merge(&dest, "l2", DeleteMode::Hard, batch(&[], None))
            .await
            .unwrap()
            .skipped
    );
}
