//! Server errors. Messages are etcd's own strings (clients match on them); [`ServerError::status`]
//! is the one place that maps them to gRPC status codes.

use oxcd_storage::MvccError;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ServerError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// oxcd's own limit (`state::kv::TXN_DEPTH_MAX`); etcd has none.
    #[error("etcdserver: txn request nested too deep")]
    TxnTooDeep,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// oxcd's own: a client write while `oxctl migrate` imports into this cluster.
    #[error("oxcd: the cluster is in import mode (oxctl migrate is copying etcd's history into it): no client writes until the migration's cut-over (oxctl migrate run --cut-over) or abort (oxctl migrate abort)")]
    ImportMode,
    /// oxcd's own: an import step the cluster cannot take (see `state::import`).
    #[error("oxcd: import: {0}")]
    Import(String),
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// oxcd's own bound (`state::lease::LEASES_MAX`); etcd has none.
    #[error("etcdserver: too many leases; revoke some first")]
    TooManyLeases,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// grpc-go's error for a response over the server's send limit (etcd's is 2 GiB - 1):
    /// oxcd's comes before the response is read whole (`--max-response-bytes`), `bytes`
    /// being how far it got.
    #[error("grpc: trying to send message larger than max ({bytes} vs. {max})")]
    ResponseTooLarge { bytes: usize, max: usize },
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: not capable")]
    NotCapable,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// An auth store error that etcd 3.4 passes on untranslated (the maintenance calls, a
    /// password given for a no-password user): clients see `code = Unknown desc = auth: ...`.
    #[error("auth: {0}")]
    AuthUntranslated(&'static str),
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl From<MvccError> for ServerError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Compacted => ServerError::Compacted,
            MvccError::FutureRev => ServerError::FutureRev,
            MvccError::ResponseTooLarge { bytes, max } => {
                ServerError::ResponseTooLarge { bytes, max }
            }
            other => ServerError::Internal(other.to_string()),
        }
    }
}

impl ServerError {
    /// An apply result of the wrong kind for the request: a bug, reported as Unknown.
    pub fn unexpected_apply() -> ServerError {
        ServerError::Internal("unexpected apply result".into())
    }

    /// The gRPC status etcd returns for this error.
    pub fn status(&self) -> tonic::Status {
        use tonic::Code;
        use ServerError as E;
        let code = match self {
            E::EmptyKey
            | E::KeyNotFound
            | E::ValueProvided
            | E::LeaseProvided
            | E::TooManyOps
            | E::DuplicateKey
            | E::TxnTooDeep
            | E::RequestTooLarge
            | E::MemberBadUrls
            | E::UserEmpty
            | E::RoleEmpty
            | E::AuthFailed
            | E::InvalidAuthMgmt
            | E::AuthOldRevision => Code::InvalidArgument,
            E::Compacted | E::FutureRev | E::LeaseTtlTooLarge => Code::OutOfRange,
            E::NoSpace | E::TooManyRequests | E::TooManyLeases | E::ResponseTooLarge { .. } => {
                Code::ResourceExhausted
            }
            E::LeaseNotFound | E::MemberNotFound => Code::NotFound,
            E::LeaseExist
            | E::AuthNotEnabled
            | E::PeerUrlExist
            | E::MemberNotLearner
            | E::LearnerNotReady
            | E::TooManyLearners
            | E::NotEnoughStartedMembers
            | E::RootUserNotExist
            | E::RootRoleNotExist
            | E::UserAlreadyExist
            | E::UserNotFound
            | E::RoleAlreadyExist
            | E::RoleNotFound
            | E::RoleNotGranted
            | E::PermissionNotGranted
            | E::ImportMode
            | E::Import(_) => Code::FailedPrecondition,
            E::PermissionDenied => Code::PermissionDenied,
            E::InvalidAuthToken => Code::Unauthenticated,
            E::NoLeader
            | E::LeaderChanged
            | E::Stopped
            | E::Timeout
            | E::NotCapable
            | E::Unhealthy
            | E::NotSupportedForLearner
            | E::Corrupt => Code::Unavailable,
            E::Internal(_) | E::AuthUntranslated(_) => Code::Unknown,
        };
        tonic::Status::new(code, self.to_string())
    }

    /// The error as grpc-go prints a status (`rpc error: code = X desc = message`): the
    /// form etcd puts in a watch's cancel reason.
    pub fn status_string(&self) -> String {
        let s = self.status();
        format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
    }
}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        e.status()
    }
}
