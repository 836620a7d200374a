//! Tests of the flag table, the configuration file and the checks.

use super::flags::{Support, FLAGS};
use super::*;

fn p(args: &[&str]) -> Result<Parsed, ConfigError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    parse(&args, &BTreeMap::new())
}

fn run(args: &[&str]) -> Config {
    match p(args) {
        Ok(Parsed::Run(c)) => *c,
        other => panic!("{args:?} should run: {other:?}"),
    }
}

fn fails(args: &[&str]) -> String {
    match p(args) {
        Err(e) => e.0,
        Ok(other) => panic!("{args:?} should fail: {other:?}"),
    }
}

/// etcd 3.4.23's flags (its `--help`, plus those it defines without listing them).
const ETCD_34: &[&str] = &[
    "advertise-client-urls",
    "auth-token",
    "auth-token-ttl",
    "auto-compaction-mode",
    "auto-compaction-retention",
    "auto-tls",
    "backend-batch-interval",
    "backend-batch-limit",
    "bcrypt-cost",
    "cert-file",
    "cipher-suites",
    "client-cert-allowed-hostname",
    "client-cert-auth",
    "client-crl-file",
    "cors",
    "data-dir",
    "debug",
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "discovery-srv-name",
    "election-timeout",
    "enable-pprof",
    "enable-v2",
    "experimental-backend-bbolt-freelist-type",
    "experimental-compaction-batch-limit",
    "experimental-corrupt-check-time",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-v2v3",
    "experimental-initial-corrupt-check",
    "experimental-peer-skip-client-san-verification",
    "experimental-warning-apply-duration",
    "experimental-watch-progress-notify-interval",
    "force-new-cluster",
    "grpc-keepalive-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-timeout",
    "heartbeat-interval",
    "host-whitelist",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "initial-election-tick-advance",
    "key-file",
    "listen-client-urls",
    "listen-metrics-urls",
    "listen-peer-urls",
    "log-level",
    "log-outputs",
    "log-package-levels",
    "logger",
    "max-concurrent-streams",
    "max-request-bytes",
    "max-snapshots",
    "max-txn-ops",
    "max-wals",
    "metrics",
    "name",
    "peer-auto-tls",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "peer-cert-file",
    "peer-client-cert-auth",
    "peer-crl-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "pre-vote",
    "proxy",
    "proxy-dial-timeout",
    "proxy-failure-wait",
    "proxy-read-timeout",
    "proxy-refresh-interval",
    "proxy-write-timeout",
    "quota-backend-bytes",
    "snapshot-count",
    "strict-reconfig-check",
    "trusted-ca-file",
    "wal-dir",
    "unsafe-no-fsync",
    "enable-grpc-gateway",
    "experimental-enable-lease-checkpoint-persist",
    "config-file",
    "version",
];

/// etcd 3.5's additions (its help and `etcdmain/config.go`).
const ETCD_35: &[&str] = &[
    "listen-client-http-urls",
    "backend-bbolt-freelist-type",
    "socket-reuse-port",
    "socket-reuse-address",
    "raft-read-timeout",
    "raft-write-timeout",
    "v2-deprecation",
    "client-cert-file",
    "client-key-file",
    "peer-client-cert-file",
    "peer-client-key-file",
    "self-signed-cert-validity",
    "tls-min-version",
    "tls-max-version",
    "enable-log-rotation",
    "log-rotation-config-json",
    "experimental-enable-distributed-tracing",
    "experimental-distributed-tracing-address",
    "experimental-distributed-tracing-service-name",
    "experimental-distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate",
    "experimental-compact-hash-check-enabled",
    "experimental-compact-hash-check-time",
    "experimental-compaction-sleep-interval",
    "experimental-downgrade-check-time",
    "experimental-memory-mlock",
    "experimental-txn-mode-write-with-shared-buffer",
    "experimental-bootstrap-defrag-threshold-megabytes",
    "experimental-stop-grpc-service-on-defrag",
    "experimental-warning-unary-request-duration",
    "experimental-max-learners",
    "experimental-wait-cluster-ready-timeout",
    "experimental-snapshot-catchup-entries",
];

/// etcd 3.6's additions (`embed.Config.AddFlags`, the 3.5 -> 3.6 upgrade guide).
const ETCD_36: &[&str] = &[
    "discovery-endpoints",
    "discovery-token",
    "discovery-dial-timeout",
    "discovery-request-timeout",
    "discovery-keepalive-time",
    "discovery-keepalive-timeout",
    "discovery-insecure-transport",
    "discovery-insecure-skip-tls-verify",
    "discovery-cert",
    "discovery-key",
    "discovery-cacert",
    "discovery-user",
    "discovery-password",
    "feature-gates",
    "log-format",
    "disable-log-sampling",
    "bootstrap-defrag-threshold-megabytes",
    "compaction-batch-limit",
    "compact-hash-check-time",
    "compaction-sleep-interval",
    "corrupt-check-time",
    "enable-distributed-tracing",
    "distributed-tracing-address",
    "distributed-tracing-service-name",
    "distributed-tracing-instance-id",
    "distributed-tracing-sampling-rate",
    "downgrade-check-time",
    "max-learners",
    "memory-mlock",
    "peer-skip-client-san-verification",
    "snapshot-catchup-entries",
    "warning-apply-duration",
    "warning-unary-request-duration",
    "watch-progress-notify-interval",
    "experimental-set-member-localaddr",
];

/// A value each flag accepts without needing files or other flags.
fn sample(name: &str) -> String {
    let flag = flags::find(name).unwrap_or_else(|| panic!("--{name} is not in the table"));
    match name {
        "discovery" | "discovery-srv" | "discovery-endpoints" | "config-file" | "version" => {
            String::new()
        }
        "listen-client-http-urls" => "http://127.0.0.1:12379".into(),
        "initial-cluster" => "default=http://localhost:2380".into(),
        "listen-metrics-urls" => "http://127.0.0.1:12381".into(),
        "log-outputs" => "stderr".into(),
        "feature-gates" => "InitialCorruptCheck=true".into(),
        "cipher-suites" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
        "tls-max-version" => "TLS1.3".into(),
        "peer-client-cert-file" | "peer-client-key-file" => String::new(),
        // oxcd asks for the CA with it (tested in errors_name_the_flag).
        "client-cert-auth" | "peer-client-cert-auth" => "false".into(),
        // Needs a file output (tested in invalid_values_are_one_line_errors).
        "enable-log-rotation" => "false".into(),
        _ => match flag.kind {
            flags::Kind::Bool => "true".into(),
            _ if !flag.default.is_empty() => flag.default.into(),
            _ => "x".into(),
        },
    }
}

#[test]
fn every_etcd_flag_parses() {
    for name in ETCD_34.iter().chain(ETCD_35).chain(ETCD_36) {
        let arg = format!("--{name}={}", sample(name));
        if matches!(*name, "config-file" | "version") {
            assert!(flags::find(name).is_some());
            continue;
        }
        let res = p(&[&arg]);
        assert!(matches!(res, Ok(Parsed::Run(_))), "{arg}: {res:?}");
    }
    // Every flag of the table is one of etcd's, or one of oxcd's own.
    for f in FLAGS {
        let etcd = ETCD_34
            .iter()
            .chain(ETCD_35)
            .chain(ETCD_36)
            .any(|n| *n == f.name);
        let legacy = matches!(f.support, Support::NoEffect(w) if w.contains("etcd 2"));
        assert!(
            etcd || legacy
                || matches!(
                    f.name,
                    "max-connections"
                        | "max-watchers"
                        | "backend-cache-bytes"
                        | "max-response-bytes"
                ),
            "--{} is not an etcd flag",
            f.name
        );
    }
}

/// A value other than the flag's default.
fn other_than_default(name: &str) -> String {
    let flag = flags::find(name).unwrap_or_else(|| panic!("--{name} is not in the table"));
    match flag.kind {
        flags::Kind::Bool if flag.default == "true" => "false".into(),
        flags::Kind::Bool => "true".into(),
        flags::Kind::Uint | flags::Kind::Int => "7".into(),
        flags::Kind::Duration => "7s".into(),
        flags::Kind::Str => "other".into(),
    }
}

#[test]
fn flags_without_effect_warn_once() {
    for f in FLAGS {
        let Support::NoEffect(why) = f.support else {
            continue;
        };
        // Set to its default, a flag without effect changes nothing: no warning.
        let quiet = run(&[&format!("--{}={}", f.name, f.default)]);
        assert!(
            quiet.warnings.is_empty(),
            "--{}: {:?}",
            f.name,
            quiet.warnings
        );
        let c = run(&[&format!("--{}={}", f.name, other_than_default(f.name))]);
        let lines: Vec<&String> = c.warnings.iter().filter(|w| w.contains(f.name)).collect();
        assert_eq!(lines.len(), 1, "--{}: {:?}", f.name, c.warnings);
        assert!(lines[0].contains(why), "{}", lines[0]);
    }
    assert!(run(&[]).warnings.is_empty(), "no flag, no warning");
    assert!(
        run(&["--name=x", "--initial-cluster=x=http://localhost:2380"])
            .warnings
            .is_empty()
    );
}

#[test]
fn invalid_values_are_one_line_errors() {
    for (args, needle) in [
        (&["--log-level=verbose"][..], "--log-level"),
        (&["--heartbeat-interval=abc"], "--heartbeat-interval"),
        (
            &["--grpc-keepalive-interval=5"],
            "--grpc-keepalive-interval",
        ),
        (&["--pre-vote=maybe"], "--pre-vote"),
        (&["--logger=capnslogx"], "--logger"),
        (&["--log-format=xml"], "--log-format"),
        (&["--metrics=all"], "--metrics"),
        (&["--tls-min-version=TLS1.1"], "--tls-min-version"),
        (
            &["--tls-min-version=TLS1.3", "--tls-max-version=TLS1.2"],
            "--tls-min-version",
        ),
        (&["--cipher-suites=TLS_NOPE"], "--cipher-suites"),
        (
            &["--cipher-suites=TLS_RSA_WITH_AES_128_CBC_SHA"],
            "--cipher-suites",
        ),
        (
            &["--feature-gates=Nope=true"],
            "unrecognized feature gate: Nope",
        ),
        (&["--feature-gates=InitialCorruptCheck"], "--feature-gates"),
        (
            &[
                "--feature-gates=InitialCorruptCheck=true",
                "--experimental-initial-corrupt-check",
            ],
            "cannot specify both flags",
        ),
        (&["--discovery=https://discovery.etcd.io/x"], "--discovery"),
        (&["--discovery-srv=example.com"], "--discovery-srv"),
        (&["--proxy=on"], "--proxy"),
        (&["--auth-token=jwt,pub-key=x"], "--auth-token"),
        (&["--bcrypt-cost=3"], "--bcrypt-cost"),
        (&["--max-learners=0"], "--max-learners"),
        (&["--election-timeout=60000"], "--election-timeout"),
        (&["--enable-log-rotation"], "--enable-log-rotation"),
        (
            &[
                "--enable-log-rotation",
                "--log-outputs=/tmp/a.log",
                "--log-rotation-config-json={",
            ],
            "--log-rotation-config-json",
        ),
        (
            &["--listen-metrics-urls=http://example.com:2381"],
            "--listen-metrics-urls",
        ),
        (&["--peer-client-cert-file=/x"], "--peer-client-key-file"),
        (
            &["--max-concurrent-streams=99999999999"],
            "--max-concurrent-streams",
        ),
    ] {
        let e = fails(args);
        assert!(e.contains(needle), "{args:?}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn honoured_flags_reach_the_config() {
    let c = run(&[
        "--listen-client-http-urls=http://127.0.0.1:12379",
        "--listen-metrics-urls=http://127.0.0.1:12381,http://127.0.0.1:12382",
        "--logger=capnslog",
        "--log-outputs=stdout,/tmp/oxcd.log",
        "--log-level=WARN",
        "--log-format=console",
        "--max-learners=3",
        "--snapshot-catchup-entries=77",
        "--watch-progress-notify-interval=5s",
        "--corrupt-check-time=3m",
        "--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true",
        "--compact-hash-check-time=2m",
        "--warning-apply-duration=50ms",
        "--warning-unary-request-duration=1s",
        "--force-new-cluster",
        "--max-concurrent-streams=100",
        "--grpc-keepalive-interval=0",
        "--grpc-keepalive-timeout=3s",
        "--socket-reuse-port",
        "--cors=http://a.example,http://b.example",
        "--host-whitelist=*",
        "--metrics=extensive",
        "--bcrypt-cost=4",
        "--auth-token-ttl=60",
        "--auto-tls",
        "--self-signed-cert-validity=3",
        "--initial-election-tick-advance=false",
        "--quota-backend-bytes=-1",
    ]);
    assert_eq!(c.listen_client_http_urls.len(), 1);
    assert_eq!(c.listen_metrics_urls.len(), 2);
    assert_eq!(c.log.logger, Logger::Capnslog);
    assert_eq!(
        c.log.outputs,
        vec![LogOutput::Stdout, LogOutput::File("/tmp/oxcd.log".into())]
    );
    assert_eq!(c.log_level, "warn");
    assert_eq!(c.log.format, LogFormat::Console);
    assert_eq!(c.learners_max, 3);
    assert_eq!(c.snapshot_catchup_entries, 77);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(5));
    assert_eq!(c.corrupt_check, Some(Duration::from_secs(180)));
    assert!(c.initial_corrupt_check);
    assert_eq!(c.compact_hash_check, Some(Duration::from_secs(120)));
    assert_eq!(c.warning_apply_duration, Duration::from_millis(50));
    assert_eq!(c.warning_unary_request_duration, Duration::from_secs(1));
    assert!(c.force_new_cluster);
    assert_eq!(c.http.max_concurrent_streams, 100);
    assert_eq!(c.http.keepalive_interval, None);
    assert_eq!(c.http.keepalive_timeout, Duration::from_secs(3));
    assert!(c.http.socket_reuse_port && !c.http.socket_reuse_address);
    assert_eq!(c.http.cors, vec!["http://a.example", "http://b.example"]);
    assert!(c.http.host_whitelist.is_empty());
    assert!(c.metrics_extensive);
    assert_eq!(c.auth.bcrypt_cost, 4);
    assert_eq!(c.auth.token_ttl, Duration::from_secs(60));
    assert!(c.auto_tls.client && !c.auto_tls.peer);
    assert_eq!(c.auto_tls.validity_years, 3);
    assert!(!c.initial_election_tick_advance);
    let advance = run(&["--initial-election-tick-advance=true"]);
    assert!(advance.initial_election_tick_advance);
    assert!(advance.warnings.is_empty(), "{:?}", advance.warnings);
    assert_eq!(c.quota_backend_bytes, 2 * 1024 * 1024 * 1024);
    // etcd 3.4's --debug is --log-level=debug.
    assert_eq!(run(&["--debug"]).log_level, "debug");
    // Defaults: etcd 3.5's.
    let d = run(&[]);
    assert_eq!(d.log.logger, Logger::Zap);
    assert_eq!(d.log.outputs, vec![LogOutput::Stderr]);
    assert_eq!(d.learners_max, 1);
    assert_eq!(d.warning_unary_request_duration, Duration::from_millis(300));
    assert_eq!(d.snapshot_catchup_entries, 5000);
    assert!(!d.initial_corrupt_check && d.compact_hash_check.is_none());
}

#[test]
fn experimental_names_are_aliases() {
    let c = run(&["--experimental-watch-progress-notify-interval=7s"]);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(7));
    let c = run(&[
        "--experimental-max-learners=2",
        "--experimental-corrupt-check-time=1m",
    ]);
    assert_eq!(
        (c.learners_max, c.corrupt_check),
        (2, Some(Duration::from_secs(60)))
    );
    let c = run(&[
        "--experimental-compact-hash-check-enabled",
        "--experimental-compact-hash-check-time=30s",
    ]);
    assert_eq!(c.compact_hash_check, Some(Duration::from_secs(30)));
    let c = run(&["--experimental-peer-skip-client-san-verification"]);
    assert!(c.peer_skip_client_san);
    // As etcd 3.6: the experimental name wins when both are set.
    let c = run(&[
        "--watch-progress-notify-interval=5s",
        "--experimental-watch-progress-notify-interval=9s",
    ]);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(9));
}

#[test]
fn environment_variables_for_every_flag() {
    let mut env = BTreeMap::new();
    env.insert(
        "ETCD_LISTEN_METRICS_URLS".into(),
        "http://127.0.0.1:12381".into(),
    );
    env.insert(
        "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK".into(),
        "true".into(),
    );
    env.insert("ETCD_LOG_LEVEL".into(), "debug".into());
    env.insert("ETCD_ENABLE_PPROF".into(), "true".into());
    let Ok(Parsed::Run(c)) = parse(&[], &env) else {
        panic!("env")
    };
    assert_eq!(c.listen_metrics_urls.len(), 1);
    assert!(c.initial_corrupt_check);
    assert_eq!(c.log_level, "debug");
    // --enable-pprof has no effect: one line (the initial corruption check is honoured).
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    env.insert("ETCD_LOG_LEVEL".into(), "verbose".into());
    assert!(parse(&[], &env).is_err());
    let mut env = BTreeMap::new();
    env.insert("ETCD_HEARTBEAT_INTERVAL".into(), "x".into());
    let e = parse(&[], &env).unwrap_err().0;
    assert!(e.contains("ETCD_HEARTBEAT_INTERVAL"), "{e}");
}

#[test]
fn go_durations() {
    let d = |s: &str| parse_go_duration(s).map(|d| d.as_millis());
    assert_eq!(d("10m"), Some(600_000));
    assert_eq!(d("1s"), Some(1000));
    assert_eq!(d("500ms"), Some(500));
    assert_eq!(d("1m30s"), Some(90_000));
    assert_eq!(d("1.5h"), Some(5_400_000));
    assert_eq!(d("0"), Some(0));
    assert_eq!(d("5000000000ns"), Some(5000));
    for bad in ["", "10", "1x", "s", "-1s", "1s2"] {
        assert_eq!(d(bad), None, "{bad:?}");
    }
    let e = fails(&["--experimental-watch-progress-notify-interval=0"]);
    assert!(e.contains("positive duration"), "{e}");
}

#[test]
fn go_flag_forms() {
    let c = run(&[
        "-name",
        "n1",
        "--data-dir=/tmp/x",
        "--enable-v2=false",
        "-pre-vote",
        "--listen-client-urls",
        "http://127.0.0.1:1,http://localhost:2",
        "--initial-advertise-peer-urls=http://127.0.0.1:3",
        "--listen-peer-urls=http://127.0.0.1:3",
    ]);
    assert_eq!(c.name, "n1");
    assert!(!c.enable_v2);
    assert_eq!(c.listen_client_urls.len(), 2);
    assert_eq!(c.initial_cluster[0].0, "n1");
    assert!(matches!(p(&["--help"]), Ok(Parsed::Help(_))));
    assert!(matches!(p(&["--version"]), Ok(Parsed::Version)));
}

#[test]
fn errors_name_the_flag() {
    let e = fails(&["--nope"]);
    assert!(e.contains("-nope"), "{e}");
    let e = fails(&["--listen-client-urls=http://example.com:2379"]);
    assert!(
        e.contains("--listen-client-urls") && e.contains("IP"),
        "{e}"
    );
    let e = fails(&["--listen-client-urls=https://127.0.0.1:2379"]);
    assert!(e.contains("--cert-file"), "{e}");
    let e = fails(&["--client-cert-auth=maybe"]);
    assert!(e.contains("--client-cert-auth"), "{e}");
}

#[test]
fn env_conflict_is_an_error() {
    let mut env = BTreeMap::new();
    env.insert("ETCD_NAME".to_string(), "x".to_string());
    let e = parse(&["--name=y".to_string()], &env).unwrap_err().0;
    assert!(e.contains("ETCD_NAME"), "{e}");
}

/// etcd.conf.yml.sample's keys (3.4), as a user edits them.
const SAMPLE: &str = r#"
name: 'n1'
data-dir: /tmp/oxcd-config-test
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
listen-peer-urls: http://127.0.0.1:12380
listen-client-urls: http://127.0.0.1:12379
max-snapshots: 5
max-wals: 5
cors:
initial-advertise-peer-urls: http://127.0.0.1:12380
advertise-client-urls: http://127.0.0.1:12379
discovery:
discovery-fallback: 'proxy'
discovery-proxy:
discovery-srv:
initial-cluster: n1=http://127.0.0.1:12380
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
strict-reconfig-check: false
enable-v2: true
enable-pprof: true
proxy: 'off'
proxy-failure-wait: 5000
proxy-refresh-interval: 30000
proxy-dial-timeout: 1000
proxy-write-timeout: 5000
proxy-read-timeout: 0
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
peer-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
  allowed-cn: [m1, m2]
debug: false
log-package-levels:
log-outputs: [stderr]
force-new-cluster: false
auto-compaction-mode: periodic
auto-compaction-retention: "1"
experimental-watch-progress-notify-interval: 5000000000
experimental-corrupt-check-time: 3m
"#;

#[test]
fn config_file_keys_are_flags() {
    let f = file::parse(SAMPLE).unwrap();
    let cfg = RawFlags { set: f.set }.into_config().unwrap();
    assert_eq!(cfg.name, "n1");
    assert_eq!(cfg.snapshot_count, 10000);
    assert!(!cfg.strict_reconfig_check);
    assert_eq!(cfg.listen_client_urls[0].port, 12379);
    assert_eq!(cfg.watch_progress_notify_interval, Duration::from_secs(5));
    assert_eq!(cfg.corrupt_check, Some(Duration::from_secs(180)));
    assert_eq!(
        cfg.auto_compaction,
        Some(AutoCompaction::Periodic(Duration::from_secs(3600)))
    );
    assert!(
        cfg.warnings.iter().any(|w| w.contains("enable-pprof")),
        "{:?}",
        cfg.warnings
    );
    let flags_cfg = run(&[
        "--name=n1",
        "--data-dir=/tmp/oxcd-config-test",
        "--snapshot-count=10000",
        "--strict-reconfig-check=false",
        "--listen-peer-urls=http://127.0.0.1:12380",
        "--listen-client-urls=http://127.0.0.1:12379",
        "--initial-advertise-peer-urls=http://127.0.0.1:12380",
        "--advertise-client-urls=http://127.0.0.1:12379",
        "--initial-cluster=n1=http://127.0.0.1:12380",
        "--auto-compaction-retention=1",
        "--experimental-watch-progress-notify-interval=5s",
        "--experimental-corrupt-check-time=3m",
    ]);
    assert_eq!(
        format!("{:?}", flags_cfg.listen_peer_urls),
        format!("{:?}", cfg.listen_peer_urls)
    );
    assert_eq!(flags_cfg.initial_cluster, cfg.initial_cluster);
    assert_eq!(flags_cfg.auto_compaction, cfg.auto_compaction);
}

#[test]
fn config_file_errors_name_the_key() {
    for (text, needle) in [
        ("heartbeat-interval: fast\n", "heartbeat-interval"),
        ("enable-v2: 3\n", "enable-v2"),
        ("log-level: verbose\n", "--log-level"),
        (
            "client-transport-security: 5\n",
            "client-transport-security",
        ),
        (
            "peer-transport-security:\n  client-cert-auth: maybe\n",
            "peer-transport-security.client-cert-auth",
        ),
        ("name: [\n", "YAML"),
        ("- a\n- b\n", "mapping"),
    ] {
        let e = file::parse(text)
            .and_then(|f| RawFlags { set: f.set }.into_config().map(|_| ()))
            .unwrap_err()
            .0;
        assert!(e.contains(needle), "{text:?}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    let f = file::parse("no-such-key: 1\nclient-transport-security:\n  allowed-cn: x\n").unwrap();
    assert_eq!(f.warnings.len(), 2, "{:?}", f.warnings);
}

#[test]
fn config_file_wins_over_flags() {
    let dir = std::env::temp_dir().join(format!("oxcd-cfgfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("etcd.conf.yml");
    std::fs::write(
        &path,
        "name: from-file\ninitial-cluster: from-file=http://localhost:2380\n",
    )
    .unwrap();
    let arg = format!("--config-file={}", path.display());
    let c = run(&[&arg, "--name=from-flag"]);
    assert_eq!(c.name, "from-file");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("--name") && w.contains("ignored")),
        "{:?}",
        c.warnings
    );
    let mut env = BTreeMap::new();
    env.insert("ETCD_CONFIG_FILE".to_string(), path.display().to_string());
    env.insert("ETCD_NAME".to_string(), "from-env".to_string());
    let Ok(Parsed::Run(c)) = parse(&[], &env) else {
        panic!("env config file")
    };
    assert_eq!(c.name, "from-file");
    let e = fails(&["--config-file=/nonexistent/etcd.conf.yml"]);
    assert!(e.contains("/nonexistent/etcd.conf.yml"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// oxcd's own `--backend-cache-bytes` is read from `OXCD_BACKEND_CACHE_BYTES` (not `ETCD_*`).
#[test]
fn backend_cache_bytes_flag_and_oxcd_variable() {
    assert_eq!(run(&[]).backend_cache_bytes, 32 << 20);
    assert_eq!(
        run(&["--backend-cache-bytes=1048576"]).backend_cache_bytes,
        1 << 20
    );
    let env: BTreeMap<String, String> =
        [("OXCD_BACKEND_CACHE_BYTES".to_string(), "4096".to_string())].into();
    match parse(&[], &env) {
        Ok(Parsed::Run(c)) => assert_eq!(c.backend_cache_bytes, 4096),
        other => panic!("{other:?}"),
    }
    let etcd_style: BTreeMap<String, String> =
        [("ETCD_BACKEND_CACHE_BYTES".to_string(), "4096".to_string())].into();
    match parse(&[], &etcd_style) {
        Ok(Parsed::Run(c)) => {
            assert_eq!(c.backend_cache_bytes, 32 << 20);
            assert!(c
                .warnings
                .iter()
                .any(|w| w.contains("ETCD_BACKEND_CACHE_BYTES")));
        }
        other => panic!("{other:?}"),
    }
}
