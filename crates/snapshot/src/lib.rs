//! oxcd's snapshots, offline: snapshot files in etcd's bbolt format, read ([`from_etcd`])
//! and written ([`to_etcd`]), the `OXCDSNP1` format of older oxcd releases ([`file`]),
//! `snapshot restore` (a new cluster's data dir from a snapshot, [`restore`]), `snapshot
//! status` ([`status`]), and what both the server and the restore need to agree on: the
//! data-dir layout and the records a WAL starts with ([`layout`]), etcd's member and
//! cluster IDs ([`ids`]), the member row ([`members`]), the lease, auth and alarm rows
//! ([`rows`]) and `--initial-cluster`/URL parsing ([`urls`]).
//!
//! The server builds on this crate (it streams snapshots and opens data dirs with it), and
//! `oxctl` uses it for `snapshot status` and `snapshot restore` without linking the server,
//! as etcd moved the same job from `etcdctl` into `etcdutl`. Depends on `oxcd-storage` (the
//! backend and WAL), `oxcd-bbolt` (etcd's file format), `oxcd-api` (the member message) and
//! raft-rs (the WAL snapshot marker holds raft's `ConfState`), never on the server.

pub mod file;
pub mod from_etcd;
pub mod ids;
pub mod layout;
pub mod members;
pub mod restore;
pub mod rows;
pub mod status;
pub mod to_etcd;
pub mod urls;

pub use file::{
    backend_hash, backend_hash_of, encode_snapshot, snapshot_body, SnapshotFileError,
    SNAPSHOT_ALIGN, SNAPSHOT_MAGIC,
};
pub use restore::{
    check_options, restore, restore_checked, RestoreConfig, RestoreOptions, Restored,
};
pub use status::{snapshot_status, SnapshotStatus};
pub use urls::{parse_initial_cluster, parse_urls, FlagError, Url};
