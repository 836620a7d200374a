//! Flags, after etcd's benchmark tool, and dispatch to the workloads.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::bench;

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// gRPC endpoints
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Total number of gRPC connections
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Total number of gRPC clients (concurrent requests)
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Send requests to the leader only
    #[arg(long, global = true)]
    pub target_leader: bool,
    /// verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(long, global = true)]
    pub cacert: Option<String>,
    /// identify secure client using this TLS certificate file
    #[arg(long, global = true)]
    pub cert: Option<String>,
    /// identify secure client using this TLS key file
    #[arg(long, global = true)]
    pub key: Option<String>,
    /// provide username[:password]
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// dial timeout for client connections
    #[arg(long, global = true, default_value = "5s")]
    pub dial_timeout: String,
    /// Generate a report with full precision (%g instead of %4.4f)
    #[arg(long, global = true)]
    pub precise: bool,
    /// 'true' to sample requests for every second
    #[arg(long, global = true)]
    pub sample: bool,
    /// Print the report as one JSON object instead of etcd's text report
    #[arg(long, global = true)]
    pub json: bool,
    /// Stop issuing requests after this long, even before --total
    #[arg(long, global = true, default_value = "10m")]
    pub max_duration: String,
}

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
    Put(bench::kv::PutArgs),
    /// Benchmark range
    Range(bench::kv::RangeArgs),
    /// Benchmark txn-put
    TxnPut(bench::kv::TxnPutArgs),
    /// Benchmark txn with mixed reads and writes
    TxnMixed(bench::kv::TxnMixedArgs),
    /// Benchmark watch: many watchers, many puts, latency of event delivery
    Watch(bench::watch::WatchArgs),
    /// Benchmark watch latency: time from a put to each watcher seeing it
    WatchLatency(bench::watch::WatchLatencyArgs),
    /// Benchmark lease keepalive
    LeaseKeepalive(bench::lease::KeepaliveArgs),
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.global.clients == 0 || cli.global.conns == 0 {
        bail!("--clients and --conns must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench::dispatch(cli))
}

/// Parses Go durations: `5s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().with_context(|| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("bad duration {s:?}: use ms, s, m or h"),
    };
    Ok(Duration::from_secs_f64(secs))
}
