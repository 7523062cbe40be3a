//! Certificate renewal: before its certificate expires, the minion asks the master for a new one
//! over its open link, with no join token; the certificate it holds is the credential.
//!
//! Each certificate is renewed at a random point between half and four fifths of its lifetime,
//! so a fleet enrolled at once does not renew at once, and a failed renewal has time for retries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use brine_common::identity::CertIdentity;
use brine_common::names::MinionId;
use brine_proto::pb;
use rand::Rng;
use tonic::transport::Channel;

use crate::config::DataDir;
use crate::identity;

/// How long a renewal may take before it counts as failed.
const RENEW_TIMEOUT: Duration = Duration::from_secs(30);
/// A failed renewal is retried after a tenth of the time left, within these bounds.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(3600);

fn unix(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// When to renew `certificate`: a random point between 50% and 80% of its validity.
pub fn renewal_time(certificate: &CertIdentity) -> SystemTime {
    let (start, end) = (
        unix(certificate.not_before_unix_s),
        unix(certificate.not_after_unix_s),
    );
    let lifetime = end.duration_since(start).unwrap_or_default();
    start + lifetime.mul_f64(rand::rng().random_range(0.5..=0.8))
}

/// When `certificate` expires.
pub fn expiry(certificate: &CertIdentity) -> SystemTime {
    unix(certificate.not_after_unix_s)
}

/// When to try again after a failed renewal of a certificate that expires at `expiry`.
pub fn retry_time(expiry: SystemTime, now: SystemTime) -> SystemTime {
    let left = expiry.duration_since(now).unwrap_or_default();
    now + (left / 10).clamp(RETRY_MIN, RETRY_MAX)
}

/// Renews the certificate over `channel` and installs it with its new key. Returns the new
/// certificate's identity.
pub async fn renew(
    data: &DataDir,
    id: &MinionId,
    channel: Channel,
) -> anyhow::Result<CertIdentity> {
    // The same key for every attempt until one succeeds: after a lost answer the master hands
    // out the certificate it issued then, which only that key matches.
    let (key, csr_pem) = identity::renewal_key_and_csr(data, id)?;
    let mut client = pb::minion_link_service_client::MinionLinkServiceClient::new(channel);
    let response = tokio::time::timeout(RENEW_TIMEOUT, client.renew(pb::RenewRequest { csr_pem }))
        .await
        .context("the master did not answer in time")?
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    let data = data.clone();
    let id = id.clone();
    tokio::task::spawn_blocking(move || {
        identity::install_renewed(&data, &id, &key, &response.certificate_pem)
    })
    .await
    .context("the renewal task failed")?
}

#[cfg(test)]
mod tests {
    use brine_common::identity::CertRole;

    use super::*;

    fn certificate(not_before: i64, not_after: i64) -> CertIdentity {
        CertIdentity {
            name: "web-1".into(),
            role: CertRole::Minion,
            not_before_unix_s: not_before,
            not_after_unix_s: not_after,
        }
    }

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_the_lifetime_at_random() {
        let cert = certificate(1_000, 2_000);
        let times: std::collections::HashSet<SystemTime> =
            (0..50).map(|_| renewal_time(&cert)).collect();
        for time in &times {
            assert!(*time >= unix(1_500) && *time <= unix(1_800), "{time:?}");
        }
        assert!(times.len() > 1, "renewal times are spread");
    }

    #[test]
    fn retries_come_sooner_as_expiry_nears() {
        let now = unix(1_000);
        assert_eq!(retry_time(unix(1_100), now), unix(1_010));
        assert_eq!(retry_time(unix(1_000), now), now + RETRY_MIN);
        assert_eq!(retry_time(unix(1_000_000), now), now + RETRY_MAX);
    }
}
