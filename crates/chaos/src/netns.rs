//! The network namespace a run lives in, and the firewall inside it. The outer `oxchaos`
//! creates the namespace, re-runs itself inside it (`ip netns exec`), and afterwards kills
//! every process still in it and removes it, also after a failure or Ctrl-C. Partitions are
//! nftables rules in the namespace's own `inet oxchaos` table: nothing outside is touched.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// The peer port every member listens on (each on its own 127.0.0.x address).
pub const PEER_PORT: u16 = 2380;
/// The client port every member listens on.
pub const CLIENT_PORT: u16 = 2379;

/// Fails, saying what is missing, unless we are root with `ip` and `nft` on PATH.
pub fn require_root_and_tools() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "oxchaos must run as root: it creates a network namespace (ip netns add) and \
             firewall rules inside it (nft); run it with sudo"
        );
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !on_path(tool) {
            bail!(
                "`{tool}` is not on PATH: install the Debian package {package} \
                 (apt-get install {package}, or scripts/install-deps)"
            );
        }
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Runs a command to completion (bounded), failing with its stderr.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} {args:?} did not finish within 30s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace owned by this process: removed (with everything in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> anyhow::Result<Netns> {
        // A namespace left by a crashed earlier run with the same name goes first.
        if sh("ip", &["netns", "list"])?
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
        {
            Netns {
                name: name.to_string(),
            }
            .remove();
        }
        sh("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        sh(
            "ip",
            &["netns", "exec", name, "ip", "link", "set", "lo", "up"],
        )?;
        Ok(ns)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// SIGKILLs every process in the namespace (bounded retries), then deletes it.
    pub fn remove(&self) {
        for _ in 0..50 {
            let pids = sh("ip", &["netns", "pids", &self.name]).unwrap_or_default();
            let pids: Vec<i32> = pids
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) with a pid we just listed; a stale pid fails harmlessly.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = sh("ip", &["netns", "del", &self.name]) {
            eprintln!(
                "oxchaos: cannot remove network namespace {}: {e}",
                self.name
            );
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The nftables table inside the namespace (run from inside it).
pub struct Firewall;

impl Firewall {
    pub fn setup() -> anyhow::Result<Firewall> {
        sh("nft", &["add", "table", "inet", "oxchaos"])?;
        sh(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "oxchaos",
                "output",
                "{ type filter hook output priority 0 ; policy accept ; }",
            ],
        )?;
        Ok(Firewall)
    }

    /// Drops every peer message `from` sends to `to` (one direction: `to` can still send
    /// to `from` on its own connection).
    pub fn drop_one_way(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let port = PEER_PORT.to_string();
        sh(
            "nft",
            &[
                "add", "rule", "inet", "oxchaos", "output", "ip", "saddr", from, "ip", "daddr", to,
                "tcp", "dport", &port, "drop",
            ],
        )?;
        Ok(())
    }

    /// Drops `per_mille` of the packets of every peer connection, both directions, at
    /// random (`numgen random`: this kernel has no netem).
    pub fn lossy(&self, per_mille: u32) -> anyhow::Result<()> {
        let port = PEER_PORT.to_string();
        let cut = per_mille.to_string();
        for dir in ["dport", "sport"] {
            sh(
                "nft",
                &[
                    "add", "rule", "inet", "oxchaos", "output", "tcp", dir, &port, "numgen",
                    "random", "mod", "1000", "lt", &cut, "drop",
                ],
            )?;
        }
        Ok(())
    }

    pub fn cut(&self, a: &str, b: &str) -> anyhow::Result<()> {
        self.drop_one_way(a, b)?;
        self.drop_one_way(b, a)
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        sh("nft", &["flush", "chain", "inet", "oxchaos", "output"])?;
        Ok(())
    }
}
