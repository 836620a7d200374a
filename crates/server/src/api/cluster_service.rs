//! The Cluster gRPC service: the member list, and membership changes (add, remove, update,
//! promote) proposed through the log as raft ConfChanges, as etcd does.

use oxcd_api::etcdserverpb as pb;
use oxcd_api::etcdserverpb::cluster_server::Cluster;
use raft::eraftpb::ConfChangeType;
use tonic::{Request, Response, Status};

use crate::api::services::Services;
use crate::clock::now_ms;
use crate::error::ServerError;
use crate::state::apply::Applied;
use crate::state::auth::Need;
use crate::state::members::Member;

type GrpcResult<T> = Result<Response<T>, Status>;

/// etcd's HealthInterval: a peer counts as connected once its stream has been up this long.
pub const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A member that has started at least once (it has a name), as etcd counts them.
fn started(m: &Member) -> bool {
    !m.name.is_empty()
}

fn quorum(n: usize) -> usize {
    n / 2 + 1
}

impl Services {
    fn members_snapshot(&self) -> Result<Vec<Member>, ServerError> {
        self.server
            .tables
            .members
            .read()
            .map(|m| m.list.clone())
            .map_err(|_| ServerError::Internal("members lock".into()))
    }

    fn member(&self, id: u64) -> Result<Member, ServerError> {
        self.members_snapshot()?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(ServerError::MemberNotFound)
    }

    async fn change(
        &self,
        kind: ConfChangeType,
        m: Member,
    ) -> Result<(Option<Member>, Vec<pb::Member>), ServerError> {
        match self.server.propose_member_change(kind, m).await? {
            Applied::Members { member, list } => {
                Ok((member, list.iter().map(Member::to_pb).collect()))
            }
            _ => Err(ServerError::unexpected_apply()),
        }
    }

    /// This member, or a peer whose stream has been up for [`HEALTH_INTERVAL`].
    fn connected(&self, id: u64) -> bool {
        id == self.server.member_id
            || self
                .server
                .peer_activity
                .since(id)
                .is_some_and(|t| t.elapsed() >= HEALTH_INTERVAL)
    }

    /// etcd's mayAddMember (with `--strict-reconfig-check`) and its learner limit
    /// (`--max-learners`).
    fn may_add(&self, is_learner: bool, members: &[Member]) -> Result<(), ServerError> {
        let learners_max = self.server.cfg.learners_max;
        if is_learner && members.iter().filter(|m| m.is_learner).count() >= learners_max {
            return Err(ServerError::TooManyLearners);
        }
        if !self.server.cfg.strict_reconfig_check {
            return Ok(());
        }
        let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
        if !is_learner {
            let (n, up) = (
                voters.len() + 1,
                voters.iter().filter(|m| started(m)).count(),
            );
            // Adding a second member to a one-member cluster is how a cluster grows.
            if !(up == 1 && n == 2) && up < quorum(n) {
                return Err(ServerError::NotEnoughStartedMembers);
            }
        }
        if !voters.iter().all(|m| self.connected(m.id)) {
            return Err(ServerError::Unhealthy);
        }
        Ok(())
    }

    /// etcd's mayRemoveMember: never leave fewer started or connected voters than a quorum.
    fn may_remove(&self, id: u64, members: &[Member]) -> Result<(), ServerError> {
        if !self.server.cfg.strict_reconfig_check
            || members.iter().any(|m| m.id == id && m.is_learner)
        {
            return Ok(());
        }
        let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
        let rest: Vec<&&Member> = voters.iter().filter(|m| m.id != id).collect();
        if rest.iter().filter(|m| started(m)).count() < quorum(rest.len()) {
            return Err(ServerError::NotEnoughStartedMembers);
        }
        // A member that is down is not part of the active quorum: removing it is safe.
        if id != self.server.member_id && self.server.peer_activity.since(id).is_none() {
            return Ok(());
        }
        let active = voters.iter().filter(|m| self.connected(m.id)).count();
        if active.saturating_sub(1) < 1 + (voters.len().saturating_sub(1)) / 2 {
            return Err(ServerError::Unhealthy);
        }
        Ok(())
    }

    /// etcd's mayPromoteMember (the learner's progress is checked by the leader).
    fn may_promote(&self, members: &[Member]) -> Result<(), ServerError> {
        if !self.server.cfg.strict_reconfig_check {
            return Ok(());
        }
        let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
        let (n, up) = (
            voters.len() + 1,
            voters.iter().filter(|m| started(m)).count() + 1,
        );
        if up < quorum(n) {
            return Err(ServerError::NotEnoughStartedMembers);
        }
        Ok(())
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.server.header(self.server.store.current_rev()))
    }
}

/// Peer URLs one member may have (oxcd's bound; etcd has none): each is dialed and
/// compared with every other member's, and the list travels in every membership entry.
pub const PEER_URLS_MAX: usize = 16;
/// Bytes of one peer URL, at most (a DNS name is at most 253; with scheme and port, less).
pub const PEER_URL_BYTES_MAX: usize = 300;

/// Checks peer URLs as etcd's `types.NewURLs` does: each `http(s)://host:port`, where the
/// host is an IP (IPv6 in brackets) or a DNS name; at most [`PEER_URLS_MAX`] of them, none
/// twice.
fn check_urls(urls: &[String]) -> Result<(), ServerError> {
    if urls.is_empty() || urls.len() > PEER_URLS_MAX {
        return Err(ServerError::MemberBadUrls);
    }
    for (i, u) in urls.iter().enumerate() {
        if u.len() > PEER_URL_BYTES_MAX || urls[..i].contains(u) {
            return Err(ServerError::MemberBadUrls);
        }
        let parsed =
            crate::config::parse_urls("peer-urls", u).map_err(|_| ServerError::MemberBadUrls)?;
        if parsed.len() != 1 || !valid_host(&parsed[0].host) {
            return Err(ServerError::MemberBadUrls);
        }
    }
    Ok(())
}

/// An IPv4 address, an IPv6 address in brackets, or a DNS name (letters, digits, `-`, `_`,
/// dots between labels).
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[tonic::async_trait]
impl Cluster for Services {
    async fn member_add(
        &self,
        r: Request<pb::MemberAddRequest>,
    ) -> GrpcResult<pb::MemberAddResponse> {
        self.server.auth_check(r.metadata(), Need::Admin).await?;
        let r = r.into_inner();
        check_urls(&r.peer_ur_ls)?;
        let existing = self.members_snapshot()?;
        if existing
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| r.peer_ur_ls.contains(u)))
        {
            return Err(ServerError::PeerUrlExist.into());
        }
        self.may_add(r.is_learner, &existing)?;
        // etcd names a runtime-added member by its URLs, the token and the time.
        let salt = format!(
            "{}{}",
            self.server.cfg.initial_cluster_token,
            now_ms() / 1000
        );
        let member = Member {
            id: crate::ids::member_id(&r.peer_ur_ls, &salt),
            name: String::new(),
            peer_urls: r.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            is_learner: r.is_learner,
        };
        let kind = if r.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let (added, members) = self.change(kind, member).await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: added.map(|m| m.to_pb()),
            members,
        }))
    }

    async fn member_remove(
        &self,
        r: Request<pb::MemberRemoveRequest>,
    ) -> GrpcResult<pb::MemberRemoveResponse> {
        self.server.auth_check(r.metadata(), Need::Admin).await?;
        let m = self.member(r.into_inner().id)?;
        self.may_remove(m.id, &self.members_snapshot()?)?;
        let (_, members) = self.change(ConfChangeType::RemoveNode, m).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_update(
        &self,
        r: Request<pb::MemberUpdateRequest>,
    ) -> GrpcResult<pb::MemberUpdateResponse> {
        self.server.auth_check(r.metadata(), Need::Admin).await?;
        let r = r.into_inner();
        check_urls(&r.peer_ur_ls)?;
        self.member(r.id)?;
        let op = crate::request::Op::MemberUpdate(crate::request::MemberUpdate {
            id: r.id,
            peer_urls: r.peer_ur_ls,
        });
        let members = match self.server.propose(op).await? {
            (Applied::Members { list, .. }, _) => list.iter().map(Member::to_pb).collect(),
            _ => return Err(ServerError::unexpected_apply().into()),
        };
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_list(
        &self,
        _r: Request<pb::MemberListRequest>,
    ) -> GrpcResult<pb::MemberListResponse> {
        let members = self.members_snapshot()?.iter().map(Member::to_pb).collect();
        // etcd's cluster service fills IDs and term but no revision.
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.server.header(0)),
            members,
        }))
    }

    async fn member_promote(
        &self,
        r: Request<pb::MemberPromoteRequest>,
    ) -> GrpcResult<pb::MemberPromoteResponse> {
        self.server.auth_check(r.metadata(), Need::Admin).await?;
        let m = self.member(r.into_inner().id)?;
        if !m.is_learner {
            return Err(ServerError::MemberNotLearner.into());
        }
        self.may_promote(&self.members_snapshot()?)?;
        let (_, members) = self.change(ConfChangeType::AddNode, m).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: `member add` accepted `http://[::1:2380` and 1,000 peer URLs.
    #[test]
    fn peer_urls_are_checked_as_etcd_parses_them() {
        let ok = |urls: &[&str]| {
            let v: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
            check_urls(&v).is_ok()
        };
        assert!(ok(&["http://127.0.0.1:2380"]));
        assert!(ok(&[
            "https://[::1]:2380",
            "http://node-1.example.com:2380"
        ]));
        for bad in [
            "http://[::1:2380",
            "http://::1]:2380",
            "http://[127.0.0.1]:2380",
            "http://a..b:2380",
            "http://a b:2380",
            "http://127.0.0.1",
            "http://127.0.0.1:99999",
            "ftp://127.0.0.1:2380",
            "http://127.0.0.1:2380,http://127.0.0.2:2380",
        ] {
            assert!(!ok(&[bad]), "{bad}");
        }
        assert!(!ok(&[]));
        assert!(!ok(&["http://127.0.0.1:2380", "http://127.0.0.1:2380"]));
        let many: Vec<String> = (0..1000)
            .map(|i| format!("http://10.0.{}.{}:2380", i / 250, i % 250))
            .collect();
        assert!(check_urls(&many).is_err());
        assert!(check_urls(&many[..PEER_URLS_MAX]).is_ok());
        assert!(check_urls(&[format!("http://{}.com:1", "a".repeat(PEER_URL_BYTES_MAX))]).is_err());
    }
}
