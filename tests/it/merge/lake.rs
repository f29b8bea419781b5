//! The merge cases against the lake destination: a Delta table in a temp folder, read back
//! through DataFusion as `syncline query` and other engines read it.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::TimestampMillisecondType;
use arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use syncline::destinations::Destination;
use syncline::destinations::lake::LakeDestination;
use syncline::schema::timestamp_type;

use super::DestinationUnderTest;

pub(super) struct Lake {
    /// Kept until the test ends: the lake's folder.
    _dir: tempfile::TempDir,
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
        Lake { _dir: dir, dest }
    }

    fn destination(&self) -> &dyn Destination {
        &self.dest
    }

    async fn rows(&self, table: &str, columns: &[&str], soft: bool) -> Vec<String> {
        let delta = self
            .dest
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
                    cells
                        .push(array_value_to_string(batch.column(columns.len() + 1), row).unwrap());
                }
                out.push(cells.join("|"));
            }
        }
        out
    }
}

super::every_case!(Lake);
