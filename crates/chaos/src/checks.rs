//! The checks of a finished run: linearizability of the register and list histories (key by
//! key), etcd's watch guarantees for every watcher against the members' own event streams,
//! every acknowledged write present on every member, and the test-only history tampering
//! that proves the checks catch a lost acknowledged write.

use std::collections::{BTreeMap, BTreeSet};

use crate::checker::{self, AppendList, Entry, ListOp, ListOut, Register, Verdict};
use crate::workload::{Event, Op, Record, WatchLog};

/// Search steps per key before the checker gives up (reported, never a pass).
pub const STEPS_MAX: u64 = 20_000_000;

/// The outcome of checking one key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyVerdict {
    pub key: String,
    pub ops: usize,
    pub verdict: String,
}

/// Checks every key's sub-history; returns the per-key verdicts and the violation messages.
pub fn linearizability(history: &[Record]) -> (Vec<KeyVerdict>, Vec<String>) {
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in history {
        by_key.entry(&r.key).or_default().push(r);
    }
    let mut verdicts = Vec::new();
    let mut violations = Vec::new();
    for (key, recs) in by_key {
        let (verdict, ops) = check_key(&recs);
        let text = match &verdict {
            Verdict::Linearizable => "linearizable".to_string(),
            Verdict::GaveUp => {
                "checker gave up (too many concurrent unknown operations)".to_string()
            }
            Verdict::Violation {
                stuck_op,
                linearized,
            } => {
                let r = recs.get(*stuck_op);
                let msg = format!(
                    "key {key}: NOT linearizable: after {linearized} operations no order explains \
                     {}",
                    r.map(|r| describe(r)).unwrap_or_default()
                );
                violations.push(msg.clone());
                msg
            }
        };
        if matches!(verdict, Verdict::GaveUp) {
            violations.push(format!("key {key}: {text}"));
        }
        verdicts.push(KeyVerdict {
            key: key.to_string(),
            ops,
            verdict: text,
        });
    }
    (verdicts, violations)
}

/// One key's sub-history against the model of its kind (the first record's): the verdict
/// and how many operations were checked.
fn check_key(recs: &[&Record]) -> (Verdict, usize) {
    if matches!(recs[0].op, Op::Register(..)) {
        let entries = entries(recs, |op| match op {
            Op::Register(i, o) => Some((i, o)),
            Op::List(..) => None,
        });
        (
            checker::check(&Register, &entries, STEPS_MAX),
            entries.len(),
        )
    } else {
        let entries = entries(recs, |op| match op {
            Op::List(i, o) => Some((i, o)),
            Op::Register(..) => None,
        });
        (
            checker::check(&AppendList, &entries, STEPS_MAX),
            entries.len(),
        )
    }
}

/// The checker's entries of the records whose operation `pick` takes (input and output).
fn entries<I: Clone, O: Clone>(
    recs: &[&Record],
    pick: impl Fn(&Op) -> Option<(&I, &Option<O>)>,
) -> Vec<Entry<I, O>> {
    recs.iter()
        .filter_map(|r| {
            let (input, output) = pick(&r.op)?;
            Some(Entry {
                input: input.clone(),
                output: output.clone(),
                call_us: r.invoke_us,
                ret_us: r.complete_us,
            })
        })
        .collect()
}

fn describe(r: &Record) -> String {
    let mut op = format!("{:?}", r.op);
    if op.len() > 160 {
        let cut = (0..=160)
            .rev()
            .find(|&i| op.is_char_boundary(i))
            .unwrap_or(0);
        op = format!("{}…{}", &op[..cut], &op[op.len().saturating_sub(40)..]);
    }
    format!(
        "process {} {op} invoked at {:.3}s, completed at {}, on m{}",
        r.process,
        r.invoke_us as f64 / 1e6,
        r.complete_us
            .map(|c| format!("{:.3}s", c as f64 / 1e6))
            .unwrap_or_else(|| "?".into()),
        r.member + 1
    )
}

/// Every acknowledged write must be in member `name`'s event stream at its revision.
pub fn acked_writes_present(history: &[Record], name: &str, events: &[Event]) -> Vec<String> {
    let by_rev: BTreeMap<(i64, &str), &Event> = events
        .iter()
        .map(|e| ((e.rev, e.key.as_str()), e))
        .collect();
    let mut out = Vec::new();
    for r in history {
        let (Some(value), Some(rev)) = (r.acked_value(), r.rev) else {
            continue;
        };
        match by_rev.get(&(rev, r.key.as_str())) {
            Some(e) if e.put && e.value == value => {}
            Some(e) => out.push(format!(
                "{name}: acknowledged write of {value:?} to {} at revision {rev} reads {:?} there",
                r.key, e.value
            )),
            None => out.push(format!(
                "{name}: acknowledged write of {value:?} to {} at revision {rev} is missing",
                r.key
            )),
        }
        if out.len() >= 20 {
            out.push(format!("{name}: (more missing writes not listed)"));
            break;
        }
    }
    out
}

/// Every acknowledged multi-key transaction's writes must be in member `name`'s event
/// stream at its revision: each list put with its value, each delete as a delete event
/// with the key's marker put beside it.
pub fn acked_txn_writes_present(
    txns: &[crate::elle::Txn],
    name: &str,
    events: &[Event],
) -> Vec<String> {
    use crate::elle::Write;
    let by_rev: BTreeMap<(i64, &str), &Event> = events
        .iter()
        .map(|e| ((e.rev, e.key.as_str()), e))
        .collect();
    let mut out = Vec::new();
    for t in txns {
        let Some(rev) = t.rev else {
            continue;
        };
        for (key, w) in &t.writes {
            let (ok, want) = match w {
                Write::Put(l) => {
                    let v = crate::workload::encode_list(l);
                    let ok = by_rev
                        .get(&(rev, key.as_str()))
                        .is_some_and(|e| e.put && e.value == v);
                    (ok, format!("put of {v:?}"))
                }
                Write::Delete(id) => {
                    let marker = format!("{key}!");
                    let deleted = by_rev.get(&(rev, key.as_str())).is_some_and(|e| !e.put);
                    let marked = by_rev
                        .get(&(rev, marker.as_str()))
                        .is_some_and(|e| e.put && e.value == format!("d{id}"));
                    (deleted && marked, format!("delete #{id}"))
                }
            };
            if !ok {
                out.push(format!(
                    "{name}: acknowledged transaction's {want} on {key} at revision {rev} is not there"
                ));
            }
        }
        if out.len() >= 20 {
            out.push(format!(
                "{name}: (more missing transaction writes not listed)"
            ));
            break;
        }
    }
    out
}

/// A member's own stream must be sane: revisions increasing, prev_kv the key's previous value.
pub fn reference_sane(name: &str, events: &[Event]) -> Vec<String> {
    let mut out = Vec::new();
    let mut last: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    let mut prev_rev = 0;
    for e in events {
        if e.rev < prev_rev {
            out.push(format!("{name}: revision {} after {prev_rev}", e.rev));
        }
        prev_rev = e.rev;
        let before = last.get(e.key.as_str()).copied().flatten();
        if e.prev.as_deref() != before {
            out.push(format!(
                "{name}: event at revision {} on {}: prev_kv {:?}, but the key held {:?}",
                e.rev, e.key, e.prev, before
            ));
        }
        last.insert(&e.key, e.put.then_some(e.value.as_str()));
        if out.len() >= 20 {
            break;
        }
    }
    out
}

/// etcd's watch guarantees for one watcher, against the reference stream.
pub fn watch_guarantees(log: &WatchLog, reference: &[Event], final_rev: i64) -> Vec<String> {
    let w = format!("watcher {}", log.watcher);
    let mut out = Vec::new();
    let mut seen: Vec<&Event> = Vec::new();
    let mut last_rev = 0;
    let mut uniq: BTreeSet<(i64, &str)> = BTreeSet::new();
    for b in &log.batches {
        // Atomic: a revision never spans two responses; ordered: revisions only grow.
        if let Some(first) = b.events.first() {
            if first.rev <= last_rev {
                out.push(format!(
                    "{w}: response from m{} starts at revision {} after revision {last_rev} \
                     (out of order, duplicated, or a revision split across responses)",
                    b.member + 1,
                    first.rev
                ));
            }
        }
        for e in &b.events {
            if !uniq.insert((e.rev, e.key.as_str())) {
                out.push(format!(
                    "{w}: event {} at revision {} delivered twice",
                    e.key, e.rev
                ));
            }
            if e.rev < last_rev {
                out.push(format!("{w}: revision {} after {last_rev}", e.rev));
            }
            last_rev = last_rev.max(e.rev);
            seen.push(e);
        }
    }
    // None missing, none invented, prev_kv right: the watcher's events are exactly the
    // reference's from its start revision to the final revision.
    let want: Vec<&Event> = reference
        .iter()
        .filter(|e| e.rev >= log.start_rev && e.rev <= final_rev)
        .collect();
    let seen: Vec<&Event> = seen.into_iter().filter(|e| e.rev <= final_rev).collect();
    if seen != want {
        let i = seen
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(seen.len().min(want.len()));
        out.push(format!(
            "{w}: saw {} events, the members have {} from revision {} to {final_rev}; first \
             difference at #{i}: saw {:?}, expected {:?}",
            seen.len(),
            want.len(),
            log.start_rev,
            seen.get(i),
            want.get(i)
        ));
    }
    out.truncate(20);
    out
}

/// Test-only: makes one acknowledged append disappear from every later read, as if the
/// cluster had lost it. Returns a description of the tampering, or None if no append fits.
pub fn tamper_lose_acked_write(history: &mut [Record]) -> Option<String> {
    let victim = history.iter().find_map(|r| match &r.op {
        Op::List(ListOp::Append { value, .. }, Some(ListOut::Appended(true))) => {
            let done = r.complete_us?;
            let read_later = history.iter().any(|x| {
                x.key == r.key
                    && x.invoke_us > done
                    && matches!(&x.op, Op::List(ListOp::Read, Some(ListOut::Read(l))) if l.contains(value))
            });
            read_later.then(|| (r.key.clone(), *value))
        }
        _ => None,
    })?;
    let (key, value) = victim;
    for r in history.iter_mut().filter(|r| r.key == key) {
        if let Op::List(ListOp::Read, Some(ListOut::Read(l))) = &mut r.op {
            l.retain(|v| *v != value);
        }
    }
    Some(format!(
        "dropped acknowledged append {value} on {key} from every read"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{RegisterOp, RegisterOut};

    fn rec(key: &str, op: Op, c: u64, r: Option<u64>, rev: Option<i64>) -> Record {
        Record {
            process: 0,
            key: key.into(),
            op,
            invoke_us: c,
            complete_us: r,
            rev,
            member: 0,
            error: None,
        }
    }

    fn ev(rev: i64, key: &str, value: &str, prev: Option<&str>) -> Event {
        Event {
            rev,
            key: key.into(),
            put: true,
            value: value.into(),
            prev: prev.map(Into::into),
        }
    }

    #[test]
    fn tampered_lost_append_is_caught() {
        let mut h = vec![
            rec(
                "/l",
                Op::List(
                    ListOp::Append {
                        expect: vec![],
                        value: 1,
                    },
                    Some(ListOut::Appended(true)),
                ),
                0,
                Some(1),
                Some(2),
            ),
            rec(
                "/l",
                Op::List(ListOp::Read, Some(ListOut::Read(vec![1]))),
                2,
                Some(3),
                None,
            ),
        ];
        assert!(linearizability(&h).1.is_empty());
        assert!(tamper_lose_acked_write(&mut h).is_some());
        assert_eq!(linearizability(&h).1.len(), 1);
    }

    #[test]
    fn missing_acked_write_and_bad_watch_are_reported() {
        let h = vec![rec(
            "/r",
            Op::Register(RegisterOp::Put(5), Some(RegisterOut::Written)),
            0,
            Some(1),
            Some(3),
        )];
        let good = vec![ev(2, "/r", "4", None), ev(3, "/r", "5", Some("4"))];
        assert!(acked_writes_present(&h, "m1", &good).is_empty());
        assert!(reference_sane("m1", &good).is_empty());
        let lost = vec![ev(2, "/r", "4", None)];
        assert_eq!(acked_writes_present(&h, "m1", &lost).len(), 1);
        let bad_prev = vec![ev(2, "/r", "4", None), ev(3, "/r", "5", Some("9"))];
        assert_eq!(reference_sane("m1", &bad_prev).len(), 1);
        let log = |events: Vec<Vec<Event>>| WatchLog {
            watcher: 0,
            start_rev: 1,
            batches: events
                .into_iter()
                .map(|events| crate::workload::Batch {
                    recv_us: 0,
                    member: 0,
                    events,
                })
                .collect(),
            reconnects: 0,
            canceled: vec![],
        };
        assert!(watch_guarantees(&log(vec![good.clone()]), &good, 3).is_empty());
        // Missing an event.
        assert!(!watch_guarantees(&log(vec![vec![good[1].clone()]]), &good, 3).is_empty());
        // Duplicated after a resume.
        let dup = log(vec![good.clone(), vec![good[1].clone()]]);
        assert!(!watch_guarantees(&dup, &good, 3).is_empty());
        // Out of order.
        let rev = log(vec![vec![good[1].clone()], vec![good[0].clone()]]);
        assert!(!watch_guarantees(&rev, &good, 3).is_empty());
    }
}
