//! What goes through the raft log: one [`LogRequest`] per normal entry, protobuf-encoded.
//! Every write, v3 and v2 alike, is one of these; members apply them in log order.
//!
//! Tags are part of the on-disk and on-wire format (`docs/design.md`): never renumber.

use oxcd_api::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, TxnRequest};

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRequest {
    /// Unique per proposal (member-ID prefix + counter): how the proposer finds its waiter.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(oneof = "Op", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12")]
    pub op: Option<Op>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    #[prost(message, tag = "2")]
    Put(PutRequest),
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeRequest),
    #[prost(message, tag = "4")]
    Txn(TxnRequest),
    #[prost(message, tag = "5")]
    Compaction(CompactionRequest),
    #[prost(message, tag = "6")]
    V2(V2Request),
    #[prost(message, tag = "7")]
    LeaseGrant(LeaseOp),
    #[prost(message, tag = "8")]
    LeaseRevoke(LeaseOp),
    /// Expire v2 keys whose TTL has passed, as of the leader's clock.
    #[prost(message, tag = "9")]
    V2Expire(V2Expire),
    /// A member publishes its name and client URLs (etcd's member attributes).
    #[prost(message, tag = "10")]
    MemberAttrs(MemberAttrs),
    /// A keep-alive: the lease's TTL starts again at `now_ms`.
    #[prost(message, tag = "11")]
    LeaseRenew(LeaseOp),
    /// New peer URLs for a member (etcd's member update).
    #[prost(message, tag = "12")]
    MemberUpdate(MemberUpdate),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberUpdate {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, repeated, tag = "2")]
    pub peer_urls: Vec<String>,
}

/// A lease grant, renewal or revoke; `now_ms` is the proposer's clock.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseOp {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub now_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberAttrs {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, repeated, tag = "3")]
    pub client_urls: Vec<String>,
}

/// A v2 keys write, with the proposer's clock so that every member computes the same
/// expiration times.
#[derive(Clone, PartialEq, prost::Message)]
pub struct V2Request {
    /// PUT, POST or DELETE.
    #[prost(string, tag = "1")]
    pub method: String,
    #[prost(string, tag = "2")]
    pub path: String,
    #[prost(string, optional, tag = "3")]
    pub value: Option<String>,
    #[prost(bool, tag = "4")]
    pub dir: bool,
    /// TTL in seconds; `Some(0)` or absent means no expiry... absent keeps none, present-empty clears.
    #[prost(int64, optional, tag = "5")]
    pub ttl: Option<i64>,
    #[prost(bool, optional, tag = "6")]
    pub prev_exist: Option<bool>,
    #[prost(string, optional, tag = "7")]
    pub prev_value: Option<String>,
    #[prost(uint64, optional, tag = "8")]
    pub prev_index: Option<u64>,
    #[prost(bool, tag = "9")]
    pub recursive: bool,
    #[prost(int64, tag = "10")]
    pub now_ms: i64,
    #[prost(bool, tag = "11")]
    pub refresh: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct V2Expire {
    #[prost(int64, tag = "1")]
    pub now_ms: i64,
}
