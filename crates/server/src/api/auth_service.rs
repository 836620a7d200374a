//! The Auth gRPC service: users, roles, permissions, auth enable/disable, and Authenticate.
//! Changes are proposed through the log (passwords as bcrypt hashes made here, on the
//! proposing member); reads wait for a linearizable read point and read the local store.
//! Who may call what is decided by [`crate::api::server::Server::auth_check`].

use oxcd_api::etcdserverpb as pb;
use oxcd_api::etcdserverpb::auth_server::Auth;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::api::services::Services;
use crate::error::ServerError;
use crate::request::{AuthAssign, AuthOp, AuthRequest, Op};
use crate::state::apply::Applied;
use crate::state::auth::{token_prefix, Need};

type GrpcResult<T> = Result<Response<T>, Status>;

/// Authenticate starts again when the auth store changed while it checked the password
/// (etcd retries without limit; we give up after this many tries).
const AUTHENTICATE_TRIES_MAX: usize = 5;

impl Services {
    /// Checks that the caller is root (while auth is enabled), then proposes `op` and waits
    /// until it is applied here. Returns the result and the response header.
    async fn auth_change(
        &self,
        meta: &MetadataMap,
        op: AuthOp,
    ) -> Result<(Applied, Option<pb::ResponseHeader>), Status> {
        self.server.auth_check(meta, Need::Admin).await?;
        let op = Op::Auth(AuthRequest { op: Some(op) });
        let (applied, rev) = self.server.propose(op).await?;
        Ok((applied, Some(self.server.header(rev))))
    }

    /// Checks `need`, then waits for a linearizable read point. Returns the header.
    async fn auth_read(
        &self,
        meta: &MetadataMap,
        need: Need<'_>,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        self.server.auth_check(meta, need).await?;
        self.server.read_index().await?;
        Ok(Some(self.server.header(self.server.store.current_rev())))
    }

    /// One try at Authenticate: check the password, then have the log assign a token.
    /// Returns the token and whether the auth store is still at the revision checked.
    async fn authenticate_once(
        &self,
        name: &str,
        password: &str,
    ) -> Result<(String, bool), Status> {
        let (hash, checked) = self.server.lock_auth().password_hash(name)?;
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        if !matches!(ok, Ok(true)) {
            return Err(ServerError::AuthFailed.into());
        }
        let op = AuthOp::Authenticate(AuthAssign {
            name: name.to_string(),
            token_prefix: token_prefix(),
        });
        let op = Op::Auth(AuthRequest { op: Some(op) });
        match self.server.propose(op).await? {
            (Applied::Token(token), _) => {
                Ok((token, self.server.lock_auth().revision() == checked))
            }
            _ => Err(self.unexpected()),
        }
    }
}

/// The bcrypt hash of `password`, made off the async runtime (it takes tens of milliseconds).
/// `cost` is `--bcrypt-cost`.
async fn hash_password(password: String, cost: u32) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(|e| ServerError::Internal(format!("cannot hash the password: {e}")).into())
}

#[tonic::async_trait]
impl Auth for Services {
    async fn auth_enable(
        &self,
        r: Request<pb::AuthEnableRequest>,
    ) -> GrpcResult<pb::AuthEnableResponse> {
        let (meta, _, r) = r.into_parts();
        let (_, header) = self.auth_change(&meta, AuthOp::Enable(r)).await?;
        Ok(Response::new(pb::AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        r: Request<pb::AuthDisableRequest>,
    ) -> GrpcResult<pb::AuthDisableResponse> {
        let (meta, _, r) = r.into_parts();
        let (_, header) = self.auth_change(&meta, AuthOp::Disable(r)).await?;
        Ok(Response::new(pb::AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        r: Request<pb::AuthStatusRequest>,
    ) -> GrpcResult<pb::AuthStatusResponse> {
        let header = self.auth_read(r.metadata(), Need::Token).await?;
        let auth = self.server.lock_auth();
        Ok(Response::new(pb::AuthStatusResponse {
            header,
            enabled: auth.enabled(),
            auth_revision: auth.revision(),
        }))
    }

    async fn authenticate(
        &self,
        r: Request<pb::AuthenticateRequest>,
    ) -> GrpcResult<pb::AuthenticateResponse> {
        let r = r.into_inner();
        self.server.read_index().await?;
        for _ in 0..AUTHENTICATE_TRIES_MAX {
            let (token, current) = self.authenticate_once(&r.name, &r.password).await?;
            if current {
                return Ok(Response::new(pb::AuthenticateResponse {
                    header: Some(self.server.header(self.server.store.current_rev())),
                    token,
                }));
            }
        }
        Err(ServerError::AuthOldRevision.into())
    }

    async fn user_add(
        &self,
        r: Request<pb::AuthUserAddRequest>,
    ) -> GrpcResult<pb::AuthUserAddResponse> {
        let (meta, _, mut r) = r.into_parts();
        self.server.auth_check(&meta, Need::Admin).await?;
        if !r.options.as_ref().is_some_and(|o| o.no_password) {
            r.hashed_password = hash_password(
                std::mem::take(&mut r.password),
                self.server.cfg.auth.bcrypt_cost,
            )
            .await?;
        }
        r.password.clear();
        let (_, header) = self.auth_change(&meta, AuthOp::UserAdd(r)).await?;
        Ok(Response::new(pb::AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        r: Request<pb::AuthUserGetRequest>,
    ) -> GrpcResult<pb::AuthUserGetResponse> {
        let (meta, _, r) = r.into_parts();
        let header = self.auth_read(&meta, Need::UserGet(&r.name)).await?;
        let roles = self.server.lock_auth().user_roles(&r.name)?;
        Ok(Response::new(pb::AuthUserGetResponse { header, roles }))
    }

    async fn user_list(
        &self,
        r: Request<pb::AuthUserListRequest>,
    ) -> GrpcResult<pb::AuthUserListResponse> {
        let header = self.auth_read(r.metadata(), Need::Admin).await?;
        let users = self.server.lock_auth().user_names();
        Ok(Response::new(pb::AuthUserListResponse { header, users }))
    }

    async fn user_delete(
        &self,
        r: Request<pb::AuthUserDeleteRequest>,
    ) -> GrpcResult<pb::AuthUserDeleteResponse> {
        let (meta, _, r) = r.into_parts();
        let (_, header) = self.auth_change(&meta, AuthOp::UserDelete(r)).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        r: Request<pb::AuthUserChangePasswordRequest>,
    ) -> GrpcResult<pb::AuthUserChangePasswordResponse> {
        let (meta, _, mut r) = r.into_parts();
        self.server.auth_check(&meta, Need::Admin).await?;
        r.hashed_password = hash_password(
            std::mem::take(&mut r.password),
            self.server.cfg.auth.bcrypt_cost,
        )
        .await?;
        let (_, header) = self
            .auth_change(&meta, AuthOp::UserChangePassword(r))
            .await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        r: Request<pb::AuthUserGrantRoleRequest>,
    ) -> GrpcResult<pb::AuthUserGrantRoleResponse> {
        let (meta, _, r) = r.into_parts();
        let (_, header) = self.auth_change(&meta, AuthOp::UserGrantRole(r)).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        r: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> GrpcResult<pb::AuthUserRevokeRoleResponse> {
        let (meta, _, r) = r.into_parts();
        let (_, header) = self.auth_change(&meta, AuthOp::UserRevokeRole(r)).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        r: Request<pb::AuthRoleAddRequest>,
    ) -> GrpcResult<pb::AuthRoleAddResponse> {
        let (meta, _, r) = r.into_parts();
        let (_, header) = self.auth_change(&meta, AuthOp::RoleAdd(r)).await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        r: Request<pb::AuthRoleGetRequest>,
    ) -> GrpcResult<pb::AuthRoleGetResponse> {
        let (meta, _, r) = r.into_parts();
        let header = self.auth_read(&meta, Need::RoleGet(&r.role)).await?;
        let perm = self.server.lock_auth().role_permissions(&r.role)?;
        Ok(Response::new(pb::AuthRoleGetResponse { header, perm }))
    }

    async fn role_list(
        &self,
        r: Request<pb::AuthRoleListRequest>,
    ) -> GrpcResult<pb::AuthRoleListResponse> {
        let header = self.auth_read(r.metadata(), Need::Admin).await?;
        let roles = self.server.lock_auth().role_names();
        Ok(Response::new(pb::AuthRoleListResponse { header, roles }))
    }

    async fn role_delete(
        &self,
        r: Request<pb::AuthRoleDeleteRequest>,
    ) -> GrpcResult<pb::AuthRoleDeleteResponse> {
        let (meta, _, r) = r.into_parts();
        let (_, header) = self.auth_change(&meta, AuthOp::RoleDelete(r)).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        r: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> GrpcResult<pb::AuthRoleGrantPermissionResponse> {
        let (meta, _, r) = r.into_parts();
        let (_, header) = self
            .auth_change(&meta, AuthOp::RoleGrantPermission(r))
            .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header,
        }))
    }

    async fn role_revoke_permission(
        &self,
        r: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> GrpcResult<pb::AuthRoleRevokePermissionResponse> {
        let (meta, _, r) = r.into_parts();
        let (_, header) = self
            .auth_change(&meta, AuthOp::RoleRevokePermission(r))
            .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header,
        }))
    }
}
