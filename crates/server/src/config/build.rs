//! From the flags as given to a checked [`Config`]: each value read with its flag's meaning,
//! cross-flag rules checked (etcd's `Config.Validate`), one warning per flag set that has no
//! effect in oxcd.

use std::path::PathBuf;
use std::time::Duration;

use super::flags::{self, Support, ALIASES, FEATURE_GATES};
use super::{
    err, parse_bool, parse_go_duration, parse_initial_cluster, parse_urls, AuthOptions,
    AutoCompaction, Config, ConfigError, HttpOptions, LogConfig, LogFormat, LogOutput, LogRotation,
    Logger, RawFlags, Url,
};

/// etcd's `maxElectionMs`.
const ELECTION_MS_MAX: u64 = 50_000;
/// Log levels zap takes.
const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error", "dpanic", "panic", "fatal"];

impl RawFlags {
    /// The value of `name`: given, else its 3.4/3.5 `--experimental-*` alias if that was
    /// given, else the default.
    pub(super) fn str(&self, name: &str) -> String {
        if let Some((_, old)) = ALIASES.iter().find(|(new, _)| *new == name) {
            if let Some(v) = self.set.get(old) {
                return v.clone();
            }
        }
        if let Some(v) = self.set.get(name) {
            return v.clone();
        }
        flags::find(name)
            .map(|f| f.default.to_string())
            .unwrap_or_default()
    }

    pub(super) fn given(&self, name: &str) -> bool {
        self.set.contains_key(name)
            || ALIASES
                .iter()
                .any(|(new, old)| *new == name && self.set.contains_key(old))
    }

    pub(super) fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        let v = self.str(name);
        parse_bool(&v).ok_or_else(|| {
            ConfigError(format!(
                "invalid boolean value {v:?} for --{name}: use true or false"
            ))
        })
    }

    pub(super) fn uint(&self, name: &str) -> Result<u64, ConfigError> {
        let v = self.str(name);
        v.parse::<u64>().map_err(|_| {
            ConfigError(format!(
                "invalid value {v:?} for --{name}: expected a non-negative integer"
            ))
        })
    }

    pub(super) fn int(&self, name: &str) -> Result<i64, ConfigError> {
        let v = self.str(name);
        v.parse::<i64>().map_err(|_| {
            ConfigError(format!(
                "invalid value {v:?} for --{name}: expected an integer"
            ))
        })
    }

    /// A Go duration, zero allowed.
    pub(super) fn duration(&self, name: &str) -> Result<Duration, ConfigError> {
        let v = self.str(name);
        parse_go_duration(&v).ok_or_else(|| {
            ConfigError(format!(
                "invalid value {v:?} for --{name}: expected a duration such as 10m, 1s or 500ms"
            ))
        })
    }

    /// A positive Go duration.
    pub(super) fn positive_duration(&self, name: &str) -> Result<Duration, ConfigError> {
        match self.duration(name) {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => err(format!(
                "invalid value {:?} for --{name}: expected a positive duration such as 10m, 1s or 500ms",
                self.str(name)
            )),
        }
    }

    pub(super) fn urls(&self, name: &str) -> Result<Vec<Url>, ConfigError> {
        parse_urls(name, &self.str(name))
    }

    /// A URL list that may be empty.
    pub(super) fn optional_urls(&self, name: &str) -> Result<Vec<Url>, ConfigError> {
        let v = self.str(name);
        if v.trim().is_empty() {
            return Ok(Vec::new());
        }
        parse_urls(name, &v)
    }

    pub(super) fn path(&self, name: &str) -> Option<PathBuf> {
        let v = self.str(name);
        (!v.is_empty()).then(|| PathBuf::from(v))
    }

    /// A comma-separated list, empty items dropped.
    pub(super) fn list(&self, name: &str) -> Vec<String> {
        self.str(name)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// One line for each flag set to a value other than its default that oxcd accepts
    /// without effect (a configuration file that spells out the defaults stays quiet).
    fn no_effect_warnings(&self) -> Vec<String> {
        self.set
            .iter()
            .filter_map(|(name, value)| {
                let flag = flags::find(name)?;
                match flag.support {
                    Support::NoEffect(why) if !same_value(flag, value) => Some(format!(
                        "--{name} is accepted but has no effect in oxcd: {why}"
                    )),
                    _ => None,
                }
            })
            .collect()
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
                    Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                    Err(_) => parse_go_duration(retention.trim()).ok_or_else(bad)?,
                };
                Ok((!d.is_zero()).then_some(AutoCompaction::Periodic(d)))
            }
            other => err(format!(
                "invalid auto-compaction-mode {other:?}: use periodic or revision"
            )),
        }
    }

    /// `--feature-gates` (`Name=true,...`) merged with the `--experimental-*` booleans they
    /// replace; setting both for one feature is an error, as in etcd 3.6.
    fn feature(&self, gate: &str) -> Result<bool, ConfigError> {
        let mut from_gates = None;
        for pair in self.list("feature-gates") {
            let Some((k, v)) = pair.split_once('=') else {
                return err(format!(
                    "--feature-gates: missing bool value for {pair:?} (write {pair}=true)"
                ));
            };
            let (k, v) = (k.trim(), v.trim());
            if !FEATURE_GATES.iter().any(|(name, _)| *name == k) {
                return err(format!("--feature-gates: unrecognized feature gate: {k}"));
            }
            let b = parse_bool(v).ok_or_else(|| {
                ConfigError(format!(
                    "--feature-gates: invalid value of {k}={v}, err: parse error"
                ))
            })?;
            if k == gate {
                from_gates = Some(b);
            }
        }
        let flag = FEATURE_GATES
            .iter()
            .find(|(name, _)| *name == gate)
            .and_then(|(_, flag)| *flag);
        match (flag.filter(|f| self.given(f)), from_gates) {
            (Some(f), Some(b)) => err(format!(
                "cannot specify both flags: --{f}={} and --feature-gates={gate}={b} at the same time, please just use --feature-gates={gate}={b}",
                self.str(f)
            )),
            (Some(f), None) => self.bool(f),
            (None, Some(b)) => Ok(b),
            (None, None) => Ok(false),
        }
    }

    fn log_config(&self) -> Result<(String, LogConfig), ConfigError> {
        let mut level = self.str("log-level").to_lowercase();
        if !LOG_LEVELS.contains(&level.as_str()) {
            return err(format!(
                "invalid value {:?} for --log-level: use debug, info, warn, error, panic or fatal",
                self.str("log-level")
            ));
        }
        if self.bool("debug")? {
            level = "debug".into();
        }
        let logger = match self.str("logger").as_str() {
            "zap" => Logger::Zap,
            "capnslog" => Logger::Capnslog,
            other => {
                return err(format!(
                    "invalid value {other:?} for --logger: use zap (or capnslog, etcd 3.4's text lines)"
                ))
            }
        };
        let format = match self.str("log-format").as_str() {
            "json" => LogFormat::Json,
            "console" => LogFormat::Console,
            other => {
                return err(format!(
                    "invalid value {other:?} for --log-format: use json or console"
                ))
            }
        };
        let mut outputs = Vec::new();
        for o in self.list("log-outputs") {
            let out = match o.as_str() {
                "default" | "stderr" | "systemd/journal" => LogOutput::Stderr,
                "stdout" => LogOutput::Stdout,
                path => LogOutput::File(PathBuf::from(path)),
            };
            if !outputs.contains(&out) {
                outputs.push(out);
            }
        }
        if outputs.is_empty() {
            outputs.push(LogOutput::Stderr);
        }
        let rotation = if self.bool("enable-log-rotation")? {
            Some(self.rotation(&outputs)?)
        } else {
            None
        };
        Ok((
            level,
            LogConfig {
                logger,
                outputs,
                format,
                rotation,
            },
        ))
    }

    fn rotation(&self, outputs: &[LogOutput]) -> Result<LogRotation, ConfigError> {
        if !matches!(outputs, [LogOutput::File(_)]) {
            return err(
                "--enable-log-rotation requires --log-outputs to be a single file path (not stderr, stdout or several outputs)",
            );
        }
        let json = self.str("log-rotation-config-json");
        let r: LogRotation = serde_json::from_str(&json).map_err(|e| {
            ConfigError(format!("invalid --log-rotation-config-json {json:?}: {e}"))
        })?;
        if r.compress {
            return err("--log-rotation-config-json: compress is not supported by oxcd; set \"compress\": false (compress rotated files with logrotate or a cron job)");
        }
        if r.max_size_mb == 0 {
            return err("--log-rotation-config-json: maxsize must be at least 1 (megabytes)");
        }
        Ok(r)
    }

    fn http_options(&self) -> Result<HttpOptions, ConfigError> {
        let streams = self.uint("max-concurrent-streams")?;
        let star = |v: Vec<String>| -> Vec<String> {
            if v.iter().any(|s| s == "*") {
                Vec::new()
            } else {
                v
            }
        };
        Ok(HttpOptions {
            max_concurrent_streams: u32::try_from(streams).map_err(|_| {
                ConfigError(format!(
                    "invalid value \"{streams}\" for --max-concurrent-streams: at most {}",
                    u32::MAX
                ))
            })?,
            keepalive_interval: Some(self.duration("grpc-keepalive-interval")?)
                .filter(|d| !d.is_zero()),
            keepalive_timeout: self.duration("grpc-keepalive-timeout")?,
            socket_reuse_port: self.bool("socket-reuse-port")?,
            socket_reuse_address: self.bool("socket-reuse-address")?,
            cors: star(self.list("cors")),
            host_whitelist: star(self.list("host-whitelist")),
        })
    }

    fn auth_options(&self) -> Result<AuthOptions, ConfigError> {
        let token = self.str("auth-token");
        let kind = token.split(',').next().unwrap_or_default();
        if kind != "simple" {
            return err(format!(
                "--auth-token={token:?}: oxcd issues etcd's simple tokens only (use --auth-token=simple)"
            ));
        }
        let cost = self.uint("bcrypt-cost")?;
        if !(4..=31).contains(&cost) {
            return err(format!(
                "invalid value \"{cost}\" for --bcrypt-cost: valid values are between 4 and 31"
            ));
        }
        Ok(AuthOptions {
            bcrypt_cost: cost as u32,
            token_ttl: Duration::from_secs(self.uint("auth-token-ttl")?.max(1)),
        })
    }

    /// Bootstrap methods oxcd does not implement are refused rather than ignored: a member
    /// would otherwise bootstrap a different cluster than the one asked for.
    fn refuse_unsupported(&self) -> Result<(), ConfigError> {
        for name in ["discovery", "discovery-srv", "discovery-endpoints"] {
            if !self.str(name).is_empty() {
                return err(format!(
                    "--{name}: oxcd does not implement discovery; list the members with --initial-cluster instead"
                ));
            }
        }
        let proxy = self.str("proxy");
        match proxy.as_str() {
            "off" => Ok(()),
            "on" | "readonly" => err(format!(
                "--proxy={proxy}: oxcd has no v2 proxy mode; point clients at the members' client URLs"
            )),
            other => err(format!(
                "invalid value {other:?} for --proxy: valid values are off, readonly and on"
            )),
        }
    }

    /// The URL flags, each listener's checked for binding.
    fn url_flags(&self) -> Result<UrlFlags, ConfigError> {
        let u = UrlFlags {
            listen_client: self.urls("listen-client-urls")?,
            listen_peer: self.urls("listen-peer-urls")?,
            listen_client_http: self.optional_urls("listen-client-http-urls")?,
            listen_metrics: self.optional_urls("listen-metrics-urls")?,
            advertise_client: self.urls("advertise-client-urls")?,
            initial_advertise_peer: self.urls("initial-advertise-peer-urls")?,
        };
        for (flag, urls) in [
            ("listen-client-urls", &u.listen_client),
            ("listen-peer-urls", &u.listen_peer),
            ("listen-client-http-urls", &u.listen_client_http),
            ("listen-metrics-urls", &u.listen_metrics),
        ] {
            check_bind_urls(flag, urls)?;
        }
        Ok(u)
    }

    /// `--initial-cluster` (default: this member alone) and `--initial-cluster-state`.
    fn initial_cluster(
        &self,
        name: &str,
        advertised: &[Url],
    ) -> Result<(InitialCluster, bool), ConfigError> {
        let members = if self.given("initial-cluster") {
            parse_initial_cluster(&self.str("initial-cluster"))?
        } else {
            vec![(name.to_string(), advertised.to_vec())]
        };
        let new = match self.str("initial-cluster-state").as_str() {
            "new" => true,
            "existing" => false,
            other => {
                return err(format!(
                    "invalid value {other:?} for --initial-cluster-state: use new or existing"
                ))
            }
        };
        Ok((members, new))
    }

    /// The corruption checks: the periodic one (`--corrupt-check-time`, or `CompactHashCheck`
    /// every `--compact-hash-check-time`, which oxcd runs as the same whole-store hash
    /// comparison at a revision all members applied) and `InitialCorruptCheck` (the hashes
    /// of the other members compared before serving: `consensus::peer`).
    fn corruption(&self) -> Result<Corruption, ConfigError> {
        let initial = self.feature("InitialCorruptCheck")?;
        let compact_hash = if self.feature("CompactHashCheck")? {
            Some(self.positive_duration("compact-hash-check-time")?)
        } else {
            None
        };
        for gate in [
            "TxnModeWriteWithSharedBuffer",
            "StopGRPCServiceOnDefrag",
            "LeaseCheckpoint",
            "LeaseCheckpointPersist",
            "SetMemberLocalAddr",
        ] {
            // Checked; their experimental flags already warned when set.
            self.feature(gate)?;
        }
        Ok(Corruption {
            periodic: Some(self.duration("corrupt-check-time")?)
                .filter(|d| !d.is_zero())
                .or(compact_hash),
            initial,
            compact_hash,
        })
    }

    fn learners_max(&self) -> Result<usize, ConfigError> {
        match self.int("max-learners")? {
            n if n >= 1 => Ok(n as usize),
            n => err(format!(
                "invalid value \"{n}\" for --max-learners: at least 1"
            )),
        }
    }

    fn metrics_extensive(&self) -> Result<bool, ConfigError> {
        match self.str("metrics").as_str() {
            "basic" => Ok(false),
            "extensive" => Ok(true),
            other => err(format!(
                "invalid value {other:?} for --metrics: use basic or extensive"
            )),
        }
    }

    fn quota_backend_bytes(&self) -> Result<u64, ConfigError> {
        Ok(match self.int("quota-backend-bytes")? {
            n if n <= 0 => 2 * 1024 * 1024 * 1024,
            n => n as u64,
        })
    }

    pub(super) fn into_config(self) -> Result<Config, ConfigError> {
        self.refuse_unsupported()?;
        let mut warnings = self.no_effect_warnings();
        let name = self.str("name");
        let data_dir = self
            .path("data-dir")
            .unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));
        let urls = self.url_flags()?;
        let (initial_cluster, initial_cluster_new) =
            self.initial_cluster(&name, &urls.initial_advertise_peer)?;
        let tls = self.tls(&urls.listen_client, &urls.listen_peer, &mut warnings)?;
        let (log_level, log) = self.log_config()?;
        let corruption = self.corruption()?;
        let cfg = Config {
            name,
            data_dir,
            listen_client_urls: urls.listen_client,
            listen_client_http_urls: urls.listen_client_http,
            listen_metrics_urls: urls.listen_metrics,
            advertise_client_urls: urls.advertise_client,
            listen_peer_urls: urls.listen_peer,
            initial_advertise_peer_urls: urls.initial_advertise_peer,
            initial_cluster,
            initial_cluster_token: self.str("initial-cluster-token"),
            initial_cluster_new,
            client_tls: tls.client,
            peer_tls: tls.peer,
            peer_client_cert: tls.peer_client_cert,
            peer_skip_client_san: self.bool("peer-skip-client-san-verification")?,
            auto_tls: tls.auto,
            enable_v2: self.bool("enable-v2")?,
            request_bytes_max: self.uint("max-request-bytes")? as usize,
            response_bytes_max: self.uint("max-response-bytes")?.max(1) as usize,
            txn_ops_max: self.uint("max-txn-ops")? as usize,
            quota_backend_bytes: self.quota_backend_bytes()?,
            backend_cache_bytes: self.uint("backend-cache-bytes")? as usize,
            snapshot_count: self.uint("snapshot-count")?.max(1),
            snapshot_catchup_entries: self.uint("snapshot-catchup-entries")?.max(1),
            heartbeat_ms: self.uint("heartbeat-interval")?,
            election_ms: self.uint("election-timeout")?,
            initial_election_tick_advance: self.bool("initial-election-tick-advance")?,
            pre_vote: self.bool("pre-vote")?,
            connections_max: self.uint("max-connections")?.max(1) as usize,
            watchers_max: self.uint("max-watchers")? as usize,
            learners_max: self.learners_max()?,
            watch_progress_notify_interval: self
                .positive_duration("watch-progress-notify-interval")?,
            log_level,
            log,
            strict_reconfig_check: self.bool("strict-reconfig-check")?,
            auto_compaction: self.auto_compaction()?,
            wal_dir: self.path("wal-dir"),
            corrupt_check: corruption.periodic,
            initial_corrupt_check: corruption.initial,
            compact_hash_check: corruption.compact_hash,
            warning_apply_duration: self.duration("warning-apply-duration")?,
            // etcd 3.5's default when neither name of the flag is set.
            warning_unary_request_duration: Some(self.duration("warning-unary-request-duration")?)
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_millis(300)),
            force_new_cluster: self.bool("force-new-cluster")?,
            http: self.http_options()?,
            metrics_extensive: self.metrics_extensive()?,
            enable_grpc_gateway: self.bool("enable-grpc-gateway")?,
            auth: self.auth_options()?,
            warnings,
        };
        cfg.check()?;
        Ok(cfg)
    }
}

/// `--initial-cluster`: name -> peer URLs, in flag order.
type InitialCluster = Vec<(String, Vec<Url>)>;

/// The URL flags of a [`Config`].
struct UrlFlags {
    listen_client: Vec<Url>,
    listen_peer: Vec<Url>,
    listen_client_http: Vec<Url>,
    listen_metrics: Vec<Url>,
    advertise_client: Vec<Url>,
    initial_advertise_peer: Vec<Url>,
}

/// What the corruption flags and gates ask for.
struct Corruption {
    periodic: Option<Duration>,
    initial: bool,
    compact_hash: Option<Duration>,
}

/// True when `value` means the flag's default (`0s` and `0` are the same duration).
fn same_value(flag: &flags::Flag, value: &str) -> bool {
    match flag.kind {
        flags::Kind::Bool => parse_bool(value) == parse_bool(flag.default),
        flags::Kind::Duration => parse_go_duration(value) == parse_go_duration(flag.default),
        _ => value == flag.default,
    }
}

/// etcd's `checkBindURLs`: listeners bind IPs (or localhost), not names.
fn check_bind_urls(flag: &str, urls: &[Url]) -> Result<(), ConfigError> {
    for u in urls {
        if u.bind_addr().is_none() {
            return err(format!(
                "--{flag}: expected IP in URL for binding ({u}); hostnames are not allowed here, use an IP address"
            ));
        }
    }
    Ok(())
}

impl Config {
    fn check(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ms == 0 || self.election_ms < 5 * self.heartbeat_ms {
            return err(format!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                self.election_ms, self.heartbeat_ms
            ));
        }
        if self.election_ms > ELECTION_MS_MAX {
            return err(format!(
                "--election-timeout[{}ms] is too long, and should be set less than {ELECTION_MS_MAX}ms",
                self.election_ms
            ));
        }
        if self.txn_ops_max == 0 || self.request_bytes_max == 0 {
            return err("--max-txn-ops and --max-request-bytes must be positive");
        }
        // A member restarting on its data dir ignores the --initial-cluster* flags (etcd
        // reads its identity from the WAL); they are checked when the data dir is created.
        let wal = oxcd_snapshot::layout::wal_dir(&self.data_dir, self.wal_dir.as_deref());
        if !oxcd_storage::Wal::exists(&wal) {
            self.check_bootstrap()?;
        }
        Ok(())
    }

    /// The rules of `--initial-cluster` that matter when a data dir is created: this
    /// member is in it, under the peer URLs it advertises. etcd checks them at bootstrap
    /// only; a restart ignores the `--initial-cluster*` flags.
    pub fn check_bootstrap(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }
}
