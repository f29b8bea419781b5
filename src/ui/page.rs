//! The status page's HTML: a header for the pipeline, then a card per stream (a table of its
//! figures beside its chart). maud escapes every value it interpolates; only the page's own
//! stylesheet goes in unescaped.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::chart;
use crate::config::{Config, DestinationConfig, SourceConfig};
use crate::reconcile::report::{ReconcileOutcome, ReconcileResult};
use crate::status::StreamStatus;

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = include_str!("style.css");

/// How a stream stands, most urgent first: the card's badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Failing,
    Drift,
    Running,
    Ok,
    Never,
}

impl Health {
    fn of(stream: &StreamStatus) -> Health {
        let drift = stream
            .last_reconcile
            .as_ref()
            .is_some_and(|r| !reconcile_clean(r));
        if stream.failure.is_some() {
            Health::Failing
        } else if drift {
            Health::Drift
        } else if stream.lease.as_ref().is_some_and(|l| !l.expired) {
            Health::Running
        } else if stream.last_load_id.is_some() || stream.cursor.is_some() {
            Health::Ok
        } else {
            Health::Never
        }
    }

    fn badge(self) -> Markup {
        let (class, text) = match self {
            Health::Failing => ("bad", "✗ failing"),
            Health::Drift => ("bad", "✗ drift"),
            Health::Running => ("run", "● running"),
            Health::Ok => ("ok", "✓ ok"),
            Health::Never => ("idle", "– never synced"),
        };
        html! { span class=(format!("badge {class}")) { (text) } }
    }
}

/// The whole page for `streams` as of `now`.
pub fn status_page(config: &Config, streams: &[StreamStatus], now: DateTime<Utc>) -> Markup {
    let name = &config.pipeline.name;
    let healths: Vec<Health> = streams.iter().map(Health::of).collect();
    let count = |wanted: &[Health]| healths.iter().filter(|h| wanted.contains(h)).count();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                title { (name) " · syncline" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    div class="brand" { "syncline" }
                    h1 { (name) }
                    p class="route" {
                        (source_name(&config.source)) " → " (destination_name(&config.destination))
                        " · " (streams.len()) " streams"
                    }
                    ul class="summary" {
                        li class="ok" { "✓ " (count(&[Health::Ok, Health::Running])) " healthy" }
                        li class="bad" { "✗ " (count(&[Health::Failing, Health::Drift])) " failing" }
                        li class="run" { "● " (count(&[Health::Running])) " running now" }
                        @if count(&[Health::Never]) > 0 {
                            li class="idle" { "– " (count(&[Health::Never])) " never synced" }
                        }
                    }
                }
                main {
                    @for (stream, health) in streams.iter().zip(&healths) {
                        (stream_card(stream, *health, now))
                    }
                }
                footer {
                    p {
                        "Read from the stage at " (when(now)) "; refreshes every "
                        (REFRESH_SECONDS) " s. Read-only: it takes no lease and calls neither the source nor the destination."
                    }
                    details {
                        summary { "Configuration (as " code { "syncline config show" } " prints it, secrets masked)" }
                        pre { (config.show()) }
                    }
                }
            }
        }
    }
}

fn stream_card(s: &StreamStatus, health: Health, now: DateTime<Utc>) -> Markup {
    let id = format!("stream-{}", s.stream);
    html! {
        section class="stream" id=(id) data-stream=(s.stream) {
            div class="head" {
                h2 { (s.stream) }
                (health.badge())
            }
            div class="body" {
                table class="figures" {
                    tbody {
                        tr {
                            th { "Last load" }
                            td {
                                @if let (Some(at), Some(load_id)) = (&s.last_load_at, &s.last_load_id) {
                                    span class="ok" { "✓ " }
                                    (ago_text(at, now))
                                    @if let Some(ms) = s.last_load_duration_ms {
                                        span class="muted" { " · took " (duration(ms)) }
                                    }
                                    div class="sub" { "load " code { (load_id) } }
                                } @else {
                                    span class="muted" { "none yet" }
                                }
                            }
                        }
                        tr {
                            th { "Rows (last load)" }
                            td data-figure="last-load" {
                                @if s.last_load_id.is_some() {
                                    span class="num ins" { (grouped(s.last_load_inserted.unwrap_or(0))) } " inserted · "
                                    span class="num upd" { (grouped(s.last_load_updated.unwrap_or(0))) } " updated · "
                                    span class="num del" { (grouped(s.last_load_deleted.unwrap_or(0))) } " deleted"
                                    @if let Some(rows) = s.last_load_rows {
                                        div class="sub" { (grouped(rows)) " staged" }
                                    }
                                } @else { span class="muted" { "–" } }
                            }
                        }
                        tr {
                            th { "Live rows" }
                            td {
                                @if let Some(totals) = &s.totals {
                                    span class="num big" data-figure="live-rows" { (grouped(totals.live_rows())) }
                                    div class="sub" {
                                        "inserted − deleted over " (grouped(totals.loads)) " load" @if totals.loads != 1 { "s" }
                                    }
                                } @else {
                                    span class="muted" { "unknown (state from before totals were kept)" }
                                }
                            }
                        }
                        tr {
                            th { "Cursor" }
                            td {
                                @if let Some(cursor) = &s.cursor {
                                    code { (cursor) }
                                    @if let Some(lag) = s.lag_seconds {
                                        div class="sub" { "lag " (seconds(lag)) }
                                    }
                                } @else { span class="muted" { "never synced" } }
                            }
                        }
                        tr {
                            th { "Reconcile" }
                            td { (reconcile_cell(s.last_reconcile.as_ref(), now)) }
                        }
                        tr {
                            th { "Failures" }
                            td data-figure="failures" {
                                @if let Some(failure) = &s.failure {
                                    span class="bad" { "✗ " (failure.count) " failed run" @if failure.count != 1 { "s" } }
                                    " since the last load, the last one " (ago(failure.at, now))
                                    div class="reason" { (failure.reason) }
                                } @else {
                                    span class="ok" { "✓ none" }
                                }
                            }
                        }
                        tr {
                            th { "Dead letters" }
                            td data-figure="dead-letters" {
                                @let last = s.last_load_dead_lettered.unwrap_or(0);
                                @let all = s.totals.as_ref().map(|t| t.dead_lettered);
                                span class=(if last > 0 { "warn" } else { "ok" }) {
                                    (if last > 0 { "✗ " } else { "✓ " }) (grouped(last)) " in the last load"
                                }
                                @if let Some(all) = all { div class="sub" { (grouped(all)) " in all loads" } }
                            }
                        }
                        tr {
                            th { "Running now" }
                            td data-figure="lease" {
                                @if let Some(holder) = s.lease.as_ref().filter(|l| !l.expired) {
                                    span class="run" { "● pid " (holder.pid) " on " (holder.host) }
                                    div class="sub" {
                                        "since " (ago(holder.since, now)) " · lease until " (when(holder.expires_at))
                                    }
                                } @else {
                                    span class="muted" { "no run holds the lease" }
                                }
                            }
                        }
                        @if let Some(pending) = &s.pending_load_id {
                            tr {
                                th { "Pending" }
                                td { span class="warn" { "load " code { (pending) } } div class="sub" { "staged, not yet committed: the next run finishes it" } }
                            }
                        }
                        @if !s.set_aside.is_empty() {
                            tr {
                                th { "Set aside" }
                                td {
                                    @for load in &s.set_aside {
                                        div { span class="bad" { "✗ " } "load " code { (load.load_id) } " " (ago(load.set_aside_at, now)) }
                                        div class="reason" { (load.reason) }
                                    }
                                }
                            }
                        }
                    }
                }
                figure class="plot" {
                    (chart::rows_per_load(&s.stream, &s.history))
                    figcaption {
                        span class="key ins" {} "inserted "
                        span class="key upd" {} "updated "
                        span class="key del" {} "deleted"
                        div { "rows per load" (span_of(&s.history)) }
                    }
                    @if let Some(totals) = &s.totals {
                        dl class="totals" {
                            div { dt { "loads" } dd { (grouped(totals.loads)) } }
                            div { dt { "inserted" } dd class="ins" { (grouped(totals.inserted)) } }
                            div { dt { "updated" } dd class="upd" { (grouped(totals.updated)) } }
                            div { dt { "deleted" } dd class="del" { (grouped(totals.deleted)) } }
                            div { dt { "dead letters" } dd { (grouped(totals.dead_lettered)) } }
                        }
                    }
                }
            }
        }
    }
}

/// `, the last 2: Dec 6 23:53 → 23:54 UTC`: which times the chart's loads span.
fn span_of(loads: &[crate::state::LastLoad]) -> String {
    let (Some(first), Some(last)) = (loads.first(), loads.last()) else {
        return String::new();
    };
    let from = first.committed_at.format("%b %-d %H:%M");
    let to = if first.committed_at.date_naive() == last.committed_at.date_naive() {
        last.committed_at.format("%H:%M")
    } else {
        last.committed_at.format("%b %-d %H:%M")
    };
    match loads.len() {
        1 => format!(", the last 1: {from} UTC"),
        n => format!(", the last {n}: {from} → {to} UTC"),
    }
}

fn reconcile_clean(r: &ReconcileOutcome) -> bool {
    matches!(r.result, ReconcileResult::Clean | ReconcileResult::Repaired)
}

fn reconcile_cell(r: Option<&ReconcileOutcome>, now: DateTime<Utc>) -> Markup {
    let Some(r) = r else {
        return html! { span class="muted" { "never run" } };
    };
    html! {
        @if reconcile_clean(r) {
            span class="ok" { "✓ " (result_word(r.result)) }
        } @else {
            span class="bad" { "✗ " (result_word(r.result)) }
        }
        " " (ago(r.at, now))
        div class="sub" {
            "missing " (r.missing) " · stale " (r.stale) " · ahead " (r.ahead)
            " · orphaned " (r.orphaned) " · in flight " (r.in_flight)
            @if r.repaired_rows > 0 { " · repaired " (r.repaired_rows) " rows" }
        }
        @if let Some(error) = &r.error { div class="reason" { (error) } }
    }
}

fn result_word(result: ReconcileResult) -> &'static str {
    match result {
        ReconcileResult::Clean => "clean",
        ReconcileResult::Drift => "drift",
        ReconcileResult::Repaired => "repaired",
        ReconcileResult::Stopped => "stopped (API quota)",
        ReconcileResult::Failed => "failed",
    }
}

/// A page for what is not the status (a 404, a state that cannot be read).
pub fn problem_page(title: &str, detail: &str, now: DateTime<Utc>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · syncline" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { div class="brand" { "syncline" } h1 { (title) } }
                main { section class="stream problem" { p class="reason" { (detail) } p { a href="/" { "Back to the status page" } } } }
                footer { p { (when(now)) } }
            }
        }
    }
}

fn source_name(source: &SourceConfig) -> &'static str {
    match source {
        SourceConfig::Hubspot(_) => "HubSpot",
        SourceConfig::Salesforce(_) => "Salesforce",
        SourceConfig::Postgres(_) => "PostgreSQL",
        SourceConfig::Files(_) => "files",
    }
}

fn destination_name(destination: &DestinationConfig) -> &'static str {
    match destination {
        DestinationConfig::Postgres(_) => "PostgreSQL",
        DestinationConfig::Lake(_) => "lake (Delta)",
        DestinationConfig::Snowflake(_) => "Snowflake",
    }
}

/// A time as a `<time>` element: exact in UTC, with how long ago it was on hover.
fn when(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (at.format("%Y-%m-%d %H:%M:%S UTC"))
        }
    }
}

/// "3 min ago", with the exact time on hover.
fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let iso = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    html! {
        time datetime=(iso) title=(at.format("%Y-%m-%d %H:%M:%S UTC")) {
            (seconds((now - at).num_seconds().max(0))) " ago"
        }
    }
}

/// [`ago`] for a time `status` already wrote as RFC 3339.
fn ago_text(at: &str, now: DateTime<Utc>) -> Markup {
    match DateTime::parse_from_rfc3339(at) {
        Ok(t) => ago(t.with_timezone(&Utc), now),
        Err(_) => html! { (at) },
    }
}

/// `4521` seconds as `1 h 15 min`: two units at most.
fn seconds(total: i64) -> String {
    let total = total.max(0);
    let (d, h, m, s) = (
        total / 86_400,
        total % 86_400 / 3600,
        total % 3600 / 60,
        total % 60,
    );
    match () {
        _ if d > 0 => format!("{d} d {h} h"),
        _ if h > 0 => format!("{h} h {m} min"),
        _ if m > 0 => format!("{m} min {s} s"),
        _ => format!("{s} s"),
    }
}

/// A load's duration: `840 ms`, `12.3 s`, `4 min 5 s`.
fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => seconds((ms / 1000) as i64),
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(seconds(4521), "1 h 15 min");
        assert_eq!(seconds(59), "59 s");
        assert_eq!(duration(840), "840 ms");
        assert_eq!(duration(12_345), "12.3 s");
    }
}
