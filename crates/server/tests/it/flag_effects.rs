//! Issue 12: the effect of honoured flags that the other modules do not show, on one shared
//! member: `--listen-client-http-urls` (HTTP there, gRPC only on the client URL), `--cors`,
//! `--host-whitelist`, `--logger=capnslog` with `--log-outputs=<file>`, `--auth-token-ttl`,
//! `--enable-grpc-gateway=false`, `--max-learners` and the learner promotion rule; and
//! `--initial-election-tick-advance` on fresh clusters of their own.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use oxcd_api::etcdserverpb::{AuthEnableRequest, PutRequest};
use oxcd_testkit::http::http_get;
use oxcd_testkit::{run, Cluster, Impl};

const HTTP_PORT: u16 = 2382;

/// curl's response headers (lower-cased) and status for `url` with extra headers.
fn curl_headers(url: &str, headers: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "5", "-o", "/dev/null", "-D", "-"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(url);
    run(&mut cmd, b"").stdout.to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honoured_flags_on_one_member() {
    let mut c = Cluster::builder(Impl::Oxcd).members(1).build();
    let ip = c.ip(0);
    let log_file = c.dir().join("oxcd-file.log");
    c.set_flags(
        0,
        [
            format!("--listen-client-http-urls=http://{ip}:{HTTP_PORT}"),
            "--cors=http://allowed.example".into(),
            format!("--host-whitelist={ip}"),
            "--logger=capnslog".into(),
            format!("--log-outputs={}", log_file.display()),
            "--auth-token-ttl=1".into(),
            "--max-learners=2".into(),
            "--enable-grpc-gateway=false".into(),
        ],
    );
    c.start_all();
    let http_addr = SocketAddr::from((ip, HTTP_PORT));
    // HTTP moved to its own URL; the client URL keeps gRPC (the harness got ready on it).
    assert_eq!(
        http_get(http_addr, "/version").expect("http url").status,
        200
    );
    assert_eq!(
        http_get(c.client_addr(0), "/version")
            .expect("client url")
            .status,
        404
    );
    // CORS: a listed origin is named back; another gets no CORS headers.
    let url = format!("http://{http_addr}/version");
    let allowed = curl_headers(&url, &["Origin: http://allowed.example"]);
    assert!(
        allowed.contains("access-control-allow-origin: http://allowed.example"),
        "{allowed}"
    );
    let other = curl_headers(&url, &["Origin: http://other.example"]);
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    // --host-whitelist: a plain-HTTP request naming another host is refused (421).
    let evil = curl_headers(&url, &["Host: evil.example"]);
    assert!(evil.starts_with("http/1.1 421"), "{evil}");
    // --enable-grpc-gateway=false: no /v3 JSON gateway.
    let gateway = run(
        Command::new("curl").args([
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-d",
            r#"{"key":"YQ=="}"#,
            &format!("http://{http_addr}/v3/kv/range"),
        ]),
        b"",
    );
    assert_eq!(gateway.stdout.trim(), "404");
    // The log went to the file, in capnslog's lines.
    let text = std::fs::read_to_string(&log_file).expect("the log file");
    assert!(
        text.lines()
            .any(|l| l.contains(" I | ") && l.contains("ready to serve client requests")),
        "{text}"
    );
    learners(&c);
    token_ttl(&c).await;
}

/// `--max-learners=2`: two learners fit, a third does not; a learner that has not caught up
/// cannot be promoted (etcd's 90% rule).
fn learners(c: &Cluster) {
    let add = |port: u16| {
        c.etcdctl(
            0,
            &[
                "member",
                "add",
                &format!("l{port}"),
                "--learner",
                &format!("--peer-urls=http://127.0.0.1:{port}"),
            ],
            b"",
        )
    };
    let first = add(1).ok();
    add(2).ok();
    let third = add(3);
    assert_ne!(third.code, 0);
    assert!(
        third.text().contains("too many learner members"),
        "{}",
        third.text()
    );
    // "Member 3f1c... added to cluster ...": the word after "Member" (an ID printed with
    // %x can be shorter than 16 digits, so it cannot be told by its length).
    let id = first
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "Member")
        .nth(1)
        .map(str::to_string)
        .expect("the learner's ID");
    let promote = c.etcdctl(0, &["member", "promote", &id], b"");
    assert_ne!(promote.code, 0);
    assert!(
        promote.text().contains("in sync with leader"),
        "{}",
        promote.text()
    );
}

/// `--auth-token-ttl=1`: a token unused for more than a second is refused.
async fn token_ttl(c: &Cluster) {
    let mut client = c.client(0).await.expect("client");
    c.etcdctl(0, &["user", "add", "root:pw"], b"").ok();
    c.etcdctl(0, &["role", "add", "root"], b"").ok();
    c.etcdctl(0, &["user", "grant-role", "root", "root"], b"")
        .ok();
    client
        .auth()
        .auth_enable(AuthEnableRequest {})
        .await
        .expect("auth enable");
    client
        .authenticate("root", "pw")
        .await
        .expect("authenticate");
    let put = || PutRequest {
        key: b"ttl".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    client.kv().put(put()).await.expect("a fresh token");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let stale = client.kv().put(put()).await.expect_err("a stale token");
    assert!(stale.message().contains("invalid auth token"), "{stale:?}");
}

/// The election timeout of [`initial_election_tick_advance`]: long, so that the two cases
/// are far apart.
const LONG_ELECTION_MS: u64 = 5000;

/// Starts a fresh cluster of `members` with `--initial-election-tick-advance=<advance>`;
/// how long until every member is ready (knows a leader), and the members' logs.
fn time_to_leader(members: usize, advance: bool) -> (Duration, String) {
    let c = Cluster::builder(Impl::Oxcd)
        .members(members)
        .flags([
            "--heartbeat-interval=100".to_string(),
            format!("--election-timeout={LONG_ELECTION_MS}"),
            format!("--initial-election-tick-advance={advance}"),
        ])
        .build();
    let started = std::time::Instant::now();
    c.start_all();
    (started.elapsed(), c.logs())
}

/// The times (ms into the day) of the zap log lines with `msg` in them.
fn log_times_ms(logs: &str, msg: &str) -> Vec<i64> {
    logs.lines()
        .filter(|l| l.contains(msg))
        .filter_map(|l| {
            let ts = l.split("\"ts\":\"").nth(1)?.get(11..23)?;
            let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
            Some(((num(0..2)? * 60 + num(3..5)?) * 60 + num(6..8)?) * 1000 + num(9..12)?)
        })
        .collect()
}

/// `--initial-election-tick-advance` (etcd's adjustTicks). Without it, no member of a fresh
/// cluster campaigns before a whole election timeout has passed: a hard bound (raft's
/// randomized timeout is at least the election timeout, counted from the start of a process
/// that starts after the clock here). With it, the members fast-forward their election ticks
/// once their peers are connected and a leader is elected well within one election timeout
/// of the last member's start (read from the logs, so that a slow machine starting the
/// processes does not count): the first campaign comes after the shortest of five random
/// waits of 2..=51 ticks (0.2 to 5.1 s), below the bound except with odds of about 1e-7.
#[test]
fn initial_election_tick_advance() {
    let advanced = std::thread::spawn(|| time_to_leader(5, true));
    let (plain, plain_logs) = time_to_leader(3, false);
    let (_, fast_logs) = advanced.join().expect("advanced cluster");
    let timeout = Duration::from_millis(LONG_ELECTION_MS);
    assert!(
        plain >= timeout,
        "without the advance a leader came after {plain:?}, before the election timeout"
    );
    assert!(
        plain_logs.contains("skipping initial election tick advance"),
        "{plain_logs}"
    );
    assert_eq!(
        log_times_ms(&fast_logs, "fast-forwarding election ticks").len(),
        5,
        "{fast_logs}"
    );
    let last_started = log_times_ms(&fast_logs, "listening for peers")
        .into_iter()
        .max();
    let elected = log_times_ms(&fast_logs, "elected leader").into_iter().min();
    let (Some(last_started), Some(elected)) = (last_started, elected) else {
        panic!("no start or election in the logs:\n{fast_logs}");
    };
    // Past midnight the day's times wrap.
    let took_ms = (elected - last_started).rem_euclid(24 * 3600 * 1000);
    assert!(
        took_ms < LONG_ELECTION_MS as i64,
        "with the advance a leader came {took_ms} ms after the last member started; logs:\n{fast_logs}"
    );
}
