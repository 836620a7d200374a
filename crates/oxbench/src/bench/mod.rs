//! The request loop every workload shares: a pacer that hands out request numbers (bounded by
//! `--total`, `--rate` and `--max-duration`), client tasks, a progress bar, and the report.

pub mod kv;
pub mod lease;
pub mod watch;

use std::future::Future;
use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxcd_client::Client;

use crate::global::Global;
use crate::report::{stats, Samples};

/// Progress bar refresh period.
const PROGRESS_PERIOD: Duration = Duration::from_millis(200);
const PROGRESS_WIDTH: usize = 50;

/// Hands out request numbers 0..total, at `rate` per second when rate > 0, until the deadline.
pub struct Pacer {
    next: AtomicUsize,
    done: AtomicUsize,
    pub total: usize,
    rate: f64,
    pub start: Instant,
    deadline: Instant,
}

impl Pacer {
    pub fn new(total: usize, rate: f64, max: Duration) -> Arc<Pacer> {
        let start = Instant::now();
        Arc::new(Pacer {
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            total,
            rate,
            start,
            deadline: start + max,
        })
    }

    /// The next request number, after waiting for its turn; `None` when the run is over.
    pub async fn next(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.total {
            return None;
        }
        if self.rate > 0.0 {
            let at = self.start + Duration::from_secs_f64(i as f64 / self.rate);
            tokio::time::sleep_until(at.into()).await;
        }
        if Instant::now() >= self.deadline {
            return None;
        }
        Some(i)
    }

    pub fn finished_one(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `clients` tasks to the end and merges what each measured.
pub async fn run_clients<F, Fut>(clients: usize, task: F) -> Samples
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Samples> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        set.spawn(task(c));
    }
    let mut all = Samples::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(s) => all.merge(s),
            Err(e) => all.err(format!("client task failed: {e}")),
        }
    }
    all
}

/// Sends requests from `clients` tasks over the connections (shared round-robin) until the
/// pacer stops, with the progress bar. `op` makes request `i` and names the lane (below
/// `LANES`) whose samples record its latency or error.
pub async fn run_requests<const LANES: usize, F, Fut>(
    clients: usize,
    conns: Vec<Client>,
    pacer: &Arc<Pacer>,
    op: F,
) -> [Samples; LANES]
where
    F: Fn(Client, usize) -> (usize, Fut) + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let stop = progress(pacer.clone());
    let (op, conns) = (Arc::new(op), Arc::new(conns));
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (pacer, op, conns) = (pacer.clone(), op.clone(), conns.clone());
        set.spawn(async move {
            let client = &conns[c % conns.len()];
            let mut lanes: [Samples; LANES] = std::array::from_fn(|_| Samples::default());
            while let Some(i) = pacer.next().await {
                let (lane, request) = op(client.clone(), i);
                let t = Instant::now();
                let result = request.await;
                let s = &mut lanes[lane];
                match result {
                    Ok(()) => s.ok(t.elapsed()),
                    Err(e) => s.err(error_text(&e)),
                }
                pacer.finished_one();
            }
            lanes
        });
    }
    let mut all: [Samples; LANES] = std::array::from_fn(|_| Samples::default());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(lanes) => all.iter_mut().zip(lanes).for_each(|(a, s)| a.merge(s)),
            Err(e) => all[0].err(format!("client task failed: {e}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    all
}

/// Draws a progress bar on stderr while the run goes, when stderr is a terminal.
pub fn progress(pacer: Arc<Pacer>) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    if !std::io::stderr().is_terminal() {
        return stop;
    }
    let flag = stop.clone();
    tokio::spawn(async move {
        while !flag.load(Ordering::Relaxed) {
            let done = pacer.done.load(Ordering::Relaxed).min(pacer.total);
            let filled = done * PROGRESS_WIDTH / pacer.total.max(1);
            eprint!(
                "\r {done} / {} [{}{}] {:.2}%",
                pacer.total,
                "=".repeat(filled),
                " ".repeat(PROGRESS_WIDTH - filled),
                done as f64 * 100.0 / pacer.total.max(1) as f64
            );
            let _ = std::io::stderr().flush();
            tokio::time::sleep(PROGRESS_PERIOD).await;
        }
        eprintln!();
    });
    stop
}

/// One of the reports of a run that makes several, under its `title` line in etcd's text.
pub fn titled_report(g: &Global, title: &str, name: &str, samples: Samples, elapsed: Duration) {
    if !g.json {
        println!("{title}");
    }
    report(g, name, samples, elapsed);
}

/// Prints one report: etcd's text, or a JSON object with `--json`.
pub fn report(g: &Global, name: &str, samples: Samples, elapsed: Duration) {
    let series = g.sample.then(|| crate::report::time_series(&samples));
    let st = stats(samples, elapsed);
    if g.json {
        println!("{}", st.json(name));
    } else {
        println!("{}{}", st.text(g.precise), series.unwrap_or_default());
    }
}

/// A key of `size` bytes holding `n` as a Go varint, as etcd's benchmark makes keys.
pub fn bench_key(n: u64, size: usize) -> Vec<u8> {
    let mut k = vec![0u8; size.max(1)];
    let mut v = (n << 1) as i64 as u64; // zigzag of a non-negative number
    let mut i = 0;
    while v >= 0x80 && i < k.len() {
        k[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    if i < k.len() {
        k[i] = v as u8;
    }
    k
}

pub fn random_bytes(size: usize) -> Vec<u8> {
    (0..size).map(|_| rand::random::<u8>()).collect()
}

/// etcd's error text for a failed request.
pub fn error_text(s: &tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}
