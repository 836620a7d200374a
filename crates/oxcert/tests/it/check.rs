//! `oxcert check`, one deliberately broken setup per finding, and certificates made by the
//! real cfssl 1.2.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use super::*;

const MEMBERS: &str = "etcd1=127.0.0.11,etcd2=127.0.0.12,etcd3=127.0.0.13";

/// A fresh cluster PKI in `dir/name`.
fn cluster(dir: &Path, name: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    ox(
        dir,
        &[
            "cluster",
            "--members",
            MEMBERS,
            "--out",
            out.to_str().expect("utf-8"),
        ],
    )
    .ok();
    out
}

fn check(dir: &Path, args: &[&str]) -> Output {
    ox(dir, &[&["check"], args].concat())
}

/// The start flags of `etcd1.env` as a command line, for `oxcert check -- …`.
fn member_flags(pki: &Path, overrides: &[(&str, &str)]) -> Vec<String> {
    let env = std::fs::read_to_string(pki.join("etcd1.env")).expect("env");
    let mut flags: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.strip_prefix("ETCD_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_ascii_lowercase().replace('_', "-"), v.to_string()))
        .collect();
    for (name, value) in overrides {
        flags.retain(|(k, _)| k != name);
        if !value.is_empty() {
            flags.push((name.to_string(), value.to_string()));
        }
    }
    flags
        .into_iter()
        .map(|(k, v)| format!("--{k}={v}"))
        .collect()
}

fn check_member(dir: &Path, pki: &Path, overrides: &[(&str, &str)]) -> Output {
    let flags = member_flags(pki, overrides);
    let mut args = vec!["check", "--", "oxcd"];
    args.extend(flags.iter().map(String::as_str));
    ox(dir, &args)
}

fn assert_finding(out: &Output, severity: &str, text: &str) {
    let found = out.stdout.lines().any(|l| {
        l.starts_with(&format!("{severity}: ")) && l.contains(text) && l.contains("; fix: ")
    });
    assert!(
        found,
        "expected a {severity} line with {text:?} and a fix:\n{}{}",
        out.stdout, out.stderr
    );
}

#[test]
fn a_clean_cluster_passes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = cluster(tmp.path(), "pki");
    for member in ["etcd1", "etcd2", "etcd3"] {
        let env = pki.join(format!("{member}.env"));
        let out = check(
            tmp.path(),
            &["--env-file", env.to_str().expect("utf-8"), "--strict"],
        )
        .ok();
        assert!(
            out.stdout.starts_with("ok: no problems found"),
            "{}",
            out.stdout
        );
    }
    let out = check_member(tmp.path(), &pki, &[]).ok();
    assert!(out.stdout.starts_with("ok:"), "{}", out.stdout);
    let pem = |n: &str| pki.join(n).display().to_string();
    check(
        tmp.path(),
        &[
            "--cert",
            &pem("client.pem"),
            "--key",
            &pem("client-key.pem"),
            "--ca",
            &pem("ca.pem"),
            "--role",
            "client",
            "--strict",
        ],
    )
    .ok();
}

#[test]
fn a_certificate_from_another_ca_is_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = cluster(tmp.path(), "pki");
    let other = tmp.path().join("other");
    ox(
        tmp.path(),
        &[
            "cluster",
            "--members",
            MEMBERS,
            "--out",
            other.to_str().expect("utf-8"),
            "--ca-cn",
            "other-ca",
        ],
    )
    .ok();
    let out = check_member(
        tmp.path(),
        &pki,
        &[(
            "trusted-ca-file",
            &other.join("ca.pem").display().to_string(),
        )],
    )
    .failed();
    assert_eq!(out.code, 1);
    assert_finding(
        &out,
        "error",
        "certificate is signed by \"O=oxcd, CN=oxcd-ca\", but",
    );
    assert_finding(&out, "error", "holds only \"O=oxcd, CN=other-ca\"");
}

#[test]
fn a_regenerated_ca_with_the_same_name_is_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = cluster(tmp.path(), "pki");
    let old_cert = tmp.path().join("old-etcd1.pem");
    std::fs::copy(pki.join("etcd1.pem"), &old_cert).expect("copy");
    let refused = ox(
        tmp.path(),
        &[
            "cluster",
            "--members",
            MEMBERS,
            "--out",
            pki.to_str().expect("utf-8"),
        ],
    )
    .failed();
    assert!(
        refused.stderr.contains("refusing to overwrite") && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    ox(
        tmp.path(),
        &[
            "cluster",
            "--members",
            MEMBERS,
            "--out",
            pki.to_str().expect("utf-8"),
            "--force",
        ],
    )
    .ok();
    let out = check(
        tmp.path(),
        &[
            "--cert",
            old_cert.to_str().expect("utf-8"),
            "--ca",
            pki.join("ca.pem").to_str().expect("utf-8"),
            "--role",
            "peer",
        ],
    )
    .failed();
    assert_finding(&out, "error", "a different CA with the same name");
}

#[test]
fn a_key_that_does_not_match_is_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = cluster(tmp.path(), "pki");
    let out = check_member(
        tmp.path(),
        &pki,
        &[(
            "peer-key-file",
            &pki.join("etcd2-key.pem").display().to_string(),
        )],
    )
    .failed();
    assert_finding(&out, "error", "private key does not match certificate");
}

#[test]
fn an_address_outside_the_sans_is_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = cluster(tmp.path(), "pki");
    let out = check_member(
        tmp.path(),
        &pki,
        &[
            ("advertise-client-urls", "https://10.9.8.7:2379"),
            ("initial-advertise-peer-urls", "https://127.0.0.99:2380"),
        ],
    )
    .failed();
    assert_finding(
        &out,
        "error",
        "not 10.9.8.7 (from --advertise-client-urls https://10.9.8.7:2379)",
    );
    assert_finding(
        &out,
        "error",
        "certificate is valid for 127.0.0.11, 127.0.0.1, localhost, not 127.0.0.99",
    );
    assert_finding(&out, "error", "--initial-cluster: has etcd1=https://127.0.0.11:2380 but --initial-advertise-peer-urls is https://127.0.0.99:2380");
    let pem = |n: &str| pki.join(n).display().to_string();
    let out = check(
        tmp.path(),
        &[
            "--cert",
            &pem("server.pem"),
            "--hosts",
            "https://etcd9.example.com:2379,127.0.0.12",
        ],
    )
    .failed();
    assert_finding(&out, "error", "not etcd9.example.com");
    assert!(!out.stdout.contains("not 127.0.0.12"), "{}", out.stdout);
}

/// Signs a certificate with `profile` of an ad-hoc config, against the cluster's CA.
fn sign_with(dir: &Path, pki: &Path, name: &str, expiry: &str, usages: &str) {
    let config = dir.join(format!("{name}-config.json"));
    write(
        &config,
        &format!(
            r#"{{"signing":{{"profiles":{{"p":{{"expiry":"{expiry}","usages":[{usages}]}}}}}}}}"#
        ),
    );
    let json = ox_stdin(
        dir,
        &[
            "gencert",
            &format!("-ca={}", pki.join("ca.pem").display()),
            &format!("-ca-key={}", pki.join("ca-key.pem").display()),
            &format!("-config={}", config.display()),
            "-profile=p",
            "-hostname=127.0.0.11,127.0.0.1,localhost",
            "-",
        ],
        &format!(r#"{{"CN":"{name}"}}"#),
    )
    .ok()
    .stdout;
    ox_stdin(dir, &["json", "-bare", name], &json).ok();
}

#[test]
fn missing_usages_are_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = cluster(dir, "pki");
    // The tutorial's "server" profile used as a peer certificate: no client auth.
    sign_with(
        dir,
        &pki,
        "serveronly",
        "8760h",
        r#""signing","key encipherment","server auth""#,
    );
    let out = check_member(
        dir,
        &pki,
        &[
            ("peer-cert-file", "serveronly.pem"),
            ("peer-key-file", "serveronly-key.pem"),
        ],
    )
    .failed();
    assert_finding(
        &out,
        "error",
        "peer certificate lacks extended key usage client auth",
    );
    // ...and as the client-facing certificate with --client-cert-auth: the gateway warning.
    let out = check_member(
        dir,
        &pki,
        &[
            ("cert-file", "serveronly.pem"),
            ("key-file", "serveronly-key.pem"),
        ],
    )
    .ok();
    assert_finding(
        &out,
        "warning",
        "server certificate lacks client auth, but with --client-cert-auth etcd's gRPC gateway",
    );
    // A client certificate used to serve.
    let out = check_member(
        dir,
        &pki,
        &[
            ("cert-file", &pki.join("client.pem").display().to_string()),
            (
                "key-file",
                &pki.join("client-key.pem").display().to_string(),
            ),
        ],
    )
    .failed();
    assert_finding(
        &out,
        "error",
        "server certificate lacks extended key usage server auth",
    );
    let out = check(dir, &["--cert", "serveronly.pem", "--role", "client"]).failed();
    assert_finding(
        &out,
        "error",
        "client certificate lacks extended key usage client auth",
    );
}

#[test]
fn validity_problems_are_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = cluster(dir, "pki");
    let ca = pki.join("ca.pem").display().to_string();
    // cfssl backdates by five minutes, so a one-minute certificate is born expired.
    sign_with(dir, &pki, "expired", "1m", r#""signing","server auth""#);
    let out = check(
        dir,
        &[
            "--cert",
            "expired.pem",
            "--key",
            "expired-key.pem",
            "--ca",
            &ca,
        ],
    )
    .failed();
    assert_finding(&out, "error", "certificate expired on");
    sign_with(dir, &pki, "soon", "240h", r#""signing","server auth""#);
    let out = check(
        dir,
        &["--cert", "soon.pem", "--key", "soon-key.pem", "--ca", &ca],
    )
    .ok();
    assert_finding(&out, "warning", "certificate expires on");
    assert!(
        out.stdout.contains("(in 9 days)") || out.stdout.contains("(in 10 days)"),
        "{}",
        out.stdout
    );
    let strict = check(
        dir,
        &[
            "--cert",
            "soon.pem",
            "--key",
            "soon-key.pem",
            "--ca",
            &ca,
            "--strict",
        ],
    )
    .failed();
    assert_eq!(strict.code, 1);
    // A machine whose clock is behind the issuer's.
    let out = check(
        dir,
        &[
            "--cert",
            "soon.pem",
            "--ca",
            &ca,
            "--at",
            "2001-01-01T00:00:00Z",
        ],
    )
    .failed();
    assert_finding(&out, "error", "certificate is not valid yet");
    assert_finding(
        &out,
        "error",
        "CA certificate O=oxcd, CN=oxcd-ca is not valid yet",
    );
}

#[test]
fn a_readable_private_key_is_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = cluster(tmp.path(), "pki");
    let key = pki.join("etcd1-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let env = pki.join("etcd1.env").display().to_string();
    let out = check(tmp.path(), &["--env-file", &env]).ok();
    assert_finding(
        &out,
        "warning",
        "private key is readable by others (mode 0644)",
    );
    assert!(
        out.stdout.contains(&format!("chmod 600 {}", key.display())),
        "{}",
        out.stdout
    );
    check(tmp.path(), &["--env-file", &env, "--strict"]).failed();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = check(tmp.path(), &["--env-file", &env]).ok();
    assert_finding(&out, "warning", "readable by its group");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    check(tmp.path(), &["--env-file", &env, "--strict"]).ok();
}

#[test]
fn flag_mistakes_are_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = cluster(tmp.path(), "pki");
    let out = check_member(
        tmp.path(),
        &pki,
        &[("trusted-ca-file", ""), ("peer-trusted-ca-file", "")],
    )
    .failed();
    assert_finding(
        &out,
        "error",
        "--client-cert-auth is set but --trusted-ca-file is not",
    );
    assert_finding(
        &out,
        "error",
        "--peer-client-cert-auth is set but --peer-trusted-ca-file is not",
    );
    let out = check_member(tmp.path(), &pki, &[("cert-file", ""), ("key-file", "")]).failed();
    assert_finding(
        &out,
        "error",
        "uses https but --cert-file and --key-file are not set",
    );
    let out = check_member(
        tmp.path(),
        &pki,
        &[("cert-file", "/nonexistent/server.pem")],
    )
    .failed();
    assert_finding(
        &out,
        "error",
        "cannot read certificate file /nonexistent/server.pem: no such file or directory",
    );
    let out = check_member(tmp.path(), &pki, &[("name", "etcd7")]).failed();
    assert_finding(&out, "error", "has no entry for this member (--name etcd7)");
    let out = check(tmp.path(), &[]).failed();
    assert!(out.stderr.contains("nothing to check"), "{}", out.stderr);
}

#[test]
fn certificates_from_the_real_cfssl_pass_and_sign() {
    let real = require("cfssl");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(&dir.join("ca-csr.json"), CA_CSR);
    write(&dir.join("ca-config.json"), CA_CONFIG);
    let bin = real_cfssl_links(dir);
    let version = sh(dir, &bin, "cfssl version").ok();
    assert!(
        !version.stdout.contains("oxcert"),
        "expected the real cfssl: {}",
        version.stdout
    );
    sh(dir, &bin, TUTORIAL_TLDR).ok();
    sh(
        dir,
        &bin,
        r#"echo '{"CN":"ec ca"}' | cfssl gencert -initca - | cfssljson -bare ecca"#,
    )
    .ok();

    let out = check(
        dir,
        &[
            "--cert",
            "server.pem",
            "--key",
            "server-key.pem",
            "--ca",
            "etcd-root-ca.pem",
            "--role",
            "server",
            "--hosts",
            "https://127.0.0.1:2379,etcd2",
            "--strict",
        ],
    )
    .ok();
    assert!(out.stdout.starts_with("ok:"), "{}", out.stdout);
    check(
        dir,
        &[
            "--cert",
            "etcd3.pem",
            "--key",
            "etcd3-key.pem",
            "--ca",
            "etcd-root-ca.pem",
            "--role",
            "peer",
            "--hosts",
            "192.168.1.103",
            "--strict",
        ],
    )
    .ok();
    check(
        dir,
        &[
            "--cert",
            "client.pem",
            "--key",
            "client-key.pem",
            "--ca",
            "etcd-root-ca.pem",
            "--role",
            "client",
            "--strict",
        ],
    )
    .ok();
    // cfssl's RSA (PKCS#1) and EC (SEC1) CA keys sign with oxcert, and openssl accepts the result.
    for (ca, name) in [("etcd-root-ca", "oxrsa"), ("ecca", "oxec")] {
        let json = ox_stdin(
            dir,
            &[
                "gencert",
                &format!("-ca={ca}.pem"),
                &format!("-ca-key={ca}-key.pem"),
                "-config",
                "ca-config.json",
                "-profile",
                "peer",
                "-hostname",
                "127.0.0.1",
                "-",
            ],
            r#"{"CN":"from oxcert"}"#,
        )
        .ok()
        .stdout;
        ox_stdin(dir, &["json", "-bare", name], &json).ok();
        openssl(
            dir,
            &[
                "verify",
                "-CAfile",
                &format!("{ca}.pem"),
                &format!("{name}.pem"),
            ],
        )
        .ok();
        check(
            dir,
            &[
                "--cert",
                &format!("{name}.pem"),
                "--key",
                &format!("{name}-key.pem"),
                "--ca",
                &format!("{ca}.pem"),
                "--role",
                "peer",
                "--hosts",
                "127.0.0.1",
                "--strict",
            ],
        )
        .ok();
    }
    // And the real cfssl signs with a CA made by oxcert.
    let ours = cluster(dir, "pki");
    let out = run(
        Command::new(&real)
            .args([
                "gencert",
                &format!("-ca={}", ours.join("ca.pem").display()),
                &format!("-ca-key={}", ours.join("ca-key.pem").display()),
                "-hostname=127.0.0.1",
                "-",
            ])
            .current_dir(dir),
        br#"{"CN":"from cfssl"}"#,
    )
    .ok();
    ox_stdin(dir, &["json", "-bare", "fromcfssl"], &out.stdout).ok();
    check(
        dir,
        &[
            "--cert",
            "fromcfssl.pem",
            "--key",
            "fromcfssl-key.pem",
            "--ca",
            ours.join("ca.pem").to_str().expect("utf-8"),
            "--role",
            "peer",
            "--strict",
        ],
    )
    .ok();
}
