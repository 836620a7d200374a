//! put, range, txn-put and txn-mixed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use oxcd_api::etcdserverpb::{self as pb, request_op::Request};
use oxcd_client::Client;

use super::{bench_key, random_bytes, report, run_requests, titled_report, Pacer};
use crate::global::Global;

/// The sizes of the keys and values a workload writes.
#[derive(Args, Debug)]
pub struct Sizes {
    /// Key size of put request
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of put request
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub sizes: Sizes,
    /// Total number of put requests
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    /// Maximum puts per second (0 is no limit)
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Maximum possible keys
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use sequential keys
    #[arg(long)]
    pub sequential_keys: bool,
    /// Interval to compact database (do not compact if 0)
    #[arg(long, default_value = "0s", value_parser = oxcd_gocompat::duration::parse)]
    pub compact_interval: Duration,
    /// Delta between current revision and compact revision
    #[arg(long, default_value_t = 1000)]
    pub compact_index_delta: i64,
}

#[derive(Args, Debug)]
pub struct RangeArgs {
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Total number of range requests
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    /// Maximum range requests per second (0 is no limit)
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Maximum number of results to return from range request (0 is no limit)
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Only returns the count of keys
    #[arg(long)]
    pub count_only: bool,
    /// key [end_range]
    #[arg(required = true, num_args = 1..=2)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TxnPutArgs {
    #[command(flatten)]
    pub sizes: Sizes,
    /// Number of puts per txn
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
}

#[derive(Args, Debug)]
pub struct TxnMixedArgs {
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Read/write ops ratio
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
    #[command(flatten)]
    pub sizes: Sizes,
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// key [end_range]
    #[arg(required = true, num_args = 1..=2)]
    pub args: Vec<String>,
}

fn key_for(i: usize, space: u64, seq: bool, size: usize) -> Vec<u8> {
    let n = if seq {
        i as u64 % space.max(1)
    } else {
        rand::random::<u64>() % space.max(1)
    };
    bench_key(n, size)
}

fn serializable(c: &str) -> anyhow::Result<bool> {
    match c {
        "l" => Ok(false),
        "s" => Ok(true),
        other => bail!("--consistency must be l or s, not {other:?}"),
    }
}

/// Runs one kind of request on every client and prints the report.
async fn drive<F, Fut>(
    g: &Global,
    clients: Vec<Client>,
    name: &str,
    total: usize,
    rate: f64,
    op: F,
) -> anyhow::Result<()>
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let pacer = Pacer::new(total, rate, g.max_duration);
    let [samples] = run_requests(g.clients, clients, &pacer, move |c, i| (0, op(c, i))).await;
    report(g, name, samples, pacer.start.elapsed());
    Ok(())
}

pub async fn put(g: &Global, clients: Vec<Client>, a: PutArgs) -> anyhow::Result<()> {
    let value = Arc::new(random_bytes(a.sizes.val_size));
    if a.compact_interval > Duration::ZERO {
        spawn_compactor(
            clients[0].clone(),
            a.compact_interval,
            a.compact_index_delta,
        );
    }
    let (space, seq, size) = (a.key_space_size, a.sequential_keys, a.sizes.key_size);
    drive(g, clients, "put", a.total, a.rate, move |c, i| {
        let req = pb::PutRequest {
            key: key_for(i, space, seq, size),
            value: value.to_vec(),
            ..Default::default()
        };
        async move { c.kv().put(req).await.map(|_| ()) }
    })
    .await
}

/// Compacts to `revision - delta` every `every`, as etcd's put benchmark does.
fn spawn_compactor(client: Client, every: Duration, delta: i64) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let req = pb::RangeRequest {
                key: b"foo".to_vec(),
                ..Default::default()
            };
            let Ok(r) = client.kv().range(req).await else {
                continue;
            };
            let rev = r.into_inner().header.map(|h| h.revision).unwrap_or(0) - delta;
            if rev > 0 {
                let _ = client
                    .kv()
                    .compact(pb::CompactionRequest {
                        revision: rev,
                        physical: false,
                    })
                    .await;
            }
        }
    });
}

fn range_request(
    args: &[String],
    consistency: &str,
    limit: i64,
    count_only: bool,
) -> anyhow::Result<pb::RangeRequest> {
    Ok(pb::RangeRequest {
        key: args[0].clone().into_bytes(),
        range_end: args
            .get(1)
            .map(|e| e.clone().into_bytes())
            .unwrap_or_default(),
        serializable: serializable(consistency)?,
        limit,
        count_only,
        ..Default::default()
    })
}

pub async fn range(g: &Global, clients: Vec<Client>, a: RangeArgs) -> anyhow::Result<()> {
    let req = range_request(&a.args, &a.consistency, a.limit, a.count_only)?;
    drive(g, clients, "range", a.total, a.rate, move |c, _| {
        let req = req.clone();
        async move { c.kv().range(req).await.map(|_| ()) }
    })
    .await
}

pub async fn txn_put(g: &Global, clients: Vec<Client>, a: TxnPutArgs) -> anyhow::Result<()> {
    let value = Arc::new(random_bytes(a.sizes.val_size));
    let (ops, space, size) = (a.txn_ops.max(1), a.key_space_size, a.sizes.key_size);
    drive(g, clients, "txn-put", a.total, a.rate, move |c, i| {
        // Distinct keys within one txn (etcd refuses duplicates), as etcd's txn-put makes them.
        let success = (0..ops)
            .map(|j| pb::RequestOp {
                request: Some(Request::RequestPut(pb::PutRequest {
                    key: bench_key((i * ops + j) as u64 % space.max(1), size),
                    value: value.to_vec(),
                    ..Default::default()
                })),
            })
            .collect();
        let req = pb::TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        };
        async move { c.kv().txn(req).await.map(|_| ()) }
    })
    .await
}

/// Reads and writes mixed `rw-ratio` to 1; one report for each.
pub async fn txn_mixed(g: &Global, clients: Vec<Client>, a: TxnMixedArgs) -> anyhow::Result<()> {
    const READS: usize = 0;
    const WRITES: usize = 1;
    let read = range_request(&a.args, &a.consistency, a.limit, false)?;
    let value = random_bytes(a.sizes.val_size);
    let read_share = a.rw_ratio / (a.rw_ratio + 1.0);
    let (space, size) = (a.key_space_size, a.sizes.key_size);
    let pacer = Pacer::new(a.total, a.rate, g.max_duration);
    let [reads, writes] = run_requests(g.clients, clients, &pacer, move |client, i| {
        let (lane, op) = if rand::random::<f64>() < read_share {
            (READS, Request::RequestRange(read.clone()))
        } else {
            let put = pb::PutRequest {
                key: key_for(i, space, false, size),
                value: value.clone(),
                ..Default::default()
            };
            (WRITES, Request::RequestPut(put))
        };
        let req = pb::TxnRequest {
            compare: vec![],
            success: vec![pb::RequestOp { request: Some(op) }],
            failure: vec![],
        };
        (lane, async move { client.kv().txn(req).await.map(|_| ()) })
    })
    .await;
    let elapsed = pacer.start.elapsed();
    titled_report(g, "Read summary:", "txn-mixed-read", reads, elapsed);
    titled_report(g, "Write summary:", "txn-mixed-write", writes, elapsed);
    Ok(())
}
