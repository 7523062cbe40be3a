//! `brine-master cert`: certificates for CI pipelines and operators, issued on the master host
//! with the CA in its data directory, and revoked through the running master.

use std::path::Path;

use anyhow::Context;
use brine_common::identity::CertRole;
use brine_common::names::MinionId;

use brine_daemon::files::write_new;

use crate::data_dir::DataDir;

/// Issues a certificate for `name` with `role` and writes `NAME.pem`, `NAME.key` (0600) and the
/// CA's `ca.pem` into `out`, ready to hand to the caller.
pub fn issue(data: &DataDir, role: CertRole, name: &str, out: &Path) -> anyhow::Result<()> {
    // The same rules as host ids, so the name is safe as a file name and a certificate name.
    let name = MinionId::new(name).with_context(|| format!("certificate name {name:?}"))?;
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
    println!(
        "issued a {role} certificate for {name}:\n  {}\n  {}\n  {}",
        cert_path.display(),
        key_path.display(),
        ca_path.display()
    );
    Ok(())
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
