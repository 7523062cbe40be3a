//! The minion's identity on disk: its private key, its certificate and the master's CA.
//!
//! A renewal replaces key and certificate together. Two files cannot be renamed at once, so the
//! new pair is first written beside the old one (`*.next`), then moved into place key first;
//! [`load`] finishes a move that a crash interrupted, so the key and certificate in use always
//! belong together.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, bail};
use brine_common::identity::{CertIdentity, CertRole, identity_from_der};
use brine_common::names::MinionId;
use brine_daemon::files::{next_path, rename_synced, write_synced};
use brine_proto::tls::{ClientIdentity, MasterTrust, certs_from_pem, client_config};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::ClientConfig;

use crate::config::DataDir;

/// What the minion connects with.
pub struct Identity {
    pub tls: ClientConfig,
    pub id: MinionId,
    /// The certificate's identity and validity.
    pub certificate: CertIdentity,
}

/// A new private key and a certificate signing request for `id`, signed by it.
pub fn new_key_and_csr(id: &MinionId) -> anyhow::Result<(KeyPair, String)> {
    let key = KeyPair::generate().context("generate the host's key")?;
    let csr_pem = csr(id, &key)?;
    Ok((key, csr_pem))
}

/// The key of the renewal under way (the one a previous attempt saved, or a new one, saved
/// first) and a signing request for it.
pub fn renewal_key_and_csr(data: &DataDir, id: &MinionId) -> anyhow::Result<(KeyPair, String)> {
    let path = data.renewing_key();
    let key = match fs::read_to_string(&path) {
        Ok(pem) => KeyPair::from_pem(&pem)
            .with_context(|| format!("read the renewal's key {}", path.display()))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().context("generate the host's key")?;
            write_synced(&path, &key.serialize_pem(), 0o600)?;
            key
        }
        Err(err) => return Err(err).with_context(|| format!("read {}", path.display())),
    };
    let csr_pem = csr(id, &key)?;
    Ok((key, csr_pem))
}

/// A certificate signing request for `id`, signed by `key`.
fn csr(id: &MinionId, key: &KeyPair) -> anyhow::Result<String> {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, id.as_str());
    params.distinguished_name = subject;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .context("create the certificate signing request")
}

/// Loads the identity, first finishing a renewal a crash interrupted.
pub fn load(data: &DataDir) -> anyhow::Result<Identity> {
    finish_interrupted_renewal(data)?;
    let read = |path: PathBuf| {
        fs::read(&path).with_context(|| format!("read {} (has this host joined?)", path.display()))
    };
    let ca = certs_from_pem(
        &data.ca_cert().display().to_string(),
        &read(data.ca_cert())?,
    )?
    .remove(0);
    let identity = ClientIdentity::from_pem(
        &data.cert().display().to_string(),
        &read(data.cert())?,
        &data.key().display().to_string(),
        &read(data.key())?,
    )?;
    let certificate = identity_from_der(&identity.chain[0])
        .with_context(|| format!("read {}", data.cert().display()))?;
    let id = MinionId::new(certificate.name.clone())?;
    Ok(Identity {
        tls: client_config(MasterTrust::Ca(ca), Some(identity))?,
        id,
        certificate,
    })
}

/// The new certificate is written last, so its `.next` file marks a complete pair: move
/// whatever of the pair is still waiting into place. A lone key is from a renewal that never
/// got its certificate, and goes.
fn finish_interrupted_renewal(data: &DataDir) -> anyhow::Result<()> {
    let (key_next, cert_next) = (next_path(&data.key()), next_path(&data.cert()));
    if cert_next.exists() {
        if key_next.exists() {
            rename_synced(&key_next, &data.key())?;
        }
        rename_synced(&cert_next, &data.cert())?;
        tracing::info!("finished installing a renewed certificate");
    } else if key_next.exists() {
        fs::remove_file(&key_next).with_context(|| format!("remove {}", key_next.display()))?;
    }
    // A crash after the move but before the renewal's key was forgotten leaves it equal to the
    // host's key; a later renewal must start with a fresh one.
    let renewing = fs::read(data.renewing_key()).ok();
    if renewing.is_some() && renewing == fs::read(data.key()).ok() {
        forget_renewing_key(data)?;
    }
    Ok(())
}

/// Installs a renewed certificate and its key, after checking that the certificate is for this
/// host, has the minion role and holds the new key.
pub fn install_renewed(
    data: &DataDir,
    id: &MinionId,
    key: &KeyPair,
    cert_pem: &str,
) -> anyhow::Result<CertIdentity> {
    let chain = certs_from_pem("the renewed certificate", cert_pem.as_bytes())?;
    let certificate = identity_from_der(&chain[0]).context("read the renewed certificate")?;
    if certificate.name != id.as_str() || certificate.role != CertRole::Minion {
        bail!("the master renewed a certificate for {certificate}, not for this host ({id})");
    }
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&chain[0]).context("read the renewed certificate")?;
    if parsed.public_key().raw != key.subject_public_key_info() {
        bail!("the renewed certificate does not hold this host's new key");
    }
    let (key_next, cert_next) = (next_path(&data.key()), next_path(&data.cert()));
    write_synced(&key_next, &key.serialize_pem(), 0o600)?;
    write_synced(&cert_next, cert_pem, 0o644)?;
    rename_synced(&key_next, &data.key())?;
    rename_synced(&cert_next, &data.cert())?;
    forget_renewing_key(data)?;
    Ok(certificate)
}

/// The renewal is done: its key is the host's key now.
fn forget_renewing_key(data: &DataDir) -> anyhow::Result<()> {
    match fs::remove_file(data.renewing_key()) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("remove {}", data.renewing_key().display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(id: &str, key: &KeyPair) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, id);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "minion");
        params.self_signed(key).unwrap().pem()
    }

    fn data_dir() -> (tempfile::TempDir, DataDir) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let ca_key = KeyPair::generate().unwrap();
        fs::write(data.ca_cert(), self_signed("ca", &ca_key)).unwrap();
        (dir, data)
    }

    #[test]
    fn a_renewal_interrupted_after_both_files_were_written_is_finished() {
        let (_dir, data) = data_dir();
        let (old, new) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        fs::write(data.key(), old.serialize_pem()).unwrap();
        fs::write(data.cert(), self_signed("web-1", &old)).unwrap();
        let new_cert = self_signed("web-1", &new);
        // Crashed after moving the key but before moving the certificate.
        fs::write(data.key(), new.serialize_pem()).unwrap();
        fs::write(next_path(&data.cert()), &new_cert).unwrap();
        let identity = load(&data).unwrap();
        assert_eq!(identity.id.as_str(), "web-1");
        assert_eq!(fs::read_to_string(data.cert()).unwrap(), new_cert);
        assert!(!next_path(&data.cert()).exists());
    }

    #[test]
    fn a_lone_new_key_is_dropped_and_the_old_pair_kept() {
        let (_dir, data) = data_dir();
        let old = KeyPair::generate().unwrap();
        fs::write(data.key(), old.serialize_pem()).unwrap();
        fs::write(data.cert(), self_signed("web-1", &old)).unwrap();
        fs::write(next_path(&data.key()), "half a key").unwrap();
        load(&data).unwrap();
        assert!(!next_path(&data.key()).exists());
        assert_eq!(fs::read_to_string(data.key()).unwrap(), old.serialize_pem());
    }

    #[test]
    fn a_renewed_certificate_must_be_ours() {
        let (_dir, data) = data_dir();
        let id = MinionId::new("web-1").unwrap();
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let err = install_renewed(&data, &id, &key, &self_signed("web-2", &key)).unwrap_err();
        assert!(err.to_string().contains("not for this host"), "{err}");
        let err = install_renewed(&data, &id, &key, &self_signed("web-1", &other)).unwrap_err();
        assert!(err.to_string().contains("new key"), "{err}");
        assert!(!data.cert().exists(), "nothing was installed");
        install_renewed(&data, &id, &key, &self_signed("web-1", &key)).unwrap();
        assert_eq!(fs::read_to_string(data.key()).unwrap(), key.serialize_pem());
    }

    #[test]
    fn a_renewal_keeps_its_key_until_its_certificate_is_installed() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, data) = data_dir();
        let id = MinionId::new("web-1").unwrap();
        let (first, _) = renewal_key_and_csr(&data, &id).unwrap();
        let (again, _) = renewal_key_and_csr(&data, &id).unwrap();
        assert_eq!(
            first.serialize_pem(),
            again.serialize_pem(),
            "a retry asks for the same key"
        );
        let mode = fs::metadata(data.renewing_key())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        install_renewed(&data, &id, &first, &self_signed("web-1", &first)).unwrap();
        assert!(
            !data.renewing_key().exists(),
            "the renewal's key is the host's key now"
        );
        let (fresh, _) = renewal_key_and_csr(&data, &id).unwrap();
        assert_ne!(fresh.serialize_pem(), first.serialize_pem());
    }
}
