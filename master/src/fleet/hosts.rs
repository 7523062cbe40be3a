//! The host RPCs: the hosts in pages, one host with its events, and the decisions over a
//! host's admission (accept, reject, revoke, delete), each of which drops the host's live link
//! when it may no longer have one. It is separate because admission is a security decision
//! that reads best in one place.

use brine_common::fleet_event::FleetEventKind;
use brine_common::names::MinionId;
use brine_proto::errors::{failure, invalid};
use brine_proto::{pb, time};
use tonic::{Code, Request, Response, Status};

use super::job_options::parse_target;
use super::paging::{page_size, page_token, paged};
use super::{FleetService, store_failure};
use crate::auth::Caller;
use crate::highstate::{HighstateError, is_targeted};
use crate::store::{Approval, ApprovalChange, EVENTS_KEPT, MinionRecord};

fn minion_not_found(id: &MinionId) -> Status {
    failure(
        Code::NotFound,
        pb::ErrorReason::MinionNotFound,
        format!("no enrolled minion {id}"),
        [("minion_id", id.to_string())],
    )
}

impl FleetService {
    /// Admits, rejects or revokes a host; a host no longer admitted loses its live link at once.
    /// Returns whether a link was dropped.
    async fn set_approval(
        &self,
        caller: &str,
        id: String,
        approval: Approval,
    ) -> Result<bool, Status> {
        let id = MinionId::new(id).map_err(|err| invalid("minion_id", err))?;
        // The store first, so a reconnect racing with the drop is refused too.
        match self
            .master
            .store
            .set_approval(id.clone(), approval)
            .await
            .map_err(store_failure)?
        {
            ApprovalChange::Changed => {}
            ApprovalChange::ReplacementAccepted => {
                let disconnected = self.master.links.disconnect(&id);
                tracing::warn!(%caller, minion.id = %id, disconnected, "the replacing machine is accepted; the host's previous certificate is refused");
                self.master.events.publish(FleetEventKind::HostAccepted {
                    minion_id: id,
                    by: caller.to_owned(),
                });
                return Ok(disconnected);
            }
            ApprovalChange::ReplacementRejected => {
                tracing::warn!(%caller, minion.id = %id, "the replacing machine is turned away; the host keeps its certificate");
                return Ok(false);
            }
            ApprovalChange::NotFound => {
                return Err(minion_not_found(&id));
            }
            ApprovalChange::Refused(current) => {
                return Err(failure(
                    Code::FailedPrecondition,
                    pb::ErrorReason::MinionState,
                    format!(
                        "{id} is {}; it must join again with a token",
                        match current {
                            Approval::Rejected => "rejected",
                            _ => "revoked",
                        }
                    ),
                    [("minion_id", id.to_string())],
                ));
            }
        }
        let disconnected = approval != Approval::Accepted && self.master.links.disconnect(&id);
        tracing::warn!(%caller, minion.id = %id, ?approval, disconnected, "minion approval changed");
        let (minion_id, by) = (id, caller.to_owned());
        let event = match approval {
            Approval::Accepted => Some(FleetEventKind::HostAccepted { minion_id, by }),
            Approval::Rejected => Some(FleetEventKind::HostRejected { minion_id, by }),
            Approval::Revoked => Some(FleetEventKind::HostRevoked { minion_id, by }),
            // No call makes a host pending again.
            Approval::Pending => None,
        };
        if let Some(event) = event {
            self.master.events.publish(event);
        }
        Ok(disconnected)
    }

    /// A host as the fleet API shows it.
    fn minion_info(&self, m: MinionRecord) -> pb::MinionInfo {
        let linked_to = crate::relay::link_holder(&self.master, &m.id);
        pb::MinionInfo {
            connected: linked_to.is_some(),
            linked_to: linked_to.unwrap_or_default(),
            minion_id: m.id.into(),
            last_seen: time::timestamp_if_known(m.last_seen_unix_ms),
            facts: Some(m.facts.into()),
            running: m.running.into_iter().map(Into::into).collect(),
            certificate_sha256: m.certificate_sha256,
            certificate_expires_at: time::timestamp_if_known(m.certificate_expires_unix_ms),
            replacement_pending: m.pending_replacement.is_some(),
            clock_offset: Some(time::duration_of_signed_ms(m.clock_offset_ms)),
            join_labels: m.join_labels.into_iter().collect(),
            approval: match m.approval {
                Approval::Accepted => pb::Approval::Accepted,
                Approval::Pending => pb::Approval::Pending,
                Approval::Rejected => pb::Approval::Rejected,
                Approval::Revoked => pb::Approval::Revoked,
            }
            .into(),
        }
    }
}

pub(super) async fn list_minions(
    fleet: &FleetService,
    request: Request<pb::ListMinionsRequest>,
) -> Result<Response<pb::ListMinionsResponse>, Status> {
    let request = request.into_inner();
    let page_size = page_size(request.page_size);
    let mut after = page_token(&request.page_token)?;
    let filter = parse_target("filter", &request.filter)?;
    // Only a filter reads the roles file (for `role:ROLE`).
    let roles = match &filter {
        Some(_) => Some(
            crate::roles::load(&fleet.master)
                .await
                .map_err(|err| Status::from(HighstateError::Roles(err)))?,
        ),
        None => None,
    };
    // One more than the page, to tell whether another page follows; with a filter, read on
    // until that many hosts pass it or the hosts run out.
    let mut records = vec![];
    loop {
        let chunk = fleet
            .master
            .store
            .minions_after(after.clone(), page_size + 1)
            .await
            .map_err(store_failure)?;
        let exhausted = chunk.len() <= page_size;
        after = chunk.last().map(|record| record.id.clone());
        records.extend(chunk.into_iter().filter(|record| match (&filter, &roles) {
            (Some(filter), Some(roles)) => is_targeted(filter, record, roles),
            _ => true,
        }));
        if exhausted || records.len() > page_size {
            break;
        }
    }
    let (minions, next_page_token) = paged(
        records.into_iter().map(|record| fleet.minion_info(record)),
        page_size,
        |info| info.minion_id.clone(),
    );
    Ok(Response::new(pb::ListMinionsResponse {
        minions,
        next_page_token,
    }))
}

pub(super) async fn get_minion(
    fleet: &FleetService,
    request: Request<pb::GetMinionRequest>,
) -> Result<Response<pb::GetMinionResponse>, Status> {
    let id =
        MinionId::new(request.into_inner().minion_id).map_err(|err| invalid("minion_id", err))?;
    let record = fleet
        .master
        .store
        .minion(id.clone())
        .await
        .map_err(store_failure)?
        .ok_or_else(|| minion_not_found(&id))?;
    let events = fleet
        .master
        .store
        .host_events(id, EVENTS_KEPT)
        .await
        .map_err(store_failure)?;
    Ok(Response::new(pb::GetMinionResponse {
        minion: Some(fleet.minion_info(record)),
        events: events.into_iter().map(Into::into).collect(),
    }))
}

pub(super) async fn accept_minion(
    fleet: &FleetService,
    request: Request<pb::AcceptMinionRequest>,
) -> Result<Response<pb::AcceptMinionResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let id = request.into_inner().minion_id;
    fleet.set_approval(&caller, id, Approval::Accepted).await?;
    Ok(Response::new(pb::AcceptMinionResponse {}))
}

pub(super) async fn reject_minion(
    fleet: &FleetService,
    request: Request<pb::RejectMinionRequest>,
) -> Result<Response<pb::RejectMinionResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let id = request.into_inner().minion_id;
    fleet.set_approval(&caller, id, Approval::Rejected).await?;
    Ok(Response::new(pb::RejectMinionResponse {}))
}

pub(super) async fn revoke_minion(
    fleet: &FleetService,
    request: Request<pb::RevokeMinionRequest>,
) -> Result<Response<pb::RevokeMinionResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let id = request.into_inner().minion_id;
    let disconnected = fleet.set_approval(&caller, id, Approval::Revoked).await?;
    Ok(Response::new(pb::RevokeMinionResponse { disconnected }))
}

pub(super) async fn delete_minion(
    fleet: &FleetService,
    request: Request<pb::DeleteMinionRequest>,
) -> Result<Response<pb::DeleteMinionResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let id =
        MinionId::new(request.into_inner().minion_id).map_err(|err| invalid("minion_id", err))?;
    // The store first, so a reconnect racing with the drop is refused too.
    if !fleet
        .master
        .store
        .delete_minion(id.clone())
        .await
        .map_err(store_failure)?
    {
        return Err(minion_not_found(&id));
    }
    let disconnected = fleet.master.links.disconnect(&id);
    tracing::warn!(%caller, minion.id = %id, disconnected, "minion deleted");
    fleet.master.events.publish(FleetEventKind::HostDeleted {
        minion_id: id,
        by: caller,
    });
    Ok(Response::new(pb::DeleteMinionResponse { disconnected }))
}
