//! Every oxbench workload against a real etcd 3.4 on loopback: it must finish, count every
//! request, report no errors, and print etcd's report sections.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);

struct Etcd {
    _dir: tempfile::TempDir,
    child: Child,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_etcd() -> Etcd {
    let found = Command::new("sh")
        .args(["-c", "command -v etcd"])
        .output()
        .map(|o| o.status.success());
    assert!(matches!(found, Ok(true)), "etcd not found: install the Debian package etcd-server; oxbench is tested against the real etcd 3.4");
    let dir = tempfile::tempdir().expect("temp dir");
    let (c, p) = (port(), port());
    let client = format!("http://127.0.0.1:{c}");
    let peer = format!("http://127.0.0.1:{p}");
    let child = Command::new("etcd")
        .args(["--name", "b", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("b={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let etcd = Etcd {
        _dir: dir,
        child,
        endpoint: format!("127.0.0.1:{c}"),
    };
    let start = Instant::now();
    while start.elapsed() < START_TIMEOUT {
        if oxbench(&etcd, &["--json", "range", "k", "--total", "1"])
            .status
            .success()
        {
            return etcd;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("etcd did not start in {START_TIMEOUT:?}");
}

fn oxbench(etcd: &Etcd, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_oxbench"))
        .arg(format!("--endpoints={}", etcd.endpoint))
        .args(["--max-duration", "60s"])
        .args(args)
        .output()
        .expect("run oxbench")
}

fn json_reports(etcd: &Etcd, args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = vec!["--json"];
    full.extend(args);
    let out = oxbench(etcd, &full);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
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
    let text = String::from_utf8_lossy(&out.stdout);
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
    let out = Command::new(env!("CARGO_BIN_EXE_oxbench"))
        .args([
            "--endpoints=127.0.0.1:1",
            "--dial-timeout=300ms",
            "put",
            "--total",
            "1",
        ])
        .output()
        .expect("run oxbench");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect to 127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
