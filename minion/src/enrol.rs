//! `brine-minion join`: enrol this host with a join token.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::time::Duration;

use anyhow::{Context, bail};
use brine_common::names::MinionId;
use brine_common::token::{JoinToken, sha256_hex};
use brine_proto::pb;
use brine_proto::tls::{MasterTrust, certs_from_pem, client_config, connect_from};

use crate::config::{DataDir, MinionConfig};
use brine_daemon::files::write_synced;

use crate::identity::new_key_and_csr;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What joining needs.
#[derive(Debug)]
pub struct JoinRequest {
    pub master: String,
    pub token: JoinToken,
    pub id: MinionId,
    pub namespace: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The local address to dial from (kept in minion.toml for the agent); `None` lets the
    /// system choose.
    pub source_address: Option<std::net::IpAddr>,
}

/// Generates this host's key, has the master sign a certificate for it and writes the data
/// directory. The master is trusted only if its CA matches the token's digest; the private key
/// never leaves this host.
pub async fn join(data: &DataDir, request: JoinRequest) -> anyhow::Result<()> {
    if data.cert().exists() {
        bail!(
            "{} already holds a minion certificate; this host has joined already (remove the \
             directory to join again)",
            data.root().display()
        );
    }
    let (key, csr_pem) = new_key_and_csr(&request.id)?;

    let tls = client_config(
        MasterTrust::PinnedDigest(request.token.ca_digest.clone()),
        None,
    )?;
    let channel = connect_from(
        &request.master,
        request.source_address,
        tls,
        CONNECT_TIMEOUT,
    )
    .await?;
    let response = pb::enrolment_service_client::EnrolmentServiceClient::new(channel)
        .join(pb::JoinRequest {
            token: request.token.to_string(),
            csr_pem,
            minion_id: request.id.to_string(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))
        .context("the master refused to enrol this host")?
        .into_inner();

    let ca = certs_from_pem("the master's CA", response.ca_certificate_pem.as_bytes())?;
    if ca.first().map(|c| sha256_hex(c)) != Some(request.token.ca_digest.clone()) {
        bail!("the master sent a CA that does not match the join token's digest");
    }
    certs_from_pem(
        "the signed certificate",
        response.certificate_pem.as_bytes(),
    )?;

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data.root())
        .with_context(|| format!("create {}", data.root().display()))?;
    // The fleet's other masters, if they share a store: somewhere to link to when this one is
    // gone.
    crate::masters::Masters::load(data, &request.master).learn(response.master_addresses)?;
    let config = MinionConfig {
        master: request.master,
        namespace: request.namespace,
        labels: request.labels,
        reconcile_interval: crate::config::default_reconcile_interval(),
        keep_releases: crate::config::default_keep_releases(),
        registries: Default::default(),
        source_address: request.source_address,
        metrics_listen: None,
        proxy_socket: crate::config::default_proxy_socket(),
    };
    write_synced(&data.key(), &key.serialize_pem(), 0o600)?;
    write_synced(&data.ca_cert(), &response.ca_certificate_pem, 0o644)?;
    // Readable by the minion's user only: it may get registry passwords.
    write_synced(&data.config(), &config.to_file(), 0o600)?;
    // The certificate last: its presence marks a completed join.
    write_synced(&data.cert(), &response.certificate_pem, 0o644)?;
    Ok(())
}
