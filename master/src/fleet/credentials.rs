//! The credential RPCs: join tokens (create, list, revoke) and the revocation of CI and admin
//! certificates. It is separate because these decide who may join the fleet or call the
//! master, apart from what the fleet runs.

use std::time::Duration;

use brine_common::identity::CertRole;
use brine_common::names::{MinionId, check_label};
use brine_common::token::JoinToken;
use brine_proto::pb;
use rand::RngCore;
use tonic::{Request, Response, Status};

use super::{FleetService, store_failure};
use crate::auth::Caller;
use crate::state::now_unix_ms;
use crate::store::TokenRecord;

/// Join tokens live one hour unless the caller asks otherwise, and 30 days at most.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub(super) async fn create_join_token(
    fleet: &FleetService,
    request: Request<pb::CreateJoinTokenRequest>,
) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let request = request.into_inner();
    let ttl = match request.ttl_seconds {
        0 => DEFAULT_TOKEN_TTL,
        seconds => Duration::from_secs(seconds),
    };
    if ttl > MAX_TOKEN_TTL {
        return Err(Status::invalid_argument("ttl_seconds: at most 30 days"));
    }
    for (key, value) in &request.labels {
        check_label(key, value)
            .map_err(|err| Status::invalid_argument(format!("labels: {err}")))?;
    }
    let replaces = match request.replaces_minion_id.as_str() {
        "" => None,
        id => Some(
            MinionId::new(id)
                .map_err(|err| Status::invalid_argument(format!("replaces_minion_id: {err}")))?,
        ),
    };
    // A replacing token re-enrols one machine.
    let uses = if replaces.is_some() { 1 } else { request.uses };
    let mut secret = [0u8; 20];
    rand::rng().fill_bytes(&mut secret);
    let token = JoinToken {
        ca_digest: fleet.master.ca.digest().to_owned(),
        secret: hex::encode(secret),
    };
    let now = now_unix_ms();
    let expires_at_unix_ms = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    fleet
        .master
        .store
        .add_token(TokenRecord {
            secret_sha256: token.secret_hash(),
            created_at_unix_ms: now,
            expires_at_unix_ms,
            uses_left: (uses > 0).then_some(uses),
            uses: 0,
            labels: request.labels.into_iter().collect(),
            replaces: replaces.clone(),
        })
        .await
        .map_err(store_failure)?;
    let id = token.public_id();
    tracing::info!(%caller, token.id = %id, ttl = %humantime::format_duration(ttl), uses, replaces = replaces.as_ref().map(MinionId::as_str), "join token created");
    Ok(Response::new(pb::CreateJoinTokenResponse {
        token: token.to_string(),
        expires_at_unix_ms,
        id,
    }))
}

pub(super) async fn list_join_tokens(
    fleet: &FleetService,
    _request: Request<pb::ListJoinTokensRequest>,
) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
    let tokens = fleet
        .master
        .store
        .tokens()
        .await
        .map_err(store_failure)?
        .into_iter()
        .map(|t| pb::JoinTokenInfo {
            id: t.id,
            created_at_unix_ms: t.record.created_at_unix_ms,
            expires_at_unix_ms: t.record.expires_at_unix_ms,
            uses: t.record.uses,
            uses_left: t.record.uses_left,
            labels: t.record.labels.into_iter().collect(),
            replaces_minion_id: t.record.replaces.map(String::from).unwrap_or_default(),
        })
        .collect();
    Ok(Response::new(pb::ListJoinTokensResponse { tokens }))
}

pub(super) async fn revoke_join_token(
    fleet: &FleetService,
    request: Request<pb::RevokeJoinTokenRequest>,
) -> Result<Response<pb::RevokeJoinTokenResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let id = request.into_inner().id;
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(
            "id: a token id is 12 hex digits, as `token list` shows it",
        ));
    }
    match fleet
        .master
        .store
        .revoke_token(id.clone())
        .await
        .map_err(store_failure)?
    {
        false => Err(Status::not_found(format!("no join token {id}"))),
        true => {
            tracing::warn!(%caller, token.id = %id, "join token revoked");
            Ok(Response::new(pb::RevokeJoinTokenResponse {}))
        }
    }
}

pub(super) async fn revoke_certificate(
    fleet: &FleetService,
    request: Request<pb::RevokeCertificateRequest>,
) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let request = request.into_inner();
    let role = match request.role.parse() {
        Ok(role @ (CertRole::Admin | CertRole::Ci)) => role,
        _ => {
            return Err(Status::invalid_argument(
                "role: `admin` or `ci` (revoke a minion with RevokeMinion)",
            ));
        }
    };
    let name = MinionId::new(request.name)
        .map_err(|err| Status::invalid_argument(format!("name: {err}")))?;
    let now = now_unix_ms();
    fleet
        .master
        .store
        .revoke_certificates(role, name.to_string(), now)
        .await
        .map_err(store_failure)?;
    fleet.master.revocations.revoke(role, name.to_string(), now);
    tracing::warn!(%caller, name = %name, %role, "certificates revoked");
    Ok(Response::new(pb::RevokeCertificateResponse {
        revoked_at_unix_ms: now,
    }))
}
