//! The merge cases against the lake destination: a Delta table in a temp folder, read back
//! through DataFusion as `syncline query` and other engines read it.

use std::collections::{BTreeSet, HashMap};
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

/// The lake merging in passes of two keys: every load of more than two rows into a table with
/// rows is merged in several passes (`destination.merge_keys_per_pass`), each of which reads
/// and writes again the files the passes before it wrote.
pub(super) struct PassesLake(Lake);

impl DestinationUnderTest for PassesLake {
    const TYPE_NAMES: (&'static str, &'static str) = Lake::TYPE_NAMES;
    const NEW_COLUMN: &'static str = Lake::NEW_COLUMN;
    const PROPERTY_CASES: u32 = Lake::PROPERTY_CASES;

    async fn start(stage: &Path) -> PassesLake {
        let mut lake = Lake::start(stage).await;
        lake.dest = LakeDestination::new(&lake.root, HashMap::new())
            .unwrap()
            .with_merge_keys_per_pass(2);
        PassesLake(lake)
    }

    fn destination(&self) -> &dyn Destination {
        &self.0.dest
    }

    async fn rows(&self, table: &str, columns: &[&str], soft: bool) -> Vec<String> {
        self.0.rows(table, columns, soft).await
    }
}

mod passes {
    crate::merge::every_case!(super::PassesLake);
}

/// A merge in passes is one commit, and leaves no data file behind that the table does not
/// reference: a file a pass wrote and a later pass wrote again is deleted before the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_in_passes_is_one_commit_and_leaves_no_file_behind() {
    let t = Target::<PassesLake>::start().await;
    let first: Vec<_> = (1..=40).map(|id| (id, "a", 100, false)).collect();
    t.merge("l1", DeleteMode::Hard, batch(&first, None))
        .await
        .unwrap();
    let dir = format!("{}/people", t.dut.0.root.trim_start_matches("file://"));
    let parquet_files = || -> BTreeSet<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".parquet"))
            .collect()
    };
    let first_files = parquet_files();
    let before = t.dut.0.dest.open_table("people").await.unwrap().unwrap();

    // Every row of the table changes, in 25 passes of about two keys, and ten rows are new.
    let second: Vec<_> = (1..=50).map(|id| (id, "b", 200, id % 7 == 0)).collect();
    let outcome = t
        .merge("l2", DeleteMode::Hard, batch(&second, None))
        .await
        .unwrap();
    let deleted = (1..=40).filter(|id| id % 7 == 0).count() as u64;
    let inserted = (41..=50).filter(|id| id % 7 != 0).count() as u64;
    assert_eq!(
        (outcome.inserted, outcome.updated, outcome.deleted),
        (inserted, 40 - deleted, deleted)
    );
    let mut expected: Vec<String> = (1..=50)
        .filter(|id| id % 7 != 0)
        .map(|id| format!("{id}|b|200"))
        .collect();
    expected.sort();
    assert_eq!(t.people(false).await, expected);

    let table = t.dut.0.dest.open_table("people").await.unwrap().unwrap();
    assert_eq!(
        table.version(),
        before.version().map(|v| v + 1),
        "the merge is one commit"
    );
    let referenced: BTreeSet<String> = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|file| file.path().into_owned())
        .collect();
    // On disk: the table's files, and the first load's, which the merge removed from the table
    // and `VACUUM` deletes; nothing an earlier pass wrote.
    let kept: BTreeSet<String> = referenced.union(&first_files).cloned().collect();
    assert_eq!(parquet_files(), kept);
    assert!(
        referenced.is_disjoint(&first_files),
        "every file was written again"
    );
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
