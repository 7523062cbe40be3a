//! The web dashboard (`dashboard_listen` in master.toml): the fleet, its hosts, jobs and lock as
//! HTML pages, served over HTTPS with the master's own certificate, to browsers signed in with
//! a one-time link (`brine-master dashboard login`).
//!
//! Nothing is served without a session but `/login`: every other path, static files and
//! unknown ones included, answers 401 with the signed-out page. Pages are rendered on the
//! server (`pages.rs`, maud, escaped by construction) and work without JavaScript; the one
//! script, `live.js`, follows `/events/stream` (Server-Sent Events of the fleet's event bus)
//! and updates them in place. No resource comes from elsewhere. The one action,
//! `POST /lock/release`, needs an admin session, the session's CSRF token and, when the
//! browser says where the form came from, this origin. `sessions.rs` holds the sign-in links
//! and sessions, `tls.rs` the HTTPS server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN,
    REFERRER_POLICY, SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use brine_common::fleet_event::{FleetEventKind, WatchRequest};
use brine_common::names::MinionId;
use brine_common::outcome::JobId;
use brine_common::target::Target;
use futures::StreamExt;
use maud::Markup;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::highstate::is_targeted;
use crate::state::{Master, now_unix_ms};

mod pages;
pub mod sessions;
mod tls;

pub use sessions::Sessions;
pub use tls::{serve, tls_config};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "brine_session";
/// Hosts per page of the fleet view, jobs per page of the jobs view. A job's record holds every
/// host's report, and the store reads it whole: 25 jobs over 1,000 hosts are 25,000 reports.
const HOSTS_PER_PAGE: usize = 100;
const JOBS_PER_PAGE: usize = 25;
/// How many of a host's events its page shows.
const HOST_EVENTS_SHOWN: usize = 50;
/// How many recent jobs tell each host's last job when the dashboard starts; from then on the
/// fleet's events keep it.
const JOBS_READ_AT_START: usize = 20;

const LIVE_JS: &str = include_str!("dashboard/live.js");

/// The login link's `HOST:PORT` for a dashboard listening on `listen`: an unspecified address
/// is reached through the master's advertised name, or on this machine.
pub fn login_url(listen: std::net::SocketAddr, advertise: Option<&str>, token: &str) -> String {
    let host = if listen.ip().is_unspecified() {
        advertise
            .and_then(|address| address.rsplit_once(':').map(|(host, _)| host.to_owned()))
            .unwrap_or_else(|| "127.0.0.1".to_owned())
    } else {
        match listen.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    format!("https://{host}:{}/login?token={token}", listen.port())
}

/// Each host's newest job, as the fleet view shows it: read from the newest recorded jobs at
/// start, then kept from the fleet's events, so that no page reads every job.
#[derive(Debug, Default)]
pub(crate) struct LastJobs {
    jobs: Mutex<HashMap<MinionId, JobId>>,
}

impl LastJobs {
    fn get(&self, host: &MinionId) -> Option<JobId> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .cloned()
    }

    fn set(&self, host: MinionId, job: JobId) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host, job);
    }

    /// Reads the newest jobs, then follows the fleet's events until `stopping`.
    async fn keep(self: Arc<Self>, master: Arc<Master>, stopping: CancellationToken) {
        // Subscribed first, so that no job between the read and the events is missed.
        let mut events = master.events.watch(WatchRequest {
            follow: true,
            kinds: ["job_started"].into(),
            ..Default::default()
        });
        match master.store.jobs_before(None, JOBS_READ_AT_START).await {
            Ok(jobs) => {
                // Oldest first, so that the newest wins.
                for job in jobs.into_iter().rev() {
                    for host in job.targets {
                        self.set(host, job.summary.job_id.clone());
                    }
                }
            }
            Err(err) => tracing::warn!("dashboard: cannot read the recent jobs: {err}"),
        }
        loop {
            let event = tokio::select! {
                () = stopping.cancelled() => return,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            if let FleetEventKind::JobStarted {
                job_id, targets, ..
            } = &event.what
            {
                for host in targets {
                    self.set(host.clone(), job_id.clone());
                }
            }
        }
    }
}

/// What the handlers share.
pub(crate) struct Dashboard {
    master: Arc<Master>,
    last_jobs: Arc<LastJobs>,
}

type Shared = Arc<Dashboard>;

/// The dashboard's routes.
fn router(dashboard: Shared) -> Router {
    Router::new()
        .route("/login", get(login))
        .route("/", get(fleet))
        .route("/hosts/{id}", get(host))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/lock", get(lock))
        .route("/releases", get(releases))
        .route("/lock/release", post(release_lock))
        .route("/events/stream", get(event_stream))
        .route("/static/live.js", get(live_js))
        .fallback(not_found)
        .with_state(dashboard)
}

/// Headers every answer carries: nothing from elsewhere, no framing, no caching, no referrer
/// (a sign-in link must not travel on).
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
             img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn html(status: StatusCode, markup: Markup) -> Response {
    secure(
        (
            status,
            [(CONTENT_TYPE, "text/html; charset=utf-8")],
            markup.into_string(),
        )
            .into_response(),
    )
}

fn signed_out(invalid_link: bool) -> Response {
    html(StatusCode::UNAUTHORIZED, pages::signed_out(invalid_link))
}

/// A signed-in browser: every handler but `/login` takes one, so nothing else is served
/// without a session.
pub(crate) struct Viewer(sessions::Session);

impl FromRequestParts<Shared> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        session_cookie(&parts.headers)
            .and_then(|cookie| state.master.dashboard.session(cookie, now_unix_ms()))
            .map(Viewer)
            .ok_or_else(|| signed_out(false))
    }
}

/// The value of the session cookie the browser sent, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

async fn login(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let token = query.get("token").map(String::as_str).unwrap_or_default();
    let Some(started) = state.master.dashboard.redeem(token, now_unix_ms()) else {
        tracing::info!("dashboard: a sign-in link was refused (unknown, expired or used)");
        return signed_out(true);
    };
    let session = &started.session;
    tracing::info!(
        session.id = %session.id,
        created_by = %session.created_by,
        admin = session.admin,
        "dashboard: a browser signed in"
    );
    let max_age = (session.expires_at_unix_ms - session.created_at_unix_ms) / 1000;
    let cookie = format!(
        "{COOKIE_NAME}={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}",
        started.cookie
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/"));
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    secure(response)
}

fn store_failed(err: crate::store::StoreError) -> Response {
    tracing::error!("dashboard: {err}");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::failure("The master's store failed; see the master's log."),
    )
}

fn approval_word(approval: crate::store::Approval) -> &'static str {
    match approval {
        crate::store::Approval::Accepted => "accepted",
        crate::store::Approval::Pending => "pending",
        crate::store::Approval::Rejected => "rejected",
        crate::store::Approval::Revoked => "revoked",
    }
}

async fn fleet(
    viewer: Viewer,
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let master = &state.master;
    let text = query
        .get("target")
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let (target, error) = if text.is_empty() {
        (None, None)
    } else {
        match Target::parse(&text) {
            Ok(target) => (Some(target), None),
            Err(err) => (None, Some(err.to_string())),
        }
    };
    let hosts = match master.store.minions().await {
        Ok(hosts) => hosts,
        Err(err) => return store_failed(err),
    };
    let (roles, roles_error) = match crate::roles::load(master).await {
        Ok(roles) => (Some(roles), None),
        Err(err) => (None, Some(format!("the roles file: {err}"))),
    };
    let matching: Vec<_> = hosts
        .iter()
        .filter(|host| match (&target, &roles) {
            (Some(target), Some(roles)) => is_targeted(target, host, roles),
            (Some(_), None) => false,
            _ => true,
        })
        .collect();
    let total = matching.len();
    let rows = matching
        .into_iter()
        .skip((page - 1) * HOSTS_PER_PAGE)
        .take(HOSTS_PER_PAGE)
        .map(|host| pages::HostRow {
            id: host.id.to_string(),
            linked: crate::relay::link_holder(master, &host.id).is_some(),
            approval: approval_word(host.approval),
            roles: roles
                .as_ref()
                .map(|roles| {
                    roles
                        .roles_for(&host.id)
                        .into_iter()
                        .map(ToString::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            containers: host.running.len(),
            not_running: host.running.iter().filter(|c| c.state != "running").count(),
            last_job: state.last_jobs.get(&host.id).map(|job| job.to_string()),
        })
        .collect();
    html(
        StatusCode::OK,
        pages::fleet(
            &viewer.0,
            pages::FleetView {
                target: text,
                error: error.or(roles_error),
                rows,
                page,
                pages: total.div_ceil(HOSTS_PER_PAGE).max(1),
                total,
            },
        ),
    )
}

async fn host(viewer: Viewer, State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let Ok(id) = MinionId::new(id) else {
        return html(StatusCode::NOT_FOUND, pages::failure("No such host."));
    };
    let master = &state.master;
    let record = match master.store.minion(id.clone()).await {
        Ok(Some(record)) => record,
        Ok(None) => return html(StatusCode::NOT_FOUND, pages::failure("No such host.")),
        Err(err) => return store_failed(err),
    };
    let events = match master
        .store
        .host_events(id.clone(), HOST_EVENTS_SHOWN)
        .await
    {
        Ok(events) => events,
        Err(err) => return store_failed(err),
    };
    let linked = crate::relay::link_holder(master, &id);
    let last_job = state.last_jobs.get(&id).map(|job| job.to_string());
    html(
        StatusCode::OK,
        pages::host(
            &viewer.0,
            &record,
            approval_word(record.approval),
            linked,
            last_job,
            &events,
        ),
    )
}

async fn jobs(
    viewer: Viewer,
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let before = query.get("before").filter(|b| !b.is_empty()).cloned();
    let mut records = match state
        .master
        .store
        .jobs_before(before.clone(), JOBS_PER_PAGE + 1)
        .await
    {
        Ok(records) => records,
        Err(err) => return store_failed(err),
    };
    let more = records.len() > JOBS_PER_PAGE;
    records.truncate(JOBS_PER_PAGE);
    let next = more
        .then(|| records.last().map(|r| r.summary.job_id.to_string()))
        .flatten();
    html(
        StatusCode::OK,
        pages::jobs(&viewer.0, &records, before.is_some(), next),
    )
}

async fn job(viewer: Viewer, State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match state.master.store.job(id).await {
        Ok(Some(record)) => html(StatusCode::OK, pages::job(&viewer.0, &record)),
        Ok(None) => html(StatusCode::NOT_FOUND, pages::failure("No such job.")),
        Err(err) => store_failed(err),
    }
}

async fn lock(viewer: Viewer, State(state): State<Shared>) -> Response {
    match state.master.store.current_lock(now_unix_ms()).await {
        Ok(lock) => html(StatusCode::OK, pages::lock(&viewer.0, lock.as_ref(), None)),
        Err(err) => store_failed(err),
    }
}

/// How many releases the releases page shows, newest first.
const RELEASES_SHOWN: usize = 50;

async fn releases(
    viewer: Viewer,
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match state.master.store.releases().await {
        Ok(mut releases) => {
            // `?from=A&to=B`: what changed between two releases, wherever they are in the list.
            let numbered = |key: &str| query.get(key).and_then(|n| n.parse::<u64>().ok());
            let compared = match (numbered("from"), numbered("to")) {
                (Some(from), Some(to)) => {
                    let find = |id| releases.iter().find(|r| r.id == id);
                    match (find(from), find(to)) {
                        (Some(a), Some(b)) => Some(pages::Compared {
                            from,
                            to,
                            changes: crate::release::diff(&a.pins, &b.pins),
                        }),
                        _ => None,
                    }
                }
                _ => None,
            };
            releases.reverse();
            releases.truncate(RELEASES_SHOWN);
            html(
                StatusCode::OK,
                pages::releases(&viewer.0, &releases, compared.as_ref()),
            )
        }
        Err(err) => store_failed(err),
    }
}

/// Whether a form came from this dashboard, as far as the browser says: its `Origin` is this
/// origin and its `Sec-Fetch-Site` is `same-origin`, when it sends them.
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = header("sec-fetch-site")
        && site != "same-origin"
    {
        return false;
    }
    match (header(ORIGIN.as_str()), header(HOST.as_str())) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin == format!("https://{host}"),
        (Some(_), None) => false,
    }
}

async fn release_lock(
    viewer: Viewer,
    State(state): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let session = &viewer.0;
    let refused = |message: &str| {
        tracing::warn!(session.id = %session.id, "dashboard: lock release refused: {message}");
        html(StatusCode::FORBIDDEN, pages::failure(message))
    };
    if !session.admin {
        return refused("This session is read-only: releasing the lock needs an admin session.");
    }
    if !same_origin(&headers) {
        return refused("The form did not come from this dashboard.");
    }
    let csrf = form_urlencoded_value(&body, "csrf").unwrap_or_default();
    if !session.csrf_matches(&csrf) {
        return refused("The form is stale or did not come from this dashboard; reload the page.");
    }
    let master = &state.master;
    let now = now_unix_ms();
    let held = match master.store.current_lock(now).await {
        Ok(held) => held,
        Err(err) => return store_failed(err),
    };
    if let Some(job) = held
        .as_ref()
        .and_then(|lock| lock.job_id.as_deref())
        .and_then(|job| JobId::new(job).ok())
        .filter(|job| master.feeds.get(job).is_some())
    {
        return html(
            StatusCode::CONFLICT,
            pages::lock(
                session,
                held.as_ref(),
                Some(format!(
                    "Job {job} holds the lock while it runs; cancel it with `brine-master jobs \
                     cancel {job}`, or release the lock with `brine-master lock release --force`."
                )),
            ),
        );
    }
    match master.store.release_lock(None).await {
        Ok(released) => {
            if let Some(lock) = released {
                tracing::warn!(
                    session.id = %session.id,
                    created_by = %session.created_by,
                    holder = %lock.holder,
                    "fleet lock released from the dashboard"
                );
            }
            let mut response = StatusCode::SEE_OTHER.into_response();
            response
                .headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/lock"));
            secure(response)
        }
        Err(err) => store_failed(err),
    }
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_urlencoded_value(body: &str, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// The fleet's events, live, as Server-Sent Events whose data is each event's documented JSON
/// form. The stream ends when the session does, or the master stops.
async fn event_stream(viewer: Viewer, State(state): State<Shared>) -> Response {
    let events = state.master.events.watch(WatchRequest {
        follow: true,
        kinds: [
            "host_linked",
            "host_lost",
            "job_started",
            "host_reported",
            "job_finished",
        ]
        .into(),
        ..Default::default()
    });
    let (master, id) = (state.master.clone(), viewer.0.id);
    let stream = ReceiverStream::new(events)
        .take_while(move |_| std::future::ready(master.dashboard.holds(&id, now_unix_ms())))
        .map(|event| {
            Ok::<_, std::convert::Infallible>(
                Event::default().data(serde_json::to_string(&*event).unwrap_or_default()),
            )
        });
    secure(
        Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
    )
}

async fn live_js(_viewer: Viewer) -> Response {
    secure(([(CONTENT_TYPE, "text/javascript; charset=utf-8")], LIVE_JS).into_response())
}

async fn not_found(_viewer: Viewer) -> Response {
    html(StatusCode::NOT_FOUND, pages::failure("No such page."))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn the_login_link_names_where_the_dashboard_listens() {
        let at = |listen: &str, advertise| login_url(listen.parse().unwrap(), advertise, "T");
        assert_eq!(
            at("10.0.0.5:4443", None),
            "https://10.0.0.5:4443/login?token=T"
        );
        assert_eq!(
            at("0.0.0.0:4443", None),
            "https://127.0.0.1:4443/login?token=T"
        );
        assert_eq!(
            at("0.0.0.0:4443", Some("master-1.example.com:4700")),
            "https://master-1.example.com:4443/login?token=T"
        );
        assert_eq!(at("[::1]:4443", None), "https://[::1]:4443/login?token=T");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; brine_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
        headers.insert(COOKIE, HeaderValue::from_static("brine_sessionx=abc"));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn forms_must_come_from_this_origin_when_the_browser_says() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(same_origin(&headers(&[("host", "m:4443")])));
        assert!(same_origin(&headers(&[
            ("host", "m:4443"),
            ("origin", "https://m:4443"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "m:4443"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "m:4443"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "m:4443"),
            ("origin", "http://m:4443")
        ])));
    }

    #[test]
    fn the_csrf_field_is_read_from_the_form() {
        assert_eq!(
            form_urlencoded_value("a=1&csrf=ab%2Bc", "csrf").as_deref(),
            Some("ab+c")
        );
        assert_eq!(form_urlencoded_value("a=1", "csrf"), None);
    }
}
