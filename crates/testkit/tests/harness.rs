//! The harness against real servers: one builder starts three members of etcd 3.4 or of
//! oxcd with TLS everywhere; etcdctl and oxctl reach them; a member killed with SIGKILL comes
//! back with its data, and so does one stopped with SIGTERM; dropping the cluster kills every
//! member. Needs the workspace's binaries (`cargo build --workspace --bins`) and etcd 3.4.

use std::time::Duration;

use oxcd_testkit::{wait_until, Cluster, Impl};

fn pid_alive(pid: u32) -> bool {
    let pid = i32::try_from(pid).expect("pid_t");
    // SAFETY: signal 0 only checks whether the pid exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn drive(kind: Impl) {
    let c = Cluster::builder(kind).members(3).tls().start();
    assert!(
        c.endpoint(0).starts_with("https://127.77."),
        "{}",
        c.endpoint(0)
    );
    c.etcdctl(0, &["put", "k", "v"], b"").ok();
    let get = ["get", "k", "--print-value-only"];
    assert_eq!(c.etcdctl(2, &get, b"").ok().stdout, "v\n");
    assert_eq!(c.oxctl(1, &get, b"").ok().stdout, "v\n");

    c.kill9(1);
    assert!(!c.is_running(1) && c.pid(1).is_none());
    // If it led, a proposal forwarded to it is lost (etcd: "request timed out"): retry.
    wait_until("a write without member 1", Duration::from_secs(30), || {
        c.etcdctl(0, &["put", "k", "w"], b"").code == 0
    });
    c.start(1);
    let local = ["get", "k", "--print-value-only", "--consistency=s"];
    wait_until(
        "the restarted member to catch up",
        Duration::from_secs(20),
        || c.etcdctl(1, &local, b"").stdout == "w\n",
    );

    // A graceful stop ends the process (oxcd with success; etcd, once shut down, raises
    // SIGTERM again on itself); it starts again on its data dir.
    let stopped = match kind {
        Impl::Oxcd => 0,
        Impl::Etcd => -1,
    };
    let code = c.stop(2, Duration::from_secs(20));
    assert_eq!(code, stopped, "log:\n{}", c.log(2));
    c.start(2);
    assert_eq!(c.etcdctl(2, &local, b"").ok().stdout, "w\n");

    let pids: Vec<u32> = (0..3).map(|i| c.pid(i).expect("running")).collect();
    assert!(pids.iter().all(|p| pid_alive(*p)));
    drop(c);
    for pid in pids {
        assert!(!pid_alive(pid), "member {pid} outlived its cluster");
    }
}

#[test]
fn one_harness_runs_etcd() {
    drive(Impl::Etcd);
}

#[test]
fn one_harness_runs_oxcd() {
    drive(Impl::Oxcd);
}
