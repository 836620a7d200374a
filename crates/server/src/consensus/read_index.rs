//! Linearizable reads waiting on raft's ReadIndex: new reads are batched into one ReadIndex
//! request per loop turn, matched to raft's answer by its context, and released once this
//! member has applied up to the index the leader confirmed.

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::error::ServerError;

/// A linearizable read waiting for its read index to be applied.
pub type ReadWaiter = oneshot::Sender<Result<(), ServerError>>;

/// The reads of one member, from request to release. Owned by the raft loop.
pub struct ReadIndexQueue {
    member_id: u64,
    /// Arrived since the last ReadIndex request.
    new: Vec<ReadWaiter>,
    /// Asked for, by the request context, waiting for raft's answer.
    asked: HashMap<Vec<u8>, Vec<ReadWaiter>>,
    /// Answered with a read index, waiting for it to be applied.
    ready: Vec<(u64, Vec<ReadWaiter>)>,
    /// The last context sequence number used.
    seq: u64,
}

impl ReadIndexQueue {
    pub fn new(member_id: u64) -> ReadIndexQueue {
        ReadIndexQueue {
            member_id,
            new: Vec::new(),
            asked: HashMap::new(),
            ready: Vec::new(),
            seq: 0,
        }
    }

    pub fn push(&mut self, w: ReadWaiter) {
        self.new.push(w);
    }

    /// The context of one ReadIndex request for every read that arrived since the last
    /// call, or None when none did. The leader keys pending reads by context: it is unique
    /// across members (member ID, then a sequence number).
    pub fn next_request(&mut self) -> Option<Vec<u8>> {
        if self.new.is_empty() {
            return None;
        }
        self.seq += 1;
        let mut ctx = self.member_id.to_be_bytes().to_vec();
        ctx.extend_from_slice(&self.seq.to_be_bytes());
        self.asked
            .insert(ctx.clone(), std::mem::take(&mut self.new));
        Some(ctx)
    }

    /// Raft answered the request `ctx` with the leader's commit index.
    pub fn answered(&mut self, ctx: &[u8], index: u64) {
        if let Some(ws) = self.asked.remove(ctx) {
            self.ready.push((index, ws));
        }
    }

    /// Releases the reads whose index is applied.
    pub fn release(&mut self, applied: u64) {
        let mut i = 0;
        while i < self.ready.len() {
            if self.ready[i].0 <= applied {
                let (_, ws) = self.ready.swap_remove(i);
                for w in ws {
                    let _ = w.send(Ok(()));
                }
            } else {
                i += 1;
            }
        }
    }

    /// The leader changed: requests asked of the old one will not be answered.
    pub fn fail_asked(&mut self) {
        for (_, ws) in self.asked.drain() {
            for w in ws {
                let _ = w.send(Err(ServerError::LeaderChanged));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_released_once_their_index_is_applied() {
        let mut q = ReadIndexQueue::new(7);
        assert_eq!(q.next_request(), None);
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        q.push(tx1);
        q.push(tx2);
        let ctx = q.next_request().expect("a request for two reads");
        assert_eq!(&ctx[..8], &7u64.to_be_bytes());
        assert_eq!(q.next_request(), None, "one request per batch");
        q.answered(&ctx, 10);
        q.release(9);
        assert!(rx1.try_recv().is_err(), "index 10 not applied yet");
        q.release(10);
        assert!(matches!(rx1.try_recv(), Ok(Ok(()))));
        assert!(matches!(rx2.try_recv(), Ok(Ok(()))));
    }

    #[test]
    fn a_leader_change_fails_the_reads_asked_of_the_old_leader() {
        let mut q = ReadIndexQueue::new(1);
        let (tx, mut rx) = oneshot::channel();
        q.push(tx);
        let first = q.next_request().expect("request");
        let (tx2, _rx2) = oneshot::channel();
        q.push(tx2);
        let second = q.next_request().expect("request");
        assert_ne!(first, second, "contexts are unique");
        q.fail_asked();
        assert!(matches!(rx.try_recv(), Ok(Err(ServerError::LeaderChanged))));
        // An answer for a failed request is ignored.
        q.answered(&first, 3);
        q.release(u64::MAX);
    }
}
