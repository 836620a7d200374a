//! The member table: every member's ID, name, peer URLs, client URLs and learner flag.
//! A new cluster starts from `--initial-cluster`; names and client URLs are published by each
//! member through the log (etcd's member attributes); membership changes (member add,
//! remove, update, promote) go through the log too. Rows live in backend aux table
//! [`AUX_MEMBERS`]: key = member ID (u64 big-endian), value = JSON of [`Member`]; the row
//! [`COMPLETE_KEY`] marks that the rows are the whole table (written on the first
//! membership change), so the flags no longer matter.

use oxcd_api::etcdserverpb::Member as PbMember;
use serde::{Deserialize, Serialize};

use crate::request::MemberAttrs;

pub const AUX_MEMBERS: u8 = 3;
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
        Some(m.row())
    }

    /// Applies persisted rows (at start and after a snapshot).
    pub fn load_rows(&mut self, rows: Vec<(Vec<u8>, Vec<u8>)>) {
        let complete = rows.iter().any(|(k, _)| k == COMPLETE_KEY);
        if complete {
            self.list.clear();
        }
        for (k, v) in rows {
            if k.len() != 8 {
                continue;
            }
            let Ok(m) = serde_json::from_slice::<Member>(&v) else {
                continue;
            };
            match self.list.iter_mut().find(|x| x.id == m.id) {
                Some(x) => *x = m,
                None => self.list.push(m),
            }
        }
    }

    pub fn to_pb(&self) -> Vec<PbMember> {
        self.list.iter().map(Member::to_pb).collect()
    }
}
