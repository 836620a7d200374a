//! Issue 12: the effect of honoured flags that the other modules do not show, on one shared
//! member: `--listen-client-http-urls` (HTTP there, gRPC only on the client URL), `--cors`,
//! `--host-whitelist`, `--logger=capnslog` with `--log-outputs=<file>`, `--auth-token-ttl`,
//! `--max-learners` and the learner promotion rule.

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
    let id = first
        .stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ID").map(str::to_string))
        .or_else(|| {
            first
                .stdout
                .split(|ch: char| !ch.is_ascii_hexdigit())
                .find(|w| w.len() == 16)
                .map(str::to_string)
        })
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
