//! The report: one row per (backend, workload, concurrency), as an aligned table, JSON, or an SVG
//! bar chart.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::error::BenchError;

/// The near cache's counters for one `<backend>-near` row (`RedisStore::near_cache_stats`): the
/// events of the row's cell (its measured time only), and what the cache held at the cell's end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NearCacheCounters {
    /// Reads answered from process memory during the cell.
    pub hits: u64,
    /// Reads that went to the server during the cell.
    pub misses: u64,
    /// Copies dropped on the server's invalidations during the cell.
    pub invalidations: u64,
    /// Times the whole cache was emptied during the cell.
    pub flushes: u64,
    /// Copies evicted to stay within the memory bound during the cell.
    pub evictions: u64,
    /// Copies held at the cell's end.
    pub entries: u64,
    /// Bytes held at the cell's end.
    pub bytes: u64,
}

impl NearCacheCounters {
    /// The counters between two readings of the store's (cumulative) statistics: the events
    /// counted from `before` to `after`, and what `after` holds.
    pub fn between(
        before: &sessions::redis::NearCacheStats, after: &sessions::redis::NearCacheStats,
    ) -> Self {
        Self {
            hits: after.hits.saturating_sub(before.hits),
            misses: after.misses.saturating_sub(before.misses),
            invalidations: after.invalidations.saturating_sub(before.invalidations),
            flushes: after.flushes.saturating_sub(before.flushes),
            evictions: after.evictions.saturating_sub(before.evictions),
            entries: after.entries,
            bytes: after.bytes,
        }
    }

    /// The share of reads answered from process memory, `hits / (hits + misses)`; `None` when
    /// the cell made no read.
    pub fn hit_ratio(&self) -> Option<f64> {
        let reads = self.hits + self.misses;
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }
}

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Backend name (`memory`, `sqlite`, `redis`...; `<backend>-exact` with exact sliding,
    /// `redis-near` / `redis-cluster-near` with the near cache on).
    pub backend: String,
    /// `W1`..`W6`, or `floor-read` / `floor-rw` for the raw client.
    pub workload: String,
    /// Concurrent tasks.
    pub concurrency: usize,
    /// Completed operations.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Median latency, microseconds (W5: lock hand-off).
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, microseconds.
    pub p999_us: f64,
    /// Store calls per operation (one round trip each for networked stores).
    pub calls_per_op: f64,
    /// Item bytes (names + values) sent per operation.
    pub bytes_per_op: f64,
    /// ops/s divided by the floor's ops/s (W1: read floor; W2: read+write floor).
    pub ratio_to_floor: Option<f64>,
    /// For a peer (`tower-sessions`) row: our backend of the same kind, whose floors it shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_of: Option<String>,
    /// Bytes the server received per operation (standalone Redis only: `INFO stats`
    /// `total_net_input_bytes`, measured at one task; see [`crate::wire`]).
    pub wire_bytes_per_op: Option<f64>,
    /// For a `<backend>-near` row: the near cache's counters over the cell; absent for every
    /// other row, and when the store reports none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub near_cache: Option<NearCacheCounters>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Measured seconds per cell.
    pub duration_secs: f64,
    /// The payload, e.g. `10x150`.
    pub payload: String,
    /// Pool size for the payload.
    pub pool: usize,
    /// The refresh window of our stores' rows, in % of the session timeout (docs/contract.md
    /// §1); the `<backend>-exact` rows use 0 (exact sliding).
    pub refresh_window_percent: u8,
    /// All rows, in run order (none in a `--scale` run).
    pub rows: Vec<Row>,
    /// The `--scale` results (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<crate::scale::ScaleReport>,
}

pub(crate) fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}us")
    } else {
        format!("{v:.1}us")
    }
}

/// `lines` (the first is the header) as aligned columns: the first `left` columns left-aligned,
/// the others right-aligned, two spaces apart.
pub(crate) fn align(lines: &[Vec<String>], left: usize) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l.get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c < left {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Printed under a table with peer rows.
const PEER_NOTE: &str = "\npeer:* rows are tower-sessions stores: W1 = load, W2 = load + save of \
the whole record without any lock (last writer wins; ours acquire + commit under an exclusive \
lock), W3 = create + delete. Their ratio is to the floors of our backend of the same kind.\n";

/// Printed under a table with `-near` rows.
const NEAR_NOTE: &str = "\n*-near rows are our Redis store with its near cache on (nearCache, \
every other setting at its default); their ratio is to the floors of the plain Redis rows. \
calls/op counts store calls: a read answered from the near cache makes no round trip (wire B/op \
counts what reached the server).\n";

/// Printed under [`NEAR_NOTE`] when the table has the near hit column.
const NEAR_HIT_NOTE: &str = "near hit = reads answered from process memory / all reads, during \
the cell.\n";

impl Report {
    /// The aligned text table (and, in a `--scale` run, the scale tables).
    pub fn table(&self) -> String {
        if let Some(scale) = &self.scale {
            return scale.table();
        }
        // The near hit column only when a row has the near cache's counters.
        let near_hits = self.rows.iter().any(|r| r.near_cache.is_some());
        let mut header = vec![
            "backend",
            "workload",
            "conc",
            "ops/s",
            "p50",
            "p99",
            "p99.9",
            "calls/op",
            "bytes/op",
            "wire B/op",
            "ratio",
        ];
        if near_hits {
            header.push("near hit");
        }
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
        for r in &self.rows {
            let mut line = vec![
                r.backend.clone(),
                r.workload.clone(),
                r.concurrency.to_string(),
                format!("{:.0}", r.ops_per_sec),
                us(r.p50_us),
                us(r.p99_us),
                us(r.p999_us),
                format!("{:.2}", r.calls_per_op),
                format!("{:.0}", r.bytes_per_op),
                r.wire_bytes_per_op
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.0}")),
                r.ratio_to_floor
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x")),
            ];
            if near_hits {
                line.push(
                    r.near_cache
                        .and_then(|n| n.hit_ratio())
                        .map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0)),
                );
            }
            lines.push(line);
        }
        let mut out = align(&lines, 2);
        if self.rows.iter().any(|r| r.peer_of.is_some()) {
            out.push_str(PEER_NOTE);
        }
        if self.rows.iter().any(|r| r.backend.ends_with("-near")) {
            out.push_str(NEAR_NOTE);
            if near_hits {
                out.push_str(NEAR_HIT_NOTE);
            }
        }
        out
    }

    /// Writes the report as pretty JSON.
    ///
    /// # Errors
    /// [`BenchError::Output`].
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let fail = |reason: String| BenchError::Output {
            path: path.to_owned(),
            reason,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| fail(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| fail(e.to_string()))
    }

    /// Writes an SVG bar chart of ops/s per backend and workload (log scale), one panel per
    /// concurrency.
    ///
    /// # Errors
    /// [`BenchError::Output`].
    pub fn write_chart(&self, path: &Path) -> Result<(), BenchError> {
        self.draw_chart(path).map_err(|e| BenchError::Output {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    fn draw_chart(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        // The probes (`ref-…`) split one cost into parts: they belong in the table, not here.
        let charted: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| !r.workload.starts_with("ref-"))
            .collect();
        let mut backends: Vec<&str> = Vec::new();
        let mut workloads: Vec<&str> = Vec::new();
        let mut concurrencies: Vec<usize> = Vec::new();
        for r in &charted {
            if !backends.contains(&r.backend.as_str()) {
                backends.push(&r.backend);
            }
            if !workloads.contains(&r.workload.as_str()) {
                workloads.push(&r.workload);
            }
            if !concurrencies.contains(&r.concurrency) {
                concurrencies.push(r.concurrency);
            }
        }
        // Ours in palette order; a peer takes the colour of our backend of the same kind, pale,
        // with a dark outline.
        let ours: Vec<&str> = charted
            .iter()
            .filter(|r| r.peer_of.is_none())
            .map(|r| r.backend.as_str())
            .fold(Vec::new(), |mut v, b| {
                if !v.contains(&b) {
                    v.push(b);
                }
                v
            });
        let style = |backend: &str| -> (RGBAColor, bool) {
            let row = charted.iter().find(|r| r.backend == backend);
            let peer_of = row.and_then(|r| r.peer_of.as_deref());
            let base = peer_of.unwrap_or(backend);
            let i = ours
                .iter()
                .position(|b| *b == base)
                .unwrap_or(ours.len() + backends.iter().position(|b| *b == backend).unwrap_or(0));
            let color = Palette99::pick(i).to_rgba();
            match peer_of {
                Some(_) => (color.mix(0.35), true),
                None => (color, false),
            }
        };

        let panels = concurrencies.len().max(1);
        let height = u32::try_from(380 * panels).unwrap_or(u32::MAX);
        let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = charted
            .iter()
            .map(|r| r.ops_per_sec)
            .fold(10.0_f64, f64::max)
            * 2.0;
        let n = workloads.len().max(1);
        for (panel, conc) in root.split_evenly((panels, 1)).iter().zip(&concurrencies) {
            // The legend gets its own column to the right, so it never covers a bar.
            let (plot, legend) = panel.split_horizontally(940);
            let mut chart = ChartBuilder::on(&plot)
                .caption(
                    format!("ops/s (log scale), {conc} task(s)"),
                    ("sans-serif", 18),
                )
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..n as f64, (1.0..max).log_scale())?;
            let labels = workloads.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n * 2 + 1)
                .x_label_formatter(&|x| {
                    let i = x.floor() as usize;
                    if (x - x.floor() - 0.5).abs() < 1e-6 && i < labels.len() {
                        labels[i].to_owned()
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|y| si(*y))
                .y_desc("ops/s")
                .draw()?;
            // Each workload's bars share its slot evenly: peers (W1-W3 only) leave no gaps.
            for (w, workload) in workloads.iter().enumerate() {
                let here: Vec<&&Row> = charted
                    .iter()
                    .filter(|r| r.workload == *workload && r.concurrency == *conc)
                    .collect();
                let width = 0.8 / here.len().max(1) as f64;
                for (b, r) in here.iter().enumerate() {
                    let (color, peer) = style(&r.backend);
                    let x0 = w as f64 + 0.1 + b as f64 * width;
                    let corners = [(x0, 1.0), (x0 + width * 0.9, r.ops_per_sec.max(1.0))];
                    chart.draw_series(std::iter::once(Rectangle::new(corners, color.filled())))?;
                    if peer {
                        chart.draw_series(std::iter::once(Rectangle::new(
                            corners,
                            BLACK.stroke_width(1),
                        )))?;
                    }
                }
            }
            let font = ("sans-serif", 13).into_font();
            for (i, backend) in backends.iter().enumerate() {
                let (color, peer) = style(backend);
                let y = 50 + 20 * i32::try_from(i).unwrap_or(i32::MAX / 40);
                legend.draw(&Rectangle::new([(8, y - 6), (20, y + 6)], color.filled()))?;
                if peer {
                    legend.draw(&Rectangle::new(
                        [(8, y - 6), (20, y + 6)],
                        BLACK.stroke_width(1),
                    ))?;
                }
                legend.draw(&Text::new((*backend).to_owned(), (26, y - 7), font.clone()))?;
            }
        }
        root.present()?;
        Ok(())
    }
}

/// `1500` as `1.5k`, `2000000` as `2M`: axis labels.
fn si(v: f64) -> String {
    let (x, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = format!("{x:.1}");
    format!("{}{unit}", text.trim_end_matches(".0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(backend: &str, near_cache: Option<NearCacheCounters>) -> Row {
        Row {
            backend: backend.to_owned(),
            workload: "W1".to_owned(),
            concurrency: 1,
            ops: 10,
            ops_per_sec: 10.0,
            p50_us: 1.0,
            p99_us: 2.0,
            p999_us: 3.0,
            calls_per_op: 1.0,
            bytes_per_op: 0.0,
            ratio_to_floor: None,
            peer_of: None,
            wire_bytes_per_op: None,
            near_cache,
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        Report {
            duration_secs: 1.0,
            payload: "10x150".to_owned(),
            pool: 10,
            refresh_window_percent: 10,
            rows,
            scale: None,
        }
    }

    /// The counters are the events between two readings and the holdings of the second.
    #[test]
    fn counters_span_one_cell() {
        let before = sessions::redis::NearCacheStats {
            hits: 5,
            misses: 5,
            entries: 7,
            ..Default::default()
        };
        let after = sessions::redis::NearCacheStats {
            hits: 35,
            misses: 15,
            invalidations: 2,
            entries: 9,
            bytes: 900,
            ..Default::default()
        };
        let c = NearCacheCounters::between(&before, &after);
        assert_eq!((c.hits, c.misses, c.invalidations), (30, 10, 2));
        assert_eq!((c.entries, c.bytes), (9, 900));
        assert_eq!(c.hit_ratio(), Some(0.75));
        assert_eq!(NearCacheCounters::default().hit_ratio(), None);
    }

    /// Near rows carry their counters in the JSON and a near hit column in the table; other rows
    /// carry neither, and a table without counters has no such column.
    #[test]
    fn near_counters_in_json_and_table() {
        let counters = NearCacheCounters {
            hits: 3,
            misses: 1,
            ..Default::default()
        };
        let with = report(vec![row("redis", None), row("redis-near", Some(counters))]);
        let json = serde_json::to_value(&with).unwrap();
        assert!(json["rows"][0].get("near_cache").is_none());
        assert_eq!(json["rows"][1]["near_cache"]["hits"], 3);
        assert_eq!(json["rows"][1]["near_cache"]["bytes"], 0);
        let table = with.table();
        assert!(
            table.lines().next().unwrap().ends_with("near hit"),
            "{table}"
        );
        assert!(table.contains("75.0%"), "{table}");
        assert!(table.contains("*-near rows"), "{table}");

        let without = report(vec![row("redis", None), row("redis-near", None)]).table();
        assert!(!without.contains("near hit"), "{without}");
        assert!(without.contains("*-near rows"), "{without}");
        let plain = report(vec![row("redis", None)]).table();
        assert!(!plain.contains("near"), "{plain}");
    }
}
