//! lock and elect, on etcd's Lock and Election services with a lease kept alive for the
//! session (the keys are those of etcd's concurrency package: `name/<lease id in hex>`).

use std::time::Duration;

use oxcd_api::etcdserverpb as pb;
use oxcd_api::v3electionpb as epb;
use oxcd_api::v3lockpb as lpb;
use oxcd_client::Client;
use tokio_stream::StreamExt as _;

use super::emit;
use crate::ctx::{status_message, CtlError, CtlResult, Ctx, EXIT_ERROR};

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
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.send(pb::LeaseKeepAliveRequest { id }).await;
        let mut stream = client
            .lease()
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| CtlError::new(EXIT_ERROR, status_message(&s)))?
            .into_inner();
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

    async fn close(self, client: &Client) {
        self.keeper.abort();
        let _ = client
            .lease()
            .lease_revoke(pb::LeaseRevokeRequest { id: self.id })
            .await;
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
    let mut session = Session::new(ctx, &client, a.ttl).await?;
    let req = lpb::LockRequest {
        name: name.clone().into_bytes(),
        lease: session.id,
    };
    let mut locker = client.lock();
    let locked = tokio::select! {
        r = locker.lock(req) => r.map_err(|s| CtlError::new(EXIT_ERROR, status_message(&s)))?.into_inner(),
        _ = tokio::signal::ctrl_c() => {
            session.close(&client).await;
            return Err(CtlError::new(EXIT_ERROR, "context canceled"));
        }
    };
    let key = locked.key;
    let rev = locked.header.map(|h| h.revision).unwrap_or(0);
    let command: Vec<&String> = a.args[1..].iter().skip_while(|w| *w == "--").collect();
    if let Some((program, rest)) = command.split_first() {
        let status = tokio::process::Command::new(program)
            .args(rest)
            .env("ETCD_LOCK_KEY", String::from_utf8_lossy(&key).as_ref())
            .env("ETCD_LOCK_REV", rev.to_string())
            .status()
            .await;
        let _ = client.lock().unlock(lpb::UnlockRequest { key }).await;
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
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            let _ = client.lock().unlock(lpb::UnlockRequest { key }).await;
            session.close(&client).await;
            Ok(())
        }
        _ = &mut session.expired => Err(CtlError::new(EXIT_ERROR, "session expired")),
    }
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
    let mut session = Session::new(ctx, &client, 60).await?;
    let req = epb::CampaignRequest {
        name,
        lease: session.id,
        value,
    };
    let mut elector = client.election();
    let leader = tokio::select! {
        r = elector.campaign(req) => r.map_err(|s| CtlError::new(EXIT_ERROR, status_message(&s)))?.into_inner().leader,
        _ = tokio::signal::ctrl_c() => {
            session.close(&client).await;
            return Err(CtlError::new(EXIT_ERROR, "context canceled"));
        }
    };
    let leader = leader.unwrap_or_default();
    print_key(ctx, &client, &leader.key).await?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            let _ = client.election().resign(epb::ResignRequest { leader: Some(leader) }).await;
            session.close(&client).await;
            Ok(())
        }
        _ = &mut session.expired => Err(CtlError::new(EXIT_ERROR, "elect: session expired")),
    }
}
