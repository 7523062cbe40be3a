//! A machine with systemd as PID 1, for testing brine the way it is installed: a container of
//! the image `scripts/systemd-test-image.sh` builds (Debian with systemd), with this machine's
//! Docker engine behind its `docker.service` and this test's registry forwarded to the same
//! loopback address inside, so an image reference means the same thing on both sides.
//!
//! brine goes in as the README tells users: a checkout (here: `deploy/`, `README.md` and the
//! binaries this test run built, in `target/release/`) and the README's install commands, or
//! the Debian packages `scripts/package.sh` makes of those binaries.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{
    Finished, Registry, UnixForwarder, docker, master_binary, minion_binary, proxy_binary,
    run_with_deadline, try_docker,
};

/// The image the build script makes; bump with the script's tag.
pub const IMAGE: &str = "brine-test-systemd:bookworm-2";
/// Where the checkout is staged inside the machine.
pub const CHECKOUT: &str = "/root/brine";
/// The master's name in the README's commands; it resolves to the machine itself.
pub const MASTER_NAME: &str = "brine-master.example.com";

/// The workspace root (the checkout running this test).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the master crate lives in the workspace")
        .to_path_buf()
}

/// Builds the image unless this machine has it.
fn ensure_image() {
    let script = workspace().join("scripts/systemd-test-image.sh");
    let built = run_with_deadline(
        &mut Command::new(&script),
        Duration::from_secs(600),
        "scripts/systemd-test-image.sh",
    );
    assert!(
        built.code == 0,
        "{}",
        built.describe("scripts/systemd-test-image.sh")
    );
}

/// A running container with systemd as PID 1. Removed on drop, after printing the journal of
/// brine's units when the test failed.
pub struct SystemdHost {
    name: String,
    hostname: String,
    dir: TempDir,
    forwarders: Vec<UnixForwarder>,
}

impl SystemdHost {
    /// Boots a machine named `sd-UNIQ` and waits until systemd reports it running.
    pub fn boot(uniq: &str) -> Self {
        ensure_image();
        let dir = tempfile::Builder::new()
            .prefix("brine-e2e-systemd-")
            .tempdir()
            .expect("a temp dir");
        let sockets = dir.path().join("sockets");
        std::fs::create_dir(&sockets).expect("a sockets dir");
        let name = format!("brine-e2e-systemd-{uniq}");
        let hostname = format!("sd-{uniq}");
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &hostname,
            "--label",
            "io.brine.test=systemd",
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "-v",
            "/var/run/docker.sock:/host/docker.sock",
            "-v",
            &format!("{}:/host/sockets", sockets.display()),
            "--add-host",
            &format!("{MASTER_NAME}:127.0.0.1"),
            IMAGE,
        ]);
        let host = Self {
            name,
            hostname,
            dir,
            forwarders: vec![],
        };
        let mut last = String::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let state = host.sh("systemctl is-system-running");
            last = state.stdout.trim().to_owned();
            match last.as_str() {
                "running" => return host,
                "degraded" => panic!(
                    "systemd in the test machine is degraded:\n{}",
                    host.sh("systemctl --failed --no-pager").stdout
                ),
                _ => thread::sleep(Duration::from_millis(200)),
            }
        }
        panic!("systemd in the test machine did not finish booting: {last}");
    }

    /// The machine's host name: the id a minion on it joins with by default.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Runs `script` with bash inside the machine (two minutes at most).
    pub fn sh(&self, script: &str) -> Finished {
        self.sh_in("/", script)
    }

    /// Runs `script` with bash inside the machine, in directory `cwd`.
    pub fn sh_in(&self, cwd: &str, script: &str) -> Finished {
        run_with_deadline(
            Command::new("docker").args(["exec", "-w", cwd, &self.name, "bash", "-c", script]),
            Duration::from_secs(120),
            &format!("`{script}` in the systemd machine"),
        )
    }

    /// As [`SystemdHost::sh`], panicking unless it exits 0; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let finished = self.sh(script);
        assert!(finished.code == 0, "{}", finished.describe(script));
        finished.stdout
    }

    /// A property of a unit, as `systemctl show -p NAME --value` prints it.
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.sh_ok(&format!("systemctl show -p {name} --value {unit}"))
            .trim()
            .to_owned()
    }

    /// Writes `contents` to `path` inside the machine (mode 0644, owned by root).
    pub fn write_file(&self, path: &str, contents: &str) {
        let local = self.dir.path().join("upload");
        std::fs::write(&local, contents).expect("write the upload");
        docker(&[
            "cp",
            local.to_str().expect("a UTF-8 temp path"),
            &format!("{}:{path}", self.name),
        ]);
    }

    /// Copies `local` (a file of this machine) to `path` inside the machine.
    pub fn copy_in(&self, local: &Path, path: &str) {
        docker(&[
            "cp",
            "-L",
            local.to_str().expect("a UTF-8 path"),
            &format!("{}:{path}", self.name),
        ]);
    }

    /// Stages a checkout of brine at [`CHECKOUT`]: `deploy/`, `README.md`, and the binaries this
    /// test run built (the master's, the minion's and the proxy's) where `cargo build --release`
    /// puts them.
    pub fn stage_checkout(&self) {
        self.sh_ok(&format!("mkdir -p {CHECKOUT}/target/release"));
        let root = workspace();
        let copy = |from: &Path, to: &str| {
            docker(&[
                "cp",
                from.to_str().expect("a UTF-8 path"),
                &format!("{}:{to}", self.name),
            ]);
        };
        copy(&root.join("deploy"), &format!("{CHECKOUT}/deploy"));
        copy(&root.join("README.md"), &format!("{CHECKOUT}/README.md"));
        copy(&master_binary(), &format!("{CHECKOUT}/target/release/"));
        copy(&minion_binary(), &format!("{CHECKOUT}/target/release/"));
        copy(&proxy_binary(), &format!("{CHECKOUT}/target/release/"));
    }

    /// Makes `registry` answer on its own address inside the machine too.
    pub fn forward_registry(&mut self, registry: &Registry) {
        let socket = self.dir.path().join("sockets/registry.sock");
        let target = registry.host();
        self.forwarders
            .push(UnixForwarder::start(&socket, target.clone()));
        let port = target.rsplit(':').next().expect("HOST:PORT");
        self.sh_ok(&format!(
            "systemd-run --unit registry-forward --property Type=simple /usr/bin/socat \
             TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/host/sockets/registry.sock"
        ));
    }

    /// The journal of `units` as `journalctl -o cat` shows it.
    pub fn journal(&self, units: &[&str]) -> String {
        let units: Vec<String> = units.iter().map(|u| format!("-u {u}")).collect();
        self.sh(&format!("journalctl --no-pager -o cat {}", units.join(" ")))
            .stdout
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        if thread::panicking() {
            let journal =
                self.sh("journalctl --no-pager -u brine-master -u brine-minion -u brine-proxy -u docker -n 80");
            eprintln!(
                "----- journal of the systemd machine -----\n{}\n----- end of journal -----",
                journal.stdout
            );
        }
        let _ = try_docker(&["rm", "-f", "-v", &self.name]);
        for forwarder in &mut self.forwarders {
            forwarder.stop();
        }
    }
}

/// The shell commands of the README's section `## TITLE`, block by block (comments dropped).
pub fn readme_blocks(title: &str) -> Vec<Vec<String>> {
    let mut readme = String::new();
    std::fs::File::open(workspace().join("README.md"))
        .and_then(|mut f| f.read_to_string(&mut readme))
        .expect("read README.md");
    let section = readme
        .split(&format!("\n## {title}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("README.md has a section `## {title}`"));
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut blocks = vec![];
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(vec![]),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), line) => {
                let command = line.split(" #").next().unwrap_or(line).trim();
                if !command.is_empty() && !command.starts_with('#') {
                    block.push(command.to_owned());
                }
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The Debian packages of both host roles, as `scripts/package.sh --debug` builds them from the
/// binaries of this test run (in the target directory the master's binary is in): brine-master,
/// and brine-minion with brine-proxy.
pub fn debian_packages() -> Vec<PathBuf> {
    // The script packages what it finds; these refuse a binary older than its sources.
    minion_binary();
    proxy_binary();
    let target_dir = master_binary()
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in TARGET/PROFILE/")
        .to_path_buf();
    let script = workspace().join("scripts/package.sh");
    let built = run_with_deadline(
        Command::new(&script)
            .arg("--debug")
            .env("CARGO_TARGET_DIR", &target_dir),
        Duration::from_secs(180),
        "scripts/package.sh --debug",
    );
    assert!(
        built.code == 0,
        "{}",
        built.describe("scripts/package.sh --debug")
    );
    let packages: Vec<PathBuf> = built.stdout.lines().map(PathBuf::from).collect();
    assert!(
        packages.len() == 2 && packages.iter().all(|p| p.is_file()),
        "not the paths of two packages: {}",
        built.describe("scripts/package.sh --debug")
    );
    packages
}
