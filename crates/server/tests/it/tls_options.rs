//! Issue 12's TLS options, each against a real client (curl, openssl, etcdctl): a revoked
//! certificate refused (`--client-crl-file`), TLS 1.2 refused under `--tls-min-version=TLS1.3`,
//! `--cipher-suites`, `--client-cert-allowed-hostname`, `--peer-cert-allowed-cn`, `--auto-tls`,
//! a client certificate's CN as the auth user, and certificates and CA bundles replaced on
//! disk under a running member while a load runs (0 failed requests; a client with a
//! certificate from the new CA accepted without a restart; a half-written file keeps the old).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oxcd_api::etcdserverpb::PutRequest;
use oxcd_testkit::pki::{CertPair, Profile};
use oxcd_testkit::{run, wait_for, Cluster, Impl, KeyAlgo, Pki};

fn tls_member(flags: &[&str]) -> Cluster {
    Cluster::builder(Impl::Oxcd)
        .members(1)
        .tls()
        .client_cert_auth()
        .flags(flags.iter().copied())
        .start()
}

fn pki(c: &Cluster) -> &Pki {
    c.pki().expect("a TLS member")
}

/// curl GET /version on member 0 trusting `ca`, presenting `client` if given; extra curl
/// flags first. True when it answered 200.
fn curl_ok(c: &Cluster, ca: &Path, client: Option<&CertPair>, extra: &[&str]) -> bool {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(extra)
        .arg("--cacert")
        .arg(ca);
    if let Some(p) = client {
        cmd.arg("--cert").arg(&p.cert).arg("--key").arg(&p.key);
    }
    cmd.arg(format!("{}/version", c.endpoint(0)));
    run(&mut cmd, b"").stdout.trim() == "200"
}

/// The certificate's serial number in decimal (what `cfssl gencrl` reads).
fn serial_decimal(cert: &Path) -> String {
    let out = run(
        Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(cert),
        b"",
    )
    .ok();
    let hex = out.stdout.trim().trim_start_matches("serial=").to_string();
    let dec = run(
        Command::new("python3").args(["-c", &format!("print(int('{hex}', 16))")]),
        b"",
    )
    .ok();
    dec.stdout.trim().to_string()
}

/// A PEM CRL from the cluster's CA revoking `cert` (cfssl gencrl writes base64 DER).
fn crl_revoking(p: &Pki, cert: &Path) -> PathBuf {
    let serials = p.dir.join("revoked-serials.txt");
    std::fs::write(&serials, serial_decimal(cert) + "\n").expect("write serials");
    let out = run(
        Command::new("cfssl")
            .arg("gencrl")
            .arg(&serials)
            .arg(&p.ca)
            .arg(&p.ca_key)
            .current_dir(&p.dir),
        b"",
    )
    .ok();
    let b64: String = out.stdout.split_whitespace().collect();
    let mut pem = String::from("-----BEGIN X509 CRL-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END X509 CRL-----\n");
    let path = p.dir.join("crl.pem");
    std::fs::write(&path, pem).expect("write the CRL");
    path
}

#[test]
fn crl_refuses_a_revoked_client_on_grpc_and_http() {
    let mut c = Cluster::builder(Impl::Oxcd)
        .members(1)
        .tls()
        .client_cert_auth()
        .build();
    let p = pki(&c).clone();
    let revoked = p.issue("revoked", Profile::Client, &["127.0.0.1".to_string()]);
    let crl = crl_revoking(&p, &revoked.cert);
    c.set_flags(0, [format!("--client-crl-file={}", crl.display())]);
    c.start_all();
    assert!(curl_ok(&c, &p.ca, Some(&p.client), &[]), "a good client");
    assert!(!curl_ok(&c, &p.ca, Some(&revoked), &[]), "the revoked one");
    let get = |pair: &CertPair| {
        oxcd_testkit::etcdctl(
            &c.endpoint(0),
            Some(&oxcd_testkit::pki::ClientCerts {
                ca: p.ca.clone(),
                cert: pair.cert.clone(),
                key: pair.key.clone(),
            }),
            &["--dial-timeout=2s", "--command-timeout=3s", "get", "x"],
            b"",
        )
    };
    assert_eq!(get(&p.client).code, 0);
    assert_ne!(
        get(&revoked).code,
        0,
        "etcdctl with the revoked certificate"
    );
    assert!(c.log(0).contains("revoked"), "the refusal says why");
}

#[test]
fn tls13_only_refuses_tls12() {
    let c = tls_member(&["--tls-min-version=TLS1.3"]);
    let p = pki(&c);
    assert!(curl_ok(&c, &p.ca, Some(&p.client), &["--tlsv1.3"]));
    assert!(!curl_ok(
        &c,
        &p.ca,
        Some(&p.client),
        &["--tlsv1.2", "--tls-max", "1.2"]
    ));
}

#[test]
fn cipher_suites_limit_tls12() {
    let c = tls_member(&[
        "--tls-max-version=TLS1.2",
        "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ]);
    let p = pki(&c);
    let with = |cipher: &str| {
        curl_ok(
            &c,
            &p.ca,
            Some(&p.client),
            &["--tls-max", "1.2", "--ciphers", cipher],
        )
    };
    assert!(with("ECDHE-ECDSA-AES128-GCM-SHA256"));
    assert!(!with("ECDHE-ECDSA-AES256-GCM-SHA384"));
    assert!(
        !curl_ok(&c, &p.ca, Some(&p.client), &["--tlsv1.3"]),
        "TLS 1.3 is off"
    );
}

#[test]
fn client_cert_allowed_hostname() {
    let mut c = Cluster::builder(Impl::Oxcd)
        .members(1)
        .tls()
        .client_cert_auth()
        .build();
    let p = pki(&c).clone();
    let named = p.issue(
        "named-client",
        Profile::Client,
        &["client.example".to_string()],
    );
    c.set_flags(0, ["--client-cert-allowed-hostname=client.example"]);
    // The harness's readiness check uses the refused certificate: poll with curl instead.
    c.spawn(0);
    wait_for(
        "a client named client.example",
        Duration::from_secs(20),
        || curl_ok(&c, &p.ca, Some(&named), &[]).then_some(()),
    );
    // The harness's client certificate covers 127.0.0.1 only.
    assert!(!curl_ok(&c, &p.ca, Some(&p.client), &[]));
}

/// openssl s_client to member 0's peer port presenting `pair`: true when the handshake
/// completed and the server did not refuse the certificate.
fn peer_handshake(c: &Cluster, ca: &Path, pair: &CertPair) -> bool {
    let out = run(
        Command::new("timeout")
            // TLS 1.2: the server's verdict on the client certificate is part of the handshake.
            .args(["5", "openssl", "s_client", "-brief", "-tls1_2", "-connect"])
            .arg(format!("{}:2380", c.ip(0)))
            .arg("-CAfile")
            .arg(ca)
            .arg("-cert")
            .arg(&pair.cert)
            .arg("-key")
            .arg(&pair.key),
        b"",
    );
    let text = out.text();
    text.contains("CONNECTION ESTABLISHED") && !text.contains("alert")
}

#[test]
fn peer_cert_allowed_cn() {
    let c = Cluster::builder(Impl::Oxcd)
        .members(1)
        .tls()
        .token("cn")
        .flags(["--peer-cert-allowed-cn=default"])
        .start();
    let p = pki(&c);
    assert!(
        peer_handshake(&c, &p.ca, &p.peers[0]),
        "the member's own CN"
    );
    let stranger = p.issue("stranger", Profile::Peer, &[c.ip(0).to_string()]);
    assert!(!peer_handshake(&c, &p.ca, &stranger), "another CN");
    wait_for("the refusal logged", Duration::from_secs(5), || {
        c.log(0).contains("not allowed").then_some(())
    });
}

#[test]
fn auto_tls_serves_https_with_a_generated_certificate() {
    let mut c = Cluster::builder(Impl::Oxcd).members(1).build();
    let url = format!("https://{}:2379", c.ip(0));
    c.set_flags(
        0,
        [
            "--auto-tls".to_string(),
            "--self-signed-cert-validity=2".to_string(),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
        ],
    );
    c.spawn(0);
    let out = wait_for(
        "https with a self-signed certificate",
        Duration::from_secs(20),
        || {
            let out = run(
                Command::new("curl").args(["-sS", "-k", "-m", "3", &format!("{url}/version")]),
                b"",
            );
            (out.code == 0).then_some(out)
        },
    );
    assert!(out.stdout.contains("etcdserver"), "{}", out.stdout);
    let cert = c.data_dir(0).join("fixtures/client/cert.pem");
    let dates = run(
        Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-in"])
            .arg(&cert),
        b"",
    )
    .ok();
    let year = |s: &str| -> i32 {
        s.split_whitespace()
            .find_map(|w| w.parse::<i32>().ok().filter(|y| *y > 2000))
            .unwrap_or(0)
    };
    let now = run(Command::new("date").arg("+%Y"), b"").ok();
    assert_eq!(
        year(&dates.stdout) - now.stdout.trim().parse::<i32>().unwrap_or(0),
        2,
        "--self-signed-cert-validity=2: {}",
        dates.stdout
    );
    let etcdctl = run(
        Command::new("etcdctl").env("ETCDCTL_API", "3").args([
            "--insecure-transport=false",
            "--insecure-skip-tls-verify",
            "--endpoints",
            &url,
            "put",
            "a",
            "1",
        ]),
        b"",
    );
    assert_eq!(etcdctl.code, 0, "{}", etcdctl.text());
}

/// With --client-cert-auth and auth on, a client with a certificate and no token is the
/// user its certificate's CN names ("client" here), as in etcd.
#[test]
fn certificate_cn_is_the_auth_user() {
    let c = tls_member(&[]);
    let ctl = |args: &[&str]| c.etcdctl(0, args, b"");
    ctl(&["user", "add", "root:rootpw"]).ok();
    ctl(&["user", "add", "client:clientpw"]).ok();
    ctl(&["role", "add", "reader"]).ok();
    ctl(&["role", "grant-permission", "reader", "read", "shared"]).ok();
    ctl(&["user", "grant-role", "client", "reader"]).ok();
    ctl(&["--user=root:rootpw", "put", "shared", "v"]).ok();
    ctl(&["auth", "enable"]).ok();
    let got = ctl(&["get", "shared", "--print-value-only"]).ok();
    assert_eq!(got.stdout.trim(), "v");
    let put = ctl(&["put", "shared", "w"]);
    assert_ne!(put.code, 0);
    assert!(put.text().contains("permission denied"), "{}", put.text());
}

/// Replaces `path` atomically (write beside, rename over).
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A 3-member TLS cluster (client and peer certificates from one CA, one CA file): the CA
/// file becomes a bundle with a new CA, is half-written, the server certificate is swapped for
/// one that does not go with its key, then both are restored and a member restarts (its peer
/// handshakes verified with the bundle), all while puts run through member 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_bundle_and_certificates_reloaded_under_load() {
    let c = Cluster::builder(Impl::Oxcd)
        .members(3)
        .tls()
        .client_cert_auth()
        .start();
    let p = pki(&c).clone();
    let hosts: Vec<(&str, std::net::Ipv4Addr)> = (0..3).map(|i| (c.name(i), c.ip(i))).collect();
    let other = Pki::cfssl_with_ca(
        &c.dir().join("pki-new"),
        KeyAlgo::EcdsaP256,
        "rotated etcd ca",
        &hosts,
    );
    let old_ca = std::fs::read(&p.ca).expect("ca");
    // curl's own copy: the member's CA file is rewritten below.
    let client_ca = p.dir.join("client-ca.pem");
    std::fs::write(&client_ca, &old_ca).expect("client CA copy");
    assert!(
        !curl_ok(&c, &client_ca, Some(&other.client), &[]),
        "the new CA is not trusted yet"
    );
    // The load: puts on one connection, and a new connection (handshake) per check.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let client = c.client(0).await.expect("client");
    let load = {
        let (stop, failed, done) = (stop.clone(), failed.clone(), done.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .kv()
                    .put(PutRequest {
                        key: format!("load/{}", i % 100).into_bytes(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })
                    .await;
                if r.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let mut handshakes = 0;
    let mut check = |what: &str| {
        handshakes += 1;
        assert!(
            curl_ok(&c, &client_ca, Some(&p.client), &[]),
            "old client, {what}"
        );
    };
    check("before");
    // Rotation: the bundle trusts both CAs; a client of the new CA gets in, without a restart.
    let mut bundle = old_ca.clone();
    bundle.extend(std::fs::read(&other.ca).expect("new ca"));
    replace(&p.ca, &bundle);
    check("after the bundle");
    assert!(
        curl_ok(&c, &client_ca, Some(&other.client), &[]),
        "the new CA's client"
    );
    // A half-written bundle keeps the previous one, and says why.
    std::fs::write(&p.ca, b"-----BEGIN CERTIFICATE-----\nMIIB").expect("truncate");
    check("with a half-written bundle");
    assert!(
        curl_ok(&c, &client_ca, Some(&other.client), &[]),
        "still the bundle"
    );
    // A certificate that does not go with the key keeps the previous pair.
    let server_cert = std::fs::read(&p.server.cert).expect("server cert");
    replace(
        &p.server.cert,
        &std::fs::read(&other.server.cert).expect("other"),
    );
    check("with a mismatched server pair");
    replace(&p.server.cert, &server_cert);
    replace(&p.ca, &bundle);
    check("restored");
    // New peer connections: a follower other than member 0 restarts and rejoins through the
    // bundle (the leader stays, so the load sees no election).
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = if leader == 1 { 2 } else { 1 };
    c.restart(follower);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    // The restarted member caught up through peer connections verified with the bundle.
    c.wait_same_revision();
    let log = c.log(0);
    assert!(log.contains("keeping the previous trusted CA"), "{log}");
    assert!(
        log.contains("keeping the previous certificate and key"),
        "{log}"
    );
    assert!(log.contains("reloaded trusted CA"), "{log}");
    assert!(done.load(Ordering::Relaxed) > 10, "the load ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(handshakes >= 5);
}
