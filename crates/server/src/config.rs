//! Server configuration: etcd's flags, parsed the way Go's `flag` package and etcd do
//! (`-flag`/`--flag`, `=value` or a separate value, bare booleans), each also readable from
//! its `ETCD_*` environment variable, then checked before anything touches the data dir.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A configuration problem: printed as one line, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    Uint,
}

/// Every flag oxcd takes: name, kind, default, help.
const FLAGS: &[(&str, Kind, &str, &str)] = &[
    ("name", Kind::Str, "default", "Human-readable name for this member."),
    ("data-dir", Kind::Str, "", "Path to the data directory (default ${name}.etcd)."),
    ("wal-dir", Kind::Str, "", "Path to the dedicated wal directory (default ${data-dir}/member/wal)."),
    ("listen-client-urls", Kind::Str, "http://localhost:2379", "List of URLs to listen on for client traffic."),
    ("advertise-client-urls", Kind::Str, "http://localhost:2379", "List of this member's client URLs to advertise to the public."),
    ("listen-peer-urls", Kind::Str, "http://localhost:2380", "List of URLs to listen on for peer traffic."),
    ("initial-advertise-peer-urls", Kind::Str, "http://localhost:2380", "List of this member's peer URLs to advertise to the rest of the cluster."),
    ("initial-cluster", Kind::Str, "", "Initial cluster configuration for bootstrapping (default ${name}=${initial-advertise-peer-urls})."),
    ("initial-cluster-token", Kind::Str, "etcd-cluster", "Initial cluster token for the etcd cluster during bootstrap."),
    ("initial-cluster-state", Kind::Str, "new", "Initial cluster state ('new' or 'existing')."),
    ("cert-file", Kind::Str, "", "Path to the client server TLS cert file."),
    ("key-file", Kind::Str, "", "Path to the client server TLS key file."),
    ("client-cert-auth", Kind::Bool, "false", "Enable client cert authentication."),
    ("trusted-ca-file", Kind::Str, "", "Path to the client server TLS trusted CA cert file."),
    ("peer-cert-file", Kind::Str, "", "Path to the peer server TLS cert file."),
    ("peer-key-file", Kind::Str, "", "Path to the peer server TLS key file."),
    ("peer-client-cert-auth", Kind::Bool, "false", "Enable peer client cert authentication."),
    ("peer-trusted-ca-file", Kind::Str, "", "Path to the peer server TLS trusted CA file."),
    ("enable-v2", Kind::Bool, "true", "Accept etcd V2 client requests."),
    ("max-request-bytes", Kind::Uint, "1572864", "Maximum client request size in bytes the server will accept."),
    ("max-txn-ops", Kind::Uint, "128", "Maximum number of operations permitted in a transaction."),
    ("quota-backend-bytes", Kind::Uint, "0", "Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB)."),
    ("strict-reconfig-check", Kind::Bool, "true", "Reject reconfiguration requests that would cause quorum loss."),
    ("auto-compaction-mode", Kind::Str, "periodic", "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention."),
    ("auto-compaction-retention", Kind::Str, "0", "Auto compaction retention for mvcc key value store. 0 means disable auto compaction."),
    ("experimental-corrupt-check-time", Kind::Str, "0s", "Duration of time between cluster corruption check passes."),
    ("snapshot-count", Kind::Uint, "100000", "Number of committed transactions to trigger a snapshot to disk."),
    ("heartbeat-interval", Kind::Uint, "100", "Time (in milliseconds) of a heartbeat interval."),
    ("election-timeout", Kind::Uint, "1000", "Time (in milliseconds) for an election to timeout."),
    ("pre-vote", Kind::Bool, "true", "Enable to run an additional Raft election phase."),
    ("max-connections", Kind::Uint, "1024", "Maximum number of concurrent client connections per listener."),
    ("max-watchers", Kind::Uint, "10000", "Maximum number of watchers per member."),
    ("experimental-watch-progress-notify-interval", Kind::Str, "10m", "Duration of periodical watch progress notification."),
    ("metrics", Kind::Str, "basic", "Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics."),
    ("log-level", Kind::Str, "info", "Configures log level. Only supports debug, info, warn, error."),
    ("version", Kind::Bool, "false", "Print the version and exit."),
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
    /// `--metrics=extensive`: gRPC handling-time histograms too.
    pub metrics_extensive: bool,
}

/// `--auto-compaction-mode` with a non-zero `--auto-compaction-retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history (etcd's periodic mode).
    Periodic(std::time::Duration),
    /// Keep this many revisions (etcd's revision mode).
    Revision(u64),
}

/// Go's `time.ParseDuration` for non-negative values: numbers with units h, m, s, ms, us, ns.
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(std::time::Duration::ZERO);
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "\u{b5}s" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[u_end..];
        total += n * unit;
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_uppercase().replace('-', "_"))
}

/// Parses command-line arguments (without the program name) and the environment.
pub fn parse(args: &[String], env: &BTreeMap<String, String>) -> Result<Parsed, ConfigError> {
    let mut set: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            return err(format!(
                "'{arg}' is not a valid flag (oxcd takes no positional arguments; run oxcd --help)"
            ));
        }
        let body = arg.trim_start_matches('-');
        if arg.starts_with("---") || body.is_empty() {
            return err(format!("bad flag syntax: {arg}"));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if name == "h" || name == "help" {
            return Ok(Parsed::Help(usage()));
        }
        let Some(&(fname, kind, _, _)) = FLAGS.iter().find(|f| f.0 == name) else {
            return err(format!(
                "flag provided but not defined: -{name} (run oxcd --help for the flags oxcd takes)"
            ));
        };
        let value = match (kind, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (_, Some(v)) => v,
            (_, None) => {
                let Some(v) = args.get(i) else {
                    return err(format!("flag needs an argument: -{name}"));
                };
                i += 1;
                v.clone()
            }
        };
        // Go's flag package sets a flag again when it is repeated: the last value wins.
        set.insert(fname, value);
    }
    for (key, _) in env.iter().filter(|(k, _)| k.starts_with("ETCD_")) {
        let known = FLAGS.iter().any(|f| env_name(f.0) == *key);
        if !known && key != "ETCD_UNSUPPORTED_ARCH" && key != "ETCDCTL_API" {
            tracing::warn!("unrecognized environment variable {key}");
        }
    }
    for &(fname, _, _, _) in FLAGS {
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
            .find(|f| f.0 == name)
            .map(|f| f.2.to_string())
            .unwrap_or_default()
    }

    fn given(&self, name: &str) -> bool {
        self.set.contains_key(name)
    }

    fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        let v = self.str(name);
        parse_bool(&v).ok_or_else(|| {
            ConfigError(format!(
                "invalid boolean value {v:?} for --{name}: use true or false"
            ))
        })
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
        match parse_go_duration(&v) {
            Some(d) if !d.is_zero() => Ok(d),
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
                    Err(_) => parse_go_duration(retention.trim()).ok_or_else(bad)?,
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
            snapshot_count: self.uint("snapshot-count")?.max(1),
            heartbeat_ms: self.uint("heartbeat-interval")?,
            election_ms: self.uint("election-timeout")?,
            pre_vote: self.bool("pre-vote")?,
            connections_max: self.uint("max-connections")?.max(1) as usize,
            watchers_max: self.uint("max-watchers")? as usize,
            watch_progress_notify_interval: self
                .duration("experimental-watch-progress-notify-interval")?,
            log_level: self.str("log-level"),
            metrics_extensive: match self.str("metrics").as_str() {
                "basic" => false,
                "extensive" => true,
                other => {
                    return err(format!(
                        "unknown metrics type {other:?}: expected basic or extensive"
                    ))
                }
            },
            strict_reconfig_check: self.bool("strict-reconfig-check")?,
            auto_compaction: self.auto_compaction()?,
            wal_dir: self.path("wal-dir"),
            corrupt_check: {
                let v = self.str("experimental-corrupt-check-time");
                let d = parse_go_duration(&v).ok_or_else(|| {
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
    for (name, kind, default, help) in FLAGS {
        let d = match kind {
            Kind::Str if default.is_empty() => String::new(),
            _ => format!(" (default {default:?})"),
        };
        s.push_str(&format!("  --{name}\n        {help}{d}\n"));
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
        let d = |s: &str| parse_go_duration(s).map(|d| d.as_millis());
        assert_eq!(d("10m"), Some(600_000));
        assert_eq!(d("1s"), Some(1000));
        assert_eq!(d("500ms"), Some(500));
        assert_eq!(d("1m30s"), Some(90_000));
        assert_eq!(d("1.5h"), Some(5_400_000));
        assert_eq!(d("0"), Some(0));
        for bad in ["", "10", "1x", "s", "-1s", "1s2"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
        let Ok(Parsed::Run(c)) = p(&["--experimental-watch-progress-notify-interval=2s"]) else {
            panic!("a duration flag")
        };
        assert_eq!(c.watch_progress_notify_interval.as_millis(), 2000);
        let Err(e) = p(&["--experimental-watch-progress-notify-interval=0"]) else {
            panic!("zero is refused")
        };
        assert!(e.0.contains("positive duration"), "{e}");
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
