//! Orchestration: runs streams through the configured source, stage and destination, and
//! proves before a run that all three answer (`syncline check`).

pub mod batch;
pub mod check;
pub mod deadletters;
pub mod loads;
pub mod reconcile;
pub mod transform;

pub use batch::{RunOptions, run, run_observed};
pub use check::{CheckOptions, check};
pub use reconcile::{ReconcileOptions, ReconcileReport, reconcile};
