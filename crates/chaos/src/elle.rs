//! An Elle-style checker of multi-key transactions (Kingsbury and Alvaro, "Elle: Inferring
//! Isolation Anomalies from Experimental Observations"): the keys hold lists that writers
//! extend by one unique element (and keys may be deleted, once: a delete leaves a tombstone
//! that names it), so every read reveals which write produced what it saw and the order of
//! every version before it. From the reads and writes the checker builds the dependency
//! graph between committed transactions:
//!
//! - `ww`: T1 wrote a version of a key, T2 wrote the next one;
//! - `wr`: T2 read the version T1 wrote;
//! - `rw` (anti-dependency): T1 read a version, T2 wrote the next one;
//! - `rt` (real time, for strict serializability): T1 completed before T2 was invoked
//!   (through a chain of barrier nodes, so the edges stay linear in number).
//!
//! A cycle is an anomaly: only `ww` edges is G0 (dirty write), `ww`+`wr` is G1c (circular
//! information flow), exactly one `rw` is G-single (read skew, lost update), more is G2; a
//! cycle that needs `rt` edges is the same with `-realtime` (serializable but not strict:
//! a stale read). Also reported: G1a (a read of a write whose transaction failed), garbage
//! (a read of something never written), and incompatible orders (two reads of a key that no
//! single order of versions explains, e.g. a lost acknowledged write).
//!
//! Transactions whose outcome is unknown count as committed when anything they wrote was
//! read, and are left out otherwise.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// What a transaction read of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seen {
    /// Never written.
    Absent,
    /// The list of elements the key holds.
    List(Vec<u64>),
    /// Deleted by the delete with this ID (the key's tombstone).
    Deleted(u64),
}

/// What a transaction wrote to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// The whole new list: what it read plus one new element at the end.
    Put(Vec<u64>),
    /// A delete with this (unique) ID.
    Delete(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Ok,
    /// Known not to have happened (a Txn whose compare failed).
    Failed,
    /// May or may not have happened (an error or a timeout).
    Unknown,
}

/// One transaction of the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Txn {
    pub process: u32,
    pub invoke_us: u64,
    /// None when the outcome is unknown.
    pub complete_us: Option<u64>,
    pub reads: Vec<(String, Seen)>,
    pub writes: Vec<(String, Write)>,
    pub status: Status,
    /// The revision of an acknowledged write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Edge {
    Ww,
    Wr,
    Rw,
    Rt,
}

/// One anomaly found: its name (G0, G1c, G-single, ...) and the explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: String,
    pub text: String,
}

/// Per kind, at most this many anomalies are explained.
const REPORT_PER_KIND_MAX: usize = 5;
/// Anti-dependency edges tried per strongly connected component when looking for G-single.
const RW_TRIES_MAX: usize = 500;

/// Checks a history; no anomalies means it is strict serializable as far as the reads show.
pub fn check(history: &[Txn]) -> Vec<Anomaly> {
    let mut g = Graph::build(history);
    g.find_cycles();
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    g.anomalies
        .into_iter()
        .filter(|a| {
            let n = per_kind.entry(a.kind.clone()).or_default();
            *n += 1;
            *n <= REPORT_PER_KIND_MAX
        })
        .collect()
}

/// Which version of a key a read or write is: its position in the key's order (0 = never
/// written), or the tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    At(usize),
    Tomb,
}

/// One key's inferred order: the elements in order, and the committed delete, if any.
#[derive(Debug, Default)]
struct KeyOrder {
    elems: Vec<u64>,
    tomb: Option<u64>,
}

struct Graph<'a> {
    txns: &'a [Txn],
    committed: Vec<bool>,
    adj: Vec<Vec<(usize, Edge)>>,
    anomalies: Vec<Anomaly>,
}

impl<'a> Graph<'a> {
    fn build(txns: &'a [Txn]) -> Graph<'a> {
        let mut g = Graph {
            txns,
            committed: vec![false; txns.len()],
            adj: Vec::new(),
            anomalies: Vec::new(),
        };
        let writers = g.index_writers();
        g.mark_committed(&writers);
        let orders = g.key_orders();
        g.adj = vec![Vec::new(); txns.len()];
        g.dependency_edges(&writers, &orders);
        g.realtime_edges();
        g
    }

    fn anomaly(&mut self, kind: &str, text: String) {
        self.anomalies.push(Anomaly {
            kind: kind.to_string(),
            text,
        });
    }

    /// Who wrote each element and each delete: (txn, key).
    fn index_writers(&mut self) -> HashMap<u64, (usize, &'a str)> {
        let mut w: HashMap<u64, (usize, &'a str)> = HashMap::new();
        for (i, t) in self.txns.iter().enumerate() {
            for (k, wr) in &t.writes {
                let id = match wr {
                    Write::Put(l) => l.last().copied(),
                    Write::Delete(d) => Some(*d),
                };
                if let Some(id) = id {
                    if let Some((j, _)) = w.insert(id, (i, k.as_str())) {
                        self.anomaly(
                            "duplicate-write",
                            format!("element {id} written by T{j} and T{i}"),
                        );
                    }
                }
            }
        }
        w
    }

    /// Ok transactions are committed; unknown ones when another transaction read something
    /// they wrote. A read of a failed transaction's write is G1a; of nobody's, garbage.
    fn mark_committed(&mut self, writers: &HashMap<u64, (usize, &'a str)>) {
        for (i, t) in self.txns.iter().enumerate() {
            self.committed[i] = t.status == Status::Ok;
        }
        for (i, t) in self.txns.iter().enumerate() {
            for (k, seen) in &t.reads {
                let ids: Vec<u64> = match seen {
                    Seen::Absent => vec![],
                    Seen::List(l) => l.clone(),
                    Seen::Deleted(d) => vec![*d],
                };
                for id in ids {
                    match writers.get(&id) {
                        None => self.anomaly(
                            "garbage-read",
                            format!("T{i} read {id} in {k}, which no transaction wrote"),
                        ),
                        Some((w, _)) if self.txns[*w].status == Status::Failed => self.anomaly(
                            "G1a",
                            format!(
                                "T{i} read {id} in {k}, written by T{w}, whose transaction failed: {}",
                                self.describe(*w)
                            ),
                        ),
                        Some((w, _)) => self.committed[*w] = true,
                    }
                }
            }
        }
    }

    /// Every key's order of versions from the lists read and written: they must all be
    /// prefixes of the longest, and at most one delete may be committed.
    fn key_orders(&mut self) -> BTreeMap<&'a str, KeyOrder> {
        let mut lists: BTreeMap<&'a str, Vec<(usize, &'a [u64])>> = BTreeMap::new();
        let mut tombs: BTreeMap<&'a str, Vec<u64>> = BTreeMap::new();
        for (i, t) in self.txns.iter().enumerate() {
            for (k, s) in &t.reads {
                if let Seen::List(l) = s {
                    lists.entry(k).or_default().push((i, l));
                }
            }
            if !self.committed[i] {
                continue;
            }
            for (k, w) in &t.writes {
                match w {
                    Write::Put(l) => lists.entry(k).or_default().push((i, l)),
                    Write::Delete(d) => tombs.entry(k).or_default().push(*d),
                }
            }
        }
        let mut orders: BTreeMap<&'a str, KeyOrder> = BTreeMap::new();
        for (k, ls) in lists {
            let longest = ls
                .iter()
                .map(|(_, l)| *l)
                .max_by_key(|l| l.len())
                .unwrap_or(&[]);
            for (i, l) in &ls {
                if !longest.starts_with(l) {
                    self.anomaly(
                        "incompatible-order",
                        format!(
                            "key {k}: T{i} has {l:?}, which is not a prefix of {longest:?} (a lost or reordered write)"
                        ),
                    );
                }
            }
            orders.entry(k).or_default().elems = longest.to_vec();
        }
        for (k, ds) in tombs {
            if ds.len() > 1 {
                self.anomaly(
                    "incompatible-order",
                    format!("key {k}: deleted by {} committed deletes {ds:?}", ds.len()),
                );
            }
            orders.entry(k).or_default().tomb = ds.first().copied();
        }
        orders
    }

    /// The version `seen` is in `order`, if it fits it.
    fn version_of(order: &KeyOrder, seen: &Seen) -> Option<Version> {
        match seen {
            Seen::Absent => Some(Version::At(0)),
            Seen::List(l) => order.elems.starts_with(l).then_some(Version::At(l.len())),
            Seen::Deleted(d) => (order.tomb == Some(*d)).then_some(Version::Tomb),
        }
    }

    /// The writer of the version after `v`, if there is one.
    fn next_writer(
        order: &KeyOrder,
        v: Version,
        writers: &HashMap<u64, (usize, &'a str)>,
    ) -> Option<usize> {
        let Version::At(n) = v else {
            return None;
        };
        let id = match order.elems.get(n) {
            Some(e) => *e,
            None => order.tomb?,
        };
        writers.get(&id).map(|(w, _)| *w)
    }

    fn writer_of(
        order: &KeyOrder,
        v: Version,
        writers: &HashMap<u64, (usize, &'a str)>,
    ) -> Option<usize> {
        let id = match v {
            Version::At(0) => return None,
            Version::At(n) => *order.elems.get(n - 1)?,
            Version::Tomb => order.tomb?,
        };
        writers.get(&id).map(|(w, _)| *w)
    }

    fn edge(&mut self, from: usize, to: usize, e: Edge) {
        if from != to && !self.adj[from].contains(&(to, e)) {
            self.adj[from].push((to, e));
        }
    }

    /// ww between consecutive versions, wr from a version's writer to its readers, rw from
    /// a version's readers to the writer of the next.
    fn dependency_edges(
        &mut self,
        writers: &HashMap<u64, (usize, &'a str)>,
        orders: &BTreeMap<&'a str, KeyOrder>,
    ) {
        for o in orders.values() {
            let mut chain: Vec<usize> = o
                .elems
                .iter()
                .filter_map(|e| writers.get(e).map(|(w, _)| *w))
                .collect();
            if let Some(w) = o.tomb.and_then(|d| writers.get(&d)) {
                chain.push(w.0);
            }
            for pair in chain.windows(2) {
                self.edge(pair[0], pair[1], Edge::Ww);
            }
        }
        for (i, t) in self.txns.iter().enumerate() {
            if !self.committed[i] {
                continue;
            }
            for (k, seen) in &t.reads {
                let Some(o) = orders.get(k.as_str()) else {
                    continue;
                };
                let Some(v) = Self::version_of(o, seen) else {
                    continue;
                };
                if let Some(w) = Self::writer_of(o, v, writers) {
                    self.edge(w, i, Edge::Wr);
                }
                if let Some(w) = Self::next_writer(o, v, writers) {
                    self.edge(i, w, Edge::Rw);
                }
            }
        }
    }

    /// T1 → T2 whenever T1 completed before T2 was invoked, through barrier nodes: T1 →
    /// B(its completion), B(j) → B(j+1), B(last completion before T2's invocation) → T2.
    fn realtime_edges(&mut self) {
        let mut done: Vec<(u64, usize)> = (0..self.txns.len())
            .filter(|&i| self.committed[i])
            .filter_map(|i| self.txns[i].complete_us.map(|c| (c, i)))
            .collect();
        done.sort_unstable();
        let base = self.adj.len();
        self.adj.extend((0..done.len()).map(|_| Vec::new()));
        for (j, &(_, t)) in done.iter().enumerate() {
            self.adj[t].push((base + j, Edge::Rt));
            if j + 1 < done.len() {
                self.adj[base + j].push((base + j + 1, Edge::Rt));
            }
        }
        for i in 0..self.txns.len() {
            if !self.committed[i] {
                continue;
            }
            let inv = self.txns[i].invoke_us;
            let j = done.partition_point(|&(c, _)| c < inv);
            if j > 0 {
                self.adj[base + j - 1].push((i, Edge::Rt));
            }
        }
    }

    /// Looks for cycles in each strongly connected component, most specific anomaly first.
    fn find_cycles(&mut self) {
        let all = |_: Edge| true;
        for scc in sccs(&self.adj, &all) {
            self.classify(&scc);
        }
    }

    fn classify(&mut self, scc: &[usize]) {
        let no_rt = |e: Edge| e != Edge::Rt;
        let mut found = false;
        for sub in sccs_within(&self.adj, scc, &no_rt) {
            found |= self.classify_kinds(&sub, false);
        }
        if !found {
            self.classify_kinds(scc, true);
        }
    }

    /// G0, then G1c, then G-single, then G2, within `scc` (with or without `rt` edges).
    /// True when a cycle was reported.
    fn classify_kinds(&mut self, scc: &[usize], realtime: bool) -> bool {
        let suffix = if realtime { "-realtime" } else { "" };
        let rt_ok = move |e: Edge| realtime && e == Edge::Rt;
        let ww = move |e: Edge| e == Edge::Ww || rt_ok(e);
        let wwr = move |e: Edge| e == Edge::Ww || e == Edge::Wr || rt_ok(e);
        for (kind, allowed) in [("G0", &ww as &dyn Fn(Edge) -> bool), ("G1c", &wwr)] {
            if let Some(c) = cycle_within(&self.adj, scc, allowed) {
                let text = self.explain(&c);
                self.anomaly(&format!("{kind}{suffix}"), text);
                return true;
            }
        }
        if let Some(c) = self.single_rw_cycle(scc, &wwr) {
            let text = self.explain(&c);
            self.anomaly(&format!("G-single{suffix}"), text);
            return true;
        }
        let any = move |e: Edge| e != Edge::Rt || realtime;
        if let Some(c) = cycle_within(&self.adj, scc, &any) {
            let text = self.explain(&c);
            self.anomaly(&format!("G2{suffix}"), text);
            return true;
        }
        false
    }

    /// A cycle made of one rw edge a → b and a path back from b to a over `rest` edges.
    fn single_rw_cycle(
        &self,
        scc: &[usize],
        rest: &dyn Fn(Edge) -> bool,
    ) -> Option<Vec<(usize, Edge)>> {
        let inside: std::collections::HashSet<usize> = scc.iter().copied().collect();
        let mut tries = 0;
        for &a in scc {
            for &(b, e) in &self.adj[a] {
                if e != Edge::Rw || !inside.contains(&b) {
                    continue;
                }
                tries += 1;
                if tries > RW_TRIES_MAX {
                    return None;
                }
                if let Some(mut path) = bfs_path(&self.adj, &inside, b, a, rest) {
                    path.insert(0, (a, Edge::Rw));
                    return Some(path);
                }
            }
        }
        None
    }

    /// "T3 -rw-> T7 -wr-> T3", then each transaction of the cycle.
    fn explain(&self, cycle: &[(usize, Edge)]) -> String {
        let n = self.txns.len();
        let name = |i: usize| {
            if i < n {
                format!("T{i}")
            } else {
                "(later)".to_string()
            }
        };
        let mut s = String::new();
        for (i, e) in cycle {
            if *i >= n && *e == Edge::Rt && s.ends_with("-rt-> ") {
                continue;
            }
            s.push_str(&name(*i));
            s.push_str(match e {
                Edge::Ww => " -ww-> ",
                Edge::Wr => " -wr-> ",
                Edge::Rw => " -rw-> ",
                Edge::Rt => " -rt-> ",
            });
        }
        if let Some((first, _)) = cycle.first() {
            s.push_str(&name(*first));
        }
        for (i, _) in cycle.iter().filter(|(i, _)| *i < n) {
            s.push_str(&format!("; T{i} = {}", self.describe(*i)));
        }
        s
    }

    fn describe(&self, i: usize) -> String {
        let t = &self.txns[i];
        let mut ops: Vec<String> = t
            .reads
            .iter()
            .map(|(k, s)| match s {
                Seen::Absent => format!("r {k} absent"),
                Seen::List(l) => format!("r {k} {}", tail(l)),
                Seen::Deleted(d) => format!("r {k} deleted#{d}"),
            })
            .collect();
        ops.extend(t.writes.iter().map(|(k, w)| match w {
            Write::Put(l) => format!("w {k} +{}", l.last().copied().unwrap_or_default()),
            Write::Delete(d) => format!("del {k} #{d}"),
        }));
        format!(
            "process {} [{}] {:?} {:.3}s..{}",
            t.process,
            ops.join(", "),
            t.status,
            t.invoke_us as f64 / 1e6,
            t.complete_us
                .map(|c| format!("{:.3}s", c as f64 / 1e6))
                .unwrap_or_else(|| "?".into())
        )
    }
}

/// A list shown by its length and last elements.
fn tail(l: &[u64]) -> String {
    if l.len() <= 3 {
        format!("{l:?}")
    } else {
        format!("[…{} elements…, {:?}]", l.len() - 3, &l[l.len() - 3..])
    }
}

/// Strongly connected components with more than one node (Tarjan, iterative), over the
/// edges `allowed` lets through.
fn sccs(adj: &[Vec<(usize, Edge)>], allowed: &dyn Fn(Edge) -> bool) -> Vec<Vec<usize>> {
    let all: Vec<usize> = (0..adj.len()).collect();
    sccs_within(adj, &all, allowed)
}

fn sccs_within(
    adj: &[Vec<(usize, Edge)>],
    nodes: &[usize],
    allowed: &dyn Fn(Edge) -> bool,
) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let mut inside = vec![false; adj.len()];
    for &n in nodes {
        inside[n] = true;
    }
    let mut index = vec![UNSEEN; adj.len()];
    let mut low = vec![0usize; adj.len()];
    let mut on_stack = vec![false; adj.len()];
    let mut stack: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    let mut next = 0usize;
    for &root in nodes {
        if index[root] != UNSEEN {
            continue;
        }
        // (node, position in its edge list)
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&(v, pos)) = work.last() {
            if let Some(&(w, e)) = adj[v].get(pos) {
                if let Some(top) = work.last_mut() {
                    top.1 += 1;
                }
                if !inside[w] || !allowed(e) {
                    continue;
                }
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// A cycle within `nodes` over `allowed` edges, if there is one: (node, edge to the next).
fn cycle_within(
    adj: &[Vec<(usize, Edge)>],
    nodes: &[usize],
    allowed: &dyn Fn(Edge) -> bool,
) -> Option<Vec<(usize, Edge)>> {
    let comp = sccs_within(adj, nodes, allowed).into_iter().next()?;
    let inside: std::collections::HashSet<usize> = comp.iter().copied().collect();
    // Prefer starting at a transaction (barrier nodes have higher numbers).
    let start = *comp.iter().min()?;
    for &(w, e) in &adj[start] {
        if !inside.contains(&w) || !allowed(e) {
            continue;
        }
        if let Some(mut path) = bfs_path(adj, &inside, w, start, allowed) {
            path.insert(0, (start, e));
            return Some(path);
        }
    }
    None
}

/// The shortest path from `from` to `to` inside `inside` over `allowed` edges, as (node,
/// edge taken from it) pairs, `to` excluded.
fn bfs_path(
    adj: &[Vec<(usize, Edge)>],
    inside: &std::collections::HashSet<usize>,
    from: usize,
    to: usize,
    allowed: &dyn Fn(Edge) -> bool,
) -> Option<Vec<(usize, Edge)>> {
    if from == to {
        return Some(Vec::new());
    }
    let mut prev: HashMap<usize, (usize, Edge)> = HashMap::new();
    let mut q = VecDeque::from([from]);
    while let Some(v) = q.pop_front() {
        for &(w, e) in &adj[v] {
            if !inside.contains(&w) || !allowed(e) || w == from || prev.contains_key(&w) {
                continue;
            }
            prev.insert(w, (v, e));
            if w == to {
                let mut path = Vec::new();
                let mut at = to;
                while at != from {
                    let (p, e) = prev[&at];
                    path.push((p, e));
                    at = p;
                }
                path.reverse();
                return Some(path);
            }
            q.push_back(w);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction from a compact description: reads ("x", list) and writes ("x", list).
    fn txn(process: u32, t: (u64, u64), reads: &[(&str, Seen)], writes: &[(&str, Write)]) -> Txn {
        Txn {
            process,
            invoke_us: t.0,
            complete_us: Some(t.1),
            reads: reads
                .iter()
                .map(|(k, s)| (k.to_string(), s.clone()))
                .collect(),
            writes: writes
                .iter()
                .map(|(k, w)| (k.to_string(), w.clone()))
                .collect(),
            status: Status::Ok,
            rev: None,
        }
    }
    fn l(v: &[u64]) -> Seen {
        Seen::List(v.to_vec())
    }
    fn put(v: &[u64]) -> Write {
        Write::Put(v.to_vec())
    }
    fn kinds(h: &[Txn]) -> Vec<String> {
        check(h).into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn serial_history_with_deletes_is_clean() {
        let h = vec![
            txn(
                0,
                (0, 1),
                &[("x", Seen::Absent), ("y", Seen::Absent)],
                &[("x", put(&[1])), ("y", put(&[2]))],
            ),
            txn(
                1,
                (2, 3),
                &[("x", l(&[1])), ("y", l(&[2]))],
                &[("x", put(&[1, 3])), ("y", Write::Delete(4))],
            ),
            txn(
                0,
                (4, 5),
                &[("x", l(&[1, 3])), ("y", Seen::Deleted(4))],
                &[],
            ),
        ];
        assert_eq!(kinds(&h), Vec::<String>::new());
    }

    #[test]
    fn concurrent_transactions_may_take_either_order() {
        // Two overlapping writers of different keys, and a reader overlapping both that
        // sees one but not the other: serializable (reader between them), and strict too
        // because they overlap.
        let h = vec![
            txn(0, (0, 10), &[("x", Seen::Absent)], &[("x", put(&[1]))]),
            txn(1, (0, 10), &[("y", Seen::Absent)], &[("y", put(&[2]))]),
            txn(2, (5, 15), &[("x", l(&[1])), ("y", Seen::Absent)], &[]),
        ];
        assert_eq!(kinds(&h), Vec::<String>::new());
    }

    #[test]
    fn g0_dirty_writes_are_caught() {
        // T0 and T1 each extend x and y; x shows T0 then T1, y shows T1 then T0.
        let h = vec![
            txn(0, (0, 10), &[], &[("x", put(&[1])), ("y", put(&[4, 2]))]),
            txn(1, (0, 10), &[], &[("x", put(&[1, 3])), ("y", put(&[4]))]),
            txn(2, (20, 21), &[("x", l(&[1, 3])), ("y", l(&[4, 2]))], &[]),
        ];
        assert_eq!(kinds(&h), vec!["G0"]);
    }

    #[test]
    fn g1c_circular_information_flow_is_caught() {
        // T0 read T1's write of y and T1 read T0's write of x.
        let h = vec![
            txn(0, (0, 10), &[("y", l(&[2]))], &[("x", put(&[1]))]),
            txn(1, (0, 10), &[("x", l(&[1]))], &[("y", put(&[2]))]),
        ];
        assert_eq!(kinds(&h), vec!["G1c"]);
    }

    #[test]
    fn g_single_read_skew_is_caught() {
        // T0 writes x and y together; T1 sees its y but the x before it.
        let h = vec![
            txn(
                0,
                (0, 10),
                &[("x", Seen::Absent), ("y", Seen::Absent)],
                &[("x", put(&[1])), ("y", put(&[2]))],
            ),
            txn(1, (0, 10), &[("x", Seen::Absent), ("y", l(&[2]))], &[]),
        ];
        assert_eq!(kinds(&h), vec!["G-single"]);
    }

    #[test]
    fn g2_write_skew_is_caught() {
        // Each read both keys absent and wrote one of them: two anti-dependencies.
        let h = vec![
            txn(
                0,
                (0, 10),
                &[("x", Seen::Absent), ("y", Seen::Absent)],
                &[("x", put(&[1]))],
            ),
            txn(
                1,
                (0, 10),
                &[("x", Seen::Absent), ("y", Seen::Absent)],
                &[("y", put(&[2]))],
            ),
        ];
        assert_eq!(kinds(&h), vec!["G2"]);
    }

    #[test]
    fn lost_update_is_caught() {
        // Both read x = [1] and both committed an extension of it: no single order.
        let h = vec![
            txn(0, (0, 1), &[("x", Seen::Absent)], &[("x", put(&[1]))]),
            txn(1, (2, 10), &[("x", l(&[1]))], &[("x", put(&[1, 2]))]),
            txn(2, (2, 10), &[("x", l(&[1]))], &[("x", put(&[1, 3]))]),
        ];
        assert!(kinds(&h).contains(&"incompatible-order".to_string()));
    }

    #[test]
    fn stale_read_is_a_realtime_anomaly() {
        // T0 wrote x and completed; T1, invoked later, still reads x absent.
        let h = vec![
            txn(0, (0, 1), &[("x", Seen::Absent)], &[("x", put(&[1]))]),
            txn(1, (5, 6), &[("x", Seen::Absent)], &[]),
        ];
        assert_eq!(kinds(&h), vec!["G-single-realtime"]);
        // The same overlapping in time is fine.
        let h = vec![
            txn(0, (0, 10), &[("x", Seen::Absent)], &[("x", put(&[1]))]),
            txn(1, (5, 6), &[("x", Seen::Absent)], &[]),
        ];
        assert_eq!(kinds(&h), Vec::<String>::new());
    }

    #[test]
    fn write_after_delete_is_caught() {
        // A delete read x = [1] and committed, yet x was extended after [1] too.
        let h = vec![
            txn(0, (0, 1), &[("x", Seen::Absent)], &[("x", put(&[1]))]),
            txn(1, (2, 3), &[("x", l(&[1]))], &[("x", Write::Delete(9))]),
            txn(2, (2, 3), &[("x", l(&[1]))], &[("x", put(&[1, 2]))]),
        ];
        let k = kinds(&h);
        assert!(k.iter().any(|k| k.starts_with("G")), "{k:?}");
    }

    #[test]
    fn aborted_and_garbage_reads_are_caught() {
        let mut failed = txn(0, (0, 1), &[], &[("x", put(&[1]))]);
        failed.status = Status::Failed;
        let h = vec![failed, txn(1, (2, 3), &[("x", l(&[1]))], &[])];
        assert_eq!(kinds(&h), vec!["G1a"]);
        let h = vec![txn(1, (2, 3), &[("x", l(&[42]))], &[])];
        assert_eq!(kinds(&h), vec!["garbage-read"]);
    }

    #[test]
    fn unknown_transactions_count_once_observed() {
        let mut unknown = txn(0, (0, 1), &[], &[("x", put(&[1])), ("y", put(&[2]))]);
        unknown.status = Status::Unknown;
        unknown.complete_us = None;
        // Not observed: left out, nothing to say.
        let h = vec![unknown.clone(), txn(1, (5, 6), &[("y", Seen::Absent)], &[])];
        assert_eq!(kinds(&h), Vec::<String>::new());
        // Its x observed, its y not: read skew.
        let h = vec![
            unknown,
            txn(1, (5, 6), &[("x", l(&[1])), ("y", Seen::Absent)], &[]),
        ];
        assert_eq!(kinds(&h), vec!["G-single"]);
    }
}
