//! Alarms (etcd's NOSPACE and CORRUPT): raised and cleared through the log, so every member
//! holds the same set and refuses the same writes at the same point of the log. Rows live in
//! backend aux table [`AUX_ALARMS`]: key = member ID (u64 big-endian) + alarm type (i32
//! big-endian), empty value.
//!
//! - NOSPACE: a member whose backend file exceeds `--quota-backend-bytes` raises it for
//!   itself; while any member's is active, writes that add data (puts, txns with puts, lease
//!   grants, v2 writes) fail with `etcdserver: mvcc: database space exceeded`; reads,
//!   deletes and compaction still work. `alarm disarm` clears it, and so does the member
//!   itself once a defragmentation brings its file under the quota (docs/design.md).
//! - CORRUPT: raised when a member finds its data differs from the leader's at the same
//!   revision (see the corruption check in `consensus::duties`); v3 puts, deletes, write txns,
//!   compactions, lease grants and revokes then fail with `etcdserver: corrupt cluster`
//!   until `alarm disarm`.

use std::collections::BTreeSet;

use oxcd_api::etcdserverpb::{AlarmMember, AlarmType};
use oxcd_storage::Store;

/// The row layout is shared with snapshots (`oxcd_snapshot::rows`).
pub use oxcd_snapshot::rows::AUX_ALARMS;

/// The active alarms: (member ID, alarm type).
pub type Alarms = BTreeSet<(u64, i32)>;

pub const NOSPACE: i32 = AlarmType::Nospace as i32;
pub const CORRUPT: i32 = AlarmType::Corrupt as i32;

pub fn key(member_id: u64, alarm: i32) -> Vec<u8> {
    let mut k = member_id.to_be_bytes().to_vec();
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

/// Loads the alarm table from the backend.
pub fn load(store: &Store) -> Result<Alarms, super::TableError> {
    let rows = store
        .aux_load(AUX_ALARMS)
        .map_err(|source| super::TableError::Backend {
            table: "alarm",
            source,
        })?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, _)| {
            let id = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
            let alarm = i32::from_be_bytes(k.get(8..12)?.try_into().ok()?);
            Some((id, alarm))
        })
        .collect())
}

pub fn has(alarms: &Alarms, alarm: i32) -> bool {
    alarms.iter().any(|(_, a)| *a == alarm)
}

pub fn to_pb(alarms: &Alarms) -> Vec<AlarmMember> {
    alarms
        .iter()
        .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
        .collect()
}

/// etcd's text for an alarm (gogo protobuf's compact text, trailing space included), as
/// Status lists it among its errors.
pub fn describe(member_id: u64, alarm: i32) -> String {
    let name = match alarm {
        NOSPACE => "NOSPACE",
        CORRUPT => "CORRUPT",
        _ => "NONE",
    };
    format!("memberID:{member_id} alarm:{name} ")
}

/// True for requests that can make the backend bigger: what NOSPACE refuses (etcd's
/// capped applier).
pub fn grows_data(op: &crate::request::Op) -> bool {
    use crate::request::Op;
    match op {
        Op::Put(_) | Op::LeaseGrant(_) | Op::V2(_) => true,
        Op::Txn(t) => !crate::state::kv::txn_is_read_only(t),
        Op::Import(i) => matches!(i.op, Some(crate::request::ImportOp::Apply(_))),
        _ => false,
    }
}
