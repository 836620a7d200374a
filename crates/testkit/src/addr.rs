//! Loopback addresses for tests: one whole `127.77.x.y` address per member, with etcd's
//! well-known ports (client 2379, peer 2380), never handed to two holders at once.
//!
//! An address is reserved by an exclusive `flock(2)` on `/tmp/oxcd-testkit/<address>.lock`,
//! held by the [`Addr`] for its whole life. The lock works across threads (each reservation
//! opens its own file description, and flock locks conflict between descriptions) and across
//! processes, so cargo may run the test binaries of several crates at once. Dropping the
//! `Addr` releases the lock (a process spawned by another thread shares the file description
//! until its exec, and delays the release by that long); the kernel releases it when a crashed
//! test's process dies. An address whose ports are still bound by someone else (a member that
//! outlived a killed test process) is skipped.
//!
//! The range is `127.77.0.1` to `127.77.15.254`, away from `127.0.0.0/24`, where the reference
//! cluster and the demo run (127.0.0.1, 127.0.0.11-13) and the scripts bind.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

/// etcd's client port, on every reserved address.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port, on every reserved address.
pub const PEER_PORT: u16 = 2380;
/// Where the lock files live (shared by every checkout on the machine).
pub const LOCK_DIR: &str = "/tmp/oxcd-testkit";
/// How many addresses the range holds (`127.77.0.1` to `127.77.15.254`).
pub const ADDRS_MAX: u32 = 16 * 254;

/// A reserved loopback address; the reservation ends when this is dropped.
#[derive(Debug)]
pub struct Addr {
    ip: Ipv4Addr,
    /// Holds the flock; closing it releases the reservation.
    _lock: File,
}

impl Addr {
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `ip:2379`.
    pub fn client(&self) -> SocketAddr {
        SocketAddr::from((self.ip, CLIENT_PORT))
    }

    /// `ip:2380`.
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::from((self.ip, PEER_PORT))
    }

    /// Any other port on this address is the holder's too.
    pub fn with_port(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.ip.fmt(f)
    }
}

/// The `n`th address of the range.
fn nth(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 77, (n / 254) as u8, (n % 254 + 1) as u8)
}

/// Reserves the lowest free address of the range; panics when all are taken.
pub fn alloc() -> Addr {
    let dir = Path::new(LOCK_DIR);
    std::fs::create_dir_all(dir)
        .unwrap_or_else(|e| panic!("cannot create the lock dir {LOCK_DIR}: {e}"));
    for n in 0..ADDRS_MAX {
        let ip = nth(n);
        if let Some(addr) = try_reserve(&dir.join(format!("{ip}.lock")), ip) {
            return addr;
        }
    }
    panic!(
        "all {ADDRS_MAX} test addresses in 127.77.0.0/20 are taken (see the locks in {LOCK_DIR}, \
         and look for members left running)"
    );
}

/// Reserves `n` addresses.
pub fn alloc_n(n: usize) -> Vec<Addr> {
    (0..n).map(|_| alloc()).collect()
}

fn try_reserve(path: &PathBuf, ip: Ipv4Addr) -> Option<Addr> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open the lock file {}: {e}", path.display()));
    // SAFETY: flock on a file descriptor this function owns; no memory is involved.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        return None;
    }
    // Someone outside the locks (a member that outlived its test) may still hold a port.
    let free = [CLIENT_PORT, PEER_PORT]
        .iter()
        .all(|port| TcpListener::bind((ip, *port)).is_ok());
    free.then_some(Addr { ip, _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_stays_off_127_0_0() {
        assert_eq!(nth(0), Ipv4Addr::new(127, 77, 0, 1));
        assert_eq!(nth(253), Ipv4Addr::new(127, 77, 0, 254));
        assert_eq!(nth(254), Ipv4Addr::new(127, 77, 1, 1));
        assert_eq!(nth(ADDRS_MAX - 1), Ipv4Addr::new(127, 77, 15, 254));
    }

    #[test]
    fn no_address_is_handed_out_twice_while_held() {
        let held = alloc_n(8);
        let mut ips: Vec<Ipv4Addr> = held.iter().map(Addr::ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 8);
        // Another thread sees them taken too.
        let other = std::thread::spawn(alloc).join().expect("thread");
        assert!(!ips.contains(&other.ip()));
    }

    #[test]
    fn a_dropped_address_can_be_reserved_again() {
        // A private lock file: other tests of this binary reserve from the shared dir.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("last.lock");
        let ip = nth(ADDRS_MAX - 1);
        let a = try_reserve(&path, ip).expect("reserve");
        assert!(try_reserve(&path, ip).is_none(), "held twice");
        drop(a);
        // Another test of this binary may be spawning a process at this moment: between fork
        // and exec the child shares every open file description, this lock's too, so the
        // release can lag by the length of one fork. Wait for it, within bounds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let again = loop {
            match try_reserve(&path, ip) {
                Some(again) => break Some(again),
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                None => break None,
            }
        };
        assert!(again.is_some(), "not released within 5 s");
    }

    #[test]
    fn another_process_cannot_take_a_held_address() {
        let a = alloc();
        let path = Path::new(LOCK_DIR).join(format!("{a}.lock"));
        let taken = std::process::Command::new("flock")
            .args(["--nonblock", "--conflict-exit-code", "75"])
            .arg(&path)
            .arg("true")
            .status()
            .expect("run flock(1) from util-linux");
        assert_eq!(taken.code(), Some(75), "another process got {a}");
    }
}
