//! Auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`), run by the
//! leader only and applied through the log like any compaction, as etcd's compactor does.
//!
//! - periodic, retention R: the current revision is sampled every R/10 (at least every
//!   100 ms); every min(R, 1 h) the store is compacted to the revision it had R ago.
//! - revision, retention N: every 5 minutes the store is compacted to current - N.
//!
//! A member that loses leadership drops its samples; a new leader starts sampling afresh, so
//! it never compacts history younger than R.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::AutoCompaction;

/// etcd's revision-mode check interval.
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// The periodic mode samples at least this far apart.
pub const SAMPLE_INTERVAL_MIN: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Compactor {
    pub mode: AutoCompaction,
    /// (when, revision then), oldest first, covering about one retention period.
    samples: VecDeque<(Instant, i64)>,
    /// When this member became leader, or last compacted.
    last: Option<Instant>,
}

impl Compactor {
    pub fn new(mode: AutoCompaction) -> Compactor {
        Compactor {
            mode,
            samples: VecDeque::new(),
            last: None,
        }
    }

    /// Called often by the leader; returns a revision to compact to when one is due.
    /// `compacted` is the store's compaction point; `leader` false pauses the compactor.
    pub fn tick(
        &mut self,
        now: Instant,
        current: i64,
        compacted: i64,
        leader: bool,
    ) -> Option<i64> {
        if !leader {
            self.samples.clear();
            self.last = None;
            return None;
        }
        let last = *self.last.get_or_insert(now);
        let target = match self.mode {
            AutoCompaction::Revision(keep) => {
                if now.duration_since(last) < REVISION_CHECK_INTERVAL {
                    return None;
                }
                current - keep as i64
            }
            AutoCompaction::Periodic(retention) => {
                let every = (retention / 10).max(SAMPLE_INTERVAL_MIN);
                let due = self
                    .samples
                    .back()
                    .is_none_or(|(t, _)| now.duration_since(*t) >= every);
                if due {
                    self.samples.push_back((now, current));
                }
                // Keep only the newest sample that is at least `retention` old, and newer ones.
                while self.samples.len() > 1 && now.duration_since(self.samples[1].0) >= retention {
                    self.samples.pop_front();
                }
                let (oldest_at, oldest_rev) = *self.samples.front()?;
                if now.duration_since(oldest_at) < retention
                    || now.duration_since(last) < retention.min(Duration::from_secs(3600))
                {
                    return None;
                }
                oldest_rev
            }
        };
        self.last = Some(now);
        (target > compacted && target <= current).then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_compacts_to_the_revision_of_one_retention_ago() {
        let mut c = Compactor::new(AutoCompaction::Periodic(Duration::from_secs(10)));
        let t0 = Instant::now();
        let mut got = Vec::new();
        // One revision per second for 35 s; ticks every 100 ms.
        for step in 0..350u64 {
            let now = t0 + Duration::from_millis(step * 100);
            let rev = 1 + (step / 10) as i64;
            let compacted = got.last().copied().unwrap_or(0);
            if let Some(r) = c.tick(now, rev, compacted, true) {
                got.push(r);
            }
        }
        assert!(!got.is_empty());
        // Never newer than what the store held 10 s before the compaction.
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        assert!(got[0] <= 2 && *got.last().unwrap_or(&0) >= 20, "{got:?}");
    }

    #[test]
    fn followers_do_not_compact_and_a_new_leader_waits_a_full_retention() {
        let mut c = Compactor::new(AutoCompaction::Periodic(Duration::from_secs(1)));
        let t0 = Instant::now();
        assert_eq!(c.tick(t0, 5, 0, false), None);
        assert_eq!(c.tick(t0, 5, 0, true), None);
        assert_eq!(c.tick(t0 + Duration::from_millis(500), 9, 0, true), None);
        assert_eq!(
            c.tick(t0 + Duration::from_millis(1100), 12, 0, true),
            Some(5)
        );
        // Lost leadership: samples gone; as leader again, nothing before a retention passes.
        assert_eq!(c.tick(t0 + Duration::from_millis(1200), 13, 5, false), None);
        assert_eq!(c.tick(t0 + Duration::from_millis(1300), 13, 5, true), None);
        assert_eq!(c.tick(t0 + Duration::from_millis(2000), 14, 5, true), None);
        assert_eq!(
            c.tick(t0 + Duration::from_millis(2400), 15, 5, true),
            Some(13)
        );
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions() {
        let mut c = Compactor::new(AutoCompaction::Revision(100));
        let t0 = Instant::now();
        assert_eq!(c.tick(t0, 1000, 0, true), None);
        assert_eq!(c.tick(t0 + Duration::from_secs(10), 1000, 0, true), None);
        assert_eq!(
            c.tick(t0 + REVISION_CHECK_INTERVAL, 1000, 0, true),
            Some(900)
        );
        let later = t0 + REVISION_CHECK_INTERVAL * 2;
        assert_eq!(c.tick(later, 950, 900, true), None);
    }
}
