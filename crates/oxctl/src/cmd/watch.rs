//! watch: one key, a range or a prefix, from a revision, optionally running a command per
//! event (`watch k -- cmd args`) or reading `watch ...` lines from stdin (`-i`).

use std::io::BufRead as _;

use oxcd_api::etcdserverpb::{self as pb, watch_request::RequestUnion};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

use super::{emit, prefix_end};
use crate::ctx::Ctx;
use crate::error::{
    status_message, CtlError, CtlResult, EXIT_BAD_ARGS, EXIT_INTERRUPTED, EXIT_INVALID_INPUT,
};
use crate::print::event_type;

/// Watch requests queued to the stream at most; interactive input waits beyond that.
const WATCH_REQUESTS_QUEUED_MAX: usize = 16;

#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Interactive mode
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub interactive: bool,
    /// Watch on a prefix if prefix is set
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub prev_kv: bool,
    /// get periodic watch progress notification from server
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub progress_notify: bool,
    pub args: Vec<String>,
    /// Command to run for each event, after `--`.
    #[arg(last = true)]
    pub exec: Vec<String>,
}

fn create_request(a: &WatchArgs) -> CtlResult<pb::WatchRequest> {
    let Some(key) = a.args.first() else {
        return Err(CtlError::args("bad number of arguments"));
    };
    if a.args.len() > 2 {
        return Err(CtlError::args("bad number of arguments"));
    }
    let mut key = key.clone().into_bytes();
    let mut range_end = a
        .args
        .get(1)
        .map(|e| e.clone().into_bytes())
        .unwrap_or_default();
    if a.prefix {
        if a.args.len() > 1 {
            return Err(CtlError::args(
                "`range_end` and `--prefix` are mutually exclusive",
            ));
        }
        if key.is_empty() {
            key = vec![0];
            range_end = vec![0];
        } else {
            range_end = prefix_end(&key);
        }
    }
    let create = pb::WatchCreateRequest {
        key,
        range_end,
        start_revision: a.rev,
        prev_kv: a.prev_kv,
        progress_notify: a.progress_notify,
        ..Default::default()
    };
    Ok(pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    })
}

pub async fn run(ctx: &Ctx, a: WatchArgs) -> CtlResult {
    let (tx, rx) = mpsc::channel(WATCH_REQUESTS_QUEUED_MAX);
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    // Fused: polled again after it completed, it stays pending instead of panicking.
    let mut eof = futures::FutureExt::fuse(eof_rx);
    if a.interactive {
        spawn_interactive(tx.clone(), eof_tx);
    } else {
        tx.send(create_request(&a)?)
            .await
            .map_err(|_| CtlError::args("watch closed"))?;
    }
    let client = ctx.client().await?;
    let mut watch = client.watch();
    // etcd answers the call only with its first response, which may never come when every
    // interactive line was refused: end of input must still end the command.
    let opened = tokio::select! {
        r = watch.watch(tokio_stream::wrappers::ReceiverStream::new(rx)) => r,
        Ok(()) = &mut eof => {
            return Err(CtlError::new(EXIT_INVALID_INPUT, "Error reading watch request line: EOF"));
        }
    };
    let mut stream = opened
        .map_err(|s| CtlError::new(EXIT_INTERRUPTED, status_message(&s)))?
        .into_inner();
    loop {
        let resp = tokio::select! {
            r = stream.next() => match r {
                Some(r) => r,
                None => break,
            },
            Ok(()) = &mut eof => {
                return Err(CtlError::new(EXIT_INVALID_INPUT, "Error reading watch request line: EOF"));
            }
        };
        let resp = resp.map_err(|s| CtlError::new(EXIT_INTERRUPTED, status_message(&s)))?;
        if resp.created && !resp.canceled {
            continue;
        }
        if resp.canceled {
            let reason = if resp.compact_revision > 0 {
                "etcdserver: mvcc: required revision has been compacted".to_string()
            } else {
                resp.cancel_reason.clone()
            };
            eprintln!("watch was canceled ({reason})");
        }
        if resp.events.is_empty() && !resp.canceled {
            if let Some(h) = &resp.header {
                println!("progress notify: {}", h.revision);
            }
            continue;
        }
        emit(&ctx.printer.watch(&resp)?)?;
        if !a.exec.is_empty() {
            run_exec(&a.exec, &resp).await;
        }
        if resp.canceled && !a.interactive {
            break;
        }
    }
    drop(tx);
    Err(CtlError::new(
        EXIT_INTERRUPTED,
        "watch is canceled by the server",
    ))
}

/// Runs the `--` command once per event with etcdctl's ETCD_WATCH_* variables.
async fn run_exec(exec: &[String], resp: &pb::WatchResponse) {
    for e in &resp.events {
        let kv = e.kv.clone().unwrap_or_default();
        let status = tokio::process::Command::new(&exec[0])
            .args(&exec[1..])
            .env(
                "ETCD_WATCH_REVISION",
                resp.header.unwrap_or_default().revision.to_string(),
            )
            .env("ETCD_WATCH_EVENT_TYPE", event_type(e.r#type))
            .env("ETCD_WATCH_KEY", String::from_utf8_lossy(&kv.key).as_ref())
            .env(
                "ETCD_WATCH_VALUE",
                String::from_utf8_lossy(&kv.value).as_ref(),
            )
            .status()
            .await;
        if let Err(err) = status {
            eprintln!("command {exec:?} error ({err})");
        }
    }
}

/// Reads `watch [options] key [range_end]` lines from stdin and adds each watch to the stream.
fn spawn_interactive(tx: mpsc::Sender<pb::WatchRequest>, eof: tokio::sync::oneshot::Sender<()>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let first = line.split_whitespace().next().unwrap_or_default();
            if first != "watch" {
                eprintln!("Invalid command {line} (only support watch)");
                continue;
            }
            if line.split_whitespace().count() < 2 {
                eprintln!("Invalid command {line} (command type or key is not provided)");
                continue;
            }
            let words = match crate::txn_parse::argify(&line) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("Invalid command {line} ({e})");
                    continue;
                }
            };
            #[derive(clap::Parser)]
            enum Line {
                Watch(WatchArgs),
            }
            let argv = std::iter::once("oxctl".to_string()).chain(words);
            let req = match <Line as clap::Parser>::try_parse_from(argv) {
                Ok(Line::Watch(w)) => create_request(&w),
                Err(e) => Err(CtlError::new(EXIT_BAD_ARGS, e.kind().to_string())),
            };
            match req {
                Ok(req) => {
                    if tx.blocking_send(req).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("Invalid command {line} ({})", e.msg),
            }
        }
        let _ = eof.send(());
    });
}
