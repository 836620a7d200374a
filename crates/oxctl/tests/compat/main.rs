//! oxctl against etcdctl 3.4 on a real etcd 3.4: the same commands must print the same bytes
//! (normalised only for timings and per-process client ids) and exit with the same code.
//!
//! `OXCTL_TEST_SERVER=target/release/oxcd cargo test -p oxctl` runs the same comparisons with
//! oxcd as the server (both tools still talk to the same server).

mod compare;

use std::time::Duration;

use compare::{flags, oxctl_bin, restart_fresh, run, run_for, same, server, setup, Printed};
use oxcd_testkit::Cluster;

/// A fresh one-member server, plain or with TLS client URLs requiring client certificates.
fn start(tls: bool) -> Cluster {
    oxcd_testkit::require("etcdctl");
    let b = server(1);
    if tls { b.client_cert_auth() } else { b }.start()
}

/// Commands that change the store, run in order. Each tool gets a fresh server from an empty
/// data dir so revisions, ids and terms line up.
fn kv_script() -> Vec<(Vec<&'static str>, &'static str)> {
    let mut s: Vec<(Vec<&str>, &str)> = vec![
        (vec!["put", "foo", "bar"], ""),
        (vec!["put", "foo2", ""], ""),
        (vec!["put", "bin", "\u{1}\"q\"\n"], ""),
        (vec!["put", "fromstdin"], "value from stdin"),
        (vec!["put", "foo", "baz", "--prev-kv"], ""),
        (vec!["-w", "json", "put", "foo", "qux", "--prev-kv"], ""),
        (vec!["-w", "fields", "put", "foo", "quux", "--prev-kv"], ""),
        (vec!["-w", "protobuf", "put", "p", "v"], ""),
        (vec!["put", "k", "v", "--ignore-value"], ""),
        (vec!["put", "foo", "--ignore-value"], ""),
        (vec!["put", "k", "v", "--lease=zz"], ""),
        (vec!["put"], ""),
        (vec!["-w", "table", "put", "t", "v"], ""),
    ];
    for w in ["simple", "json", "fields", "protobuf"] {
        s.push((vec!["-w", w, "get", "foo"], ""));
        s.push((vec!["-w", w, "get", "foo", "--prefix"], ""));
        s.push((vec!["-w", w, "get", "", "--from-key", "--limit=2"], ""));
        s.push((
            vec![
                "-w",
                w,
                "get",
                "a",
                "z",
                "--sort-by=VALUE",
                "--order=DESCEND",
            ],
            "",
        ));
        s.push((vec!["-w", w, "get", "foo", "--rev=2"], ""));
        s.push((vec!["-w", w, "get", "nothing"], ""));
        s.push((vec!["-w", w, "get", "bin"], ""));
    }
    s.extend([
        (vec!["get", "foo", "--prefix", "--keys-only"], ""),
        (vec!["get", "foo", "--print-value-only"], ""),
        (vec!["--hex", "get", "foo", "--prefix"], ""),
        (vec!["-w", "json", "get", "foo", "--print-value-only"], ""),
        (vec!["-w", "table", "get", "foo"], ""),
        (vec!["get"], ""),
        (vec!["get", "a", "b", "--prefix"], ""),
        (vec!["get", "a", "--prefix", "--from-key"], ""),
        (vec!["get", "a", "--consistency=x"], ""),
        (vec!["get", "a", "--sort-by=x"], ""),
        (vec!["get", "foo", "--consistency=s"], ""),
        (
            vec!["txn"],
            "mod(\"foo\") > \"0\"\n\nput t1 v\nget foo\ndel nope\n\nget foo\n\n",
        ),
        (
            vec!["-w", "json", "txn"],
            "value(\"foo\") = \"zz\"\n\nput t1 v\n\nget foo --prefix\nput x y --prev-kv\n\n",
        ),
        (
            vec!["-w", "fields", "txn"],
            "ver(\"foo\") != \"1\"\nc(\"foo\") = \"2\"\n\ndel t1 --prev-kv\n\nput t2 v\n\n",
        ),
        (
            vec!["txn", "-i"],
            "val(\"foo\") = \"quux\"\n\nput t3 v\n\n\n",
        ),
        (vec!["txn"], "bad\n"),
        (vec!["txn"], "mod(\"foo\") > \"0\"\n\n"),
        (vec!["txn"], "ver(\"foo\") > \"x\"\n\n\n"),
        (vec!["txn"], "mod(\"foo\") > \"0\"\n\nput\n\n\n"),
        (vec!["txn", "extra"], ""),
        (vec!["del", "nope"], ""),
        (vec!["del", "t", "--prev-kv"], ""),
        (vec!["-w", "json", "del", "foo2", "--prev-kv"], ""),
        (
            vec!["-w", "fields", "del", "t", "--prefix", "--prev-kv"],
            "",
        ),
        (vec!["del", "", "--from-key=false", "--prefix=false"], ""),
        (vec!["del"], ""),
        (vec!["compaction", "5"], ""),
        (vec!["-w", "json", "compaction", "6", "--physical"], ""),
        (vec!["get", "foo", "--rev=3"], ""),
        (vec!["compaction", "x"], ""),
        (vec!["compaction"], ""),
        (vec!["-w", "json", "get", "", "--prefix"], ""),
    ]);
    s
}

/// Runs a script with etcdctl on a fresh server, then with oxctl on another fresh one, and
/// compares step by step.
fn replay(script: &[(Vec<&str>, &str)]) {
    let etcd = start(false);
    let flags = flags(&etcd);
    let want: Vec<Printed> = script
        .iter()
        .map(|(a, i)| run("etcdctl", &flags, a, i))
        .collect();
    restart_fresh(&etcd);
    for ((args, stdin), want) in script.iter().zip(want) {
        let got = run(oxctl_bin(), &flags, args, stdin);
        assert_eq!(got, want, "oxctl and etcdctl differ for {args:?}");
    }
}

#[test]
fn kv_commands_print_the_same_as_etcdctl() {
    replay(&kv_script());
}

#[test]
fn auth_user_role_commands_print_the_same_as_etcdctl() {
    let root = "--user=root:rootpw";
    let mut s: Vec<(Vec<&str>, &str)> = vec![
        (vec!["user", "add", "root:rootpw"], ""),
        (vec!["user", "add", "u1", "--new-user-password=pw1"], ""),
        (vec!["user", "add", "u2", "--interactive=false"], "pw2\n"),
        (vec!["user", "add", ":x"], ""),
        (vec!["user", "add"], ""),
        (vec!["role", "add", "r1"], ""),
        (vec!["role", "add", "r1"], ""),
        (vec!["role", "grant-permission", "r1", "read", "a"], ""),
        (
            vec![
                "role",
                "grant-permission",
                "r1",
                "readwrite",
                "b",
                "--prefix",
            ],
            "",
        ),
        (
            vec!["role", "grant-permission", "r1", "write", "c", "e"],
            "",
        ),
        (
            vec!["role", "grant-permission", "r1", "write", "z", "--from-key"],
            "",
        ),
        (vec!["role", "grant-permission", "r1", "bad", "k"], ""),
        (vec!["role", "grant-permission", "r1"], ""),
        (vec!["user", "grant-role", "u1", "r1"], ""),
        (vec!["user", "grant-role", "u1", "nope"], ""),
        (vec!["user", "get", "u1", "--detail"], ""),
        (vec!["user", "get", "nope"], ""),
        (vec!["role", "get", "nope"], ""),
        (vec!["auth", "enable"], ""),
        (vec![root, "put", "a", "1"], ""),
        (vec!["--user=root:wrong", "get", "a"], ""),
        (vec!["--user=u1", "--password=pw1", "get", "a"], ""),
        (vec!["--user=u1:pw1", "put", "a", "2"], ""),
        (vec!["--user=u1:pw1", "put", "b/x", "2"], ""),
        (vec!["--user=u1:pw1", "-w", "json", "get", "b/x"], ""),
        (vec!["get", "a"], ""),
        (vec![root, "endpoint", "health"], ""),
        (vec![root, "role", "revoke-permission", "r1", "a"], ""),
        (vec![root, "role", "revoke-permission", "r1", "c", "e"], ""),
        (
            vec![root, "role", "revoke-permission", "r1", "z", "--from-key"],
            "",
        ),
        (vec![root, "role", "revoke-permission", "r1", "zz"], ""),
        (vec![root, "user", "revoke-role", "u1", "r1"], ""),
        (
            vec![root, "user", "passwd", "u2", "--interactive=false"],
            "new\n",
        ),
        (vec![root, "user", "delete", "u2"], ""),
        (vec![root, "role", "delete", "r1"], ""),
        (vec![root, "auth", "disable"], ""),
    ];
    for w in ["simple", "json", "fields", "protobuf"] {
        s.push((vec!["-w", w, "role", "list"], ""));
        s.push((vec!["-w", w, "user", "list"], ""));
        s.push((vec!["-w", w, "user", "get", "root"], ""));
        s.push((vec!["-w", w, "role", "get", "root"], ""));
    }
    replay(&s);
}

#[test]
fn cluster_and_maintenance_print_the_same_as_etcdctl() {
    let etcd = start(false);
    let f = flags(&etcd);
    setup(&f, &["put", "a", "1"]);
    for w in ["simple", "json", "fields", "table", "protobuf"] {
        same(&f, &["-w", w, "member", "list"], "");
        same(&f, &["-w", w, "endpoint", "status"], "");
        same(&f, &["-w", w, "endpoint", "status", "--cluster"], "");
        same(&f, &["-w", w, "endpoint", "hashkv"], "");
        same(&f, &["-w", w, "endpoint", "health"], "");
        same(&f, &["-w", w, "lease", "list"], "");
        same(&f, &["-w", w, "lease", "timetolive", "1234"], "");
        same(&f, &["-w", w, "lease", "revoke", "1234"], "");
        same(&f, &["-w", w, "lease", "keep-alive", "--once", "1234"], "");
    }
    same(&f, &["-w", "protobuf", "member", "list"], "");
    same(&f, &["endpoint", "health", "--cluster"], "");
    same(&f, &["alarm", "list"], "");
    same(&f, &["-w", "json", "alarm", "list"], "");
    same(&f, &["alarm", "disarm"], "");
    same(&f, &["defrag"], "");
    same(&f, &["defrag", "--cluster"], "");
    same(&f, &["move-leader", "1"], "");
    same(&f, &["move-leader"], "");
    same(&f, &["version"], "");
    let snap = etcd.dir().join("snap.db").display().to_string();
    same(&f, &["snapshot", "save", &snap], "");
    for w in ["simple", "json", "fields", "table"] {
        same(&f, &["-w", w, "snapshot", "status", &snap], "");
    }
    same(&f, &["snapshot", "status", "/nonexistent/snap.db"], "");
    same(&f, &["snapshot", "save"], "");
    same(&f, &["lease", "grant"], "");
    same(&f, &["lease", "grant", "x"], "");
    same(&f, &["lease", "revoke", "zz"], "");
    same(&f, &["member", "remove", "zz"], "");
    same(&f, &["member", "add", "x"], "");
    // A learner that never starts: the cluster keeps its quorum. Its address is reserved,
    // so that the leader's attempts to reach it find nobody.
    let learner = oxcd_testkit::addr::alloc();
    let (url, moved) = (
        format!("--peer-urls=http://{}", learner.with_port(9)),
        format!("--peer-urls=http://{}", learner.with_port(10)),
    );
    setup(&f, &["member", "add", "l1", "--learner", &url]);
    let list = run("etcdctl", &f, &["member", "list"], "");
    let id = list
        .stdout
        .lines()
        .find(|l| l.contains("unstarted"))
        .and_then(|l| l.split(", ").next())
        .expect("learner id")
        .to_string();
    for w in ["simple", "json", "fields", "table"] {
        same(&f, &["-w", w, "member", "list"], "");
    }
    same(&f, &["member", "promote", &id], "");
    same(&f, &["member", "update", &id, &moved], "");
    same(&f, &["-w", "json", "member", "update", &id, &moved], "");
    let removed = run(oxctl_bin(), &f, &["member", "remove", &id], "");
    assert!(
        removed
            .stdout
            .starts_with(&format!("Member {id:>16} removed from cluster ")),
        "{removed:?}"
    );
    same(&f, &["member", "remove", &id], "");
}

#[test]
fn leases_print_the_same_as_etcdctl() {
    let etcd = start(false);
    let f = flags(&etcd);
    let grant = run("etcdctl", &f, &["lease", "grant", "600"], "");
    let id = grant
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    setup(&f, &["put", "lk", "v", &format!("--lease={id}")]);
    for w in ["simple", "json", "fields", "protobuf"] {
        same(&f, &["-w", w, "lease", "keep-alive", "--once", &id], "");
        same(&f, &["-w", w, "lease", "list"], "");
    }
    // The remaining TTL counts down in seconds: a second may tick between the two runs, so
    // take the best of three tries, each right after a keep-alive.
    let ttl = ["lease", "timetolive", id.as_str(), "--keys"];
    let agree = (0..3).any(|_| {
        run("etcdctl", &f, &["lease", "keep-alive", "--once", &id], "");
        run("etcdctl", &f, &ttl, "") == run(oxctl_bin(), &f, &ttl, "")
    });
    assert!(
        agree,
        "lease timetolive differs: {:?} vs {:?}",
        run("etcdctl", &f, &ttl, ""),
        run(oxctl_bin(), &f, &ttl, "")
    );
    let got = run(oxctl_bin(), &f, &["lease", "revoke", &id], "");
    assert_eq!(got.stdout, format!("lease {id} revoked\n"));
    same(&f, &["lease", "timetolive", &id], "");
    same(&f, &["get", "lk"], "");
}

#[test]
fn tls_endpoint_prints_the_same_as_etcdctl() {
    let etcd = start(true);
    let f = flags(&etcd);
    setup(&f, &["put", "a", "1"]);
    same(&f, &["get", "a", "-w", "json"], "");
    same(&f, &["-w", "table", "endpoint", "status"], "");
    same(&f, &["-w", "table", "member", "list"], "");
    same(&f, &["endpoint", "health"], "");
    let https: Vec<String> = f
        .iter()
        .map(|s| s.replace("--endpoints=", "--endpoints=https://"))
        .collect();
    same(&https, &["get", "a"], "");
    // Client certificate without a CA, server certificate not verified.
    let skip: Vec<String> = f
        .iter()
        .filter(|x| !x.starts_with("--cacert"))
        .cloned()
        .chain(["--insecure-skip-tls-verify".to_string()])
        .collect();
    same(&skip, &["get", "a"], "");
    // Without client certificates the server refuses the handshake: both time out the same way.
    let no_cert = vec![
        format!("--endpoints={}", etcd.host_port(0)),
        format!("--cacert={}", etcd.pki().expect("TLS").ca.display()),
        "--command-timeout=1s".to_string(),
    ];
    same(&no_cert, &["get", "a"], "");
}

#[test]
fn errors_print_the_same_as_etcdctl() {
    let etcd = start(false);
    let f = flags(&etcd);
    for (k, v) in [("a", "1"), ("a", "2"), ("a", "3")] {
        setup(&f, &["put", k, v]);
    }
    setup(&f, &["compaction", "3"]);
    same(&f, &["get", "a", "--rev=2"], "");
    same(&f, &["get", "a", "--rev=99"], "");
    same(&f, &["watch", "a", "--rev=2"], "");
    same(&f, &["-w", "json", "watch", "a", "--rev=2"], "");
    same(&f, &["watch"], "");
    same(&f, &["watch", "-i"], "bogus\nwatch\n");
    same(&f, &["bogus"], "");
    // --user without a password: the prompt (stdout), stty turning echo off and on (which
    // complains on a pipe, as it does for etcdctl), then the server's answer.
    same(&f, &["--user", "root", "get", "a"], "secret\n");
    let unreachable = vec![
        "--endpoints=127.0.0.1:1".to_string(),
        "--dial-timeout=1s".into(),
    ];
    same(&unreachable, &["--user", "root:pw", "get", "a"], "");
    // cobra also prints the command's usage on stdout; oxctl prints its own help there.
    for args in [vec!["get", "k", "--bogus"], vec!["lease", "bogus"], vec![]] {
        let want = run("etcdctl", &f, &args, "");
        let got = run(oxctl_bin(), &f, &args, "");
        assert_eq!(
            (&got.stderr, got.code),
            (&want.stderr, want.code),
            "{args:?}"
        );
    }
    same(&f, &["-w", "yaml", "get", "a"], "");
    let ep = etcd.host_port(0);
    let env = [
        ("ETCDCTL_ENDPOINTS", ep.as_str()),
        ("ETCDCTL_WRITE_OUT", "json"),
    ];
    compare::same_env(&[], &env, &["get", "a"]);
    compare::same_env(
        &[],
        &[("ETCDCTL_ENDPOINTS", ep.as_str()), ("ETCDCTL_HEX", "true")],
        &["get", "a"],
    );
    compare::same_env(
        &[],
        &[
            ("ETCDCTL_ENDPOINTS", ep.as_str()),
            ("ETCDCTL_COMMAND_TIMEOUT", "3s"),
        ],
        &["get", "a", "--rev=1"],
    );
    // A flag and its variable together: etcdctl refuses (the line starts with a timestamp).
    let both = [("ETCDCTL_ENDPOINTS", "127.0.0.1:1")];
    let want = compare::run_env("etcdctl", &f, &both, &["get", "a"], "");
    let got = compare::run_env(oxctl_bin(), &f, &both, &["get", "a"], "");
    let tail = |p: &Printed| {
        (
            p.stderr.split_once(" C | ").map(|x| x.1.to_string()),
            p.code,
        )
    };
    assert_eq!(tail(&got), tail(&want));
    let down = vec![
        "--endpoints=127.0.0.1:1".to_string(),
        "--command-timeout=1s".to_string(),
        "--dial-timeout=500ms".to_string(),
    ];
    same(&down, &["get", "a"], "");
    same(&down, &["put", "a", "b"], "");
}

#[test]
fn watch_prints_the_same_as_etcdctl() {
    let etcd = start(false);
    let f = flags(&etcd);
    setup(&f, &["put", "w/1", "a"]);
    setup(&f, &["put", "w/2", "b"]);
    setup(&f, &["put", "w/1", "c"]);
    setup(&f, &["del", "w/2"]);
    let dur = Duration::from_millis(2500);
    for w in ["simple", "json", "fields"] {
        for args in [
            vec!["watch", "w/", "--prefix", "--rev=1"],
            vec!["watch", "w/1", "--rev=2", "--prev-kv"],
            vec!["watch", "w/1", "w/3", "--rev=1"],
        ] {
            let mut full = vec!["-w", w];
            full.extend(args);
            let want = run_for("etcdctl", &f, &full, dur);
            let got = run_for(oxctl_bin(), &f, &full, dur);
            assert_eq!(got, want, "oxctl and etcdctl differ for {full:?}");
        }
    }
}

#[test]
fn lock_elect_and_make_mirror_work_like_etcdctl() {
    let etcd = start(false);
    let f = flags(&etcd);
    // The lock key holds the session's lease id, so compare the shape: `name/<hex lease id>`.
    let shape = |p: &Printed| {
        let out = p.stdout.trim();
        let (name, id) = out.split_once('/').unwrap_or_default();
        (
            name.to_string(),
            (1..=16).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit()),
            p.code,
        )
    };
    let exec = ["lock", "L", "--", "sh", "-c", "echo $ETCD_LOCK_KEY"];
    let want = run("etcdctl", &f, &exec, "");
    let got = run(oxctl_bin(), &f, &exec, "");
    assert_eq!(shape(&got), shape(&want), "lock exec: {got:?} vs {want:?}");
    assert_eq!(shape(&got), ("L".to_string(), true, Some(0)));
    same(&f, &["lock"], "");
    same(&f, &["elect", "e"], "");
    same(&f, &["elect", "-l", "e", "v"], "");
    same(&f, &["make-mirror"], "");
    // make-mirror copies what is there, then follows changes, under another prefix.
    setup(&f, &["put", "src/a", "1"]);
    let dest = etcd.host_port(0);
    let mirror = [
        "make-mirror",
        "--prefix=src/",
        "--dest-prefix=dst/",
        dest.as_str(),
    ];
    let handle = std::thread::spawn({
        let f = f.clone();
        let mirror: Vec<String> = mirror.iter().map(|s| s.to_string()).collect();
        move || {
            let args: Vec<&str> = mirror.iter().map(String::as_str).collect();
            run_for(oxctl_bin(), &f, &args, Duration::from_secs(3))
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    setup(&f, &["put", "src/b", "2"]);
    let _ = handle.join();
    let copied = run("etcdctl", &f, &["get", "dst/", "--prefix"], "");
    assert_eq!(copied.stdout, "dst/a\n1\ndst/b\n2\n");
}

#[test]
fn three_member_tls_cluster_prints_the_same_as_etcdctl() {
    oxcd_testkit::require("etcdctl");
    let cluster = server(3).client_cert_auth().start();
    let f = flags(&cluster);
    setup(&f, &["put", "a", "1"]);
    // etcdctl picks any of several endpoints for a request (so the header's member id varies):
    // compare headers through one endpoint, and every member through --cluster.
    let one: Vec<String> = f
        .iter()
        .map(|x| match x.split_once(',') {
            Some((first, _)) if x.starts_with("--endpoints=") => first.to_string(),
            _ => x.clone(),
        })
        .collect();
    for w in ["simple", "json", "fields", "table"] {
        same(&one, &["-w", w, "member", "list"], "");
        same(&f, &["-w", w, "endpoint", "hashkv", "--cluster"], "");
        same(&one, &["-w", w, "get", "a"], "");
    }
    // Raft indexes move between two calls on a busy cluster; compare the stable columns.
    let stable = |p: &Printed| -> Vec<String> {
        p.stdout
            .lines()
            .map(|l| l.split(", ").take(6).collect::<Vec<_>>().join(", "))
            .collect()
    };
    let want = run("etcdctl", &f, &["endpoint", "status", "--cluster"], "");
    let got = run(oxctl_bin(), &f, &["endpoint", "status", "--cluster"], "");
    assert_eq!(stable(&got), stable(&want));
    // Health lines come in the order the members answer.
    for args in [
        vec!["endpoint", "health"],
        vec!["endpoint", "health", "--cluster"],
    ] {
        let want = run("etcdctl", &f, &args, "");
        let got = run(oxctl_bin(), &f, &args, "");
        assert_eq!(
            compare::sorted_lines(&got.stderr),
            compare::sorted_lines(&want.stderr),
            "{args:?}"
        );
        assert_eq!((got.stdout, got.code), (want.stdout, want.code));
    }
    // move-leader: from the current leader to another member, in etcdctl's words.
    let status = run("etcdctl", &f, &["-w", "json", "endpoint", "status"], "");
    let leader = status
        .stdout
        .split("\"leader\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("leader id")
        .to_string();
    let members = run("etcdctl", &f, &["member", "list"], "");
    let target = members
        .stdout
        .lines()
        .map(|l| l.split(", ").next().unwrap_or_default().to_string())
        .find(|id| u64::from_str_radix(id, 16).ok().map(|n| n.to_string()) != Some(leader.clone()))
        .expect("a follower");
    let moved = run(oxctl_bin(), &f, &["move-leader", &target], "");
    let leader_hex = format!("{:x}", leader.parse::<u64>().expect("numeric leader id"));
    assert_eq!(
        moved.stdout,
        format!("Leadership transferred from {leader_hex} to {target}\n"),
        "{moved:?}"
    );
    same(&f, &["move-leader", "zz"], "");
}

/// `snapshot restore` is offline: etcdctl restores a real etcd snapshot, oxctl an oxcd one,
/// each in its own directory holding `snap.db`; with the same flags both must print the same
/// (the member IDs, cluster ID and paths in the log lines included) and fail the same way.
#[test]
fn snapshot_restore_prints_the_same_as_etcdctl() {
    // Always the real etcd: etcdctl restores etcd's snapshot.
    oxcd_testkit::require("etcdctl");
    let etcd = Cluster::builder(oxcd_testkit::Impl::Etcd)
        .names(&["t1"])
        .token("oxctl-test")
        .start();
    setup(&flags(&etcd), &["put", "a", "1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (e_dir, o_dir) = (dir.path().join("etcd"), dir.path().join("oxcd"));
    for d in [&e_dir, &o_dir] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let e_snap = e_dir.join("snap.db").display().to_string();
    setup(&flags(&etcd), &["snapshot", "save", &e_snap]);
    drop(etcd);
    let body = {
        let store = oxcd_storage::Store::open(&dir.path().join("src.db")).expect("store");
        let mut b = store.batch().expect("batch");
        {
            let mut t = b.txn();
            t.put(b"a", b"1".to_vec(), 0).expect("put");
            t.end();
        }
        b.commit(true).expect("commit");
        store.snapshot().expect("snapshot").0
    };
    let snap = oxcd_snapshot::encode_snapshot(&body);
    std::fs::write(o_dir.join("snap.db"), snap).expect("write snapshot");

    let cluster = "n1=http://127.0.0.1:2380,n2=http://127.0.0.2:2380";
    let cases: Vec<Vec<&str>> = vec![
        vec!["snapshot", "restore"],
        vec!["snapshot", "restore", "snap.db", "other.db"],
        vec!["snapshot", "restore", "nope.db", "--data-dir", "x1"],
        vec![
            "snapshot",
            "restore",
            "snap.db",
            "--name",
            "n3",
            "--initial-cluster",
            cluster,
        ],
        vec![
            "snapshot",
            "restore",
            "snap.db",
            "--name",
            "n1",
            "--initial-cluster",
            cluster,
            "--initial-advertise-peer-urls",
            "http://127.0.0.9:2380",
        ],
        vec![
            "snapshot",
            "restore",
            "snap.db",
            "--data-dir",
            "new",
            "--name",
            "n1",
            "--initial-cluster",
            cluster,
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster-token",
            "tok",
        ],
        vec!["snapshot", "restore", "snap.db", "--data-dir", "new"],
        vec!["snapshot", "restore", "snap.db"],
        vec![
            "snapshot",
            "restore",
            "snap.db",
            "--data-dir",
            "w",
            "--wal-dir",
            "w-wal",
        ],
    ];
    for args in &cases {
        let want = compare::run_in("etcdctl", &e_dir, args);
        let got = compare::run_in(oxctl_bin(), &o_dir, args);
        assert_eq!(got, want, "oxctl and etcdctl differ for {args:?}");
    }
    for d in ["new", "default.etcd", "w"] {
        assert!(o_dir.join(d).join("member").is_dir(), "oxctl made no {d}");
    }
    assert!(std::fs::read_dir(o_dir.join("w-wal"))
        .expect("wal dir")
        .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))));
}
