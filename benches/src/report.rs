//! The report: one row per (backend, workload, concurrency), as an aligned table, JSON, or an SVG
//! bar chart.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::error::BenchError;

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Backend name (`memory`, `sqlite`, `redis`...).
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
    /// All rows, in run order.
    pub rows: Vec<Row>,
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}us")
    } else {
        format!("{v:.1}us")
    }
}

/// Printed under a table with peer rows.
const PEER_NOTE: &str = "\npeer:* rows are tower-sessions stores: W1 = load, W2 = load + save of \
the whole record without any lock (last writer wins; ours acquire + commit under an exclusive \
lock), W3 = create + delete. Their ratio is to the floors of our backend of the same kind.\n";

impl Report {
    /// The aligned text table.
    pub fn table(&self) -> String {
        let header = [
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
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
        for r in &self.rows {
            lines.push(vec![
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
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for l in &lines {
            let cells: Vec<String> = l
                .iter()
                .enumerate()
                .map(|(c, s)| {
                    if c < 2 {
                        format!("{s:<w$}", w = widths[c])
                    } else {
                        format!("{s:>w$}", w = widths[c])
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        if self.rows.iter().any(|r| r.peer_of.is_some()) {
            out.push_str(PEER_NOTE);
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
