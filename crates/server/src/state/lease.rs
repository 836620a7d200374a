//! The lease table: every lease's granted TTL, when it was last renewed (by the proposer's
//! clock, carried in the log entry, so every member computes the same expiry) and the keys
//! attached to it. Written only by the apply loop; the leader proposes a revoke for every
//! lease whose time is up. Grants, renewals (keep-alives) and revokes all go through the log.
//!
//! Persistence: backend aux table [`AUX_LEASES`], key = lease ID (i64 big-endian), value =
//! granted TTL and last renewal (i64 big-endian each). Attached keys are not stored twice:
//! they are rebuilt from the keys' `lease` field when the member starts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The row layout is shared with snapshots (`oxcd_snapshot::rows`).
pub use oxcd_snapshot::rows::AUX_LEASES;
/// etcd's largest TTL (seconds).
pub const TTL_MAX: i64 = 9_000_000_000;
/// Leases a member holds, at most (oxcd's bound; etcd has none): every lease is kept in
/// memory on every member. Checked when a grant is applied, so all members agree.
pub const LEASES_MAX: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub ttl: i64,
    /// The last grant or renewal, by the proposer's clock (the same on every member).
    pub renewed_ms: i64,
    /// When this member applied (or, as leader, answered) the last grant or renewal, by its
    /// own clock (0 = not since it started). Not persisted, not replicated: the leader
    /// decides expiry by its own clock, as etcd's does, so a member whose clock is off
    /// cannot make a lease expire early.
    pub applied_ms: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

/// When a member became the leader and how much it extends every lease then. etcd's
/// `lessor.Promote(electionTimeout)`: a new leader does not know when the old one last saw
/// each lease renewed by the clock, so it gives every lease its full TTL again plus one
/// election timeout, counted from its promotion. A renewal after the promotion counts as
/// usual. A leader change therefore never expires a lease early.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Promotion {
    pub at_ms: i64,
    pub extend_ms: i64,
}

impl Lease {
    fn expiry_ms(&self, promotion: Option<Promotion>) -> i64 {
        let ttl_ms = self.ttl.saturating_mul(1000);
        let renewed = if self.applied_ms != 0 {
            self.applied_ms
        } else {
            self.renewed_ms
        };
        match promotion {
            Some(p) if renewed < p.at_ms => {
                p.at_ms.saturating_add(p.extend_ms).saturating_add(ttl_ms)
            }
            _ => renewed.saturating_add(ttl_ms),
        }
    }
}

/// etcd's `leaseRevokeRate`: expired leases revoked per second at most, so that a mass
/// expiry is spread over time instead of stalling writes.
pub const REVOKES_PER_SEC_MAX: usize = 1000;

/// etcd's minimum lease TTL: 1.5 election timeouts counted in whole heartbeats
/// (`(3 * electionTicks) / 2 * heartbeat`), rounded up to whole seconds.
pub fn ttl_min_secs(election_ms: u64, heartbeat_ms: u64) -> i64 {
    let heartbeat_ms = heartbeat_ms.max(1);
    let election_ticks = election_ms / heartbeat_ms;
    let min_ms = (3 * election_ticks) / 2 * heartbeat_ms;
    min_ms.div_ceil(1000) as i64
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    pub leases: BTreeMap<i64, Lease>,
    /// The lease each attached key names (etcd's `itemMap`): a write that detaches a key
    /// learns its lease here, so a delete never reads the values it removes for it.
    of_key: HashMap<Vec<u8>, i64>,
}

impl LeaseTable {
    /// Rebuilds the table from its backend rows and the keys that name a lease.
    pub fn load(rows: Vec<(Vec<u8>, Vec<u8>)>, attached: Vec<(Vec<u8>, i64)>) -> LeaseTable {
        let mut t = LeaseTable::default();
        for (k, v) in rows {
            let (Ok(id), Some(ttl), Some(renewed)) = (
                <[u8; 8]>::try_from(k.as_slice()).map(i64::from_be_bytes),
                v.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(i64::from_be_bytes),
                v.get(8..16)
                    .and_then(|b| b.try_into().ok())
                    .map(i64::from_be_bytes),
            ) else {
                continue;
            };
            t.leases.insert(
                id,
                Lease {
                    ttl,
                    renewed_ms: renewed,
                    applied_ms: 0,
                    keys: BTreeSet::new(),
                },
            );
        }
        for (key, id) in attached {
            t.reattach(&key, id);
        }
        t
    }

    pub fn row(l: &Lease) -> Vec<u8> {
        let mut v = l.ttl.to_be_bytes().to_vec();
        v.extend_from_slice(&l.renewed_ms.to_be_bytes());
        v
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// True when no lease can be granted until one goes ([`LEASES_MAX`]).
    pub fn is_full(&self) -> bool {
        self.leases.len() >= LEASES_MAX
    }

    /// Seconds left, rounded up, as etcd reports them (never below 0). `promotion` is
    /// this member's, when it is the leader (see [`Promotion`]).
    pub fn remaining_secs(
        &self,
        id: i64,
        now_ms: i64,
        promotion: Option<Promotion>,
    ) -> Option<i64> {
        let l = self.leases.get(&id)?;
        Some(((l.expiry_ms(promotion) - now_ms).max(0) + 999) / 1000)
    }

    /// The leader renews lease `id` by its own clock at `now_ms` (etcd's `lessor.Renew`):
    /// its TTL, or `None` when the lease is unknown or its time is already up (it is not
    /// brought back). Only the promoted leader calls this; other members learn of the
    /// renewal from the log entry the leader proposes after it.
    pub fn renew_on_leader(&mut self, id: i64, now_ms: i64, promotion: Promotion) -> Option<i64> {
        let l = self.leases.get_mut(&id)?;
        if l.expiry_ms(Some(promotion)) <= now_ms {
            return None;
        }
        l.applied_ms = l.applied_ms.max(now_ms);
        Some(l.ttl)
    }

    /// Whether lease `id` exists and its time is up under the leader's `promotion`.
    pub fn is_expired(&self, id: i64, now_ms: i64, promotion: Promotion) -> bool {
        self.leases
            .get(&id)
            .is_some_and(|l| l.expiry_ms(Some(promotion)) <= now_ms)
    }

    /// Up to `limit` leases whose time is up at `now_ms` under the leader's `promotion`,
    /// the longest expired first.
    pub fn expired(&self, now_ms: i64, promotion: Promotion, limit: usize) -> Vec<i64> {
        let mut due: Vec<(i64, i64)> = self
            .leases
            .iter()
            .map(|(id, l)| (l.expiry_ms(Some(promotion)), *id))
            .filter(|(at, _)| *at <= now_ms)
            .collect();
        due.sort_unstable();
        due.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    /// Moves `key` from the lease it had to the one it has now (0 = none, as after a
    /// delete). A lease that does not exist takes no key.
    /// The lease `key` is attached to (0: none).
    pub fn lease_of(&self, key: &[u8]) -> i64 {
        self.of_key.get(key).copied().unwrap_or(0)
    }

    pub fn reattach(&mut self, key: &[u8], new: i64) {
        let old = if new != 0 && self.leases.contains_key(&new) {
            self.of_key.insert(key.to_vec(), new)
        } else {
            self.of_key.remove(key)
        }
        .unwrap_or(0);
        if old != 0 && old != new {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        if new != 0 {
            if let Some(l) = self.leases.get_mut(&new) {
                l.keys.insert(key.to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_leader_extends_every_lease() {
        let mut t = LeaseTable::default();
        t.leases.insert(
            7,
            Lease {
                ttl: 10,
                renewed_ms: 1_000,
                applied_ms: 0,
                keys: BTreeSet::new(),
            },
        );
        let old = Promotion {
            at_ms: 0,
            extend_ms: 1_000,
        };
        assert!(t.expired(10_999, old, 10).is_empty());
        assert_eq!(t.expired(11_000, old, 10), vec![7]);
        // Promoted at 5 s: a full TTL plus one election timeout from then.
        let new = Promotion {
            at_ms: 5_000,
            extend_ms: 1_000,
        };
        assert!(t.expired(15_999, new, 10).is_empty());
        assert_eq!(t.expired(16_000, new, 10), vec![7]);
        assert_eq!(t.remaining_secs(7, 10_500, None), Some(1));
        assert_eq!(t.remaining_secs(7, 10_500, Some(new)), Some(6));
        t.reattach(b"k", 7);
        assert!(t.leases[&7].keys.contains(b"k".as_slice()));
        // A lease that does not exist takes nothing, and the key leaves lease 7.
        t.reattach(b"k", 8);
        assert!(t.leases[&7].keys.is_empty());
        t.reattach(b"k", 7);
        t.reattach(b"k", 0);
        assert!(t.leases[&7].keys.is_empty());
        assert!(t.of_key.is_empty());
    }

    #[test]
    fn the_leaders_own_clock_decides() {
        let mut t = LeaseTable::default();
        // Renewed through a member whose clock is 3 s behind: applied here at 10 s.
        t.leases.insert(
            7,
            Lease {
                ttl: 5,
                renewed_ms: 7_000,
                applied_ms: 10_000,
                keys: BTreeSet::new(),
            },
        );
        let p = Promotion {
            at_ms: 0,
            extend_ms: 0,
        };
        assert!(t.expired(14_999, p, 10).is_empty());
        assert_eq!(t.expired(15_000, p, 10), vec![7]);
    }

    #[test]
    fn the_leader_renews_live_leases_only() {
        let mut t = LeaseTable::default();
        t.leases.insert(
            7,
            Lease {
                ttl: 5,
                renewed_ms: 1_000,
                applied_ms: 1_000,
                keys: BTreeSet::new(),
            },
        );
        let p = Promotion {
            at_ms: 0,
            extend_ms: 0,
        };
        assert_eq!(t.renew_on_leader(7, 5_999, p), Some(5));
        assert!(t.expired(10_998, p, 10).is_empty());
        assert_eq!(t.renew_on_leader(7, 10_999, p), None, "time was up");
        assert_eq!(t.renew_on_leader(8, 1_000, p), None, "unknown");
    }

    #[test]
    fn expired_leases_come_in_bounded_batches_oldest_first() {
        let mut t = LeaseTable::default();
        for id in 1..=10 {
            t.leases.insert(
                id,
                Lease {
                    ttl: 1,
                    renewed_ms: 100 - id,
                    applied_ms: 0,
                    keys: BTreeSet::new(),
                },
            );
        }
        let p = Promotion {
            at_ms: 0,
            extend_ms: 0,
        };
        assert_eq!(t.expired(5_000, p, 3), vec![10, 9, 8]);
    }

    #[test]
    fn ttl_min_is_etcds() {
        assert_eq!(ttl_min_secs(1000, 100), 2);
        assert_eq!(ttl_min_secs(1000, 300), 2);
        assert_eq!(ttl_min_secs(5000, 500), 8);
        assert_eq!(ttl_min_secs(500, 100), 1);
    }
}
