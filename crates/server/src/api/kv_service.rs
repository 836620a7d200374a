//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use oxcd_api::etcdserverpb as pb;
use oxcd_api::etcdserverpb::kv_server::Kv;
use tonic::{Request, Response};

use crate::api::services::{GrpcResult, Services};
use crate::error::ServerError;
use crate::request::Op;
use crate::state::apply::Applied;
use crate::state::auth::Need;
use crate::state::kv;

#[tonic::async_trait]
impl Kv for Services {
    async fn range(&self, req: Request<pb::RangeRequest>) -> GrpcResult<pb::RangeResponse> {
        let (meta, _, r) = req.into_parts();
        kv::check_range(&r)?;
        if !r.serializable && self.server.is_learner() {
            return Err(ServerError::NotSupportedForLearner.into());
        }
        self.server.auth_check(&meta, Need::Range(&r)).await?;
        if !r.serializable {
            self.server.read_index().await?;
        }
        let mut resp = self.read(|view| kv::range(view, &r))?;
        resp.header = Some(
            self.server
                .header(resp.header.map(|h| h.revision).unwrap_or(0)),
        );
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> GrpcResult<pb::PutResponse> {
        let (meta, _, r) = req.into_parts();
        kv::check_put(&r)?;
        self.server.auth_check(&meta, Need::Put(&r)).await?;
        match self.write(Op::Put(r)).await? {
            (Applied::Put(mut resp), rev) => {
                resp.header = Some(self.server.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> GrpcResult<pb::DeleteRangeResponse> {
        let (meta, _, r) = req.into_parts();
        kv::check_delete(&r)?;
        self.server.auth_check(&meta, Need::Delete(&r)).await?;
        match self.write(Op::DeleteRange(r)).await? {
            (Applied::Delete(mut resp), rev) => {
                resp.header = Some(self.server.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> GrpcResult<pb::TxnResponse> {
        let (meta, _, r) = req.into_parts();
        kv::check_txn(&r, self.server.cfg.txn_ops_max)?;
        self.server.auth_check(&meta, Need::Txn(&r)).await?;
        if kv::txn_is_read_only(&r) {
            if !kv::txn_is_serializable(&r) {
                self.server.read_index().await?;
            }
            let (mut resp, rev) = self.read(|view| Ok((kv::txn_read(view, &r)?, view.rev())))?;
            resp.header = Some(self.server.header(rev));
            return Ok(Response::new(resp));
        }
        match self.write(Op::Txn(r)).await? {
            (Applied::Txn(mut resp), rev) => {
                resp.header = Some(self.server.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> GrpcResult<pb::CompactionResponse> {
        self.server.auth_check(req.metadata(), Need::Token).await?;
        let r = req.into_inner();
        match self.write(Op::Compaction(r)).await? {
            (Applied::Compaction(mut resp), rev) => {
                resp.header = Some(self.server.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(self.unexpected()),
        }
    }
}

impl Services {
    /// Runs a read against one revision of the store ([`kv::BoundedReads`]). A compaction
    /// past that revision while it reads (it asked for no revision of its own, so the error
    /// would be wrong) makes it start again at the new current revision, a few times at most.
    fn read<T>(
        &self,
        f: impl Fn(&kv::BoundedReads<'_>) -> Result<T, ServerError>,
    ) -> Result<T, ServerError> {
        let mut tries = 0;
        loop {
            let view =
                kv::BoundedReads::new(&self.server.store, self.server.cfg.response_bytes_max);
            match f(&view) {
                Err(ServerError::Compacted)
                    if tries < READ_RETRIES_MAX && view.rev() < self.server.store.compact_rev() =>
                {
                    tries += 1;
                }
                other => return other,
            }
        }
    }
}

/// Times a read that a compaction overtook starts again, at most.
const READ_RETRIES_MAX: usize = 3;
