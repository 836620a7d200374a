//! `oxchaos`: a Jepsen-style fault-injection suite for oxcd. Real `oxcd` members with TLS run
//! inside a network namespace the suite creates; concurrent clients record every operation
//! with its invoke and completion time while faults (kill -9, SIGSTOP, partitions, snapshot
//! catch-up, membership changes, failpoints) hit the cluster; afterwards the histories are
//! checked for linearizability and the watch streams for etcd's watch guarantees, and the
//! members for convergence. See `docs/FAULTS.md`.

pub mod checker;
pub mod checks;
pub mod cluster;
pub mod elle;
pub mod fault;
pub mod fault_env;
pub mod netns;
pub mod proxy;
pub mod report;
pub mod run;
pub mod txn;
pub mod workload;
