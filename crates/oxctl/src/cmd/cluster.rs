//! member list | add | remove | update | promote, and endpoint health | status | hashkv.

use std::fmt::Write as _;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt as _};
use oxcd_api::etcdserverpb as pb;
use oxcd_client::{parse_endpoint, Client};

use super::emit;
use oxcd_gocompat::duration;
use oxcd_gocompat::quote::{json_string, quote};

use crate::ctx::Ctx;
use crate::error::{CtlError, CtlResult, EXIT_ERROR};
use crate::gofmt::{human_bytes, table};
use crate::json::{self, Obj};
use crate::print::{fields_header, raw_bytes, unsupported, Format};

#[derive(clap::Subcommand, Debug)]
pub enum MemberCmd {
    /// Lists all members in the cluster
    List,
    /// Adds a member into the cluster
    Add {
        /// comma separated peer URLs for the new member.
        #[arg(long, default_value = "")]
        peer_urls: String,
        /// indicates if the new member is raft learner
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
        learner: bool,
        args: Vec<String>,
    },
    /// Removes a member from the cluster
    Remove { args: Vec<String> },
    /// Updates a member in the cluster
    Update {
        /// comma separated peer URLs for the updated member.
        #[arg(long, default_value = "")]
        peer_urls: String,
        args: Vec<String>,
    },
    /// Promotes a non-voting member in the cluster
    Promote { args: Vec<String> },
}

#[derive(clap::Subcommand, Debug)]
pub enum EndpointCmd {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health(ClusterFlag),
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status(ClusterFlag),
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv {
        #[command(flatten)]
        cluster: ClusterFlag,
        /// maximum revision to hash (default: all revisions)
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

#[derive(clap::Args, Debug)]
pub struct ClusterFlag {
    /// use all endpoints from the cluster member list
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub cluster: bool,
}

pub async fn member(ctx: &Ctx, c: MemberCmd) -> CtlResult {
    match c {
        MemberCmd::List => member_list(ctx).await,
        MemberCmd::Add {
            peer_urls,
            learner,
            args,
        } => member_add(ctx, args, peer_urls, learner).await,
        MemberCmd::Remove { args } => {
            let id = member_id(&args, "member ID is not provided")?;
            let client = ctx.client().await?;
            let req = pb::MemberRemoveRequest { id };
            let r = ctx.call(client.cluster().member_remove(req)).await?;
            member_change_out(ctx, id, "removed from", &r.header, &r.members)
        }
        MemberCmd::Update { peer_urls, args } => {
            let id = member_id(&args, "member ID is not provided")?;
            if peer_urls.is_empty() {
                return Err(CtlError::args("member peer urls not provided"));
            }
            let client = ctx.client().await?;
            let req = pb::MemberUpdateRequest {
                id,
                peer_ur_ls: split_urls(&peer_urls),
            };
            let r = ctx.call(client.cluster().member_update(req)).await?;
            member_change_out(ctx, id, "updated in", &r.header, &r.members)
        }
        MemberCmd::Promote { args } => {
            let id = member_id(&args, "member ID is not provided")?;
            let client = ctx.client().await?;
            let req = pb::MemberPromoteRequest { id };
            let r = ctx.call(client.cluster().member_promote(req)).await?;
            member_change_out(ctx, id, "promoted in", &r.header, &r.members)
        }
    }
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',').map(|u| u.trim().to_string()).collect()
}

fn member_id(args: &[String], missing: &str) -> CtlResult<u64> {
    if args.len() != 1 {
        return Err(CtlError::args(missing));
    }
    u64::from_str_radix(&args[0], 16).map_err(|_| {
        CtlError::args(format!(
            "bad member ID arg (strconv.ParseUint: parsing {}: invalid syntax), expecting ID in Hex",
            quote(args[0].as_bytes())
        ))
    })
}

/// Output of remove, update and promote: etcdctl's sentence (`Member ID <done> cluster
/// CID`), or the response as JSON.
fn member_change_out(
    ctx: &Ctx,
    id: u64,
    done: &str,
    header: &Option<pb::ResponseHeader>,
    members: &[pb::Member],
) -> CtlResult {
    let cid = header.unwrap_or_default().cluster_id;
    let simple = format!("Member {id:16x} {done} cluster {cid:16x}\n");
    match ctx.printer.format {
        Format::Json => emit((json::members(json::header(header), members) + "\n").as_bytes()),
        Format::Fields => emit(fields_header(header).as_bytes()),
        _ => emit(simple.as_bytes()),
    }
}

async fn member_add(ctx: &Ctx, args: Vec<String>, peer_urls: String, learner: bool) -> CtlResult {
    if args.len() != 1 {
        return Err(CtlError::args("member name not provided"));
    }
    if peer_urls.is_empty() {
        return Err(CtlError::args("member peer urls not provided"));
    }
    let name = &args[0];
    let urls = split_urls(&peer_urls);
    let client = ctx.client().await?;
    let req = pb::MemberAddRequest {
        peer_ur_ls: urls.clone(),
        is_learner: learner,
    };
    let r = ctx.call(client.cluster().member_add(req)).await?;
    let new_id = r.member.as_ref().map(|m| m.id).unwrap_or_default();
    let cid = r.header.unwrap_or_default().cluster_id;
    // etcdctl 3.4 says the same for a learner.
    let mut out = format!("Member {new_id:16x} added to cluster {cid:16x}\n");
    if ctx.printer.format == Format::Json {
        let member = r.member.as_ref().map(json::member);
        let body = Obj::new()
            .opt("header", json::header(&r.header))
            .opt("member", member)
            .list("members", r.members.iter().map(json::member).collect());
        return emit((body.done() + "\n").as_bytes());
    }
    if ctx.printer.format == Format::Simple {
        let mut conf = Vec::new();
        for m in &r.members {
            for u in &m.peer_ur_ls {
                let n = if m.id == new_id {
                    name.as_str()
                } else {
                    m.name.as_str()
                };
                conf.push(format!("{n}={u}"));
            }
        }
        let _ = write!(
            out,
            "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
            quote(name.as_bytes()),
            quote(conf.join(",").as_bytes()),
            quote(peer_urls.as_bytes())
        );
    }
    emit(out.as_bytes())
}

fn member_rows(ms: &[pb::Member]) -> Vec<Vec<String>> {
    ms.iter()
        .map(|m| {
            let status = if m.name.is_empty() {
                "unstarted"
            } else {
                "started"
            };
            vec![
                format!("{:x}", m.id),
                status.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect()
}

async fn member_list(ctx: &Ctx) -> CtlResult {
    let client = ctx.client().await?;
    let r = ctx
        .call(client.cluster().member_list(pb::MemberListRequest {
            linearizable: false,
        }))
        .await?;
    let out = match ctx.printer.format {
        Format::Simple => member_rows(&r.members)
            .iter()
            .map(|row| row.join(", ") + "\n")
            .collect(),
        Format::Table => table(
            &[
                "ID",
                "Status",
                "Name",
                "Peer Addrs",
                "Client Addrs",
                "Is Learner",
            ],
            &member_rows(&r.members),
        ),
        Format::Json => json::members(json::header(&r.header), &r.members) + "\n",
        Format::Fields => {
            let mut out = fields_header(&r.header);
            for m in &r.members {
                let _ = writeln!(
                    out,
                    "\"ID\" : {}\n\"Name\" : {}",
                    m.id,
                    quote(m.name.as_bytes())
                );
                for u in &m.peer_ur_ls {
                    let _ = writeln!(out, "\"PeerURL\" : {}", quote(u.as_bytes()));
                }
                for u in &m.client_ur_ls {
                    let _ = writeln!(out, "\"ClientURL\" : {}", quote(u.as_bytes()));
                }
                let _ = writeln!(out, "\"IsLearner\" : {}\n", m.is_learner);
            }
            out
        }
        Format::Protobuf => return emit(&raw_bytes(&prost::Message::encode_to_vec(&r))),
    };
    emit(out.as_bytes())
}

/// The endpoints to visit: `--endpoints`, or every member's client URLs with `--cluster`.
pub async fn endpoint_list(ctx: &Ctx, cluster: bool) -> CtlResult<Vec<String>> {
    if !cluster {
        return Ok(ctx.endpoints.iter().map(|e| e.original.clone()).collect());
    }
    let client = ctx.client().await?;
    let r = ctx
        .call(client.cluster().member_list(pb::MemberListRequest {
            linearizable: false,
        }))
        .await?;
    Ok(r.members
        .iter()
        .flat_map(|m| m.client_ur_ls.clone())
        .collect())
}

/// A client for one endpoint, with the same TLS, timeouts and user as the global flags.
pub async fn client_for(ctx: &Ctx, ep: &str) -> CtlResult<Client> {
    let parsed = parse_endpoint(ep).map_err(|e| CtlError::new(EXIT_ERROR, e.to_string()))?;
    let one = Ctx {
        endpoints: vec![parsed],
        ..ctx.clone_settings()
    };
    one.client().await
}

struct Health {
    ep: String,
    health: bool,
    took: String,
    error: String,
}

async fn check_health(ctx: &Ctx, ep: String) -> Health {
    let start = Instant::now();
    let parsed = parse_endpoint(&ep);
    let one = Ctx {
        endpoints: parsed.into_iter().collect(),
        ..ctx.clone_settings()
    };
    let get = async {
        let client = one.client().await?;
        let req = pb::RangeRequest {
            key: b"health".to_vec(),
            ..Default::default()
        };
        match one.call(client.kv().range(req)).await {
            Err(e) if e.msg != "etcdserver: permission denied" => Err(e),
            _ => Ok(client),
        }
    };
    let result = get.await;
    let took = duration::format(start.elapsed());
    let client = match result {
        Ok(c) => c,
        Err(e) => {
            return Health {
                ep,
                health: false,
                took,
                error: e.msg,
            }
        }
    };
    let alarms = client
        .maintenance()
        .alarm(pb::AlarmRequest::default())
        .await;
    let error = match alarms {
        Ok(r) if r.get_ref().alarms.is_empty() => String::new(),
        Ok(r) => r
            .get_ref()
            .alarms
            .iter()
            .fold("Active Alarm(s): ".to_string(), |s, a| {
                s + match a.alarm {
                    1 => "NOSPACE ",
                    2 => "CORRUPT ",
                    _ => "UNKNOWN ",
                }
            }),
        Err(_) => "Unable to fetch the alarm list".to_string(),
    };
    Health {
        ep,
        health: error.is_empty(),
        took,
        error,
    }
}

pub async fn endpoint(ctx: &Ctx, c: EndpointCmd) -> CtlResult {
    match c {
        EndpointCmd::Health(f) => health(ctx, f.cluster).await,
        EndpointCmd::Status(f) => status(ctx, f.cluster).await,
        EndpointCmd::Hashkv { cluster, rev } => hashkv(ctx, cluster.cluster, rev).await,
    }
}

async fn health(ctx: &Ctx, cluster: bool) -> CtlResult {
    let eps = endpoint_list(ctx, cluster).await?;
    let mut pending: FuturesUnordered<_> =
        eps.into_iter().map(|ep| check_health(ctx, ep)).collect();
    let mut list = Vec::new();
    while let Some(h) = pending.next().await {
        list.push(h);
    }
    let out = match ctx.printer.format {
        Format::Simple => {
            for h in &list {
                if h.error.is_empty() {
                    eprintln!(
                        "{} is healthy: successfully committed proposal: took = {}",
                        h.ep, h.took
                    );
                } else {
                    eprintln!(
                        "{} is unhealthy: failed to commit proposal: {}",
                        h.ep, h.error
                    );
                }
            }
            String::new()
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|h| {
                    vec![
                        h.ep.clone(),
                        h.health.to_string(),
                        h.took.clone(),
                        h.error.clone(),
                    ]
                })
                .collect();
            table(&["endpoint", "health", "took", "error"], &rows)
        }
        Format::Json => {
            let items = list.iter().map(|h| {
                Obj::new()
                    .raw("endpoint", &json_string(&h.ep))
                    .raw("health", &h.health.to_string())
                    .raw("took", &json_string(&h.took))
                    .str("error", &h.error)
                    .done()
            });
            json::array(items.collect()) + "\n"
        }
        Format::Fields => list.iter().fold(String::new(), |mut s, h| {
            let _ = write!(
                s,
                "\"Endpoint\" : {}\n\"Health\" : {}\n\"Took\" : {}\n\"Error\" : {}\n\n",
                quote(h.ep.as_bytes()),
                h.health,
                h.took,
                h.error
            );
            s
        }),
        Format::Protobuf => return Err(unsupported(Format::Protobuf)),
    };
    emit(out.as_bytes())?;
    if list.iter().any(|h| !h.error.is_empty()) {
        return Err(CtlError::new(EXIT_ERROR, "unhealthy cluster"));
    }
    Ok(())
}

/// Asks each endpoint in turn. One that fails is left out of the answers after a line on
/// stderr (`Failed to get the {what} of endpoint …`), and the command fails at the end.
async fn each_endpoint<T, F, Fut>(
    ctx: &Ctx,
    cluster: bool,
    what: &str,
    ask: F,
) -> CtlResult<(Vec<(String, T)>, CtlResult)>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = CtlResult<T>>,
{
    let mut answers = Vec::new();
    let mut outcome = Ok(());
    for ep in endpoint_list(ctx, cluster).await? {
        let answer = match client_for(ctx, &ep).await {
            Ok(client) => ask(client).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(r) => answers.push((ep, r)),
            Err(e) => {
                outcome = Err(CtlError::new(EXIT_ERROR, ""));
                eprintln!("Failed to get the {what} of endpoint {ep} ({})", e.msg);
            }
        }
    }
    Ok((answers, outcome))
}

async fn status(ctx: &Ctx, cluster: bool) -> CtlResult {
    let (list, outcome) = each_endpoint(ctx, cluster, "status", |client| async move {
        ctx.call(client.maintenance().status(pb::StatusRequest {}))
            .await
    })
    .await?;
    let rows = || -> Vec<Vec<String>> {
        list.iter()
            .map(|(ep, r)| {
                let member = r.header.unwrap_or_default().member_id;
                vec![
                    ep.clone(),
                    format!("{member:x}"),
                    r.version.clone(),
                    human_bytes(r.db_size.max(0) as u64),
                    (r.leader == member).to_string(),
                    r.is_learner.to_string(),
                    r.raft_term.to_string(),
                    r.raft_index.to_string(),
                    r.raft_applied_index.to_string(),
                    r.errors.join(", "),
                ]
            })
            .collect()
    };
    let out = match ctx.printer.format {
        Format::Simple => rows().iter().map(|row| row.join(", ") + "\n").collect(),
        Format::Table => table(
            &["endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term", "raft index", "raft applied index", "errors"],
            &rows(),
        ),
        Format::Json => {
            let items = list.iter().map(|(ep, r)| Obj::new().raw("Endpoint", &json_string(ep)).raw("Status", &json::status(r)).done());
            json::array(items.collect()) + "\n"
        }
        Format::Fields => list.iter().fold(String::new(), |mut s, (ep, r)| {
            s.push_str(&fields_header(&r.header));
            let _ = write!(
                s,
                "\"Version\" : {}\n\"DBSize\" : {}\n\"Leader\" : {}\n\"IsLearner\" : {}\n\"RaftIndex\" : {}\n\"RaftTerm\" : {}\n\"RaftAppliedIndex\" : {}\n\"Errors\" : [{}]\n\"Endpoint\" : {}\n\n",
                quote(r.version.as_bytes()), r.db_size, r.leader, r.is_learner, r.raft_index, r.raft_term, r.raft_applied_index, r.errors.join(" "), quote(ep.as_bytes())
            );
            s
        }),
        Format::Protobuf => return Err(unsupported(Format::Protobuf)),
    };
    emit(out.as_bytes())?;
    outcome
}

async fn hashkv(ctx: &Ctx, cluster: bool, rev: i64) -> CtlResult {
    let (list, outcome) = each_endpoint(ctx, cluster, "hash", |client| async move {
        let req = pb::HashKvRequest { revision: rev };
        ctx.call(client.maintenance().hash_kv(req)).await
    })
    .await?;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|(ep, r)| vec![ep.clone(), r.hash.to_string()])
        .collect();
    let out = match ctx.printer.format {
        Format::Simple => rows.iter().map(|row| row.join(", ") + "\n").collect(),
        Format::Table => table(&["endpoint", "hash"], &rows),
        Format::Json => {
            let items = list.iter().map(|(ep, r)| {
                Obj::new()
                    .raw("Endpoint", &json_string(ep))
                    .raw("HashKV", &json::hashkv(r))
                    .done()
            });
            json::array(items.collect()) + "\n"
        }
        Format::Fields => list.iter().fold(String::new(), |mut s, (ep, r)| {
            s.push_str(&fields_header(&r.header));
            let _ = write!(
                s,
                "\"Endpoint\" : {}\n\"Hash\" : {}\n\n",
                quote(ep.as_bytes()),
                r.hash
            );
            s
        }),
        Format::Protobuf => return Err(unsupported(Format::Protobuf)),
    };
    emit(out.as_bytes())?;
    outcome
}
