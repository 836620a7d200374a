//! alarm list | disarm, defrag, snapshot save, move-leader.

use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use oxcd_api::etcdserverpb::{self as pb, alarm_request::AlarmAction};
use tokio::io::AsyncWriteExt as _;
use tokio_stream::StreamExt as _;

use super::emit;
use oxcd_gocompat::quote::{json_string, quote};
use oxcd_gocompat::timestamp;
use time::OffsetDateTime;

use crate::ctx::Ctx;
use crate::error::{status_message, CtlError, CtlResult, EXIT_BAD_ARGS, EXIT_ERROR};
use crate::gofmt::human_bytes;
use crate::json;
use crate::print::{fields_header, raw_bytes, unsupported, Format};

#[derive(clap::Subcommand, Debug)]
pub enum AlarmCmd {
    /// Disarms all alarms
    Disarm,
    /// Lists all alarms
    List,
}

#[derive(clap::Args, Debug)]
pub struct DefragArgs {
    /// use all endpoints from the cluster member list
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub cluster: bool,
    /// Data directory of etcd (offline defragmentation is not supported by oxctl)
    #[arg(long)]
    pub data_dir: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stores an etcd node backend snapshot to a given file
    Save { args: Vec<String> },
    /// Gets backend snapshot status of a given file
    Status { args: Vec<String> },
    /// Restores an etcd member snapshot to an etcd directory
    Restore(RestoreArgs),
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Path to the data directory
    #[arg(long, default_value = "")]
    pub data_dir: String,
    /// Path to the WAL directory (use --data-dir if none given)
    #[arg(long, default_value = "")]
    pub wal_dir: String,
    /// Initial cluster configuration for restore bootstrap
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Human-readable name for this member
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Ignore snapshot integrity hash value (required if copied from data directory)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub skip_hash_check: bool,
    pub args: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct MoveLeaderArgs {
    pub args: Vec<String>,
}

fn alarm_name(a: i32) -> &'static str {
    match a {
        1 => "NOSPACE",
        2 => "CORRUPT",
        _ => "NONE",
    }
}

pub async fn alarm(ctx: &Ctx, c: AlarmCmd) -> CtlResult {
    let client = ctx.client().await?;
    let mut maint = client.maintenance();
    let r = match c {
        AlarmCmd::List => {
            let req = pb::AlarmRequest {
                action: AlarmAction::Get as i32,
                ..Default::default()
            };
            ctx.call(maint.alarm(req)).await?
        }
        AlarmCmd::Disarm => {
            // As etcdctl: list the alarms, then deactivate each one.
            let req = pb::AlarmRequest {
                action: AlarmAction::Get as i32,
                ..Default::default()
            };
            let list = ctx.call(maint.alarm(req)).await?;
            let mut last = pb::AlarmResponse {
                header: list.header,
                alarms: Vec::new(),
            };
            for a in &list.alarms {
                let req = pb::AlarmRequest {
                    action: AlarmAction::Deactivate as i32,
                    member_id: a.member_id,
                    alarm: a.alarm,
                };
                let r = ctx.call(maint.alarm(req)).await?;
                last.header = r.header;
                last.alarms.extend(r.alarms);
            }
            last
        }
    };
    let out = match ctx.printer.format {
        Format::Simple => r.alarms.iter().fold(String::new(), |mut s, a| {
            let _ = writeln!(s, "memberID:{} alarm:{} ", a.member_id, alarm_name(a.alarm));
            s
        }),
        Format::Json => json::alarms(&r) + "\n",
        Format::Fields => r.alarms.iter().fold(fields_header(&r.header), |mut s, a| {
            let _ = write!(
                s,
                "\"MemberID\" : {}\n\"AlarmType\" : {}\n\n",
                a.member_id,
                alarm_name(a.alarm)
            );
            s
        }),
        Format::Protobuf => return emit(&raw_bytes(&prost::Message::encode_to_vec(&r))),
        Format::Table => return Err(unsupported(Format::Table)),
    };
    emit(out.as_bytes())
}

pub async fn defrag(ctx: &Ctx, a: DefragArgs) -> CtlResult {
    if a.data_dir.is_some() {
        return Err(CtlError::new(
            EXIT_ERROR,
            "offline defragmentation (--data-dir) is not supported by oxctl",
        ));
    }
    let eps = super::cluster::endpoint_list(ctx, a.cluster).await?;
    let mut failed = false;
    for ep in eps {
        let r = async {
            let client = super::cluster::client_for(ctx, &ep).await?;
            ctx.call(client.maintenance().defragment(pb::DefragmentRequest {}))
                .await
        };
        match r.await {
            Ok(_) => emit(format!("Finished defragmenting etcd member[{ep}]\n").as_bytes())?,
            Err(e) => {
                failed = true;
                eprintln!("Failed to defragment etcd member[{ep}] ({})", e.msg);
            }
        }
    }
    if failed {
        return Err(CtlError::new(EXIT_ERROR, ""));
    }
    Ok(())
}

/// One of the info lines etcd's snapshot code logs (zap, epoch-seconds timestamps).
fn snapshot_log(caller: &str, msg: &str, fields: &str) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    eprintln!(
        "{{\"level\":\"info\",\"ts\":{ts},\"caller\":\"{caller}\",\"msg\":\"{msg}\"{fields}}}"
    );
}

fn client_log(caller: &str, msg: &str) {
    eprintln!(
        "{{\"level\":\"info\",\"ts\":\"{}\",\"caller\":\"{caller}\",\"msg\":\"{msg}\"}}",
        timestamp::zap_iso8601(OffsetDateTime::now_utc())
    );
}

pub async fn snapshot(ctx: &Ctx, c: SnapshotCmd) -> CtlResult {
    let args = match c {
        SnapshotCmd::Save { args } => args,
        SnapshotCmd::Status { args } => return snapshot_status(ctx, &args),
        SnapshotCmd::Restore(a) => return snapshot_restore(a),
    };
    if args.len() != 1 {
        return Err(CtlError::args("snapshot save expects one argument"));
    }
    if ctx.endpoints.len() != 1 {
        let eps: Vec<String> = ctx.endpoints.iter().map(|e| e.original.clone()).collect();
        return Err(CtlError::args(format!(
            "snapshot must be requested to one selected node, not multiple [{}]",
            eps.join(" ")
        )));
    }
    let path = &args[0];
    let part = format!("{path}.part");
    let ep = ctx.endpoints[0].original.clone();
    let result = save_snapshot(ctx, &part, path, &ep).await;
    let _ = std::fs::remove_file(&part);
    result?;
    emit(format!("Snapshot saved at {path}\n").as_bytes())
}

async fn save_snapshot(ctx: &Ctx, part: &str, path: &str, ep: &str) -> CtlResult {
    let io_err = |e: std::io::Error| CtlError::new(EXIT_ERROR, e.to_string());
    let mut file = tokio::fs::File::create(part)
        .await
        .map_err(|e| CtlError::new(EXIT_ERROR, format!("could not open {part} ({e})")))?;
    snapshot_log(
        "snapshot/v3_snapshot.go:119",
        "created temporary db file",
        &format!(",\"path\":{}", json_string(part)),
    );
    let start = Instant::now();
    let client = ctx.client().await?;
    let mut stream = client
        .maintenance()
        .snapshot(pb::SnapshotRequest {})
        .await
        .map_err(|s| CtlError::new(EXIT_ERROR, status_message(&s)))?
        .into_inner();
    client_log(
        "clientv3/maintenance.go:200",
        "opened snapshot stream; downloading",
    );
    snapshot_log(
        "snapshot/v3_snapshot.go:127",
        "fetching snapshot",
        &format!(",\"endpoint\":{}", json_string(ep)),
    );
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| CtlError::new(EXIT_ERROR, status_message(&s)))?;
        size += chunk.blob.len() as u64;
        file.write_all(&chunk.blob).await.map_err(io_err)?;
    }
    client_log(
        "clientv3/maintenance.go:208",
        "completed snapshot read; closing",
    );
    file.sync_all().await.map_err(io_err)?;
    let took = start.elapsed().as_secs_f64();
    let fields = format!(
        ",\"endpoint\":{},\"size\":\"{}\",\"took\":{took}",
        json_string(ep),
        human_bytes(size)
    );
    snapshot_log("snapshot/v3_snapshot.go:142", "fetched snapshot", &fields);
    tokio::fs::rename(part, path).await.map_err(io_err)?;
    snapshot_log(
        "snapshot/v3_snapshot.go:152",
        "saved",
        &format!(",\"path\":{}", json_string(path)),
    );
    Ok(())
}

/// `snapshot restore`: an etcd (bbolt) or oxcd snapshot into a new member's data dir (see
/// `oxcd_snapshot::restore`), logging what etcdctl logs, to stderr.
fn snapshot_restore(a: RestoreArgs) -> CtlResult {
    let [path] = a.args.as_slice() else {
        return Err(CtlError::args(
            "snapshot restore requires exactly one argument",
        ));
    };
    let opts = oxcd_snapshot::RestoreOptions {
        snapshot: path.into(),
        data_dir: (!a.data_dir.is_empty()).then(|| a.data_dir.clone().into()),
        wal_dir: (!a.wal_dir.is_empty()).then(|| a.wal_dir.clone().into()),
        name: a.name,
        initial_cluster: a.initial_cluster,
        initial_cluster_token: a.initial_cluster_token,
        initial_advertise_peer_urls: a.initial_advertise_peer_urls,
        skip_hash_check: a.skip_hash_check,
    };
    let cfg = oxcd_snapshot::check_options(&opts).map_err(|e| CtlError::new(EXIT_ERROR, e))?;
    let data_dir = cfg.data_dir.display().to_string();
    let dirs = format!(
        ",\"path\":{},\"wal-dir\":{},\"data-dir\":{},\"snap-dir\":{}",
        json_string(path),
        json_string(&cfg.wal_path().display().to_string()),
        json_string(&data_dir),
        json_string(&format!("{data_dir}/member/snap")),
    );
    snapshot_log("snapshot/v3_snapshot.go:296", "restoring snapshot", &dirs);
    let r =
        oxcd_snapshot::restore_checked(&opts, &cfg).map_err(|e| CtlError::new(EXIT_ERROR, e))?;
    for m in &r.members {
        let urls: Vec<String> = m.peer_urls.iter().map(|u| json_string(u)).collect();
        snapshot_log(
            "membership/cluster.go:392",
            "added member",
            &format!(
                ",\"cluster-id\":\"{:x}\",\"local-member-id\":\"0\",\"added-peer-id\":\"{:x}\",\"added-peer-peer-urls\":[{}]",
                r.cluster_id,
                m.id,
                urls.join(",")
            ),
        );
    }
    snapshot_log("snapshot/v3_snapshot.go:309", "restored snapshot", &dirs);
    Ok(())
}

pub async fn move_leader(ctx: &Ctx, a: MoveLeaderArgs) -> CtlResult {
    if a.args.len() != 1 {
        return Err(CtlError::args("move-leader command needs 1 argument"));
    }
    let target = u64::from_str_radix(&a.args[0], 16).map_err(|_| {
        CtlError::args(format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            quote(a.args[0].as_bytes())
        ))
    })?;
    let mut leader = None;
    for ep in &ctx.endpoints {
        let client = super::cluster::client_for(ctx, &ep.original).await?;
        let r = ctx
            .call(client.maintenance().status(pb::StatusRequest {}))
            .await?;
        if r.header.as_ref().map(|h| h.member_id) == Some(r.leader) {
            leader = Some((client, r.leader));
            break;
        }
    }
    let Some((client, leader_id)) = leader else {
        let eps: Vec<String> = ctx.endpoints.iter().map(|e| e.original.clone()).collect();
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            format!("no leader endpoint given at [{}]", eps.join(" ")),
        ));
    };
    ctx.call(
        client
            .maintenance()
            .move_leader(pb::MoveLeaderRequest { target_id: target }),
    )
    .await?;
    emit(format!("Leadership transferred from {leader_id:x} to {target:x}\n").as_bytes())
}

fn snapshot_status(ctx: &Ctx, args: &[String]) -> CtlResult {
    let [path] = args else {
        return Err(CtlError::args(
            "snapshot status requires exactly one argument",
        ));
    };
    // An etcd (bbolt) snapshot, read page by page, or an oxcd one of older releases.
    let st = oxcd_snapshot::snapshot_status(std::path::Path::new(path))
        .map_err(|e| CtlError::new(EXIT_ERROR, e))?;
    let row = vec![
        format!("{:x}", st.hash),
        st.revision.to_string(),
        st.total_key.to_string(),
        human_bytes(st.total_size),
    ];
    let out = match ctx.printer.format {
        Format::Simple => row.join(", ") + "\n",
        Format::Table => {
            crate::gofmt::table(&["hash", "revision", "total keys", "total size"], &[row])
        }
        Format::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            st.hash, st.revision, st.total_key, st.total_size
        ),
        Format::Fields => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            st.hash, st.revision, st.total_key, st.total_size
        ),
        Format::Protobuf => return Err(unsupported(Format::Protobuf)),
    };
    emit(out.as_bytes())
}
