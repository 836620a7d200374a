//! A cluster of real `oxcd` processes on 127.0.0.x for process-level tests, driven over gRPC.
//! Every process is killed when the `Cluster` guard drops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, PutRequest, RangeRequest,
    StatusRequest,
};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_oxcd");

pub struct Member {
    pub name: String,
    pub ip: String,
    pub data: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// Flags for this member only (after the cluster's).
    pub extra: Vec<String>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub extra: Vec<String>,
    pub tls: Option<PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    /// Three members on `127.0.0.{base+1..3}`, plain http unless `tls` names a dir of
    /// tutorial-style certificates.
    pub fn start(base: u8, extra: &[&str], tls: Option<PathBuf>) -> Cluster {
        Cluster::start_n(base, 3, extra, tls)
    }

    /// `n` members on `127.0.0.{base+1..=base+n}`.
    pub fn start_n(base: u8, n: u8, extra: &[&str], tls: Option<PathBuf>) -> Cluster {
        let mut c = Cluster::new_n(base, n, extra, tls);
        for i in 0..c.members.len() {
            c.spawn(i);
        }
        c
    }

    /// Like [`Cluster::start_n`], but nothing runs yet (data dirs can be prepared first).
    pub fn new_n(base: u8, n: u8, extra: &[&str], tls: Option<PathBuf>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (1..=n)
            .map(|n| Member {
                name: format!("m{n}"),
                ip: format!("127.0.0.{}", base + n),
                data: dir.path().join(format!("m{n}")),
                log: dir.path().join(format!("m{n}.log")),
                child: None,
                extra: Vec::new(),
            })
            .collect();
        Cluster {
            dir,
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
        }
    }

    /// `--initial-cluster` as the members are started with.
    pub fn initial_cluster(&self) -> String {
        let s = self.scheme();
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={s}://{}:2380", m.name, m.ip))
            .collect();
        cluster.join(",")
    }

    /// Adds a member that is not running yet (start it with [`Cluster::spawn`]); its
    /// `--initial-cluster` lists every member known here, itself included.
    pub fn push_member(&mut self, name: &str, ip: &str, extra: &[&str]) -> usize {
        let dir = self.dir.path();
        self.members.push(Member {
            name: name.to_string(),
            ip: ip.to_string(),
            data: dir.join(name),
            log: dir.join(format!("{name}.log")),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        });
        self.members.len() - 1
    }

    /// Member `i`'s ID, as etcd computes it from its peer URL and the token.
    pub fn id(&self, i: usize) -> u64 {
        member_id(&self.peer_url(i), "test-cluster")
    }

    /// Member `i`'s peer URL.
    pub fn peer_url(&self, i: usize) -> String {
        format!("{}://{}:2380", self.scheme(), self.members[i].ip)
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn args(&self, i: usize) -> Vec<String> {
        let s = self.scheme();
        let m = &self.members[i];
        let mut a = vec![
            format!("--name={}", m.name),
            format!("--data-dir={}", m.data.display()),
            format!("--initial-advertise-peer-urls={s}://{}:2380", m.ip),
            format!("--listen-peer-urls={s}://{}:2380", m.ip),
            format!("--listen-client-urls=http://{}:2379", m.ip),
            format!("--advertise-client-urls=http://{}:2379", m.ip),
            "--initial-cluster-token=test-cluster".into(),
            format!("--initial-cluster={}", self.initial_cluster()),
        ];
        if let Some(d) = &self.tls {
            let n = i + 1;
            a.push(format!(
                "--peer-cert-file={}",
                d.join(format!("peer{n}.pem")).display()
            ));
            a.push(format!(
                "--peer-key-file={}",
                d.join(format!("peer{n}-key.pem")).display()
            ));
            a.push(format!(
                "--peer-trusted-ca-file={}",
                d.join("ca.pem").display()
            ));
            a.push("--peer-client-cert-auth=true".into());
        }
        a.extend(self.extra.iter().cloned());
        a.extend(m.extra.iter().cloned());
        a
    }

    pub fn spawn(&mut self, i: usize) {
        let args = self.args(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.members[i].log)
            .expect("log file");
        let child = Command::new(BIN)
            .args(&args)
            .env("OXCD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start oxcd");
        self.members[i].child = Some(child);
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}:2379", self.members[i].ip)
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    pub async fn kv(&self, i: usize) -> Option<KvClient<Channel>> {
        let ch = Channel::from_shared(self.endpoint(i))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(3))
            .connect()
            .await
            .ok()?;
        Some(KvClient::new(ch))
    }

    /// Waits (bounded) until a member names a leader; its index.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index of the member every reachable member names as leader.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let Ok(ch) = Channel::from_shared(self.endpoint(i)) else {
                continue;
            };
            let Ok(ch) = ch.timeout(Duration::from_secs(2)).connect().await else {
                continue;
            };
            let Ok(st) = MaintenanceClient::new(ch).status(StatusRequest {}).await else {
                continue;
            };
            let leader = st.into_inner().leader;
            if leader == 0 {
                continue;
            }
            let ids = self.member_ids().await;
            return ids.iter().position(|id| *id == leader);
        }
        None
    }

    pub async fn member_ids(&self) -> Vec<u64> {
        (0..self.members.len())
            .map(|i| {
                let m = &self.members[i];
                let url = format!("{}://{}:2380", self.scheme(), m.ip);
                member_id(&url, "test-cluster")
            })
            .collect()
    }

    /// Waits (bounded) until a put through member `i` succeeds.
    pub async fn wait_writable(&self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(mut kv) = self.kv(i).await {
                let put = PutRequest {
                    key: b"probe".to_vec(),
                    value: b"1".to_vec(),
                    ..Default::default()
                };
                if kv.put(put).await.is_ok() {
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
        let mut kv = self.kv(i).await?;
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut()? += 1;
        let r = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            serializable: true,
            ..Default::default()
        };
        let resp = kv.range(r).await.ok()?.into_inner();
        Some(
            resp.kvs
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        String::from_utf8_lossy(&kv.value).into_owned(),
                    )
                })
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
        let mut last_missing = usize::MAX;
        while Instant::now() < deadline {
            if let Some(have) = self.local_keys(i, prefix).await {
                let missing: Vec<_> = want
                    .iter()
                    .filter(|(k, v)| have.get(*k) != Some(v))
                    .collect();
                if missing.is_empty() {
                    return;
                }
                last_missing = missing.len();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "member {i} misses {last_missing} of {} acknowledged writes; log:\n{}",
            want.len(),
            self.log(i)
        );
    }
}

pub fn member_id(peer_url: &str, token: &str) -> u64 {
    oxcd_server::ids::member_id(&[peer_url.to_string()], token)
}

/// Puts `count` keys `prefix{n}` through any member that answers; returns what was acked.
pub async fn write_keys(c: &Cluster, prefix: &str, count: usize) -> BTreeMap<String, String> {
    let mut acked = BTreeMap::new();
    let live: Vec<usize> = (0..c.members.len())
        .filter(|i| c.members[*i].child.is_some())
        .collect();
    let mut clients = Vec::new();
    for i in &live {
        if let Some(kv) = c.kv(*i).await {
            clients.push(kv);
        }
    }
    assert!(!clients.is_empty(), "no member reachable");
    for n in 0..count {
        let key = format!("{prefix}{n:06}");
        let value = format!("value-{n}");
        let mut done = false;
        for attempt in 0..20 {
            let pick = (n + attempt) % clients.len();
            let kv = &mut clients[pick];
            let put = PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            if kv.put(put).await.is_ok() {
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

/// The real etcdctl against member `i` (plain http).
pub fn ctl(c: &Cluster, i: usize, args: &[&str]) -> super::Output {
    super::etcdctl(&c.endpoint(i), None, args, b"")
}

/// The error line etcdctl ends with (before it, its client logs each failed attempt).
pub fn error_line(out: &super::Output) -> &str {
    out.stderr.lines().last().unwrap_or_default()
}

/// Polls `ok` every 200 ms until it holds; fails the test after `within`.
pub fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (at most 20 s) until every member serves the same revision; returns it.
pub fn wait_same_revision(c: &Cluster) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let revs: Vec<i64> = (0..c.members.len())
            .map(|i| {
                let out = ctl(c, i, &["get", "x", "--consistency=s", "-w", "json"]);
                let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
                v["header"]["revision"].as_i64().unwrap_or(-1)
            })
            .collect();
        if revs.iter().all(|r| *r > 0 && *r == revs[0]) {
            return revs[0];
        }
        assert!(
            Instant::now() < deadline,
            "members never agreed on a revision: {revs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
