//! Certificates from oxcert and from the real cfssl 1.2 against oxcd itself. The test
//! builds the workspace's `oxcd` binary (a no-op when it is already built) and talks to it
//! with the real etcdctl, as the etcd interop tests do.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const BUILD_TIMEOUT: Duration = Duration::from_secs(1500);
const READY_TIMEOUT: Duration = Duration::from_secs(40);

/// Builds `oxcd` into the same target directory as this test's `oxcert`.
fn oxcd() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let profile_dir = oxcert().parent().expect("target dir").to_path_buf();
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "oxcd-server", "--bin", "oxcd"])
        .current_dir(&workspace);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    run_for(&mut build, "", BUILD_TIMEOUT).ok();
    let binary = profile_dir.join("oxcd");
    assert!(
        binary.exists(),
        "cargo built oxcd but {} is missing",
        binary.display()
    );
    binary
}

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

fn tls(endpoints: &str, ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        format!("--endpoints={endpoints}"),
        format!("--cacert={}", ca.display()),
        format!("--cert={}", cert.display()),
        format!("--key={}", key.display()),
    ]
}

fn put_then_get(dir: &Path, put: &[String], get: &[String], servers: &mut [Server]) {
    let mut last = None;
    let done = wait_for(READY_TIMEOUT, || {
        servers.iter_mut().for_each(Server::assert_running);
        let out = etcdctl(dir, put, &["put", "foo", "bar"]);
        let ok = out.code == 0;
        last = Some(out);
        ok.then_some(())
    });
    if done.is_none() {
        let logs: Vec<String> = servers
            .iter()
            .map(|s| format!("--- {}:\n{}", s.name, s.log_text()))
            .collect();
        panic!("put never succeeded: {last:?}\n{}", logs.join("\n"));
    }
    let value = etcdctl(dir, get, &["get", "foo", "--print-value-only"])
        .ok()
        .stdout;
    assert_eq!(value.trim(), "bar");
}

#[test]
fn oxcd_serves_with_certificates_from_the_real_cfssl() {
    let real = require_tool("cfssl", "golang-cfssl");
    let real_json = require_tool("cfssljson", "golang-cfssl");
    let oxcd = oxcd();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(&dir.join("ca-csr.json"), CA_CSR);
    write(&dir.join("ca-config.json"), CA_CONFIG);
    let bin = dir.join("realbin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::os::unix::fs::symlink(&real, bin.join("cfssl")).expect("link");
    std::os::unix::fs::symlink(&real_json, bin.join("cfssljson")).expect("link");
    sh(dir, &bin, TUTORIAL_TLDR).ok();
    let client_url = format!("https://127.0.0.1:{}", free_port("127.0.0.1"));
    let peer_url = format!("http://127.0.0.1:{}", free_port("127.0.0.1"));
    let mut servers = vec![Server::start(
        "oxcd infra0",
        Command::new(oxcd)
            .args([
                "--name=infra0",
                &format!("--data-dir={}", dir.join("infra0").display()),
                "--trusted-ca-file=etcd-root-ca.pem",
                "--cert-file=server.pem",
                "--key-file=server-key.pem",
                "--client-cert-auth=true",
                &format!("--advertise-client-urls={client_url}"),
                &format!("--listen-client-urls={client_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=infra0={peer_url}"),
            ])
            .current_dir(dir),
        dir.join("infra0.log"),
    )];
    let client = tls(
        &client_url,
        &dir.join("etcd-root-ca.pem"),
        &dir.join("client.pem"),
        &dir.join("client-key.pem"),
    );
    put_then_get(dir, &client, &client, &mut servers);
}

#[test]
fn oxcert_cluster_brings_up_an_oxcd_cluster() {
    let oxcd = oxcd();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let members: Vec<String> = (1..=3)
        .map(|n| {
            let ip = format!("127.0.0.{}", 30 + n);
            format!("oxcd{n}={ip}:{}:{}", free_port(&ip), free_port(&ip))
        })
        .collect();
    ox(
        dir,
        &[
            "cluster",
            "--members",
            &members.join(","),
            "--out",
            "pki",
            "--binary",
            oxcd.to_str().expect("utf-8"),
            "--data-dir",
            dir.join("data").to_str().expect("utf-8"),
        ],
    )
    .ok();
    let pki = dir.join("pki");
    let mut servers: Vec<Server> = (1..=3)
        .map(|n| {
            let name = format!("oxcd{n}");
            Server::start(
                &name,
                Command::new("sh")
                    .arg(pki.join(format!("{name}.sh")))
                    .current_dir(dir),
                dir.join(format!("{name}.log")),
            )
        })
        .collect();
    let endpoint = |spec: &str| {
        let parts: Vec<&str> = spec.split_once('=').expect("spec").1.split(':').collect();
        format!("https://{}:{}", parts[0], parts[1])
    };
    let client = |spec: &str| {
        tls(
            &endpoint(spec),
            &pki.join("ca.pem"),
            &pki.join("client.pem"),
            &pki.join("client-key.pem"),
        )
    };
    put_then_get(
        dir,
        &client(&members[0]),
        &client(&members[2]),
        &mut servers,
    );
}
