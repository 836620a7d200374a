//! The Lock and Election services over gRPC on a 3-member oxcd cluster, through a leader
//! kill (Jepsen's etcd finding: a lock held past its lease must not be granted twice).
//! Their answers against the real etcd's are in `gateway.rs`, which calls the same code.
//!
//! The lock: A holds it with a lease kept alive, B waits on another member; the leader is
//! killed; while A's lease lives B must not get it; once A's lease expires (A stopped
//! renewing), B gets it, and only after A's key is gone. C, whose own lease expires while
//! it waits, is refused ("session expired") instead of being granted a lock it has lost.

use std::time::Duration;

use oxcd_api::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, RangeRequest};
use oxcd_api::v3electionpb::{CampaignRequest, LeaderRequest};
use oxcd_api::v3lockpb::{LockRequest, UnlockRequest};
use oxcd_client::Client;
use oxcd_testkit::{Cluster, Impl};

/// Bounds every wait of this test.
const WAIT_MAX: Duration = Duration::from_secs(30);

async fn client(c: &Cluster, i: usize) -> Client {
    c.client(i).await.expect("a client of the member")
}

async fn grant(c: &Client, ttl: i64) -> i64 {
    let mut leases = c.lease();
    let r = leases.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await;
    r.expect("lease grant").into_inner().id
}

/// Keeps `lease` alive every 500 ms until the task is aborted.
fn keep_alive(c: Client, lease: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let Ok(resp) = c.lease().lease_keep_alive(stream).await else {
            return;
        };
        let mut answers = resp.into_inner();
        loop {
            if tx.send(LeaseKeepAliveRequest { id: lease }).await.is_err() {
                return;
            }
            if !matches!(answers.message().await, Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

async fn exists(c: &Client, key: &[u8]) -> bool {
    let r = RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    match c.kv().range(r).await {
        Ok(r) => !r.into_inner().kvs.is_empty(),
        Err(e) => panic!("range: {e}"),
    }
}

/// Waits (bounded) until `key` exists: a waiter has queued.
async fn queued(c: &Client, key: &[u8]) {
    let deadline = std::time::Instant::now() + WAIT_MAX;
    while !exists(c, key).await {
        assert!(
            std::time::Instant::now() < deadline,
            "nobody queued as {key:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lock(c: &Client, name: &[u8], lease: i64) -> Result<(Vec<u8>, i64), tonic::Status> {
    let mut locks = c.lock();
    let req = LockRequest {
        name: name.to_vec(),
        lease,
    };
    let r = locks.lock(req).await?.into_inner();
    Ok((r.key, r.header.map(|h| h.revision).unwrap_or(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_is_granted_once_through_a_leader_kill() {
    let c = Cluster::builder(Impl::Oxcd).members(3).start();
    let leader = c.wait_leader(WAIT_MAX).await;
    let (f1, f2) = match leader {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let (c1, c2) = (client(&c, f1).await, client(&c, f2).await);
    let lease_a = grant(&c1, 5).await;
    let lease_b = grant(&c1, 60).await;
    let renew_a = keep_alive(client(&c, f2).await, lease_a);
    let renew_b = keep_alive(client(&c, f2).await, lease_b);
    let (key_a, _) = lock(&c2, b"jepsen", lease_a).await.expect("A locks");
    let waiter = {
        let c1 = c1.clone();
        tokio::spawn(async move { lock(&c1, b"jepsen", lease_b).await })
    };
    queued(&c1, format!("jepsen/{lease_b:x}").as_bytes()).await;

    c.kill9(leader);
    let _ = c.wait_leader(WAIT_MAX).await;
    // A's lease is kept alive: B must still wait, whatever happened to the leader.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!waiter.is_finished(), "B was granted the lock A holds");
    assert!(
        exists(&c2, &key_a).await,
        "A's key went while its lease was kept alive"
    );

    // A stops renewing: its lease expires, its key goes, and then B holds the lock.
    renew_a.abort();
    let granted = tokio::time::timeout(WAIT_MAX, waiter)
        .await
        .expect("B granted once A's lease expired")
        .expect("the waiter task")
        .unwrap_or_else(|e| panic!("B's lock: {e}; logs:\n{}", c.logs()));
    let (key_b, rev_b) = granted;
    let at_grant = RangeRequest {
        key: key_a.clone(),
        revision: rev_b,
        ..Default::default()
    };
    let a_at_grant = c1.kv().range(at_grant).await.expect("range").into_inner();
    assert!(a_at_grant.kvs.is_empty(), "B granted while A's key existed");
    assert!(exists(&c1, &key_b).await);

    // C waits behind B; C's lease expires meanwhile; B unlocks: C is refused.
    let lease_c = grant(&c1, 3).await;
    let c_waits = {
        let c2 = c2.clone();
        tokio::spawn(async move { lock(&c2, b"jepsen", lease_c).await })
    };
    let key_c = format!("jepsen/{lease_c:x}");
    queued(&c1, key_c.as_bytes()).await;
    // C's lease (3 s) expires while it waits: its key goes.
    let deadline = std::time::Instant::now() + WAIT_MAX;
    while exists(&c1, key_c.as_bytes()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "C's lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!c_waits.is_finished(), "C answered before B unlocked");
    c1.lock()
        .unlock(UnlockRequest { key: key_b })
        .await
        .expect("B unlocks");
    let refused = tokio::time::timeout(WAIT_MAX, c_waits)
        .await
        .expect("C answered")
        .expect("the waiter task");
    let err = refused.expect_err("C granted a lock its expired lease had lost");
    assert_eq!(err.message(), "session expired");
    renew_b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_election_follows_its_leaders() {
    let c = Cluster::builder(Impl::Oxcd).members(3).start();
    let leader = c.wait_leader(WAIT_MAX).await;
    let other = (leader + 1) % 3;
    let cl = client(&c, other).await;
    let (l1, l2) = (grant(&cl, 60).await, grant(&cl, 60).await);
    let campaign = |lease: i64, value: &'static [u8]| {
        let cl = cl.clone();
        async move {
            let mut elections = cl.election();
            let req = CampaignRequest {
                name: b"e".to_vec(),
                lease,
                value: value.to_vec(),
            };
            elections.campaign(req).await.map(|r| r.into_inner())
        }
    };
    let first = campaign(l1, b"one").await.expect("first campaign");
    let mut observe = cl
        .election()
        .observe(LeaderRequest {
            name: b"e".to_vec(),
        })
        .await
        .expect("observe")
        .into_inner();
    let seen = observe.message().await.expect("observe").expect("a leader");
    assert_eq!(seen.kv.map(|kv| kv.value), Some(b"one".to_vec()));
    let second = tokio::spawn(campaign(l2, b"two"));
    queued(&cl, format!("e/{l2:x}").as_bytes()).await;
    c.kill9(leader);
    let _ = c.wait_leader(WAIT_MAX).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !second.is_finished(),
        "a second leader while the first leads"
    );
    cl.election()
        .resign(oxcd_api::v3electionpb::ResignRequest {
            leader: first.leader,
        })
        .await
        .expect("resign");
    tokio::time::timeout(WAIT_MAX, second)
        .await
        .expect("the second campaign won")
        .expect("the task")
        .expect("the second campaign");
    let next = tokio::time::timeout(WAIT_MAX, observe.message())
        .await
        .expect("observe saw the new leader")
        .expect("observe")
        .expect("a leader");
    assert_eq!(next.kv.map(|kv| kv.value), Some(b"two".to_vec()));
}
