//! Issue 2's tutorial step, as written, with certificates from the real cfssl (RSA 2048 as
//! in the tutorial, and ECDSA P-256): oxcd with --trusted-ca-file/--cert-file/--key-file on
//! an https client URL; curl with a client certificate writes and reads /v2/keys/foo; curl
//! without one (or with one from another CA, or with a server certificate) is refused at
//! the handshake and each refusal is logged once, with the peer address, in plain words;
//! etcdctl put/get work.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use oxcd_testkit::pki::ClientCerts;
use oxcd_testkit::{require, run, wait_for, Cluster, Impl, KeyAlgo, Output, Pki};

/// Local ports of the refused handshakes: each on the server's own reserved address, so
/// each refusal has its own peer address in the log.
static LOCAL_PORT: AtomicU16 = AtomicU16::new(40000);

fn certs(server: &Cluster) -> ClientCerts {
    server.client_certs().expect("a TLS server")
}

fn curl(server: &Cluster, with_cert: bool, args: &[&str]) -> Output {
    let certs = certs(server);
    let client = with_cert.then_some((certs.cert.as_path(), certs.key.as_path()));
    curl_as(server, client, args)
}

/// curl trusting the server's CA, presenting `client` (certificate, key) if given.
fn curl_as(server: &Cluster, client: Option<(&Path, &Path)>, args: &[&str]) -> Output {
    let certs = certs(server);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(&certs.ca);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.args(args);
    run(&mut cmd, b"")
}

/// Makes a handshake from a known local address fail; returns the one log line about it.
fn refused_line(server: &Cluster, client: Option<(&Path, &Path)>, url: &str) -> String {
    let local_port = LOCAL_PORT.fetch_add(1, Ordering::Relaxed);
    let ip = server.ip(0).to_string();
    let out = curl_as(
        server,
        client,
        &[
            "--interface",
            &ip,
            "--local-port",
            &local_port.to_string(),
            url,
        ],
    );
    assert_ne!(out.code, 0, "the handshake must fail: {out:?}");
    assert!(
        !out.stdout.contains("\"action\""),
        "no data without a good certificate: {out:?}"
    );
    let peer = format!("{ip}:{local_port}");
    wait_for(
        "the refusal in the oxcd log",
        Duration::from_secs(5),
        || {
            server
                .log(0)
                .lines()
                .find(|l| l.contains(&peer))
                .map(str::to_string)
        },
    );
    let log = server.log(0);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&peer)).collect();
    assert_eq!(
        lines.len(),
        1,
        "one refused handshake, one log line: {lines:?}"
    );
    lines[0].to_string()
}

/// Splits curl's output (`-w "\n%{http_code}"`) into the JSON body and the status.
fn body_and_status(out: &Output) -> (serde_json::Value, String) {
    let (body, status) = out.stdout.rsplit_once('\n').expect("curl -w output");
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    (json, status.to_string())
}

fn tutorial_flow(algo: KeyAlgo) {
    require("curl");
    require("etcdctl");
    let server = Cluster::builder(Impl::Oxcd)
        .names(&["infra0"])
        .client_tls()
        .key_algo(algo)
        .start();
    let pki = server.pki().expect("a TLS server has a PKI");
    let keys = format!("{}/v2/keys/foo", server.endpoint(0));

    let put = curl(&server, true, &[&keys, "-XPUT", "-d", "value=bar"]).ok();
    let (json, status) = body_and_status(&put);
    assert_eq!(status, "201", "{put:?}");
    assert_eq!(
        json,
        serde_json::json!({"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}})
    );
    let get = curl(&server, true, &[&keys]).ok();
    let (json, status) = body_and_status(&get);
    assert_eq!(status, "200", "{get:?}");
    assert_eq!(
        json,
        serde_json::json!({"action":"get","node":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}})
    );

    // The tutorial's own curl, without --cert: refused at the handshake (curl fails), and
    // the server says why, once, naming the peer address.
    let line = refused_line(&server, None, &keys);
    assert!(
        line.contains("no certificate"),
        "the refusal must say why in plain words: {line}"
    );
    // A client certificate from another CA, and a server certificate used as a client's.
    let other = Pki::cfssl(
        &server.dir().join("other-pki"),
        algo,
        &[("infra0", server.ip(0))],
    );
    let line = refused_line(
        &server,
        Some((&other.client.cert, &other.client.key)),
        &keys,
    );
    // (Both CAs are named "etcd root ca", as every tutorial CA is: the name matches, the
    // signature does not.)
    assert!(
        line.contains("does not verify against the trusted CA")
            || line.contains("unknown authority"),
        "{line}"
    );
    let line = refused_line(&server, Some((&pki.server.cert, &pki.server.key)), &keys);
    assert!(line.contains("wrong key usage"), "{line}");

    let put = server.etcdctl(0, &["put", "/a", "1"], b"").ok();
    assert_eq!(put.stdout, "OK\n");
    let get = server.etcdctl(0, &["get", "/a"], b"").ok();
    assert_eq!(get.stdout, "/a\n1\n");
    // v2 and v3 keyspaces are separate, as in etcd.
    let get = server.etcdctl(0, &["get", "foo"], b"").ok();
    assert_eq!(get.stdout, "");

    // etcdctl without a client certificate gets nothing either.
    let anonymous = run(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", server.endpoint(0)))
            .arg(format!("--cacert={}", pki.ca.display()))
            .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "/a"]),
        b"",
    );
    assert_ne!(
        anonymous.code, 0,
        "etcdctl without --cert must fail: {anonymous:?}"
    );
    assert!(!anonymous.stdout.contains('1'), "{anonymous:?}");
}

#[test]
fn tutorial_single_member_with_cfssl_rsa_certificates() {
    tutorial_flow(KeyAlgo::Rsa2048);
}

#[test]
fn tutorial_single_member_with_cfssl_ecdsa_certificates() {
    tutorial_flow(KeyAlgo::EcdsaP256);
}
