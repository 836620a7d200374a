//! Server configuration: etcd's flags, parsed the way Go's `flag` package and etcd do
//! (`-flag`/`--flag`, `=value` or a separate value, bare booleans), each also readable from
//! its `ETCD_*` environment variable, then checked before anything touches the data dir.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oxcd_gocompat::duration;
use oxcd_gocompat::flag::{self, Flag, FlagError};

/// A configuration problem: printed as one line, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Every flag oxcd takes, with its default and help (one a line).
#[rustfmt::skip]
const FLAGS: &[Flag] = &[
    Flag::value("name", "Human-readable name for this member.").default("default"),
    Flag::value("data-dir", "Path to the data directory (default ${name}.etcd)."),
    Flag::value("wal-dir", "Path to the dedicated wal directory (default ${data-dir}/member/wal)."),
    Flag::value("listen-client-urls", "List of URLs to listen on for client traffic.").default("http://localhost:2379"),
    Flag::value("advertise-client-urls", "List of this member's client URLs to advertise to the public.").default("http://localhost:2379"),
    Flag::value("listen-peer-urls", "List of URLs to listen on for peer traffic.").default("http://localhost:2380"),
    Flag::value("initial-advertise-peer-urls", "List of this member's peer URLs to advertise to the rest of the cluster.").default("http://localhost:2380"),
    Flag::value("initial-cluster", "Initial cluster configuration for bootstrapping (default ${name}=${initial-advertise-peer-urls})."),
    Flag::value("initial-cluster-token", "Initial cluster token for the etcd cluster during bootstrap.").default("etcd-cluster"),
    Flag::value("initial-cluster-state", "Initial cluster state ('new' or 'existing').").default("new"),
    Flag::value("cert-file", "Path to the client server TLS cert file."),
    Flag::value("key-file", "Path to the client server TLS key file."),
    Flag::boolean("client-cert-auth", "Enable client cert authentication."),
    Flag::value("trusted-ca-file", "Path to the client server TLS trusted CA cert file."),
    Flag::value("peer-cert-file", "Path to the peer server TLS cert file."),
    Flag::value("peer-key-file", "Path to the peer server TLS key file."),
    Flag::boolean("peer-client-cert-auth", "Enable peer client cert authentication."),
    Flag::value("peer-trusted-ca-file", "Path to the peer server TLS trusted CA file."),
    Flag::boolean("enable-v2", "Accept etcd V2 client requests.").default("true"),
    Flag::value("max-request-bytes", "Maximum client request size in bytes the server will accept.").default("1572864"),
    Flag::value("max-txn-ops", "Maximum number of operations permitted in a transaction.").default("128"),
    Flag::value("quota-backend-bytes", "Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB).").default("0"),
    Flag::boolean("strict-reconfig-check", "Reject reconfiguration requests that would cause quorum loss.").default("true"),
    Flag::value("auto-compaction-mode", "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention.").default("periodic"),
    Flag::value("auto-compaction-retention", "Auto compaction retention for mvcc key value store. 0 means disable auto compaction.").default("0"),
    Flag::value("experimental-corrupt-check-time", "Duration of time between cluster corruption check passes.").default("0s"),
    Flag::value("backend-cache-bytes", "oxcd: bytes of backend pages cached in memory (OXCD_BACKEND_CACHE_BYTES; see docs/design.md, Memory).").default("67108864"),
    Flag::value("snapshot-count", "Number of committed transactions to trigger a snapshot to disk.").default("100000"),
    Flag::value("heartbeat-interval", "Time (in milliseconds) of a heartbeat interval.").default("100"),
    Flag::value("election-timeout", "Time (in milliseconds) for an election to timeout.").default("1000"),
    Flag::boolean("pre-vote", "Enable to run an additional Raft election phase.").default("true"),
    Flag::value("max-connections", "Maximum number of concurrent client connections per listener.").default("1024"),
    Flag::value("max-watchers", "Maximum number of watchers per member.").default("10000"),
    Flag::value("experimental-watch-progress-notify-interval", "Duration of periodical watch progress notification.").default("10m"),
    Flag::value("log-level", "Configures log level. Only supports debug, info, warn, error.").default("info"),
    Flag::boolean("version", "Print the version and exit."),
];

/// What `parse` produced: run the server, or print something and exit.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Config>),
    Help(String),
    Version,
}

/// URLs and `--initial-cluster` as etcd takes them, shared with `snapshot restore`.
pub use oxcd_snapshot::{parse_initial_cluster, Url};

impl From<oxcd_snapshot::FlagError> for ConfigError {
    fn from(e: oxcd_snapshot::FlagError) -> Self {
        ConfigError(e.to_string())
    }
}

/// Parses a comma-separated URL list, naming the flag in errors ([`oxcd_snapshot::parse_urls`]).
pub fn parse_urls(flag: &str, v: &str) -> Result<Vec<Url>, ConfigError> {
    Ok(oxcd_snapshot::parse_urls(flag, v)?)
}

/// The server's configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    /// `--wal-dir`; `None` keeps the log in `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    pub listen_client_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// name -> peer URLs, in flag order.
    pub initial_cluster: Vec<(String, Vec<Url>)>,
    pub initial_cluster_token: String,
    pub initial_cluster_new: bool,
    pub client_tls: Option<oxcd_tls::ServerTlsFiles>,
    pub peer_tls: Option<oxcd_tls::ServerTlsFiles>,
    pub enable_v2: bool,
    pub request_bytes_max: usize,
    pub txn_ops_max: usize,
    pub quota_backend_bytes: u64,
    /// `--backend-cache-bytes` (oxcd's own flag): redb's page cache.
    pub backend_cache_bytes: usize,
    pub snapshot_count: u64,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub pre_vote: bool,
    pub connections_max: usize,
    pub watchers_max: usize,
    /// How often watchers that asked for it get a progress notification.
    pub watch_progress_notify_interval: std::time::Duration,
    pub log_level: String,
    pub strict_reconfig_check: bool,
    pub auto_compaction: Option<AutoCompaction>,
    /// `--experimental-corrupt-check-time`; `None` when 0 (off, etcd's default).
    pub corrupt_check: Option<std::time::Duration>,
}

/// `--auto-compaction-mode` with a non-zero `--auto-compaction-retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history (etcd's periodic mode).
    Periodic(std::time::Duration),
    /// Keep this many revisions (etcd's revision mode).
    Revision(u64),
}

/// oxcd's own flags, which etcd does not have: read from `OXCD_*` variables, not `ETCD_*`.
const OXCD_FLAGS: &[&str] = &["backend-cache-bytes"];

fn env_name(flag: &str) -> String {
    let prefix = if OXCD_FLAGS.contains(&flag) {
        "OXCD"
    } else {
        "ETCD"
    };
    format!("{prefix}_{}", flag.to_uppercase().replace('-', "_"))
}

/// Parses command-line arguments (without the program name) and the environment.
pub fn parse(args: &[String], env: &BTreeMap<String, String>) -> Result<Parsed, ConfigError> {
    let parsed = match flag::parse(FLAGS, args) {
        Ok(parsed) => parsed,
        Err(FlagError::Help) => return Ok(Parsed::Help(usage())),
        Err(e) => return Err(flag_error(e)),
    };
    if let Some(arg) = parsed.args.first() {
        return err(format!(
            "'{arg}' is not a valid flag (oxcd takes no positional arguments; run oxcd --help)"
        ));
    }
    // Go's flag package sets a flag again when it is repeated: the last value wins.
    let mut set: BTreeMap<&'static str, String> = parsed.values.into_iter().collect();
    for (key, _) in env.iter().filter(|(k, _)| k.starts_with("ETCD_")) {
        let known = FLAGS.iter().any(|f| env_name(f.name) == *key);
        if !known && key != "ETCD_UNSUPPORTED_ARCH" && key != "ETCDCTL_API" {
            tracing::warn!("unrecognized environment variable {key}");
        }
    }
    for fname in FLAGS.iter().map(|f| f.name) {
        let ev = env_name(fname);
        if let Some(v) = env.get(&ev) {
            if set.contains_key(fname) {
                return err(format!(
                    "conflicting environment variable {ev:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag --{fname})"
                ));
            }
            set.insert(fname, v.clone());
        }
    }
    let raw = RawFlags { set };
    if raw.bool("version")? {
        return Ok(Parsed::Version);
    }
    Ok(Parsed::Run(Box::new(raw.into_config()?)))
}

/// Go's flag errors, with what to do where oxcd can say it.
fn flag_error(e: FlagError) -> ConfigError {
    ConfigError(match e {
        FlagError::Unknown(name) => format!(
            "flag provided but not defined: -{name} (run oxcd --help for the flags oxcd takes)"
        ),
        FlagError::BadBool { name, value } => bad_bool(&name, &value),
        other => other.to_string(),
    })
}

fn bad_bool(name: &str, value: &str) -> String {
    format!("invalid boolean value {value:?} for --{name}: use true or false")
}

struct RawFlags {
    set: BTreeMap<&'static str, String>,
}

impl RawFlags {
    fn str(&self, name: &str) -> String {
        if let Some(v) = self.set.get(name) {
            return v.clone();
        }
        FLAGS
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.default.to_string())
            .unwrap_or_default()
    }

    fn given(&self, name: &str) -> bool {
        self.set.contains_key(name)
    }

    fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        let v = self.str(name);
        flag::parse_bool(&v).ok_or_else(|| ConfigError(bad_bool(name, &v)))
    }

    fn uint(&self, name: &str) -> Result<u64, ConfigError> {
        let v = self.str(name);
        v.parse::<u64>().map_err(|_| {
            ConfigError(format!(
                "invalid value {v:?} for --{name}: expected a non-negative integer"
            ))
        })
    }

    /// A positive Go duration (`10m`, `1s`, `500ms`, `1m30s`).
    fn duration(&self, name: &str) -> Result<std::time::Duration, ConfigError> {
        let v = self.str(name);
        match duration::parse(&v) {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => err(format!(
                "invalid value {v:?} for --{name}: expected a positive duration such as 10m, 1s or 500ms"
            )),
        }
    }

    fn urls(&self, name: &str) -> Result<Vec<Url>, ConfigError> {
        let v = self.str(name);
        parse_urls(name, &v)
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        let v = self.str(name);
        (!v.is_empty()).then(|| PathBuf::from(v))
    }

    fn auto_compaction(&self) -> Result<Option<AutoCompaction>, ConfigError> {
        let mode = self.str("auto-compaction-mode");
        let retention = self.str("auto-compaction-retention");
        let bad = || {
            ConfigError(format!(
                "invalid value {retention:?} for --auto-compaction-retention (mode {mode}): {}",
                if mode == "revision" {
                    "expected a number of revisions"
                } else {
                    "expected hours (e.g. 1) or a duration (e.g. 30m, 1h30m)"
                }
            ))
        };
        match mode.as_str() {
            "revision" => {
                let n: u64 = retention.trim().parse().map_err(|_| bad())?;
                Ok((n > 0).then_some(AutoCompaction::Revision(n)))
            }
            "periodic" => {
                let d = match retention.trim().parse::<u64>() {
                    Ok(hours) => std::time::Duration::from_secs(hours.saturating_mul(3600)),
                    Err(_) => duration::parse(retention.trim()).map_err(|_| bad())?,
                };
                Ok((!d.is_zero()).then_some(AutoCompaction::Periodic(d)))
            }
            other => err(format!(
                "invalid auto-compaction-mode {other:?}: use periodic or revision"
            )),
        }
    }

    fn into_config(self) -> Result<Config, ConfigError> {
        let name = self.str("name");
        let data_dir = self
            .path("data-dir")
            .unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));
        let listen_client_urls = self.urls("listen-client-urls")?;
        let listen_peer_urls = self.urls("listen-peer-urls")?;
        for (flag, urls) in [
            ("listen-client-urls", &listen_client_urls),
            ("listen-peer-urls", &listen_peer_urls),
        ] {
            for u in urls {
                if u.bind_addr().is_none() {
                    return err(format!(
                        "--{flag}: expected IP in URL for binding ({u}); hostnames are not allowed here, use an IP address"
                    ));
                }
            }
        }
        let advertise_client_urls = self.urls("advertise-client-urls")?;
        let initial_advertise_peer_urls = self.urls("initial-advertise-peer-urls")?;
        let initial_cluster = if self.given("initial-cluster") {
            parse_initial_cluster(&self.str("initial-cluster"))?
        } else {
            vec![(name.clone(), initial_advertise_peer_urls.clone())]
        };
        let initial_cluster_new = match self.str("initial-cluster-state").as_str() {
            "new" => true,
            "existing" => false,
            other => {
                return err(format!(
                    "invalid value {other:?} for --initial-cluster-state: use new or existing"
                ))
            }
        };
        let client_tls = self.tls_files(
            &listen_client_urls,
            "listen-client-urls",
            [
                "cert-file",
                "key-file",
                "trusted-ca-file",
                "client-cert-auth",
            ],
        )?;
        let peer_tls = self.tls_files(
            &listen_peer_urls,
            "listen-peer-urls",
            [
                "peer-cert-file",
                "peer-key-file",
                "peer-trusted-ca-file",
                "peer-client-cert-auth",
            ],
        )?;
        let cfg = Config {
            name,
            data_dir,
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_token: self.str("initial-cluster-token"),
            initial_cluster_new,
            client_tls,
            peer_tls,
            enable_v2: self.bool("enable-v2")?,
            request_bytes_max: self.uint("max-request-bytes")? as usize,
            txn_ops_max: self.uint("max-txn-ops")? as usize,
            quota_backend_bytes: match self.uint("quota-backend-bytes")? {
                0 => 2 * 1024 * 1024 * 1024,
                n => n,
            },
            backend_cache_bytes: self.uint("backend-cache-bytes")? as usize,
            snapshot_count: self.uint("snapshot-count")?.max(1),
            heartbeat_ms: self.uint("heartbeat-interval")?,
            election_ms: self.uint("election-timeout")?,
            pre_vote: self.bool("pre-vote")?,
            connections_max: self.uint("max-connections")?.max(1) as usize,
            watchers_max: self.uint("max-watchers")? as usize,
            watch_progress_notify_interval: self
                .duration("experimental-watch-progress-notify-interval")?,
            log_level: self.str("log-level"),
            strict_reconfig_check: self.bool("strict-reconfig-check")?,
            auto_compaction: self.auto_compaction()?,
            wal_dir: self.path("wal-dir"),
            corrupt_check: {
                let v = self.str("experimental-corrupt-check-time");
                let d = duration::parse(&v).map_err(|_| {
                    ConfigError(format!(
                        "invalid value {v:?} for --experimental-corrupt-check-time: expected a duration (e.g. 5m)"
                    ))
                })?;
                (!d.is_zero()).then_some(d)
            },
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// TLS files for one listener group; checks they exist and load.
    fn tls_files(
        &self,
        urls: &[Url],
        urls_flag: &str,
        [cert, key, ca, auth]: [&str; 4],
    ) -> Result<Option<oxcd_tls::ServerTlsFiles>, ConfigError> {
        let https = urls.iter().any(|u| u.tls);
        let cert_file = self.path(cert);
        let key_file = self.path(key);
        let trusted = self.path(ca);
        let client_auth = self.bool(auth)?;
        if client_auth && trusted.is_none() {
            return err(format!("--{ca} is required when --{auth} is set"));
        }
        if !https {
            return Ok(None);
        }
        let (Some(cert_file), Some(key_file)) = (cert_file, key_file) else {
            return err(format!(
                "--{urls_flag} has an https URL but --{cert} and --{key} are not both set"
            ));
        };
        let files = oxcd_tls::ServerTlsFiles {
            cert_file,
            key_file,
            trusted_ca_file: trusted,
        };
        oxcd_tls::server_config(&files).map_err(|e| {
            // Name the one flag whose file is at fault.
            let flag = match &e {
                oxcd_tls::TlsError::Cert { .. } => format!("--{cert}"),
                oxcd_tls::TlsError::Key { .. } => format!("--{key}"),
                oxcd_tls::TlsError::Ca { .. } => format!("--{ca}"),
                oxcd_tls::TlsError::Mismatch { .. } => format!("--{cert}/--{key}"),
            };
            ConfigError(format!("{flag}: {e}"))
        })?;
        Ok(Some(files))
    }
}

impl Config {
    fn check(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ms == 0 || self.election_ms < 5 * self.heartbeat_ms {
            return err(format!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                self.election_ms, self.heartbeat_ms
            ));
        }
        let Some((_, urls)) = self.initial_cluster.iter().find(|(n, _)| *n == self.name) else {
            return err(format!(
                "couldn't find local name {:?} in the initial cluster configuration (--initial-cluster)",
                self.name
            ));
        };
        let mut mine: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        let mut adv: Vec<String> = self
            .initial_advertise_peer_urls
            .iter()
            .map(|u| u.to_string())
            .collect();
        mine.sort();
        adv.sort();
        if mine != adv {
            return err(format!(
                "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} (they must match)",
                self.name,
                mine.join(","),
                adv.join(",")
            ));
        }
        if self.txn_ops_max == 0 || self.request_bytes_max == 0 {
            return err("--max-txn-ops and --max-request-bytes must be positive");
        }
        Ok(())
    }
}

/// The help text.
pub fn usage() -> String {
    let mut s = String::from("Usage:\n\n  oxcd [flags]\n\nFlags (each also from ETCD_<NAME>):\n");
    for f in FLAGS {
        let d = match f.default {
            "" => String::new(),
            default => format!(" (default {default:?})"),
        };
        s.push_str(&format!("  --{}\n        {}{d}\n", f.name, f.usage));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args, &BTreeMap::new())
    }

    #[test]
    fn go_durations() {
        let flag = "--experimental-watch-progress-notify-interval";
        for (text, ms) in [("2s", 2000), ("1m30s", 90_000), ("1.5h", 5_400_000)] {
            let Ok(Parsed::Run(c)) = p(&[&format!("{flag}={text}")]) else {
                panic!("a duration flag: {text}")
            };
            assert_eq!(c.watch_progress_notify_interval.as_millis(), ms, "{text}");
        }
        for bad in ["0", "-1s", "10", "1x"] {
            let Err(e) = p(&[&format!("{flag}={bad}")]) else {
                panic!("{bad} is refused")
            };
            assert!(e.0.contains("positive duration"), "{e}");
        }
        let Ok(Parsed::Run(c)) = p(&["--auto-compaction-retention=1h30m"]) else {
            panic!("a periodic retention")
        };
        assert_eq!(
            c.auto_compaction,
            Some(AutoCompaction::Periodic(std::time::Duration::from_secs(
                5400
            )))
        );
    }

    #[test]
    fn go_flag_forms() {
        let Ok(Parsed::Run(c)) = p(&[
            "-name",
            "n1",
            "--data-dir=/tmp/x",
            "--enable-v2=false",
            "-pre-vote",
            "--listen-client-urls",
            "http://127.0.0.1:1,http://localhost:2",
            "--initial-advertise-peer-urls=http://127.0.0.1:3",
            "--listen-peer-urls=http://127.0.0.1:3",
        ]) else {
            panic!("should parse")
        };
        assert_eq!(c.name, "n1");
        assert!(!c.enable_v2);
        assert_eq!(c.listen_client_urls.len(), 2);
        assert_eq!(c.initial_cluster[0].0, "n1");
    }

    #[test]
    fn errors_name_the_flag() {
        let e = p(&["--nope"]).unwrap_err().0;
        assert!(e.contains("-nope"), "{e}");
        let e = p(&["--name=a", "extra", "--nope"]).unwrap_err().0;
        assert!(e.starts_with("'extra' is not a valid flag"), "{e}");
        let e = p(&["--", "extra"]).unwrap_err().0;
        assert!(e.starts_with("'extra' is not a valid flag"), "{e}");
        let e = p(&["-=x"]).unwrap_err().0;
        assert_eq!(e, "bad flag syntax: -=x");
        let e = p(&["--name"]).unwrap_err().0;
        assert_eq!(e, "flag needs an argument: -name");
        let e = p(&["--listen-client-urls=http://example.com:2379"])
            .unwrap_err()
            .0;
        assert!(
            e.contains("--listen-client-urls") && e.contains("IP"),
            "{e}"
        );
        let e = p(&["--listen-client-urls=https://127.0.0.1:2379"])
            .unwrap_err()
            .0;
        assert!(e.contains("--cert-file"), "{e}");
        let e = p(&["--client-cert-auth=maybe"]).unwrap_err().0;
        assert!(e.contains("--client-cert-auth"), "{e}");
    }

    #[test]
    fn env_conflict_is_an_error() {
        let mut env = BTreeMap::new();
        env.insert("ETCD_NAME".to_string(), "x".to_string());
        let e = parse(&["--name=y".to_string()], &env).unwrap_err().0;
        assert!(e.contains("ETCD_NAME"), "{e}");
    }
}
