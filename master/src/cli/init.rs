//! `brine-master init`'s flags for a fleet kept in etcd.

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::config::{DEFAULT_ETCD_PREFIX, etcd_endpoint_uses_tls};
use crate::store::{DEFAULT_ETCD_QUOTA_BYTES, EtcdSettings, EtcdTls};

/// Where `init` keeps the fleet when it is not the data directory: an etcd cluster.
#[derive(Debug, clap::Args)]
pub struct EtcdArgs {
    /// Keep the fleet in this etcd cluster instead of the data directory: its members' client
    /// URLs, comma-separated (`http://10.0.0.1:2379,http://10.0.0.2:2379,...`).
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',', value_parser = etcd_endpoint)]
    etcd: Vec<String>,
    /// Every key of the fleet in etcd starts with this.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_ETCD_PREFIX, requires = "etcd")]
    etcd_prefix: String,
    /// For https:// endpoints: the CA that signed etcd's certificates (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["etcd", "etcd_cert", "etcd_key"])]
    etcd_ca: Option<PathBuf>,
    /// For https:// endpoints: the master's client certificate for etcd (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["etcd", "etcd_ca", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// For https:// endpoints: the key of --etcd-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["etcd", "etcd_ca", "etcd_cert"])]
    etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    /// The settings the flags give, with absolute file names, if --etcd is given.
    pub fn settings(self) -> anyhow::Result<Option<EtcdSettings>> {
        if self.etcd.is_empty() {
            return Ok(None);
        }
        let absolute = |path: PathBuf| {
            std::path::absolute(&path).with_context(|| format!("find {}", path.display()))
        };
        let tls = match (self.etcd_ca, self.etcd_cert, self.etcd_key) {
            (Some(ca), Some(cert), Some(key)) => Some(EtcdTls {
                ca_file: absolute(ca)?,
                cert_file: absolute(cert)?,
                key_file: absolute(key)?,
            }),
            _ => None,
        };
        let https = self
            .etcd
            .iter()
            .filter(|e| etcd_endpoint_uses_tls(e) == Some(true))
            .count();
        let all_https = https == self.etcd.len();
        if (tls.is_some() && !all_https) || (tls.is_none() && https > 0) {
            bail!(
                "--etcd-ca, --etcd-cert and --etcd-key go with https:// endpoints, and every \
                 endpoint is https:// with them"
            );
        }
        Ok(Some(EtcdSettings {
            endpoints: self.etcd,
            prefix: self.etcd_prefix,
            tls,
            quota_bytes: DEFAULT_ETCD_QUOTA_BYTES,
        }))
    }
}

/// An etcd client URL, `http://HOST:PORT` or `https://HOST:PORT`.
fn etcd_endpoint(text: &str) -> Result<String, String> {
    match etcd_endpoint_uses_tls(text) {
        Some(_) => Ok(text.to_owned()),
        None => Err("not a URL http://HOST:PORT or https://HOST:PORT".to_owned()),
    }
}
