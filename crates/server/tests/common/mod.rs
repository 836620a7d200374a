//! Shared helpers for the server's process-level tests: start the real `oxcd` (and the real
//! etcd 3.4) on loopback ports in temp dirs, drive them with the real etcdctl, curl and cfssl,
//! and make sure every process started here dies with its guard. Every wait is bounded.

#![allow(dead_code)]

pub mod cluster;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// No single external command may take longer than this (cfssl RSA keygen included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// A server must answer `/health` within this long after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The oxcd binary cargo built for these tests.
pub fn oxcd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oxcd"))
}

/// Panics, naming the Debian package, when a tool the tests drive is missing: a test that
/// quietly skips proves nothing.
pub fn require(tool: &str) {
    let package = match tool {
        "etcd" => "etcd-server",
        "etcdctl" => "etcd-client",
        "cfssl" | "cfssljson" => "golang-cfssl",
        "curl" => "curl",
        other => other,
    };
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not on PATH; these tests drive the real one: install the Debian package \
         `{package}` (apt-get install {package})"
    );
}

/// A free loopback port: bind port 0, read the port, let it go.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(self) -> Output {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `command` to completion with `stdin`, killing it after [`COMMAND_TIMEOUT`].
pub fn run(command: &mut Command, stdin: &[u8]) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not finish within {COMMAND_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Output {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Client TLS material for etcdctl and curl.
#[derive(Debug, Clone)]
pub struct ClientCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Certificates made with the real cfssl, the way the tutorial makes them: a CA, a server
/// certificate for 127.0.0.1 and localhost, a client certificate.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client: ClientCerts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgo {
    Rsa2048,
    EcdsaP256,
}

impl KeyAlgo {
    fn json(self) -> &'static str {
        match self {
            KeyAlgo::Rsa2048 => r#"{"algo":"rsa","size":2048}"#,
            KeyAlgo::EcdsaP256 => r#"{"algo":"ecdsa","size":256}"#,
        }
    }
}

const CA_CONFIG: &str = r#"{"signing":{"default":{"expiry":"43800h"},"profiles":{
 "server":{"expiry":"43800h","usages":["signing","key encipherment","server auth"]},
 "client":{"expiry":"43800h","usages":["signing","key encipherment","client auth"]},
 "peer":{"expiry":"43800h","usages":["signing","key encipherment","server auth","client auth"]}}}}"#;

impl Pki {
    /// Makes the PKI in `dir` with cfssl/cfssljson; every key uses `algo`.
    pub fn make(dir: &Path, algo: KeyAlgo) -> Pki {
        require("cfssl");
        require("cfssljson");
        std::fs::create_dir_all(dir).expect("create the PKI dir");
        std::fs::write(dir.join("ca-config.json"), CA_CONFIG).expect("write ca-config.json");
        let key = algo.json();
        let ca_csr =
            format!(r#"{{"CN":"etcd root ca","key":{key},"names":[{{"C":"US","O":"etcd"}}]}}"#);
        std::fs::write(dir.join("ca-csr.json"), ca_csr).expect("write ca-csr.json");
        cfssl(dir, &["gencert", "-initca", "ca-csr.json"], "", "ca");
        let issue = |name: &str, profile: &str, hosts: &str| {
            let csr = format!(r#"{{"CN":"{name}","hosts":[""],"key":{key}}}"#);
            cfssl(
                dir,
                &[
                    "gencert",
                    "-ca=ca.pem",
                    "-ca-key=ca-key.pem",
                    "-config=ca-config.json",
                    &format!("-profile={profile}"),
                    &format!("-hostname={hosts}"),
                    "-",
                ],
                &csr,
                name,
            );
        };
        issue("server", "server", "127.0.0.1,localhost");
        issue("client", "client", "127.0.0.1");
        Pki {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client: ClientCerts {
                ca: dir.join("ca.pem"),
                cert: dir.join("client.pem"),
                key: dir.join("client-key.pem"),
            },
        }
    }

    /// The server flags of the tutorial's TLS step.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--trusted-ca-file={}", self.ca.display()),
            format!("--cert-file={}", self.server_cert.display()),
            format!("--key-file={}", self.server_key.display()),
        ]
    }
}

/// `cfssl ARGS | cfssljson -bare NAME`, in `dir`.
fn cfssl(dir: &Path, args: &[&str], stdin: &str, bare: &str) {
    let gen = run(
        Command::new("cfssl").args(args).current_dir(dir),
        stdin.as_bytes(),
    );
    assert_eq!(gen.code, 0, "cfssl {args:?} failed: {}", gen.stderr);
    let split = run(
        Command::new("cfssljson")
            .args(["-bare", bare])
            .current_dir(dir),
        gen.stdout.as_bytes(),
    );
    assert_eq!(
        split.code, 0,
        "cfssljson -bare {bare} failed: {}",
        split.stderr
    );
}

/// Numbers the logs of launches.
static LAUNCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Which server to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Oxcd,
    Etcd,
}

/// A running server (oxcd or etcd). Dropping it kills the process (SIGKILL) and reaps it.
pub struct Server {
    pub kind: Impl,
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub client_url: String,
    pub tls: Option<ClientCerts>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// How to start a server: the common single-member flags plus extras.
pub struct Launch<'a> {
    pub kind: Impl,
    /// Holds the data dir and the log; usually the test's temp dir.
    pub dir: &'a Path,
    /// Names the data dir and log inside `dir`.
    pub name: &'a str,
    /// `--name`: the member name (etcd's default is `default`).
    pub member: &'a str,
    pub pki: Option<&'a Pki>,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl<'a> Launch<'a> {
    pub fn new(kind: Impl, dir: &'a Path) -> Launch<'a> {
        Launch {
            kind,
            dir,
            name: match kind {
                Impl::Oxcd => "oxcd",
                Impl::Etcd => "etcd",
            },
            member: "default",
            pki: None,
            extra: Vec::new(),
            env: Vec::new(),
        }
    }

    /// An environment variable for the server (etcd's `ETCD_*` flags).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn member(mut self, member: &'a str) -> Self {
        self.member = member;
        self
    }

    pub fn tls(mut self, pki: &'a Pki) -> Self {
        self.pki = Some(pki);
        self
    }

    pub fn name(mut self, name: &'a str) -> Self {
        self.name = name;
        self
    }

    pub fn extra<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts the server and waits until it answers `/health` with `true`.
    pub fn start(self) -> Server {
        let mut server = self.spawn();
        server.wait_healthy();
        server
    }

    /// Starts the server without waiting for it.
    pub fn spawn(self) -> Server {
        let client_port = free_port();
        let peer_port = free_port();
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
        let data_dir = self.dir.join(format!("{}.data", self.name));
        let mut args = vec![
            "--name".to_string(),
            self.member.to_string(),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
        ];
        if let Some(pki) = self.pki {
            args.extend(pki.server_flags());
        }
        args.extend(self.extra);
        let mut server = Server {
            kind: self.kind,
            child: None,
            data_dir,
            // One log per launch, even when two launches share a data dir.
            log: self.dir.join(format!(
                "{}.{}.log",
                self.name,
                LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )),
            client_port,
            peer_port,
            client_url,
            tls: self.pki.map(|p| p.client.clone()),
            args,
            env: self.env,
        };
        server.launch();
        server
    }
}

impl Server {
    fn program(&self) -> PathBuf {
        match self.kind {
            Impl::Oxcd => oxcd_bin(),
            Impl::Etcd => {
                require("etcd");
                PathBuf::from("etcd")
            }
        }
    }

    /// (Re)starts the process with the same flags, appending to the same log.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the server log");
        let child = Command::new(self.program())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.program()));
        self.child = Some(child);
    }

    /// The process's log so far (oxcd logs to stderr; both streams go to the same file).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until `/health` says true; panics with the log if the process died.
    pub fn wait_healthy(&mut self) {
        let what = format!("{:?} at {} to become healthy", self.kind, self.client_url);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.healthy() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("{what}: it exited with {status}; log:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {READY_TIMEOUT:?} waiting for {what}; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn healthy(&self) -> bool {
        match &self.tls {
            None => http_get(self.client_port, "/health")
                .map(|r| r.status == 200 && r.body.contains("\"true\""))
                .unwrap_or(false),
            Some(certs) => {
                let out = run(
                    Command::new("curl")
                        .args(["-s", "-m", "2", "--cacert"])
                        .arg(&certs.ca)
                        .arg("--cert")
                        .arg(&certs.cert)
                        .arg("--key")
                        .arg(&certs.key)
                        .arg(format!("{}/health", self.client_url)),
                    b"",
                );
                out.code == 0 && out.stdout.contains("\"true\"")
            }
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit code if the process has exited (and is then reaped), without waiting.
    pub fn try_exit_code(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().expect("try_wait")?;
        self.child = None;
        Some(status.code().unwrap_or(-1))
    }

    /// Waits (bounded) for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let log = self.log_text();
                self.kill9();
                panic!(
                    "{:?} did not exit within {timeout:?}; log:\n{log}",
                    self.kind
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// etcdctl (API v3) against this server, with client certificates when it is TLS.
    pub fn etcdctl(&self, args: &[&str], stdin: &[u8]) -> Output {
        etcdctl(&self.client_url, self.tls.as_ref(), args, stdin)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the real etcdctl (API v3) against `endpoint`.
pub fn etcdctl(endpoint: &str, tls: Option<&ClientCerts>, args: &[&str], stdin: &[u8]) -> Output {
    require("etcdctl");
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=10s");
    if let Some(c) = tls {
        cmd.arg(format!("--cacert={}", c.ca.display()))
            .arg(format!("--cert={}", c.cert.display()))
            .arg(format!("--key={}", c.key.display()));
    }
    cmd.args(args);
    run(&mut cmd, stdin)
}

/// A plain-HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Lower-cased names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// GET over plain HTTP on 127.0.0.1.
pub fn http_get(port: u16, target: &str) -> std::io::Result<HttpResponse> {
    http(port, "GET", target, None)
}

/// One HTTP/1.1 request over plain TCP (`Connection: close`), with an optional form body.
/// Reads the whole response (Content-Length, chunked, or until close), bounded in time.
pub fn http(
    port: u16,
    method: &str,
    target: &str,
    form: Option<&str>,
) -> std::io::Result<HttpResponse> {
    http_timeout(port, method, target, form, Duration::from_secs(10))
}

pub fn http_timeout(
    port: u16,
    method: &str,
    target: &str,
    form: Option<&str>,
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(body) = form {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "bad HTTP response: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Replaces every number that follows `"key":` (JSON) with `N`.
pub fn mask_json_number(s: &str, key: &str) -> String {
    let pat = format!("\"{key}\":");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(&pat) {
        let after = i + pat.len();
        out.push_str(&rest[..after]);
        let tail = &rest[after..];
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push('N');
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// Replaces the string value that follows `"key":"` (JSON) with `X`.
pub fn mask_json_string(s: &str, key: &str) -> String {
    let pat = format!("\"{key}\":\"");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(&pat) {
        let after = i + pat.len();
        out.push_str(&rest[..after]);
        out.push('X');
        let tail = &rest[after..];
        let end = tail.find('"').unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}
