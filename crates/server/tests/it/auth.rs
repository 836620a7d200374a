//! etcd v3 auth, judged against the real etcd 3.4: the same etcdctl commands go to a real
//! `etcd` and to `oxcd` (single members, each on its own loopback address), and what etcdctl prints
//! (stdout, stderr, exit code) must be the same. Only etcdctl's JSON log lines, the client
//! URL and lease IDs (random on both sides) are normalised. Processes are killed on drop.

use oxcd_api::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, HashKvRequest, RangeRequest,
};
use oxcd_testkit::{require, Cluster, Impl};
use std::time::Duration;

/// One single-member server, etcd or oxcd, started with the same flags.
struct Member {
    c: Cluster,
    /// Lease IDs this member granted, replaced by `<lease>` in what etcdctl prints.
    leases: Vec<String>,
}

impl Member {
    fn start(kind: Impl) -> Member {
        Member {
            c: Cluster::builder(kind)
                .names(&["t1"])
                .token("auth-test")
                .start(),
            leases: Vec::new(),
        }
    }

    /// Runs etcdctl against this member; `{lease}` in an argument is its last lease ID.
    fn etcdctl(&self, args: &[&str], stdin: &str) -> Printed {
        let lease = self.leases.last().cloned().unwrap_or_default();
        let args: Vec<String> = args.iter().map(|a| a.replace("{lease}", &lease)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.c.etcdctl(0, &args, stdin.as_bytes());
        Printed {
            stdout: self.normalise(&out.stdout),
            stderr: self.normalise(&out.stderr),
            code: out.code,
        }
    }

    fn normalise(&self, text: &str) -> String {
        let mut text: String = text
            .lines()
            .filter(|l| !l.starts_with("{\"level\""))
            .map(|l| format!("{l}\n"))
            .collect();
        text = text.replace(&self.c.host_port(0), "ENDPOINT");
        for id in &self.leases {
            text = text.replace(id.as_str(), "<lease>");
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Printed {
    stdout: String,
    stderr: String,
    code: i32,
}

/// A real etcd and an oxcd, driven in lockstep.
struct Pair {
    etcd: Member,
    oxcd: Member,
}

impl Pair {
    fn start() -> Pair {
        require("etcd");
        require("etcdctl");
        Pair {
            etcd: Member::start(Impl::Etcd),
            oxcd: Member::start(Impl::Oxcd),
        }
    }

    /// Runs one etcdctl command on both; they must print the same. Returns what they printed.
    fn same(&self, args: &[&str], stdin: &str) -> Printed {
        let want = self.etcd.etcdctl(args, stdin);
        let got = self.oxcd.etcdctl(args, stdin);
        assert_eq!(
            got, want,
            "etcdctl {args:?}: oxcd (left) and etcd (right) differ"
        );
        got
    }

    /// [`Pair::same`], and the output contains `expect` (so two broken servers cannot pass).
    fn expect(&self, args: &[&str], stdin: &str, expect: &str) -> Printed {
        let p = self.same(args, stdin);
        assert!(
            p.stdout.contains(expect) || p.stderr.contains(expect),
            "etcdctl {args:?}: expected {expect:?} in {p:?}"
        );
        p
    }

    /// Grants a lease on both; later `{lease}` arguments name each member's own lease.
    fn grant_lease(&mut self, user: &str) {
        for m in [&mut self.etcd, &mut self.oxcd] {
            let p = m.etcdctl(&["--user", user, "lease", "grant", "100"], "");
            let id = p
                .stdout
                .split_whitespace()
                .nth(1)
                .unwrap_or_else(|| panic!("lease grant printed {p:?}"))
                .to_string();
            m.leases.push(id);
        }
    }
}

const ROOT: &str = "root:rootpw";
const ALICE: &str = "alice:apw";

#[test]
fn etcdctl_auth_matches_etcd() {
    let mut s = Pair::start();
    // Enabling without root fails; users and roles can be managed before enabling.
    s.expect(&["auth", "enable"], "", "root user does not exist");
    s.expect(&["user", "add", ROOT], "", "User root created");
    s.expect(&["user", "add", "root:x"], "", "user name already exists");
    s.expect(
        &["user", "grant-role", "root", "nosuch"],
        "",
        "role name not found",
    );
    s.expect(&["user", "get", "nosuch"], "", "user name not found");
    s.expect(&["role", "add", "root"], "", "Role root created");
    s.expect(&["user", "grant-role", "root", "root"], "", "is granted");
    s.expect(&["user", "list"], "", "root");
    s.expect(&["auth", "enable"], "", "Authentication Enabled");
    s.expect(
        &["auth", "enable", "--user", ROOT],
        "",
        "Authentication Enabled",
    );

    // Nobody gets in without a user; a wrong password or unknown user is refused.
    s.expect(&["get", "foo"], "", "Error: etcdserver: user name is empty");
    s.expect(&["put", "foo", "bar"], "", "user name is empty");
    s.expect(&["user", "list"], "", "user name is empty");
    s.expect(
        &["--user", "root:wrong", "get", "foo"],
        "",
        "invalid user ID or password",
    );
    s.expect(
        &["--user", "nobody:pw", "get", "foo"],
        "",
        "invalid user ID or password",
    );
    s.expect(&["--user", ROOT, "put", "/app/a", "1"], "", "OK");
    s.expect(&["--user", ROOT, "put", "/other", "2"], "", "OK");
    s.expect(&["--user", ROOT, "get", "/app/a"], "", "/app/a");

    // A user with a role that reads a prefix.
    s.expect(
        &["--user", ROOT, "user", "add", ALICE],
        "",
        "User alice created",
    );
    s.expect(
        &["--user", ROOT, "role", "add", "reader"],
        "",
        "Role reader created",
    );
    s.expect(
        &["--user", ROOT, "role", "add", "reader"],
        "",
        "role name already exists",
    );
    let grants: [&[&str]; 4] = [
        &["read", "/app/", "--prefix"],
        &["write", "/app/w"],
        &["readwrite", "/rw", "/rx"],
        &["read", "/z", "--from-key"],
    ];
    for g in grants {
        let mut args = vec!["--user", ROOT, "role", "grant-permission", "reader"];
        args.extend_from_slice(g);
        s.expect(&args, "", "Role reader updated");
    }
    s.expect(
        &[
            "--user",
            ROOT,
            "role",
            "grant-permission",
            "nosuch",
            "read",
            "/k",
        ],
        "",
        "role name not found",
    );
    s.expect(
        &["--user", ROOT, "role", "get", "reader"],
        "",
        "[/app/, /app0)",
    );
    s.expect(
        &["--user", ROOT, "user", "grant-role", "alice", "reader"],
        "",
        "granted",
    );
    s.expect(
        &["--user", ROOT, "user", "get", "alice", "--detail"],
        "",
        "KV Read:",
    );
    s.expect(&["--user", ALICE, "get", "/app/", "--prefix"], "", "/app/a");
    s.expect(
        &["--user", ALICE, "put", "/app/a", "2"],
        "",
        "permission denied",
    );
    s.expect(&["--user", ALICE, "put", "/app/w", "3"], "", "OK");
    s.expect(
        &["--user", "alice", "--password", "apw", "get", "/other"],
        "",
        "permission denied",
    );
    s.expect(&["--user", ALICE, "get", "/zz", "--from-key"], "", "");
    s.expect(
        &["--user", ALICE, "get", "/", "--prefix"],
        "",
        "permission denied",
    );
    s.expect(&["--user", ALICE, "del", "/app/a"], "", "permission denied");
    s.expect(&["--user", ALICE, "del", "/rw", "--prefix"], "", "0");
    s.expect(
        &["--user", ALICE, "txn"],
        "value(\"/app/a\") = \"1\"\n\nput /rw/t 1\n\nget /z\n\n",
        "SUCCESS",
    );
    s.expect(
        &["--user", ALICE, "txn"],
        "value(\"/app/a\") = \"1\"\n\nput /rw/t 1\n\nput /other 3\n\n",
        "permission denied",
    );
    s.expect(&["--user", ALICE, "user", "list"], "", "permission denied");
    s.expect(
        &["--user", ALICE, "user", "get", "alice"],
        "",
        "Roles: reader",
    );
    s.expect(
        &["--user", ALICE, "role", "get", "reader"],
        "",
        "Role reader",
    );
    s.expect(
        &["--user", ALICE, "role", "get", "root"],
        "",
        "permission denied",
    );
    s.expect(
        &["--user", ALICE, "role", "add", "x"],
        "",
        "permission denied",
    );
    s.expect(
        &["--user", ALICE, "watch", "/other"],
        "",
        "permission denied",
    );
    s.expect(&["watch", "/app/a"], "", "user name is empty");

    // Leases: anyone may grant; revoking needs write access to the keys attached.
    s.grant_lease(ROOT);
    s.expect(
        &["--user", ROOT, "put", "/other/l", "v", "--lease={lease}"],
        "",
        "OK",
    );
    s.expect(
        &["--user", ALICE, "lease", "revoke", "{lease}"],
        "",
        "permission denied",
    );
    s.expect(
        &["--user", ROOT, "lease", "revoke", "{lease}"],
        "",
        "revoked",
    );

    // Maintenance and membership changes are root's.
    s.expect(&["--user", ALICE, "defrag"], "", "auth: permission denied");
    s.expect(&["endpoint", "hashkv"], "", "auth: user name is empty");
    s.expect(&["--user", ROOT, "defrag"], "", "Finished defragmenting");
    let add = ["member", "add", "m2", "--peer-urls=http://127.0.0.1:1"];
    s.expect(&add, "", "user name is empty");
    s.expect(
        &[&["--user", ALICE][..], &add].concat(),
        "",
        "permission denied",
    );
    s.expect(
        &["--user", ALICE, "compact", "3"],
        "",
        "compacted revision 3",
    );

    // Revoking roles and permissions, changing a password.
    s.expect(
        &[
            "--user",
            ROOT,
            "role",
            "revoke-permission",
            "reader",
            "/app/",
            "--prefix",
        ],
        "",
        "is revoked",
    );
    s.expect(
        &[
            "--user",
            ROOT,
            "role",
            "revoke-permission",
            "reader",
            "/app/",
            "--prefix",
        ],
        "",
        "permission is not granted",
    );
    s.expect(&["--user", ALICE, "get", "/app/a"], "", "permission denied");
    s.expect(&["--user", ALICE, "get", "/rw/t"], "", "/rw/t");
    s.expect(
        &["--user", ROOT, "user", "revoke-role", "alice", "reader"],
        "",
        "revoked",
    );
    s.expect(
        &["--user", ROOT, "user", "revoke-role", "alice", "reader"],
        "",
        "role is not granted",
    );
    s.expect(&["--user", ALICE, "get", "/rw/t"], "", "permission denied");
    s.expect(
        &[
            "--user",
            ROOT,
            "user",
            "passwd",
            "alice",
            "--interactive=false",
        ],
        "newpw\n",
        "Password updated",
    );
    s.expect(
        &["--user", ALICE, "get", "/rw/t"],
        "",
        "invalid user ID or password",
    );
    s.expect(
        &["--user", "alice:newpw", "user", "get", "alice"],
        "",
        "User: alice",
    );

    // The root user and role stay while auth is on.
    s.expect(
        &["--user", ROOT, "user", "delete", "root"],
        "",
        "invalid auth management",
    );
    s.expect(
        &["--user", ROOT, "role", "delete", "root"],
        "",
        "invalid auth management",
    );
    s.expect(
        &["--user", ROOT, "user", "revoke-role", "root", "root"],
        "",
        "invalid auth management",
    );
    s.expect(
        &["--user", ROOT, "role", "delete", "reader"],
        "",
        "Role reader deleted",
    );
    s.expect(
        &["--user", ROOT, "role", "get", "reader"],
        "",
        "role name not found",
    );
    s.expect(
        &["--user", ROOT, "user", "delete", "alice"],
        "",
        "User alice deleted",
    );
    s.expect(
        &["--user", ROOT, "user", "delete", "alice"],
        "",
        "user name not found",
    );
    s.expect(&["--user", ROOT, "role", "list"], "", "root");

    // Disabling needs root too; afterwards anyone may read, whatever password they give.
    s.expect(&["auth", "disable"], "", "user name is empty");
    s.expect(
        &["--user", ROOT, "auth", "disable"],
        "",
        "Authentication Disabled",
    );
    s.expect(&["get", "/other"], "", "/other");
    s.expect(&["--user", "root:bad", "get", "/app/a"], "", "/app/a");
    s.expect(&["user", "list"], "", "root");
}

/// `r` with a token no server issued; its index (1) is applied on both, so neither waits.
fn with_unknown_token<T>(r: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(r);
    let token = "NotIssuedByAnyone.1".parse().expect("metadata");
    req.metadata_mut().insert("token", token);
    req
}

/// A token the server never issued: `etcdserver: invalid auth token` (Unauthenticated) from
/// KV calls, `auth: invalid auth token` (Unknown) from maintenance calls, as etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_is_refused_as_etcd() {
    let s = tokio::task::spawn_blocking(|| {
        let s = Pair::start();
        s.expect(&["user", "add", ROOT], "", "created");
        s.expect(&["auth", "enable"], "", "Authentication Enabled");
        s
    })
    .await
    .expect("setup");
    let mut seen = Vec::new();
    for m in [&s.etcd, &s.oxcd] {
        let ch = tonic::transport::Channel::from_shared(m.c.endpoint(0))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connect");
        let range = RangeRequest {
            key: b"foo".to_vec(),
            ..Default::default()
        };
        let kv_err = KvClient::new(ch.clone())
            .range(with_unknown_token(range))
            .await
            .expect_err("an unknown token must be refused");
        let hash_err = MaintenanceClient::new(ch)
            .hash_kv(with_unknown_token(HashKvRequest { revision: 0 }))
            .await
            .expect_err("an unknown token must be refused");
        seen.push([
            (kv_err.code(), kv_err.message().to_string()),
            (hash_err.code(), hash_err.message().to_string()),
        ]);
    }
    assert_eq!(seen[1], seen[0], "oxcd (left) and etcd (right) differ");
    let want = [
        (
            tonic::Code::Unauthenticated,
            "etcdserver: invalid auth token",
        ),
        (tonic::Code::Unknown, "auth: invalid auth token"),
    ];
    assert_eq!(seen[0], want.map(|(c, m)| (c, m.to_string())));
    drop(s);
}

/// Users, roles and the enabled flag are durable: after a restart they are all there.
#[test]
fn auth_survives_restart() {
    require("etcdctl");
    let m = Member::start(Impl::Oxcd);
    let run = |m: &Member, args: &[&str]| m.etcdctl(args, "");
    assert_eq!(run(&m, &["user", "add", ROOT]).code, 0);
    assert_eq!(run(&m, &["user", "add", ALICE]).code, 0);
    assert_eq!(run(&m, &["role", "add", "reader"]).code, 0);
    let grant = ["role", "grant-permission", "reader", "read", "k"];
    assert_eq!(run(&m, &grant).code, 0);
    assert_eq!(run(&m, &["user", "grant-role", "alice", "reader"]).code, 0);
    assert_eq!(run(&m, &["auth", "enable"]).code, 0);
    m.c.kill9(0);
    assert!(m.c.data_dir(0).exists());
    m.c.start(0);
    let denied = run(&m, &["get", "k"]);
    assert!(denied.stderr.contains("user name is empty"), "{denied:?}");
    let ok = run(&m, &["--user", ALICE, "get", "k"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let role = run(&m, &["--user", ROOT, "role", "get", "reader"]);
    assert!(role.stdout.contains("\tk\n"), "{role:?}");
    let refused = run(&m, &["--user", ALICE, "put", "k", "v"]);
    assert!(refused.stderr.contains("permission denied"), "{refused:?}");
}
