//! `oxcd`: the server binary. Takes etcd's flags (see `oxcd --help`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use oxcd_server::config::{self, Parsed};

/// jemalloc instead of glibc's malloc: glibc's malloc/free were a quarter of a member's CPU
/// under a put load. mimalloc (used before) spent 9-13 % of the member's samples in its slow
/// path, initialising fresh pages; jemalloc's whole share is about 3 %, and its peak RSS is
/// lower (docs/BENCHMARKS.md, "Session of 2026-12-03 (2)").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Chaos builds only: arm the FAILPOINTS variable, and make a panic (the failpoints'
    // `panic` action) crash the whole process at once, like kill -9.
    #[cfg(feature = "failpoints")]
    let _failpoints = {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("oxcd: failpoint crash: {info}");
            std::process::abort();
        }));
        fail::FailScenario::setup()
    };
    // Any other build: a panic is a bug, and a member whose raft thread died would stay up
    // serving nothing. Stop the whole process instead (exit status 2, as a Go panic in
    // etcd), so that it is seen and restarted.
    #[cfg(not(feature = "failpoints"))]
    {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            eprintln!("oxcd: internal error (panic); exiting");
            std::process::exit(2);
        }));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let cfg = match config::parse(&args, &env) {
        Ok(Parsed::Run(cfg)) => cfg,
        Ok(Parsed::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!(
                "oxcd Version: {}\netcd API Version: {}",
                env!("CARGO_PKG_VERSION"),
                oxcd_server::version::ETCD_VERSION
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("oxcd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = oxcd_server::logging::init(&cfg.log, &cfg.log_level) {
        eprintln!("oxcd: {e}");
        return ExitCode::from(2);
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oxcd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(oxcd_server::run(*cfg, shutdown_signal()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxcd: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
