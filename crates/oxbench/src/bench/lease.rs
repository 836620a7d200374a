//! lease-keepalive: each client keeps one lease alive over its own keep-alive stream and
//! measures each request's round trip.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use oxcd_api::etcdserverpb as pb;
use oxcd_client::Client;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

use super::{error_text, progress, report, run_clients, Pacer};
use crate::global::Global;
use crate::report::Samples;

/// TTL of the leases the benchmark keeps alive.
const LEASE_TTL_SECS: i64 = 100;

#[derive(Args, Debug)]
pub struct KeepaliveArgs {
    /// Total number of lease keepalive requests
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    /// Maximum keepalive requests per second (0 is no limit)
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

pub async fn keepalive(g: &Global, clients: Vec<Client>, a: KeepaliveArgs) -> anyhow::Result<()> {
    let pacer = Pacer::new(a.total, a.rate, g.max_duration);
    let stop = progress(pacer.clone());
    let conns = Arc::new(clients);
    let all = run_clients(g.clients, |c| {
        let (pacer, conns) = (pacer.clone(), conns.clone());
        async move { one_client(&conns[c % conns.len()], &pacer).await }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    report(g, "lease-keepalive", all, pacer.start.elapsed());
    Ok(())
}

async fn one_client(client: &Client, pacer: &Pacer) -> Samples {
    let mut s = Samples::default();
    let grant = client
        .lease()
        .lease_grant(pb::LeaseGrantRequest {
            ttl: LEASE_TTL_SECS,
            id: 0,
        })
        .await;
    let id = match grant {
        Ok(r) => r.into_inner().id,
        Err(e) => {
            s.err(error_text(&e));
            return s;
        }
    };
    let (tx, rx) = mpsc::channel(1);
    let Some(first) = pacer.next().await else {
        return s;
    };
    let _ = tx.send(pb::LeaseKeepAliveRequest { id }).await;
    let mut t = Instant::now();
    let mut stream = match client
        .lease()
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            s.err(error_text(&e));
            return s;
        }
    };
    let mut current = Some(first);
    while current.is_some() {
        match stream.next().await {
            Some(Ok(_)) => s.ok(t.elapsed()),
            Some(Err(e)) => {
                s.err(error_text(&e));
                break;
            }
            None => break,
        }
        pacer.finished_one();
        current = pacer.next().await;
        if current.is_some() {
            t = Instant::now();
            if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                break;
            }
        }
    }
    let _ = client
        .lease()
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await;
    s
}
