//! Failure injection for crash tests: named points where a test can make the process die
//! as an operator's `kill -9` or the OOM killer would, to prove that a re-run converges.
//!
//! `SYNCLINE_CRASH_AT=<point>` kills the process with SIGKILL when it reaches that point.
//! The points: `after-stage` (manifest written and load pending, nothing merged),
//! `after-merge` (destination committed, state not yet saved), `lake-files-written` (a lake
//! merge into a table with rows has written its data files, not committed them),
//! `lake-pass-written` (a lake merge in passes has written one pass's files, not the next's) and
//! `cdc-mid-stream` (the CDC
//! reader has decoded part of the WAL), and for the flushes of `syncline stream` (not its
//! first, catch-up load: its CDC flushes and the loads of records its webhook hints name;
//! `reconcile --repair`'s load too, a repair like the latter) `flush-after-stage` and
//! `flush-after-merge`. The variable is documented in the README; nothing
//! happens when it is unset.
//!
//! `SYNCLINE_STOP_AT=<point>` stops the process (SIGSTOP) there instead, as a long pause or a
//! suspended machine would: a test lets its lease expire, then continues it with SIGCONT.
//!
//! `SYNCLINE_STALL_AT=<point>` makes the run wait there, alive, until the file
//! `SYNCLINE_STALL_UNTIL` names exists, as a slow destination would: its background work (the
//! lease renewals) goes on, so a test can hold a run past its lease TTL. Only `after-stage`
//! stalls.

use tracing::warn;

/// Kills the process here when `SYNCLINE_CRASH_AT` names `point`.
pub fn crash_point(point: &str) {
    if std::env::var("SYNCLINE_STOP_AT").is_ok_and(|at| at == point) {
        warn!(point, "SYNCLINE_STOP_AT: stopping the process");
        // SAFETY: raising a signal on our own process has no memory-safety effect.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
    if std::env::var("SYNCLINE_CRASH_AT").is_ok_and(|at| at == point) {
        warn!(point, "SYNCLINE_CRASH_AT: killing the process");
        // SAFETY: raising a signal on our own process has no memory-safety effect.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}

/// Waits here while `SYNCLINE_STALL_AT` names `point` and the file `SYNCLINE_STALL_UNTIL`
/// names does not exist yet. The wait is asynchronous: the process's other tasks run on.
pub async fn stall_point(point: &str) {
    if !std::env::var("SYNCLINE_STALL_AT").is_ok_and(|at| at == point) {
        return;
    }
    let Some(until) = std::env::var_os("SYNCLINE_STALL_UNTIL") else {
        return;
    };
    warn!(point, "SYNCLINE_STALL_AT: waiting for SYNCLINE_STALL_UNTIL");
    while !std::path::Path::new(&until).exists() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
