//! The member row: what the backend keeps of each member, and the members a new cluster
//! starts with. Rows live in backend aux table [`AUX_MEMBERS`]: key = member ID (u64
//! big-endian), value = JSON of [`Member`]; the row [`COMPLETE_KEY`] marks that the rows
//! are the whole table (written on the first membership change), so the flags no longer
//! matter. The server's member table is built on these rows; `snapshot restore` writes the
//! new cluster's members from the flags exactly as a member started with them would.

use oxcd_api::etcdserverpb::Member as PbMember;
use serde::{Deserialize, Serialize};

use crate::ids;
use crate::urls::Url;

/// The backend aux table that holds member rows.
pub const AUX_MEMBERS: u8 = 3;
/// The row that marks the member rows as the whole table.
pub const COMPLETE_KEY: &[u8] = b"complete";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    #[serde(default)]
    pub is_learner: bool,
}

impl Member {
    /// The row's value in [`AUX_MEMBERS`].
    pub fn row(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn to_pb(&self) -> PbMember {
        PbMember {
            id: self.id,
            name: self.name.clone(),
            peer_ur_ls: self.peer_urls.clone(),
            client_ur_ls: self.client_urls.clone(),
            is_learner: self.is_learner,
        }
    }
}

/// The members `--initial-cluster` (name -> peer URLs) and `--initial-cluster-token`
/// describe, with etcd's IDs, in flag order; and the cluster ID.
pub fn initial_members(initial_cluster: &[(String, Vec<Url>)], token: &str) -> (Vec<Member>, u64) {
    let members: Vec<Member> = initial_cluster
        .iter()
        .map(|(name, urls)| {
            let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
            Member {
                id: ids::member_id(&urls, token),
                name: name.clone(),
                peer_urls: urls,
                client_urls: Vec::new(),
                is_learner: false,
            }
        })
        .collect();
    let cid = ids::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());
    (members, cid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::urls::parse_initial_cluster;

    /// etcd 3.4's IDs for the tutorial's TLS cluster, from the flags.
    #[test]
    fn initial_members_have_etcds_ids() {
        let flags = "infra0=https://127.0.0.11:2380,infra1=https://127.0.0.12:2380,infra2=https://127.0.0.13:2380";
        let cluster = parse_initial_cluster(flags).unwrap_or_default();
        let (members, cid) = initial_members(&cluster, "etcd-cluster-1");
        let got: Vec<(String, String)> = members
            .iter()
            .map(|m| (m.name.clone(), format!("{:x}", m.id)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("infra0".into(), "ebe65df6aa54ec56".into()),
                ("infra1".into(), "512e6097a2c33e6".into()),
                ("infra2".into(), "fab9a8ee6b383dac".into()),
            ]
        );
        assert_eq!(format!("{cid:x}"), "4fd24aca528fb392");
        assert_eq!(members[0].peer_urls, vec!["https://127.0.0.11:2380"]);
    }

    #[test]
    fn rows_round_trip_and_old_rows_default_to_voters() {
        let m = Member {
            id: 7,
            name: "n".into(),
            peer_urls: vec!["http://h:1".into()],
            client_urls: vec![],
            is_learner: true,
        };
        assert_eq!(serde_json::from_slice::<Member>(&m.row()).ok(), Some(m));
        let old = br#"{"id":1,"name":"a","peer_urls":[],"client_urls":[]}"#;
        let m = serde_json::from_slice::<Member>(old).ok();
        assert_eq!(m.map(|m| m.is_learner), Some(false));
    }
}
