//! The table of every flag etcd 3.4, 3.5 and 3.6 take (their `--help`, `embed.Config.AddFlags`
//! and the configuration reference), with what each means for oxcd: honoured, or accepted
//! with one WARN line that says why it has no effect here. A flag etcd does not have is
//! refused as etcd refuses it ("flag provided but not defined").
//!
//! Values are checked by kind as Go's `flag` package checks them while parsing (a bad
//! boolean, number or duration stops the server with exit status 2, whether or not the flag
//! has an effect here).

/// How a flag's value is written (what Go's `flag` package checks while parsing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag` alone is true; `--flag=false` the only way to say false.
    Bool,
    /// Any text (paths, names, URL lists, comma lists).
    Str,
    /// A non-negative integer (Go's `uint`, `uint64`).
    Uint,
    /// A signed integer (Go's `int`, `int64`).
    Int,
    /// A Go duration (`5s`, `1m30s`, `0`).
    Duration,
}

/// What oxcd does with a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// It has the meaning etcd gives it.
    Honoured,
    /// Accepted and checked, but it cannot change anything in oxcd; when it is set, one WARN
    /// line says so with this reason.
    NoEffect(&'static str),
}

/// One flag: name (no dashes), kind, default (as text), support, help.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub support: Support,
    pub help: &'static str,
}

use Kind::{Bool, Duration as Dur, Int, Str, Uint};
use Support::{Honoured as H, NoEffect as N};

const fn f(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    support: Support,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        kind,
        default,
        support,
        help,
    }
}

const NO_TRACING: &str = "oxcd has no OpenTelemetry exporter; its logs carry the events";
const NO_DISCOVERY_TUNING: &str =
    "oxcd does not implement discovery (--initial-cluster lists the members)";
const NO_PROXY_TUNING: &str = "oxcd has no v2 proxy mode (--proxy=off)";
const NO_BBOLT: &str = "oxcd's backend is redb, not bbolt";
const NO_DOWNGRADE: &str = "oxcd has no cluster downgrade";
const NO_LEASE_CHECKPOINT: &str = "leases go through the log with the proposer's clock, and a new leader extends every lease by its TTL plus an election timeout (etcd's behaviour without checkpoints)";
const NO_BATCHED_COMPACTION: &str =
    "a compaction is one backend transaction in oxcd, not batches with sleeps between them";
const NO_ETCD2: &str = "an etcd 2 flag that etcd also ignores";

/// Every flag. Order: etcd's `--help` sections; aliases (3.6 plain names of 3.4/3.5
/// `--experimental-*` flags) are resolved in [`ALIASES`].
#[rustfmt::skip]
pub const FLAGS: &[Flag] = &[
    // Member
    f("name", Str, "default", H, "Human-readable name for this member."),
    f("data-dir", Str, "", H, "Path to the data directory (default ${name}.etcd)."),
    f("wal-dir", Str, "", H, "Path to the dedicated wal directory (default ${data-dir}/member/wal)."),
    f("snapshot-count", Uint, "100000", H, "Number of committed transactions to trigger a snapshot to disk."),
    f("heartbeat-interval", Uint, "100", H, "Time (in milliseconds) of a heartbeat interval."),
    f("election-timeout", Uint, "1000", H, "Time (in milliseconds) for an election to timeout."),
    f("initial-election-tick-advance", Bool, "true", H, "Whether to fast-forward initial election ticks on boot for faster election."),
    f("listen-peer-urls", Str, "http://localhost:2380", H, "List of URLs to listen on for peer traffic."),
    f("listen-client-urls", Str, "http://localhost:2379", H, "List of URLs to listen on for client grpc traffic and http as long as --listen-client-http-urls is not specified."),
    f("listen-client-http-urls", Str, "", H, "List of URLs to listen on for http only client traffic. Enabling this flag removes http services from --listen-client-urls."),
    f("max-snapshots", Uint, "5", N("oxcd writes no snapshot files: the backend is the snapshot"), "Maximum number of snapshot files to retain (0 is unlimited)."),
    f("max-wals", Uint, "5", N("oxcd releases WAL segments as soon as the backend holds their entries durably"), "Maximum number of wal files to retain (0 is unlimited)."),
    f("quota-backend-bytes", Int, "0", H, "Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB)."),
    f("backend-cache-bytes", Uint, "33554432", H, "oxcd's own: bytes of backend pages cached in memory, also from OXCD_BACKEND_CACHE_BYTES (see docs/design.md, Memory)."),
    f("backend-bbolt-freelist-type", Str, "map", N(NO_BBOLT), "BackendFreelistType specifies the type of freelist that boltdb backend uses (array and map are supported types)."),
    f("experimental-backend-bbolt-freelist-type", Str, "map", N(NO_BBOLT), "BackendFreelistType specifies the type of freelist that boltdb backend uses (etcd 3.4 name)."),
    f("backend-batch-interval", Dur, "0", N("the backend commits once per raft loop turn (group commit)"), "BackendBatchInterval is the maximum time before commit the backend transaction."),
    f("backend-batch-limit", Int, "0", N("the backend commits once per raft loop turn (group commit)"), "BackendBatchLimit is the maximum operations before commit the backend transaction."),
    f("max-txn-ops", Uint, "128", H, "Maximum number of operations permitted in a transaction."),
    f("max-request-bytes", Uint, "1572864", H, "Maximum client request size in bytes the server will accept."),
    f("max-response-bytes", Uint, "2147483647", H, "oxcd's own: a Range or read-only Txn whose response would exceed this many bytes fails with ResourceExhausted (grpc's \"trying to send message larger than max\"; etcd's gRPC limit is the default), found before the member reads it all into memory."),
    f("max-concurrent-streams", Uint, "4294967295", H, "Maximum concurrent streams that each client can open at a time."),
    f("grpc-keepalive-min-time", Dur, "5s", N("the HTTP/2 server does not police how often clients ping"), "Minimum interval duration that a client should wait before pinging server."),
    f("grpc-keepalive-interval", Dur, "2h", H, "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable)."),
    f("grpc-keepalive-timeout", Dur, "20s", H, "Additional duration of wait before closing a non-responsive connection (0 to disable)."),
    f("socket-reuse-port", Bool, "false", H, "Enable to set socket option SO_REUSEPORT on listeners allowing rebinding of a port already in use."),
    f("socket-reuse-address", Bool, "false", H, "Enable to set socket option SO_REUSEADDR on listeners allowing binding to an address in TIME_WAIT state."),
    f("raft-read-timeout", Dur, "5s", N("peer streams are watched by raft's heartbeats, not socket deadlines"), "Read timeout set on each rafthttp connection."),
    f("raft-write-timeout", Dur, "5s", N("peer streams are watched by raft's heartbeats, not socket deadlines"), "Write timeout set on each rafthttp connection."),
    f("max-connections", Uint, "1024", H, "Maximum number of concurrent client connections per listener (oxcd)."),
    f("max-watchers", Uint, "10000", H, "Maximum number of watchers per member (oxcd)."),
    // Clustering
    f("initial-advertise-peer-urls", Str, "http://localhost:2380", H, "List of this member's peer URLs to advertise to the rest of the cluster."),
    f("initial-cluster", Str, "", H, "Initial cluster configuration for bootstrapping (default ${name}=${initial-advertise-peer-urls})."),
    f("initial-cluster-state", Str, "new", H, "Initial cluster state ('new' or 'existing'); ignored on restarts."),
    f("initial-cluster-token", Str, "etcd-cluster", H, "Initial cluster token for the etcd cluster during bootstrap."),
    f("advertise-client-urls", Str, "http://localhost:2379", H, "List of this member's client URLs to advertise to the public."),
    f("discovery", Str, "", H, "Discovery URL used to bootstrap the cluster (not implemented: refused when set)."),
    f("discovery-fallback", Str, "proxy", N(NO_DISCOVERY_TUNING), "Expected behavior ('exit' or 'proxy') when discovery services fails."),
    f("discovery-proxy", Str, "", N(NO_DISCOVERY_TUNING), "HTTP proxy to use for traffic to discovery service."),
    f("discovery-srv", Str, "", H, "DNS srv domain used to bootstrap the cluster (not implemented: refused when set)."),
    f("discovery-srv-name", Str, "", N(NO_DISCOVERY_TUNING), "Suffix to the dns srv name queried when bootstrapping."),
    f("discovery-endpoints", Str, "", H, "V3 discovery: gRPC endpoints of the discovery service (not implemented: refused when set)."),
    f("discovery-token", Str, "", N(NO_DISCOVERY_TUNING), "V3 discovery: discovery token for the etcd cluster to be bootstrapped."),
    f("discovery-dial-timeout", Dur, "2s", N(NO_DISCOVERY_TUNING), "V3 discovery: dial timeout for client connections."),
    f("discovery-request-timeout", Dur, "5s", N(NO_DISCOVERY_TUNING), "V3 discovery: timeout for discovery requests."),
    f("discovery-keepalive-time", Dur, "2s", N(NO_DISCOVERY_TUNING), "V3 discovery: keepalive time for client connections."),
    f("discovery-keepalive-timeout", Dur, "6s", N(NO_DISCOVERY_TUNING), "V3 discovery: keepalive timeout for client connections."),
    f("discovery-insecure-transport", Bool, "true", N(NO_DISCOVERY_TUNING), "V3 discovery: disable transport security for client connections."),
    f("discovery-insecure-skip-tls-verify", Bool, "false", N(NO_DISCOVERY_TUNING), "V3 discovery: skip server certificate verification."),
    f("discovery-cert", Str, "", N(NO_DISCOVERY_TUNING), "V3 discovery: identify secure client using this TLS certificate file."),
    f("discovery-key", Str, "", N(NO_DISCOVERY_TUNING), "V3 discovery: identify secure client using this TLS key file."),
    f("discovery-cacert", Str, "", N(NO_DISCOVERY_TUNING), "V3 discovery: verify certificates of TLS-enabled secure servers using this CA bundle."),
    f("discovery-user", Str, "", N(NO_DISCOVERY_TUNING), "V3 discovery: username[:password] for authentication."),
    f("discovery-password", Str, "", N(NO_DISCOVERY_TUNING), "V3 discovery: password for authentication."),
    f("strict-reconfig-check", Bool, "true", H, "Reject reconfiguration requests that would cause quorum loss."),
    f("pre-vote", Bool, "true", H, "Enable to run an additional Raft election phase."),
    f("auto-compaction-retention", Str, "0", H, "Auto compaction retention for mvcc key value store. 0 means disable auto compaction."),
    f("auto-compaction-mode", Str, "periodic", H, "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention."),
    f("enable-v2", Bool, "true", H, "Accept etcd V2 client requests."),
    f("v2-deprecation", Str, "not-yet", N("oxcd keeps its v2 store apart from the v3 data; --enable-v2 turns the v2 API on or off"), "Phase of v2store deprecation."),
    // Security
    f("cert-file", Str, "", H, "Path to the client server TLS cert file."),
    f("key-file", Str, "", H, "Path to the client server TLS key file."),
    f("client-cert-auth", Bool, "false", H, "Enable client cert authentication."),
    f("client-cert-file", Str, "", N("etcd uses it to dial itself for the gRPC gateway; oxcd serves the gateway in-process"), "Path to an explicit client TLS cert file otherwise cert file will be used when client auth is required."),
    f("client-key-file", Str, "", N("etcd uses it to dial itself for the gRPC gateway; oxcd serves the gateway in-process"), "Path to an explicit client TLS key file otherwise key file will be used when client auth is required."),
    f("client-crl-file", Str, "", H, "Path to the client certificate revocation list file."),
    f("client-cert-allowed-hostname", Str, "", H, "Comma-separated list of SAN hostnames for client cert authentication."),
    f("trusted-ca-file", Str, "", H, "Path to the client server TLS trusted CA cert file."),
    f("auto-tls", Bool, "false", H, "Client TLS using generated certificates."),
    f("peer-cert-file", Str, "", H, "Path to the peer server TLS cert file."),
    f("peer-key-file", Str, "", H, "Path to the peer server TLS key file."),
    f("peer-client-cert-auth", Bool, "false", H, "Enable peer client cert authentication."),
    f("peer-trusted-ca-file", Str, "", H, "Path to the peer server TLS trusted CA file."),
    f("peer-cert-allowed-cn", Str, "", H, "Comma-separated list of allowed CNs for inter-peer TLS authentication."),
    f("peer-cert-allowed-hostname", Str, "", H, "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication."),
    f("peer-auto-tls", Bool, "false", H, "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided."),
    f("peer-client-cert-file", Str, "", H, "Path to an explicit peer client TLS cert file otherwise peer cert file will be used when client auth is required."),
    f("peer-client-key-file", Str, "", H, "Path to an explicit peer client TLS key file otherwise peer key file will be used when client auth is required."),
    f("self-signed-cert-validity", Uint, "1", H, "The validity period of the client and peer certificates that are automatically generated, in years."),
    f("peer-crl-file", Str, "", H, "Path to the peer certificate revocation list file."),
    f("cipher-suites", Str, "", H, "Comma-separated list of supported TLS cipher suites between client/server and peers (empty: the TLS library's defaults)."),
    f("cors", Str, "*", H, "Comma-separated whitelist of origins for CORS, or cross-origin resource sharing, (empty or * means allow all)."),
    f("host-whitelist", Str, "*", H, "Acceptable hostnames from HTTP client requests, if server is not secure (empty or * means allow all)."),
    f("tls-min-version", Str, "TLS1.2", H, "Minimum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3."),
    f("tls-max-version", Str, "", H, "Maximum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3 (empty: TLS1.3)."),
    f("experimental-peer-skip-client-san-verification", Bool, "false", H, "Skip verification of SAN field in client certificate for peer connections."),
    f("peer-skip-client-san-verification", Bool, "false", H, "Skip verification of SAN field in client certificate for peer connections."),
    // Auth
    f("auth-token", Str, "simple", H, "Specify a v3 authentication token type and its options ('simple' or 'jwt')."),
    f("bcrypt-cost", Uint, "10", H, "Specify the cost / strength of the bcrypt algorithm for hashing auth passwords. Valid values are between 4 and 31."),
    f("auth-token-ttl", Uint, "300", H, "Time (in seconds) of the auth-token-ttl."),
    // Profiling and monitoring
    f("enable-pprof", Bool, "false", N("oxcd is not a Go program: there is no pprof endpoint"), "Enable runtime profiling data via HTTP server."),
    f("metrics", Str, "basic", H, "Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics."),
    f("listen-metrics-urls", Str, "", H, "List of URLs to listen on for the /metrics and /health endpoints. For https, the client URL TLS info is used."),
    f("enable-grpc-gateway", Bool, "true", H, "Enable GRPC gateway."),
    // Logging
    f("logger", Str, "zap", H, "'zap' for structured JSON logs (etcd 3.5's default), 'capnslog' for etcd 3.4's text lines."),
    f("log-outputs", Str, "default", H, "Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd, or list of comma separated output targets."),
    f("log-level", Str, "info", H, "Configures log level. Only supports debug, info, warn, error, panic, or fatal."),
    f("log-format", Str, "json", H, "Configures log format. Only supports json, console."),
    f("enable-log-rotation", Bool, "false", H, "Enable log rotation of a single log-outputs file target."),
    f("log-rotation-config-json", Str, r#"{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}"#, H, "Configures log rotation if enabled with a JSON logger config. MaxSize(MB), MaxAge(days,0=no limit), MaxBackups(0=no limit), LocalTime(use computers local time), Compress(gzip)."),
    f("disable-log-sampling", Bool, "false", H, "Disable log sampling (oxcd never samples)."),
    f("debug", Bool, "false", H, "Enable debug-level logging for etcd (etcd 3.4; same as --log-level=debug)."),
    f("log-package-levels", Str, "", N("capnslog's per-package levels; oxcd has one level (--log-level)"), "Specify a particular log level for each etcd package (etcd 3.4)."),
    // Distributed tracing
    f("experimental-enable-distributed-tracing", Bool, "false", N(NO_TRACING), "Enable experimental distributed tracing."),
    f("experimental-distributed-tracing-address", Str, "localhost:4317", N(NO_TRACING), "Distributed tracing collector address."),
    f("experimental-distributed-tracing-service-name", Str, "etcd", N(NO_TRACING), "Distributed tracing service name."),
    f("experimental-distributed-tracing-instance-id", Str, "", N(NO_TRACING), "Distributed tracing instance ID."),
    f("experimental-distributed-tracing-sampling-rate", Int, "0", N(NO_TRACING), "Number of samples to collect per million spans."),
    f("enable-distributed-tracing", Bool, "false", N(NO_TRACING), "Enable distributed tracing using OpenTelemetry Tracing."),
    f("distributed-tracing-address", Str, "localhost:4317", N(NO_TRACING), "Address for distributed tracing."),
    f("distributed-tracing-service-name", Str, "etcd", N(NO_TRACING), "Service name for distributed tracing."),
    f("distributed-tracing-instance-id", Str, "", N(NO_TRACING), "Service instance ID for distributed tracing."),
    f("distributed-tracing-sampling-rate", Int, "0", N(NO_TRACING), "Number of samples to collect per million spans."),
    // v2 proxy (etcd 3.4/3.5)
    f("proxy", Str, "off", H, "Proxy mode setting ('off', 'readonly' or 'on'); oxcd has only 'off'."),
    f("proxy-failure-wait", Uint, "5000", N(NO_PROXY_TUNING), "Time (in milliseconds) an endpoint will be held in a failed state."),
    f("proxy-refresh-interval", Uint, "30000", N(NO_PROXY_TUNING), "Time (in milliseconds) of the endpoints refresh interval."),
    f("proxy-dial-timeout", Uint, "1000", N(NO_PROXY_TUNING), "Time (in milliseconds) for a dial to timeout."),
    f("proxy-write-timeout", Uint, "5000", N(NO_PROXY_TUNING), "Time (in milliseconds) for a write to timeout."),
    f("proxy-read-timeout", Uint, "0", N(NO_PROXY_TUNING), "Time (in milliseconds) for a read to timeout."),
    // Experimental (3.4/3.5 names) and their 3.6 names
    f("experimental-initial-corrupt-check", Bool, "false", H, "Enable to check data corruption before serving any client/peer traffic."),
    f("experimental-corrupt-check-time", Dur, "0s", H, "Duration of time between cluster corruption check passes."),
    f("corrupt-check-time", Dur, "0s", H, "Duration of time between cluster corruption check passes."),
    f("experimental-compact-hash-check-enabled", Bool, "false", H, "Enable leader to periodically check followers compaction hashes."),
    f("experimental-compact-hash-check-time", Dur, "1m", H, "Duration of time between leader checks followers compaction hashes."),
    f("compact-hash-check-time", Dur, "1m", H, "Duration of time between leader checks followers compaction hashes."),
    f("experimental-enable-v2v3", Str, "", N("oxcd serves v2 from its own v2 store"), "Serve v2 requests through the v3 backend under a given prefix."),
    f("experimental-enable-lease-checkpoint", Bool, "false", N(NO_LEASE_CHECKPOINT), "Enable leader to send regular checkpoints to other members to prevent reset of remaining TTL on leader change."),
    f("experimental-enable-lease-checkpoint-persist", Bool, "false", N(NO_LEASE_CHECKPOINT), "Enable persisting remainingTTL to prevent indefinite auto-renewal of long lived leases."),
    f("experimental-compaction-batch-limit", Int, "1000", N(NO_BATCHED_COMPACTION), "Sets the maximum revisions deleted in each compaction batch."),
    f("compaction-batch-limit", Int, "1000", N(NO_BATCHED_COMPACTION), "Sets the maximum revisions deleted in each compaction batch."),
    f("experimental-compaction-sleep-interval", Dur, "10ms", N(NO_BATCHED_COMPACTION), "Sets the sleep interval between each compaction batch."),
    f("compaction-sleep-interval", Dur, "10ms", N(NO_BATCHED_COMPACTION), "Sets the sleep interval between each compaction batch."),
    f("experimental-watch-progress-notify-interval", Dur, "10m", H, "Duration of periodical watch progress notification."),
    f("watch-progress-notify-interval", Dur, "10m", H, "Duration of periodic watch progress notifications."),
    f("experimental-downgrade-check-time", Dur, "5s", N(NO_DOWNGRADE), "Duration of time between two downgrade status checks."),
    f("downgrade-check-time", Dur, "5s", N(NO_DOWNGRADE), "Duration of time between two downgrade status checks."),
    f("experimental-memory-mlock", Bool, "false", N("oxcd does not lock its pages in memory; run it without swap"), "Enable to enforce etcd pages (in particular bbolt) to stay in RAM."),
    f("memory-mlock", Bool, "false", N("oxcd does not lock its pages in memory; run it without swap"), "Enable to enforce etcd pages (in particular bbolt) to stay in RAM."),
    f("experimental-warning-apply-duration", Dur, "100ms", H, "Warning is generated if requests take more than this duration."),
    f("warning-apply-duration", Dur, "100ms", H, "Time duration after which a warning is generated if applying a request takes more time."),
    f("experimental-warning-unary-request-duration", Dur, "0", H, "Time duration after which a warning is generated if a unary request takes more time."),
    f("warning-unary-request-duration", Dur, "0", H, "Time duration after which a warning is generated if a unary request takes more time (default 300ms)."),
    f("experimental-txn-mode-write-with-shared-buffer", Bool, "true", N("a bbolt read-buffer option; oxcd's backend is redb"), "Enable the write transaction to use a shared buffer in its readonly check operations."),
    f("experimental-bootstrap-defrag-threshold-megabytes", Uint, "0", N("redb reuses freed pages; defragment on demand (etcdctl defrag)"), "Enable the defrag during etcd server bootstrap on condition that it will free at least the provided threshold of disk space."),
    f("bootstrap-defrag-threshold-megabytes", Uint, "0", N("redb reuses freed pages; defragment on demand (etcdctl defrag)"), "Enable the defrag during etcd server bootstrap on condition that it will free at least the provided threshold of disk space."),
    f("experimental-stop-grpc-service-on-defrag", Bool, "false", N("oxcd's health and gRPC health answer while a defragmentation runs"), "Enable etcd gRPC service to stop serving client requests on defragmentation."),
    f("experimental-max-learners", Int, "1", H, "Sets the maximum number of learners that can be available in the cluster membership."),
    f("max-learners", Int, "1", H, "Sets the maximum number of learners that can be available in the cluster membership."),
    f("experimental-wait-cluster-ready-timeout", Dur, "5s", N("oxcd serves clients once its attributes are published through the log, without a separate wait"), "Maximum duration to wait for the cluster to be ready."),
    f("experimental-snapshot-catchup-entries", Uint, "5000", H, "Number of entries for a slow follower to catch up after compacting the raft storage entries."),
    f("snapshot-catchup-entries", Uint, "5000", H, "Number of entries for a slow follower to catch up after compacting the raft storage entries."),
    f("experimental-set-member-localaddr", Bool, "false", N("oxcd always dials peers from its first --listen-peer-urls address when it is a specific IP"), "Enable to use the first advertised peer URL's IP as the local address when dialing peers."),
    f("feature-gates", Str, "", H, "A set of key=value pairs that describe server level feature gates for alpha/experimental features (InitialCorruptCheck, CompactHashCheck, ...)."),
    // Unsafe
    f("force-new-cluster", Bool, "false", H, "Force to create a new one-member cluster."),
    f("unsafe-no-fsync", Bool, "false", N("oxcd never turns fsync off: nothing is acknowledged before it is durable"), "Disables fsync, unsafe, will cause data loss."),
    // etcd 2 flags etcd accepts and ignores
    f("cluster-active-size", Str, "", N(NO_ETCD2), ""),
    f("cluster-remove-delay", Str, "", N(NO_ETCD2), ""),
    f("cluster-sync-interval", Str, "", N(NO_ETCD2), ""),
    f("config", Str, "", N(NO_ETCD2), ""),
    f("force", Bool, "false", N(NO_ETCD2), ""),
    f("max-result-buffer", Str, "", N(NO_ETCD2), ""),
    f("max-retry-attempts", Str, "", N(NO_ETCD2), ""),
    f("peer-heartbeat-interval", Str, "", N(NO_ETCD2), ""),
    f("peer-election-timeout", Str, "", N(NO_ETCD2), ""),
    f("retry-interval", Str, "", N(NO_ETCD2), ""),
    f("snapshot", Bool, "false", N(NO_ETCD2), ""),
    f("v", Bool, "false", N(NO_ETCD2), ""),
    f("vv", Bool, "false", N(NO_ETCD2), ""),
    // The command itself
    f("config-file", Str, "", H, "Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored."),
    f("version", Bool, "false", H, "Print the version and exit."),
];

/// 3.6's plain names and the `--experimental-*` names they replace: when the experimental
/// one is set it wins, as in etcd 3.6 (`cfg.ec.FlagsExplicitlySet["experimental-..."]`).
pub const ALIASES: &[(&str, &str)] = &[
    ("corrupt-check-time", "experimental-corrupt-check-time"),
    (
        "compact-hash-check-time",
        "experimental-compact-hash-check-time",
    ),
    (
        "watch-progress-notify-interval",
        "experimental-watch-progress-notify-interval",
    ),
    (
        "warning-apply-duration",
        "experimental-warning-apply-duration",
    ),
    (
        "warning-unary-request-duration",
        "experimental-warning-unary-request-duration",
    ),
    ("max-learners", "experimental-max-learners"),
    (
        "snapshot-catchup-entries",
        "experimental-snapshot-catchup-entries",
    ),
    (
        "peer-skip-client-san-verification",
        "experimental-peer-skip-client-san-verification",
    ),
    (
        "backend-bbolt-freelist-type",
        "experimental-backend-bbolt-freelist-type",
    ),
];

/// 3.6's feature gates, with the `--experimental-*` boolean each replaces.
pub const FEATURE_GATES: &[(&str, Option<&str>)] = &[
    (
        "InitialCorruptCheck",
        Some("experimental-initial-corrupt-check"),
    ),
    (
        "CompactHashCheck",
        Some("experimental-compact-hash-check-enabled"),
    ),
    (
        "TxnModeWriteWithSharedBuffer",
        Some("experimental-txn-mode-write-with-shared-buffer"),
    ),
    (
        "StopGRPCServiceOnDefrag",
        Some("experimental-stop-grpc-service-on-defrag"),
    ),
    (
        "LeaseCheckpoint",
        Some("experimental-enable-lease-checkpoint"),
    ),
    (
        "LeaseCheckpointPersist",
        Some("experimental-enable-lease-checkpoint-persist"),
    ),
    (
        "SetMemberLocalAddr",
        Some("experimental-set-member-localaddr"),
    ),
    ("AllAlpha", None),
    ("AllBeta", None),
];

/// The flag named `name`.
pub fn find(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}
