//! The data dir's layout and the records a WAL starts with, shared by the server (which
//! opens and creates data dirs) and `snapshot restore` (which builds one offline):
//!
//! ```text
//! <data-dir>/member/wal/*.wal   the raft write-ahead log (or --wal-dir)
//! <data-dir>/member/oxcd.db     the MVCC backend
//! ```
//!
//! A WAL's meta record is the JSON of [`WalMeta`] (whose data dir it is). Its snapshot
//! marker (the point raft's log starts from) is [`encode_snapshot_meta`]: the term (u64 LE),
//! then raft's `ConfState` in its protobuf encoding. See `docs/design.md`.

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::ConfState;
use serde::{Deserialize, Serialize};

use oxcd_storage::{Wal, WalError};

/// The backend's file name in the member dir.
const BACKEND_FILE: &str = "oxcd.db";

/// `<data-dir>/member`.
pub fn member_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member")
}

/// Where the write-ahead log lives: `--wal-dir`, else `<data-dir>/member/wal`.
pub fn wal_dir(data_dir: &Path, wal_dir: Option<&Path>) -> PathBuf {
    wal_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| member_dir(data_dir).join("wal"))
}

/// `<data-dir>/member/oxcd.db`.
pub fn backend_path(data_dir: &Path) -> PathBuf {
    member_dir(data_dir).join(BACKEND_FILE)
}

/// Who a data dir belongs to; the WAL's meta record.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct WalMeta {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
}

/// Why a new WAL could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CreateWalError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Meta(#[from] serde_json::Error),
}

/// Writes a new member's WAL in `dir`: its identity, then the snapshot record raft starts
/// from (index and term 1 with the initial voters for a new cluster, 0 and empty for a
/// joining member). Durable when this returns.
pub fn create_wal(
    dir: &Path,
    meta: &WalMeta,
    index: u64,
    term: u64,
    cs: &ConfState,
) -> Result<(), CreateWalError> {
    let mut wal = Wal::create(dir, &serde_json::to_vec(meta)?)?;
    wal.append_snapshot(index, &encode_snapshot_meta(term, cs));
    wal.sync()?;
    Ok(())
}

/// The encoded WAL snapshot marker: term, then the conf state.
pub fn encode_snapshot_meta(term: u64, cs: &ConfState) -> Vec<u8> {
    let mut out = term.to_le_bytes().to_vec();
    out.extend(cs.write_to_bytes().unwrap_or_default());
    out
}

/// The (term, conf state) of a WAL snapshot marker; `None` when it is damaged.
pub fn decode_snapshot_meta(b: &[u8]) -> Option<(u64, ConfState)> {
    let term = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let cs = ConfState::parse_from_bytes(&b[8..]).ok()?;
    Some((term, cs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_etcds_layout() {
        let d = Path::new("/x/n1.etcd");
        assert_eq!(wal_dir(d, None), Path::new("/x/n1.etcd/member/wal"));
        assert_eq!(wal_dir(d, Some(Path::new("/w"))), Path::new("/w"));
        assert_eq!(backend_path(d), Path::new("/x/n1.etcd/member/oxcd.db"));
    }

    #[test]
    fn snapshot_marker_round_trips_and_damage_is_none() {
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        };
        let b = encode_snapshot_meta(9, &cs);
        assert_eq!(&b[..8], &9u64.to_le_bytes());
        assert_eq!(decode_snapshot_meta(&b), Some((9, cs)));
        assert_eq!(decode_snapshot_meta(&b[..7]), None);
        assert_eq!(decode_snapshot_meta(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff]), None);
    }

    #[test]
    fn a_created_wal_replays_its_identity_and_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("wal");
        let meta = WalMeta {
            member_id: 1,
            cluster_id: 2,
            name: "n".into(),
        };
        let cs = ConfState {
            voters: vec![1],
            ..Default::default()
        };
        create_wal(&wal, &meta, 1, 1, &cs).expect("create");
        let (_, replay) = Wal::open(&wal).expect("open");
        let got: Option<WalMeta> = replay
            .meta
            .as_deref()
            .and_then(|m| serde_json::from_slice(m).ok());
        assert_eq!(got, Some(meta));
        let marker = replay.snapshot.map(|(i, p)| (i, decode_snapshot_meta(&p)));
        assert_eq!(marker, Some((1, Some((1, cs)))));
    }
}
