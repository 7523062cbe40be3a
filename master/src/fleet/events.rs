//! The fleet's events (`Watch`, from the master's event bus) and the failed hook deliveries
//! (`ListHookFailures`, from the store). Separate because they are what operators' tools
//! follow, apart from the jobs and hosts they are about.

use brine_common::fleet_event::{FleetEvent, WatchRequest};
use brine_proto::errors::invalid;
use brine_proto::pb;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{FleetService, JobStream, store_failure};
use crate::store::HOOK_FAILURES_KEPT;

pub(super) async fn watch(
    fleet: &FleetService,
    request: Request<pb::WatchRequest>,
) -> Result<Response<JobStream<pb::WatchResponse>>, Status> {
    let request = WatchRequest::try_from(request.into_inner())
        .map_err(|err| invalid(err.field, err.message))?;
    let events = fleet.master.events.watch(request);
    let stream = ReceiverStream::new(events).map(|event| {
        Ok(pb::WatchResponse {
            event: Some(pb::FleetEvent::from(FleetEvent::clone(&event))),
        })
    });
    Ok(Response::new(Box::pin(stream)))
}

pub(super) async fn list_hook_failures(
    fleet: &FleetService,
    _request: Request<pb::ListHookFailuresRequest>,
) -> Result<Response<pb::ListHookFailuresResponse>, Status> {
    let failures = fleet
        .master
        .store
        .hook_failures(HOOK_FAILURES_KEPT)
        .await
        .map_err(store_failure)?;
    Ok(Response::new(pb::ListHookFailuresResponse {
        failures: failures.into_iter().map(pb::HookFailure::from).collect(),
    }))
}
