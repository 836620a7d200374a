//! The flags every workload takes (etcd's benchmark's persistent flags). Durations are Go's
//! (`5s`, `1m30s`), parsed when the command line is.

use std::time::Duration;

use clap::Args;
use oxcd_gocompat::duration;

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
    #[arg(long, global = true, default_value = "5s", value_parser = duration::parse)]
    pub dial_timeout: Duration,
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
    #[arg(long, global = true, default_value = "10m", value_parser = duration::parse)]
    pub max_duration: Duration,
}
