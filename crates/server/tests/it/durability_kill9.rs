//! A write oxcd acknowledged survives `kill -9` at any moment. Writers put through the v3
//! gRPC API (oxcd-api's tonic client) concurrently, record every acknowledged write, the
//! member is killed mid-stream, restarted on the same data dir, and every acknowledged write
//! must be there with its value and revision; several rounds, so later rounds restart from
//! state that itself survived a crash. Also: a data dir oxcd did not write, or one that is
//! damaged, is refused with a clear error and exit code 1, never served.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxcd_api::etcdserverpb::kv_client::KvClient;
use oxcd_api::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use oxcd_testkit::http::{http, http_get};
use oxcd_testkit::{require, run, wait_for, Cluster, Impl};
use tonic::transport::{Channel, Endpoint};

/// Concurrent writers per round (one HTTP/2 connection each).
const WRITERS: usize = 6;
/// Acknowledged writes after which the member is killed, per round: early and late.
const KILL_AFTER_ACKS: [usize; 4] = [30, 400, 120, 800];
/// A single gRPC call is given up after this long (the member is dead or restarting).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One acknowledged txn: `key` = `value` and `last/<writer>` = `seq`, at `rev`.
#[derive(Debug, Clone)]
struct Ack {
    writer: usize,
    seq: u64,
    key: String,
    value: String,
    rev: i64,
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

async fn connect(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .expect("endpoint URL")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Writes until the member stops answering; every acknowledged txn is recorded.
async fn writer(url: String, round: usize, writer: usize, acks: Arc<Mutex<Vec<Ack>>>) {
    let mut kv = KvClient::new(connect(&url).await);
    for seq in 0u64.. {
        let key = format!("r{round}/w{writer}/{seq:06}");
        let value = format!("v{round}.{writer}.{seq}");
        // Two puts in one txn: after a crash both are there or neither is.
        let txn = TxnRequest {
            success: vec![
                put_op(&key, &value),
                put_op(&format!("last/{writer}"), &format!("{round}.{seq}")),
            ],
            ..Default::default()
        };
        match tokio::time::timeout(CALL_TIMEOUT, kv.txn(txn)).await {
            Ok(Ok(resp)) => {
                let rev = resp.into_inner().header.expect("response header").revision;
                acks.lock().expect("acks lock").push(Ack {
                    writer,
                    seq,
                    key,
                    value,
                    rev,
                });
            }
            _ => return,
        }
    }
}

/// Every key in the store: key -> (value, mod_revision), and the header revision.
async fn dump(url: &str) -> (BTreeMap<String, (String, i64)>, i64) {
    let mut kv = KvClient::new(connect(url).await);
    let resp = kv
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .await
        .expect("range over everything")
        .into_inner();
    let kvs = resp
        .kvs
        .into_iter()
        .map(|kv| {
            let k = String::from_utf8(kv.key).expect("utf-8 key");
            let v = String::from_utf8(kv.value).expect("utf-8 value");
            (k, (v, kv.mod_revision))
        })
        .collect();
    (kvs, resp.header.expect("header").revision)
}

/// Checks the store against every write acknowledged so far.
fn verify(store: &BTreeMap<String, (String, i64)>, acks: &[Ack], round: usize) {
    for a in acks {
        match store.get(&a.key) {
            Some((v, rev)) => assert!(
                *v == a.value && *rev == a.rev,
                "round {round}: {} is {v:?} at revision {rev}, but {:?} was acknowledged at revision {}",
                a.key,
                a.value,
                a.rev
            ),
            None => panic!(
                "round {round}: acknowledged write lost after kill -9: {} = {:?} (revision {})",
                a.key, a.value, a.rev
            ),
        }
    }
    for w in 0..WRITERS {
        let Some((last, last_rev)) = store.get(&format!("last/{w}")) else {
            assert!(acks.iter().all(|a| a.writer != w), "last/{w} lost");
            continue;
        };
        let (last_round, last_seq) = last.split_once('.').expect("round.seq");
        let last_round: usize = last_round.parse().expect("round");
        let last_seq: u64 = last_seq.parse().expect("seq");
        let acked = acks
            .iter()
            .filter(|a| a.writer == w)
            .map(|a| (round_of(a), a.seq))
            .max();
        if let Some(acked) = acked {
            assert!(
                (last_round, last_seq) >= acked,
                "round {round}: last/{w} = {last} went back behind acknowledged {acked:?}"
            );
        }
        // Atomicity: the txn that wrote last/<w> also wrote its key, at the same revision.
        let key = format!("r{last_round}/w{w}/{last_seq:06}");
        let Some((_, rev)) = store.get(&key) else {
            panic!("round {round}: last/{w} = {last} is there but {key}, written in the same txn, is not");
        };
        assert_eq!(
            rev, last_rev,
            "round {round}: {key} and last/{w} were one txn but have different revisions"
        );
    }
}

fn round_of(a: &Ack) -> usize {
    a.key[1..a.key.find('/').expect("r<round>/")]
        .parse()
        .expect("round")
}

#[test]
fn acknowledged_writes_survive_kill9() {
    let server = Cluster::builder(Impl::Oxcd).start();
    let url = server.endpoint(0);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut all_acks: Vec<Ack> = Vec::new();
    let mut highest_rev = 0;
    let mut v2_acks: Vec<(String, String)> = Vec::new();
    for (round, kill_after) in KILL_AFTER_ACKS.into_iter().enumerate() {
        // The v2 keyspace goes through the same log: an acknowledged v2 write survives too.
        let v2_value = format!("round{round}");
        let v2 = http(
            server.client_addr(0),
            "PUT",
            &format!("/v2/keys/r{round}"),
            Some(&format!("value={v2_value}")),
        )
        .expect("v2 PUT");
        assert_eq!(v2.status, 201, "{v2:?}");
        v2_acks.push((format!("/v2/keys/r{round}"), v2_value));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| rt.spawn(writer(url.clone(), round, w, acks.clone())))
            .collect();
        wait_for(
            &format!("{kill_after} acknowledged writes in round {round}"),
            Duration::from_secs(20),
            || (acks.lock().expect("acks lock").len() >= kill_after).then_some(()),
        );
        server.kill9(0);
        rt.block_on(async {
            for t in tasks {
                tokio::time::timeout(CALL_TIMEOUT * 2, t)
                    .await
                    .expect("a writer outlived the member by far")
                    .expect("writer task");
            }
        });
        let round_acks = acks.lock().expect("acks lock").clone();
        assert!(round_acks.len() >= kill_after);
        // Revisions handed out are monotonic: per writer, and across restarts.
        for w in 0..WRITERS {
            let revs: Vec<i64> = round_acks
                .iter()
                .filter(|a| a.writer == w)
                .map(|a| a.rev)
                .collect();
            assert!(
                revs.windows(2).all(|p| p[0] < p[1]),
                "writer {w} saw revisions go back: {revs:?}"
            );
        }
        let min_rev = round_acks.iter().map(|a| a.rev).min().unwrap_or(i64::MAX);
        assert!(
            min_rev > highest_rev,
            "round {round} reused revision {min_rev} (before: {highest_rev})"
        );
        highest_rev = round_acks
            .iter()
            .map(|a| a.rev)
            .max()
            .unwrap_or(highest_rev);
        all_acks.extend(round_acks);

        server.start(0);
        let (store, rev) = rt.block_on(dump(&url));
        assert!(
            rev >= highest_rev,
            "round {round}: revision {rev} after restart, {highest_rev} acknowledged"
        );
        verify(&store, &all_acks, round);
        highest_rev = rev;
        for (path, value) in &v2_acks {
            let got = http_get(server.client_addr(0), path).expect("v2 GET");
            assert_eq!(
                got.json()["node"]["value"],
                value.as_str(),
                "round {round}: {path} after kill -9: {got:?}"
            );
        }
    }
    // Total work done, so the test cannot pass by writing nothing.
    assert!(all_acks.len() >= KILL_AFTER_ACKS.iter().sum::<usize>());
}

/// A single oxcd member whose data dir (`NAME.data`) and logs are in `dir`; not started.
fn oxcd_on(dir: &Path, name: &str) -> Cluster {
    Cluster::builder(Impl::Oxcd).names(&[name]).dir(dir).build()
}

/// Starts member 0 on its data dir and expects it to refuse: exit code 1 within a bounded
/// time, a clear message naming `what`, and no client port answering.
fn expect_refused(server: &Cluster, what: &[&str]) -> String {
    server.spawn(0);
    // Exits, or (the bug this guards against) comes up serving: either ends the wait.
    let code = wait_for(
        "oxcd to exit or come up",
        Duration::from_secs(10),
        || match server.try_exit_code(0) {
            Some(code) => Some(code),
            None if server.log(0).contains("ready to serve client requests") => Some(0),
            None => None,
        },
    );
    let log = server.log(0);
    assert_eq!(
        code, 1,
        "oxcd must refuse this data dir with exit code 1; log:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.starts_with("oxcd: "))
        .unwrap_or_else(|| panic!("no `oxcd: ...` error line; log:\n{log}"));
    for w in what {
        assert!(line.contains(w), "the error should mention {w:?}: {line}");
    }
    assert!(
        !log.contains("ready to serve client requests"),
        "a refused data dir must never be served; log:\n{log}"
    );
    line.to_string()
}

/// Makes a data dir with a few writes and stops the member with kill -9; the member, to be
/// started again on it.
fn written_data_dir(tmp: &Path, name: &str) -> Cluster {
    let server = oxcd_on(tmp, name);
    server.start(0);
    for i in 0..20 {
        server.etcdctl(0, &["put", &format!("k{i}"), "v"], b"").ok();
    }
    server.kill9(0);
    server
}

#[test]
fn foreign_or_damaged_data_dirs_are_refused() {
    require("etcdctl");
    let tmp = tempfile::tempdir().expect("temp dir");

    // A WAL segment oxcd did not write.
    let s = oxcd_on(tmp.path(), "foreign-wal");
    s.spawn(0);
    let wal_dir = s.data_dir(0).join("member/wal");
    std::fs::create_dir_all(&wal_dir).expect("mkdir");
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(
        wal_dir.join("0000000000000000-0000000000000000.wal"),
        &garbage,
    )
    .expect("write");
    s.kill9(0);
    expect_refused(
        &s,
        &["0000000000000000-0000000000000000.wal", "write-ahead log"],
    );

    // A backend overwritten with garbage, and one truncated.
    for (name, damage) in [("overwritten-db", 0), ("truncated-db", 1)] {
        let s = written_data_dir(tmp.path(), name);
        let db = s.data_dir(0).join("member/oxcd.db");
        let len = std::fs::metadata(&db).expect("oxcd.db").len();
        if damage == 0 {
            let mut bytes = std::fs::read(&db).expect("read");
            for (i, b) in bytes.iter_mut().enumerate().take(64 * 1024) {
                *b = (i as u8).wrapping_mul(31) ^ 0x5a;
            }
            std::fs::write(&db, bytes).expect("overwrite");
        } else {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .expect("open");
            f.set_len(len / 3).expect("truncate");
        }
        expect_refused(&s, &["oxcd.db"]);
    }

    // A backend whose WAL is gone.
    let s = written_data_dir(tmp.path(), "no-wal");
    std::fs::remove_dir_all(s.data_dir(0).join("member/wal")).expect("rm wal");
    expect_refused(&s, &["write-ahead log"]);

    // The data dir of another member (another name, so another member ID). An edited
    // --initial-cluster-token alone is ignored on a restart, as in etcd (issue 12).
    let mut s = written_data_dir(tmp.path(), "other-member");
    let intruder = format!("--initial-cluster=intruder={}", s.peer_url(0));
    s.set_flags(0, ["--name=intruder".to_string(), intruder]);
    expect_refused(&s, &["belongs to member"]);
}

#[test]
fn an_etcd_data_dir_is_refused() {
    require("etcd");
    let tmp = tempfile::tempdir().expect("temp dir");
    // The same member name and dir: the same data dir.
    let etcd = Cluster::builder(Impl::Etcd)
        .names(&["shared"])
        .dir(tmp.path())
        .start();
    etcd.etcdctl(0, &["put", "a", "1"], b"").ok();
    etcd.kill9(0);
    let s = oxcd_on(tmp.path(), "shared");
    assert_eq!(s.data_dir(0), etcd.data_dir(0));
    let line = expect_refused(&s, &["etcd"]);
    // Nothing of oxcd's was written next to etcd's files.
    let out = run(
        std::process::Command::new("ls")
            .arg("-R")
            .arg(s.data_dir(0)),
        b"",
    );
    assert!(
        !out.stdout.contains("oxcd.db"),
        "oxcd wrote into etcd's data dir ({line}):\n{}",
        out.stdout
    );
}

/// A checksum failure followed by intact records is damage, not a torn tail: a crash can
/// only tear the last write. Truncating there would drop acknowledged entries, so the
/// member must refuse to start (etcd: "wal: crc mismatch").
#[test]
fn a_wal_damaged_before_its_tail_is_refused() {
    require("etcdctl");
    let tmp = tempfile::tempdir().expect("temp dir");
    let s = written_data_dir(tmp.path(), "damaged-wal");
    let wal_dir = s.data_dir(0).join("member/wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal_dir)
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .collect();
    segments.sort();
    let last = segments.last().expect("a WAL segment");
    let mut bytes = std::fs::read(last).expect("read");
    // The middle of the records, not of the preallocated zeros after them.
    let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1);
    let middle = used / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(last, bytes).expect("write");
    expect_refused(&s, &["wal"]);
}
