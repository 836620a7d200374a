//! lease grant | revoke | timetolive | list | keep-alive.

use std::fmt::Write as _;

use oxcd_api::etcdserverpb as pb;
use tokio_stream::StreamExt as _;

use super::{emit, open_keep_alive, parse_hex_id};
use oxcd_gocompat::quote::{json_string, quote};

use crate::ctx::Ctx;
use crate::error::{status_message, CtlError, CtlResult, EXIT_BAD_CONNECTION, EXIT_ERROR};
use crate::json::{array, header_fields, Obj};
use crate::print::{fields_header, unsupported, Format};

#[derive(clap::Subcommand, Debug)]
pub enum LeaseCmd {
    /// Creates leases
    Grant { args: Vec<String> },
    /// Revokes leases
    Revoke { args: Vec<String> },
    /// Get lease information
    Timetolive {
        /// Get keys attached to this lease
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
        keys: bool,
        args: Vec<String>,
    },
    /// List all active leases
    List,
    /// Keeps leases alive (renew)
    KeepAlive {
        /// Resets the keep-alive time to its original value and exits immediately
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
        once: bool,
        args: Vec<String>,
    },
}

pub async fn run(ctx: &Ctx, c: LeaseCmd) -> CtlResult {
    match c {
        LeaseCmd::Grant { args } => grant(ctx, args).await,
        LeaseCmd::Revoke { args } => revoke(ctx, args).await,
        LeaseCmd::Timetolive { keys, args } => timetolive(ctx, args, keys).await,
        LeaseCmd::List => list(ctx).await,
        LeaseCmd::KeepAlive { once, args } => keep_alive(ctx, args, once).await,
    }
}

fn lease_arg(args: &[String], usage: &str) -> CtlResult<i64> {
    if args.len() != 1 {
        return Err(CtlError::args(usage));
    }
    parse_hex_id(&args[0])
        .map_err(|e| CtlError::args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

/// etcdctl's lease structs embed the header, so its fields come first at the top level.
fn inline_header(h: &Option<pb::ResponseHeader>) -> Obj {
    header_fields(Obj::new(), &h.unwrap_or_default())
}

async fn grant(ctx: &Ctx, args: Vec<String>) -> CtlResult {
    if args.len() != 1 {
        return Err(CtlError::args("lease grant command needs TTL argument"));
    }
    let ttl: i64 = args[0].parse().map_err(|_| {
        CtlError::args(format!(
            "bad TTL (strconv.ParseInt: parsing {}: invalid syntax)",
            quote(args[0].as_bytes())
        ))
    })?;
    let client = ctx.client().await?;
    let r = ctx
        .call(
            client
                .lease()
                .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }),
        )
        .await
        .map_err(|e| CtlError::new(EXIT_ERROR, format!("failed to grant lease ({})", e.msg)))?;
    let out = match ctx.printer.format {
        Format::Simple => format!("lease {:016x} granted with TTL({}s)\n", r.id, r.ttl),
        Format::Json => {
            let o = inline_header(&r.header)
                .raw("ID", &r.id.to_string())
                .raw("TTL", &r.ttl.to_string());
            o.raw("Error", &json_string(&r.error)).done() + "\n"
        }
        Format::Fields => {
            let mut out = fields_header(&r.header);
            let _ = write!(out, "\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl);
            out
        }
        Format::Protobuf => return emit(&header_pb(&r.header)),
        Format::Table => return Err(unsupported(Format::Table)),
    };
    emit(out.as_bytes())
}

/// etcdctl's lease responses embed the header, whose `Marshal` is what `-w protobuf` prints.
fn header_pb(h: &Option<pb::ResponseHeader>) -> Vec<u8> {
    prost::Message::encode_to_vec(&h.unwrap_or_default())
}

async fn revoke(ctx: &Ctx, args: Vec<String>) -> CtlResult {
    let id = lease_arg(&args, "lease revoke command needs 1 argument")?;
    let client = ctx.client().await?;
    let r = ctx
        .call(client.lease().lease_revoke(pb::LeaseRevokeRequest { id }))
        .await
        .map_err(|e| CtlError::new(EXIT_ERROR, format!("failed to revoke lease ({})", e.msg)))?;
    let out = match ctx.printer.format {
        Format::Simple => format!("lease {id:016x} revoked\n"),
        Format::Json => crate::json::header_only(&r.header) + "\n",
        Format::Fields => fields_header(&r.header),
        Format::Protobuf => return emit(&prost::Message::encode_to_vec(&r)),
        Format::Table => return Err(unsupported(Format::Table)),
    };
    emit(out.as_bytes())
}

async fn timetolive(ctx: &Ctx, args: Vec<String>, keys: bool) -> CtlResult {
    let id = lease_arg(&args, "lease timetolive command needs lease ID as argument")?;
    let client = ctx.client().await?;
    let r = ctx
        .call(
            client
                .lease()
                .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys }),
        )
        .await
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, e.msg))?;
    let out = match ctx.printer.format {
        Format::Simple => ttl_simple(&r, keys),
        Format::Json => {
            let ks = if r.keys.is_empty() {
                "null".to_string()
            } else {
                array(
                    r.keys
                        .iter()
                        .map(|k| json_string(&crate::json::b64(k)))
                        .collect(),
                )
            };
            inline_header(&r.header)
                .raw("id", &r.id.to_string())
                .raw("ttl", &r.ttl.to_string())
                .raw("granted-ttl", &r.granted_ttl.to_string())
                .raw("keys", &ks)
                .done()
                + "\n"
        }
        Format::Fields => {
            let mut out = fields_header(&r.header);
            let _ = write!(
                out,
                "\"ID\" : {}\n\"TTL\" : {}\n\"GrantedTTL\" : {}\n",
                r.id, r.ttl, r.granted_ttl
            );
            for k in &r.keys {
                let _ = writeln!(out, "\"Key\" : {}", quote(k));
            }
            out
        }
        Format::Protobuf => return emit(&header_pb(&r.header)),
        Format::Table => return Err(unsupported(Format::Table)),
    };
    emit(out.as_bytes())
}

fn ttl_simple(r: &pb::LeaseTimeToLiveResponse, keys: bool) -> String {
    if r.granted_ttl == 0 && r.ttl == -1 {
        return format!("lease {:016x} already expired\n", r.id);
    }
    let mut txt = format!(
        "lease {:016x} granted with TTL({}s), remaining({}s)",
        r.id, r.granted_ttl, r.ttl
    );
    if keys {
        let ks: Vec<String> = r
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let _ = write!(txt, ", attached keys([{}])", ks.join(" "));
    }
    txt + "\n"
}

async fn list(ctx: &Ctx) -> CtlResult {
    let client = ctx.client().await?;
    let r = ctx
        .call(client.lease().lease_leases(pb::LeaseLeasesRequest {}))
        .await
        .map_err(|e| CtlError::new(EXIT_ERROR, format!("failed to list leases ({})", e.msg)))?;
    let out = match ctx.printer.format {
        Format::Simple => {
            r.leases
                .iter()
                .fold(format!("found {} leases\n", r.leases.len()), |mut s, l| {
                    let _ = writeln!(s, "{:016x}", l.id);
                    s
                })
        }
        Format::Json => {
            let items = r
                .leases
                .iter()
                .map(|l| format!("{{\"id\":{}}}", l.id))
                .collect::<Vec<_>>();
            inline_header(&r.header).raw("leases", &array(items)).done() + "\n"
        }
        Format::Fields => r.leases.iter().fold(fields_header(&r.header), |mut s, l| {
            let _ = writeln!(s, "\"ID\" : {}", l.id);
            s
        }),
        Format::Protobuf => return emit(&header_pb(&r.header)),
        Format::Table => return Err(unsupported(Format::Table)),
    };
    emit(out.as_bytes())
}

fn keep_alive_out(ctx: &Ctx, r: &pb::LeaseKeepAliveResponse) -> CtlResult<String> {
    Ok(match ctx.printer.format {
        Format::Simple => format!("lease {:016x} keepalived with TTL({})\n", r.id, r.ttl),
        Format::Json => {
            inline_header(&r.header)
                .raw("ID", &r.id.to_string())
                .raw("TTL", &r.ttl.to_string())
                .done()
                + "\n"
        }
        Format::Fields => {
            fields_header(&r.header) + &format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl)
        }
        Format::Protobuf => String::from_utf8_lossy(&header_pb(&r.header)).into_owned(),
        Format::Table => return Err(unsupported(Format::Table)),
    })
}

/// Keeps the lease alive until it expires or is revoked, renewing at a third of its TTL.
async fn keep_alive(ctx: &Ctx, args: Vec<String>, once: bool) -> CtlResult {
    let id = lease_arg(&args, "lease keep-alive command needs lease ID as argument")?;
    let client = ctx.client().await?;
    let (tx, mut stream) = open_keep_alive(&client, id)
        .await
        .map_err(|s| CtlError::new(EXIT_BAD_CONNECTION, status_message(&s)))?;
    loop {
        let resp = match tokio::time::timeout(ctx.command_timeout, stream.next()).await {
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(s))) => return Err(CtlError::new(EXIT_BAD_CONNECTION, status_message(&s))),
            Ok(None) | Err(_) => break,
        };
        if resp.ttl <= 0 {
            if once {
                return Err(CtlError::new(
                    EXIT_BAD_CONNECTION,
                    "etcdserver: requested lease not found",
                ));
            }
            break;
        }
        emit(keep_alive_out(ctx, &resp)?.as_bytes())?;
        if once {
            return Ok(());
        }
        let pause = std::time::Duration::from_millis((resp.ttl as u64 * 1000 / 3).max(500));
        tokio::time::sleep(pause).await;
        if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
            break;
        }
    }
    if ctx.printer.format == Format::Simple {
        emit(format!("lease {id:016x} expired or revoked.\n").as_bytes())?;
    }
    Ok(())
}
