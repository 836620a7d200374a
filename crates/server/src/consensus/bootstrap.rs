//! Opening a data dir: a new member writes its identity to a fresh WAL; a restarting member
//! proves the data dir is its own, rebuilds raft's log from the WAL and picks up the backend
//! where it was last durable. Layout: `<data-dir>/member/wal/*.wal` and
//! `<data-dir>/member/oxcd.db` (see `docs/design.md`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use serde::{Deserialize, Serialize};

use oxcd_storage::{Store, Wal};

use crate::config::Config;
use crate::consensus::log_store::{decode_snapshot_meta, encode_snapshot_meta};
use crate::ids;
use crate::state::members::{Member, Members};

/// Who a data dir belongs to; the WAL's meta record.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct WalMeta {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
}

pub struct Boot {
    pub mem: MemStorage,
    pub wal: Wal,
    pub store: Arc<Store>,
    pub conf_state: ConfState,
    pub last_snapshot_index: u64,
    pub applied: u64,
    pub member_id: u64,
    pub cluster_id: u64,
    pub members: Members,
    pub fresh: bool,
}

pub fn member_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member")
}

/// The members the flags describe, with etcd's IDs.
pub fn initial_members(cfg: &Config) -> (Vec<Member>, u64) {
    let members: Vec<Member> = cfg
        .initial_cluster
        .iter()
        .map(|(name, urls)| {
            let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
            Member {
                id: ids::member_id(&urls, &cfg.initial_cluster_token),
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

/// Where the write-ahead log lives: `--wal-dir`, else `<data-dir>/member/wal`.
pub fn wal_dir(cfg: &Config) -> PathBuf {
    cfg.wal_dir
        .clone()
        .unwrap_or_else(|| member_dir(&cfg.data_dir).join("wal"))
}

/// True when the data dir has no WAL yet (a member that has never run).
pub fn is_fresh(cfg: &Config) -> bool {
    !Wal::exists(&wal_dir(cfg))
}

/// Writes a new member's WAL: its identity, then the snapshot record raft starts from
/// (index and term 1 with the initial voters for a new cluster, 0 and empty for a joining
/// member). Durable when this returns.
pub fn create_wal(
    dir: &Path,
    meta: &WalMeta,
    index: u64,
    term: u64,
    cs: &ConfState,
) -> anyhow::Result<()> {
    let mut wal = Wal::create(dir, &serde_json::to_vec(meta)?)?;
    wal.append_snapshot(index, &encode_snapshot_meta(term, cs));
    wal.sync()?;
    Ok(())
}

/// Opens the data dir. `join` is the membership fetched from running members, for a new
/// member started with `--initial-cluster-state existing`.
pub fn open(
    cfg: &Config,
    join: Option<crate::consensus::peer::Membership>,
) -> anyhow::Result<Boot> {
    let (mut members, mut cluster_id) = initial_members(cfg);
    let mut member_id = members
        .iter()
        .find(|m| m.name == cfg.name)
        .map(|m| m.id)
        .context("local member missing from --initial-cluster")?;
    if let Some(j) = join {
        let mut mine: Vec<String> = cfg
            .initial_advertise_peer_urls
            .iter()
            .map(|u| u.to_string())
            .collect();
        mine.sort();
        let me = j.members.iter().find(|m| {
            let mut urls = m.peer_urls.clone();
            urls.sort();
            urls == mine
        });
        let Some(me) = me else {
            bail!(
                "this member's peer URLs ({}) are not in the cluster's member list; add it first (etcdctl member add {} --peer-urls={})",
                mine.join(","), cfg.name, mine.join(",")
            );
        };
        member_id = me.id;
        cluster_id = j.cluster_id;
        members = j.members.clone();
        if let Some(m) = members.iter_mut().find(|m| m.id == member_id) {
            m.name = cfg.name.clone();
        }
    }
    let mdir = member_dir(&cfg.data_dir);
    let wal_dir = wal_dir(cfg);
    let db_path = mdir.join("oxcd.db");
    if mdir.join("snap").join("db").exists() {
        bail!(
            "data dir {} holds an etcd (bbolt) backend, not oxcd's; use an empty --data-dir",
            cfg.data_dir.display()
        );
    }
    let fresh = !Wal::exists(&wal_dir);
    if fresh && db_path.exists() {
        bail!(
            "data dir {} has a backend but no write-ahead log: it is damaged or incomplete; refusing to serve it",
            cfg.data_dir.display()
        );
    }
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let (wal, replay) = if fresh {
        std::fs::create_dir_all(&mdir)
            .with_context(|| format!("cannot create data dir {}", mdir.display()))?;
        let meta = WalMeta {
            member_id,
            cluster_id,
            name: cfg.name.clone(),
        };
        // A new cluster starts from a snapshot at index 1, term 1 holding the initial voters
        // (as raft-rs bootstraps): a member added later has index 0, so the leader sends it
        // a snapshot, and with it the whole membership. A member joining an existing cluster
        // starts empty and learns everything from that snapshot.
        let (index, cs) = if cfg.initial_cluster_new {
            let cs = ConfState {
                voters: ids.clone(),
                ..Default::default()
            };
            (1, cs)
        } else {
            (0, ConfState::default())
        };
        create_wal(&wal_dir, &meta, index, index, &cs)?;
        let (wal, replay) = Wal::open(&wal_dir)?;
        (wal, replay)
    } else {
        Wal::open(&wal_dir)
            .with_context(|| format!(
                "cannot open the write-ahead log in {}; if it is damaged, remove this member (etcdctl member remove), empty its data dir and add it back (etcdctl member add, --initial-cluster-state existing), or restore a snapshot into a new cluster (oxctl snapshot restore)",
                wal_dir.display()
            ))?
    };
    let meta: WalMeta = serde_json::from_slice(replay.meta.as_deref().unwrap_or_default())
        .context("the write-ahead log has no readable member record; the data dir is damaged")?;
    if !fresh && meta.name == cfg.name && !cfg.initial_cluster_new {
        // A member that joined at runtime: its identity is the one recorded at join time.
        member_id = meta.member_id;
        cluster_id = meta.cluster_id;
    }
    if meta.member_id != member_id || meta.cluster_id != cluster_id {
        bail!(
            "data dir {} belongs to member {:x} ({}) of cluster {:x}, but the flags describe member {:x} ({}) of cluster {:x}; use that member's flags or another --data-dir",
            cfg.data_dir.display(), meta.member_id, meta.name, meta.cluster_id, member_id, cfg.name, cluster_id
        );
    }
    let store = Arc::new(
        Store::open(&db_path)
            .with_context(|| format!("cannot open backend {}", db_path.display()))?,
    );
    let (snap_index, snap_payload) = replay
        .snapshot
        .clone()
        .context("the write-ahead log has no snapshot record; the data dir is damaged")?;
    let (snap_term, mut conf_state) = decode_snapshot_meta(&snap_payload)
        .context("the write-ahead log's snapshot record is damaged")?;
    let mem = MemStorage::new();
    if snap_index == 0 {
        mem.initialize_with_conf_state(conf_state.clone());
    } else {
        mem.wl()
            .apply_snapshot(snapshot(snap_index, snap_term, &conf_state))?;
    }
    let mut entries = Vec::with_capacity(replay.entries.len());
    let mut expect = snap_index + 1;
    for (index, bytes) in &replay.entries {
        if *index != expect {
            bail!(
                "the write-ahead log skips from index {} to {index}; it is damaged",
                expect - 1
            );
        }
        entries.push(Entry::parse_from_bytes(bytes).context("a log entry does not decode")?);
        expect += 1;
    }
    mem.wl().append(&entries)?;
    let mut hs = match &replay.state {
        Some(b) => HardState::parse_from_bytes(b).context("the raft hard state does not decode")?,
        None => HardState::default(),
    };
    let (ci, ct) = store.consistent_index();
    let last_index = expect - 1;
    let mut wal = wal;
    let mut last_snapshot_index = snap_index;
    if ci > last_index {
        // The backend took a snapshot from the leader that the WAL did not record yet.
        mem.wl().apply_snapshot(snapshot(ci, ct, &conf_state))?;
        wal.append_snapshot(ci, &encode_snapshot_meta(ct, &conf_state));
        wal.sync()?;
        last_snapshot_index = ci;
    }
    if ci > snap_index && ci <= last_index {
        // Conf changes applied to the backend are replayed from the log; nothing to do.
    }
    if hs.commit < ci {
        hs.commit = ci;
    }
    if hs.term < ct {
        hs.term = ct;
    }
    mem.wl().set_hardstate(hs);
    conf_state = raft::Storage::initial_state(&mem)
        .map(|s| s.conf_state)
        .unwrap_or(conf_state);
    let mut members = Members::new(members);
    members.load_rows(store.aux_load(crate::state::members::AUX_MEMBERS)?);
    Ok(Boot {
        mem,
        wal,
        store,
        conf_state,
        last_snapshot_index,
        applied: ci,
        member_id,
        cluster_id,
        members,
        fresh,
    })
}

fn snapshot(index: u64, term: u64, cs: &ConfState) -> Snapshot {
    let mut s = Snapshot::default();
    let m = s.mut_metadata();
    m.index = index;
    m.term = term;
    m.set_conf_state(cs.clone());
    s
}
