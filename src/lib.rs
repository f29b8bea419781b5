//! syncline: CRM sources → Arrow batches → Parquet staging → exactly-once merge into a warehouse.
//!
//! The modules follow the data: `sources` extract, `stage` writes Parquet and manifests,
//! `destinations` merge, `state` remembers how far each stream got, `reconcile` proves
//! every hop carried the same rows, and `pipeline` orchestrates them. `sim` is the built-in
//! CRM simulator used by tests, benchmarks and the demo.

pub mod cli;
pub mod config;
pub mod demo;
pub mod destinations;
pub mod error;
pub mod failpoints;
pub mod init;
mod layers;
pub mod load;
pub mod orchestrate;
pub mod pipeline;
pub mod reconcile;
pub mod schema;
pub mod sim;
pub mod sources;
pub mod sql;
pub mod stage;
pub mod state;
pub mod status;
pub mod storage;
pub mod stream;
pub mod tls;
pub mod transform;
pub mod ui;
pub mod values;

pub use error::{Error, Result};
