//! Failure injection for crash tests: named points where a test can make the process die
//! as an operator's `kill -9` or the OOM killer would, to prove that a re-run converges.
//!
//! `SYNCLINE_CRASH_AT=<point>` kills the process with SIGKILL when it reaches that point.
//! The points: `after-stage` (manifest written and load pending, nothing merged),
//! `after-merge` (destination committed, state not yet saved) and `cdc-mid-stream` (the CDC
//! reader has decoded part of the WAL), and for the flushes of `syncline stream` (not its
//! first, catch-up load) `flush-after-stage` and `flush-after-merge`. The variable is documented in the README; nothing
//! happens when it is unset.
//!
//! `SYNCLINE_STOP_AT=<point>` stops the process (SIGSTOP) there instead, as a long pause or a
//! suspended machine would: a test lets its lease expire, then continues it with SIGCONT.

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
