//! The Cluster gRPC service: the member list, and membership changes (add, remove, update,
//! promote) proposed through the log as raft ConfChanges, as etcd does.

use oxcd_api::etcdserverpb as pb;
use oxcd_api::etcdserverpb::cluster_server::Cluster;
use raft::eraftpb::ConfChangeType;
use tonic::{Request, Response, Status};

use crate::apply::Applied;
use crate::auth::Need;
use crate::error::ServerError;
use crate::grpc::Services;
use crate::members::Member;
use crate::raft_node::now_ms;

type GrpcResult<T> = Result<Response<T>, Status>;

impl Services {
    fn members_snapshot(&self) -> Result<Vec<Member>, ServerError> {
        self.server
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
            _ => Err(ServerError::Internal("unexpected apply result".into())),
        }
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.server.header(self.server.store.current_rev()))
    }
}

/// Checks peer URLs: each must be `http(s)://host:port`.
fn check_urls(urls: &[String]) -> Result<(), ServerError> {
    if urls.is_empty() {
        return Err(ServerError::MemberBadUrls);
    }
    for u in urls {
        crate::config::parse_urls("peer-urls", u).map_err(|_| ServerError::MemberBadUrls)?;
    }
    Ok(())
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
            _ => return Err(ServerError::Internal("unexpected apply result".into()).into()),
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
        let (_, members) = self.change(ConfChangeType::AddNode, m).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members,
        }))
    }
}
