//! The rows-per-load chart: one stacked bar per committed load (inserted, updated, deleted),
//! oldest on the left, drawn as inline SVG so the page needs no script. Each bar carries a
//! `<title>` (the browser's tooltip) with the load's figures; the caption under the chart
//! (`page`) says which times the loads span.

use maud::{Markup, html};

use crate::state::LastLoad;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 6.0;
/// A few loads still get thin bars, not one bar across the whole chart.
const MIN_SLOTS: usize = 12;

/// The chart of `loads` (oldest first) for `stream`.
pub fn rows_per_load(stream: &str, loads: &[LastLoad]) -> Markup {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let base = TOP + plot_h;
    let max = loads
        .iter()
        .map(|l| l.inserted + l.updated + l.deleted)
        .max()
        .map_or(1, nice_ceiling);
    let scale = |rows: u64| rows as f64 / max as f64 * plot_h;
    let slot = plot_w / loads.len().max(MIN_SLOTS) as f64;
    let bar = (slot * 0.7).max(1.0);
    let label = format!(
        "Rows inserted, updated and deleted by the last {} loads of {stream}",
        loads.len()
    );
    html! {
        svg class="chart" data-stream=(stream) role="img" aria-label=(label)
            viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) preserveAspectRatio="xMinYMin meet" {
            title { (label) }
            // Gridlines at the top and the middle, labelled with their row counts.
            @for (y, rows) in [(TOP, max), (TOP + plot_h / 2.0, max / 2), (base, 0)] {
                @if y == base || rows > 0 {
                line class="grid" x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y) y2=(y) {}
                text class="axis" x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (compact(rows)) }
                }
            }
            @for (i, load) in loads.iter().enumerate() {
                @let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
                @let ins = scale(load.inserted);
                @let upd = scale(load.updated);
                @let del = scale(load.deleted);
                g class="load" data-load-id=(load.load_id) {
                    title {
                        (load.committed_at.format("%Y-%m-%d %H:%M:%S UTC")) " · load " (load.load_id)
                        " · " (load.inserted) " inserted, " (load.updated) " updated, "
                        (load.deleted) " deleted"
                    }
                    // A hit area the full height of the slot, so thin bars still show their tooltip.
                    rect class="hit" x=(LEFT + slot * i as f64) y=(TOP) width=(slot) height=(plot_h) {}
                    rect class="ins" x=(x) y=(base - ins) width=(bar) height=(ins) {}
                    rect class="upd" x=(x) y=(base - ins - upd) width=(bar) height=(upd) {}
                    rect class="del" x=(x) y=(base - ins - upd - del) width=(bar) height=(del) {}
                }
            }
            @if loads.is_empty() {
                text class="empty" x=(LEFT + plot_w / 2.0) y=(TOP + plot_h / 2.0) text-anchor="middle" {
                    "no loads yet"
                }
            }
        }
    }
}

/// The axis's top: `rows` rounded up to a round number (639 to 800), so the gridlines read
/// as figures a person would pick.
fn nice_ceiling(rows: u64) -> u64 {
    let rows = rows.max(1);
    let mut scale = 1;
    while scale * 10 < rows {
        scale *= 10;
    }
    [1, 2, 3, 4, 5, 6, 8, 10]
        .iter()
        .map(|m| m * scale)
        .find(|top| *top >= rows)
        .unwrap_or(10 * scale)
}

/// `1234` as `1.2k`: axis labels stay short.
fn compact(rows: u64) -> String {
    match rows {
        0..1_000 => rows.to_string(),
        1_000..1_000_000 => format!("{:.1}k", rows as f64 / 1e3).replace(".0k", "k"),
        _ => format!("{:.1}M", rows as f64 / 1e6).replace(".0M", "M"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: &str, inserted: u64, updated: u64, deleted: u64) -> LastLoad {
        LastLoad {
            load_id: id.into(),
            committed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            rows: inserted + updated + deleted,
            inserted,
            updated,
            deleted,
            duration_ms: None,
            dead_lettered: 0,
        }
    }

    #[test]
    fn one_bar_per_load_scaled_to_the_largest() {
        let svg = rows_per_load("contacts", &[load("a", 100, 0, 0), load("b<&>", 5, 40, 5)])
            .into_string();
        assert_eq!(svg.matches("class=\"load\"").count(), 2);
        // The largest load's inserted rows fill the plot's height.
        let plot_h = HEIGHT - TOP - BOTTOM;
        let first = svg.split("class=\"ins\"").nth(1).unwrap();
        let first = first.split('>').next().unwrap();
        assert!(
            first.contains(&format!("y=\"{TOP}\""))
                && first.contains(&format!("height=\"{plot_h}\"")),
            "{svg}"
        );
        // Values are escaped like any other.
        assert!(
            svg.contains("b&lt;&amp;&gt;") && !svg.contains("b<&>"),
            "{svg}"
        );
        assert_eq!(compact(1500), "1.5k");
        assert_eq!(
            [1, 7, 10, 11, 90, 100, 639, 5001].map(nice_ceiling),
            [1, 8, 10, 20, 100, 100, 800, 6000]
        );
        assert_eq!(compact(2_000_000), "2M");
    }

    #[test]
    fn no_loads_says_so() {
        let svg = rows_per_load("deals", &[]).into_string();
        assert!(svg.contains("no loads yet"));
        assert!(!svg.contains("class=\"load\""));
    }
}
