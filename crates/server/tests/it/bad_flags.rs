//! Flags parsed as etcd (Go's `flag` package) parses them, from the command line and from
//! `ETCD_*` variables. A bad one gets exit code 2, one line on stderr naming the flag, and
//! nothing on disk: the data dir is not created. A runtime failure (port in use) exits 1,
//! also before the data dir is touched. The accepted forms are proven by a running member.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use oxcd_testkit::addr;
use oxcd_testkit::http::http;
use oxcd_testkit::process::bin;
use oxcd_testkit::{require, run, Cluster, Impl, KeyAlgo, Output, Pki};

/// Flags, environment, what the error line must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

/// Runs oxcd with a fresh data dir path and the given flags and environment.
fn oxcd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin("oxcd"));
    cmd.arg(format!("--data-dir={}", dir.join("dd").display()));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, b"")
}

/// Exit code 2, one stderr line naming every `names`, nothing else, no data dir.
fn expect_usage_error(dir: &Path, args: &[&str], env: &[(&str, &str)], names: &[&str]) {
    let out = oxcd(dir, args, env);
    let case = format!("oxcd {args:?} with env {env:?}");
    assert_eq!(out.code, 2, "{case}: exit code; {out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{case}: one line on stderr, got {out:?}");
    for n in names {
        assert!(
            lines[0].contains(n),
            "{case}: the error must name {n:?}: {}",
            lines[0]
        );
    }
    assert!(out.stdout.is_empty(), "{case}: stdout: {:?}", out.stdout);
    assert!(!dir.join("dd").exists(), "{case}: the data dir was created");
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let d = tmp.path();
    // Nothing listens: each case is refused before. Reserved all the same, in case one is not.
    let at = addr::alloc();
    let https = format!("--listen-client-urls=https://{}", at.client());
    let adv = format!("--advertise-client-urls=https://{}", at.client());
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let garbage_flag = format!("--cert-file={}", garbage.display());

    let cases: &[Case] = &[
        (&["--nope"], &[], &["-nope"]),
        (&["-nope=1"], &[], &["-nope"]),
        (&["---name=x"], &[], &["---name=x"]),
        (&["extra"], &[], &["'extra'"]),
        (
            &["--listen-client-urls=foo"],
            &[],
            &["--listen-client-urls", "foo"],
        ),
        (
            &["--listen-client-urls=http://127.0.0.1"],
            &[],
            &["--listen-client-urls"],
        ),
        (
            &["--listen-client-urls=ftp://127.0.0.1:2379"],
            &[],
            &["--listen-client-urls"],
        ),
        (
            &["--advertise-client-urls=http://127.0.0.1:notaport"],
            &[],
            &["--advertise-client-urls"],
        ),
        (
            &["--listen-client-urls=http://example.com:2379"],
            &[],
            &["--listen-client-urls", "IP"],
        ),
        (
            &["--listen-peer-urls=http://peer.example:2380"],
            &[],
            &["--listen-peer-urls", "IP"],
        ),
        (&[&https, &adv], &[], &["--cert-file", "--key-file"]),
        (
            &[
                &https,
                &adv,
                "--cert-file=/nonexistent/server.pem",
                "--key-file=/nonexistent/server-key.pem",
            ],
            &[],
            &["--cert-file", "/nonexistent/server.pem"],
        ),
        (
            &[
                &https,
                &adv,
                &garbage_flag,
                "--key-file=/nonexistent/key.pem",
            ],
            &[],
            &["--cert-file"],
        ),
        (
            &["--client-cert-auth"],
            &[],
            &["--trusted-ca-file", "--client-cert-auth"],
        ),
        (
            &["--name=y"],
            &[("ETCD_NAME", "x")],
            &["ETCD_NAME", "--name"],
        ),
        (
            &["-name", "y"],
            &[("ETCD_NAME", "x")],
            &["ETCD_NAME", "--name"],
        ),
        // Go's bool flags take no separate value: `false` is then a stray argument.
        (&["-enable-v2", "false"], &[], &["'false'"]),
        (&["--enable-v2=maybe"], &[], &["--enable-v2", "maybe"]),
        (&["--enable-v2="], &[], &["--enable-v2"]),
        (&[], &[("ETCD_ENABLE_V2", "nope")], &["enable-v2", "nope"]),
        (&["--name"], &[], &["-name"]),
        (&["--max-txn-ops=-1"], &[], &["--max-txn-ops"]),
        // Issue 16 defect 7: an unknown level started a server that logged nothing at all.
        (&["--log-level=verbose"], &[], &["--log-level", "verbose"]),
        (
            &["--max-request-bytes", "1MB"],
            &[],
            &["--max-request-bytes"],
        ),
        (
            &["--initial-cluster-state=bogus"],
            &[],
            &["--initial-cluster-state"],
        ),
        (&["--election-timeout=10"], &[], &["--election-timeout"]),
    ];
    for (args, env, names) in cases {
        expect_usage_error(d, args, env, names);
    }
}

#[test]
fn bad_tls_files_are_usage_errors() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let d = tmp.path();
    let at = addr::alloc();
    let pki = Pki::cfssl(&d.join("pki"), KeyAlgo::EcdsaP256, &[("m1", at.ip())]);
    let https = format!("--listen-client-urls=https://{}", at.client());
    let cert = format!("--cert-file={}", pki.server.cert.display());
    let key = format!("--key-file={}", pki.server.key.display());
    // A key that is not the certificate's.
    let wrong_key = format!("--key-file={}", pki.client.key.display());
    expect_usage_error(
        d,
        &[&https, &cert, &wrong_key],
        &[],
        &["--cert-file", "--key-file"],
    );
    // A CA file that is not there.
    expect_usage_error(
        d,
        &[&https, &cert, &key, "--trusted-ca-file=/nonexistent/ca.pem"],
        &[],
        &["--trusted-ca-file", "/nonexistent/ca.pem"],
    );
    // A key file that is a certificate.
    let key_is_cert = format!("--key-file={}", pki.ca.display());
    let out = oxcd(d, &[&https, &cert, &key_is_cert], &[]);
    assert!(
        out.stderr.starts_with("oxcd: --key-file: "),
        "only the flag at fault: {out:?}"
    );
    expect_usage_error(d, &[&https, &cert, &key_is_cert], &[], &["--key-file"]);
}

#[test]
fn a_port_in_use_exits_1_before_touching_the_data_dir() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let at = addr::alloc();
    let _taken = TcpListener::bind(at.client()).expect("bind");
    let url = format!("http://{}", at.client());
    let out = oxcd(
        tmp.path(),
        &[
            &format!("--listen-client-urls={url}"),
            &format!("--advertise-client-urls={url}"),
            &format!("--listen-peer-urls=http://{}", at.peer()),
        ],
        &[],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&at.client().to_string()),
        "the error names the address: {out:?}"
    );
    assert!(
        !tmp.path().join("dd").exists(),
        "data dir created although the port was taken"
    );
}

/// Single-dash flags, a value after a space, a bare bool, a repeated flag (the last wins, as
/// in Go) and an `ETCD_*` variable, all taking effect in a running member.
#[test]
fn go_flag_forms_take_effect() {
    require("etcdctl");
    let oxcd = Cluster::builder(Impl::Oxcd)
        .flags([
            "-name",
            "second",
            "-max-txn-ops",
            "2",
            "-pre-vote",
            "--max-request-bytes=4096",
        ])
        .env("ETCD_ENABLE_V2", "false")
        .start();
    let members = oxcd.etcdctl(0, &["member", "list"], b"").ok();
    assert!(
        members.stdout.contains(", second, "),
        "-name second (last wins): {}",
        members.stdout
    );
    let txn = oxcd.etcdctl(0, &["txn"], b"\nput a 1\nput b 2\nput c 3\n\n\n");
    assert!(
        txn.stderr
            .contains("etcdserver: too many operations in txn request"),
        "-max-txn-ops 2: {txn:?}"
    );
    let two = oxcd.etcdctl(0, &["txn"], b"\nput a 1\nput b 2\n\n\n").ok();
    assert!(two.stdout.starts_with("SUCCESS"), "{two:?}");
    let v2 = http(
        oxcd.client_addr(0),
        "PUT",
        "/v2/keys/foo",
        Some("value=bar"),
    )
    .expect("http");
    assert_eq!(v2.status, 404, "ETCD_ENABLE_V2=false: {v2:?}");

    let oxcd = Cluster::builder(Impl::Oxcd)
        .flags(["--enable-v2", "--max-txn-ops=1"])
        .start();
    let v2 = http(
        oxcd.client_addr(0),
        "PUT",
        "/v2/keys/foo",
        Some("value=bar"),
    )
    .expect("http");
    assert_eq!(v2.status, 201, "bare --enable-v2: {v2:?}");
}

/// Decoders under random input (issue 16): any command line and environment parse to a
/// configuration or one error line, never a panic.
mod props {
    use std::collections::BTreeMap;

    use oxcd_server::config::{parse, Parsed};
    use proptest::prelude::*;

    fn arg() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("name"),
            Just("data-dir"),
            Just("listen-client-urls"),
            Just("advertise-client-urls"),
            Just("listen-peer-urls"),
            Just("initial-advertise-peer-urls"),
            Just("initial-cluster"),
            Just("initial-cluster-state"),
            Just("max-request-bytes"),
            Just("max-txn-ops"),
            Just("quota-backend-bytes"),
            Just("snapshot-count"),
            Just("heartbeat-interval"),
            Just("election-timeout"),
            Just("auto-compaction-retention"),
            Just("auto-compaction-mode"),
            Just("experimental-watch-progress-notify-interval"),
            Just("log-level"),
            Just("enable-v2"),
            Just("pre-vote"),
            Just("nope"),
        ];
        let value = "[a-zA-Z0-9:/.,=_\\[\\]-]{0,30}";
        (
            prop_oneof![Just("-"), Just("--"), Just("---"), Just("")],
            name,
            any::<bool>(),
            value,
        )
            .prop_map(|(dashes, name, inline, value)| {
                if inline {
                    format!("{dashes}{name}={value}")
                } else {
                    format!("{dashes}{name}")
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_flags_never_panic(
            args in proptest::collection::vec(prop_oneof![arg(), "[ -~]{0,20}"], 0..8),
            env_value in "[ -~]{0,20}",
        ) {
            let mut env = BTreeMap::new();
            env.insert("ETCD_SNAPSHOT_COUNT".to_string(), env_value);
            match parse(&args, &env) {
                Ok(Parsed::Run(_)) | Ok(Parsed::Help(_)) | Ok(Parsed::Version) => {}
                Err(e) => prop_assert!(!e.0.contains('\n'), "one line: {e}"),
            }
        }
    }
}
