//! The member table: every member's ID, name, peer URLs and client URLs. Peer URLs come from
//! the bootstrap configuration; names and client URLs are published by each member through
//! the log (etcd's member attributes) and kept in backend aux table [`AUX_MEMBERS`]
//! (key = member ID big-endian, value = JSON `{name, client_urls}`).

use oxcd_api::etcdserverpb::Member as PbMember;
use serde::{Deserialize, Serialize};

use crate::request::MemberAttrs;

pub const AUX_MEMBERS: u8 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct AttrsRow {
    name: String,
    client_urls: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Members {
    pub list: Vec<Member>,
}

impl Members {
    pub fn new(list: Vec<Member>) -> Members {
        Members { list }
    }

    pub fn get(&self, id: u64) -> Option<&Member> {
        self.list.iter().find(|m| m.id == id)
    }

    /// Records published attributes; returns the row to persist when the member is known.
    pub fn set_attrs(&mut self, a: &MemberAttrs) -> Option<Vec<u8>> {
        let m = self.list.iter_mut().find(|m| m.id == a.id)?;
        m.name = a.name.clone();
        m.client_urls = a.client_urls.clone();
        serde_json::to_vec(&AttrsRow {
            name: a.name.clone(),
            client_urls: a.client_urls.clone(),
        })
        .ok()
    }

    /// Applies persisted attribute rows (at start and after a snapshot).
    pub fn load_attrs(&mut self, rows: Vec<(Vec<u8>, Vec<u8>)>) {
        for (k, v) in rows {
            let Ok(id) = <[u8; 8]>::try_from(k.as_slice()).map(u64::from_be_bytes) else {
                continue;
            };
            let Ok(row) = serde_json::from_slice::<AttrsRow>(&v) else {
                continue;
            };
            if let Some(m) = self.list.iter_mut().find(|m| m.id == id) {
                m.name = row.name;
                m.client_urls = row.client_urls;
            }
        }
    }

    /// The gRPC form, for MemberList and friends.
    pub fn to_pb(&self) -> Vec<PbMember> {
        self.list
            .iter()
            .map(|m| PbMember {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: false,
            })
            .collect()
    }
}
