//! `syncline stream`: the long-running micro-batch mode (issue 15).

pub mod webhook;
