//! etcdctl 3.4 against a real `oxcd` on a plain http URL: its gRPC client sends
//! `:authority: http://host:port`, which `h2_authority` repairs (see its module doc).
//! HTTP/1.1 (curl) must still work through the same listener.

use std::process::Command;
use std::time::Duration;

use oxcd_testkit::process::poll;
use oxcd_testkit::{require, run, Cluster, Impl, Output};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The real etcdctl against member 0's client URL, bounded in time (a missing one fails the
/// test by name). Only `--endpoints` and `--command-timeout`: no dial timeout, as a user
/// would run it.
fn etcdctl(c: &Cluster, args: &[&str]) -> Output {
    let endpoints = format!("--endpoints={}", c.endpoint(0));
    run(
        Command::new(require("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args([endpoints.as_str(), "--command-timeout=5s"])
            .args(args),
        b"",
    )
}

#[test]
fn etcdctl_reaches_a_member_over_plain_http() {
    let member = Cluster::builder(Impl::Oxcd).names(&["d"]).build();
    member.spawn(0);
    // Ready when etcdctl itself says so (through the repaired authority).
    let mut last = None;
    let healthy = poll(START_TIMEOUT, Duration::from_millis(200), || {
        let out = etcdctl(&member, &["endpoint", "health"]);
        let ok = out.code == 0;
        last = Some(out);
        ok.then_some(())
    });
    assert!(
        healthy.is_some(),
        "oxcd not healthy after {START_TIMEOUT:?}: {last:?}\n--- oxcd log ---\n{}",
        member.log(0)
    );

    // `--cluster` dials each member's advertised URL directly: the case that used to fail
    // with RST_STREAM PROTOCOL_ERROR.
    let out = etcdctl(&member, &["endpoint", "status", "--cluster", "-w", "table"]);
    let shown = out.text();
    assert!(out.code == 0, "endpoint status failed: {shown}");
    assert!(!shown.contains("Failed"), "{shown}");
    assert!(
        shown.contains(&format!("| {} |", member.endpoint(0))),
        "{shown}"
    );

    // A write and a read, each with the repaired authority.
    let out = etcdctl(&member, &["put", "k", "v"]);
    assert!(out.code == 0, "put failed: {}", out.text());
    let out = etcdctl(&member, &["get", "k", "--print-value-only"]);
    assert_eq!(out.text().trim(), "v");

    // HTTP/1.1 through the same shim.
    let url = format!("{}/version", member.endpoint(0));
    let out = run(
        Command::new(require("curl")).args(["-sS", "--max-time", "5", &url]),
        b"",
    );
    assert!(out.code == 0, "curl failed: {}", out.text());
    assert!(out.text().contains("etcdserver"), "{}", out.text());
}
