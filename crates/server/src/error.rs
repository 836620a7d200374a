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
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
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
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl From<MvccError> for ServerError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Compacted => ServerError::Compacted,
            MvccError::FutureRev => ServerError::FutureRev,
            other => ServerError::Internal(other.to_string()),
        }
    }
}

impl ServerError {
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
            | E::RequestTooLarge
            | E::MemberBadUrls => Code::InvalidArgument,
            E::Compacted | E::FutureRev | E::LeaseTtlTooLarge => Code::OutOfRange,
            E::NoSpace | E::TooManyRequests => Code::ResourceExhausted,
            E::LeaseNotFound | E::MemberNotFound => Code::NotFound,
            E::LeaseExist | E::AuthNotEnabled | E::PeerUrlExist | E::MemberNotLearner => {
                Code::FailedPrecondition
            }
            E::NoLeader | E::LeaderChanged | E::Stopped | E::Timeout | E::NotCapable => {
                Code::Unavailable
            }
            E::Internal(_) => Code::Unknown,
        };
        tonic::Status::new(code, self.to_string())
    }
}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        e.status()
    }
}
