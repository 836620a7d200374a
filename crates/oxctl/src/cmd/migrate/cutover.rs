//! The cut-over: with writes to etcd stopped, oxcd catches up to etcd's revision (which must
//! stay put for [`QUIET_PERIOD`]), takes etcd's leases and compaction, and every oxcd
//! member's HashKV at that revision must equal etcd's, and both sides' users and roles must
//! agree (`auth.rs`). Only then does oxcd leave import mode and take writes. A HashKV or an
//! auth store that differs leaves oxcd in import mode and says so.

use std::time::Duration;

use oxcd_api::etcdserverpb as pb;
use oxcd_api::oxcdimportpb as ipb;
use tokio::time::Instant;

use super::follow::Stopped;
use super::{ctl_err, Migrator};
use crate::cmd::emit;
use crate::error::CtlResult;

/// etcd's revision must stay the same this long before the cut-over goes on.
const QUIET_PERIOD: Duration = Duration::from_millis(500);

impl Migrator {
    /// etcd's current revision.
    async fn source_revision(&self) -> CtlResult<i64> {
        let st = self
            .src_ctx
            .call(self.src.maintenance().status(pb::StatusRequest {}))
            .await?;
        Ok(st.header.map_or(0, |h| h.revision))
    }

    /// Catches up with etcd until its revision stays put; returns that revision.
    async fn catch_up(&mut self, deadline: Instant) -> CtlResult<i64> {
        loop {
            let target = self.source_revision().await?;
            if self.revision < target {
                let stopped = self
                    .follow_until(self.revision, Some(deadline), Some(target))
                    .await?;
                if stopped != Stopped::CaughtUp {
                    return Err(ctl_err(format!(
                        "oxcd did not catch up with etcd in time: oxcd at revision {}, etcd at {target} (stop writes to etcd before the cut-over)",
                        self.revision
                    )));
                }
            }
            tokio::time::sleep(QUIET_PERIOD).await;
            let now = self.source_revision().await?;
            if now == self.revision {
                return Ok(now);
            }
            if Instant::now() >= deadline {
                return Err(ctl_err(format!(
                    "etcd is still taking writes (revision {now}, oxcd at {}): stop writes to etcd before the cut-over",
                    self.revision
                )));
            }
        }
    }

    /// Runs the cut-over (see the module doc).
    pub(super) async fn cut_over(&mut self, timeout: Duration, copy_auth: bool) -> CtlResult {
        let deadline = Instant::now() + timeout;
        let revision = self.catch_up(deadline).await?;
        if copy_auth {
            self.copy_auth().await?;
        }
        self.check_auth().await?;
        self.sync_leases().await?;
        let source = self.source_hash().await?;
        if source.header.as_ref().map_or(0, |h| h.revision) != revision {
            return Err(ctl_err(
                "etcd took a write during the cut-over: stop writes to etcd and run the cut-over again",
            ));
        }
        if source.compact_revision > 0 {
            self.apply(ipb::ImportApplyRequest {
                compact_revision: source.compact_revision,
                ..Default::default()
            })
            .await?;
        }
        emit(format!("caught up: etcd and oxcd at revision {revision}\n").as_bytes())?;
        let mut agree = true;
        let mut lines = format!(
            "HashKV at revision {revision}: etcd {} (compacted at {})\n",
            source.hash, source.compact_revision
        );
        for (ep, h) in self.target_hashes(revision).await? {
            let same = h.hash == source.hash && h.compact_revision == source.compact_revision;
            agree &= same;
            lines.push_str(&format!(
                "HashKV at revision {revision}: oxcd {ep} {} (compacted at {}){}\n",
                h.hash,
                h.compact_revision,
                if same { "" } else { " DIFFERS" }
            ));
        }
        emit(lines.as_bytes())?;
        if !agree {
            return Err(ctl_err(
                "oxcd's HashKV differs from etcd's: oxcd stays in import mode (oxctl migrate abort to leave it anyway)",
            ));
        }
        self.dst_ctx
            .call(self.dst.import().end(ipb::ImportEndRequest {}))
            .await?;
        emit(format!("cut-over done: oxcd holds etcd's history up to revision {revision} and takes writes now\n").as_bytes())?;
        let after = self.source_revision().await?;
        if after != revision {
            emit(format!("warning: etcd took writes after the cut-over (now at revision {after}); they are not in oxcd\n").as_bytes())?;
        }
        Ok(())
    }

    /// etcd's HashKV at its current revision.
    async fn source_hash(&self) -> CtlResult<pb::HashKvResponse> {
        self.src_ctx
            .call(
                self.src
                    .maintenance()
                    .hash_kv(pb::HashKvRequest { revision: 0 }),
            )
            .await
    }

    /// Every oxcd member's HashKV at `revision`, by endpoint.
    async fn target_hashes(&self, revision: i64) -> CtlResult<Vec<(String, pb::HashKvResponse)>> {
        let mut out = Vec::new();
        for ep in &self.dst_ctx.endpoints {
            let mut one = self.dst_ctx.clone_settings();
            one.endpoints = vec![ep.clone()];
            let client = one.client().await?;
            // At the current revision (oxcd takes no other writes): a revision at the
            // compact revision itself would be refused as compacted.
            let mut h = one
                .call(
                    client
                        .maintenance()
                        .hash_kv(pb::HashKvRequest { revision: 0 }),
                )
                .await?;
            if h.header.as_ref().map_or(0, |x| x.revision) != revision {
                // Shown as differing: oxcd is not where it should be.
                h.compact_revision = -2;
            }
            out.push((ep.original.clone(), h));
        }
        Ok(out)
    }
}
