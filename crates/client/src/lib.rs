//! Client library for any etcd v3 endpoint (etcd itself or oxcd): parses endpoints as etcdctl
//! does, dials plain or TLS gRPC channels, and attaches the auth token to every request.
//!
//! Architecture invariant: this crate depends on the API and TLS crates only, never on the
//! server or storage crates.

mod channel;
mod endpoint;

use std::time::Duration;

use oxcd_api::etcdserverpb::auth_client::AuthClient;
use oxcd_api::etcdserverpb::cluster_client::ClusterClient;
use oxcd_api::etcdserverpb::kv_client::KvClient;
use oxcd_api::etcdserverpb::lease_client::LeaseClient;
use oxcd_api::etcdserverpb::maintenance_client::MaintenanceClient;
use oxcd_api::etcdserverpb::watch_client::WatchClient;
use oxcd_api::etcdserverpb::AuthenticateRequest;
use oxcd_api::oxcdimportpb::import_client::ImportClient;
use oxcd_api::v3electionpb::election_client::ElectionClient;
use oxcd_api::v3lockpb::lock_client::LockClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use channel::{connect, connect_any, TlsMode};
pub use endpoint::{parse_endpoint, Endpoint, Scheme};
pub use oxcd_tls::{client_config as tls_config, ClientTlsFiles};

/// Largest gRPC message a client accepts (etcd's client default is math.MaxInt32).
pub const RECV_MESSAGE_BYTES_MAX: usize = 2 * 1024 * 1024 * 1024 - 1;

/// What went wrong while dialing or authenticating.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("{0}")]
    Tls(#[from] oxcd_tls::TlsError),
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
}

/// Adds the auth token (etcd's `token` metadata) to every request when there is one.
#[derive(Clone, Default)]
pub struct Token(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("token", token.clone());
        }
        Ok(req)
    }
}

/// The service stack every typed client runs on.
pub type Svc = InterceptedService<Channel, Token>;

/// A connection to one endpoint plus the auth token, handing out typed clients.
#[derive(Clone)]
pub struct Client {
    pub channel: Channel,
    pub endpoint: Endpoint,
    token: Token,
}

impl Client {
    pub fn new(channel: Channel, endpoint: Endpoint) -> Client {
        Client {
            channel,
            endpoint,
            token: Token::default(),
        }
    }

    /// Logs in with a user name and password and keeps the token for later requests.
    pub async fn authenticate(&mut self, name: &str, password: &str) -> Result<(), ClientError> {
        let req = AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        };
        let resp = AuthClient::new(self.channel.clone())
            .authenticate(req)
            .await?
            .into_inner();
        let value: AsciiMetadataValue = MetadataValue::try_from(resp.token.as_str())
            .map_err(|_| tonic::Status::internal("server returned a token that is not ASCII"))?;
        self.token = Token(Some(value));
        Ok(())
    }

    fn svc(&self) -> Svc {
        InterceptedService::new(self.channel.clone(), self.token.clone())
    }

    pub fn kv(&self) -> KvClient<Svc> {
        KvClient::new(self.svc()).max_decoding_message_size(RECV_MESSAGE_BYTES_MAX)
    }
    pub fn watch(&self) -> WatchClient<Svc> {
        WatchClient::new(self.svc()).max_decoding_message_size(RECV_MESSAGE_BYTES_MAX)
    }
    pub fn lease(&self) -> LeaseClient<Svc> {
        LeaseClient::new(self.svc())
    }
    pub fn cluster(&self) -> ClusterClient<Svc> {
        ClusterClient::new(self.svc())
    }
    pub fn maintenance(&self) -> MaintenanceClient<Svc> {
        MaintenanceClient::new(self.svc()).max_decoding_message_size(RECV_MESSAGE_BYTES_MAX)
    }
    pub fn auth(&self) -> AuthClient<Svc> {
        AuthClient::new(self.svc())
    }
    pub fn lock(&self) -> LockClient<Svc> {
        LockClient::new(self.svc())
    }
    pub fn election(&self) -> ElectionClient<Svc> {
        ElectionClient::new(self.svc())
    }
    /// oxcd's Import service (`oxctl migrate`).
    pub fn import(&self) -> ImportClient<Svc> {
        ImportClient::new(self.svc()).max_decoding_message_size(RECV_MESSAGE_BYTES_MAX)
    }
}

/// Default dial timeout, as etcdctl's `--dial-timeout`.
pub const DIAL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
