//! What goes through the raft log: one [`LogRequest`] per normal entry, protobuf-encoded.
//! Every write, v3 and v2 alike, is one of these; members apply them in log order.
//!
//! Tags are part of the on-disk and on-wire format (`docs/design.md`): never renumber.

use oxcd_api::etcdserverpb::{
    self as pb, CompactionRequest, DeleteRangeRequest, PutRequest, TxnRequest,
};

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRequest {
    /// Unique per proposal (member-ID prefix + counter): how the proposer finds its waiter.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(
        oneof = "Op",
        tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17"
    )]
    pub op: Option<Op>,
}

impl LogRequest {
    /// The encoded entry of a request nobody waits for (ID 0): what a member proposes on
    /// its own (revokes, compactions, alarms, attributes, hash checks).
    pub fn internal(op: Op) -> Vec<u8> {
        prost::Message::encode_to_vec(&LogRequest {
            id: 0,
            op: Some(op),
        })
    }
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
    /// A change to the auth store (users, roles, the enabled flag, a new token).
    #[prost(message, tag = "13")]
    Auth(AuthRequest),
    /// A proposal the leader refused (a membership change it found unsafe) in place of the
    /// proposal itself, so that the proposer, maybe a follower, gets the error.
    #[prost(message, tag = "14")]
    Refused(Refused),
    /// Raise or clear an alarm (etcd's AlarmRequest ACTIVATE / DEACTIVATE).
    #[prost(message, tag = "15")]
    Alarm(AlarmOp),
    /// The leader's HashKV at a revision: every member compares its own (corruption check).
    #[prost(message, tag = "16")]
    HashCheck(HashCheck),
    /// A step of a migration into this cluster (`oxctl migrate`, see `state::import`).
    #[prost(message, tag = "17")]
    Import(ImportRequest),
}

/// See [`Op::Import`]. `now_ms` is the proposer's clock: leases count from it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImportRequest {
    #[prost(int64, tag = "1")]
    pub now_ms: i64,
    #[prost(oneof = "ImportOp", tags = "2, 3, 4")]
    pub op: Option<ImportOp>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ImportOp {
    #[prost(message, tag = "2")]
    Begin(oxcd_api::oxcdimportpb::ImportBeginRequest),
    #[prost(message, tag = "3")]
    Apply(oxcd_api::oxcdimportpb::ImportApplyRequest),
    #[prost(message, tag = "4")]
    End(oxcd_api::oxcdimportpb::ImportEndRequest),
}

/// See [`Op::HashCheck`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct HashCheck {
    #[prost(uint64, tag = "1")]
    pub leader: u64,
    #[prost(int64, tag = "2")]
    pub revision: i64,
    #[prost(int64, tag = "3")]
    pub compact_revision: i64,
    #[prost(uint32, tag = "4")]
    pub hash: u32,
}

/// An alarm change: `activate` raises (`member_id`, `alarm`), else clears it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlarmOp {
    #[prost(bool, tag = "1")]
    pub activate: bool,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int32, tag = "3")]
    pub alarm: i32,
}

/// Why the leader refused a proposal (see [`Op::Refused`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Refused {
    /// 1 = the learner to promote is not in sync with the leader.
    #[prost(uint32, tag = "1")]
    pub reason: u32,
}

/// [`Refused::reason`]: the learner is behind.
pub const REFUSED_LEARNER_NOT_READY: u32 = 1;

/// An auth store change. Passwords never enter the log: the proposer puts the bcrypt hash
/// in `hashed_password` and leaves `password` empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthRequest {
    #[prost(oneof = "AuthOp", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12")]
    pub op: Option<AuthOp>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AuthOp {
    #[prost(message, tag = "1")]
    Enable(pb::AuthEnableRequest),
    #[prost(message, tag = "2")]
    Disable(pb::AuthDisableRequest),
    /// A user whose password the proposer checked gets a token.
    #[prost(message, tag = "3")]
    Authenticate(AuthAssign),
    #[prost(message, tag = "4")]
    UserAdd(pb::AuthUserAddRequest),
    #[prost(message, tag = "5")]
    UserDelete(pb::AuthUserDeleteRequest),
    #[prost(message, tag = "6")]
    UserChangePassword(pb::AuthUserChangePasswordRequest),
    #[prost(message, tag = "7")]
    UserGrantRole(pb::AuthUserGrantRoleRequest),
    #[prost(message, tag = "8")]
    UserRevokeRole(pb::AuthUserRevokeRoleRequest),
    #[prost(message, tag = "9")]
    RoleAdd(pb::AuthRoleAddRequest),
    #[prost(message, tag = "10")]
    RoleDelete(pb::AuthRoleDeleteRequest),
    #[prost(message, tag = "11")]
    RoleGrantPermission(pb::AuthRoleGrantPermissionRequest),
    #[prost(message, tag = "12")]
    RoleRevokePermission(pb::AuthRoleRevokePermissionRequest),
}

/// etcd's internal authenticate request: the token is `<token_prefix>.<raft index>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthAssign {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub token_prefix: String,
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
