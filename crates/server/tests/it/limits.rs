//! etcd's request limits and checks, through the v3 gRPC API (oxcd-api's tonic client):
//! `--max-txn-ops`, a key written twice in one txn, an empty key, `--max-request-bytes`, and
//! oxcd's `--max-response-bytes`.
//! Each refusal has etcd's gRPC code and message and leaves the store untouched.

use oxcd_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use oxcd_api::etcdserverpb::kv_client::KvClient;
use oxcd_api::etcdserverpb::{
    request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use oxcd_testkit::{Cluster, Impl};
use tonic::transport::Channel;
use tonic::Code;

fn put(key: &str, value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

fn del(key: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                range_end: end.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    }
}

fn get(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

fn nested(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

fn value_is(key: &str, v: &str) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        target: CompareTarget::Value as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::Value(v.as_bytes().to_vec())),
        ..Default::default()
    }
}

fn version_is(key: &str, v: i64) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        target: CompareTarget::Version as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::Version(v)),
        ..Default::default()
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

struct Client {
    rt: tokio::runtime::Runtime,
    kv: KvClient<Channel>,
}

impl Client {
    fn new(server: &Cluster) -> Client {
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let url = server.endpoint(0);
        let channel = rt
            .block_on(Channel::from_shared(url).expect("url").connect())
            .expect("connect");
        Client {
            rt,
            kv: KvClient::new(channel),
        }
    }

    fn txn(&mut self, t: TxnRequest) -> Result<(), (Code, String)> {
        let kv = &mut self.kv;
        self.rt
            .block_on(kv.txn(t))
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_string()))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), (Code, String)> {
        let kv = &mut self.kv;
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        self.rt
            .block_on(kv.put(req))
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_string()))
    }

    fn range(&mut self, key: &[u8]) -> Result<(i64, usize), (Code, String)> {
        self.range_with(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
    }

    /// A range's revision and number of KeyValues.
    fn range_with(&mut self, req: RangeRequest) -> Result<(i64, usize), (Code, String)> {
        let kv = &mut self.kv;
        self.rt
            .block_on(kv.range(req))
            .map(|r| {
                let r = r.into_inner();
                (r.header.expect("header").revision, r.kvs.len())
            })
            .map_err(|s| (s.code(), s.message().to_string()))
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), (Code, String)> {
        let kv = &mut self.kv;
        let req = DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        self.rt
            .block_on(kv.delete_range(req))
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_string()))
    }

    /// The store's current revision.
    fn rev(&mut self) -> i64 {
        self.range(b"any").expect("range").0
    }
}

fn too_many() -> Result<(), (Code, String)> {
    Err((
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request".into(),
    ))
}

fn duplicate() -> Result<(), (Code, String)> {
    Err((
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request".into(),
    ))
}

fn empty_key() -> Result<(), (Code, String)> {
    Err((
        Code::InvalidArgument,
        "etcdserver: key is not provided".into(),
    ))
}

#[test]
fn txn_limits_and_duplicate_keys() {
    let oxcd = Cluster::builder(Impl::Oxcd)
        .flags(["--max-txn-ops=3"])
        .start();
    let mut c = Client::new(&oxcd);
    let before = c.rev();
    let four = || {
        vec![
            put("a", b"1"),
            put("b", b"1"),
            put("c", b"1"),
            put("d", b"1"),
        ]
    };
    assert_eq!(
        c.txn(txn(vec![], four(), vec![])),
        too_many(),
        "4 ops in success"
    );
    assert_eq!(
        c.txn(txn(vec![], vec![], four())),
        too_many(),
        "4 ops in the branch not taken"
    );
    let four_compares = ["a", "b", "c", "d"]
        .iter()
        .map(|k| value_is(k, "1"))
        .collect();
    assert_eq!(
        c.txn(txn(four_compares, vec![], vec![])),
        too_many(),
        "4 compares"
    );
    let inner = txn(vec![], four(), vec![]);
    assert_eq!(
        c.txn(txn(vec![], vec![nested(inner)], vec![])),
        too_many(),
        "4 ops in a nested txn"
    );

    assert_eq!(
        c.txn(txn(vec![], vec![put("a", b"1"), put("a", b"2")], vec![])),
        duplicate()
    );
    assert_eq!(
        c.txn(txn(vec![], vec![], vec![put("a", b"1"), put("a", b"2")])),
        duplicate()
    );
    assert_eq!(
        c.txn(txn(vec![], vec![put("b", b"1"), del("a", "c")], vec![])),
        duplicate(),
        "put inside a deleted range"
    );
    let inner = txn(vec![], vec![put("a", b"2")], vec![]);
    assert_eq!(
        c.txn(txn(vec![], vec![put("a", b"1"), nested(inner)], vec![])),
        duplicate(),
        "put again in a nested txn"
    );
    assert_eq!(c.rev(), before, "refused txns wrote nothing");

    // At the limit, and the cases etcd allows.
    assert_eq!(
        c.txn(txn(
            vec![version_is("x", 0)],
            vec![put("a", b"1"), put("b", b"1"), put("c", b"1")],
            vec![]
        )),
        Ok(())
    );
    assert_eq!(
        c.txn(txn(vec![], vec![put("a", b"1")], vec![put("a", b"2")])),
        Ok(()),
        "one put per branch"
    );
    assert_eq!(
        c.txn(txn(vec![], vec![del("a", ""), del("a", "")], vec![])),
        Ok(()),
        "deleting twice"
    );
    assert_eq!(
        c.txn(txn(
            vec![],
            vec![get("b"), get("b"), put("b", b"2")],
            vec![]
        )),
        Ok(()),
        "reads do not count as writes"
    );
    assert_eq!(c.rev(), before + 4);
}

#[test]
fn empty_keys_are_refused() {
    let oxcd = Cluster::builder(Impl::Oxcd).start();
    let mut c = Client::new(&oxcd);
    let before = c.rev();
    assert_eq!(c.put(b"", b"v"), empty_key());
    assert_eq!(c.range(b"").map(|_| ()), empty_key());
    assert_eq!(c.delete(b""), empty_key());
    assert_eq!(c.txn(txn(vec![], vec![put("", b"v")], vec![])), empty_key());
    assert_eq!(
        c.txn(txn(vec![value_is("", "v")], vec![], vec![])),
        empty_key()
    );
    assert_eq!(c.txn(txn(vec![], vec![], vec![get("")])), empty_key());
    assert_eq!(c.rev(), before);
}

#[test]
fn requests_over_max_request_bytes_are_refused_and_write_nothing() {
    let oxcd = Cluster::builder(Impl::Oxcd)
        .flags(["--max-request-bytes=1024", "--max-response-bytes=100000"])
        .start();
    let mut c = Client::new(&oxcd);
    let before = c.rev();
    let too_large = Err((
        Code::InvalidArgument,
        "etcdserver: request is too large".to_string(),
    ));
    assert_eq!(c.put(b"big", &[b'x'; 2000]), too_large);
    assert_eq!(
        c.txn(txn(
            vec![],
            vec![put("t1", &[b'x'; 600]), put("t2", &[b'x'; 600])],
            vec![]
        )),
        too_large
    );
    assert_eq!(c.range(b"big"), Ok((before, 0)), "nothing written");
    assert_eq!(c.range(b"t1"), Ok((before, 0)), "nothing written");
    assert_eq!(c.put(b"small", &[b'x'; 900]), Ok(()));
    assert_eq!(c.range(b"small"), Ok((before + 1, 1)));
    ranges_over_max_response_bytes_are_refused(&mut c);
}

/// Issue 15: a range whose response would pass `--max-response-bytes` fails with grpc's
/// RESOURCE_EXHAUSTED (etcd's, past its gRPC send limit) once the member has read that
/// much, not after reading the whole range; a limit, keys only, a count fit.
fn ranges_over_max_response_bytes_are_refused(c: &mut Client) {
    for n in 0..150 {
        assert_eq!(c.put(format!("r/{n:03}").as_bytes(), &[b'v'; 900]), Ok(()));
    }
    let all = RangeRequest {
        key: b"r/".to_vec(),
        range_end: b"r0".to_vec(),
        ..Default::default()
    };
    let err = c.range_with(all.clone()).expect_err("over the bound");
    assert_eq!(err.0, Code::ResourceExhausted, "{err:?}");
    assert!(
        err.1
            .starts_with("grpc: trying to send message larger than max (")
            && err.1.ends_with(" vs. 100000)"),
        "{err:?}"
    );
    let rev = c.rev();
    let limited = RangeRequest {
        limit: 50,
        ..all.clone()
    };
    assert_eq!(c.range_with(limited), Ok((rev, 50)));
    let keys = RangeRequest {
        keys_only: true,
        ..all.clone()
    };
    assert_eq!(c.range_with(keys), Ok((rev, 150)));
    // The ranges of one read-only txn share the bound.
    let half = |from: &str, to: &str| RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: from.as_bytes().to_vec(),
            range_end: to.as_bytes().to_vec(),
            ..Default::default()
        })),
    };
    let both = txn(
        vec![],
        vec![half("r/000", "r/075"), half("r/075", "r0")],
        vec![],
    );
    let err = c.txn(both).expect_err("over the bound");
    assert_eq!(err.0, Code::ResourceExhausted, "{err:?}");
    let one = txn(vec![], vec![half("r/000", "r/075")], vec![]);
    assert_eq!(c.txn(one), Ok(()));
}

/// A message beyond --max-request-bytes plus gRPC's 512 KiB allowance is refused while it is
/// decoded; etcd (grpc-go) answers RESOURCE_EXHAUSTED, which clients match on.
#[test]
fn oversized_grpc_messages_get_resource_exhausted_as_with_etcd() {
    let oxcd = Cluster::builder(Impl::Oxcd)
        .flags(["--max-request-bytes=1024"])
        .start();
    let mut c = Client::new(&oxcd);
    let before = c.rev();
    let err = c
        .put(b"huge", &vec![b'x'; 600_000])
        .expect_err("must be refused");
    assert_eq!(c.range(b"huge"), Ok((before, 0)), "nothing written");
    assert_eq!(
        err.0,
        Code::ResourceExhausted,
        "etcd answers RESOURCE_EXHAUSTED: {err:?}"
    );
}
