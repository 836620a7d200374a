//! etcd's KV semantics on top of the MVCC store: range options (limit, sort, filters),
//! put/delete with their flags, transactions with compares, and request validation.
//! Used by the apply loop for writes and by the read path for ranges and read-only txns.

use std::sync::Mutex;

use oxcd_api::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use oxcd_api::mvccpb::KeyValue;
use oxcd_storage::mvcc::TxnWrite;
use oxcd_storage::{Event, RangeOptions, RangeResult, Store};

use crate::error::ServerError;
use crate::state::lease::LeaseTable;
use crate::state::watch::Interest;

/// Something ranges can be read from: the store (reads) or a write transaction (txns).
pub trait KvRead {
    fn range_kv(
        &self,
        key: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<RangeResult, ServerError>;
}

/// Something writes go to: a write transaction of the apply loop.
pub trait KvWrite: KvRead {
    /// Puts a key; its previous key-value is read only when `with_prev` asks for it.
    fn put_kv(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        with_prev: bool,
    ) -> Result<oxcd_storage::Put, ServerError>;
    /// Deletes a range; the previous key-values only when `with_prev` asks for them.
    fn delete_kv(
        &mut self,
        key: &[u8],
        end: &[u8],
        with_prev: bool,
    ) -> Result<oxcd_storage::Deleted, ServerError>;
    /// True if a lease exists (puts to an unknown lease fail).
    fn lease_exists(&self, lease: i64) -> bool;
    /// The revision a read sees now: the write's own once it changed something.
    fn read_rev(&self) -> i64;
}

impl KvRead for Store {
    fn range_kv(
        &self,
        key: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<RangeResult, ServerError> {
        Ok(self.range(key, end, opts)?)
    }
}

/// The store as the read path sees it, for one request (a Range, or every compare and
/// range of a read-only Txn):
/// - one revision: every read without a revision of its own reads at the revision current
///   when the view was made, so a read-only Txn never sees half of a write that committed
///   between two of its ranges (etcd reads a Txn from one read transaction);
/// - one bound: the ranges return at most `bytes_max` bytes of KeyValues between them
///   (`--max-response-bytes`), and stop reading once past it. The apply path reads without
///   this bound: a committed entry applies the same way on every member, whatever its flags.
pub struct BoundedReads<'s> {
    store: &'s Store,
    rev: i64,
    bytes_max: usize,
    used: std::cell::Cell<usize>,
}

impl<'s> BoundedReads<'s> {
    pub fn new(store: &'s Store, bytes_max: usize) -> Self {
        BoundedReads {
            store,
            rev: store.current_rev(),
            bytes_max,
            used: std::cell::Cell::new(0),
        }
    }

    /// The revision the view reads at (its responses' header revision).
    pub fn rev(&self) -> i64 {
        self.rev
    }
}

impl KvRead for BoundedReads<'_> {
    fn range_kv(
        &self,
        key: &[u8],
        end: &[u8],
        mut opts: RangeOptions,
    ) -> Result<RangeResult, ServerError> {
        let (used, max) = (self.used.get(), self.bytes_max);
        // At the bound already, a range that returns anything is over it.
        opts.bytes_max = max.saturating_sub(used).max(1);
        if opts.rev <= 0 {
            opts.rev = self.rev;
        }
        match self.store.range(key, end, opts) {
            Ok(mut res) => {
                let got: usize = res.kvs.iter().map(oxcd_storage::mvcc::response_bytes).sum();
                self.used.set(used + got);
                res.rev = self.rev;
                Ok(res)
            }
            Err(oxcd_storage::MvccError::ResponseTooLarge { bytes, .. }) => {
                Err(ServerError::ResponseTooLarge {
                    bytes: used + bytes,
                    max,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A write transaction plus the lease check the apply loop supplies.
pub struct Writer<'t, 'b, 'a, F: Fn(i64) -> bool> {
    pub txn: &'t mut TxnWrite<'b, 'a>,
    pub lease_exists: F,
    /// What a range delete keeps an event for: a key some watcher covers, or one with a
    /// lease (the lease table follows the events). Watchers differ per member; leases do
    /// not, so every member changes its lease table alike.
    pub interest: &'t Interest,
    pub leases: &'t Mutex<LeaseTable>,
}

impl<F: Fn(i64) -> bool> KvRead for Writer<'_, '_, '_, F> {
    fn range_kv(
        &self,
        key: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<RangeResult, ServerError> {
        Ok(self.txn.range(key, end, opts)?)
    }
}

impl<F: Fn(i64) -> bool> KvWrite for Writer<'_, '_, '_, F> {
    fn put_kv(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        with_prev: bool,
    ) -> Result<oxcd_storage::Put, ServerError> {
        Ok(self.txn.put_with(key, value, lease, with_prev)?)
    }

    fn delete_kv(
        &mut self,
        key: &[u8],
        end: &[u8],
        with_prev: bool,
    ) -> Result<oxcd_storage::Deleted, ServerError> {
        let watched = self.interest.meeting(key, end);
        let leases = self.leases;
        let wants_event = |k: &[u8]| {
            watched.iter().any(|w| w.covers(k))
                || leases.lock().map_or(true, |t| t.lease_of(k) != 0)
        };
        Ok(self
            .txn
            .delete_range_where(key, end, with_prev, &wants_event)?)
    }

    fn lease_exists(&self, lease: i64) -> bool {
        (self.lease_exists)(lease)
    }

    fn read_rev(&self) -> i64 {
        self.txn.read_rev()
    }
}

/// A range, etcd's way: filters and sorting need every key, then the limit cuts.
pub fn range(view: &impl KvRead, r: &RangeRequest) -> Result<RangeResponse, ServerError> {
    crate::metrics::count(&crate::metrics::get().range);
    let order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    let sorting = order != SortOrder::None || target != SortTarget::Key;
    let limit = if r.limit <= 0 || filtered || sorting {
        0
    } else {
        r.limit as usize + 1
    };
    let res = view.range_kv(
        &r.key,
        &r.range_end,
        RangeOptions {
            limit,
            rev: r.revision,
            count_only: r.count_only,
            // Values are dropped as they are read, unless the sort needs them.
            keys_only: r.keys_only && target != SortTarget::Value,
            ..Default::default()
        },
    )?;
    let mut kvs = res.kvs;
    if filtered {
        kvs.retain(|kv| {
            (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
        });
    }
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if order != SortOrder::None {
        sort_kvs(&mut kvs, target, order == SortOrder::Descend);
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: Some(header(res.rev)),
        kvs,
        more,
        count: res.count as i64,
    })
}

/// Sorts by `target`; entries that tie keep their key order in both directions (as etcd's
/// results show), so descending is a reversed comparison, not a reversed list.
fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, descend: bool) {
    let cmp = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    if descend {
        kvs.sort_by(|a, b| cmp(b, a));
    } else {
        kvs.sort_by(cmp);
    }
}

/// A header with only the revision set; the server fills in the IDs and term.
pub fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}

pub fn put(w: &mut impl KvWrite, r: &PutRequest) -> Result<PutResponse, ServerError> {
    put_value(w, r, None)
}

/// [`put`] of a request the caller gives away: its value is moved into the store, not copied.
pub fn put_owned(w: &mut impl KvWrite, mut r: PutRequest) -> Result<PutResponse, ServerError> {
    let value = std::mem::take(&mut r.value);
    put_value(w, &r, Some(value))
}

/// A put with its value taken from `value` when given (else copied from the request).
fn put_value(
    w: &mut impl KvWrite,
    r: &PutRequest,
    value: Option<Vec<u8>>,
) -> Result<PutResponse, ServerError> {
    // Read first only when the request keeps the old value or lease; the put itself returns
    // the previous key-value.
    let prev = if r.ignore_value || r.ignore_lease {
        w.range_kv(&r.key, &[], RangeOptions::default())?
            .kvs
            .into_iter()
            .next()
    } else {
        None
    };
    let value = if r.ignore_value {
        prev.as_ref().ok_or(ServerError::KeyNotFound)?.value.clone()
    } else {
        value.unwrap_or_else(|| r.value.clone())
    };
    let lease = if r.ignore_lease {
        prev.as_ref().ok_or(ServerError::KeyNotFound)?.lease
    } else {
        r.lease
    };
    if lease != 0 && !w.lease_exists(lease) {
        return Err(ServerError::LeaseNotFound);
    }
    let size = r.key.len() + value.len();
    let put = w.put_kv(&r.key, value, lease, r.prev_kv)?;
    crate::metrics::get().put_applied(size, !put.existed);
    // Inside a txn etcd leaves this header (revision only) in the response; outside one the
    // server replaces it with a full header.
    Ok(PutResponse {
        header: Some(header(w.read_rev())),
        prev_kv: put.prev,
    })
}

pub fn delete(
    w: &mut impl KvWrite,
    r: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, ServerError> {
    let deleted = w.delete_kv(&r.key, &r.range_end, r.prev_kv)?;
    crate::metrics::get().deleted(deleted.count);
    Ok(DeleteRangeResponse {
        header: Some(header(w.read_rev())),
        deleted: deleted.count as i64,
        prev_kvs: deleted.prev,
    })
}

/// Evaluates a txn's compares against a view.
pub fn compares_hold(view: &impl KvRead, compares: &[Compare]) -> Result<bool, ServerError> {
    for c in compares {
        if !compare_holds(view, c)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn compare_holds(view: &impl KvRead, c: &Compare) -> Result<bool, ServerError> {
    let res = view.range_kv(&c.key, &c.range_end, RangeOptions::default())?;
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
    if res.kvs.is_empty() {
        if target == CompareTarget::Value {
            return Ok(false);
        }
        return Ok(compare_kv(c, target, &KeyValue::default()));
    }
    Ok(res.kvs.iter().all(|kv| compare_kv(c, target, kv)))
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match (&c.target_union, target) {
        (Some(TargetUnion::Value(v)), CompareTarget::Value) => kv.value.as_slice().cmp(v),
        (Some(TargetUnion::Version(v)), CompareTarget::Version) => kv.version.cmp(v),
        (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create) => kv.create_revision.cmp(v),
        (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod) => kv.mod_revision.cmp(v),
        (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => kv.lease.cmp(v),
        // A missing or mismatched union compares as the zero value, as in etcd.
        (_, CompareTarget::Value) => kv.value.as_slice().cmp(&[][..]),
        (_, CompareTarget::Version) => kv.version.cmp(&0),
        (_, CompareTarget::Create) => kv.create_revision.cmp(&0),
        (_, CompareTarget::Mod) => kv.mod_revision.cmp(&0),
        (_, CompareTarget::Lease) => kv.lease.cmp(&0),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// Runs a transaction that writes. Compares see the state before the txn.
pub fn txn(w: &mut impl KvWrite, r: &TxnRequest) -> Result<TxnResponse, ServerError> {
    let succeeded = compares_hold(w, &r.compare)?;
    let ops = if succeeded { &r.success } else { &r.failure };
    if ops.len() > 1 {
        // etcd counts an MVCC transaction of more than one operation as a txn.
        crate::metrics::count(&crate::metrics::get().txn);
    }
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let resp = match &op.request {
            Some(request_op::Request::RequestRange(rr)) => {
                response_op::Response::ResponseRange(range(w, rr)?)
            }
            Some(request_op::Request::RequestPut(p)) => {
                response_op::Response::ResponsePut(put(w, p)?)
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                response_op::Response::ResponseDeleteRange(delete(w, d)?)
            }
            Some(request_op::Request::RequestTxn(t)) => {
                response_op::Response::ResponseTxn(txn(w, t)?)
            }
            None => continue,
        };
        responses.push(ResponseOp {
            response: Some(resp),
        });
    }
    Ok(TxnResponse {
        header: Some(ResponseHeader::default()),
        succeeded,
        responses,
    })
}

/// Runs a read-only transaction against the store: [`txn`] over a view that refuses
/// writes (the caller checked [`txn_is_read_only`] first).
pub fn txn_read(view: &impl KvRead, r: &TxnRequest) -> Result<TxnResponse, ServerError> {
    txn(&mut ReadOnly(view), r)
}

/// A read view as a [`KvWrite`] whose writes fail.
struct ReadOnly<'v, V>(&'v V);

impl<V: KvRead> KvRead for ReadOnly<'_, V> {
    fn range_kv(
        &self,
        key: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<RangeResult, ServerError> {
        self.0.range_kv(key, end, opts)
    }
}

impl<V: KvRead> KvWrite for ReadOnly<'_, V> {
    fn put_kv(
        &mut self,
        _: &[u8],
        _: Vec<u8>,
        _: i64,
        _: bool,
    ) -> Result<oxcd_storage::Put, ServerError> {
        Err(ServerError::Internal("write in a read-only txn".into()))
    }

    fn delete_kv(
        &mut self,
        _: &[u8],
        _: &[u8],
        _: bool,
    ) -> Result<oxcd_storage::Deleted, ServerError> {
        Err(ServerError::Internal("write in a read-only txn".into()))
    }

    fn lease_exists(&self, _: i64) -> bool {
        false
    }

    /// Only writes read it, and none succeeds here.
    fn read_rev(&self) -> i64 {
        0
    }
}

/// True when neither branch (nor any nested txn) writes.
pub fn txn_is_read_only(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(r.failure.iter())
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(_)) | None => true,
            Some(request_op::Request::RequestTxn(t)) => txn_is_read_only(t),
            _ => false,
        })
}

/// True when every range in the txn asks for serializable reads.
pub fn txn_is_serializable(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(r.failure.iter())
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(rr)) => rr.serializable,
            Some(request_op::Request::RequestTxn(t)) => txn_is_serializable(t),
            _ => true,
        })
}

pub fn check_range(r: &RangeRequest) -> Result<(), ServerError> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), ServerError> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(ServerError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(ServerError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), ServerError> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    Ok(())
}

/// Txns nested in a txn, at most: the txn a client sends is depth 1. Checked before a txn
/// is proposed or read, so that every committed txn decodes on apply: a log entry wraps the
/// txn in two more messages, and each level of nesting is two messages deep, against the
/// decoder's limit of 100 (prost's recursion limit; a txn nested 49 deep passed the gRPC
/// decoder, was committed, and then no member could decode it).
pub const TXN_DEPTH_MAX: usize = 32;

/// etcd's txn checks: op count, per-op checks, no key written twice (or written and
/// deleted) in one branch; and nesting at most [`TXN_DEPTH_MAX`] deep.
pub fn check_txn(r: &TxnRequest, ops_max: usize) -> Result<(), ServerError> {
    check_txn_at(r, ops_max, 1)
}

fn check_txn_at(r: &TxnRequest, ops_max: usize, depth: usize) -> Result<(), ServerError> {
    if depth > TXN_DEPTH_MAX {
        return Err(ServerError::TxnTooDeep);
    }
    if r.compare.len() > ops_max || r.success.len() > ops_max || r.failure.len() > ops_max {
        return Err(ServerError::TooManyOps);
    }
    for c in &r.compare {
        if c.key.is_empty() {
            return Err(ServerError::EmptyKey);
        }
    }
    for branch in [&r.success, &r.failure] {
        check_ops(branch, ops_max, depth)?;
        let mut puts = Vec::new();
        let mut dels = Vec::new();
        collect_writes(branch, &mut puts, &mut dels)?;
        for p in &puts {
            if dels.iter().any(|(k, e)| in_range(p, k, e)) {
                return Err(ServerError::DuplicateKey);
            }
        }
    }
    Ok(())
}

fn check_ops(ops: &[RequestOp], ops_max: usize, depth: usize) -> Result<(), ServerError> {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestRange(rr)) => check_range(rr)?,
            Some(request_op::Request::RequestPut(p)) => check_put(p)?,
            Some(request_op::Request::RequestDeleteRange(d)) => check_delete(d)?,
            Some(request_op::Request::RequestTxn(t)) => check_txn_at(t, ops_max, depth + 1)?,
            None => {}
        }
    }
    Ok(())
}

/// Collects the keys a branch puts (duplicates are an error) and the ranges it deletes.
/// Nested txns count with their parent, as in etcd.
fn collect_writes(
    ops: &[RequestOp],
    puts: &mut Vec<Vec<u8>>,
    dels: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), ServerError> {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                if puts.contains(&p.key) {
                    return Err(ServerError::DuplicateKey);
                }
                puts.push(p.key.clone());
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                dels.push((d.key.clone(), d.range_end.clone()))
            }
            Some(request_op::Request::RequestTxn(t)) => {
                // Each branch of a nested txn is checked against the parent's writes.
                for branch in [&t.success, &t.failure] {
                    let mut p2 = puts.clone();
                    let mut d2 = dels.clone();
                    collect_writes(branch, &mut p2, &mut d2)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        return key == start;
    }
    if end == [0] {
        return key >= start;
    }
    key >= start && key < end
}

/// The events a write produced, for watchers; kept with its revision.
pub type Events = Vec<Event>;

/// What HashKV answers: the hash, etcd's compact revision (-1: never compacted) and the
/// current revision it was computed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    pub compact_revision: i64,
    pub current_revision: i64,
}

/// HashKV at `rev` (0: the current revision) exactly as etcd 3.4 computes it over the same
/// history (`oxcd_snapshot::to_etcd::hash_kv`), with its errors: a revision at or below the
/// compact revision is compacted, one above the current revision is in the future. Reads
/// one consistent view, off the apply path.
pub fn hash_kv_at(store: &Store, rev: i64) -> Result<KvHash, ServerError> {
    // Keep(current) is Keep of any revision above it: one view serves rev = 0 too.
    let at = if rev > 0 { rev } else { i64::MAX };
    let (view, keep) = store.read_view_keeping(at)?;
    let compact_revision = if view.compact_rev() > 0 {
        view.compact_rev()
    } else {
        -1
    };
    let current_revision = view.current_rev();
    if rev > 0 && rev <= compact_revision {
        return Err(ServerError::Compacted);
    }
    if rev > current_revision {
        return Err(ServerError::FutureRev);
    }
    let rev = if rev > 0 { rev } else { current_revision };
    let hash = oxcd_snapshot::to_etcd::hash_kv(&view, &keep, compact_revision, rev)?;
    Ok(KvHash {
        hash,
        compact_revision,
        current_revision,
    })
}

/// HashKV at `rev` for the corruption check: (hash, compact revision).
pub fn hash_kv(store: &Store, rev: i64) -> Result<(u32, i64), ServerError> {
    hash_kv_at(store, rev).map(|h| (h.hash, h.compact_revision))
}
