//! The credential RPCs: join tokens (create, list, revoke) and the revocation of CI and admin
//! certificates. It is separate because these decide who may join the fleet or call the
//! master, apart from what the fleet runs.

use std::time::Duration;

use brine_common::identity::CertRole;
use brine_common::names::{MinionId, check_label};
use brine_common::token::JoinToken;
use brine_proto::errors::{failure, invalid};
use brine_proto::{pb, time};
use rand::RngCore;
use tonic::{Code, Request, Response, Status};

use super::paging::{page_size, paged};
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
    let ttl = time::std_duration("ttl", request.ttl)?.unwrap_or(DEFAULT_TOKEN_TTL);
    if ttl > MAX_TOKEN_TTL {
        return Err(invalid("ttl", "at most 30 days"));
    }
    for (key, value) in &request.labels {
        check_label(key, value).map_err(|err| invalid("labels", err))?;
    }
    let replaces = match request.replaces_minion_id.as_str() {
        "" => None,
        id => Some(MinionId::new(id).map_err(|err| invalid("replaces_minion_id", err))?),
    };
    // A replacing token re-enrols one machine.
    let uses = if replaces.is_some() {
        Some(1)
    } else {
        request.max_uses
    };
    if uses == Some(0) {
        return Err(invalid(
            "max_uses",
            "at least 1 (leave it unset for any number)",
        ));
    }
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
            uses_left: uses,
            uses: 0,
            labels: request.labels.into_iter().collect(),
            replaces: replaces.clone(),
        })
        .await
        .map_err(store_failure)?;
    let id = token.public_id();
    tracing::info!(%caller, token.id = %id, ttl = %humantime::format_duration(ttl), ?uses, replaces = replaces.as_ref().map(MinionId::as_str), "join token created");
    Ok(Response::new(pb::CreateJoinTokenResponse {
        token: token.to_string(),
        expires_at: Some(time::timestamp(expires_at_unix_ms)),
        token_id: id,
    }))
}

pub(super) async fn list_join_tokens(
    fleet: &FleetService,
    request: Request<pb::ListJoinTokensRequest>,
) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
    let request = request.into_inner();
    let after = request.page_token;
    let tokens = fleet
        .master
        .store
        .tokens()
        .await
        .map_err(store_failure)?
        .into_iter()
        .map(|t| pb::JoinTokenInfo {
            token_id: t.id,
            created_at: Some(time::timestamp(t.record.created_at_unix_ms)),
            expires_at: Some(time::timestamp(t.record.expires_at_unix_ms)),
            uses: t.record.uses,
            uses_left: t.record.uses_left,
            labels: t.record.labels.into_iter().collect(),
            replaces_minion_id: t.record.replaces.map(String::from).unwrap_or_default(),
        })
        // Newest first: the page after the token's goes on from where it was in that order.
        .skip_while(|t| !after.is_empty() && t.token_id != after)
        .skip(usize::from(!after.is_empty()));
    let (tokens, next_page_token) =
        paged(tokens, page_size(request.page_size), |t| t.token_id.clone());
    Ok(Response::new(pb::ListJoinTokensResponse {
        tokens,
        next_page_token,
    }))
}

pub(super) async fn revoke_join_token(
    fleet: &FleetService,
    request: Request<pb::RevokeJoinTokenRequest>,
) -> Result<Response<pb::RevokeJoinTokenResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let id = request.into_inner().token_id;
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "token_id",
            "a token id is 12 hex digits, as `token list` shows it",
        ));
    }
    match fleet
        .master
        .store
        .revoke_token(id.clone())
        .await
        .map_err(store_failure)?
    {
        false => Err(failure(
            Code::NotFound,
            pb::ErrorReason::TokenNotFound,
            format!("no join token {id}"),
            [("token_id", id.clone())],
        )),
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
    let role = match pb::CertificateRole::try_from(request.role) {
        Ok(pb::CertificateRole::Admin) => CertRole::Admin,
        Ok(pb::CertificateRole::Ci) => CertRole::Ci,
        _ => {
            return Err(invalid(
                "role",
                "ADMIN or CI (revoke a minion with RevokeMinion)",
            ));
        }
    };
    let name = MinionId::new(request.name).map_err(|err| invalid("name", err))?;
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
        revoked_at: Some(time::timestamp(now)),
    }))
}
