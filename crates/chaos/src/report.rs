//! What a run leaves behind for people: its timeline (throughput and latency over time with
//! the fault windows), drawn as a hand-written SVG, and the summary table per fault type.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::fault::Window;
use crate::workload::Record;

/// Width of one timeline bucket.
pub const BUCKET_MS: u64 = 250;

/// Throughput and latency per bucket of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    pub title: String,
    pub bucket_ms: u64,
    /// Completed operations per second, per bucket.
    pub ops_per_s: Vec<f64>,
    /// Mean and maximum latency (ms) of the operations completed in the bucket.
    pub latency_mean_ms: Vec<f64>,
    pub latency_max_ms: Vec<f64>,
    /// Operations invoked in the bucket whose outcome is unknown.
    pub unknowns: Vec<u32>,
    pub windows: Vec<Window>,
}

impl Timeline {
    pub fn new(
        title: String,
        history: &[Record],
        windows: &[Window],
        duration_ms: u64,
    ) -> Timeline {
        let n = usize::try_from(duration_ms / BUCKET_MS + 1).unwrap_or(1);
        let mut count = vec![0u32; n];
        let mut sum = vec![0f64; n];
        let mut max = vec![0f64; n];
        let mut unknowns = vec![0u32; n];
        let bucket = |us: u64| usize::try_from(us / 1000 / BUCKET_MS).unwrap_or(usize::MAX);
        for r in history {
            match r.complete_us {
                Some(done) => {
                    let b = bucket(done);
                    if b < n {
                        let lat = (done - r.invoke_us.min(done)) as f64 / 1000.0;
                        count[b] += 1;
                        sum[b] += lat;
                        max[b] = max[b].max(lat);
                    }
                }
                None => {
                    let b = bucket(r.invoke_us);
                    if b < n {
                        unknowns[b] += 1;
                    }
                }
            }
        }
        let per_s = 1000.0 / BUCKET_MS as f64;
        Timeline {
            title,
            bucket_ms: BUCKET_MS,
            ops_per_s: count.iter().map(|&c| f64::from(c) * per_s).collect(),
            latency_mean_ms: count
                .iter()
                .zip(&sum)
                .map(|(&c, &s)| if c == 0 { 0.0 } else { s / f64::from(c) })
                .collect(),
            latency_max_ms: max,
            unknowns,
            windows: windows.to_vec(),
        }
    }
}

const PANEL_W: f64 = 900.0;
const PANEL_H: f64 = 180.0;
const LEFT: f64 = 60.0;

/// One SVG with a panel per timeline, stacked.
pub fn svg(timelines: &[Timeline]) -> String {
    let h = PANEL_H * timelines.len() as f64 + 30.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        PANEL_W + LEFT + 70.0
    );
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"16\">blue: completed ops/s · orange: mean latency, dotted: max latency (ms, log scale) \
         · red ticks: unknown outcomes · grey: fault held · pink: heal until writes resume</text>"
    );
    for (i, t) in timelines.iter().enumerate() {
        panel(&mut s, t, 30.0 + PANEL_H * i as f64);
    }
    s.push_str("</svg>\n");
    s
}

/// Where one panel's plot sits, and how its buckets and seconds map to x.
struct Frame {
    top: f64,
    plot_h: f64,
    /// Width of one bucket.
    dx: f64,
    /// Seconds the panel spans.
    secs: f64,
}

impl Frame {
    fn new(t: &Timeline, y0: f64) -> Frame {
        let n = t.ops_per_s.len().max(1);
        Frame {
            top: y0 + 18.0,
            plot_h: PANEL_H - 45.0,
            dx: PANEL_W / n as f64,
            secs: n as f64 * t.bucket_ms as f64 / 1000.0,
        }
    }

    /// The left edge of bucket `i`.
    fn x(&self, i: usize) -> f64 {
        LEFT + self.dx * i as f64
    }

    /// The x of `s` seconds into the run.
    fn x_at_s(&self, s: f64) -> f64 {
        LEFT + PANEL_W * s / self.secs
    }

    /// The bottom of the plot.
    fn bottom(&self) -> f64 {
        self.top + self.plot_h
    }
}

fn panel(s: &mut String, t: &Timeline, y0: f64) {
    let f = Frame::new(t, y0);
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"{}\" font-weight=\"bold\">{}</text>",
        y0 + 12.0,
        xml(&t.title)
    );
    for w in &t.windows {
        fault_window(s, &f, w);
    }
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{}\" width=\"{PANEL_W}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>",
        f.top, f.plot_h
    );
    let ops_max = t.ops_per_s.iter().copied().fold(1.0, f64::max);
    let lat_max = t.latency_max_ms.iter().copied().fold(1.0, f64::max);
    curves(s, &f, t, ops_max, lat_max);
    unknown_ticks(s, &f, t);
    axes(s, &f, ops_max, lat_max);
}

/// A fault's window (grey while held, pink from heal until writes resume) and its name.
fn fault_window(s: &mut String, f: &Frame, w: &Window) {
    let (top, plot_h) = (f.top, f.plot_h);
    let x0 = f.x_at_s(w.start_us as f64 / 1e6);
    let x1 = f.x_at_s(w.end_us as f64 / 1e6);
    let _ = writeln!(
        s,
        "<rect x=\"{x0:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"#ddd\"><title>{}</title></rect>",
        (x1 - x0).max(1.0),
        xml(&w.detail)
    );
    if let Some(ms) = w.recovery_ms {
        let x2 = f.x_at_s((w.end_us as f64 / 1e6) + ms as f64 / 1e3);
        let _ = writeln!(
            s,
            "<rect x=\"{x1:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"#f6d5d5\"><title>recovered {ms} ms after heal</title></rect>",
            (x2 - x1).max(0.0).min(LEFT + PANEL_W - x1)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\">{}</text>",
        x0 + 2.0,
        top + 10.0,
        xml(&w.fault.name())
    );
}

/// Throughput (linear) and mean and max latency (log scale), one point per bucket.
fn curves(s: &mut String, f: &Frame, t: &Timeline, ops_max: f64, lat_max: f64) {
    let (top, plot_h) = (f.top, f.plot_h);
    let ly = |ms: f64| top + plot_h - plot_h * (1.0 + ms).ln() / (1.0 + lat_max).ln();
    let oy = |v: f64| top + plot_h - plot_h * v / ops_max;
    let line = |vals: &[f64], y: &dyn Fn(f64) -> f64| -> String {
        vals.iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", f.x(i) + f.dx / 2.0, y(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>",
        line(&t.ops_per_s, &oy)
    );
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"1.2\" points=\"{}\"/>",
        line(&t.latency_mean_ms, &ly)
    );
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-dasharray=\"2,2\" points=\"{}\"/>",
        line(&t.latency_max_ms, &ly)
    );
}

/// A red tick per bucket with unknown outcomes, taller for more.
fn unknown_ticks(s: &mut String, f: &Frame, t: &Timeline) {
    for (i, &u) in t.unknowns.iter().enumerate() {
        if u > 0 {
            let _ = writeln!(
                s,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"red\"><title>{u} unknown</title></line>",
                f.x(i) + f.dx / 2.0,
                f.x(i) + f.dx / 2.0,
                f.bottom(),
                f.bottom() - 6.0 - f64::from(u.min(20))
            );
        }
    }
}

/// The scales' maxima (left: ops/s, right: latency) and the seconds along the bottom.
fn axes(s: &mut String, f: &Frame, ops_max: f64, lat_max: f64) {
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#1f77b4\">{ops_max:.0}/s</text>",
        LEFT - 4.0,
        f.top + 10.0
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" fill=\"#ff7f0e\">{lat_max:.0} ms</text>",
        LEFT + PANEL_W + 4.0,
        f.top + 10.0
    );
    for k in 0..=10 {
        let sec = f.secs * k as f64 / 10.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{sec:.0}s</text>",
            LEFT + PANEL_W * k as f64 / 10.0,
            f.bottom() + 12.0
        );
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The per-fault-type totals of the summary table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub runs: u32,
    pub ops: u64,
    pub unknowns: u64,
    pub violations: u64,
    pub recovery_ms_max: Option<u64>,
}

/// The summary table (Markdown): one row per fault type (a run with several faults counts
/// in each of their rows), then the totals over distinct runs.
pub fn table(rows: &BTreeMap<String, Row>, total: &Row) -> String {
    let mut s = String::from(
        "| fault | runs | operations | unknown | violations | max recovery |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (name, r) in rows {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            r.runs,
            r.ops,
            r.unknowns,
            r.violations,
            r.recovery_ms_max
                .map(|m| format!("{m} ms"))
                .unwrap_or_else(|| "-".into())
        );
    }
    let _ = writeln!(
        s,
        "| **all** | {} | {} | {} | {} | |",
        total.runs, total.ops, total.unknowns, total.violations
    );
    s
}
