//! Orchestration: runs streams through the configured source, stage and destination, and
//! proves before a run that all three answer (`syncline check`).

pub mod batch;
pub mod check;
pub mod deadletters;
pub mod loads;
pub mod reconcile;

pub use batch::{RunOptions, run};
pub use check::{CheckOptions, check};
pub use reconcile::{ReconcileOptions, ReconcileReport, reconcile};
