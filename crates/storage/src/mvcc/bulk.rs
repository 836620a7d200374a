//! Whole-backend reads and writes that stream record by record instead of building one
//! buffer: a consistent [`ReadView`] to export the backend (etcd snapshot files, HashKV), a
//! restore fed record by record ([`WriteBatch::restore_with`]: `snapshot restore` from an
//! etcd file), and revisions written exactly as another store numbered them
//! ([`WriteBatch::import_revision`]: a live migration that keeps every revision).
//!
//! Memory: a view holds one redb read transaction (a snapshot of the file, not a copy); a
//! restore holds the key index, which the store keeps in memory anyway.

use std::collections::HashSet;

use oxcd_api::mvccpb::KeyValue;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable};

use super::{
    decode_record, encode_record, fetch_in, record_in, rev_key, Event, EventKind, Index, MvccError,
    Rev, Store, WriteBatch, AUX, FORMAT_VERSION, INITIAL_REV, KV, META,
};

/// One revision record as the backend holds it.
#[derive(Debug, Clone, Copy)]
pub struct RevisionRecord<'r> {
    pub rev: Rev,
    pub tombstone: bool,
    /// The `mvccpb.KeyValue` as stored (protobuf). A tombstone's holds the key and the
    /// deleting revision as `mod_revision`.
    pub kv_bytes: &'r [u8],
}

impl RevisionRecord<'_> {
    pub fn decode(&self) -> Result<KeyValue, MvccError> {
        KeyValue::decode(self.kv_bytes).map_err(|e| MvccError::Corrupt {
            main: self.rev.main as u64,
            sub: self.rev.sub as u64,
            reason: e.to_string(),
        })
    }
}

/// One consistent state of the backend, read at leisure: the revisions and aux rows of one
/// redb read transaction, and the revisions it was taken at. A view outlives a
/// [`Store::defragment`] that replaces the file: it goes on reading the old one.
pub struct ReadView {
    txn: redb::ReadTransaction,
    /// Compacted revisions whose rows may still be in `txn` (skipped).
    stale: super::StaleFilter,
    current_rev: i64,
    compact_rev: i64,
    consistent_index: u64,
    consistent_term: u64,
    /// The file `txn` reads, kept open (after `txn` in drop order) should a
    /// defragmentation replace it.
    _db: std::sync::Arc<redb::Database>,
}

/// The revisions a compaction at some revision would keep (etcd's `kvindex.Keep`): each
/// key's latest revision at or below it, unless that is a tombstone.
pub type KeepSet = HashSet<Rev>;

impl Store {
    /// A consistent view of the whole backend.
    pub fn read_view(&self) -> Result<ReadView, MvccError> {
        let idx = self.read_index();
        self.view_under(&idx)
    }

    /// A consistent view of the whole backend, or `None` while a write batch holds the
    /// index (the caller is that batch's thread, or would wait for it).
    pub fn try_read_view(&self) -> Option<Result<ReadView, MvccError>> {
        let idx = self.index.try_read().ok()?;
        Some(self.view_under(&idx))
    }

    /// A view, and the revisions a compaction at `at` would keep, of the same state.
    pub fn read_view_keeping(&self, at: i64) -> Result<(ReadView, KeepSet), MvccError> {
        let idx = self.read_index();
        let keep = idx
            .keys
            .values()
            .filter_map(|hist| hist.visible_at(at))
            .collect();
        Ok((self.view_under(&idx)?, keep))
    }

    fn view_under(&self, idx: &Index) -> Result<ReadView, MvccError> {
        let db = self.db();
        Ok(ReadView {
            txn: db.begin_read()?,
            _db: db,
            stale: idx.pending.filter(),
            current_rev: idx.current_rev,
            compact_rev: idx.compact_rev,
            consistent_index: idx.consistent_index,
            consistent_term: idx.consistent_term,
        })
    }
}

impl ReadView {
    pub fn current_rev(&self) -> i64 {
        self.current_rev
    }

    /// The compact revision (0: never compacted).
    pub fn compact_rev(&self) -> i64 {
        self.compact_rev
    }

    /// The last raft entry applied to this state (index, term).
    pub fn consistent_index(&self) -> (u64, u64) {
        (self.consistent_index, self.consistent_term)
    }

    /// Calls `f` with every revision record whose main revision is at most `upto`, in
    /// revision order.
    pub fn for_each_revision<E: From<MvccError>>(
        &self,
        upto: i64,
        mut f: impl FnMut(RevisionRecord<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let table = self.txn.open_table(KV).map_err(MvccError::from)?;
        let mut stale = self.stale.clone();
        let end = (upto.max(0) as u64, u64::MAX);
        for item in table.range((0u64, 0u64)..=end).map_err(MvccError::from)? {
            let (k, v) = item.map_err(MvccError::from)?;
            let (main, sub) = k.value();
            let rev = Rev {
                main: main as i64,
                sub: sub as i64,
            };
            if stale.is_stale(rev) {
                continue;
            }
            let bytes = v.value();
            let corrupt = |reason: &str| MvccError::Corrupt {
                main,
                sub,
                reason: reason.into(),
            };
            let (flag, kv_bytes) = bytes.split_first().ok_or_else(|| corrupt("empty record"))?;
            let tombstone = match *flag {
                super::FLAG_PUT => false,
                super::FLAG_TOMBSTONE => true,
                _ => return Err(corrupt("unknown flag").into()),
            };
            f(RevisionRecord {
                rev,
                tombstone,
                kv_bytes,
            })?;
        }
        Ok(())
    }

    /// Writes the whole backend as of this view to `w`, record by record (a raft snapshot):
    /// `[table u8][klen u32 LE][key][vlen u32 LE][value]` for each of
    /// [`ReadView::for_each_record`]'s records. Read back by [`WriteBatch::restore_from`].
    /// Memory: one record.
    pub fn write_records(&self, w: &mut impl std::io::Write) -> Result<(), MvccError> {
        self.for_each_record(|t, key, value| {
            let klen: usize = key.iter().map(|p| p.len()).sum();
            let mut head = [0u8; 5];
            head[0] = t;
            head[1..].copy_from_slice(&(klen as u32).to_le_bytes());
            w.write_all(&head).map_err(MvccError::SnapshotIo)?;
            for part in key {
                w.write_all(part).map_err(MvccError::SnapshotIo)?;
            }
            w.write_all(&(value.len() as u32).to_le_bytes())
                .map_err(MvccError::SnapshotIo)?;
            w.write_all(value).map_err(MvccError::SnapshotIo)
        })
    }

    /// Calls `f(table, key parts, value)` with every record of the backend, in the order
    /// of [`ReadView::write_records`]: table 0 = kv (key = main, sub as 8 big-endian bytes
    /// each; value as stored), 1 = meta (value u64 LE), 2 = aux (key = table byte, key).
    pub fn for_each_record(
        &self,
        mut f: impl FnMut(u8, &[&[u8]], &[u8]) -> Result<(), MvccError>,
    ) -> Result<(), MvccError> {
        let mut stale = self.stale.clone();
        for item in self.txn.open_table(KV)?.iter()? {
            let (k, v) = item?;
            let (main, sub) = k.value();
            let rev = Rev {
                main: main as i64,
                sub: sub as i64,
            };
            if stale.is_stale(rev) {
                continue;
            }
            f(0, &[&main.to_be_bytes(), &sub.to_be_bytes()], v.value())?;
        }
        for item in self.txn.open_table(META)?.iter()? {
            let (k, v) = item?;
            f(1, &[k.value().as_bytes()], &v.value().to_le_bytes())?;
        }
        for item in self.txn.open_table(AUX)?.iter()? {
            let (k, v) = item?;
            let (t, key) = k.value();
            f(2, &[&[t], key], v.value())?;
        }
        Ok(())
    }

    /// Calls `f` with every row of aux table `table`, in key order.
    pub fn for_each_aux<E: From<MvccError>>(
        &self,
        table: u8,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let aux = self.txn.open_table(AUX).map_err(MvccError::from)?;
        let start: (u8, &[u8]) = (table, &[]);
        for item in aux.range(start..).map_err(MvccError::from)? {
            let (k, v) = item.map_err(MvccError::from)?;
            let (t, key) = k.value();
            if t != table {
                break;
            }
            f(key, v.value())?;
        }
        Ok(())
    }
}

/// What a restore sets besides the records: the store's revisions and raft position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoredMeta {
    /// At least the newest restored revision (a compaction can have removed the newest).
    pub current_rev: i64,
    pub compact_rev: i64,
    pub consistent_index: u64,
    pub consistent_term: u64,
}

/// Where a restore's records go: see [`WriteBatch::restore_with`].
pub struct RestoreSink<'t> {
    kv: redb::Table<'t, (u64, u64), &'static [u8]>,
    aux: redb::Table<'t, (u8, &'static [u8]), &'static [u8]>,
    index: Index,
    last: Option<Rev>,
}

impl RestoreSink<'_> {
    /// Adds one revision record. Records come in strictly increasing revision order.
    pub fn revision(&mut self, rev: Rev, tombstone: bool, kv: &KeyValue) -> Result<(), MvccError> {
        self.record(rev, tombstone, kv, &encode_record(tombstone, kv))
    }

    /// Adds a record in the stored form (flag byte, then the KeyValue).
    pub(super) fn raw_revision(&mut self, rev: Rev, record: &[u8]) -> Result<(), MvccError> {
        let (tombstone, kv) = decode_record(rev.main as u64, rev.sub as u64, record)?;
        self.record(rev, tombstone, &kv, record)
    }

    fn record(
        &mut self,
        rev: Rev,
        tombstone: bool,
        kv: &KeyValue,
        record: &[u8],
    ) -> Result<(), MvccError> {
        if rev.main < 1 || rev.sub < 0 {
            return Err(MvccError::Restore(format!(
                "revision {}.{} is not a revision",
                rev.main, rev.sub
            )));
        }
        if let Some(last) = self.last.filter(|last| *last >= rev) {
            return Err(MvccError::Restore(format!(
                "revision {}.{} comes after {}.{}: revisions must increase",
                rev.main, rev.sub, last.main, last.sub
            )));
        }
        self.last = Some(rev);
        self.index.push_loaded(
            kv.key.clone(),
            rev,
            tombstone,
            kv.create_revision,
            kv.version,
        );
        self.kv.insert(rev_key(rev), record)?;
        Ok(())
    }

    /// Adds a row of an auxiliary table.
    pub fn aux_put(&mut self, table: u8, key: &[u8], value: &[u8]) -> Result<(), MvccError> {
        self.aux.insert((table, key), value)?;
        Ok(())
    }
}

/// One change of an imported revision.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportChange {
    pub sub: i64,
    pub tombstone: bool,
    /// A put's KeyValue exactly as the source stored it (`mod_revision` = the revision); a
    /// tombstone's key (the rest is not used).
    pub kv: KeyValue,
}

impl WriteBatch<'_> {
    /// Replaces the whole backend with what `fill` writes into the sink, then sets the
    /// revisions and raft position it returns. Nothing of the old backend stays. Like
    /// [`WriteBatch::restore`], the next consistent index may go back.
    pub fn restore_with<E: From<MvccError>>(
        &mut self,
        fill: impl FnOnce(&mut RestoreSink<'_>) -> Result<RestoredMeta, E>,
    ) -> Result<(), E> {
        let (defragging, rewrites) = (self.index.defragging, self.index.rewrites + 1);
        self.tx.close_kv();
        let txn = self.tx.txn();
        txn.delete_table(KV).map_err(MvccError::from)?;
        txn.delete_table(META).map_err(MvccError::from)?;
        txn.delete_table(AUX).map_err(MvccError::from)?;
        let (mut index, meta) = {
            let mut sink = RestoreSink {
                kv: txn.open_table(KV).map_err(MvccError::from)?,
                aux: txn.open_table(AUX).map_err(MvccError::from)?,
                index: Index::default(),
                last: None,
            };
            let meta = fill(&mut sink)?;
            (sink.index, meta)
        };
        index.current_rev = index.current_rev.max(meta.current_rev).max(INITIAL_REV);
        if meta.compact_rev > index.current_rev {
            return Err(MvccError::Restore(format!(
                "compact revision {} is above the current revision {}",
                meta.compact_rev, index.current_rev
            ))
            .into());
        }
        index.compact_rev = meta.compact_rev.max(0);
        if index.compact_rev > 0 {
            // A snapshot taken mid-compaction holds rows compacted away: queue them again.
            index.compact(index.compact_rev);
        }
        index.consistent_index = meta.consistent_index;
        index.consistent_term = meta.consistent_term;
        index.restored = true;
        index.defragging = defragging;
        index.rewrites = rewrites;
        {
            let mut t = txn.open_table(META).map_err(MvccError::from)?;
            let mut put = |name: &str, v: u64| t.insert(name, v).map(|_| ());
            put("format", FORMAT_VERSION).map_err(MvccError::from)?;
            put("current_rev", index.current_rev as u64).map_err(MvccError::from)?;
            put("compact_rev", index.compact_rev as u64).map_err(MvccError::from)?;
            put("consistent_index", index.consistent_index).map_err(MvccError::from)?;
            put("consistent_term", index.consistent_term).map_err(MvccError::from)?;
        }
        *self.index = index;
        Ok(())
    }

    /// Removes every row of an auxiliary table.
    pub fn aux_clear(&mut self, table: u8) -> Result<(), MvccError> {
        let mut aux = self.tx.txn().open_table(AUX)?;
        let start: (u8, &[u8]) = (table, &[]);
        let mut keys = Vec::new();
        for item in aux.range(start..)? {
            let (k, _) = item?;
            let (t, key) = k.value();
            if t != table {
                break;
            }
            keys.push(key.to_vec());
        }
        for key in keys {
            aux.remove((table, key.as_slice()))?;
        }
        Ok(())
    }

    /// Checks that [`WriteBatch::import_revision`] would take these changes, without
    /// writing anything.
    pub fn check_import(&self, main: i64, changes: &[ImportChange]) -> Result<(), MvccError> {
        if main <= self.index.current_rev {
            return Err(MvccError::Import(format!(
                "revision {main} is not after the current revision {}",
                self.index.current_rev
            )));
        }
        check_import_changes(main, changes)
    }

    /// Writes revision `main` exactly as another store numbered it: each change at its own
    /// sub revision, a put's KeyValue as given (create revision, version, lease), a
    /// tombstone for a delete. `main` must be above the current revision, which becomes
    /// `main`. Returns the events for watchers (with the previous values).
    pub fn import_revision(
        &mut self,
        main: i64,
        changes: &[ImportChange],
    ) -> Result<Vec<Event>, MvccError> {
        self.check_import(main, changes)?;
        let index = &mut *self.index;
        let events = self.tx.with_kv(|table| {
            let mut events = Vec::with_capacity(changes.len());
            for c in changes {
                let prev = match index.keys.get(&c.kv.key).and_then(|h| h.visible_at(main)) {
                    Some(rev) => Some(fetch_in(table, rev)?),
                    None => None,
                };
                let kv = if c.tombstone {
                    KeyValue {
                        key: c.kv.key.clone(),
                        mod_revision: main,
                        ..Default::default()
                    }
                } else {
                    c.kv.clone()
                };
                let mut sub = c.sub;
                record_in(table, index, &mut sub, main, c.tombstone, &kv)?;
                events.push(Event {
                    kind: if c.tombstone {
                        EventKind::Delete
                    } else {
                        EventKind::Put
                    },
                    kv,
                    prev_kv: prev,
                });
            }
            Ok(events)
        })?;
        self.index.current_rev = main;
        Ok(events)
    }

    /// Drops every revision at or below `rev` of each key in `keys`, the one a compaction at
    /// `rev` would keep included: for an import whose source deleted these keys at
    /// revisions a compaction has since removed (no tombstone is left to import). Only
    /// history at or below `rev` goes; the caller compacts at `rev` (or has).
    pub fn drop_history(&mut self, rev: i64, keys: &[Vec<u8>]) -> Result<(), MvccError> {
        if rev > self.index.current_rev {
            return Err(MvccError::FutureRev);
        }
        self.index.rewrites += 1;
        let index = &mut *self.index;
        self.tx.with_kv(|table| {
            for key in keys {
                let Some(hist) = index.keys.get_mut(key) else {
                    continue;
                };
                let pos = hist.revs.partition_point(|(r, _)| r.main <= rev);
                for (r, _) in hist.revs.drain(..pos) {
                    table.remove(rev_key(r))?;
                }
                if hist.revs.is_empty() {
                    index.keys.remove(key);
                }
            }
            Ok(())
        })
    }

    /// Moves the current revision forward to `rev` without writing a key (a source whose
    /// newest revisions were compacted away). Never moves it back.
    pub fn advance_rev(&mut self, rev: i64) {
        if rev > self.index.current_rev {
            self.index.current_rev = rev;
        }
    }
}

/// Checks one imported revision's changes by themselves: at least one, sub revisions
/// increasing, keys given, a put's `mod_revision` the revision's own.
pub fn check_import_changes(main: i64, changes: &[ImportChange]) -> Result<(), MvccError> {
    let bad = |why: String| Err(MvccError::Import(why));
    if changes.is_empty() {
        return bad(format!("revision {main} has no changes"));
    }
    let mut last_sub = -1;
    for c in changes {
        if c.sub <= last_sub {
            return bad(format!(
                "revision {main}: sub revision {} does not come after {last_sub}",
                c.sub
            ));
        }
        last_sub = c.sub;
        if c.kv.key.is_empty() {
            return bad(format!("revision {main}.{}: empty key", c.sub));
        }
        if !c.tombstone && c.kv.mod_revision != main {
            return bad(format!(
                "revision {main}.{}: a put's mod_revision is {}",
                c.sub, c.kv.mod_revision
            ));
        }
    }
    Ok(())
}
