//! watch and watch-latency: watchers on many streams, a paced writer, and the time from each
//! put being sent to each watcher receiving its event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use oxcd_api::etcdserverpb::{self as pb, watch_request::RequestUnion};
use oxcd_client::Client;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

use super::{error_text, report, titled_report, Pacer};
use crate::global::Global;
use crate::report::Samples;

/// Create requests queued per stream.
const WATCH_REQUESTS_QUEUED_MAX: usize = 64;
/// How long watchers wait for the last events after the last put.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const WATCHED_KEY: &[u8] = b"oxbench/watch";

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Total number of watch streams
    #[arg(long, default_value_t = 10)]
    pub total_streams: usize,
    /// Total number of watchers per stream
    #[arg(long, default_value_t = 100)]
    pub watch_per_stream: usize,
    /// Number of put requests
    #[arg(long, default_value_t = 1000)]
    pub put_total: usize,
    /// Number of puts per second
    #[arg(long, default_value_t = 100.0)]
    pub put_rate: f64,
    /// Value size of put request
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
}

#[derive(Args, Debug)]
pub struct WatchLatencyArgs {
    /// Total number of put requests
    #[arg(long, default_value_t = 1000)]
    pub put_total: usize,
    /// Number of keys to put per second
    #[arg(long, default_value_t = 100.0)]
    pub put_rate: f64,
    /// Total number of watch streams
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Total number of watchers per stream
    #[arg(long, default_value_t = 10)]
    pub watchers_per_stream: usize,
    /// PrevKV enabled on watch requests
    #[arg(long)]
    pub prevkv: bool,
    /// Watch the prefix `oxbench/watch` and put keys under it (an oxbench extension:
    /// etcd's tool watches one key)
    #[arg(long)]
    pub prefix: bool,
    /// Distinct keys the puts cycle through with --prefix
    #[arg(long, default_value_t = 1000)]
    pub key_space_size: usize,
    /// Value size of put request
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
}

pub async fn watch(g: &Global, clients: Vec<Client>, a: WatchArgs) -> anyhow::Result<()> {
    let plan = Fanout {
        streams: a.total_streams,
        per_stream: a.watch_per_stream,
        puts: a.put_total,
        rate: a.put_rate,
        val_size: a.val_size,
        prev_kv: false,
        prefix: false,
        key_space: 1,
    };
    let (created, events, created_secs, events_secs) =
        fanout(clients, plan, g.max_duration).await?;
    titled_report(
        g,
        "Watch creation summary:",
        "watch-create",
        created,
        created_secs,
    );
    titled_report(
        g,
        "Watch events received summary:",
        "watch-events",
        events,
        events_secs,
    );
    Ok(())
}

pub async fn latency(g: &Global, clients: Vec<Client>, a: WatchLatencyArgs) -> anyhow::Result<()> {
    let plan = Fanout {
        streams: a.streams,
        per_stream: a.watchers_per_stream,
        puts: a.put_total,
        rate: a.put_rate,
        val_size: a.val_size,
        prev_kv: a.prevkv,
        prefix: a.prefix,
        key_space: a.key_space_size.max(1),
    };
    let (_, events, _, events_secs) = fanout(clients, plan, g.max_duration).await?;
    report(g, "watch-latency", events, events_secs);
    Ok(())
}

struct Fanout {
    streams: usize,
    per_stream: usize,
    puts: usize,
    rate: f64,
    val_size: usize,
    prev_kv: bool,
    prefix: bool,
    key_space: usize,
}

/// The end of the range of keys that start with `key`.
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Opens the streams and watchers, then puts; returns creation and delivery latencies.
async fn fanout(
    clients: Vec<Client>,
    plan: Fanout,
    max: Duration,
) -> anyhow::Result<(Samples, Samples, Duration, Duration)> {
    let t0 = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..plan.puts).map(|_| AtomicU64::new(0)).collect());
    let mut created = Samples::default();
    let mut readers = tokio::task::JoinSet::new();
    for s in 0..plan.streams.max(1) {
        let client = &clients[s % clients.len()];
        let (tx, rx) = mpsc::channel(WATCH_REQUESTS_QUEUED_MAX);
        let create = pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: WATCHED_KEY.to_vec(),
                range_end: if plan.prefix {
                    prefix_end(WATCHED_KEY)
                } else {
                    Vec::new()
                },
                prev_kv: plan.prev_kv,
                ..Default::default()
            })),
        };
        tx.send(create.clone()).await?;
        let mut stream = client
            .watch()
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        for w in 0..plan.per_stream {
            let t = Instant::now();
            if w > 0 {
                tx.send(create.clone()).await?;
            }
            match stream.next().await {
                Some(Ok(r)) if r.created => created.ok(t.elapsed()),
                Some(Ok(_)) => created.err("unexpected watch response before creation".into()),
                Some(Err(e)) => created.err(error_text(&e)),
                None => created.err("watch stream closed".into()),
            }
        }
        let (expected, sent_at) = (plan.puts * plan.per_stream, sent_at.clone());
        readers.spawn(async move {
            let _keep_open = tx;
            read_events(stream, expected, sent_at, t0).await
        });
    }
    let created_secs = t0.elapsed();
    let put_start = Instant::now();
    put_paced(&clients[0], &plan, sent_at, t0, max).await;
    let mut events = Samples::default();
    while let Some(r) = readers.join_next().await {
        match r {
            Ok(s) => events.merge(s),
            Err(e) => events.err(format!("watch reader failed: {e}")),
        }
    }
    Ok((created, events, created_secs, put_start.elapsed()))
}

/// Puts `plan.puts` values (each starting with its number) at `plan.rate` per second.
async fn put_paced(
    client: &Client,
    plan: &Fanout,
    sent_at: Arc<Vec<AtomicU64>>,
    t0: Instant,
    max: Duration,
) {
    let pacer = Pacer::new(plan.puts, plan.rate, max);
    let mut kv = client.kv();
    while let Some(i) = pacer.next().await {
        let mut value = (i as u64).to_le_bytes().to_vec();
        value.resize(plan.val_size.max(8), b'x');
        sent_at[i].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let key = if plan.prefix {
            let mut k = WATCHED_KEY.to_vec();
            k.extend_from_slice(format!("/{:06}", i % plan.key_space).as_bytes());
            k
        } else {
            WATCHED_KEY.to_vec()
        };
        let req = pb::PutRequest {
            key,
            value,
            ..Default::default()
        };
        if kv.put(req).await.is_err() {
            break;
        }
    }
}

async fn read_events(
    mut stream: tonic::Streaming<pb::WatchResponse>,
    expected: usize,
    sent_at: Arc<Vec<AtomicU64>>,
    t0: Instant,
) -> Samples {
    let mut s = Samples::default();
    let mut seen = 0;
    while seen < expected {
        let next = tokio::time::timeout(DRAIN_TIMEOUT, stream.next()).await;
        let resp = match next {
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(e))) => {
                s.err(error_text(&e));
                break;
            }
            Ok(None) | Err(_) => break,
        };
        let now = t0.elapsed().as_nanos() as u64;
        for e in resp.events {
            seen += 1;
            let value = e.kv.map(|kv| kv.value).unwrap_or_default();
            let Some(idx) = value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
            else {
                continue;
            };
            if let Some(sent) = sent_at.get(idx as usize) {
                s.ok(Duration::from_nanos(
                    now.saturating_sub(sent.load(Ordering::Relaxed)),
                ));
            }
        }
    }
    s
}
