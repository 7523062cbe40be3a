//! The roles file kept in the store, for masters that share one: applying a new version,
//! reading one, listing them.

use brine_proto::errors::failure;
use brine_proto::{pb, time};
use tonic::{Code, Request, Response, Status};

use super::{FleetService, store_failure};
use crate::auth::Caller;
use crate::roles::ApplyRolesError;
use crate::store::{RolesApplied, RolesVersion};

/// A version as the API carries it, with its text or without.
fn version_message(version: RolesVersion, with_text: bool) -> pb::RolesVersion {
    pb::RolesVersion {
        version: version.version,
        text: if with_text {
            version.text
        } else {
            String::new()
        },
        sha256: version.sha256,
        applied_by: version.applied_by,
        applied_at: Some(time::timestamp(version.applied_at_unix_ms)),
    }
}

pub(super) async fn apply_roles(
    fleet: &FleetService,
    request: Request<pb::ApplyRolesRequest>,
) -> Result<Response<pb::ApplyRolesResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let request = request.into_inner();
    let file_name = match request.file_name.trim() {
        "" => "roles.toml",
        name => name,
    };
    let applied = crate::roles::apply(&fleet.master, request.text, file_name, caller.clone())
        .await
        .map_err(|err| {
            let message = err.to_string();
            match err {
                ApplyRolesError::Store(err) => store_failure(err),
                ApplyRolesError::ReadFromFile { .. } => failure(
                    Code::FailedPrecondition,
                    pb::ErrorReason::MasterMisconfigured,
                    message,
                    [],
                ),
                ApplyRolesError::TooLarge { .. } => brine_proto::errors::invalid("text", message),
                ApplyRolesError::Invalid(_) => failure(
                    Code::FailedPrecondition,
                    pb::ErrorReason::RolesFileInvalid,
                    message,
                    [],
                ),
            }
        })?;
    let response = match applied {
        RolesApplied::Added { version, previous } => {
            tracing::warn!(%caller, roles.version = version.version, "roles file applied");
            pb::ApplyRolesResponse {
                roles: Some(version_message(version, true)),
                changed: true,
                previous_version: previous.unwrap_or(0),
            }
        }
        RolesApplied::Unchanged(version) => pb::ApplyRolesResponse {
            roles: Some(version_message(version, true)),
            changed: false,
            previous_version: 0,
        },
    };
    Ok(Response::new(response))
}

pub(super) async fn get_roles(
    fleet: &FleetService,
    request: Request<pb::GetRolesRequest>,
) -> Result<Response<pb::GetRolesResponse>, Status> {
    let asked = request.into_inner().version;
    let version = fleet
        .master
        .store
        .roles_version((asked != 0).then_some(asked))
        .await
        .map_err(store_failure)?
        .ok_or_else(|| {
            let message = match asked {
                0 => "no roles file was applied to this fleet".to_owned(),
                n => format!("roles version {n} is not kept"),
            };
            failure(Code::NotFound, pb::ErrorReason::NoRoles, message, [])
        })?;
    Ok(Response::new(pb::GetRolesResponse {
        roles: Some(version_message(version, true)),
    }))
}

pub(super) async fn list_roles_versions(
    fleet: &FleetService,
    _request: Request<pb::ListRolesVersionsRequest>,
) -> Result<Response<pb::ListRolesVersionsResponse>, Status> {
    let versions = fleet
        .master
        .store
        .roles_versions()
        .await
        .map_err(store_failure)?
        .into_iter()
        .map(|version| version_message(version, false))
        .collect();
    Ok(Response::new(pb::ListRolesVersionsResponse { versions }))
}
