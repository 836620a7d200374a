//! Runs the same command with etcdctl and with oxctl and compares what they print, after
//! normalising only what must differ between two runs (times, per-process client ids).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use oxcd_testkit::cluster::tls_flags;
use oxcd_testkit::process::run_for as run_cmd_for;
use oxcd_testkit::{run as run_cmd, Cluster, Impl, Output};

pub fn oxctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_oxctl")
}

/// The server under test: etcd 3.4 by default, or any etcd-flag-compatible binary named by
/// `OXCTL_TEST_SERVER` (e.g. target/release/oxcd). Both tools always run against the same
/// one.
pub fn server(members: usize) -> oxcd_testkit::cluster::Builder {
    let b = Cluster::builder(Impl::Etcd)
        .names(&["t1"])
        .token("oxctl-test");
    let b = match members {
        1 => b,
        n => b.members(n).token("oxctl-test-3"),
    };
    match std::env::var_os("OXCTL_TEST_SERVER") {
        Some(bin) => b.program(Path::new(&bin)),
        None => b,
    }
}

/// The global flags that reach every member of `c`: `--endpoints=ip:2379,...` (no scheme)
/// and, for TLS, the client certificate flags.
pub fn flags(c: &Cluster) -> Vec<String> {
    let eps: Vec<String> = (0..c.len()).map(|i| c.host_port(i)).collect();
    let mut f = vec![format!("--endpoints={}", eps.join(","))];
    f.extend(
        c.client_certs()
            .map(|certs| tls_flags(&certs))
            .unwrap_or_default(),
    );
    f
}

/// Stops the member of a one-member `c` and starts it again from an empty data dir: the same
/// cluster and member ids (same name, peer URL and token), so the same commands give the
/// same output.
pub fn restart_fresh(c: &Cluster) {
    c.kill9(0);
    let data = c.data_dir(0);
    if data.exists() {
        std::fs::remove_dir_all(data).expect("remove the data dir");
    }
    c.start(0);
}

/// What one tool printed, normalised for what must differ between runs (times, client ids).
#[derive(Debug, PartialEq, Eq)]
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
    /// None when the command was stopped (or killed by a signal).
    pub code: Option<i32>,
}

impl From<Output> for Printed {
    fn from(out: Output) -> Printed {
        Printed {
            stdout: normalise(&out.stdout),
            stderr: normalise(&out.stderr),
            code: (out.code >= 0).then_some(out.code),
        }
    }
}

fn tool_cmd(bin: &str, flags: &[String], args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("ETCDCTL_API", "3").args(flags).args(args);
    cmd
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
    let mut cmd = tool_cmd(bin, flags, args);
    run_cmd(cmd.envs(env.iter().copied()), stdin.as_bytes()).into()
}

/// [`run`] with no global flags, in directory `dir` (offline commands that take paths).
pub fn run_in(bin: &str, dir: &Path, args: &[&str]) -> Printed {
    run_cmd(tool_cmd(bin, &[], args).current_dir(dir), b"").into()
}

/// Runs a command that does not end by itself (watch, keep-alive) for `dur`, then kills it.
pub fn run_for(bin: &str, flags: &[String], args: &[&str], dur: Duration) -> Printed {
    let mut p: Printed = run_cmd_for(&mut tool_cmd(bin, flags, args), b"", dur).into();
    p.code = None;
    p
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

fn is_go_duration(w: &str) -> bool {
    w.ends_with(|c: char| c.is_alphabetic()) && oxcd_gocompat::duration::parse_nanos(w).is_ok()
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

/// Changes the store through etcdctl only (setup that both tools then read).
pub fn setup(flags: &[String], args: &[&str]) {
    let p = run("etcdctl", flags, args, "");
    assert_eq!(p.code, Some(0), "setup {args:?} failed: {p:?}");
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

/// Lines in any order (for commands whose lines come in the order concurrent requests finish).
pub fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(String::from).collect();
    v.sort();
    v
}
