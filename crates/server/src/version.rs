//! The versions oxcd reports to clients and peers.

/// The version oxcd reports to clients: the etcd API level it implements, so that clients
/// that gate features on the server version behave as with etcd 3.4.
pub const ETCD_VERSION: &str = "3.4.23";
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";
