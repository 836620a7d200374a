//! `oxctl migrate` from the real etcd 3.4 into a 3-member oxcd cluster while a writer does
//! 200 writes a second to etcd for 10 s (puts, deletes, a range delete, multi-key txns,
//! leases granted, attached and revoked, a compaction on the way): the target refuses client
//! writes naming import mode; the migration is interrupted (SIGTERM) and resumed with the
//! cut-over; after it, oxcd holds exactly etcd's history (every key at the current revision
//! and at a past one, the same leases, HashKV equal on every member), a watcher that
//! followed etcd resumes on oxcd from its last revision and sees the same events, and oxcd
//! takes writes. Both sides require client certificates, each of its own CA (the `--from-*`
//! and `--to-*` TLS flags); users and roles added on etcd during the migration make the
//! cut-over refuse, naming `--copy-auth`, which then carries them over.

use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RequestOp, TxnRequest,
};
use oxcd_client::Client;
use oxcd_testkit::process::{bin, Daemon};
use oxcd_testkit::text::mask_json_number;
use oxcd_testkit::{require, run, Cluster, Impl, Output, Signal};
use serde_json::Value;

/// The writer's pace and how long it writes.
const WRITES_PER_SEC: u64 = 200;
const WRITE_FOR: Duration = Duration::from_secs(10);
const WRITES_IN_FLIGHT: usize = 32;
/// Bounds on the migration's two runs.
const MIGRATE_EXIT_MAX: Duration = Duration::from_secs(30);

/// The `i`th write of the writer: mostly puts, with deletes, a range delete, txns and
/// lease puts mixed in.
fn op(i: u64, lease: i64) -> RequestOp {
    let put = |key: String, value: String, lease: i64| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
            lease,
            ..Default::default()
        })),
    };
    let del = |key: String, range_end: Vec<u8>| RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.into_bytes(),
                range_end,
                ..Default::default()
            },
        )),
    };
    match i % 20 {
        12 => put(format!("w/l{}", i % 30), format!("leased-{i}"), lease),
        13 => del(format!("w/{}", (i * 7) % 150), Vec::new()),
        14 => RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                success: vec![
                    put(format!("t/{}/a", i % 10), format!("a{i}"), 0),
                    put(format!("t/{}/b", i % 10), format!("b{i}"), 0),
                    del(format!("w/{}", (i * 3) % 150), Vec::new()),
                ],
                ..Default::default()
            })),
        },
        19 if i % 100 == 99 => del("w/1".into(), b"w/2".to_vec()),
        _ => put(format!("w/{}", i % 150), format!("v{i}"), 0),
    }
}

/// Sends one write to etcd as its own request (a txn for a txn, a put for a put...).
/// Whether etcd took it; a put on a lease revoked meanwhile may be refused.
async fn send(c: Client, op: RequestOp) -> bool {
    let leased = matches!(&op.request, Some(request_op::Request::RequestPut(p)) if p.lease != 0);
    let ok = match op.request {
        Some(request_op::Request::RequestPut(p)) => c.kv().put(p).await.is_ok(),
        Some(request_op::Request::RequestDeleteRange(d)) => c.kv().delete_range(d).await.is_ok(),
        Some(request_op::Request::RequestTxn(t)) => c.kv().txn(t).await.is_ok(),
        _ => false,
    };
    assert!(ok || leased, "a write to etcd failed");
    ok
}

/// A new lease on etcd (10 minutes); its ID.
async fn grant(c: &Client) -> i64 {
    let req = LeaseGrantRequest { ttl: 600, id: 0 };
    let mut lease = c.lease();
    lease
        .lease_grant(req)
        .await
        .expect("lease grant")
        .into_inner()
        .id
}

/// At half time: a put whose revision is where the test's watcher stopped, and a compaction
/// 300 revisions before it. Returns that revision.
async fn half_time(c: &Client) -> i64 {
    let put = PutRequest {
        key: b"w/half".to_vec(),
        value: b"x".to_vec(),
        ..Default::default()
    };
    let mid = c
        .kv()
        .put(put)
        .await
        .expect("put")
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    let compact = CompactionRequest {
        revision: mid - 300,
        physical: false,
    };
    c.kv().compact(compact).await.expect("compaction");
    mid
}

/// Writes to etcd at [`WRITES_PER_SEC`] for [`WRITE_FOR`] (each write its own task, at most
/// [`WRITES_IN_FLIGHT`] at once, so the pace holds whatever etcd's latency), granting a
/// lease every 500 writes and revoking the one before; returns the revision at half time
/// and the number of writes etcd took.
async fn write_load(c: &Client) -> (i64, u64) {
    let mut lease = grant(c).await;
    let mut ticks = tokio::time::interval(Duration::from_millis(1000 / WRITES_PER_SEC));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(WRITES_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut mid = 0;
    let mut i = 0;
    while started.elapsed() < WRITE_FOR {
        ticks.tick().await;
        if i % 500 == 499 {
            let next = grant(c).await;
            let revoke = LeaseRevokeRequest { id: lease };
            c.lease().lease_revoke(revoke).await.expect("revoke");
            lease = next;
        }
        let slot = slots.clone().acquire_owned().await.expect("semaphore");
        let (client, write) = (c.clone(), op(i, lease));
        tasks.spawn(async move {
            let ok = send(client, write).await;
            drop(slot);
            ok
        });
        if mid == 0 && started.elapsed() >= WRITE_FOR / 2 {
            mid = half_time(c).await;
        }
        i += 1;
    }
    let mut acked = 0;
    while let Some(done) = tasks.join_next().await {
        acked += u64::from(done.expect("writer task"));
    }
    (mid, acked)
}

/// `oxctl migrate run` from `etcd` to `ox`, each side with its own CA and client
/// certificate (`--from-cacert`... and `--to-cacert`...).
fn migrate_args(etcd: &Cluster, ox: &Cluster) -> Vec<String> {
    let mut args = vec![
        "migrate".into(),
        "run".into(),
        format!("--from={}", etcd.endpoint(0)),
        format!("--to={}", ox.endpoints()),
    ];
    for (side, c) in [("from", etcd), ("to", ox)] {
        let certs = c.client_certs().expect("client certificates");
        args.push(format!("--{side}-cacert={}", certs.ca.display()));
        args.push(format!("--{side}-cert={}", certs.cert.display()));
        args.push(format!("--{side}-key={}", certs.key.display()));
    }
    args
}

/// Auth changes on etcd during the migration, which etcd's watch does not carry.
fn change_auth_on(etcd: &Cluster) {
    etcd.etcdctl(0, &["user", "add", "alice:secret"], b"").ok();
    etcd.etcdctl(0, &["role", "add", "reader"], b"").ok();
    etcd.etcdctl(
        0,
        &["role", "grant-permission", "reader", "read", "w/"],
        b"",
    )
    .ok();
    etcd.etcdctl(0, &["user", "grant-role", "alice", "reader"], b"")
        .ok();
}

/// `get -w json` of every key at `rev` (0: current), IDs masked.
fn keys_json(c: &Cluster, i: usize, rev: i64) -> String {
    let rev = format!("--rev={rev}");
    let out = c
        .etcdctl(i, &["get", "", "--from-key", &rev, "-w", "json"], b"")
        .ok();
    let out = mask_json_number(&out.stdout, "cluster_id");
    let out = mask_json_number(&out, "member_id");
    mask_json_number(&out, "raft_term")
}

fn hashkv(c: &Cluster, i: usize) -> String {
    let out = c
        .etcdctl(i, &["endpoint", "hashkv", "-w", "json"], b"")
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    let h = &v[0]["HashKV"];
    format!(
        "hash {} compacted at {} revision {}",
        h["hash"], h["compact_revision"], h["header"]["revision"]
    )
}

fn leases(c: &Cluster, i: usize) -> Vec<String> {
    let out = c.etcdctl(i, &["lease", "list"], b"").ok();
    let mut ids: Vec<String> = out.stdout.lines().skip(1).map(str::to_string).collect();
    ids.sort();
    ids
}

/// The events a watcher from `rev` sees in 3 s: (type, key, mod revision, value).
fn watched_from(c: &Cluster, i: usize, rev: i64) -> Vec<String> {
    let rev = format!("--rev={rev}");
    let out = c.etcdctl_for(
        i,
        Duration::from_secs(3),
        &["watch", "--prefix", "w/", &rev, "-w", "json"],
    );
    let mut events = Vec::new();
    for line in out.stdout.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for e in v["Events"].as_array().into_iter().flatten() {
            events.push(format!(
                "{} {} {} {}",
                e["type"], e["kv"]["key"], e["kv"]["mod_revision"], e["kv"]["value"]
            ));
        }
    }
    events
}

fn refused_in_import_mode(out: Output) {
    let out = out.failed();
    assert!(out.stderr.contains("import mode"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_keeps_every_revision() {
    require("etcdctl");
    // Client certificates required on both sides, each with a CA of its own.
    let etcd = Cluster::builder(Impl::Etcd).client_cert_auth().start();
    let ox = Cluster::builder(Impl::Oxcd)
        .members(3)
        .client_cert_auth()
        .start();
    for i in 0..50 {
        etcd.etcdctl(0, &["put", &format!("w/{i}"), "before"], b"")
            .ok();
    }
    let source = etcd.client(0).await.expect("etcd client");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(bin("oxctl"));
    cmd.args(migrate_args(&etcd, &ox));
    let mut follow = Daemon::start("migrate", &mut cmd, &dir.path().join("migrate.log"));
    let writer = tokio::spawn(async move { write_load(&source).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    refused_in_import_mode(ox.etcdctl(1, &["put", "x", "y"], b""));
    change_auth_on(&etcd);
    let (mid, writes) = writer.await.expect("writer");
    assert!(
        writes >= WRITES_PER_SEC * WRITE_FOR.as_secs() * 9 / 10,
        "{writes} writes"
    );
    follow.signal(Signal::Term);
    assert_eq!(
        follow.wait_exit(MIGRATE_EXIT_MAX),
        0,
        "{}",
        follow.log_text()
    );
    // It followed the writes as they came: it had passed half time when stopped.
    let log = follow.log_text();
    let stopped_at: i64 = log
        .split("stopped at revision ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stop line in the log:\n{log}"));
    assert!(
        stopped_at > mid,
        "stopped at {stopped_at}, half time was {mid}:\n{log}"
    );

    // The auth changes are seen at the cut-over, which refuses naming the remedy.
    let mut cut = std::process::Command::new(bin("oxctl"));
    cut.args(migrate_args(&etcd, &ox)).arg("--cut-over");
    let out = run(&mut cut, b"").failed();
    assert!(
        out.stderr.contains("users that differ: alice")
            && out.stderr.contains("roles that differ: reader")
            && out.stderr.contains("--copy-auth"),
        "{}",
        out.stderr
    );
    refused_in_import_mode(ox.etcdctl(1, &["put", "x", "y"], b""));
    let mut cut = std::process::Command::new(bin("oxctl"));
    cut.args(migrate_args(&etcd, &ox))
        .args(["--cut-over", "--copy-auth"]);
    let out = run(&mut cut, b"").ok();
    assert!(out.stdout.contains("cut-over done"), "{}", out.stdout);
    let alice = ox.etcdctl(2, &["user", "get", "alice"], b"").ok();
    assert!(alice.stdout.contains("reader"), "{}", alice.stdout);

    let want = (
        keys_json(&etcd, 0, 0),
        keys_json(&etcd, 0, mid),
        hashkv(&etcd, 0),
        leases(&etcd, 0),
    );
    for i in 0..3 {
        let got = (
            keys_json(&ox, i, 0),
            keys_json(&ox, i, mid),
            hashkv(&ox, i),
            leases(&ox, i),
        );
        assert_eq!(got, want, "oxcd member {i} differs from etcd");
    }
    let on_etcd = watched_from(&etcd, 0, mid + 1);
    assert!(on_etcd.len() > 100, "{} events", on_etcd.len());
    assert_eq!(watched_from(&ox, 2, mid + 1), on_etcd);
    ox.etcdctl(0, &["put", "after", "cut-over"], b"").ok();
}
