//! Leases on a 3-member TLS cluster: expiry across a leader change (a lease kept alive, last
//! through the leader, then left alone while the leader is killed at once: its keys are not
//! deleted before its TTL, are deleted after it, at the same revision on every member, the
//! restarted old leader included); a mass expiry revoked in bounded batches while writes go on; and the real
//! etcdctl 3.4's lease commands against oxcd and etcd, output compared.

use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::watch_request::RequestUnion;
use oxcd_api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    WatchCreateRequest, WatchRequest,
};
use oxcd_api::mvccpb;
use oxcd_testkit::text::mask_json_number;
use oxcd_testkit::{Cluster, Impl};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Keys under `prefix` on member `i` (serializable: its own state), or None if unreachable.
async fn count_keys(c: &Cluster, i: usize, prefix: &str) -> Option<i64> {
    let client = c.client(i).await?;
    let mut end = b(prefix);
    *end.last_mut()? += 1;
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        client.kv().range(RangeRequest {
            key: b(prefix),
            range_end: end,
            serializable: true,
            count_only: true,
            ..Default::default()
        }),
    )
    .await
    .ok()?
    .ok()?;
    Some(r.into_inner().count)
}

/// The revisions at which member `i` deleted keys under `prefix` since `from`.
async fn delete_revisions(c: &Cluster, i: usize, prefix: &str, from: i64) -> Vec<(String, i64)> {
    let client = c.client(i).await.expect("client");
    let mut end = b(prefix);
    if let Some(l) = end.last_mut() {
        *l += 1;
    }
    let (tx, rx) = mpsc::channel(2);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b(prefix),
            range_end: end,
            start_revision: from,
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let mut s = client
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    while let Ok(Some(Ok(r))) = tokio::time::timeout(Duration::from_secs(2), s.next()).await {
        for e in r.events {
            if e.r#type == mvccpb::event::EventType::Delete as i32 {
                let kv = e.kv.unwrap_or_default();
                out.push((
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.mod_revision,
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_expiry_survives_a_leader_change() {
    const TTL: i64 = 5;
    let c = super::tls3(&[]);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let client = c.client(follower).await.expect("client");
    let id = client
        .lease()
        .lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    let mut first_rev = 0;
    for k in ["l/a", "l/b", "l/c"] {
        let r = client
            .kv()
            .put(PutRequest {
                key: b(k),
                value: b("v"),
                lease: id,
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        if first_rev == 0 {
            first_rev = r.header.map_or(0, |h| h.revision);
        }
    }
    // Kept alive for longer than its TTL: first through the follower (renewals go through
    // the log), then through the leader (answered from its memory, replicated after).
    let mut last_renewed = Instant::now();
    for (member, times) in [(follower, 4), (leader, 4)] {
        let client = c.client(member).await.expect("client");
        let (tx, rx) = mpsc::channel(2);
        tx.send(LeaseKeepAliveRequest { id }).await.expect("send");
        let mut ka = client
            .lease()
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("keepalive")
            .into_inner();
        for n in 0..times {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                tx.send(LeaseKeepAliveRequest { id }).await.expect("send");
            }
            let r = tokio::time::timeout(Duration::from_secs(5), ka.next())
                .await
                .expect("keepalive answered")
                .expect("stream open")
                .expect("ok");
            assert_eq!((r.id, r.ttl), (id, TTL));
            last_renewed = Instant::now();
        }
    }
    // Left alone, and the leader dies right away.
    c.kill9(leader);
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    let live: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // Never before its TTL, on any member.
    let mut deleted_at = None;
    let deadline = last_renewed + Duration::from_secs(TTL as u64 + 20);
    while Instant::now() < deadline {
        let mut counts = Vec::new();
        for &i in &live {
            counts.push(count_keys(&c, i, "l/").await);
        }
        let since = last_renewed.elapsed();
        if counts.iter().all(|n| *n == Some(0)) {
            deleted_at = Some(since);
            break;
        }
        assert!(
            since >= Duration::from_secs(TTL as u64) || counts.iter().all(|n| *n != Some(0)),
            "keys deleted {since:?} after the last keep-alive, before the {TTL}s TTL: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deleted_at = deleted_at.unwrap_or_else(|| {
        panic!(
            "keys of the lease not deleted within {TTL}+20 s of the last keep-alive; logs:\n{}",
            c.logs()
        )
    });
    assert!(
        deleted_at >= Duration::from_secs(TTL as u64),
        "deleted {deleted_at:?} after the last keep-alive, TTL {TTL}s"
    );
    eprintln!(
        "lease {id:x}: leader m{} killed; keys deleted {deleted_at:?} after the last keep-alive",
        leader + 1
    );
    // TimeToLive agrees it is gone.
    let ttl = c
        .client(new_leader)
        .await
        .expect("client")
        .lease()
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(ttl.ttl, -1);
    // Same revision on every member, the old leader too once it is back.
    c.spawn(leader);
    let want = delete_revisions(&c, live[0], "l/", first_rev).await;
    assert_eq!(want.len(), 3, "{want:?}");
    assert!(
        want.iter().all(|(_, r)| *r == want[0].1),
        "one revoke, one revision: {want:?}"
    );
    assert_eq!(delete_revisions(&c, live[1], "l/", first_rev).await, want);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if count_keys(&c, leader, "l/").await == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old leader never caught up; log:\n{}",
            c.log(leader)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(delete_revisions(&c, leader, "l/", first_rev).await, want);
}

/// 1500 leases expiring at once are revoked at etcd's rate (1000 a second), while a
/// writer's puts keep going through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mass_expiry_is_revoked_in_batches_without_stalling_writes() {
    const LEASES: usize = 1500;
    let c = super::tls3(&[]);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let client = c.client(leader).await.expect("client");
    let t = Instant::now();
    let mut grants = tokio::task::JoinSet::new();
    for chunk in 0..50usize {
        let client = client.clone();
        grants.spawn(async move {
            for n in (chunk..LEASES).step_by(50) {
                let id = client
                    .lease()
                    .lease_grant(LeaseGrantRequest { ttl: 3, id: 0 })
                    .await
                    .expect("grant")
                    .into_inner()
                    .id;
                client
                    .kv()
                    .put(PutRequest {
                        key: b(&format!("m/{n:05}")),
                        value: b("v"),
                        lease: id,
                        ..Default::default()
                    })
                    .await
                    .expect("put");
            }
        });
    }
    while let Some(r) = grants.join_next().await {
        r.expect("granter");
    }
    eprintln!("{LEASES} leases with a key each in {:?}", t.elapsed());
    // Writes while they expire.
    let mut slowest = Duration::ZERO;
    let mut first_gone = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut n = 0;
    loop {
        let w = Instant::now();
        client
            .kv()
            .put(PutRequest {
                key: b(&format!("x/{n}")),
                value: b("v"),
                ..Default::default()
            })
            .await
            .expect("put during the mass expiry");
        slowest = slowest.max(w.elapsed());
        n += 1;
        let left = count_keys(&c, leader, "m/").await.expect("count");
        if left < LEASES as i64 && first_gone.is_none() {
            first_gone = Some(Instant::now());
        }
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} leased keys still there after 40 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spread = first_gone.map(|t| t.elapsed()).unwrap_or_default();
    eprintln!("all revoked over {spread:?}; {n} puts meanwhile, slowest {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "a put took {slowest:?} during the mass expiry"
    );
    // 1500 at 1000 a second (500 per half-second round) take more than one round.
    assert!(
        spread >= Duration::from_millis(400),
        "revoked all at once ({spread:?}), not in batches"
    );
}

/// etcdctl's lease commands against a TLS oxcd cluster (on a follower) and against etcd:
/// the same output, lease IDs aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_matches_etcd() {
    let c = super::tls3(&[]);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let etcd = Cluster::builder(Impl::Etcd).start();
    // Each command is stopped after 30 s; what it printed, stdout then stderr.
    let limit = Duration::from_secs(30);
    let on_o = |args: &[&str]| c.etcdctl_for(follower, limit, args).text();
    let on_e = |args: &[&str]| etcd.etcdctl_for(0, limit, args).text();
    // Each side grants its own lease; later commands name it.
    let grant = |out: &str| -> String {
        out.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("lease grant printed {out:?}"))
            .to_string()
    };
    let (go, ge) = (
        on_o(&["lease", "grant", "60"]),
        on_e(&["lease", "grant", "60"]),
    );
    let (lo, le) = (grant(&go), grant(&ge));
    assert_eq!(go.replace(&lo, "<id>"), ge.replace(&le, "<id>"));
    let script: &[&[&str]] = &[
        &["put", "k1", "v1", "--lease={id}"],
        &["put", "k2", "v2", "--lease={id}"],
        &["lease", "timetolive", "{id}"],
        &["lease", "timetolive", "{id}", "--keys"],
        &["lease", "timetolive", "{id}", "--keys", "-w", "json"],
        &["lease", "list"],
        &["lease", "keep-alive", "--once", "{id}"],
        &["lease", "keep-alive", "--once", "1234"],
        &["lease", "timetolive", "1234"],
        &["lease", "revoke", "{id}"],
        &["get", "k", "--prefix"],
        &["lease", "revoke", "{id}"],
        &["lease", "timetolive", "{id}"],
        &["lease", "list"],
        &["lease", "grant", "0"],
        &["lease", "grant", "9000000001"],
        &["put", "k3", "v", "--lease=1234"],
    ];
    for args in script {
        let with =
            |id: &str| -> Vec<String> { args.iter().map(|a| a.replace("{id}", id)).collect() };
        let (ao, ae) = (with(&lo), with(&le));
        let ao: Vec<&str> = ao.iter().map(String::as_str).collect();
        let ae: Vec<&str> = ae.iter().map(String::as_str).collect();
        let mask = |s: String, id: &str| {
            let dec = i64::from_str_radix(id, 16)
                .map(|d| d.to_string())
                .unwrap_or_default();
            let s = s.replace(id, "<id>");
            let s = if dec.is_empty() {
                s
            } else {
                s.replace(&dec, "<id>")
            };
            let mut s = s;
            for key in ["cluster_id", "member_id", "raft_term", "revision"] {
                s = mask_json_number(&s, key);
            }
            // Seconds left depend on timing (and on how loaded the machine is); etcd lists
            // attached keys in Go map order.
            for left in 50..=60 {
                s = s
                    .replace(&format!("remaining({left}s)"), "remaining(<left>s)")
                    .replace(&format!("\"ttl\":{left}"), "\"ttl\":<left>");
            }
            sort_keys(&s)
        };
        let (o, e) = (
            mask(drop_client_logs(&on_o(&ao)), &lo),
            mask(drop_client_logs(&on_e(&ae)), &le),
        );
        // A granted lease's ID differs; the message around it must not.
        let (o, e) = if args[..] == ["lease", "grant", "0"] {
            (grant_mask(&o), grant_mask(&e))
        } else {
            (o, e)
        };
        assert_eq!(o, e, "etcdctl {args:?}");
    }
}

/// Sorts the list after `attached keys([` (simple output) or `"keys":[` (JSON).
fn sort_keys(s: &str) -> String {
    let mut out = s.to_string();
    for (open, close, sep) in [("attached keys([", "])", " "), ("\"keys\":[", "]", ",")] {
        let Some(start) = out.find(open).map(|i| i + open.len()) else {
            continue;
        };
        let Some(len) = out[start..].find(close) else {
            continue;
        };
        let sorted = {
            let mut items: Vec<&str> = out[start..start + len].split(sep).collect();
            items.sort_unstable();
            items.join(sep)
        };
        out.replace_range(start..start + len, &sorted);
    }
    out
}

/// etcdctl's own JSON log lines (retry warnings) carry timestamps and addresses.
fn drop_client_logs(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn grant_mask(s: &str) -> String {
    match s.split_whitespace().nth(1) {
        Some(id) if s.starts_with("lease ") => s.replace(id, "<id>"),
        _ => s.to_string(),
    }
}
