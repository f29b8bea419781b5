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
/// The pool is fair: each operator that can spill may hold an equal share of it. DataFusion's
/// default pool is first come, first served, and there one operator could take all of it: in
/// a full load into the lake, the hash repartition of the key check queued 28 of its 32 MiB
/// while its consumers were busy, and the aggregation after it, holding nothing it could
/// spill, failed the load with "Resources exhausted" (one run in ten of the peer harness's
/// W4). With a share each, every operator can start, and one that needs more spills.
pub(crate) fn bounded_session(memory: usize) -> datafusion::error::Result<SessionContext> {
    const REPORTED_CONSUMERS: NonZeroUsize = NonZeroUsize::new(5).expect("5 is not zero");
    let pool = TrackConsumersPool::new(FairSpillPool::new(memory), REPORTED_CONSUMERS);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .build_arc()?;
    Ok(SessionContext::new_with_config_rt(
        SessionConfig::new(),
        runtime,
    ))
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
