//! etcdctl 3.4 against a real `oxcd` on a plain http URL: its gRPC client sends
//! `:authority: http://host:port`, which `h2_authority` repairs (see its module doc).
//! HTTP/1.1 (curl) must still work through the same listener. Uses 127.0.0.91.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Output;

const BIN: &str = env!("CARGO_BIN_EXE_oxcd");
const IP: &str = "127.0.0.91";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Kills the member when the test ends, however it ends.
struct Member(Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> Member {
    let client_url = format!("http://{IP}:2379");
    let peer_url = format!("http://{IP}:2380");
    let log = std::fs::File::create(dir.join("oxcd.log")).expect("create log");
    let child = Command::new(BIN)
        .args(["--name", "d", "--data-dir"])
        .arg(dir.join("d"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start oxcd");
    Member(child)
}

/// Runs a tool the test cannot do without (a missing one fails the test by name), killed
/// after the common command timeout.
fn run(tool: &str, args: &[&str]) -> Output {
    common::require(tool);
    common::run(Command::new(tool).env("ETCDCTL_API", "3").args(args), b"")
}

fn etcdctl(args: &[&str]) -> Output {
    let endpoints = format!("--endpoints=http://{IP}:2379");
    let mut all = vec![endpoints.as_str(), "--command-timeout=5s"];
    all.extend_from_slice(args);
    run("etcdctl", &all)
}

fn text(out: &Output) -> String {
    format!("{}{}", out.stdout, out.stderr)
}

#[test]
fn etcdctl_reaches_a_member_over_plain_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _member = start(dir.path());
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let out = etcdctl(&["endpoint", "health"]);
        if out.code == 0 {
            break;
        }
        let log = std::fs::read_to_string(dir.path().join("oxcd.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "oxcd not healthy after {START_TIMEOUT:?}: {}\n--- oxcd log ---\n{log}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // `--cluster` dials each member's advertised URL directly: the case that used to fail
    // with RST_STREAM PROTOCOL_ERROR.
    let out = etcdctl(&["endpoint", "status", "--cluster", "-w", "table"]);
    let shown = text(&out);
    assert!(out.code == 0, "endpoint status failed: {shown}");
    assert!(!shown.contains("Failed"), "{shown}");
    assert!(shown.contains(&format!("| http://{IP}:2379 |")), "{shown}");

    // A write and a read, each with the repaired authority.
    let out = etcdctl(&["put", "k", "v"]);
    assert!(out.code == 0, "put failed: {}", text(&out));
    let out = etcdctl(&["get", "k", "--print-value-only"]);
    assert_eq!(text(&out).trim(), "v");

    // HTTP/1.1 through the same shim.
    let url = format!("http://{IP}:2379/version");
    let out = run("curl", &["-sS", "--max-time", "5", &url]);
    assert!(out.code == 0, "curl failed: {}", text(&out));
    assert!(text(&out).contains("etcdserver"), "{}", text(&out));
}
