//! One append per follower per loop turn (and one forwarded proposal per leader). raft-rs sends a `MsgAppend` to every follower for
//! each proposal, so a turn that proposed a hundred requests hands the transport a hundred
//! appends per follower; each is framed, sent, decoded and stepped on its own, and each
//! follower answers every one. [`merge_appends`] joins the appends of one `Ready` that
//! continue each other into one message, as raft-rs's own `batch_append` does, but bounded
//! by entry bytes (raft-rs's option is not: a merged append could outgrow the receiver's
//! frame limit).
//!
//! A merged append is what raft-rs would have sent had the proposals arrived together: the
//! first append's previous index and term, every entry in order, the later commit index.
//! The leader's progress tracker already counted each append as in flight; the follower's
//! one answer for the last index frees them all.

use protobuf::Message as PbMessage;
use raft::eraftpb::{Message, MessageType};

/// Joins consecutive appends to the same follower, and consecutive proposals forwarded to
/// the leader. Only the latest message to a peer is ever extended, so the order of what
/// each peer receives is unchanged; an append joins the previous one only if it continues
/// it exactly (same term, previous index and term equal to the previous append's last
/// entry), and any message joins only while the entries together stay within
/// `entry_bytes_max`.
pub fn merge_appends(msgs: Vec<Message>, entry_bytes_max: usize) -> Vec<Message> {
    if msgs.len() < 2 {
        return msgs;
    }
    let mut out: Vec<Message> = Vec::with_capacity(msgs.len());
    // Per peer: the position in `out` of the latest message to it, and that message's entry
    // bytes. Clusters have few peers: a short list beats a map.
    let mut latest: Vec<(u64, usize, usize)> = Vec::new();
    for mut m in msgs {
        let slot = latest.iter().position(|(to, _, _)| *to == m.to);
        let bytes = entry_bytes(&m);
        if let Some(s) = slot {
            let (_, at, held) = latest[s];
            let prev = &mut out[at];
            if continues(prev, &m) && held + bytes <= entry_bytes_max {
                let commit = prev.commit.max(m.commit);
                prev.mut_entries().extend(m.take_entries());
                prev.commit = commit;
                latest[s].2 = held + bytes;
                continue;
            }
            latest[s] = (m.to, out.len(), bytes);
        } else {
            latest.push((m.to, out.len(), bytes));
        }
        out.push(m);
    }
    out
}

/// True when `next` can join `prev`: an append that starts right after `prev`, an append
/// of the same term; or, on a follower, a proposal forwarded to the leader right after
/// another (raft-rs forwards each proposal in a message of its own; the leader appends a
/// proposal's entries in order, as many as it holds).
fn continues(prev: &Message, next: &Message) -> bool {
    if prev.get_msg_type() == MessageType::MsgPropose
        && next.get_msg_type() == MessageType::MsgPropose
    {
        return prev.term == next.term;
    }
    if prev.get_msg_type() != MessageType::MsgAppend
        || next.get_msg_type() != MessageType::MsgAppend
        || prev.term != next.term
    {
        return false;
    }
    let (last_index, last_term) = prev
        .entries
        .last()
        .map(|e| (e.index, e.term))
        .unwrap_or((prev.index, prev.log_term));
    next.index == last_index && next.log_term == last_term
}

/// An append's entries, as encoded (what raft-rs's `max_size_per_msg` counts).
fn entry_bytes(m: &Message) -> usize {
    m.entries.iter().map(|e| e.compute_size() as usize).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    fn entry(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![7u8; len].into(),
            ..Default::default()
        }
    }

    fn append(to: u64, term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
        let mut m = Message {
            to,
            term,
            index: prev.0,
            log_term: prev.1,
            commit,
            ..Default::default()
        };
        m.set_msg_type(MessageType::MsgAppend);
        m.set_entries(entries.into());
        m
    }

    fn heartbeat(to: u64) -> Message {
        let mut m = Message {
            to,
            term: 2,
            ..Default::default()
        };
        m.set_msg_type(MessageType::MsgHeartbeat);
        m
    }

    fn indexes(m: &Message) -> Vec<u64> {
        m.entries.iter().map(|e| e.index).collect()
    }

    #[test]
    fn appends_that_continue_each_other_become_one_per_follower() {
        let msgs = vec![
            append(2, 2, (10, 2), vec![entry(11, 2, 8)], 9),
            append(3, 2, (10, 2), vec![entry(11, 2, 8)], 9),
            append(2, 2, (11, 2), vec![entry(12, 2, 8)], 10),
            append(3, 2, (11, 2), vec![entry(12, 2, 8)], 10),
            append(2, 2, (12, 2), vec![], 11),
        ];
        let out = merge_appends(msgs, 1 << 20);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].to, out[0].index, out[0].log_term), (2, 10, 2));
        assert_eq!(indexes(&out[0]), vec![11, 12]);
        assert_eq!(out[0].commit, 11);
        assert_eq!((out[1].to, out[1].index), (3, 10));
        assert_eq!(indexes(&out[1]), vec![11, 12]);
        assert_eq!(out[1].commit, 10);
    }

    #[test]
    fn a_message_in_between_a_gap_or_another_term_keeps_appends_apart() {
        let msgs = vec![
            append(2, 2, (10, 2), vec![entry(11, 2, 8)], 9),
            heartbeat(2),
            append(2, 2, (11, 2), vec![entry(12, 2, 8)], 9),
            // not the next index
            append(2, 2, (13, 2), vec![entry(14, 2, 8)], 9),
            // a newer term
            append(2, 3, (14, 2), vec![entry(15, 3, 8)], 9),
            // previous term does not match the last entry's
            append(2, 3, (15, 2), vec![entry(16, 3, 8)], 9),
        ];
        let out = merge_appends(msgs, 1 << 20);
        let kinds: Vec<_> = out.iter().map(|m| (m.get_msg_type(), m.index)).collect();
        assert_eq!(
            kinds,
            vec![
                (MessageType::MsgAppend, 10),
                (MessageType::MsgHeartbeat, 0),
                (MessageType::MsgAppend, 11),
                (MessageType::MsgAppend, 13),
                (MessageType::MsgAppend, 14),
                (MessageType::MsgAppend, 15),
            ]
        );
    }

    fn proposal(to: u64, index_hint: u64) -> Message {
        let mut m = Message {
            to,
            ..Default::default()
        };
        m.set_msg_type(MessageType::MsgPropose);
        m.set_entries(vec![entry(index_hint, 0, 8)].into());
        m
    }

    #[test]
    fn proposals_forwarded_to_the_leader_become_one_message() {
        let msgs = vec![
            proposal(1, 1),
            proposal(1, 2),
            heartbeat(1),
            proposal(1, 3),
            proposal(1, 4),
        ];
        let out = merge_appends(msgs, 1 << 20);
        let shape: Vec<_> = out.iter().map(|m| (m.get_msg_type(), indexes(m))).collect();
        assert_eq!(
            shape,
            vec![
                (MessageType::MsgPropose, vec![1, 2]),
                (MessageType::MsgHeartbeat, vec![]),
                (MessageType::MsgPropose, vec![3, 4]),
            ]
        );
    }

    #[test]
    fn merged_entries_stay_within_the_byte_bound() {
        let msgs: Vec<Message> = (0..10)
            .map(|i| append(2, 2, (10 + i, 2), vec![entry(11 + i, 2, 100)], 9))
            .collect();
        let one = entry_bytes(&msgs[0]);
        let out = merge_appends(msgs, one * 4);
        let sizes: Vec<usize> = out.iter().map(|m| m.entries.len()).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert!(out.iter().all(|m| entry_bytes(m) <= one * 4));
        let all: Vec<u64> = out.iter().flat_map(indexes).collect();
        assert_eq!(all, (11..21).collect::<Vec<_>>());
        // Each message still starts right after the previous one's last entry.
        assert_eq!(
            out.iter().map(|m| m.index).collect::<Vec<_>>(),
            vec![10, 14, 18]
        );
    }
}
