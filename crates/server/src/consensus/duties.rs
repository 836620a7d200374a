//! The periodic duties of a member, decided apart from the raft loop that carries them out.
//!
//! Every [`DUTY_INTERVAL`] the loop asks [`Duties::due`] what to do now, given a [`View`] of
//! the member's state, and carries out the [`Duty`]s it gets: proposals through the log,
//! a corruption-check hash off the loop, opening the client listeners. The decision is a
//! pure function of the time, the view and the duties' own bookkeeping, so unit tests drive
//! it with a fake view and a fake clock.
//!
//! - Leader only: auto-compaction (`--auto-compaction-*`, see [`super::compactor`]),
//!   the corruption check (`--experimental-corrupt-check-time`), lease revocation (once the
//!   leases are promoted, at most [`REVOKES_PER_SEC_MAX`] a second), v2 TTL expiry.
//! - Every member with a known leader: publish its attributes (name, client URLs) through
//!   the log until the member table has them; then the client listeners open.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::consensus::compactor::Compactor;
use crate::request::{LeaseOp, MemberAttrs, Op, V2Expire};
use crate::state::lease::{Promotion, REVOKES_PER_SEC_MAX};

/// How often the duties are looked at.
pub const DUTY_INTERVAL: Duration = Duration::from_millis(500);
/// A revoke proposed this long ago and still not applied is proposed again.
pub const REVOKE_RETRY_MS: i64 = 3000;

/// What the duties need to know of the member at the moment they are decided.
pub trait View {
    fn is_leader(&self) -> bool;
    fn has_leader(&self) -> bool;
    /// The store's current and compacted revisions.
    fn revisions(&self) -> (i64, i64);
    /// Leases whose time is up at `now_ms` under `promotion`, oldest first, at most `limit`.
    fn expired_leases(&self, now_ms: i64, promotion: Promotion, limit: usize) -> Vec<i64>;
    fn lease_exists(&self, id: i64) -> bool;
    /// True when some v2 node's TTL has run out at `now_ms`.
    fn v2_expired(&self, now_ms: i64) -> bool;
    /// True when the member table holds `attrs` for this member (or no row for it).
    fn attrs_published(&self, attrs: &MemberAttrs) -> bool;
}

/// One thing the loop must do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Duty {
    /// Propose this internal request through the log.
    Propose(Op),
    /// Hash the store at the current revision off the loop and propose a [`HashCheck`].
    CorruptCheck,
    /// This member's attributes are in the member table: serve clients.
    Published,
}

/// The duties' bookkeeping. Owned by the raft loop.
pub struct Duties {
    last_run: Option<Instant>,
    compactor: Option<Compactor>,
    corrupt_check_every: Option<Duration>,
    last_corrupt_check: Instant,
    /// Set while this member, as leader, expires leases (etcd's promoted lessor).
    lease_promotion: Option<Promotion>,
    /// Lease revokes proposed and not applied yet, with when (ms).
    revoking: HashMap<i64, i64>,
    attrs: MemberAttrs,
}

/// The settings of [`Duties`].
pub struct DutySettings {
    pub compactor: Option<Compactor>,
    pub corrupt_check_every: Option<Duration>,
    pub attrs: MemberAttrs,
}

impl Duties {
    pub fn new(settings: DutySettings, now: Instant) -> Duties {
        Duties {
            last_run: None,
            compactor: settings.compactor,
            corrupt_check_every: settings.corrupt_check_every,
            last_corrupt_check: now,
            lease_promotion: None,
            revoking: HashMap::new(),
            attrs: settings.attrs,
        }
    }

    /// What is due at `now` (`now_ms`: the wall clock, for leases and TTLs).
    pub fn due(&mut self, now: Instant, now_ms: i64, view: &impl View) -> Vec<Duty> {
        if self
            .last_run
            .is_some_and(|t| now.duration_since(t) < DUTY_INTERVAL)
        {
            return Vec::new();
        }
        self.last_run = Some(now);
        let mut out = Vec::new();
        let leader = view.is_leader();
        if let Some(c) = self.compactor.as_mut() {
            let (current, compacted) = view.revisions();
            if let Some(revision) = c.tick(now, current, compacted, leader) {
                tracing::info!(
                    "starting auto compaction at revision {revision} ({:?})",
                    c.mode
                );
                out.push(Duty::Propose(Op::Compaction(
                    oxcd_api::etcdserverpb::CompactionRequest {
                        revision,
                        physical: false,
                    },
                )));
            }
        }
        if leader {
            if let Some(every) = self.corrupt_check_every {
                if now.duration_since(self.last_corrupt_check) >= every {
                    self.last_corrupt_check = now;
                    out.push(Duty::CorruptCheck);
                }
            }
            self.revoke_expired_leases(now_ms, view, &mut out);
            if view.v2_expired(now_ms) {
                out.push(Duty::Propose(Op::V2Expire(V2Expire { now_ms })));
            }
        }
        if view.has_leader() {
            if view.attrs_published(&self.attrs) {
                out.push(Duty::Published);
            } else {
                out.push(Duty::Propose(Op::MemberAttrs(self.attrs.clone())));
            }
        }
        out
    }

    /// Leader only: a revoke for each lease whose time is up (once per lease every
    /// [`REVOKE_RETRY_MS`], in case a proposal is lost), at most [`REVOKES_PER_SEC_MAX`] a
    /// second.
    fn revoke_expired_leases(&mut self, now_ms: i64, view: &impl View, out: &mut Vec<Duty>) {
        let Some(promotion) = self.lease_promotion else {
            return;
        };
        let per_round = REVOKES_PER_SEC_MAX * DUTY_INTERVAL.as_millis() as usize / 1000;
        // Revokes still in flight count against this round.
        self.revoking
            .retain(|id, at| view.lease_exists(*id) && now_ms - *at < REVOKE_RETRY_MS);
        let room = per_round.saturating_sub(self.revoking.len());
        let expired = view.expired_leases(now_ms, promotion, room + self.revoking.len());
        let mut proposed = 0;
        for id in expired {
            if proposed >= room || self.revoking.contains_key(&id) {
                continue;
            }
            proposed += 1;
            crate::metrics::get().lease_expired.inc();
            self.revoking.insert(id, now_ms);
            out.push(Duty::Propose(Op::LeaseRevoke(LeaseOp {
                id,
                ttl: 0,
                now_ms,
            })));
        }
    }

    /// Look again at the next tick rather than after the usual pause (a leader was found).
    pub fn run_soon(&mut self) {
        self.last_run = None;
    }

    /// This member, as leader, applied every entry of earlier terms: from now on it expires
    /// leases (etcd's `lessor.Promote`).
    pub fn promote_leases(&mut self, p: Promotion) {
        self.lease_promotion = Some(p);
        self.revoking.clear();
    }

    /// No longer the leader: stop expiring leases.
    pub fn demote_leases(&mut self) {
        self.lease_promotion = None;
        self.revoking.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AutoCompaction;

    /// A member as the duties see it, set by the test.
    #[derive(Default)]
    struct Fake {
        leader: bool,
        has_leader: bool,
        revs: (i64, i64),
        /// (id, expiry ms)
        leases: Vec<(i64, i64)>,
        v2_expired: bool,
        published: bool,
    }

    impl View for Fake {
        fn is_leader(&self) -> bool {
            self.leader
        }
        fn has_leader(&self) -> bool {
            self.has_leader
        }
        fn revisions(&self) -> (i64, i64) {
            self.revs
        }
        fn expired_leases(&self, now_ms: i64, _: Promotion, limit: usize) -> Vec<i64> {
            let mut due: Vec<_> = self.leases.iter().filter(|l| l.1 <= now_ms).collect();
            due.sort_by_key(|l| l.1);
            due.into_iter().take(limit).map(|l| l.0).collect()
        }
        fn lease_exists(&self, id: i64) -> bool {
            self.leases.iter().any(|l| l.0 == id)
        }
        fn v2_expired(&self, _: i64) -> bool {
            self.v2_expired
        }
        fn attrs_published(&self, _: &MemberAttrs) -> bool {
            self.published
        }
    }

    fn attrs() -> MemberAttrs {
        MemberAttrs {
            id: 1,
            name: "infra0".into(),
            client_urls: vec!["https://127.0.0.1:2379".into()],
        }
    }

    fn duties(
        compaction: Option<AutoCompaction>,
        corrupt: Option<Duration>,
        t0: Instant,
    ) -> Duties {
        Duties::new(
            DutySettings {
                compactor: compaction.map(Compactor::new),
                corrupt_check_every: corrupt,
                attrs: attrs(),
            },
            t0,
        )
    }

    fn revokes(d: &[Duty]) -> Vec<i64> {
        d.iter()
            .filter_map(|d| match d {
                Duty::Propose(Op::LeaseRevoke(l)) => Some(l.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_member_publishes_its_attributes_then_opens_to_clients() {
        let t0 = Instant::now();
        let mut d = duties(None, None, t0);
        let mut view = Fake::default();
        assert!(d.due(t0, 0, &view).is_empty(), "no leader: nothing to do");
        view.has_leader = true;
        assert!(
            d.due(t0, 0, &view).is_empty(),
            "not due again within the interval"
        );
        d.run_soon();
        assert_eq!(
            d.due(t0, 0, &view),
            vec![Duty::Propose(Op::MemberAttrs(attrs()))]
        );
        view.published = true;
        let later = t0 + DUTY_INTERVAL;
        assert_eq!(d.due(later, 0, &view), vec![Duty::Published]);
    }

    #[test]
    fn only_a_promoted_leader_revokes_and_each_lease_once_in_flight() {
        let t0 = Instant::now();
        let mut d = duties(None, None, t0);
        let mut view = Fake {
            leader: true,
            has_leader: true,
            published: true,
            leases: vec![(1, 100), (2, 50), (3, 10_000)],
            ..Default::default()
        };
        assert!(
            revokes(&d.due(t0, 1000, &view)).is_empty(),
            "not promoted yet"
        );
        d.promote_leases(Promotion {
            at_ms: 0,
            extend_ms: 0,
        });
        let t = t0 + DUTY_INTERVAL;
        assert_eq!(revokes(&d.due(t, 1000, &view)), vec![2, 1], "oldest first");
        let t = t + DUTY_INTERVAL;
        assert!(revokes(&d.due(t, 1000, &view)).is_empty(), "in flight");
        let t = t + DUTY_INTERVAL;
        assert_eq!(
            revokes(&d.due(t, 1000 + REVOKE_RETRY_MS, &view)),
            vec![2, 1],
            "a revoke not applied in time is proposed again"
        );
        view.leases.retain(|l| l.0 == 3);
        view.leader = false;
        d.demote_leases();
        let t = t + DUTY_INTERVAL;
        assert!(
            revokes(&d.due(t, 20_000, &view)).is_empty(),
            "a follower never revokes"
        );
    }

    #[test]
    fn revokes_per_round_are_bounded() {
        let t0 = Instant::now();
        let mut d = duties(None, None, t0);
        let view = Fake {
            leader: true,
            leases: (1..=5000).map(|id| (id, id)).collect(),
            ..Default::default()
        };
        d.promote_leases(Promotion {
            at_ms: 0,
            extend_ms: 0,
        });
        let per_round = REVOKES_PER_SEC_MAX * DUTY_INTERVAL.as_millis() as usize / 1000;
        let first = revokes(&d.due(t0, 1_000_000, &view));
        assert_eq!(first.len(), per_round);
        assert_eq!(first[0], 1);
        let t = t0 + DUTY_INTERVAL;
        // Nothing applied yet: the round's room is taken by the revokes in flight.
        assert!(revokes(&d.due(t, 1_000_001, &view)).is_empty());
    }

    #[test]
    fn leader_duties_compaction_corruption_check_and_v2_expiry() {
        let t0 = Instant::now();
        let mut d = duties(
            Some(AutoCompaction::Revision(10)),
            Some(Duration::from_secs(60)),
            t0,
        );
        let mut view = Fake {
            leader: true,
            revs: (100, 0),
            v2_expired: true,
            ..Default::default()
        };
        let first = d.due(t0, 0, &view);
        assert!(first.contains(&Duty::Propose(Op::V2Expire(V2Expire { now_ms: 0 }))));
        assert!(!first.contains(&Duty::CorruptCheck));
        let t = t0 + Duration::from_secs(300);
        let due = d.due(t, 0, &view);
        assert!(due.contains(&Duty::CorruptCheck), "{due:?}");
        assert!(
            due.iter().any(|x| matches!(x,
            Duty::Propose(Op::Compaction(c)) if c.revision == 90)),
            "{due:?}"
        );
        view.leader = false;
        view.v2_expired = true;
        let t = t + Duration::from_secs(600);
        assert!(
            d.due(t, 0, &view).is_empty(),
            "a follower has no leader duties"
        );
    }
}
