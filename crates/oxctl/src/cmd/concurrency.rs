//! lock and elect as etcdctl does them: etcd's concurrency recipes (mutex, election) on KV and
//! Watch with a lease kept alive for the session, keys `name/<lease id in hex>`; observing an
//! election uses the Election service.

use std::time::Duration;

use oxcd_api::etcdserverpb as pb;
use oxcd_api::v3electionpb as epb;
use oxcd_client::Client;
use tokio_stream::StreamExt as _;

use super::{emit, open_keep_alive};
use crate::ctx::Ctx;
use crate::error::{status_message, CtlError, CtlResult, EXIT_ERROR};

#[derive(clap::Args, Debug)]
pub struct LockArgs {
    /// timeout for session
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    /// lock name, then an optional command to run while holding the lock
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ElectArgs {
    /// observation mode
    #[arg(short = 'l', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub listen: bool,
    pub args: Vec<String>,
}

/// A lease kept alive in the background until dropped or until it expires.
struct Session {
    id: i64,
    expired: tokio::sync::oneshot::Receiver<()>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn new(ctx: &Ctx, client: &Client, ttl: i64) -> CtlResult<Session> {
        let grant = ctx
            .call(
                client
                    .lease()
                    .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }),
            )
            .await?;
        let id = grant.id;
        let (tx, mut stream) = open_keep_alive(client, id)
            .await
            .map_err(|s| CtlError::new(EXIT_ERROR, status_message(&s)))?;
        let (expired_tx, expired) = tokio::sync::oneshot::channel();
        let keeper = tokio::spawn(async move {
            let pause = Duration::from_millis((ttl.max(1) as u64) * 1000 / 3);
            while let Some(Ok(r)) = stream.next().await {
                if r.ttl <= 0 {
                    break;
                }
                tokio::time::sleep(pause).await;
                if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                    break;
                }
            }
            let _ = expired_tx.send(());
        });
        Ok(Session {
            id,
            expired,
            keeper,
        })
    }

    async fn close(&self, client: &Client) {
        self.keeper.abort();
        let _ = client
            .lease()
            .lease_revoke(pb::LeaseRevokeRequest { id: self.id })
            .await;
    }

    /// Waits for this session's turn under `pfx` (see [`acquire`]); Ctrl-C gives up and
    /// revokes the lease.
    async fn take_turn(
        &self,
        ctx: &Ctx,
        client: &Client,
        pfx: &str,
        value: Vec<u8>,
    ) -> CtlResult<(Vec<u8>, i64)> {
        tokio::select! {
            r = acquire(ctx, client, pfx, self.id, value) => r,
            _ = tokio::signal::ctrl_c() => {
                self.close(client).await;
                Err(CtlError::new(EXIT_ERROR, "context canceled"))
            }
        }
    }

    /// Holds `key` until Ctrl-C (then releases it and revokes the lease) or until the session
    /// expires, which fails with `expired`.
    async fn hold(mut self, client: &Client, key: &[u8], expired: &str) -> CtlResult {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                release(client, key).await;
                self.close(client).await;
                Ok(())
            }
            _ = &mut self.expired => Err(CtlError::new(EXIT_ERROR, expired)),
        }
    }
}

async fn print_key(ctx: &Ctx, client: &Client, key: &[u8]) -> CtlResult {
    let req = pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    let r = ctx.call(client.kv().range(req)).await?;
    emit(&ctx.printer.get(&r)?)
}

pub async fn lock(ctx: &Ctx, a: LockArgs) -> CtlResult {
    let Some(name) = a.args.first() else {
        return Err(CtlError::args(
            "lock takes a lock name argument and an optional command to execute",
        ));
    };
    let client = ctx.client().await?;
    let session = Session::new(ctx, &client, a.ttl).await?;
    let pfx = format!("{name}/");
    let (key, rev) = session.take_turn(ctx, &client, &pfx, Vec::new()).await?;
    let command: Vec<&String> = a.args[1..].iter().skip_while(|w| *w == "--").collect();
    if let Some((program, rest)) = command.split_first() {
        let status = tokio::process::Command::new(program)
            .args(rest)
            .env("ETCD_LOCK_KEY", String::from_utf8_lossy(&key).as_ref())
            .env("ETCD_LOCK_REV", rev.to_string())
            .status()
            .await;
        release(&client, &key).await;
        session.close(&client).await;
        return match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(CtlError::new(
                EXIT_ERROR,
                format!("exit status {}", s.code().unwrap_or(1)),
            )),
            Err(e) => Err(CtlError::new(EXIT_ERROR, e.to_string())),
        };
    }
    print_key(ctx, &client, &key).await?;
    session.hold(&client, &key, "session expired").await
}

/// etcd's concurrency mutex, on KV and Watch only (so it works on any v3 server): create
/// `pfx<lease hex>` if absent, then wait until every key under the prefix created before it is
/// gone. Returns the key and the revision it was created at.
async fn acquire(
    ctx: &Ctx,
    client: &Client,
    pfx: &str,
    lease: i64,
    value: Vec<u8>,
) -> CtlResult<(Vec<u8>, i64)> {
    use pb::{compare, request_op::Request, response_op::Response};
    let key = format!("{pfx}{lease:x}").into_bytes();
    let (pkey, pend) = (pfx.as_bytes().to_vec(), super::prefix_end(pfx.as_bytes()));
    let first_created = pb::RangeRequest {
        key: pkey.clone(),
        range_end: pend.clone(),
        limit: 1,
        sort_order: pb::range_request::SortOrder::Ascend as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        ..Default::default()
    };
    let cmp = pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
        range_end: vec![],
    };
    let op = |r| pb::RequestOp { request: Some(r) };
    let put = Request::RequestPut(pb::PutRequest {
        key: key.clone(),
        value,
        lease,
        ..Default::default()
    });
    let get_mine = Request::RequestRange(pb::RangeRequest {
        key: key.clone(),
        ..Default::default()
    });
    let txn = pb::TxnRequest {
        compare: vec![cmp],
        success: vec![op(put), op(Request::RequestRange(first_created.clone()))],
        failure: vec![op(get_mine), op(Request::RequestRange(first_created))],
    };
    let r = ctx.call(client.kv().txn(txn)).await?;
    let mut my_rev = r.header.map(|h| h.revision).unwrap_or(0);
    if !r.succeeded {
        if let Some(Response::ResponseRange(mine)) =
            r.responses.first().and_then(|o| o.response.clone())
        {
            my_rev = mine
                .kvs
                .first()
                .map(|kv| kv.create_revision)
                .unwrap_or(my_rev);
        }
    }
    let owner_rev = match r.responses.get(1).and_then(|o| o.response.clone()) {
        Some(Response::ResponseRange(owner)) => owner.kvs.first().map(|kv| kv.create_revision),
        _ => None,
    };
    if owner_rev != Some(my_rev) {
        wait_deletes(ctx, client, &pkey, &pend, my_rev - 1).await?;
    }
    Ok((key, my_rev))
}

/// Waits until no key under the prefix has a create revision at or below `max_create_rev`.
async fn wait_deletes(
    ctx: &Ctx,
    client: &Client,
    key: &[u8],
    end: &[u8],
    max_create_rev: i64,
) -> CtlResult {
    loop {
        let req = pb::RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            limit: 1,
            sort_order: pb::range_request::SortOrder::Descend as i32,
            sort_target: pb::range_request::SortTarget::Create as i32,
            max_create_revision: max_create_rev,
            ..Default::default()
        };
        let r = ctx.call(client.kv().range(req)).await?;
        let Some(last) = r.kvs.first() else {
            return Ok(());
        };
        let rev = r.header.map(|h| h.revision).unwrap_or(0);
        wait_delete(client, &last.key, rev).await?;
    }
}

async fn wait_delete(client: &Client, key: &[u8], rev: i64) -> CtlResult {
    let create = pb::WatchCreateRequest {
        key: key.to_vec(),
        start_revision: rev + 1,
        ..Default::default()
    };
    let (_requests, mut stream) = super::open_watch(client, create).await?;
    while let Some(resp) = stream.next().await {
        let resp = resp.map_err(|s| CtlError::new(EXIT_ERROR, status_message(&s)))?;
        if resp.events.iter().any(|e| e.r#type == 1) {
            return Ok(());
        }
    }
    Err(CtlError::new(
        EXIT_ERROR,
        "watch closed while waiting for a key to go",
    ))
}

async fn release(client: &Client, key: &[u8]) {
    let _ = client
        .kv()
        .delete_range(pb::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await;
}

pub async fn elect(ctx: &Ctx, a: ElectArgs) -> CtlResult {
    if a.args.is_empty() || a.args.len() > 2 {
        return Err(CtlError::args(
            "elect takes one election name argument and an optional proposal argument",
        ));
    }
    let name = a.args[0].clone().into_bytes();
    match (a.args.get(1), a.listen) {
        (None, false) => Err(CtlError::args("no proposal argument but -l not set")),
        (Some(_), true) => Err(CtlError::args("proposal given but -l is set")),
        (None, true) => observe(ctx, name).await,
        (Some(value), false) => campaign(ctx, name, value.clone().into_bytes()).await,
    }
}

async fn observe(ctx: &Ctx, name: Vec<u8>) -> CtlResult {
    let client = ctx.client().await?;
    let mut stream = client
        .election()
        .observe(epb::LeaderRequest { name })
        .await
        .map_err(|s| CtlError::new(EXIT_ERROR, status_message(&s)))?
        .into_inner();
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(r)) => {
                    let resp = pb::RangeResponse { header: r.header, kvs: r.kv.into_iter().collect(), more: false, count: 1 };
                    emit(&ctx.printer.get(&resp)?)?;
                }
                Some(Err(s)) => return Err(CtlError::new(EXIT_ERROR, status_message(&s))),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Err(CtlError::new(EXIT_ERROR, "context canceled")),
        }
    }
}

async fn campaign(ctx: &Ctx, name: Vec<u8>, value: Vec<u8>) -> CtlResult {
    let client = ctx.client().await?;
    let session = Session::new(ctx, &client, 60).await?;
    let pfx = format!("{}/", String::from_utf8_lossy(&name));
    let (key, _) = session.take_turn(ctx, &client, &pfx, value).await?;
    print_key(ctx, &client, &key).await?;
    session.hold(&client, &key, "elect: session expired").await
}
