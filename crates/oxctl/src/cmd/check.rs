//! check perf: etcdctl's 60-second write load (256-byte keys, 1 KiB values) at a fixed rate
//! with many clients, judged on throughput, slowest request and standard deviation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb as pb;
use tokio::sync::mpsc;

use super::check_keys::{clean_up, ensure_prefix_free, random_key, too_many_errors, unknown_load};
use super::emit;

use crate::ctx::Ctx;
use crate::error::{CtlError, CtlResult, EXIT_ERROR};

#[derive(clap::Subcommand, Debug)]
pub enum CheckCmd {
    /// Check the performance of the etcd cluster
    Perf {
        /// The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)
        #[arg(long, default_value = "s")]
        load: String,
        /// The prefix for writing the performance check's keys.
        #[arg(long, default_value = "/etcdctl-check-perf/")]
        prefix: String,
        /// Compact storage with last revision after test is finished.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
        auto_compact: bool,
        /// Defragment storage after test is finished.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
        auto_defrag: bool,
    },
    /// Check the memory usage of holding data for different workloads on a given server endpoint.
    Datascale {
        /// The datascale check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)
        #[arg(long, default_value = "s")]
        load: String,
        /// The prefix for writing the datascale check's keys.
        #[arg(long, default_value = "/etcdctl-check-datascale/")]
        prefix: String,
        /// Compact storage with last revision after test is finished.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
        auto_compact: bool,
        /// Defragment storage after test is finished.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
        auto_defrag: bool,
    },
}

/// Writes per second, clients and seconds of each load model (etcdctl's table).
fn model(load: &str) -> Option<(u32, usize, u64)> {
    match load {
        "s" | "small" => Some((150, 50, 60)),
        "m" | "medium" => Some((1000, 200, 60)),
        "l" | "large" => Some((8000, 500, 60)),
        "xl" | "xLarge" => Some((15000, 1000, 60)),
        _ => None,
    }
}

const KEY_BYTES: usize = 256;
const VALUE_BYTES: usize = 1024;

pub async fn run(ctx: &Ctx, c: CheckCmd) -> CtlResult {
    let (load, prefix, auto_compact, auto_defrag) = match c {
        CheckCmd::Perf {
            load,
            prefix,
            auto_compact,
            auto_defrag,
        } => (load, prefix, auto_compact, auto_defrag),
        CheckCmd::Datascale {
            load,
            prefix,
            auto_compact,
            auto_defrag,
        } => {
            return super::datascale::run(ctx, &load, &prefix, auto_compact, auto_defrag).await;
        }
    };
    let Some((limit, clients, secs)) = model(&load) else {
        return Err(unknown_load(&load));
    };
    let first = ctx.client().await?;
    ensure_prefix_free(ctx, &first, &prefix).await?;
    let (tx, rx) = mpsc::channel::<pb::PutRequest>(clients);
    let workers = spawn_writers(ctx, clients, rx).await?;
    let start = Instant::now();
    produce(tx, &prefix, limit, Duration::from_secs(secs)).await;
    let (lats, errs) = collect(workers).await;
    let elapsed = start.elapsed().as_secs_f64();
    // etcdctl gives the clean-up delete 30 seconds.
    let compacted = clean_up(ctx, &first, &prefix, Duration::from_secs(30), auto_compact).await?;
    if let Some(rev) = compacted {
        emit(format!("Compacted with revision {rev}\n").as_bytes())?;
    }
    if auto_defrag {
        ctx.call(first.maintenance().defragment(pb::DefragmentRequest {}))
            .await?;
        emit(format!("Defragmented {:?}\n", first.endpoint.original).as_bytes())?;
    }
    verdict(&lats, &errs, elapsed, limit)
}

type Measured = (Vec<f64>, BTreeMap<String, usize>);

/// One connection per client, each taking puts from the shared queue and timing them.
async fn spawn_writers(
    ctx: &Ctx,
    clients: usize,
    rx: mpsc::Receiver<pb::PutRequest>,
) -> CtlResult<tokio::task::JoinSet<Measured>> {
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let client = ctx.client().await?;
        let rx = rx.clone();
        workers.spawn(async move {
            let (mut lats, mut errs) = (Vec::new(), BTreeMap::<String, usize>::new());
            loop {
                let Some(req) = rx.lock().await.recv().await else {
                    break;
                };
                let t = Instant::now();
                match client.kv().put(req).await {
                    Ok(_) => lats.push(t.elapsed().as_secs_f64()),
                    Err(s) => *errs.entry(crate::error::status_message(&s)).or_default() += 1,
                }
            }
            (lats, errs)
        });
    }
    Ok(workers)
}

async fn collect(mut workers: tokio::task::JoinSet<Measured>) -> Measured {
    let (mut lats, mut errs) = (Vec::new(), BTreeMap::new());
    while let Some(Ok((l, e))) = workers.join_next().await {
        lats.extend(l);
        for (k, v) in e {
            *errs.entry(k).or_insert(0) += v;
        }
    }
    (lats, errs)
}

/// Sends puts at `limit` per second for `dur`, then closes the queue.
async fn produce(tx: mpsc::Sender<pb::PutRequest>, prefix: &str, limit: u32, dur: Duration) {
    let start = tokio::time::Instant::now();
    let value = vec![0u8; VALUE_BYTES];
    for i in 0u64.. {
        // The rate limit paces the requests; the wall clock ends the run (a saturated server
        // makes the queue fall behind the schedule).
        let at = start + Duration::from_secs_f64(i as f64 / f64::from(limit));
        tokio::time::sleep_until(at).await;
        if start.elapsed() >= dur {
            break;
        }
        let put = pb::PutRequest {
            key: random_key(prefix, KEY_BYTES),
            value: value.clone(),
            ..Default::default()
        };
        if tx.send(put).await.is_err() {
            break;
        }
    }
}

fn verdict(lats: &[f64], errs: &BTreeMap<String, usize>, elapsed: f64, limit: u32) -> CtlResult {
    let n = lats.len().max(1) as f64;
    let avg = lats.iter().sum::<f64>() / n;
    let stddev = (lats.iter().map(|l| (l - avg).powi(2)).sum::<f64>() / n).sqrt();
    let slowest = lats.iter().copied().fold(0.0, f64::max);
    let rps = lats.len() as f64 / elapsed.max(1e-9);
    let mut out = String::new();
    let mut ok = true;
    if !errs.is_empty() {
        out += &too_many_errors(errs);
        ok = false;
    }
    if rps / f64::from(limit) <= 0.9 {
        out += &format!("FAIL: Throughput too low: {} writes/s\n", rps as i64 + 1);
        ok = false;
    } else {
        out += &format!("PASS: Throughput is {} writes/s\n", rps as i64 + 1);
    }
    if slowest > 0.5 {
        out += &format!("Slowest request took too long: {slowest:.6}s\n");
        ok = false;
    } else {
        out += &format!("PASS: Slowest request took {slowest:.6}s\n");
    }
    if stddev > 0.1 {
        out += &format!("Stddev too high: {stddev:.6}s\n");
        ok = false;
    } else {
        out += &format!("PASS: Stddev is {stddev:.6}s\n");
    }
    out += if ok { "PASS\n" } else { "FAIL\n" };
    emit(out.as_bytes())?;
    if ok {
        Ok(())
    } else {
        Err(CtlError::new(EXIT_ERROR, ""))
    }
}
