//! The integration tests, in one binary so DataFusion and delta-rs are linked once: the
//! `syncline` binary and the pipeline against real servers each test starts for itself
//! (throwaway PostgreSQL clusters, the CRM simulator, the Snowflake emulator, moto), and the
//! merge contract run against every destination.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod crash;
mod decimals;
mod demo;
mod docs;
mod files_source;
mod hostile_values;
mod hubspot_postgres;
mod hubspot_snowflake;
mod lake_memory;
mod merge;
mod models;
mod models_memory;
mod models_slt;
mod object_storage;
mod orchestrators;
mod postgres_source;
mod query_memory;
mod reconcile;
mod salesforce_postgres;
mod staged_loads;
mod stream;
mod stuck_loads;
mod tls;
mod transform_slt;
mod transforms;
mod ui;
mod webhooks;
