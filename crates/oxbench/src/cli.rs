//! Flags, after etcd's benchmark tool, and dispatch to the workloads.

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::bench::{kv, lease, watch};
use crate::global::Global;

#[derive(Parser, Debug)]
#[command(
    name = "oxbench",
    about = "A low-level benchmark tool for etcd3 (and oxcd)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Benchmark put
    Put(kv::PutArgs),
    /// Benchmark range
    Range(kv::RangeArgs),
    /// Benchmark txn-put
    TxnPut(kv::TxnPutArgs),
    /// Benchmark txn with mixed reads and writes
    TxnMixed(kv::TxnMixedArgs),
    /// Benchmark watch: many watchers, many puts, latency of event delivery
    Watch(watch::WatchArgs),
    /// Benchmark watch latency: time from a put to each watcher seeing it
    WatchLatency(watch::WatchLatencyArgs),
    /// Benchmark lease keepalive
    LeaseKeepalive(lease::KeepaliveArgs),
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.global.clients == 0 || cli.global.conns == 0 {
        bail!("--clients and --conns must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global;
    let clients = crate::conns::open(&g).await?;
    match cli.command {
        Command::Put(a) => kv::put(&g, clients, a).await,
        Command::Range(a) => kv::range(&g, clients, a).await,
        Command::TxnPut(a) => kv::txn_put(&g, clients, a).await,
        Command::TxnMixed(a) => kv::txn_mixed(&g, clients, a).await,
        Command::Watch(a) => watch::watch(&g, clients, a).await,
        Command::WatchLatency(a) => watch::latency(&g, clients, a).await,
        Command::LeaseKeepalive(a) => lease::keepalive(&g, clients, a).await,
    }
}
