//! Child processes for tests, every one bounded: commands run to completion within a limit
//! (killed and reported past it), commands that never end by themselves (`watch`) run for a
//! set time, and long-running servers are [`Daemon`]s, killed with SIGKILL when dropped.
//! Also: finding the tools the tests drive, and bounded polling.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// No single command may take longer than this (RSA keygen in a debug build included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a running child is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What a finished command printed, and its exit code (-1 when a signal ended it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts exit code 0.
    pub fn ok(self) -> Output {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a non-zero exit code.
    pub fn failed(self) -> Output {
        assert_ne!(
            self.code, 0,
            "command should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// stdout followed by stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The last line on stderr (etcdctl's `Error: ...`, after its client's retry logs).
    pub fn last_stderr_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or_default()
    }
}

/// Kills the child (SIGKILL) and reaps it when dropped, whatever ends the test.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command` with `stdin` until it exits; panics (after killing it) past
/// [`COMMAND_TIMEOUT`].
pub fn run(command: &mut Command, stdin: &[u8]) -> Output {
    run_within(command, stdin, COMMAND_TIMEOUT)
}

/// Runs `command` with `stdin` until it exits; panics (after killing it) past `limit`.
pub fn run_within(command: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let description = format!("{command:?}");
    let (out, finished) = supervise(command, stdin, limit);
    assert!(finished, "{description} did not finish within {limit:?}");
    out
}

/// Runs a command that may not end by itself (`watch`, `keep-alive`) for at most `duration`,
/// then kills it; returns what it printed (code -1 if it was killed).
pub fn run_for(command: &mut Command, stdin: &[u8], duration: Duration) -> Output {
    supervise(command, stdin, duration).0
}

/// Runs `command` for at most `limit`; the output, and whether it exited by itself.
fn supervise(command: &mut Command, stdin: &[u8], limit: Duration) -> (Output, bool) {
    let description = format!("{command:?}");
    let child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let mut guard = Guard(child);
    let input = guard.0.stdin.take().map(|mut pipe| {
        let stdin = stdin.to_vec();
        // A child that does not read its stdin must not block the test.
        thread::spawn(move || {
            let _ = pipe.write_all(&stdin);
        })
    });
    let out = guard.0.stdout.take().map(reader);
    let err = guard.0.stderr.take().map(reader);
    let deadline = Instant::now() + limit;
    let status = loop {
        match guard.0.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(None) => break None,
            Err(e) => panic!("cannot wait for {description}: {e}"),
        }
    };
    let finished = status.is_some();
    // Kills a child still running, so the readers see the pipes close.
    drop(guard);
    if let Some(t) = input {
        let _ = t.join();
    }
    let text = |r: Option<thread::JoinHandle<Vec<u8>>>| {
        let bytes = r.and_then(|r| r.join().ok()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let out = Output {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: text(out),
        stderr: text(err),
    };
    (out, finished)
}

fn reader(mut pipe: impl std::io::Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// The path of `tool` on PATH; panics naming the Debian package when it is missing (a test
/// that quietly skips proves nothing).
pub fn require(tool: &str) -> PathBuf {
    let package = match tool {
        "etcd" => "etcd-server",
        "etcdctl" => "etcd-client",
        "cfssl" | "cfssljson" => "golang-cfssl",
        other => other,
    };
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{tool}` is not on PATH; these tests drive the real one: install the Debian \
                 package `{package}` (apt-get install {package}, or scripts/install-deps)"
            )
        })
}

/// A binary of this workspace, from the target directory this test runs from
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`), where cargo also puts
/// `CARGO_BIN_EXE_<name>` for the tested crate's own binaries.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Polls `check` every 20 ms until it returns `Some`; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll(timeout, Duration::from_millis(20), check)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `ok` every 200 ms (for checks that run a command) until it holds; panics naming
/// `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let held = poll(timeout, Duration::from_millis(200), || ok().then_some(()));
    assert!(
        held.is_some(),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Polls `check` every `interval` until it returns `Some`, or gives up (None) after `timeout`.
pub fn poll<T>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(interval);
    }
}

/// The signals a test sends a server (SIGKILL is [`Daemon::kill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Pauses it: it holds its sockets but answers nothing.
    Stop,
    /// Resumes a paused one.
    Cont,
    /// Asks it to shut down.
    Term,
}

impl Signal {
    fn number(self) -> i32 {
        match self {
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Term => libc::SIGTERM,
        }
    }
}

/// A long-running process (a server), its stdout and stderr appended to a log file; killed
/// with SIGKILL and reaped when dropped.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` (its stdin closed) as `name`, logging to `log`.
    pub fn start(name: &str, command: &mut Command, log: &Path) -> Daemon {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open the log {}: {e}", log.display()));
        let out = file.try_clone().expect("duplicate the log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process ID while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal`; panics if it cannot be sent.
    pub fn signal(&self, signal: Signal) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = i32::try_from(pid).expect("a pid fits in pid_t");
        // SAFETY: kill(2) on the pid of our own unreaped child; no memory is involved.
        let sent = unsafe { libc::kill(pid, signal.number()) } == 0;
        assert!(sent, "cannot send {signal:?} to {} ({pid})", self.name);
    }

    /// The exit code (-1 for a signal) if the process has exited, reaping it; None while it
    /// runs.
    pub fn try_exit_code(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        let status = child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.name))?;
        self.child = None;
        Some(status.code().unwrap_or(-1))
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_exit_code().is_none()
    }

    /// Waits (at most `timeout`) for the process to exit by itself; its exit code. Past the
    /// timeout it is killed and the test fails with its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let exited = poll(timeout, POLL_INTERVAL, || self.try_exit_code());
        exited.unwrap_or_else(|| {
            self.kill();
            panic!(
                "{} did not exit within {timeout:?}; log:\n{}",
                self.name,
                self.log_text()
            )
        })
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_both_streams_and_the_exit_code() {
        let out = run(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 3"]),
            b"in\n",
        );
        assert_eq!(
            out,
            Output {
                code: 3,
                stdout: "in\n".into(),
                stderr: "err\n".into()
            }
        );
    }

    #[test]
    #[should_panic(expected = "did not finish within")]
    fn run_within_fails_a_command_that_hangs() {
        run_within(
            Command::new("sleep").arg("30"),
            b"",
            Duration::from_millis(200),
        );
    }

    #[test]
    fn run_for_returns_what_a_killed_command_printed() {
        let t = Instant::now();
        let out = run_for(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            b"",
            Duration::from_millis(300),
        );
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!((out.code, out.stdout.as_str()), (-1, "started\n"));
    }

    #[test]
    fn a_dropped_daemon_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = Daemon::start(
            "sleeper",
            Command::new("sleep").arg("30"),
            &dir.path().join("log"),
        );
        assert!(d.is_running());
        let pid = d.pid().expect("pid") as i32;
        drop(d);
        // SAFETY: signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "pid {pid} survived its guard");
    }
}
