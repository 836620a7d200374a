//! etcdctl's printers for the key-value responses: simple, json, fields and protobuf (table
//! is refused for these, as etcdctl does). Each returns the bytes etcdctl writes to stdout.

use std::io::Write as _;

use oxcd_api::etcdserverpb as pb;
use oxcd_api::mvccpb;
use oxcd_gocompat::quote::quote;
use prost::Message as _;

use crate::error::{CtlError, CtlResult, EXIT_BAD_FEATURE};

use crate::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Simple,
    Json,
    Fields,
    Protobuf,
    Table,
}

impl Format {
    /// `--write-out`: only the names etcdctl knows.
    pub fn parse(s: &str) -> CtlResult<Format> {
        match s {
            "simple" => Ok(Format::Simple),
            "json" => Ok(Format::Json),
            "fields" => Ok(Format::Fields),
            "protobuf" => Ok(Format::Protobuf),
            "table" => Ok(Format::Table),
            _ => Err(CtlError::new(EXIT_BAD_FEATURE, "unsupported output format")),
        }
    }
}

pub struct Printer {
    pub format: Format,
    pub hex: bool,
    pub value_only: bool,
}

/// etcdctl's refusal of an output format a command does not print in.
pub fn unsupported(format: Format) -> CtlError {
    let name = match format {
        Format::Simple => "simple",
        Format::Json => "json",
        Format::Fields => "fields",
        Format::Protobuf => "protobuf",
        Format::Table => "table",
    };
    CtlError::new(
        EXIT_BAD_FEATURE,
        format!("{name} not supported as output format"),
    )
}

impl Printer {
    pub fn new(format: Format, hex: bool) -> Printer {
        Printer {
            format,
            hex,
            value_only: false,
        }
    }

    pub fn get(&self, r: &pb::RangeResponse) -> CtlResult<Vec<u8>> {
        self.dispatch(
            r,
            json::range,
            |s, o| s.get_simple(r, o),
            |o| fields_get(r, o),
        )
    }

    pub fn put(&self, r: &pb::PutResponse) -> CtlResult<Vec<u8>> {
        self.dispatch(
            r,
            json::put,
            |s, o| s.put_simple(r, o),
            |o| fields_put(r, o),
        )
    }

    pub fn del(&self, r: &pb::DeleteRangeResponse) -> CtlResult<Vec<u8>> {
        self.dispatch(
            r,
            json::delete,
            |s, o| s.del_simple(r, o),
            |o| fields_del(r, o),
        )
    }

    pub fn txn(&self, r: &pb::TxnResponse) -> CtlResult<Vec<u8>> {
        self.dispatch(
            r,
            json::txn,
            |s, o| s.txn_simple(r, o),
            |o| fields_txn(r, o),
        )
    }

    /// A watch response: protobuf prints each event, not the response.
    pub fn watch(&self, r: &pb::WatchResponse) -> CtlResult<Vec<u8>> {
        match self.format {
            Format::Protobuf => Ok(r
                .events
                .iter()
                .flat_map(|e| raw_bytes(&e.encode_to_vec()))
                .collect()),
            _ => self.dispatch(
                r,
                watch_json,
                |s, o| s.watch_simple(r, o),
                |o| fields_watch(r, o),
            ),
        }
    }

    fn dispatch<M: prost::Message>(
        &self,
        msg: &M,
        to_json: impl Fn(&M) -> String,
        simple: impl Fn(&Self, &mut Vec<u8>),
        fields: impl Fn(&mut Vec<u8>),
    ) -> CtlResult<Vec<u8>> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => simple(self, &mut out),
            Format::Json => out = (to_json(msg) + "\n").into_bytes(),
            Format::Fields => fields(&mut out),
            Format::Protobuf => return Ok(raw_bytes(&msg.encode_to_vec())),
            Format::Table => return Err(unsupported(Format::Table)),
        }
        Ok(out)
    }

    fn kv_simple(&self, kv: &mvccpb::KeyValue, out: &mut Vec<u8>) {
        let (k, v) = if self.hex {
            (
                hex_prefixed(&kv.key).into_bytes(),
                hex_prefixed(&kv.value).into_bytes(),
            )
        } else {
            (kv.key.clone(), kv.value.clone())
        };
        if !self.value_only {
            out.extend_from_slice(&k);
            out.push(b'\n');
        }
        out.extend_from_slice(&v);
        out.push(b'\n');
    }

    fn get_simple(&self, r: &pb::RangeResponse, out: &mut Vec<u8>) {
        for kv in &r.kvs {
            self.kv_simple(kv, out);
        }
    }

    fn put_simple(&self, r: &pb::PutResponse, out: &mut Vec<u8>) {
        out.extend_from_slice("OK\n".as_bytes());
        if let Some(kv) = &r.prev_kv {
            self.kv_simple(kv, out);
        }
    }

    fn del_simple(&self, r: &pb::DeleteRangeResponse, out: &mut Vec<u8>) {
        let _ = writeln!(out, "{}", r.deleted);
        for kv in &r.prev_kvs {
            self.kv_simple(kv, out);
        }
    }

    fn txn_simple(&self, r: &pb::TxnResponse, out: &mut Vec<u8>) {
        use pb::response_op::Response;
        out.extend_from_slice(
            if r.succeeded {
                "SUCCESS\n"
            } else {
                "FAILURE\n"
            }
            .as_bytes(),
        );
        for op in &r.responses {
            out.push(b'\n');
            match &op.response {
                Some(Response::ResponseDeleteRange(d)) => self.del_simple(d, out),
                Some(Response::ResponsePut(p)) => self.put_simple(p, out),
                Some(Response::ResponseRange(g)) => self.get_simple(g, out),
                _ => {
                    let _ = writeln!(out, "unexpected response {op:?}");
                }
            }
        }
    }

    fn watch_simple(&self, r: &pb::WatchResponse, out: &mut Vec<u8>) {
        for e in &r.events {
            out.extend_from_slice(event_type(e.r#type).as_bytes());
            out.push(b'\n');
            if let Some(prev) = &e.prev_kv {
                self.kv_simple(prev, out);
            }
            self.kv_simple(&e.kv.clone().unwrap_or_default(), out);
        }
    }
}

pub fn event_type(t: i32) -> &'static str {
    if t == 1 {
        "DELETE"
    } else {
        "PUT"
    }
}

/// `\x66\x6f\x6f`, as etcdctl's `--hex` prints bytes.
pub fn hex_prefixed(b: &[u8]) -> String {
    b.iter().map(|byte| format!("\\x{byte:02x}")).collect()
}

fn watch_json(r: &pb::WatchResponse) -> String {
    json::Obj::new()
        .opt(
            "Header",
            Some(json::header_fields(json::Obj::new(), &r.header.unwrap_or_default()).done()),
        )
        .raw("Events", &events_json(&r.events))
        .raw("CompactRevision", &r.compact_revision.to_string())
        .raw("Canceled", if r.canceled { "true" } else { "false" })
        .raw("Created", if r.created { "true" } else { "false" })
        .done()
}

fn events_json(events: &[mvccpb::Event]) -> String {
    // clientv3 builds the slice with make(), so an empty one is `[]`, never `null`.
    json::array(events.iter().map(json::event).collect())
}

/// The header lines of `-w fields`, as text.
pub fn fields_header(h: &Option<pb::ResponseHeader>) -> String {
    let mut out = Vec::new();
    fields_hdr(h, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn fields_hdr(h: &Option<pb::ResponseHeader>, out: &mut Vec<u8>) {
    let h = h.unwrap_or_default();
    let _ = writeln!(out, "\"ClusterID\" : {}", h.cluster_id);
    let _ = writeln!(out, "\"MemberID\" : {}", h.member_id);
    let _ = writeln!(out, "\"Revision\" : {}", h.revision);
    let _ = writeln!(out, "\"RaftTerm\" : {}", h.raft_term);
}

fn fields_kv(pfx: &str, kv: &mvccpb::KeyValue, out: &mut Vec<u8>) {
    let _ = writeln!(out, "\"{pfx}Key\" : {}", quote(&kv.key));
    let _ = writeln!(out, "\"{pfx}CreateRevision\" : {}", kv.create_revision);
    let _ = writeln!(out, "\"{pfx}ModRevision\" : {}", kv.mod_revision);
    let _ = writeln!(out, "\"{pfx}Version\" : {}", kv.version);
    let _ = writeln!(out, "\"{pfx}Value\" : {}", quote(&kv.value));
    let _ = writeln!(out, "\"{pfx}Lease\" : {}", kv.lease);
}

fn fields_get(r: &pb::RangeResponse, out: &mut Vec<u8>) {
    fields_hdr(&r.header, out);
    for kv in &r.kvs {
        fields_kv("", kv, out);
    }
    let _ = writeln!(out, "\"More\" : {}", r.more);
    let _ = writeln!(out, "\"Count\" : {}", r.count);
}

fn fields_put(r: &pb::PutResponse, out: &mut Vec<u8>) {
    fields_hdr(&r.header, out);
    if let Some(kv) = &r.prev_kv {
        fields_kv("Prev", kv, out);
    }
}

fn fields_del(r: &pb::DeleteRangeResponse, out: &mut Vec<u8>) {
    fields_hdr(&r.header, out);
    let _ = writeln!(out, "\"Deleted\" : {}", r.deleted);
    for kv in &r.prev_kvs {
        fields_kv("Prev", kv, out);
    }
}

fn fields_txn(r: &pb::TxnResponse, out: &mut Vec<u8>) {
    use pb::response_op::Response;
    fields_hdr(&r.header, out);
    let _ = writeln!(out, "\"Succeeded\" : {}", r.succeeded);
    for op in &r.responses {
        match &op.response {
            Some(Response::ResponseDeleteRange(d)) => fields_del(d, out),
            Some(Response::ResponsePut(p)) => fields_put(p, out),
            Some(Response::ResponseRange(g)) => fields_get(g, out),
            other => {
                let _ = writeln!(
                    out,
                    "\"Unknown\" : {}",
                    quote(format!("{other:?}").as_bytes())
                );
            }
        }
    }
}

fn fields_watch(r: &pb::WatchResponse, out: &mut Vec<u8>) {
    fields_hdr(&r.header, out);
    for e in &r.events {
        let _ = writeln!(out, "\"Type\" : {}", event_type(e.r#type));
        if let Some(prev) = &e.prev_kv {
            fields_kv("Prev", prev, out);
        }
        fields_kv("", &e.kv.clone().unwrap_or_default(), out);
    }
}

/// etcdctl writes the encoded message to stdout as it is.
pub fn raw_bytes(b: &[u8]) -> Vec<u8> {
    b.to_vec()
}
