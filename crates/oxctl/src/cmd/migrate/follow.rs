//! Following etcd: one watch on every key from the revision after oxcd's, each response's
//! events turned into whole revisions (etcd sends a revision's events in one response, in
//! sub-revision order) and applied to oxcd. A put that names a lease oxcd has not got
//! brings the lease along (its TTL asked from etcd). Every [`LEASE_SYNC_PERIOD`] the lease
//! lists are compared: leases etcd granted are granted, leases it revoked are removed (their
//! keys' deletes came as revisions). If etcd compacted past the watch's start, a new
//! snapshot is copied and the watch starts after it.

use std::collections::HashSet;
use std::time::Duration;

use oxcd_api::etcdserverpb as pb;
use oxcd_api::mvccpb::{event::EventType, Event};
use oxcd_api::oxcdimportpb as ipb;
use tokio::time::Instant;
use tokio_stream::StreamExt as _;

use super::copy::Batch;
use super::{ctl_err, Migrator};
use crate::cmd::{emit, open_watch};
use crate::error::{status_message, CtlResult};

/// How often the lease lists of both sides are compared while following.
const LEASE_SYNC_PERIOD: Duration = Duration::from_secs(2);
/// How often progress is printed while following.
const PROGRESS_PERIOD: Duration = Duration::from_secs(5);
/// Events gathered from the watch responses already received before one apply.
const EVENTS_PER_APPLY_MAX: usize = 10_000;
/// Snapshot copies in a row after etcd compacted past the watch, before giving up.
const RECOPIES_MAX: u32 = 3;

/// Why following stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    /// The time given ran out, or the user interrupted.
    Done,
    /// oxcd reached the revision asked for.
    CaughtUp,
}

/// Resolves when the process is asked to stop (Ctrl-C, SIGTERM).
async fn interrupted() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// etcd's events of one watch response as whole revisions.
pub(super) fn revisions_of(events: &[Event]) -> Vec<ipb::ImportRevision> {
    let mut out: Vec<ipb::ImportRevision> = Vec::new();
    for e in events {
        let Some(kv) = &e.kv else { continue };
        if out.last().is_none_or(|r| r.revision != kv.mod_revision) {
            out.push(ipb::ImportRevision {
                revision: kv.mod_revision,
                changes: Vec::new(),
            });
        }
        if let Some(r) = out.last_mut() {
            let tombstone = e.r#type == EventType::Delete as i32;
            let sub = r.changes.len() as i64;
            r.changes.push(ipb::ImportChange {
                sub,
                tombstone,
                kv: Some(kv.clone()),
            });
        }
    }
    out
}

impl Migrator {
    /// Follows etcd from `after` + 1 until `deadline` (none: until interrupted).
    pub(super) async fn follow(&mut self, after: i64, deadline: Option<Instant>) -> CtlResult {
        emit(format!("following etcd from revision {}\n", after + 1).as_bytes())?;
        self.follow_until(after, deadline, None).await.map(|_| ())
    }

    /// Follows etcd until oxcd reaches `target` (when given), `deadline` passes or the user
    /// interrupts.
    pub(super) async fn follow_until(
        &mut self,
        mut after: i64,
        deadline: Option<Instant>,
        target: Option<i64>,
    ) -> CtlResult<Stopped> {
        let mut recopies = 0;
        loop {
            if target.is_some_and(|t| self.revision >= t) {
                return Ok(Stopped::CaughtUp);
            }
            match self.watch_once(after, deadline, target).await? {
                WatchEnd::Stopped(s) => return Ok(s),
                WatchEnd::Compacted(at) => {
                    recopies += 1;
                    if recopies > RECOPIES_MAX {
                        return Err(ctl_err(format!(
                            "etcd compacted its history past oxcd's revision {} {RECOPIES_MAX} times in a row: compact etcd less often while migrating",
                            self.revision
                        )));
                    }
                    emit(format!("etcd compacted at revision {at}, past oxcd's revision {}: copying a new snapshot\n", self.revision).as_bytes())?;
                    after = self.copy_snapshot().await?;
                }
            }
        }
    }

    /// One watch from `after` + 1 until it ends.
    async fn watch_once(
        &mut self,
        after: i64,
        deadline: Option<Instant>,
        target: Option<i64>,
    ) -> CtlResult<WatchEnd> {
        let create = pb::WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: after + 1,
            progress_notify: true,
            ..Default::default()
        };
        let (_keep_open, mut stream) = open_watch(&self.src, create).await?;
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let stop_at = deadline.unwrap_or(far);
        let mut next_sync = Instant::now() + LEASE_SYNC_PERIOD;
        let mut next_progress = Instant::now() + PROGRESS_PERIOD;
        let stop = interrupted();
        tokio::pin!(stop);
        // A response read ahead while gathering a batch that must be handled on its own.
        let mut stashed = None;
        loop {
            let wake = next_sync.min(next_progress).min(stop_at);
            let msg = if let Some(m) = stashed.take() {
                m
            } else {
                tokio::select! {
                    m = stream.next() => m,
                    _ = tokio::time::sleep_until(wake) => {
                        if Instant::now() >= stop_at {
                            return Ok(WatchEnd::Stopped(Stopped::Done));
                        }
                        if Instant::now() >= next_sync {
                            self.sync_leases().await?;
                            next_sync = Instant::now() + LEASE_SYNC_PERIOD;
                        }
                        if Instant::now() >= next_progress {
                            emit(format!("at revision {}\n", self.revision).as_bytes())?;
                            next_progress = Instant::now() + PROGRESS_PERIOD;
                        }
                        continue;
                    }
                    _ = &mut stop => return Ok(WatchEnd::Stopped(Stopped::Done)),
                }
            };
            let Some(resp) = msg else {
                return Err(ctl_err("etcd closed the watch stream"));
            };
            let resp =
                resp.map_err(|s| ctl_err(format!("etcd's watch: {}", status_message(&s))))?;
            if resp.compact_revision != 0 {
                return Ok(WatchEnd::Compacted(resp.compact_revision));
            }
            if resp.canceled {
                return Err(ctl_err(format!(
                    "etcd canceled the watch: {}",
                    resp.cancel_reason
                )));
            }
            // Responses already waiting join this batch: when applying falls behind etcd's
            // pace, batches grow instead of the lag.
            let mut events = resp.events;
            while events.len() < EVENTS_PER_APPLY_MAX {
                match futures::FutureExt::now_or_never(stream.next()) {
                    Some(Some(Ok(more))) if more.compact_revision == 0 && !more.canceled => {
                        events.extend(more.events)
                    }
                    Some(other) => {
                        stashed = Some(other);
                        break;
                    }
                    None => break,
                }
            }
            self.apply_events(&events).await?;
            if target.is_some_and(|t| self.revision >= t) {
                return Ok(WatchEnd::Stopped(Stopped::CaughtUp));
            }
        }
    }

    /// Applies one response's revisions, in batches, with the leases their puts name.
    async fn apply_events(&mut self, events: &[Event]) -> CtlResult {
        let revisions = revisions_of(events);
        if revisions.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for r in revisions {
            if r.revision <= self.revision {
                // Already in oxcd (a watch started again after a lost answer).
                continue;
            }
            let leases = self.missing_leases(&r).await?;
            if !leases.is_empty() {
                if let Some(full) = batch.take() {
                    self.apply(full).await?;
                }
                self.apply(ipb::ImportApplyRequest {
                    leases,
                    ..Default::default()
                })
                .await?;
            }
            if let Some(full) = batch.push(r) {
                self.apply(full).await?;
            }
        }
        if let Some(rest) = batch.take() {
            self.apply(rest).await?;
        }
        Ok(())
    }

    /// The leases `r`'s puts name that oxcd has not got, with their TTLs from etcd (a lease
    /// etcd no longer has is left out: its keys' deletes follow).
    async fn missing_leases(
        &mut self,
        r: &ipb::ImportRevision,
    ) -> CtlResult<Vec<ipb::ImportLease>> {
        let mut out = Vec::new();
        let ids: HashSet<i64> = r
            .changes
            .iter()
            .filter_map(|c| c.kv.as_ref())
            .map(|kv| kv.lease)
            .filter(|id| *id != 0 && !self.leases.contains(id))
            .collect();
        for id in ids {
            if let Some(ttl) = self.source_lease_ttl(id).await? {
                out.push(ipb::ImportLease { id, ttl });
                self.leases.insert(id);
            }
        }
        Ok(out)
    }

    /// The granted TTL of etcd's lease `id`, `None` when etcd has no such lease.
    async fn source_lease_ttl(&self, id: i64) -> CtlResult<Option<i64>> {
        let req = pb::LeaseTimeToLiveRequest { id, keys: false };
        let r = self
            .src_ctx
            .call(self.src.lease().lease_time_to_live(req))
            .await?;
        Ok((r.ttl >= 0).then_some(r.granted_ttl))
    }

    /// Makes oxcd's leases etcd's: grants the ones it lacks, removes the ones etcd revoked.
    pub(super) async fn sync_leases(&mut self) -> CtlResult {
        let source: HashSet<i64> = self
            .src_ctx
            .call(self.src.lease().lease_leases(pb::LeaseLeasesRequest {}))
            .await?
            .leases
            .into_iter()
            .map(|l| l.id)
            .collect();
        let mut leases = Vec::new();
        for id in source.difference(&self.leases) {
            if let Some(ttl) = self.source_lease_ttl(*id).await? {
                leases.push(ipb::ImportLease { id: *id, ttl });
            }
        }
        let removed: Vec<i64> = self.leases.difference(&source).copied().collect();
        if leases.is_empty() && removed.is_empty() {
            return Ok(());
        }
        for l in &leases {
            self.leases.insert(l.id);
        }
        for id in &removed {
            self.leases.remove(id);
        }
        self.apply(ipb::ImportApplyRequest {
            leases,
            removed_leases: removed,
            ..Default::default()
        })
        .await
    }
}

/// How one watch ended.
enum WatchEnd {
    Stopped(Stopped),
    /// etcd compacted past the watch's start revision (at this revision).
    Compacted(i64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxcd_api::mvccpb::KeyValue;

    fn event(kind: EventType, key: &str, rev: i64) -> Event {
        Event {
            r#type: kind as i32,
            kv: Some(KeyValue {
                key: key.into(),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn events_become_whole_revisions_with_sub_revisions_in_order() {
        let events = vec![
            event(EventType::Put, "a", 5),
            event(EventType::Put, "b", 6),
            event(EventType::Delete, "a", 6),
            event(EventType::Put, "c", 7),
        ];
        let revs = revisions_of(&events);
        let got: Vec<(i64, Vec<(i64, bool)>)> = revs
            .iter()
            .map(|r| {
                let changes = r.changes.iter().map(|c| (c.sub, c.tombstone)).collect();
                (r.revision, changes)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (5, vec![(0, false)]),
                (6, vec![(0, false), (1, true)]),
                (7, vec![(0, false)])
            ]
        );
    }
}
