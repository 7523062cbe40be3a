//! How CLI subcommands reach a running master: its address and the admin certificate, from the
//! data directory or from flags for use on another machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use brine_proto::tls::{ClientIdentity, MasterTrust, certs_from_pem, client_config, connect};
use tonic::transport::Channel;

use crate::config::MasterConfig;
use crate::data_dir::{DataDir, read};

/// How long the CLI waits to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the master is and which certificate to call it with.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The master's data directory: the address and the admin certificate are read from it.
    #[arg(long, env = "BRINE_MASTER_DATA_DIR", default_value = crate::data_dir::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The master's address (HOST:PORT); defaults to the one in the data directory's master.toml.
    #[arg(long, env = "BRINE_MASTER_ADDRESS")]
    pub master: Option<String>,
    /// The CA certificate (PEM); defaults to ca.pem in the data directory.
    #[arg(long, env = "BRINE_CA")]
    pub ca: Option<PathBuf>,
    /// The client certificate (PEM); defaults to admin.pem in the data directory.
    #[arg(long, env = "BRINE_CERT")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM); defaults to admin.key in the data directory.
    #[arg(long, env = "BRINE_KEY")]
    pub key: Option<PathBuf>,
}

impl ClientArgs {
    /// The master's address: `--master`, or the one in the data directory.
    pub fn address(&self) -> anyhow::Result<String> {
        match &self.master {
            Some(address) => Ok(address.clone()),
            None => Ok(MasterConfig::load(&self.data_dir)
                .context("find the master's address (or give --master HOST:PORT)")?
                .address),
        }
    }

    /// Opens a mutual-TLS channel to the master.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let data = DataDir::new(&self.data_dir);
        let address = self.address()?;
        let ca_path = self.ca.clone().unwrap_or_else(|| data.ca_cert());
        let cert_path = self.cert.clone().unwrap_or_else(|| data.admin_cert());
        let key_path = self.key.clone().unwrap_or_else(|| data.admin_key());
        let ca =
            certs_from_pem(&ca_path.display().to_string(), read(&ca_path)?.as_bytes())?.remove(0);
        let identity = ClientIdentity::from_pem(
            &cert_path.display().to_string(),
            read(&cert_path)?.as_bytes(),
            &key_path.display().to_string(),
            read(&key_path)?.as_bytes(),
        )?;
        let config = client_config(MasterTrust::Ca(ca), Some(identity))?;
        Ok(connect(&address, config, CONNECT_TIMEOUT).await?)
    }
}
