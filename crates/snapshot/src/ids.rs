//! Member and cluster IDs, computed exactly as etcd computes them for a static bootstrap, so
//! that `etcdctl member list` shows the same IDs for the same flags.

use sha1::{Digest, Sha1};

/// A member's ID: the first 8 bytes (big-endian) of SHA-1 over its peer URLs (sorted,
/// concatenated) followed by the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    first_u64(&h.finalize())
}

/// The cluster's ID: the first 8 bytes of SHA-1 over the sorted member IDs, each as 8
/// big-endian bytes.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IDs etcd 3.4 gives the tutorial's TLS cluster on 127.0.0.11-13.
    #[test]
    fn matches_etcd() {
        let token = "etcd-cluster-1";
        let ids: Vec<u64> = ["11", "12", "13"]
            .iter()
            .map(|n| member_id(&[format!("https://127.0.0.{n}:2380")], token))
            .collect();
        assert_eq!(
            ids.iter().map(|i| format!("{i:x}")).collect::<Vec<_>>(),
            vec!["ebe65df6aa54ec56", "512e6097a2c33e6", "fab9a8ee6b383dac"]
        );
        assert_eq!(format!("{:x}", cluster_id(&ids)), "4fd24aca528fb392");
    }
}
