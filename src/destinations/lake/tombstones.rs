//! Hard deletes' tombstones in the lake: one side Delta table per stream table, at
//! `{root}/_syncline_tombstones/{table}`, holding the key (in the key's own type), the newest
//! delete version any load carried for it (`_syncline_version`) and the load that recorded it
//! (`_syncline_load_id`). The rules are those of `destinations::plan`; the table a query or a
//! model reads never holds deleted rows.
//!
//! The side table is its own Delta table, so recording a load's tombstones is one commit and
//! the merge of the table another, made after it. A crash between the two leaves tombstones for
//! deletes the table has not had yet; that is safe because a tombstone depends only on the
//! load's deletes (never on the table), its version only ever rises, and it only holds back
//! live rows older than a delete the source did send. The load is not in the table's log, so
//! the next run merges it again: recording its tombstones again changes nothing (delta-rs makes
//! no commit), and the merge then applies the load once. The other order would be unsafe: a
//! merge committed before its tombstones marks the load applied, and a retry would skip it, so
//! its tombstones would never be written.

use datafusion::common::{Column, TableReference};
use datafusion::logical_expr::{Expr, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use deltalake::kernel::StructField;
use deltalake::protocol::SaveMode;

use crate::Result;
use crate::schema::{DELETED_COLUMN, LOAD_ID_COLUMN, VERSION_COLUMN};

use super::error::StepExt;
use super::types::{Column as LakeColumn, LakeType, TableLayout};

/// The folder under the lake root holding every stream table's tombstones. Stream tables cannot
/// be named so: `_syncline_` is a reserved prefix.
pub(crate) const TOMBSTONES_FOLDER: &str = "_syncline_tombstones";

const SOURCE_ALIAS: &str = "source";
const TARGET_ALIAS: &str = "target";

/// The Delta schema of a table's tombstones.
fn fields(layout: &TableLayout) -> Vec<StructField> {
    let key_type = layout
        .staged
        .iter()
        .find(|column| column.name == layout.key)
        .map_or(LakeType::String, |column| column.ty);
    [
        LakeColumn::new(layout.key.clone(), key_type),
        LakeColumn::new(VERSION_COLUMN, LakeType::Timestamp),
        LakeColumn::new(LOAD_ID_COLUMN, LakeType::String),
    ]
    .iter()
    .map(LakeColumn::struct_field)
    .collect()
}

/// Records a tombstone for every delete among `deduplicated` (the load, one row per key), or
/// raises an older one to the delete's version, in one commit to the side table `side`
/// (`existing` when it exists already, else created here). Returns the side table after it.
pub(crate) async fn record(
    side: DeltaTable,
    existing: Option<DeltaTable>,
    layout: &TableLayout,
    load_id: &str,
    ctx: &SessionContext,
    deduplicated: DataFrame,
) -> Result<DeltaTable> {
    let table = match existing {
        Some(table) => table,
        None => side
            .create()
            .with_columns(fields(layout))
            // Another writer cannot have made it (the stream is locked); a leftover from a
            // crash between creating it and the first commit is taken as it is.
            .with_save_mode(SaveMode::Ignore)
            .await
            .step("create the tombstone table")?,
    };
    let deletes = deduplicated
        .filter(Expr::Column(Column::new_unqualified(DELETED_COLUMN)))
        .step("select the load's deletes")?
        .select(vec![
            Expr::Column(Column::new_unqualified(layout.key.as_str())),
            Expr::Column(Column::new_unqualified(VERSION_COLUMN)),
        ])
        .step("select the load's deletes")?;
    let (table, _metrics) = table
        .merge(deletes, target(&layout.key).eq(source(&layout.key)))
        .with_source_alias(SOURCE_ALIAS)
        .with_target_alias(TARGET_ALIAS)
        .with_session_state(std::sync::Arc::new(ctx.state()))
        .with_writer_properties(super::data_file_properties())
        .when_matched_update(|update| {
            update
                .predicate(source(VERSION_COLUMN).gt(target(VERSION_COLUMN)))
                .update(VERSION_COLUMN, source(VERSION_COLUMN))
                .update(LOAD_ID_COLUMN, lit(load_id.to_owned()))
        })
        .step("plan the tombstones")?
        .when_not_matched_insert(|insert| {
            insert
                .set(layout.key.as_str(), source(&layout.key))
                .set(VERSION_COLUMN, source(VERSION_COLUMN))
                .set(LOAD_ID_COLUMN, lit(load_id.to_owned()))
        })
        .step("plan the tombstones")?
        .await
        .step("record the tombstones")?;
    Ok(table)
}

fn source(name: &str) -> Expr {
    Expr::Column(Column::new(Some(TableReference::bare(SOURCE_ALIAS)), name))
}

fn target(name: &str) -> Expr {
    Expr::Column(Column::new(Some(TableReference::bare(TARGET_ALIAS)), name))
}
