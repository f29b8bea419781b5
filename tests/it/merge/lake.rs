//! The merge cases against the lake destination: a Delta table in a temp folder, read back
//! through DataFusion as `syncline query` and other engines read it.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::TimestampMillisecondType;
use arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use deltalake::kernel::{DataType as DeltaType, StructField};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use syncline::destinations::lake::LakeDestination;
use syncline::destinations::{Destination, LedgerEntry, MergeOutcome, MergeRequest};
use syncline::load::{DeleteMode, SchemaChange};
use syncline::reconcile::Fingerprint;
use syncline::schema::timestamp_type;

use super::{DestinationUnderTest, Target, batch};

pub(super) struct Lake {
    /// Kept until the test ends: the lake's folder.
    _dir: tempfile::TempDir,
    root: String,
    dest: LakeDestination,
}

impl DestinationUnderTest for Lake {
    const TYPE_NAMES: (&'static str, &'static str) = ("string", "long");
    /// Delta column names (without column mapping) cannot hold spaces, so no quoting is needed.
    const NEW_COLUMN: &'static str = "tier";
    /// Each load is two Delta commits (tombstones, then the table).
    const PROPERTY_CASES: u32 = 12;

    async fn start(_stage: &Path) -> Lake {
        let dir = tempfile::tempdir().unwrap();
        let root = format!("file://{}/lake", dir.path().display());
        let dest = LakeDestination::new(&root, HashMap::new()).unwrap();
        Lake {
            _dir: dir,
            root,
            dest,
        }
    }

    fn destination(&self) -> &dyn Destination {
        &self.dest
    }

    async fn rows(&self, table: &str, columns: &[&str], soft: bool) -> Vec<String> {
        lake_rows(&self.dest, table, columns, soft).await
    }
}

super::every_case!(Lake);

/// [`DestinationUnderTest::rows`] of a lake table, read through DataFusion.
async fn lake_rows(
    dest: &LakeDestination,
    table: &str,
    columns: &[&str],
    soft: bool,
) -> Vec<String> {
    let delta = dest
        .open_table(table)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the {table} table exists"));
    let ctx = SessionContext::new();
    ctx.register_table("people", delta.table_provider().await.unwrap())
        .unwrap();
    let mut exprs: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    exprs.push("_syncline_version".into());
    if soft {
        exprs.push("CASE WHEN _syncline_deleted_at IS NULL THEN 'f' ELSE 't' END".into());
    }
    let sql = format!("SELECT {} FROM people", exprs.join(", "));
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for batch in &batches {
        let versions = cast(batch.column(columns.len()), &timestamp_type()).unwrap();
        let versions = versions.as_primitive::<TimestampMillisecondType>();
        for row in 0..batch.num_rows() {
            let mut cells: Vec<String> = (0..columns.len())
                .map(|i| match batch.column(i).is_null(row) {
                    true => "null".to_string(),
                    false => array_value_to_string(batch.column(i), row).unwrap(),
                })
                .collect();
            cells.push(versions.value(row).to_string());
            if soft {
                cells.push(array_value_to_string(batch.column(columns.len() + 1), row).unwrap());
            }
            out.push(cells.join("|"));
        }
    }
    out
}

/// The column [`ForeignLake`] adds to each table: an `integer`, a type syncline never writes.
const FOREIGN_COLUMN: &str = "foreign_score";

/// The lake after another tool added a column of a type syncline never writes to each table
/// syncline created: every case runs through delta-rs's MERGE, which takes such a table where
/// syncline's rewrite does not ([`a_table_with_a_column_of_a_foreign_type_is_merged_by_delta_rs`]).
pub(super) struct ForeignLake {
    lake: Lake,
    dest: WithForeignColumn,
}

impl DestinationUnderTest for ForeignLake {
    const TYPE_NAMES: (&'static str, &'static str) = Lake::TYPE_NAMES;
    const NEW_COLUMN: &'static str = Lake::NEW_COLUMN;
    const PROPERTY_CASES: u32 = Lake::PROPERTY_CASES;

    async fn start(stage: &Path) -> ForeignLake {
        let lake = Lake::start(stage).await;
        let dest = WithForeignColumn(LakeDestination::new(&lake.root, HashMap::new()).unwrap());
        ForeignLake { lake, dest }
    }

    fn destination(&self) -> &dyn Destination {
        &self.dest
    }

    async fn rows(&self, table: &str, columns: &[&str], soft: bool) -> Vec<String> {
        self.lake.rows(table, columns, soft).await
    }
}

/// The lake destination, with [`FOREIGN_COLUMN`] added to a table as soon as it exists.
struct WithForeignColumn(LakeDestination);

#[async_trait::async_trait]
impl Destination for WithForeignColumn {
    async fn check(&self) -> syncline::Result<()> {
        self.0.check().await
    }

    async fn ensure_table(&self, request: &MergeRequest) -> syncline::Result<SchemaChange> {
        let change = self.0.ensure_table(request).await?;
        let table = self.0.open_table(&request.table).await?.expect("ensured");
        let has_it = table
            .snapshot()
            .unwrap()
            .schema()
            .fields()
            .any(|f| f.name() == FOREIGN_COLUMN);
        if !has_it {
            table
                .add_columns()
                .with_fields([StructField::new(FOREIGN_COLUMN, DeltaType::INTEGER, true)])
                .await
                .expect("add a column of a foreign type");
        }
        Ok(change)
    }

    async fn merge(
        &self,
        request: &MergeRequest,
        batches: BoxStream<'static, syncline::Result<RecordBatch>>,
    ) -> syncline::Result<MergeOutcome> {
        self.0.merge(request, batches).await
    }

    async fn is_committed(&self, stream: &str, load_id: &str) -> syncline::Result<bool> {
        self.0.is_committed(stream, load_id).await
    }

    async fn table_fingerprint(
        &self,
        table: &str,
        key: &str,
        deletes: DeleteMode,
    ) -> syncline::Result<Option<Fingerprint>> {
        self.0.table_fingerprint(table, key, deletes).await
    }

    async fn last_load(&self, stream: &str) -> syncline::Result<Option<LedgerEntry>> {
        self.0.last_load(stream).await
    }
}

mod foreign {
    crate::merge::every_case!(super::ForeignLake);
}

/// Which merge wrote a table's last commit: delta-rs's MERGE records its clauses' predicates,
/// syncline's rewrite none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_a_column_of_a_foreign_type_is_merged_by_delta_rs() {
    async fn last_merge_clauses<D: DestinationUnderTest>(
        t: &Target<D>,
        dest: &LakeDestination,
    ) -> String {
        for (load, rows) in [
            ("l1", &[(1, "a", 100, false), (2, "b", 100, false)][..]),
            ("l2", &[(1, "a2", 200, false), (3, "c", 200, false)][..]),
        ] {
            t.merge(load, DeleteMode::Hard, batch(rows, None))
                .await
                .unwrap();
        }
        assert_eq!(t.people(false).await, ["1|a2|200", "2|b|100", "3|c|200"]);
        let table = dest.open_table("people").await.unwrap().unwrap();
        let mut history = table.history(Some(1));
        let last = history.try_next().await.unwrap().expect("a commit");
        assert_eq!(last.operation.as_deref(), Some("MERGE"));
        last.operation_parameters.unwrap()["matchedPredicates"].to_string()
    }
    let plain = Target::<Lake>::start().await;
    let rewritten = last_merge_clauses(&plain, &plain.dut.dest).await;
    assert_eq!(rewritten, r#""[]""#, "syncline's rewrite");
    let foreign = Target::<ForeignLake>::start().await;
    let merged = last_merge_clauses(&foreign, &foreign.dut.lake.dest).await;
    assert!(merged.contains("update"), "delta-rs's MERGE: {merged}");
}
