//! What orchestrators (Dagster, Airflow) get from syncline beside exit codes: the pipeline's
//! plan as data (`syncline plan --json`, from which they build one asset or task per
//! stream), and Dagster Pipes spoken by `syncline run` itself, so each stream's load arrives
//! in Dagster as a materialization with its figures and a reconciliation check.

pub mod pipes;
pub mod plan;
