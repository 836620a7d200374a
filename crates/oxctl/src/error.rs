//! etcdctl's failures: the exit codes, the error that ends a command (printed as
//! `Error: …`), and the text etcd's Go client gives a gRPC status.

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
