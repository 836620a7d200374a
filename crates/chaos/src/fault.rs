//! The faults: each is injected at a random moment under load, held for a while, and healed;
//! the run records the window. All of them act on real processes (signals), the namespace's
//! firewall, the membership API, or failpoints armed through the FAILPOINTS variable of a
//! chaos build of oxcd or its chaos control file; those of a member's surroundings (network
//! delay and loss, disk, clock) are in [`crate::fault_env`].

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use oxcd_api::etcdserverpb::cluster_client::ClusterClient;
use oxcd_api::etcdserverpb::{
    MemberAddRequest, MemberPromoteRequest, MemberRemoveRequest, PutRequest,
};
use oxcd_client::Svc;
use rand::{rngs::StdRng, seq::SliceRandom as _, Rng as _};
use serde::{Deserialize, Serialize};

use crate::cluster::{self, Cluster};
use crate::fault_env;
use crate::netns::Firewall;
use crate::proxy::ProxyCtl;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    KillLeader,
    KillFollower,
    KillMajority,
    KillAll,
    PauseLeader,
    PauseFollower,
    PartitionLeader,
    PartitionMinority,
    PartitionOneWay,
    PartitionBridge,
    SnapshotCatchup,
    MemberReplace,
    FailBeforeSave,
    FailAfterSave,
    FailBeforeApply,
    FailAfterApply,
    FailSnapshotApply,
    FailSnapshotSend,
    DelayPeers,
    LossyPeers,
    DiskFull,
    FsyncError,
    ClockJump,
}

impl Fault {
    pub const ALL: [Fault; 23] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::KillMajority,
        Fault::KillAll,
        Fault::PauseLeader,
        Fault::PauseFollower,
        Fault::PartitionLeader,
        Fault::PartitionMinority,
        Fault::PartitionOneWay,
        Fault::PartitionBridge,
        Fault::SnapshotCatchup,
        Fault::MemberReplace,
        Fault::FailBeforeSave,
        Fault::FailAfterSave,
        Fault::FailBeforeApply,
        Fault::FailAfterApply,
        Fault::FailSnapshotApply,
        Fault::FailSnapshotSend,
        Fault::DelayPeers,
        Fault::LossyPeers,
        Fault::DiskFull,
        Fault::FsyncError,
        Fault::ClockJump,
    ];

    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// Whether the fault needs oxcd built with `--features failpoints`.
    pub fn needs_failpoints(self) -> bool {
        self.failpoint().is_some() || self == Fault::ClockJump
    }

    /// Whether the run's members must talk to each other through the peer proxy.
    pub fn needs_proxy(self) -> bool {
        matches!(self, Fault::DelayPeers | Fault::LossyPeers)
    }

    fn failpoint(self) -> Option<&'static str> {
        match self {
            Fault::FailBeforeSave => Some("raft_before_save"),
            Fault::FailAfterSave => Some("raft_after_save"),
            Fault::FailBeforeApply => Some("raft_before_apply"),
            Fault::FailAfterApply => Some("raft_after_apply"),
            Fault::FailSnapshotApply => Some("raft_snapshot_mid_apply"),
            Fault::FailSnapshotSend => Some("raft_snapshot_send"),
            Fault::FsyncError => Some("raft_wal_sync_eio"),
            _ => None,
        }
    }
}

/// One injected fault, as the report shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub fault: Fault,
    pub start_us: u64,
    pub end_us: u64,
    pub detail: String,
    /// From heal until a write was accepted again.
    pub recovery_ms: Option<u64>,
}

/// What faults act through besides the cluster: the namespace's firewall, and the peer
/// proxy when the run has one.
pub struct Tools {
    pub fw: Firewall,
    pub proxy: Option<std::sync::Arc<ProxyCtl>>,
}

impl Tools {
    /// Undoes every network fault: firewall rules, proxy delays and cuts.
    pub fn heal(&self) -> anyhow::Result<()> {
        if let Some(p) = &self.proxy {
            p.heal();
        }
        self.fw.heal()
    }
}

/// Hold times: longer than the election timeout, so pauses and partitions depose leaders.
pub(crate) fn hold(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.gen_range(1_500..3_500))
}

/// How a fault is undone.
enum Undo {
    Restart(Vec<usize>),
    Resume(Vec<usize>),
    Heal,
}

fn pick_follower(c: &Cluster, leader: usize, rng: &mut StdRng) -> usize {
    let followers: Vec<usize> = c.active.iter().copied().filter(|&i| i != leader).collect();
    followers.choose(rng).copied().unwrap_or(leader)
}

/// Injects `fault`, holds it, heals it. Returns the detail text.
pub async fn inject(
    fault: Fault,
    c: &mut Cluster,
    t: &Tools,
    rng: &mut StdRng,
    hold_override: Option<Duration>,
) -> anyhow::Result<String> {
    let fw = &t.fw;
    let leader = c
        .wait_leader(Duration::from_secs(15))
        .await
        .context("before the fault")?;
    let (detail, undo) = match fault {
        Fault::KillLeader
        | Fault::KillFollower
        | Fault::KillMajority
        | Fault::KillAll
        | Fault::PauseLeader
        | Fault::PauseFollower => signal(fault, c, leader, rng)?,
        Fault::PartitionLeader
        | Fault::PartitionMinority
        | Fault::PartitionOneWay
        | Fault::PartitionBridge => (partition(fault, c, fw, leader, rng)?, Undo::Heal),
        Fault::SnapshotCatchup => return snapshot_catchup(c, leader, rng, None).await,
        Fault::FailSnapshotApply => {
            return snapshot_catchup(c, leader, rng, fault.failpoint()).await
        }
        Fault::MemberReplace => return member_replace(c, leader, rng).await,
        Fault::FailSnapshotSend => return crash_building_snapshot(c, leader, rng).await,
        Fault::DelayPeers => return fault_env::delay_peers(t, rng).await,
        Fault::LossyPeers => return fault_env::lossy_peers(t, rng).await,
        Fault::DiskFull => return fault_env::disk_full(c, rng).await,
        Fault::FsyncError => return fault_env::fsync_error(c, rng).await,
        Fault::ClockJump => return fault_env::clock_jump(c, leader, rng).await,
        Fault::FailBeforeSave
        | Fault::FailAfterSave
        | Fault::FailBeforeApply
        | Fault::FailAfterApply => return crash_at_failpoint(fault, c, leader, rng).await,
    };
    let held = hold(rng);
    tokio::time::sleep(hold_override.unwrap_or(held)).await;
    match undo {
        Undo::Restart(v) => {
            for i in v {
                c.launch(i, None)?;
            }
        }
        Undo::Resume(v) => {
            for i in v {
                c.resume(i);
            }
        }
        Undo::Heal => t.heal()?,
    }
    Ok(detail)
}

/// Kills (SIGKILL) or pauses (SIGSTOP) the leader, a follower, a majority or every member;
/// undone by a restart or SIGCONT.
fn signal(
    fault: Fault,
    c: &mut Cluster,
    leader: usize,
    rng: &mut StdRng,
) -> anyhow::Result<(String, Undo)> {
    let (victims, who) = match fault {
        Fault::KillLeader | Fault::PauseLeader => (
            vec![leader],
            format!("leader {}", cluster::member_name(leader)),
        ),
        Fault::KillFollower | Fault::PauseFollower => {
            let f = pick_follower(c, leader, rng);
            (vec![f], format!("follower {}", cluster::member_name(f)))
        }
        Fault::KillMajority | Fault::KillAll => {
            let mut victims = c.active.clone();
            victims.shuffle(rng);
            if fault == Fault::KillMajority {
                victims.truncate(c.active.len() / 2 + 1);
            }
            let who = names(&victims);
            (victims, who)
        }
        _ => bail!("{fault:?} is not a kill or a pause"),
    };
    if matches!(fault, Fault::PauseLeader | Fault::PauseFollower) {
        for &v in &victims {
            c.pause(v);
        }
        Ok((format!("SIGSTOP {who}"), Undo::Resume(victims)))
    } else {
        for &v in &victims {
            c.kill9(v);
        }
        Ok((format!("kill -9 {who}"), Undo::Restart(victims)))
    }
}

/// Cuts the network (healed by flushing the firewall): the leader off from the rest, a
/// minority off from the majority, the leader's sends only, or two halves bridged only by
/// the leader. Returns the detail text.
fn partition(
    fault: Fault,
    c: &Cluster,
    fw: &Firewall,
    leader: usize,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    let lname = cluster::member_name(leader);
    let ip = cluster::member_ip;
    let others: Vec<usize> = c.active.iter().copied().filter(|&i| i != leader).collect();
    match fault {
        Fault::PartitionLeader => {
            for &o in &others {
                fw.cut(&ip(leader), &ip(o))?;
            }
            Ok(format!("leader {lname} isolated from {}", names(&others)))
        }
        Fault::PartitionMinority => {
            let mut minority = others.clone();
            minority.shuffle(rng);
            minority.truncate((c.active.len() - 1) / 2);
            for &m in &minority {
                for &o in c.active.iter().filter(|&&o| !minority.contains(&o)) {
                    fw.cut(&ip(m), &ip(o))?;
                }
            }
            Ok(format!("minority {} cut off", names(&minority)))
        }
        Fault::PartitionOneWay => {
            for &o in &others {
                fw.drop_one_way(&ip(leader), &ip(o))?;
            }
            Ok(format!(
                "leader {lname} cannot send to {} (it still receives)",
                names(&others)
            ))
        }
        Fault::PartitionBridge => {
            // Two halves that cannot talk, and one member (the leader) that talks to both.
            let mut rest = others.clone();
            rest.shuffle(rng);
            let (a, b) = rest.split_at(rest.len() / 2);
            for &x in a {
                for &y in b {
                    fw.cut(&ip(x), &ip(y))?;
                }
            }
            Ok(format!("bridge: {} | {lname} | {}", names(a), names(b)))
        }
        _ => bail!("{fault:?} is not a partition"),
    }
}

/// Restarts any member, the leader included, with the fault's failpoint armed to crash after
/// a random number of hits under load, then restarts it clean.
async fn crash_at_failpoint(
    fault: Fault,
    c: &mut Cluster,
    leader: usize,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    let Some(fp) = fault.failpoint() else {
        bail!("no failpoint for {fault:?}");
    };
    let victim = *c.active.choose(rng).unwrap_or(&leader);
    let hits = rng.gen_range(5..60);
    c.kill9(victim);
    c.launch(victim, Some(&format!("{fp}={hits}*off->panic")))?;
    let crashed = wait_exit(c, victim, Duration::from_secs(8)).await;
    c.kill9(victim);
    c.launch(victim, None)?;
    Ok(format!(
        "{} restarted with {fp} armed to crash after {hits} hits: {}",
        cluster::member_name(victim),
        crashed.unwrap_or_else(|| "it did not crash within 8s (killed)".into())
    ))
}

/// The faults' names joined by `sep`.
pub fn join_names(faults: &[Fault], sep: &str) -> String {
    faults
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(sep)
}

fn names(v: &[usize]) -> String {
    let n: Vec<String> = v.iter().map(|&i| cluster::member_name(i)).collect();
    n.join("+")
}

pub(crate) async fn wait_exit(c: &mut Cluster, idx: usize, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = c.members[idx].reap() {
            return Some(format!("exited ({status})"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Kills a follower, writes enough that the leader compacts its log past it, restarts it
/// (with `failpoint` armed if given) so that it must catch up from a snapshot.
async fn snapshot_catchup(
    c: &mut Cluster,
    leader: usize,
    rng: &mut StdRng,
    failpoint: Option<&str>,
) -> anyhow::Result<String> {
    let f = pick_follower(c, leader, rng);
    c.kill9(f);
    let fill = cluster::SNAPSHOT_COUNT * 3;
    let written = fill_writes(c, leader, fill).await;
    let log_before = std::fs::metadata(&c.members[f].log)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut detail = format!(
        "follower {} down while {written} extra writes went in",
        cluster::member_name(f)
    );
    if let Some(fp) = failpoint {
        c.launch(f, Some(&format!("{fp}=panic")))?;
        let crashed = wait_exit(c, f, Duration::from_secs(10)).await;
        c.kill9(f);
        detail.push_str(&format!(
            "; restarted with {fp} armed: {}",
            crashed.unwrap_or_else(|| "it did not crash within 10s (killed)".into())
        ));
    }
    c.launch(f, None)?;
    // Did it install a snapshot? (oxcd logs "applying snapshot at index ...")
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut installed = false;
    while Instant::now() < deadline && !installed {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = std::fs::read(&c.members[f].log).unwrap_or_default();
        let start = usize::try_from(log_before).unwrap_or(0).min(log.len());
        installed = String::from_utf8_lossy(&log[start..]).contains("applying snapshot");
    }
    detail.push_str(if installed {
        "; it caught up by installing a snapshot"
    } else {
        "; NO snapshot install seen in its log within 10s"
    });
    Ok(detail)
}

/// The leader crashes while it builds the snapshot a lagging follower needs: a follower is
/// killed while enough writes go in that the log is compacted past it, every other member
/// has `raft_snapshot_send` armed (through its control file: no restart, the leader stays
/// leader), and the follower is restarted. The first member to build a snapshot crashes;
/// every member is disarmed at once, the crashed one restarted, and the follower must
/// still catch up from a snapshot the next leader sends.
async fn crash_building_snapshot(
    c: &mut Cluster,
    leader: usize,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    let f = pick_follower(c, leader, rng);
    let armed: Vec<usize> = c.active.iter().copied().filter(|&i| i != f).collect();
    c.kill9(f);
    let written = fill_writes(c, leader, cluster::SNAPSHOT_COUNT * 3).await;
    for &i in &armed {
        c.control(i, "raft_snapshot_send=panic\n")?;
    }
    // Let every armed member read its control file before the follower asks for anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log_before = fault_env::log_len(&c.members[f].log);
    c.launch(f, None)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut crashed = None;
    while crashed.is_none() && Instant::now() < deadline {
        for &i in &armed {
            if let Some(status) = c.members[i].reap() {
                crashed = Some((i, status));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for &i in &armed {
        c.control(i, "")?;
    }
    let what = match &crashed {
        Some((i, status)) => {
            let who = if *i == leader { "leader" } else { "new leader" };
            let text = format!(
                "{who} {} crashed building the snapshot ({status}); restarted",
                cluster::member_name(*i)
            );
            c.launch(*i, None)?;
            text
        }
        None => "no member built a snapshot within 10s".to_string(),
    };
    let installed = saw_snapshot_install(c, f, log_before, Duration::from_secs(20)).await;
    if !installed {
        bail!(
            "follower {} never installed a snapshot after {what}",
            cluster::member_name(f)
        );
    }
    Ok(format!(
        "follower {} down while {written} writes went in; {what}; it caught up by installing a snapshot",
        cluster::member_name(f)
    ))
}

/// Whether member `idx`'s log says, after byte `from`, that it installed a snapshot
/// (waits up to `timeout`).
async fn saw_snapshot_install(c: &Cluster, idx: usize, from: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let log = std::fs::read(&c.members[idx].log).unwrap_or_default();
        let start = usize::try_from(from).unwrap_or(0).min(log.len());
        if String::from_utf8_lossy(&log[start..]).contains("applying snapshot") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Puts `n` keys under the prefix through `leader` (bounded: gives up after 20s).
async fn fill_writes(c: &mut Cluster, leader: usize, n: u64) -> u64 {
    let Ok(client) = cluster::dial(&c.tls, leader).await else {
        return 0;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut done = 0;
    let mut kv = client.kv();
    for i in 0..n {
        if Instant::now() > deadline {
            break;
        }
        let req = PutRequest {
            key: format!("{}fill/{}", crate::workload::PREFIX, i % 50).into_bytes(),
            value: vec![b'x'; 512],
            ..Default::default()
        };
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), kv.put(req)).await {
            done += 1;
        }
    }
    done
}

/// Removes a follower, adds a fresh member as a learner, starts it, promotes it.
async fn member_replace(
    c: &mut Cluster,
    leader: usize,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    let f = pick_follower(c, leader, rng);
    let fid = c
        .status(f)
        .await
        .context("status of the member to remove")?
        .member_id;
    let client = cluster::dial(&c.tls, leader).await?;
    let mut cl = client.cluster();
    // As etcd (--strict-reconfig-check), oxcd refuses a change while a voter has not been
    // connected for a while ("unhealthy cluster"); an operator retries, so do we.
    let mut retries = Vec::new();
    retry_unhealthy("member remove", &mut retries, || {
        let mut cl = cl.clone();
        async move {
            cl.member_remove(MemberRemoveRequest { id: fid })
                .await
                .map(|_| ())
        }
    })
    .await?;
    c.active.retain(|&i| i != f);
    let exited = wait_exit(c, f, Duration::from_secs(5)).await;
    c.kill9(f);
    let Some(new) = (0..c.members.len())
        .find(|&i| !c.active.contains(&i) && i != f && !c.members[i].data_dir.exists())
    else {
        bail!("no spare member left to add");
    };
    let new_url = c.peer_url(new);
    let new_id = retry_unhealthy("member add", &mut retries, || {
        let mut cl = cl.clone();
        let req = MemberAddRequest {
            peer_ur_ls: vec![new_url.clone()],
            is_learner: true,
        };
        async move {
            let r = cl.member_add(req).await?.into_inner();
            Ok(r.member.map(|m| m.id).unwrap_or_default())
        }
    })
    .await?;
    c.start_joining(new)?;
    c.active.push(new);
    promote(&mut cl, new_id, new).await?;
    Ok(format!(
        "removed {} ({}), added {} as a learner, promoted it{}",
        cluster::member_name(f),
        exited.unwrap_or_else(|| "it did not exit by itself within 5s".into()),
        cluster::member_name(new),
        if retries.is_empty() {
            String::new()
        } else {
            format!(" (retried: {})", retries.join("; "))
        }
    ))
}

/// Promotes learner `new` (member ID `id`), retrying for up to 20 s while it catches up.
async fn promote(cl: &mut ClusterClient<Svc>, id: u64, new: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last_err = match tokio::time::timeout(
            Duration::from_secs(3),
            cl.member_promote(MemberPromoteRequest { id }),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.message().to_string(),
            Err(_) => "timeout".to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "learner {} was not promoted within 20s: {last_err}",
                cluster::member_name(new)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs a membership call (10 s timeout each) until it succeeds, retrying for up to 20 s
/// while the cluster answers "unhealthy cluster" or "not enough started members".
async fn retry_unhealthy<T, F, Fut>(
    what: &str,
    retries: &mut Vec<String>,
    mut call: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e))
                if Instant::now() < deadline
                    && (e.message().contains("unhealthy cluster")
                        || e.message().contains("not enough started members")) =>
            {
                let msg = format!("{what}: {}", e.message());
                if retries.last() != Some(&msg) {
                    retries.push(msg);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(Err(e)) => bail!("{what}: {}", e.message()),
            Err(_) => bail!("{what} timed out"),
        }
    }
}
