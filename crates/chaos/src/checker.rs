//! The linearizability checker: Wing and Gong's search with Lowe's memoization, as Porcupine
//! implements it. A history is a set of operations with invoke and completion times; it is
//! linearizable when some total order of the operations respects real time (an operation
//! that completed before another was invoked comes first) and replays correctly on the
//! sequential model. An operation whose outcome is unknown (a write that timed out or failed)
//! completes at +∞ and its output is unconstrained: it may take effect at any point after its
//! invocation, or (equivalently, by being ordered last) never.
//!
//! Registers and lists are checked one key at a time (P-compositionality: a history of
//! independent objects is linearizable iff each object's sub-history is).

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input;
    type Output;
    fn init(&self) -> Self::State;
    /// The state after `input` is applied to `state` and answers `output` (`None`: the answer
    /// is unknown and anything goes), or `None` if the model cannot answer that.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// One operation of a history. `ret == None` means its outcome is unknown.
#[derive(Debug, Clone)]
pub struct Entry<I, O> {
    pub input: I,
    pub output: Option<O>,
    pub call_us: u64,
    pub ret_us: Option<u64>,
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists. `stuck_op` is an operation (index into the history) that could not be
    /// placed by the time it returned, at the deepest point the search reached, and
    /// `linearized` is how many operations were placed before it.
    Violation {
        stuck_op: usize,
        linearized: usize,
    },
    /// The search gave up after `steps_max` steps: neither proved nor refuted.
    GaveUp,
}

const NIL: usize = usize::MAX;

/// The history as a doubly linked list of call and return events in time order, with
/// dancing-links removal and reinsertion of a call and its return.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For a call node, its return node; NIL for return nodes.
    ret_of: Vec<usize>,
    op: Vec<usize>,
}

impl Events {
    fn new<I, O>(ops: &[Entry<I, O>]) -> Events {
        // (time, 0 = call / 1 = return, op): calls sort before returns at the same instant, so
        // operations that touch in time count as concurrent (the permissive reading).
        let mut evs: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            evs.push((o.call_us, 0, i));
            evs.push((o.ret_us.unwrap_or(u64::MAX), 1, i));
        }
        evs.sort_unstable();
        let n = evs.len() + 1; // node 0 is the head
        let mut e = Events {
            next: vec![NIL; n],
            prev: vec![NIL; n],
            ret_of: vec![NIL; n],
            op: vec![NIL; n],
        };
        let mut ret_node = vec![NIL; ops.len()];
        for (k, &(_, kind, i)) in evs.iter().enumerate() {
            let node = k + 1;
            e.op[node] = i;
            if kind == 1 {
                ret_node[i] = node;
            }
            e.prev[node] = k;
            e.next[k] = node;
        }
        for node in 1..n {
            if e.ret_of[node] == NIL && ret_node[e.op[node]] != node {
                e.ret_of[node] = ret_node[e.op[node]];
            }
        }
        e
    }

    fn is_call(&self, node: usize) -> bool {
        self.ret_of[node] != NIL
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret_of[call]);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.ret_of[call]);
        self.relink(call);
    }
}

/// Checks one (sub-)history against `model`, giving up after `steps_max` search steps.
pub fn check<M: Model>(model: &M, ops: &[Entry<M::Input, M::Output>], steps_max: u64) -> Verdict {
    let mut ev = Events::new(ops);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut entry = ev.next[0];
    let mut steps = 0u64;
    let mut deepest = (0usize, NIL);
    while ev.next[0] != NIL {
        steps += 1;
        if steps > steps_max {
            return Verdict::GaveUp;
        }
        assert!(entry != NIL, "the event list always ends with a return");
        if ev.is_call(entry) {
            let i = ev.op[entry];
            let o = &ops[i];
            if let Some(next_state) = model.step(&state, &o.input, o.output.as_ref()) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), next_state.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, next_state)));
                    ev.lift(entry);
                    entry = ev.next[0];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = ev.next[entry];
        } else {
            if stack.len() >= deepest.0 || deepest.1 == NIL {
                deepest = (stack.len(), ev.op[entry]);
            }
            let Some((call, prev_state)) = stack.pop() else {
                return Verdict::Violation {
                    stuck_op: deepest.1,
                    linearized: deepest.0,
                };
            };
            state = prev_state;
            let i = ev.op[call];
            linearized[i / 64] &= !(1 << (i % 64));
            ev.unlift(call);
            entry = ev.next[call];
        }
    }
    Verdict::Linearizable
}

/// A register that may be absent, with put, get and compare-and-set.
pub struct Register;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RegisterOp {
    Put(u64),
    Get,
    Cas { expect: u64, new: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RegisterOut {
    Written,
    Read(Option<u64>),
    Swapped(bool),
}

impl Model for Register {
    type State = Option<u64>;
    type Input = RegisterOp;
    type Output = RegisterOut;
    fn init(&self) -> Option<u64> {
        None
    }
    fn step(
        &self,
        s: &Option<u64>,
        i: &RegisterOp,
        o: Option<&RegisterOut>,
    ) -> Option<Option<u64>> {
        match (i, o) {
            (RegisterOp::Put(v), _) => Some(Some(*v)),
            (RegisterOp::Get, None) => Some(*s),
            (RegisterOp::Get, Some(RegisterOut::Read(v))) => (v == s).then_some(*s),
            (RegisterOp::Cas { expect, new }, o) => {
                let matches = *s == Some(*expect);
                match o {
                    None => Some(if matches { Some(*new) } else { *s }),
                    Some(RegisterOut::Swapped(ok)) if *ok == matches => {
                        Some(if matches { Some(*new) } else { *s })
                    }
                    Some(_) => None,
                }
            }
            (RegisterOp::Get, Some(_)) => None,
        }
    }
}

/// A list built by conditional appends: an append names the list it read and succeeds only
/// if the list is still exactly that (the workload's Txn compares the key's mod_revision,
/// and a list only grows, so "unchanged" and "equal" are the same).
pub struct AppendList;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListOp {
    Append { expect: Vec<u64>, value: u64 },
    Read,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListOut {
    Appended(bool),
    Read(Vec<u64>),
}

impl Model for AppendList {
    type State = Vec<u64>;
    type Input = ListOp;
    type Output = ListOut;
    fn init(&self) -> Vec<u64> {
        Vec::new()
    }
    fn step(&self, s: &Vec<u64>, i: &ListOp, o: Option<&ListOut>) -> Option<Vec<u64>> {
        match (i, o) {
            (ListOp::Read, None) => Some(s.clone()),
            (ListOp::Read, Some(ListOut::Read(v))) => (v == s).then(|| s.clone()),
            (ListOp::Append { expect, value }, o) => {
                let matches = s == expect;
                let after = || {
                    let mut n = s.clone();
                    n.push(*value);
                    n
                };
                match o {
                    None => Some(if matches { after() } else { s.clone() }),
                    Some(ListOut::Appended(ok)) if *ok == matches => {
                        Some(if matches { after() } else { s.clone() })
                    }
                    Some(_) => None,
                }
            }
            (ListOp::Read, Some(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: u64 = 1_000_000;

    fn op<I, O>(input: I, output: Option<O>, call_us: u64, ret_us: Option<u64>) -> Entry<I, O> {
        Entry {
            input,
            output,
            call_us,
            ret_us,
        }
    }

    fn put(v: u64, c: u64, r: u64) -> Entry<RegisterOp, RegisterOut> {
        op(RegisterOp::Put(v), Some(RegisterOut::Written), c, Some(r))
    }
    fn get(v: Option<u64>, c: u64, r: u64) -> Entry<RegisterOp, RegisterOut> {
        op(RegisterOp::Get, Some(RegisterOut::Read(v)), c, Some(r))
    }
    fn cas(e: u64, n: u64, ok: bool, c: u64, r: u64) -> Entry<RegisterOp, RegisterOut> {
        op(
            RegisterOp::Cas { expect: e, new: n },
            Some(RegisterOut::Swapped(ok)),
            c,
            Some(r),
        )
    }

    #[test]
    fn sequential_register_history_is_linearizable() {
        let h = vec![
            get(None, 0, 1),
            put(1, 2, 3),
            get(Some(1), 4, 5),
            cas(1, 2, true, 6, 7),
            cas(1, 3, false, 8, 9),
            get(Some(2), 10, 11),
        ];
        assert_eq!(check(&Register, &h, STEPS), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_ops_may_take_either_order() {
        // put 1 and put 2 overlap; a later read may see either, but two later reads in
        // sequence cannot flip back.
        let h = vec![put(1, 0, 10), put(2, 1, 9), get(Some(1), 11, 12)];
        assert_eq!(check(&Register, &h, STEPS), Verdict::Linearizable);
        let h = vec![put(1, 0, 10), put(2, 1, 9), get(Some(2), 11, 12)];
        assert_eq!(check(&Register, &h, STEPS), Verdict::Linearizable);
        let h = vec![
            put(1, 0, 10),
            put(2, 1, 9),
            get(Some(2), 11, 12),
            get(Some(1), 13, 14),
        ];
        assert!(matches!(
            check(&Register, &h, STEPS),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn stale_read_is_a_violation() {
        // put 1 completes, then put 2 completes, then a read returns 1: what a partitioned
        // old leader serving reads locally would answer.
        let h = vec![put(1, 0, 1), put(2, 2, 3), get(Some(1), 4, 5)];
        assert_eq!(
            check(&Register, &h, STEPS),
            Verdict::Violation {
                stuck_op: 2,
                linearized: 2
            }
        );
    }

    #[test]
    fn lost_acknowledged_write_is_a_violation() {
        let h = vec![put(1, 0, 1), put(2, 2, 3), get(Some(1), 4, 5)];
        assert!(matches!(
            check(&Register, &h, STEPS),
            Verdict::Violation { .. }
        ));
        // An acknowledged write, then the key reads as never written.
        let h = vec![put(7, 0, 1), get(None, 2, 3)];
        assert!(matches!(
            check(&Register, &h, STEPS),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        let unknown = op(RegisterOp::Put(5), None, 0, None);
        let h = vec![unknown.clone(), get(None, 10, 11)];
        assert_eq!(check(&Register, &h, STEPS), Verdict::Linearizable);
        let h = vec![unknown.clone(), get(Some(5), 10, 11)];
        assert_eq!(check(&Register, &h, STEPS), Verdict::Linearizable);
        // ...but once seen it cannot disappear again.
        let h = vec![unknown.clone(), get(Some(5), 10, 11), get(None, 12, 13)];
        assert!(matches!(
            check(&Register, &h, STEPS),
            Verdict::Violation { .. }
        ));
        // An unknown CAS may have swapped.
        let h = vec![
            put(1, 0, 1),
            op(RegisterOp::Cas { expect: 1, new: 9 }, None, 2, None),
            get(Some(9), 20, 21),
        ];
        assert_eq!(check(&Register, &h, STEPS), Verdict::Linearizable);
    }

    #[test]
    fn failed_cas_must_have_seen_another_value() {
        let h = vec![put(1, 0, 1), cas(1, 2, false, 2, 3)];
        assert!(matches!(
            check(&Register, &h, STEPS),
            Verdict::Violation { .. }
        ));
        let h = vec![put(1, 0, 1), cas(3, 2, true, 2, 3)];
        assert!(matches!(
            check(&Register, &h, STEPS),
            Verdict::Violation { .. }
        ));
    }

    fn append(
        expect: &[u64],
        v: u64,
        ok: Option<bool>,
        c: u64,
        r: Option<u64>,
    ) -> Entry<ListOp, ListOut> {
        op(
            ListOp::Append {
                expect: expect.to_vec(),
                value: v,
            },
            ok.map(ListOut::Appended),
            c,
            r,
        )
    }
    fn read(l: &[u64], c: u64, r: u64) -> Entry<ListOp, ListOut> {
        op(ListOp::Read, Some(ListOut::Read(l.to_vec())), c, Some(r))
    }

    #[test]
    fn list_appends_in_order_are_linearizable() {
        let h = vec![
            append(&[], 1, Some(true), 0, Some(1)),
            append(&[1], 2, Some(true), 2, Some(3)),
            append(&[1], 3, Some(false), 4, Some(5)),
            read(&[1, 2], 6, 7),
            append(&[1, 2], 4, None, 8, None),
            read(&[1, 2, 4], 20, 21),
        ];
        assert_eq!(check(&AppendList, &h, STEPS), Verdict::Linearizable);
    }

    #[test]
    fn reordered_appends_are_a_violation() {
        let h = vec![
            append(&[], 1, Some(true), 0, Some(1)),
            append(&[1], 2, Some(true), 2, Some(3)),
            read(&[2, 1], 4, 5),
        ];
        assert!(matches!(
            check(&AppendList, &h, STEPS),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn lost_acknowledged_append_is_a_violation() {
        let h = vec![
            append(&[], 1, Some(true), 0, Some(1)),
            append(&[1], 2, Some(true), 2, Some(3)),
            read(&[1], 4, 5),
        ];
        assert!(matches!(
            check(&AppendList, &h, STEPS),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn many_concurrent_unknowns_stay_tractable() {
        // 200 sequential puts with 12 unknown writes sprinkled in, each concurrent with
        // everything after it.
        let mut h = Vec::new();
        for k in 0..200u64 {
            if k % 17 == 0 {
                h.push(op(RegisterOp::Put(10_000 + k), None, k * 10, None));
            }
            h.push(put(k, k * 10 + 1, k * 10 + 2));
            h.push(get(Some(k), k * 10 + 3, k * 10 + 4));
        }
        assert_eq!(check(&Register, &h, STEPS), Verdict::Linearizable);
    }
}
