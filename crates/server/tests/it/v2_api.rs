//! etcd 2's keys API (`/v2/keys`) on the client URL, over plain HTTP: the same requests
//! against the real etcd 3.4 (`--enable-v2`) and oxcd must get the same status, headers
//! and JSON. Store indexes differ (etcd writes internal keys first), so each server's are
//! taken relative to its index before the first request. Plus what a comparison cannot
//! show: TTL expiry, long polls with `wait=true`, in-order keys.

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use oxcd_testkit::http::{http, http_get, HttpResponse};
use oxcd_testkit::{require, wait_for, Cluster, Impl};
use serde_json::Value;

/// One request of the comparison. `{base+1}` in the target or form is replaced by the
/// server's base index + 1, `{foo}` by the modifiedIndex of `/foo` it last reported.
struct Req {
    method: &'static str,
    target: &'static str,
    form: Option<&'static str>,
}

const fn req(method: &'static str, target: &'static str, form: Option<&'static str>) -> Req {
    Req {
        method,
        target,
        form,
    }
}

const SEQUENCE: &[Req] = &[
    req("PUT", "/v2/keys/foo", Some("value=bar")),
    req("GET", "/v2/keys/foo", None),
    req("GET", "/v2/keys/foo?quorum=true", None),
    req("HEAD", "/v2/keys/foo", None),
    req("PUT", "/v2/keys/foo", Some("value=bar2")),
    req("PUT", "/v2/keys/foo", Some("value=x&prevExist=false")),
    req("PUT", "/v2/keys/new1", Some("value=a&prevExist=false")),
    req("PUT", "/v2/keys/new2", Some("value=a&prevExist=true")),
    req("PUT", "/v2/keys/foo", Some("value=b&prevExist=true")),
    req("PUT", "/v2/keys/foo", Some("value=c&prevValue=nope")),
    req("PUT", "/v2/keys/foo", Some("value=c&prevValue=b")),
    req("PUT", "/v2/keys/foo", Some("value=d&prevIndex={base+1}")),
    req("PUT", "/v2/keys/foo", Some("value=d&prevIndex={foo}")),
    req(
        "PUT",
        "/v2/keys/foo",
        Some("value=e&prevIndex={base+1}&prevValue=zz"),
    ),
    req(
        "PUT",
        "/v2/keys/foo?value=fromquery",
        Some("value=frombody"),
    ),
    req("PUT", "/v2/keys/foo?value=fromquery", None),
    req("PUT", "/v2/keys/nothere", Some("value=x&prevValue=y")),
    req("DELETE", "/v2/keys/foo?prevValue=zzz", None),
    req("DELETE", "/v2/keys/foo?prevIndex={foo}", None),
    req("GET", "/v2/keys/foo", None),
    req("DELETE", "/v2/keys/nothere", None),
    req("PUT", "/v2/keys/dir", Some("dir=true")),
    req("PUT", "/v2/keys/dir", Some("dir=true")),
    req("PUT", "/v2/keys/dir", Some("value=x")),
    req("PUT", "/v2/keys/dir/a", Some("value=1")),
    req("PUT", "/v2/keys/dir/b/c", Some("value=2")),
    req("GET", "/v2/keys/dir?sorted=true", None),
    req("GET", "/v2/keys/dir?recursive=true&sorted=true", None),
    req("GET", "/v2/keys/?sorted=true", None),
    req("GET", "/v2/keys?recursive=true&sorted=true", None),
    req("PUT", "/v2/keys/empty", Some("dir=true")),
    req("GET", "/v2/keys/empty", None),
    req("DELETE", "/v2/keys/dir", None),
    req("DELETE", "/v2/keys/dir?dir=true", None),
    req("DELETE", "/v2/keys/dir/b?recursive=true", None),
    req("DELETE", "/v2/keys/empty?dir=true", None),
    req("POST", "/v2/keys/dir/a", Some("value=x")),
    req("PUT", "/v2/keys/dir/a/sub", Some("value=x")),
    req("POST", "/v2/keys/queue", Some("value=j1")),
    req("POST", "/v2/keys/queue", Some("value=j2")),
    req("GET", "/v2/keys/queue?sorted=true", None),
    req("PUT", "/v2/keys/", Some("value=x")),
    req("DELETE", "/v2/keys/", None),
    req("PUT", "/v2/keys/dir", Some("dir=true&prevExist=true")),
    req("GET", "/v2/keys/dir", None),
    req("PUT", "/v2/keys/t", Some("value=x&ttl=100")),
    req("GET", "/v2/keys/t", None),
    req("PUT", "/v2/keys/t", Some("value=y&prevExist=true")),
    req("PUT", "/v2/keys/bad", Some("value=x&ttl=abc")),
    req("PUT", "/v2/keys/bad", Some("value=x&ttl=-1")),
    req("PUT", "/v2/keys/bad", Some("value=x&prevIndex=abc")),
    req("PUT", "/v2/keys/bad", Some("value=x&prevExist=maybe")),
    req("PUT", "/v2/keys/bad", Some("value=x&prevValue=")),
    req("PUT", "/v2/keys/bad", Some("value=x&recursive=maybe")),
    req("PUT", "/v2/keys/bad", Some("value=x&wait=true")),
    req("PUT", "/v2/keys/bad", Some("value=x&refresh=true")),
    req("GET", "/v2/keys/bad?sorted=maybe", None),
    req("GET", "/v2/keys/bad?waitIndex=abc&wait=true", None),
    req(
        "PUT",
        "/v2/keys/ok",
        Some("value=1&dir=false&recursive=t&sorted=0"),
    ),
    req("GET", "/v2/keys/_hidden", None),
    req("PUT", "/v2/keys/a%20b", Some("value=sp+ace%21")),
    // ttl=0 expires the key at once (issue 12); its answer shows an expiration, no ttl.
    req("PUT", "/v2/keys/ttl0", Some("value=x&ttl=0")),
    req("GET", "/v2/keys/ttl0", None),
    req("GET", "/v2/keys/a%20b", None),
    req("GET", "/v2/keys/foo?wait=true&waitIndex={base+1}", None),
    req(
        "GET",
        "/v2/keys/dir?wait=true&recursive=true&waitIndex={base+1}",
        None,
    ),
    req("PATCH", "/v2/keys/foo", None),
    req("OPTIONS", "/v2/keys/foo", None),
    req("GET", "/version", None),
    req("GET", "/health", None),
];

/// Headers compared by value (after index normalization) or only for presence.
const HEADERS_BY_VALUE: &[&str] = &[
    "content-type",
    "x-etcd-cluster-id",
    "x-etcd-index",
    "allow",
    "x-content-type-options",
    "access-control-allow-methods",
    "access-control-allow-origin",
    "access-control-allow-headers",
];
const HEADERS_PRESENT: &[&str] = &["x-raft-index", "x-raft-term"];

struct Side<'a> {
    server: &'a Cluster,
    base: u64,
    foo: u64,
}

impl Side<'_> {
    fn fill(&self, s: &str) -> String {
        s.replace("{base+1}", &(self.base + 1).to_string())
            .replace("{foo}", &self.foo.to_string())
    }

    fn send(&mut self, r: &Req) -> HttpResponse {
        let target = self.fill(r.target);
        let form = r.form.map(|f| self.fill(f));
        let resp = http(
            self.server.client_addr(0),
            r.method,
            &target,
            form.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{} {target}: {e}", r.method));
        if let Ok(v) = serde_json::from_str::<Value>(&resp.body) {
            if v["node"]["key"] == "/foo" {
                if let Some(i) = v["node"]["modifiedIndex"].as_u64() {
                    self.foo = i;
                }
            }
        }
        resp
    }

    /// The response with store indexes made relative to the base, and the expiration time
    /// (a wall-clock instant) masked.
    fn normalize(&self, resp: &HttpResponse) -> (u16, BTreeMap<String, String>, String) {
        // Index 0 (errors found before the store is asked) is absolute: it stays 0.
        let rel = |n: u64| match n {
            0 => "0".to_string(),
            n => (n as i64 - self.base as i64).to_string(),
        };
        let mut headers = BTreeMap::new();
        for h in HEADERS_BY_VALUE {
            if let Some(v) = resp.header(h) {
                let v = match (*h, v.parse::<u64>()) {
                    ("x-etcd-index", Ok(n)) => rel(n),
                    _ => v.to_string(),
                };
                headers.insert(h.to_string(), v);
            }
        }
        for h in HEADERS_PRESENT {
            if resp.header(h).is_some() {
                headers.insert(h.to_string(), "present".into());
            }
        }
        let body = match serde_json::from_str::<Value>(&resp.body) {
            Ok(mut v) => {
                self.normalize_json(&mut v);
                v.to_string()
            }
            Err(_) => resp.body.clone(),
        };
        (resp.status, headers, body)
    }

    fn normalize_json(&self, v: &mut Value) {
        let base = self.base as i64;
        let shift = |n: i64| if n == 0 { 0 } else { n - base };
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    match (k.as_str(), val.as_i64()) {
                        ("modifiedIndex" | "createdIndex" | "index", Some(n)) => {
                            *val = shift(n).into()
                        }
                        ("expiration", _) => *val = "EXPIRATION".into(),
                        // oxcd reports the etcd API level it implements (3.4.31), the
                        // etcd under comparison its own patch release.
                        ("etcdserver", _) => *val = "VERSION".into(),
                        ("key", _) => {
                            // In-order keys are named after their index.
                            if let Some(k) = val.as_str().map(str::to_string) {
                                *val = self.shift_in_order_key(&k).into();
                            }
                        }
                        ("cause", _) => {
                            if let Some(c) = val.as_str().map(str::to_string) {
                                *val = shift_cause_indexes(&c, base).into();
                            }
                        }
                        _ => self.normalize_json(val),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.normalize_json(i)),
            _ => {}
        }
    }

    fn shift_in_order_key(&self, key: &str) -> String {
        match key.rsplit_once('/') {
            Some((dir, name)) if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) => {
                let n: i64 = name.parse().unwrap_or(0);
                format!("{dir}/{:020}", n - self.base as i64)
            }
            _ => key.to_string(),
        }
    }
}

/// Compare-failed causes name indexes as `[sent != current]`: made relative like the rest.
/// (The comparison sends no numeric prevValue, so numbers here are indexes.)
fn shift_cause_indexes(cause: &str, base: i64) -> String {
    cause
        .split(' ')
        .map(|tok| {
            let t = tok.trim_matches(|c| c == '[' || c == ']');
            match t.parse::<i64>() {
                Ok(n) => tok.replace(t, &(n - base).to_string()),
                Err(_) => tok.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The store index once the server has settled: etcd writes its member attributes and the
/// cluster version to the v2 store shortly after it starts.
fn settled_index(server: &Cluster) -> u64 {
    wait_for(
        "the cluster version to be decided",
        Duration::from_secs(10),
        || {
            let v = http_get(server.client_addr(0), "/version").ok()?;
            (!v.body.contains("not_decided")).then_some(())
        },
    );
    let index = || -> Option<u64> {
        http_get(server.client_addr(0), "/v2/keys/")
            .ok()?
            .header("x-etcd-index")?
            .parse()
            .ok()
    };
    let mut last = index().expect("X-Etcd-Index");
    wait_for("a stable store index", Duration::from_secs(10), || {
        thread::sleep(Duration::from_millis(200));
        let now = index()?;
        let stable = now == last;
        last = now;
        stable.then_some(now)
    })
}

#[test]
fn v2_keys_answers_as_etcd_does() {
    require("etcd");
    let etcd = Cluster::builder(Impl::Etcd).flags(["--enable-v2"]).start();
    let oxcd = Cluster::builder(Impl::Oxcd).flags(["--enable-v2"]).start();
    let mut sides = [&etcd, &oxcd].map(|server| Side {
        server,
        base: settled_index(server),
        foo: 0,
    });
    let mut mismatches = Vec::new();
    let mut oks = 0;
    for (i, r) in SEQUENCE.iter().enumerate() {
        let want = sides[0].send(r);
        let got = sides[1].send(r);
        oks += usize::from(want.status < 300);
        let (want, got) = (sides[0].normalize(&want), sides[1].normalize(&got));
        if want != got {
            mismatches.push(format!(
                "request {i}: {} {} {:?}\n  etcd: {want:?}\n  oxcd: {got:?}",
                r.method, r.target, r.form
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} v2 requests differ between etcd 3.4 and oxcd:\n{}",
        mismatches.len(),
        SEQUENCE.len(),
        mismatches.join("\n")
    );
    assert!(oks >= 25, "only {oks} requests succeeded against etcd");
    // And on its own terms: oxcd's first write is index 1 of an empty store.
    assert_eq!(sides[1].base, 0);
}

fn put(server: &Cluster, key: &str, form: &str) -> HttpResponse {
    http(
        server.client_addr(0),
        "PUT",
        &format!("/v2/keys/{key}"),
        Some(form),
    )
    .expect("PUT")
}

fn index_of(resp: &HttpResponse) -> u64 {
    resp.header("x-etcd-index")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no X-Etcd-Index: {resp:?}"))
}

#[test]
fn ttl_expires_and_wait_sees_the_expiry() {
    let oxcd = Cluster::builder(Impl::Oxcd).start();
    let set = put(&oxcd, "short", "value=v&ttl=1");
    assert_eq!(set.status, 201, "{set:?}");
    let node = &set.json()["node"];
    assert_eq!(node["ttl"], 1, "{node}");
    assert!(
        node["expiration"]
            .as_str()
            .is_some_and(|e| e.ends_with('Z')),
        "{node}"
    );
    let created = node["modifiedIndex"].as_u64().expect("index");
    // A TTL of 1 s: gone within a bounded poll, by an "expire" event in the history.
    let gone = wait_for("the key to expire", Duration::from_secs(5), || {
        let r = http_get(oxcd.client_addr(0), "/v2/keys/short").ok()?;
        (r.status == 404).then_some(r)
    });
    assert_eq!(gone.json()["errorCode"], 100);
    let ev = http_get(
        oxcd.client_addr(0),
        &format!("/v2/keys/short?wait=true&waitIndex={}", created + 1),
    )
    .expect("wait");
    let ev = ev.json();
    assert_eq!(ev["action"], "expire", "{ev}");
    assert_eq!(ev["prevNode"]["value"], "v", "{ev}");
    // A TTL removed by an update without one: the key stays.
    put(&oxcd, "kept", "value=v&ttl=1");
    let upd = put(&oxcd, "kept", "value=w&prevExist=true");
    assert_eq!(upd.json()["node"].get("ttl"), None, "{:?}", upd.body);
    assert_eq!(
        http_get(oxcd.client_addr(0), "/v2/keys/kept")
            .expect("get")
            .status,
        200
    );
}

#[test]
fn wait_long_poll_is_answered_by_the_next_matching_write() {
    let oxcd = Cluster::builder(Impl::Oxcd).start();
    let start = index_of(&put(&oxcd, "seed", "value=0"));
    let port = oxcd.client_addr(0);
    let waiter = thread::spawn(move || {
        http(
            port,
            "GET",
            &format!("/v2/keys/w?wait=true&waitIndex={}", start + 1),
            None,
        )
    });
    // Explicit waitIndex: the threads may reach the server before or after the writes.
    let dir_waiter = thread::spawn(move || {
        let target = format!(
            "/v2/keys/d?wait=true&recursive=true&waitIndex={}",
            start + 1
        );
        http(port, "GET", &target, None)
    });
    // Writes the waiters do not watch come first; only the matching ones answer them.
    put(&oxcd, "unrelated", "value=u");
    let written = put(&oxcd, "w", "value=hello");
    assert_eq!(written.status, 201);
    let got = waiter.join().expect("waiter thread").expect("long poll");
    assert_eq!(got.status, 200, "{got:?}");
    let ev = got.json();
    assert_eq!(ev["action"], "set", "{ev}");
    assert_eq!(ev["node"]["key"], "/w", "{ev}");
    assert_eq!(ev["node"]["value"], "hello", "{ev}");
    assert_eq!(ev["node"]["modifiedIndex"], start + 2, "{ev}");
    // As etcd: the header is the store index when the watch started (before or after the
    // writes above, as the thread raced them; the etcd comparison pins it exactly).
    assert!((start..=start + 2).contains(&index_of(&got)), "{got:?}");
    assert!(got.header("x-raft-index").is_some() && got.header("x-raft-term").is_some());

    // A recursive watch on a directory that does not exist yet wakes on a write below it.
    let deep = put(&oxcd, "d/e/f", "value=deep");
    let got = dir_waiter.join().expect("dir waiter").expect("long poll");
    let ev = got.json();
    assert_eq!(ev["node"]["key"], "/d/e/f", "{ev}");
    assert_eq!(
        ev["node"]["modifiedIndex"],
        deep.json()["node"]["modifiedIndex"],
        "{ev}"
    );

    // A waitIndex in the past is answered at once from the history.
    let past = http_get(port, &format!("/v2/keys/seed?wait=true&waitIndex={start}")).expect("wait");
    assert_eq!(past.json()["node"]["value"], "0");
}

#[test]
fn in_order_keys_sort_by_creation() {
    let oxcd = Cluster::builder(Impl::Oxcd).start();
    let mut names = Vec::new();
    for job in ["j1", "j2", "j3"] {
        let r = http(
            oxcd.client_addr(0),
            "POST",
            "/v2/keys/jobs",
            Some(&format!("value={job}")),
        )
        .expect("POST");
        assert_eq!(r.status, 201, "{r:?}");
        let node = &r.json()["node"];
        assert_eq!(
            node["key"],
            format!(
                "/jobs/{:020}",
                node["createdIndex"].as_u64().expect("index")
            )
        );
        names.push(node["key"].as_str().expect("key").to_string());
    }
    let list = http_get(oxcd.client_addr(0), "/v2/keys/jobs?sorted=true").expect("GET");
    let nodes = list.json()["node"]["nodes"].clone();
    let got: Vec<(String, String)> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["key"].as_str().unwrap_or("").into(),
                n["value"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = names
        .into_iter()
        .zip(["j1", "j2", "j3"].map(String::from))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn v2_can_be_disabled() {
    let oxcd = Cluster::builder(Impl::Oxcd)
        .flags(["--enable-v2=false"])
        .start();
    let r = put(&oxcd, "foo", "value=bar");
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "404 page not found\n"),
        "{r:?}"
    );
    assert_eq!(
        http_get(oxcd.client_addr(0), "/health")
            .expect("health")
            .status,
        200
    );
}
