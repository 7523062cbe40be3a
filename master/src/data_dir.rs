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

/// Where the data directory is unless `--data-dir` or `BRINE_MASTER_DATA_DIR` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/brine-master";

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

    /// Creates the CA, the master's server certificate (valid for `advertise` names and
    /// addresses), the local admin certificate, a default configuration and an example roles
    /// file. Refuses to touch a directory that already holds a CA.
    pub fn init(&self, advertise: &[String], listen: SocketAddr) -> anyhow::Result<()> {
        if self.ca_cert().exists() || self.ca_key().exists() {
            bail!(
                "{} already holds a CA; refusing to overwrite it (every enrolled host trusts it)",
                self.root.display()
            );
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("create {}", self.root.display()))?;

        let (ca, ca_key) = CertificateAuthority::generate()?;
        let server = ca.issue("brine-master", CertRole::Master, advertise)?;
        let admin = ca.issue("admin", CertRole::Admin, &[])?;

        write_new(&self.ca_key(), &ca_key, 0o600)?;
        write_new(&self.ca_cert(), ca.cert_pem(), 0o644)?;
        write_new(&self.server_key(), &server.key_pem, 0o600)?;
        write_new(&self.server_cert(), &server.cert_pem, 0o644)?;
        write_new(&self.admin_key(), &admin.key_pem, 0o600)?;
        write_new(&self.admin_cert(), &admin.cert_pem, 0o644)?;
        // Both can hold secrets: registry passwords, containers' environment values.
        if !self.config().exists() {
            write_new(&self.config(), &MasterConfig::default_file(listen), 0o600)?;
        }
        if !self.roles().exists() {
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

const EXAMPLE_ROLES: &str = r#"# brine roles file: which containers each role runs, and which hosts run which roles.
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
        data.init(&["localhost".into(), "127.0.0.1".into()], listen)
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
        let err = data.init(&[], listen).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(read(&data.ca_cert()).unwrap(), ca_before);
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
