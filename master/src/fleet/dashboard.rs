//! The dashboard's sign-in RPCs: a one-time link for a browser, the sessions held, and ending
//! one. Separate because they hand out credentials of another kind than certificates.

use std::time::Duration;

use brine_proto::errors::{failure, invalid};
use brine_proto::{pb, time};
use tonic::{Code, Request, Response, Status};

use super::FleetService;
use crate::auth::Caller;
use crate::dashboard::sessions::{LoginRefused, MAX_SESSION_TTL, MIN_SESSION_TTL};
use crate::state::now_unix_ms;

/// A session lasts a working day unless the caller asks otherwise.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

pub(super) async fn create_dashboard_login(
    fleet: &FleetService,
    request: Request<pb::CreateDashboardLoginRequest>,
) -> Result<Response<pb::CreateDashboardLoginResponse>, Status> {
    // The certificate's name alone: what `dashboard sessions` shows as who made the link.
    let caller = Caller::of(&request)?.identity()?.name.clone();
    let request = request.into_inner();
    let master = &fleet.master;
    let Some(listen) = master.config.dashboard_listen else {
        return Err(failure(
            Code::FailedPrecondition,
            pb::ErrorReason::MasterMisconfigured,
            "the dashboard is off on this master: set dashboard_listen in master.toml (or \
             BRINE_MASTER_DASHBOARD_LISTEN) and restart it",
            [],
        ));
    };
    let ttl = time::std_duration("ttl", request.ttl)?.unwrap_or(DEFAULT_SESSION_TTL);
    if !(MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&ttl) {
        return Err(invalid("ttl", "at least a minute, at most 30 days"));
    }
    let (token, expires_at) = master
        .dashboard
        .create_login(ttl, request.admin, caller.clone(), now_unix_ms())
        .map_err(|err| match err {
            LoginRefused::TooMany => failure(
                Code::ResourceExhausted,
                pb::ErrorReason::Throttled,
                err.to_string(),
                [],
            ),
        })?;
    tracing::info!(%caller, admin = request.admin, ttl = %humantime::format_duration(ttl), "dashboard sign-in link made");
    Ok(Response::new(pb::CreateDashboardLoginResponse {
        login_url: crate::dashboard::login_url(
            listen,
            master.config.advertise_address.as_deref(),
            &token,
        ),
        login_expires_at: Some(time::timestamp(expires_at)),
    }))
}

pub(super) async fn list_dashboard_sessions(
    fleet: &FleetService,
    _request: Request<pb::ListDashboardSessionsRequest>,
) -> Result<Response<pb::ListDashboardSessionsResponse>, Status> {
    let sessions = fleet
        .master
        .dashboard
        .list(now_unix_ms())
        .into_iter()
        .map(|s| pb::DashboardSession {
            session_id: s.id,
            created_at: Some(time::timestamp(s.created_at_unix_ms)),
            expires_at: Some(time::timestamp(s.expires_at_unix_ms)),
            last_seen_at: Some(time::timestamp(s.last_seen_unix_ms)),
            admin: s.admin,
            created_by: s.created_by,
        })
        .collect();
    Ok(Response::new(pb::ListDashboardSessionsResponse {
        sessions,
    }))
}

pub(super) async fn revoke_dashboard_session(
    fleet: &FleetService,
    request: Request<pb::RevokeDashboardSessionRequest>,
) -> Result<Response<pb::RevokeDashboardSessionResponse>, Status> {
    let caller = Caller::of(&request)?.identity()?.to_string();
    let id = request.into_inner().session_id;
    if id.is_empty() {
        return Err(invalid("session_id", "name the session to end"));
    }
    if !fleet.master.dashboard.revoke(&id) {
        return Err(failure(
            Code::NotFound,
            pb::ErrorReason::DashboardSessionNotFound,
            format!("no dashboard session {id:?} (sessions end when the master restarts)"),
            [("session_id", id)],
        ));
    }
    tracing::warn!(%caller, session.id = %id, "dashboard session revoked");
    Ok(Response::new(pb::RevokeDashboardSessionResponse {}))
}
