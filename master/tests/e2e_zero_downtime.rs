//! End to end: zero-downtime deploys of a published port. A real master, minion and
//! `brine-proxy`, web containers (busybox httpd) from a private registry, and a steady load
//! from Debian's `wrk` on the published port while brine deploys new images: with the proxy no
//! request fails, across 20 deploys and a crash of the minion; without it, the same deploys
//! drop requests.
//!
//! Needs what `e2e_highstate.rs` needs, `wrk`, and the proxy binary (`cargo build --bins`).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use support::load::{LoadCount, Proxy, SteadyLoad};
use support::{
    Images, Master, Minion, Pushed, Registry, docker, free_port, quoted, status, unique_id,
    wait_for,
};

/// Each variant serves `/variant.txt` as its index page.
const HTTPD: &str = "COPY variant.txt /www/index.html\nCMD [\"/bin/busybox\",\"httpd\",\"-f\",\"-p\",\"8000\",\"-h\",\"/www\"]";

/// A master, one minion (with the proxy unless asked otherwise) and a registry with web images.
/// Fields drop in order: the minion and its containers first.
struct Stage {
    minion: Minion,
    proxy: Option<Proxy>,
    master: Master,
    images: Images,
    _registry: Registry,
    port: u16,
    /// What the roles file runs: an image pinned by digest, so that deploys can alternate
    /// between two builds without building one per deploy.
    image: String,
}

impl Stage {
    fn start(with_proxy: bool) -> Self {
        let uniq = unique_id();
        let registry = Registry::start();
        let images = Images::new(&registry, &uniq);
        let master = Master::start();
        let proxy = with_proxy.then(Proxy::start);
        let socket = proxy
            .as_ref()
            .map(|p| p.socket().display().to_string())
            .unwrap_or_else(|| "/nonexistent/brine-proxy.sock".into());
        let mut minion = Minion::start_with(
            &master,
            &format!("e2e-{uniq}-web"),
            &[],
            &[("BRINE_MINION_PROXY_SOCKET", &socket)],
            "",
        );
        minion.wait_connected(&master);
        Self {
            minion,
            proxy,
            master,
            images,
            _registry: registry,
            port: free_port(),
            image: String::new(),
        }
    }

    fn push(&mut self, variant: u32) -> Pushed {
        self.images.push_variant_with("web", variant, HTTPD)
    }

    /// The roles run `image` from now on.
    fn pick(&mut self, image: &Pushed) {
        self.image = image.repo_digest.clone();
    }

    /// Role `web` on the minion, publishing the stage's port; `proxy` is the line that turns
    /// the proxy on (or nothing), `extra` more lines of the role.
    fn write_roles(&self, proxy: &str, extra: &str, assigned: bool) {
        let assign = if assigned {
            format!("{} = [\"web\"]\n", quoted(self.minion.id()))
        } else {
            String::new()
        };
        self.master.write_roles(&format!(
            "[roles.web]\nimage = {image}\n{extra}\n[[roles.web.containers]]\nname = \"web\"\nports = [\"127.0.0.1:{port}:8000\"]\nstop_timeout = \"5s\"\nhealth = {{ http = \"http://127.0.0.1:8000/\", interval = \"100ms\", min_healthy = \"300ms\", deadline = \"20s\" }}\n{proxy}\n\n[assign]\n{assign}",
            image = quoted(&self.image),
            port = self.port,
        ));
    }

    /// Runs a highstate that must change the host.
    fn deploy(&self) {
        let run = self.master.highstate_run(None);
        assert_eq!(run.code, 0, "{}", run.describe());
        assert_eq!(
            status(&run.json, self.minion.id()),
            "changed",
            "{}",
            run.describe()
        );
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The page on the published port, or why there is none.
    fn page(&self) -> Result<String, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        Ok(response)
    }

    fn wait_serving(&self, variant: u32) {
        let wanted = format!("variant {variant} of test");
        wait_for(
            &format!("port {} to serve variant {variant}", self.port),
            Duration::from_secs(10),
            || match self.page() {
                Ok(page) if page.contains(&wanted) => Ok(()),
                Ok(page) => Err(page),
                Err(err) => Err(err),
            },
        );
    }

    /// The Docker names of the minion's containers.
    fn container_names(&self) -> Vec<String> {
        self.minion
            .containers()
            .into_iter()
            .map(|c| c.name)
            .collect()
    }
}

fn assert_no_failure(load: &LoadCount, what: &str) {
    assert!(
        load.requests > 500,
        "{what}: too little load to tell: {load:?}"
    );
    assert_eq!(load.failures(), 0, "{what}: requests failed: {load:?}");
}

#[test]
fn twenty_deploys_and_a_crashed_minion_under_load_fail_no_request() {
    let mut stage = Stage::start(true);
    let builds = [stage.push(1), stage.push(2)];
    let proxy = "proxy = { mode = \"http\", drain = \"10s\" }";
    stage.pick(&builds[0]);
    stage.write_roles(proxy, "", true);
    stage.deploy();
    stage.wait_serving(1);
    let web = format!("{}.web", stage.minion.id());
    // The proxy owns the port: Docker publishes nothing.
    assert_eq!(docker(&["port", &web]), "");

    let load = SteadyLoad::start(&stage.url(), 4, 2);
    for deploy in 1..=20 {
        // Deploys alternate between the two builds: each is a new image for the host.
        stage.pick(&builds[deploy % 2]);
        stage.write_roles(proxy, "", true);
        let started = std::time::Instant::now();
        stage.deploy();
        eprintln!("deploy {deploy}: {:?}", started.elapsed());
        assert_eq!(stage.container_names(), std::slice::from_ref(&web));
    }
    stage.wait_serving(1);
    // The worst moment for the minion to die: nothing may notice, and it takes up again.
    stage.minion.stop();
    std::thread::sleep(Duration::from_secs(1));
    stage.minion.start_again();
    stage.minion.wait_connected(&stage.master);
    stage.pick(&builds[1]);
    stage.write_roles(proxy, "", true);
    stage.deploy();
    stage.wait_serving(2);
    let load = load.finish();
    assert_no_failure(&load, "21 deploys with the proxy and a minion crash");
    eprintln!("with the proxy: {load:?}");
}

#[test]
fn without_the_proxy_the_same_deploys_drop_requests() {
    let mut stage = Stage::start(false);
    let builds = [stage.push(1), stage.push(2)];
    stage.pick(&builds[0]);
    stage.write_roles("", "", true);
    stage.deploy();
    stage.wait_serving(1);

    let load = SteadyLoad::start(&stage.url(), 4, 2);
    for deploy in 1..=3 {
        stage.pick(&builds[deploy % 2]);
        stage.write_roles("", "", true);
        stage.deploy();
    }
    let load = load.finish();
    // The old container holds the port until it is stopped: every deploy leaves a gap.
    assert!(
        load.failures() > 0,
        "deploys without the proxy dropped no request, so this test shows nothing: {load:?}"
    );
    eprintln!("without the proxy: {load:?}");
}

#[test]
fn tcp_mode_hooks_and_giving_the_port_back() {
    let mut stage = Stage::start(true);
    let hooks_dir = tempfile::tempdir().unwrap();
    let log = hooks_dir.path().join("hooks.log");
    let hooks = format!(
        "[roles.web.hooks]\nbefore_replace = [\"/bin/sh\", \"-c\", {}]\nafter_healthy = [\"/bin/sh\", \"-c\", {}]\ntimeout = \"10s\"\n",
        quoted(&hook_script("before", &log)),
        quoted(&hook_script("after", &log)),
    );
    let builds = [stage.push(1), stage.push(2)];
    stage.pick(&builds[0]);
    stage.write_roles("proxy = \"tcp\"", &hooks, true);
    stage.deploy();
    stage.wait_serving(1);
    assert!(
        !log.exists(),
        "the first deploy replaces nothing, so runs no hook"
    );

    // TCP mode: whole connections move; busybox closes each after its answer.
    let load = SteadyLoad::start(&stage.url(), 4, 2);
    for deploy in 1..=3 {
        stage.pick(&builds[deploy % 2]);
        stage.write_roles("proxy = \"tcp\"", &hooks, true);
        stage.deploy();
    }
    let load = load.finish();
    assert_no_failure(&load, "3 deploys in TCP mode");
    stage.wait_serving(2);
    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(ran, "before web\nafter web\n".repeat(3), "{ran}");

    // Turning the proxy off gives the port back to Docker.
    stage.write_roles("", "", true);
    stage.deploy();
    stage.wait_serving(2);
    let web = format!("{}.web", stage.minion.id());
    assert!(
        docker(&["port", &web]).contains(&format!("127.0.0.1:{}", stage.port)),
        "Docker publishes the port again"
    );
    // And on again: the proxy takes it back.
    stage.write_roles("proxy = \"http\"", "", true);
    stage.deploy();
    stage.wait_serving(2);
    assert_eq!(docker(&["port", &web]), "");

    // Removing the role frees the port.
    stage.write_roles("proxy = \"http\"", "", false);
    stage.deploy();
    assert!(stage.container_names().is_empty());
    wait_for("the port to be free", Duration::from_secs(10), || {
        std::net::TcpListener::bind(("127.0.0.1", stage.port))
            .map(drop)
            .map_err(|err| err.to_string())
    });
    let proxy_log = std::fs::read_to_string(stage.proxy.as_ref().unwrap().log_path()).unwrap();
    assert!(!proxy_log.contains("ERROR"), "{proxy_log}");
}

/// A hook that appends `WHAT CONTAINERS` to `log`.
fn hook_script(what: &str, log: &Path) -> String {
    format!("echo \"{what} $BRINE_CONTAINERS\" >> {}", log.display())
}
