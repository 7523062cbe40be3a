//! End to end: the master's dashboard in a real browser. A master serving its dashboard, two
//! real minions, a private registry; `tests/browser/dashboard.py` drives Debian's Chromium
//! through its chromium-driver (Selenium, from `.venv-tests`): it signs in with the URL of
//! `brine-master dashboard login`, sees the hosts, watches highstates started from the CLI
//! appear and finish without a reload, opens a job's timeline, and is refused without a
//! session. The screenshots land in a temp dir, or in `BRINE_DASHBOARD_SCREENSHOTS` when set
//! (`docs/` keeps the README's).
//!
//! Needs what `e2e_highstate.rs` needs, and `chromium`, `chromium-driver` and Selenium
//! (`scripts/test-deps.sh` installs them).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Images, Master, Minion, Registry, free_port, quoted, run_with_deadline, unique_id};

const HTTPD: &str = "CMD [\"/bin/busybox\",\"httpd\",\"-f\",\"-p\",\"8000\"]";

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-tests/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test-deps.sh",
        python.display()
    );
    python
}

/// Role `web` on every host of the test; `deploy` goes into its environment, so a new value
/// replaces every container (with a health gate of a few seconds, long enough to be watched).
fn roles(image: &str, uniq: &str, deploy: u32) -> String {
    format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\nenv = {{ DEPLOY = \"{deploy}\" }}\nhealth = {{ http = \"http://127.0.0.1:8000/variant.txt\", interval = \"200ms\", min_healthy = \"3s\", deadline = \"30s\" }}\n\n[assign]\n\"e2e-{uniq}-*\" = [\"web\"]\n",
        quoted(image)
    )
}

#[test]
fn an_operator_follows_the_fleet_and_its_jobs_in_a_browser() {
    let uniq = unique_id();
    let registry = Registry::start();
    let mut images = Images::new(&registry, &uniq);
    let app = images.push_variant_with("app", 1, HTTPD);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let master = Master::start_with_env(&[("BRINE_MASTER_DASHBOARD_LISTEN", &listen)]);
    let ids = [format!("e2e-{uniq}-a"), format!("e2e-{uniq}-b")];
    let mut minions: Vec<Minion> = ids.iter().map(|id| Minion::start(&master, id)).collect();
    for minion in &mut minions {
        minion.wait_connected(&master);
    }
    master.write_roles(&roles(&app.reference, &uniq, 1));
    let work = tempfile::tempdir().unwrap();
    let second = work.path().join("roles-2.toml");
    std::fs::write(&second, roles(&app.reference, &uniq, 2)).unwrap();

    let login = run_with_deadline(
        &mut master.cli(&["dashboard", "login"]),
        Duration::from_secs(30),
        "brine-master dashboard login",
    );
    assert_eq!(login.code, 0, "{}", login.describe("dashboard login"));
    let url = login
        .stdout
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(
        url.starts_with(&format!("https://{listen}/login?token=")),
        "the last line is not the sign-in URL: {:?}",
        login.stdout
    );

    let screenshots = std::env::var_os("BRINE_DASHBOARD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| work.path().join("screenshots"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/dashboard.py");
    let mut browser = std::process::Command::new(python());
    browser
        .arg(&script)
        .args(["--login-url", &url])
        .arg("--master-bin")
        .arg(support::master_binary())
        .arg("--data-dir")
        .arg(master.data_dir())
        .args(["--hosts", &ids.join(",")])
        .arg("--second-roles")
        .arg(&second)
        .arg("--screenshots")
        .arg(&screenshots);
    let run = run_with_deadline(&mut browser, Duration::from_secs(200), "the browser test");
    assert_eq!(
        run.code,
        0,
        "{}",
        run.describe("tests/browser/dashboard.py")
    );
    for view in [
        "signed-out",
        "fleet",
        "jobs",
        "job-timeline",
        "releases",
        "lock",
    ] {
        assert!(
            screenshots.join(format!("{view}.png")).is_file(),
            "no screenshot of {view}: {}",
            run.stdout
        );
    }
}
