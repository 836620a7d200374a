//! `/metrics` as an operator sees it: the real Prometheus (Debian's package) scrapes a
//! 3-member TLS oxcd cluster with a client certificate every second, and etcd's usual alert
//! expressions (from etcd's mixin) are evaluated with PromQL: no leader, members down,
//! insufficient members, frequent leader changes, high fsync p99, database near its quota.
//! The values must be true: puts move the proposal counters, a leader kill moves the leader
//! changes, sizes match what Status says, and `promtool check metrics` accepts the
//! exposition (its only complaints are the ones etcd's own names earn).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::{PutRequest, StatusRequest};
use oxcd_testkit::http::http_get;
use oxcd_testkit::process::Daemon;
use oxcd_testkit::{require, run, Cluster};

/// Every wait of this test is bounded by this.
const WAIT_MAX: Duration = Duration::from_secs(40);
/// Prometheus' scrape and evaluation interval.
const SCRAPE_SECS: u64 = 1;

/// One series of a query's answer: its labels and value.
type Series = (BTreeMap<String, String>, f64);

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant PromQL query; panics when Prometheus refuses it.
fn query(prom: SocketAddr, q: &str) -> Vec<Series> {
    try_query(prom, q).unwrap_or_else(|e| panic!("query {q}: {e}"))
}

/// [`query`], or the connection error while Prometheus is not listening yet.
fn try_query(prom: SocketAddr, q: &str) -> std::io::Result<Vec<Series>> {
    let resp = http_get(prom, &format!("/api/v1/query?query={}", url_encode(q)))?;
    let v = resp.json();
    assert_eq!(v["status"], "success", "query {q}: {}", resp.body);
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    Ok(result
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = s["value"][1].as_str().and_then(|x| x.parse().ok());
            (labels, value.unwrap_or(f64::NAN))
        })
        .collect())
}

/// The single value of a query that must answer one series.
fn scalar(prom: SocketAddr, q: &str) -> f64 {
    let r = query(prom, q);
    assert_eq!(r.len(), 1, "{q} answered {r:?}");
    r[0].1
}

/// Waits (bounded) until `ok` holds for the answer to `q`.
fn wait_query(prom: SocketAddr, q: &str, ok: impl Fn(&[Series]) -> bool) -> Vec<Series> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let r = try_query(prom, q);
        if let Ok(r) = &r {
            if ok(r) {
                return r.clone();
            }
        }
        assert!(Instant::now() < deadline, "{q} still answers {r:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Lets Prometheus take a few more scrapes.
fn scrapes(n: u64) {
    std::thread::sleep(Duration::from_secs(n * SCRAPE_SECS) + Duration::from_millis(300));
}

/// Starts Prometheus on a reserved address, scraping every member over TLS.
fn start_prometheus(c: &Cluster, addr: SocketAddr) -> Daemon {
    let certs = c.client_certs().expect("a TLS cluster");
    let targets: Vec<String> = (0..c.len())
        .map(|i| format!("'{}'", c.host_port(i)))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: {SCRAPE_SECS}s\n  evaluation_interval: {SCRAPE_SECS}s\n\
         scrape_configs:\n  - job_name: etcd\n    scheme: https\n    tls_config:\n      \
         ca_file: {}\n      cert_file: {}\n      key_file: {}\n    static_configs:\n      \
         - targets: [{}]\n",
        certs.ca.display(),
        certs.cert.display(),
        certs.key.display(),
        targets.join(", ")
    );
    let dir = c.dir().join("prometheus");
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).expect("prometheus.yml");
    let mut cmd = Command::new(require("prometheus"));
    cmd.arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"));
    Daemon::start("prometheus", &mut cmd, &dir.join("prometheus.log"))
}

async fn put_keys(c: &Cluster, i: usize, n: usize) {
    let client = c.client(i).await.expect("a client");
    for k in 0..n {
        let put = PutRequest {
            key: format!("k{k}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        client.kv().put(put).await.expect("put");
    }
}

/// `promtool check metrics` on member 0's exposition: 0, or 3 with only the complaints that
/// etcd's own names earn (gauges named `_total`, as etcd 3.4 names them).
fn promtool_accepts(c: &Cluster) {
    let certs = c.client_certs().expect("a TLS cluster");
    let url = format!("{}/metrics", c.endpoint(0));
    let mut curl = Command::new(require("curl"));
    curl.args(["-s", "--cacert"])
        .arg(&certs.ca)
        .arg("--cert")
        .arg(&certs.cert)
        .arg("--key")
        .arg(&certs.key)
        .arg(&url);
    let exposition = run(&mut curl, b"").ok().stdout;
    assert!(
        exposition.contains("etcd_server_has_leader 1"),
        "{exposition}"
    );
    let out = run(
        Command::new(require("promtool")).args(["check", "metrics"]),
        exposition.as_bytes(),
    );
    // What promtool says of etcd 3.4.23's own exposition (all of it: names etcd chose).
    const ETCDS_OWN: &[&str] = &[
        r#"etcd_debugging_lease_ttl_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds use base unit "seconds" instead of "milliseconds""#,
        r#"etcd_debugging_mvcc_db_compaction_total_duration_milliseconds use base unit "seconds" instead of "milliseconds""#,
        r#"etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds use base unit "seconds" instead of "milliseconds""#,
        r#"etcd_debugging_mvcc_keys_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_debugging_mvcc_pending_events_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_debugging_mvcc_slow_watcher_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_debugging_mvcc_watch_stream_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_debugging_mvcc_watcher_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_disk_wal_write_bytes_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_grpc_proxy_cache_hits_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_grpc_proxy_cache_keys_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_grpc_proxy_cache_misses_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_grpc_proxy_watchers_coalescing_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_server_health_failures counter metrics should have "_total" suffix"#,
        r#"etcd_server_health_success counter metrics should have "_total" suffix"#,
        r#"etcd_server_learner_promote_successes counter metrics should have "_total" suffix"#,
        r#"etcd_server_proposals_applied_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_server_proposals_committed_total non-counter metrics should not have "_total" suffix"#,
        r#"etcd_server_snapshot_apply_in_progress_total non-counter metrics should not have "_total" suffix"#,
    ];
    assert!(out.code == 0 || out.code == 3, "promtool: {}", out.text());
    for line in out.text().lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            ETCDS_OWN.contains(&line.trim()),
            "promtool complains of something etcd's exposition does not earn: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_a_tls_cluster_and_etcds_alerts_work() {
    require("prometheus");
    let c = super::tls3(&["--metrics=extensive"]);
    let prom_addr = oxcd_testkit::addr::alloc();
    let prom = prom_addr.with_port(9090);
    let _prometheus = start_prometheus(&c, prom);
    wait_query(prom, "sum(up{job=\"etcd\"})", |r| {
        r.len() == 1 && r[0].1 == 3.0
    });
    promtool_accepts(&c);

    // Leadership and the proposal counters, before and after 30 puts.
    wait_query(prom, "sum(etcd_server_has_leader)", |r| {
        r.first().is_some_and(|s| s.1 == 3.0)
    });
    assert_eq!(scalar(prom, "sum(etcd_server_is_leader)"), 1.0);
    assert!(query(prom, "etcd_server_has_leader{job=\"etcd\"} == 0").is_empty());
    let leader = c.wait_leader(WAIT_MAX).await;
    let committed = "min(etcd_server_proposals_committed_total)";
    let before = scalar(prom, committed);
    put_keys(&c, leader, 30).await;
    wait_query(prom, committed, |r| {
        r.first().is_some_and(|s| s.1 >= before + 30.0)
    });
    wait_query(prom, "min(etcd_server_proposals_applied_total)", |r| {
        r.first().is_some_and(|s| s.1 >= before + 30.0)
    });
    let puts_ok = "sum(grpc_server_handled_total{grpc_method=\"Put\",grpc_code=\"OK\"})";
    assert!(scalar(prom, puts_ok) >= 30.0);
    assert!(scalar(prom, "min(etcd_mvcc_put_total)") >= 30.0);
    assert!(!query(
        prom,
        "grpc_server_handling_seconds_bucket{grpc_method=\"Put\"}"
    )
    .is_empty());

    // Disks: a p99 for every member; the alert fires exactly where it is over 0.5 s.
    let p99 = "histogram_quantile(0.99, rate(etcd_disk_wal_fsync_duration_seconds_bucket{job=\"etcd\"}[1m]))";
    let quantiles = query(prom, p99);
    assert_eq!(quantiles.len(), 3, "{quantiles:?}");
    let slow = query(prom, &format!("{p99} > 0.5"));
    let over: Vec<&Series> = quantiles.iter().filter(|s| s.1 > 0.5).collect();
    assert_eq!(slow.len(), over.len(), "{slow:?} vs {quantiles:?}");
    let commit_p99 = "histogram_quantile(0.99, rate(etcd_disk_backend_commit_duration_seconds_bucket{job=\"etcd\"}[1m]))";
    assert_eq!(query(prom, commit_p99).len(), 3);

    // Sizes match Status; the quota alert stays quiet.
    scrapes(2);
    for i in 0..c.len() {
        let client = c.client(i).await.expect("a client");
        let st = client
            .maintenance()
            .status(StatusRequest {})
            .await
            .expect("status");
        let q = format!(
            "etcd_mvcc_db_total_size_in_bytes{{instance=\"{}\"}}",
            c.host_port(i)
        );
        assert_eq!(scalar(prom, &q), st.into_inner().db_size as f64, "{q}");
    }
    let quota = "(last_over_time(etcd_mvcc_db_total_size_in_bytes{job=\"etcd\"}[5m]) / last_over_time(etcd_server_quota_backend_bytes{job=\"etcd\"}[5m]))*100 > 95";
    assert!(query(prom, quota).is_empty());

    // Network and TLS.
    assert_eq!(scalar(prom, "sum(etcd_network_active_peers)"), 6.0);
    // The leader sends to both followers, each follower at least to the leader.
    let sent = query(prom, "etcd_network_peer_sent_bytes_total > 0");
    assert!(sent.len() >= 4, "{sent:?}");
    assert!(!query(prom, "etcd_network_peer_round_trip_time_seconds_count > 0").is_empty());
    let expiry = "min(oxcd_tls_certificate_expiry_timestamp_seconds{role=\"client\"}) - time()";
    assert!(scalar(prom, expiry) > 0.0);

    // A leader kill: the survivors see a new leader; the member is down.
    c.kill9(leader);
    let changes = "increase(etcd_server_leader_changes_seen_total{job=\"etcd\"}[1m]) > 0";
    wait_query(prom, changes, |r| r.len() >= 2);
    let down = "max without (endpoint) (sum without (instance) (up{job=\"etcd\"} == bool 0) or count without (To) (sum without (instance) (rate(etcd_network_peer_sent_failures_total{job=\"etcd\"}[120s])) > 0.01)) > 0";
    wait_query(prom, down, |r| !r.is_empty());
    assert!(query(prom, "etcd_server_has_leader{job=\"etcd\"} == 0").is_empty());

    // A second kill: the last member has no leader, the cluster too few members.
    let survivor = (0..3).find(|&i| i != leader).expect("a survivor");
    let second = (0..3)
        .find(|&i| i != leader && i != survivor)
        .expect("a second survivor");
    c.kill9(second);
    let no_leader = wait_query(prom, "etcd_server_has_leader{job=\"etcd\"} == 0", |r| {
        r.len() == 1
    });
    assert_eq!(no_leader[0].0.get("instance"), Some(&c.host_port(survivor)));
    let insufficient = "sum(up{job=\"etcd\"} == bool 1) without (instance) < ((count(up{job=\"etcd\"}) without (instance) + 1) / 2)";
    wait_query(prom, insufficient, |r| r.len() == 1);
}
