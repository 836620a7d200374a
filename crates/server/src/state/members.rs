//! The member table: every member's ID, name, peer URLs, client URLs and learner flag.
//! A new cluster starts from `--initial-cluster`; names and client URLs are published by each
//! member through the log (etcd's member attributes); membership changes (member add,
//! remove, update, promote) go through the log too. The row format ([`Member`] as JSON in
//! backend aux table [`AUX_MEMBERS`], [`COMPLETE_KEY`] once the rows are the whole table) is
//! `oxcd_snapshot::members`, shared with `snapshot restore`.

use oxcd_api::etcdserverpb::Member as PbMember;

pub use oxcd_snapshot::members::{Member, AUX_MEMBERS, COMPLETE_KEY};

use crate::request::MemberAttrs;

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
