//! Dialing: one tonic channel per endpoint, over plain TCP or rustls.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};

use crate::{ClientError, Endpoint, Scheme};

/// HTTP/2 ping interval and how long to wait for the answer.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(6);

/// Whether endpoints without a scheme use TLS, and with which configuration.
#[derive(Clone)]
pub enum TlsMode {
    /// No TLS flags: `host:port` is plain, `https://` uses TLS with an empty root store.
    Plain,
    /// TLS flags were given (or `--insecure-transport=false`): `host:port` uses this config too.
    Tls(Arc<rustls::ClientConfig>),
}

/// Dials one endpoint, waiting at most `dial_timeout` for TCP and the TLS handshake.
pub async fn connect(
    ep: &Endpoint,
    tls: &TlsMode,
    dial_timeout: Duration,
) -> Result<Channel, ClientError> {
    let use_tls = match (ep.scheme, tls) {
        (Scheme::Http, _) => None,
        (Scheme::Https, TlsMode::Tls(cfg)) | (Scheme::Unspecified, TlsMode::Tls(cfg)) => {
            Some(cfg.clone())
        }
        (Scheme::Https, TlsMode::Plain) => Some(oxcd_tls::client_config(
            &oxcd_tls::ClientTlsFiles::default(),
        )?),
        (Scheme::Unspecified, TlsMode::Plain) => None,
    };
    let scheme = if use_tls.is_some() { "https" } else { "http" };
    let uri = format!("{scheme}://{}", ep.authority());
    let tonic_ep = TonicEndpoint::from_shared(uri.clone())
        .map_err(|e| connect_err(ep, e.to_string()))?
        .connect_timeout(dial_timeout)
        .tcp_nodelay(true)
        // etcd refuses pings more often than every 5s (GOAWAY too_many_pings), and grpc-go
        // clients never ping more often than every 10s; do the same.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let host = ep.host.clone();
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = use_tls.clone();
        let host = host.clone();
        async move { dial(uri, host, tls).await }
    });
    let fut = tonic_ep.connect_with_connector(connector);
    match tokio::time::timeout(dial_timeout, fut).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(connect_err(ep, source_chain(&e))),
        Err(_) => Err(ClientError::DeadlineExceeded),
    }
}

/// Dials the endpoints in order and returns the first that answers.
pub async fn connect_any(
    eps: &[Endpoint],
    tls: &TlsMode,
    dial_timeout: Duration,
) -> Result<(Channel, Endpoint), ClientError> {
    let mut last = ClientError::DeadlineExceeded;
    for ep in eps {
        match connect(ep, tls, dial_timeout).await {
            Ok(ch) => return Ok((ch, ep.clone())),
            Err(e) => last = e,
        }
    }
    Err(last)
}

type Io = Box<dyn IoStream>;
trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

async fn dial(
    uri: Uri,
    host: String,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<TokioIo<Io>, std::io::Error> {
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| std::io::Error::other("endpoint has no host"))?;
    let tcp = TcpStream::connect(authority.as_str()).await?;
    tcp.set_nodelay(true)?;
    let Some(cfg) = tls else {
        return Ok(TokioIo::new(Box::new(tcp)));
    };
    let name = oxcd_tls::server_name(&host)
        .ok_or_else(|| std::io::Error::other(format!("invalid server name {host}")))?;
    let stream = oxcd_tls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| std::io::Error::other(oxcd_tls::explain(&e)))?;
    Ok(TokioIo::new(Box::new(stream)))
}

fn connect_err(ep: &Endpoint, reason: String) -> ClientError {
    ClientError::Connect {
        endpoint: ep.original.clone(),
        reason,
    }
}

/// The innermost error message, which is the one that says what happened.
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg = s.to_string();
        cur = s.source();
    }
    msg
}
