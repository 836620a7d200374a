//! Import mode: the target side of `oxctl migrate`, which moves a running etcd cluster's
//! data into an empty oxcd cluster so that every source revision becomes the same revision
//! here (Kubernetes resourceVersions are revisions: they must not change). Every step is a
//! log entry ([`ImportOp`]), applied the same way on every member:
//!
//! - **Begin** puts an empty cluster (revision 1, no compaction, lease, user or role, auth
//!   off) into import mode, remembering the source's cluster ID; a cluster already
//!   importing from the same source takes it as a no-op (the migrator resumes).
//! - **Apply** takes one batch of the source's history, checked whole before anything is
//!   written: it must follow the current revision exactly (`expect_revision`), its
//!   revisions increase, each change of a revision has its own sub revision. It replaces
//!   the auth store (when given), grants leases with their IDs and TTLs, writes each
//!   revision exactly as the source numbered it ([`oxcd_storage::WriteBatch::import_revision`]),
//!   removes leases the source no longer has (their keys' deletes come as revisions), moves
//!   the current revision forward, drops the history of keys the source deleted at
//!   revisions it has compacted away (a migration that copied a new snapshot after the
//!   source compacted past it) and compacts, as the batch says.
//! - **End** (the cut-over) leaves import mode; every lease starts its TTL anew, as etcd's
//!   leases do when a new leader takes over.
//!
//! While importing, every client write is refused at apply time with [`ServerError::ImportMode`]
//! (puts, deletes, write txns, compactions, lease grants, keep-alives and revokes, v2
//! writes, auth changes): one write would fork the history. The leader proposes no lease
//! expiry either (leases live on the source until the cut-over).
//!
//! Persistence: aux table [`AUX_IMPORT`], row `state` → JSON of [`ImportState`]; no row when
//! not importing.

use std::collections::BTreeSet;

use oxcd_api::oxcdimportpb::{ImportApplyRequest, ImportAuth, ImportBeginRequest};
use oxcd_snapshot::rows;
use oxcd_storage::mvcc::{ImportChange, INITIAL_REV};
use oxcd_storage::{Event, Store, WriteBatch};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::ServerError;
use crate::request::{ImportOp, ImportRequest, Op};
use crate::state::apply::{Applied, Applier};
use crate::state::auth::AuthStore;
use crate::state::lease::{Lease, LeaseTable, AUX_LEASES};

pub const AUX_IMPORT: u8 = 7;
const STATE_KEY: &[u8] = b"state";

/// What the cluster knows of the import it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportState {
    pub source_cluster_id: u64,
    pub source: String,
    /// The revision of the last complete snapshot copy (0: none yet).
    pub snapshot_revision: i64,
}

/// Loads the import state from the backend (`None`: not importing).
pub fn load(store: &Store) -> Result<Option<ImportState>, super::TableError> {
    let rows = store
        .aux_load(AUX_IMPORT)
        .map_err(|source| super::TableError::Backend {
            table: "import",
            source,
        })?;
    match rows.iter().find(|(k, _)| k == STATE_KEY) {
        None => Ok(None),
        Some((_, v)) => {
            serde_json::from_slice(v)
                .map(Some)
                .map_err(|e| super::TableError::Damaged {
                    table: "import",
                    reason: e.to_string(),
                })
        }
    }
}

/// Whether import mode refuses `op`: every write a client (or a duty) makes.
pub fn refused(op: &Op) -> bool {
    match op {
        Op::Put(_) | Op::DeleteRange(_) | Op::Compaction(_) => true,
        Op::Txn(t) => !crate::state::kv::txn_is_read_only(t),
        Op::LeaseGrant(_) | Op::LeaseRevoke(_) | Op::LeaseRenew(_) => true,
        Op::V2(_) | Op::V2Expire(_) => true,
        Op::Auth(a) => !matches!(a.op, Some(crate::request::AuthOp::Authenticate(_)) | None),
        Op::MemberAttrs(_)
        | Op::MemberUpdate(_)
        | Op::Refused(_)
        | Op::Alarm(_)
        | Op::HashCheck(_)
        | Op::Import(_) => false,
    }
}

fn import_err(why: impl Into<String>) -> ServerError {
    ServerError::Import(why.into())
}

impl Applier {
    /// The import mode's refusal, checked before any op applies.
    pub(crate) fn import_check(&self, op: &Op) -> Result<(), ServerError> {
        let importing = self
            .tables
            .import
            .read()
            .expect("import state lock poisoned")
            .is_some();
        if importing && refused(op) {
            return Err(ServerError::ImportMode);
        }
        Ok(())
    }

    /// Applies one import step (see the module doc).
    pub(crate) fn apply_import(
        &self,
        batch: &mut WriteBatch<'_>,
        req: ImportRequest,
        events: &mut Vec<Event>,
    ) -> Result<Applied, ServerError> {
        match req.op {
            Some(ImportOp::Begin(b)) => self.import_begin(batch, b),
            Some(ImportOp::Apply(a)) => {
                check_batch(batch, &a)?;
                self.import_batch(batch, req.now_ms, a, events)
            }
            Some(ImportOp::End(_)) => self.import_end(batch, req.now_ms),
            None => Ok(Applied::Done),
        }
    }

    fn current_import(&self) -> Option<ImportState> {
        self.tables
            .import
            .read()
            .expect("import state lock poisoned")
            .clone()
    }

    fn set_import(
        &self,
        batch: &mut WriteBatch<'_>,
        state: Option<ImportState>,
    ) -> Result<(), ServerError> {
        match &state {
            Some(s) => {
                let row = serde_json::to_vec(s).map_err(|e| import_err(e.to_string()))?;
                batch.aux_put(AUX_IMPORT, STATE_KEY, &row)?;
            }
            None => batch.aux_delete(AUX_IMPORT, STATE_KEY)?,
        }
        *self
            .tables
            .import
            .write()
            .expect("import state lock poisoned") = state;
        Ok(())
    }

    fn import_begin(
        &self,
        batch: &mut WriteBatch<'_>,
        b: ImportBeginRequest,
    ) -> Result<Applied, ServerError> {
        if let Some(state) = self.current_import() {
            if state.source_cluster_id == b.source_cluster_id {
                return Ok(Applied::Done);
            }
            return Err(import_err(format!(
                "the cluster is importing from cluster {:x} ({}), not {:x}",
                state.source_cluster_id, state.source, b.source_cluster_id
            )));
        }
        let leases = self
            .tables
            .leases
            .lock()
            .expect("lease table lock poisoned");
        let auth = self.tables.auth.lock().expect("auth store lock poisoned");
        let empty = batch.current_rev() == INITIAL_REV
            && batch.compact_rev() == 0
            && leases.leases.is_empty()
            && auth.user_names().is_empty()
            && auth.role_names().is_empty()
            && !auth.enabled();
        drop((leases, auth));
        if !empty {
            return Err(import_err(format!(
                "the cluster is not empty (revision {}): a migration goes into a new, empty cluster",
                batch.current_rev()
            )));
        }
        let state = ImportState {
            source_cluster_id: b.source_cluster_id,
            source: b.source,
            snapshot_revision: 0,
        };
        self.set_import(batch, Some(state))?;
        Ok(Applied::Done)
    }

    fn import_batch(
        &self,
        batch: &mut WriteBatch<'_>,
        now_ms: i64,
        a: ImportApplyRequest,
        events: &mut Vec<Event>,
    ) -> Result<Applied, ServerError> {
        let Some(mut state) = self.current_import() else {
            return Err(import_err("the cluster is not in import mode"));
        };
        if let Some(auth) = &a.auth {
            self.import_auth(batch, auth)?;
        }
        self.import_leases(batch, now_ms, &a)?;
        for r in &a.revisions {
            events.extend(batch.import_revision(r.revision, &changes_of(r))?);
        }
        let removed: BTreeSet<i64> = a.removed_leases.iter().copied().collect();
        if !removed.is_empty() {
            let mut leases = self
                .tables
                .leases
                .lock()
                .expect("lease table lock poisoned");
            for id in removed {
                if leases.leases.remove(&id).is_some() {
                    batch.aux_delete(AUX_LEASES, &id.to_be_bytes())?;
                }
            }
        }
        batch.advance_rev(a.advance_revision);
        if !a.drop_keys.is_empty() {
            batch.drop_history(a.compact_revision, &a.drop_keys)?;
        }
        if a.compact_revision > batch.compact_rev() {
            batch.compact(a.compact_revision)?;
        }
        if a.snapshot_revision > 0 {
            state.snapshot_revision = a.snapshot_revision;
            self.set_import(batch, Some(state))?;
        }
        Ok(Applied::Done)
    }

    fn import_leases(
        &self,
        batch: &mut WriteBatch<'_>,
        now_ms: i64,
        a: &ImportApplyRequest,
    ) -> Result<(), ServerError> {
        if a.leases.is_empty() {
            return Ok(());
        }
        let mut leases = self
            .tables
            .leases
            .lock()
            .expect("lease table lock poisoned");
        for l in &a.leases {
            let keys = leases
                .leases
                .remove(&l.id)
                .map(|old| old.keys)
                .unwrap_or_default();
            let lease = Lease {
                ttl: l.ttl,
                renewed_ms: now_ms,
                applied_ms: crate::clock::now_ms(),
                keys,
            };
            batch.aux_put(AUX_LEASES, &l.id.to_be_bytes(), &LeaseTable::row(&lease))?;
            leases.leases.insert(l.id, lease);
        }
        Ok(())
    }

    /// Replaces the auth store with the source's.
    fn import_auth(
        &self,
        batch: &mut WriteBatch<'_>,
        auth: &ImportAuth,
    ) -> Result<(), ServerError> {
        let mut rows_out: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (
                rows::AUTH_ENABLED_KEY.to_vec(),
                vec![u8::from(auth.enabled)],
            ),
            (
                rows::AUTH_REVISION_KEY.to_vec(),
                auth.revision.to_be_bytes().to_vec(),
            ),
        ];
        for u in &auth.users {
            let key = rows::auth_row_key(rows::AUTH_USER_PREFIX, &u.name);
            rows_out.push((key, u.encode_to_vec()));
        }
        for r in &auth.roles {
            let key = rows::auth_row_key(rows::AUTH_ROLE_PREFIX, &r.name);
            rows_out.push((key, r.encode_to_vec()));
        }
        let store = AuthStore::load(rows_out.clone()).map_err(import_err)?;
        batch.aux_clear(rows::AUX_AUTH)?;
        for (k, v) in &rows_out {
            batch.aux_put(rows::AUX_AUTH, k, v)?;
        }
        *self.tables.auth.lock().expect("auth store lock poisoned") = store;
        Ok(())
    }

    /// The cut-over: out of import mode, every lease's TTL counting from `now_ms`.
    fn import_end(&self, batch: &mut WriteBatch<'_>, now_ms: i64) -> Result<Applied, ServerError> {
        if self.current_import().is_none() {
            return Err(import_err("the cluster is not in import mode"));
        }
        let mut leases = self
            .tables
            .leases
            .lock()
            .expect("lease table lock poisoned");
        let local_ms = crate::clock::now_ms();
        for (id, l) in leases.leases.iter_mut() {
            l.renewed_ms = now_ms;
            l.applied_ms = local_ms;
            batch.aux_put(AUX_LEASES, &id.to_be_bytes(), &LeaseTable::row(l))?;
        }
        drop(leases);
        self.set_import(batch, None)?;
        Ok(Applied::Done)
    }
}

fn changes_of(r: &oxcd_api::oxcdimportpb::ImportRevision) -> Vec<ImportChange> {
    r.changes
        .iter()
        .map(|c| ImportChange {
            sub: c.sub,
            tombstone: c.tombstone,
            kv: c.kv.clone().unwrap_or_default(),
        })
        .collect()
}

/// Checks a whole batch against the state before anything is written.
fn check_batch(batch: &WriteBatch<'_>, a: &ImportApplyRequest) -> Result<(), ServerError> {
    let current = batch.current_rev();
    if a.expect_revision != current {
        return Err(import_err(format!(
            "the batch follows revision {}, the cluster is at revision {current}",
            a.expect_revision
        )));
    }
    let mut last = current;
    for r in &a.revisions {
        if r.revision <= last {
            return Err(import_err(format!(
                "revision {} does not come after {last}",
                r.revision
            )));
        }
        oxcd_storage::mvcc::check_import_changes(r.revision, &changes_of(r))
            .map_err(|e| import_err(e.to_string()))?;
        last = r.revision;
    }
    let newest = last.max(a.advance_revision);
    if a.compact_revision > newest {
        return Err(import_err(format!(
            "compact revision {} is above the newest revision {newest}",
            a.compact_revision
        )));
    }
    if !a.drop_keys.is_empty() && a.compact_revision < batch.compact_rev().max(1) {
        return Err(import_err(
            "dropped keys need a compact revision at or above the cluster's",
        ));
    }
    if let Some(auth) = &a.auth {
        if auth.users.iter().any(|u| u.name.is_empty())
            || auth.roles.iter().any(|r| r.name.is_empty())
        {
            return Err(import_err("a user or role without a name"));
        }
    }
    Ok(())
}
