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
/// `store migrate`'s destination: `--to etcd URL[,URL...]`, with the same flags as `init`'s.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Where to move the fleet: `etcd` and its members' client URLs, comma-separated
    /// (`--to etcd http://10.0.0.1:2379,http://10.0.0.2:2379,...`).
    #[arg(long, num_args = 2, value_names = ["STORE", "URL[,URL...]"], required = true)]
    to: Vec<String>,
    /// Every key of the fleet in etcd starts with this.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_ETCD_PREFIX)]
    etcd_prefix: String,
    /// For https:// endpoints: the CA that signed etcd's certificates (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["etcd_cert", "etcd_key"])]
    etcd_ca: Option<PathBuf>,
    /// For https:// endpoints: the master's client certificate for etcd (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["etcd_ca", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// For https:// endpoints: the key of --etcd-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["etcd_ca", "etcd_cert"])]
    etcd_key: Option<PathBuf>,
}

impl MigrateArgs {
    /// The etcd settings the flags give.
    pub fn settings(self) -> anyhow::Result<EtcdSettings> {
        let [store, urls] = <[String; 2]>::try_from(self.to).map_err(|_| {
            anyhow::anyhow!("--to takes a store and its address: --to etcd URL[,URL...]")
        })?;
        if store != "etcd" {
            bail!("--to {store}: the fleet can move to etcd only (--to etcd URL[,URL...])");
        }
        let etcd = urls
            .split(',')
            .map(|url| {
                etcd_endpoint(url.trim()).map_err(|err| anyhow::anyhow!("--to etcd {url}: {err}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let args = EtcdArgs {
            etcd,
            etcd_prefix: self.etcd_prefix,
            etcd_ca: self.etcd_ca,
            etcd_cert: self.etcd_cert,
            etcd_key: self.etcd_key,
        };
        args.settings()?
            .ok_or_else(|| anyhow::anyhow!("--to etcd needs at least one URL"))
    }
}

fn etcd_endpoint(text: &str) -> Result<String, String> {
    match etcd_endpoint_uses_tls(text) {
        Some(_) => Ok(text.to_owned()),
        None => Err("not a URL http://HOST:PORT or https://HOST:PORT".to_owned()),
    }
}
