//! The master's data directory: CA, certificates, configuration, roles file and store.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use brine_common::identity::CertRole;
use brine_daemon::files::write_new;

use crate::config::MasterConfig;
use crate::pki::CertificateAuthority;
use crate::store::EtcdSettings;

/// Where the data directory is unless `--data-dir` or `BRINE_MASTER_DATA_DIR` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/brine-master";

/// The CA a new data directory gets.
pub enum FleetCa {
    /// Made for a new fleet, with its private key.
    Made {
        ca: CertificateAuthority,
        key_pem: String,
    },
    /// Copied in from a master of the fleet this one joins.
    Copied(CertificateAuthority),
}

impl FleetCa {
    pub fn ca(&self) -> &CertificateAuthority {
        match self {
            FleetCa::Made { ca, .. } | FleetCa::Copied(ca) => ca,
        }
    }
}

/// The files of a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.root.join("master.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.root.join("master.key")
    }

    pub fn admin_cert(&self) -> PathBuf {
        self.root.join("admin.pem")
    }

    pub fn admin_key(&self) -> PathBuf {
        self.root.join("admin.key")
    }

    pub fn store(&self) -> PathBuf {
        self.root.join("state.redb")
    }

    pub fn config(&self) -> PathBuf {
        self.root.join(crate::config::CONFIG_FILE)
    }

    pub fn roles(&self) -> PathBuf {
        self.root.join("roles.toml")
    }

    /// The fleet's CA for a new data directory: made here, or, for a master joining a fleet
    /// that other masters share (`may_join`), the one copied in from one of them (`ca.pem` and
    /// `ca.key`). Refuses a directory that holds a master already, or a CA it may not join.
    pub fn fleet_ca(&self, may_join: bool) -> anyhow::Result<FleetCa> {
        if self.server_cert().exists() || self.server_key().exists() {
            bail!(
                "{} holds a master already ({} is there); refusing to overwrite it",
                self.root.display(),
                self.server_cert().display()
            );
        }
        let (cert, key) = (self.ca_cert(), self.ca_key());
        match (cert.exists(), key.exists()) {
            (false, false) => {
                let (ca, key_pem) = CertificateAuthority::generate()?;
                Ok(FleetCa::Made { ca, key_pem })
            }
            _ if !may_join => bail!(
                "{} already holds a CA; refusing to overwrite it (every enrolled host trusts it)",
                self.root.display()
            ),
            (true, true) => Ok(FleetCa::Copied(
                self.load_ca()
                    .context("read the CA copied from the fleet's first master")?,
            )),
            _ => bail!(
                "{} holds only one of {} and {}: copy both from a master of the fleet",
                self.root.display(),
                cert.display(),
                key.display()
            ),
        }
    }

    /// Sets up the data directory with the fleet's CA `ca`: the CA's files if it was made
    /// here, the master's server certificate (valid for `advertise` names and addresses), the
    /// local admin certificate, a default configuration (keeping the store in `etcd` if given)
    /// and, for a store of its own, an example roles file.
    pub fn init(
        &self,
        ca: &FleetCa,
        advertise: &[String],
        listen: SocketAddr,
        etcd: Option<&EtcdSettings>,
        advertise_address: Option<&str>,
    ) -> anyhow::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("create {}", self.root.display()))?;

        let ca = match ca {
            FleetCa::Made { ca, key_pem } => {
                write_new(&self.ca_key(), key_pem, 0o600)?;
                write_new(&self.ca_cert(), ca.cert_pem(), 0o644)?;
                ca
            }
            FleetCa::Copied(ca) => ca,
        };
        let server = ca.issue("brine-master", CertRole::Master, advertise)?;
        let admin = ca.issue("admin", CertRole::Admin, &[])?;
        write_new(&self.server_key(), &server.key_pem, 0o600)?;
        write_new(&self.server_cert(), &server.cert_pem, 0o644)?;
        write_new(&self.admin_key(), &admin.key_pem, 0o600)?;
        write_new(&self.admin_cert(), &admin.cert_pem, 0o644)?;
        // Both can hold secrets: registry passwords, containers' environment values.
        if !self.config().exists() {
            write_new(
                &self.config(),
                &MasterConfig::default_file(listen, etcd, advertise_address),
                0o600,
            )?;
        }
        // Masters that share a store read the roles file from it.
        if etcd.is_none() && !self.roles().exists() {
            write_new(&self.roles(), EXAMPLE_ROLES, 0o600)?;
        }
        Ok(())
    }

    /// Takes away from the data directory (0700) and from `master.toml` and `roles_file` (0600)
    /// whatever access they give beyond the master's own user: a directory made by hand, files
    /// copied in, or an older `init` (which wrote the files 0644) may let anyone on the host read
    /// the CA key or the secrets. Returns a warning for each change, or for each that was not
    /// allowed; a file that does not exist is left to whatever reads it.
    pub fn tighten_permissions(&self, roles_file: &Path) -> anyhow::Result<Vec<String>> {
        let private = [
            (self.root.clone(), 0o700, "it holds the CA key"),
            (self.config(), 0o600, "it can hold registry passwords"),
            (
                roles_file.to_path_buf(),
                0o600,
                "it can hold containers' environment values",
            ),
        ];
        let mut warnings = Vec::new();
        for (path, allowed, why) in private {
            let mode = match fs::metadata(&path) {
                Ok(metadata) => metadata.permissions().mode(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(err).with_context(|| format!("inspect {}", path.display()));
                }
            };
            let extra = mode & 0o777 & !allowed;
            if extra == 0 {
                continue;
            }
            let tightened = mode & !extra;
            let (before, after) = (mode & 0o7777, tightened & 0o7777);
            // A file someone else owns (edited as root, say) cannot be changed; refusing to
            // start would not make it private either, so the operator is told what to do.
            warnings.push(
                match fs::set_permissions(&path, fs::Permissions::from_mode(tightened)) {
                    Ok(()) => format!(
                        "{} was mode {before:04o}; set to {after:04o}: {why}",
                        path.display()
                    ),
                    Err(err) => format!(
                        "{} is mode {before:04o} and cannot be set to {after:04o} ({err}): {why}; \
                         make it private to the master's user",
                        path.display()
                    ),
                },
            );
        }
        Ok(warnings)
    }

    /// Loads the CA for signing.
    pub fn load_ca(&self) -> anyhow::Result<CertificateAuthority> {
        let cert = read(&self.ca_cert())?;
        let key = read(&self.ca_key())?;
        Ok(CertificateAuthority::load(&cert, &key)?)
    }
}

/// Reads a text file, naming it in the error.
pub fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// The example roles file a new fleet starts with.
pub const EXAMPLE_ROLES: &str = r#"# brine roles file: which containers each role runs, and which hosts run which roles.
# It is read again at every highstate; a file with errors is refused and nothing is sent.
#
# [roles.web]
# image = "registry.example.com:5000/mynames/app:tested"
#
# [[roles.web.containers]]
# name = "web"
# command = ["gunicorn", "-b", "0.0.0.0:8000", "app:app"]
# ports = ["80:8000"]
# env = { APP_ENV = "production" }
# volumes = ["/srv/uploads:/app/uploads"]
# restart = "unless-stopped"
# stop_timeout = "10s"
# health = { http = "http://127.0.0.1:8000/health", min_healthy = "5s", deadline = "60s" }
#
# [assign]
# "web-*" = ["web"]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn init_writes_private_keys_and_refuses_to_run_twice() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("master"));
        let listen = "127.0.0.1:4700".parse().unwrap();
        let ca = data.fleet_ca(false).unwrap();
        data.init(
            &ca,
            &["localhost".into(), "127.0.0.1".into()],
            listen,
            None,
            None,
        )
        .unwrap();
        for private in [
            data.ca_key(),
            data.server_key(),
            data.admin_key(),
            data.config(),
            data.roles(),
        ] {
            assert_eq!(mode(&private), 0o600, "{}", private.display());
        }
        assert_eq!(mode(data.root()), 0o700);
        assert!(data.tighten_permissions(&data.roles()).unwrap().is_empty());
        assert!(data.load_ca().is_ok());
        assert!(MasterConfig::load_with(data.root(), &Default::default()).is_ok());
        brine_common::roles_file::RolesFile::parse("roles.toml", &read(&data.roles()).unwrap())
            .unwrap();
        let ca_before = read(&data.ca_cert()).unwrap();
        // Neither for the same fleet nor to join one.
        for may_join in [false, true] {
            let err = data
                .fleet_ca(may_join)
                .err()
                .expect("a second init is refused");
            assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        }
        assert_eq!(read(&data.ca_cert()).unwrap(), ca_before);
    }

    #[test]
    fn a_master_joining_a_fleet_uses_the_ca_copied_in_and_only_a_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::new(dir.path().join("first"));
        let ca = first.fleet_ca(false).unwrap();
        first
            .init(&ca, &[], "127.0.0.1:4700".parse().unwrap(), None, None)
            .unwrap();

        let second = DataDir::new(dir.path().join("second"));
        fs::create_dir(second.root()).unwrap();
        fs::copy(first.ca_cert(), second.ca_cert()).unwrap();
        // A CA without its key is refused, whatever the master means to do.
        for may_join in [false, true] {
            assert!(second.fleet_ca(may_join).is_err());
        }
        fs::copy(first.ca_key(), second.ca_key()).unwrap();
        let copied = second.fleet_ca(true).unwrap();
        assert!(matches!(copied, FleetCa::Copied(_)));
        assert_eq!(copied.ca().digest(), ca.ca().digest());
        second
            .init(&copied, &[], "127.0.0.1:4701".parse().unwrap(), None, None)
            .unwrap();
        // Its own server certificate, from the fleet's CA.
        assert_ne!(
            read(&second.server_cert()).unwrap(),
            read(&first.server_cert()).unwrap()
        );
        assert_eq!(
            read(&second.ca_cert()).unwrap(),
            read(&first.ca_cert()).unwrap()
        );
    }

    #[test]
    fn open_permissions_are_tightened_with_a_warning_each() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("master"));
        fs::create_dir(data.root()).unwrap();
        set_mode(data.root(), 0o755);
        let roles = dir.path().join("elsewhere-roles.toml");
        for file in [data.config(), roles.clone()] {
            fs::write(&file, "").unwrap();
            set_mode(&file, 0o644);
        }

        let warnings = data.tighten_permissions(&roles).unwrap();
        assert_eq!(
            warnings,
            [
                format!(
                    "{} was mode 0755; set to 0700: it holds the CA key",
                    data.root().display()
                ),
                format!(
                    "{} was mode 0644; set to 0600: it can hold registry passwords",
                    data.config().display()
                ),
                format!(
                    "{} was mode 0644; set to 0600: it can hold containers' environment values",
                    roles.display()
                ),
            ]
        );
        assert_eq!(mode(data.root()), 0o700);
        assert_eq!(mode(&data.config()), 0o600);
        assert_eq!(mode(&roles), 0o600);
        assert!(data.tighten_permissions(&roles).unwrap().is_empty());
    }

    #[test]
    fn tight_permissions_and_missing_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        set_mode(data.root(), 0o700);
        fs::write(data.config(), "").unwrap();
        // Only what goes beyond the owner is taken away; a read-only file stays read-only.
        set_mode(&data.config(), 0o400);
        assert!(data.tighten_permissions(&data.roles()).unwrap().is_empty());
        assert_eq!(mode(&data.config()), 0o400);
        assert!(!data.roles().exists());

        set_mode(&data.config(), 0o640);
        let warnings = data.tighten_permissions(&data.roles()).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(mode(&data.config()), 0o600);
    }
}
