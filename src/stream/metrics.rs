//! What `syncline stream` measures, per stream, and its Prometheus text exposition
//! (`/metrics`, format 0.0.4) and health (`/health`). Small enough to write by hand: counters,
//! gauges and one histogram, under one lock taken briefly per flush.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use super::webhook::WebhookCounters;

/// Upper bounds (seconds) of the end-to-end latency histogram: from the source commit to
/// the row committed in the destination.
const LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Finishing a pending load, the snapshot or the catch-up before it follows or polls.
    Starting,
    /// Its last load committed (or it has nothing to load).
    Flowing,
    /// Its last attempt failed; it retries after a pause.
    Retrying,
    /// Stopped for good (a configuration error, the lease lost); the others go on.
    Stopped,
    /// Shut down on request.
    Finished,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Flowing => "flowing",
            Phase::Retrying => "retrying",
            Phase::Stopped => "stopped",
            Phase::Finished => "finished",
        }
    }
}

#[derive(Debug, Clone)]
struct StreamMetrics {
    phase: Phase,
    /// Why it is retrying or stopped.
    reason: Option<String>,
    rows: u64,
    loads: u64,
    errors: u64,
    buffer_rows: u64,
    slot_lag_bytes: Option<i64>,
    last_commit_unix: Option<f64>,
    latency_counts: [u64; LATENCY_BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
}

impl StreamMetrics {
    fn new() -> Self {
        StreamMetrics {
            phase: Phase::Starting,
            reason: None,
            rows: 0,
            loads: 0,
            errors: 0,
            buffer_rows: 0,
            slot_lag_bytes: None,
            last_commit_unix: None,
            latency_counts: [0; LATENCY_BUCKETS.len()],
            latency_count: 0,
            latency_sum: 0.0,
        }
    }
}

/// The measures of every stream of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    streams: Mutex<BTreeMap<String, StreamMetrics>>,
    /// The webhook receiver's counters, when `[stream.webhook]` is on.
    webhook: Mutex<Option<Arc<WebhookCounters>>>,
}

impl Metrics {
    pub fn new(streams: &[String]) -> Metrics {
        Metrics {
            streams: Mutex::new(
                streams
                    .iter()
                    .map(|s| (s.clone(), StreamMetrics::new()))
                    .collect(),
            ),
            webhook: Mutex::new(None),
        }
    }

    /// Adds the webhook receiver's counters to what [`render`](Self::render) shows.
    pub fn attach_webhook(&self, counters: Arc<WebhookCounters>) {
        *self.webhook.lock().expect("metrics lock is not poisoned") = Some(counters);
    }

    fn with(&self, stream: &str, change: impl FnOnce(&mut StreamMetrics)) {
        let mut streams = self.streams.lock().expect("metrics lock is not poisoned");
        change(
            streams
                .entry(stream.to_string())
                .or_insert_with(StreamMetrics::new),
        );
    }

    pub fn set_phase(&self, stream: &str, phase: Phase, reason: Option<String>) {
        self.with(stream, |m| {
            m.phase = phase;
            m.reason = reason;
        });
    }

    pub fn phase(&self, stream: &str) -> Option<Phase> {
        self.streams
            .lock()
            .expect("metrics lock is not poisoned")
            .get(stream)
            .map(|m| m.phase)
    }

    /// A load committed `rows` rows (a load that merged nothing counts no load).
    pub fn loaded(&self, stream: &str, rows: u64) {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        self.with(stream, |m| {
            if rows > 0 {
                m.loads += 1;
                m.rows += rows;
            }
            m.last_commit_unix = Some(now);
        });
    }

    pub fn failed(&self, stream: &str) {
        self.with(stream, |m| m.errors += 1);
    }

    pub fn buffer(&self, stream: &str, rows: u64) {
        self.with(stream, |m| m.buffer_rows = rows);
    }

    pub fn slot_lag(&self, stream: &str, bytes: i64) {
        self.with(stream, |m| m.slot_lag_bytes = Some(bytes));
    }

    /// One change, committed at the source `seconds` before it was committed here.
    pub fn latency(&self, stream: &str, seconds: f64) {
        self.latency_n(stream, seconds, 1);
    }

    /// `changes` changes, each committed at the source `seconds` before it was committed here.
    pub fn latency_n(&self, stream: &str, seconds: f64, changes: u64) {
        let seconds = seconds.max(0.0);
        self.with(stream, |m| {
            for (count, bound) in m.latency_counts.iter_mut().zip(LATENCY_BUCKETS) {
                if seconds <= bound {
                    *count += changes;
                }
            }
            m.latency_count += changes;
            m.latency_sum += seconds * changes as f64;
        });
    }

    /// Whether every stream flows, and each stream's phase (with its reason), for `/health`.
    pub fn health(&self) -> (bool, String) {
        let streams = self.streams.lock().expect("metrics lock is not poisoned");
        let healthy = !streams.is_empty() && streams.values().all(|m| m.phase == Phase::Flowing);
        let mut body = String::new();
        for (stream, m) in streams.iter() {
            let _ = match &m.reason {
                Some(reason) => writeln!(body, "{stream}: {} ({reason})", m.phase.label()),
                None => writeln!(body, "{stream}: {}", m.phase.label()),
            };
        }
        (healthy, body)
    }

    /// The Prometheus text exposition of every measure.
    pub fn render(&self) -> String {
        let streams = self.streams.lock().expect("metrics lock is not poisoned");
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&StreamMetrics) -> Option<f64>| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                for (stream, m) in streams.iter() {
                    if let Some(v) = value(m) {
                        let _ = writeln!(out, "{name}{{stream=\"{}\"}} {v}", label(stream));
                    }
                }
            };
        family(
            "syncline_stream_rows_total",
            "counter",
            "Rows committed to the destination.",
            &|m| Some(m.rows as f64),
        );
        family(
            "syncline_stream_loads_total",
            "counter",
            "Loads (flushes) committed to the destination with at least one row.",
            &|m| Some(m.loads as f64),
        );
        family(
            "syncline_stream_errors_total",
            "counter",
            "Failed load attempts (each is retried unless the stream stopped).",
            &|m| Some(m.errors as f64),
        );
        family(
            "syncline_stream_buffer_rows",
            "gauge",
            "Changes read and waiting for the next flush.",
            &|m| Some(m.buffer_rows as f64),
        );
        family(
            "syncline_stream_slot_lag_bytes",
            "gauge",
            "WAL the CDC slot retains: the server's position minus the confirmed one.",
            &|m| m.slot_lag_bytes.map(|b| b as f64),
        );
        family(
            "syncline_stream_last_commit_timestamp_seconds",
            "gauge",
            "When the stream last committed a load (or saved its position), Unix time.",
            &|m| m.last_commit_unix,
        );
        family(
            "syncline_stream_up",
            "gauge",
            "1 while the stream flows, 0 while it starts, retries or stopped.",
            &|m| Some(if m.phase == Phase::Flowing { 1.0 } else { 0.0 }),
        );
        let name = "syncline_stream_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From the source commit of a change to its commit in the destination."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (stream, m) in streams.iter() {
            let stream = label(stream);
            for (count, bound) in m.latency_counts.iter().zip(LATENCY_BUCKETS) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{stream=\"{stream}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{stream=\"{stream}\",le=\"+Inf\"}} {}",
                m.latency_count
            );
            let _ = writeln!(out, "{name}_sum{{stream=\"{stream}\"}} {}", m.latency_sum);
            let _ = writeln!(
                out,
                "{name}_count{{stream=\"{stream}\"}} {}",
                m.latency_count
            );
        }
        if let Some(webhook) = &*self.webhook.lock().expect("metrics lock is not poisoned") {
            out.push_str(&webhook.render());
        }
        out
    }
}

/// A label value as the exposition format escapes it. Stream names are plain already
/// (letters, digits, `_`, `-`); this keeps the format right whatever they become.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_family_and_cumulative_buckets() {
        let metrics = Metrics::new(&["contacts".to_string()]);
        metrics.loaded("contacts", 5);
        metrics.latency("contacts", 0.15);
        metrics.latency("contacts", 3.0);
        let text = metrics.render();
        assert!(text.contains("syncline_stream_rows_total{stream=\"contacts\"} 5"));
        assert!(text.contains("syncline_stream_loads_total{stream=\"contacts\"} 1"));
        assert!(
            text.contains(
                "syncline_stream_latency_seconds_bucket{stream=\"contacts\",le=\"0.2\"} 1"
            )
        );
        assert!(
            text.contains("syncline_stream_latency_seconds_bucket{stream=\"contacts\",le=\"5\"} 2")
        );
        assert!(text.contains("syncline_stream_latency_seconds_count{stream=\"contacts\"} 2"));
        assert!(!metrics.health().0, "starting is not flowing");
        metrics.set_phase("contacts", Phase::Flowing, None);
        assert!(metrics.health().0);
    }
}
