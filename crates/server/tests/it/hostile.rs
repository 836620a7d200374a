//! Issue 16: what a hostile client, a hostile peer or a careless operator did to a member in
//! a probe, each check proving that the member now refuses it, clearly, and keeps serving
//! everyone else. One single-member cluster for the whole module (`--max-connections=40`,
//! `--max-watchers=20`, so the bounds are reached fast); the checks that damage the data dir
//! come last. Attackers connect from loopback addresses of their own (reserved like a
//! member's), so that the per-address bounds tell them from the other clients.

mod clients;
mod disk;
mod peers;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use oxcd_testkit::{Cluster, Impl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[test]
fn hostile_clients_peers_and_disks_are_refused_and_bounded() {
    let c = Cluster::builder(Impl::Oxcd)
        .members(1)
        .token("hostile")
        .flags(["--max-connections=40", "--max-watchers=20"])
        .start();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let idle = clients::idle_connections_cannot_lock_clients_out(&c).await;
        clients::established_connections_are_bounded_per_address(&c).await;
        clients::one_connection_cannot_take_every_watcher(&c).await;
        clients::a_txn_nested_too_deep_is_refused_at_once(&c).await;
        clients::v2_ttl_and_body_limits(&c).await;
        clients::v2_waits_are_bounded_per_connection(&c).await;
        clients::member_add_checks_its_urls(&c).await;
        peers::a_peer_cannot_pose_as_a_member_or_claim_memory(&c).await;
        clients::prev_kv_in_a_txn_needs_read(&c).await;
        clients::idle_connections_are_closed_in_time(idle).await;
    });
    disk::a_second_oxcd_on_the_data_dir_is_refused(&c);
    disk::a_flipped_byte_in_the_backend_is_found_on_open(&c);
    disk::a_bad_crc_in_a_complete_wal_record_is_refused(&c);
}

/// Connects to `to` from `from` (a loopback address of the attacker's).
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::new(from, 0)).expect("bind");
    s.connect(to).await.expect("connect")
}

/// True once the server has closed `s` (end of stream or reset), reading whatever it sent
/// until then; false if it is still open after `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Writes `bytes`, ignoring a connection the server already closed.
async fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes).await;
}
