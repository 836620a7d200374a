//! make-mirror: copies every key under a prefix to another cluster, then keeps applying the
//! source's changes there; prints the number of keys mirrored every 30 seconds.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oxcd_api::etcdserverpb as pb;
use oxcd_client::{parse_endpoint, ClientTlsFiles, TlsMode};
use tokio_stream::StreamExt as _;

use super::prefix_end;
use crate::ctx::Ctx;
use crate::error::{
    status_message, CtlError, CtlResult, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR,
};

/// How often the number of mirrored keys is printed.
const PROGRESS_PERIOD: Duration = Duration::from_secs(30);
/// Keys read per range request during the initial copy.
const SYNC_BATCH_KEYS: i64 = 1000;

#[derive(clap::Args, Debug)]
pub struct MirrorArgs {
    /// Verify certificates of TLS enabled secure servers using this CA bundle
    #[arg(long)]
    pub dest_cacert: Option<String>,
    /// Identify secure client using this TLS certificate file for the destination cluster
    #[arg(long)]
    pub dest_cert: Option<String>,
    /// Identify secure client using this TLS key file
    #[arg(long)]
    pub dest_key: Option<String>,
    /// Use TLS transport for the destination (no client certificate)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = true)]
    pub dest_insecure_transport: bool,
    /// Key-value prefix to mirror
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// destination prefix to mirror a prefix to a different prefix in the destination cluster
    #[arg(long, default_value = "")]
    pub dest_prefix: String,
    /// mirror key-values to the root of the destination cluster
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub no_dest_prefix: bool,
    pub args: Vec<String>,
}

/// The destination key for a source key, with `--dest-prefix` / `--no-dest-prefix`.
fn dest_key(a: &MirrorArgs, key: &[u8]) -> Vec<u8> {
    if a.no_dest_prefix {
        return key
            .strip_prefix(a.prefix.as_bytes())
            .unwrap_or(key)
            .to_vec();
    }
    if a.dest_prefix.is_empty() {
        return key.to_vec();
    }
    let mut k = a.dest_prefix.clone().into_bytes();
    k.extend_from_slice(key.strip_prefix(a.prefix.as_bytes()).unwrap_or(key));
    k
}

pub async fn run(ctx: &Ctx, a: MirrorArgs) -> CtlResult {
    if a.args.len() != 1 {
        return Err(CtlError::args("make-mirror takes one destination argument"));
    }
    if !a.dest_prefix.is_empty() && a.no_dest_prefix {
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one.",
        ));
    }
    let dest = dest_client(ctx, &a).await?;
    let src = ctx.client().await?;
    let (key, end) = if a.prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (
            a.prefix.clone().into_bytes(),
            prefix_end(a.prefix.as_bytes()),
        )
    };
    let total = Arc::new(AtomicI64::new(0));
    let counter = total.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROGRESS_PERIOD).await;
            println!("{}", counter.load(Ordering::Relaxed));
        }
    });
    let rev = initial_copy(ctx, &src, &dest, &a, (&key, &end), &total).await?;
    let create = pb::WatchCreateRequest {
        key,
        range_end: end,
        start_revision: rev + 1,
        ..Default::default()
    };
    let (_requests, mut stream) = super::open_watch(&src, create).await?;
    while let Some(resp) = stream.next().await {
        let resp = resp.map_err(|s| CtlError::new(EXIT_ERROR, status_message(&s)))?;
        if resp.canceled {
            return Err(CtlError::new(EXIT_ERROR, resp.cancel_reason));
        }
        for e in resp.events {
            let kv = e.kv.unwrap_or_default();
            let op = if e.r#type == 1 {
                ctx.call(dest.kv().delete_range(pb::DeleteRangeRequest {
                    key: dest_key(&a, &kv.key),
                    ..Default::default()
                }))
                .await
                .map(|_| ())
            } else {
                ctx.call(dest.kv().put(pb::PutRequest {
                    key: dest_key(&a, &kv.key),
                    value: kv.value,
                    ..Default::default()
                }))
                .await
                .map(|_| ())
            };
            op?;
            total.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Copies the current keys page by page at one revision; returns that revision.
async fn initial_copy(
    ctx: &Ctx,
    src: &oxcd_client::Client,
    dest: &oxcd_client::Client,
    a: &MirrorArgs,
    range: (&[u8], &[u8]),
    total: &AtomicI64,
) -> CtlResult<i64> {
    let (mut key, end) = (range.0.to_vec(), range.1.to_vec());
    let mut rev = 0;
    loop {
        let req = pb::RangeRequest {
            key: key.clone(),
            range_end: end.clone(),
            limit: SYNC_BATCH_KEYS,
            revision: rev,
            ..Default::default()
        };
        let r = ctx.call(src.kv().range(req)).await?;
        if rev == 0 {
            rev = r.header.map(|h| h.revision).unwrap_or(0);
        }
        for kv in &r.kvs {
            let put = pb::PutRequest {
                key: dest_key(a, &kv.key),
                value: kv.value.clone(),
                ..Default::default()
            };
            ctx.call(dest.kv().put(put)).await?;
            total.fetch_add(1, Ordering::Relaxed);
        }
        match (r.more, r.kvs.last()) {
            (true, Some(last)) => {
                key = last.key.clone();
                key.push(0);
            }
            _ => return Ok(rev),
        }
    }
}

async fn dest_client(ctx: &Ctx, a: &MirrorArgs) -> CtlResult<oxcd_client::Client> {
    let ep = parse_endpoint(&a.args[0])
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, e.to_string()))?;
    let given = a.dest_cacert.is_some() || a.dest_cert.is_some() || a.dest_key.is_some();
    let tls = if !given && a.dest_insecure_transport {
        TlsMode::Plain
    } else {
        let files = ClientTlsFiles {
            cert_file: a.dest_cert.clone().map(Into::into),
            key_file: a.dest_key.clone().map(Into::into),
            trusted_ca_file: a.dest_cacert.clone().map(Into::into),
            skip_verify: false,
        };
        TlsMode::Tls(
            oxcd_client::tls_config(&files)
                .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, e.to_string()))?,
        )
    };
    let one = Ctx {
        endpoints: vec![ep],
        tls,
        user: None,
        ..ctx.clone_settings()
    };
    one.client().await
}
