//! What etcdctl cannot express, through the v3 gRPC API directly (oxcd-api's tonic client):
//! range filters on mod/create revision, count and more with limits, nested txns, compares
//! over ranges and on every target with every operator, ignore_value/ignore_lease, reads
//! inside a txn after its own writes, compaction edges. Every request goes to the real
//! etcd 3.4 and to oxcd; the responses (or gRPC code and message) must be identical, with
//! only the raft term masked.

use oxcd_api::etcdserverpb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
use oxcd_api::etcdserverpb::kv_client::KvClient;
use oxcd_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use oxcd_api::etcdserverpb::{
    request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, ResponseHeader, TxnRequest,
};
use oxcd_testkit::{require, Cluster, Impl};
use tonic::transport::Channel;

enum Req {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

fn range(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(put(k, v))),
    }
}

fn op_range(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(r)),
    }
}

fn op_del(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: b(k),
                range_end: b(end),
                prev_kv: true,
            },
        )),
    }
}

fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

fn cmp(k: &str, end: &str, target: T, result: R, u: U) -> Compare {
    Compare {
        key: b(k),
        range_end: b(end),
        target: target as i32,
        result: result as i32,
        target_union: Some(u),
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> Req {
    Req::Txn(TxnRequest {
        compare,
        success,
        failure,
    })
}

fn requests() -> Vec<Req> {
    let mut v = vec![
        Req::Put(put("a", "1")),
        Req::Put(put("b", "2")),
        Req::Put(put("c", "3")),
        Req::Put(put("a", "11")),
        Req::Put(put("d", "4")),
        Req::Put(put("e", "5")),
        Req::Put(put("b", "22")),
    ];
    // Range options.
    for (min_mod, max_mod, min_create, max_create, limit) in [
        (4, 0, 0, 0, 0),
        (0, 4, 0, 0, 0),
        (0, 0, 3, 0, 0),
        (0, 0, 0, 3, 0),
        (3, 6, 0, 0, 2),
        (0, 0, 0, 0, 2),
        (0, 0, 2, 5, 1),
    ] {
        v.push(Req::Range(RangeRequest {
            min_mod_revision: min_mod,
            max_mod_revision: max_mod,
            min_create_revision: min_create,
            max_create_revision: max_create,
            limit,
            ..range("a", "z")
        }));
    }
    v.extend([
        Req::Range(range("d", "a")),
        Req::Range(range("a", "\0")),
        Req::Range(RangeRequest {
            count_only: true,
            limit: 1,
            ..range("a", "z")
        }),
        Req::Range(RangeRequest {
            keys_only: true,
            limit: 3,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Value as i32,
            ..range("a", "z")
        }),
        Req::Range(RangeRequest {
            sort_target: SortTarget::Mod as i32,
            ..range("a", "z")
        }),
        Req::Range(RangeRequest {
            serializable: true,
            revision: 4,
            ..range("a", "z")
        }),
        Req::Range(RangeRequest {
            revision: 99,
            ..range("a", "")
        }),
        Req::Put(PutRequest {
            ignore_value: true,
            prev_kv: true,
            ..put("a", "")
        }),
        Req::Put(PutRequest {
            ignore_lease: true,
            ..put("b", "222")
        }),
        Req::Put(PutRequest {
            ignore_value: true,
            ..put("a", "x")
        }),
        Req::Put(PutRequest {
            lease: 7,
            ignore_lease: true,
            ..put("a", "x")
        }),
        Req::Delete(DeleteRangeRequest {
            key: b("d"),
            range_end: b("f"),
            prev_kv: true,
        }),
        Req::Delete(DeleteRangeRequest {
            key: b("zz"),
            ..Default::default()
        }),
    ]);
    // Compares: every target, every operator, single keys and ranges, missing keys.
    let targets = [
        (T::Value, U::Value(b("11"))),
        (T::Version, U::Version(2)),
        (T::Create, U::CreateRevision(2)),
        (T::Mod, U::ModRevision(5)),
        (T::Lease, U::Lease(0)),
    ];
    for (t, u) in targets {
        for r in [R::Equal, R::NotEqual, R::Greater, R::Less] {
            for (k, end) in [("a", ""), ("a", "c"), ("missing", ""), ("a", "\0")] {
                v.push(txn(
                    vec![cmp(k, end, t, r, u.clone())],
                    vec![op_range(range("a", ""))],
                    vec![op_range(range("b", ""))],
                ));
            }
        }
    }
    v.extend([
        // Writes then reads inside one txn see the txn's own revision.
        txn(
            vec![],
            vec![
                op_range(range("a", "z")),
                op_put("n", "1"),
                op_range(range("n", "")),
                op_del("c", ""),
                op_range(range("a", "z")),
            ],
            vec![],
        ),
        // Nested txns, both ways, with writes.
        txn(
            vec![cmp("n", "", T::Value, R::Equal, U::Value(b("1")))],
            vec![
                op_txn(TxnRequest {
                    compare: vec![cmp("a", "", T::Version, R::Greater, U::Version(5))],
                    success: vec![op_put("never", "x")],
                    failure: vec![op_put("m", "2"), op_range(range("m", ""))],
                }),
                op_put("o", "3"),
            ],
            vec![],
        ),
        txn(
            vec![],
            vec![op_txn(TxnRequest {
                compare: vec![],
                success: vec![op_range(range("a", "z"))],
                failure: vec![],
            })],
            vec![],
        ),
        // A txn that reads only, and one that changes nothing it deletes.
        txn(vec![], vec![op_range(range("zz", ""))], vec![]),
        txn(vec![], vec![op_del("zz", "")], vec![]),
        Req::Compact(CompactionRequest {
            revision: 6,
            physical: true,
        }),
        Req::Range(RangeRequest {
            revision: 5,
            ..range("a", "z")
        }),
        Req::Range(RangeRequest {
            revision: 6,
            ..range("a", "z")
        }),
        txn(
            vec![],
            vec![op_range(RangeRequest {
                revision: 5,
                ..range("a", "")
            })],
            vec![],
        ),
        txn(
            vec![],
            vec![
                op_put("p", "1"),
                op_range(RangeRequest {
                    revision: 3,
                    ..range("a", "")
                }),
            ],
            vec![],
        ),
        Req::Compact(CompactionRequest {
            revision: 6,
            physical: false,
        }),
        Req::Compact(CompactionRequest {
            revision: 1000,
            physical: false,
        }),
        Req::Range(range("", "\0")),
    ]);
    v
}

fn zero_term(h: &mut Option<ResponseHeader>) {
    if let Some(h) = h {
        h.raft_term = 0;
    }
}

/// Sends one request; the response (raft term masked) or the error, as text.
async fn send(kv: &mut KvClient<Channel>, r: &Req) -> String {
    let res = match r {
        Req::Range(x) => kv.range(x.clone()).await.map(|r| {
            let mut r = r.into_inner();
            zero_term(&mut r.header);
            format!("{r:?}")
        }),
        Req::Put(x) => kv.put(x.clone()).await.map(|r| {
            let mut r = r.into_inner();
            zero_term(&mut r.header);
            format!("{r:?}")
        }),
        Req::Delete(x) => kv.delete_range(x.clone()).await.map(|r| {
            let mut r = r.into_inner();
            zero_term(&mut r.header);
            format!("{r:?}")
        }),
        Req::Txn(x) => kv.txn(x.clone()).await.map(|r| {
            let mut r = r.into_inner();
            zero_term(&mut r.header);
            format!("{r:?}")
        }),
        Req::Compact(x) => kv.compact(*x).await.map(|r| {
            let mut r = r.into_inner();
            zero_term(&mut r.header);
            format!("{r:?}")
        }),
    };
    res.unwrap_or_else(|s| format!("error {:?}: {}", s.code(), s.message()))
}

async fn client(server: &Cluster) -> KvClient<Channel> {
    let channel = Channel::from_shared(server.endpoint(0))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    KvClient::new(channel)
}

#[test]
fn grpc_kv_answers_as_etcd_does() {
    require("etcd");
    let etcd = Cluster::builder(Impl::Etcd).start();
    let oxcd = Cluster::builder(Impl::Oxcd).start();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mismatches = rt.block_on(async {
        let (mut e, mut o) = (client(&etcd).await, client(&oxcd).await);
        let mut mismatches = Vec::new();
        let reqs = requests();
        for (i, r) in reqs.iter().enumerate() {
            let (want, got) = (send(&mut e, r).await, send(&mut o, r).await);
            if want != got {
                mismatches.push(format!("request {i}:\n  etcd: {want}\n  oxcd: {got}"));
            }
        }
        assert!(reqs.len() > 100);
        mismatches
    });
    assert!(
        mismatches.is_empty(),
        "{} gRPC requests differ between etcd 3.4 and oxcd:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
