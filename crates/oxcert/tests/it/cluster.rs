//! `oxcert cluster` without servers: what it writes, what it refuses, and bad input.

use super::*;

#[test]
fn writes_the_files_with_sans_usages_and_modes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let out = ox(
        dir,
        &[
            "cluster",
            "--members",
            "etcd1=10.0.0.1,etcd2=node2.example.com",
            "--out",
            "pki",
            "--key",
            "rsa-2048",
        ],
    )
    .ok();
    assert!(
        out.stdout.contains("--client-cert-auth=true"),
        "Go bool flags need =: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("--listen-client-urls https://10.0.0.1:2379,https://127.0.0.1:2379"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("--listen-peer-urls https://0.0.0.0:2380"),
        "a DNS-named member binds all interfaces: {}",
        out.stdout
    );
    let pki = dir.join("pki");
    for key in [
        "ca-key.pem",
        "server-key.pem",
        "client-key.pem",
        "etcd1-key.pem",
        "etcd2-key.pem",
    ] {
        assert_eq!(mode(&pki.join(key)), 0o600, "{key}");
    }
    assert_eq!(mode(&pki.join("etcd1.sh")), 0o755);
    openssl(
        &pki,
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "server.pem",
            "client.pem",
            "etcd1.pem",
            "etcd2.pem",
        ],
    )
    .ok();
    let text = |file: &str| {
        openssl(&pki, &["x509", "-in", file, "-noout", "-text"])
            .ok()
            .stdout
    };
    let peer = text("etcd2.pem");
    assert!(
        peer.contains("DNS:node2.example.com")
            && peer.contains("IP Address:127.0.0.1")
            && peer.contains("DNS:localhost"),
        "{peer}"
    );
    assert!(
        !peer.contains("10.0.0.1"),
        "a peer certificate covers its own member only: {peer}"
    );
    assert!(
        peer.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{peer}"
    );
    let server = text("server.pem");
    assert!(
        server.contains("IP Address:10.0.0.1") && server.contains("DNS:node2.example.com"),
        "{server}"
    );
    assert!(
        server.contains("TLS Web Client Authentication"),
        "etcd's gateway needs it: {server}"
    );
    assert!(text("client.pem").contains("Subject: O = oxcd, CN = client"));
    assert!(std::fs::read_to_string(pki.join("ca-key.pem"))
        .expect("key")
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    // The written ca-config.json reissues with cfssl-style commands.
    let json = ox_stdin(
        &pki,
        &[
            "gencert",
            "-ca=ca.pem",
            "-ca-key=ca-key.pem",
            "-config=ca-config.json",
            "-profile=peer",
            "-hostname=10.0.0.3",
            "-",
        ],
        r#"{"CN":"etcd3"}"#,
    )
    .ok();
    assert!(json.stdout.contains("BEGIN CERTIFICATE"));
}

#[test]
fn refuses_to_overwrite_and_adds_members() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ox(
        dir,
        &["cluster", "--members", "etcd1=127.0.0.11", "--out", "pki"],
    )
    .ok();
    let ca = std::fs::read(dir.join("pki/ca.pem")).expect("ca");
    let server_key = std::fs::read(dir.join("pki/server-key.pem")).expect("key");
    let out = ox(
        dir,
        &["cluster", "--members", "etcd1=127.0.0.11", "--out", "pki"],
    )
    .failed();
    assert!(
        out.stderr.contains("refusing to overwrite") && out.stderr.contains("ca.pem"),
        "{}",
        out.stderr
    );
    let out = ox(
        dir,
        &["cluster", "--add", "etcd1=127.0.0.19", "--out", "pki"],
    )
    .failed();
    assert!(
        out.stderr.contains("already in the cluster"),
        "{}",
        out.stderr
    );
    let out = ox(
        dir,
        &["cluster", "--add", "etcd2=127.0.0.12", "--out", "pki"],
    )
    .ok();
    assert!(
        out.stdout
            .contains("member add etcd2 --peer-urls=https://127.0.0.12:2380"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("--initial-cluster-state existing"),
        "{}",
        out.stdout
    );
    assert_eq!(
        std::fs::read(dir.join("pki/ca.pem")).expect("ca"),
        ca,
        "--add keeps the CA"
    );
    assert_eq!(
        std::fs::read(dir.join("pki/server-key.pem")).expect("key"),
        server_key,
        "--add keeps the server key"
    );
    let server = openssl(
        &dir.join("pki"),
        &["x509", "-in", "server.pem", "-noout", "-text"],
    )
    .ok()
    .stdout;
    assert!(
        server.contains("IP Address:127.0.0.12"),
        "server.pem re-signed for the new member: {server}"
    );
    let env = dir.join("pki/etcd2.env").display().to_string();
    ox(dir, &["check", "--env-file", &env, "--strict"]).ok();
    ox(
        dir,
        &[
            "cluster",
            "--members",
            "etcd1=127.0.0.11",
            "--out",
            "pki",
            "--force",
        ],
    )
    .ok();
    assert_ne!(
        std::fs::read(dir.join("pki/ca.pem")).expect("ca"),
        ca,
        "--force makes a new CA"
    );
}

#[test]
fn bad_input_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--members", "etcd1=127.0.0.1,etcd1=127.0.0.2"],
            "member name etcd1 is given twice",
        ),
        (&["--members", "etcd1"], "is not NAME=ADDRESS"),
        (
            &["--members", "ca=127.0.0.1"],
            "taken by the cluster's own files",
        ),
        (
            &["--members", "etcd1=bad host"],
            "neither an IP address nor a DNS name",
        ),
        (
            &["--members", "a=127.0.0.1:1:2,b=127.0.0.1:3:2"],
            "would listen on the same address",
        ),
        (&["--members", "a=127.0.0.1", "--key", "ecdsa-521"], "P-521"),
        (
            &["--members", "a=127.0.0.1", "--key", "rsa-1024"],
            "too weak",
        ),
        (
            &["--members", "a=127.0.0.1", "--expiry", "1y"],
            "unknown unit \"y\"",
        ),
        (&["--add", "b=127.0.0.2"], "cannot read cluster description"),
    ];
    for (args, message) in cases {
        let out = ox(dir, &[&["cluster", "--out", "pki"], *args].concat()).failed();
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        assert!(!dir.join("pki").exists(), "{args:?} left files behind");
    }
}
