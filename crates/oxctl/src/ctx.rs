//! What every command needs: the global flags (and their `ETCDCTL_*` variables) turned into
//! a connected client, the printer and the command timeout; calls under that timeout, and
//! the warning lines etcd's client logs when they fail.

use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use clap::Args;
use oxcd_client::{parse_endpoint, Client, ClientTlsFiles, Endpoint, TlsMode};
use oxcd_gocompat::{duration, quote, timestamp};
use time::OffsetDateTime;

use crate::error::{
    grpc_error_text, status_message, CtlError, CtlResult, EXIT_BAD_CONNECTION, EXIT_ERROR,
};
use crate::print::{Format, Printer};

/// Flags every command takes. Boolean flags accept `--flag`, `--flag=true` and `--flag=false`
/// as Go's pflag does.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// gRPC endpoints
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    pub cacert: Option<String>,
    /// identify secure client using this TLS certificate file
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    pub cert: Option<String>,
    /// identify secure client using this TLS key file
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    pub key: Option<String>,
    /// username[:password] for authentication (prompt if password is not supplied)
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    pub user: Option<String>,
    /// password for authentication (if this option is used, --user option shouldn't include password)
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD")]
    pub password: Option<String>,
    /// dial timeout for client connections
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_DIAL_TIMEOUT",
        default_value = "2s"
    )]
    pub dial_timeout: String,
    /// timeout for short running command (excluding dial timeout)
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_COMMAND_TIMEOUT",
        default_value = "5s"
    )]
    pub command_timeout: String,
    /// keepalive time for client connections
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_KEEPALIVE_TIME",
        default_value = "2s"
    )]
    pub keepalive_time: String,
    /// keepalive timeout for client connections
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_KEEPALIVE_TIMEOUT",
        default_value = "6s"
    )]
    pub keepalive_timeout: String,
    /// set the output format (fields, json, protobuf, simple, table)
    #[arg(
        short = 'w',
        long,
        global = true,
        env = "ETCDCTL_WRITE_OUT",
        default_value = "simple"
    )]
    pub write_out: String,
    /// print byte strings as hex encoded strings
    #[arg(long, global = true, env = "ETCDCTL_HEX", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub hex: bool,
    /// disable transport security for client connections
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_TRANSPORT", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = true)]
    pub insecure_transport: bool,
    /// skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub insecure_skip_tls_verify: bool,
    /// enable client-side debug logging
    #[arg(long, global = true, env = "ETCDCTL_DEBUG", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub debug: bool,
    /// domain name to query for SRV records describing cluster endpoints (not supported yet)
    #[arg(short = 'd', long, global = true, env = "ETCDCTL_DISCOVERY_SRV")]
    pub discovery_srv: Option<String>,
    /// service name to query when using DNS discovery
    #[arg(long, global = true, env = "ETCDCTL_DISCOVERY_SRV_NAME")]
    pub discovery_srv_name: Option<String>,
    /// accept insecure SRV records describing cluster endpoints
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_DISCOVERY", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = true)]
    pub insecure_discovery: bool,
}

/// Settings taken from the global flags, and the client once it is connected.
pub struct Ctx {
    pub endpoints: Vec<Endpoint>,
    pub tls: TlsMode,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
    pub user: Option<(String, String)>,
    pub printer: Printer,
    /// The id etcd's client puts in its log lines (`endpoint://client-<uuid>/...`).
    pub client_uuid: String,
}

impl Ctx {
    pub fn from_flags(g: &Global) -> CtlResult<Ctx> {
        let format = Format::parse(&g.write_out)?;
        let endpoints = g
            .endpoints
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
            .map(|s| parse_endpoint(s.trim()).map_err(|e| CtlError::new(EXIT_ERROR, e.to_string())))
            .collect::<CtlResult<Vec<_>>>()?;
        let dur = |name: &str, v: &str| go_duration_flag(name, v);
        Ok(Ctx {
            endpoints,
            tls: tls_mode(g)?,
            dial_timeout: dur("dial-timeout", &g.dial_timeout)?,
            command_timeout: dur("command-timeout", &g.command_timeout)?,
            user: user_and_password(g)?,
            printer: Printer::new(format, g.hex),
            client_uuid: uuid_v4(),
        })
    }

    /// The same settings for another set of endpoints.
    pub fn clone_settings(&self) -> Ctx {
        Ctx {
            endpoints: self.endpoints.clone(),
            tls: self.tls.clone(),
            dial_timeout: self.dial_timeout,
            command_timeout: self.command_timeout,
            user: self.user.clone(),
            printer: Printer::new(self.printer.format, self.printer.hex),
            client_uuid: uuid_v4(),
        }
    }

    /// Connects to the first endpoint that answers before the command timeout, and logs in.
    /// With `--user`, etcd's client dials and authenticates before the command starts, within
    /// the dial timeout, and a failure there is a bad connection (exit 2).
    pub async fn client(&self) -> CtlResult<Client> {
        let (limit, code) = match self.user {
            Some(_) => (self.dial_timeout, EXIT_BAD_CONNECTION),
            None => (self.command_timeout, EXIT_ERROR),
        };
        let deadline = tokio::time::Instant::now() + limit;
        let mut pause = Duration::from_millis(50);
        loop {
            let dial = self
                .dial_timeout
                .min(deadline - tokio::time::Instant::now());
            if let Ok((channel, ep)) =
                oxcd_client::connect_any(&self.endpoints, &self.tls, dial).await
            {
                let mut client = Client::new(channel, ep);
                if let Some((name, password)) = &self.user {
                    let auth = self
                        .unary(client.authenticate(name, password), |e| match e {
                            oxcd_client::ClientError::Status(s) => s,
                            other => tonic::Status::unavailable(other.to_string()),
                        })
                        .await;
                    match auth {
                        Ok(()) => {}
                        // etcd's client logs the failure and goes on without a token.
                        Err(e) if e.msg == "etcdserver: authentication is not enabled" => {}
                        Err(e) => return Err(CtlError::new(EXIT_BAD_CONNECTION, e.msg)),
                    }
                }
                return Ok(client);
            }
            if tokio::time::Instant::now() + pause >= deadline {
                tokio::time::sleep_until(deadline).await;
                let status = tonic::Status::deadline_exceeded(BALANCER_ERROR);
                self.warn_unary(&status);
                return Err(CtlError::new(code, "context deadline exceeded"));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Runs one unary call under the command timeout; a failure becomes etcdctl's error line.
    pub async fn call<T, F>(&self, fut: F) -> CtlResult<T>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.unary(async { fut.await.map(|r| r.into_inner()) }, |s| s)
            .await
    }

    /// Like [`Ctx::call`] with its own timeout instead of `--command-timeout`.
    pub async fn call_within<T, F>(&self, timeout: Duration, fut: F) -> CtlResult<T>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let ctx = Ctx {
            command_timeout: timeout,
            ..self.clone_settings()
        };
        ctx.call(fut).await
    }

    async fn unary<T, E, F>(&self, fut: F, status: impl Fn(E) -> tonic::Status) -> CtlResult<T>
    where
        F: Future<Output = Result<T, E>>,
    {
        let deadline = tokio::time::Instant::now() + self.command_timeout;
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let s = status(e);
                if is_connection_failure(&s) {
                    // grpc-go keeps retrying a broken connection until the deadline.
                    tokio::time::sleep_until(deadline).await;
                    let s = tonic::Status::deadline_exceeded(BALANCER_ERROR);
                    self.warn_unary(&s);
                    return Err(CtlError::new(EXIT_ERROR, "context deadline exceeded"));
                }
                self.warn_unary(&s);
                Err(CtlError::new(EXIT_ERROR, status_message(&s)))
            }
            Err(_) => {
                let s = tonic::Status::deadline_exceeded("context deadline exceeded");
                self.warn_unary(&s);
                Err(CtlError::new(EXIT_ERROR, "context deadline exceeded"))
            }
        }
    }

    /// The warning etcd's client logs to stderr when a unary call fails.
    pub fn warn_unary(&self, s: &tonic::Status) {
        let target = self
            .endpoints
            .first()
            .map(|e| e.authority())
            .unwrap_or_default();
        let line = format!(
            "{{\"level\":\"warn\",\"ts\":\"{}\",\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":\"endpoint://client-{}/{}\",\"attempt\":0,\"error\":{}}}\n",
            timestamp::zap_iso8601(OffsetDateTime::now_utc()),
            self.client_uuid,
            target,
            quote::zap_json_string(&grpc_error_text(s)),
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// A duration flag as pflag reads it (Go's `time.ParseDuration`), with pflag's error line.
/// A negative duration is an expired timeout, as in Go.
pub fn go_duration_flag(name: &str, value: &str) -> CtlResult<Duration> {
    let nanos = duration::parse_nanos(value).map_err(|e| {
        CtlError::args(format!(
            "invalid argument {} for \"--{name}\" flag: {e}",
            quote::quote_str(value)
        ))
    })?;
    Ok(Duration::from_nanos(nanos.max(0).unsigned_abs()))
}

fn tls_mode(g: &Global) -> CtlResult<TlsMode> {
    let given = g.cacert.is_some() || g.cert.is_some() || g.key.is_some();
    if !given && g.insecure_transport {
        return Ok(TlsMode::Plain);
    }
    let files = ClientTlsFiles {
        cert_file: g.cert.clone().map(Into::into),
        key_file: g.key.clone().map(Into::into),
        trusted_ca_file: g.cacert.clone().map(Into::into),
        skip_verify: g.insecure_skip_tls_verify,
    };
    let cfg = oxcd_client::tls_config(&files)
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, e.to_string()))?;
    Ok(TlsMode::Tls(cfg))
}

fn user_and_password(g: &Global) -> CtlResult<Option<(String, String)>> {
    let Some(user) = g.user.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if let Some(password) = g.password.as_deref().filter(|p| !p.is_empty()) {
        if user.contains(':') {
            return Err(CtlError::args(
                "bad user and password format: password should be specified via --password",
            ));
        }
        return Ok(Some((user.to_string(), password.to_string())));
    }
    match user.split_once(':') {
        Some((name, password)) => Ok(Some((name.to_string(), password.to_string()))),
        None => {
            let password = read_password()?;
            Ok(Some((user.to_string(), password)))
        }
    }
}

/// Asks for the password as etcdctl does (its `speakeasy` package): the prompt on stdout,
/// terminal echo off through `stty` on stdin while the line is read, then a newline.
fn read_password() -> CtlResult<String> {
    use std::io::Write as _;
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status();
    };
    print!("Password: ");
    let _ = std::io::stdout().flush();
    stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    stty("echo");
    println!();
    read.map_err(|e| CtlError::args(format!("bad password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// What grpc-go reports when no connection to the endpoint could be made in time.
const BALANCER_ERROR: &str = "latest balancer error: all SubConns are in TransientFailure";

/// A status that comes from the connection breaking, not from the server answering.
fn is_connection_failure(s: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) && !s.message().starts_with("etcdserver:")
}

fn uuid_v4() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        (b[8] & 0x3) | 0x8,
        &h[17..20],
        &h[20..32]
    )
}
