//! The merge contract of `syncline::destinations::Destination`, written once and run against
//! every destination: PostgreSQL (a throwaway cluster), the lake (a Delta table in a temp
//! folder) and Snowflake (the fakesnow emulator). Each case drives the destination directly with
//! hand-built loads, staged as the pipeline stages them, and reads the table back in the
//! destination's own SQL: newest version wins, older never overwrites newer, deletes (hard and
//! soft), same-version re-sends and replays change nothing, new columns, type drift, a load that
//! differs from its manifest, empty loads, and the ledger (`is_committed`, `last_load`).
//!
//! [`every_case!`] expands each case into one test per destination module
//! (`merge::postgres::soft_deletes_and_undeletes`, ...), as vector's sink compliance tests do.

mod lake;
mod model;
mod postgres;
mod snowflake;

use std::path::Path;
use std::sync::Arc;

use arrow::array::TimestampMillisecondArray;
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use syncline::config::StagingConfig;
use syncline::destinations::{Destination, MergeOutcome, MergeRequest};
use syncline::error::ErrorKind;
use syncline::reconcile::Fingerprint;
use syncline::schema::{deleted_field, version_field};
use syncline::stage::{LoadWriter, Stage};

use crate::support::{DeleteMode, batch_fingerprint};
use model::merge_equals_the_model_in_any_load_split;

/// One destination as the cases drive it.
pub(super) trait DestinationUnderTest: Sized {
    /// How the destination names a text and a 64-bit integer column in a schema drift message.
    const TYPE_NAMES: (&'static str, &'static str);

    /// The column the source grows in [`a_new_source_column_becomes_a_new_column`]: a name that
    /// needs quoting where the destination can hold one.
    const NEW_COLUMN: &'static str;

    /// Whether a load of no rows (no staged files) is merged and recorded. The pipeline never
    /// merges one; a destination that reads the staged files itself refuses it instead.
    const MERGES_EMPTY_LOADS: bool = true;

    /// Starts a fresh destination. Loads are staged under the local folder `stage` (Snowflake
    /// reads them from there; the others take the batches handed to `merge`).
    async fn start(stage: &Path) -> Self;

    fn destination(&self) -> &dyn Destination;

    /// Whether a load into an empty table is copied straight into it (`MergeTimings::direct_copy`).
    const COPIES_INTO_EMPTY: bool = false;

    /// How many random cases [`merge_equals_the_model_in_any_load_split`] runs when
    /// `PROPTEST_CASES` does not say.
    const PROPERTY_CASES: u32 = 24;

    /// Every row of `table`, each as its `columns` in text (NULL as `null`), then
    /// `_syncline_version` in epoch milliseconds, then with `soft` `t` or `f` for whether the
    /// row is marked deleted, all joined with `|`. Any order.
    async fn rows(&self, table: &str, columns: &[&str], soft: bool) -> Vec<String>;
}

/// A destination under test and the stage its loads are written to.
struct Target<D> {
    dut: D,
    stage: Stage,
    _dir: tempfile::TempDir,
}

impl<D: DestinationUnderTest> Target<D> {
    /// Starts the destination and checks it is usable.
    async fn start() -> Target<D> {
        let dir = tempfile::tempdir().expect("temp dir");
        let stage_dir = dir.path().join("stage");
        std::fs::create_dir_all(&stage_dir).expect("stage folder");
        let stage = Stage::open(&StagingConfig {
            url: format!("file://{}", stage_dir.display()),
            s3: None,
            compression: Default::default(),
        })
        .expect("open the stage");
        let dut = D::start(&stage_dir).await;
        dut.destination().check().await.expect("check");
        Target {
            dut,
            stage,
            _dir: dir,
        }
    }

    fn dest(&self) -> &dyn Destination {
        self.dut.destination()
    }

    /// Stages `batch` as load `load_id` of the `people` stream, two rows a file so a load spans
    /// several files, and returns the request the pipeline would make for it.
    async fn stage(&self, load_id: &str, deletes: DeleteMode, batch: &RecordBatch) -> MergeRequest {
        self.stage_in("people", load_id, deletes, batch).await
    }

    /// [`Target::stage`] into `table` (the stream of the same name).
    async fn stage_in(
        &self,
        table: &str,
        load_id: &str,
        deletes: DeleteMode,
        batch: &RecordBatch,
    ) -> MergeRequest {
        let dir = self.stage.load_dir("merge", table, load_id);
        let mut writer = LoadWriter::new(&self.stage, dir, batch.schema(), 2);
        for start in (0..batch.num_rows()).step_by(2) {
            let rows = 2.min(batch.num_rows() - start);
            writer.write(&batch.slice(start, rows)).await.unwrap();
        }
        let files = writer.finish().await.unwrap();
        MergeRequest {
            load_id: load_id.into(),
            stream: table.into(),
            table: table.into(),
            key: "id".into(),
            deletes,
            schema: batch.schema(),
            staged: batch_fingerprint(batch, "id").unwrap(),
            files: files.into_iter().map(|f| f.path).collect(),
            complete: None,
        }
    }

    /// Merges the already staged `request` with `batch` as its rows.
    async fn merge_staged(
        &self,
        request: &MergeRequest,
        batch: RecordBatch,
    ) -> syncline::Result<MergeOutcome> {
        // As the pipeline merges: the rows can be read again (a destination's direct path may
        // give up and take the general one).
        let open = || futures::stream::iter(vec![Ok(batch.clone())]).boxed();
        self.dest().merge_staged(request, &open).await
    }

    /// Stages `batch`, makes sure the table fits it and merges it, as the pipeline does.
    async fn merge(
        &self,
        load_id: &str,
        deletes: DeleteMode,
        batch: RecordBatch,
    ) -> syncline::Result<MergeOutcome> {
        self.merge_in("people", load_id, deletes, batch).await
    }

    /// [`Target::merge`] into `table` (the stream of the same name).
    async fn merge_in(
        &self,
        table: &str,
        load_id: &str,
        deletes: DeleteMode,
        batch: RecordBatch,
    ) -> syncline::Result<MergeOutcome> {
        let request = self.stage_in(table, load_id, deletes, &batch).await;
        self.dest().ensure_table(&request).await?;
        self.merge_staged(&request, batch).await
    }

    /// [`Target::merge`] of a complete full load: the source held exactly `batch`'s rows
    /// when it was read.
    async fn merge_complete(
        &self,
        load_id: &str,
        deletes: DeleteMode,
        batch: RecordBatch,
    ) -> syncline::Result<MergeOutcome> {
        let mut request = self.stage_in("people", load_id, deletes, &batch).await;
        request.complete = Some(chrono::Utc::now());
        self.dest().ensure_table(&request).await?;
        self.merge_staged(&request, batch).await
    }

    /// `id|name|version_ms` (with `soft`, plus `|t` or `|f` for deleted), sorted.
    async fn people(&self, soft: bool) -> Vec<String> {
        self.rows(&["id", "name"], soft).await
    }

    /// [`DestinationUnderTest::rows`], sorted.
    async fn rows(&self, columns: &[&str], soft: bool) -> Vec<String> {
        self.rows_in("people", columns, soft).await
    }

    /// [`DestinationUnderTest::rows`] of `table`, sorted.
    async fn rows_in(&self, table: &str, columns: &[&str], soft: bool) -> Vec<String> {
        let mut rows = self.dut.rows(table, columns, soft).await;
        rows.sort();
        rows
    }
}

/// Rows as (id, name, version, deleted), plus an optional extra column named `new_column`.
fn batch(rows: &[(i64, &str, i64, bool)], extra: Option<(&str, &[Option<&str>])>) -> RecordBatch {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
    ];
    if let Some((name, values)) = extra {
        fields.push(Field::new(name, DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(values.to_vec())));
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

fn counts(outcome: &MergeOutcome) -> (u64, u64, u64) {
    (outcome.inserted, outcome.updated, outcome.deleted)
}

async fn newest_version_wins_and_older_never_overwrites_newer<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    assert!(t.dest().last_load("people").await.unwrap().is_none());
    assert!(!t.dest().is_committed("people", "l1").await.unwrap());

    let first = t
        .merge(
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
    assert_eq!(counts(&first), (3, 0, 0));
    assert!(!first.skipped);

    // Within one load the same key twice: the newest version wins, whatever the order.
    // Older versions of 1 never overwrite it; 2 is deleted by a newer delete.
    let second = t
        .merge(
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
    assert_eq!(counts(&second), (1, 0, 1), "{second:?}");
    assert_eq!(t.people(false).await, ["1|a|100", "3|c|100", "4|d-new|300"]);

    // A delete older than the row does not remove it; a same-version re-send changes nothing.
    // Nothing changes, yet the load is recorded.
    let third_rows = batch(&[(4, "d-new", 250, true), (3, "c", 100, false)], None);
    let third_fingerprint = batch_fingerprint(&third_rows, "id").unwrap();
    let third = t.merge("l3", DeleteMode::Hard, third_rows).await.unwrap();
    assert_eq!(counts(&third), (0, 0, 0), "{third:?}");
    assert_eq!(third.received, third_fingerprint);
    assert!(t.dest().is_committed("people", "l3").await.unwrap());
    let last = t
        .dest()
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
    let replay = t
        .merge(
            "l1",
            DeleteMode::Hard,
            batch(&[(1, "zzz", 999, false)], None),
        )
        .await
        .unwrap();
    assert!(replay.skipped);
    let replay = t
        .merge(
            "l3",
            DeleteMode::Hard,
            batch(&[(3, "zzz", 999, false)], None),
        )
        .await
        .unwrap();
    assert!(replay.skipped);
    assert_eq!(t.people(false).await, ["1|a|100", "3|c|100", "4|d-new|300"]);
    assert_eq!(
        t.dest().last_load("people").await.unwrap().unwrap().load_id,
        "l3"
    );
}

async fn soft_deletes_and_undeletes<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    t.merge(
        "l1",
        DeleteMode::Soft,
        batch(&[(1, "a", 100, false), (2, "b", 100, false)], None),
    )
    .await
    .unwrap();
    let deleted = t
        .merge("l2", DeleteMode::Soft, batch(&[(1, "a", 200, true)], None))
        .await
        .unwrap();
    assert_eq!(counts(&deleted), (0, 0, 1), "{deleted:?}");
    assert_eq!(t.people(true).await, ["1|a|200|t", "2|b|100|f"]);

    // A live row of the same version as the delete does not bring it back; a newer one does.
    let tie = t
        .merge("l3", DeleteMode::Soft, batch(&[(1, "a", 200, false)], None))
        .await
        .unwrap();
    assert_eq!(counts(&tie), (0, 0, 0), "{tie:?}");
    let back = t
        .merge(
            "l4",
            DeleteMode::Soft,
            batch(&[(1, "a2", 300, false)], None),
        )
        .await
        .unwrap();
    assert_eq!(counts(&back), (0, 1, 0), "{back:?}");
    assert_eq!(t.people(true).await, ["1|a2|300|f", "2|b|100|f"]);
}

/// The table a complete full load leaves behind, in `deletes` mode: five rows from `l1`, a
/// sixth from `l3`, a load that started after the full load `l2` and committed before it,
/// then `l2` holding rows 1 (changed), 3 and 5 as they are. Rows 2 and 4 are its orphans; row
/// 6 is kept, since a load the full load did not see wrote it. Returns `l2`'s outcome.
async fn complete_full_load<D: DestinationUnderTest>(
    t: &Target<D>,
    deletes: DeleteMode,
) -> MergeOutcome {
    let rows: Vec<_> = (1..=5)
        .map(|id| (id, ["a", "b", "c", "d", "e"][id as usize - 1], 100, false))
        .collect();
    t.merge("l1", deletes, batch(&rows, None)).await.unwrap();
    t.merge("l3", deletes, batch(&[(6, "f", 300, false)], None))
        .await
        .unwrap();
    t.merge_complete(
        "l2",
        deletes,
        batch(
            &[
                (1, "a2", 200, false),
                (3, "c", 100, false),
                (5, "e", 100, false),
            ],
            None,
        ),
    )
    .await
    .unwrap()
}

async fn a_complete_full_load_deletes_the_rows_the_source_lacks<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    let outcome = complete_full_load(&t, DeleteMode::Hard).await;
    assert_eq!(counts(&outcome), (0, 1, 2), "{outcome:?}");
    assert_eq!(
        t.people(false).await,
        ["1|a2|200", "3|c|100", "5|e|100", "6|f|300"]
    );
    // The orphans' tombstones hold against an older re-send.
    t.merge("l4", DeleteMode::Hard, batch(&[(2, "b", 100, false)], None))
        .await
        .unwrap();
    assert_eq!(
        t.people(false).await,
        ["1|a2|200", "3|c|100", "5|e|100", "6|f|300"]
    );
}

async fn a_complete_full_load_marks_the_rows_the_source_lacks_deleted<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    let outcome = complete_full_load(&t, DeleteMode::Soft).await;
    assert_eq!(counts(&outcome), (0, 1, 2), "{outcome:?}");
    assert_eq!(
        t.people(true).await,
        [
            "1|a2|200|f",
            "2|b|100|t",
            "3|c|100|f",
            "4|d|100|t",
            "5|e|100|f",
            "6|f|300|f"
        ]
    );
}

async fn a_new_source_column_becomes_a_new_column<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    t.merge(
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "a", 100, false), (3, "c", 100, false)], None),
    )
    .await
    .unwrap();
    let grown = batch(
        &[(1, "a", 200, false), (2, "b", 200, false)],
        Some((D::NEW_COLUMN, &[Some("gold"), None])),
    );
    let request = t.stage("l2", DeleteMode::Hard, &grown).await;
    let change = t.dest().ensure_table(&request).await.unwrap();
    assert!(!change.created_table);
    assert_eq!(change.added_columns, [D::NEW_COLUMN]);
    let again = t.dest().ensure_table(&request).await.unwrap();
    assert!(again.added_columns.is_empty(), "{again:?}");

    // The column is filled for the rows this load carries; the others keep NULL.
    let outcome = t.merge_staged(&request, grown).await.unwrap();
    assert_eq!(counts(&outcome), (1, 1, 0), "{outcome:?}");
    assert_eq!(
        t.rows(&["id", D::NEW_COLUMN, "_syncline_load_id"], false)
            .await,
        ["1|gold|l2|200", "2|null|l2|200", "3|null|l1|100"]
    );

    // An older version never overwrites a newer one, in the new column either.
    let stale = t
        .merge(
            "l3",
            DeleteMode::Hard,
            batch(
                &[(2, "old", 150, false)],
                Some((D::NEW_COLUMN, &[Some("x")])),
            ),
        )
        .await
        .unwrap();
    assert_eq!(counts(&stale), (0, 0, 0), "{stale:?}");
    assert_eq!(
        t.rows(&["id", "name", D::NEW_COLUMN], false).await,
        ["1|a|gold|200", "2|b|null|200", "3|c|null|100"]
    );
}

/// A column the source stops sending stays in the table: an update keeps the row's value in it
/// (as an `UPDATE` that does not set it), an insert leaves it NULL, and a soft delete keeps it.
async fn a_column_the_source_stops_sending_keeps_its_values<D: DestinationUnderTest>() {
    for deletes in [DeleteMode::Hard, DeleteMode::Soft] {
        let t = Target::<D>::start().await;
        let with_tier = batch(
            &[
                (1, "a", 100, false),
                (2, "b", 100, false),
                (3, "c", 100, false),
            ],
            Some((
                D::NEW_COLUMN,
                &[Some("gold"), Some("silver"), Some("bronze")],
            )),
        );
        t.merge("l1", deletes, with_tier).await.unwrap();
        let without = batch(
            &[
                (1, "a2", 200, false),
                (2, "b", 200, true),
                (3, "c", 100, false),
                (4, "d", 200, false),
            ],
            None,
        );
        let outcome = t.merge("l2", deletes, without).await.unwrap();
        assert_eq!(counts(&outcome), (1, 1, 1), "{deletes:?}: {outcome:?}");
        let soft = deletes == DeleteMode::Soft;
        let expected: &[&str] = if soft {
            &[
                "1|a2|gold|200|f",
                "2|b|silver|200|t",
                "3|c|bronze|100|f",
                "4|d|null|200|f",
            ]
        } else {
            &["1|a2|gold|200", "3|c|bronze|100", "4|d|null|200"]
        };
        assert_eq!(
            t.rows(&["id", "name", D::NEW_COLUMN], soft).await,
            expected,
            "{deletes:?}"
        );
    }
}

async fn a_load_that_differs_from_its_manifest_changes_nothing<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    t.merge("l1", DeleteMode::Hard, batch(&[(1, "a", 100, false)], None))
        .await
        .unwrap();
    let rows_in = batch(&[(1, "a", 200, false), (2, "b", 200, false)], None);
    let mut request = t.stage("l2", DeleteMode::Hard, &rows_in).await;
    request.staged.rows += 1; // the manifest claims a row the destination never receives
    let err = t.merge_staged(&request, rows_in).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reconciliation, "{err}");
    assert_eq!(err.exit_code(), 3);
    assert!(!t.dest().is_committed("people", "l2").await.unwrap());
    assert_eq!(t.people(false).await, ["1|a|100"]);
    assert_eq!(
        t.dest().last_load("people").await.unwrap().unwrap().load_id,
        "l1"
    );
}

async fn an_incompatible_type_change_is_schema_drift<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    t.merge("l1", DeleteMode::Hard, batch(&[(1, "a", 100, false)], None))
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
        complete: None,
    };
    let (was, now) = D::TYPE_NAMES;
    let err = t.dest().ensure_table(&request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
    let message = err.to_string();
    assert!(message.contains("`people`"), "{message}");
    assert!(message.contains("`name`"), "{message}");
    assert!(message.contains(was), "{message}");
    assert!(message.contains(now), "{message}");
    assert_eq!(t.people(false).await, ["1|a|100"]);
}

/// 2^53 + 1: the smallest integer a double cannot hold.
const BEYOND_DOUBLE: i64 = 9_007_199_254_740_993;

/// The people batch with an `amount` column of the given values and Arrow type.
fn with_amount(rows: &[(i64, i64)], amount: ArrayRef) -> RecordBatch {
    let fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", amount.data_type().clone(), true),
        version_field(),
        deleted_field(),
    ];
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        amount,
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))
                .with_timezone("UTC"),
        ),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|_| Some(false)))),
    ];
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// An integer field the source now sends as a float: no destination may round the integers
/// the column holds (a double keeps 53 bits). Every destination refuses it as schema drift,
/// before anything is altered or merged.
async fn a_float_load_into_an_integer_column_never_rounds_it<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    let ints = with_amount(&[(1, 100)], Arc::new(Int64Array::from(vec![BEYOND_DOUBLE])));
    t.merge("l1", DeleteMode::Hard, ints).await.unwrap();
    let exact = [format!("1|{BEYOND_DOUBLE}|100")];
    assert_eq!(t.rows(&["id", "amount"], false).await, exact);

    let floats = with_amount(&[(2, 200)], Arc::new(Float64Array::from(vec![0.5])));
    let err = t.merge("l2", DeleteMode::Hard, floats).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaDrift, "{err:?}");
    let message = err.to_string();
    assert!(message.contains("`amount`"), "{message}");
    assert!(!t.dest().is_committed("people", "l2").await.unwrap());
    assert_eq!(t.rows(&["id", "amount"], false).await, exact);
}

/// Snowflake loads from the staged files and an empty load has none: it refuses the load (an
/// error, nothing recorded) where the others record it. Either way the table is unchanged.
async fn an_empty_load_is_recorded<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    t.merge("l1", DeleteMode::Hard, batch(&[(1, "a", 100, false)], None))
        .await
        .unwrap();
    let empty = t.merge("l2", DeleteMode::Hard, batch(&[], None)).await;
    if D::MERGES_EMPTY_LOADS {
        let empty = empty.unwrap();
        assert_eq!(
            (
                empty.inserted,
                empty.updated,
                empty.deleted,
                empty.received.rows
            ),
            (0, 0, 0, 0)
        );
        assert!(t.dest().is_committed("people", "l2").await.unwrap());
        assert!(
            t.merge("l2", DeleteMode::Hard, batch(&[], None))
                .await
                .unwrap()
                .skipped
        );
    } else {
        let err = empty.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Destination, "{err:?}");
        assert!(err.to_string().contains("no staged files"), "{err}");
        assert!(!t.dest().is_committed("people", "l2").await.unwrap());
    }
    assert_eq!(t.people(false).await, ["1|a|100"]);
}

/// A hard delete leaves a tombstone: a later load re-sending an older version of the key, or
/// the same version as the delete (a delete wins a tie), does not bring the row back; only a
/// newer version does.
async fn a_hard_deleted_row_stays_deleted_against_older_resends<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    t.merge(
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "a", 100, false), (2, "b", 100, false)], None),
    )
    .await
    .unwrap();
    let deleted = t
        .merge("l2", DeleteMode::Hard, batch(&[(1, "a", 200, true)], None))
        .await
        .unwrap();
    assert_eq!(counts(&deleted), (0, 0, 1), "{deleted:?}");
    assert_eq!(t.people(false).await, ["2|b|100"]);

    // The older file read again, then the delete's own version as a live row.
    for (load, version) in [("l3", 150), ("l4", 100), ("l5", 200)] {
        let resend = t
            .merge(
                load,
                DeleteMode::Hard,
                batch(&[(1, "a-old", version, false)], None),
            )
            .await
            .unwrap();
        assert_eq!(counts(&resend), (0, 0, 0), "{load}: {resend:?}");
        assert_eq!(t.people(false).await, ["2|b|100"], "after {load}");
    }

    let back = t
        .merge(
            "l6",
            DeleteMode::Hard,
            batch(&[(1, "a-new", 300, false)], None),
        )
        .await
        .unwrap();
    assert_eq!(counts(&back), (1, 0, 0), "{back:?}");
    assert_eq!(t.people(false).await, ["1|a-new|300", "2|b|100"]);
}

/// A delete of a key the table never held is remembered: hard mode keeps a tombstone, soft
/// mode a row marked deleted (key and version, other columns NULL). An older or same-version
/// live row arriving in a later load stays out; a newer one comes in.
async fn a_delete_of_an_unseen_key_holds_against_older_versions<D: DestinationUnderTest>() {
    for deletes in [DeleteMode::Hard, DeleteMode::Soft] {
        let t = Target::<D>::start().await;
        let soft = deletes == DeleteMode::Soft;
        t.merge("l1", deletes, batch(&[(2, "b", 100, false)], None))
            .await
            .unwrap();
        let unseen = t
            .merge("l2", deletes, batch(&[(5, "e", 200, true)], None))
            .await
            .unwrap();
        // Soft mode writes a row marked deleted; hard mode removes no row.
        let expected_deleted = u64::from(soft);
        assert_eq!(
            counts(&unseen),
            (0, 0, expected_deleted),
            "{deletes:?}: {unseen:?}"
        );
        let after_delete: Vec<&str> = if soft {
            vec!["2|b|100|f", "5|null|200|t"]
        } else {
            vec!["2|b|100"]
        };
        assert_eq!(t.people(soft).await, after_delete, "{deletes:?}");

        for (load, version) in [("l3", 150), ("l4", 200)] {
            let older = t
                .merge(load, deletes, batch(&[(5, "e-old", version, false)], None))
                .await
                .unwrap();
            assert_eq!(counts(&older), (0, 0, 0), "{deletes:?} {load}: {older:?}");
            assert_eq!(
                t.people(soft).await,
                after_delete,
                "{deletes:?} after {load}"
            );
        }

        let newer = t
            .merge("l5", deletes, batch(&[(5, "e-new", 300, false)], None))
            .await
            .unwrap();
        let expected: Vec<&str> = if soft {
            assert_eq!(counts(&newer), (0, 1, 0), "{deletes:?}: {newer:?}");
            vec!["2|b|100|f", "5|e-new|300|f"]
        } else {
            assert_eq!(counts(&newer), (1, 0, 0), "{deletes:?}: {newer:?}");
            vec!["2|b|100", "5|e-new|300"]
        };
        assert_eq!(t.people(soft).await, expected, "{deletes:?}");
    }
}

/// A delete and a live row of the same version in separate loads: the delete wins, in either
/// order and either mode.
async fn a_delete_wins_a_tie_across_loads<D: DestinationUnderTest>() {
    for deletes in [DeleteMode::Hard, DeleteMode::Soft] {
        let soft = deletes == DeleteMode::Soft;
        let t = Target::<D>::start().await;
        // Key 1: live first, then the delete of the same version.
        // Key 2: the delete first, then the live row of the same version.
        t.merge(
            "l1",
            deletes,
            batch(&[(1, "a", 100, false), (2, "b", 100, true)], None),
        )
        .await
        .unwrap();
        t.merge(
            "l2",
            deletes,
            batch(&[(1, "a", 100, true), (2, "b", 100, false)], None),
        )
        .await
        .unwrap();
        let expected: Vec<&str> = if soft {
            vec!["1|a|100|t", "2|null|100|t"]
        } else {
            vec![]
        };
        assert_eq!(t.people(soft).await, expected, "{deletes:?}");
    }
}

/// A stream that moves from hard to soft deletes keeps its tombstones: an older delete and an
/// older live row of a hard-deleted key leave it deleted; a newer row brings it back.
async fn tombstones_keep_holding_after_a_move_to_soft_deletes<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    t.merge(
        "l1",
        DeleteMode::Hard,
        batch(&[(1, "a", 100, false), (2, "b", 100, false)], None),
    )
    .await
    .unwrap();
    t.merge("l2", DeleteMode::Hard, batch(&[(1, "a", 300, true)], None))
        .await
        .unwrap();
    for (load, rows) in [
        ("l3", [(1, "a", 200, true)]),
        ("l4", [(1, "a-old", 250, false)]),
    ] {
        let outcome = t
            .merge(load, DeleteMode::Soft, batch(&rows, None))
            .await
            .unwrap();
        assert_eq!(counts(&outcome), (0, 0, 0), "{load}: {outcome:?}");
        assert_eq!(t.people(true).await, ["2|b|100|f"], "after {load}");
    }
    t.merge(
        "l5",
        DeleteMode::Soft,
        batch(&[(1, "a-new", 400, false)], None),
    )
    .await
    .unwrap();
    assert_eq!(t.people(true).await, ["1|a-new|400|f", "2|b|100|f"]);
}

/// One `#[tokio::test]` per merge case for the destination `$dut`, named after the case.
/// A load into an empty table (the direct path where a destination has one) writes every
/// row once with its load id, is in the ledger, and its replay changes nothing; the next load
/// merges over it as ever.
async fn a_first_load_is_applied_once_and_its_replay_changes_nothing<D: DestinationUnderTest>() {
    for deletes in [DeleteMode::Hard, DeleteMode::Soft] {
        let t = Target::<D>::start().await;
        let soft = deletes == DeleteMode::Soft;
        let rows = batch(
            &[
                (1, "a", 100, false),
                (2, "b", 100, false),
                (3, "c", 100, false),
            ],
            None,
        );
        let first = t.merge("l1", deletes, rows.clone()).await.unwrap();
        assert_eq!(counts(&first), (3, 0, 0), "{first:?}");
        assert_eq!(first.timings.direct_copy, D::COPIES_INTO_EMPTY, "{first:?}");
        assert_eq!(first.received, batch_fingerprint(&rows, "id").unwrap());
        assert!(t.dest().is_committed("people", "l1").await.unwrap());
        let entry = t.dest().last_load("people").await.unwrap().unwrap();
        assert_eq!((entry.load_id.as_str(), entry.rows), ("l1", 3));
        let live = if soft { "|f" } else { "" };
        let expected: Vec<String> = ["1|a|l1|100", "2|b|l1|100", "3|c|l1|100"]
            .iter()
            .map(|row| format!("{row}{live}"))
            .collect();
        assert_eq!(
            t.rows(&["id", "name", "_syncline_load_id"], soft).await,
            expected
        );

        let replay = t.merge("l1", deletes, rows).await.unwrap();
        assert!(replay.skipped, "{replay:?}");
        assert_eq!(
            t.rows(&["id", "name", "_syncline_load_id"], soft).await,
            expected
        );

        // The table has rows now: the general path, newest wins, older never over newer.
        let second = t
            .merge(
                "l2",
                deletes,
                batch(&[(1, "a-new", 200, false), (2, "b-old", 50, false)], None),
            )
            .await
            .unwrap();
        assert_eq!(counts(&second), (0, 1, 0), "{second:?}");
        assert!(!second.timings.direct_copy, "{second:?}");
        let expected: Vec<String> = ["1|a-new|200", "2|b|100", "3|c|100"]
            .iter()
            .map(|row| format!("{row}{live}"))
            .collect();
        assert_eq!(t.people(soft).await, expected);
    }
}

/// A key twice in a load into an empty table: the newest version wins, whatever the order
/// (the direct path gives up on the repeated key and the general path de-duplicates).
async fn a_first_load_with_a_repeated_key_keeps_the_newest_version<D: DestinationUnderTest>() {
    let t = Target::<D>::start().await;
    let outcome = t
        .merge(
            "l1",
            DeleteMode::Hard,
            batch(
                &[
                    (1, "a-new", 200, false),
                    (2, "b", 100, false),
                    (1, "a-old", 100, false),
                    (3, "c-old", 100, false),
                    (3, "c-new", 300, false),
                ],
                None,
            ),
        )
        .await
        .unwrap();
    assert_eq!(counts(&outcome), (3, 0, 0), "{outcome:?}");
    assert!(!outcome.timings.direct_copy, "{outcome:?}");
    assert_eq!(
        t.people(false).await,
        ["1|a-new|200", "2|b|100", "3|c-new|300"]
    );
    assert!(t.dest().is_committed("people", "l1").await.unwrap());
    // Nothing of the abandoned copy is left: a replay is skipped, a re-send changes nothing.
    assert!(
        t.merge("l1", DeleteMode::Hard, batch(&[(9, "z", 1, false)], None))
            .await
            .unwrap()
            .skipped
    );
    let again = t
        .merge("l2", DeleteMode::Hard, batch(&[(2, "b", 100, false)], None))
        .await
        .unwrap();
    assert_eq!(counts(&again), (0, 0, 0), "{again:?}");
}

/// Deletes in a load into an empty table are remembered (a tombstone, or a row marked
/// deleted), so an older version arriving later cannot bring the key back.
async fn a_first_load_with_deletes_remembers_them<D: DestinationUnderTest>() {
    for deletes in [DeleteMode::Hard, DeleteMode::Soft] {
        let t = Target::<D>::start().await;
        let soft = deletes == DeleteMode::Soft;
        let first = t
            .merge(
                "l1",
                deletes,
                batch(&[(1, "a", 100, false), (2, "b", 200, true)], None),
            )
            .await
            .unwrap();
        assert!(!first.timings.direct_copy, "{first:?}");
        assert_eq!(first.inserted, 1, "{first:?}");
        let late = t
            .merge("l2", deletes, batch(&[(2, "b-old", 150, false)], None))
            .await
            .unwrap();
        assert_eq!(late.inserted + late.updated, 0, "{deletes:?}: {late:?}");
        let expected: Vec<&str> = if soft {
            vec!["1|a|100|f", "2|null|200|t"]
        } else {
            vec!["1|a|100"]
        };
        assert_eq!(t.people(soft).await, expected, "{deletes:?}");
    }
}

macro_rules! every_case {
    ($dut:ty) => {
        $crate::merge::every_case!(@each $dut:
            newest_version_wins_and_older_never_overwrites_newer,
            soft_deletes_and_undeletes,
            a_new_source_column_becomes_a_new_column,
            a_column_the_source_stops_sending_keeps_its_values,
            a_load_that_differs_from_its_manifest_changes_nothing,
            an_incompatible_type_change_is_schema_drift,
            a_float_load_into_an_integer_column_never_rounds_it,
            an_empty_load_is_recorded,
            a_hard_deleted_row_stays_deleted_against_older_resends,
            a_delete_of_an_unseen_key_holds_against_older_versions,
            a_delete_wins_a_tie_across_loads,
            tombstones_keep_holding_after_a_move_to_soft_deletes,
            merge_equals_the_model_in_any_load_split,
            a_first_load_is_applied_once_and_its_replay_changes_nothing,
            a_first_load_with_a_repeated_key_keeps_the_newest_version,
            a_first_load_with_deletes_remembers_them,
            a_complete_full_load_deletes_the_rows_the_source_lacks,
            a_complete_full_load_marks_the_rows_the_source_lacks_deleted,
        );
    };
    (@each $dut:ty: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::merge::$case::<$dut>().await;
            }
        )*
    };
}
pub(crate) use every_case;
