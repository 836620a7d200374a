//! Helpers for running the real `oxcert` binary (and openssl, cfssl, etcd) in temp dirs,
//! every run bounded in time, every started server killed when its guard drops.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// No single command in these tests should take longer (RSA keygen in a debug build included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

pub fn oxcert() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oxcert"))
}

#[derive(Debug)]
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

    pub fn failed(self) -> Output {
        assert_ne!(
            self.code, 0,
            "command should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `command` to completion with `stdin`, killing it after COMMAND_TIMEOUT.
pub fn run(command: &mut Command, stdin: &str) -> Output {
    run_for(command, stdin, COMMAND_TIMEOUT)
}

/// Runs `command` to completion with `stdin`, killing it after `timeout`.
pub fn run_for(command: &mut Command, stdin: &str, timeout: Duration) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_string();
    let writer = thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

pub fn ox(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(oxcert()).args(args).current_dir(dir), "")
}

pub fn ox_stdin(dir: &Path, args: &[&str], stdin: &str) -> Output {
    run(Command::new(oxcert()).args(args).current_dir(dir), stdin)
}

/// A tool the test depends on; missing, the test fails saying how to install it.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is required by this test: apt-get install {package}");
}

/// `bin/cfssl` and `bin/cfssljson` linking to oxcert inside `dir`; returns the bin dir.
pub fn compat_links(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    for name in ["cfssl", "cfssljson"] {
        symlink(oxcert(), bin.join(name)).expect("symlink");
    }
    bin
}

/// Runs a shell script in `dir` with `bin` first on PATH.
pub fn sh(dir: &Path, bin: &Path, script: &str) -> Output {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(
        Command::new("sh")
            .arg("-ec")
            .arg(script)
            .env("PATH", path)
            .current_dir(dir),
        "",
    )
}

pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    let bin = require_tool("openssl", "openssl");
    run(Command::new(bin).args(args).current_dir(dir), "")
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A port free on `ip` right now (the kernel picks it).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// A started server process, killed (by its id) when dropped.
pub struct Server {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Server {
    pub fn start(name: &str, command: &mut Command, log: PathBuf) -> Server {
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Server {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retries `attempt` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// The tutorial leaves ca-csr.json and ca-config.json to the reader: these are the usual ones.
pub const CA_CSR: &str = r#"{"CN":"etcd-root-ca","key":{"algo":"rsa","size":2048},"names":[{"C":"US","ST":"CA","L":"San Francisco","O":"etcd","OU":"ops"}],"ca":{"expiry":"87600h"}}"#;
pub const CA_CONFIG: &str = r#"{"signing":{"default":{"expiry":"43800h"},"profiles":{
  "server":{"expiry":"43800h","usages":["signing","key encipherment","server auth"]},
  "client":{"expiry":"43800h","usages":["signing","key encipherment","client auth"]},
  "peer":{"expiry":"43800h","usages":["signing","key encipherment","server auth","client auth"]}}}}"#;

/// The tutorial's TL;DR certificate commands, verbatim (hosts changed to loopback where a
/// test later connects; the tutorial's 192.168.1.x only ever appear inside certificates).
pub const TUTORIAL_TLDR: &str = r#"
cfssl gencert --initca=true ca-csr.json | cfssljson --bare etcd-root-ca
echo '{"CN":"server ca","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config ca-config.json -profile=server -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1,etcd1,etcd2,etcd3" - | cfssljson -bare server
echo '{"CN":"etcd1","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config=ca-config.json -profile=peer -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1,etcd1,etcd2,etcd3" - | cfssljson -bare etcd1
echo '{"CN":"etcd2","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config=ca-config.json -profile=peer -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1,etcd1,etcd2,etcd3" - | cfssljson -bare etcd2
echo '{"CN":"etcd3","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config=ca-config.json -profile=peer -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1,etcd1,etcd2,etcd3" - | cfssljson -bare etcd3
echo '{"CN":"client","hosts":[""],"key":{"algo":"rsa","size":2048}}' | cfssl gencert -ca=etcd-root-ca.pem -ca-key=etcd-root-ca-key.pem -config=ca-config.json -profile=client -hostname="192.168.1.101,192.168.1.102,192.168.1.103,127.0.0.1" - | cfssljson -bare client
"#;

/// Runs the tutorial's commands in `dir` through oxcert's cfssl/cfssljson links.
pub fn tutorial_pki(dir: &Path) {
    write(&dir.join("ca-csr.json"), CA_CSR);
    write(&dir.join("ca-config.json"), CA_CONFIG);
    let bin = compat_links(dir);
    let version = sh(dir, &bin, "cfssl version").ok();
    assert!(
        version.stdout.contains("oxcert"),
        "cfssl on PATH is not oxcert: {}",
        version.stdout
    );
    sh(dir, &bin, TUTORIAL_TLDR).ok();
}
