//! SQL text shared by everything that writes SQL (PostgreSQL, Snowflake and DataFusion all
//! quote identifiers the same way): identifier quoting, qualified names, the renderer of
//! the `{name}` templates under `sql/`, and the DataFusion session every query syncline
//! bounds in memory runs in.

mod template;

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

#[cfg(test)]
pub(crate) use template::script;
pub(crate) use template::{render, with_vars};

/// Quotes an identifier: wraps it in double quotes and doubles embedded ones, so any name from
/// CRM metadata or a source catalog is taken literally, case and all.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// A DataFusion session whose operators hold about `memory` bytes between them and spill to
/// disk (under `TMPDIR`) past it.
///
/// Its queries run in one partition, so no plan holds a hash repartition, which under a
/// memory limit failed or stopped syncline's loads in two ways:
/// - DataFusion's default pool is first come, first served: in a full load into the lake,
///   the repartition of the check for repeated keys queued 28 of its 32 MiB while its
///   consumers were busy, and the aggregation after it, holding nothing it could spill,
///   failed the load with "Resources exhausted" (one W4 run in ten in the peer harness);
/// - past the limit the repartition spills to a pool of files, and in DataFusion 55 the
///   reader of that pool can wait forever on a drained file while the batch it needs is in
///   the next one: the query never returns and never fails
///   (<https://github.com/apache/datafusion/issues/24883>, fixed after 55). Such a hang is
///   the likeliest cause of the `lake_memory` test that stopped CI for 85 minutes (it did
///   not show here).
///
/// The pool is also fair (each operator that can spill may hold an equal share), so that a
/// plan with several such operators, a sort and its merge, cannot starve one the same way.
pub(crate) fn bounded_session(memory: usize) -> datafusion::error::Result<SessionContext> {
    const REPORTED_CONSUMERS: NonZeroUsize = NonZeroUsize::new(5).expect("5 is not zero");
    let pool = TrackConsumersPool::new(FairSpillPool::new(memory), REPORTED_CONSUMERS);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .build_arc()?;
    let config = SessionConfig::new().with_target_partitions(1);
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

#[cfg(test)]
mod tests {
    use datafusion::execution::memory_pool::MemoryConsumer;

    use super::*;

    /// What failed a lake load: one operator queueing most of the pool while another, holding
    /// nothing it could spill, could not start. In the bounded session an operator that can
    /// spill gets no more than its share, so the other's first allocation succeeds.
    #[test]
    fn no_operator_of_a_bounded_session_takes_the_memory_another_needs_to_start() {
        let ctx = bounded_session(32 << 20).unwrap();
        let pool = &ctx.runtime_env().memory_pool;
        let queue = MemoryConsumer::new("queue")
            .with_can_spill(true)
            .register(pool);
        let aggregation = MemoryConsumer::new("aggregation")
            .with_can_spill(true)
            .register(pool);
        assert!(
            queue.try_grow(28 << 20).is_err(),
            "a spilling operator took more than its share"
        );
        queue.try_grow(16 << 20).unwrap();
        aggregation.try_grow(672 << 10).unwrap();
    }

    /// A grouped aggregation under a memory limit too small for it, the shape of
    /// apache/datafusion#24883: in two partitions its plan holds the hash repartition whose
    /// spill pool can stop the query for good (the hang itself depends on timing and did not
    /// show here in 40 runs of this query in two partitions). In the bounded session the plan
    /// holds none, and the query completes, its aggregation spilling instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bounded_query_past_its_memory_limit_holds_no_repartition_and_completes() {
        use std::time::Duration;

        use datafusion::physical_plan::displayable;

        let ctx = bounded_session(4 << 20).unwrap();
        ctx.sql(
            "CREATE TABLE events AS SELECT v % 13 AS g,
               CASE WHEN v % 29 = 0 THEN NULL ELSE md5(CAST(v % 337 AS VARCHAR)) END AS trace
             FROM generate_series(1, 40000) AS t(v)",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        let query = ctx
            .sql(
                "SELECT g, count(DISTINCT arrow_cast(trace, 'Utf8View')) AS n
                 FROM events GROUP BY g",
            )
            .await
            .unwrap();
        let plan = query.clone().create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(!shown.contains("RepartitionExec"), "{shown}");
        let rows = tokio::time::timeout(Duration::from_secs(60), query.collect())
            .await
            .expect("the query completes")
            .unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 13);
    }

    #[test]
    fn quote_ident_wraps_and_doubles_quotes() {
        assert_eq!(quote_ident("FirstName"), r#""FirstName""#);
        assert_eq!(
            quote_ident(r#"x"; DROP TABLE t; --"#),
            r#""x""; DROP TABLE t; --""#
        );
        assert_eq!(quote_ident(""), r#""""#);
        assert_eq!(qualified("a\"b", "c"), r#""a""b"."c""#);
    }
}
