//! The `brine-master` binary: argument parsing around the library.
//!
//! It is longer than most files because it holds the whole command line, as the types clap
//! derives it from, in one place; what each command does is in the library (`cli/`).

use brine_daemon::entry::{self, Threads};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use brine_common::identity::CertRole;
use brine_daemon::config::Overrides;
use brine_daemon::logging::LogArgs;
use brine_master::cli::cert::Issue;
use brine_master::cli::client::ClientArgs;
use brine_master::cli::context;
use brine_master::cli::events::EventsFormat;
use brine_master::cli::highstate::JobArgs;
use brine_master::cli::init::{EtcdArgs, MigrateArgs};
use brine_master::cli::minions::{ListFormat, MinionAction};
use brine_master::cli::output::OutputFormat;
use brine_master::config::{DEFAULT_PORT, ENV_PREFIX, MasterConfig, NOT_CONFIG_VARIABLES};
use brine_master::data_dir::DataDir;
use brine_master::setup::Setup;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// brine-master: deploys your application's containers to a fleet of Docker hosts.
///
/// The master holds the roles (which containers run from which image) and the assignments
/// (which host runs which roles). Hosts run brine-minion, which dials the master over mutual
/// TLS. `highstate` makes every host pull its images and replace exactly the containers that
/// changed.
#[derive(Debug, Parser)]
#[command(name = "brine-master", version = brine_daemon::VERSION, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    logging: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: CA, the master's certificate, an admin certificate, master.toml
    /// and an example roles.toml. With --etcd, the fleet is kept in etcd: the first master
    /// creates it there; for each further master, copy ca.pem and ca.key from the first into
    /// the new data directory, then run init with the same --etcd.
    Init {
        /// A host name or IP address minions use to reach the master; repeat for several.
        /// `localhost` and `127.0.0.1` are always included.
        #[arg(long, value_name = "HOST_OR_IP")]
        advertise: Vec<String>,
        /// The address the master will listen on (written to master.toml).
        #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
        listen: SocketAddr,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Show the configuration in effect: master.toml with the BRINE_MASTER_* environment
    /// variables applied (registry passwords redacted).
    Config,
    /// Run the master daemon.
    Serve {
        /// Listen here instead of master.toml's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Manage join tokens for enrolling hosts.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Converge hosts to the roles file: pull images, replace changed containers, remove
    /// undeclared ones. Exits 0 when every host is unchanged or changed, 1 when any failed, was
    /// unreachable or timed out, 2 when it did not run because of the input or setup, 3 when it
    /// did not run but may later (fleet locked, master unreachable), 4 when the connection was
    /// lost while it ran (follow it with `jobs show ID --follow`).
    Highstate {
        #[command(flatten)]
        job: JobArgs,
        /// Only these hosts: a minion id glob (`web-*`), a list (`web-1,web-2`), or an expression
        /// of `id:GLOB`, `label:KEY=GLOB`, `fact:NAME=GLOB` (hostname, os, kernel, docker, cpus)
        /// and `role:ROLE` with `and`, `or`, `not` and parentheses, e.g.
        /// 'role:web and label:env=prod and not web-3'.
        #[arg(long, value_name = "EXPRESSION")]
        target: Option<String>,
        /// A dry run: every host reports what it would pull, create, replace and remove against
        /// what it really runs; nothing changes. `changed` then means "would change".
        #[arg(long)]
        plan: bool,
    },
    /// The history of jobs (highstates, deploys, rollbacks, and `exec` and `logs` calls): who
    /// ran what, when, and every host's result.
    Jobs {
        #[command(subcommand)]
        command: Option<JobsCommand>,
        /// How many jobs to list, newest first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        // Global, so that `jobs --output json show ID` means what it says.
        #[arg(long, short, global = true, value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
    /// Show the logs of a role's containers on every host that runs it, each line prefixed
    /// with its host (and container, when the role has several); standard error lines go to
    /// standard error. Admin only; recorded in `jobs`. Without --follow, the last 100 lines of
    /// each (--tail), at most 4 MiB a container; with it, new lines as they come, at most
    /// 64 KiB/s a container (over that, lines are left out and counted), until interrupted.
    /// Exits 0 when every host's log was read, 1 when any host failed or was unreachable.
    Logs {
        /// The role, as the roles file names it, or ROLE/CONTAINER for one of its containers.
        #[arg(value_name = "ROLE[/CONTAINER]")]
        what: String,
        /// Only these hosts among those that run the role; the same expressions as for
        /// highstate (e.g. 'web-1' or 'label:env=prod').
        #[arg(long, value_name = "EXPRESSION")]
        target: Option<String>,
        /// Keep showing new lines until interrupted (Ctrl-C).
        #[arg(long, short)]
        follow: bool,
        /// Only lines written since then: a duration back (`10m`, `2h`) or a time
        /// (`2026-12-03T10:00:00Z`).
        #[arg(long, value_name = "DURATION_OR_TIME")]
        since: Option<String>,
        /// How many lines of each log's end (at most 10000).
        #[arg(long, short = 'n', default_value_t = brine_common::session::DEFAULT_TAIL_LINES)]
        tail: u32,
    },
    /// Run a command in a role's containers on every host that runs it, at once, and show
    /// each host's output (prefixed with the host) and exit status. The command runs as given,
    /// without a shell: use `-- sh -c '...'` for one. Admin only; recorded in `jobs` with the
    /// command. At most 1 MiB of output a container is shown (the rest is left out, and said
    /// to be). Exits 0 when the command exited 0 on every host, 1 when any host exited
    /// otherwise, failed, timed out or was unreachable.
    Exec {
        /// The role, as the roles file names it, or ROLE/CONTAINER for one of its containers.
        #[arg(value_name = "ROLE[/CONTAINER]")]
        what: String,
        /// Only these hosts among those that run the role; the same expressions as for
        /// highstate.
        #[arg(long, value_name = "EXPRESSION")]
        target: Option<String>,
        /// How long to wait for the command on each host (at most 1h); after that it is no
        /// longer waited for (it may still run in the container).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// `text`: each host's lines as they come, then `exit N`; `json`: one document at the
        /// end with every host's output, exit status and error.
        #[arg(long, short, value_enum, default_value_t = brine_master::cli::sessions::ExecFormat::Text)]
        output: brine_master::cli::sessions::ExecFormat,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// What happens in the fleet: hosts linking and losing their links, admission decisions,
    /// jobs starting, each host's final report, jobs finishing, repairs and crash loops the
    /// hosts report, and hooks that failed.
    ///
    /// Without --follow, prints the recent events the master keeps (its last 1000, since it
    /// started) and exits; with it, goes on printing events as they happen until interrupted
    /// (Ctrl-C). A watcher that reads too slowly is told how many events it missed.
    Events {
        /// Keep printing events as they happen, until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Only events of this kind; repeat for several (host_linked, host_lost,
        /// host_accepted, host_rejected, host_revoked, host_deleted, job_started,
        /// host_reported, job_finished, host_event, hook_failed).
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// `text`: a line per event for people; `json`: one JSON object per line, with the
        /// fields README's "Events and hooks" lists (what hooks receive).
        #[arg(long, short, value_enum, default_value_t = EventsFormat::Text)]
        output: EventsFormat,
    },
    /// The web dashboard (`dashboard_listen` in master.toml): sign-in links for browsers, and
    /// the sessions they started. Sessions live in the master's memory: a restart of the master
    /// signs every browser out.
    Dashboard {
        #[command(subcommand)]
        command: DashboardCommand,
    },
    /// The hooks of master.toml (`[[hooks]]`), which run a command or POST to a URL on chosen
    /// events.
    Hooks {
        #[command(subcommand)]
        command: HooksCommand,
    },
    /// The fleet lock: while it is held, every highstate is refused. A highstate holds it while
    /// it runs; take it by hand to stop rollouts during maintenance.
    Lock {
        #[command(subcommand)]
        command: LockCommand,
    },
    /// Deploy an image to roles (what CI calls after pushing a tested image): a highstate over
    /// the hosts of those roles, in which their containers run IMAGE and every other role keeps
    /// its current images. The roles file is not changed. Exit codes as for highstate.
    Deploy {
        #[command(flatten)]
        job: JobArgs,
        /// A role to deploy; repeat for several.
        #[arg(long = "role", required = true, value_name = "ROLE")]
        roles: Vec<String>,
        /// The image, e.g. `registry.example.com:5000/mynames/app:tested`.
        #[arg(long)]
        image: String,
        /// Only these hosts among those that run the roles; the same expressions as for
        /// highstate (e.g. 'label:env=staging').
        #[arg(long, value_name = "EXPRESSION")]
        target: Option<String>,
    },
    /// Certificates for CI pipelines and operators: issue them (on the master host) and revoke
    /// them.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// The roles file of masters that share a store in etcd, kept there in versions: apply a
    /// new one (from CI too), show one, list them. A master alone with its store reads its
    /// roles.toml instead.
    Roles {
        #[command(subcommand)]
        command: RolesCommand,
    },
    /// Secrets: values the master keeps encrypted, outside the roles file, which containers
    /// get as environment variables (`DB_PASSWORD = { secret = "db" }` in the roles file). A
    /// value is sent only to the hosts whose containers use it, and never printed.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Where the master keeps its fleet.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// The releases: after each successful highstate that changed something, which image
    /// (pinned by digest) each container of each role runs. Rollback targets.
    Releases {
        /// Only this role's images.
        #[arg(long)]
        role: Option<String>,
        #[arg(long, short, value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
    /// Run a role (or every role) on the images of an earlier release, as a highstate. Every
    /// other role keeps its current images; hosts that still have the old images need no
    /// download. Exit codes as for highstate.
    Rollback {
        #[command(flatten)]
        job: JobArgs,
        /// The role to roll back; default every role.
        #[arg(long)]
        role: Option<String>,
        /// The release to go back to; default the newest earlier one that differs.
        #[arg(long, value_name = "RELEASE")]
        to: Option<u64>,
        /// Only these hosts; the same expressions as for highstate.
        #[arg(long, value_name = "EXPRESSION")]
        target: Option<String>,
    },
    /// List enrolled hosts, their link state, facts and containers.
    Minions {
        #[command(subcommand)]
        command: Option<MinionsCommand>,
        // Global, so that `minions --output json show ID` means what it says.
        #[arg(long, short, global = true, value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
        /// Only the hosts this picks; the same expressions as for highstate (e.g.
        /// 'role:web and label:env=prod').
        #[arg(long, value_name = "EXPRESSION")]
        target: Option<String>,
    },
    /// Named masters to call from this machine (a laptop, a CI runner).
    ///
    /// Contexts are kept in `~/.config/brine/config.toml` (or `$XDG_CONFIG_HOME/brine/`, or the
    /// file `BRINE_CONFIG` names), each an address and the certificates to call it with. `cert
    /// issue --out DIR` on the master host writes one for `context import DIR`.
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// Print a shell completion script, e.g. `brine-master completions bash >
    /// /etc/bash_completion.d/brine-master`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show this program's version and the master's.
    Version,
    /// Write the manual pages: brine-master.1 and one per subcommand.
    Man {
        /// The directory to write them into.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ContextCommand {
    /// List the contexts with their masters; `*` marks the current one.
    List,
    /// Make a context the current one: used when neither `--context` nor `BRINE_CONTEXT` names
    /// one.
    Use {
        /// The context's name.
        name: String,
    },
    /// Show the connection in effect: the master's address, the CA, the certificate and the key,
    /// and where each came from (a flag, a variable, a context, the data directory).
    Show,
    /// Add the context `cert issue --out DIR` wrote: its certificates are copied beside the
    /// configuration (under `contexts/NAME/`); it becomes the current one unless another is.
    Import {
        /// The directory `cert issue --out` wrote (with context.toml).
        dir: PathBuf,
        /// Import it under this name instead of its own.
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a context and the certificates `context import` copied for it.
    Remove {
        /// The context's name.
        name: String,
    },
}

/// Hosts to act on: ids, or globs such as `web-*` (quote them from the shell). A glob is shown
/// and confirmed on the terminal before anything happens, unless `--yes`.
#[derive(Debug, clap::Args)]
struct MinionSelection {
    /// Host ids or globs.
    #[arg(required = true, value_name = "ID_OR_GLOB")]
    ids: Vec<String>,
    /// Do not ask for confirmation (for scripts).
    #[arg(long, short)]
    yes: bool,
}

#[derive(Debug, Subcommand)]
enum MinionsCommand {
    /// One host in detail: link, certificate, facts, labels, containers, and what it did on its
    /// own (repairs of containers that died, were stopped or removed), newest first.
    Show {
        /// The host's id.
        id: String,
    },
    /// Admit hosts that wait for approval (`join_approval = "manual"` in master.toml).
    Accept(MinionSelection),
    /// Turn hosts away; they must join again with a token to come back.
    Reject(MinionSelection),
    /// Refuse hosts' certificates from now on and drop their links; they must join again with a
    /// token to come back. They stay listed as revoked.
    Revoke(MinionSelection),
    /// Forget hosts: drop their links, refuse their certificates and remove them from the
    /// list. A host that comes back under the same id must join again with a token.
    Delete(MinionSelection),
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Issue a certificate and write NAME.pem, NAME.key, ca.pem and context.toml to a directory;
    /// on the machine that will call the master, `brine-master context import DIR` sets it up.
    Issue {
        /// A certificate for a CI pipeline (may deploy, run highstates, read).
        #[arg(long, value_name = "NAME", group = "role")]
        ci: Option<String>,
        /// A certificate for an operator (may do everything).
        #[arg(long, value_name = "NAME", group = "role")]
        admin: Option<String>,
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
        /// The master's address for context.toml; default the first name its certificate is
        /// advertised for beyond `localhost` and `127.0.0.1` (else `localhost`), with the port
        /// of master.toml's `listen`.
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
        /// The context's name in context.toml; default NAME.
        #[arg(long, value_name = "NAME")]
        context_name: Option<String>,
    },
    /// Renew the master's own server certificate (with a new key) in the data directory. A
    /// running master serves it within seconds, without a restart; minions and clients need
    /// nothing new, as it comes from the same CA. The master also renews it by itself once two
    /// thirds of its lifetime have passed.
    Renew {
        /// The host names and IP addresses it is valid for, replacing the current ones; repeat
        /// for several. `localhost` and `127.0.0.1` are always included.
        #[arg(long, value_name = "HOST_OR_IP")]
        advertise: Vec<String>,
    },
    /// Refuse every certificate issued so far for a CI pipeline or an operator (a leaked key,
    /// someone who left), from now on. Certificates issued for the name afterwards work.
    Revoke {
        /// A CI pipeline's certificates.
        #[arg(long, value_name = "NAME", group = "role")]
        ci: Option<String>,
        /// An operator's certificates.
        #[arg(long, value_name = "NAME", group = "role")]
        admin: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Move the fleet of a master alone with its store (state.redb in its data directory) to
    /// an etcd cluster, so that more masters can share it: hosts, tokens, jobs, releases,
    /// revocations, secrets (still sealed: every master needs a copy of secrets.key) and the
    /// roles file (as roles version 1). Stop the master first; start it
    /// again afterwards, then add masters as for any fleet in etcd. master.toml gets an
    /// [etcd] table; state.redb and roles.toml are kept as *.migrated.
    Migrate {
        #[command(flatten)]
        to: MigrateArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RolesCommand {
    /// Check FILE as a highstate would and make it the roles file every master reads (a new
    /// version, unless the newest has the same text); prints what changed.
    Apply {
        /// The roles file (TOML; see deploy/roles.toml.example).
        file: PathBuf,
    },
    /// Print a version of the roles file: the newest, or VERSION.
    Show {
        /// The version, as `roles history` lists it.
        version: Option<u64>,
    },
    /// List the versions kept (the newest 100), newest first: who applied each and when.
    History {
        #[arg(long, short, value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Set secret NAME. The value is read from --from-file, else typed at the terminal (not
    /// shown), else read from standard input (`printf %s "$DB_PASSWORD" | brine-master secret
    /// set db`); one trailing newline is dropped. A new value replaces, at the next highstate,
    /// the containers that use it.
    Set {
        /// The secret's name, as the roles file refers to it.
        name: String,
        /// Read the value from this file.
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
    },
    /// List the secrets: name, fingerprint (which value), when and by whom set, and the
    /// containers that use it. Never a value.
    List {
        #[arg(long, short, value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
    },
    /// Delete secret NAME. Refused while the roles file uses it, unless --force.
    Delete {
        name: String,
        /// Delete it even though the roles file uses it: the next job that needs it fails.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum HooksCommand {
    /// The deliveries that failed after their retries (or were dropped because the hook's
    /// queue was full), newest first: the master keeps the newest 1000 in its store, across
    /// restarts.
    Failures {
        /// `text`: a line per failure; `json`: one JSON object per line.
        #[arg(long, short, value_enum, default_value_t = EventsFormat::Text)]
        output: EventsFormat,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Cancel a running job: no batch starts after this (nor an auto-revert); the hosts of the
    /// batch under way finish their step and report; the hosts not reached are skipped. The
    /// job records who cancelled it.
    Cancel {
        /// The job's id, as `jobs` lists it.
        id: String,
    },
    /// Show one job with every host's containers, digests and errors; with `--follow`, follow
    /// it from its start to its end as `highstate` shows a job (and exit as it does).
    Show {
        /// The job's id, as `jobs` lists it.
        id: String,
        /// Follow the job, running or finished, from its start to its summary.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DashboardCommand {
    /// Make a one-time sign-in link and print it, alone on the last line of standard output.
    /// Open it in a browser within 5 minutes; it works once. The browser then holds a session
    /// (a cookie) for --ttl, read-only unless --admin. Sessions live in the master's memory: a
    /// restart of the master signs every browser out.
    Login {
        /// How long the session lasts (at least 1m, at most 30d).
        #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Let the session act (release the fleet lock), not only look.
        #[arg(long)]
        admin: bool,
    },
    /// The sessions the master holds now: id, when created, last seen and expiring, whether
    /// admin, and the certificate that made the link.
    Sessions {
        /// `text`: a line per session; `json`: a JSON array.
        #[arg(long, short, value_enum, default_value_t = brine_master::cli::dashboard::SessionsFormat::Text)]
        output: brine_master::cli::dashboard::SessionsFormat,
    },
    /// End a session at once: its browser is signed out at its next request.
    Revoke {
        /// The session's id, from `dashboard sessions`.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum LockCommand {
    /// Who holds the lock, why, and until when.
    Status,
    /// Lock the fleet against rollouts.
    Acquire {
        /// Why; shown to anyone the lock turns away.
        #[arg(long, short)]
        message: String,
        /// How long until it expires by itself (e.g. `2h`).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Release the lock, whoever holds it. A lock a running job holds is released only with
    /// `--force` (the job goes on, unlocked; `jobs cancel ID` stops it instead).
    Release {
        /// Release it even though a running job holds it.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a join token; it is printed alone on stdout.
    Create {
        /// How long the token stays valid (e.g. `1h`, `30m`).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How many hosts may join with it; 0 means any number until it expires.
        #[arg(long, default_value_t = 0, conflicts_with = "replace")]
        uses: u32,
        /// Re-enrol a rebuilt host: the token is for this host id only, once. An enrolled id
        /// cannot be joined again with any other token. When the join takes effect (at once,
        /// or at `minions accept ID` with manual approval), the host's previous certificate is
        /// refused and its live link dropped.
        #[arg(long, value_name = "ID")]
        replace: Option<String>,
        /// A label every host that joins with it carries, for targeting (`env=prod`); repeat,
        /// or separate with commas, for several (as `brine-minion join --label`).
        #[arg(long = "label", visible_alias = "labels", value_name = "KEY=VALUE", value_delimiter = ',', value_parser = brine_common::names::parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List join tokens by id, with expiry and uses (never their secrets).
    List,
    /// Delete a join token so no more hosts can join with it.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
    },
}

fn main() -> ExitCode {
    brine_proto::tls::install_crypto_provider();
    let cli = parse();
    let serving = matches!(cli.command, Command::Serve { .. });
    brine_daemon::logging::init(
        cli.logging.log_format,
        if serving { "info" } else { "warn" },
    );
    let runtime = match entry::runtime(Threads::Workers(2)) {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    match runtime.block_on(execute(cli.command, cli.client)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(brine_master::cli::exit_code_of(&err))
        }
    }
}

/// Parses the command line (exiting with clap's message on a mistake), noting which connection
/// flags it or the environment gave.
fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    cli.client.note_sources(&matches);
    cli
}

async fn execute(command: Command, client: ClientArgs) -> anyhow::Result<ExitCode> {
    let data_dir = client.data_dir.clone();
    let job = |mut job: JobArgs| {
        // The connection flags are the top-level command's, not the job's.
        job.client = client.clone();
        job
    };
    match command {
        Command::Init {
            advertise,
            listen,
            etcd,
        } => {
            let etcd = etcd.settings()?;
            let prefix = etcd.as_ref().map(|e| e.prefix.clone()).unwrap_or_default();
            let reached_at = advertise.first().cloned();
            let setup = brine_master::setup::init(
                &DataDir::new(&data_dir),
                &advertised_names(advertise),
                reached_at.as_deref(),
                listen,
                etcd,
            )
            .await?;
            match setup {
                Setup::NewFleet => {}
                Setup::NewFleetInEtcd => println!(
                    "created the fleet in etcd under {prefix}, with the example roles file as \
                     roles version 1 (`brine-master roles show`; change it with `roles apply FILE`)"
                ),
                Setup::JoinedFleetInEtcd => {
                    println!("joined the fleet in etcd under {prefix} with the copied CA")
                }
            }
            println!(
                "initialized {}; start the master with:\n  brine-master serve --data-dir {}",
                data_dir.display(),
                data_dir.display()
            );
        }
        Command::Config => {
            let config = MasterConfig::load(&data_dir)?;
            print!(
                "{}",
                config.describe(&Overrides::from_environment(
                    ENV_PREFIX,
                    NOT_CONFIG_VARIABLES
                ))
            );
        }
        Command::Serve { listen } => {
            let mut config = MasterConfig::load(&data_dir)?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let listener = brine_master::server::listen(config.listen)
                .with_context(|| format!("listen on {}", config.listen))?;
            brine_master::server::run(config, listener, brine_daemon::shutdown::signal_received())
                .await?;
        }
        Command::Token { command } => match command {
            TokenCommand::Create {
                ttl,
                uses,
                labels,
                replace,
            } => {
                brine_master::cli::token::create(&client, ttl, uses, labels, replace).await?;
            }
            TokenCommand::List => brine_master::cli::token::list(&client).await?,
            TokenCommand::Revoke { id } => {
                brine_master::cli::token::revoke(&client, id).await?;
            }
        },
        Command::Highstate {
            job: args,
            target,
            plan,
        } => {
            let verdict = brine_master::cli::highstate::run(&job(args), target, plan).await?;
            return Ok(verdict.exit_code());
        }
        Command::Jobs {
            command,
            limit,
            output,
        } => match command {
            None => brine_master::cli::jobs::list(&client, limit, output).await?,
            Some(JobsCommand::Cancel { id }) => {
                brine_master::cli::jobs::cancel(&client, id).await?;
            }
            Some(JobsCommand::Show { id, follow: true }) => {
                let format = match output {
                    ListFormat::Json => OutputFormat::Json,
                    ListFormat::Table => OutputFormat::Auto,
                };
                let verdict = brine_master::cli::jobs::follow(&client, id, format).await?;
                return Ok(verdict.exit_code());
            }
            Some(JobsCommand::Show { id, follow: false }) => {
                brine_master::cli::jobs::show(&client, id, output).await?;
            }
        },
        Command::Logs {
            what,
            target,
            follow,
            since,
            tail,
        } => {
            let since_unix_ms = since
                .map(|since| brine_master::cli::sessions::since_unix_ms(&since, SystemTime::now()))
                .transpose()?;
            let options = brine_common::session::LogsOptions {
                since_unix_ms,
                tail,
                follow,
            };
            let code = brine_master::cli::sessions::logs(&client, &what, target, options).await?;
            return Ok(ExitCode::from(code));
        }
        Command::Exec {
            what,
            target,
            timeout,
            output,
            command,
        } => {
            let code =
                brine_master::cli::sessions::exec(&client, &what, target, command, timeout, output)
                    .await?;
            return Ok(ExitCode::from(code));
        }
        Command::Events {
            follow,
            kinds,
            output,
        } => brine_master::cli::events::run(&client, follow, kinds, output).await?,
        Command::Hooks {
            command: HooksCommand::Failures { output },
        } => brine_master::cli::events::failures(&client, output).await?,
        Command::Dashboard { command } => match command {
            DashboardCommand::Login { ttl, admin } => {
                brine_master::cli::dashboard::login(&client, ttl, admin).await?;
            }
            DashboardCommand::Sessions { output } => {
                brine_master::cli::dashboard::sessions(&client, output).await?;
            }
            DashboardCommand::Revoke { id } => {
                brine_master::cli::dashboard::revoke(&client, id).await?;
            }
        },
        Command::Lock { command } => match command {
            LockCommand::Status => brine_master::cli::lock::status(&client).await?,
            LockCommand::Acquire { message, ttl } => {
                brine_master::cli::lock::acquire(&client, message, ttl).await?;
            }
            LockCommand::Release { force } => {
                brine_master::cli::lock::release(&client, force).await?;
            }
        },
        Command::Deploy {
            job: args,
            roles,
            image,
            target,
        } => {
            let verdict =
                brine_master::cli::highstate::deploy(&job(args), roles, image, target).await?;
            return Ok(verdict.exit_code());
        }
        Command::Cert {
            command:
                CertCommand::Issue {
                    ci,
                    admin,
                    out,
                    address,
                    context_name,
                },
        } => {
            let (role, name) = role_and_name(ci, admin)?;
            brine_master::cli::cert::issue(
                &DataDir::new(&data_dir),
                Issue {
                    role,
                    name: &name,
                    out: &out,
                    address,
                    context_name,
                },
            )?;
        }
        Command::Cert {
            command: CertCommand::Renew { advertise },
        } => {
            let names = (!advertise.is_empty()).then(|| advertised_names(advertise));
            let names = brine_master::server_cert::renew(&DataDir::new(&data_dir), names)?;
            println!(
                "renewed the master's certificate for {}; a running master serves it within {} s",
                names.join(", "),
                brine_master::server_cert::RELOAD_INTERVAL.as_secs()
            );
        }
        Command::Cert {
            command: CertCommand::Revoke { ci, admin },
        } => {
            let (role, name) = role_and_name(ci, admin)?;
            brine_master::cli::cert::revoke(&client, role, name).await?;
        }
        Command::Store {
            command: StoreCommand::Migrate { to },
        } => {
            let settings = to.settings()?;
            let prefix = settings.prefix.clone();
            let moved = brine_master::migrate::to_etcd(&DataDir::new(&data_dir), settings).await?;
            println!(
                "moved the fleet to etcd under {prefix}: {} hosts ({} events), {} join tokens, {} \
                 jobs, {} releases, {} revocations, {} secrets, {} failed hook deliveries, and \
                 the roles file as roles version 1",
                moved.hosts,
                moved.host_events,
                moved.tokens,
                moved.jobs,
                moved.releases,
                moved.revocations,
                moved.secrets,
                moved.hook_failures
            );
            println!(
                "start the master again (brine-master serve); set advertise_address in {} so that \
                 hosts can find it among the masters you add",
                data_dir.join("master.toml").display()
            );
        }
        Command::Roles { command } => match command {
            RolesCommand::Apply { file } => brine_master::cli::roles::apply(&client, &file).await?,
            RolesCommand::Show { version } => {
                brine_master::cli::roles::show(&client, version).await?;
            }
            RolesCommand::History { output } => {
                brine_master::cli::roles::history(&client, output).await?;
            }
        },
        Command::Secret { command } => match command {
            SecretCommand::Set { name, from_file } => {
                brine_master::cli::secret::set(&client, &name, from_file.as_deref()).await?;
            }
            SecretCommand::List { output } => {
                brine_master::cli::secret::list(&client, output).await?;
            }
            SecretCommand::Delete { name, force } => {
                brine_master::cli::secret::delete(&client, &name, force).await?;
            }
        },
        Command::Releases { role, output } => {
            brine_master::cli::releases::list(&client, role, output).await?;
        }
        Command::Rollback {
            job: args,
            role,
            to,
            target,
        } => {
            let verdict =
                brine_master::cli::highstate::rollback(&job(args), role, to, target).await?;
            return Ok(verdict.exit_code());
        }
        Command::Minions {
            command,
            output,
            target,
        } => match command {
            None => brine_master::cli::minions::list(&client, target, output).await?,
            Some(MinionsCommand::Show { id }) => {
                brine_master::cli::minions::show(&client, id, output).await?;
            }
            Some(MinionsCommand::Accept(selection)) => {
                act_on_minions(&client, MinionAction::Accept, selection).await?;
            }
            Some(MinionsCommand::Reject(selection)) => {
                act_on_minions(&client, MinionAction::Reject, selection).await?;
            }
            Some(MinionsCommand::Revoke(selection)) => {
                act_on_minions(&client, MinionAction::Revoke, selection).await?;
            }
            Some(MinionsCommand::Delete(selection)) => {
                act_on_minions(&client, MinionAction::Delete, selection).await?;
            }
        },
        Command::Context { command } => match command {
            ContextCommand::List => context::list()?,
            ContextCommand::Use { name } => context::use_context(&name)?,
            ContextCommand::Show => context::show(&client)?,
            ContextCommand::Import { dir, name } => context::import(&dir, name)?,
            ContextCommand::Remove { name } => context::remove(&name)?,
        },
        Command::Completions { shell } => {
            brine_master::cli::docs::completions(Cli::command(), shell);
        }
        Command::Man { out } => brine_master::cli::docs::man_pages(Cli::command(), &out)?,
        Command::Version => brine_master::cli::version::show(&client).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn act_on_minions(
    client: &ClientArgs,
    action: MinionAction,
    selection: MinionSelection,
) -> anyhow::Result<()> {
    brine_master::cli::minions::act(client, action, &selection.ids, selection.yes).await
}

/// The names a master certificate is valid for: the local ones and `advertise`.
fn advertised_names(advertise: Vec<String>) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for name in advertise {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The role and name of `--ci NAME` or `--admin NAME`.
fn role_and_name(ci: Option<String>, admin: Option<String>) -> anyhow::Result<(CertRole, String)> {
    match (ci, admin) {
        (Some(name), None) => Ok((CertRole::Ci, name)),
        (None, Some(name)) => Ok((CertRole::Admin, name)),
        _ => anyhow::bail!("give either --ci NAME or --admin NAME"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks the definition (duplicate names, conflicting globals) only when a command is
    /// built in a debug build; this builds every subcommand.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
