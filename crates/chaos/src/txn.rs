//! The multi-key transaction workload, checked by [`crate::elle`]. Keys hold lists of unique
//! elements; each transaction picks 2–4 keys of the current generation (keys rotate every
//! [`TXN_GENERATION_US`], like the append workload's), reads them all in one read-only Txn
//! (linearizable: one revision), then writes them in a second Txn guarded by every key's
//! `mod_revision` being still what it read — so when the guard holds, the reads and writes
//! happened atomically at the second Txn's revision: a read-modify-write of several keys.
//! A write extends a key's list by one unique element, or deletes the key.
//!
//! A delete also puts the key's marker (`<key>!` = `d<id>`) in the same Txn, and a write
//! needs the marker absent, so a deleted key stays deleted: a read that finds the key gone
//! names the delete that removed it, and every version of a key is known by what it holds.

use std::sync::Arc;
use std::time::Duration;

use oxcd_api::etcdserverpb::kv_client::KvClient;
use oxcd_api::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, RangeRequest, RequestOp,
    TxnRequest, TxnResponse,
};
use oxcd_client::Svc;
use rand::{seq::index::sample, Rng as _};

use crate::elle::{Seen, Status, Txn, Write};
use crate::workload::{self, with_timeout, Ctx, Process, PREFIX};

/// Keys per generation, and how long a generation lasts.
pub const TXN_KEYS: usize = 8;
pub const TXN_GENERATION_US: u64 = 5_000_000;
/// No transaction client records more transactions than this in one run.
const TXNS_PER_CLIENT_MAX: usize = 100_000;

pub fn txn_key(generation: u64, k: usize) -> String {
    format!("{PREFIX}t/{generation}-{k}")
}

fn marker_key(key: &str) -> String {
    format!("{key}!")
}

/// What the read phase found of one key: what it holds and the two mod revisions the
/// write phase must find unchanged (0: absent).
struct KeyRead {
    key: String,
    seen: Seen,
    key_rev: i64,
    marker_rev: i64,
}

/// Read-modify-write transactions over 2–4 keys until stopped.
pub async fn txn_client(ctx: Arc<Ctx>, process: u32, seed: u64) -> Vec<Txn> {
    let mut p = Process::new(ctx, process, seed);
    let mut out = Vec::new();
    while p.running() && out.len() < TXNS_PER_CLIENT_MAX {
        let Some(c) = p.conn.get().await else {
            continue;
        };
        let generation = p.ctx.now_us() / TXN_GENERATION_US;
        let n = p.rng.gen_range(2..=4);
        let keys: Vec<String> = sample(&mut p.rng, TXN_KEYS, n)
            .into_iter()
            .map(|k| txn_key(generation, k))
            .collect();
        let mut kv = c.kv();
        let invoke_us = p.ctx.now_us();
        let Ok(reads) = read_keys(&mut kv, &keys).await else {
            p.conn.retry().await;
            continue;
        };
        let read_us = p.ctx.now_us();
        let writes = plan_writes(&mut p, &reads);
        let seen: Vec<(String, Seen)> = reads
            .iter()
            .map(|r| (r.key.clone(), r.seen.clone()))
            .collect();
        let reader = Txn {
            process,
            invoke_us,
            complete_us: Some(read_us),
            reads: seen.clone(),
            writes: Vec::new(),
            status: Status::Ok,
            rev: None,
        };
        if writes.is_empty() {
            out.push(reader);
            continue;
        }
        let write_us = p.ctx.now_us();
        let answer = with_timeout(kv.txn(write_txn(&reads, &writes))).await;
        let mut writer = Txn {
            process,
            invoke_us: write_us,
            complete_us: Some(p.ctx.now_us()),
            reads: Vec::new(),
            writes,
            status: Status::Ok,
            rev: None,
        };
        match answer {
            Ok(r) if r.succeeded => {
                // Reads and writes happened together, at the write's revision.
                writer.invoke_us = invoke_us;
                writer.reads = seen;
                writer.rev = r.header.map(|h| h.revision);
                out.push(writer);
            }
            Ok(_) => {
                writer.status = Status::Failed;
                out.extend([reader, writer]);
            }
            Err(_) => {
                writer.status = Status::Unknown;
                writer.complete_us = None;
                out.extend([reader, writer]);
                p.conn.retry().await;
            }
        }
    }
    out
}

/// One read-only Txn of every key and its marker.
async fn read_keys(kv: &mut KvClient<Svc>, keys: &[String]) -> Result<Vec<KeyRead>, String> {
    let mut ops = Vec::new();
    for k in keys {
        for key in [k.clone(), marker_key(k)] {
            ops.push(RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: key.into_bytes(),
                    ..Default::default()
                })),
            });
        }
    }
    let r = with_timeout(kv.txn(TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    }))
    .await?;
    parse_reads(keys, &r)
}

/// What each key and its marker hold, from the read Txn's answers (two per key, in order).
fn parse_reads(keys: &[String], r: &TxnResponse) -> Result<Vec<KeyRead>, String> {
    let ranges: Vec<Option<(Vec<u8>, i64)>> = r
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(response_op::Response::ResponseRange(rr)) => {
                Ok(rr.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision)))
            }
            _ => Err("a read Txn answered something other than a range".to_string()),
        })
        .collect::<Result<_, _>>()?;
    if ranges.len() != keys.len() * 2 {
        return Err(format!(
            "{} answers to {} reads",
            ranges.len(),
            keys.len() * 2
        ));
    }
    let mut out = Vec::new();
    for (k, pair) in keys.iter().zip(ranges.chunks(2)) {
        let (value, marker) = (&pair[0], &pair[1]);
        let seen = match (value, marker) {
            (None, None) => Seen::Absent,
            (Some((v, _)), _) => {
                Seen::List(workload::decode_list(v).ok_or_else(|| format!("{k} holds {v:?}"))?)
            }
            (None, Some((m, _))) => Seen::Deleted(
                std::str::from_utf8(m)
                    .ok()
                    .and_then(|s| s.strip_prefix('d')?.parse().ok())
                    .ok_or_else(|| format!("{}'s marker holds {m:?}", k))?,
            ),
        };
        out.push(KeyRead {
            key: k.clone(),
            seen,
            key_rev: value.as_ref().map(|v| v.1).unwrap_or(0),
            marker_rev: marker.as_ref().map(|m| m.1).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Per key read: extend its list (60 %), delete it (0.5 %, if it exists: a deleted key
/// stays deleted until the keys rotate, so deletes must be rare), or leave it.
fn plan_writes(p: &mut Process, reads: &[KeyRead]) -> Vec<(String, Write)> {
    let mut out = Vec::new();
    for r in reads {
        let roll = p.rng.gen_range(0..1000);
        let write = match &r.seen {
            Seen::Deleted(_) => None,
            Seen::List(_) if roll >= 995 => Some(Write::Delete(p.unique_value())),
            Seen::Absent if roll < 600 => Some(Write::Put(vec![p.unique_value()])),
            Seen::List(l) if roll < 600 => {
                let mut l = l.clone();
                l.push(p.unique_value());
                Some(Write::Put(l))
            }
            _ => None,
        };
        out.extend(write.map(|w| (r.key.clone(), w)));
    }
    out
}

/// The write Txn: every key read (and its marker) still at the revision read, then the
/// puts and deletes.
fn write_txn(reads: &[KeyRead], writes: &[(String, Write)]) -> TxnRequest {
    let mod_is = |key: String, rev: i64| Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.into_bytes(),
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
        range_end: Vec::new(),
    };
    let compare = reads
        .iter()
        .flat_map(|r| {
            [
                mod_is(r.key.clone(), r.key_rev),
                mod_is(marker_key(&r.key), r.marker_rev),
            ]
        })
        .collect();
    let mut success = Vec::new();
    for (key, w) in writes {
        match w {
            Write::Put(l) => success.push(RequestOp {
                request: Some(request_op::Request::RequestPut(workload::put_req(
                    key,
                    workload::encode_list(l),
                ))),
            }),
            Write::Delete(id) => {
                success.push(RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key: key.clone().into_bytes(),
                            ..Default::default()
                        },
                    )),
                });
                success.push(RequestOp {
                    request: Some(request_op::Request::RequestPut(workload::put_req(
                        &marker_key(key),
                        format!("d{id}"),
                    ))),
                });
            }
        }
    }
    TxnRequest {
        compare,
        success,
        failure: vec![],
    }
}

/// After the cluster healed: one read of every key the transactions touched, so that
/// writes nobody read afterwards are checked too.
pub async fn final_reads(kv: &mut KvClient<Svc>, ctx: &Ctx, txns: &mut Vec<Txn>) {
    let mut keys: Vec<String> = txns
        .iter()
        .flat_map(|t| {
            t.reads
                .iter()
                .map(|(k, _)| k)
                .chain(t.writes.iter().map(|(k, _)| k))
        })
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    for chunk in keys.chunks(8) {
        let invoke_us = ctx.now_us();
        let Ok(reads) = tokio::time::timeout(Duration::from_secs(5), read_keys(kv, chunk)).await
        else {
            continue;
        };
        let Ok(reads) = reads else {
            continue;
        };
        txns.push(Txn {
            process: 999,
            invoke_us,
            complete_us: Some(ctx.now_us()),
            reads: reads.into_iter().map(|r| (r.key, r.seen)).collect(),
            writes: Vec::new(),
            status: Status::Ok,
            rev: None,
        });
    }
}
