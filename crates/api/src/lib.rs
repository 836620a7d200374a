//! etcd v3 gRPC API: protobuf messages, tonic server traits and tonic clients, byte-for-byte wire-compatible with etcd.
//!
//! The protos in `proto/` keep etcd's package, service, message and field
//! names and numbers, so gRPC paths such as `/etcdserverpb.KV/Range` and every
//! encoded message are those etcd and its clients use. Field names that etcd
//! spells in camel case become snake case in Rust (`peerURLs` is `peer_ur_ls`,
//! `TTL` is `ttl`, `ID` is `id`).

/// Key-value pairs and watch events (`mvccpb`).
#[allow(clippy::all)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions (`authpb`).
#[allow(clippy::all)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// KV, Watch, Lease, Cluster, Maintenance and Auth services (`etcdserverpb`).
#[allow(clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The Lock service (`v3lockpb`).
#[allow(clippy::all)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// The Election service (`v3electionpb`).
#[allow(clippy::all)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// Every message and service above as an encoded `google.protobuf.FileDescriptorSet`, for
/// code that works on messages by name (proto3's JSON mapping in the server's gateway).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/etcd_descriptors.bin"));
