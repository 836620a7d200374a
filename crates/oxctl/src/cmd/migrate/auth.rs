//! Auth changes made on etcd after the snapshot copy: etcd's watch stream carries keys and
//! nothing of users, roles or the enabled flag, so the follower cannot mirror them. The
//! cut-over compares both sides' auth and refuses when they differ, naming the remedy
//! (`--copy-auth`: the auth store copied again from a new snapshot).
//!
//! Compared: every user with its roles, every role with its permissions (on any etcd), and,
//! where etcd has `AuthStatus` (3.5+), the enabled flag and the auth revision, which every
//! change bumps (a password change included). etcd 3.4 has no `AuthStatus`: a password
//! changed there after the copy cannot be seen; `--copy-auth` carries it over anyway.

use std::collections::BTreeMap;

use oxcd_api::etcdserverpb as pb;
use oxcd_client::Client;

use super::{ctl_err, Migrator};
use crate::ctx::Ctx;
use crate::error::CtlResult;

/// One side's auth as its API shows it.
#[derive(Debug, PartialEq, Eq)]
struct AuthView {
    /// Enabled flag and auth revision, where the server answers `AuthStatus`.
    status: Option<(bool, u64)>,
    /// User → its roles, sorted.
    users: BTreeMap<String, Vec<String>>,
    /// Role → its permissions (`TYPE key..range_end`), sorted.
    roles: BTreeMap<String, Vec<String>>,
}

async fn auth_view(ctx: &Ctx, c: &Client) -> CtlResult<AuthView> {
    let mut auth = c.auth();
    let call = auth.auth_status(pb::AuthStatusRequest {});
    let answer = tokio::time::timeout(ctx.command_timeout, call)
        .await
        .map_err(|_| ctl_err("AuthStatus: context deadline exceeded"))?;
    let status = match answer {
        Ok(s) => {
            let s = s.into_inner();
            Some((s.enabled, s.auth_revision))
        }
        // etcd 3.4 has no AuthStatus.
        Err(s) if s.code() == tonic::Code::Unimplemented => None,
        Err(s) => return Err(ctl_err(crate::error::status_message(&s))),
    };
    let mut users = BTreeMap::new();
    let names = ctx
        .call(c.auth().user_list(pb::AuthUserListRequest {}))
        .await?;
    for name in names.users {
        let u = ctx
            .call(
                c.auth()
                    .user_get(pb::AuthUserGetRequest { name: name.clone() }),
            )
            .await?;
        let mut roles = u.roles;
        roles.sort();
        users.insert(name, roles);
    }
    let mut roles = BTreeMap::new();
    let names = ctx
        .call(c.auth().role_list(pb::AuthRoleListRequest {}))
        .await?;
    for role in names.roles {
        let r = ctx
            .call(
                c.auth()
                    .role_get(pb::AuthRoleGetRequest { role: role.clone() }),
            )
            .await?;
        let mut perms: Vec<String> = r
            .perm
            .iter()
            .map(|p| {
                format!(
                    "{} {}..{}",
                    p.perm_type,
                    String::from_utf8_lossy(&p.key),
                    String::from_utf8_lossy(&p.range_end)
                )
            })
            .collect();
        perms.sort();
        roles.insert(role, perms);
    }
    Ok(AuthView {
        status,
        users,
        roles,
    })
}

/// What differs between etcd's auth and oxcd's, in words; empty when nothing does.
fn differences(etcd: &AuthView, oxcd: &AuthView) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some((e_on, e_rev)), Some((o_on, o_rev))) = (etcd.status, oxcd.status) {
        if e_on != o_on {
            out.push(format!("auth enabled: etcd {e_on}, oxcd {o_on}"));
        }
        if e_rev != o_rev {
            out.push(format!("auth revision: etcd {e_rev}, oxcd {o_rev}"));
        }
    }
    let named =
        |what: &str, e: &BTreeMap<String, Vec<String>>, o: &BTreeMap<String, Vec<String>>| {
            let differ: Vec<&str> = e
                .keys()
                .chain(o.keys())
                .filter(|k| e.get(*k) != o.get(*k))
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            (!differ.is_empty()).then(|| format!("{what} that differ: {}", differ.join(", ")))
        };
    out.extend(named("users", &etcd.users, &oxcd.users));
    out.extend(named("roles", &etcd.roles, &oxcd.roles));
    out
}

impl Migrator {
    /// Refuses the cut-over when etcd's auth changed after the snapshot copy.
    pub(super) async fn check_auth(&self) -> CtlResult {
        let etcd = auth_view(&self.src_ctx, &self.src).await?;
        let oxcd = auth_view(&self.dst_ctx, &self.dst).await?;
        let diff = differences(&etcd, &oxcd);
        if diff.is_empty() {
            return Ok(());
        }
        Err(ctl_err(format!(
            "etcd's users or roles changed after the snapshot copy (etcd's watch does not carry auth changes): {}; oxcd stays in import mode: run the cut-over again with --copy-auth to copy etcd's auth store from a new snapshot",
            diff.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: Option<(bool, u64)>, users: &[(&str, &[&str])]) -> AuthView {
        AuthView {
            status,
            users: users
                .iter()
                .map(|(u, r)| (u.to_string(), r.iter().map(|x| x.to_string()).collect()))
                .collect(),
            roles: BTreeMap::new(),
        }
    }

    #[test]
    fn differences_name_users_and_revisions() {
        let a = view(None, &[("root", &["root"])]);
        assert!(differences(&a, &view(Some((false, 1)), &[("root", &["root"])])).is_empty());
        let b = view(None, &[("root", &["root"]), ("alice", &[])]);
        assert_eq!(differences(&b, &a), vec!["users that differ: alice"]);
        let c = view(None, &[("root", &[])]);
        assert_eq!(differences(&a, &c), vec!["users that differ: root"]);
        let revs = differences(&view(Some((true, 5)), &[]), &view(Some((true, 4)), &[]));
        assert_eq!(revs, vec!["auth revision: etcd 5, oxcd 4"]);
    }
}
