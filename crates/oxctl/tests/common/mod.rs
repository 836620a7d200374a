//! Test harness: a real etcd 3.4 on loopback in a temp dir (plain or TLS), and a runner that
//! gives the same command to etcdctl and to oxctl and compares what they print.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to become ready, and one command to finish.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub fn require(tool: &str, package: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => panic!("{tool} not found: install the Debian package {package} (apt-get install {package}); these tests compare oxctl with the real etcd 3.4"),
    }
}

/// The server under test: etcd 3.4 by default, or any etcd-flag-compatible binary named by
/// `OXCTL_TEST_SERVER` (e.g. target/release/oxcd). Both tools always run against the same one.
fn server_bin() -> String {
    std::env::var("OXCTL_TEST_SERVER").unwrap_or_else(|_| "etcd".to_string())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local addr").port()
}

/// A single-member etcd. Restarting it from an empty data dir gives the same cluster and
/// member ids (same name, peer URL and token), so the same commands give the same output.
pub struct Etcd {
    bin: String,
    pub dir: tempfile::TempDir,
    pub client_port: u16,
    peer_port: u16,
    pub tls: bool,
    child: Option<Child>,
}

impl Etcd {
    pub fn start(tls: bool) -> Etcd {
        Etcd::start_bin(&server_bin(), tls)
    }

    /// Starts `bin` (`etcd` for the real one whatever `OXCTL_TEST_SERVER` says).
    pub fn start_bin(bin: &str, tls: bool) -> Etcd {
        require("etcd", "etcd-server");
        require("etcdctl", "etcd-client");
        let dir = tempfile::tempdir().expect("temp dir");
        if tls {
            make_certs(dir.path());
        }
        let mut etcd = Etcd {
            bin: bin.to_string(),
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            child: None,
        };
        etcd.spawn();
        etcd
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let data = d.join("data");
        let _ = std::fs::remove_dir_all(&data);
        let client = format!("{}://127.0.0.1:{}", self.scheme(), self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--name", "t1", "--data-dir"]).arg(&data);
        cmd.args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ]);
        cmd.args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ]);
        cmd.args([
            "--initial-cluster",
            &format!("t1={peer}"),
            "--initial-cluster-token",
            "oxctl-test",
        ]);
        if self.tls {
            cmd.arg("--cert-file")
                .arg(d.join("server.pem"))
                .arg("--key-file")
                .arg(d.join("server-key.pem"));
            cmd.arg("--trusted-ca-file")
                .arg(d.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let log = std::fs::File::create(d.join("etcd.log")).expect("log file");
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("start etcd"));
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            let out = self
                .etcdctl_cmd(&["endpoint", "health"])
                .output()
                .expect("run etcdctl");
            if out.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        panic!("etcd did not become healthy in {START_TIMEOUT:?}; log:\n{log}");
    }

    /// Stops the server and starts it again from an empty data dir.
    pub fn restart_fresh(&mut self) {
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The global flags that reach this server.
    pub fn flags(&self) -> Vec<String> {
        let mut f = vec![format!("--endpoints={}", self.endpoint())];
        if self.tls {
            let d = self.dir.path().display();
            f.push(format!("--cacert={d}/ca.pem"));
            f.push(format!("--cert={d}/client.pem"));
            f.push(format!("--key={d}/client-key.pem"));
        }
        f
    }

    fn etcdctl_cmd(&self, args: &[&str]) -> Command {
        tool_cmd("etcdctl", &self.flags(), args)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tool_cmd(bin: &str, flags: &[String], args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("ETCDCTL_API", "3").args(flags).args(args);
    cmd
}

pub fn oxctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_oxctl")
}

/// What one tool printed, normalised for what must differ between runs (times, client ids).
#[derive(Debug, PartialEq, Eq)]
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

pub fn run(bin: &str, flags: &[String], args: &[&str], stdin: &str) -> Printed {
    run_env(bin, flags, &[], args, stdin)
}

/// [`run`] with extra environment variables (`ETCDCTL_*`).
pub fn run_env(
    bin: &str,
    flags: &[String],
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &str,
) -> Printed {
    let mut child = tool_cmd(bin, flags, args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let out = wait_bounded(child, COMMAND_TIMEOUT);
    printed(&out)
}

/// [`run`] with no global flags, in directory `dir` (offline commands that take paths).
pub fn run_in(bin: &str, dir: &std::path::Path, args: &[&str]) -> Printed {
    let child = tool_cmd(bin, &[], args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    printed(&wait_bounded(child, COMMAND_TIMEOUT))
}

/// Runs a command that does not end by itself (watch, keep-alive) for `dur`, then kills it.
pub fn run_for(bin: &str, flags: &[String], args: &[&str], dur: Duration) -> Printed {
    let child = tool_cmd(bin, flags, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    let out = wait_bounded(child, dur);
    let mut p = printed(&out);
    p.code = None;
    p
}

fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("collect output")
}

fn printed(out: &Output) -> Printed {
    Printed {
        stdout: normalise(&String::from_utf8_lossy(&out.stdout)),
        stderr: normalise(&String::from_utf8_lossy(&out.stderr)),
        code: out.status.code(),
    }
}

/// Replaces timings and per-process ids with placeholders; nothing else.
pub fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let mut l = replace_after(line, "\"ts\":", |c| c != ',');
        l = replace_after(&l, "client-", |c| c.is_ascii_hexdigit() || c == '-');
        l = replace_after(&l, "took = ", |c| !c.is_whitespace());
        l = replace_after(&l, "\"took\":", |c| c != ',' && c != '}');
        l = replace_after(&l, "\"Took\" : ", |c| !c.is_whitespace());
        l = table_durations(&l);
        out.push_str(&l);
    }
    out
}

/// In a table, a duration cell (endpoint health's TOOK) changes the column width: replace the
/// duration and collapse the padding of table lines.
fn table_durations(line: &str) -> String {
    if !(line.starts_with('|') || line.starts_with('+')) {
        return line.to_string();
    }
    let words: Vec<String> = line
        .split(' ')
        .map(|w| {
            if is_go_duration(w) {
                "<T>".to_string()
            } else {
                w.to_string()
            }
        })
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.join(" ");
    let mut out = String::new();
    for c in joined.chars() {
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out
}

/// A Go duration with a unit (`2.799208ms`; a bare `0` is a number in a table).
fn is_go_duration(w: &str) -> bool {
    w.ends_with(|c: char| c.is_alphabetic()) && oxcd_gocompat::duration::parse_nanos(w).is_ok()
}

/// Changes the store through etcdctl only (setup that both tools then read).
pub fn setup(flags: &[String], args: &[&str]) {
    let p = run("etcdctl", flags, args, "");
    assert_eq!(p.code, Some(0), "setup {args:?} failed: {p:?}");
}

fn replace_after(line: &str, marker: &str, keep: impl Fn(char) -> bool) -> String {
    let Some(pos) = line.find(marker) else {
        return line.to_string();
    };
    let start = pos + marker.len();
    let rest = &line[start..];
    let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
    format!("{}<T>{}", &line[..start], &rest[end..])
}

/// Like [`same`], with `ETCDCTL_*` variables set for both tools.
pub fn same_env(flags: &[String], env: &[(&str, &str)], args: &[&str]) {
    let want = run_env("etcdctl", flags, env, args, "");
    let got = run_env(oxctl_bin(), flags, env, args, "");
    assert_eq!(got, want, "oxctl and etcdctl differ for {env:?} {args:?}");
}

/// Runs the same command with both tools against the same server and asserts equal output.
pub fn same(flags: &[String], args: &[&str], stdin: &str) {
    let want = run("etcdctl", flags, args, stdin);
    let got = run(oxctl_bin(), flags, args, stdin);
    assert_eq!(got, want, "oxctl and etcdctl differ for {args:?}");
}

/// CA, server (IP SAN 127.0.0.1) and client certificates made with openssl.
pub fn make_certs(dir: &Path) {
    require("openssl", "openssl");
    let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null
for n in server client; do
  openssl req -newkey rsa:2048 -nodes -keyout $n-key.pem -out $n.csr -subj /CN=$n 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > $n.ext
  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out $n.pem -days 2 -extfile $n.ext 2>/dev/null
done"#;
    let st = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("run openssl");
    assert!(st.success(), "making test certificates with openssl failed");
}

/// A three-member cluster on 127.0.0.1 (free ports), plain or TLS (one server certificate for
/// all members, peers in plain HTTP).
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub client_ports: Vec<u16>,
    pub tls: bool,
    children: Vec<Child>,
}

impl Cluster {
    pub fn start(tls: bool) -> Cluster {
        require("etcd", "etcd-server");
        require("etcdctl", "etcd-client");
        let dir = tempfile::tempdir().expect("temp dir");
        if tls {
            make_certs(dir.path());
        }
        let scheme = if tls { "https" } else { "http" };
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial: Vec<String> = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut children = Vec::new();
        for i in 0..3 {
            let d = dir.path();
            let client = format!("{scheme}://127.0.0.1:{}", client_ports[i]);
            let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
            let mut cmd = Command::new(server_bin());
            cmd.args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(d.join(format!("data{i}")));
            cmd.args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ]);
            cmd.args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ]);
            cmd.args([
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-token",
                "oxctl-test-3",
            ]);
            if tls {
                cmd.arg("--cert-file")
                    .arg(d.join("server.pem"))
                    .arg("--key-file")
                    .arg(d.join("server-key.pem"));
                cmd.arg("--trusted-ca-file")
                    .arg(d.join("ca.pem"))
                    .arg("--client-cert-auth");
            }
            let log = std::fs::File::create(d.join(format!("m{i}.log"))).expect("log file");
            cmd.stdout(Stdio::null()).stderr(log);
            children.push(cmd.spawn().expect("start member"));
        }
        let cluster = Cluster {
            dir,
            client_ports,
            tls,
            children,
        };
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            let out = tool_cmd("etcdctl", &cluster.flags(), &["endpoint", "health"])
                .output()
                .expect("run etcdctl");
            if out.status.success() {
                return cluster;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the 3-member cluster did not become healthy in {START_TIMEOUT:?}");
    }

    pub fn flags(&self) -> Vec<String> {
        let eps: Vec<String> = self
            .client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut f = vec![format!("--endpoints={}", eps.join(","))];
        if self.tls {
            let d = self.dir.path().display();
            f.push(format!("--cacert={d}/ca.pem"));
            f.push(format!("--cert={d}/client.pem"));
            f.push(format!("--key={d}/client-key.pem"));
        }
        f
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines in any order (for commands whose lines come in the order concurrent requests finish).
pub fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(String::from).collect();
    v.sort();
    v
}
