//! The v2 keys store: etcd 2's hierarchical keyspace (files and directories, TTLs, in-order
//! keys, compare-and-swap) with its JSON shapes and error codes. Separate from the v3
//! keyspace, as in etcd. Writes come from the apply loop; reads and long-poll waits from
//! the HTTP handlers.
//!
//! Persistence: each node is a row of backend aux table [`AUX_V2_NODES`] (key = path, value =
//! JSON of [`Node`]); the store index is row `index` of [`AUX_V2_META`]. Both are written in
//! the apply batch of the entry that changed them, so they are exactly as durable as v3 data.
//! The event history for `wait=true` (the last [`HISTORY_MAX`] events) lives in memory.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::request::V2Request;

pub const AUX_V2_NODES: u8 = 1;
pub const AUX_V2_META: u8 = 2;
/// Events kept for `wait=true&waitIndex=N`, as etcd 2 keeps.
pub const HISTORY_MAX: usize = 1000;

/// A stored node (no children: those are other rows).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    pub dir: bool,
    pub value: String,
    pub created: u64,
    pub modified: u64,
    /// Unix milliseconds; `None` = never expires.
    pub expire_ms: Option<i64>,
}

/// A node as etcd 2 prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct NodeJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Omitted when empty, as Go's `omitempty` does for an empty directory.
    #[serde(skip_serializing_if = "no_nodes")]
    pub nodes: Option<Vec<NodeJson>>,
    #[serde(rename = "modifiedIndex", skip_serializing_if = "is_zero")]
    pub modified_index: u64,
    #[serde(rename = "createdIndex", skip_serializing_if = "is_zero")]
    pub created_index: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn no_nodes(v: &Option<Vec<NodeJson>>) -> bool {
    v.as_ref().is_none_or(|n| n.is_empty())
}

/// One change, as returned to the writer and to waiters.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct V2Event {
    pub action: String,
    pub node: NodeJson,
    #[serde(rename = "prevNode", skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<NodeJson>,
    /// The store index of this event (not serialised).
    #[serde(skip)]
    pub index: u64,
    #[serde(skip)]
    pub path: String,
    /// HTTP 201 when a node was created.
    #[serde(skip)]
    pub created: bool,
}

/// etcd 2's error object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct V2Error {
    #[serde(rename = "errorCode")]
    pub code: u32,
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cause: String,
    pub index: u64,
}

impl V2Error {
    pub fn new(code: u32, cause: impl Into<String>, index: u64) -> V2Error {
        let message = match code {
            100 => "Key not found",
            101 => "Compare failed",
            102 => "Not a file",
            104 => "Not a directory",
            105 => "Key already exists",
            107 => "Root is read only",
            108 => "Directory not empty",
            110 => "The request requires user authentication",
            200 => "Value is Required in POST form",
            201 => "PrevValue is Required in POST form",
            202 => "The given TTL in POST form is not a number",
            203 => "The given index in POST form is not a number",
            209 => "Invalid field",
            210 => "Invalid POST form",
            211 => "Value provided on refresh",
            212 => "A TTL must be provided on refresh",
            300 => "Raft Internal Error",
            301 => "During Leader Election",
            401 => "The event in requested index is outdated and cleared",
            _ => "Internal error",
        };
        V2Error {
            code,
            message: message.into(),
            cause: cause.into(),
            index,
        }
    }

    /// The HTTP status etcd uses for this code (its `errorStatus` table; 400 otherwise).
    pub fn http_status(&self) -> u16 {
        match self.code {
            100 => 404,
            101 | 105 => 412,
            102 | 108 => 403,
            110 => 401,
            300 | 301 => 500,
            _ => 400,
        }
    }
}

/// Cleans a path as etcd does (`path.Clean("/" + p)`).
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The largest TTL in seconds (etcd's largest lease TTL): a TTL up to it gives an
/// expiration time that fits. The HTTP handler refuses more; apply saturates.
pub const TTL_MAX_S: i64 = 9_000_000_000;

/// When a node given `ttl` seconds at `now_ms` expires; `None` for no TTL. As etcd, `ttl=0`
/// expires the node at once (an empty `ttl=` is no TTL).
fn expire_ms(now_ms: i64, ttl: Option<i64>) -> Option<i64> {
    ttl.filter(|t| *t >= 0)
        .map(|t| now_ms.saturating_add(t.min(TTL_MAX_S) * 1000))
}

/// A node's `expiration` as etcd's v2 store prints it (Go's `time.RFC3339Nano`, UTC). The
/// time is in range: `expire_ms` caps a TTL at `TTL_MAX_S`.
fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    oxcd_gocompat::timestamp::rfc3339_nano(t)
}

/// Rows to write to or delete from the backend after an apply.
#[derive(Debug, Default)]
pub struct Changes {
    pub put: Vec<(String, Node)>,
    pub delete: Vec<String>,
}

/// The v2 store. One owner: the server, behind a mutex the apply loop writes through.
#[derive(Debug, Default)]
pub struct V2Store {
    nodes: BTreeMap<String, Node>,
    pub index: u64,
    history: VecDeque<V2Event>,
}

impl V2Store {
    /// Rebuilds the store from backend rows.
    pub fn load(rows: Vec<(Vec<u8>, Vec<u8>)>, index: u64) -> Result<V2Store, String> {
        let mut nodes = BTreeMap::new();
        for (k, v) in rows {
            let path = String::from_utf8(k).map_err(|_| "v2 path is not UTF-8".to_string())?;
            let node: Node =
                serde_json::from_slice(&v).map_err(|e| format!("v2 node {path}: {e}"))?;
            nodes.insert(path, node);
        }
        Ok(V2Store {
            nodes,
            index,
            history: VecDeque::new(),
        })
    }

    fn json(&self, path: &str, n: &Node, now_ms: i64) -> NodeJson {
        let (expiration, ttl) = match n.expire_ms {
            // etcd omits a TTL of 0 (a node expiring now) and shows its expiration.
            Some(e) => (
                Some(rfc3339(e)),
                Some(((e - now_ms).max(0) + 999) / 1000).filter(|t| *t > 0),
            ),
            None => (None, None),
        };
        NodeJson {
            key: Some(path.to_string()),
            value: (!n.dir).then(|| n.value.clone()),
            dir: n.dir,
            expiration,
            ttl,
            nodes: None,
            modified_index: n.modified,
            created_index: n.created,
        }
    }

    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn dir_json(&self, path: &str, recursive: bool, sorted: bool, now_ms: i64) -> Vec<NodeJson> {
        let mut out: Vec<NodeJson> = Vec::new();
        for child in self.children(path) {
            let name = child.rsplit('/').next().unwrap_or("");
            if name.starts_with('_') {
                continue; // hidden, as in etcd 2
            }
            let Some(n) = self.nodes.get(&child) else {
                continue;
            };
            let mut j = self.json(&child, n, now_ms);
            if n.dir && recursive {
                j.nodes = Some(self.dir_json(&child, true, sorted, now_ms));
            }
            out.push(j);
        }
        if sorted {
            out.sort_by(|a, b| a.key.cmp(&b.key));
        }
        out
    }

    /// A GET.
    pub fn get(
        &self,
        path: &str,
        recursive: bool,
        sorted: bool,
        now_ms: i64,
    ) -> Result<V2Event, V2Error> {
        let path = clean_path(path);
        let node = if path == "/" {
            NodeJson {
                dir: true,
                nodes: Some(self.dir_json("/", recursive, sorted, now_ms)),
                ..Default::default()
            }
        } else {
            let n = self
                .nodes
                .get(&path)
                .ok_or_else(|| V2Error::new(100, &path, self.index))?;
            let mut j = self.json(&path, n, now_ms);
            if n.dir {
                j.nodes = Some(self.dir_json(&path, recursive, sorted, now_ms));
            }
            j
        };
        Ok(V2Event {
            action: "get".into(),
            node,
            prev_node: None,
            index: self.index,
            path,
            created: false,
        })
    }

    /// The first event at or after `since` that concerns `path` (or, if recursive, a
    /// descendant); `Err` when that history has been cleared.
    pub fn event_since(
        &self,
        path: &str,
        recursive: bool,
        since: u64,
    ) -> Result<Option<V2Event>, V2Error> {
        let path = clean_path(path);
        if let Some(first) = self.history.front() {
            if since < first.index && since > 0 && self.index >= HISTORY_MAX as u64 {
                return Err(V2Error::new(
                    401,
                    format!(
                        "the requested history has been cleared [{}/{}]",
                        first.index, since
                    ),
                    self.index,
                ));
            }
        }
        let hit = self.history.iter().find(|e| {
            e.index >= since
                && (e.path == path
                    || (recursive && (path == "/" || e.path.starts_with(&format!("{path}/")))))
        });
        Ok(hit.cloned())
    }

    fn record(&mut self, ev: &V2Event) {
        self.history.push_back(ev.clone());
        while self.history.len() > HISTORY_MAX {
            self.history.pop_front();
        }
    }

    /// Applies a write from the log. Returns the event or etcd 2's error, plus rows to persist.
    pub fn apply(&mut self, r: &V2Request, changes: &mut Changes) -> Result<V2Event, V2Error> {
        let path = clean_path(&r.path);
        if path == "/" {
            return Err(V2Error::new(107, "/", self.index));
        }
        let ev = match r.method.as_str() {
            "DELETE" => self.delete(&path, r, changes)?,
            "POST" => {
                let dir = path.clone();
                self.ensure_parents(&format!("{dir}/x"), changes)?;
                if let Some(n) = self.nodes.get(&dir) {
                    if !n.dir {
                        return Err(V2Error::new(104, &dir, self.index));
                    }
                } else {
                    self.mkdir(&dir, self.index + 1, changes);
                }
                let key = format!("{dir}/{:020}", self.index + 1);
                self.set(&key, r, "create", changes)?
            }
            _ => self.put(&path, r, changes)?,
        };
        self.record(&ev);
        Ok(ev)
    }

    /// A PUT, dispatched as etcd's v2 apply does: `prevExist` first (true: update, or
    /// compare-and-swap with a condition; false: create), then a condition alone, then set.
    fn put(
        &mut self,
        path: &str,
        r: &V2Request,
        changes: &mut Changes,
    ) -> Result<V2Event, V2Error> {
        let existing = self.nodes.get(path).cloned();
        let conditional = r.prev_value.is_some() || r.prev_index.is_some();
        match (r.prev_exist, existing) {
            (Some(false), Some(_)) => Err(V2Error::new(105, path, self.index)),
            (Some(false), None) => self.set(path, r, "create", changes),
            (_, None) if conditional || r.prev_exist == Some(true) => {
                Err(V2Error::new(100, path, self.index))
            }
            (_, Some(n)) if conditional => {
                if n.dir {
                    return Err(V2Error::new(102, path, self.index));
                }
                self.compare(&n, r)?;
                self.set(path, r, "compareAndSwap", changes)
            }
            (Some(true), Some(n)) if n.dir => self.update_dir(path, &n, r, changes),
            (Some(true), Some(_)) => self.set(path, r, "update", changes),
            (_, _) => self.set(path, r, "set", changes),
        }
    }

    /// An update of a directory: only its TTL changes. As in etcd, the event carries the new
    /// index but the directory keeps its modifiedIndex.
    fn update_dir(
        &mut self,
        path: &str,
        n: &Node,
        r: &V2Request,
        changes: &mut Changes,
    ) -> Result<V2Event, V2Error> {
        if r.value.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err(V2Error::new(102, path, self.index));
        }
        let index = self.index + 1;
        let prev = self.json(path, n, r.now_ms);
        let node = Node {
            expire_ms: expire_ms(r.now_ms, r.ttl),
            ..n.clone()
        };
        self.index = index;
        let mut json = self.json(path, &node, r.now_ms);
        json.modified_index = index;
        changes.put.push((path.to_string(), node.clone()));
        self.nodes.insert(path.to_string(), node);
        Ok(V2Event {
            action: "update".into(),
            node: json,
            prev_node: Some(prev),
            index,
            path: path.to_string(),
            created: false,
        })
    }

    fn compare(&self, n: &Node, r: &V2Request) -> Result<(), V2Error> {
        let mut causes = Vec::new();
        if let Some(pv) = &r.prev_value {
            if *pv != n.value {
                causes.push(format!("[{pv} != {}]", n.value));
            }
        }
        if let Some(pi) = r.prev_index {
            if pi != n.modified {
                causes.push(format!("[{pi} != {}]", n.modified));
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(V2Error::new(101, causes.join(" "), self.index))
        }
    }

    fn ensure_parents(&mut self, path: &str, changes: &mut Changes) -> Result<(), V2Error> {
        let mut missing = Vec::new();
        let mut p = parent(path);
        while let Some(dir) = p {
            if dir == "/" {
                break;
            }
            match self.nodes.get(dir) {
                Some(n) if n.dir => break,
                Some(_) => return Err(V2Error::new(104, dir, self.index)),
                None => missing.push(dir.to_string()),
            }
            p = parent(dir);
        }
        for dir in missing.into_iter().rev() {
            self.mkdir(&dir, self.index + 1, changes);
        }
        Ok(())
    }

    fn mkdir(&mut self, dir: &str, index: u64, changes: &mut Changes) {
        let n = Node {
            dir: true,
            value: String::new(),
            created: index,
            modified: index,
            expire_ms: None,
        };
        changes.put.push((dir.to_string(), n.clone()));
        self.nodes.insert(dir.to_string(), n);
    }

    fn set(
        &mut self,
        path: &str,
        r: &V2Request,
        action: &str,
        changes: &mut Changes,
    ) -> Result<V2Event, V2Error> {
        let existing = self.nodes.get(path).cloned();
        if let Some(n) = &existing {
            if n.dir && !r.dir {
                return Err(V2Error::new(102, path, self.index));
            }
            if n.dir && r.dir && action == "set" {
                return Err(V2Error::new(102, path, self.index));
            }
        }
        self.ensure_parents(path, changes)?;
        let index = self.index + 1;
        let prev_json = existing.as_ref().map(|n| self.json(path, n, r.now_ms));
        let value = if r.refresh {
            existing
                .as_ref()
                .map(|n| n.value.clone())
                .unwrap_or_default()
        } else {
            r.value.clone().unwrap_or_default()
        };
        let expire_ms = expire_ms(r.now_ms, r.ttl);
        let node = Node {
            dir: r.dir,
            value,
            created: match (&existing, action) {
                (Some(n), "update" | "compareAndSwap") => n.created,
                _ => index,
            },
            modified: index,
            expire_ms,
        };
        self.index = index;
        let json = self.json(path, &node, r.now_ms);
        changes.put.push((path.to_string(), node.clone()));
        self.nodes.insert(path.to_string(), node);
        Ok(V2Event {
            action: action.into(),
            node: json,
            prev_node: prev_json,
            index,
            path: path.to_string(),
            created: existing.is_none(),
        })
    }

    fn delete(
        &mut self,
        path: &str,
        r: &V2Request,
        changes: &mut Changes,
    ) -> Result<V2Event, V2Error> {
        let n = self
            .nodes
            .get(path)
            .cloned()
            .ok_or_else(|| V2Error::new(100, path, self.index))?;
        let cad = r.prev_value.is_some() || r.prev_index.is_some();
        if n.dir {
            if cad {
                return Err(V2Error::new(102, path, self.index));
            }
            if !r.dir && !r.recursive {
                return Err(V2Error::new(102, path, self.index));
            }
            if !r.recursive && !self.children(path).is_empty() {
                return Err(V2Error::new(108, path, self.index));
            }
        } else if cad {
            self.compare(&n, r)?;
        }
        let index = self.index + 1;
        self.index = index;
        let prev = self.json(path, &n, r.now_ms);
        self.remove_tree(path, changes);
        Ok(V2Event {
            action: if cad { "compareAndDelete" } else { "delete" }.into(),
            node: NodeJson {
                key: Some(path.to_string()),
                dir: n.dir,
                modified_index: index,
                created_index: n.created,
                ..Default::default()
            },
            prev_node: Some(prev),
            index,
            path: path.to_string(),
            created: false,
        })
    }

    fn remove_tree(&mut self, path: &str, changes: &mut Changes) {
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .nodes
            .range(path.to_string()..)
            .take_while(|(k, _)| *k == path || k.starts_with(&prefix))
            .filter(|(k, _)| *k == path || k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
            changes.delete.push(k);
        }
    }

    /// True when some node's TTL has run out at `now_ms` (the leader then proposes an expiry).
    pub fn has_expired(&self, now_ms: i64) -> bool {
        self.nodes
            .values()
            .any(|n| n.expire_ms.is_some_and(|e| e <= now_ms))
    }

    /// Removes nodes whose TTL ran out, as of the leader's clock in the log entry.
    pub fn expire(&mut self, now_ms: i64, changes: &mut Changes) -> Vec<V2Event> {
        let expired: Vec<(String, Node)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.expire_ms.is_some_and(|e| e <= now_ms))
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect();
        let mut events = Vec::new();
        for (path, n) in expired {
            if !self.nodes.contains_key(&path) {
                continue; // removed with an expired parent
            }
            self.index += 1;
            let prev = self.json(&path, &n, now_ms);
            self.remove_tree(&path, changes);
            let ev = V2Event {
                action: "expire".into(),
                node: NodeJson {
                    key: Some(path.clone()),
                    dir: n.dir,
                    modified_index: self.index,
                    created_index: n.created,
                    ..Default::default()
                },
                prev_node: Some(prev),
                index: self.index,
                path,
                created: false,
            };
            self.record(&ev);
            events.push(ev);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, value: Option<&str>) -> V2Request {
        V2Request {
            method: method.into(),
            path: path.into(),
            value: value.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn set_get_cas_delete() {
        let mut s = V2Store::default();
        let mut c = Changes::default();
        let ev = s
            .apply(&req("PUT", "/foo", Some("bar")), &mut c)
            .expect("set");
        assert_eq!(ev.action, "set");
        assert!(ev.created);
        let mut cas = req("PUT", "/foo", Some("baz"));
        cas.prev_value = Some("nope".into());
        let e = s.apply(&cas, &mut c).expect_err("cas must fail");
        assert_eq!((e.code, e.cause.as_str()), (101, "[nope != bar]"));
        let got = s.get("/foo", false, false, 0).expect("get");
        assert_eq!(got.node.value.as_deref(), Some("bar"));
        let ev = s
            .apply(&req("PUT", "/d/x", Some("1")), &mut c)
            .expect("nested");
        assert_eq!(ev.node.key.as_deref(), Some("/d/x"));
        let e = s
            .apply(&req("DELETE", "/d", None), &mut c)
            .expect_err("dir");
        assert_eq!(e.code, 102);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
