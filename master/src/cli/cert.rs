//! `brine-master cert`: certificates for CI pipelines and operators, issued on the master host
//! with the CA in its data directory, and revoked through the running master.

use std::path::Path;

use anyhow::Context;
use brine_common::identity::CertRole;
use brine_common::names::MinionId;

use brine_daemon::files::write_new;

use crate::config::MasterConfig;
use crate::data_dir::DataDir;

/// What `cert issue` writes and where the master it is for listens.
#[derive(Debug)]
pub struct Issue<'a> {
    pub role: CertRole,
    pub name: &'a str,
    pub out: &'a Path,
    /// `HOST:PORT` of the master for `context.toml`; default [`advertised_address`].
    pub address: Option<String>,
    /// The name of the context in `context.toml`; default `name`.
    pub context_name: Option<String>,
}

/// Issues a certificate for `name` with `role` and writes `NAME.pem`, `NAME.key` (0600), the
/// CA's `ca.pem` and a `context.toml` for `context import` into `out`, ready to hand to the
/// caller.
pub fn issue(data: &DataDir, issue: Issue<'_>) -> anyhow::Result<()> {
    let Issue {
        role,
        name,
        out,
        address,
        context_name,
    } = issue;
    // The same rules as host ids, so the name is safe as a file name and a certificate name.
    let name = MinionId::new(name).with_context(|| format!("certificate name {name:?}"))?;
    let context_name = context_name.unwrap_or_else(|| name.to_string());
    // Everything that can fail for want of data, before any file is written.
    let address = match address {
        Some(address) => address,
        None => advertised_address(data)
            .context("find the master's address for context.toml (or give --address HOST:PORT)")?,
    };
    let ca = data.load_ca()?;
    let issued = ca.issue(name.as_str(), role, &[])?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let cert_path = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}.key"));
    write_new(&key_path, &issued.key_pem, 0o600)?;
    write_new(&cert_path, &issued.cert_pem, 0o644)?;
    let ca_path = out.join("ca.pem");
    if !ca_path.exists() {
        write_new(&ca_path, ca.cert_pem(), 0o644)?;
    }
    let context_path = super::context::export(
        out,
        &context_name,
        &address,
        [&ca_path, &cert_path, &key_path],
    )?;
    println!(
        "issued a {role} certificate for {name}:\n  {}\n  {}\n  {}\n  {} (context {context_name}, master {address})\n\
         copy {} to the machine that will call the master and run:\n  brine-master context import {}",
        cert_path.display(),
        key_path.display(),
        ca_path.display(),
        context_path.display(),
        out.display(),
        out.display(),
    );
    Ok(())
}

/// Where a caller elsewhere reaches the master: the first name its certificate is advertised
/// for that is not a loopback one (else `localhost`), with the port of master.toml's `listen`.
pub fn advertised_address(data: &DataDir) -> anyhow::Result<String> {
    let names = crate::server_cert::current_names(data)?;
    let port = MasterConfig::load(data.root())?.listen.port();
    Ok(address_for(&names, port))
}

/// `HOST:PORT` for the first of `names` that is not a loopback name, else `localhost`.
fn address_for(names: &[String], port: u16) -> String {
    let host = names
        .iter()
        .find(|name| !matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1"))
        .map_or("localhost", String::as_str);
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => format!("[{ip}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

/// Has the master refuse every `role` certificate issued so far for `name`.
pub async fn revoke(
    client: &super::client::ClientArgs,
    role: CertRole,
    name: String,
) -> anyhow::Result<()> {
    let wire_role = match role {
        CertRole::Ci => brine_proto::pb::CertificateRole::Ci,
        CertRole::Admin => brine_proto::pb::CertificateRole::Admin,
        other => anyhow::bail!("{other} certificates are not revoked by name"),
    };
    brine_proto::pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .revoke_certificate(brine_proto::pb::RevokeCertificateRequest {
            name: name.clone(),
            role: wire_role.into(),
        })
        .await
        .map_err(super::status_error)
        .context("revoke the certificates")?;
    println!(
        "revoked every {role} certificate issued so far for {name}; issue a new one with\n  \
         brine-master cert issue --{role} {name} --out DIR"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_the_first_advertised_name_beyond_loopback() {
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            address_for(
                &names(&["localhost", "127.0.0.1", "master.example.com", "10.0.0.1"]),
                4700
            ),
            "master.example.com:4700"
        );
        assert_eq!(
            address_for(&names(&["localhost", "127.0.0.1"]), 4505),
            "localhost:4505"
        );
        assert_eq!(
            address_for(&names(&["localhost", "fd00::1"]), 4700),
            "[fd00::1]:4700"
        );
    }
}
