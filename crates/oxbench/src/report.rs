//! Latency statistics and etcd's benchmark report: summary, histogram, percentiles, error
//! distribution; or the same figures as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use oxcd_gocompat::duration;

const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];
const HISTOGRAM_BUCKETS: usize = 10;
const BAR_WIDTH_MAX: usize = 40;

/// Latencies of one workload (seconds), the unix second each request ended in, and errors by
/// message.
#[derive(Default, Clone)]
pub struct Samples {
    pub lats: Vec<f64>,
    pub ends: Vec<u64>,
    pub errors: BTreeMap<String, usize>,
}

impl Samples {
    pub fn ok(&mut self, d: Duration) {
        self.lats.push(d.as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.ends.push(now.as_secs());
    }

    pub fn err(&mut self, msg: String) {
        *self.errors.entry(msg).or_default() += 1;
    }

    pub fn merge(&mut self, other: Samples) {
        self.lats.extend(other.lats);
        self.ends.extend(other.ends);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

pub struct Stats {
    pub total: f64,
    pub slowest: f64,
    pub fastest: f64,
    pub average: f64,
    pub stddev: f64,
    pub rps: f64,
    pub lats: Vec<f64>,
    pub errors: BTreeMap<String, usize>,
}

/// etcd's `--sample` table: per second, min/avg/max latency and requests finished.
pub fn time_series(s: &Samples) -> String {
    let mut secs: BTreeMap<u64, (f64, f64, f64, u64)> = BTreeMap::new();
    for (&lat, &end) in s.lats.iter().zip(&s.ends) {
        let e = secs.entry(end).or_insert((f64::MAX, 0.0, 0.0, 0));
        e.0 = e.0.min(lat);
        e.1 += lat;
        e.2 = e.2.max(lat);
        e.3 += 1;
    }
    let mut out = String::from("\nSample in one second (unix latency throughput):\nUNIX-SECOND,MIN-LATENCY-MS,AVG-LATENCY-MS,MAX-LATENCY-MS,AVG-THROUGHPUT\n");
    for (sec, (min, sum, max, n)) in secs {
        let d = |v: f64| duration::format(Duration::from_secs_f64(v));
        let _ = writeln!(out, "{sec},{},{},{},{n}", d(min), d(sum / n as f64), d(max));
    }
    out
}

pub fn stats(mut s: Samples, total: Duration) -> Stats {
    s.lats.sort_by(|a, b| a.total_cmp(b));
    let n = s.lats.len().max(1) as f64;
    let average = s.lats.iter().sum::<f64>() / n;
    let var = s.lats.iter().map(|l| (l - average).powi(2)).sum::<f64>() / n;
    Stats {
        total: total.as_secs_f64(),
        slowest: s.lats.last().copied().unwrap_or(0.0),
        fastest: s.lats.first().copied().unwrap_or(0.0),
        average,
        stddev: var.sqrt(),
        rps: s.lats.len() as f64 / total.as_secs_f64().max(1e-9),
        lats: s.lats,
        errors: s.errors,
    }
}

/// The value at each percentile of sorted latencies, as etcd's report picks it.
pub fn percentiles(lats: &[f64]) -> Vec<f64> {
    PERCENTILES
        .iter()
        .map(|p| {
            if lats.is_empty() {
                return 0.0;
            }
            let ip = (lats.len() as f64 - 1.0) * p / 100.0;
            lats[(ip.ceil() as usize).min(lats.len() - 1)]
        })
        .collect()
}

/// Number formatting: `%4.4f` by default, `%g` with `--precise`.
fn num(v: f64, precise: bool) -> String {
    if precise {
        format!("{v}")
    } else {
        format!("{v:.4}")
    }
}

impl Stats {
    pub fn text(&self, precise: bool) -> String {
        let secs = |v: f64| format!("{} secs", num(v, precise));
        let mut s = String::new();
        if !self.lats.is_empty() {
            s += "\nSummary:\n";
            let _ = writeln!(s, "  Total:\t{}.", secs(self.total));
            let _ = writeln!(s, "  Slowest:\t{}.", secs(self.slowest));
            let _ = writeln!(s, "  Fastest:\t{}.", secs(self.fastest));
            let _ = writeln!(s, "  Average:\t{}.", secs(self.average));
            let _ = writeln!(s, "  Stddev:\t{}.", secs(self.stddev));
            let _ = writeln!(s, "  Requests/sec:\t{}", num(self.rps, precise));
            s += &self.histogram(precise);
            s += "\nLatency distribution:\n";
            for (p, v) in PERCENTILES.iter().zip(percentiles(&self.lats)) {
                if v > 0.0 {
                    let _ = writeln!(s, "  {p}% in {}.", secs(v));
                }
            }
        }
        if !self.errors.is_empty() {
            s += "\nError distribution:\n";
            for (e, n) in &self.errors {
                let _ = writeln!(s, "  [{n}]\t{e}");
            }
        }
        s
    }

    fn histogram(&self, precise: bool) -> String {
        let step = (self.slowest - self.fastest) / HISTOGRAM_BUCKETS as f64;
        let mut bounds: Vec<f64> = (0..HISTOGRAM_BUCKETS)
            .map(|i| self.fastest + step * i as f64)
            .collect();
        bounds.push(self.slowest);
        let mut counts = vec![0usize; bounds.len()];
        let mut b = 0;
        for &l in &self.lats {
            while l > bounds[b] && b < bounds.len() - 1 {
                b += 1;
            }
            counts[b] += 1;
        }
        let max = counts.iter().copied().max().unwrap_or(0).max(1);
        let mut s = String::from("\nResponse time histogram:\n");
        for (bound, count) in bounds.iter().zip(&counts) {
            let bar = "∎".repeat(count * BAR_WIDTH_MAX / max);
            let _ = writeln!(s, "  {} [{count}]\t|{bar}", num(*bound, precise));
        }
        s
    }

    pub fn json(&self, name: &str) -> serde_json::Value {
        let pct: serde_json::Map<String, serde_json::Value> = PERCENTILES
            .iter()
            .zip(percentiles(&self.lats))
            .map(|(p, v)| (format!("p{p}"), serde_json::json!(v)))
            .collect();
        serde_json::json!({
            "workload": name,
            "requests": self.lats.len(),
            "errors": self.errors.values().sum::<usize>(),
            "error_distribution": self.errors,
            "total_secs": self.total,
            "slowest_secs": self.slowest,
            "fastest_secs": self.fastest,
            "average_secs": self.average,
            "stddev_secs": self.stddev,
            "requests_per_sec": self.rps,
            "latency_secs": pct,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_etcd_sections() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.ok(Duration::from_millis(ms));
        }
        s.err("boom".into());
        let st = stats(s, Duration::from_secs(2));
        assert_eq!(st.rps, 50.0);
        assert_eq!(percentiles(&st.lats)[2], 0.051);
        let text = st.text(false);
        assert!(text.contains("  Total:\t2.0000 secs.\n"), "{text}");
        assert!(text.contains("  Requests/sec:\t50.0000\n"));
        assert!(text.contains("  99.9% in 0.1000 secs.\n"));
        assert!(text.contains("Response time histogram:\n  0.0010 [1]\t|"));
        assert!(text.contains("  [1]\tboom\n"));
    }
}
