//! Opening a data dir: a new member writes its identity to a fresh WAL; a restarting member
//! proves the data dir is its own, rebuilds raft's log from the WAL and picks up the backend
//! where it was last durable. Layout: `<data-dir>/member/wal/*.wal` and
//! `<data-dir>/member/oxcd.db` (`oxcd_snapshot::layout`, shared with `snapshot restore`;
//! see `docs/design.md`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;

use oxcd_snapshot::layout::{
    self, create_wal, decode_snapshot_meta, encode_snapshot_meta, WalMeta,
};
use oxcd_snapshot::members::initial_members;
use oxcd_storage::wal::Replay;
use oxcd_storage::{Store, Wal};

pub use oxcd_snapshot::layout::member_dir;

use crate::config::Config;
use crate::consensus::peer::Membership;
use crate::state::members::{Member, Members, AUX_MEMBERS};

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

/// Where the write-ahead log lives: `--wal-dir`, else `<data-dir>/member/wal`.
pub fn wal_dir(cfg: &Config) -> PathBuf {
    layout::wal_dir(&cfg.data_dir, cfg.wal_dir.as_deref())
}

/// True when the data dir has no WAL yet (a member that has never run).
pub fn is_fresh(cfg: &Config) -> bool {
    !Wal::exists(&wal_dir(cfg))
}

/// Opens the data dir. `join` is the membership fetched from running members, for a new
/// member started with `--initial-cluster-state existing`.
pub fn open(cfg: &Config, join: Option<Membership>) -> anyhow::Result<Boot> {
    let mut id = identity(cfg, join)?;
    let wal_dir = wal_dir(cfg);
    let db_path = layout::backend_path(&cfg.data_dir);
    let fresh = check_data_dir(cfg, &wal_dir, &db_path)?;
    let (mut wal, replay) = open_wal(cfg, &id, &wal_dir, fresh)?;
    check_owner(cfg, &replay, fresh, &mut id)?;
    let store = Arc::new(
        Store::open_with_cache(&db_path, cfg.backend_cache_bytes)
            .with_context(|| format!("cannot open backend {}", db_path.display()))?,
    );
    let log = rebuild_log(&replay)?;
    let (applied, last_snapshot_index) =
        catch_up_with_backend(&log, &mut wal, &store, replay.state.as_deref())?;
    let conf_state = raft::Storage::initial_state(&log.mem)
        .map(|s| s.conf_state)
        .unwrap_or(log.conf_state);
    let mut members = Members::new(id.members);
    members.load_rows(store.aux_load(AUX_MEMBERS)?);
    Ok(Boot {
        mem: log.mem,
        wal,
        store,
        conf_state,
        last_snapshot_index,
        applied,
        member_id: id.member_id,
        cluster_id: id.cluster_id,
        members,
        fresh,
    })
}

/// Who this member is and with whom: the flags' members and etcd's IDs, or, when joining a
/// running cluster, that cluster's membership and the ID it gave this member's peer URLs.
struct Identity {
    members: Vec<Member>,
    member_id: u64,
    cluster_id: u64,
}

fn identity(cfg: &Config, join: Option<Membership>) -> anyhow::Result<Identity> {
    let (members, cluster_id) = initial_members(&cfg.initial_cluster, &cfg.initial_cluster_token);
    let member_id = members
        .iter()
        .find(|m| m.name == cfg.name)
        .map(|m| m.id)
        .context("local member missing from --initial-cluster")?;
    let Some(join) = join else {
        return Ok(Identity {
            members,
            member_id,
            cluster_id,
        });
    };
    let mut mine: Vec<String> = cfg
        .initial_advertise_peer_urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    mine.sort();
    let me = join.members.iter().find(|m| {
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
    let member_id = me.id;
    let mut members = join.members;
    if let Some(m) = members.iter_mut().find(|m| m.id == member_id) {
        m.name = cfg.name.clone();
    }
    Ok(Identity {
        members,
        member_id,
        cluster_id: join.cluster_id,
    })
}

/// Refuses a data dir that is not ours or is half there; returns whether it is new (no WAL).
fn check_data_dir(cfg: &Config, wal_dir: &Path, db_path: &Path) -> anyhow::Result<bool> {
    if member_dir(&cfg.data_dir).join("snap").join("db").exists() {
        bail!(
            "data dir {} holds an etcd (bbolt) backend, not oxcd's; use an empty --data-dir",
            cfg.data_dir.display()
        );
    }
    let fresh = !Wal::exists(wal_dir);
    if fresh && db_path.exists() {
        bail!(
            "data dir {} has a backend but no write-ahead log: it is damaged or incomplete; refusing to serve it",
            cfg.data_dir.display()
        );
    }
    Ok(fresh)
}

/// Opens the WAL; a `fresh` member first writes its identity and starting snapshot record.
fn open_wal(
    cfg: &Config,
    id: &Identity,
    wal_dir: &Path,
    fresh: bool,
) -> anyhow::Result<(Wal, Replay)> {
    if !fresh {
        return Wal::open(wal_dir).with_context(|| format!(
            "cannot open the write-ahead log in {}; if it is damaged, remove this member (etcdctl member remove), empty its data dir and add it back (etcdctl member add, --initial-cluster-state existing), or restore a snapshot into a new cluster (oxctl snapshot restore)",
            wal_dir.display()
        ));
    }
    let mdir = member_dir(&cfg.data_dir);
    std::fs::create_dir_all(&mdir)
        .with_context(|| format!("cannot create data dir {}", mdir.display()))?;
    let meta = WalMeta {
        member_id: id.member_id,
        cluster_id: id.cluster_id,
        name: cfg.name.clone(),
    };
    // A new cluster starts from a snapshot at index 1, term 1 holding the initial voters
    // (as raft-rs bootstraps): a member added later has index 0, so the leader sends it
    // a snapshot, and with it the whole membership. A member joining an existing cluster
    // starts empty and learns everything from that snapshot.
    let (index, cs) = if cfg.initial_cluster_new {
        let cs = ConfState {
            voters: id.members.iter().map(|m| m.id).collect(),
            ..Default::default()
        };
        (1, cs)
    } else {
        (0, ConfState::default())
    };
    create_wal(wal_dir, &meta, index, index, &cs)?;
    Ok(Wal::open(wal_dir)?)
}

/// Proves the data dir is this member's: the WAL's member record must name the member and
/// cluster the flags describe (a member that joined at runtime keeps the IDs it was given).
fn check_owner(
    cfg: &Config,
    replay: &Replay,
    fresh: bool,
    id: &mut Identity,
) -> anyhow::Result<()> {
    let meta: WalMeta = serde_json::from_slice(replay.meta.as_deref().unwrap_or_default())
        .context("the write-ahead log has no readable member record; the data dir is damaged")?;
    if !fresh && meta.name == cfg.name && !cfg.initial_cluster_new {
        // A member that joined at runtime: its identity is the one recorded at join time.
        id.member_id = meta.member_id;
        id.cluster_id = meta.cluster_id;
    }
    if meta.member_id != id.member_id || meta.cluster_id != id.cluster_id {
        bail!(
            "data dir {} belongs to member {:x} ({}) of cluster {:x}, but the flags describe member {:x} ({}) of cluster {:x}; use that member's flags or another --data-dir",
            cfg.data_dir.display(), meta.member_id, meta.name, meta.cluster_id, id.member_id, cfg.name, id.cluster_id
        );
    }
    Ok(())
}

/// raft's in-memory log as the WAL has it: from the snapshot record on.
struct RebuiltLog {
    mem: MemStorage,
    snap_index: u64,
    last_index: u64,
    /// The snapshot record's conf state.
    conf_state: ConfState,
}

/// Rebuilds raft's log from the WAL's snapshot record and the entries after it, which must
/// follow it without a gap.
fn rebuild_log(replay: &Replay) -> anyhow::Result<RebuiltLog> {
    let (snap_index, snap_payload) = replay
        .snapshot
        .as_ref()
        .context("the write-ahead log has no snapshot record; the data dir is damaged")?;
    let snap_index = *snap_index;
    let (snap_term, conf_state) = decode_snapshot_meta(snap_payload)
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
    Ok(RebuiltLog {
        mem,
        snap_index,
        last_index: expect - 1,
        conf_state,
    })
}

/// Sets raft's hard state from the WAL's, raised to what the backend has applied (its
/// consistent index and term). Returns (applied index, last snapshot index).
fn catch_up_with_backend(
    log: &RebuiltLog,
    wal: &mut Wal,
    store: &Store,
    hard_state: Option<&[u8]>,
) -> anyhow::Result<(u64, u64)> {
    let mut hs = match hard_state {
        Some(b) => HardState::parse_from_bytes(b).context("the raft hard state does not decode")?,
        None => HardState::default(),
    };
    let (ci, ct) = store.consistent_index();
    let mut last_snapshot_index = log.snap_index;
    if ci > log.last_index {
        // The backend took a snapshot from the leader that the WAL did not record yet.
        log.mem
            .wl()
            .apply_snapshot(snapshot(ci, ct, &log.conf_state))?;
        wal.append_snapshot(ci, &encode_snapshot_meta(ct, &log.conf_state));
        wal.sync()?;
        last_snapshot_index = ci;
    }
    // When the backend is within the log (snap_index < ci <= last_index), the conf changes
    // it applied are replayed from the log: nothing to do.
    hs.commit = hs.commit.max(ci);
    hs.term = hs.term.max(ct);
    log.mem.wl().set_hardstate(hs);
    Ok((ci, last_snapshot_index))
}

fn snapshot(index: u64, term: u64, cs: &ConfState) -> Snapshot {
    let mut s = Snapshot::default();
    let m = s.mut_metadata();
    m.index = index;
    m.term = term;
    m.set_conf_state(cs.clone());
    s
}
