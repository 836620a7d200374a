//! get, put, del, txn and compaction.

use std::io::{BufRead, Read as _};

use clap::Args;
use oxcd_api::etcdserverpb::{
    self as pb, range_request::SortOrder, range_request::SortTarget, request_op::Request,
};

use super::{emit, parse_hex_id, prefix_end};
use oxcd_gocompat::quote::quote;

use crate::ctx::Ctx;
use crate::error::{CtlError, CtlResult, EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT};
use crate::print::Format;
use crate::txn_parse;

#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub limit: i64,
    /// Get keys with matching prefix
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
    /// Get only the keys
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub keys_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub print_value_only: bool,
    pub args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct PutArgs {
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// return the previous key-value pair before modification
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub prev_kv: bool,
    /// updates the key using its current value
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub ignore_lease: bool,
    #[arg(allow_hyphen_values = false)]
    pub args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DelArgs {
    /// delete keys with matching prefix
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub prefix: bool,
    /// return deleted key-value pairs
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub from_key: bool,
    pub args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub interactive: bool,
    pub args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CompactionArgs {
    /// Wait for the compaction to physically remove all old revisions
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub physical: bool,
    #[arg(allow_negative_numbers = true)]
    pub args: Vec<String>,
}

const TOO_MANY: &str =
    "too many arguments, only accept one argument when `--prefix` or `--from-key` is set";
const BOTH: &str = "`--prefix` and `--from-key` cannot be set at the same time, choose one";

/// etcdctl's `getGetOp`: the range request for `get` (also used inside `txn`).
pub fn range_request(a: &GetArgs) -> CtlResult<pb::RangeRequest> {
    let Some(key) = a.args.first() else {
        return Err(CtlError::args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    };
    if a.prefix && a.from_key {
        return Err(CtlError::args(BOTH));
    }
    let serializable = match a.consistency.as_str() {
        "s" => true,
        "l" => false,
        other => {
            return Err(CtlError::new(
                EXIT_BAD_FEATURE,
                format!("unknown consistency flag {}", quote(other.as_bytes())),
            ))
        }
    };
    let mut req = pb::RangeRequest {
        key: key.clone().into_bytes(),
        limit: a.limit,
        revision: a.rev.max(0),
        serializable,
        keys_only: a.keys_only,
        ..Default::default()
    };
    if let Some(end) = a.args.get(1) {
        if a.prefix || a.from_key {
            return Err(CtlError::args(TOO_MANY));
        }
        req.range_end = end.clone().into_bytes();
    }
    let order = match a.order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => {
            return Err(CtlError::new(
                EXIT_BAD_FEATURE,
                format!("bad sort order {}", a.order),
            ))
        }
    };
    let target = match a.sort_by.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(CtlError::new(
                EXIT_BAD_FEATURE,
                format!("bad sort target {}", a.sort_by),
            ))
        }
    };
    // clientv3 drops ASCEND on KEY: the server returns keys in that order anyway.
    let order = if target == SortTarget::Key && order == SortOrder::Ascend {
        SortOrder::None
    } else {
        order
    };
    req.sort_order = order as i32;
    req.sort_target = target as i32;
    apply_prefix_or_from_key(&mut req.key, &mut req.range_end, a.prefix, a.from_key);
    Ok(req)
}

fn apply_prefix_or_from_key(key: &mut Vec<u8>, end: &mut Vec<u8>, prefix: bool, from_key: bool) {
    if prefix {
        if key.is_empty() {
            *key = vec![0];
            *end = vec![0];
        } else {
            *end = prefix_end(key);
        }
    }
    if from_key {
        if key.is_empty() {
            *key = vec![0];
        }
        *end = vec![0];
    }
}

pub async fn get(ctx: &mut Ctx, a: GetArgs) -> CtlResult {
    let req = range_request(&a)?;
    if a.print_value_only {
        if ctx.printer.format != Format::Simple {
            return Err(CtlError::args(
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        ctx.printer.value_only = true;
    }
    let client = ctx.client().await?;
    let resp = ctx.call(client.kv().range(req)).await?;
    emit(&ctx.printer.get(&resp)?)
}

/// etcdctl's `getPutOp`; `stdin_value` reads the value from stdin when it is not an argument.
pub fn put_request(a: &PutArgs, stdin_value: bool) -> CtlResult<pb::PutRequest> {
    let usage = "put command needs 1 argument and input from stdin or 2 arguments";
    let Some(key) = a.args.first() else {
        return Err(CtlError::args(usage));
    };
    if a.ignore_value && a.args.len() > 1 {
        return Err(CtlError::args(
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let mut value = Vec::new();
    if !a.ignore_value {
        value = match a.args.get(1) {
            Some(v) => v.clone().into_bytes(),
            None if stdin_value => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .map_err(|_| CtlError::args(usage))?;
                buf
            }
            None => Vec::new(),
        };
        if value.is_empty() && a.args.len() < 2 {
            return Err(CtlError::args(usage));
        }
    }
    let lease = parse_hex_id(&a.lease)
        .map_err(|e| CtlError::args(format!("bad lease ID ({e}), expecting ID in Hex")))?;
    Ok(pb::PutRequest {
        key: key.clone().into_bytes(),
        value,
        lease,
        prev_kv: a.prev_kv,
        ignore_value: a.ignore_value,
        ignore_lease: a.ignore_lease,
    })
}

pub async fn put(ctx: &Ctx, a: PutArgs) -> CtlResult {
    let req = put_request(&a, true)?;
    let client = ctx.client().await?;
    let resp = ctx.call(client.kv().put(req)).await?;
    emit(&ctx.printer.put(&resp)?)
}

/// etcdctl's `getDelOp`.
pub fn delete_request(a: &DelArgs) -> CtlResult<pb::DeleteRangeRequest> {
    if a.args.is_empty() || a.args.len() > 2 {
        return Err(CtlError::args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    }
    if a.prefix && a.from_key {
        return Err(CtlError::args(BOTH));
    }
    let mut req = pb::DeleteRangeRequest {
        key: a.args[0].clone().into_bytes(),
        prev_kv: a.prev_kv,
        ..Default::default()
    };
    if let Some(end) = a.args.get(1) {
        if a.prefix || a.from_key {
            return Err(CtlError::args(TOO_MANY));
        }
        req.range_end = end.clone().into_bytes();
    }
    apply_prefix_or_from_key(&mut req.key, &mut req.range_end, a.prefix, a.from_key);
    Ok(req)
}

pub async fn del(ctx: &Ctx, a: DelArgs) -> CtlResult {
    let req = delete_request(&a)?;
    let client = ctx.client().await?;
    let resp = ctx.call(client.kv().delete_range(req)).await?;
    emit(&ctx.printer.del(&resp)?)
}

pub async fn compaction(ctx: &Ctx, a: CompactionArgs) -> CtlResult {
    if a.args.len() != 1 {
        return Err(CtlError::args("compaction command needs 1 argument"));
    }
    let rev: i64 = a.args[0].parse().map_err(|_| {
        CtlError::new(
            EXIT_ERROR,
            format!(
                "strconv.ParseInt: parsing {}: invalid syntax",
                quote(a.args[0].as_bytes())
            ),
        )
    })?;
    let client = ctx.client().await?;
    let req = pb::CompactionRequest {
        revision: rev,
        physical: a.physical,
    };
    ctx.call(client.kv().compact(req)).await?;
    println!("compacted revision {rev}");
    Ok(())
}

pub async fn txn(ctx: &Ctx, a: TxnArgs) -> CtlResult {
    if !a.args.is_empty() {
        return Err(CtlError::args("txn command does not accept argument"));
    }
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let prompt = |text: &str| {
        if a.interactive {
            println!("{text}");
        }
    };
    prompt("compares:");
    let compare = read_section(&mut reader, |l| {
        txn_parse::parse_compare(l).map_err(|e| CtlError::new(EXIT_INVALID_INPUT, e))
    })?;
    prompt("success requests (get, put, del):");
    let success = read_section(&mut reader, parse_op)?;
    prompt("failure requests (get, put, del):");
    let failure = read_section(&mut reader, parse_op)?;
    drop(reader);
    let client = ctx.client().await?;
    let req = pb::TxnRequest {
        compare,
        success,
        failure,
    };
    let resp = ctx.call(client.kv().txn(req)).await?;
    emit(&ctx.printer.txn(&resp)?)
}

/// Reads lines until an empty one; end of input before it is an error, as in etcdctl.
fn read_section<T>(
    reader: &mut impl BufRead,
    parse: impl Fn(&str) -> CtlResult<T>,
) -> CtlResult<Vec<T>> {
    let mut items = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| CtlError::new(EXIT_INVALID_INPUT, e.to_string()))?;
        if n == 0 || !line.ends_with('\n') {
            return Err(CtlError::new(EXIT_INVALID_INPUT, "EOF"));
        }
        let line = line.trim();
        if line.is_empty() {
            return Ok(items);
        }
        items.push(parse(line)?);
    }
}

/// One `get`/`put`/`del` line of a txn, parsed with the same flags as the commands.
fn parse_op(line: &str) -> CtlResult<pb::RequestOp> {
    let invalid = || CtlError::new(EXIT_INVALID_INPUT, format!("invalid txn request: {line}"));
    let words = txn_parse::argify(line).map_err(|e| CtlError::new(EXIT_INVALID_INPUT, e))?;
    if words.len() < 2 {
        return Err(CtlError::new(
            EXIT_INVALID_INPUT,
            format!("invalid txn compare request: {line}"),
        ));
    }
    #[derive(clap::Parser)]
    enum Op {
        Get(GetArgs),
        Put(PutArgs),
        Del(DelArgs),
    }
    let argv = std::iter::once("txn".to_string()).chain(words);
    let op = <Op as clap::Parser>::try_parse_from(argv).map_err(|_| invalid())?;
    let request = match op {
        Op::Get(g) => Request::RequestRange(range_request(&g)?),
        Op::Put(p) => Request::RequestPut(put_request(&p, false)?),
        Op::Del(d) => Request::RequestDeleteRange(delete_request(&d)?),
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}
