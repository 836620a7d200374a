//! The state machine: applies committed log entries, in order, to the MVCC store, the v2
//! store and the member table, in one backend batch per group of entries. Owned by the raft
//! loop; nothing else writes these stores.
//!
//! A request is checked against the state before it touches anything (etcd's
//! `checkRequests`), so a request that fails leaves no partial write.

use std::sync::Arc;

use oxcd_api::etcdserverpb::{request_op, CompactionResponse, RangeRequest, TxnRequest};
use oxcd_storage::{Event, Store, WriteBatch};
use prost::Message;

use crate::error::ServerError;
use crate::request::{LogRequest, Op};
use crate::state::kv::{self, KvRead, Writer};
use crate::state::lease::{Lease, LeaseTable, AUX_LEASES, TTL_MAX};
use crate::state::members::AUX_MEMBERS;
use crate::state::v2::{Changes, V2Error, V2Event, V2Store, AUX_V2_META, AUX_V2_NODES};
use crate::state::watch::Interest;
use crate::state::Tables;

/// The result of applying one request, handed to the member that proposed it.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per request and moved, never stored in bulk
pub enum Applied {
    Put(oxcd_api::etcdserverpb::PutResponse),
    Delete(oxcd_api::etcdserverpb::DeleteRangeResponse),
    Txn(oxcd_api::etcdserverpb::TxnResponse),
    Compaction(CompactionResponse),
    V2(Result<V2Event, V2Error>),
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRenewed {
        ttl: i64,
    },
    /// Authenticate's new token.
    Token(String),
    /// A membership change: the member it concerns and the table after it.
    Members {
        member: Option<crate::state::members::Member>,
        list: Vec<crate::state::members::Member>,
    },
    /// A corruption check to run against this member's data.
    HashCheck(crate::request::HashCheck),
    /// The alarms an alarm change raised or cleared.
    Alarms(Vec<oxcd_api::etcdserverpb::AlarmMember>),
    Done,
}

/// What one entry produced: the proposer's request ID, the result (with the store revision
/// after it), and the events for watchers.
pub struct Outcome {
    pub id: u64,
    pub result: Result<Applied, ServerError>,
    pub rev: i64,
    pub events: Vec<Event>,
}

/// Only the proposer's ID of a [`LogRequest`]: the other fields are skipped unread, so it
/// decodes whatever the request holds.
#[derive(Clone, PartialEq, prost::Message)]
struct RequestId {
    #[prost(uint64, tag = "1")]
    id: u64,
}

/// Applies entries. Holds shared handles to the stores it alone writes.
pub struct Applier {
    pub store: Arc<Store>,
    pub tables: Tables,
    /// The ranges this member's watchers cover (see [`crate::state::watch::Interest`]).
    pub interest: Arc<Interest>,
}

impl Applier {
    /// Applies one normal entry (its raft index and data) inside `batch`.
    pub fn apply(&self, batch: &mut WriteBatch<'_>, index: u64, data: &[u8]) -> Outcome {
        let req = match LogRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                // Requests are checked before they are proposed so that this never happens;
                // an entry that does not decode is a bug (a limit not checked) or damage the
                // WAL's CRC did not catch. Every member skips it alike, says so loudly, and
                // the proposer, if its ID can be read, gets the error at once.
                tracing::error!("skipping log entry {index}: it does not decode: {e}");
                return Outcome {
                    id: RequestId::decode(data).map_or(0, |r| r.id),
                    result: Err(ServerError::Internal(format!(
                        "the request cannot be applied: {e}"
                    ))),
                    rev: batch.current_rev(),
                    events: Vec::new(),
                };
            }
        };
        let mut events = Vec::new();
        let result = match req.op {
            Some(op) => self.apply_op(batch, index, op, &mut events),
            None => Ok(Applied::Done),
        };
        if !events.is_empty() {
            let mut leases = self
                .tables
                .leases
                .lock()
                .expect("lease table lock poisoned");
            for e in &events {
                let new = match e.kind {
                    oxcd_storage::EventKind::Put => e.kv.lease,
                    oxcd_storage::EventKind::Delete => 0,
                };
                leases.reattach(&e.kv.key, new);
            }
        }
        Outcome {
            id: req.id,
            result,
            rev: batch.current_rev(),
            events,
        }
    }

    /// What the active alarms forbid (etcd's capped and corrupt appliers): with CORRUPT,
    /// every write; with NOSPACE, writes that add data.
    fn alarm_check(&self, op: &Op) -> Result<(), ServerError> {
        let alarms = self.tables.alarms.read().expect("alarms lock poisoned");
        if alarms.is_empty() {
            return Ok(());
        }
        let writes = match op {
            Op::Put(_) | Op::DeleteRange(_) | Op::Compaction(_) => true,
            Op::LeaseGrant(_) | Op::LeaseRevoke(_) => true,
            Op::Txn(t) => !crate::state::kv::txn_is_read_only(t),
            _ => false,
        };
        if writes && crate::state::alarm::has(&alarms, crate::state::alarm::CORRUPT) {
            return Err(ServerError::Corrupt);
        }
        if crate::state::alarm::grows_data(op)
            && crate::state::alarm::has(&alarms, crate::state::alarm::NOSPACE)
        {
            return Err(ServerError::NoSpace);
        }
        Ok(())
    }

    fn apply_op(
        &self,
        batch: &mut WriteBatch<'_>,
        index: u64,
        op: Op,
        events: &mut Vec<Event>,
    ) -> Result<Applied, ServerError> {
        self.alarm_check(&op)?;
        self.import_check(&op)?;
        match op {
            Op::Put(_) | Op::DeleteRange(_) | Op::Txn(_) => self.apply_kv(batch, op, events),
            Op::Compaction(c) => {
                batch.compact(c.revision)?;
                Ok(Applied::Compaction(CompactionResponse { header: None }))
            }
            Op::V2(r) => self.apply_v2(batch, |v2, changes| Applied::V2(v2.apply(&r, changes))),
            Op::V2Expire(e) => self.apply_v2(batch, |v2, changes| {
                v2.expire(e.now_ms, changes);
                Applied::Done
            }),
            Op::MemberAttrs(a) => {
                let mut members = self.tables.members.write().expect("members lock poisoned");
                if let Some(row) = members.set_attrs(&a) {
                    batch.aux_put(AUX_MEMBERS, &a.id.to_be_bytes(), &row)?;
                }
                Ok(Applied::Done)
            }
            Op::MemberUpdate(u) => self.member_update(batch, &u),
            Op::Alarm(a) => self.alarm(batch, &a),
            Op::HashCheck(h) => Ok(Applied::HashCheck(h)),
            Op::Import(i) => self.apply_import(batch, i, events),
            Op::Refused(r) => Err(match r.reason {
                crate::request::REFUSED_LEARNER_NOT_READY => ServerError::LearnerNotReady,
                other => ServerError::Internal(format!("proposal refused by the leader ({other})")),
            }),
            Op::LeaseGrant(g) => self.lease_grant(batch, &g),
            Op::LeaseRenew(r) => self.lease_renew(batch, &r),
            Op::LeaseRevoke(r) => self.lease_revoke(batch, &r, events),
            Op::Auth(a) => {
                let Some(op) = a.op else {
                    return Ok(Applied::Done);
                };
                let mut auth = self.tables.auth.lock().expect("auth store lock poisoned");
                Ok(match auth.apply(batch, index, op)? {
                    Some(token) => Applied::Token(token),
                    None => Applied::Done,
                })
            }
        }
    }

    /// Put, DeleteRange and Txn: checked against the state first, then one MVCC txn.
    fn apply_kv(
        &self,
        batch: &mut WriteBatch<'_>,
        op: Op,
        events: &mut Vec<Event>,
    ) -> Result<Applied, ServerError> {
        // Looked up only when a put names a lease; the lease lock is not held across ops.
        let lease_exists = |l: i64| {
            self.tables
                .leases
                .lock()
                .map(|t| t.contains(l))
                .unwrap_or(false)
        };
        match &op {
            Op::Put(p) => precheck_put(batch, p, &lease_exists)?,
            Op::Txn(r) => precheck_txn(batch, r, &lease_exists)?,
            _ => {}
        }
        let mut t = batch.txn();
        let mut w = Writer {
            txn: &mut t,
            lease_exists,
            interest: &self.interest,
            leases: &self.tables.leases,
        };
        let res = match op {
            Op::Put(p) => kv::put_owned(&mut w, p).map(Applied::Put),
            Op::DeleteRange(d) => kv::delete(&mut w, &d).map(Applied::Delete),
            Op::Txn(r) => kv::txn(&mut w, &r).map(Applied::Txn),
            _ => Err(ServerError::unexpected_apply()),
        };
        events.extend(t.end());
        res
    }

    /// A v2 write or TTL expiry: `f` changes the v2 store, the changes are persisted.
    fn apply_v2(
        &self,
        batch: &mut WriteBatch<'_>,
        f: impl FnOnce(&mut V2Store, &mut Changes) -> Applied,
    ) -> Result<Applied, ServerError> {
        let mut v2 = self.tables.v2.lock().expect("v2 store lock poisoned");
        let mut changes = Changes::default();
        let applied = f(&mut v2, &mut changes);
        persist_v2(batch, &changes, v2.index)?;
        Ok(applied)
    }

    fn member_update(
        &self,
        batch: &mut WriteBatch<'_>,
        u: &crate::request::MemberUpdate,
    ) -> Result<Applied, ServerError> {
        let mut members = self.tables.members.write().expect("members lock poisoned");
        let Some(m) = members.list.iter_mut().find(|m| m.id == u.id) else {
            return Err(ServerError::MemberNotFound);
        };
        m.peer_urls = u.peer_urls.clone();
        let (row, member) = (m.row(), m.clone());
        batch.aux_put(AUX_MEMBERS, &u.id.to_be_bytes(), &row)?;
        Ok(Applied::Members {
            member: Some(member),
            list: members.list.clone(),
        })
    }

    fn alarm(
        &self,
        batch: &mut WriteBatch<'_>,
        a: &crate::request::AlarmOp,
    ) -> Result<Applied, ServerError> {
        let mut alarms = self.tables.alarms.write().expect("alarms lock poisoned");
        let entry = (a.member_id, a.alarm);
        let key = crate::state::alarm::key(a.member_id, a.alarm);
        let changed = if a.activate {
            batch.aux_put(crate::state::alarm::AUX_ALARMS, &key, &[])?;
            alarms.insert(entry)
        } else {
            batch.aux_delete(crate::state::alarm::AUX_ALARMS, &key)?;
            alarms.remove(&entry)
        };
        if changed {
            tracing::warn!(
                "alarm {}{}",
                crate::state::alarm::describe(a.member_id, a.alarm),
                if a.activate { "raised" } else { "cleared" }
            );
        }
        // etcd answers with the alarm itself when raising, and with what was cleared.
        let mut out = crate::state::alarm::Alarms::new();
        if a.activate || changed {
            out.insert(entry);
        }
        Ok(Applied::Alarms(crate::state::alarm::to_pb(&out)))
    }

    fn lease_renew(
        &self,
        batch: &mut WriteBatch<'_>,
        r: &crate::request::LeaseOp,
    ) -> Result<Applied, ServerError> {
        let mut leases = self
            .tables
            .leases
            .lock()
            .expect("lease table lock poisoned");
        let Some(l) = leases.leases.get_mut(&r.id) else {
            return Err(ServerError::LeaseNotFound);
        };
        l.renewed_ms = r.now_ms;
        l.applied_ms = crate::clock::now_ms();
        let (ttl, row) = (l.ttl, LeaseTable::row(l));
        batch.aux_put(AUX_LEASES, &r.id.to_be_bytes(), &row)?;
        Ok(Applied::LeaseRenewed { ttl })
    }

    fn lease_revoke(
        &self,
        batch: &mut WriteBatch<'_>,
        r: &crate::request::LeaseOp,
        events: &mut Vec<Event>,
    ) -> Result<Applied, ServerError> {
        let keys = {
            let mut leases = self
                .tables
                .leases
                .lock()
                .expect("lease table lock poisoned");
            match leases.leases.remove(&r.id) {
                Some(l) => l.keys,
                None => return Err(ServerError::LeaseNotFound),
            }
        };
        batch.aux_delete(AUX_LEASES, &r.id.to_be_bytes())?;
        let mut t = batch.txn();
        for key in &keys {
            let gone = t.delete_range(key, &[], false)?;
            crate::metrics::get().deleted(gone.count);
        }
        events.extend(t.end());
        crate::metrics::get().lease_revoked.inc();
        Ok(Applied::Done)
    }

    fn lease_grant(
        &self,
        batch: &mut WriteBatch<'_>,
        g: &crate::request::LeaseOp,
    ) -> Result<Applied, ServerError> {
        if g.ttl > TTL_MAX {
            return Err(ServerError::LeaseTtlTooLarge);
        }
        let mut leases = self
            .tables
            .leases
            .lock()
            .expect("lease table lock poisoned");
        if leases.contains(g.id) {
            return Err(ServerError::LeaseExist);
        }
        if leases.is_full() {
            return Err(ServerError::TooManyLeases);
        }
        let lease = Lease {
            ttl: g.ttl,
            renewed_ms: g.now_ms,
            applied_ms: crate::clock::now_ms(),
            keys: Default::default(),
        };
        batch.aux_put(AUX_LEASES, &g.id.to_be_bytes(), &LeaseTable::row(&lease))?;
        leases.leases.insert(g.id, lease);
        crate::metrics::get().lease_granted(g.ttl);
        Ok(Applied::LeaseGrant {
            id: g.id,
            ttl: g.ttl,
        })
    }

    /// Applies a membership change carried by a raft ConfChange entry (its context names
    /// the member). Returns the proposer's request ID and the result.
    pub fn apply_member_change(
        &self,
        batch: &mut WriteBatch<'_>,
        change: &MemberChange,
        kind: raft::eraftpb::ConfChangeType,
    ) -> Result<Applied, ServerError> {
        use raft::eraftpb::ConfChangeType as T;
        let mut members = self.tables.members.write().expect("members lock poisoned");
        let m = change.member.clone();
        match kind {
            T::AddNode | T::AddLearnerNode => {
                match members.list.iter_mut().find(|x| x.id == m.id) {
                    Some(x) => x.is_learner = kind == T::AddLearnerNode,
                    None => members.list.push(m.clone()),
                }
            }
            T::RemoveNode => members.list.retain(|x| x.id != m.id),
        }
        // From the first change on, the rows are the whole table.
        for x in &members.list {
            batch.aux_put(AUX_MEMBERS, &x.id.to_be_bytes(), &x.row())?;
        }
        if kind == T::RemoveNode {
            batch.aux_delete(AUX_MEMBERS, &m.id.to_be_bytes())?;
        }
        batch.aux_put(AUX_MEMBERS, crate::state::members::COMPLETE_KEY, b"1")?;
        let member = members.get(m.id).cloned().or(Some(m));
        Ok(Applied::Members {
            member,
            list: members.list.clone(),
        })
    }
}

/// The context of a membership ConfChange entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MemberChange {
    /// The proposer's request ID (0 = nobody waits).
    pub req: u64,
    pub member: crate::state::members::Member,
}

fn persist_v2(
    batch: &mut WriteBatch<'_>,
    changes: &Changes,
    index: u64,
) -> Result<(), ServerError> {
    for (path, node) in &changes.put {
        let row = serde_json::to_vec(node).map_err(|e| ServerError::Internal(e.to_string()))?;
        batch.aux_put(AUX_V2_NODES, path.as_bytes(), &row)?;
    }
    for path in &changes.delete {
        batch.aux_delete(AUX_V2_NODES, path.as_bytes())?;
    }
    batch.aux_put(AUX_V2_META, b"index", &index.to_be_bytes())?;
    Ok(())
}

/// etcd's checks of a put against the current state: the lease exists; with ignore_value or
/// ignore_lease, the key exists.
fn precheck_put(
    view: &WriteBatch<'_>,
    p: &oxcd_api::etcdserverpb::PutRequest,
    lease_exists: &impl Fn(i64) -> bool,
) -> Result<(), ServerError> {
    if p.ignore_value || p.ignore_lease {
        let found = view.range(&p.key, &[], Default::default())?;
        if found.kvs.is_empty() {
            return Err(ServerError::KeyNotFound);
        }
    }
    if p.lease != 0 && !lease_exists(p.lease) {
        return Err(ServerError::LeaseNotFound);
    }
    Ok(())
}

fn precheck_range(view: &WriteBatch<'_>, r: &RangeRequest) -> Result<(), ServerError> {
    if r.revision > view.current_rev() {
        return Err(ServerError::FutureRev);
    }
    if r.revision > 0 && r.revision < view.compact_rev() {
        return Err(ServerError::Compacted);
    }
    Ok(())
}

/// Checks the branch a txn will take, recursively, before it writes anything.
fn precheck_txn(
    view: &WriteBatch<'_>,
    r: &TxnRequest,
    lease_exists: &impl Fn(i64) -> bool,
) -> Result<(), ServerError> {
    let holds = kv::compares_hold(&BatchView(view), &r.compare)?;
    let ops = if holds { &r.success } else { &r.failure };
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => precheck_put(view, p, lease_exists)?,
            Some(request_op::Request::RequestRange(rr)) => precheck_range(view, rr)?,
            Some(request_op::Request::RequestTxn(t)) => precheck_txn(view, t, lease_exists)?,
            _ => {}
        }
    }
    Ok(())
}

struct BatchView<'v, 'a>(&'v WriteBatch<'a>);

impl KvRead for BatchView<'_, '_> {
    fn range_kv(
        &self,
        key: &[u8],
        end: &[u8],
        opts: oxcd_storage::RangeOptions,
    ) -> Result<oxcd_storage::RangeResult, ServerError> {
        Ok(self.0.range(key, end, opts)?)
    }
}

#[cfg(test)]
mod tests {
    use oxcd_api::etcdserverpb::{Compare, PutRequest, RequestOp};

    use super::*;
    use crate::state::kv::{check_txn, TXN_DEPTH_MAX};

    /// A txn `depth` deep: each level compares a key and nests the next; the innermost puts.
    fn nested(depth: usize) -> TxnRequest {
        let mut t = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        for _ in 1..depth {
            t = TxnRequest {
                compare: vec![Compare {
                    key: b"k".to_vec(),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestTxn(t)),
                }],
                ..Default::default()
            };
        }
        t
    }

    fn entry(id: u64, t: TxnRequest) -> Vec<u8> {
        LogRequest {
            id,
            op: Some(Op::Txn(t)),
        }
        .encode_to_vec()
    }

    /// Issue 16 defect 1: a txn with 49 levels nested in it (50 deep) passed the checks,
    /// was committed, and then no member could decode it. Whatever the checks let through
    /// must decode as a log entry, and the rest is refused before it is proposed.
    #[test]
    fn a_txn_the_checks_accept_decodes_as_a_log_entry() {
        let deepest = nested(TXN_DEPTH_MAX);
        assert_eq!(check_txn(&deepest, 128), Ok(()));
        assert!(LogRequest::decode(entry(1, deepest).as_slice()).is_ok());
        assert!(
            LogRequest::decode(entry(1, nested(50)).as_slice()).is_err(),
            "the probe's txn does not decode as a log entry"
        );
        for depth in [TXN_DEPTH_MAX + 1, 50, 60] {
            assert_eq!(
                check_txn(&nested(depth), 128),
                Err(ServerError::TxnTooDeep),
                "depth {depth}"
            );
        }
    }

    fn applier() -> (tempfile::TempDir, Applier) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("store"));
        let tables = Tables::load(&store, Vec::new()).expect("tables");
        (
            dir,
            Applier {
                store,
                tables,
                interest: Arc::default(),
            },
        )
    }

    /// A member holds at most `LEASES_MAX` leases: a grant past it fails alike on every
    /// member (it is decided on apply), and a revoke makes room again.
    #[test]
    fn lease_grants_stop_at_the_bound() {
        use crate::request::LeaseOp;
        use crate::state::lease::LEASES_MAX;
        let (_dir, a) = applier();
        {
            let mut t = a.tables.leases.lock().expect("leases");
            for id in 0..LEASES_MAX as i64 {
                t.leases.insert(
                    id,
                    Lease {
                        ttl: 60,
                        renewed_ms: 0,
                        applied_ms: 0,
                        keys: Default::default(),
                    },
                );
            }
        }
        let grant = |id: i64| {
            let op = Op::LeaseGrant(LeaseOp {
                id,
                ttl: 60,
                now_ms: 1,
            });
            let mut batch = a.store.batch().expect("batch");
            a.apply_op(&mut batch, 1, op, &mut Vec::new())
        };
        assert_eq!(grant(-1).err(), Some(ServerError::TooManyLeases));
        a.tables.leases.lock().expect("leases").leases.remove(&0);
        assert!(grant(-1).is_ok(), "room after one lease went");
    }

    /// An entry that does not decode anyway (a bug) is skipped alike everywhere, and its
    /// proposer is answered at once rather than left to time out.
    #[test]
    fn an_undecodable_entry_answers_its_proposer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("store"));
        let tables = Tables::load(&store, Vec::new()).expect("tables");
        let applier = Applier {
            store: store.clone(),
            tables,
            interest: Arc::default(),
        };
        let data = entry(77, nested(60));
        assert!(
            LogRequest::decode(data.as_slice()).is_err(),
            "too deep to decode"
        );
        let mut batch = store.batch().expect("batch");
        let out = applier.apply(&mut batch, 5, &data);
        assert_eq!(out.id, 77);
        assert!(
            matches!(&out.result, Err(ServerError::Internal(m)) if m.contains("cannot be applied")),
            "{:?}",
            out.result.err()
        );
        assert!(out.events.is_empty());
        assert_eq!(out.rev, 1, "nothing was written");
    }
}

#[cfg(test)]
mod delete_events {
    use oxcd_api::etcdserverpb::{DeleteRangeRequest, PutRequest};

    use super::*;
    use crate::request::LeaseOp;
    use crate::state::watch::{WatchHub, WatchSpec};

    fn apply(a: &Applier, index: u64, op: Op) -> Outcome {
        let data = LogRequest {
            id: index,
            op: Some(op),
        }
        .encode_to_vec();
        let mut batch = a.store.batch().expect("batch");
        let out = a.apply(&mut batch, index, &data);
        batch.commit(true).expect("commit");
        assert!(out.result.is_ok(), "entry {index}: {:?}", out.result.err());
        out
    }

    fn put(key: &str, lease: i64) -> Op {
        Op::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
    }

    fn delete(key: &str, end: &str) -> Op {
        Op::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            ..Default::default()
        })
    }

    fn keys(out: &Outcome) -> Vec<&[u8]> {
        out.events.iter().map(|e| e.kv.key.as_slice()).collect()
    }

    /// A range delete keeps events for the keys a watcher covers and the keys with a lease,
    /// and none for the rest; the lease table lets go of a deleted key either way, so a
    /// later revoke does not delete the key put again without a lease.
    #[test]
    fn a_range_delete_keeps_events_only_for_watched_or_leased_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("store"));
        let tables = Tables::load(&store, Vec::new()).expect("tables");
        let hub = WatchHub::new(10);
        let a = Applier {
            store,
            tables,
            interest: hub.interest(),
        };
        let stream = hub.open_stream(0);
        let spec = WatchSpec {
            key: b"a/2".to_vec(),
            ..Default::default()
        };
        hub.register(stream.id, 1, spec, i64::MAX, || 0)
            .expect("register");
        let grant = Op::LeaseGrant(LeaseOp {
            id: 5,
            ttl: 60,
            now_ms: 1,
        });
        apply(&a, 1, grant);
        for (i, op) in [put("a/1", 5), put("a/2", 0), put("a/3", 0), put("b", 0)]
            .into_iter()
            .enumerate()
        {
            apply(&a, 2 + i as u64, op);
        }
        let out = apply(&a, 6, delete("a/", "a0"));
        assert_eq!(keys(&out), [b"a/1".as_slice(), b"a/2"]);
        match out.result {
            Ok(Applied::Delete(d)) => assert_eq!(d.deleted, 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.tables.leases.lock().expect("leases").lease_of(b"a/1"), 0);
        assert!(keys(&apply(&a, 7, delete("b", ""))).is_empty());
        // Once the watcher is gone, nothing is kept for its key either.
        assert!(hub.cancel(stream.id, 1));
        apply(&a, 8, put("a/2", 0));
        assert!(keys(&apply(&a, 9, delete("a/", "a0"))).is_empty());
        // The key put again without a lease outlives the lease it had.
        apply(&a, 10, put("a/1", 0));
        apply(
            &a,
            11,
            Op::LeaseRevoke(LeaseOp {
                id: 5,
                ..Default::default()
            }),
        );
        let left = a
            .store
            .range(b"a/1", b"", Default::default())
            .expect("range");
        assert_eq!(
            left.count, 1,
            "a/1 was deleted by the revoke of a lease it left"
        );
    }
}
