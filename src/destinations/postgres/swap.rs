//! Model tables (`transform::materialize`): a table is built beside its target and then
//! swapped in, in one transaction, so a reader sees the old table or the new one, never a
//! half-filled or missing one (a reader blocked on the swap's lock resolves the name again
//! once it commits, and reads the new table).

use crate::Result;
use crate::sql::{qualified, quote_ident, render};

use super::{PgResultExt, PostgresDestination};

const DROP_TABLE: &str = include_str!("../../../sql/postgres/drop_table.sql");
const RENAME_TABLE: &str = include_str!("../../../sql/postgres/rename_table.sql");
const PRIMARY_KEY_NAME: &str = include_str!("../../../sql/postgres/primary_key_name.sql");
const RENAME_CONSTRAINT: &str = include_str!("../../../sql/postgres/rename_constraint.sql");

/// PostgreSQL's default name for a table's primary key, within the 63-byte identifier limit.
fn pkey_name(table: &str) -> String {
    let mut end = table.len().min(58);
    while !table.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}_pkey", &table[..end])
}

impl PostgresDestination {
    pub(super) async fn drop_model_table(&self, table: &str) -> Result<()> {
        let client = self.client.lock().await;
        client
            .batch_execute(&render(
                DROP_TABLE,
                &[("table", qualified(&self.schema, table).as_str())],
            ))
            .await
            .step("drop the table")?;
        Ok(())
    }

    pub(super) async fn swap_model_table(&self, build: &str, target: &str) -> Result<()> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.step("begin the swap")?;
        let built = qualified(&self.schema, build);
        let pkey: Option<String> = tx
            .query_opt(PRIMARY_KEY_NAME, &[&built])
            .await
            .step("read the built table's primary key")?
            .map(|row| row.get(0));
        tx.batch_execute(&render(
            DROP_TABLE,
            &[("table", qualified(&self.schema, target).as_str())],
        ))
        .await
        .step("drop the previous table")?;
        tx.batch_execute(&render(
            RENAME_TABLE,
            &[
                ("table", built.as_str()),
                ("new_name", quote_ident(target).as_str()),
            ],
        ))
        .await
        .step("rename the built table")?;
        // The next build creates its key under the build's default name again.
        if let Some(pkey) = pkey {
            tx.batch_execute(&render(
                RENAME_CONSTRAINT,
                &[
                    ("table", qualified(&self.schema, target).as_str()),
                    ("from", quote_ident(&pkey).as_str()),
                    ("to", quote_ident(&pkey_name(target)).as_str()),
                ],
            ))
            .await
            .step("rename the primary key")?;
        }
        tx.commit().await.step("commit the swap")?;
        Ok(())
    }
}
