//! The server's process-level tests, in one binary: real `oxcd` processes, the real etcd
//! 3.4, etcdctl, curl and cfssl, through oxcd-testkit's cluster harness (every member on its
//! own reserved loopback address, killed when its test ends). One module per subject.

mod auth;
mod bad_flags;
mod cluster;
mod durability_kill9;
mod etcd_migration;
mod etcd_snapshots;
mod etcdctl_parity;
mod flag_effects;
mod gateway;
mod grpc_framing;
mod grpc_parity;
mod h2_authority;
mod hostile;
mod lease;
mod limits;
mod lock_election;
mod maintenance;
mod membership;
mod production;
mod prometheus;
mod snapshot_restore;
mod tls_options;
mod tls_single_member;
mod v2_api;
mod watch;
mod watch_lease_parity;

use oxcd_testkit::{Cluster, Impl};

/// Three plain oxcd members with `flags`, started and ready.
fn three(flags: &[&str]) -> Cluster {
    Cluster::builder(Impl::Oxcd)
        .members(3)
        .flags(flags.iter().copied())
        .start()
}

/// Three oxcd members with TLS everywhere, as the tutorial sets a cluster up (client
/// certificates required on https client URLs, mutual TLS between peers, certificates from
/// the real cfssl), each with `flags`; started and ready.
fn tls3(flags: &[&str]) -> Cluster {
    Cluster::builder(Impl::Oxcd)
        .members(3)
        .tls()
        .flags(flags.iter().copied())
        .start()
}

/// Member `i`'s ID as etcd computes it from its peer URL and the cluster token.
fn member_id(c: &Cluster, i: usize) -> u64 {
    oxcd_server::ids::member_id(&[c.peer_url(i)], c.token())
}
