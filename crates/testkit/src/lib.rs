//! oxcd's one test kit, for the process-level tests of every crate (a dev-dependency only):
//!
//! - [`addr`]: a whole loopback address per member, reserved by a lock file, so that tests
//!   in one process and test binaries running at once never share an address;
//! - [`process`]: commands run with a time limit (killed past it), servers killed on drop,
//!   the tools the tests need, bounded polling;
//! - [`pki`]: certificates as the tutorial lays them out, from the real cfssl or from
//!   `oxcert cluster`;
//! - [`cluster`]: the one cluster harness, N members of oxcd or of etcd 3.4, plain or TLS,
//!   with the real etcdctl (or oxctl) against them;
//! - [`http`] (the v2 keys API's HTTP/1.1) and [`text`] (masks for comparing two servers).
//!
//! Everything is bounded in time and talks only to 127.0.0.0/8.

pub mod addr;
pub mod cluster;
pub mod http;
pub mod pki;
pub mod process;
pub mod text;

pub use cluster::{etcdctl, Cluster, Impl};
pub use pki::{KeyAlgo, Pki};
pub use process::{require, run, wait_for, wait_until, Output, Signal};
