//! The lease table: every lease's granted TTL, when it was last renewed (by the proposer's
//! clock, carried in the log entry, so every member computes the same expiry) and the keys
//! attached to it. Written only by the apply loop; the leader proposes a revoke for every
//! lease whose time is up. Grants, renewals (keep-alives) and revokes all go through the log.
//!
//! Persistence: backend aux table [`AUX_LEASES`], key = lease ID (i64 big-endian), value =
//! granted TTL and last renewal (i64 big-endian each). Attached keys are not stored twice:
//! they are rebuilt from the keys' `lease` field when the member starts.

use std::collections::{BTreeMap, BTreeSet};

pub const AUX_LEASES: u8 = 4;
/// etcd's largest TTL (seconds).
pub const TTL_MAX: i64 = 9_000_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub ttl: i64,
    pub renewed_ms: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

impl Lease {
    fn expires_ms(&self) -> i64 {
        self.renewed_ms
            .saturating_add(self.ttl.saturating_mul(1000))
    }
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    pub leases: BTreeMap<i64, Lease>,
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
                    keys: BTreeSet::new(),
                },
            );
        }
        for (key, id) in attached {
            if let Some(l) = t.leases.get_mut(&id) {
                l.keys.insert(key);
            }
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

    /// Seconds left, rounded up, as etcd reports them (never below 0).
    pub fn remaining_secs(&self, id: i64, now_ms: i64) -> Option<i64> {
        let l = self.leases.get(&id)?;
        Some(((l.expires_ms() - now_ms).max(0) + 999) / 1000)
    }

    /// Leases whose time is up at `now_ms`. `grace_from_ms` is when this member became
    /// leader: as etcd does on a leader change, no lease expires before a full TTL has
    /// passed under the new leader.
    pub fn expired(&self, now_ms: i64, grace_from_ms: i64) -> Vec<i64> {
        self.leases
            .iter()
            .filter(|(_, l)| {
                let renewed = l.renewed_ms.max(grace_from_ms);
                renewed.saturating_add(l.ttl.saturating_mul(1000)) <= now_ms
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Moves `key` from the lease it had to the one it has now (0 = none).
    pub fn reattach(&mut self, key: &[u8], old: i64, new: i64) {
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
    fn expiry_respects_leader_grace() {
        let mut t = LeaseTable::default();
        t.leases.insert(
            7,
            Lease {
                ttl: 10,
                renewed_ms: 1_000,
                keys: BTreeSet::new(),
            },
        );
        assert!(t.expired(10_999, 0).is_empty());
        assert_eq!(t.expired(11_000, 0), vec![7]);
        assert!(
            t.expired(11_000, 5_000).is_empty(),
            "a new leader grants a full TTL"
        );
        assert_eq!(t.remaining_secs(7, 10_500), Some(1));
        t.reattach(b"k", 0, 7);
        assert!(t.leases[&7].keys.contains(b"k".as_slice()));
        t.reattach(b"k", 7, 0);
        assert!(t.leases[&7].keys.is_empty());
    }
}
