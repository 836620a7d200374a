//! `oxctl migrate` (oxcd's own, not etcdctl's): moves a running etcd cluster's data into an
//! empty oxcd cluster so that every revision stays the same revision (Kubernetes
//! resourceVersions are revisions), while etcd keeps taking writes, then cuts over.
//! `make-mirror` cannot do this: it renumbers revisions.
//!
//! - `migrate run --from ETCD --to OXCD`: puts the oxcd cluster in import mode (it refuses
//!   client writes from then on), copies etcd's snapshot at revision R ([`copy`]), then
//!   applies etcd's watch stream from R+1 ([`follow`]): each source transaction becomes the
//!   same revision in oxcd, puts with their create revision, version and lease, deletes as
//!   tombstones; leases are mirrored with their IDs and TTLs. Runs until interrupted (or
//!   `--follow-for`); run again, it goes on from oxcd's revision (or copies a new snapshot if
//!   etcd compacted past it).
//! - `migrate run ... --cut-over` (after writes to etcd have stopped): catches up to etcd's
//!   revision, mirrors leases and the compaction, compares etcd's HashKV with every oxcd
//!   member's at that revision and, if all agree, leaves import mode ([`cutover`]).
//! - `migrate status --to OXCD`, `migrate abort --to OXCD` (leaves import mode unchecked).
//!
//! Every step on the oxcd side is one call of oxcd's Import service, one raft log entry,
//! checked whole before it applies (`expect_revision`: a batch is never applied twice).
//! Auth changes made on etcd after the snapshot are not in etcd's watch stream: the
//! cut-over compares both sides' users and roles and refuses when they differ ([`auth`]);
//! `--copy-auth` copies the auth store again from a new snapshot.

mod auth;
mod copy;
mod cutover;
mod follow;

use std::collections::HashSet;
use std::time::Duration;

use oxcd_api::etcdserverpb as pb;
use oxcd_api::oxcdimportpb as ipb;
use oxcd_client::Client;

use super::emit;
use crate::ctx::{go_duration_flag, Ctx, Global};
use crate::error::{status_message, CtlError, CtlResult, EXIT_ERROR};

/// A batch sent to oxcd in one Import.Apply (one log entry) stays under this, unless a single
/// source revision is bigger (it then goes alone).
pub const APPLY_BATCH_BYTES: usize = 512 * 1024;
/// How many times a failed Import.Apply is tried again (transient failures: leader change,
/// timeout), with a pause that doubles from [`RETRY_PAUSE`].
const APPLY_TRIES_MAX: u32 = 8;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(clap::Subcommand, Debug)]
pub enum MigrateCmd {
    /// Copies etcd's data into an empty oxcd cluster keeping every revision, then follows etcd
    Run(RunArgs),
    /// Shows the import state of the oxcd cluster
    Status(TargetArgs),
    /// Leaves import mode without checks (the oxcd cluster keeps what it has)
    Abort(TargetArgs),
}

/// The oxcd side's connection flags.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// oxcd endpoints to migrate to
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// CA bundle for the oxcd endpoints
    #[arg(long)]
    pub to_cacert: Option<String>,
    /// client certificate for the oxcd endpoints
    #[arg(long)]
    pub to_cert: Option<String>,
    /// client key for the oxcd endpoints
    #[arg(long)]
    pub to_key: Option<String>,
    /// username[:password] on oxcd (default: --from-user, the users being the same)
    #[arg(long)]
    pub to_user: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// etcd endpoints to migrate from
    #[arg(long, value_delimiter = ',', required = true)]
    pub from: Vec<String>,
    /// CA bundle for the etcd endpoints
    #[arg(long)]
    pub from_cacert: Option<String>,
    /// client certificate for the etcd endpoints
    #[arg(long)]
    pub from_cert: Option<String>,
    /// client key for the etcd endpoints
    #[arg(long)]
    pub from_key: Option<String>,
    /// username[:password] on etcd (root, when auth is enabled)
    #[arg(long)]
    pub from_user: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// follow etcd this long, then stop or cut over (0: until interrupted; with --cut-over: none)
    #[arg(long, default_value = "0s")]
    pub follow_for: String,
    /// catch up with etcd, compare HashKV and leave import mode (stop writes to etcd first)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub cut_over: bool,
    /// with --cut-over: copy etcd's users and roles again from a new snapshot (auth changes made on etcd during the migration)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub copy_auth: bool,
    /// with --cut-over: how long to wait for oxcd to catch up with etcd
    #[arg(long, default_value = "60s")]
    pub cut_over_timeout: String,
}

pub async fn run(g: &Global, c: MigrateCmd) -> CtlResult {
    match c {
        MigrateCmd::Run(a) => run_migration(g, a).await,
        MigrateCmd::Status(t) => {
            let dst = target_ctx(g, &t, None)?;
            let client = dst.client().await?;
            let s = dst
                .call(client.import().status(ipb::ImportStatusRequest {}))
                .await?;
            emit(describe(&s).as_bytes())
        }
        MigrateCmd::Abort(t) => {
            let dst = target_ctx(g, &t, None)?;
            let client = dst.client().await?;
            let s = dst
                .call(client.import().end(ipb::ImportEndRequest {}))
                .await?;
            emit(
                format!(
                    "import mode left at revision {} (not checked)\n",
                    s.revision
                )
                .as_bytes(),
            )
        }
    }
}

fn describe(s: &ipb::ImportStatusResponse) -> String {
    if !s.importing {
        return format!("not importing; revision {}\n", s.revision);
    }
    format!(
        "importing from etcd cluster {:x} ({}); revision {}, compacted at {}, snapshot copied at {}\n",
        s.source_cluster_id, s.source, s.revision, s.compact_revision, s.snapshot_revision
    )
}

/// The settings for one side: the global flags with that side's endpoints, TLS and user.
fn side_ctx(
    g: &Global,
    endpoints: &[String],
    tls: [&Option<String>; 3],
    user: Option<String>,
) -> CtlResult<Ctx> {
    let flags = Global {
        endpoints: endpoints.to_vec(),
        cacert: tls[0].clone(),
        cert: tls[1].clone(),
        key: tls[2].clone(),
        user,
        password: None,
        ..g.clone()
    };
    Ctx::from_flags(&flags)
}

fn target_ctx(g: &Global, t: &TargetArgs, default_user: Option<&String>) -> CtlResult<Ctx> {
    let user = t.to_user.clone().or_else(|| default_user.cloned());
    side_ctx(g, &t.to, [&t.to_cacert, &t.to_cert, &t.to_key], user)
}

/// Both sides, connected, and what the migration knows of the target.
pub struct Migrator {
    src_ctx: Ctx,
    src: Client,
    dst_ctx: Ctx,
    dst: Client,
    /// The target's current revision: the next batch follows it.
    revision: i64,
    /// Leases the target has.
    leases: HashSet<i64>,
    source_cluster_id: u64,
}

async fn run_migration(g: &Global, a: RunArgs) -> CtlResult {
    let follow_for = go_duration_flag("follow-for", &a.follow_for)?;
    let cut_over_timeout = go_duration_flag("cut-over-timeout", &a.cut_over_timeout)?;
    let src_ctx = side_ctx(
        g,
        &a.from,
        [&a.from_cacert, &a.from_cert, &a.from_key],
        a.from_user.clone(),
    )?;
    let dst_ctx = target_ctx(g, &a.target, a.from_user.as_ref())?;
    let mut m = Migrator::connect(src_ctx, dst_ctx, &a.from.join(",")).await?;
    let status = m.status().await?;
    let watch_from = if status.snapshot_revision == 0 {
        m.copy_snapshot().await?
    } else {
        status.revision
    };
    let deadline = if a.cut_over {
        Some(tokio::time::Instant::now() + follow_for)
    } else if follow_for.is_zero() {
        None
    } else {
        Some(tokio::time::Instant::now() + follow_for)
    };
    m.follow(watch_from, deadline).await?;
    if a.cut_over {
        m.cut_over(cut_over_timeout, a.copy_auth).await?;
    } else {
        emit(
            format!(
                "stopped at revision {}; import mode stays on (run again to go on; --cut-over to finish)\n",
                m.revision
            )
            .as_bytes(),
        )?;
    }
    Ok(())
}

fn ctl_err(msg: impl Into<String>) -> CtlError {
    CtlError::new(EXIT_ERROR, msg)
}

impl Migrator {
    /// Connects to both sides and puts the target in import mode (or finds it there, importing
    /// from the same etcd cluster).
    async fn connect(src_ctx: Ctx, dst_ctx: Ctx, source: &str) -> CtlResult<Migrator> {
        let src = src_ctx.client().await?;
        let st = src_ctx
            .call(src.maintenance().status(pb::StatusRequest {}))
            .await?;
        let source_cluster_id = st.header.map(|h| h.cluster_id).unwrap_or(0);
        let dst = dst_ctx.client().await?;
        let begin = ipb::ImportBeginRequest {
            source_cluster_id,
            source: source.to_string(),
        };
        let s = dst_ctx.call(dst.import().begin(begin)).await?;
        emit(
            format!(
                "import mode on: oxcd refuses client writes until the cut-over (source: etcd cluster {source_cluster_id:x} at {source}; oxcd at revision {})\n",
                s.revision
            )
            .as_bytes(),
        )?;
        let mut m = Migrator {
            src_ctx,
            src,
            dst_ctx,
            dst,
            revision: s.revision,
            leases: HashSet::new(),
            source_cluster_id,
        };
        m.leases = m.target_leases().await?;
        Ok(m)
    }

    async fn status(&mut self) -> CtlResult<ipb::ImportStatusResponse> {
        let s = self
            .dst_ctx
            .call(self.dst.import().status(ipb::ImportStatusRequest {}))
            .await?;
        if s.source_cluster_id != self.source_cluster_id {
            return Err(ctl_err(format!(
                "oxcd is importing from etcd cluster {:x}, not {:x}",
                s.source_cluster_id, self.source_cluster_id
            )));
        }
        self.revision = s.revision;
        Ok(s)
    }

    /// Connects to the target again: after the auth store was copied, calls need a token.
    async fn reconnect_target(&mut self) -> CtlResult {
        self.dst = self.dst_ctx.client().await?;
        Ok(())
    }

    async fn target_leases(&self) -> CtlResult<HashSet<i64>> {
        let r = self
            .dst_ctx
            .call(self.dst.lease().lease_leases(pb::LeaseLeasesRequest {}))
            .await?;
        Ok(r.leases.into_iter().map(|l| l.id).collect())
    }

    /// Sends one batch (it follows `self.revision`) and waits until oxcd applied it. A try
    /// whose answer was lost is recognised by oxcd's revision having moved to the batch's.
    async fn apply(&mut self, mut req: ipb::ImportApplyRequest) -> CtlResult {
        req.expect_revision = self.revision;
        let newest = req
            .revisions
            .last()
            .map_or(self.revision, |r| r.revision)
            .max(req.advance_revision);
        let mut pause = RETRY_PAUSE;
        let mut last_err = String::new();
        for _ in 0..APPLY_TRIES_MAX {
            let mut import = self.dst.import();
            let call = import.apply(req.clone());
            match tokio::time::timeout(self.dst_ctx.command_timeout, call).await {
                Ok(Ok(r)) => {
                    self.revision = r.into_inner().revision;
                    return Ok(());
                }
                Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition => {
                    // Refused: maybe an earlier try did apply and its answer was lost.
                    let now = self.status().await?;
                    if now.revision == newest && newest > req.expect_revision {
                        return Ok(());
                    }
                    return Err(ctl_err(status_message(&s)));
                }
                Ok(Err(s)) => last_err = status_message(&s),
                Err(_) => last_err = "context deadline exceeded".into(),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
            let now = self.status().await?;
            if now.revision == newest && newest > req.expect_revision {
                return Ok(());
            }
        }
        Err(ctl_err(format!(
            "oxcd did not take the batch after revision {}: {last_err}",
            req.expect_revision
        )))
    }
}
