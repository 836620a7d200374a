//! Pins the protobuf encoding of etcd messages to hand-computed bytes, so a
//! wrong field number, type or oneof shows up as a failing byte string.
//!
//! A tag byte is `field_number << 3 | wire_type`, with wire type 0 for
//! varints and 2 for length-delimited fields (bytes, strings, messages).

use oxcd_api::authpb::{permission, Permission};
use oxcd_api::etcdserverpb::{
    compare, range_request, request_op, watch_request, AuthRoleGrantPermissionRequest, Compare,
    DeleteRangeRequest, LeaseTimeToLiveResponse, Member, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, StatusResponse, TxnRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use oxcd_api::mvccpb::{event, Event, KeyValue};
use prost::Message;

/// Asserts `msg` encodes to exactly `want` and decodes back to itself.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, want: &[u8]) {
    let got = msg.encode_to_vec();
    assert_eq!(got, want, "encoding of {msg:?}");
    assert_eq!(&M::decode(want).expect("decode"), msg);
}

#[test]
fn response_header() {
    let header = ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: 3,
        raft_term: 4,
    };
    assert_wire(&header, &[0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4]);
}

#[test]
fn range_request_every_field() {
    let req = RangeRequest {
        key: b"foo".to_vec(),
        range_end: b"fop".to_vec(),
        limit: 10,
        revision: 5,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
    };
    #[rustfmt::skip]
    let want = [
        0x0a, 3, b'f', b'o', b'o',
        0x12, 3, b'f', b'o', b'p',
        0x18, 10,
        0x20, 5,
        0x28, 2,
        0x30, 3,
        0x38, 1,
        0x40, 1,
        0x48, 1,
        0x50, 1,
        0x58, 2,
        0x60, 3,
        0x68, 4,
    ];
    assert_wire(&req, &want);
}

#[test]
fn put_request_with_prev_kv() {
    let req = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 0x1234,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    // 0x1234 as a varint: low seven bits 0x34 with the continuation bit, then 0x24.
    #[rustfmt::skip]
    let want = [
        0x0a, 1, b'k',
        0x12, 1, b'v',
        0x18, 0xb4, 0x24,
        0x20, 1,
        0x28, 1,
        0x30, 1,
    ];
    assert_wire(&req, &want);
}

#[test]
fn delete_range_prev_kv_is_field_3() {
    let req = DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        prev_kv: true,
    };
    assert_wire(&req, &[0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 1]);
}

#[test]
fn compare_target_union_and_range_end() {
    let cmp = Compare {
        result: compare::CompareResult::NotEqual as i32,
        target: compare::CompareTarget::Mod as i32,
        key: b"k".to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(7)),
        range_end: b"l".to_vec(),
    };
    // range_end is field 64: tag 64 << 3 | 2 = 514, varint 0x82 0x04.
    assert_wire(
        &cmp,
        &[
            0x08, 3, 0x10, 2, 0x1a, 1, b'k', 0x30, 7, 0x82, 0x04, 1, b'l',
        ],
    );

    let by_value = Compare {
        target: compare::CompareTarget::Value as i32,
        target_union: Some(compare::TargetUnion::Value(b"x".to_vec())),
        ..Default::default()
    };
    assert_wire(&by_value, &[0x10, 3, 0x3a, 1, b'x']);

    let by_lease = Compare {
        target: compare::CompareTarget::Lease as i32,
        target_union: Some(compare::TargetUnion::Lease(9)),
        ..Default::default()
    };
    assert_wire(&by_lease, &[0x10, 4, 0x40, 9]);
}

#[test]
fn compare_oneof_zero_is_still_sent() {
    // "create_revision == 0" (the key does not exist) must reach the wire:
    // a oneof member has presence, unlike a plain proto3 scalar.
    let cmp = Compare {
        target: compare::CompareTarget::Create as i32,
        key: b"k".to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
        ..Default::default()
    };
    assert_wire(&cmp, &[0x10, 1, 0x1a, 1, b'k', 0x28, 0]);
}

#[test]
fn txn_request() {
    let txn = TxnRequest {
        compare: vec![Compare {
            target: compare::CompareTarget::Create as i32,
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        }],
    };
    #[rustfmt::skip]
    let want = [
        0x0a, 7, 0x10, 1, 0x1a, 1, b'k', 0x28, 0,
        0x12, 8, 0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'v',
        0x1a, 5, 0x0a, 3, 0x0a, 1, b'k',
    ];
    assert_wire(&txn, &want);
}

#[test]
fn nested_txn_is_request_op_field_4() {
    let op = RequestOp {
        request: Some(request_op::Request::RequestTxn(TxnRequest::default())),
    };
    assert_wire(&op, &[0x22, 0]);
}

#[test]
fn watch_progress_request_and_events() {
    let progress = WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(
            WatchProgressRequest {},
        )),
    };
    assert_wire(&progress, &[0x1a, 0]);

    let resp = WatchResponse {
        watch_id: 1,
        events: vec![Event {
            r#type: event::EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                mod_revision: 9,
                ..Default::default()
            }),
            prev_kv: None,
        }],
        ..Default::default()
    };
    // events is field 11: tag 11 << 3 | 2 = 0x5a.
    #[rustfmt::skip]
    let want = [
        0x10, 1,
        0x5a, 9, 0x08, 1, 0x12, 5, 0x0a, 1, b'k', 0x18, 9,
    ];
    assert_wire(&resp, &want);
}

#[test]
fn negative_ttl_is_int64_not_sint64() {
    // An expired lease reports TTL -1: ten-byte two's-complement varint.
    let resp = LeaseTimeToLiveResponse {
        id: 2,
        ttl: -1,
        ..Default::default()
    };
    #[rustfmt::skip]
    let want = [
        0x10, 2,
        0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    assert_wire(&resp, &want);
}

#[test]
fn member_and_status() {
    let member = Member {
        id: 0x10,
        name: "n".into(),
        peer_ur_ls: vec!["p".into()],
        client_ur_ls: vec!["c".into()],
        is_learner: true,
    };
    assert_wire(
        &member,
        &[
            0x08, 0x10, 0x12, 1, b'n', 0x1a, 1, b'p', 0x22, 1, b'c', 0x28, 1,
        ],
    );

    let status = StatusResponse {
        version: "3.5.0".into(),
        db_size: 100,
        leader: 1,
        raft_index: 2,
        raft_term: 3,
        raft_applied_index: 4,
        errors: vec!["e".into()],
        db_size_in_use: 5,
        is_learner: true,
        ..Default::default()
    };
    #[rustfmt::skip]
    let want = [
        0x12, 5, b'3', b'.', b'5', b'.', b'0',
        0x18, 100,
        0x20, 1,
        0x28, 2,
        0x30, 3,
        0x38, 4,
        0x42, 1, b'e',
        0x48, 5,
        0x50, 1,
    ];
    assert_wire(&status, &want);
}

#[test]
fn role_grant_permission() {
    let req = AuthRoleGrantPermissionRequest {
        name: "r".into(),
        perm: Some(Permission {
            perm_type: permission::Type::Readwrite as i32,
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        }),
    };
    assert_wire(
        &req,
        &[
            0x0a, 1, b'r', 0x12, 8, 0x08, 2, 0x12, 1, b'a', 0x1a, 1, b'b',
        ],
    );
}

#[test]
fn grpc_service_names() {
    use oxcd_api::{etcdserverpb as pb, v3electionpb, v3lockpb};
    assert_eq!(pb::kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(pb::watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(pb::lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(pb::cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(
        pb::maintenance_server::SERVICE_NAME,
        "etcdserverpb.Maintenance"
    );
    assert_eq!(pb::auth_server::SERVICE_NAME, "etcdserverpb.Auth");
    assert_eq!(v3lockpb::lock_server::SERVICE_NAME, "v3lockpb.Lock");
    assert_eq!(
        v3electionpb::election_server::SERVICE_NAME,
        "v3electionpb.Election"
    );
}
