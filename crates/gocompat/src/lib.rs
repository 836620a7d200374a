//! Go's text formats, written once: what etcd, etcdctl, cfssl and etcd's benchmark read and
//! print through Go's standard library, so that our tools read and print the same bytes.
//!
//! - [`duration`]: `time.ParseDuration` and `time.Duration.String()` (`1m30s`, `1.5h`, `300ms`).
//! - [`flag`]: the command-line syntax of Go's `flag` package (`-flag`, `--flag=value`,
//!   `-flag value`, `--`), with its error strings.
//! - [`quote`]: `strconv.Quote` (what `%q` prints) and `encoding/json` / zap string literals.
//! - [`timestamp`]: the timestamp layouts our tools print (capnslog, zap, `log`, RFC 3339).
//!
//! Depends on nothing of ours, so every crate can use it.

pub mod duration;
pub mod flag;
pub mod quote;
pub mod timestamp;
