//! Server configuration: every flag of etcd 3.4, 3.5 and 3.6 (`config/flags.rs`), parsed the
//! way Go's `flag` package and etcd do (`-flag`/`--flag`, `=value` or a separate value, bare
//! booleans), each also readable from its `ETCD_*` environment variable, or etcd's YAML
//! configuration file (`--config-file`, `config/file.rs`); then checked before anything
//! touches the data dir (`config/build.rs`). Flags that cannot mean anything for oxcd are
//! accepted and produce one WARN line each ([`Config::warnings`]), logged once logging is set
//! up.

mod build;
mod file;
pub mod flags;
mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use flags::{Flag, Kind};

/// A configuration problem: printed as one line, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

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
    /// `--listen-client-http-urls`: HTTP only (no gRPC); when set, the client URLs serve
    /// gRPC only, as in etcd 3.5.
    pub listen_client_http_urls: Vec<Url>,
    /// `--listen-metrics-urls`: `/metrics`, `/health`, `/livez`, `/readyz` only.
    pub listen_metrics_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// name -> peer URLs, in flag order.
    pub initial_cluster: Vec<(String, Vec<Url>)>,
    pub initial_cluster_token: String,
    pub initial_cluster_new: bool,
    pub client_tls: Option<oxcd_tls::ServerTlsFiles>,
    pub peer_tls: Option<oxcd_tls::ServerTlsFiles>,
    /// `--peer-client-cert-file`/`--peer-client-key-file`: what this member presents when it
    /// dials a peer (default: the peer server certificate).
    pub peer_client_cert: Option<(PathBuf, PathBuf)>,
    /// `--experimental-peer-skip-client-san-verification`.
    pub peer_skip_client_san: bool,
    /// `--auto-tls` / `--peer-auto-tls`: self-signed certificates generated at start.
    pub auto_tls: AutoTls,
    pub enable_v2: bool,
    pub request_bytes_max: usize,
    /// `--max-response-bytes` (oxcd's own flag): what a Range or read-only Txn may return.
    pub response_bytes_max: usize,
    pub txn_ops_max: usize,
    pub quota_backend_bytes: u64,
    /// `--backend-cache-bytes` (oxcd's own flag): redb's page cache.
    pub backend_cache_bytes: usize,
    pub snapshot_count: u64,
    /// `--snapshot-catchup-entries`: raft log entries kept behind a compaction.
    pub snapshot_catchup_entries: u64,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub initial_election_tick_advance: bool,
    pub pre_vote: bool,
    pub connections_max: usize,
    pub watchers_max: usize,
    /// `--max-learners`.
    pub learners_max: usize,
    /// How often watchers that asked for it get a progress notification.
    pub watch_progress_notify_interval: Duration,
    /// The level name (`debug`, `info`, `warn`, `error`, `panic`, `fatal`).
    pub log_level: String,
    pub log: LogConfig,
    pub strict_reconfig_check: bool,
    pub auto_compaction: Option<AutoCompaction>,
    /// `--corrupt-check-time`; `None` when 0 (off, etcd's default).
    pub corrupt_check: Option<Duration>,
    /// `InitialCorruptCheck` (`--experimental-initial-corrupt-check`).
    pub initial_corrupt_check: bool,
    /// `CompactHashCheck` with `--compact-hash-check-time`; `None` when off.
    pub compact_hash_check: Option<Duration>,
    /// `--warning-apply-duration`: applying one entry slower than this is logged.
    pub warning_apply_duration: Duration,
    /// `--warning-unary-request-duration`: a unary request slower than this is logged.
    pub warning_unary_request_duration: Duration,
    /// `--force-new-cluster`: become a one-member cluster keeping all data.
    pub force_new_cluster: bool,
    pub http: HttpOptions,
    /// `--metrics=extensive`.
    pub metrics_extensive: bool,
    pub enable_grpc_gateway: bool,
    pub auth: AuthOptions,
    /// One line per flag accepted without effect, or ignored; logged at start.
    pub warnings: Vec<String>,
}

/// Logging: `--logger`, `--log-outputs`, `--log-level`, `--log-format`, rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `zap` (JSON lines) or `capnslog` (etcd 3.4's text lines).
    pub logger: Logger,
    /// `stderr`, `stdout` or file paths (`default` is stderr).
    pub outputs: Vec<LogOutput>,
    pub format: LogFormat,
    pub rotation: Option<LogRotation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logger {
    Zap,
    Capnslog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Console,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    Stdout,
    File(PathBuf),
}

/// `--log-rotation-config-json` (lumberjack's fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct LogRotation {
    /// Megabytes before a file is rotated.
    #[serde(default = "default_maxsize", rename = "maxsize")]
    pub max_size_mb: u64,
    /// Days to keep rotated files (0: no limit).
    #[serde(default, rename = "maxage")]
    pub max_age_days: u64,
    /// Rotated files to keep (0: no limit).
    #[serde(default, rename = "maxbackups")]
    pub max_backups: u64,
    #[serde(default, rename = "localtime")]
    pub local_time: bool,
    #[serde(default)]
    pub compress: bool,
}

fn default_maxsize() -> u64 {
    100
}

/// Options of the client HTTP/2 and HTTP listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// `--max-concurrent-streams` per connection.
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-interval` (None: 0, off).
    pub keepalive_interval: Option<Duration>,
    /// `--grpc-keepalive-timeout`.
    pub keepalive_timeout: Duration,
    pub socket_reuse_port: bool,
    pub socket_reuse_address: bool,
    /// `--cors` origins; empty means every origin (`*`).
    pub cors: Vec<String>,
    /// `--host-whitelist`; empty means every host (`*`).
    pub host_whitelist: Vec<String>,
}

/// `--auth-token`, `--bcrypt-cost`, `--auth-token-ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOptions {
    pub bcrypt_cost: u32,
    pub token_ttl: Duration,
}

/// `--auto-tls`, `--peer-auto-tls`, `--self-signed-cert-validity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AutoTls {
    pub client: bool,
    pub peer: bool,
    pub validity_years: u32,
}

/// `--auto-compaction-mode` with a non-zero `--auto-compaction-retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history (etcd's periodic mode).
    Periodic(Duration),
    /// Keep this many revisions (etcd's revision mode).
    Revision(u64),
}

/// Go's `time.ParseDuration` for non-negative values (`5s`, `1m30s`, `0`).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    oxcd_gocompat::duration::parse(text).ok()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    oxcd_gocompat::flag::parse_bool(v)
}

/// oxcd's own flags, which etcd does not have: read from `OXCD_*` variables, not `ETCD_*`.
pub const OXCD_ENV_FLAGS: &[&str] = &["backend-cache-bytes"];

fn env_name(flag: &str) -> String {
    let prefix = if OXCD_ENV_FLAGS.contains(&flag) {
        "OXCD"
    } else {
        "ETCD"
    };
    format!("{prefix}_{}", flag.to_uppercase().replace('-', "_"))
}

/// Checks a value against its flag's kind, as Go's flag package does while parsing.
fn check_kind(flag: &Flag, v: &str) -> Result<(), ConfigError> {
    let ok = match flag.kind {
        Kind::Bool => parse_bool(v).is_some(),
        Kind::Str => true,
        Kind::Uint => v.parse::<u64>().is_ok(),
        Kind::Int => v.parse::<i64>().is_ok(),
        Kind::Duration => parse_go_duration(v).is_some(),
    };
    if ok {
        return Ok(());
    }
    let expected = match flag.kind {
        Kind::Bool => "use true or false",
        Kind::Uint => "expected a non-negative integer",
        Kind::Int => "expected an integer",
        Kind::Duration => "expected a duration such as 10m, 1s or 500ms",
        Kind::Str => "",
    };
    err(format!(
        "invalid value {v:?} for --{}: {expected}",
        flag.name
    ))
}

/// The flag table in the form of `oxcd_gocompat::flag`, built once.
fn go_flags() -> &'static [oxcd_gocompat::flag::Flag] {
    static TABLE: std::sync::OnceLock<Vec<oxcd_gocompat::flag::Flag>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        flags::FLAGS
            .iter()
            .map(|f| match f.kind {
                Kind::Bool => oxcd_gocompat::flag::Flag::boolean(f.name, f.help).default(f.default),
                _ => oxcd_gocompat::flag::Flag::value(f.name, f.help).default(f.default),
            })
            .collect()
    })
}

/// The command line as Go's `flag.FlagSet.Parse` reads it: (flag, value) in order; None
/// when help was asked for.
fn parse_args(args: &[String]) -> Result<Option<Vec<(&'static Flag, String)>>, ConfigError> {
    use oxcd_gocompat::flag::FlagError;
    let parsed = match oxcd_gocompat::flag::parse(go_flags(), args) {
        Ok(p) => p,
        Err(FlagError::Help) => return Ok(None),
        Err(FlagError::Unknown(name)) => {
            return err(format!(
                "flag provided but not defined: -{name} (run oxcd --help for the flags oxcd takes)"
            ))
        }
        Err(FlagError::BadBool { name, value }) => {
            return err(format!(
                "invalid boolean value {value:?} for --{name}: use true or false"
            ))
        }
        Err(e) => return Err(ConfigError(e.to_string())),
    };
    if let Some(arg) = parsed.args.first() {
        return err(format!(
            "'{arg}' is not a valid flag (oxcd takes no positional arguments; run oxcd --help)"
        ));
    }
    let mut out = Vec::new();
    for (name, value) in parsed.values {
        let Some(flag) = flags::find(name) else {
            return err(format!("flag provided but not defined: -{name}"));
        };
        check_kind(flag, &value)?;
        out.push((flag, value));
    }
    Ok(Some(out))
}

/// Parses command-line arguments (without the program name) and the environment, or the
/// configuration file they name.
pub fn parse(args: &[String], env: &BTreeMap<String, String>) -> Result<Parsed, ConfigError> {
    let Some(given) = parse_args(args)? else {
        return Ok(Parsed::Help(usage()));
    };
    // Go's flag package sets a flag again when it is repeated: the last value wins.
    let mut set: BTreeMap<&'static str, String> = BTreeMap::new();
    for (flag, value) in given {
        set.insert(flag.name, value);
    }
    if set
        .get("version")
        .is_some_and(|v| parse_bool(v) == Some(true))
    {
        return Ok(Parsed::Version);
    }
    let config_file = set
        .get("config-file")
        .cloned()
        .or_else(|| env.get("ETCD_CONFIG_FILE").cloned())
        .filter(|p| !p.is_empty());
    let mut warnings = Vec::new();
    let set = match config_file {
        Some(path) => {
            // As etcd: with a configuration file, other flags and variables are ignored.
            let ignored: Vec<String> = set
                .keys()
                .filter(|k| **k != "config-file")
                .map(|k| format!("--{k}"))
                .collect();
            if !ignored.is_empty() {
                warnings.push(format!(
                    "loaded server configuration from {path}: other command line flags and environment variables are ignored ({})",
                    ignored.join(", ")
                ));
            }
            let mut file = file::load(std::path::Path::new(&path))?;
            warnings.append(&mut file.warnings);
            file.set
        }
        None => {
            with_env(&mut set, env, &mut warnings)?;
            set
        }
    };
    let mut cfg = RawFlags { set }.into_config()?;
    warnings.append(&mut cfg.warnings);
    cfg.warnings = warnings;
    Ok(Parsed::Run(Box::new(cfg)))
}

/// Adds the `ETCD_*` variables of flags not given on the command line.
fn with_env(
    set: &mut BTreeMap<&'static str, String>,
    env: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (key, _) in env.iter().filter(|(k, _)| k.starts_with("ETCD_")) {
        let known = flags::FLAGS.iter().any(|f| env_name(f.name) == *key);
        if !known && key != "ETCD_UNSUPPORTED_ARCH" && key != "ETCDCTL_API" {
            warnings.push(format!("unrecognized environment variable {key}"));
        }
    }
    for flag in flags::FLAGS {
        let ev = env_name(flag.name);
        if let Some(v) = env.get(&ev) {
            if set.contains_key(flag.name) {
                return err(format!(
                    "conflicting environment variable {ev:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag --{})",
                    flag.name
                ));
            }
            check_kind(flag, v).map_err(|e| ConfigError(format!("{ev}: {e}")))?;
            set.insert(flag.name, v.clone());
        }
    }
    Ok(())
}

/// The flags as given (command line and environment, or the configuration file).
struct RawFlags {
    set: BTreeMap<&'static str, String>,
}

/// The help text.
pub fn usage() -> String {
    let mut s = String::from(
        "Usage:\n\n  oxcd [flags]\n    Start an oxcd member (etcd's flags).\n\n  oxcd --config-file PATH\n    Start from etcd's YAML configuration file; other flags are then ignored.\n\nFlags (each also from ETCD_<NAME>):\n",
    );
    for flag in flags::FLAGS.iter().filter(|f| !f.help.is_empty()) {
        let d = match flag.kind {
            Kind::Str if flag.default.is_empty() => String::new(),
            _ => format!(" (default {:?})", flag.default),
        };
        let note = match flag.support {
            flags::Support::Honoured => String::new(),
            flags::Support::NoEffect(why) => {
                format!("\n        Accepted, no effect in oxcd: {why}.")
            }
        };
        s.push_str(&format!(
            "  --{}\n        {}{d}{note}\n",
            flag.name, flag.help
        ));
    }
    s
}

#[cfg(test)]
mod tests;
