//! The one permission check handlers call first: who sent the request (the token in its
//! metadata) and whether the auth store lets that user do what the request needs.

use std::time::{Duration, Instant};

use crate::api::server::Server;
use crate::error::ServerError;
use crate::state::auth::{AuthStore, Need};

/// How often a request whose token names a log index not applied here yet looks again.
const TOKEN_INDEX_POLL: Duration = Duration::from_millis(5);

/// The token a gRPC caller sent (etcd reads `token`, then `authorization`).
pub fn token_of(meta: &tonic::metadata::MetadataMap) -> Option<&str> {
    meta.get("token")
        .or_else(|| meta.get("authorization"))
        .and_then(|v| v.to_str().ok())
}

/// The user a TLS client's verified certificate names (its CN), as the listener recorded it
/// ([`crate::api::http::CLIENT_CN_HEADER`]; a client cannot set it).
pub fn cert_user_of(meta: &tonic::metadata::MetadataMap) -> Option<&str> {
    meta.get(crate::api::http::CLIENT_CN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|cn| !cn.is_empty())
}

/// etcd's maintenance server returns the auth store's own errors, untranslated.
fn untranslated(e: ServerError) -> ServerError {
    match e {
        ServerError::UserEmpty => ServerError::AuthUntranslated("user name is empty"),
        ServerError::UserNotFound => ServerError::AuthUntranslated("user not found"),
        ServerError::PermissionDenied => ServerError::AuthUntranslated("permission denied"),
        ServerError::InvalidAuthToken => ServerError::AuthUntranslated("invalid auth token"),
        other => other,
    }
}

impl Server {
    /// Checks that the caller (the token in the request's metadata, else, as etcd, the CN
    /// of its client certificate) may make a request that needs `need`. Passes everything
    /// while auth is disabled.
    pub async fn auth_check(
        &self,
        meta: &tonic::metadata::MetadataMap,
        need: Need<'_>,
    ) -> Result<(), ServerError> {
        match (token_of(meta), cert_user_of(meta)) {
            (None, Some(cn)) => self.auth_check_user(cn, need),
            (token, _) => self.auth_check_token(token, need).await,
        }
    }

    /// [`Server::auth_check`] for a user named by its client certificate.
    fn auth_check_user(&self, user: &str, need: Need<'_>) -> Result<(), ServerError> {
        if !self.lock_auth().enabled() {
            return Ok(());
        }
        let lease_keys = self.need_lease_keys(&need);
        let res = self.lock_auth().allows(Some(user), &need, &lease_keys);
        match need {
            Need::Maintenance => res.map_err(untranslated),
            _ => res,
        }
    }

    fn need_lease_keys(&self, need: &Need<'_>) -> Vec<Vec<u8>> {
        match need {
            Need::Put(p) if p.lease != 0 => self.lease_keys(p.lease),
            Need::LeaseRevoke(id) | Need::LeaseTimeToLive(id) => self.lease_keys(*id),
            _ => Vec::new(),
        }
    }

    /// [`Server::auth_check`] for a token already taken from the metadata (watch streams).
    pub async fn auth_check_token(
        &self,
        token: Option<&str>,
        need: Need<'_>,
    ) -> Result<(), ServerError> {
        if !self.lock_auth().enabled() {
            return Ok(());
        }
        if let Some(t) = token {
            self.wait_token_applied(t).await;
        }
        let lease_keys = self.need_lease_keys(&need);
        let mut auth = self.lock_auth();
        let res = match token {
            Some(t) => auth
                .user_of_token_within(t, Instant::now(), self.cfg.auth.token_ttl)
                .map(Some),
            None => Ok(None),
        }
        .and_then(|user| auth.allows(user.as_deref(), &need, &lease_keys));
        match need {
            Need::Maintenance => res.map_err(untranslated),
            _ => res,
        }
    }

    /// As etcd: a token names the log index that assigned it; this member may not have
    /// applied that entry yet (the client authenticated through another member), so wait
    /// for it, at most a request timeout. A token that is still unknown then is invalid.
    async fn wait_token_applied(&self, token: &str) {
        let Some(index) = token
            .rsplit_once('.')
            .and_then(|(_, i)| i.parse::<u64>().ok())
        else {
            return;
        };
        let deadline = Instant::now() + self.request_timeout;
        while self
            .status
            .applied
            .load(std::sync::atomic::Ordering::Relaxed)
            < index
            && Instant::now() < deadline
        {
            tokio::time::sleep(TOKEN_INDEX_POLL).await;
        }
    }

    pub fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthStore> {
        self.tables.auth.lock().expect("auth store lock poisoned")
    }

    fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        let leases = self
            .tables
            .leases
            .lock()
            .expect("lease table lock poisoned");
        leases
            .leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}
