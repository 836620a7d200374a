//! Hostile peers (issue 16 defect 4): after the handshake, a frame claiming 1 GiB made the
//! member allocate it at once, and anyone reaching the peer port could claim any member's
//! ID. A dialer is admitted only as a member, from that member's own address; a frame is
//! read as its bytes arrive and closes the stream past its kind's limit.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use oxcd_api::etcdserverpb::{
    cluster_client::ClusterClient, MemberAddRequest, MemberRemoveRequest,
};
use oxcd_testkit::addr::{self, PEER_PORT};
use oxcd_testkit::Cluster;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::transport::Channel;

use super::{closed_within, connect_from, send};

use oxcd_server::consensus::peer::MAGIC;

/// Dials member 0's peer port from `from` claiming to be `member` of `cluster`; the stream
/// and the listener's answer (0 = admitted, else the refusal code and reason).
async fn hello(c: &Cluster, from: IpAddr, member: u64, cluster: u64) -> (TcpStream, u8, String) {
    let to = SocketAddr::new(c.ip(0).into(), PEER_PORT);
    let mut s = connect_from(from, to).await;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&member.to_be_bytes());
    out.extend_from_slice(&cluster.to_be_bytes());
    out.push(0);
    send(&mut s, &out).await;
    let code = s.read_u8().await.expect("the handshake's answer");
    let mut reason = String::new();
    if code != 0 {
        let len = s.read_u16().await.expect("the reason's length");
        let mut buf = vec![0u8; len as usize];
        s.read_exact(&mut buf).await.expect("the reason");
        reason = String::from_utf8_lossy(&buf).into_owned();
    }
    (s, code, reason)
}

/// Resident memory of process `pid`, bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A snapshot message frame from `from` to `to` announcing a file of `size` bytes with
/// CRC-32 `crc` (at index 1, term 1: stale for raft, were it ever stepped).
fn snapshot_frame(from: u64, to: u64, size: u64, crc: u32) -> Vec<u8> {
    use oxcd_server::consensus::snapshot_files::SnapshotFile;
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
    (m.from, m.to) = (from, to);
    let snap = m.mut_snapshot();
    (snap.mut_metadata().index, snap.mut_metadata().term) = (1, 1);
    let file = SnapshotFile {
        index: 1,
        term: 1,
        size_bytes: size,
        crc32: crc,
    };
    snap.data = file.encode().into();
    oxcd_server::consensus::peer::encode_frame(&m).expect("encode")
}

/// A snapshot file chunk frame.
fn chunk_frame(chunk: &[u8]) -> Vec<u8> {
    let mut f = header(3, chunk.len() as u32);
    f.extend_from_slice(chunk);
    f
}

/// A frame header: kind, then the length it claims.
fn header(kind: u8, len: u32) -> Vec<u8> {
    let mut h = vec![kind];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

pub async fn a_peer_cannot_pose_as_a_member_or_claim_memory(c: &Cluster) {
    let ch = Channel::from_shared(c.endpoint(0))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut members = ClusterClient::new(ch);
    // A learner that never starts, at an address of the test's: a member to pose as.
    let learner_at = addr::alloc();
    let add = MemberAddRequest {
        peer_ur_ls: vec![format!("http://{}", learner_at.peer())],
        is_learner: true,
    };
    let added = members
        .member_add(add)
        .await
        .expect("member add")
        .into_inner();
    let header_ = added.header.expect("header");
    let (me, cluster) = (header_.member_id, header_.cluster_id);
    let learner = added.member.expect("the new member").id;
    let elsewhere = addr::alloc();
    let (_, code, why) = hello(c, elsewhere.ip().into(), learner, cluster).await;
    assert_eq!(code, 1, "a member's ID claimed from another address");
    assert!(why.contains("comes from"), "{why}");
    let (_, code, why) = hello(c, c.ip(0).into(), me, cluster).await;
    assert_eq!(code, 1, "the member's own ID: {why}");
    let (mut s, code, why) = hello(c, learner_at.ip().into(), learner, cluster).await;
    assert_eq!(code, 0, "the learner from its own address: {why}");
    send(&mut s, &header(1, 1 << 30)).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "a message frame over its limit closes the stream"
    );
    // Issue 15: a snapshot message only describes its file; its frame has the message limit.
    let (mut s, code, _) = hello(c, learner_at.ip().into(), learner, cluster).await;
    assert_eq!(code, 0);
    send(&mut s, &header(2, 1 << 30)).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "a snapshot message frame over its limit closes the stream"
    );
    // The file it announces arrives in chunks, into a file: memory does not follow it.
    let pid = c.pid(0).expect("member 0 runs");
    let before = rss_bytes(pid);
    let (mut s, code, _) = hello(c, learner_at.ip().into(), learner, cluster).await;
    assert_eq!(code, 0);
    send(&mut s, &snapshot_frame(learner, me, 1 << 30, 0)).await;
    for _ in 0..16 {
        send(&mut s, &chunk_frame(&[7u8; 1 << 20])).await;
    }
    assert!(
        !closed_within(&mut s, Duration::from_millis(500)).await,
        "a snapshot file waits for the rest of its chunks"
    );
    let grown = rss_bytes(pid).saturating_sub(before);
    assert!(
        grown < 128 << 20,
        "the member's memory grew by {grown} bytes"
    );
    drop(s);
    // A file whose checksum is not the announced one is refused: the stream closes and the
    // snapshot never reaches raft.
    let (mut s, code, _) = hello(c, learner_at.ip().into(), learner, cluster).await;
    assert_eq!(code, 0);
    let body = [1u8; 4096];
    let mut damaged = body;
    damaged[100] ^= 1;
    send(
        &mut s,
        &snapshot_frame(learner, me, 4096, crc32fast::hash(&body)),
    )
    .await;
    send(&mut s, &chunk_frame(&damaged)).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "a damaged snapshot file closes the stream"
    );
    assert!(
        c.log(0).contains("is damaged: CRC-32"),
        "the member says why; log:\n{}",
        c.log(0)
    );
    // A chunk with no snapshot message before it closes the stream too.
    let (mut s, code, _) = hello(c, learner_at.ip().into(), learner, cluster).await;
    assert_eq!(code, 0);
    send(&mut s, &chunk_frame(&body)).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "a chunk without a snapshot closes the stream"
    );
    drop(s);
    let remove = MemberRemoveRequest { id: learner };
    members.member_remove(remove).await.expect("member remove");
}
