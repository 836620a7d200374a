//! Issue 2's tutorial step, as written, with certificates from the real cfssl (RSA 2048 as
//! in the tutorial, and ECDSA P-256): oxcd with --trusted-ca-file/--cert-file/--key-file on
//! an https client URL; curl with a client certificate writes and reads /v2/keys/foo; curl
//! without one (or with one from another CA, or with a server certificate) is refused at
//! the handshake and each refusal is logged once, with the peer address, in plain words;
//! etcdctl put/get work.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{free_port, require, run, wait_for, Impl, KeyAlgo, Launch, Output, Pki, Server};

fn curl(server: &Server, with_cert: bool, args: &[&str]) -> Output {
    let certs = server.tls.as_ref().expect("a TLS server");
    let client = with_cert.then_some((certs.cert.as_path(), certs.key.as_path()));
    curl_as(server, client, args)
}

/// curl trusting the server's CA, presenting `client` (certificate, key) if given.
fn curl_as(server: &Server, client: Option<(&Path, &Path)>, args: &[&str]) -> Output {
    let certs = server.tls.as_ref().expect("a TLS server");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(&certs.ca);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.args(args);
    run(&mut cmd, b"")
}

/// Makes a handshake from a known local port fail; returns the one log line about it.
fn refused_line(server: &Server, client: Option<(&Path, &Path)>, url: &str) -> String {
    let local_port = free_port();
    let out = curl_as(
        server,
        client,
        &["--local-port", &local_port.to_string(), url],
    );
    assert_ne!(out.code, 0, "the handshake must fail: {out:?}");
    assert!(
        !out.stdout.contains("\"action\""),
        "no data without a good certificate: {out:?}"
    );
    let peer = format!("127.0.0.1:{local_port}");
    wait_for(
        "the refusal in the oxcd log",
        Duration::from_secs(5),
        || {
            server
                .log_text()
                .lines()
                .find(|l| l.contains(&peer))
                .map(str::to_string)
        },
    );
    let log = server.log_text();
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
    let tmp = tempfile::tempdir().expect("temp dir");
    let pki = Pki::make(&tmp.path().join("pki"), algo);
    let server = Launch::new(Impl::Oxcd, tmp.path())
        .name("infra0")
        .member("infra0")
        .tls(&pki)
        .start();
    let keys = format!("{}/v2/keys/foo", server.client_url);

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
    let other = Pki::make(&tmp.path().join("other-pki"), algo);
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
    let line = refused_line(&server, Some((&pki.server_cert, &pki.server_key)), &keys);
    assert!(line.contains("wrong key usage"), "{line}");

    let put = server.etcdctl(&["put", "/a", "1"], b"").ok();
    assert_eq!(put.stdout, "OK\n");
    let get = server.etcdctl(&["get", "/a"], b"").ok();
    assert_eq!(get.stdout, "/a\n1\n");
    // v2 and v3 keyspaces are separate, as in etcd.
    let get = server.etcdctl(&["get", "foo"], b"").ok();
    assert_eq!(get.stdout, "");

    // etcdctl without a client certificate gets nothing either.
    let certs = server.tls.clone().expect("tls");
    let anonymous = common::run(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", server.client_url))
            .arg(format!("--cacert={}", certs.ca.display()))
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
