//! Runtime membership driven by the real etcdctl 3.4: a cluster grows from 1 to 3 members and
//! shrinks back to 1 under a steady write load without losing an acknowledged write; the
//! strict reconfiguration checks (`--strict-reconfig-check`, on by default) refuse changes
//! that would lose quorum, with etcd's errors; learners are limited and promoted only once in
//! sync with the leader.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::{kv_client::KvClient, PutRequest};
use oxcd_testkit::{addr, require, wait_until, Cluster, Impl, Output};
use tonic::transport::Channel;

use super::member_id;

/// The real etcdctl against member `i`.
fn ctl(c: &Cluster, i: usize, args: &[&str]) -> Output {
    c.etcdctl(i, args, b"")
}

/// Runs a membership command until it is not refused for "unhealthy cluster" (a peer stream
/// must have been up for etcd's 5 s health interval), at most 30 s.
fn ctl_until_healthy(c: &Cluster, i: usize, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctl(c, i, args);
        if !out.stderr.contains("unhealthy cluster") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `Member 5f3ee4ab29b0ae56 added to cluster ...` -> the new member's ID.
fn added_id(out: &Output) -> u64 {
    let word = out
        .stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no member id in {out:?}"));
    u64::from_str_radix(word, 16).unwrap_or_else(|_| panic!("bad member id in {out:?}"))
}

/// The `member list` rows as (id, status, name, is_learner).
fn member_rows(c: &Cluster, i: usize) -> Vec<(String, String, String, String)> {
    let out = ctl(c, i, &["member", "list"]).ok();
    out.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            let get = |n: usize| f.get(n).copied().unwrap_or_default().to_string();
            (get(0), get(1), get(2), get(5))
        })
        .collect()
}

/// Waits until member `i` answers a serializable get of `key` with `value`.
fn wait_local_value(c: &Cluster, i: usize, key: &str, value: &str) {
    wait_until(
        &format!("{key}={value} on member {i}"),
        Duration::from_secs(30),
        || {
            let out = ctl(c, i, &["get", key, "--print-value-only", "--consistency=s"]);
            out.code == 0 && out.stdout.trim() == value
        },
    );
}

/// Writes `load/NNNNNN` through member 0 until stopped (at most 100,000 puts, 3 minutes);
/// returns what was acknowledged.
fn start_load(
    c: &Cluster,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<String, String>> {
    let endpoint = c.endpoint(0);
    tokio::spawn(async move {
        let mut acked = BTreeMap::new();
        let started = Instant::now();
        let mut kv: Option<KvClient<Channel>> = None;
        for n in 0..100_000u32 {
            if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(180) {
                break;
            }
            if kv.is_none() {
                kv = Channel::from_shared(endpoint.clone())
                    .ok()
                    .map(|c| c.timeout(Duration::from_secs(3)).connect_lazy())
                    .map(KvClient::new);
            }
            let Some(client) = kv.as_mut() else { break };
            let (key, value) = (format!("load/{n:06}"), format!("v{n}"));
            let put = PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            match client.put(put).await {
                Ok(_) => {
                    acked.insert(key, value);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        acked
    })
}

/// Every acknowledged write is on member `i` (serializable reads of its own state).
fn assert_has_all(c: &Cluster, i: usize, acked: &BTreeMap<String, String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctl(c, i, &["get", "load/", "--prefix", "--consistency=s"]);
        let lines: Vec<&str> = out.stdout.lines().collect();
        let have: BTreeMap<&str, &str> = lines
            .chunks(2)
            .filter_map(|kv| Some((*kv.first()?, *kv.get(1)?)))
            .collect();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|(k, v)| have.get(k.as_str()) != Some(&v.as_str()))
            .map(|(k, _)| k)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member {i} misses {} of {} acknowledged writes (first {:?}); log:\n{}",
            missing.len(),
            acked.len(),
            missing.first(),
            c.log(i)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_one_to_three_and_shrink_back_under_load() {
    require("etcdctl");
    // A token: the one member gets the --initial-cluster flags the others will list.
    let mut c = Cluster::builder(Impl::Oxcd)
        .names(&["m1"])
        .token("test-cluster")
        .start();
    c.wait_writable(0, Duration::from_secs(20)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&c, stop.clone());
    let progress = Arc::new(Mutex::new(Vec::new()));

    let mut ids = Vec::new();
    for name in ["m2", "m3"] {
        let i = c.add_member(name, ["--initial-cluster-state=existing"]);
        let url = c.peer_url(i);
        let out = ctl_until_healthy(
            &c,
            0,
            &["member", "add", name, &format!("--peer-urls={url}")],
        );
        let out = out.ok();
        assert!(
            out.stdout.contains(&format!("ETCD_NAME=\"{name}\"")),
            "{out:?}"
        );
        ids.push(added_id(&out));
        c.spawn(i);
        ctl(&c, 0, &["put", &format!("joined/{name}"), "yes"]).ok();
        wait_local_value(&c, i, &format!("joined/{name}"), "yes");
        progress
            .lock()
            .expect("lock")
            .push(format!("{name} joined"));
    }
    let rows = member_rows(&c, 2);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.1 == "started" && r.3 == "false"),
        "{rows:?}"
    );
    ctl(&c, 2, &["put", "three", "members"]).ok();
    for i in 0..3 {
        wait_local_value(&c, i, "three", "members");
    }

    // Shrink: remove m3, then m2; each removed member stops by itself.
    for (idx, id) in [(2usize, ids[1]), (1, ids[0])] {
        let out = ctl_until_healthy(&c, 0, &["member", "remove", &format!("{id:x}")]).ok();
        assert!(
            out.stdout
                .starts_with(&format!("Member {id:16x} removed from cluster")),
            "{out:?}"
        );
        // A removed member that kept running fails the wait.
        let code = c.wait_exit(idx, Duration::from_secs(20));
        assert_eq!(code, 0, "removed member {idx} exit code");
        assert!(c
            .log(idx)
            .contains("has been permanently removed from the cluster"));
    }
    assert_eq!(member_rows(&c, 0).len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("load task");
    assert!(acked.len() > 50, "too little load: {} writes", acked.len());
    assert_has_all(&c, 0, &acked);
    ctl(&c, 0, &["put", "alone", "again"]).ok();
}

#[test]
fn strict_reconfig_check_refuses_changes_that_lose_quorum() {
    require("etcdctl");
    let mut c = Cluster::builder(Impl::Oxcd)
        .members(3)
        .member_flags(1, ["--strict-reconfig-check=false"])
        .start();
    // Where the learners would run (l1 does, later; the others never start).
    let l = c.add_member("l1", ["--initial-cluster-state=existing"]);
    let spare = addr::alloc_n(3);
    let peer_urls = |a: &addr::Addr| format!("--peer-urls=http://{}", a.peer());
    wait_until("a writable cluster", Duration::from_secs(20), || {
        ctl(&c, 0, &["put", "a", "1"]).code == 0
    });
    // A learner add needs every voter connected for 5 s (etcd's health interval).
    let out = ctl_until_healthy(
        &c,
        0,
        &[
            "member",
            "add",
            "l1",
            "--learner",
            &format!("--peer-urls={}", c.peer_url(l)),
        ],
    )
    .ok();
    let learner = added_id(&out);
    let out = ctl(
        &c,
        0,
        &["member", "add", "l2", "--learner", &peer_urls(&spare[0])],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.last_stderr_line(),
        "Error: etcdserver: too many learner members in cluster"
    );
    // Promoting a learner that has never run: refused by the leader, through any member.
    for i in 0..3 {
        let out = ctl(&c, i, &["member", "promote", &format!("{learner:x}")]);
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(
            out.last_stderr_line(),
            "Error: etcdserver: can only promote a learner member which is in sync with leader",
            "through member {i}"
        );
    }
    // Once it runs and has caught up, the promotion goes through; then it leaves again.
    c.spawn(l);
    ctl(&c, 0, &["put", "learner", "caught-up"]).ok();
    wait_local_value(&c, l, "learner", "caught-up");
    // A learner serves serializable reads and status, nothing else (etcd's learner rules).
    let out = ctl(&c, l, &["put", "via", "learner"]);
    assert_eq!(
        out.last_stderr_line(),
        "Error: etcdserver: rpc not supported for learner"
    );
    let out = ctl(&c, l, &["get", "learner"]);
    assert_eq!(
        out.last_stderr_line(),
        "Error: etcdserver: rpc not supported for learner"
    );
    let status = ctl(&c, l, &["endpoint", "status", "-w", "json"])
        .ok()
        .stdout;
    assert!(status.contains("\"isLearner\":true"), "{status}");
    let out = ctl(&c, 1, &["member", "promote", &format!("{learner:x}")]).ok();
    assert!(
        out.stdout
            .starts_with(&format!("Member {learner:16x} promoted in cluster")),
        "{out:?}"
    );
    assert!(member_rows(&c, 0).iter().all(|r| r.3 == "false"));
    ctl_until_healthy(&c, 0, &["member", "remove", &format!("{learner:x}")]).ok();
    wait_until(
        "the removed member to stop",
        Duration::from_secs(20),
        || !c.is_running(l),
    );

    // Three voters, one killed: every change that needs it connected is refused...
    c.kill9(2);
    std::thread::sleep(Duration::from_secs(1));
    // If it was the leader, a proposal forwarded to it would be lost (as with etcd): wait
    // until the other two have a leader and take writes.
    wait_until("a writable cluster", Duration::from_secs(20), || {
        ctl(&c, 1, &["put", "b", "2"]).code == 0
    });
    let (m5, l5) = (peer_urls(&spare[1]), peer_urls(&spare[2]));
    let refused: [&[&str]; 3] = [
        &["member", "add", "m5", &m5],
        &["member", "add", "l5", "--learner", &l5],
        &["member", "remove", &format!("{:x}", member_id(&c, 1))],
    ];
    for args in refused {
        let out = ctl(&c, 0, args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert_eq!(
            out.last_stderr_line(),
            "Error: etcdserver: unhealthy cluster",
            "{args:?}"
        );
    }
    // ...but not by a member started with --strict-reconfig-check=false (a learner does not
    // change the quorum, so the cluster stays writable).
    let out = ctl(&c, 1, refused[1]).ok();
    assert!(out.stdout.contains("ETCD_NAME=\"l5\""), "{out:?}");
    // A member that is down is not part of the active quorum: removing it is allowed.
    let out = ctl(
        &c,
        0,
        &["member", "remove", &format!("{:x}", member_id(&c, 2))],
    )
    .ok();
    assert!(
        out.stdout
            .starts_with(&format!("Member {:16x} removed", member_id(&c, 2))),
        "{out:?}"
    );
    ctl(&c, 0, &["put", "still", "writable"]).ok();
    let rows = member_rows(&c, 1);
    assert_eq!(rows.len(), 3, "{rows:?}");
}
