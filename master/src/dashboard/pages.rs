//! The dashboard's pages, rendered with maud (every value escaped). Their markup is a contract
//! that browser tests and `live.js` rely on: ids, classes and `data-` attributes named in the
//! README's "Dashboard".

use std::time::{Duration, UNIX_EPOCH};

use brine_common::fleet_event::JobOutcome;
use brine_common::host::HostEvent;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::sessions::Session;
use crate::release::{PinChange, Release};
use crate::store::{JobRecord, LockRecord, MinionRecord};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
nav{background:#2b3a4a;padding:.6em 1em}nav a{color:#fff;margin-right:1.2em;text-decoration:none}\
nav .who{color:#bcd;float:right}main{padding:1em}table{border-collapse:collapse}\
td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left}\
.error{color:#a00}.muted{color:#777}svg text{font-size:11px}\
.pull{fill:#6a9fd4}.containers{fill:#e0a040}.health{fill:#6bbf6b}";

fn time(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms.unsigned_abs());
    humantime::format_rfc3339_seconds(at).to_string()
}

fn page(session: Option<&Session>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "brine · " (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    a href="/" { "Fleet" }
                    a href="/jobs" { "Jobs" }
                    a href="/lock" { "Lock" }
                    a href="/releases" { "Releases" }
                    @if let Some(session) = session {
                        span.who {
                            @if session.admin { "admin session" } @else { "read-only session" }
                        }
                    }
                }
                main { (body) }
                @if session.is_some() {
                    script src="/static/live.js" defer {}
                }
            }
        }
    }
}

/// The page of a browser without a session, or with a sign-in link that does not work.
pub fn signed_out(invalid_link: bool) -> Markup {
    page(
        None,
        "signed out",
        html! {
            div id="signed-out" {
                h1 { "Signed out" }
                @if invalid_link {
                    p { "This sign-in link is invalid or has been used (links work once, for 5 minutes)." }
                } @else {
                    p { "You are not signed in, or your session ended." }
                }
                p { "An operator makes a sign-in link with " code { "brine-master dashboard login" } "." }
            }
        },
    )
}

/// A page that says what went wrong.
pub fn failure(message: &str) -> Markup {
    page(None, "error", html! { p.error { (message) } })
}

/// One host in the fleet view.
pub struct HostRow {
    pub id: String,
    pub linked: bool,
    pub approval: &'static str,
    pub roles: Vec<String>,
    pub containers: usize,
    /// Of those, how many are not running (exited, restarting, ...).
    pub not_running: usize,
    pub last_job: Option<String>,
}

pub struct FleetView {
    pub target: String,
    pub error: Option<String>,
    pub rows: Vec<HostRow>,
    /// From 1.
    pub page: usize,
    pub pages: usize,
    pub total: usize,
}

fn page_link(target: &str, page: usize) -> String {
    let mut query = vec![("page", page.to_string())];
    if !target.is_empty() {
        query.insert(0, ("target", target.to_owned()));
    }
    format!(
        "/?{}",
        serde_urlencoded::to_string(query).unwrap_or_default()
    )
}

pub fn fleet(session: &Session, view: FleetView) -> Markup {
    page(
        Some(session),
        "fleet",
        html! {
            h1 { "Fleet" }
            form method="get" action="/" {
                label { "Target " input name="target" value=(view.target) placeholder="role:web and not web-3" size="40"; }
                " " button type="submit" { "Show" }
            }
            @if let Some(error) = &view.error {
                p.error { (error) }
            }
            p.muted { (view.total) " hosts · page " (view.page) " of " (view.pages) }
            table id="hosts" {
                thead { tr { th { "Host" } th { "Link" } th { "Approval" } th { "Roles" } th { "Containers" } th { "Last job" } } }
                tbody {
                    @for row in &view.rows {
                        tr data-host=(row.id) {
                            td.id { a href={ "/hosts/" (row.id) } { (row.id) } }
                            td.link { @if row.linked { "linked" } @else { "not linked" } }
                            td.approval { (row.approval) }
                            td.roles { (row.roles.join(", ")) }
                            td.containers {
                                (row.containers)
                                @if row.not_running > 0 { " (" (row.not_running) " unhealthy)" }
                            }
                            td."last-job" {
                                @if let Some(job) = &row.last_job { a href={ "/jobs/" (job) } { (job) } }
                            }
                        }
                    }
                }
            }
            p {
                @if view.page > 1 { a rel="prev" href=(page_link(&view.target, view.page - 1)) { "← previous" } " " }
                @if view.page < view.pages { a rel="next" href=(page_link(&view.target, view.page + 1)) { "next →" } }
            }
        },
    )
}

pub fn host(
    session: &Session,
    record: &MinionRecord,
    approval: &str,
    linked_to: Option<String>,
    last_job: Option<String>,
    events: &[HostEvent],
) -> Markup {
    let facts = &record.facts;
    page(
        Some(session),
        record.id.as_str(),
        html! {
            h1 { "Host " (record.id) }
            table id="facts" {
                tr { th { "Link" } td.link { @match &linked_to { Some(master) => { "linked (to " (master) ")" }, None => "not linked" } } }
                tr { th { "Approval" } td { (approval) } }
                tr { th { "Last seen" } td { (time(record.last_seen_unix_ms)) } }
                tr { th { "Hostname" } td { (facts.hostname) } }
                tr { th { "OS" } td { (facts.os) } }
                tr { th { "Kernel" } td { (facts.kernel) } }
                tr { th { "Docker" } td { (facts.docker_version) } }
                tr { th { "CPUs" } td { (facts.cpus) } }
                tr { th { "Memory" } td { (facts.memory_bytes / (1024 * 1024)) " MiB" } }
                tr { th { "Labels" } td { @for (k, v) in facts.labels.iter().chain(&record.join_labels) { (k) "=" (v) " " } } }
                tr { th { "Certificate expires" } td { (time(record.certificate_expires_unix_ms)) } }
                tr { th { "Last job" } td."last-job" { @if let Some(job) = &last_job { a href={ "/jobs/" (job) } { (job) } } } }
            }
            h2 { "Containers" }
            table id="containers" {
                thead { tr { th { "Name" } th { "Role" } th { "State" } th { "Image" } } }
                tbody {
                    @for c in &record.running {
                        tr data-container=(c.name) {
                            td { (c.name) } td { (c.role) } td.state { (c.state) } td { (c.image) }
                        }
                    }
                }
            }
            h2 { "Recent events" }
            table id="host-events" {
                thead { tr { th { "When (host's clock)" } th { "Kind" } th { "Message" } } }
                tbody {
                    @for event in events {
                        tr { td { (time(event.at_unix_ms)) } td.kind { (event.kind.as_str()) } td { (event.message) } }
                    }
                }
            }
        },
    )
}

fn outcome_word(outcome: JobOutcome) -> &'static str {
    match outcome {
        JobOutcome::Succeeded => "succeeded",
        JobOutcome::Partial => "partial",
        JobOutcome::Failed => "failed",
        JobOutcome::Cancelled => "cancelled",
    }
}

fn job_status(record: &JobRecord) -> &'static str {
    if record.running {
        "running"
    } else {
        outcome_word(JobOutcome::of(&record.summary))
    }
}

fn job_kind(record: &JobRecord) -> &'static str {
    match record.kind {
        Some(kind) => kind.as_str(),
        None if record.plan => "plan",
        None => "highstate",
    }
}

pub fn jobs(session: &Session, records: &[JobRecord], older: bool, next: Option<String>) -> Markup {
    page(
        Some(session),
        "jobs",
        html! {
            h1 { "Jobs" }
            table id="jobs" {
                thead { tr { th { "Job" } th { "Status" } th { "Kind" } th { "Started" } th { "Hosts" } th { "By" } } }
                tbody {
                    @for record in records {
                        @let id = record.summary.job_id.to_string();
                        tr data-job=(id) {
                            td.id { a href={ "/jobs/" (id) } { (id) } }
                            td.status { (job_status(record)) }
                            td.kind { (job_kind(record)) }
                            td.started { (time(record.summary.started_at_unix_ms)) }
                            td.hosts { (record.targets.len().max(record.summary.hosts.len())) }
                            td.caller { (record.caller) }
                        }
                    }
                }
            }
            p {
                @if older { a rel="prev" href="/jobs" { "← newest" } " " }
                @if let Some(next) = next {
                    a rel="next" href={ "/jobs?before=" (next) } { "older →" }
                }
            }
        },
    )
}

/// Pixels per millisecond of the timeline, so that the slowest host spans `WIDTH`.
const TIMELINE_WIDTH: f64 = 600.0;
const TIMELINE_ROW: u32 = 22;
const TIMELINE_LABEL: f64 = 160.0;

pub fn job(session: &Session, record: &JobRecord) -> Markup {
    let id = record.summary.job_id.to_string();
    let state = if record.running {
        "running"
    } else {
        "finished"
    };
    // Every target, with its report if it has one (and any report of a host not targeted).
    let mut reports: std::collections::BTreeMap<_, _> = record
        .summary
        .hosts
        .iter()
        .map(|r| (&r.minion_id, r))
        .collect();
    let mut hosts: Vec<(String, Option<&brine_common::outcome::HostReport>)> = record
        .targets
        .iter()
        .map(|host| (host.to_string(), reports.remove(host)))
        .collect();
    hosts.extend(
        reports
            .into_values()
            .map(|report| (report.minion_id.to_string(), Some(report))),
    );
    let longest = hosts
        .iter()
        .filter_map(|(_, r)| *r)
        .map(|r| r.timings.pull_ms + r.timings.containers_ms + r.timings.health_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let scale = TIMELINE_WIDTH / longest;
    let height = TIMELINE_ROW * u32::try_from(hosts.len()).unwrap_or(u32::MAX).max(1);
    page(
        Some(session),
        &id,
        html! {
            div id="job" data-state=(state) data-job=(id) {
                h1 { "Job " (id) }
                p {
                    span.kind { (job_kind(record)) } " by " (record.caller)
                    " · started " (time(record.summary.started_at_unix_ms))
                    " · " span.status { (job_status(record)) }
                    @if !record.target.is_empty() { " · target " code { (record.target) } }
                }
                table id="job-hosts" {
                    thead { tr { th { "Host" } th { "Status" } th { "Time" } th { "Error" } } }
                    tbody {
                        @for (host, report) in &hosts {
                            tr data-host=(host) {
                                td.id { a href={ "/hosts/" (host) } { (host) } }
                                td.status { @match report { Some(r) => (r.status.as_str()), None => @if record.running { "running" } @else { "no report" } } }
                                td.duration { @if let Some(r) = report { (r.duration_ms) " ms" } }
                                td.error { @if let Some(error) = report.and_then(|r| r.error.as_ref()) { (error) } }
                            }
                        }
                    }
                }
                h2 { "Where the time went" }
                p.muted { "Per host: pulling images (blue), changing containers (orange), health gates (green)." }
                svg id="timeline" xmlns="http://www.w3.org/2000/svg" width=(TIMELINE_LABEL + TIMELINE_WIDTH + 80.0) height=(height) {
                    @for (n, (host, report)) in hosts.iter().enumerate() {
                        @let y = n as u32 * TIMELINE_ROW;
                        @let timings = report.map(|r| r.timings).unwrap_or_default();
                        @let pull = timings.pull_ms as f64 * scale;
                        @let containers = timings.containers_ms as f64 * scale;
                        @let health = timings.health_ms as f64 * scale;
                        g data-host=(host) {
                            text x="0" y=(y + 15) { (host) }
                            rect class="phase pull" x=(TIMELINE_LABEL) y=(y + 3) width=(format!("{pull:.1}")) height="16" {
                                title { (host) ": pull " (timings.pull_ms) " ms" }
                            }
                            rect class="phase containers" x=(format!("{:.1}", TIMELINE_LABEL + pull)) y=(y + 3) width=(format!("{containers:.1}")) height="16" {
                                title { (host) ": containers " (timings.containers_ms) " ms" }
                            }
                            rect class="phase health" x=(format!("{:.1}", TIMELINE_LABEL + pull + containers)) y=(y + 3) width=(format!("{health:.1}")) height="16" {
                                title { (host) ": health " (timings.health_ms) " ms" }
                            }
                            text x=(format!("{:.1}", TIMELINE_LABEL + pull + containers + health + 4.0)) y=(y + 15) {
                                (timings.pull_ms + timings.containers_ms + timings.health_ms) " ms"
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn lock(session: &Session, lock: Option<&LockRecord>, message: Option<String>) -> Markup {
    page(
        Some(session),
        "lock",
        html! {
            h1 { "Fleet lock" }
            @if let Some(message) = &message { p.error { (message) } }
            div id="lock" data-locked=(if lock.is_some() { "true" } else { "false" }) {
                @match lock {
                    Some(lock) => {
                        p { "Held by " strong.holder { (lock.holder) } " since " span.since { (time(lock.acquired_at_unix_ms)) } ", until " (time(lock.expires_at_unix_ms)) "." }
                        p { "Why: " span.message { (lock.message) } }
                        @if let Some(job) = &lock.job_id { p { "Job: " a href={ "/jobs/" (job) } { (job) } } }
                    }
                    None => p { "The fleet is not locked." }
                }
                form method="post" action="/lock/release" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    @if session.admin {
                        button type="submit" { "Release the lock" }
                    } @else {
                        p.muted { "This session is read-only; releasing the lock needs an admin session." }
                    }
                }
            }
        },
    )
}

/// Two releases compared: the containers whose image changed between them.
pub struct Compared {
    pub from: u64,
    pub to: u64,
    pub changes: Vec<PinChange>,
}

/// The releases, newest first: what each role ran, and the command that goes back to it; with
/// `compared`, what changed between two of them.
pub fn releases(session: &Session, releases: &[Release], compared: Option<&Compared>) -> Markup {
    let image = |image: &Option<brine_common::spec::ImageRef>| match image {
        Some(image) => html! { code { (image) } },
        None => html! { span.absent { "(not run)" } },
    };
    page(
        Some(session),
        "releases",
        html! {
            h1 { "Releases" }
            @if releases.is_empty() { p { "No release yet: a successful rollout records one." } }
            @if releases.len() > 1 {
                form method="get" action="/releases" {
                    label { "Compare release " input type="number" name="from" min="1" value=(compared.map_or(releases[1].id, |c| c.from)); }
                    label { " with " input type="number" name="to" min="1" value=(compared.map_or(releases[0].id, |c| c.to)); }
                    " " button type="submit" { "Compare" }
                }
            }
            @if let Some(compared) = compared {
                h2 { "From release " (compared.from) " to " (compared.to) }
                @if compared.changes.is_empty() { p { "The same images." } }
                @else {
                    table id="release-diff" {
                        thead { tr { th { "Role" } th { "Container" } th { "Release " (compared.from) } th { "Release " (compared.to) } } }
                        tbody {
                            @for change in &compared.changes {
                                tr data-role=(change.role) data-container=(change.container) {
                                    td.role { (change.role) } td.container { (change.container) }
                                    td.from { (image(&change.from)) } td.to { (image(&change.to)) }
                                }
                            }
                        }
                    }
                }
            }
            table id="releases" {
                thead { tr { th { "Release" } th { "Created" } th { "Job" } th { "By" } th { "Role" } th { "Containers" } th { "Roll back to it" } } }
                tbody {
                    @for release in releases {
                        @for (n, (role, containers)) in release.pins.iter().enumerate() {
                            tr data-release=(release.id) data-role=(role) {
                                td.id { @if n == 0 { (release.id) } }
                                td.created { @if n == 0 { (time(release.created_at_unix_ms)) } }
                                td.job { @if n == 0 { a href={ "/jobs/" (release.job_id) } { (release.job_id) } } }
                                td.caller { @if n == 0 { (release.caller) } }
                                td.role { (role) }
                                td.images {
                                    @for (name, image) in containers { code { (name) " " (image) } br; }
                                }
                                td.rollback { code { "brine-master rollback --role " (role) " --to " (release.id) } }
                            }
                        }
                    }
                }
            }
        },
    )
}
