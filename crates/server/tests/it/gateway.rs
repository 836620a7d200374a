//! The v3 JSON gateway against the real etcd 3.4's: the same script of `curl` calls (KV,
//! leases, cluster, maintenance, auth with the `Authorization` header, Lock and Election,
//! watch and keep-alive streams, errors, `/v3beta`, unknown paths and methods) goes to a
//! single etcd and a single oxcd; status, headers (less date and length) and bodies must be
//! the same, with only what legitimately differs masked (terms, raft indexes, sizes, hashes,
//! lease countdowns, Go's JSON parser messages).

use std::process::Command;
use std::time::Duration;

use oxcd_testkit::text::{mask_json_number, mask_json_string};
use oxcd_testkit::{require, run, Cluster, Impl};

/// One call of the script.
struct Call {
    path: &'static str,
    body: &'static str,
    /// Seconds curl waits (streams are cut at this).
    secs: u64,
    /// Sends the token from the last `authenticate` as `Authorization`.
    token: bool,
}

const fn call(path: &'static str, body: &'static str) -> Call {
    Call {
        path,
        body,
        secs: 10,
        token: false,
    }
}

const fn stream(path: &'static str, body: &'static str, secs: u64) -> Call {
    Call {
        path,
        body,
        secs,
        token: false,
    }
}

const fn with_token(path: &'static str, body: &'static str) -> Call {
    Call {
        path,
        body,
        secs: 10,
        token: true,
    }
}

/// The script. Keys: foo (Zm9v), a (YQ==), l (bA==), lk (bGs=), el (ZWw=).
const SCRIPT: &[Call] = &[
    call("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
    call(
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#,
    ),
    call("/v3/kv/range", r#"{"key":"Zm9v"}"#),
    call(
        "/v3beta/kv/range",
        r#"{"key":"AA==","range_end":"AA==","keys_only":true,"sort_order":"DESCEND","sort_target":"MOD"}"#,
    ),
    call("/v3/kv/range", r#"{"key":"Zm9v","revision":"100"}"#),
    call("/v3/kv/range", r#"{"key":"Zm9v","unknown_field":1}"#),
    call("/v3/kv/range", "{}"),
    call("/v3/kv/range", ""),
    call("/v3/kv/range", "not json"),
    call(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"request_put":{"key":"YQ==","value":"Yg=="}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
    ),
    call(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"eA=="}],"success":[{"request_put":{"key":"YQ==","value":"Yg=="}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
    ),
    call("/v3/kv/deleterange", r#"{"key":"YQ==","prev_kv":true}"#),
    call("/v3/kv/compaction", r#"{"revision":"2"}"#),
    call("/v3/kv/compaction", r#"{"revision":"2"}"#),
    call("/v3/kv/range", r#"{"key":"Zm9v","revision":"1"}"#),
    call("/v3/lease/grant", r#"{"TTL":"60","ID":"4242"}"#),
    call("/v3/lease/grant", r#"{"TTL":"60","ID":"4242"}"#),
    call(
        "/v3/kv/put",
        r#"{"key":"bA==","value":"dg==","lease":"4242"}"#,
    ),
    call("/v3/kv/lease/timetolive", r#"{"ID":"4242","keys":true}"#),
    call("/v3/lease/leases", "{}"),
    stream("/v3/lease/keepalive", r#"{"ID":"4242"}"#, 10),
    stream("/v3/lease/keepalive", r#"{"ID":"999"}"#, 10),
    stream("/v3/lease/keepalive", "not json", 10),
    call("/v3/lease/revoke", r#"{"ID":"4242"}"#),
    call("/v3/kv/lease/revoke", r#"{"ID":"4242"}"#),
    stream(
        "/v3/watch",
        r#"{"create_request":{"key":"AA==","range_end":"AA==","start_revision":"3","prev_kv":true}}"#,
        2,
    ),
    stream(
        "/v3/watch",
        r#"{"create_request":{"key":"Zm9v","start_revision":"1"}}"#,
        2,
    ),
    stream(
        "/v3/watch",
        r#"{"create_request":{"key":"Zm9v"}} {"cancel_request":{"watch_id":"0"}}"#,
        2,
    ),
    call("/v3/cluster/member/list", "{}"),
    call("/v3/cluster/member/remove", r#"{"ID":"1"}"#),
    call("/v3/maintenance/status", "{}"),
    call("/v3/maintenance/hash", "{}"),
    call("/v3/lease/grant", r#"{"TTL":"60","ID":"100"}"#),
    call("/v3/lease/grant", r#"{"TTL":"60","ID":"200"}"#),
    call("/v3/lock/lock", r#"{"name":"bGs=","lease":"100"}"#),
    call("/v3/lock/lock", r#"{"name":"bGs=","lease":"100"}"#),
    call("/v3/lock/lock", r#"{"name":"bGs=","lease":"12345"}"#),
    call("/v3/lock/unlock", "{}"),
    call(
        "/v3/election/campaign",
        r#"{"name":"ZWw=","lease":"100","value":"YQ=="}"#,
    ),
    call(
        "/v3/election/campaign",
        r#"{"name":"ZWw=","lease":"100","value":"Yg=="}"#,
    ),
    call("/v3/election/leader", r#"{"name":"ZWw="}"#),
    stream("/v3/election/observe", r#"{"name":"ZWw="}"#, 2),
    call(
        "/v3/election/proclaim",
        r#"{"leader":{"name":"ZWw=","key":"ZWwvNjQ=","rev":"1","lease":"100"},"value":"Yw=="}"#,
    ),
    call(
        "/v3/election/resign",
        r#"{"leader":{"name":"ZWw=","key":"ZWwvNjQ=","rev":"26","lease":"100"}}"#,
    ),
    call("/v3/election/leader", r#"{"name":"ZWw="}"#),
    call("/v3/election/resign", "{}"),
    call("/v3/auth/role/add", r#"{"name":"root"}"#),
    call("/v3/auth/user/add", r#"{"name":"root","password":"pw"}"#),
    call("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
    call("/v3/auth/role/add", r#"{"name":"r"}"#),
    call(
        "/v3/auth/role/grant",
        r#"{"name":"r","perm":{"permType":"READWRITE","key":"Zm9v"}}"#,
    ),
    call("/v3/auth/role/get", r#"{"role":"r"}"#),
    call("/v3/auth/user/get", r#"{"name":"root"}"#),
    call("/v3/auth/user/list", "{}"),
    call("/v3/auth/enable", "{}"),
    call("/v3/kv/range", r#"{"key":"Zm9v"}"#),
    call(
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"bad"}"#,
    ),
    call(
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"pw"}"#,
    ),
    with_token("/v3/kv/range", r#"{"key":"Zm9v"}"#),
    with_token("/v3/auth/disable", "{}"),
    call("/v3/nope", "{}"),
    call("/v3alpha/kv/range", "{}"),
];

/// What one call answered: status line, kept headers, body.
fn answer(c: &Cluster, call: &Call, token: &str) -> String {
    let url = format!("{}{}", c.endpoint(0), call.path);
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-N", "-D", "-", "-X", "POST"])
        .args(["-m", &call.secs.to_string()])
        .arg(&url);
    if !call.body.is_empty() {
        cmd.args(["-d", call.body]);
    }
    if call.token {
        cmd.args(["-H", &format!("Authorization: {token}")]);
    }
    let out = run(&mut cmd, b"");
    let raw = out.stdout.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    // grpc-gateway declares and sends a `Grpc-Trailer-Content-Type` trailer after the errors
    // of gRPC calls; hyper sends HTTP/1.1 trailers only to clients that ask (TE: trailers),
    // so oxcd sends none: compare without them.
    let body = body.trim_end_matches("Grpc-Trailer-Content-Type: application/grpc\n");
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").to_string();
    let mut headers: Vec<String> = lines
        .map(|l| l.to_ascii_lowercase())
        .filter(|l| {
            !["date:", "content-length:", "transfer-encoding:", "trailer:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    headers.sort();
    let mut body = mask(body).replace(&c.ip(0).to_string(), "IP");
    if serde_json::from_str::<serde_json::Value>(call.body).is_err() && !call.body.is_empty() {
        // Go's and serde's JSON parsers word a syntax error each their own way.
        body = mask_json_string(&mask_json_string(&body, "error"), "message");
    }
    format!("{status}\n{}\n\n{body}", headers.join("\n"))
}

/// What two correct servers may answer differently.
fn mask(body: &str) -> String {
    let mut s = body.to_string();
    for key in [
        "raft_term",
        "raftTerm",
        "raftIndex",
        "raftAppliedIndex",
        "hash",
    ] {
        s = mask_json_number(&s, key);
    }
    for key in [
        "raft_term",
        "raftTerm",
        "raftIndex",
        "raftAppliedIndex",
        "dbSize",
        "dbSizeInUse",
        "TTL",
    ] {
        s = mask_json_string(&s, key);
    }
    s
}

/// Runs the script against member 0 of `c`; a waiter for a held lock runs beside it.
fn script(c: &Cluster) -> Vec<String> {
    let mut token = String::new();
    let mut out = Vec::new();
    for (i, call) in SCRIPT.iter().enumerate() {
        let a = answer(c, call, &token);
        if call.path == "/v3/auth/authenticate" {
            if let Some((_, rest)) = a.split_once("\"token\":\"") {
                token = rest.split('"').next().unwrap_or("").to_string();
            }
        }
        out.push(format!(
            "#{i} {} {}\n{}",
            call.path,
            call.body,
            mask_json_string(&a, "token")
        ));
        if call.path == "/v3/lock/unlock" {
            out.push(contended_lock(c));
        }
    }
    out
}

/// Lease 200 waits for the lock lease 100 holds, until the holder unlocks it.
fn contended_lock(c: &Cluster) -> String {
    let wait = stream("/v3/lock/lock", r#"{"name":"bGs=","lease":"200"}"#, 10);
    let unlock = call("/v3/lock/unlock", r#"{"key":"bGsvNjQ="}"#);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| answer(c, &wait, ""));
        std::thread::sleep(Duration::from_millis(1000));
        let held = answer(
            c,
            &call("/v3/kv/range", r#"{"key":"bGsv","range_end":"bGsw"}"#),
            "",
        );
        let unlocked = answer(c, &unlock, "");
        let granted = waiter.join().expect("the waiter");
        format!("while held:\n{held}\nunlock:\n{unlocked}\ngranted:\n{granted}")
    })
}

#[test]
fn the_gateway_answers_as_etcds() {
    require("curl");
    let etcd = Cluster::builder(Impl::Etcd).start();
    let oxcd = Cluster::builder(Impl::Oxcd).start();
    let (want, got) = std::thread::scope(|s| {
        let e = s.spawn(|| script(&etcd));
        let o = s.spawn(|| script(&oxcd));
        (
            e.join().expect("etcd script"),
            o.join().expect("oxcd script"),
        )
    });
    let mut diffs = Vec::new();
    for (w, g) in want.iter().zip(&got) {
        if w != g {
            diffs.push(format!("etcd:\n{w}\noxcd:\n{g}\n"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} answers differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    // Not vacuous: the streams streamed and the waiter got the lock.
    let all = got.join("\n");
    assert!(
        all.contains("\"events\":[{\"kv\":{\"key\":\"Zm9v\""),
        "{all}"
    );
    assert!(all.contains("granted:\nHTTP/1.1 200 OK"), "{all}");
    // The gateway's calls are in the gRPC series, as etcd's (its gateway dials its own port).
    let mut curl = Command::new("curl");
    curl.args(["-s", &format!("{}/metrics", oxcd.endpoint(0))]);
    let metrics = run(&mut curl, b"").ok().stdout;
    let campaigns = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Campaign\",grpc_service=\"v3electionpb.Election\",grpc_type=\"unary\"} 2";
    assert!(metrics.contains(campaigns), "{metrics}");
}

#[test]
fn a_snapshot_streams_through_the_gateway() {
    require("curl");
    let oxcd = Cluster::builder(Impl::Oxcd).start();
    let snap = stream("/v3/maintenance/snapshot", "{}", 20);
    let a = answer(&oxcd, &snap, "");
    assert!(a.starts_with("HTTP/1.1 200 OK"), "{a}");
    let lines: Vec<&str> = a.split("\n\n").nth(1).unwrap_or("").lines().collect();
    assert!(!lines.is_empty(), "{a}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
        assert!(v["result"]["blob"].is_string(), "{l}");
    }
}
