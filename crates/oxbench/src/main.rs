//! oxbench: load generator and latency report for any etcd v3 endpoint, after etcd's
//! `tools/benchmark` (same workloads, flags and report format).

mod bench;
mod cli;
mod conns;
mod global;
mod report;

fn main() {
    if let Err(e) = cli::run() {
        eprintln!("oxbench: {e:#}");
        std::process::exit(1);
    }
}
