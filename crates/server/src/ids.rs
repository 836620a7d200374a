//! Member and cluster IDs, computed exactly as etcd computes them for a static bootstrap
//! (`oxcd_snapshot::ids`, shared with `snapshot restore`, which must give a restored
//! member the ID the server will compute from the same flags).

pub use oxcd_snapshot::ids::{cluster_id, member_id};
