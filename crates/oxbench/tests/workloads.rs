//! Every oxbench workload against a real etcd 3.4 on loopback: it must finish, count every
//! request, report no errors, and print etcd's report sections.

use std::process::Command;

use oxcd_testkit::{run, Cluster, Impl, Output};

/// A single-member etcd 3.4, started and ready.
fn start_etcd() -> Cluster {
    Cluster::builder(Impl::Etcd).names(&["b"]).start()
}

fn oxbench(etcd: &Cluster, args: &[&str]) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_oxbench"))
            .arg(format!("--endpoints={}", etcd.host_port(0)))
            .args(["--max-duration", "60s"])
            .args(args),
        b"",
    )
}

fn json_reports(etcd: &Cluster, args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = vec!["--json"];
    full.extend(args);
    let out = oxbench(etcd, &full);
    assert!(out.code == 0, "{args:?} failed: {}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn every_workload_completes_without_errors() {
    let etcd = start_etcd();
    let cases: Vec<(Vec<&str>, Vec<u64>)> = vec![
        (
            vec![
                "--clients",
                "8",
                "--conns",
                "2",
                "put",
                "--total",
                "400",
                "--val-size",
                "256",
                "--key-space-size",
                "100",
            ],
            vec![400],
        ),
        (
            vec![
                "--clients",
                "8",
                "--conns",
                "2",
                "range",
                "k",
                "--total",
                "300",
                "--consistency",
                "s",
            ],
            vec![300],
        ),
        (
            vec!["--clients", "4", "range", "a", "z", "--total", "200"],
            vec![200],
        ),
        (
            vec![
                "--clients",
                "4",
                "txn-put",
                "--total",
                "200",
                "--txn-ops",
                "3",
                "--key-space-size",
                "50",
            ],
            vec![200],
        ),
        (
            vec!["--clients", "4", "lease-keepalive", "--total", "200"],
            vec![200],
        ),
        (
            vec![
                "watch-latency",
                "--streams",
                "2",
                "--watchers-per-stream",
                "3",
                "--put-total",
                "20",
                "--put-rate",
                "200",
            ],
            vec![120],
        ),
        (
            vec![
                "--conns",
                "2",
                "watch",
                "--total-streams",
                "2",
                "--watch-per-stream",
                "5",
                "--put-total",
                "20",
                "--put-rate",
                "200",
            ],
            vec![10, 200],
        ),
    ];
    for (args, want) in cases {
        let reports = json_reports(&etcd, &args);
        let got: Vec<u64> = reports
            .iter()
            .map(|r| r["requests"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(got, want, "request counts for {args:?}: {reports:?}");
        for r in &reports {
            assert_eq!(r["errors"], 0, "errors in {args:?}: {r}");
        }
    }
    let mixed = json_reports(
        &etcd,
        &["--clients", "4", "txn-mixed", "k", "--total", "200"],
    );
    let total: u64 = mixed
        .iter()
        .map(|r| r["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 200);
}

#[test]
fn text_report_has_etcd_sections() {
    let etcd = start_etcd();
    let out = oxbench(&etcd, &["put", "--total", "100"]);
    let text = &out.stdout;
    for section in [
        "\nSummary:\n  Total:\t",
        "  Slowest:\t",
        "  Fastest:\t",
        "  Average:\t",
        "  Stddev:\t",
        "  Requests/sec:\t",
        "\nResponse time histogram:\n",
        "\nLatency distribution:\n  10% in ",
        "  99.9% in ",
    ] {
        assert!(text.contains(section), "missing {section:?} in:\n{text}");
    }
}

#[test]
fn unreachable_endpoint_fails_with_a_message() {
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_oxbench")).args([
            "--endpoints=127.0.0.1:1",
            "--dial-timeout=300ms",
            "put",
            "--total",
            "1",
        ]),
        b"",
    );
    assert!(out.code != 0);
    assert!(
        out.stderr.contains("cannot connect to 127.0.0.1:1"),
        "{}",
        out.stderr
    );
}
