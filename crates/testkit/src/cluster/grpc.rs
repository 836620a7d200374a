//! The harness's gRPC side: clients of a member (plain or TLS), its Status, the leader the
//! live members agree on, and bounded waits for writes to go through and to arrive.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest, StatusRequest};
use oxcd_client::Client;
use tonic::transport::Channel;

use super::Cluster;

/// How long a harness client waits for a member to accept a connection, and for an answer.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// What member `i` says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub member_id: u64,
    /// 0 while it knows no leader.
    pub leader: u64,
    pub raft_term: u64,
}

/// Runs `fut` to completion on a thread of its own with its own runtime, so that synchronous
/// harness calls work inside and outside a test's tokio runtime alike.
pub(super) fn block_on<F: Future + Send>(fut: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(fut)
        });
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl Cluster {
    /// A client of member `i` (with the client certificate when the client URLs are TLS);
    /// None if it does not accept the connection within 2 s.
    pub async fn client(&self, i: usize) -> Option<Client> {
        let ep = oxcd_client::parse_endpoint(&self.endpoint(i)).ok()?;
        let ch = oxcd_client::connect(&ep, &self.tls_mode, DIAL_TIMEOUT)
            .await
            .ok()?;
        Some(Client::new(ch, ep))
    }

    /// A KV client of member `i` over plain http whose every call gives up after 3 s; None
    /// if it does not accept the connection within 500 ms.
    pub async fn kv(&self, i: usize) -> Option<KvClient<Channel>> {
        assert!(
            !self.tls.client,
            "kv() dials plain http: use client() on a cluster with TLS client URLs"
        );
        let ch = Channel::from_shared(self.endpoint(i))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .ok()?;
        Some(KvClient::new(ch))
    }

    /// Member `i`'s Status; None if it is not running or does not answer within 2 s.
    pub async fn status(&self, i: usize) -> Option<Status> {
        self.pid(i)?;
        let c = self.client(i).await?;
        let st = tokio::time::timeout(DIAL_TIMEOUT, c.maintenance().status(StatusRequest {}))
            .await
            .ok()?
            .ok()?
            .into_inner();
        Some(Status {
            member_id: st.header?.member_id,
            leader: st.leader,
            raft_term: st.raft_term,
        })
    }

    /// The index of the leader every live member names, if they agree on a live one.
    pub async fn leader(&self) -> Option<usize> {
        let mut seen = Vec::new();
        for i in 0..self.len() {
            seen.push(self.status(i).await);
        }
        let leaders: Vec<u64> = seen.iter().flatten().map(|s| s.leader).collect();
        let leader = *leaders.first()?;
        if leader == 0 || leaders.iter().any(|l| *l != leader) {
            return None;
        }
        seen.iter()
            .position(|s| s.is_some_and(|s| s.member_id == leader))
    }

    /// Waits (bounded) until the live members agree on a live leader; its index.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(i) = self.leader().await {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no agreed leader within {within:?}; logs:\n{}", self.logs());
    }

    /// Waits (bounded) until a put through member `i` succeeds.
    pub async fn wait_writable(&self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = self.client(i).await {
                let put = PutRequest {
                    key: b"probe".to_vec(),
                    value: b"1".to_vec(),
                    ..Default::default()
                };
                let r = tokio::time::timeout(CALL_TIMEOUT, c.kv().put(put)).await;
                if matches!(r, Ok(Ok(_))) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "member {i} not writable within {within:?}; log:\n{}",
            self.log(i)
        );
    }

    /// Every key under `prefix` as member `i` has it (serializable: its local state).
    pub async fn local_keys(&self, i: usize, prefix: &str) -> Option<BTreeMap<String, String>> {
        let c = self.client(i).await?;
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut()? += 1;
        let r = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            serializable: true,
            ..Default::default()
        };
        let resp = tokio::time::timeout(CALL_TIMEOUT, c.kv().range(r))
            .await
            .ok()?
            .ok()?
            .into_inner();
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        Some(
            resp.kvs
                .into_iter()
                .map(|kv| (text(kv.key), text(kv.value)))
                .collect(),
        )
    }

    /// Waits (bounded) until member `i` holds every expected key with its value.
    pub async fn expect_keys(
        &self,
        i: usize,
        prefix: &str,
        want: &BTreeMap<String, String>,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        let mut last_missing = want.len();
        while Instant::now() < deadline {
            if let Some(have) = self.local_keys(i, prefix).await {
                last_missing = want.iter().filter(|(k, v)| have.get(*k) != Some(v)).count();
                if last_missing == 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "member {i} misses {last_missing} of {} acknowledged writes; log:\n{}",
            want.len(),
            self.log(i)
        );
    }

    /// Puts `count` keys `prefix{n:06}` through the running members (each put retried on
    /// the next one, at most 20 times); returns what was acknowledged.
    pub async fn write_keys(&self, prefix: &str, count: usize) -> BTreeMap<String, String> {
        let mut clients = Vec::new();
        for i in (0..self.len()).filter(|i| self.pid(*i).is_some()) {
            if let Some(c) = self.client(i).await {
                clients.push(c);
            }
        }
        assert!(!clients.is_empty(), "no member reachable");
        let mut acked = BTreeMap::new();
        for n in 0..count {
            let key = format!("{prefix}{n:06}");
            let value = format!("value-{n}");
            let mut done = false;
            for attempt in 0..20 {
                let c = &clients[(n + attempt) % clients.len()];
                let put = PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    ..Default::default()
                };
                if matches!(
                    tokio::time::timeout(CALL_TIMEOUT, c.kv().put(put)).await,
                    Ok(Ok(_))
                ) {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(done, "put {key} never succeeded");
            acked.insert(key, value);
        }
        acked
    }
}
