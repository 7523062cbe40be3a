//! The operator's command line as a laptop uses it: contexts written by `cert issue --out` and
//! imported into a fresh configuration, their selection, flags that override them, connection
//! flags after a subcommand, the errors that say how to point at a master, completions and
//! manual pages. The real binary against a real `brine-master serve` (no Docker).
//!
//! Every command runs with its own `HOME` and `XDG_CONFIG_HOME` and without inherited `BRINE_*`
//! variables; its `BRINE_MASTER_DATA_DIR` names a directory that does not exist, so only a
//! context or flags can reach a master.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Finished, Master, free_port, master_binary, run_with_deadline};
use tempfile::TempDir;

/// A machine away from the master: its own home and client configuration.
struct Laptop {
    home: TempDir,
}

impl Laptop {
    fn new() -> Self {
        Self {
            home: tempfile::Builder::new()
                .prefix("brine-cli-home-")
                .tempdir()
                .expect("a temp dir"),
        }
    }

    /// `$XDG_CONFIG_HOME/brine`, where the client configuration lives.
    fn config_dir(&self) -> PathBuf {
        self.home.path().join("config").join("brine")
    }

    fn config_file(&self) -> PathBuf {
        self.config_dir().join("config.toml")
    }

    /// `brine-master ARGS` in this laptop's environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(master_binary());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BRINE_") {
                command.env_remove(key);
            }
        }
        command
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env(
                "BRINE_MASTER_DATA_DIR",
                self.home.path().join("no-master-here"),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .args(args);
        command
    }

    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Finished {
        let what = format!("{env:?} brine-master {}", args.join(" "));
        run_with_deadline(
            self.command(args).envs(env.iter().copied()),
            Duration::from_secs(30),
            &what,
        )
    }

    fn run(&self, args: &[&str]) -> Finished {
        self.run_with(&[], args)
    }

    /// Runs `brine-master ARGS`, asserts it exits 0, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let finished = self.run(args);
        assert!(
            finished.code == 0,
            "{}",
            finished.describe(&format!("brine-master {}", args.join(" ")))
        );
        finished.stdout
    }

    /// Runs `brine-master ARGS`, asserts it exits 2 (did not run: fix the input or setup),
    /// returns stderr.
    fn fails(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        self.fails_with(2, env, args)
    }

    /// Runs `brine-master ARGS`, asserts it exits 3 (did not run: the master is unreachable,
    /// try again later), returns stderr.
    fn cannot_reach(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        self.fails_with(3, env, args)
    }

    fn fails_with(&self, code: i32, env: &[(&str, &str)], args: &[&str]) -> String {
        let finished = self.run_with(env, args);
        assert!(
            finished.code == code,
            "expected exit {code}: {}",
            finished.describe(&format!("{env:?} brine-master {}", args.join(" ")))
        );
        finished.stderr
    }
}

/// Runs `brine-master ARGS --data-dir DIR` on the master host and asserts it exits 0.
fn on_master(master: &Master, args: &[&str]) -> String {
    let what = format!("brine-master {}", args.join(" "));
    let finished = run_with_deadline(&mut master.cli(args), Duration::from_secs(30), &what);
    assert!(finished.code == 0, "{}", finished.describe(&what));
    finished.stdout
}

/// `cert issue --admin NAME --out DIR` with `extra` arguments, on the master host.
fn issue(master: &Master, name: &str, extra: &[&str]) -> TempDir {
    let out = tempfile::tempdir().expect("a temp dir");
    let dir = out.path().join("certs");
    let mut args = vec!["cert", "issue", "--admin", name, "--out", path(&dir)];
    args.extend(extra);
    let printed = on_master(master, &args);
    assert!(
        printed.contains(&format!(
            "run:\n  brine-master context import {}",
            dir.display()
        )),
        "{printed}"
    );
    out
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("the file exists")
        .permissions()
        .mode()
        & 0o777
}

fn certs(issued: &TempDir) -> PathBuf {
    issued.path().join("certs")
}

/// The port of an address nothing listens on.
fn closed_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn a_context_issued_on_the_master_and_imported_elsewhere_is_all_a_laptop_needs() {
    let master = Master::start();
    let issued = issue(&master, "alice", &[]);
    let context = std::fs::read_to_string(certs(&issued).join("context.toml"))
        .expect("cert issue writes context.toml");
    // The harness's master advertises no name beyond loopback: localhost, with its port.
    let port = master
        .address()
        .rsplit_once(':')
        .expect("HOST:PORT")
        .1
        .to_owned();
    assert!(
        context.contains(&format!("master = \"localhost:{port}\"")),
        "{context}"
    );

    let laptop = Laptop::new();
    let imported = laptop.ok(&["context", "import", path(&certs(&issued))]);
    assert!(imported.contains("brine-master minions"), "{imported}");
    assert_eq!(mode(&laptop.config_file()), 0o600);
    assert_eq!(
        mode(&laptop.config_dir().join("contexts/alice/alice.key")),
        0o600
    );
    let config = std::fs::read_to_string(laptop.config_file()).expect("the configuration");
    assert!(config.contains("current_context = \"alice\""), "{config}");
    assert!(
        config.contains("cert = \"contexts/alice/alice.pem\""),
        "{config}"
    );

    // The certificates were copied: the issued directory can go.
    drop(issued);
    let minions = laptop.ok(&["minions", "--output", "json"]);
    assert_eq!(minions.trim(), "[]", "{minions}");
    let tokens = laptop.ok(&["token", "list"]);
    assert!(tokens.contains("no join tokens"), "{tokens}");

    let listed = laptop.ok(&["context", "list"]);
    assert!(
        listed.contains(&format!("* alice  localhost:{port}")),
        "{listed}"
    );
    let shown = laptop.ok(&["context", "show"]);
    assert!(
        shown.contains("using:       context alice (current_context in"),
        "{shown}"
    );
    for setting in ["address", "ca", "cert", "key"] {
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with(setting) && l.ends_with("from context alice")),
            "{setting} is not from the context:\n{shown}"
        );
    }
}

#[test]
fn contexts_are_picked_by_flag_variable_or_current_context_and_unknown_names_are_listed() {
    let master = Master::start();
    let good = issue(&master, "alice", &["--context-name", "good"]);
    let dead = issue(
        &master,
        "bob",
        &["--context-name", "dead", "--address", &closed_address()],
    );
    let laptop = Laptop::new();
    laptop.ok(&["context", "import", path(&certs(&good))]);
    let second = laptop.ok(&["context", "import", path(&certs(&dead))]);
    assert!(second.contains("brine-master context use dead"), "{second}");
    laptop.ok(&["context", "use", "dead"]);
    let listed = laptop.ok(&["context", "list"]);
    assert!(listed.contains("* dead"), "{listed}");
    assert!(listed.contains("  good"), "{listed}");

    let unreachable = laptop.cannot_reach(&[], &["minions"]);
    assert!(
        unreachable.contains("cannot connect to the master"),
        "{unreachable}"
    );
    laptop.ok(&["minions", "--context", "good"]);
    laptop.ok(&["--context", "good", "minions"]);
    let finished = laptop.run_with(&[("BRINE_CONTEXT", "good")], &["minions"]);
    assert!(
        finished.code == 0,
        "{}",
        finished.describe("BRINE_CONTEXT=good")
    );

    let unknown = laptop.fails(&[], &["minions", "--context", "nope"]);
    assert!(unknown.contains("no context \"nope\""), "{unknown}");
    assert!(unknown.contains("known contexts: dead, good"), "{unknown}");
    let unknown = laptop.fails(&[("BRINE_CONTEXT", "nope")], &["token", "list"]);
    assert!(unknown.contains("known contexts: dead, good"), "{unknown}");

    let removed = laptop.ok(&["context", "remove", "dead"]);
    assert!(removed.contains("no context is current now"), "{removed}");
    assert!(!laptop.config_dir().join("contexts/dead").exists());
    // Without a current context, the (missing) data directory is all that is left.
    let nothing = laptop.fails(&[], &["minions"]);
    assert!(nothing.contains("no master to call"), "{nothing}");
    assert!(nothing.contains("one of good in"), "{nothing}");
}

#[test]
fn a_flag_or_variable_overrides_the_contexts_address() {
    let master = Master::start();
    let issued = issue(&master, "alice", &[]);
    let laptop = Laptop::new();
    laptop.ok(&["context", "import", path(&certs(&issued))]);
    laptop.ok(&["minions"]);

    let closed = closed_address();
    let refused = laptop.cannot_reach(&[], &["minions", "--master", &closed]);
    assert!(
        refused.contains(&format!("cannot connect to the master at {closed}")),
        "{refused}"
    );
    let refused = laptop.cannot_reach(&[("BRINE_MASTER_ADDRESS", &closed)], &["token", "list"]);
    assert!(
        refused.contains(&format!("cannot connect to the master at {closed}")),
        "{refused}"
    );
    let shown = laptop.ok(&["context", "show", "--master", &closed]);
    assert!(
        shown.contains(&format!("address  {closed}")) && shown.contains("from flag --master"),
        "{shown}"
    );
    let finished = laptop.run_with(&[("BRINE_CA", "/elsewhere/ca.pem")], &["context", "show"]);
    assert!(
        finished.stdout.contains("from env BRINE_CA"),
        "{}",
        finished.describe("context show")
    );
}

#[test]
fn connection_flags_are_accepted_before_and_after_any_subcommand() {
    let master = Master::start();
    let data = master.data_dir();
    let [ca, cert, key] = ["ca.pem", "admin.pem", "admin.key"].map(|file| data.join(file));
    let address = master.address();
    let flags = [
        "--master",
        &address,
        "--ca",
        path(&ca),
        "--cert",
        path(&cert),
        "--key",
        path(&key),
    ];
    let laptop = Laptop::new();
    // The master answers: the job does not exist, so the call got through.
    let after: Vec<&str> = ["jobs"]
        .into_iter()
        .chain(flags)
        .chain(["show", "no-such-job"])
        .collect();
    assert!(laptop.fails(&[], &after).contains("no job no-such-job"));
    let before: Vec<&str> = flags
        .into_iter()
        .chain(["jobs", "show", "no-such-job"])
        .collect();
    assert!(laptop.fails(&[], &before).contains("no job no-such-job"));
    let last: Vec<&str> = ["minions", "show", "nobody"]
        .into_iter()
        .chain(flags)
        .collect();
    assert!(
        laptop
            .fails(&[], &last)
            .contains("no enrolled minion nobody")
    );
    // `--output` of `jobs` and `minions` reaches their subcommands too.
    let json = laptop.ok(&["minions", "--data-dir", path(&data), "--output", "json"]);
    assert_eq!(json.trim(), "[]");
    laptop.ok(&["--data-dir", path(&data), "lock", "status"]);
    laptop.ok(&["lock", "--data-dir", path(&data), "status"]);
}

#[test]
fn version_shows_the_client_and_the_master() {
    let master = Master::start();
    let issued = issue(&master, "alice", &[]);
    let laptop = Laptop::new();
    laptop.ok(&["context", "import", path(&certs(&issued))]);
    let version = env!("CARGO_PKG_VERSION");
    let shown = laptop.ok(&["version"]);
    assert!(
        shown.contains(&format!("client  {version} (commit {})", built_commit())),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "master  {version} (commit {}, API brine.v1)",
            built_commit()
        )),
        "{shown}"
    );
    // Without a master, the client's own version still shows, and the exit says "later".
    let closed = closed_address();
    let finished = laptop.run_with(&[], &["version", "--master", &closed]);
    assert_eq!(finished.code, 3, "{}", finished.describe("version"));
    assert!(
        finished.stdout.contains(&format!("client  {version}")),
        "{}",
        finished.describe("version")
    );
}

/// The commit the binaries were built from, as their build script found it: the build's
/// `BRINE_GIT_COMMIT` when it set one, else this checkout's `HEAD` (a commit or checkout since
/// makes Cargo run the build script again), else "unknown".
fn built_commit() -> String {
    if let Some(commit) = option_env!("BRINE_GIT_COMMIT")
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        return commit.to_owned();
    }
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[test]
fn version_flag_prints_the_version_and_the_commit() {
    let laptop = Laptop::new();
    let wanted = format!(
        "brine-master {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        built_commit()
    );
    for flag in ["--version", "-V"] {
        assert_eq!(laptop.ok(&[flag]).trim(), wanted, "{flag}");
    }
}

#[test]
fn without_a_master_the_error_lists_every_way_to_point_at_one() {
    let laptop = Laptop::new();
    let err = laptop.fails(&[], &["minions"]);
    for way in [
        "no master to call",
        "no master.toml in",
        "--master HOST:PORT --ca CA.pem --cert NAME.pem --key NAME.key",
        "BRINE_MASTER_ADDRESS, BRINE_CA, BRINE_CERT, BRINE_KEY",
        "--context NAME (or BRINE_CONTEXT): none configured; see `brine-master context import`",
        "on the master host: --data-dir DIR (or BRINE_MASTER_DATA_DIR)",
    ] {
        assert!(err.contains(way), "{way:?} is not in:\n{err}");
    }
    let listed = laptop.ok(&["context", "list"]);
    assert!(listed.contains("no contexts in"), "{listed}");
}

#[test]
fn a_malformed_configuration_is_refused_with_its_file_and_line() {
    let laptop = Laptop::new();
    std::fs::create_dir_all(laptop.config_dir()).expect("the configuration directory");
    std::fs::write(
        laptop.config_file(),
        "current_context = \"prod\"\n\n[contexts.prod]\nmaster = \"m:4700\"\ncertificate = \"a.pem\"\n",
    )
    .expect("write the configuration");
    for args in [&["minions"][..], &["context", "list"]] {
        let err = laptop.fails(&[], args);
        assert!(
            err.contains(&format!("{}: ", laptop.config_file().display())),
            "{err}"
        );
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("certificate"), "{err}");
    }
}

#[test]
fn completions_name_the_subcommands() {
    let laptop = Laptop::new();
    let bash = laptop.ok(&["completions", "bash"]);
    for subcommand in ["highstate", "minions", "context", "import", "completions"] {
        assert!(
            bash.contains(subcommand),
            "{subcommand} is not in the script"
        );
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(!laptop.ok(&["completions", shell]).is_empty(), "{shell}");
    }
}

#[test]
fn man_writes_a_page_per_subcommand() {
    let laptop = Laptop::new();
    let out = laptop.home.path().join("man");
    laptop.ok(&["man", "--out", path(&out)]);
    for page in [
        "brine-master.1",
        "brine-master-highstate.1",
        "brine-master-context-import.1",
        "brine-master-cert-issue.1",
    ] {
        let text = std::fs::read_to_string(out.join(page)).expect("the page exists");
        // clap_mangen defines roff's apostrophe string (`.ie`/`.el`) before the title.
        let first = text
            .lines()
            .find(|line| !line.starts_with(".ie ") && !line.starts_with(".el "))
            .unwrap_or_default();
        let name = page.trim_end_matches(".1");
        assert!(
            first.starts_with(&format!(".TH {name} 1")),
            "{page}: {first}"
        );
    }
}

/// Every command's `--help`: clap checks a command's definition when it is built (duplicate
/// flags panic in a debug build), and each subcommand is built on its own.
#[test]
fn every_subcommand_has_help() {
    let laptop = Laptop::new();
    let mut pending = vec![Vec::<String>::new()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = laptop.ok(&args);
        seen += 1;
        let commands = help
            .lines()
            .skip_while(|line| *line != "Commands:")
            .skip(1)
            .take_while(|line| !line.is_empty());
        for line in commands {
            // "  name  what it does"; continuation lines are indented further.
            let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) else {
                continue;
            };
            let name = name.split_whitespace().next().unwrap_or_default();
            if name != "help" {
                pending.push(path.iter().cloned().chain([name.to_owned()]).collect());
            }
        }
    }
    assert!(seen > 30, "only {seen} commands found");
}

#[test]
fn a_master_alone_with_its_store_keeps_its_roles_in_its_file_and_says_so() {
    let master = Master::start();
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), "[roles.web]\nimage = \"app:1\"\n").expect("write roles");
    let what = "brine-master roles apply on a master alone";
    let finished = run_with_deadline(
        &mut master.cli(&["roles", "apply", path(file.path())]),
        Duration::from_secs(30),
        what,
    );
    // Refused as a matter of setup (exit 2), naming the file to edit instead.
    assert_eq!(finished.code, 2, "{}", finished.describe(what));
    assert!(
        finished
            .stderr
            .contains(&master.roles_path().display().to_string())
            && finished.stderr.contains("edit that file"),
        "{}",
        finished.describe(what)
    );
    assert!(on_master(&master, &["roles", "history"]).contains("no roles file applied yet"));
}
