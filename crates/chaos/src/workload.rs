//! The clients: register clients (put / get / compare-and-set), append clients (read a list,
//! then a Txn that appends to it only if the key's mod_revision is unchanged), and watchers
//! on the whole prefix. Every operation is recorded with its invoke and completion time (µs
//! since the run began). A write that fails or times out is recorded as unknown, never as
//! failed: it may have happened. A read that fails is dropped: it changed nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::kv_client::KvClient;
use oxcd_api::etcdserverpb::{
    compare, request_op, watch_request, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use oxcd_client::{Client, Svc, TlsMode};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use crate::checker::{ListOp, ListOut, RegisterOp, RegisterOut};
use crate::cluster;

/// Every key the workloads touch lives under this prefix (the watchers watch all of it).
pub const PREFIX: &str = "/chaos/";
/// The end of the prefix range.
pub const PREFIX_END: &str = "/chaos0";
/// A single operation may take this long before its outcome is unknown.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);
/// No client performs more operations than this in one run.
pub const OPS_PER_CLIENT_MAX: u64 = 200_000;
/// Register keys and list keys.
pub const REGISTER_KEYS: u64 = 5;
pub const LIST_KEYS: u64 = 3;

/// What the workload shares: the clock, TLS, which members clients may dial, the stop flag.
pub struct Ctx {
    pub t0: Instant,
    pub tls: TlsMode,
    /// Members a client may talk to (all that may ever run: a dead one refuses quickly).
    pub members: usize,
    pub stop: AtomicBool,
    /// Test-only bug: the member (index) that serves its reads locally, without ReadIndex
    /// (serializable), as a leader trusting a lease it no longer holds would; `usize::MAX`
    /// for none.
    pub stale_member: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    fn serves_stale(&self, member: usize) -> bool {
        self.stale_member.load(Ordering::Relaxed) == member
    }
}

/// One recorded operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub process: u32,
    pub key: String,
    pub op: Op,
    pub invoke_us: u64,
    /// None: the outcome is unknown (the write may or may not have happened).
    pub complete_us: Option<u64>,
    /// The revision of an acknowledged write.
    pub rev: Option<i64>,
    pub member: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    Register(RegisterOp, Option<RegisterOut>),
    List(ListOp, Option<ListOut>),
}

impl Record {
    /// An operation invoked at `invoke_us` on `member`, its outcome not known yet.
    pub fn invoked(process: u32, key: &str, op: Op, invoke_us: u64, member: usize) -> Record {
        Record {
            process,
            key: key.to_string(),
            op,
            invoke_us,
            complete_us: None,
            rev: None,
            member,
            error: None,
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(
            self.op,
            Op::Register(RegisterOp::Get, _) | Op::List(ListOp::Read, _)
        )
    }
    /// The value written when this is an acknowledged write that changed the key.
    pub fn acked_value(&self) -> Option<String> {
        self.complete_us?;
        match &self.op {
            Op::Register(RegisterOp::Put(v), _) => Some(v.to_string()),
            Op::Register(RegisterOp::Cas { new, .. }, Some(RegisterOut::Swapped(true))) => {
                Some(new.to_string())
            }
            Op::List(ListOp::Append { expect, value }, Some(ListOut::Appended(true))) => {
                let mut l = expect.clone();
                l.push(*value);
                Some(encode_list(&l))
            }
            _ => None,
        }
    }
}

pub fn register_key(k: u64) -> String {
    format!("{PREFIX}r/{k}")
}

/// List keys change every [`LIST_GENERATION_US`], so that lists (and the checker's states)
/// stay short however long a run is; every client moves to the new keys at the same time.
pub fn list_key(generation: u64, k: u64) -> String {
    format!("{PREFIX}l/{generation}-{k}")
}

pub const LIST_GENERATION_US: u64 = 5_000_000;

pub fn encode_list(l: &[u64]) -> String {
    l.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Parses a list value; `None` for bytes the workload never writes.
pub fn decode_list(b: &[u8]) -> Option<Vec<u64>> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|x| x.parse().ok()).collect()
}

fn decode_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A client's connections, one per member, dialed lazily; it sticks to one member until
/// that member cannot be dialed, then moves to the next.
pub(crate) struct Conn {
    ctx: Arc<Ctx>,
    clients: BTreeMap<usize, Client>,
    member: usize,
}

impl Conn {
    fn new(ctx: Arc<Ctx>, member: usize) -> Conn {
        Conn {
            ctx,
            clients: BTreeMap::new(),
            member,
        }
    }

    pub(crate) async fn get(&mut self) -> Option<Client> {
        if let Some(c) = self.clients.get(&self.member) {
            return Some(c.clone());
        }
        match cluster::dial(&self.ctx.tls, self.member).await {
            Ok(c) => {
                self.clients.insert(self.member, c.clone());
                Some(c)
            }
            Err(_) => {
                self.fail().await;
                None
            }
        }
    }

    /// After a failed or timed-out request: stay with this member, as Jepsen's clients stay
    /// with their node (so clients keep talking to an isolated or paused member), and dial
    /// it again; only a member that cannot be dialed makes the client move on.
    pub(crate) async fn retry(&mut self) {
        self.clients.remove(&self.member);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    async fn fail(&mut self) {
        self.clients.remove(&self.member);
        self.member = (self.member + 1) % self.ctx.members;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn with_timeout<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err("timeout".to_string()),
    }
}

fn range(key: &str, serializable: bool) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable,
        ..Default::default()
    }
}

/// What every workload client keeps: its process number, its random source, its connection,
/// what it recorded, and a counter that makes the values it writes unique.
pub(crate) struct Process {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) id: u32,
    pub(crate) rng: StdRng,
    pub(crate) conn: Conn,
    out: Vec<Record>,
    counter: u64,
}

impl Process {
    pub(crate) fn new(ctx: Arc<Ctx>, id: u32, seed: u64) -> Process {
        let conn = Conn::new(ctx.clone(), id as usize % ctx.members);
        Process {
            ctx,
            id,
            rng: StdRng::seed_from_u64(seed),
            conn,
            out: Vec::new(),
            counter: 0,
        }
    }

    /// Until stopped, and at most [`OPS_PER_CLIENT_MAX`] operations.
    pub(crate) fn running(&self) -> bool {
        !self.ctx.stopped() && (self.out.len() as u64) < OPS_PER_CLIENT_MAX
    }

    /// A value no other write of the run uses.
    pub(crate) fn unique_value(&mut self) -> u64 {
        self.counter += 1;
        u64::from(self.id) * 1_000_000 + self.counter
    }

    /// The record of `op` on `key`, invoked now on the current member.
    fn invoke(&self, key: &str, op: Op) -> Record {
        Record::invoked(self.id, key, op, self.ctx.now_us(), self.conn.member)
    }

    /// Completes `rec` with the operation's answer and revision, or marks it failed. A failed
    /// read is dropped (it changed nothing), a failed write kept as unknown (it may have
    /// happened); after a failure the client dials its member again.
    async fn settle(&mut self, mut rec: Record, result: Result<(Op, Option<i64>), String>) {
        match result {
            Ok((op, rev)) => {
                rec.op = op;
                rec.complete_us = Some(self.ctx.now_us());
                rec.rev = rev;
            }
            Err(e) => rec.error = Some(e),
        }
        let failed = rec.error.is_some();
        if !failed || rec.is_write() {
            self.out.push(rec);
        }
        if failed {
            self.conn.retry().await;
        }
    }

    /// Reads list `key` and records the read; the list and its mod_revision, or `None` when
    /// the read failed (the client then dials again) or found bytes the workload never
    /// writes (the client moves to the next member).
    async fn read_list(&mut self, kv: &mut KvClient<Svc>, key: &str) -> Option<(Vec<u64>, i64)> {
        let invoke_us = self.ctx.now_us();
        let serializable = self.ctx.serves_stale(self.conn.member);
        let Ok(r) = with_timeout(kv.range(range(key, serializable))).await else {
            self.conn.retry().await;
            return None;
        };
        let kv0 = r.kvs.first();
        let list = kv0
            .map(|kv| decode_list(&kv.value))
            .unwrap_or(Some(Vec::new()));
        let Some(list) = list else {
            self.conn.fail().await;
            return None;
        };
        let op = Op::List(ListOp::Read, Some(ListOut::Read(list.clone())));
        let mut rec = Record::invoked(self.id, key, op, invoke_us, self.conn.member);
        rec.complete_us = Some(self.ctx.now_us());
        self.out.push(rec);
        Some((list, kv0.map(|kv| kv.mod_revision).unwrap_or(0)))
    }
}

/// Put, get and compare-and-set on [`REGISTER_KEYS`] keys until stopped.
pub async fn register_client(ctx: Arc<Ctx>, process: u32, seed: u64) -> Vec<Record> {
    let mut p = Process::new(ctx, process, seed);
    // The last value this client knows each key to hold: what its CAS expects.
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    while p.running() {
        let Some(c) = p.conn.get().await else {
            continue;
        };
        let k = p.rng.gen_range(0..REGISTER_KEYS);
        let key = register_key(k);
        let value = p.unique_value();
        let roll = p.rng.gen_range(0..10);
        let op = pick_register_op(roll, seen.get(&k).copied(), value);
        let rec = p.invoke(&key, Op::Register(op.clone(), None));
        let serializable = p.ctx.serves_stale(p.conn.member);
        let result = call_register(&mut c.kv(), &key, &op, serializable).await;
        if let Ok((answer, _)) = &result {
            remember(&mut seen, k, &op, answer);
        }
        let result = result.map(|(o, rev)| (Op::with_register_out(&rec.op, o), rev));
        p.settle(rec, result).await;
    }
    p.out
}

/// 40 % gets, 30 % puts, 30 % compare-and-sets of the value last seen (a put while this
/// client has seen no value of the key).
fn pick_register_op(roll: u32, seen: Option<u64>, value: u64) -> RegisterOp {
    match seen {
        _ if roll < 4 => RegisterOp::Get,
        Some(expect) if roll >= 7 => RegisterOp::Cas { expect, new: value },
        _ => RegisterOp::Put(value),
    }
}

/// Sends one register operation: its answer and, for a write, the revision it made.
async fn call_register(
    kv: &mut KvClient<Svc>,
    key: &str,
    op: &RegisterOp,
    serializable: bool,
) -> Result<(RegisterOut, Option<i64>), String> {
    match op {
        RegisterOp::Get => with_timeout(kv.range(range(key, serializable)))
            .await
            .map(|r| {
                let v = r.kvs.first().and_then(|kv| decode_u64(&kv.value));
                (RegisterOut::Read(v), None)
            }),
        RegisterOp::Put(value) => with_timeout(kv.put(put_req(key, value.to_string())))
            .await
            .map(|r| (RegisterOut::Written, r.header.map(|h| h.revision))),
        RegisterOp::Cas { expect, new } => {
            let req = put_if(
                key,
                compare::CompareTarget::Value,
                compare::TargetUnion::Value(expect.to_string().into_bytes()),
                new.to_string(),
            );
            with_timeout(kv.txn(req)).await.map(|r| {
                (
                    RegisterOut::Swapped(r.succeeded),
                    r.header.map(|h| h.revision),
                )
            })
        }
    }
}

/// Notes the value a key now holds after `op` answered `answer`.
fn remember(seen: &mut BTreeMap<u64, u64>, k: u64, op: &RegisterOp, answer: &RegisterOut) {
    match (op, answer) {
        (_, RegisterOut::Read(Some(v))) => {
            seen.insert(k, *v);
        }
        (RegisterOp::Put(v), RegisterOut::Written)
        | (RegisterOp::Cas { new: v, .. }, RegisterOut::Swapped(true)) => {
            seen.insert(k, *v);
        }
        _ => {}
    }
}

impl Op {
    fn with_register_out(op: &Op, o: RegisterOut) -> Op {
        match op {
            Op::Register(i, _) => Op::Register(i.clone(), Some(o)),
            other => other.clone(),
        }
    }
    fn with_list_out(op: &Op, o: ListOut) -> Op {
        match op {
            Op::List(i, _) => Op::List(i.clone(), Some(o)),
            other => other.clone(),
        }
    }
}

pub(crate) fn put_req(key: &str, value: String) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.into_bytes(),
        ..Default::default()
    }
}

/// A Txn that puts `value` at `key` only if the key's `target` still equals `expect`.
fn put_if(
    key: &str,
    target: compare::CompareTarget,
    expect: compare::TargetUnion,
    value: String,
) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: target as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(expect),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put_req(key, value))),
        }],
        failure: vec![],
    }
}

/// Read a list key, then append a unique value with a Txn guarded by its mod_revision.
pub async fn append_client(ctx: Arc<Ctx>, process: u32, seed: u64) -> Vec<Record> {
    let mut p = Process::new(ctx, process, seed);
    while p.running() {
        let Some(c) = p.conn.get().await else {
            continue;
        };
        let key = list_key(
            p.ctx.now_us() / LIST_GENERATION_US,
            p.rng.gen_range(0..LIST_KEYS),
        );
        let mut kv = c.kv();
        let Some((list, mod_rev)) = p.read_list(&mut kv, &key).await else {
            continue;
        };
        let value = p.unique_value();
        let mut new = list.clone();
        new.push(value);
        let rec = p.invoke(
            &key,
            Op::List(
                ListOp::Append {
                    expect: list,
                    value,
                },
                None,
            ),
        );
        let req = put_if(
            &key,
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(mod_rev),
            encode_list(&new),
        );
        let result = with_timeout(kv.txn(req)).await.map(|r| {
            (
                Op::with_list_out(&rec.op, ListOut::Appended(r.succeeded)),
                r.header.map(|h| h.revision),
            )
        });
        p.settle(rec, result).await;
    }
    p.out
}

/// One watch event as a watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub rev: i64,
    pub key: String,
    pub put: bool,
    pub value: String,
    pub prev: Option<String>,
}

/// One watch response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    pub recv_us: u64,
    pub member: usize,
    pub events: Vec<Event>,
}

/// What one watcher recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatchLog {
    pub watcher: u32,
    pub start_rev: i64,
    pub batches: Vec<Batch>,
    pub reconnects: u32,
    pub canceled: Vec<String>,
}

fn to_event(e: &oxcd_api::mvccpb::Event) -> Event {
    let kv = e.kv.clone().unwrap_or_default();
    Event {
        rev: kv.mod_revision,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        put: e.r#type == 0,
        value: String::from_utf8_lossy(&kv.value).into_owned(),
        prev: e
            .prev_kv
            .as_ref()
            .map(|p| String::from_utf8_lossy(&p.value).into_owned()),
    }
}

/// Watches the prefix from `start_rev` with prev_kv, reconnecting (to the next member) and
/// resuming after the last revision seen, until stopped and caught up with `until_rev` (or
/// `deadline` passes).
pub async fn watcher(
    ctx: Arc<Ctx>,
    id: u32,
    start_rev: i64,
    until_rev: tokio::sync::watch::Receiver<i64>,
    deadline: Instant,
) -> WatchLog {
    let mut log = WatchLog {
        watcher: id,
        start_rev,
        ..Default::default()
    };
    let mut next = start_rev;
    let mut member = id as usize % ctx.members;
    let done = |next: i64| {
        let target = *until_rev.borrow();
        ctx.stopped() && target > 0 && next > target
    };
    while !done(next) && Instant::now() < deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(
            remaining,
            watch_once(&ctx, member, &mut next, &mut log, &done),
        )
        .await;
        if matches!(r, Ok(Ok(()))) {
            break;
        }
        log.reconnects += 1;
        member = (member + 1) % ctx.members;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log
}

async fn watch_once(
    ctx: &Ctx,
    member: usize,
    next: &mut i64,
    log: &mut WatchLog,
    done: &impl Fn(i64) -> bool,
) -> anyhow::Result<()> {
    let c = cluster::dial(&ctx.tls, member).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: PREFIX.as_bytes().to_vec(),
                range_end: PREFIX_END.as_bytes().to_vec(),
                start_revision: *next,
                prev_kv: true,
                ..Default::default()
            },
        )),
    })
    .await?;
    let mut stream = tokio::time::timeout(
        OP_TIMEOUT,
        c.watch()
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await??
    .into_inner();
    loop {
        if done(*next) {
            return Ok(());
        }
        // Poll in slices so that a quiet stream still notices the stop.
        let msg = match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
            Err(_) => continue,
            Ok(m) => m?,
        };
        let Some(resp) = msg else {
            anyhow::bail!("watch stream ended");
        };
        if resp.canceled {
            log.canceled.push(resp.cancel_reason.clone());
            anyhow::bail!("watch canceled: {}", resp.cancel_reason);
        }
        if resp.events.is_empty() {
            continue;
        }
        let events: Vec<Event> = resp.events.iter().map(to_event).collect();
        if let Some(last) = events.last() {
            *next = last.rev + 1;
        }
        log.batches.push(Batch {
            recv_us: ctx.now_us(),
            member,
            events,
        });
    }
}

/// Every event under the prefix from revision 1 to `until_rev` as member `idx` has them
/// (bounded by `timeout`).
pub async fn reference_events(
    tls: &TlsMode,
    idx: usize,
    until_rev: i64,
    timeout: Duration,
) -> anyhow::Result<Vec<Event>> {
    let ctx = Ctx {
        t0: Instant::now(),
        tls: tls.clone(),
        members: idx + 1,
        stop: AtomicBool::new(true),
        stale_member: std::sync::atomic::AtomicUsize::new(usize::MAX),
    };
    let mut log = WatchLog::default();
    let mut next = 1;
    let done = |next: i64| next > until_rev;
    tokio::time::timeout(timeout, watch_once(&ctx, idx, &mut next, &mut log, &done))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "member {} did not deliver every event up to {until_rev} within {timeout:?}",
                cluster::member_name(idx)
            )
        })??;
    Ok(log.batches.into_iter().flat_map(|b| b.events).collect())
}

/// TTL of the leases that are kept alive through the run, and of the ones left to expire.
pub const LEASE_KEPT_TTL_S: i64 = 10;
pub const LEASE_SHORT_TTL_S: i64 = 2;
/// Leases kept alive, and leases granted to expire (at most), per run.
const LEASES_KEPT: usize = 2;
const LEASES_SHORT_MAX: usize = 100;

/// What the lease client did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseLog {
    /// Keys attached to leases kept alive until the end: (key, lease ID).
    pub kept: Vec<(String, i64)>,
    /// The longest time between two successful keep-alives of a kept lease (µs).
    pub kept_gap_us_max: u64,
    /// Keep-alive answers that said a kept lease was gone (TTL ≤ 0) although it had been
    /// renewed less than half its TTL before, with when: each is a violation.
    pub kept_lost: Vec<String>,
    /// Such answers after a longer gap (the lease may have expired: not a violation).
    #[serde(default)]
    pub kept_lapsed: Vec<String>,
    /// Keys put (or maybe put) under leases left to expire.
    pub short_keys: Vec<String>,
    pub grants: u64,
    pub keepalives: u64,
}

impl LeaseLog {
    /// A keep-alive said kept lease `id` is gone at `now_us`: a violation if it was renewed
    /// less than half its TTL before, else a lapse (reported once per lease).
    fn gone(&mut self, id: i64, key: &str, renewed_us: u64, now_us: u64) {
        let tag = format!("lease {id:x} ");
        if self
            .kept_lost
            .iter()
            .chain(&self.kept_lapsed)
            .any(|l| l.starts_with(&tag))
        {
            return;
        }
        let text = format!(
            "{tag}of {key} reported gone at {:.3}s, last renewed at {:.3}s",
            now_us as f64 / 1e6,
            renewed_us as f64 / 1e6
        );
        let ttl_us = u64::try_from(LEASE_KEPT_TTL_S).unwrap_or(10) * 1_000_000;
        if now_us.saturating_sub(renewed_us) < ttl_us / 2 {
            self.kept_lost.push(text);
        } else {
            self.kept_lapsed.push(text);
        }
    }
}

pub fn lease_key(kind: &str, n: usize) -> String {
    format!("{PREFIX}lease/{kind}-{n}")
}

/// Grants [`LEASES_KEPT`] leases with keys and keeps them alive every second until stopped;
/// meanwhile grants short leases with a key each and lets them expire.
pub async fn lease_client(ctx: Arc<Ctx>, seed: u64) -> LeaseLog {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conn = Conn::new(ctx.clone(), rng.gen_range(0..ctx.members));
    let mut log = LeaseLog::default();
    let mut kept: Vec<(String, i64, u64)> = Vec::new(); // key, lease, last renewal µs
    let mut next_short = 0;
    let mut last_keepalive = Instant::now();
    let mut rounds = 0u64;
    while !ctx.stopped() && rounds < OPS_PER_CLIENT_MAX {
        rounds += 1;
        let Some(c) = conn.get().await else { continue };
        if kept.len() < LEASES_KEPT {
            let key = lease_key("kept", kept.len());
            match grant_and_put(&c, &key, LEASE_KEPT_TTL_S).await {
                Ok(id) => {
                    log.grants += 1;
                    kept.push((key, id, ctx.now_us()));
                }
                Err(_) => conn.fail().await,
            }
            continue;
        }
        if last_keepalive.elapsed() >= Duration::from_secs(1) {
            last_keepalive = Instant::now();
            for (key, id, renewed_us) in kept.iter_mut() {
                match keep_alive_once(&c, *id).await {
                    Ok(ttl) if ttl > 0 => {
                        log.keepalives += 1;
                        let now = ctx.now_us();
                        log.kept_gap_us_max = log.kept_gap_us_max.max(now - *renewed_us);
                        *renewed_us = now;
                    }
                    Ok(_) => log.gone(*id, key, *renewed_us, ctx.now_us()),
                    Err(_) => {
                        conn.fail().await;
                        break;
                    }
                }
            }
            continue;
        }
        if next_short < LEASES_SHORT_MAX {
            let key = lease_key("short", next_short);
            next_short += 1;
            log.short_keys.push(key.clone());
            match grant_and_put(&c, &key, LEASE_SHORT_TTL_S).await {
                Ok(_) => log.grants += 1,
                Err(_) => conn.fail().await,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = ctx.now_us();
    for (key, id, renewed_us) in kept {
        log.kept_gap_us_max = log.kept_gap_us_max.max(now - renewed_us);
        log.kept.push((key, id));
    }
    log
}

async fn grant_and_put(c: &Client, key: &str, ttl: i64) -> Result<i64, String> {
    let grant = with_timeout(
        c.lease()
            .lease_grant(oxcd_api::etcdserverpb::LeaseGrantRequest { ttl, id: 0 }),
    )
    .await?;
    let put = PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"leased".to_vec(),
        lease: grant.id,
        ..Default::default()
    };
    with_timeout(c.kv().put(put)).await?;
    Ok(grant.id)
}

/// One keep-alive round trip; the TTL the leader answered (≤ 0: the lease is gone).
async fn keep_alive_once(c: &Client, id: i64) -> Result<i64, String> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(oxcd_api::etcdserverpb::LeaseKeepAliveRequest { id })
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = with_timeout(
        c.lease()
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await?;
    match tokio::time::timeout(OP_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(r))) => Ok(r.ttl),
        Ok(Ok(None)) => Err("keep-alive stream ended".into()),
        Ok(Err(s)) => Err(s.message().to_string()),
        Err(_) => Err("timeout".into()),
    }
}
