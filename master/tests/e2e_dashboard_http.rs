//! End to end: the web dashboard over real HTTPS. A real master serves it on
//! `BRINE_MASTER_DASHBOARD_LISTEN`, a real minion links; `brine-master dashboard login` makes
//! sign-in links, and a plain HTTPS client that trusts the fleet's CA checks what a browser
//! gets: nothing without a session, the session cookie's attributes, a link that works once,
//! the fleet and jobs views, the lock's form refused without its CSRF token or to a read-only
//! session, and a revoked session signed out.
//!
//! Needs the binaries; the highstate's minion needs Docker (it runs no container: the roles
//! file assigns it none).

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use support::{Master, Minion, free_port, run_with_deadline, unique_id};

struct Browser {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new(master: &Master, port: u16) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(master.data_dir().join("ca.pem")).expect("the fleet's CA");
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("a PEM certificate")])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTPS client");
        Self {
            runtime: tokio::runtime::Runtime::new().expect("a runtime"),
            client,
            base: format!("https://127.0.0.1:{port}"),
        }
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Page {
        self.runtime.block_on(async {
            let response = request.send().await.expect("an answer");
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.text().await.expect("a body");
            Page {
                status,
                headers,
                body,
            }
        })
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, format!("brine_session={cookie}"));
        }
        self.send(request)
    }

    /// Follows `/events/stream` in the background: what it sent so far.
    fn follow(&self, cookie: &str) -> std::sync::Arc<std::sync::Mutex<String>> {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let request = self
            .client
            .get(format!("{}/events/stream", self.base))
            .header(COOKIE, format!("brine_session={cookie}"))
            .timeout(Duration::from_secs(60));
        let into = seen.clone();
        let (opened, open) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let mut response = request.send().await.expect("the stream");
            let _ = opened.send(response.status());
            while let Ok(Some(chunk)) = response.chunk().await {
                into.lock()
                    .expect("the text")
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
        });
        let status = open
            .recv_timeout(Duration::from_secs(10))
            .expect("an answer");
        assert_eq!(status, StatusCode::OK);
        seen
    }

    fn release(&self, cookie: &str, csrf: Option<&str>) -> Page {
        let body = csrf.map(|c| format!("csrf={c}")).unwrap_or_default();
        self.send(
            self.client
                .post(format!("{}/lock/release", self.base))
                .header(COOKIE, format!("brine_session={cookie}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
    }

    /// Opens a sign-in link; returns the session cookie's value and its whole `Set-Cookie`.
    fn sign_in(&self, url: &str) -> (String, String) {
        let path = url
            .strip_prefix(&self.base)
            .expect("a link to this dashboard");
        let page = self.get(path, None);
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.headers[LOCATION], "/");
        let set = page.headers[SET_COOKIE].to_str().expect("text").to_owned();
        let value = set
            .split(';')
            .next()
            .and_then(|pair| pair.strip_prefix("brine_session="))
            .expect("the session cookie")
            .to_owned();
        (value, set)
    }
}

fn cli(master: &Master, args: &[&str]) -> String {
    let what = format!("brine-master {}", args.join(" "));
    let finished = run_with_deadline(&mut master.cli(args), Duration::from_secs(30), &what);
    assert!(finished.code == 0, "{}", finished.describe(&what));
    finished.stdout
}

/// `dashboard login`'s link: alone on the last line of standard output.
fn login(master: &Master, port: u16, admin: bool) -> String {
    let args: &[&str] = if admin {
        &["dashboard", "login", "--admin"]
    } else {
        &["dashboard", "login", "--ttl", "1h"]
    };
    let stdout = cli(master, args);
    let url = stdout.lines().last().expect("a line").to_owned();
    let prefix = format!("https://127.0.0.1:{port}/login?token=");
    let token = url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url}"));
    assert_eq!(token.len(), 64, "{url}");
    url
}

/// The value of the hidden `csrf` field on a page.
fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..at + 64].to_owned()
}

#[test]
fn the_dashboard_serves_signed_in_browsers_only() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let master = Master::start_with_env(&[("BRINE_MASTER_DASHBOARD_LISTEN", &listen)]);
    let id = format!("dash-{}", unique_id());
    let mut minion = Minion::start(&master, &id);
    minion.wait_connected(&master);
    let browser = Browser::new(&master, port);

    // Nothing without a session, static files and unknown paths included.
    for path in [
        "/",
        "/jobs",
        "/lock",
        "/releases",
        "/static/live.js",
        "/events/stream",
        "/nowhere",
    ] {
        let page = browser.get(path, None);
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            page.body.contains("id=\"signed-out\""),
            "{path}: {}",
            page.body
        );
    }
    let page = browser.get("/", Some(&"0".repeat(64)));
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);

    // A read-only session.
    let url = login(&master, port, false);
    let (viewer, set_cookie) = browser.sign_in(&url);
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=3600",
    ] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    let page = browser.get(url.strip_prefix(&browser.base).expect("a path"), None);
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "a link works once");
    assert!(
        page.body
            .contains("sign-in link is invalid or has been used"),
        "{}",
        page.body
    );

    let fleet = browser.get("/", Some(&viewer));
    assert_eq!(fleet.status, StatusCode::OK, "{}", fleet.body);
    assert!(
        fleet.body.contains(&format!("<tr data-host=\"{id}\">")),
        "{}",
        fleet.body
    );
    assert!(fleet.body.contains("<table id=\"hosts\">"));
    let filtered = browser.get("/?target=not+%28", Some(&viewer));
    assert!(
        filtered.body.contains("<p class=\"error\">"),
        "{}",
        filtered.body
    );
    assert!(
        browser
            .get("/static/live.js", Some(&viewer))
            .body
            .contains("EventSource")
    );
    assert_eq!(
        browser.get(&format!("/hosts/{id}"), Some(&viewer)).status,
        StatusCode::OK
    );

    // A job shows in /jobs, and on its own page; the event stream tells it live.
    let stream = browser.follow(&viewer);
    let run = master.highstate_run(None);
    let job_id = run.json["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a job id: {}", run.describe()))
        .to_owned();
    support::wait_for(
        "the job's events on the stream",
        Duration::from_secs(10),
        || {
            let seen = stream.lock().expect("the text");
            let has = |kind: &str| {
                seen.lines().any(|line| {
                    line.starts_with("data: {")
                        && line.contains(&format!("\"kind\":\"{kind}\""))
                        && line.contains(&job_id)
                })
            };
            if has("job_started") && has("host_reported") && has("job_finished") {
                Ok(())
            } else {
                Err(seen.clone())
            }
        },
    );
    let jobs = browser.get("/jobs", Some(&viewer));
    assert!(
        jobs.body.contains(&format!("<tr data-job=\"{job_id}\">")),
        "{}",
        jobs.body
    );
    assert!(jobs.body.contains(&format!("<a href=\"/jobs/{job_id}\">")));
    let job = browser.get(&format!("/jobs/{job_id}"), Some(&viewer));
    assert!(job.body.contains("data-state=\"finished\""), "{}", job.body);
    assert!(job.body.contains("<svg id=\"timeline\""), "{}", job.body);
    assert!(
        job.body.contains(&format!("<g data-host=\"{id}\">")),
        "{}",
        job.body
    );

    // Releasing the lock: only an admin session, only with its CSRF token.
    cli(&master, &["lock", "acquire", "--message", "dashboard test"]);
    let lock = browser.get("/lock", Some(&viewer));
    assert!(lock.body.contains("dashboard test"), "{}", lock.body);
    assert!(
        !lock.body.contains("<button"),
        "a read-only session gets no button"
    );
    let page = browser.release(&viewer, Some(&csrf_of(&lock.body)));
    assert_eq!(
        page.status,
        StatusCode::FORBIDDEN,
        "read-only: {}",
        page.body
    );

    let (admin, _) = browser.sign_in(&login(&master, port, true));
    let lock = browser.get("/lock", Some(&admin));
    assert!(lock.body.contains("<button"), "{}", lock.body);
    let csrf = csrf_of(&lock.body);
    assert_eq!(browser.release(&admin, None).status, StatusCode::FORBIDDEN);
    assert_eq!(
        browser.release(&admin, Some(&"0".repeat(64))).status,
        StatusCode::FORBIDDEN
    );
    assert!(cli(&master, &["lock", "status"]).contains("locked by"));
    let page = browser.release(&admin, Some(&csrf));
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(cli(&master, &["lock", "status"]).trim(), "unlocked");

    // Sessions listed, then one revoked.
    let listed: serde_json::Value = serde_json::from_str(&cli(
        &master,
        &["dashboard", "sessions", "--output", "json"],
    ))
    .expect("JSON");
    let sessions = listed.as_array().expect("an array");
    assert_eq!(sessions.len(), 2, "{listed}");
    assert_eq!(sessions[0]["admin"], false);
    assert_eq!(sessions[1]["admin"], true);
    assert_eq!(sessions[0]["created_by"], "admin");
    let first = sessions[0]["session_id"].as_str().expect("an id");
    cli(&master, &["dashboard", "revoke", first]);
    let page = browser.get("/", Some(&viewer));
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "revoked");
    assert!(page.body.contains("id=\"signed-out\""));
    assert_eq!(browser.get("/", Some(&admin)).status, StatusCode::OK);

    // No secret reached the master's log.
    let log = std::fs::read_to_string(master.log_path()).expect("the master's log");
    for secret in [&viewer, &admin, &csrf] {
        assert!(!log.contains(secret.as_str()), "a secret in the log");
    }
    assert!(!log.contains(url.rsplit('=').next().expect("a token")));
}
