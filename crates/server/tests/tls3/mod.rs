//! A 3-member oxcd cluster with TLS everywhere, as the tutorial sets one up: client
//! certificates required on the client port (https), mutual TLS between peers, all made
//! with the real cfssl. Members listen on `127.0.0.{base+1..3}`, so tests that use
//! different bases run in parallel. Every process dies with the guard.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::StatusRequest;
use oxcd_client::{Client, TlsMode};

const BIN: &str = env!("CARGO_BIN_EXE_oxcd");

pub struct Member {
    pub name: String,
    pub ip: String,
    pub data: PathBuf,
    pub log: PathBuf,
    pub child: Mutex<Option<Child>>,
}

pub struct Tls3 {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    extra: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
}

impl Drop for Tls3 {
    fn drop(&mut self) {
        for m in &self.members {
            if let Some(mut c) = m.child.lock().ok().and_then(|mut c| c.take()) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn sh(dir: &Path, cmd: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// cfssl certificates: a CA, one server+peer certificate per member, a client certificate.
fn make_certs(dir: &Path, ips: &[String]) {
    for tool in ["cfssl", "cfssljson"] {
        assert!(
            Command::new(tool).arg("-h").output().is_ok(),
            "{tool} is missing: install the Debian package golang-cfssl (scripts/install-deps)"
        );
    }
    std::fs::write(
        dir.join("ca-csr.json"),
        r#"{"CN":"test ca","key":{"algo":"ecdsa","size":256}}"#,
    )
    .expect("write");
    std::fs::write(
        dir.join("cfg.json"),
        r#"{"signing":{"default":{"expiry":"8760h"},"profiles":{
 "peer":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"]},
 "client":{"expiry":"8760h","usages":["signing","key encipherment","client auth"]}}}}"#,
    )
    .expect("write");
    sh(
        dir,
        "cfssl gencert -initca ca-csr.json 2>/dev/null | cfssljson -bare ca",
    );
    for (n, ip) in ips.iter().enumerate() {
        let n = n + 1;
        sh(
            dir,
            &format!(
                "echo '{{\"CN\":\"m{n}\",\"hosts\":[\"\"],\"key\":{{\"algo\":\"ecdsa\",\"size\":256}}}}' | cfssl gencert -ca=ca.pem -ca-key=ca-key.pem -config=cfg.json -profile=peer -hostname={ip},127.0.0.1,localhost - 2>/dev/null | cfssljson -bare m{n}"
            ),
        );
    }
    sh(
        dir,
        "echo '{\"CN\":\"client\",\"hosts\":[\"\"],\"key\":{\"algo\":\"ecdsa\",\"size\":256}}' | cfssl gencert -ca=ca.pem -ca-key=ca-key.pem -config=cfg.json -profile=client - 2>/dev/null | cfssljson -bare client",
    );
}

impl Tls3 {
    /// Starts three members on `127.0.0.{base+1..3}` with `extra` flags each.
    pub fn start(base: u8, extra: &[&str]) -> Tls3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let ips: Vec<String> = (1..=3).map(|n| format!("127.0.0.{}", base + n)).collect();
        make_certs(dir.path(), &ips);
        let files = oxcd_client::ClientTlsFiles {
            trusted_ca_file: Some(dir.path().join("ca.pem")),
            cert_file: Some(dir.path().join("client.pem")),
            key_file: Some(dir.path().join("client-key.pem")),
            ..Default::default()
        };
        let tls = oxcd_client::tls_config(&files).expect("client TLS config");
        let members = (1..=3)
            .map(|n| Member {
                name: format!("m{n}"),
                ip: ips[n - 1].clone(),
                data: dir.path().join(format!("m{n}.data")),
                log: dir.path().join(format!("m{n}.log")),
                child: Mutex::new(None),
            })
            .collect();
        let c = Tls3 {
            dir,
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    fn args(&self, i: usize) -> Vec<String> {
        let d = self.dir.path();
        let m = &self.members[i];
        let n = i + 1;
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=https://{}:2380", m.name, m.ip))
            .collect();
        let mut a = vec![
            format!("--name={}", m.name),
            format!("--data-dir={}", m.data.display()),
            format!("--initial-advertise-peer-urls=https://{}:2380", m.ip),
            format!("--listen-peer-urls=https://{}:2380", m.ip),
            format!("--listen-client-urls=https://{}:2379", m.ip),
            format!("--advertise-client-urls=https://{}:2379", m.ip),
            "--initial-cluster-token=tls3".into(),
            format!("--initial-cluster={}", cluster.join(",")),
            format!("--cert-file={}", d.join(format!("m{n}.pem")).display()),
            format!("--key-file={}", d.join(format!("m{n}-key.pem")).display()),
            format!("--trusted-ca-file={}", d.join("ca.pem").display()),
            "--client-cert-auth=true".into(),
            format!("--peer-cert-file={}", d.join(format!("m{n}.pem")).display()),
            format!(
                "--peer-key-file={}",
                d.join(format!("m{n}-key.pem")).display()
            ),
            format!("--peer-trusted-ca-file={}", d.join("ca.pem").display()),
            "--peer-client-cert-auth=true".into(),
        ];
        a.extend(self.extra.iter().cloned());
        a
    }

    pub fn spawn(&self, i: usize) {
        let args = self.args(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.members[i].log)
            .expect("log file");
        let child = Command::new(BIN)
            .args(&args)
            .env("OXCD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start oxcd");
        *self.members[i].child.lock().expect("lock") = Some(child);
    }

    pub fn kill9(&self, i: usize) {
        let child = self.members[i].child.lock().expect("lock").take();
        if let Some(mut c) = child {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn alive(&self, i: usize) -> bool {
        self.members[i].child.lock().expect("lock").is_some()
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("https://{}:2379", self.members[i].ip)
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        (0..3)
            .map(|i| format!("--- m{} ---\n{}", i + 1, self.log(i)))
            .collect()
    }

    /// A TLS client of member `i` (client certificate, CA check).
    pub async fn client(&self, i: usize) -> Option<Client> {
        let ep = oxcd_client::parse_endpoint(&self.endpoint(i)).ok()?;
        let ch = oxcd_client::connect(&ep, &TlsMode::Tls(self.tls.clone()), Duration::from_secs(2))
            .await
            .ok()?;
        Some(Client::new(ch, ep))
    }

    /// Member `i`'s view: (its member ID, the leader's ID, raft term).
    pub async fn status(&self, i: usize) -> Option<(u64, u64, u64)> {
        if !self.alive(i) {
            return None;
        }
        let c = self.client(i).await?;
        let st = tokio::time::timeout(
            Duration::from_secs(2),
            c.maintenance().status(StatusRequest {}),
        )
        .await
        .ok()?
        .ok()?
        .into_inner();
        let h = st.header?;
        Some((h.member_id, st.leader, st.raft_term))
    }

    /// Waits (bounded) until the live members agree on a leader; returns its index.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let mut ids = Vec::new();
            for i in 0..3 {
                ids.push(self.status(i).await);
            }
            let leaders: Vec<u64> = ids.iter().flatten().map(|s| s.1).collect();
            if let Some(&l) = leaders.first() {
                if l != 0 && leaders.iter().all(|x| *x == l) {
                    if let Some(i) = ids.iter().position(|s| s.is_some_and(|s| s.0 == l)) {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no agreed leader within {within:?}; logs:\n{}", self.logs());
    }

    /// The real etcdctl (v3) against member `i`, over TLS with the client certificate,
    /// stopped after `secs` seconds (for commands that do not end, such as `watch`).
    pub fn etcdctl_for(&self, i: usize, secs: u32, args: &[&str]) -> String {
        let d = self.dir.path();
        let tls = [
            format!("--cacert={}", d.join("ca.pem").display()),
            format!("--cert={}", d.join("client.pem").display()),
            format!("--key={}", d.join("client-key.pem").display()),
        ];
        etcdctl_for(&self.endpoint(i), &tls, secs, args)
    }

    /// The real etcdctl against member `i` (bounded by 30 s): stdout then stderr.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> String {
        self.etcdctl_for(i, 30, args)
    }
}

/// Runs the real etcdctl (v3) against `endpoint` with `flags`, killed after `secs` seconds;
/// returns stdout followed by stderr.
pub fn etcdctl_for(endpoint: &str, flags: &[String], secs: u32, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(flags)
        .arg("--dial-timeout=5s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl (install the Debian package etcd-client)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
