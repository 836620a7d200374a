//! The state wing: the deterministic state machine. Committed log entries are applied here,
//! in order, on the raft thread; the same entry applies the same way on every member.
//!
//! Rule: nothing in this wing imports `crate::consensus` or `crate::api`, and nothing here does
//! I/O of its own beyond the backend (`oxcd_storage`). Handlers read these tables; only the
//! applier writes them.

pub mod alarm;
pub mod apply;
pub mod auth;
pub mod import;
pub mod kv;
pub mod lease;
pub mod members;
pub mod v2;
pub mod watch;

use std::sync::{Arc, Mutex, RwLock};

use oxcd_storage::{MvccError, Store};

use crate::state::alarm::Alarms;
use crate::state::auth::{AuthStore, AUX_AUTH};
use crate::state::lease::{LeaseTable, AUX_LEASES};
use crate::state::members::{Member, Members, AUX_MEMBERS};
use crate::state::v2::{V2Store, AUX_V2_META, AUX_V2_NODES};

/// The tables that live in memory beside the MVCC store, loaded once from the backend and
/// shared: the applier writes them (on the raft thread), handlers read them.
#[derive(Clone)]
pub struct Tables {
    pub v2: Arc<Mutex<V2Store>>,
    pub members: Arc<RwLock<Members>>,
    pub leases: Arc<Mutex<LeaseTable>>,
    pub auth: Arc<Mutex<AuthStore>>,
    pub alarms: Arc<RwLock<Alarms>>,
    /// Set while `oxctl migrate` imports into this cluster ([`import`]).
    pub import: Arc<RwLock<Option<import::ImportState>>>,
}

/// A table that could not be loaded from the backend.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read the {table} table from the backend: {source}")]
    Backend {
        table: &'static str,
        source: MvccError,
    },
    #[error("the {table} table in the backend is damaged ({reason}); restore this member from a snapshot, or remove it from the cluster and add it again")]
    Damaged { table: &'static str, reason: String },
}

fn rows(
    store: &Store,
    table: &'static str,
    aux: u8,
) -> Result<Vec<oxcd_storage::mvcc::AuxRow>, TableError> {
    store
        .aux_load(aux)
        .map_err(|source| TableError::Backend { table, source })
}

impl Tables {
    /// Loads every table from the backend; `members` is the member list bootstrap found
    /// (the backend's, or the initial cluster's for a new member).
    pub fn load(store: &Store, members: Vec<Member>) -> Result<Tables, TableError> {
        Ok(Tables {
            v2: Arc::new(Mutex::new(load_v2(store)?)),
            members: Arc::new(RwLock::new(Members::new(members))),
            leases: Arc::new(Mutex::new(load_leases(store)?)),
            auth: Arc::new(Mutex::new(load_auth(store)?)),
            alarms: Arc::new(RwLock::new(alarm::load(store)?)),
            import: Arc::new(RwLock::new(import::load(store)?)),
        })
    }

    /// Reloads every table after a snapshot replaced the backend. Auth tokens handed out
    /// before stay valid, as in etcd.
    pub fn reload(&self, store: &Store) -> Result<(), TableError> {
        let v2 = load_v2(store)?;
        *self.v2.lock().expect("v2 store lock poisoned") = v2;
        let member_rows = rows(store, "members", AUX_MEMBERS)?;
        self.members
            .write()
            .expect("members lock poisoned")
            .load_rows(member_rows);
        *self.leases.lock().expect("lease table lock poisoned") = load_leases(store)?;
        let mut auth = load_auth(store)?;
        let mut old = self.auth.lock().expect("auth store lock poisoned");
        auth.keep_tokens(&mut old);
        *old = auth;
        *self.alarms.write().expect("alarms lock poisoned") = alarm::load(store)?;
        *self.import.write().expect("import state lock poisoned") = import::load(store)?;
        Ok(())
    }
}

/// Loads the lease table: its rows, and the keys that name a lease. Keys only: the values
/// are not needed, and holding them all would take the size of the keyspace in memory on
/// every start and every snapshot a follower applies.
fn load_leases(store: &Store) -> Result<LeaseTable, TableError> {
    let lease_rows = rows(store, "lease", AUX_LEASES)?;
    let keys_only = oxcd_storage::RangeOptions {
        keys_only: true,
        ..Default::default()
    };
    let all = store
        .range(&[0], &[0], keys_only)
        .map_err(|source| TableError::Backend {
            table: "key",
            source,
        })?;
    let attached = all
        .kvs
        .into_iter()
        .filter(|kv| kv.lease != 0)
        .map(|kv| (kv.key, kv.lease))
        .collect();
    Ok(LeaseTable::load(lease_rows, attached))
}

/// Loads the auth store (users, roles, the enabled flag).
fn load_auth(store: &Store) -> Result<AuthStore, TableError> {
    AuthStore::load(rows(store, "auth", AUX_AUTH)?).map_err(|reason| TableError::Damaged {
        table: "auth",
        reason,
    })
}

/// Loads the v2 store.
fn load_v2(store: &Store) -> Result<V2Store, TableError> {
    let nodes = rows(store, "v2", AUX_V2_NODES)?;
    let meta = rows(store, "v2 meta", AUX_V2_META)?;
    let index = meta
        .iter()
        .find(|(k, _)| k == b"index")
        .and_then(|(_, v)| v.as_slice().try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    V2Store::load(nodes, index).map_err(|reason| TableError::Damaged {
        table: "v2",
        reason,
    })
}
