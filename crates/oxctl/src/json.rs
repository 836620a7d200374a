//! etcdctl's `-w json`: Go's encoding/json applied to the gogo-protobuf structs, so field
//! names are the proto names (`cluster_id`, `create_revision`, `peerURLs`), every field is
//! `omitempty`, 64-bit integers are plain numbers and bytes are base64.

use base64::Engine as _;
use oxcd_api::etcdserverpb as pb;
use oxcd_api::mvccpb;
use oxcd_gocompat::quote::json_string;

/// Builds one JSON object field by field, leaving out zero values as `omitempty` does.
#[derive(Default)]
pub struct Obj {
    body: String,
}

impl Obj {
    pub fn new() -> Obj {
        Obj::default()
    }

    /// A field that is always written, with an already encoded value.
    pub fn raw(mut self, name: &str, value: &str) -> Obj {
        if !self.body.is_empty() {
            self.body.push(',');
        }
        self.body.push_str(&json_string(name));
        self.body.push(':');
        self.body.push_str(value);
        self
    }

    pub fn num<T: Into<i128>>(self, name: &str, value: T) -> Obj {
        match value.into() {
            0 => self,
            v => self.raw(name, &v.to_string()),
        }
    }

    pub fn flag(self, name: &str, value: bool) -> Obj {
        if value {
            self.raw(name, "true")
        } else {
            self
        }
    }

    pub fn str(self, name: &str, value: &str) -> Obj {
        if value.is_empty() {
            self
        } else {
            self.raw(name, &json_string(value))
        }
    }

    pub fn bytes(self, name: &str, value: &[u8]) -> Obj {
        if value.is_empty() {
            self
        } else {
            self.raw(name, &json_string(&b64(value)))
        }
    }

    pub fn opt(self, name: &str, value: Option<String>) -> Obj {
        match value {
            Some(v) => self.raw(name, &v),
            None => self,
        }
    }

    /// A repeated field: left out when empty.
    pub fn list(self, name: &str, items: Vec<String>) -> Obj {
        if items.is_empty() {
            self
        } else {
            self.raw(name, &array(items))
        }
    }

    pub fn done(self) -> String {
        format!("{{{}}}", self.body)
    }
}

pub fn array(items: Vec<String>) -> String {
    format!("[{}]", items.join(","))
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn strings(items: &[String]) -> Vec<String> {
    items.iter().map(|s| json_string(s)).collect()
}

/// The header's fields, for embedding (`Obj::new()` or inline as etcdctl's lease structs do).
pub fn header_fields(o: Obj, h: &pb::ResponseHeader) -> Obj {
    o.num("cluster_id", h.cluster_id)
        .num("member_id", h.member_id)
        .num("revision", h.revision)
        .num("raft_term", h.raft_term)
}

pub fn header(h: &Option<pb::ResponseHeader>) -> Option<String> {
    h.as_ref().map(|h| header_fields(Obj::new(), h).done())
}

pub fn kv(kv: &mvccpb::KeyValue) -> String {
    Obj::new()
        .bytes("key", &kv.key)
        .num("create_revision", kv.create_revision)
        .num("mod_revision", kv.mod_revision)
        .num("version", kv.version)
        .bytes("value", &kv.value)
        .num("lease", kv.lease)
        .done()
}

pub fn range(r: &pb::RangeResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .list("kvs", r.kvs.iter().map(kv).collect())
        .flag("more", r.more)
        .num("count", r.count)
        .done()
}

pub fn put(r: &pb::PutResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .opt("prev_kv", r.prev_kv.as_ref().map(kv))
        .done()
}

pub fn delete(r: &pb::DeleteRangeResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .num("deleted", r.deleted)
        .list("prev_kvs", r.prev_kvs.iter().map(kv).collect())
        .done()
}

pub fn txn(r: &pb::TxnResponse) -> String {
    use pb::response_op::Response;
    let op = |op: &pb::ResponseOp| {
        let inner = match &op.response {
            Some(Response::ResponseRange(r)) => Obj::new().raw("ResponseRange", &range(r)),
            Some(Response::ResponsePut(r)) => Obj::new().raw("ResponsePut", &put(r)),
            Some(Response::ResponseDeleteRange(r)) => {
                Obj::new().raw("ResponseDeleteRange", &delete(r))
            }
            Some(Response::ResponseTxn(r)) => Obj::new().raw("ResponseTxn", &txn(r)),
            None => return "{}".to_string(),
        };
        Obj::new().raw("Response", &inner.done()).done()
    };
    Obj::new()
        .opt("header", header(&r.header))
        .flag("succeeded", r.succeeded)
        .list("responses", r.responses.iter().map(op).collect())
        .done()
}

pub fn event(e: &mvccpb::Event) -> String {
    Obj::new()
        .num("type", e.r#type)
        .opt("kv", e.kv.as_ref().map(kv))
        .opt("prev_kv", e.prev_kv.as_ref().map(kv))
        .done()
}

pub fn member(m: &pb::Member) -> String {
    Obj::new()
        .num("ID", m.id)
        .str("name", &m.name)
        .list("peerURLs", strings(&m.peer_ur_ls))
        .list("clientURLs", strings(&m.client_ur_ls))
        .flag("isLearner", m.is_learner)
        .done()
}

pub fn members(header_json: Option<String>, ms: &[pb::Member]) -> String {
    Obj::new()
        .opt("header", header_json)
        .list("members", ms.iter().map(member).collect())
        .done()
}

pub fn status(r: &pb::StatusResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .str("version", &r.version)
        .num("dbSize", r.db_size)
        .num("leader", r.leader)
        .num("raftIndex", r.raft_index)
        .num("raftTerm", r.raft_term)
        .num("raftAppliedIndex", r.raft_applied_index)
        .list("errors", strings(&r.errors))
        .num("dbSizeInUse", r.db_size_in_use)
        .flag("isLearner", r.is_learner)
        .done()
}

pub fn hashkv(r: &pb::HashKvResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .num("hash", r.hash)
        .num("compact_revision", r.compact_revision)
        .done()
}

pub fn alarms(r: &pb::AlarmResponse) -> String {
    let alarm = |a: &pb::AlarmMember| {
        Obj::new()
            .num("memberID", a.member_id)
            .num("alarm", a.alarm)
            .done()
    };
    Obj::new()
        .opt("header", header(&r.header))
        .list("alarms", r.alarms.iter().map(alarm).collect())
        .done()
}

/// Responses that carry only a header (`{"header":{...}}`).
pub fn header_only(h: &Option<pb::ResponseHeader>) -> String {
    Obj::new().opt("header", header(h)).done()
}
