//! Certificates from oxcert against the real etcd 3.4 (Debian's `etcd-server` and
//! `etcd-client`), on loopback addresses with ports the kernel hands out. Every etcd
//! started here is killed when its guard drops, failed test or not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const READY_TIMEOUT: Duration = Duration::from_secs(40);

fn etcdctl(dir: &Path, tls: &[String], args: &[&str]) -> Output {
    let bin = require_tool("etcdctl", "etcd-client");
    run(
        Command::new(bin)
            .env("ETCDCTL_API", "3")
            .args(tls)
            .args(["--dial-timeout=2s", "--command-timeout=5s"])
            .args(args)
            .current_dir(dir),
        "",
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

/// Retries `put` until the cluster accepts it, checking that every server is still up.
fn put_when_ready(dir: &Path, tls: &[String], servers: &mut [Server], key: &str, value: &str) {
    let mut last = None;
    let ok = wait_for(READY_TIMEOUT, || {
        for server in servers.iter_mut() {
            server.assert_running();
        }
        let out = etcdctl(dir, tls, &["put", key, value]);
        let done = out.code == 0 && out.stdout.trim() == "OK";
        last = Some(out);
        done.then_some(())
    });
    if ok.is_none() {
        let logs: Vec<String> = servers
            .iter()
            .map(|s| format!("--- {}:\n{}", s.name, s.log_text()))
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
    let etcd = require_tool("etcd", "etcd-server");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tutorial_pki(dir);
    let client_url = format!("https://127.0.0.1:{}", free_port("127.0.0.1"));
    let peer_url = format!("http://127.0.0.1:{}", free_port("127.0.0.1"));
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

    let mut servers = vec![Server::start(
        "etcd infra0",
        Command::new(etcd).args(&flags).current_dir(dir),
        dir.join("infra0.log"),
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

fn start_printed(dir: &Path, name: &str, command: &str) -> Server {
    Server::start(
        name,
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .current_dir(dir),
        dir.join(format!("{name}.log")),
    )
}

#[test]
fn cluster_commands_bring_up_a_tls_cluster_and_add_a_member() {
    require_tool("etcd", "etcd-server");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let member = |n: u8| {
        let ip = format!("127.0.0.{}", 10 + n);
        format!("etcd{n}={ip}:{}:{}", free_port(&ip), free_port(&ip))
    };
    let members: Vec<String> = (1..=3).map(member).collect();
    let pki: PathBuf = dir.join("pki");
    let out = ox(
        dir,
        &[
            "cluster",
            "--members",
            &members.join(","),
            "--out",
            "pki",
            "--binary",
            "etcd",
            "--data-dir",
            dir.join("data").to_str().expect("utf-8"),
            "--token",
            "oxcert-test",
        ],
    )
    .ok();
    let commands = printed_commands(&out.stdout, "etcd");
    assert_eq!(commands.len(), 3, "{}", out.stdout);
    for name in ["ca", "server", "client", "etcd1", "etcd2", "etcd3"] {
        assert_eq!(mode(&pki.join(format!("{name}-key.pem"))), 0o600);
    }
    let endpoint = |spec: &str| {
        let (_, address) = spec.split_once('=').expect("spec");
        let parts: Vec<&str> = address.split(':').collect();
        format!("https://{}:{}", parts[0], parts[1])
    };
    let mut servers: Vec<Server> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| start_printed(dir, &format!("etcd{}", i + 1), c))
        .collect();
    let client = |endpoints: &str| {
        tls_flags(
            endpoints,
            &pki.join("ca.pem"),
            &pki.join("client.pem"),
            &pki.join("client-key.pem"),
        )
    };
    put_when_ready(
        dir,
        &client(&endpoint(&members[0])),
        &mut servers,
        "foo",
        "bar",
    );
    assert_eq!(get(dir, &client(&endpoint(&members[2])), "foo"), "bar");
    let list = etcdctl(dir, &client(&endpoint(&members[1])), &["member", "list"])
        .ok()
        .stdout;
    assert_eq!(list.matches(", started, ").count(), 3, "{list}");

    // Grow it: oxcert prints the member add and the start command; run both.
    let added = member(4);
    let out = ox(dir, &["cluster", "--add", &added, "--out", "pki"]).ok();
    let register = printed_commands(&out.stdout, "etcdctl");
    let start = printed_commands(&out.stdout, "etcd");
    assert_eq!((register.len(), start.len()), (1, 1), "{}", out.stdout);
    // etcd refuses member add until every member has been connected for a while (5s).
    let mut last = None;
    let registered = wait_for(READY_TIMEOUT, || {
        let out = run(
            Command::new("sh")
                .arg("-c")
                .arg(&register[0])
                .env("ETCDCTL_API", "3")
                .current_dir(dir),
            "",
        );
        let done = out.code == 0;
        last = Some(out);
        done.then_some(())
    });
    assert!(registered.is_some(), "member add never succeeded: {last:?}");
    servers.push(start_printed(dir, "etcd4", &start[0]));
    let ok = wait_for(READY_TIMEOUT, || {
        servers.iter_mut().for_each(Server::assert_running);
        (etcdctl(
            dir,
            &client(&endpoint(&added)),
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
    let env = pki.join("etcd4.env").display().to_string();
    ox(dir, &["check", "--env-file", &env, "--strict"]).ok();
}
