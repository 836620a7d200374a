//! What every gRPC service of the API wing shares: [`Services`], the handle each service
//! implements its tonic trait on, and the helpers handlers use. Handlers are thin: check the
//! request, check permissions ([`crate::api::auth_check`]), delegate to the server facade
//! or the KV semantics, map errors once (`ServerError::status`).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Response, Status};

use crate::api::server::Server;
use crate::error::ServerError;
use crate::request::Op;
use crate::state::apply::Applied;

pub(crate) type GrpcResult<T> = Result<Response<T>, Status>;

/// A server-streaming response.
pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Clone)]
pub struct Services {
    pub server: Arc<Server>,
}

impl Services {
    /// Proposes a write and waits until it is applied here.
    pub(crate) async fn write(&self, op: Op) -> Result<(Applied, i64), Status> {
        Ok(self.server.propose(op).await?)
    }

    /// The answer when the log returns a result of the wrong kind (a bug).
    pub(crate) fn unexpected(&self) -> Status {
        ServerError::unexpected_apply().status()
    }
}
