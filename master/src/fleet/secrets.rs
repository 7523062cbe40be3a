//! Secrets: set, listed and deleted by an operator; never returned.

use brine_common::names::SecretName;
use brine_common::roles_file::RolesFile;
use brine_common::secret::SecretValue;
use brine_proto::errors::{failure, invalid};
use brine_proto::{pb, time};
use tonic::{Code, Request, Response, Status};

use super::{FleetService, store_failure};
use crate::auth::Caller;
use crate::state::now_unix_ms;
use crate::store::SecretRecord;

/// A secret as the API describes it: never its value.
fn described(name: &SecretName, record: &SecretRecord, roles: Option<&RolesFile>) -> pb::Secret {
    pb::Secret {
        name: name.to_string(),
        fingerprint: record.fingerprint.clone(),
        updated_at: Some(time::timestamp(record.updated_at_unix_ms)),
        updated_by: record.updated_by.clone(),
        used_by: roles.map(|r| r.secret_users(name)).unwrap_or_default(),
    }
}

fn secret_name(field: &str, name: String) -> Result<SecretName, Status> {
    SecretName::new(name).map_err(|err| invalid(field, err))
}

/// The roles file, to say which containers use a secret; a file that cannot be read says
/// nothing, which a listing can bear.
async fn roles_if_readable(fleet: &FleetService) -> Option<RolesFile> {
    crate::roles::load(&fleet.master)
        .await
        .inspect_err(|err| tracing::warn!("secrets listed without their users: {err}"))
        .ok()
}

pub(super) async fn set_secret(
    fleet: &FleetService,
    request: Request<pb::SetSecretRequest>,
) -> Result<Response<pb::SetSecretResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let request = request.into_inner();
    let name = secret_name("name", request.name)?;
    let value = SecretValue::new(request.value).map_err(|err| invalid("value", err))?;
    let record = fleet
        .master
        .vault
        .seal(&name, &value, caller.clone(), now_unix_ms())
        .map_err(|err| {
            tracing::error!("cannot seal secret {name}: {err:#}");
            Status::internal("the master could not seal the secret; see its log")
        })?;
    let previous = fleet
        .master
        .store
        .put_secret(name.clone(), record.clone())
        .await
        .map_err(store_failure)?;
    let changed = previous
        .as_ref()
        .is_some_and(|p| p.fingerprint != record.fingerprint);
    tracing::warn!(%caller, secret = %name, fingerprint = %record.fingerprint, changed, "secret set");
    let roles = roles_if_readable(fleet).await;
    Ok(Response::new(pb::SetSecretResponse {
        secret: Some(described(&name, &record, roles.as_ref())),
        changed,
        created: previous.is_none(),
    }))
}

pub(super) async fn list_secrets(
    fleet: &FleetService,
    _request: Request<pb::ListSecretsRequest>,
) -> Result<Response<pb::ListSecretsResponse>, Status> {
    let secrets = fleet.master.store.secrets().await.map_err(store_failure)?;
    let roles = roles_if_readable(fleet).await;
    Ok(Response::new(pb::ListSecretsResponse {
        secrets: secrets
            .iter()
            .map(|(name, record)| described(name, record, roles.as_ref()))
            .collect(),
    }))
}

pub(super) async fn delete_secret(
    fleet: &FleetService,
    request: Request<pb::DeleteSecretRequest>,
) -> Result<Response<pb::DeleteSecretResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let request = request.into_inner();
    let name = secret_name("name", request.name)?;
    if !request.force {
        // A roles file that cannot be read cannot say the secret is unused.
        let roles = crate::roles::load(&fleet.master).await.map_err(|err| {
            failure(
                Code::FailedPrecondition,
                pb::ErrorReason::RolesFileInvalid,
                format!(
                    "cannot tell whether the roles file uses secret {name}: {err}; fix it, or \
                     delete with force"
                ),
                [],
            )
        })?;
        let users = roles.secret_users(&name);
        if !users.is_empty() {
            return Err(failure(
                Code::FailedPrecondition,
                pb::ErrorReason::SecretInUse,
                format!(
                    "secret {name} is used by {}; remove it from the roles file first, or delete \
                     with force (the next job that needs it then fails)",
                    users.join(", ")
                ),
                [("secret", name.to_string()), ("used_by", users.join(","))],
            ));
        }
    }
    let deleted = fleet
        .master
        .store
        .delete_secret(name.clone())
        .await
        .map_err(store_failure)?
        .ok_or_else(|| {
            failure(
                Code::NotFound,
                pb::ErrorReason::SecretNotFound,
                format!("there is no secret {name}"),
                [("secret", name.to_string())],
            )
        })?;
    tracing::warn!(%caller, secret = %name, "secret deleted");
    Ok(Response::new(pb::DeleteSecretResponse {
        deleted: Some(described(&name, &deleted, None)),
    }))
}
