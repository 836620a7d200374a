//! oxctl: a command line client for etcd v3 endpoints (etcd or oxcd), command- and
//! output-compatible with etcdctl 3.4.

mod cli;
mod cmd;
mod ctx;
mod error;
mod gofmt;
mod json;
mod print;
mod txn_parse;

fn main() {
    let code = cli::run(std::env::args_os().collect());
    std::process::exit(code);
}
