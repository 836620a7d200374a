//! The raft loop's interface with the rest of the member: the events it takes (from
//! handlers and the peer transport), the transport it sends through, the numbers it
//! publishes, the waiters it answers, and how it ends.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

use raft::eraftpb::Message;
use tokio::sync::oneshot;

use crate::error::ServerError;
use crate::state::apply::Applied;

/// Capacity of the channel into the loop; a full channel answers "too many requests".
pub const EVENT_QUEUE_MAX: usize = 16384;

/// What the proposer of an entry gets: the result and the store revision after it.
pub type ApplyResult = Result<(Applied, i64), ServerError>;

/// Proposers waiting for their entries to be applied, by request ID.
pub type Waiters =
    Arc<Mutex<HashMap<u64, oneshot::Sender<ApplyResult>, BuildHasherDefault<IdHasher>>>>;

/// The waiters' hash: request IDs come from the member's own counter, never from a client,
/// so there is no flood of one bucket to fear and no need for SipHash (a map insert and a
/// remove per write). A multiply spreads the sequential IDs over the map's control bits.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub enum RaftEvent {
    /// An encoded [`crate::request::LogRequest`]; `id` names the waiter (0: nobody waits).
    Propose {
        id: u64,
        data: Vec<u8>,
    },
    ReadIndex(oneshot::Sender<Result<(), ServerError>>),
    Step(Box<Message>),
    Unreachable(u64),
    SnapshotFailed(u64),
    TransferLeader(u64),
    ProposeConfChange {
        id: u64,
        cc: raft::eraftpb::ConfChange,
    },
    Shutdown,
}

/// Where outgoing raft messages go (the peer transport).
pub trait Transport: Send + Sync {
    fn send(&self, msgs: Vec<Message>);
    /// Starts dialers for new members and stops those of removed ones.
    fn set_peers(&self, members: &[crate::state::members::Member]);
}

/// Numbers the loop publishes for status requests and response headers.
#[derive(Default)]
pub struct RaftStatus {
    pub term: AtomicU64,
    /// The leader's member ID, 0 when none is known.
    pub leader: AtomicU64,
    pub commit: AtomicU64,
    pub applied: AtomicU64,
    pub last_index: AtomicU64,
    /// When this member, as leader, took over the leases (ms since the epoch); 0 when it is
    /// not the leader. Read by TimeToLive to report what this leader will enforce.
    pub lease_promoted_ms: AtomicI64,
    /// When this member last saw the leader change (`clock::now_ms`), for v2's
    /// `leaderInfo`; 0 before the first leader.
    pub leader_changed_ms: AtomicI64,
}

/// Why a member stops on its own.
#[derive(Debug)]
pub enum Stop {
    /// A membership change removed this member: it exits with status 0, as etcd does.
    Removed,
    /// It cannot go on without breaking its promises (a WAL or backend failure, a wiped
    /// data dir under an old identity): it exits with status 1 and this message.
    Fatal(String),
}

/// How any part of the member asks `run` to stop it (the raft thread, peer handlers).
pub type StopSender = tokio::sync::mpsc::Sender<Stop>;
