//! The merge cases against the Snowflake destination on the fakesnow emulator, which loads the
//! staged files itself (`COPY INTO` from the local stage) rather than the batches.

use std::path::Path;

use syncline::destinations::Destination;
use syncline::destinations::snowflake::SnowflakeDestination;

use super::DestinationUnderTest;
use crate::support::snowflake::TestSnowflake;

pub(super) struct Snowflake {
    emulator: TestSnowflake,
    dest: SnowflakeDestination,
}

impl DestinationUnderTest for Snowflake {
    const TYPE_NAMES: (&'static str, &'static str) = ("TEXT", "NUMBER");
    const NEW_COLUMN: &'static str = "Lead Score";
    const MERGES_EMPTY_LOADS: bool = false;
    /// The emulator takes about a second a load.
    const PROPERTY_CASES: u32 = 12;

    async fn start(stage: &Path) -> Snowflake {
        let emulator = TestSnowflake::start().await;
        let config = emulator.config(stage);
        let dest = SnowflakeDestination::new(&config, &format!("file://{}", stage.display()))
            .expect("a snowflake destination");
        Snowflake { emulator, dest }
    }

    fn destination(&self) -> &dyn Destination {
        &self.dest
    }

    async fn rows(&self, table: &str, columns: &[&str], soft: bool) -> Vec<String> {
        let mut exprs: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
        exprs.push("TO_VARCHAR(DATE_PART(EPOCH_MILLISECOND, \"_syncline_version\"))".into());
        if soft {
            exprs.push("CASE WHEN \"_syncline_deleted_at\" IS NULL THEN 'f' ELSE 't' END".into());
        }
        let sql = format!("SELECT {} FROM \"crm\".\"{table}\"", exprs.join(", "));
        self.emulator
            .rows(&sql)
            .await
            .into_iter()
            .map(|row| {
                let cells: Vec<String> = row
                    .into_iter()
                    .map(|cell| cell.unwrap_or_else(|| "null".to_string()))
                    .collect();
                cells.join("|")
            })
            .collect()
    }
}

super::every_case!(Snowflake);
