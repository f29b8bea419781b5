//! The merge cases against the PostgreSQL destination on a throwaway cluster.

use std::path::Path;

use syncline::destinations::Destination;
use syncline::destinations::postgres::PostgresDestination;

use super::DestinationUnderTest;
use crate::support::{TestPostgres, connect};

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
