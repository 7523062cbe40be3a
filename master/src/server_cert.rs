//! The master's own server certificate: served from memory, reloaded when its files change, and
//! renewed by the master itself when two thirds of its lifetime have passed.
//!
//! `brine-master cert renew` writes a new certificate and key into the data directory; the
//! running master picks them up within [`RELOAD_INTERVAL`], with no restart. Connections already
//! open keep the certificate they were made with.

use std::fmt;
#[cfg(test)]
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use brine_common::identity::{CertRole, identity_from_der};
use brine_proto::tls::{certs_from_pem, crypto_provider, key_from_pem};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use brine_daemon::files::replace;

use crate::data_dir::{DataDir, read};

/// How often the master looks at its certificate files and its certificate's age.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The certificate the master serves now; swapped whole when it is reloaded.
pub struct ServerCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ServerCertificate {
    /// Loads the certificate and key from the data directory.
    pub fn load(data: &DataDir) -> anyhow::Result<Self> {
        Ok(Self {
            current: RwLock::new(Arc::new(load_certified_key(data)?)),
        })
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }

    /// Watches the files and the certificate's age until `stop`: reloads changed files, and
    /// renews the certificate when two thirds of its lifetime have passed.
    pub async fn keep_fresh(self: Arc<Self>, data: DataDir, stop: CancellationToken) {
        let mut interval = tokio::time::interval(RELOAD_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let (this, data) = (self.clone(), data.clone());
            // Reading, parsing and signing are blocking work.
            let outcome = tokio::task::spawn_blocking(move || this.refresh(&data)).await;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!("keeping the current server certificate: {err:#}"),
                Err(err) => tracing::warn!("the certificate check failed: {err}"),
            }
        }
    }

    fn refresh(&self, data: &DataDir) -> anyhow::Result<()> {
        let served = self.get();
        let leaf = served.end_entity_cert().context("the served certificate")?;
        if is_due_for_renewal(leaf.as_ref(), SystemTime::now())? {
            tracing::info!(
                "the server certificate is two thirds through its lifetime; renewing it"
            );
            renew(data, None)?;
        }
        let on_disk = certs_from_pem(
            &data.server_cert().display().to_string(),
            read(&data.server_cert())?.as_bytes(),
        )?;
        if on_disk.first() == Some(leaf) {
            return Ok(());
        }
        let reloaded = load_certified_key(data)?;
        let expires = not_after(reloaded.end_entity_cert()?.as_ref())?;
        self.set(reloaded);
        tracing::info!(
            expires = %humantime::format_rfc3339_seconds(expires),
            "loaded a new server certificate"
        );
        Ok(())
    }
}

/// The master's certificate and key from the data directory, with the CA sent along (joining
/// hosts check the CA against their token). Fails if the key does not belong to the
/// certificate, as when a renewal is half written.
fn load_certified_key(data: &DataDir) -> anyhow::Result<CertifiedKey> {
    let mut chain = certs_from_pem(
        &data.server_cert().display().to_string(),
        read(&data.server_cert())?.as_bytes(),
    )?;
    chain.extend(certs_from_pem(
        &data.ca_cert().display().to_string(),
        read(&data.ca_cert())?.as_bytes(),
    )?);
    let key = key_from_pem(
        &data.server_key().display().to_string(),
        read(&data.server_key())?.as_bytes(),
    )?;
    CertifiedKey::from_der(chain, key, &crypto_provider())
        .context("the master's certificate and key do not belong together")
}

fn parse(der: &[u8]) -> anyhow::Result<X509Certificate<'_>> {
    Ok(X509Certificate::from_der(der)
        .map_err(|err| anyhow::anyhow!("unreadable certificate: {err}"))?
        .1)
}

fn not_after(der: &[u8]) -> anyhow::Result<SystemTime> {
    let identity = identity_from_der(der)?;
    Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(identity.not_after_unix_s).unwrap_or(0)))
}

/// Whether two thirds of the certificate's lifetime have passed at `now`.
fn is_due_for_renewal(der: &[u8], now: SystemTime) -> anyhow::Result<bool> {
    let identity = identity_from_der(der)?;
    let (start, end) = (identity.not_before_unix_s, identity.not_after_unix_s);
    let due = start + (end - start) * 2 / 3;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Ok(now >= due)
}

/// The host names and addresses the master's current certificate is valid for.
pub fn current_names(data: &DataDir) -> anyhow::Result<Vec<String>> {
    let pem = read(&data.server_cert())?;
    let chain = certs_from_pem(&data.server_cert().display().to_string(), pem.as_bytes())?;
    let leaf = chain.first().context("master.pem holds no certificate")?;
    let cert = parse(leaf.as_ref())?;
    let names = cert
        .subject_alternative_name()
        .map_err(|err| anyhow::anyhow!("unreadable names in master.pem: {err}"))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip_from_bytes(bytes),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(names)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        _ => None,
    }
}

/// Issues a new server certificate with a new key, for `names` or else the names of the current
/// one, and puts both in place (key first; a reader that sees a mismatched pair retries).
/// Returns the names it is valid for.
pub fn renew(data: &DataDir, names: Option<Vec<String>>) -> anyhow::Result<Vec<String>> {
    let names = match names {
        Some(names) => names,
        None => current_names(data)?,
    };
    let ca = data.load_ca()?;
    let issued = ca.issue("brine-master", CertRole::Master, &names)?;
    replace(&data.server_key(), &issued.key_pem, 0o600)?;
    replace(&data.server_cert(), &issued.cert_pem, 0o644)?;
    Ok(names)
}

/// Whether the server certificate at `path` is the one currently served.
#[cfg(test)]
fn serves(certificate: &ServerCertificate, path: &Path) -> anyhow::Result<bool> {
    let on_disk = certs_from_pem(&path.display().to_string(), read(path)?.as_bytes())?;
    Ok(certificate.get().end_entity_cert().ok() == on_disk.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initialized() -> (tempfile::TempDir, DataDir) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("master"));
        let ca = data.fleet_ca(false).unwrap();
        data.init(
            &ca,
            &[
                "localhost".into(),
                "127.0.0.1".into(),
                "master.example".into(),
            ],
            "127.0.0.1:4700".parse().unwrap(),
            None,
            None,
        )
        .unwrap();
        (dir, data)
    }

    #[test]
    fn renewal_keeps_the_names_and_the_new_pair_is_loaded_on_refresh() {
        let (_dir, data) = initialized();
        let served = ServerCertificate::load(&data).unwrap();
        let names = renew(&data, None).unwrap();
        assert_eq!(names, ["localhost", "127.0.0.1", "master.example"]);
        assert!(!serves(&served, &data.server_cert()).unwrap());
        served.refresh(&data).unwrap();
        assert!(serves(&served, &data.server_cert()).unwrap());
    }

    #[test]
    fn a_mismatched_pair_is_not_loaded() {
        let (_dir, data) = initialized();
        let served = ServerCertificate::load(&data).unwrap();
        let other = data
            .load_ca()
            .unwrap()
            .issue("x", CertRole::Master, &[])
            .unwrap();
        replace(&data.server_key(), &other.key_pem, 0o600).unwrap();
        replace(
            &data.server_cert(),
            &data
                .load_ca()
                .unwrap()
                .issue("y", CertRole::Master, &[])
                .unwrap()
                .cert_pem,
            0o644,
        )
        .unwrap();
        let err = served.refresh(&data).unwrap_err();
        assert!(
            format!("{err:#}").contains("do not belong together"),
            "{err:#}"
        );
    }

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        let (_dir, data) = initialized();
        let pem = read(&data.server_cert()).unwrap();
        let der = certs_from_pem("master.pem", pem.as_bytes())
            .unwrap()
            .remove(0);
        let identity = identity_from_der(&der).unwrap();
        let at = |unix_s: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_s).unwrap());
        let span = identity.not_after_unix_s - identity.not_before_unix_s;
        assert!(!is_due_for_renewal(&der, SystemTime::now()).unwrap());
        assert!(!is_due_for_renewal(&der, at(identity.not_before_unix_s + span / 2)).unwrap());
        assert!(
            is_due_for_renewal(&der, at(identity.not_before_unix_s + span * 2 / 3 + 1)).unwrap()
        );
    }
}
