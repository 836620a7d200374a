//! Watch and Lease through the v3 gRPC API, side by side with the real etcd 3.4: every
//! request goes to both servers (same flags) and what each answers is written down as
//! lines, which must be identical. Masked: the cluster and member IDs, the raft term, and
//! lease IDs the server chose. Covers what etcdctl cannot ask for: client-chosen watch IDs
//! and their errors, empty ranges, cancel of an unknown watch, progress requests and
//! periodic progress notifications, compacted start revisions, filters, prev_kv, fragments,
//! lease IDs chosen by the client, TTL limits, TimeToLive with keys, keep-alive of an
//! unknown lease.

use std::time::Duration;

use oxcd_api::etcdserverpb::lease_client::LeaseClient;
use oxcd_api::etcdserverpb::watch_client::WatchClient;
use oxcd_api::etcdserverpb::watch_create_request::FilterType;
use oxcd_api::etcdserverpb::watch_request::RequestUnion;
use oxcd_api::etcdserverpb::{
    kv_client::KvClient, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    PutRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use oxcd_testkit::{Cluster, Impl};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

/// How long to wait for a watch response that should come.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait to be sure that no response comes.
const QUIET: Duration = Duration::from_millis(400);

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

async fn channel(s: &Cluster) -> Channel {
    Channel::from_shared(s.endpoint(0))
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

/// One watch stream and its transcript.
struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
}

impl Stream {
    /// Opens a stream with its first create request (etcd sends the response headers only
    /// with the first response).
    async fn open(ch: &Channel, first: WatchCreateRequest) -> Stream {
        let (tx, rx) = mpsc::channel(16);
        let req = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(first)),
        };
        tx.send(req).await.expect("send");
        let rx = WatchClient::new(ch.clone())
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, r: RequestUnion) {
        let req = WatchRequest {
            request_union: Some(r),
        };
        self.tx.send(req).await.expect("send");
    }

    async fn create(&self, c: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(c)).await;
    }

    /// Reads responses for `within` (or until `count` came), each as one line.
    async fn read(&mut self, count: usize, within: Duration, out: &mut Vec<String>) {
        let deadline = tokio::time::Instant::now() + within;
        let mut n = 0;
        while n < count {
            match tokio::time::timeout_at(deadline, self.rx.next()).await {
                Ok(Some(Ok(r))) => out.push(line(&r)),
                Ok(Some(Err(e))) => {
                    out.push(format!("stream error {:?} {}", e.code(), e.message()));
                    return;
                }
                Ok(None) => {
                    out.push("stream closed".into());
                    return;
                }
                Err(_) => return,
            }
            n += 1;
        }
    }

    async fn expect(&mut self, count: usize, out: &mut Vec<String>) {
        self.read(count, RESPONSE_TIMEOUT, out).await;
    }

    async fn quiet(&mut self, out: &mut Vec<String>) {
        self.read(usize::MAX, QUIET, out).await;
        out.push("(quiet)".into());
    }
}

fn line(r: &WatchResponse) -> String {
    let h = r.header.as_ref().map(|h| h.revision).unwrap_or(-99);
    let events: Vec<String> = r
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            let prev = e
                .prev_kv
                .as_ref()
                .map(|p| {
                    format!(
                        " prev={}@{}",
                        String::from_utf8_lossy(&p.value),
                        p.mod_revision
                    )
                })
                .unwrap_or_default();
            format!(
                "{}:{}={}@{}/{}/v{}/l{}{prev}",
                e.r#type,
                String::from_utf8_lossy(&kv.key),
                if kv.value.len() > 16 {
                    format!("<{} bytes>", kv.value.len())
                } else {
                    String::from_utf8_lossy(&kv.value).into_owned()
                },
                kv.mod_revision,
                kv.create_revision,
                kv.version,
                kv.lease
            )
        })
        .collect();
    format!(
        "rev={h} id={} created={} canceled={} compact={} reason={:?} fragment={} events=[{}]",
        r.watch_id,
        r.created,
        r.canceled,
        r.compact_revision,
        r.cancel_reason,
        r.fragment,
        events.join(" ")
    )
}

fn create(key: &str, end: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: b(key),
        range_end: b(end),
        ..Default::default()
    }
}

async fn put(kv: &mut KvClient<Channel>, k: &str, v: &str, lease: i64) -> String {
    let r = kv
        .put(PutRequest {
            key: b(k),
            value: b(v),
            lease,
            ..Default::default()
        })
        .await;
    match r {
        Ok(r) => format!(
            "put {k} rev={}",
            r.into_inner().header.unwrap_or_default().revision
        ),
        Err(e) => format!("put {k} error {:?} {}", e.code(), e.message()),
    }
}

/// The watch half of the transcript.
async fn watch_transcript(s: &Cluster) -> Vec<String> {
    let ch = channel(s).await;
    let mut kv = KvClient::new(ch.clone());
    let mut out = Vec::new();
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
        out.push(put(&mut kv, k, v, 0).await);
    }
    kv.delete_range(DeleteRangeRequest {
        key: b("b"),
        ..Default::default()
    })
    .await
    .expect("delete");

    out.push("# history with prev_kv, client-chosen IDs, duplicates, auto IDs".into());
    let mut w = Stream::open(
        &ch,
        WatchCreateRequest {
            start_revision: 1,
            prev_kv: true,
            ..create("a", "c")
        },
    )
    .await;
    w.expect(2, &mut out).await;
    w.create(WatchCreateRequest {
        watch_id: 7,
        ..create("b", "")
    })
    .await;
    w.create(WatchCreateRequest {
        watch_id: 7,
        ..create("c", "")
    })
    .await;
    w.create(create("d", "")).await;
    w.create(create("e", "")).await;
    w.create(WatchCreateRequest {
        watch_id: 1,
        ..create("f", "")
    })
    .await;
    w.expect(5, &mut out).await;
    out.push("# an empty range, a from-key watch, an empty key".into());
    w.create(create("b", "a")).await;
    w.create(create("b", "b")).await;
    w.create(create("z", "\0")).await;
    w.create(create("", "")).await;
    w.expect(4, &mut out).await;
    out.push("# cancel unknown, cancel known, progress request".into());
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 99,
    }))
    .await;
    w.quiet(&mut out).await;
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 7,
    }))
    .await;
    w.expect(1, &mut out).await;
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    w.expect(1, &mut out).await;
    out.push("# live events: canceled watch 7 gets nothing".into());
    out.push(put(&mut kv, "b", "4", 0).await);
    out.push(put(&mut kv, "zz", "5", 0).await);
    w.expect(2, &mut out).await;
    w.quiet(&mut out).await;

    out.push("# filters".into());
    let mut f = Stream::open(
        &ch,
        WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            prev_kv: true,
            ..create("n", "")
        },
    )
    .await;
    f.create(WatchCreateRequest {
        filters: vec![FilterType::Nodelete as i32],
        ..create("n", "")
    })
    .await;
    f.expect(2, &mut out).await;
    out.push(put(&mut kv, "n", "1", 0).await);
    kv.delete_range(DeleteRangeRequest {
        key: b("n"),
        ..Default::default()
    })
    .await
    .expect("delete");
    f.expect(2, &mut out).await;
    f.quiet(&mut out).await;

    out.push("# a future start revision".into());
    let cur = kv
        .put(PutRequest {
            key: b("fut"),
            value: b("0"),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner()
        .header
        .unwrap_or_default()
        .revision;
    f.create(WatchCreateRequest {
        start_revision: cur + 2,
        ..create("fut", "")
    })
    .await;
    f.expect(1, &mut out).await;
    out.push(put(&mut kv, "fut", "1", 0).await);
    out.push(put(&mut kv, "fut", "2", 0).await);
    f.expect(1, &mut out).await;
    f.quiet(&mut out).await;

    // etcd fragments above --max-request-bytes (1.5 MiB) + 512 KiB.
    out.push("# fragments: three 1 MB values in one catch-up".into());
    let big = "x".repeat(1_000_000);
    let from = cur + 3;
    for k in ["f1", "f2", "f3"] {
        out.push(put(&mut kv, k, &big, 0).await);
    }
    let mut g = Stream::open(
        &ch,
        WatchCreateRequest {
            start_revision: from,
            fragment: true,
            ..create("f", "g")
        },
    )
    .await;
    g.read(8, Duration::from_secs(2), &mut out).await;
    g.quiet(&mut out).await;

    out.push("# compacted start revision".into());
    kv.compact(CompactionRequest {
        revision: 4,
        physical: true,
    })
    .await
    .expect("compact");
    let mut c = Stream::open(
        &ch,
        WatchCreateRequest {
            start_revision: 2,
            ..create("a", "")
        },
    )
    .await;
    c.expect(2, &mut out).await;
    c.create(WatchCreateRequest {
        start_revision: 4,
        ..create("a", "")
    })
    .await;
    c.expect(2, &mut out).await;
    c.quiet(&mut out).await;

    out.push("# progress notifications (interval 1s)".into());
    let mut p = Stream::open(
        &ch,
        WatchCreateRequest {
            progress_notify: true,
            ..create("p", "")
        },
    )
    .await;
    p.create(create("q", "")).await;
    p.expect(2, &mut out).await;
    p.read(1, Duration::from_millis(2600), &mut out).await;
    out
}

async fn lease_transcript(s: &Cluster) -> (Vec<String>, Vec<i64>) {
    let ch = channel(s).await;
    let mut kv = KvClient::new(ch.clone());
    let mut le = LeaseClient::new(ch.clone());
    let mut out = Vec::new();
    let mut chosen = Vec::new();
    let grant = |id: i64, ttl: i64| LeaseGrantRequest { id, ttl };
    for (id, ttl) in [
        (0, 1),
        (100, 30),
        (100, 30),
        (-5, 30),
        (101, 9_000_000_001),
        (102, 9_000_000_000),
        (103, 0),
        (104, -3),
    ] {
        match le.lease_grant(grant(id, ttl)).await {
            Ok(r) => {
                let r = r.into_inner();
                if id == 0 {
                    chosen.push(r.id);
                }
                out.push(format!(
                    "grant {id} {ttl}: id={} ttl={} error={:?}",
                    if id == 0 { 0 } else { r.id },
                    r.ttl,
                    r.error
                ))
            }
            Err(e) => out.push(format!("grant {id} {ttl}: {:?} {}", e.code(), e.message())),
        }
    }
    out.push(put(&mut kv, "l1", "v", 100).await);
    out.push(put(&mut kv, "l2", "v", 100).await);
    out.push(put(&mut kv, "l3", "v", 999).await);
    for (id, keys) in [(100, true), (100, false), (999, true), (0, true)] {
        match le
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                // etcd lists a lease's keys in Go map order: compare them sorted.
                let mut ks: Vec<String> = r
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                ks.sort();
                out.push(format!(
                    "ttl {id} {keys}: id={} ttl={} granted={} keys={ks:?}",
                    r.id,
                    // Seconds left depend on timing: only its sign and bound are compared.
                    if r.ttl > 25 { 30 } else { r.ttl },
                    r.granted_ttl
                ));
            }
            Err(e) => out.push(format!("ttl {id}: {:?} {}", e.code(), e.message())),
        }
    }
    let leases = le
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    let mut ids: Vec<i64> = leases
        .leases
        .iter()
        .map(|l| if chosen.contains(&l.id) { 0 } else { l.id })
        .collect();
    ids.sort();
    out.push(format!("leases: {ids:?}"));
    let (tx, rx) = mpsc::channel(4);
    tx.send(LeaseKeepAliveRequest { id: 100 })
        .await
        .expect("send");
    let mut ka = le
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("keepalive")
        .into_inner();
    for (n, id) in [100, 999, 0].into_iter().enumerate() {
        if n > 0 {
            tx.send(LeaseKeepAliveRequest { id }).await.expect("send");
        }
        match tokio::time::timeout(RESPONSE_TIMEOUT, ka.next()).await {
            Ok(Some(Ok(r))) => out.push(format!("keepalive {id}: id={} ttl={}", r.id, r.ttl)),
            other => out.push(format!("keepalive {id}: {other:?}")),
        }
    }
    for id in [100, 100, 0] {
        match le.lease_revoke(LeaseRevokeRequest { id }).await {
            Ok(r) => out.push(format!(
                "revoke {id}: rev={}",
                r.into_inner().header.unwrap_or_default().revision
            )),
            Err(e) => out.push(format!("revoke {id}: {:?} {}", e.code(), e.message())),
        }
    }
    let left = kv
        .range(oxcd_api::etcdserverpb::RangeRequest {
            key: b("l"),
            range_end: b("m"),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    out.push(format!("keys left under l: {}", left.count));
    (out, chosen)
}

fn start(kind: Impl) -> Cluster {
    Cluster::builder(kind)
        .flags(["--experimental-watch-progress-notify-interval=1s"])
        .start()
}

fn compare(what: &str, etcd: &[String], oxcd: &[String]) {
    if etcd != oxcd {
        let mut report = String::new();
        for i in 0..etcd.len().max(oxcd.len()) {
            let e = etcd.get(i).map(String::as_str).unwrap_or("<none>");
            let o = oxcd.get(i).map(String::as_str).unwrap_or("<none>");
            let mark = if e == o { "  " } else { "!!" };
            report.push_str(&format!("{mark} etcd: {e}\n{mark} oxcd: {o}\n"));
        }
        panic!("{what}: oxcd differs from etcd 3.4:\n{report}");
    }
}

/// No transcript may take longer than this.
const TRANSCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(TRANSCRIPT_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {TRANSCRIPT_TIMEOUT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_matches_etcd() {
    let etcd = start(Impl::Etcd);
    let oxcd = start(Impl::Oxcd);
    let (e, o) = tokio::join!(
        bounded("etcd's watch transcript", watch_transcript(&etcd)),
        bounded("oxcd's watch transcript", watch_transcript(&oxcd))
    );
    compare("watch", &e, &o);
    // The transcript covers what it claims to.
    for needle in [
        "fragment=true",
        "compact=4",
        "id=-1 created=true canceled=true",
    ] {
        assert!(
            o.iter().any(|l| l.contains(needle)),
            "no {needle:?} in {o:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_matches_etcd() {
    let etcd = start(Impl::Etcd);
    let oxcd = start(Impl::Oxcd);
    let ((e, _), (o, _)) = tokio::join!(
        bounded("etcd's lease transcript", lease_transcript(&etcd)),
        bounded("oxcd's lease transcript", lease_transcript(&oxcd))
    );
    compare("lease", &e, &o);
}
