//! `brine-master store migrate --to etcd URL`: moves a master alone with its store (redb, in
//! its data directory) to an etcd cluster, so that more masters can share its fleet.
//!
//! Everything the master keeps is copied through the store's own calls (hosts as they are,
//! their events, join tokens, jobs with their reports, releases, revocations, secrets (still
//! sealed), failed hook deliveries, a lock taken by hand) and the roles file becomes roles version 1. Only then is `master.toml` given its
//! `[etcd]` table and are `state.redb` and `roles.toml` set aside (renamed `*.migrated`), so a
//! migration that fails half-way leaves the master as it was.

use anyhow::{Context, bail};

use crate::config::MasterConfig;
use crate::data_dir::DataDir;
use crate::state::now_unix_ms;
use crate::store::{
    self, EVENTS_KEPT, EtcdSettings, FleetClaim, HOOK_FAILURES_KEPT, NewRoles, StoreLocation,
};

/// How many jobs are read from the old store at a time.
const JOBS_PAGE: usize = 500;

/// What a migration copied.
#[derive(Debug, Default)]
pub struct Migrated {
    pub hosts: usize,
    pub host_events: usize,
    pub tokens: usize,
    pub jobs: usize,
    pub releases: usize,
    pub revocations: usize,
    /// Copied sealed: they open with this master's secrets.key, which the masters sharing the
    /// store need a copy of.
    pub secrets: usize,
    pub hook_failures: usize,
}

/// Moves the fleet of the master in `data` into etcd as `settings` says. The master must be
/// stopped.
pub async fn to_etcd(data: &DataDir, settings: EtcdSettings) -> anyhow::Result<Migrated> {
    let config = MasterConfig::load(data.root())?;
    let StoreLocation::File(path) = &config.store else {
        bail!("this master keeps its fleet in etcd already (the [etcd] table of its master.toml)");
    };
    if !path.exists() {
        bail!(
            "{} does not exist: there is nothing to move",
            path.display()
        );
    }
    let source = store::open(&config.store)
        .await
        .with_context(|| format!("open {} (stop brine-master first)", path.display()))?;
    let roles = std::fs::read_to_string(&config.roles_file)
        .with_context(|| format!("read {}", config.roles_file.display()))?;
    let ca = data.load_ca()?;
    let target = store::open(&StoreLocation::Etcd(settings.clone()))
        .await
        .with_context(|| format!("connect to etcd at {}", settings.endpoints.join(",")))?;
    let now = now_unix_ms();
    // Checked before anything is written.
    let lock = source.current_lock(now).await?;
    if let Some(job) = lock.as_ref().and_then(|lock| lock.job_id.as_ref()) {
        bail!(
            "job {job} holds the fleet lock: start the master, let the job finish, stop it, and migrate then"
        );
    }
    match target.claim_fleet(ca.digest().to_owned()).await? {
        FleetClaim::New => {}
        FleetClaim::Same => bail!(
            "etcd holds this fleet under {} already (a migration ran before): serve from it, or \
             remove it (`etcdctl del --prefix {}`) and migrate again",
            settings.prefix,
            settings.prefix
        ),
        FleetClaim::Other { ca_sha256 } => bail!(
            "etcd holds another fleet under {} (its CA certificate's SHA-256 is {ca_sha256}); \
             give another --etcd-prefix",
            settings.prefix
        ),
    }
    let mut migrated = Migrated::default();

    // Jobs first, oldest first: recording one also brings its hosts' records up to date, and
    // the hosts' own records, copied next, are what counts.
    let mut jobs = vec![];
    let mut before = None;
    loop {
        let page = source.jobs_before(before.clone(), JOBS_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        before = Some(last.summary.job_id.to_string());
        jobs.extend(page);
    }
    for job in jobs.into_iter().rev() {
        if job.running {
            // The etcd masters finish it as interrupted, as a restart would.
            target.record_job_progress(job).await?;
        } else {
            target.record_job(job, config.job_retention).await?;
        }
        migrated.jobs += 1;
    }
    for host in source.minions().await? {
        let id = host.id.clone();
        target.import_minion(host).await?;
        migrated.hosts += 1;
        let mut events = source.host_events(id.clone(), EVENTS_KEPT).await?;
        events.reverse();
        for event in events {
            target.record_host_event(id.clone(), event).await?;
            migrated.host_events += 1;
        }
    }
    for token in source.tokens().await? {
        target.add_token(token.record).await?;
        migrated.tokens += 1;
    }
    for release in source.releases().await? {
        target
            .add_release(
                release.job_id,
                release.caller,
                release.created_at_unix_ms,
                release.pins,
            )
            .await?;
        migrated.releases += 1;
    }
    for revocation in source.certificate_revocations().await? {
        target
            .revoke_certificates(
                revocation.role,
                revocation.name,
                revocation.revoked_at_unix_ms,
            )
            .await?;
        migrated.revocations += 1;
    }
    let mut failures = source.hook_failures(HOOK_FAILURES_KEPT).await?;
    failures.reverse();
    for failure in failures {
        target.record_hook_failure(failure).await?;
        migrated.hook_failures += 1;
    }
    for (name, record) in source.secrets().await? {
        target.put_secret(name, record).await?;
        migrated.secrets += 1;
    }
    if let Some(lock) = lock {
        let _ = target.try_lock(lock, now).await?;
    }
    target
        .apply_roles(NewRoles {
            sha256: brine_common::token::sha256_hex(roles.as_bytes()),
            text: roles,
            applied_by: "brine-master store migrate".to_owned(),
            applied_at_unix_ms: now,
        })
        .await?;
    drop(source);

    // The master now reads its fleet from etcd.
    let mut file = std::fs::read_to_string(data.config())
        .with_context(|| format!("read {}", data.config().display()))?;
    if !file.ends_with('\n') {
        file.push('\n');
    }
    file.push('\n');
    file.push_str(&crate::config::etcd_table(&settings));
    brine_daemon::files::replace(&data.config(), &file, 0o600)
        .with_context(|| format!("write {}", data.config().display()))?;
    for moved in [path.clone(), config.roles_file.clone()] {
        let aside = moved.with_extension(format!(
            "{}.migrated",
            moved
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default()
        ));
        std::fs::rename(&moved, &aside)
            .with_context(|| format!("set {} aside", moved.display()))?;
    }
    Ok(migrated)
}
