//! Issue 12: what production operators start etcd with. kubeadm's static-pod command line
//! (etcd 3.5 era) and a 3.6-style one each start a 3-member TLS cluster whose probes answer
//! on the metrics port; the behaviours kube-apiserver relies on at the version oxcd reports
//! (progress on request and on the interval, `WithRequireLeader`, txn compares on
//! `mod_revision`, ranges with limit and count, the apiserver's compaction); an etcd YAML
//! configuration file starts the real etcd 3.4 and oxcd alike; `--force-new-cluster` and a
//! restart with edited `--initial-cluster*` flags; the v2 members and stats endpoints.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use oxcd_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use oxcd_api::etcdserverpb::request_op::Request as Op;
use oxcd_api::etcdserverpb::watch_request::RequestUnion;
use oxcd_api::etcdserverpb::{
    CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use oxcd_testkit::http::http_get;
use oxcd_testkit::process::{bin, Daemon};
use oxcd_testkit::{require, wait_for, wait_until, Cluster, Impl};

/// kube-apiserver's gate for consistent reads from its watch cache.
const REPORTED_VERSION: &str = "3.4.31";

/// The metrics port kubeadm uses (on each member's own address here).
const METRICS_PORT: u16 = 2381;

fn metrics_addr(c: &Cluster, i: usize) -> SocketAddr {
    SocketAddr::from((c.ip(i), METRICS_PORT))
}

/// A 3-member TLS cluster started with `flags` plus, per member, kubeadm's
/// `--listen-metrics-urls=http://<member>:2381`.
fn kubeadm_cluster(flags: &[&str]) -> Cluster {
    let mut c = Cluster::builder(Impl::Oxcd)
        .members(3)
        .tls()
        .flags(flags.iter().copied())
        .build();
    for i in 0..3 {
        let url = format!("--listen-metrics-urls=http://{}", metrics_addr(&c, i));
        c.set_flags(i, [url]);
    }
    c.start_all();
    c
}

/// The probes kubeadm's static pods use, each answering 200 on every member.
fn probes_answer(c: &Cluster, paths: &[&str]) {
    for i in 0..c.len() {
        for path in paths {
            let what = format!("{path} on member {i}'s metrics port");
            let resp = wait_for(&what, Duration::from_secs(10), || {
                http_get(metrics_addr(c, i), path)
                    .ok()
                    .filter(|r| r.status == 200)
            });
            assert!(
                resp.body == "ok"
                    || resp.body.ends_with("check passed\n")
                    || resp.body.contains(r#""health":"true""#),
                "{what}: {}",
                resp.body
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_35_static_pod_command_line() {
    let c = kubeadm_cluster(&[
        "--experimental-initial-corrupt-check=true",
        "--experimental-watch-progress-notify-interval=5s",
        "--snapshot-count=10000",
    ]);
    probes_answer(
        &c,
        &["/health?exclude=NOSPACE&serializable=true", "/health"],
    );
    // Honoured (a fresh member has nothing to compare yet): no warning for it.
    assert!(!c.log(0).contains("--experimental-initial-corrupt-check"));
    // The metrics port serves probes and metrics only: no keys there.
    let keys = http_get(metrics_addr(&c, 0), "/v2/keys/").expect("metrics port");
    assert_eq!(keys.status, 404);
    let metrics = http_get(metrics_addr(&c, 1), "/metrics").expect("metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("etcd_server_has_leader 1"),
        "{}",
        metrics.body
    );
    // Every line is one of zap's JSON objects.
    for line in c.log(0).lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        for key in ["level", "ts", "caller", "msg"] {
            assert!(v.get(key).is_some(), "{key} in {line}");
        }
    }
    // etcd's messages for the key events, with structured fields.
    let logs = c.logs();
    let line = |needle: &str| -> serde_json::Value {
        let l = logs
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("a line with {needle:?}"));
        serde_json::from_str(l.trim_start_matches(|ch| ch != '{')).expect("JSON")
    };
    let elected = line("elected leader");
    assert!(
        elected["leader-id"].is_string() && elected["term"].is_number(),
        "{elected}"
    );
    let stream = line("established a TCP streaming connection with peer");
    assert!(stream["remote-peer-id"].is_string(), "{stream}");
    progress_on_interval(&c).await;
}

/// `--experimental-watch-progress-notify-interval=5s`: a synced watcher that asked for
/// progress gets an empty response with the current revision within the interval (plus the
/// first tick's slack).
async fn progress_on_interval(c: &Cluster) {
    let client = c.client(0).await.expect("client");
    let rev = put(&client, "progress-key", "v").await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"progress-key".to_vec(),
            start_revision: rev + 1,
            progress_notify: true,
            ..Default::default()
        })),
    };
    tx.send(create).await.expect("send");
    let mut stream = client
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = stream.message().await.expect("created").expect("created");
    assert!(created.created);
    let progress = tokio::time::timeout(Duration::from_secs(12), stream.message())
        .await
        .expect("a progress notification within 12 s")
        .expect("stream")
        .expect("message");
    assert!(progress.events.is_empty() && !progress.created);
    assert!(progress.header.expect("header").revision >= rev);
    drop(tx);
}

async fn put(client: &oxcd_client::Client, key: &str, value: &str) -> i64 {
    client
        .kv()
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner()
        .header
        .expect("header")
        .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_36_command_line_and_what_kube_apiserver_relies_on() {
    let c = kubeadm_cluster(&[
        "--feature-gates=InitialCorruptCheck=true",
        "--watch-progress-notify-interval=5s",
        "--snapshot-count=10000",
    ]);
    probes_answer(
        &c,
        &[
            "/livez",
            "/readyz",
            "/readyz?verbose",
            "/health?exclude=NOSPACE&serializable=true",
        ],
    );
    assert!(
        !c.log(0).contains("InitialCorruptCheck"),
        "honoured, not warned"
    );
    reported_version(&c).await;
    progress_on_request(&c).await;
    require_leader_stream(&c).await;
    mod_revision_txn(&c).await;
    paged_ranges(&c).await;
    apiserver_compaction(&c).await;
    grpc_health(&c).await;
}

async fn reported_version(c: &Cluster) {
    let client = c.client(1).await.expect("client");
    let st = client
        .maintenance()
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(st.version, REPORTED_VERSION);
}

/// kube-apiserver's consistent read: RequestProgress on a synced stream answers with watch
/// ID -1 and a revision at least the latest write's.
async fn progress_on_request(c: &Cluster) {
    let client = c.client(0).await.expect("client");
    let rev = put(&client, "/registry/pods/a", "1").await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"/registry/".to_vec(),
            range_end: b"/registry0".to_vec(),
            start_revision: rev + 1,
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let mut stream = client
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    assert!(
        stream
            .message()
            .await
            .expect("ok")
            .expect("created")
            .created
    );
    let rev2 = put(&client, "/registry/pods/b", "2").await;
    let ev = stream.message().await.expect("ok").expect("event");
    assert_eq!(ev.events.len(), 1);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    })
    .await
    .expect("send");
    let progress = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("progress within 5 s")
        .expect("ok")
        .expect("message");
    assert_eq!(progress.watch_id, -1, "{progress:?}");
    assert!(progress.events.is_empty());
    assert!(progress.header.expect("header").revision >= rev2);
}

/// etcd's `WithRequireLeader` (metadata `hasleader: true`) is accepted while there is one.
async fn require_leader_stream(c: &Cluster) {
    let client = c.client(2).await.expect("client");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"rl".to_vec(),
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("hasleader", "true".parse().expect("metadata"));
    let mut stream = client.watch().watch(req).await.expect("watch").into_inner();
    assert!(
        stream
            .message()
            .await
            .expect("ok")
            .expect("created")
            .created
    );
}

fn mod_rev_cmp(key: &str, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.into(),
        target_union: Some(TargetUnion::ModRevision(rev)),
        ..Default::default()
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

/// The apiserver's optimistic update: If(ModRevision == seen).Then(Put).Else(Get).
async fn mod_revision_txn(c: &Cluster) {
    let client = c.client(0).await.expect("client");
    let rev = put(&client, "/registry/cm/x", "1").await;
    let txn = |seen| TxnRequest {
        compare: vec![mod_rev_cmp("/registry/cm/x", seen)],
        success: vec![put_op("/registry/cm/x", "2")],
        failure: vec![get_op("/registry/cm/x")],
    };
    let ok = client.kv().txn(txn(rev)).await.expect("txn").into_inner();
    assert!(ok.succeeded);
    let stale = client.kv().txn(txn(rev)).await.expect("txn").into_inner();
    assert!(
        !stale.succeeded,
        "a stale mod_revision must fail the compare"
    );
    // Create only if absent: mod_revision 0.
    let create = client
        .kv()
        .txn(TxnRequest {
            compare: vec![mod_rev_cmp("/registry/cm/new", 0)],
            success: vec![put_op("/registry/cm/new", "1")],
            failure: vec![],
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(create.succeeded);
}

/// The apiserver lists with a limit, reads `count` and `more`, and continues after the last
/// key.
async fn paged_ranges(c: &Cluster) {
    let client = c.client(1).await.expect("client");
    for i in 0..5 {
        put(&client, &format!("/registry/page/{i}"), "v").await;
    }
    let page = |key: Vec<u8>| RangeRequest {
        key,
        range_end: b"/registry/page0".to_vec(),
        limit: 2,
        ..Default::default()
    };
    let first = client
        .kv()
        .range(page(b"/registry/page/".to_vec()))
        .await
        .expect("range")
        .into_inner();
    assert_eq!((first.kvs.len(), first.count, first.more), (2, 5, true));
    let mut next = first.kvs[1].key.clone();
    next.push(0);
    let second = client
        .kv()
        .range(page(next))
        .await
        .expect("range")
        .into_inner();
    assert_eq!(second.kvs[0].key, b"/registry/page/2");
    assert_eq!(second.count, 3);
}

/// kube-apiserver's compaction: a txn on `compact_rev_key`'s version, then Compact.
async fn apiserver_compaction(c: &Cluster) {
    let client = c.client(0).await.expect("client");
    let rev = put(&client, "/registry/cm/y", "1").await;
    let version_cmp = |v| Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Version as i32,
        key: b"compact_rev_key".to_vec(),
        target_union: Some(TargetUnion::Version(v)),
        ..Default::default()
    };
    let t = client
        .kv()
        .txn(TxnRequest {
            compare: vec![version_cmp(0)],
            success: vec![put_op("compact_rev_key", &rev.to_string())],
            failure: vec![get_op("compact_rev_key")],
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(t.succeeded);
    client
        .kv()
        .compact(CompactionRequest {
            revision: rev,
            physical: false,
        })
        .await
        .expect("compact");
    let again = client
        .kv()
        .txn(TxnRequest {
            compare: vec![version_cmp(0)],
            success: vec![put_op("compact_rev_key", "x")],
            failure: vec![get_op("compact_rev_key")],
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(
        !again.succeeded,
        "the second apiserver sees the key's version moved"
    );
}

/// `grpc.health.v1.Health/Check` on a client port: SERVING with a leader.
async fn grpc_health(c: &Cluster) {
    let client = c.client(0).await.expect("client");
    let mut h = tonic_health::pb::health_client::HealthClient::new(client.channel.clone());
    let resp = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// A configuration file written for etcd (etcd.conf.yml.sample's keys) starts the real etcd
/// 3.4 and oxcd; both serve the same keys and `/health` on the metrics URL it names.
#[test]
fn config_file_starts_etcd_and_oxcd() {
    let dir = tempfile::tempdir().expect("tmp");
    for (name, program) in [("etcd", require("etcd")), ("oxcd", bin("oxcd"))] {
        let addr = oxcd_testkit::addr::alloc();
        let ip = addr.ip();
        let yaml = format!(
            "name: 'cfg-{name}'\n\
             data-dir: {data}\n\
             snapshot-count: 10000\n\
             heartbeat-interval: 100\n\
             election-timeout: 1000\n\
             quota-backend-bytes: 0\n\
             listen-peer-urls: http://{ip}:2380\n\
             listen-client-urls: http://{ip}:2379\n\
             max-snapshots: 5\n\
             max-wals: 5\n\
             cors:\n\
             initial-advertise-peer-urls: http://{ip}:2380\n\
             advertise-client-urls: http://{ip}:2379\n\
             discovery:\n\
             discovery-fallback: 'proxy'\n\
             initial-cluster: cfg-{name}=http://{ip}:2380\n\
             initial-cluster-token: 'etcd-cluster'\n\
             initial-cluster-state: 'new'\n\
             strict-reconfig-check: false\n\
             enable-v2: true\n\
             enable-pprof: true\n\
             proxy: 'off'\n\
             client-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n  trusted-ca-file:\n  auto-tls: false\n\
             peer-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n  trusted-ca-file:\n  auto-tls: false\n\
             debug: false\n\
             log-outputs: [stderr]\n\
             force-new-cluster: false\n\
             auto-compaction-mode: periodic\n\
             auto-compaction-retention: \"1\"\n\
             listen-metrics-urls: http://{ip}:{METRICS_PORT}\n",
            data = dir.path().join(format!("{name}.data")).display(),
        );
        let path = dir.path().join(format!("{name}.conf.yml"));
        std::fs::write(&path, yaml).expect("write the config file");
        let mut cmd = Command::new(&program);
        // A flag besides the file is ignored, as etcd ignores it.
        cmd.arg(format!("--config-file={}", path.display()))
            .arg("--name=ignored");
        let log = dir.path().join(format!("{name}.log"));
        let mut d = Daemon::start(name, &mut cmd, &log);
        let endpoint = format!("http://{ip}:2379");
        let started = oxcd_testkit::process::poll(
            Duration::from_secs(20),
            Duration::from_millis(200),
            || {
                (oxcd_testkit::etcdctl(&endpoint, None, &["put", "k", "v"], b"").code == 0)
                    .then_some(())
            },
        );
        assert!(
            started.is_some(),
            "{name} from its config file; log:\n{}",
            d.log_text()
        );
        let got =
            oxcd_testkit::etcdctl(&endpoint, None, &["get", "k", "--print-value-only"], b"").ok();
        assert_eq!(got.stdout.trim(), "v");
        let members = oxcd_testkit::etcdctl(&endpoint, None, &["member", "list"], b"").ok();
        assert!(
            members.stdout.contains(&format!("cfg-{name}")),
            "{name}: {}",
            members.stdout
        );
        let health = http_get(SocketAddr::from((ip, METRICS_PORT)), "/health").expect("health");
        assert_eq!(health.status, 200, "{name}");
        d.kill();
        drop(addr);
    }
}

/// Disaster recovery: a majority is gone; the survivor restarted with --force-new-cluster is
/// a one-member cluster with all its data. Restarted again with an edited --initial-cluster
/// and token (as etcd, they only matter at bootstrap) it starts, with a warning.
#[test]
fn force_new_cluster_then_edited_initial_cluster() {
    let mut c = Cluster::builder(Impl::Oxcd).members(3).token("fnc").start();
    c.etcdctl(0, &["put", "survives", "yes"], b"").ok();
    c.wait_same_revision();
    for i in 0..3 {
        c.stop(i, Duration::from_secs(10));
    }
    c.set_flags(2, ["--force-new-cluster"]);
    c.spawn(2);
    wait_until("the survivor alone", Duration::from_secs(20), || {
        let out = c.etcdctl(2, &["member", "list"], b"");
        out.code == 0 && out.stdout.lines().count() == 1
    });
    let got = c
        .etcdctl(2, &["get", "survives", "--print-value-only"], b"")
        .ok();
    assert_eq!(got.stdout.trim(), "yes");
    c.etcdctl(2, &["put", "after", "1"], b"").ok();
    assert!(c.log(2).contains("--force-new-cluster"));
    c.stop(2, Duration::from_secs(10));
    let edited = format!("--initial-cluster={}=http://{}:2380", c.name(2), c.ip(2));
    c.set_flags(2, [edited.as_str(), "--initial-cluster-token=edited"]);
    c.spawn(2);
    wait_until(
        "the restart with edited flags",
        Duration::from_secs(20),
        || {
            c.etcdctl(2, &["get", "after", "--print-value-only"], b"")
                .stdout
                .trim()
                == "1"
        },
    );
    assert!(
        c.log(2).contains("ignored on restart"),
        "a WARN says the flags are ignored"
    );
}

/// The keys of a JSON object and of the objects in it, as `a`, `a.b`, ...; the keys of a
/// map keyed by member ID (`followers`) are named `*`.
fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    let Some(obj) = v.as_object() else {
        return;
    };
    for (k, inner) in obj {
        let name = if prefix.ends_with("followers") {
            "*"
        } else {
            k.as_str()
        };
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        key_paths(inner, &path, out);
        out.insert(path);
    }
}

/// etcd's `omitempty` rates of `/v2/stats/self`: present only while appends flow.
const SELF_RATES: [&str; 4] = [
    "recvPkgRate",
    "recvBandwidthRate",
    "sendPkgRate",
    "sendBandwidthRate",
];

/// The key paths of the leader's `/v2/stats/self` (rates left out) and `/v2/stats/leader`
/// after ten puts, on the 3-member cluster `c`.
async fn stats_shape(c: &Cluster) -> (Vec<String>, Vec<String>) {
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let client = c.client(leader).await.expect("client");
    for i in 0..10 {
        let put = PutRequest {
            key: format!("stats/{i}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        client.kv().put(put).await.expect("put");
    }
    let paths = |target: &str| {
        let v = http_get(c.client_addr(leader), target)
            .expect("stats")
            .json();
        let mut out = std::collections::BTreeSet::new();
        key_paths(&v, "", &mut out);
        out.into_iter()
            .filter(|p| !SELF_RATES.contains(&p.as_str()))
            .collect::<Vec<_>>()
    };
    (paths("/v2/stats/self"), paths("/v2/stats/leader"))
}

/// python-etcd's and node-etcd's calls: /v2/members, /v2/machines, /v2/stats/*. The stats
/// count the raft traffic and have the real etcd 3.4's JSON shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_members_and_stats() {
    let etcd = std::thread::spawn(|| {
        Cluster::builder(Impl::Etcd)
            .members(3)
            .token("v2e")
            .flags(["--enable-v2=true"])
            .start()
    });
    let c = Cluster::builder(Impl::Oxcd).members(3).token("v2m").start();
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let leader_known = std::time::Instant::now();
    let addr = c.client_addr(leader);
    let etcd = etcd.join().expect("etcd cluster");
    let (ours, theirs) = (stats_shape(&c).await, stats_shape(&etcd).await);
    assert_eq!(ours, theirs);
    // After the writes: appends counted, sent by the leader and received by followers, and
    // round trips measured (heartbeats go out every 100 ms).
    let me = http_get(addr, "/v2/stats/self").expect("self").json();
    assert!(me["sendAppendRequestCnt"].as_u64() > Some(0), "{me}");
    let lead = wait_for(
        "round trips to both followers",
        Duration::from_secs(5),
        || {
            let lead = http_get(addr, "/v2/stats/leader").ok()?.json();
            let followers = lead["followers"].as_object()?;
            followers
                .values()
                .all(|f| f["latency"]["average"].as_f64() > Some(0.0))
                .then_some(lead)
        },
    );
    for (id, f) in lead["followers"].as_object().expect("followers") {
        assert!(f["counts"]["success"].as_u64() > Some(0), "{id}: {f}");
        let l = &f["latency"];
        assert!(l["minimum"].as_f64() <= l["average"].as_f64(), "{id}: {f}");
        assert!(l["average"].as_f64() <= l["maximum"].as_f64(), "{id}: {f}");
    }
    let members = http_get(addr, "/v2/members").expect("members").json();
    let list = members["members"].as_array().expect("members array");
    assert_eq!(list.len(), 3);
    for m in list {
        for key in ["id", "name", "peerURLs", "clientURLs"] {
            assert!(m.get(key).is_some(), "{key} in {m}");
        }
    }
    let machines = http_get(addr, "/v2/machines").expect("machines");
    assert_eq!(machines.body.split(", ").count(), 3, "{}", machines.body);
    assert_eq!(me["state"], "StateLeader");
    let follower = (leader + 1) % 3;
    let other = http_get(c.client_addr(follower), "/v2/stats/self")
        .expect("self")
        .json();
    assert_eq!(other["state"], "StateFollower");
    assert_eq!(other["leaderInfo"]["leader"], me["id"]);
    // The leader's uptime counts from the election this member saw, not from a stats call.
    let uptime = other["leaderInfo"]["uptime"].as_str().expect("uptime");
    let uptime = oxcd_gocompat::duration::parse(uptime).expect("a Go duration");
    let led_at_least = leader_known
        .elapsed()
        .saturating_sub(Duration::from_millis(500));
    assert!(
        uptime >= led_at_least,
        "{uptime:?} < {led_at_least:?}: {other}"
    );
    assert!(other["recvAppendRequestCnt"].as_u64() > Some(0), "{other}");
    assert_eq!(lead["followers"].as_object().map(|f| f.len()), Some(2));
    let not_leader = http_get(c.client_addr(follower), "/v2/stats/leader").expect("leader");
    assert_eq!(not_leader.status, 403);
    assert_eq!(not_leader.json()["message"], "not current leader");
    let store = http_get(addr, "/v2/stats/store").expect("store").json();
    assert!(store.get("getsSuccess").is_some() && store.get("watchers").is_some());
    // Add and remove a member through v2, as python-etcd does.
    let url = format!("http://{addr}/v2/members");
    // Until every member has been connected for a while, etcd (and oxcd) refuse with
    // "unhealthy cluster".
    let (code, body) =
        oxcd_testkit::process::poll(Duration::from_secs(15), Duration::from_millis(300), || {
            let (code, body) = curl(&[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"peerURLs":["http://127.0.0.1:1"]}"#,
                &url,
            ]);
            (!body.contains("unhealthy cluster")).then_some((code, body))
        })
        .expect("the cluster becomes healthy");
    assert_eq!(code, "201", "{body}");
    let added: serde_json::Value = serde_json::from_str(&body).expect("member JSON");
    let id = added["id"].as_str().expect("id");
    let (code, body) = curl(&["-X", "DELETE", &format!("{url}/{id}")]);
    assert_eq!(code, "204", "{body}");
    let (code, _) = curl(&["-X", "DELETE", &format!("{url}/1234")]);
    assert_eq!(code, "404");
}

/// curl's status code and body.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// A v2 watch answers its status and headers at once; the body waits for the event.
#[test]
fn v2_watch_headers_at_once() {
    let c = Cluster::builder(Impl::Oxcd).members(1).start();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-i",
            "-m",
            "2",
            &format!("{}/v2/keys/w?wait=true", c.endpoint(0)),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    // curl gives up after 2 s (exit 28) having received the status line and headers.
    assert_eq!(out.status.code(), Some(28), "{text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_lowercase().contains("x-etcd-index:"), "{text}");
}
