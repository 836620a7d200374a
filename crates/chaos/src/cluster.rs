//! The cluster under test: real `oxcd` processes with TLS (client and peer, mutual auth),
//! member `mN` on 127.0.0.(10+N), ports 2379/2380, each with its own data dir and log. Also
//! the gRPC clients the suite uses to ask members about themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use oxcd_api::etcdserverpb::{HashKvRequest, StatusRequest};
use oxcd_client::{Client, ClientTlsFiles, TlsMode};

use crate::netns::{CLIENT_PORT, PEER_PORT};

/// Raft timing of every member (etcd's defaults are 100/1000 ms).
pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_TIMEOUT_MS: u64 = 1000;
/// Small, so that the log is compacted often and a member that falls behind needs a
/// snapshot (oxcd keeps this many entries behind a snapshot for slow followers).
pub const SNAPSHOT_COUNT: u64 = 300;
/// How long a status or hash request may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

pub fn member_ip(idx: usize) -> String {
    format!("127.0.0.{}", 11 + idx)
}

pub fn member_name(idx: usize) -> String {
    format!("m{}", idx + 1)
}

pub fn client_url(idx: usize) -> String {
    format!("https://{}:{CLIENT_PORT}", member_ip(idx))
}

pub fn peer_url(idx: usize) -> String {
    format!("https://{}:{PEER_PORT}", member_ip(idx))
}

/// The peer URL member `idx` advertises: its own listener, or the peer proxy in front of it.
pub fn advertised_peer_url(idx: usize, proxied: bool) -> String {
    if proxied {
        format!("https://{}:{}", member_ip(idx), crate::proxy::PROXY_PORT)
    } else {
        peer_url(idx)
    }
}

/// Client TLS for the suite's gRPC clients.
pub fn tls_mode(pki: &Path) -> anyhow::Result<TlsMode> {
    let files = ClientTlsFiles {
        cert_file: Some(pki.join("client.pem")),
        key_file: Some(pki.join("client-key.pem")),
        trusted_ca_file: Some(pki.join("ca.pem")),
        skip_verify: false,
    };
    Ok(TlsMode::Tls(oxcd_client::tls_config(&files)?))
}

/// Dials member `idx` (bounded).
pub async fn dial(tls: &TlsMode, idx: usize) -> anyhow::Result<Client> {
    let ep = oxcd_client::parse_endpoint(&client_url(idx))?;
    let ch = oxcd_client::connect(&ep, tls, Duration::from_secs(1)).await?;
    Ok(Client::new(ch, ep))
}

/// One member's process and files.
pub struct Member {
    pub idx: usize,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The chaos control file the member polls (`OXCD_CHAOS_CONTROL`): its clock offset and
    /// failpoints armed at run time.
    pub control: PathBuf,
    /// The flags of its first start (a restart reuses them; the data dir then wins).
    pub args: Vec<String>,
    child: Option<Child>,
    pub paused: bool,
}

impl Member {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// Reaps the process if it exited on its own; returns its status text.
    pub fn reap(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.paused = false;
        Some(status.to_string())
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child, which we have not reaped.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// All members that may ever run in this run (the initial ones plus spares for joins).
pub struct Cluster {
    pub dir: PathBuf,
    pub pki: PathBuf,
    pub oxcd: PathBuf,
    pub members: Vec<Member>,
    /// Indexes of the members that are part of the cluster now.
    pub active: Vec<usize>,
    pub tls: TlsMode,
    /// Whether members advertise the peer proxy's URL (runs with delay or loss on peers).
    pub proxied: bool,
    /// Data dirs moved onto a tmpfs of their own (disk-full).
    pub tmpfs: Vec<PathBuf>,
    clients: BTreeMap<usize, Client>,
}

impl Cluster {
    pub fn new(
        dir: &Path,
        pki: &Path,
        oxcd: &Path,
        initial: usize,
        spares: usize,
        proxied: bool,
    ) -> anyhow::Result<Cluster> {
        let members = (0..initial + spares)
            .map(|idx| Member {
                idx,
                data_dir: dir.join(format!("{}.data", member_name(idx))),
                log: dir.join(format!("{}.log", member_name(idx))),
                control: dir.join(format!("{}.chaos", member_name(idx))),
                args: Vec::new(),
                child: None,
                paused: false,
            })
            .collect();
        Ok(Cluster {
            dir: dir.to_path_buf(),
            pki: pki.to_path_buf(),
            oxcd: oxcd.to_path_buf(),
            members,
            active: (0..initial).collect(),
            tls: tls_mode(pki)?,
            proxied,
            tmpfs: Vec::new(),
            clients: BTreeMap::new(),
        })
    }

    fn flags(&self, idx: usize, cluster: &[usize], state: &str) -> Vec<String> {
        let pki = |f: &str| self.pki.join(f).display().to_string();
        let name = member_name(idx);
        let initial: Vec<String> = cluster
            .iter()
            .map(|&i| format!("{}={}", member_name(i), self.peer_url(i)))
            .collect();
        vec![
            format!("--name={name}"),
            format!("--data-dir={}", self.members[idx].data_dir.display()),
            format!("--listen-client-urls={}", client_url(idx)),
            format!("--advertise-client-urls={}", client_url(idx)),
            format!("--listen-peer-urls={}", peer_url(idx)),
            format!("--initial-advertise-peer-urls={}", self.peer_url(idx)),
            format!("--initial-cluster={}", initial.join(",")),
            format!("--initial-cluster-state={state}"),
            "--initial-cluster-token=oxchaos".to_string(),
            format!("--trusted-ca-file={}", pki("ca.pem")),
            format!("--cert-file={}", pki("server.pem")),
            format!("--key-file={}", pki("server-key.pem")),
            "--client-cert-auth=true".to_string(),
            format!("--peer-trusted-ca-file={}", pki("ca.pem")),
            format!("--peer-cert-file={}", pki(&format!("{name}.pem"))),
            format!("--peer-key-file={}", pki(&format!("{name}-key.pem"))),
            "--peer-client-cert-auth=true".to_string(),
            format!("--heartbeat-interval={HEARTBEAT_MS}"),
            format!("--election-timeout={ELECTION_TIMEOUT_MS}"),
            format!("--snapshot-count={SNAPSHOT_COUNT}"),
        ]
    }

    /// The peer URL member `idx` advertises in this run.
    pub fn peer_url(&self, idx: usize) -> String {
        advertised_peer_url(idx, self.proxied)
    }

    /// Rewrites member `idx`'s chaos control file (a running member picks it up within
    /// 50 ms); empty text disarms everything.
    pub fn control(&self, idx: usize, text: &str) -> anyhow::Result<()> {
        let m = &self.members[idx];
        let tmp = m.control.with_extension("chaos.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &m.control)?;
        Ok(())
    }

    /// Starts the initial members.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let active = self.active.clone();
        for &i in &active {
            self.members[i].args = self.flags(i, &active, "new");
            self.launch(i, None)?;
        }
        Ok(())
    }

    /// Starts member `idx` to join the current cluster (after MemberAdd).
    pub fn start_joining(&mut self, idx: usize) -> anyhow::Result<()> {
        let mut cluster = self.active.clone();
        if !cluster.contains(&idx) {
            cluster.push(idx);
        }
        self.members[idx].args = self.flags(idx, &cluster, "existing");
        self.launch(idx, None)
    }

    /// (Re)starts member `idx` with its flags, optionally with armed failpoints.
    pub fn launch(&mut self, idx: usize, failpoints: Option<&str>) -> anyhow::Result<()> {
        let m = &mut self.members[idx];
        if m.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("open {}", m.log.display()))?;
        use std::io::Write as _;
        let mut header = log.try_clone()?;
        let _ = writeln!(
            header,
            "=== oxchaos: start {} (failpoints: {})",
            member_name(idx),
            failpoints.unwrap_or("none")
        );
        let mut cmd = Command::new(&self.oxcd);
        cmd.args(&m.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env_remove("FAILPOINTS")
            .env("OXCD_CHAOS_CONTROL", &m.control);
        if let Some(fp) = failpoints {
            cmd.env("FAILPOINTS", fp);
        }
        m.child = Some(
            cmd.spawn()
                .with_context(|| format!("start {}", self.oxcd.display()))?,
        );
        m.paused = false;
        self.clients.remove(&idx);
        Ok(())
    }

    pub fn kill9(&mut self, idx: usize) {
        let m = &mut self.members[idx];
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        m.paused = false;
        self.clients.remove(&idx);
    }

    pub fn pause(&mut self, idx: usize) {
        self.members[idx].signal(libc::SIGSTOP);
        self.members[idx].paused = true;
    }

    pub fn resume(&mut self, idx: usize) {
        self.members[idx].signal(libc::SIGCONT);
        self.members[idx].paused = false;
    }

    pub fn kill_everything(&mut self) {
        for i in 0..self.members.len() {
            self.resume(i);
            self.kill9(i);
        }
    }

    async fn client(&mut self, idx: usize) -> anyhow::Result<Client> {
        if let Some(c) = self.clients.get(&idx) {
            return Ok(c.clone());
        }
        let c = dial(&self.tls, idx).await?;
        self.clients.insert(idx, c.clone());
        Ok(c)
    }

    /// Member `idx`'s view: (its member ID, the leader's ID, its revision, raft index).
    pub async fn status(&mut self, idx: usize) -> anyhow::Result<Status> {
        let c = self.client(idx).await?;
        let r = tokio::time::timeout(STATUS_TIMEOUT, c.maintenance().status(StatusRequest {}))
            .await
            .context("status timed out")?;
        let r = match r {
            Ok(r) => r.into_inner(),
            Err(e) => {
                self.clients.remove(&idx);
                return Err(e.into());
            }
        };
        let h = r.header.unwrap_or_default();
        Ok(Status {
            member_id: h.member_id,
            leader: r.leader,
            revision: h.revision,
            applied: r.raft_applied_index,
            is_learner: r.is_learner,
        })
    }

    /// The index of the member a majority of the reachable active members call leader.
    pub async fn leader(&mut self) -> Option<usize> {
        let mut ids: BTreeMap<u64, usize> = BTreeMap::new();
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for i in self.active.clone() {
            if !self.members[i].running() || self.members[i].paused {
                continue;
            }
            if let Ok(s) = self.status(i).await {
                ids.insert(s.member_id, i);
                if s.leader != 0 {
                    *votes.entry(s.leader).or_default() += 1;
                }
            }
        }
        let quorum = self.active.len() / 2 + 1;
        let (id, _) = votes.into_iter().find(|(_, n)| *n >= quorum)?;
        ids.get(&id).copied()
    }

    /// Waits (bounded) until a majority agrees on a leader.
    pub async fn wait_leader(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!("no leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// HashKV of member `idx` at `rev`.
    pub async fn hash_kv(&mut self, idx: usize, rev: i64) -> anyhow::Result<u32> {
        let c = self.client(idx).await?;
        let r = tokio::time::timeout(
            STATUS_TIMEOUT * 5,
            c.maintenance().hash_kv(HashKvRequest { revision: rev }),
        )
        .await
        .context("hashkv timed out")??;
        Ok(r.into_inner().hash)
    }

    pub fn shared_tls(&self) -> Arc<TlsMode> {
        Arc::new(self.tls.clone())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub member_id: u64,
    pub leader: u64,
    pub revision: i64,
    pub applied: u64,
    pub is_learner: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_everything();
        self.off_tmpfs();
    }
}
