//! The auth store (etcd's v3 auth): users with bcrypt password hashes and granted roles,
//! roles with key permissions, the enabled flag, the auth revision, and the simple tokens
//! that Authenticate hands out. Written only by the apply loop: every change, a new token
//! included, is a log entry ([`AuthOp`]). Handlers read it through [`Server::auth_check`],
//! the one place that decides whether a caller may make a request.
//!
//! Persistence: backend aux table [`AUX_AUTH`], rows
//! - `enabled` → one byte, 1 or 0;
//! - `revision` → the auth revision (u64 big-endian), bumped by every change to users, roles
//!   or permissions and by auth disable, as etcd's `authRevision`;
//! - `user/<name>` → `authpb.User` (protobuf): name, bcrypt hash, roles (sorted), options;
//! - `role/<name>` → `authpb.Role` (protobuf): name, permissions sorted by key.
//!
//! Tokens live in memory only, like etcd's simple tokens: `<16 random letters>.<raft index>`,
//! valid until [`TOKEN_TTL`] passes without use (expiry is local to each member), dropped
//! when their user is deleted or changes password, and when auth is disabled.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use oxcd_api::authpb::{permission::Type as PermType, Permission, Role, User, UserAddOptions};
use oxcd_api::etcdserverpb as pb;
use oxcd_api::etcdserverpb::request_op::Request as TxnOp;
use oxcd_storage::WriteBatch;
use prost::Message;
use rand::Rng;

use crate::error::ServerError;
use crate::request::{AuthAssign, AuthOp};

pub const AUX_AUTH: u8 = 5;
/// etcd's bcrypt cost (Go's `bcrypt.DefaultCost`).
pub const BCRYPT_COST: u32 = 10;
/// etcd's default `--auth-token-ttl`: a simple token unused for this long is invalid.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// Live tokens per member; past this, expired tokens are dropped, then the least recently
/// used one.
pub const TOKENS_MAX: usize = 65_536;
const TOKEN_PREFIX_LETTERS: usize = 16;
const ROOT: &str = "root";
const ENABLED_KEY: &[u8] = b"enabled";
const REVISION_KEY: &[u8] = b"revision";
const USER_PREFIX: &str = "user/";
const ROLE_PREFIX: &str = "role/";

/// What a request needs from its caller. Built by handlers from the request they got.
pub enum Need<'a> {
    /// Only that a token, when one is given, is valid: as etcd 3.4 for lease grants,
    /// compaction and the other requests it lets anyone make.
    Token,
    Range(&'a pb::RangeRequest),
    Put(&'a pb::PutRequest),
    Delete(&'a pb::DeleteRangeRequest),
    Txn(&'a pb::TxnRequest),
    Watch(&'a pb::WatchCreateRequest),
    /// Write access to every key attached to the lease.
    LeaseRevoke(i64),
    /// A user, with read access to every key attached to the lease (etcd's fix for
    /// CVE-2023-32082, in 3.4.26).
    LeaseTimeToLive(i64),
    /// The root role: auth and membership changes.
    Admin,
    /// The root role, with etcd's untranslated `auth: ...` errors (defragment, snapshot,
    /// hash, hash-kv).
    Maintenance,
    /// The root role, or the user asking about itself.
    UserGet(&'a str),
    /// The root role, or a user that has the role.
    RoleGet(&'a str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

struct Token {
    user: String,
    last_used: Instant,
}

#[derive(Default)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    tokens: HashMap<String, Token>,
}

impl AuthStore {
    /// Rebuilds the store from its backend rows (at start and after a snapshot).
    pub fn load(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<AuthStore, String> {
        let mut s = AuthStore::default();
        for (k, v) in rows {
            if k == ENABLED_KEY {
                s.enabled = v == [1];
            } else if k == REVISION_KEY {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| "auth revision row is not 8 bytes".to_string())?;
                s.revision = u64::from_be_bytes(b);
            } else if let Some(name) = k.strip_prefix(USER_PREFIX.as_bytes()) {
                let u = User::decode(v.as_slice()).map_err(|e| format!("auth user row: {e}"))?;
                s.users
                    .insert(String::from_utf8_lossy(name).into_owned(), u);
            } else if let Some(name) = k.strip_prefix(ROLE_PREFIX.as_bytes()) {
                let r = Role::decode(v.as_slice()).map_err(|e| format!("auth role row: {e}"))?;
                s.roles
                    .insert(String::from_utf8_lossy(name).into_owned(), r);
            }
        }
        Ok(s)
    }

    /// Keeps the tokens of `old` whose users still exist (a snapshot replaced the store).
    pub fn keep_tokens(&mut self, old: &mut AuthStore) {
        self.tokens = std::mem::take(&mut old.tokens);
        let users = &self.users;
        self.tokens.retain(|_, t| users.contains_key(&t.user));
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn user_roles(&self, name: &str) -> Result<Vec<String>, ServerError> {
        let u = self.users.get(name).ok_or(ServerError::UserNotFound)?;
        Ok(u.roles.clone())
    }

    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    pub fn role_permissions(&self, name: &str) -> Result<Vec<Permission>, ServerError> {
        let r = self.roles.get(name).ok_or(ServerError::RoleNotFound)?;
        Ok(r.key_permission.clone())
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// etcd's CheckPassword before the hash comparison: the user's bcrypt hash and the
    /// revision it was read at.
    pub fn password_hash(&self, name: &str) -> Result<(String, u64), ServerError> {
        if !self.enabled {
            return Err(ServerError::AuthNotEnabled);
        }
        let u = self.users.get(name).ok_or(ServerError::AuthFailed)?;
        if no_password(u) {
            return Err(ServerError::AuthUntranslated(
                "authentication failed, password was given for no password user",
            ));
        }
        Ok((
            String::from_utf8_lossy(&u.password).into_owned(),
            self.revision,
        ))
    }

    /// The user a token belongs to; using it restarts its time to live.
    pub fn user_of_token(&mut self, token: &str, now: Instant) -> Result<String, ServerError> {
        self.user_of_token_within(token, now, TOKEN_TTL)
    }

    /// [`AuthStore::user_of_token`] with a token unused for `ttl` invalid (`--auth-token-ttl`).
    pub fn user_of_token_within(
        &mut self,
        token: &str,
        now: Instant,
        ttl: Duration,
    ) -> Result<String, ServerError> {
        let t = self
            .tokens
            .get_mut(token)
            .ok_or(ServerError::InvalidAuthToken)?;
        if now.duration_since(t.last_used) > ttl {
            self.tokens.remove(token);
            return Err(ServerError::InvalidAuthToken);
        }
        t.last_used = now;
        Ok(t.user.clone())
    }

    fn insert_token(&mut self, token: String, user: &str, now: Instant) {
        if self.tokens.len() >= TOKENS_MAX {
            self.tokens
                .retain(|_, t| now.duration_since(t.last_used) <= TOKEN_TTL);
        }
        if self.tokens.len() >= TOKENS_MAX {
            let oldest = self
                .tokens
                .iter()
                .min_by_key(|(_, t)| t.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.tokens.remove(&k);
            }
        }
        let user = user.to_string();
        self.tokens.insert(
            token,
            Token {
                user,
                last_used: now,
            },
        );
    }

    fn drop_tokens_of(&mut self, user: &str) {
        self.tokens.retain(|_, t| t.user != user);
    }

    /// Decides `need` for `user` (None: no token was given). Auth is enabled.
    pub fn allows(
        &self,
        user: Option<&str>,
        need: &Need<'_>,
        lease_keys: &[Vec<u8>],
    ) -> Result<(), ServerError> {
        use Access::{Read, Write};
        match need {
            Need::Token => Ok(()),
            Need::Range(r) => self.check_key(user, Read, &r.key, &r.range_end),
            Need::Put(p) => {
                self.check_key(user, Write, &p.key, &[])?;
                // A user may not attach a key to a lease it could not revoke.
                for k in lease_keys {
                    self.check_key(user, Write, k, &[])?;
                }
                if p.prev_kv {
                    self.check_key(user, Read, &p.key, &[])?;
                }
                Ok(())
            }
            Need::Delete(d) => {
                self.check_key(user, Write, &d.key, &d.range_end)?;
                if d.prev_kv {
                    self.check_key(user, Read, &d.key, &d.range_end)?;
                }
                Ok(())
            }
            Need::Txn(t) => self.check_txn(user, t),
            Need::Watch(w) => self.check_key(user, Read, &w.key, &w.range_end),
            Need::LeaseRevoke(_) => lease_keys
                .iter()
                .try_for_each(|k| self.check_key(user, Write, k, &[])),
            Need::LeaseTimeToLive(_) => {
                if user.is_none() {
                    return Err(ServerError::UserEmpty);
                }
                lease_keys
                    .iter()
                    .try_for_each(|k| self.check_key(user, Read, k, &[]))
            }
            Need::Admin | Need::Maintenance => self.check_admin(user),
            Need::UserGet(name) if user.unwrap_or("") == *name => Ok(()),
            Need::RoleGet(role) if user.is_some_and(|u| self.has_role(u, role)) => Ok(()),
            Need::UserGet(_) | Need::RoleGet(_) => self.check_admin(user),
        }
    }

    /// etcd's checkTxnAuth: every compare's range (a compare on values, versions or
    /// revisions reveals them: READ), then every request of both branches, with READ too for
    /// whatever a request returns (`prev_kv` of a put or a delete; etcd 3.6's fix of the
    /// same hole).
    fn check_txn(&self, user: Option<&str>, t: &pb::TxnRequest) -> Result<(), ServerError> {
        use Access::{Read, Write};
        for c in &t.compare {
            self.check_key(user, Read, &c.key, &c.range_end)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(TxnOp::RequestRange(r)) => self.check_key(user, Read, &r.key, &r.range_end)?,
                Some(TxnOp::RequestPut(p)) => {
                    if p.prev_kv {
                        self.check_key(user, Read, &p.key, &[])?;
                    }
                    self.check_key(user, Write, &p.key, &[])?
                }
                Some(TxnOp::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        self.check_key(user, Read, &d.key, &d.range_end)?;
                    }
                    self.check_key(user, Write, &d.key, &d.range_end)?;
                }
                Some(TxnOp::RequestTxn(nested)) => self.check_txn(user, nested)?,
                None => {}
            }
        }
        Ok(())
    }

    fn check_admin(&self, user: Option<&str>) -> Result<(), ServerError> {
        let name = user.ok_or(ServerError::UserEmpty)?;
        let u = self.users.get(name).ok_or(ServerError::UserNotFound)?;
        if has_root_role(u) {
            Ok(())
        } else {
            Err(ServerError::PermissionDenied)
        }
    }

    fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// etcd's isOpPermitted: root may do anything; others need `access` to all of
    /// `[key, end)` (or to `key` alone when `end` is empty) through their roles.
    fn check_key(
        &self,
        user: Option<&str>,
        access: Access,
        key: &[u8],
        end: &[u8],
    ) -> Result<(), ServerError> {
        let name = user.ok_or(ServerError::UserEmpty)?;
        let u = self.users.get(name).ok_or(ServerError::PermissionDenied)?;
        if has_root_role(u) {
            return Ok(());
        }
        let granted: Vec<Interval> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| &r.key_permission)
            .filter(|p| grants(p, access))
            .filter_map(Interval::of_permission)
            .collect();
        let covered = if end.is_empty() {
            granted.iter().any(|i| i.contains(key))
        } else {
            covers(granted, key, open_end(end))
        };
        if covered {
            Ok(())
        } else {
            Err(ServerError::PermissionDenied)
        }
    }

    /// Applies one committed auth change. Returns the new token for Authenticate.
    pub fn apply(
        &mut self,
        batch: &mut WriteBatch<'_>,
        index: u64,
        op: AuthOp,
    ) -> Result<Option<String>, ServerError> {
        match op {
            AuthOp::Enable(_) => self.enable(batch).map(|()| None),
            AuthOp::Disable(_) => self.disable(batch).map(|()| None),
            AuthOp::Authenticate(a) => self.assign(&a, index).map(Some),
            AuthOp::UserAdd(r) => self.user_add(batch, r).map(|()| None),
            AuthOp::UserDelete(r) => self.user_delete(batch, &r.name).map(|()| None),
            AuthOp::UserChangePassword(r) => self.user_change_password(batch, r).map(|()| None),
            AuthOp::UserGrantRole(r) => {
                self.user_grant_role(batch, &r.user, &r.role).map(|()| None)
            }
            AuthOp::UserRevokeRole(r) => self
                .user_revoke_role(batch, &r.name, &r.role)
                .map(|()| None),
            AuthOp::RoleAdd(r) => self.role_add(batch, r.name).map(|()| None),
            AuthOp::RoleDelete(r) => self.role_delete(batch, &r.role).map(|()| None),
            AuthOp::RoleGrantPermission(r) => {
                self.role_grant(batch, &r.name, r.perm).map(|()| None)
            }
            AuthOp::RoleRevokePermission(r) => self.role_revoke(batch, r).map(|()| None),
        }
    }

    fn enable(&mut self, batch: &mut WriteBatch<'_>) -> Result<(), ServerError> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(ServerError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(ServerError::RootRoleNotExist);
        }
        batch.aux_put(AUX_AUTH, ENABLED_KEY, &[1])?;
        self.enabled = true;
        Ok(())
    }

    fn disable(&mut self, batch: &mut WriteBatch<'_>) -> Result<(), ServerError> {
        if !self.enabled {
            return Ok(());
        }
        batch.aux_put(AUX_AUTH, ENABLED_KEY, &[0])?;
        self.commit_revision(batch)?;
        self.enabled = false;
        self.tokens.clear();
        Ok(())
    }

    fn assign(&mut self, a: &AuthAssign, index: u64) -> Result<String, ServerError> {
        if !self.enabled {
            return Err(ServerError::AuthNotEnabled);
        }
        let u = self.users.get(&a.name).ok_or(ServerError::AuthFailed)?;
        if no_password(u) {
            return Err(ServerError::AuthFailed);
        }
        let token = format!("{}.{index}", a.token_prefix);
        self.insert_token(token.clone(), &a.name, Instant::now());
        Ok(token)
    }

    fn user_add(
        &mut self,
        batch: &mut WriteBatch<'_>,
        r: pb::AuthUserAddRequest,
    ) -> Result<(), ServerError> {
        if r.name.is_empty() {
            return Err(ServerError::UserEmpty);
        }
        if self.users.contains_key(&r.name) {
            return Err(ServerError::UserAlreadyExist);
        }
        let options = r.options.unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password {
            Vec::new()
        } else {
            r.hashed_password.into_bytes()
        };
        let user = User {
            name: r.name.clone().into_bytes(),
            password,
            roles: Vec::new(),
            options: Some(options),
        };
        self.put_user(batch, user)?;
        self.commit_revision(batch)
    }

    fn user_delete(&mut self, batch: &mut WriteBatch<'_>, name: &str) -> Result<(), ServerError> {
        if self.enabled && name == ROOT {
            return Err(ServerError::InvalidAuthMgmt);
        }
        if !self.users.contains_key(name) {
            return Err(ServerError::UserNotFound);
        }
        batch.aux_delete(AUX_AUTH, &row_key(USER_PREFIX, name))?;
        self.users.remove(name);
        self.commit_revision(batch)?;
        self.drop_tokens_of(name);
        Ok(())
    }

    fn user_change_password(
        &mut self,
        batch: &mut WriteBatch<'_>,
        r: pb::AuthUserChangePasswordRequest,
    ) -> Result<(), ServerError> {
        let mut u = self
            .users
            .get(&r.name)
            .cloned()
            .ok_or(ServerError::UserNotFound)?;
        if !no_password(&u) {
            u.password = r.hashed_password.into_bytes();
        }
        self.put_user(batch, u)?;
        self.commit_revision(batch)?;
        self.drop_tokens_of(&r.name);
        Ok(())
    }

    fn user_grant_role(
        &mut self,
        batch: &mut WriteBatch<'_>,
        name: &str,
        role: &str,
    ) -> Result<(), ServerError> {
        let mut u = self
            .users
            .get(name)
            .cloned()
            .ok_or(ServerError::UserNotFound)?;
        // The root role need not exist to be granted (etcd creates no row for it).
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(ServerError::RoleNotFound);
        }
        if u.roles.iter().any(|r| r == role) {
            return Ok(());
        }
        u.roles.push(role.to_string());
        u.roles.sort();
        self.put_user(batch, u)?;
        self.commit_revision(batch)
    }

    fn user_revoke_role(
        &mut self,
        batch: &mut WriteBatch<'_>,
        name: &str,
        role: &str,
    ) -> Result<(), ServerError> {
        if self.enabled && name == ROOT && role == ROOT {
            return Err(ServerError::InvalidAuthMgmt);
        }
        let mut u = self
            .users
            .get(name)
            .cloned()
            .ok_or(ServerError::UserNotFound)?;
        let before = u.roles.len();
        u.roles.retain(|r| r != role);
        if u.roles.len() == before {
            return Err(ServerError::RoleNotGranted);
        }
        self.put_user(batch, u)?;
        self.commit_revision(batch)
    }

    fn role_add(&mut self, batch: &mut WriteBatch<'_>, name: String) -> Result<(), ServerError> {
        if name.is_empty() {
            return Err(ServerError::RoleEmpty);
        }
        if self.roles.contains_key(&name) {
            return Err(ServerError::RoleAlreadyExist);
        }
        let role = Role {
            name: name.into_bytes(),
            key_permission: Vec::new(),
        };
        self.put_role(batch, role)?;
        self.commit_revision(batch)
    }

    /// Deletes a role and takes it away from every user that had it.
    fn role_delete(&mut self, batch: &mut WriteBatch<'_>, name: &str) -> Result<(), ServerError> {
        if self.enabled && name == ROOT {
            return Err(ServerError::InvalidAuthMgmt);
        }
        if !self.roles.contains_key(name) {
            return Err(ServerError::RoleNotFound);
        }
        batch.aux_delete(AUX_AUTH, &row_key(ROLE_PREFIX, name))?;
        self.roles.remove(name);
        let holders: Vec<User> = self
            .users
            .values()
            .filter(|u| u.roles.iter().any(|r| r == name))
            .cloned()
            .collect();
        for mut u in holders {
            u.roles.retain(|r| r != name);
            self.put_user(batch, u)?;
        }
        self.commit_revision(batch)
    }

    /// Adds a permission, or changes the type of the one with the same key and range end.
    fn role_grant(
        &mut self,
        batch: &mut WriteBatch<'_>,
        name: &str,
        perm: Option<Permission>,
    ) -> Result<(), ServerError> {
        let perm = perm.ok_or(ServerError::AuthUntranslated("permission not given"))?;
        let mut role = self
            .roles
            .get(name)
            .cloned()
            .ok_or(ServerError::RoleNotFound)?;
        match role
            .key_permission
            .iter_mut()
            .find(|p| p.key == perm.key && p.range_end == perm.range_end)
        {
            Some(p) => p.perm_type = perm.perm_type,
            None => {
                role.key_permission.push(perm);
                role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        self.put_role(batch, role)?;
        self.commit_revision(batch)
    }

    fn role_revoke(
        &mut self,
        batch: &mut WriteBatch<'_>,
        r: pb::AuthRoleRevokePermissionRequest,
    ) -> Result<(), ServerError> {
        let mut role = self
            .roles
            .get(&r.role)
            .cloned()
            .ok_or(ServerError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| p.key != r.key || p.range_end != r.range_end);
        if role.key_permission.len() == before {
            return Err(ServerError::PermissionNotGranted);
        }
        self.put_role(batch, role)?;
        self.commit_revision(batch)
    }

    fn put_user(&mut self, batch: &mut WriteBatch<'_>, u: User) -> Result<(), ServerError> {
        let name = String::from_utf8_lossy(&u.name).into_owned();
        batch.aux_put(AUX_AUTH, &row_key(USER_PREFIX, &name), &u.encode_to_vec())?;
        self.users.insert(name, u);
        Ok(())
    }

    fn put_role(&mut self, batch: &mut WriteBatch<'_>, r: Role) -> Result<(), ServerError> {
        let name = String::from_utf8_lossy(&r.name).into_owned();
        batch.aux_put(AUX_AUTH, &row_key(ROLE_PREFIX, &name), &r.encode_to_vec())?;
        self.roles.insert(name, r);
        Ok(())
    }

    fn commit_revision(&mut self, batch: &mut WriteBatch<'_>) -> Result<(), ServerError> {
        self.revision += 1;
        batch.aux_put(AUX_AUTH, REVISION_KEY, &self.revision.to_be_bytes())?;
        Ok(())
    }
}

fn row_key(prefix: &str, name: &str) -> Vec<u8> {
    [prefix.as_bytes(), name.as_bytes()].concat()
}

fn has_root_role(u: &User) -> bool {
    u.roles.iter().any(|r| r == ROOT)
}

fn no_password(u: &User) -> bool {
    u.options.as_ref().is_some_and(|o| o.no_password)
}

fn grants(p: &Permission, access: Access) -> bool {
    matches!(
        (PermType::try_from(p.perm_type), access),
        (Ok(PermType::Readwrite), _)
            | (Ok(PermType::Read), Access::Read)
            | (Ok(PermType::Write), Access::Write)
    )
}

/// `end` as an interval bound: `[0]` means no end (etcd's "from key").
fn open_end(end: &[u8]) -> Option<&[u8]> {
    if end == [0] {
        None
    } else {
        Some(end)
    }
}

/// `[begin, end)` of keys; `end: None` is unbounded.
struct Interval {
    begin: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    /// A permission's keys: one key (empty range end), from a key on (`[0]`), or a range.
    /// A range that ends before it begins grants nothing.
    fn of_permission(p: &Permission) -> Option<Interval> {
        let end = if p.range_end.is_empty() {
            Some([p.key.as_slice(), &[0]].concat())
        } else {
            open_end(&p.range_end).map(<[u8]>::to_vec)
        };
        if end.as_ref().is_some_and(|e| *e <= p.key) {
            return None;
        }
        Some(Interval {
            begin: p.key.clone(),
            end,
        })
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.begin.as_slice() <= key && self.end.as_ref().is_none_or(|e| key < e.as_slice())
    }
}

/// True when the union of `granted` covers all of `[key, end)`.
fn covers(mut granted: Vec<Interval>, key: &[u8], end: Option<&[u8]>) -> bool {
    granted.sort_by(|a, b| a.begin.cmp(&b.begin));
    let mut reached = key.to_vec();
    for i in granted {
        if i.begin > reached {
            break;
        }
        match i.end {
            None => return true,
            Some(e) if e > reached => reached = e,
            Some(_) => {}
        }
        if end.is_some_and(|end| reached.as_slice() >= end) {
            return true;
        }
    }
    false
}

/// A fresh token prefix: 16 random letters, as etcd's simple tokens.
pub fn token_prefix() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::thread_rng();
    (0..TOKEN_PREFIX_LETTERS)
        .map(|_| LETTERS[rng.gen_range(0..LETTERS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermType, key: &str, end: &[u8]) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.to_vec(),
        }
    }

    fn store_with(perms: Vec<Permission>) -> AuthStore {
        let mut s = AuthStore {
            enabled: true,
            ..Default::default()
        };
        s.roles.insert(
            "r".into(),
            Role {
                name: b"r".to_vec(),
                key_permission: perms,
            },
        );
        s.users.insert(
            "u".into(),
            User {
                name: b"u".to_vec(),
                roles: vec!["r".into()],
                ..Default::default()
            },
        );
        s.users.insert(
            ROOT.into(),
            User {
                name: b"root".to_vec(),
                roles: vec![ROOT.into()],
                ..Default::default()
            },
        );
        s
    }

    #[test]
    fn key_permissions_follow_etcd_intervals() {
        let s = store_with(vec![
            perm(PermType::Read, "/app/", b"/app0"),
            perm(PermType::Write, "/app/x", b""),
            perm(PermType::Readwrite, "/b", b"/c"),
            perm(PermType::Readwrite, "/c", b"/d"),
            perm(PermType::Read, "/z", b"\0"),
        ]);
        let ok = |a, k: &str, e: &[u8]| s.check_key(Some("u"), a, k.as_bytes(), e).is_ok();
        assert!(ok(Access::Read, "/app/k", b""));
        assert!(!ok(Access::Write, "/app/k", b""));
        assert!(ok(Access::Write, "/app/x", b""));
        assert!(
            ok(Access::Write, "/app/x", b"/app/x\0"),
            "a point covers [k, k\\0)"
        );
        assert!(!ok(Access::Write, "/app/x", b"/app/y"));
        assert!(ok(Access::Read, "/app/", b"/app0"));
        assert!(!ok(Access::Read, "/app", b"/app0"));
        assert!(ok(Access::Read, "/b", b"/d"), "adjacent ranges join");
        assert!(!ok(Access::Read, "/b", b"/e"));
        assert!(ok(Access::Read, "/zz", b"\0"));
        assert!(ok(Access::Read, "foo", b""));
        assert!(!ok(Access::Write, "/z", b""));
        assert_eq!(
            s.check_key(None, Access::Read, b"/b", b""),
            Err(ServerError::UserEmpty)
        );
        assert_eq!(
            s.check_key(Some("ghost"), Access::Read, b"/b", b""),
            Err(ServerError::PermissionDenied)
        );
        assert!(s.check_key(Some(ROOT), Access::Write, b"\0", b"\0").is_ok());
    }

    /// Issue 16: a user with only WRITE on `/c` read a key's value through a put with
    /// `prev_kv` inside a txn. Whatever a request returns needs READ, nested or not.
    #[test]
    fn returned_data_needs_read_in_txns_too() {
        let s = store_with(vec![perm(PermType::Write, "/c", b"/d")]);
        let put = |prev_kv| pb::RequestOp {
            request: Some(TxnOp::RequestPut(pb::PutRequest {
                key: b"/c/k".to_vec(),
                prev_kv,
                ..Default::default()
            })),
        };
        let del = |prev_kv| pb::RequestOp {
            request: Some(TxnOp::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b"/c/k".to_vec(),
                prev_kv,
                ..Default::default()
            })),
        };
        let txn = |ops: Vec<pb::RequestOp>| pb::TxnRequest {
            success: ops,
            ..Default::default()
        };
        let nested = |op| pb::RequestOp {
            request: Some(TxnOp::RequestTxn(txn(vec![op]))),
        };
        let allows = |t: &pb::TxnRequest| s.allows(Some("u"), &Need::Txn(t), &[]);
        assert_eq!(allows(&txn(vec![put(false), del(false)])), Ok(()));
        for denied in [
            txn(vec![put(true)]),
            txn(vec![del(true)]),
            txn(vec![nested(put(true))]),
            pb::TxnRequest {
                compare: vec![pb::Compare {
                    key: b"/c/k".to_vec(),
                    target: pb::compare::CompareTarget::Value as i32,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ] {
            assert_eq!(allows(&denied), Err(ServerError::PermissionDenied));
        }
        let plain = pb::PutRequest {
            key: b"/c/k".to_vec(),
            prev_kv: true,
            ..Default::default()
        };
        assert_eq!(
            s.allows(Some("u"), &Need::Put(&plain), &[]),
            Err(ServerError::PermissionDenied)
        );
    }

    #[test]
    fn tokens_expire_and_are_bounded() {
        let mut s = store_with(Vec::new());
        let t0 = Instant::now();
        s.insert_token("a.1".into(), "u", t0);
        assert_eq!(s.user_of_token("a.1", t0 + TOKEN_TTL), Ok("u".into()));
        let later = t0 + TOKEN_TTL * 2 + Duration::from_secs(1);
        assert_eq!(
            s.user_of_token("a.1", later),
            Err(ServerError::InvalidAuthToken)
        );
        assert_eq!(
            s.user_of_token("nope", t0),
            Err(ServerError::InvalidAuthToken)
        );
        for i in 0..TOKENS_MAX + 10 {
            s.insert_token(format!("t.{i}"), "u", t0 + Duration::from_millis(i as u64));
        }
        assert!(s.tokens.len() <= TOKENS_MAX);
        assert!(s.tokens.contains_key(&format!("t.{}", TOKENS_MAX + 9)));
    }

    #[test]
    fn token_prefix_is_sixteen_letters() {
        let p = token_prefix();
        assert_eq!(p.len(), 16);
        assert!(p.chars().all(|c| c.is_ascii_alphabetic()));
    }
}
