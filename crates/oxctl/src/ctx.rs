//! What every command needs: the global flags turned into a connected client, the printer,
//! the command timeout, and etcdctl's error lines and exit codes.

use std::future::Future;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxcd_client::{parse_endpoint, Client, ClientTlsFiles, Endpoint, TlsMode};

use crate::cli::Global;
use crate::gofmt::parse_duration;
use crate::print::{Format, Printer};

/// etcdctl's exit codes.
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_BAD_CONNECTION: i32 = 2;
pub const EXIT_INVALID_INPUT: i32 = 3;
pub const EXIT_BAD_FEATURE: i32 = 4;
pub const EXIT_INTERRUPTED: i32 = 5;
pub const EXIT_IO: i32 = 6;
pub const EXIT_BAD_ARGS: i32 = 128;

/// An error that ends the command: printed as `Error: {msg}` and exits with `code`.
#[derive(Debug)]
pub struct CtlError {
    pub code: i32,
    pub msg: String,
}

impl CtlError {
    pub fn new(code: i32, msg: impl Into<String>) -> CtlError {
        CtlError {
            code,
            msg: msg.into(),
        }
    }
    pub fn args(msg: impl Into<String>) -> CtlError {
        CtlError::new(EXIT_BAD_ARGS, msg)
    }
}

pub type CtlResult<T = ()> = Result<T, CtlError>;

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
        let dur = |name: &str, v: &str| {
            parse_duration(v).ok_or_else(|| {
                CtlError::args(format!(
                    "invalid argument {v:?} for \"--{name}\" flag: time: invalid duration {}",
                    crate::gofmt::quote(v.as_bytes())
                ))
            })
        };
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
            zap_timestamp(),
            self.client_uuid,
            target,
            crate::gofmt::json_string(&grpc_error_text(s)).replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&"),
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
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

/// What etcd's Go client returns as the error text for a gRPC status: the server's own
/// message for etcd errors, grpc-go's `rpc error: ...` form for anything else.
pub fn status_message(s: &tonic::Status) -> String {
    if s.code() == tonic::Code::DeadlineExceeded && s.message() == "context deadline exceeded" {
        return s.message().to_string();
    }
    if s.message().starts_with("etcdserver: ") || s.message().starts_with("mvcc: ") {
        return s.message().to_string();
    }
    grpc_error_text(s)
}

pub fn grpc_error_text(s: &tonic::Status) -> String {
    format!(
        "rpc error: code = {} desc = {}",
        go_code(s.code()),
        s.message()
    )
}

fn go_code(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// zap's ISO 8601 time in UTC with milliseconds: `2026-11-27T20:57:10.671Z`.
pub fn zap_timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// capnslog's time: `2026-11-27 22:23:09.578817` (UTC here).
pub fn capnslog_timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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

/// Reads `--`-less flag values as etcdctl does for formats: only known names.
impl Format {
    pub fn parse(s: &str) -> CtlResult<Format> {
        match s {
            "simple" => Ok(Format::Simple),
            "json" => Ok(Format::Json),
            "fields" => Ok(Format::Fields),
            "protobuf" => Ok(Format::Protobuf),
            "table" => Ok(Format::Table),
            _ => Err(CtlError::new(EXIT_BAD_FEATURE, "unsupported output format")),
        }
    }
}
