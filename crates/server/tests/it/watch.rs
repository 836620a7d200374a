//! etcd's watch guarantees on a 3-member TLS cluster, checked on a recorded history:
//! concurrent writers (puts, deletes, multi-key txns) through every member while two
//! watchers record what they get, one on the leader and one on a follower; the leader is
//! killed with SIGKILL half-way and the watcher that was on it resumes on another member
//! from its last revision. Then: events strictly ordered by revision, never repeated, all
//! events of a revision in one response, no revision missing, prev_kv equal to the key's
//! previous state, and the replayed events equal to the final key-value state (values,
//! create/mod revisions, versions) on every member. Also: a client that stops reading
//! (writes and other watchers go on; it catches up later), a follower that installs a raft
//! snapshot (its watchers catch up from the restored store), require-leader streams on a
//! member cut off from the others, and the real etcdctl 3.4's `watch` against oxcd and
//! etcd, output compared.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::watch_request::RequestUnion;
use oxcd_api::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use oxcd_api::mvccpb;
use oxcd_testkit::text::mask_json_number;
use oxcd_testkit::{Cluster, Impl, Signal};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

const PREFIX: &str = "w/";
const PREFIX_END: &str = "w0";
/// Each writer stops after this many writes or this long, whichever comes first.
const WRITES_PER_WRITER_MAX: usize = 250;
const WRITE_PHASE_MAX: Duration = Duration::from_secs(25);
const WRITERS: usize = 4;
/// Keys the writers share, so that revisions touch keys with history (prev_kv, versions).
const KEY_SPACE: usize = 40;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// One response as recorded: its revision header and its events.
#[derive(Debug, Clone)]
struct Recorded {
    events: Vec<mvccpb::Event>,
}

/// Writer `w`'s `n`th write: a put, a delete, or a txn of several puts and a delete.
fn write_op(w: usize, n: usize) -> TxnRequest {
    let key = |k: usize| format!("{PREFIX}{:03}", k % KEY_SPACE);
    let put = |k: usize| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b(&key(k)),
            value: b(&format!("w{w}-n{n}")),
            ..Default::default()
        })),
    };
    let del = |k: usize| RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: b(&key(k)),
                ..Default::default()
            },
        )),
    };
    let base = w * 7 + n * 3;
    let success = match n % 5 {
        0 | 1 => vec![put(base)],
        2 => vec![del(base)],
        // Distinct keys: a txn may not write one key twice.
        _ => vec![put(base), put(base + 1), put(base + 2), del(base + 3)],
    };
    TxnRequest {
        success,
        ..Default::default()
    }
}

async fn writer(c: Arc<Cluster>, w: usize, stop: Arc<AtomicBool>, started: Instant) -> usize {
    let mut done = 0;
    let mut member = w % 3;
    for n in 0..WRITES_PER_WRITER_MAX {
        if stop.load(Ordering::Relaxed) || started.elapsed() > WRITE_PHASE_MAX {
            break;
        }
        let mut ok = false;
        for _attempt in 0..30 {
            if let Some(client) = c.client(member).await {
                let r =
                    tokio::time::timeout(Duration::from_secs(5), client.kv().txn(write_op(w, n)))
                        .await;
                if matches!(r, Ok(Ok(_))) {
                    ok = true;
                    break;
                }
            }
            member = (member + 1) % 3;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "writer {w}: write {n} never succeeded");
        done += 1;
    }
    done
}

/// Watches the prefix with prev_kv from `start` on member `first`; when the stream breaks,
/// resumes on the next live member from the revision after the last one received. Stops
/// once it has seen `until` (set when the writers are done) or after `deadline`.
async fn watcher(
    c: Arc<Cluster>,
    first: usize,
    start: i64,
    until: Arc<Mutex<Option<i64>>>,
    deadline: Instant,
) -> (Vec<Recorded>, Vec<usize>) {
    let mut got: Vec<Recorded> = Vec::new();
    let mut members_used = Vec::new();
    let mut next_rev = start;
    let mut member = first;
    while Instant::now() < deadline {
        let last = got
            .last()
            .and_then(|r| r.events.last())
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision);
        if let (Some(last), Some(until)) = (last, *until.lock().expect("lock")) {
            if last >= until {
                break;
            }
        }
        let Some(client) = c.client(member).await else {
            member = (member + 1) % 3;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        members_used.push(member);
        let (tx, rx) = mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b(PREFIX),
                range_end: b(PREFIX_END),
                start_revision: next_rev,
                prev_kv: true,
                ..Default::default()
            })),
        };
        let _ = tx.send(create).await;
        let opened = tokio::time::timeout(
            Duration::from_secs(3),
            client
                .watch()
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
        let Ok(Ok(stream)) = opened else {
            member = (member + 1) % 3;
            continue;
        };
        let mut stream = stream.into_inner();
        loop {
            if Instant::now() > deadline {
                break;
            }
            let until_rev = *until.lock().expect("lock");
            if let (Some(u), Some(r)) = (until_rev, next_rev.checked_sub(1)) {
                if r >= u {
                    break;
                }
            }
            match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
                Ok(Some(Ok(resp))) => {
                    assert!(!resp.canceled, "watch canceled: {resp:?}");
                    if resp.events.is_empty() {
                        continue;
                    }
                    if let Some(kv) = resp.events.last().and_then(|e| e.kv.as_ref()) {
                        next_rev = kv.mod_revision + 1;
                    }
                    got.push(Recorded {
                        events: resp.events,
                    });
                }
                // Quiet for a second: check whether we are done, keep waiting.
                Err(_) => continue,
                // The member went away: resume elsewhere.
                Ok(Some(Err(_))) | Ok(None) => break,
            }
        }
        drop(tx);
        let done = until.lock().expect("lock").is_some_and(|u| next_rev > u);
        if done {
            break;
        }
        if !c.is_running(member) {
            member = (member + 1) % 3;
        }
    }
    (got, members_used)
}

/// The key-value state as of the end, per key: (value, create_revision, mod_revision,
/// version).
type Kv = BTreeMap<Vec<u8>, mvccpb::KeyValue>;

/// Checks a recorded history; returns the state it replays to.
fn check_history(name: &str, got: &[Recorded], start: i64, end: i64) -> Kv {
    let mut state: Kv = BTreeMap::new();
    let mut seen_revs: Vec<i64> = Vec::new();
    let mut last_rev = start - 1;
    for (i, r) in got.iter().enumerate() {
        let mut revs_here: Vec<i64> = Vec::new();
        for e in &r.events {
            let kv = e.kv.clone().expect("event without kv");
            let rev = kv.mod_revision;
            assert!(
                rev >= last_rev,
                "{name}: response {i}: revision {rev} after {last_rev} (out of order)"
            );
            if rev > last_rev {
                assert!(
                    !seen_revs.contains(&rev),
                    "{name}: revision {rev} delivered in two responses"
                );
                seen_revs.push(rev);
                revs_here.push(rev);
                last_rev = rev;
            }
            let prev = state.get(&kv.key).cloned();
            if e.r#type == mvccpb::event::EventType::Put as i32 {
                // prev_kv is the key's state before this revision (none for a creation).
                assert_eq!(
                    e.prev_kv,
                    prev,
                    "{name}: prev_kv of {:?} at {rev}",
                    String::from_utf8_lossy(&kv.key)
                );
                let expect_version = prev.as_ref().map_or(1, |p| p.version + 1);
                assert_eq!(kv.version, expect_version, "{name}: version at {rev}");
                state.insert(kv.key.clone(), kv);
            } else {
                assert!(
                    prev.is_some(),
                    "{name}: delete of a key that did not exist at {rev}"
                );
                assert_eq!(e.prev_kv, prev, "{name}: prev_kv of a delete at {rev}");
                state.remove(&kv.key);
            }
        }
        let _ = revs_here;
    }
    // No revision missing: every revision in (start, end] wrote under the prefix.
    let want: Vec<i64> = (start..=end).collect();
    assert_eq!(
        seen_revs.first(),
        want.first(),
        "{name}: first revision delivered"
    );
    let missing: Vec<i64> = want
        .iter()
        .filter(|r| seen_revs.binary_search(r).is_err())
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: revisions never delivered: {missing:?}"
    );
    state
}

async fn final_state(c: &Cluster, i: usize) -> (Kv, i64) {
    let client = c.client(i).await.expect("client");
    let r = client
        .kv()
        .range(RangeRequest {
            key: b(PREFIX),
            range_end: b(PREFIX_END),
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let rev = r.header.map_or(0, |h| h.revision);
    (
        r.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
        rev,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_guarantees_hold_across_a_leader_kill() {
    let c = super::tls3(&[]);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    // The first revision the writers make.
    let start = {
        let client = c.client(leader).await.expect("client");
        let r = client
            .kv()
            .put(PutRequest {
                key: b("before"),
                value: b("x"),
                ..Default::default()
            })
            .await
            .expect("put");
        r.into_inner().header.map_or(0, |h| h.revision) + 1
    };
    let c = Arc::new(c);
    let until: Arc<Mutex<Option<i64>>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(90);
    let on_leader = tokio::spawn(watcher(c.clone(), leader, start, until.clone(), deadline));
    let on_follower = tokio::spawn(watcher(c.clone(), follower, start, until.clone(), deadline));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(c.clone(), w, stop.clone(), t0)))
        .collect();
    // Under load: SIGKILL the leader.
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.kill9(leader);
    let killed_at = t0.elapsed();
    let mut writes = 0;
    for w in writers {
        writes += w.await.expect("writer");
    }
    let live: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (_, end) = final_state(&c, live[0]).await;
    *until.lock().expect("lock") = Some(end);
    let (got_l, used_l) = on_leader.await.expect("watcher");
    let (got_f, used_f) = on_follower.await.expect("watcher");
    eprintln!(
        "{writes} writes, revisions {start}..={end}, leader m{} killed after {killed_at:?}; \
         watcher on the leader used members {used_l:?}, on a follower {used_f:?}",
        leader + 1
    );
    assert!(
        used_l.len() > 1,
        "the watcher on the killed leader never resumed elsewhere: {used_l:?}"
    );
    let s_l = check_history("watcher on the leader", &got_l, start, end);
    let s_f = check_history("watcher on a follower", &got_f, start, end);
    for i in live {
        let (kv, _) = final_state(&c, i).await;
        assert_eq!(s_l, kv, "watcher on the leader vs member m{} state", i + 1);
        assert_eq!(s_f, kv, "watcher on a follower vs member m{} state", i + 1);
    }
    // Both watchers saw the same events, response boundaries aside.
    let flat = |g: &[Recorded]| -> Vec<mvccpb::Event> {
        g.iter().flat_map(|r| r.events.iter().cloned()).collect()
    };
    assert_eq!(flat(&got_l), flat(&got_f));
}

/// A client that stops reading does not hold up writes or other watchers, and when it
/// reads again it gets every event, in order, from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_watcher_catches_up_without_stalling_others() {
    let c = super::tls3(&[]);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let client = c.client(leader).await.expect("client");
    let start = client
        .kv()
        .put(PutRequest {
            key: b("s/start"),
            value: b("x"),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    let open = |client: oxcd_client::Client| async move {
        let (tx, rx) = mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b("s/"),
                range_end: b("s0"),
                start_revision: start + 1,
                ..Default::default()
            })),
        };
        tx.send(create).await.expect("send");
        let s = client
            .watch()
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        (tx, s)
    };
    let (_stalled_tx, mut stalled) = open(client.clone()).await;
    let (_live_tx, mut live) = open(client.clone()).await;
    // The stalled client reads only its creation; the live one reads everything.
    let created = stalled.next().await.expect("created").expect("ok");
    assert!(created.created);
    // 64 KiB values: the stalled stream's queues fill after a few hundred revisions.
    let value = vec![b'v'; 64 * 1024];
    let writes = 600usize;
    let live_reader = tokio::spawn(async move {
        let mut n = 0usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        while n < writes && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(10), live.next()).await {
                Ok(Some(Ok(r))) => n += r.events.len(),
                _ => break,
            }
        }
        n
    });
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for n in 0..writes {
        let w = Instant::now();
        client
            .kv()
            .put(PutRequest {
                key: b(&format!("s/{:04}", n % 50)),
                value: value.clone(),
                ..Default::default()
            })
            .await
            .expect("put");
        slowest = slowest.max(w.elapsed());
    }
    eprintln!(
        "{writes} puts of 64 KiB in {:?}, slowest {slowest:?}",
        t.elapsed()
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a stalled watcher held up writes: slowest put {slowest:?}"
    );
    assert_eq!(
        live_reader.await.expect("reader"),
        writes,
        "the live watcher"
    );
    // Now the stalled client reads: every revision, once, in order.
    let mut next = start + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next <= start + writes as i64 && Instant::now() < deadline {
        let r = tokio::time::timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("stalled watcher got nothing for 10 s")
            .expect("stream ended")
            .expect("ok");
        assert!(!r.canceled, "{r:?}");
        for e in r.events {
            let rev = e.kv.map_or(0, |kv| kv.mod_revision);
            assert_eq!(
                rev, next,
                "stalled watcher: revision out of order or missing"
            );
            next += 1;
        }
    }
    assert_eq!(next, start + writes as i64 + 1, "stalled watcher caught up");
}

/// The real etcdctl 3.4's watch against a TLS oxcd cluster (on a follower) and against
/// etcd: same commands, same output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_matches_etcd() {
    let c = super::tls3(&[]);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let etcd = Cluster::builder(Impl::Etcd).start();
    // Each command is stopped after `secs`; what it printed, stdout then stderr.
    let run_o = |secs: u64, args: &[&str]| {
        c.etcdctl_for(follower, Duration::from_secs(secs), args)
            .text()
    };
    let run_e =
        |secs: u64, args: &[&str]| etcd.etcdctl_for(0, Duration::from_secs(secs), args).text();
    let setup: &[&[&str]] = &[
        &["put", "k1", "a"],
        &["put", "k2", "b"],
        &["put", "k1", "c"],
        &["del", "k2"],
        &["put", "other", "x"],
    ];
    for args in setup {
        assert_eq!(run_o(10, args), run_e(10, args), "etcdctl {args:?}");
    }
    // Watches do not end by themselves: each is stopped after 2 s.
    let watches: &[&[&str]] = &[
        &["watch", "--rev=1", "k1"],
        &["watch", "--rev=1", "--prefix", "k"],
        &["watch", "--rev=3", "--prev-kv", "--prefix", "k"],
        &["watch", "--rev=1", "-w", "json", "k2"],
        &["watch", "--rev=2", "k1", "k3"],
    ];
    for args in watches {
        let (mut o, mut e) = (run_o(2, args), run_e(2, args));
        if args.contains(&"json") {
            o = mask_ids(&o);
            e = mask_ids(&e);
        }
        assert_eq!(o, e, "etcdctl {args:?}");
        assert!(!o.is_empty(), "etcdctl {args:?} printed nothing");
    }
    // A compacted start revision.
    let args = ["compact", "4"];
    assert_eq!(run_o(10, &args), run_e(10, &args), "etcdctl {args:?}");
    let args = ["watch", "--rev=2", "k1"];
    assert_eq!(run_o(2, &args), run_e(2, &args), "etcdctl {args:?}");
}

/// Masks cluster and member IDs and raft terms in etcdctl's JSON.
fn mask_ids(s: &str) -> String {
    let mut out = s.to_string();
    for key in ["cluster_id", "member_id", "raft_term"] {
        out = mask_json_number(&out, key);
    }
    out
}

/// etcd's `WithRequireLeader` (metadata `hasleader: true`, which Kubernetes sets on its
/// watches): on a member cut off from the others, such watch and keep-alive streams end with
/// "etcdserver: no leader" (after 3 election timeouts without one), and new ones are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_leader_streams_end_on_a_member_without_leader() {
    use oxcd_api::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
    let c = super::tls3(&[]);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let m = (leader + 1) % 3;
    let client = c.client(m).await.expect("client");
    let open_watch = |client: oxcd_client::Client| async move {
        let (tx, rx) = mpsc::channel(2);
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b("r"),
                ..Default::default()
            })),
        })
        .await
        .expect("send");
        let r = client
            .watch()
            .watch(require(tonic::Request::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
            .await;
        (tx, r)
    };
    let (_wtx, watch) = open_watch(client.clone()).await;
    let mut watch = watch.expect("watch with a leader").into_inner();
    assert!(watch.next().await.expect("created").expect("ok").created);
    let id = client
        .lease()
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    let (ktx, krx) = mpsc::channel(2);
    ktx.send(LeaseKeepAliveRequest { id }).await.expect("send");
    let mut ka = client
        .lease()
        .lease_keep_alive(require(tonic::Request::new(
            tokio_stream::wrappers::ReceiverStream::new(krx),
        )))
        .await
        .expect("keep-alive with a leader")
        .into_inner();
    assert_eq!(ka.next().await.expect("answer").expect("ok").ttl, 60);
    // Cut the member off: the other two die.
    for i in (0..3).filter(|i| *i != m) {
        c.kill9(i);
    }
    let t = Instant::now();
    for (what, end) in [
        (
            "watch",
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match watch.next().await {
                        Some(Ok(_)) => continue,
                        other => return other.map(|r| r.map(|_| ())),
                    }
                }
            })
            .await,
        ),
        (
            "keep-alive",
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match ka.next().await {
                        Some(Ok(_)) => continue,
                        other => return other.map(|r| r.map(|_| ())),
                    }
                }
            })
            .await,
        ),
    ] {
        let status = match end {
            Ok(Some(Err(s))) => s,
            other => panic!("{what} stream did not end with an error: {other:?}"),
        };
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, "etcdserver: no leader"),
            "{what}"
        );
    }
    eprintln!(
        "require-leader streams ended {:?} after the cut",
        t.elapsed()
    );
    // New ones are refused at once.
    let (_tx, refused) = open_watch(client.clone()).await;
    let status = refused.expect_err("a new require-leader watch without a leader");
    assert_eq!(status.message(), "etcdserver: no leader");
    // Without the metadata a watch still opens (etcd serves it from the local store).
    let (tx, rx) = mpsc::channel(2);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b("r"),
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let mut plain = client
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("plain watch")
        .into_inner();
    assert!(plain.next().await.expect("created").expect("ok").created);
}

/// A follower that falls so far behind that the leader sends it a raft snapshot: its
/// watchers catch up from the restored store, every revision once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_a_follower_survive_a_snapshot_install() {
    let c = super::tls3(&["--snapshot-count=100"]);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let f = (leader + 1) % 3;
    let writer = c.client(leader).await.expect("client");
    let put = |n: usize| PutRequest {
        key: b(&format!("s/{:03}", n % 20)),
        value: b(&format!("v{n}")),
        ..Default::default()
    };
    let start = writer
        .kv()
        .put(put(0))
        .await
        .expect("put")
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    let reader = c.client(f).await.expect("client");
    let (_tx, rx) = mpsc::channel(2);
    _tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b("s/"),
            range_end: b("s0"),
            start_revision: start,
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let mut w = reader
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    // The follower stops; the leader writes past its log compaction point.
    c.signal(f, Signal::Stop);
    let writes = 400usize;
    for n in 1..=writes {
        writer.kv().put(put(n)).await.expect("put");
    }
    c.signal(f, Signal::Cont);
    let end = start + writes as i64;
    let mut next = start;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next <= end && Instant::now() < deadline {
        let r = tokio::time::timeout(Duration::from_secs(15), w.next())
            .await
            .expect("the follower's watcher got nothing for 15 s")
            .expect("stream ended")
            .expect("ok");
        assert!(!r.canceled, "{r:?}");
        for e in r.events {
            let rev = e.kv.map_or(0, |kv| kv.mod_revision);
            assert_eq!(rev, next, "revision out of order, repeated or missing");
            next += 1;
        }
    }
    assert_eq!(next, end + 1, "the follower's watcher caught up");
    assert!(
        c.log(f).contains("applying snapshot"),
        "the follower did not install a snapshot; log:\n{}",
        c.log(f)
    );
}

/// Asks for etcd's require-leader behaviour, as `clientv3.WithRequireLeader` does.
fn require<T>(mut r: tonic::Request<T>) -> tonic::Request<T> {
    r.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}
