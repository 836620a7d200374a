//! What `check perf` and `check datascale` share: refusing an unknown load or a prefix that
//! already holds keys, the random keys they write, their error tally, and the clean-up.

use std::collections::BTreeMap;
use std::time::Duration;

use oxcd_api::etcdserverpb as pb;
use oxcd_gocompat::quote::quote;

use super::prefix_end;
use crate::ctx::Ctx;
use crate::error::{CtlError, CtlResult, EXIT_BAD_FEATURE, EXIT_INVALID_INPUT};

pub fn unknown_load(load: &str) -> CtlError {
    CtlError::new(EXIT_BAD_FEATURE, format!("unknown load option {load}"))
}

/// A check writes only under a prefix that holds no keys, so its clean-up deletes only its own.
pub async fn ensure_prefix_free(
    ctx: &Ctx,
    client: &oxcd_client::Client,
    prefix: &str,
) -> CtlResult {
    let probe = pb::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        limit: 1,
        ..Default::default()
    };
    if ctx.call(client.kv().range(probe)).await?.kvs.is_empty() {
        return Ok(());
    }
    Err(CtlError::new(
        EXIT_INVALID_INPUT,
        format!(
            "prefix {} has keys. Delete with etcdctl del --prefix {prefix} first",
            quote(prefix.as_bytes())
        ),
    ))
}

/// `prefix` and a random number as Go's `binary.PutVarint` writes it, zero-padded to `bytes`.
pub fn random_key(prefix: &str, bytes: usize) -> Vec<u8> {
    let mut k = varint(rand::random::<u64>() >> 1);
    k.resize(bytes, 0);
    let mut key = prefix.as_bytes().to_vec();
    key.extend(k);
    key
}

/// Go's `binary.PutVarint` (zigzag) of a non-negative number.
pub fn varint(n: u64) -> Vec<u8> {
    let mut v = n << 1;
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// etcdctl's lines for failed requests, counted by error.
pub fn too_many_errors(errs: &BTreeMap<String, usize>) -> String {
    let mut out = String::from("FAIL: too many errors\n");
    for (e, n) in errs {
        out += &format!("FAIL: ERROR({e}) -> {n}\n");
    }
    out
}

/// Deletes everything a check wrote under `prefix` (within `within`), then, with
/// `compact`, compacts physically to the delete's revision, which it returns.
pub async fn clean_up(
    ctx: &Ctx,
    client: &oxcd_client::Client,
    prefix: &str,
    within: Duration,
    compact: bool,
) -> CtlResult<Option<i64>> {
    let del = pb::DeleteRangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        prev_kv: false,
    };
    let d = ctx
        .call_within(within, client.kv().delete_range(del))
        .await?;
    if !compact {
        return Ok(None);
    }
    let rev = d.header.map(|h| h.revision).unwrap_or(0);
    ctx.call(client.kv().compact(pb::CompactionRequest {
        revision: rev,
        physical: true,
    }))
    .await?;
    Ok(Some(rev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_varints() {
        assert_eq!(varint(0), [0]);
        assert_eq!(varint(1), [2]);
        assert_eq!(varint(63), [126]);
        assert_eq!(varint(64), [0x80, 1]);
        assert_eq!(varint(300), [0xd8, 0x04]);
    }
}
