//! The master's data directory: CA, certificates, configuration, roles file and store.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
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
        if !self.config().exists() {
            write_new(&self.config(), &MasterConfig::default_file(listen), 0o644)?;
        }
        if !self.roles().exists() {
            write_new(&self.roles(), EXAMPLE_ROLES, 0o644)?;
        }
        Ok(())
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
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn init_writes_private_keys_and_refuses_to_run_twice() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("master"));
        let listen = "127.0.0.1:4700".parse().unwrap();
        data.init(&["localhost".into(), "127.0.0.1".into()], listen)
            .unwrap();
        for key in [data.ca_key(), data.server_key(), data.admin_key()] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        assert!(data.load_ca().is_ok());
        assert!(MasterConfig::load(data.root()).is_ok());
        brine_common::roles_file::RolesFile::parse("roles.toml", &read(&data.roles()).unwrap())
            .unwrap();
        let ca_before = read(&data.ca_cert()).unwrap();
        let err = data.init(&[], listen).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(read(&data.ca_cert()).unwrap(), ca_before);
    }
}
