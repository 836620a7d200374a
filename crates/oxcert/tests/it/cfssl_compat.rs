//! oxcert as cfssl and cfssljson: the tutorial's commands through links, the files and
//! formats against openssl and the real cfssl 1.2, and bad input.

use std::path::Path;
use std::process::Command;

use super::*;

fn x509_text(dir: &Path, file: &str) -> String {
    openssl(dir, &["x509", "-in", file, "-noout", "-text"])
        .ok()
        .stdout
}

#[test]
fn tutorial_commands_run_verbatim_through_cfssl_links() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tutorial_pki(dir, None);

    for name in [
        "etcd-root-ca",
        "server",
        "etcd1",
        "etcd2",
        "etcd3",
        "client",
    ] {
        for suffix in [".pem", "-key.pem", ".csr"] {
            assert!(
                dir.join(format!("{name}{suffix}")).exists(),
                "{name}{suffix} missing"
            );
        }
        assert_eq!(
            mode(&dir.join(format!("{name}-key.pem"))),
            0o600,
            "{name}-key.pem mode"
        );
        let key = std::fs::read_to_string(dir.join(format!("{name}-key.pem"))).expect("key");
        assert!(
            key.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
            "{name}: PKCS#1 as cfssl writes"
        );
        let csr = openssl(
            dir,
            &["req", "-in", &format!("{name}.csr"), "-noout", "-verify"],
        )
        .ok();
        assert!(
            format!("{}{}", csr.stdout, csr.stderr).contains("verify OK"),
            "{name}.csr: {csr:?}"
        );
    }

    let verify = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "etcd-root-ca.pem",
            "server.pem",
            "etcd1.pem",
            "etcd2.pem",
            "etcd3.pem",
            "client.pem",
        ],
    )
    .ok();
    assert_eq!(
        verify.stdout.matches(": OK").count(),
        5,
        "{}",
        verify.stdout
    );

    let ca = x509_text(dir, "etcd-root-ca.pem");
    assert!(ca.contains("CA:TRUE"), "{ca}");
    assert!(ca.contains("Certificate Sign, CRL Sign"), "{ca}");
    assert!(ca.contains("Subject Key Identifier"), "{ca}");
    assert!(
        ca.contains("C = US, ST = CA, L = San Francisco, O = etcd, OU = ops, CN = etcd-root-ca"),
        "{ca}"
    );

    let server = x509_text(dir, "server.pem");
    for san in [
        "IP Address:192.168.1.101",
        "IP Address:192.168.1.103",
        "IP Address:127.0.0.1",
        "DNS:etcd1",
        "DNS:etcd3",
    ] {
        assert!(server.contains(san), "server cert lacks {san}:\n{server}");
    }
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    assert!(
        !server.contains("TLS Web Client Authentication"),
        "{server}"
    );
    assert!(server.contains("CA:FALSE"), "{server}");
    assert!(server.contains("Authority Key Identifier"), "{server}");
    assert!(
        server.contains("Digital Signature, Key Encipherment"),
        "{server}"
    );

    let peer = x509_text(dir, "etcd2.pem");
    assert!(
        peer.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{peer}"
    );
    assert!(peer.contains("Subject: CN = etcd2"), "{peer}");

    let client = x509_text(dir, "client.pem");
    assert!(client.contains("TLS Web Client Authentication"), "{client}");
    assert!(
        !client.contains("TLS Web Server Authentication"),
        "{client}"
    );
    assert!(
        !client.contains("DNS:etcd1"),
        "client -hostname has no etcd names:\n{client}"
    );
}

/// The log lines cfssl prints, without timestamps and serial numbers.
fn log_shape(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split_once(" [").map(|(_, rest)| format!("[{rest}")))
        .map(|l| match l.split_once("serial number ") {
            Some((head, _)) => format!("{head}serial number N"),
            None => l,
        })
        .collect()
}

#[test]
fn output_has_the_shape_of_real_cfssl() {
    let real = require("cfssl");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(&dir.join("ca-csr.json"), CA_CSR);
    let theirs = run(
        Command::new(&real)
            .args(["gencert", "-initca", "ca-csr.json"])
            .current_dir(dir),
        b"",
    )
    .ok();
    let ours = ox(dir, &["gencert", "-initca", "ca-csr.json"]).ok();
    assert_eq!(log_shape(&ours.stderr), log_shape(&theirs.stderr));
    for out in [&theirs, &ours] {
        assert!(
            out.stdout.ends_with("}\n") && out.stdout.lines().count() == 1,
            "{}",
            out.stdout
        );
        let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["cert", "csr", "key"]);
        assert!(json["key"]
            .as_str()
            .unwrap_or("")
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        assert!(json["csr"]
            .as_str()
            .unwrap_or("")
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    }
    // Same subject bytes and extensions: openssl prints them identically, serials aside.
    write(
        &dir.join("theirs.pem"),
        serde_json::from_str::<serde_json::Value>(&theirs.stdout).expect("json")["cert"]
            .as_str()
            .unwrap_or(""),
    );
    write(
        &dir.join("ours.pem"),
        serde_json::from_str::<serde_json::Value>(&ours.stdout).expect("json")["cert"]
            .as_str()
            .unwrap_or(""),
    );
    // Extensions come in another order; hex dumps, serials and dates differ by nature.
    let shape = |file: &str| -> Vec<String> {
        let mut lines: Vec<String> = x509_text(dir, file)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.chars().all(|c| c.is_ascii_hexdigit() || c == ':'))
            .filter(|l| !l.starts_with("Not ") && !l.starts_with("Serial"))
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(shape("ours.pem"), shape("theirs.pem"));
}

#[test]
fn print_defaults_match_real_cfssl_byte_for_byte() {
    let real = require("cfssl");
    let tmp = tempfile::tempdir().expect("tempdir");
    for what in ["csr", "config"] {
        let theirs = run(Command::new(&real).args(["print-defaults", what]), b"").ok();
        let ours = ox(tmp.path(), &["print-defaults", what]).ok();
        assert_eq!(ours.stdout, theirs.stdout, "print-defaults {what}");
    }
}

#[test]
fn key_sizes_and_cfssl_defaults() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let bin = compat_links(dir);
    sh(
        dir,
        &bin,
        r#"echo '{"CN":"p384 ca","key":{"algo":"ecdsa","size":384}}' | cfssl gencert -initca - | cfssljson -bare ca
           echo '{"CN":"plain","hosts":["node1.example.com","10.1.2.3"]}' | cfssl gencert -ca ca.pem -ca-key ca-key.pem - | cfssljson -bare plain
           echo '{"CN":"big","key":{"algo":"rsa","size":3072}}' | cfssl gencert -ca ca.pem -ca-key ca-key.pem -hostname big.example.com - | cfssljson -bare big"#,
    )
    .ok();
    let ca = x509_text(dir, "ca.pem");
    assert!(
        ca.contains("Public-Key: (384 bit)") && ca.contains("ecdsa-with-SHA384"),
        "{ca}"
    );
    assert!(std::fs::read_to_string(dir.join("ca-key.pem"))
        .expect("key")
        .starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
    openssl(dir, &["ec", "-in", "ca-key.pem", "-check", "-noout"]).ok();
    // No key in the CSR: cfssl's default ecdsa 256; no config: 1 year, both usages.
    let plain = x509_text(dir, "plain.pem");
    assert!(plain.contains("Public-Key: (256 bit)"), "{plain}");
    assert!(
        plain.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{plain}"
    );
    assert!(
        plain.contains("DNS:node1.example.com") && plain.contains("IP Address:10.1.2.3"),
        "{plain}"
    );
    let dates = openssl(
        dir,
        &[
            "x509",
            "-in",
            "plain.pem",
            "-noout",
            "-startdate",
            "-enddate",
        ],
    )
    .ok()
    .stdout;
    let years: Vec<i32> = dates
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .rev()
                .nth(1)
                .and_then(|y| y.parse().ok())
        })
        .collect();
    assert_eq!(years.len(), 2, "{dates}");
    assert!(years[1] - years[0] == 1, "default expiry is 8760h: {dates}");
    let big = x509_text(dir, "big.pem");
    assert!(
        big.contains("Public-Key: (3072 bit)") && big.contains("DNS:big.example.com"),
        "{big}"
    );
    openssl(
        dir,
        &["verify", "-CAfile", "ca.pem", "plain.pem", "big.pem"],
    )
    .ok();
}

#[test]
fn p521_is_refused_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = ox_stdin(
        tmp.path(),
        &["gencert", "-initca", "-"],
        r#"{"CN":"x","key":{"algo":"ecdsa","size":521}}"#,
    )
    .failed();
    assert!(
        out.stderr.contains("P-521") && out.stderr.contains("ecdsa 256 or 384"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

/// Runs a failing `cfssl … | cfssljson -bare NAME` and checks that nothing was written.
fn failing_pipeline(dir: &Path, script: &str) -> Output {
    let bin = dir.join("bin");
    let before = files_in(dir);
    let out = sh(dir, &bin, script).failed();
    assert_eq!(files_in(dir), before, "a failed command left files behind");
    out
}

#[test]
fn bad_input_fails_clearly_and_leaves_no_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tutorial_pki(dir, None);
    let sign =
        "cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config=ca-config.json";

    let out = failing_pipeline(dir, &format!("printf '{{\\n  \"CN\": \"x\",\\n  \"hosts\": [\"a\" \"b\"]\\n}}' | {sign} -profile=server - | cfssljson -bare bad"));
    assert!(
        out.stderr
            .contains("stdin: malformed JSON at line 3, column"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no JSON on stdin"),
        "cfssljson explains the empty pipe: {}",
        out.stderr
    );

    let out = failing_pipeline(
        dir,
        &format!("echo '{{\"CN\":\"x\"}}' | {sign} -profile=sever - | cfssljson -bare bad"),
    );
    assert!(
        out.stderr.contains(
            "unknown profile \"sever\" in ca-config.json (known profiles: client, peer, server)"
        ),
        "{}",
        out.stderr
    );

    let out = failing_pipeline(dir, "echo '{\"CN\":\"x\"}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=missing-key.pem - | cfssljson -bare bad");
    assert!(
        out.stderr
            .contains("cannot read CA key missing-key.pem: no such file or directory"),
        "{}",
        out.stderr
    );

    let out = failing_pipeline(
        dir,
        "echo '{\"CN\":\"x\"}' | cfssl gencert -ca=etcd-root-ca.pem - | cfssljson -bare bad",
    );
    assert!(out.stderr.contains("-ca-key is required"), "{}", out.stderr);

    let out = failing_pipeline(dir, &format!("echo '{{\"CN\":\"x\",\"key\":{{\"algo\":\"rsa\",\"size\":1024}}}}' | {sign} -profile=client - | cfssljson -bare bad"));
    assert!(
        out.stderr.contains("unsupported key size: rsa 1024"),
        "{}",
        out.stderr
    );

    let out = failing_pipeline(
        dir,
        "cfssl gencert -initca no-such-csr.json | cfssljson -bare bad",
    );
    assert!(
        out.stderr.contains("cannot read CSR file no-such-csr.json"),
        "{}",
        out.stderr
    );

    let out = failing_pipeline(
        dir,
        "cfssl gencert -initca -ca-key=etcd-root-ca.pem ca-csr.json | cfssljson -bare bad",
    );
    assert!(out.stderr.contains("no private key"), "{}", out.stderr);

    let out = failing_pipeline(dir, "echo '{\"CN\":\"x\"}' | cfssl gencert -ca=server.pem -ca-key=server-key.pem - | cfssljson -bare bad");
    assert!(
        out.stderr.contains("not a CA certificate"),
        "{}",
        out.stderr
    );

    let out = failing_pipeline(dir, "echo '{\"CN\":\"x\"}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=server-key.pem - | cfssljson -bare bad");
    assert!(
        out.stderr
            .contains("the CA key does not match etcd-root-ca.pem"),
        "{}",
        out.stderr
    );

    write(
        &dir.join("bad-config.json"),
        r#"{"signing":{"default":{"expiry":"1y"}}}"#,
    );
    let out = failing_pipeline(dir, "echo '{\"CN\":\"x\"}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config bad-config.json - | cfssljson -bare bad");
    assert!(out.stderr.contains("unknown unit \"y\""), "{}", out.stderr);

    let out = failing_pipeline(dir, "echo garbage | cfssljson -bare bad");
    assert!(
        out.stderr.contains("malformed JSON at line 1, column 1"),
        "{}",
        out.stderr
    );

    let out = failing_pipeline(dir, "cfssl gencert -bogus x.json");
    assert_eq!(out.code, 2, "Go's flag errors exit 2");
    assert!(
        out.stderr.contains("flag provided but not defined: -bogus"),
        "{}",
        out.stderr
    );
}

#[test]
fn cfssljson_writes_keys_0600_even_over_a_readable_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let bin = compat_links(dir);
    write(&dir.join("x-key.pem"), "old");
    std::fs::set_permissions(
        dir.join("x-key.pem"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    sh(
        dir,
        &bin,
        "echo '{\"CN\":\"x\"}' | cfssl gencert -initca - | cfssljson -bare x",
    )
    .ok();
    assert_eq!(mode(&dir.join("x-key.pem")), 0o600);
    assert!(std::fs::read_to_string(dir.join("x-key.pem"))
        .expect("key")
        .contains("EC PRIVATE KEY"));
    // oxcert's own names for the same commands, with cfssljson's -f and -stdout.
    let json = ox_stdin(dir, &["gencert", "--initca=true", "-"], r#"{"CN":"y"}"#)
        .ok()
        .stdout;
    write(&dir.join("y.json"), &json);
    let out = ox(dir, &["json", "-f", "y.json", "-stdout"]).ok();
    assert!(
        out.stdout.contains("BEGIN CERTIFICATE") && out.stdout.contains("BEGIN EC PRIVATE KEY")
    );
    ox(dir, &["json", "-f=y.json", "--bare", "y"]).ok();
    assert!(dir.join("y.pem").exists() && dir.join("y.csr").exists());
}

#[test]
fn genkey_and_a_ca_renewed_with_its_own_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let bin = compat_links(dir);
    let out = sh(
        dir,
        &bin,
        r#"echo '{"CN":"ca","host":["typo"]}' | cfssl gencert -initca - | cfssljson -bare ca
           echo '{"CN":"ca renewed"}' | cfssl gencert -initca -ca-key ca-key.pem - | cfssljson -bare renewed
           echo '{"CN":"k","hosts":["k.example.com"]}' | cfssl genkey - | cfssljson -bare k"#,
    )
    .ok();
    assert!(
        out.stderr
            .contains("[WARNING] ignoring unknown field \"host\""),
        "{}",
        out.stderr
    );
    assert!(
        !dir.join("renewed-key.pem").exists(),
        "a renewed CA keeps its key; no new key is written"
    );
    let pubkey = |file: &str| {
        openssl(dir, &["x509", "-in", file, "-noout", "-pubkey"])
            .ok()
            .stdout
    };
    assert_eq!(pubkey("ca.pem"), pubkey("renewed.pem"));
    assert!(x509_text(dir, "renewed.pem").contains("CN = ca renewed"));
    assert_eq!(mode(&dir.join("k-key.pem")), 0o600);
    let csr = openssl(dir, &["req", "-in", "k.csr", "-noout", "-text"])
        .ok()
        .stdout;
    assert!(csr.contains("DNS:k.example.com"), "{csr}");
}
