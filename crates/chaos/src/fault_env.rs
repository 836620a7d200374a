//! Faults of a member's surroundings rather than of its process: slow and lossy peer
//! links (the peer proxy and the firewall), a disk that fills up (the member's data dir on
//! a small tmpfs), a failing fdatasync and a jumping wall clock (through the chaos control
//! file a chaos build of oxcd polls).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::{rngs::StdRng, seq::SliceRandom as _, Rng as _};

use crate::cluster::{self, Cluster};
use crate::fault::{hold, wait_exit, Tools};
use crate::netns;

/// Peer delay: each chunk of peer traffic waits this long (random per chunk).
pub const DELAY_MS: (u64, u64) = (50, 200);
/// Packet loss on peer connections, per mille (random per run in this range).
const LOSS_PER_MILLE: std::ops::Range<u32> = 50..200;
/// What is left free on a full disk: less than a few hundred writes' worth.
const DISK_HEADROOM_BYTES: u64 = 128 * 1024;
/// Room the tmpfs has beyond the data dir's size when the member starts on it.
const DISK_ROOM_BYTES: u64 = 64 * 1024 * 1024;
/// How long a member is given to notice a full disk or a failed fdatasync.
const NOTICE_MAX: Duration = Duration::from_secs(10);
/// Clock jumps, in seconds either way: longer than the leases' TTL.
const JUMP_S: std::ops::Range<i64> = 15..90;

/// Every chunk of peer traffic (both directions, all pairs) is delayed 50–200 ms.
pub async fn delay_peers(t: &Tools, rng: &mut StdRng) -> anyhow::Result<String> {
    let proxy = t
        .proxy
        .as_ref()
        .context("delay-peers needs the peer proxy")?;
    let held = hold(rng) * 2;
    let before = proxy.delayed_chunks.load(Ordering::Relaxed);
    proxy.set_delay(DELAY_MS.0, DELAY_MS.1);
    tokio::time::sleep(held).await;
    proxy.heal();
    Ok(format!(
        "peer traffic delayed {}-{} ms per chunk for {:.1}s ({} chunks)",
        DELAY_MS.0,
        DELAY_MS.1,
        held.as_secs_f64(),
        proxy.delayed_chunks.load(Ordering::Relaxed) - before
    ))
}

/// Packets on peer connections dropped at random (TCP retransmits: delay and stalls), and
/// peer connections cut after random lifetimes (the raft messages in flight are lost).
pub async fn lossy_peers(t: &Tools, rng: &mut StdRng) -> anyhow::Result<String> {
    let proxy = t
        .proxy
        .as_ref()
        .context("lossy-peers needs the peer proxy")?;
    let loss = rng.gen_range(LOSS_PER_MILLE);
    let held = hold(rng) * 2;
    let cuts_before = proxy.cut_count.load(Ordering::Relaxed);
    t.fw.lossy(loss)?;
    proxy.cuts.store(true, Ordering::Relaxed);
    tokio::time::sleep(held).await;
    proxy.heal();
    t.fw.heal()?;
    Ok(format!(
        "{:.1}% of peer packets dropped and peer connections cut for {:.1}s ({} connections cut)",
        f64::from(loss) / 10.0,
        held.as_secs_f64(),
        proxy.cut_count.load(Ordering::Relaxed) - cuts_before
    ))
}

/// A member (any, the leader included) restarted on a tmpfs of its own, which then fills
/// up until only a few writes' worth is left. It must stop (or keep going), never serve
/// wrong data; once space is freed it must start again and catch up.
pub async fn disk_full(c: &mut Cluster, rng: &mut StdRng) -> anyhow::Result<String> {
    let victim = *c.active.choose(rng).context("no active member")?;
    let name = cluster::member_name(victim);
    c.kill9(victim);
    let dir = c.members[victim].data_dir.clone();
    c.onto_tmpfs(victim)?;
    c.launch(victim, None)?;
    wait_serving(c, victim, Duration::from_secs(15)).await?;
    let log_from = log_len(&c.members[victim].log);
    let ballast = fill_up(&dir)?;
    let filled = Instant::now();
    let exited = wait_exit(c, victim, NOTICE_MAX).await;
    let noticed = match &exited {
        Some(status) => format!(
            "it stopped after {:.1}s ({status}): {}",
            filled.elapsed().as_secs_f64(),
            last_error(&c.members[victim].log, log_from)
        ),
        None => format!(
            "it kept running for {:.0}s{}",
            NOTICE_MAX.as_secs_f64(),
            match last_error(&c.members[victim].log, log_from).as_str() {
                "" => String::new(),
                e => format!(" ({e})"),
            }
        ),
    };
    std::fs::remove_file(&ballast).with_context(|| format!("remove {}", ballast.display()))?;
    if exited.is_some() {
        c.launch(victim, None)?;
    }
    Ok(format!(
        "{name}'s data dir on a tmpfs filled to {} KiB free; {noticed}; space freed{}",
        DISK_HEADROOM_BYTES / 1024,
        if exited.is_some() { ", restarted" } else { "" }
    ))
}

/// The next WAL fdatasync of a member (any, the leader included) fails with EIO. The member
/// must stop at once with an error (exit status 1), not retry, not crash; restarted, it
/// recovers from what is on disk and the cluster loses nothing acknowledged.
pub async fn fsync_error(c: &mut Cluster, rng: &mut StdRng) -> anyhow::Result<String> {
    let victim = *c.active.choose(rng).context("no active member")?;
    let name = cluster::member_name(victim);
    let log_from = log_len(&c.members[victim].log);
    c.control(victim, "raft_wal_sync_eio=return\n")?;
    let exited = wait_exit(c, victim, NOTICE_MAX).await;
    c.control(victim, "")?;
    let err = last_error(&c.members[victim].log, log_from);
    let Some(status) = exited else {
        c.kill9(victim);
        c.launch(victim, None)?;
        bail!("{name} kept running for {NOTICE_MAX:?} after its WAL fdatasync failed (killed)");
    };
    c.launch(victim, None)?;
    if !status.contains("exit status: 1") || !err.contains("fatal storage error") {
        bail!("{name} did not stop with an error after its WAL fdatasync failed: {status}; {err}");
    }
    Ok(format!(
        "{name}'s WAL fdatasync failed with EIO: it stopped ({status}: {err}); restarted"
    ))
}

/// The leader's wall clock jumps forward, then back behind the true time, then is right
/// again; each held for a while. Leases must not expire early (etcd's lessor uses the
/// monotonic clock), and nothing else may change.
pub async fn clock_jump(
    c: &mut Cluster,
    leader: usize,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    let name = cluster::member_name(leader);
    let ahead = rng.gen_range(JUMP_S) * 1000;
    let behind = -rng.gen_range(JUMP_S) * 1000;
    c.control(leader, &format!("clock_offset_ms={ahead}\n"))?;
    tokio::time::sleep(hold(rng)).await;
    c.control(leader, &format!("clock_offset_ms={behind}\n"))?;
    tokio::time::sleep(hold(rng)).await;
    c.control(leader, "")?;
    Ok(format!(
        "leader {name}'s wall clock jumped {:+}s, then to {:+}s, then back to the true time",
        ahead / 1000,
        behind / 1000
    ))
}

/// Waits until member `idx` answers a status request.
async fn wait_serving(c: &mut Cluster, idx: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if c.status(idx).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{} did not serve within {timeout:?} after moving onto a tmpfs",
        cluster::member_name(idx)
    )
}

/// Writes a ballast file into `dir` until the file system is full, then gives back
/// [`DISK_HEADROOM_BYTES`]. Returns the ballast's path.
fn fill_up(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("oxchaos-ballast");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    // Bounded: a tmpfs is at most a few hundred MiB here.
    for _ in 0..4096 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let small = vec![0u8; 4096];
    for _ in 0..256 {
        match f.write(&small) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    f.set_len(written.saturating_sub(DISK_HEADROOM_BYTES))?;
    f.sync_all()?;
    Ok(path)
}

/// How many bytes a log has now (what follows is new).
pub fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// The last line at or after `from` in a member's log that reports an error, shortened.
pub fn last_error(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    let text = String::from_utf8_lossy(&text[start..]);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("ERROR") || l.contains("oxcd:") || l.contains("error"))
        .unwrap_or("")
        .trim();
    let cut = (0..=line.len().min(300))
        .rev()
        .find(|&i| line.is_char_boundary(i))
        .unwrap_or(0);
    line[..cut].to_string()
}

impl Cluster {
    /// Moves member `idx`'s (stopped) data dir onto a tmpfs mounted in its place, sized
    /// [`DISK_ROOM_BYTES`] beyond what it holds. The mount lives in the run's mount
    /// namespace (`ip netns exec` makes one) and is undone by [`Cluster::off_tmpfs`].
    pub fn onto_tmpfs(&mut self, idx: usize) -> anyhow::Result<()> {
        let dir = self.members[idx].data_dir.clone();
        if self.tmpfs.contains(&dir) {
            return Ok(());
        }
        let used: u64 = netns::sh("du", &["-sb", &dir.display().to_string()])?
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let aside = dir.with_extension("ondisk");
        std::fs::rename(&dir, &aside)?;
        std::fs::create_dir(&dir)?;
        let size = format!("size={}", used + DISK_ROOM_BYTES);
        netns::sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &size,
                "tmpfs",
                &dir.display().to_string(),
            ],
        )?;
        self.tmpfs.push(dir.clone());
        netns::sh(
            "cp",
            &[
                "-a",
                &format!("{}/.", aside.display()),
                &dir.display().to_string(),
            ],
        )?;
        std::fs::remove_dir_all(&aside)?;
        Ok(())
    }

    /// Copies every tmpfs data dir back to the disk and unmounts it (members stopped).
    pub fn off_tmpfs(&mut self) {
        for dir in std::mem::take(&mut self.tmpfs) {
            let copy = dir.with_extension("fromtmpfs");
            let d = dir.display().to_string();
            let _ = netns::sh("cp", &["-a", &d, &copy.display().to_string()]);
            if netns::sh("umount", &["-l", &d]).is_ok() {
                let _ = std::fs::remove_dir(&dir);
                let _ = std::fs::rename(&copy, &dir);
            }
        }
    }
}
