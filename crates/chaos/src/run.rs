//! One run, inside the network namespace: start the cluster, run the clients, inject the
//! faults, heal, let the cluster converge, check everything, and write the run's files
//! (`history.jsonl`, `watch.json`, `result.json`, `timeline.json`, `timeline.svg`, member
//! logs) into its directory.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use oxcd_api::etcdserverpb::{PutRequest, RangeRequest};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::checker::{ListOp, ListOut, RegisterOp, RegisterOut};
use crate::checks;
use crate::cluster::{self, Cluster};
use crate::elle;
use crate::fault::{self, Fault, Tools, Window};
use crate::netns::Firewall;
use crate::report::Timeline;
use crate::txn;
use crate::workload::{self, Ctx, Op, Record};

/// A bug the suite injects on purpose to prove its checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Bug {
    /// The leader that is about to be partitioned away serves reads from its own state
    /// (serializable), without confirming it is still leader: stale once it is isolated.
    StaleRead,
    /// One acknowledged append is removed from every later read in the recorded history.
    LostWrite,
}

/// What the outer process asks of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub index: usize,
    pub seed: u64,
    pub faults: Vec<Fault>,
    pub members: usize,
    pub duration_ms: u64,
    pub dir: PathBuf,
    pub pki: PathBuf,
    pub oxcd: PathBuf,
    pub bug: Option<Bug>,
}

/// What one run found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub ops: u64,
    pub unknowns: u64,
    pub acked_writes: u64,
    pub watch_events: u64,
    pub final_rev: i64,
    pub windows: Vec<Window>,
    pub violations: Vec<String>,
    pub notes: Vec<String>,
    /// Multi-key transactions recorded (also counted in `ops`), and how many of them
    /// committed.
    #[serde(default)]
    pub txns: u64,
    #[serde(default)]
    pub txns_committed: u64,
}

/// Register clients and append clients per member (and one watcher per member).
const REGISTER_CLIENTS_PER_MEMBER: u32 = 2;
const APPEND_CLIENTS_PER_MEMBER: u32 = 1;
/// Multi-key transaction clients per member.
const TXN_CLIENTS_PER_MEMBER: u32 = 1;
/// After the last fault heals, the cluster must accept a write within this long.
pub const RECOVERY_MAX: Duration = Duration::from_secs(30);
/// Bounds of the end-of-run phases.
const CONVERGE_MAX: Duration = Duration::from_secs(30);
const WATCH_CATCHUP_MAX: Duration = Duration::from_secs(20);

/// The workload running against the cluster, and the channel that tells the watchers the
/// final revision they must catch up with.
struct Load {
    clients: Vec<JoinHandle<Vec<Record>>>,
    txns: Vec<JoinHandle<Vec<elle::Txn>>>,
    leases: JoinHandle<workload::LeaseLog>,
    until_tx: tokio::sync::watch::Sender<i64>,
    watchers: Vec<JoinHandle<workload::WatchLog>>,
}

pub async fn run(spec: &Spec) -> anyhow::Result<Outcome> {
    let proxied = spec.faults.iter().any(|f| f.needs_proxy());
    let tools = Tools {
        fw: Firewall::setup().context("set up the firewall in the namespace")?,
        proxy: proxied.then(|| Arc::new(crate::proxy::ProxyCtl::default())),
    };
    let mut c = Cluster::new(&spec.dir, &spec.pki, &spec.oxcd, spec.members, 1, proxied)?;
    if let Some(p) = &tools.proxy {
        crate::proxy::start(c.members.len(), p.clone()).await?;
    }
    c.start_all()?;
    c.wait_leader(Duration::from_secs(30))
        .await
        .context("the fresh cluster elected no leader")?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let ctx = Arc::new(Ctx {
        t0: Instant::now(),
        tls: c.tls.clone(),
        members: c.members.len(),
        stop: AtomicBool::new(false),
        stale_member: std::sync::atomic::AtomicUsize::new(usize::MAX),
    });
    let load = start_load(spec, &ctx, &mut rng);
    let mut out = Outcome::default();
    inject_faults(spec, &mut c, &tools, &ctx, &mut rng, &mut out).await;
    let end = ctx.t0 + Duration::from_millis(spec.duration_ms);
    tokio::time::sleep_until(end.into()).await;
    ctx.stop.store(true, Ordering::Relaxed);
    let mut history: Vec<Record> = Vec::new();
    for h in load.clients {
        history.extend(h.await.unwrap_or_default());
    }
    let mut txns: Vec<elle::Txn> = Vec::new();
    for h in load.txns {
        txns.extend(h.await.unwrap_or_default());
    }
    let leases = load.leases.await.unwrap_or_default();
    let stopped = Instant::now();
    heal(&mut c, &tools, &mut out).await?;
    check_leases(&mut c, &leases, stopped, &mut out).await;
    let recorded = Recorded {
        history,
        txns,
        until_tx: load.until_tx,
        watchers: load.watchers,
    };
    finish(spec, &mut c, &ctx, recorded, &mut out).await?;
    Ok(out)
}

/// Starts the register and append clients, the lease client, and one watcher per member.
fn start_load(spec: &Spec, ctx: &Arc<Ctx>, rng: &mut StdRng) -> Load {
    let mut clients = Vec::new();
    let n = u32::try_from(spec.members).unwrap_or(3);
    for p in 0..n * REGISTER_CLIENTS_PER_MEMBER {
        clients.push(tokio::spawn(workload::register_client(
            ctx.clone(),
            p,
            rng.gen(),
        )));
    }
    for p in 0..n * APPEND_CLIENTS_PER_MEMBER {
        let process = 100 + p;
        clients.push(tokio::spawn(workload::append_client(
            ctx.clone(),
            process,
            rng.gen(),
        )));
    }
    let txns = (0..n * TXN_CLIENTS_PER_MEMBER)
        .map(|p| tokio::spawn(txn::txn_client(ctx.clone(), 200 + p, rng.gen())))
        .collect();
    let leases = tokio::spawn(workload::lease_client(ctx.clone(), rng.gen()));
    let (until_tx, until_rx) = tokio::sync::watch::channel(0i64);
    let watch_deadline =
        Instant::now() + Duration::from_millis(spec.duration_ms) + Duration::from_secs(300);
    let watchers: Vec<_> = (0..n)
        .map(|w| {
            tokio::spawn(workload::watcher(
                ctx.clone(),
                w,
                1,
                until_rx.clone(),
                watch_deadline,
            ))
        })
        .collect();
    Load {
        clients,
        txns,
        leases,
        until_tx,
        watchers,
    }
}

/// Injects the spec's faults one after the other, each at a random moment of its own slot of
/// the run.
async fn inject_faults(
    spec: &Spec,
    c: &mut Cluster,
    t: &Tools,
    ctx: &Ctx,
    rng: &mut StdRng,
    out: &mut Outcome,
) {
    let slot = Duration::from_millis(spec.duration_ms) / (spec.faults.len() as u32 + 1);
    for (i, &f) in spec.faults.iter().enumerate() {
        // A random moment in this fault's slot, after some load has built up.
        let at = ctx.t0
            + slot * i as u32
            + Duration::from_millis(rng.gen_range(1_000..slot.as_millis().max(1_001) as u64));
        tokio::time::sleep_until(at.into()).await;
        let window = inject_one(spec, f, c, t, ctx, rng, out).await;
        out.windows.push(window);
    }
}

/// One fault: injected, held and healed, then timed until the cluster accepts a write again.
async fn inject_one(
    spec: &Spec,
    f: Fault,
    c: &mut Cluster,
    t: &Tools,
    ctx: &Ctx,
    rng: &mut StdRng,
    out: &mut Outcome,
) -> Window {
    if spec.bug == Some(Bug::StaleRead) {
        // The leader about to be partitioned away answers reads from its own state.
        if let Some(l) = c.leader().await {
            ctx.stale_member.store(l, Ordering::Relaxed);
        }
    }
    let start_us = ctx.now_us();
    // The stale-read self-test holds its partition long enough that the majority
    // surely writes while the old leader still answers reads.
    let hold = (spec.bug == Some(Bug::StaleRead)).then_some(Duration::from_secs(5));
    let detail = match fault::inject(f, c, t, rng, hold).await {
        Ok(d) => d,
        Err(e) => {
            out.violations.push(format!("fault {}: {e:#}", f.name()));
            format!("failed: {e:#}")
        }
    };
    let end_us = ctx.now_us();
    let recovery_ms = recover(c).await;
    if recovery_ms.is_none() {
        out.violations.push(format!(
            "after {} healed, no write was accepted within {RECOVERY_MAX:?}",
            f.name()
        ));
    }
    println!(
        "oxchaos: {}: {detail}; recovered in {recovery_ms:?} ms",
        f.name()
    );
    Window {
        fault: f,
        start_us,
        end_us,
        detail,
        recovery_ms,
    }
}

/// Writes through any member until one accepts; the time from heal in ms, or None.
async fn recover(c: &mut Cluster) -> Option<u64> {
    let healed = Instant::now();
    let mut i = 0;
    while healed.elapsed() < RECOVERY_MAX {
        let idx = c.active[i % c.active.len()];
        i += 1;
        if let Ok(client) = cluster::dial(&c.tls, idx).await {
            let req = PutRequest {
                key: format!("{}probe", workload::PREFIX).into_bytes(),
                value: b"probe".to_vec(),
                ..Default::default()
            };
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(2), client.kv().put(req)).await
            {
                return u64::try_from(healed.elapsed().as_millis()).ok();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Heals everything (network, clocks, failpoints armed at run time) and waits for a
/// leader; a member that exited by itself is a finding.
async fn heal(c: &mut Cluster, t: &Tools, out: &mut Outcome) -> anyhow::Result<()> {
    t.heal()?;
    for i in 0..c.members.len() {
        c.control(i, "")?;
    }
    for i in c.active.clone() {
        if let Some(status) = c.members[i].reap() {
            out.violations.push(format!(
                "{} exited by itself during the run ({status}); see its log",
                cluster::member_name(i)
            ));
        }
        c.resume(i);
        c.launch(i, None)?;
    }
    if let Err(e) = c.wait_leader(Duration::from_secs(30)).await {
        out.violations.push(format!("after healing: {e}"));
    }
    Ok(())
}

/// Keys under leases kept alive must still be there on every member; keys under leases
/// left to expire must be gone from every member (bounded wait).
async fn check_leases(
    c: &mut Cluster,
    log: &workload::LeaseLog,
    stopped: Instant,
    out: &mut Outcome,
) {
    let ttl_us = u64::try_from(workload::LEASE_KEPT_TTL_S).unwrap_or(10) * 1_000_000;
    let fresh = stopped.elapsed() < Duration::from_secs(5);
    out.notes.push(format!(
        "leases: {} grants, {} keep-alives, longest keep-alive gap {:.1}s, {} short-lived keys",
        log.grants,
        log.keepalives,
        log.kept_gap_us_max as f64 / 1e6,
        log.short_keys.len()
    ));
    // A kept lease reported gone soon after a renewal is a violation whatever came after.
    out.violations.extend(
        log.kept_lost
            .iter()
            .map(|l| format!("lease expired while kept alive: {l}")),
    );
    out.notes.extend(
        log.kept_lapsed
            .iter()
            .map(|l| format!("kept lease gone after a long keep-alive gap: {l}")),
    );
    if log.kept_gap_us_max < ttl_us / 2 && fresh {
        check_kept_leases(c, log, out).await;
    } else {
        out.notes.push(
            "kept-alive leases not checked: keep-alives had a long gap or the heal was slow".into(),
        );
    }
    revoke_kept_leases(c, log).await;
    check_short_leases_expired(c, out).await;
}

/// No kept-alive lease was reported gone, and every member holds all their keys.
async fn check_kept_leases(c: &mut Cluster, log: &workload::LeaseLog, out: &mut Outcome) {
    for i in c.active.clone() {
        let n = count_prefix(c, i, &format!("{}lease/kept-", workload::PREFIX)).await;
        if n != Some(log.kept.len()) {
            out.violations.push(format!(
                "{}: {n:?} of the {} keys under kept-alive leases are there",
                cluster::member_name(i),
                log.kept.len()
            ));
        }
    }
}

/// Revokes the kept leases now, so that no expiry moves the revision during the checks.
async fn revoke_kept_leases(c: &mut Cluster, log: &workload::LeaseLog) {
    let Some(l) = c.leader().await else {
        return;
    };
    let Ok(client) = cluster::dial(&c.tls, l).await else {
        return;
    };
    for (_, id) in &log.kept {
        let req = oxcd_api::etcdserverpb::LeaseRevokeRequest { id: *id };
        let _ =
            tokio::time::timeout(Duration::from_secs(3), client.lease().lease_revoke(req)).await;
    }
}

/// Keys under the short leases must be gone from every member within 25 s.
async fn check_short_leases_expired(c: &mut Cluster, out: &mut Outcome) {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let mut left = Vec::new();
        for i in c.active.clone() {
            let n = count_prefix(c, i, &format!("{}lease/short-", workload::PREFIX)).await;
            if n != Some(0) {
                left.push(format!("{}: {n:?}", cluster::member_name(i)));
            }
        }
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            out.violations.push(format!(
                "keys under {}s leases did not expire within 25s after the run: {}",
                workload::LEASE_SHORT_TTL_S,
                left.join(", ")
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many keys under `prefix` member `idx` holds (serializable: its own state).
async fn count_prefix(c: &Cluster, idx: usize, prefix: &str) -> Option<usize> {
    let client = cluster::dial(&c.tls, idx).await.ok()?;
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut()? += 1;
    let req = RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: end,
        serializable: true,
        count_only: true,
        ..Default::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(3), client.kv().range(req))
        .await
        .ok()?
        .ok()?;
    usize::try_from(r.into_inner().count).ok()
}

/// The end of the run: final reads, convergence, the members' event streams and every
/// watcher against them, linearizability, then the run's files.
async fn finish(
    spec: &Spec,
    c: &mut Cluster,
    ctx: &Arc<Ctx>,
    mut rec: Recorded,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    final_reads(c, ctx, &mut rec).await;
    out.final_rev = converge(c, out).await;
    compare_hashes(c, out).await;
    // The members' own event streams, then every watcher against them.
    let _ = rec.until_tx.send(out.final_rev);
    let reference = check_member_events(c, &rec, out).await;
    out.watch_events = reference.len() as u64;
    let logs = check_watchers(rec.watchers, &reference, out).await;
    let verdicts = check_history(spec, &mut rec.history, out);
    check_txns(&rec.txns, out);
    write_files(spec, &rec.history, &rec.txns, &logs, &verdicts)?;
    write_timeline(spec, &rec.history, &out.windows)?;
    c.kill_everything();
    Ok(())
}

/// What the clients recorded, and the watchers still running.
struct Recorded {
    history: Vec<Record>,
    txns: Vec<elle::Txn>,
    until_tx: tokio::sync::watch::Sender<i64>,
    watchers: Vec<JoinHandle<workload::WatchLog>>,
}

/// The multi-key transactions against strict serializability (Elle-style cycles).
fn check_txns(txns: &[elle::Txn], out: &mut Outcome) {
    out.txns = txns.len() as u64;
    out.txns_committed = txns
        .iter()
        .filter(|t| t.status == elle::Status::Ok && !t.writes.is_empty())
        .count() as u64;
    out.ops += out.txns;
    out.unknowns += txns
        .iter()
        .filter(|t| t.status == elle::Status::Unknown)
        .count() as u64;
    out.notes.push(format!(
        "multi-key transactions: {} recorded, {} committed writes",
        out.txns, out.txns_committed
    ));
    for a in elle::check(txns) {
        out.violations.push(format!(
            "transactions NOT strict serializable: {}: {}",
            a.kind, a.text
        ));
    }
}

/// Waits until every member is at the same revision (bounded); the highest revision seen.
async fn converge(c: &mut Cluster, out: &mut Outcome) -> i64 {
    let deadline = Instant::now() + CONVERGE_MAX;
    let mut revs: BTreeMap<usize, i64> = BTreeMap::new();
    loop {
        revs.clear();
        for i in c.active.clone() {
            if let Ok(s) = c.status(i).await {
                revs.insert(i, s.revision);
            }
        }
        let all = revs.len() == c.active.len();
        let same = revs.values().min() == revs.values().max();
        if all && same {
            break;
        }
        if Instant::now() > deadline {
            out.violations.push(format!(
                "members did not converge within {CONVERGE_MAX:?}: revisions {revs:?}"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    revs.values().copied().max().unwrap_or(0)
}

/// Every member must have the same HashKV at the final revision.
async fn compare_hashes(c: &mut Cluster, out: &mut Outcome) {
    let mut hashes = BTreeMap::new();
    for i in c.active.clone() {
        match c.hash_kv(i, out.final_rev).await {
            Ok(h) => {
                hashes.insert(cluster::member_name(i), h);
            }
            Err(e) => out
                .violations
                .push(format!("hashkv of {}: {e:#}", cluster::member_name(i))),
        }
    }
    if hashes
        .values()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        > 1
    {
        out.violations.push(format!(
            "members differ at revision {}: HashKV {hashes:?}",
            out.final_rev
        ));
    }
    out.notes.push(format!(
        "final revision {}, HashKV {hashes:?}",
        out.final_rev
    ));
}

/// Each member's own event stream of the prefix up to the final revision: sane, holding
/// every acknowledged write, and the same on every member. The first member's stream, the
/// reference the watchers are checked against.
async fn check_member_events(
    c: &Cluster,
    rec: &Recorded,
    out: &mut Outcome,
) -> Vec<workload::Event> {
    let mut reference: Option<Vec<workload::Event>> = None;
    for i in c.active.clone() {
        let name = cluster::member_name(i);
        match workload::reference_events(&c.tls, i, out.final_rev, Duration::from_secs(20)).await {
            Ok(events) => {
                out.violations
                    .extend(checks::reference_sane(&name, &events));
                out.violations
                    .extend(checks::acked_writes_present(&rec.history, &name, &events));
                out.violations
                    .extend(checks::acked_txn_writes_present(&rec.txns, &name, &events));
                match &reference {
                    None => reference = Some(events),
                    Some(r) if *r != events => out.violations.push(format!(
                        "{name}'s history of the prefix differs from {}'s",
                        cluster::member_name(c.active[0])
                    )),
                    Some(_) => {}
                }
            }
            Err(e) => out.violations.push(format!("{name}: {e:#}")),
        }
    }
    reference.unwrap_or_default()
}

/// Every watcher, once caught up (bounded), against etcd's watch guarantees; their logs.
async fn check_watchers(
    watchers: Vec<JoinHandle<workload::WatchLog>>,
    reference: &[workload::Event],
    out: &mut Outcome,
) -> Vec<workload::WatchLog> {
    let mut logs = Vec::new();
    for w in watchers {
        let log = tokio::time::timeout(WATCH_CATCHUP_MAX, w).await;
        match log {
            Ok(Ok(log)) => {
                out.violations
                    .extend(checks::watch_guarantees(&log, reference, out.final_rev));
                logs.push(log);
            }
            _ => out.violations.push(format!(
                "a watcher did not catch up within {WATCH_CATCHUP_MAX:?}"
            )),
        }
    }
    logs
}

/// Linearizability of the history (after the lost-write self-test tampered with it), and
/// its counts; the per-key verdicts.
fn check_history(
    spec: &Spec,
    history: &mut [Record],
    out: &mut Outcome,
) -> Vec<checks::KeyVerdict> {
    if spec.bug == Some(Bug::LostWrite) {
        let t = checks::tamper_lose_acked_write(history);
        out.notes.push(format!(
            "injected bug: {}",
            t.unwrap_or_else(|| "no append to tamper with".into())
        ));
    }
    let (verdicts, violations) = checks::linearizability(history);
    out.violations.extend(violations);
    out.ops = history.len() as u64;
    out.unknowns = history.iter().filter(|r| r.complete_us.is_none()).count() as u64;
    out.acked_writes = history.iter().filter(|r| r.acked_value().is_some()).count() as u64;
    verdicts
}

/// `history.jsonl`, `watch.json` and `verdicts.json` in the run's directory.
fn write_files(
    spec: &Spec,
    history: &[Record],
    txns: &[elle::Txn],
    logs: &[workload::WatchLog],
    verdicts: &[checks::KeyVerdict],
) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(spec.dir.join("history.jsonl"))?);
    for r in history.iter() {
        serde_json::to_writer(&mut f, r)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(spec.dir.join("txns.jsonl"))?);
    for t in txns {
        serde_json::to_writer(&mut f, t)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    std::fs::write(spec.dir.join("watch.json"), serde_json::to_vec(&logs)?)?;
    std::fs::write(
        spec.dir.join("verdicts.json"),
        serde_json::to_vec_pretty(&verdicts)?,
    )?;
    Ok(())
}

/// The run's timeline, as data (`timeline.json`, for the suite's picture) and as a picture.
fn write_timeline(spec: &Spec, history: &[Record], windows: &[Window]) -> anyhow::Result<()> {
    let title = format!(
        "run {} ({}), seed {}",
        spec.index,
        fault::join_names(&spec.faults, ", "),
        spec.seed
    );
    let timeline = Timeline::new(title, history, windows, spec.duration_ms);
    std::fs::write(
        spec.dir.join("timeline.json"),
        serde_json::to_vec(&timeline)?,
    )?;
    std::fs::write(
        spec.dir.join("timeline.svg"),
        crate::report::svg(std::slice::from_ref(&timeline)),
    )?;
    Ok(())
}

/// One linearizable read of every key at the end (and of every transaction key), so that a
/// lost write shows in the history.
async fn final_reads(c: &mut Cluster, ctx: &Ctx, rec: &mut Recorded) {
    let Some(leader) = c.leader().await else {
        return;
    };
    let Ok(client) = cluster::dial(&c.tls, leader).await else {
        return;
    };
    let mut kv = client.kv();
    txn::final_reads(&mut kv, ctx, &mut rec.txns).await;
    let history = &mut rec.history;
    let keys: std::collections::BTreeMap<String, bool> = history
        .iter()
        .map(|r| (r.key.clone(), matches!(r.op, Op::Register(..))))
        .collect();
    for (key, register) in keys {
        let invoke_us = ctx.now_us();
        let req = RangeRequest {
            key: key.clone().into_bytes(),
            ..Default::default()
        };
        let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), kv.range(req)).await else {
            continue;
        };
        let value = r.into_inner().kvs.first().map(|kv| kv.value.clone());
        let op = if register {
            let v = value
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse().ok());
            Op::Register(RegisterOp::Get, Some(RegisterOut::Read(v)))
        } else {
            let l = value
                .and_then(|b| workload::decode_list(&b))
                .unwrap_or_default();
            Op::List(ListOp::Read, Some(ListOut::Read(l)))
        };
        let mut rec = Record::invoked(999, &key, op, invoke_us, leader);
        rec.complete_us = Some(ctx.now_us());
        history.push(rec);
    }
}
