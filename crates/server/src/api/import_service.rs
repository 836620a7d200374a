//! oxcd's Import service (`oxcdimportpb.Import`, not etcd's): the target side of `oxctl
//! migrate`. Begin, Apply and End are log entries (see [`crate::state::import`]), proposed
//! with this member's clock and answered once applied here; Status reads this member's
//! state. While auth is enabled, only root may call them.

use oxcd_api::oxcdimportpb as pb;
use oxcd_api::oxcdimportpb::import_server::Import;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response};

use crate::api::services::{GrpcResult, Services};
use crate::request::{ImportOp, ImportRequest, Op};
use crate::state::auth::Need;

impl Services {
    /// Proposes one import step as root and answers with the state after it.
    async fn import_step(
        &self,
        meta: &MetadataMap,
        op: ImportOp,
    ) -> GrpcResult<pb::ImportStatusResponse> {
        self.server.auth_check(meta, Need::Admin).await?;
        let req = ImportRequest {
            now_ms: crate::clock::now_ms(),
            op: Some(op),
        };
        self.write(Op::Import(req)).await?;
        Ok(Response::new(self.import_status()))
    }

    fn import_status(&self) -> pb::ImportStatusResponse {
        let state = self
            .server
            .tables
            .import
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        let store = &self.server.store;
        let revision = store.current_rev();
        pb::ImportStatusResponse {
            header: Some(self.server.header(revision)),
            importing: state.is_some(),
            source_cluster_id: state.as_ref().map_or(0, |s| s.source_cluster_id),
            source: state.as_ref().map(|s| s.source.clone()).unwrap_or_default(),
            revision,
            compact_revision: store.compact_rev(),
            snapshot_revision: state.as_ref().map_or(0, |s| s.snapshot_revision),
        }
    }
}

#[tonic::async_trait]
impl Import for Services {
    async fn begin(
        &self,
        req: Request<pb::ImportBeginRequest>,
    ) -> GrpcResult<pb::ImportStatusResponse> {
        let (meta, _, r) = req.into_parts();
        self.import_step(&meta, ImportOp::Begin(r)).await
    }

    async fn apply(
        &self,
        req: Request<pb::ImportApplyRequest>,
    ) -> GrpcResult<pb::ImportStatusResponse> {
        let (meta, _, r) = req.into_parts();
        self.import_step(&meta, ImportOp::Apply(r)).await
    }

    async fn status(
        &self,
        req: Request<pb::ImportStatusRequest>,
    ) -> GrpcResult<pb::ImportStatusResponse> {
        self.server.auth_check(req.metadata(), Need::Admin).await?;
        Ok(Response::new(self.import_status()))
    }

    async fn end(
        &self,
        req: Request<pb::ImportEndRequest>,
    ) -> GrpcResult<pb::ImportStatusResponse> {
        let (meta, _, r) = req.into_parts();
        self.import_step(&meta, ImportOp::End(r)).await
    }
}
