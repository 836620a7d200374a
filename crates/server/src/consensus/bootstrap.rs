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
    let wal_dir = wal_dir(cfg);
    let db_path = layout::backend_path(&cfg.data_dir);
    let fresh = check_data_dir(cfg, &wal_dir, &db_path)?;
    let mut id = if fresh {
        cfg.check_bootstrap()?;
        identity(cfg, join)?
    } else {
        // etcd reads a restarting member's identity from its WAL; the --initial-cluster*
        // flags only matter when the data dir is created.
        identity(cfg, join).unwrap_or(Identity {
            members: Vec::new(),
            member_id: 0,
            cluster_id: 0,
        })
    };
    // A data dir in use: the backend first, since opening it takes its lock. A second oxcd
    // on the same data dir stops there, before it reads (and would repair) the live WAL.
    let in_use = if fresh {
        None
    } else {
        Some(open_store(&db_path, cfg.backend_cache_bytes)?)
    };
    let (mut wal, replay) = open_wal(cfg, &id, &wal_dir, fresh)?;
    check_owner(cfg, &replay, fresh, &mut id)?;
    let store = match in_use {
        Some(store) => store,
        None => open_store(&db_path, cfg.backend_cache_bytes)?,
    };
    let log = rebuild_log(&replay)?;
    let mut members = Members::new(id.members);
    members.load_rows(store.aux_load(AUX_MEMBERS)?);
    let (applied, last_snapshot_index) =
        catch_up_with_backend(&log, &mut wal, &store, &members, replay.state.as_deref())?;
    let conf_state = applied_conf_state(&log, applied)?;
    if cfg.force_new_cluster && !fresh {
        force_new_cluster(&log, &mut wal, &conf_state, &members, id.member_id)?;
    }
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

/// The configuration as of `applied`: the snapshot record's, changed by the ConfChange
/// entries after it that the backend has applied. raft-rs does not hand back entries at or
/// below `applied`, so those changes would otherwise be forgotten on restart.
fn applied_conf_state(log: &RebuiltLog, applied: u64) -> anyhow::Result<ConfState> {
    use raft::eraftpb::{ConfChange, ConfChangeType as T, EntryType};
    let mut cs = raft::Storage::initial_state(&log.mem)
        .map(|s| s.conf_state)
        .unwrap_or(log.conf_state.clone());
    let first = raft::Storage::first_index(&log.mem)?;
    let upto = applied.min(log.last_index);
    if first > upto {
        return Ok(cs);
    }
    let entries = raft::Storage::entries(
        &log.mem,
        first,
        upto + 1,
        None,
        raft::GetEntriesContext::empty(false),
    )?;
    let mut changed = false;
    for e in entries
        .iter()
        .filter(|e| e.get_entry_type() == EntryType::EntryConfChange)
    {
        let cc =
            ConfChange::parse_from_bytes(&e.data).context("a ConfChange entry does not decode")?;
        let id = cc.node_id;
        cs.voters.retain(|v| *v != id);
        cs.learners.retain(|v| *v != id);
        match cc.get_change_type() {
            T::AddNode => cs.voters.push(id),
            T::AddLearnerNode => cs.learners.push(id),
            T::RemoveNode => {}
        }
        changed = true;
    }
    if changed {
        log.mem.wl().set_conf_state(cs.clone());
    }
    Ok(cs)
}

/// etcd's `--force-new-cluster`: the disaster-recovery path when a majority is lost for
/// good. Entries past the commit index are dropped (they were never committed), and
/// committed ConfChange entries removing every other member are appended, as etcd does;
/// the raft loop applies them at start and the member is a one-member cluster with all
/// its data. Other members are then added back with `member add`.
fn force_new_cluster(
    log: &RebuiltLog,
    wal: &mut Wal,
    conf_state: &ConfState,
    members: &Members,
    me: u64,
) -> anyhow::Result<()> {
    let mut hs = log.mem.rl().hard_state().clone();
    let others: Vec<u64> = conf_state
        .voters
        .iter()
        .chain(&conf_state.learners)
        .copied()
        .filter(|id| *id != me)
        .collect();
    let mut entries = Vec::new();
    for (i, id) in others.iter().enumerate() {
        let member = members.get(*id).cloned().unwrap_or(Member {
            id: *id,
            name: String::new(),
            peer_urls: Vec::new(),
            client_urls: Vec::new(),
            is_learner: false,
        });
        let mut cc = raft::eraftpb::ConfChange::default();
        cc.set_change_type(raft::eraftpb::ConfChangeType::RemoveNode);
        cc.node_id = *id;
        cc.context =
            serde_json::to_vec(&crate::state::apply::MemberChange { req: 0, member })?.into();
        let mut e = Entry::default();
        e.set_entry_type(raft::eraftpb::EntryType::EntryConfChange);
        e.term = hs.term;
        e.index = hs.commit + 1 + i as u64;
        e.data = cc.write_to_bytes()?.into();
        entries.push(e);
    }
    let dropped = log.last_index.saturating_sub(hs.commit);
    if let Some(last) = entries.last() {
        hs.commit = last.index;
    }
    for e in &entries {
        wal.append_entry(e.index, &e.write_to_bytes()?);
    }
    wal.append_state(&hs.write_to_bytes()?);
    wal.sync()?;
    log.mem.wl().append(&entries)?;
    log.mem.wl().set_hardstate(hs);
    tracing::warn!(
        removed = ?others.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>(),
        dropped_uncommitted_entries = dropped,
        "--force-new-cluster: this member becomes a one-member cluster keeping its data; add the others back with member add"
    );
    Ok(())
}

/// Opens the backend (locking it, checking every page's checksum).
fn open_store(db_path: &Path, cache_bytes: usize) -> anyhow::Result<Arc<Store>> {
    let store = Store::open_with_cache(db_path, cache_bytes)
        .with_context(|| format!("cannot open backend {}", db_path.display()))?;
    Ok(Arc::new(store))
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
    if !fresh && meta.name == cfg.name {
        // A restart: the identity is the one the WAL recorded (a member that joined at
        // runtime keeps the IDs it was given). As etcd, edited --initial-cluster* flags are
        // ignored, with a warning.
        if (id.member_id, id.cluster_id) != (meta.member_id, meta.cluster_id) {
            tracing::warn!(
                member_id = %format!("{:x}", meta.member_id),
                cluster_id = %format!("{:x}", meta.cluster_id),
                "the --initial-cluster* flags describe another cluster than the data dir holds; they only matter when a data dir is created and are ignored on restart"
            );
        }
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
pub(crate) struct RebuiltLog {
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
///
/// The backend may hold a snapshot from the leader that the WAL does not record: the member
/// stopped between the backend's commit and the WAL's restore marker. Then the backend's
/// index is past the log, or within it but with another term (the log there holds entries
/// of an old term that the leader's snapshot replaced). Either way raft's log is replaced
/// by that snapshot, and the WAL records the restore (which drops its entries too).
fn catch_up_with_backend(
    log: &RebuiltLog,
    wal: &mut Wal,
    store: &Store,
    members: &Members,
    hard_state: Option<&[u8]>,
) -> anyhow::Result<(u64, u64)> {
    let mut hs = match hard_state {
        Some(b) => HardState::parse_from_bytes(b).context("the raft hard state does not decode")?,
        None => HardState::default(),
    };
    let (ci, ct) = store.consistent_index();
    let mut last_snapshot_index = log.snap_index;
    let log_term = raft::Storage::term(&log.mem, ci).ok();
    if ci > log.snap_index && (ci > log.last_index || log_term != Some(ct)) {
        tracing::warn!(
            "the backend holds a snapshot from the leader at index {ci} (term {ct}) that the write-ahead log does not record (log up to {}); installing it",
            log.last_index
        );
        // The backend's member table is the membership as of that snapshot.
        let cs = conf_state_of(members);
        log.mem.wl().apply_snapshot(snapshot(ci, ct, &cs))?;
        wal.append_restore(ci, &encode_snapshot_meta(ct, &cs));
        wal.sync()?;
        last_snapshot_index = ci;
    }
    // When the backend is within the log with the log's term there (snap_index < ci <=
    // last_index), the conf changes it applied are replayed from the log: nothing to do.
    hs.commit = hs.commit.max(ci);
    hs.term = hs.term.max(ct);
    log.mem.wl().set_hardstate(hs);
    Ok((ci, last_snapshot_index))
}

/// raft's configuration as a member table describes it.
fn conf_state_of(members: &Members) -> ConfState {
    let ids = |learner: bool| -> Vec<u64> {
        members
            .list
            .iter()
            .filter(|m| m.is_learner == learner)
            .map(|m| m.id)
            .collect()
    };
    ConfState {
        voters: ids(false),
        learners: ids(true),
        ..Default::default()
    }
}

fn snapshot(index: u64, term: u64, cs: &ConfState) -> Snapshot {
    let mut s = Snapshot::default();
    let m = s.mut_metadata();
    m.index = index;
    m.term = term;
    m.set_conf_state(cs.clone());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    /// A WAL with a snapshot record at 0 (one voter) and entries 1..=6 of term 1, and an
    /// empty backend beside it.
    fn wal_and_store(dir: &Path) -> (Wal, Replay, Store) {
        let wal_dir = dir.join("wal");
        let cs = ConfState {
            voters: vec![1],
            ..Default::default()
        };
        let mut wal = Wal::create(&wal_dir, b"{}").expect("create wal");
        wal.append_snapshot(0, &encode_snapshot_meta(0, &cs));
        for index in 1..=6 {
            let e = Entry {
                index,
                term: 1,
                ..Default::default()
            };
            wal.append_entry(index, &e.write_to_bytes().expect("encode"));
        }
        wal.sync().expect("sync");
        drop(wal);
        let (wal, replay) = Wal::open(&wal_dir).expect("open wal");
        let store = Store::open(&dir.join("oxcd.db")).expect("open store");
        (wal, replay, store)
    }

    fn set_applied(store: &Store, index: u64, term: u64) {
        let mut b = store.batch().expect("batch");
        b.set_consistent_index(index, term).expect("set index");
        b.commit(true).expect("commit");
    }

    fn one_voter() -> Members {
        Members::new(vec![Member {
            id: 1,
            name: "m1".into(),
            peer_urls: vec!["http://127.0.0.1:1".into()],
            client_urls: Vec::new(),
            is_learner: false,
        }])
    }

    /// The member stopped after the backend installed the leader's snapshot at 4 (term 2)
    /// but before the WAL recorded it: the log's entries 4..=6 of term 1 conflict with the
    /// leader's and must not be replayed after that snapshot.
    #[test]
    fn backend_snapshot_inside_the_log_with_another_term_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, replay, store) = wal_and_store(dir.path());
        set_applied(&store, 4, 2);
        let log = rebuild_log(&replay).expect("rebuild");
        let (applied, snap) =
            catch_up_with_backend(&log, &mut wal, &store, &one_voter(), None).expect("catch up");
        assert_eq!((applied, snap), (4, 4));
        assert_eq!(log.mem.first_index().ok(), Some(5));
        assert_eq!(
            log.mem.last_index().ok(),
            Some(4),
            "old entries after the snapshot"
        );
        assert_eq!(log.mem.term(4).ok(), Some(2));
        drop(wal);
        let (_, replay) = Wal::open(&dir.path().join("wal")).expect("reopen");
        assert_eq!(replay.snapshot.as_ref().map(|s| s.0), Some(4));
        assert!(replay.entries.is_empty(), "{:?}", replay.entries.len());
    }

    /// A backend that applied entry 4 of the log (same term) keeps the log as it is.
    #[test]
    fn backend_inside_the_log_with_its_term_keeps_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, replay, store) = wal_and_store(dir.path());
        set_applied(&store, 4, 1);
        let log = rebuild_log(&replay).expect("rebuild");
        let (applied, snap) =
            catch_up_with_backend(&log, &mut wal, &store, &one_voter(), None).expect("catch up");
        assert_eq!((applied, snap), (4, 0));
        assert_eq!(log.mem.last_index().ok(), Some(6));
    }

    /// A backend past the whole log (a snapshot the WAL never recorded) moves the log on.
    #[test]
    fn backend_past_the_log_moves_it_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, replay, store) = wal_and_store(dir.path());
        set_applied(&store, 9, 3);
        let log = rebuild_log(&replay).expect("rebuild");
        let (applied, snap) =
            catch_up_with_backend(&log, &mut wal, &store, &one_voter(), None).expect("catch up");
        assert_eq!((applied, snap), (9, 9));
        assert_eq!(log.mem.first_index().ok(), Some(10));
        assert_eq!(
            log.mem.initial_state().map(|s| s.conf_state.voters).ok(),
            Some(vec![1])
        );
    }
}
