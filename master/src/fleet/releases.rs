//! The releases, oldest first, a page at a time. It is separate because releases are what a
//! rollback chooses from, apart from the jobs that made them.

use brine_proto::errors::invalid;
use brine_proto::{pb, time};
use tonic::{Request, Response, Status};

use super::paging::{page_size, paged};
use super::{FleetService, store_failure};

pub(super) async fn list_releases(
    fleet: &FleetService,
    request: Request<pb::ListReleasesRequest>,
) -> Result<Response<pb::ListReleasesResponse>, Status> {
    let request = request.into_inner();
    let after = match request.page_token.as_str() {
        "" => 0,
        token => token
            .parse::<u64>()
            .map_err(|_| invalid("page_token", "not one this master gave"))?,
    };
    let releases = fleet
        .master
        .store
        .releases()
        .await
        .map_err(store_failure)?
        .into_iter()
        .filter(|r| r.id > after)
        .map(|r| pb::Release {
            release_id: r.id,
            job_id: r.job_id,
            caller: r.caller,
            created_at: Some(time::timestamp(r.created_at_unix_ms)),
            pins: r
                .pins
                .into_iter()
                .flat_map(|(role, containers)| {
                    containers
                        .into_iter()
                        .map(move |(container, image)| pb::Pin {
                            role: role.to_string(),
                            container: container.into(),
                            image: image.into(),
                        })
                })
                .collect(),
        });
    let (releases, next_page_token) = paged(releases, page_size(request.page_size), |release| {
        release.release_id.to_string()
    });
    Ok(Response::new(pb::ListReleasesResponse {
        releases,
        next_page_token,
    }))
}
