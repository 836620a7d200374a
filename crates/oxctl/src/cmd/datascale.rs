//! check datascale: writes a fixed number of 1 KiB key-values and reports how much the
//! server's resident memory grew (its `process_resident_memory_bytes` metric).

use std::time::Duration;

use oxcd_api::etcdserverpb as pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::check_keys::{clean_up, ensure_prefix_free, random_key, too_many_errors, unknown_load};
use super::emit;

use crate::ctx::Ctx;
use crate::error::{CtlError, CtlResult, EXIT_ERROR};

/// Key-values to write and clients writing them, per load model (etcdctl's table).
fn model(load: &str) -> Option<(u64, usize)> {
    match load {
        "s" | "small" => Some((10_000, 50)),
        "m" | "medium" => Some((100_000, 200)),
        "l" | "large" => Some((1_000_000, 500)),
        "xl" | "xLarge" => Some((3_000_000, 1000)),
        _ => None,
    }
}

const KEY_BYTES: usize = 512;
const VALUE_BYTES: usize = 512;
/// Bound on reading the metrics page.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);
const METRICS_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The server's resident memory from its metrics page (plain HTTP, as etcdctl fetches it).
async fn resident_memory(ctx: &Ctx) -> f64 {
    let Some(ep) = ctx.endpoints.first() else {
        return 0.0;
    };
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(ep.authority()).await?;
        let req = format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", ep.authority());
        s.write_all(req.as_bytes()).await?;
        let mut body = String::new();
        s.take(METRICS_BYTES_MAX).read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = match tokio::time::timeout(METRICS_TIMEOUT, fetch).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            println!("fetch error: {e}");
            return 0.0;
        }
        Err(_) => {
            println!("fetch error: timeout");
            return 0.0;
        }
    };
    let key = "process_resident_memory_bytes";
    match body.lines().find_map(|l| l.strip_prefix(key)) {
        Some(v) => v.trim().parse().unwrap_or(0.0),
        None => {
            println!("could not find: {key}");
            0.0
        }
    }
}

pub async fn run(
    ctx: &Ctx,
    load: &str,
    prefix: &str,
    auto_compact: bool,
    auto_defrag: bool,
) -> CtlResult {
    let Some((limit, clients)) = model(load) else {
        return Err(unknown_load(load));
    };
    let first = ctx.client().await?;
    ensure_prefix_free(ctx, &first, prefix).await?;
    let before = resident_memory(ctx).await;
    if before == 0.0 {
        emit(b"FAIL: Could not read process_resident_memory_bytes before the put operations.\n")?;
        return Err(CtlError::new(EXIT_ERROR, ""));
    }
    emit(format!("Start data scale check for work load [{limit} key-value pairs, {} bytes per key-value, {clients} concurrent clients].\n", KEY_BYTES + VALUE_BYTES).as_bytes())?;
    let errors = write_all(ctx, prefix, limit, clients).await?;
    let after = resident_memory(ctx).await;
    if after == 0.0 {
        emit(b"FAIL: Could not read process_resident_memory_bytes after the put operations.\n")?;
        return Err(CtlError::new(EXIT_ERROR, ""));
    }
    clean_up(ctx, &first, prefix, Duration::from_secs(600), auto_compact).await?;
    if auto_defrag {
        ctx.call(first.maintenance().defragment(pb::DefragmentRequest {}))
            .await?;
    }
    if !errors.is_empty() {
        emit(too_many_errors(&errors).as_bytes())?;
        return Err(CtlError::new(EXIT_ERROR, ""));
    }
    let mb = (after - before) / (1024.0 * 1024.0);
    emit(format!("PASS: Approximate system memory used : {mb:.2} MB.\n").as_bytes())
}

/// Writes `limit` random keys under the prefix with `clients` connections; returns errors by message.
async fn write_all(
    ctx: &Ctx,
    prefix: &str,
    limit: u64,
    clients: usize,
) -> CtlResult<std::collections::BTreeMap<String, usize>> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, next, prefix) = (ctx.client().await?, next.clone(), prefix.to_string());
        workers.spawn(async move {
            let mut errs = std::collections::BTreeMap::<String, usize>::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < limit {
                let put = pb::PutRequest {
                    key: random_key(&prefix, KEY_BYTES),
                    value: vec![0; VALUE_BYTES],
                    ..Default::default()
                };
                if let Err(s) = client.kv().put(put).await {
                    *errs.entry(crate::error::status_message(&s)).or_default() += 1;
                }
            }
            errs
        });
    }
    let mut all = std::collections::BTreeMap::new();
    while let Some(r) = workers.join_next().await {
        for (k, v) in r.unwrap_or_default() {
            *all.entry(k).or_insert(0) += v;
        }
    }
    Ok(all)
}
