//! Certificates from oxcert against the real etcd 3.4 (Debian's `etcd-server` and
//! `etcd-client`), each server on its own reserved loopback address. Every etcd started
//! here is killed when its guard drops, failed test or not.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use oxcd_testkit::addr::{self, Addr};
use oxcd_testkit::process::{poll, Daemon};
use oxcd_testkit::Pki;

use super::*;

const READY_TIMEOUT: Duration = Duration::from_secs(40);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

fn etcdctl(dir: &Path, tls: &[String], args: &[&str]) -> Output {
    let bin = require("etcdctl");
    run(
        Command::new(bin)
            .env("ETCDCTL_API", "3")
            .args(tls)
            .args(["--dial-timeout=2s", "--command-timeout=5s"])
            .args(args)
            .current_dir(dir),
        b"",
    )
}

fn tls_flags(endpoints: &str, ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        format!("--endpoints={endpoints}"),
        format!("--cacert={}", ca.display()),
        format!("--cert={}", cert.display()),
        format!("--key={}", key.display()),
    ]
}

/// Fails the test with its log if a server has exited.
fn assert_running(servers: &mut [Daemon]) {
    for server in servers {
        if !server.is_running() {
            panic!("{} exited:\n{}", server.name(), server.log_text());
        }
    }
}

/// Retries `put` until the cluster accepts it, checking that every server is still up.
fn put_when_ready(dir: &Path, tls: &[String], servers: &mut [Daemon], key: &str, value: &str) {
    let mut last = None;
    let ok = poll(READY_TIMEOUT, POLL_INTERVAL, || {
        assert_running(servers);
        let out = etcdctl(dir, tls, &["put", key, value]);
        let done = out.code == 0 && out.stdout.trim() == "OK";
        last = Some(out);
        done.then_some(())
    });
    if ok.is_none() {
        let logs: Vec<String> = servers
            .iter()
            .map(|s| format!("--- {}:\n{}", s.name(), s.log_text()))
            .collect();
        panic!("put never succeeded: {last:?}\n{}", logs.join("\n"));
    }
}

fn get(dir: &Path, tls: &[String], key: &str) -> String {
    etcdctl(dir, tls, &["get", key, "--print-value-only"])
        .ok()
        .stdout
        .trim()
        .to_string()
}

#[test]
fn tutorial_certificates_serve_a_real_etcd() {
    let etcd = require("etcd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let at = addr::alloc();
    // The server listens on its reserved address: the certificates cover it too.
    tutorial_pki(dir, Some(&at.ip().to_string()));
    let client_url = format!("https://{}", at.client());
    let peer_url = format!("http://{}", at.peer());
    let flags: Vec<String> = [
        "--name=infra0".to_string(),
        format!("--data-dir={}", dir.join("infra0").display()),
        "--trusted-ca-file=etcd-root-ca.pem".to_string(),
        "--cert-file=server.pem".to_string(),
        "--key-file=server-key.pem".to_string(),
        "--client-cert-auth=true".to_string(),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=infra0={peer_url}"),
    ]
    .to_vec();
    // The doctor passes it, with one warning: the tutorial's server profile lacks client auth.
    let mut args = vec!["check", "--"];
    args.extend(flags.iter().map(String::as_str));
    let out = ox(dir, &args).ok();
    assert!(out.stdout.contains("etcd's gRPC gateway"), "{}", out.stdout);
    assert!(!out.stdout.contains("error:"), "{}", out.stdout);

    let mut servers = vec![Daemon::start(
        "etcd infra0",
        Command::new(etcd).args(&flags).current_dir(dir),
        &dir.join("infra0.log"),
    )];
    let tls = tls_flags(
        &client_url,
        &dir.join("etcd-root-ca.pem"),
        &dir.join("client.pem"),
        &dir.join("client-key.pem"),
    );
    put_when_ready(dir, &tls, &mut servers, "foo", "bar");
    assert_eq!(get(dir, &tls, "foo"), "bar");
    // client-cert-auth is really on: a certificate from another CA is turned away.
    ox(
        dir,
        &["cluster", "--members", "x=127.0.0.1", "--out", "other"],
    )
    .ok();
    let stranger = tls_flags(
        &client_url,
        &dir.join("etcd-root-ca.pem"),
        &dir.join("other/client.pem"),
        &dir.join("other/client-key.pem"),
    );
    etcdctl(dir, &stranger, &["get", "foo"]).failed();
}

/// Commands printed by `oxcert cluster`: blocks whose first line is a `# comment` and whose
/// next line starts with `program`.
fn printed_commands(stdout: &str, program: &str) -> Vec<String> {
    stdout
        .split("\n\n")
        .filter_map(|block| {
            let (comment, command) = block.trim().split_once('\n')?;
            (comment.starts_with("# ") && command.starts_with(&format!("{program} ")))
                .then(|| command.to_string())
        })
        .collect()
}

fn start_printed(dir: &Path, name: &str, command: &str) -> Daemon {
    Daemon::start(
        name,
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .current_dir(dir),
        &dir.join(format!("{name}.log")),
    )
}

/// `etcdN` on its reserved address, as `oxcert cluster` takes it (`NAME=IP:CLIENT:PEER`).
fn member(n: usize, at: &Addr) -> (String, Ipv4Addr) {
    (format!("etcd{n}"), at.ip())
}

#[test]
fn cluster_commands_bring_up_a_tls_cluster_and_add_a_member() {
    require("etcd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let addrs = addr::alloc_n(4);
    let members: Vec<(String, Ipv4Addr)> = (1..=3).map(|n| member(n, &addrs[n - 1])).collect();
    let hosts: Vec<(&str, Ipv4Addr)> = members.iter().map(|(n, ip)| (n.as_str(), *ip)).collect();
    let data = dir.join("data");
    let (pki, out) = Pki::oxcert(
        &oxcert(),
        dir,
        "pki",
        &hosts,
        &[
            "--binary",
            "etcd",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--token",
            "oxcert-test",
        ],
    );
    let commands = printed_commands(&out.stdout, "etcd");
    assert_eq!(commands.len(), 3, "{}", out.stdout);
    for name in ["ca", "server", "client", "etcd1", "etcd2", "etcd3"] {
        assert_eq!(mode(&pki.dir.join(format!("{name}-key.pem"))), 0o600);
    }
    let endpoint = |k: usize| format!("https://{}", addrs[k].client());
    let mut servers: Vec<Daemon> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| start_printed(dir, &format!("etcd{}", i + 1), c))
        .collect();
    let client = |endpoints: &str| tls_flags(endpoints, &pki.ca, &pki.client.cert, &pki.client.key);
    put_when_ready(dir, &client(&endpoint(0)), &mut servers, "foo", "bar");
    assert_eq!(get(dir, &client(&endpoint(2)), "foo"), "bar");
    let list = etcdctl(dir, &client(&endpoint(1)), &["member", "list"])
        .ok()
        .stdout;
    assert_eq!(list.matches(", started, ").count(), 3, "{list}");

    // Grow it: oxcert prints the member add and the start command; run both.
    let added = format!("etcd4={}:2379:2380", addrs[3].ip());
    let out = ox(dir, &["cluster", "--add", &added, "--out", "pki"]).ok();
    let register = printed_commands(&out.stdout, "etcdctl");
    let start = printed_commands(&out.stdout, "etcd");
    assert_eq!((register.len(), start.len()), (1, 1), "{}", out.stdout);
    // etcd refuses member add until every member has been connected for a while (5s).
    let mut last = None;
    let registered = poll(READY_TIMEOUT, POLL_INTERVAL, || {
        let out = run(
            Command::new("sh")
                .arg("-c")
                .arg(&register[0])
                .env("ETCDCTL_API", "3")
                .current_dir(dir),
            b"",
        );
        let done = out.code == 0;
        last = Some(out);
        done.then_some(())
    });
    assert!(registered.is_some(), "member add never succeeded: {last:?}");
    servers.push(start_printed(dir, "etcd4", &start[0]));
    let ok = poll(READY_TIMEOUT, POLL_INTERVAL, || {
        assert_running(&mut servers);
        (etcdctl(
            dir,
            &client(&endpoint(3)),
            &["get", "foo", "--print-value-only"],
        )
        .stdout
        .trim()
            == "bar")
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "etcd4 never served foo:\n{}",
        servers[3].log_text()
    );
    let env = pki.dir.join("etcd4.env").display().to_string();
    ox(dir, &["check", "--env-file", &env, "--strict"]).ok();
}
