//! The cluster harness: N members of oxcd, or of the real etcd 3.4 (oxcd takes etcd's flags,
//! so the same flags start either), each on its own reserved loopback address
//! ([`crate::addr`]) with ports 2379 and 2380, plain or TLS, data dirs and logs in one
//! directory. Members can be started, killed with SIGKILL, signalled and restarted; the real
//! `etcdctl` (or `oxctl`) runs against them; dropping the `Cluster` kills every member.
//!
//! Flags, per member: `--name`, `--data-dir`, the listen and advertise client URLs and the
//! listen peer URL. A cluster of several members, or one given a token, also gets
//! `--initial-advertise-peer-urls`, `--initial-cluster-token` and `--initial-cluster`; a
//! single member without a token keeps etcd's single-member defaults, so that its member and
//! cluster IDs (those of `default=http://localhost:2380`) do not depend on its address and
//! two servers side by side answer alike. TLS adds the client and/or peer certificate flags
//! of a [`Pki`] made for the members' addresses. The builder's flags come after all these,
//! so a test can override any of them (Go's flags: the last one wins).

mod grpc;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use grpc::Status;
use oxcd_client::TlsMode;

use crate::addr::{self, Addr};
use crate::pki::{ClientCerts, KeyAlgo, Pki};
use crate::process::{bin, poll, require, run, run_for, Daemon, Output, Signal};

/// A started member must answer Status, naming a leader, within this long.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The token of a cluster of several members unless the test names another.
pub const TOKEN_DEFAULT: &str = "test-cluster";

/// Numbers the logs of launches, so that two launches never share a log.
static LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// Which server the members run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Oxcd,
    Etcd,
}

/// Which listeners use TLS.
#[derive(Debug, Clone, Copy, Default)]
struct Tls {
    /// https client URLs: `--cert-file`, `--key-file`, `--trusted-ca-file`.
    client: bool,
    /// `--client-cert-auth=true` as well.
    client_cert_auth: bool,
    /// Mutual TLS between peers.
    peer: bool,
}

/// How to make a [`Cluster`]; see the module doc for the flags.
pub struct Builder {
    kind: Impl,
    program: Option<PathBuf>,
    names: Vec<String>,
    flags: Vec<String>,
    member_flags: Vec<(usize, Vec<String>)>,
    env: Vec<(String, String)>,
    token: Option<String>,
    tls: Tls,
    key_algo: KeyAlgo,
    dir: Option<PathBuf>,
}

impl Builder {
    /// `n` members named `m1`..`mN` (one member is named `default`, as etcd's).
    pub fn members(mut self, n: usize) -> Builder {
        assert!(n > 0, "a cluster has members");
        self.names = match n {
            1 => vec!["default".to_string()],
            n => (1..=n).map(|k| format!("m{k}")).collect(),
        };
        self
    }

    /// Members with these names.
    pub fn names(mut self, names: &[&str]) -> Builder {
        assert!(!names.is_empty(), "a cluster has members");
        self.names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Flags for every member, after the harness's own.
    pub fn flags<S: Into<String>>(mut self, flags: impl IntoIterator<Item = S>) -> Builder {
        self.flags.extend(flags.into_iter().map(Into::into));
        self
    }

    /// Flags for member `i` only, after every other.
    pub fn member_flags<S: Into<String>>(
        mut self,
        i: usize,
        flags: impl IntoIterator<Item = S>,
    ) -> Builder {
        let flags = flags.into_iter().map(Into::into).collect();
        self.member_flags.push((i, flags));
        self
    }

    /// An environment variable for every member (etcd's `ETCD_*` flags).
    pub fn env(mut self, name: &str, value: &str) -> Builder {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// `--initial-cluster-token`; also gives a single member the cluster flags.
    pub fn token(mut self, token: &str) -> Builder {
        self.token = Some(token.to_string());
        self
    }

    /// https client URLs with the PKI's server certificate (no client certificate needed).
    pub fn client_tls(mut self) -> Builder {
        self.tls.client = true;
        self
    }

    /// https client URLs, and clients must present a certificate of the PKI's CA.
    pub fn client_cert_auth(mut self) -> Builder {
        self.tls.client = true;
        self.tls.client_cert_auth = true;
        self
    }

    /// Mutual TLS between peers, one peer certificate per member.
    pub fn peer_tls(mut self) -> Builder {
        self.tls.peer = true;
        self
    }

    /// TLS everywhere, as the tutorial sets a cluster up: client certificates required on
    /// https client URLs, mutual TLS between peers.
    pub fn tls(self) -> Builder {
        self.client_cert_auth().peer_tls()
    }

    /// The keys of the PKI (ECDSA P-256 unless told).
    pub fn key_algo(mut self, algo: KeyAlgo) -> Builder {
        self.key_algo = algo;
        self
    }

    /// Another binary that takes etcd's flags (e.g. a release build of oxcd).
    pub fn program(mut self, program: &Path) -> Builder {
        self.program = Some(program.to_path_buf());
        self
    }

    /// Data dirs (`NAME.data`) and logs in `dir` instead of a fresh temp dir: two clusters
    /// with the same dir and member names share their data dirs.
    pub fn dir(mut self, dir: &Path) -> Builder {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Reserves the addresses, makes the PKI; nothing runs yet.
    pub fn build(self) -> Cluster {
        let program = self.program.unwrap_or_else(|| match self.kind {
            Impl::Oxcd => bin("oxcd"),
            Impl::Etcd => require("etcd"),
        });
        let (tmp, dir) = match self.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("temp dir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut members: Vec<Member> = self
            .names
            .iter()
            .map(|name| Member::new(name, &dir, Vec::new()))
            .collect();
        for (i, flags) in self.member_flags {
            members[i].flags = flags;
        }
        let cluster_flags = members.len() > 1 || self.token.is_some();
        let mut c = Cluster {
            kind: self.kind,
            program,
            members,
            flags: self.flags,
            env: self.env,
            token: self.token.unwrap_or_else(|| TOKEN_DEFAULT.to_string()),
            cluster_flags,
            tls: self.tls,
            pki: None,
            tls_mode: TlsMode::Plain,
            dir,
            _tmp: tmp,
        };
        if self.tls.client || self.tls.peer {
            c.make_pki(self.key_algo);
        }
        c
    }

    /// [`Builder::build`], then starts every member and waits until each is ready.
    pub fn start(self) -> Cluster {
        let c = self.build();
        c.start_all();
        c
    }
}

/// One member: its name, reserved address, data dir, and the process while it runs.
struct Member {
    name: String,
    data_dir: PathBuf,
    /// Flags for this member only, after the cluster's.
    flags: Vec<String>,
    daemon: Mutex<Option<Daemon>>,
    /// The log of the latest launch.
    log: Mutex<Option<PathBuf>>,
    /// Declared last: released only once the process above is gone.
    addr: Addr,
}

impl Member {
    fn new(name: &str, dir: &Path, flags: Vec<String>) -> Member {
        Member {
            name: name.to_string(),
            data_dir: dir.join(format!("{name}.data")),
            flags,
            daemon: Mutex::new(None),
            log: Mutex::new(None),
            addr: addr::alloc(),
        }
    }

    fn daemon(&self) -> MutexGuard<'_, Option<Daemon>> {
        // A test that panicked while holding the lock left nothing half-done in it.
        self.daemon.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cluster of members (see the module doc). Methods that take `&self` may be called from
/// several tasks at once (wrap it in an `Arc`).
pub struct Cluster {
    kind: Impl,
    program: PathBuf,
    members: Vec<Member>,
    flags: Vec<String>,
    env: Vec<(String, String)>,
    token: String,
    cluster_flags: bool,
    tls: Tls,
    pki: Option<Pki>,
    /// How gRPC clients of this harness dial the members.
    tls_mode: TlsMode,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// A builder for a cluster of `kind` (one member, plain, unless told otherwise).
    pub fn builder(kind: Impl) -> Builder {
        Builder {
            kind,
            program: None,
            names: vec!["default".to_string()],
            flags: Vec::new(),
            member_flags: Vec::new(),
            env: Vec::new(),
            token: None,
            tls: Tls::default(),
            key_algo: KeyAlgo::EcdsaP256,
            dir: None,
        }
    }

    fn make_pki(&mut self, algo: KeyAlgo) {
        let hosts: Vec<(&str, Ipv4Addr)> = self
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.addr.ip()))
            .collect();
        let pki = Pki::cfssl(&self.dir.join("pki"), algo, &hosts);
        let files = oxcd_client::ClientTlsFiles {
            trusted_ca_file: Some(pki.ca.clone()),
            cert_file: Some(pki.client.cert.clone()),
            key_file: Some(pki.client.key.clone()),
            ..Default::default()
        };
        if self.tls.client {
            let config = oxcd_client::tls_config(&files).expect("client TLS config");
            self.tls_mode = TlsMode::Tls(config);
        }
        self.pki = Some(pki);
    }

    pub fn kind(&self) -> Impl {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Where the data dirs, logs and PKI are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.members[i].addr.ip()
    }

    /// Member `i`'s client address (`ip:2379`).
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        self.members[i].addr.client()
    }

    /// `ip:2379`, as etcdctl's `--endpoints` takes it without a scheme.
    pub fn host_port(&self, i: usize) -> String {
        self.client_addr(i).to_string()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.client { "https" } else { "http" };
        format!("{scheme}://{}", self.client_addr(i))
    }

    /// Every member's client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        let urls: Vec<String> = (0..self.len()).map(|i| self.endpoint(i)).collect();
        urls.join(",")
    }

    /// Member `i`'s peer URL.
    pub fn peer_url(&self, i: usize) -> String {
        let scheme = if self.tls.peer { "https" } else { "http" };
        format!("{scheme}://{}", self.members[i].addr.peer())
    }

    /// `--initial-cluster` as the members are started with (every member known here).
    pub fn initial_cluster(&self) -> String {
        let pairs: Vec<String> = (0..self.len())
            .map(|i| format!("{}={}", self.members[i].name, self.peer_url(i)))
            .collect();
        pairs.join(",")
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// The PKI, to swap a member's certificate before it starts.
    pub fn pki_mut(&mut self) -> Option<&mut Pki> {
        self.pki.as_mut()
    }

    /// What a client presents to a TLS member (None when the client URLs are plain).
    pub fn client_certs(&self) -> Option<ClientCerts> {
        self.pki
            .as_ref()
            .filter(|_| self.tls.client)
            .map(Pki::client_certs)
    }

    /// `--cacert`, `--cert` and `--key` for etcdctl (empty when the client URLs are plain).
    pub fn tls_flags(&self) -> Vec<String> {
        self.client_certs()
            .map(|c| tls_flags(&c))
            .unwrap_or_default()
    }

    /// Sets member `i`'s own flags (taking effect at its next start).
    pub fn set_flags<S: Into<String>>(&mut self, i: usize, flags: impl IntoIterator<Item = S>) {
        self.members[i].flags = flags.into_iter().map(Into::into).collect();
    }

    /// Adds a member that does not run yet, on a new address (start it with
    /// [`Cluster::spawn`]); its `--initial-cluster` lists every member known here.
    pub fn add_member<S: Into<String>>(
        &mut self,
        name: &str,
        flags: impl IntoIterator<Item = S>,
    ) -> usize {
        assert!(
            self.cluster_flags,
            "only a cluster started with --initial-cluster flags grows (give it a token)"
        );
        assert!(
            self.pki.is_none(),
            "growing a TLS cluster needs certificates for the new address"
        );
        let flags = flags.into_iter().map(Into::into).collect();
        self.members.push(Member::new(name, &self.dir, flags));
        self.members.len() - 1
    }

    /// The flags member `i` starts with.
    pub fn args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let mut a = vec![
            format!("--name={}", m.name),
            format!("--data-dir={}", m.data_dir.display()),
            format!("--listen-client-urls={}", self.endpoint(i)),
            format!("--advertise-client-urls={}", self.endpoint(i)),
            format!("--listen-peer-urls={}", self.peer_url(i)),
        ];
        if self.cluster_flags {
            a.push(format!(
                "--initial-advertise-peer-urls={}",
                self.peer_url(i)
            ));
            a.push(format!("--initial-cluster-token={}", self.token));
            a.push(format!("--initial-cluster={}", self.initial_cluster()));
        }
        if let Some(pki) = &self.pki {
            let ca = pki.ca.display();
            if self.tls.client {
                a.push(format!("--cert-file={}", pki.server.cert.display()));
                a.push(format!("--key-file={}", pki.server.key.display()));
                a.push(format!("--trusted-ca-file={ca}"));
            }
            if self.tls.client_cert_auth {
                a.push("--client-cert-auth=true".into());
            }
            if self.tls.peer {
                let peer = &pki.peers[i];
                a.push(format!("--peer-cert-file={}", peer.cert.display()));
                a.push(format!("--peer-key-file={}", peer.key.display()));
                a.push(format!("--peer-trusted-ca-file={ca}"));
                a.push("--peer-client-cert-auth=true".into());
            }
        }
        a.extend(self.flags.iter().cloned());
        a.extend(m.flags.iter().cloned());
        a
    }

    /// Starts member `i` (a new log per launch) without waiting for it.
    pub fn spawn(&self, i: usize) {
        let m = &self.members[i];
        let mut daemon = m.daemon();
        assert!(daemon.is_none(), "member {} is already running", m.name);
        let launch = LAUNCHES.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.join(format!("{}.{launch}.log", m.name));
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args(i))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("ETCDCTL_API");
        if self.kind == Impl::Oxcd {
            cmd.env("OXCD_LOG", "info");
        }
        *daemon = Some(Daemon::start(&m.name, &mut cmd, &log));
        *m.log.lock().unwrap_or_else(|e| e.into_inner()) = Some(log);
    }

    /// Starts member `i` and waits until it is ready.
    pub fn start(&self, i: usize) {
        self.spawn(i);
        self.wait_ready(i);
    }

    /// Starts every member, then waits until each is ready.
    pub fn start_all(&self) {
        self.spawn_all();
        for i in 0..self.len() {
            self.wait_ready(i);
        }
    }

    /// Starts every member without waiting.
    pub fn spawn_all(&self) {
        for i in 0..self.len() {
            self.spawn(i);
        }
    }

    /// Waits until member `i` answers Status naming a leader; fails the test with its log if
    /// it exits or takes longer than [`READY_TIMEOUT`].
    pub fn wait_ready(&self, i: usize) {
        let what = format!("member {} at {}", self.name(i), self.endpoint(i));
        let deadline = Instant::now() + READY_TIMEOUT;
        grpc::block_on(async {
            loop {
                if let Some(code) = self.try_exit_code(i) {
                    panic!("{what} exited with code {code}; log:\n{}", self.log(i));
                }
                if self.status(i).await.is_some_and(|s| s.leader != 0) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what} not ready within {READY_TIMEOUT:?}; log:\n{}",
                    self.log(i)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    /// SIGKILL member `i` and reap it (nothing if it is not running).
    pub fn kill9(&self, i: usize) {
        if let Some(mut d) = self.members[i].daemon().take() {
            d.kill();
        }
    }

    /// Stops member `i` as an operator would (SIGTERM) and waits (at most `timeout`) for it
    /// to exit; its exit code. Past the timeout it is killed and the test fails with its log.
    pub fn stop(&self, i: usize, timeout: Duration) -> i32 {
        self.signal(i, Signal::Term);
        self.wait_exit(i, timeout)
    }

    /// kill -9, then start again with the same flags and data dir, and wait until ready.
    pub fn restart(&self, i: usize) {
        self.kill9(i);
        self.start(i);
    }

    /// Sends `signal` to member `i`.
    pub fn signal(&self, i: usize, signal: Signal) {
        let d = self.members[i].daemon();
        let d = d
            .as_ref()
            .unwrap_or_else(|| panic!("member {i} is not running"));
        d.signal(signal);
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].daemon().as_ref().and_then(Daemon::pid)
    }

    /// Whether member `i` runs (an exited member is reaped and counts as stopped).
    pub fn is_running(&self, i: usize) -> bool {
        let mut d = self.members[i].daemon();
        let running = d.as_mut().is_some_and(Daemon::is_running);
        if !running {
            *d = None;
        }
        running
    }

    /// Member `i`'s exit code (-1 for a signal) if it has exited, reaping it.
    pub fn try_exit_code(&self, i: usize) -> Option<i32> {
        let mut d = self.members[i].daemon();
        let code = d.as_mut()?.try_exit_code()?;
        *d = None;
        Some(code)
    }

    /// Waits (at most `timeout`) for member `i` to exit by itself; its exit code.
    pub fn wait_exit(&self, i: usize, timeout: Duration) -> i32 {
        let mut d = self.members[i].daemon();
        let code = d
            .as_mut()
            .unwrap_or_else(|| panic!("member {i} is not running"))
            .wait_exit(timeout);
        *d = None;
        code
    }

    /// The log of member `i`'s latest launch.
    pub fn log(&self, i: usize) -> String {
        let log = self.members[i]
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        log.and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Every member's latest log, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.len())
            .map(|i| format!("--- {} ---\n{}", self.name(i), self.log(i)))
            .collect()
    }

    /// The real etcdctl (API v3) against member `i`.
    pub fn etcdctl(&self, i: usize, args: &[&str], stdin: &[u8]) -> Output {
        etcdctl(&self.endpoint(i), self.client_certs().as_ref(), args, stdin)
    }

    /// The real etcdctl against every member (`--endpoints` lists them all).
    pub fn etcdctl_all(&self, args: &[&str], stdin: &[u8]) -> Output {
        etcdctl(&self.endpoints(), self.client_certs().as_ref(), args, stdin)
    }

    /// The real etcdctl against member `i`, killed after `duration` (for commands that do
    /// not end by themselves, such as `watch`); what it printed.
    pub fn etcdctl_for(&self, i: usize, duration: Duration, args: &[&str]) -> Output {
        let mut cmd = etcdctl_command(&self.endpoint(i), self.client_certs().as_ref());
        run_for(cmd.args(args), b"", duration)
    }

    /// Waits (at most 20 s) until every running member serves the same revision (asked
    /// with serializable etcdctl gets); returns it.
    pub fn wait_same_revision(&self) -> i64 {
        let revision = |i: usize| {
            let out = self.etcdctl(i, &["get", "x", "--consistency=s", "-w", "json"], b"");
            let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            v["header"]["revision"].as_i64().unwrap_or(-1)
        };
        let mut revs = Vec::new();
        let agreed = poll(Duration::from_secs(20), Duration::from_millis(100), || {
            revs = (0..self.len())
                .filter(|i| self.pid(*i).is_some())
                .map(revision)
                .collect();
            let first = *revs.first()?;
            (first > 0 && revs.iter().all(|r| *r == first)).then_some(first)
        });
        agreed.unwrap_or_else(|| panic!("members never agreed on a revision: {revs:?}"))
    }

    /// This workspace's oxctl against member `i`, with the same flags as [`Cluster::etcdctl`].
    pub fn oxctl(&self, i: usize, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = ctl_command(
            &bin("oxctl"),
            &self.endpoint(i),
            self.client_certs().as_ref(),
        );
        run(cmd.args(args), stdin)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill9(i);
        }
    }
}

/// `--cacert`, `--cert`, `--key`.
pub fn tls_flags(certs: &ClientCerts) -> Vec<String> {
    vec![
        format!("--cacert={}", certs.ca.display()),
        format!("--cert={}", certs.cert.display()),
        format!("--key={}", certs.key.display()),
    ]
}

/// An etcdctl-compatible tool (API v3) for `endpoints`, with client certificates when
/// given; args and stdin still to add.
pub fn ctl_command(tool: &Path, endpoints: &str, tls: Option<&ClientCerts>) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=10s");
    if let Some(c) = tls {
        cmd.args(tls_flags(c));
    }
    cmd
}

fn etcdctl_command(endpoints: &str, tls: Option<&ClientCerts>) -> Command {
    ctl_command(&require("etcdctl"), endpoints, tls)
}

/// The real etcdctl (API v3) against `endpoints`, bounded in time.
pub fn etcdctl(endpoints: &str, tls: Option<&ClientCerts>, args: &[&str], stdin: &[u8]) -> Output {
    run(etcdctl_command(endpoints, tls).args(args), stdin)
}
