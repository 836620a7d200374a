//! `snapshot status`: the hash, revision, key count and size `etcdctl snapshot status`
//! prints, for an etcd (bbolt) snapshot (etcd's own computation,
//! [`oxcd_bbolt::etcd::snapshot_status`], reading the file page by page) and for an
//! `OXCDSNP1` snapshot of older oxcd releases ([`crate::file::snapshot_status`]).

use std::io::Read;
use std::path::Path;

use oxcd_bbolt::Db;

use crate::file::SNAPSHOT_MAGIC;

/// What `snapshot status` reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// etcd's: CRC-32C over every bucket's name, keys and values (an `OXCDSNP1` file's:
    /// CRC-32 of its backend body).
    pub hash: u32,
    pub revision: i64,
    /// Every key of every bucket (etcd counts them so).
    pub total_key: u64,
    pub total_size: u64,
}

/// The status of the snapshot file at `path`. Errors are one line, naming the file.
pub fn snapshot_status(path: &Path) -> Result<SnapshotStatus, String> {
    let shown = path.display().to_string();
    let io = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            _ => e.to_string(),
        };
        format!("stat {shown}: {why}")
    };
    let mut head = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(SNAPSHOT_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head == SNAPSHOT_MAGIC {
        let data = std::fs::read(path).map_err(io)?;
        let st = crate::file::snapshot_status(&shown, &data).map_err(|e| e.to_string())?;
        return Ok(SnapshotStatus {
            hash: st.hash,
            revision: st.revision,
            total_key: st.total_key,
            total_size: st.total_size,
        });
    }
    let db = Db::open(path).map_err(|e| e.to_string())?;
    let st = oxcd_bbolt::etcd::snapshot_status(&db).map_err(|e| e.to_string())?;
    Ok(SnapshotStatus {
        hash: st.hash,
        revision: st.revision,
        total_key: st.total_key,
        total_size: st.total_size,
    })
}
