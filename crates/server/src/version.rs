//! The versions oxcd reports to clients and peers.

/// The version oxcd reports to clients (`Maintenance.Status`, `/version`): the etcd API level
/// it implements, so that clients that gate features on the server version behave as with
/// that etcd. 3.4.31 is the first 3.4 release whose `RequestProgress` answers only once every
/// watcher of the stream is synced (etcd issue 15220); kube-apiserver serves consistent reads
/// from its watch cache from 3.4.31 / 3.5.13 on, and oxcd behaves as 3.4.31 there (tested in
/// `tests/it`: progress on request and on the interval, `WithRequireLeader`, txn compares
/// on `mod_revision`, ranges with limit and count, the apiserver's compaction txn).
pub const ETCD_VERSION: &str = "3.4.31";
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";
