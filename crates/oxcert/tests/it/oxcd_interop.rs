//! Certificates from oxcert and from the real cfssl 1.2 against oxcd itself, each member on
//! its own reserved loopback address, talked to with the real etcdctl as the etcd interop
//! tests do. Needs the workspace's `oxcd` binary next to this test's (`cargo build
//! --workspace --bins`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oxcd_testkit::addr;
use oxcd_testkit::process::{bin, poll, Daemon};
use oxcd_testkit::Pki;

use super::*;

const READY_TIMEOUT: Duration = Duration::from_secs(40);

/// The workspace's `oxcd`, from the target directory of this test.
fn oxcd() -> PathBuf {
    bin("oxcd")
}

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

fn tls(endpoints: &str, ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        format!("--endpoints={endpoints}"),
        format!("--cacert={}", ca.display()),
        format!("--cert={}", cert.display()),
        format!("--key={}", key.display()),
    ]
}

fn put_then_get(dir: &Path, put: &[String], get: &[String], servers: &mut [Daemon]) {
    let mut last = None;
    let done = poll(READY_TIMEOUT, Duration::from_millis(200), || {
        for s in servers.iter_mut() {
            if !s.is_running() {
                panic!("{} exited:\n{}", s.name(), s.log_text());
            }
        }
        let out = etcdctl(dir, put, &["put", "foo", "bar"]);
        let ok = out.code == 0;
        last = Some(out);
        ok.then_some(())
    });
    if done.is_none() {
        let logs: Vec<String> = servers
            .iter()
            .map(|s| format!("--- {}:\n{}", s.name(), s.log_text()))
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
    let oxcd = oxcd();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let at = addr::alloc();
    let bin = real_cfssl_links(dir);
    // The tutorial's commands; the certificates also cover the server's reserved address.
    oxcd_testkit::pki::tutorial::make(dir, &bin, Some(&at.ip().to_string()));
    let client_url = format!("https://{}", at.client());
    let peer_url = format!("http://{}", at.peer());
    let mut servers = vec![Daemon::start(
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
        &dir.join("infra0.log"),
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
    let addrs = addr::alloc_n(3);
    let names = ["oxcd1", "oxcd2", "oxcd3"];
    let hosts: Vec<(&str, Ipv4Addr)> = names
        .iter()
        .zip(&addrs)
        .map(|(n, a)| (*n, a.ip()))
        .collect();
    let data = dir.join("data");
    let (pki, _) = Pki::oxcert(
        &oxcert(),
        dir,
        "pki",
        &hosts,
        &[
            "--binary",
            oxcd.to_str().expect("utf-8"),
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
    );
    let mut servers: Vec<Daemon> = names
        .iter()
        .map(|name| {
            Daemon::start(
                name,
                Command::new("sh")
                    .arg(pki.dir.join(format!("{name}.sh")))
                    .current_dir(dir),
                &dir.join(format!("{name}.log")),
            )
        })
        .collect();
    let client = |k: usize| {
        tls(
            &format!("https://{}", addrs[k].client()),
            &pki.ca,
            &pki.client.cert,
            &pki.client.key,
        )
    };
    put_then_get(dir, &client(0), &client(2), &mut servers);
}
