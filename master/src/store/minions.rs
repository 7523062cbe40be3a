//! Enrolled hosts and the rules that change them: joins (with a token, taking over an id only
//! with a token made to replace it), hellos, renewals and approvals.
//!
//! The rules are decisions over records: each takes what is stored and says what the caller is
//! answered and what to write, so every implementation of the store decides the same way and
//! only has to make the read and the write one transaction.

use std::collections::BTreeMap;

use brine_common::host::{Facts, RunningContainer};
use brine_common::names::MinionId;
use brine_common::outcome::{ContainerAction, HostReport};
use serde::{Deserialize, Serialize};

use super::tokens::{TokenCheck, TokenRecord};
use crate::pki::SignedCertificate;

/// An enrolled host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinionRecord {
    pub id: MinionId,
    pub enrolled_at_unix_ms: i64,
    /// SHA-256 of its newest certificate (DER), hex.
    pub certificate_sha256: String,
    /// The certificate it renewed last, still accepted until the newest one is first used (the
    /// host may not have received the renewal's answer).
    #[serde(default)]
    pub previous_certificate_sha256: Option<String>,
    /// When the newest certificate expires.
    #[serde(default)]
    pub certificate_expires_unix_ms: i64,
    /// Labels from the token it joined with.
    #[serde(default)]
    pub join_labels: BTreeMap<String, String>,
    /// 0 until it first connects.
    pub last_seen_unix_ms: i64,
    pub facts: Facts,
    pub running: Vec<RunningContainer>,
    /// Whether its link is admitted.
    #[serde(default)]
    pub approval: Approval,
    /// A machine that joined with a token made to replace this host (`token create --replace`)
    /// on a master that approves joins by hand: it takes the host's place once an operator
    /// accepts it. Until then the host as it is keeps its certificate and its link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_replacement: Option<PendingEnrolment>,
    /// The certificate issued at the last renewal (PEM), until the host first uses it: a host
    /// that lost the answer asks again with its previous certificate and gets this same one
    /// back, never a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renewal_pem: Option<String>,
    /// How far its clock was ahead of the master's (negative: behind) at its last hello.
    #[serde(default)]
    pub clock_offset_ms: i64,
}

/// A host's record as the store reads it: today's fields, and the one that records written
/// before approvals existed held instead. Such a record says `"revoked": true` and has no
/// `approval`; read as it stands, it would be accepted, and a revoked host would be let back in
/// after an upgrade.
#[derive(Deserialize)]
pub(super) struct StoredMinionRecord {
    #[serde(flatten)]
    record: MinionRecord,
    #[serde(default)]
    revoked: bool,
}

impl From<StoredMinionRecord> for MinionRecord {
    fn from(stored: StoredMinionRecord) -> Self {
        let mut record = stored.record;
        if stored.revoked {
            record.approval = Approval::Revoked;
        }
        record
    }
}

/// A joined machine waiting for approval to take over an enrolled host's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEnrolment {
    pub certificate_sha256: String,
    pub certificate_expires_unix_ms: i64,
    pub joined_at_unix_ms: i64,
    pub join_labels: BTreeMap<String, String>,
}

/// Whether a host's link is admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    #[default]
    Accepted,
    /// Joined on a master that approves joins by hand.
    Pending,
    /// Turned away by an operator; must join again.
    Rejected,
    /// Its certificate is refused; must join again.
    Revoked,
}

/// What became of a change of approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalChange {
    Changed,
    /// Accepting a host with a pending replacement: the replacing machine's certificate is now
    /// the host's, and the one before is refused.
    ReplacementAccepted,
    /// Rejecting a host with a pending replacement: the replacing machine is turned away, the
    /// host keeps its certificate and approval.
    ReplacementRejected,
    NotFound,
    /// The host is rejected or revoked and cannot be accepted again.
    Refused(Approval),
}

/// What the store says of a host's certificate when it connects or renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateCheck {
    /// Accepted, and what the host sent was recorded.
    Recorded,
    NotEnrolled,
    /// Pending, rejected or revoked.
    NotAdmitted(Approval),
    /// The host has a newer certificate: it enrolled again or renewed since.
    CertificateReplaced,
}

/// What a host said when it linked up.
#[derive(Debug, Clone, Default)]
pub struct HostHello {
    pub facts: Facts,
    pub running: Vec<RunningContainer>,
    /// How far its clock was ahead of the master's (negative: behind).
    pub clock_offset_ms: i64,
    /// When, by the master's clock.
    pub at_unix_ms: i64,
}

/// What a renewal gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The new certificate is recorded as the host's newest.
    Issued,
    /// The host called with the certificate it renewed last: it gets the certificate issued
    /// then (PEM) again.
    Reissued(String),
    Refused(CertificateCheck),
}

/// What a join asks of the store: the token it came with, the id it claims and the certificate
/// signed for it.
#[derive(Debug, Clone)]
pub struct JoinAttempt {
    pub secret_hash: String,
    pub id: MinionId,
    pub certificate: SignedCertificate,
    pub now_unix_ms: i64,
    /// Accepted or pending, as the master's `join_approval` says.
    pub approval: Approval,
}

/// What became of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// A new host, accepted or pending, with its token's labels.
    Enrolled {
        approval: Approval,
        labels: BTreeMap<String, String>,
    },
    /// A replacement of an enrolled host took effect: the new certificate is the host's, the
    /// old one is refused (its live link must be dropped).
    Replaced {
        labels: BTreeMap<String, String>,
    },
    /// A replacement waits for an operator; the enrolled host is untouched.
    ReplacementPending {
        labels: BTreeMap<String, String>,
    },
    Refused(JoinRefusal),
}

/// Why a join was refused. The token is not used up by a refused join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefusal {
    Token(TokenCheck),
    /// The id is enrolled, and the token was not made to replace it.
    AlreadyEnrolled,
    /// The token re-enrols another host id only.
    TokenForAnotherHost(MinionId),
}

/// A join that took effect: what the joining host is told, and the records to write in the
/// join's transaction (the token, used once more, and the host).
#[derive(Debug)]
pub(super) struct Enrolment {
    pub outcome: JoinOutcome,
    pub token: TokenRecord,
    pub record: MinionRecord,
}

/// The first half of a join's decision: the token found by the attempt's secret (if any) must
/// be valid and, if it was made to replace a host, made for the id the attempt claims.
pub(super) fn usable_token(
    token: Option<TokenRecord>,
    attempt: &JoinAttempt,
) -> Result<TokenRecord, JoinRefusal> {
    let Some(token) = token else {
        return Err(JoinRefusal::Token(TokenCheck::Unknown));
    };
    match token.check(attempt.now_unix_ms) {
        TokenCheck::Valid => {}
        refused => return Err(JoinRefusal::Token(refused)),
    }
    if let Some(only) = &token.replaces
        && *only != attempt.id
    {
        return Err(JoinRefusal::TokenForAnotherHost(only.clone()));
    }
    Ok(token)
}

/// The second half: with a usable token, what becomes of the host enrolled under the claimed id
/// (`existing`). An enrolled id is taken over only with a token made to replace it; on a master
/// that approves joins by hand the replacement then waits for an operator.
pub(super) fn enrol(
    mut token: TokenRecord,
    existing: Option<MinionRecord>,
    attempt: JoinAttempt,
) -> Result<Enrolment, JoinRefusal> {
    let JoinAttempt {
        id,
        certificate,
        now_unix_ms,
        approval,
        ..
    } = attempt;
    let labels = token.labels.clone();
    let joining = || PendingEnrolment {
        certificate_sha256: certificate.sha256.clone(),
        certificate_expires_unix_ms: certificate.expires_unix_ms,
        joined_at_unix_ms: now_unix_ms,
        join_labels: labels.clone(),
    };
    let (record, outcome) = match existing {
        Some(_) if token.replaces.is_none() => return Err(JoinRefusal::AlreadyEnrolled),
        Some(mut record) if approval == Approval::Pending => {
            record.pending_replacement = Some(joining());
            (record, JoinOutcome::ReplacementPending { labels })
        }
        Some(mut record) => {
            record.replace_with(joining());
            (record, JoinOutcome::Replaced { labels })
        }
        None => (
            MinionRecord {
                id,
                enrolled_at_unix_ms: now_unix_ms,
                certificate_sha256: certificate.sha256,
                previous_certificate_sha256: None,
                certificate_expires_unix_ms: certificate.expires_unix_ms,
                join_labels: labels.clone(),
                last_seen_unix_ms: 0,
                facts: Facts::default(),
                running: vec![],
                approval,
                pending_replacement: None,
                last_renewal_pem: None,
                clock_offset_ms: 0,
            },
            JoinOutcome::Enrolled { approval, labels },
        ),
    };
    token.use_once();
    Ok(Enrolment {
        outcome,
        token,
        record,
    })
}

/// Why `record`'s host is not admitted with `certificate_sha256`, if it is not: it must be
/// accepted, and the certificate its newest (or the one it renewed last, until the newest is
/// used); a machine waiting to replace it is told it waits.
pub(super) fn admits(
    record: Option<&MinionRecord>,
    certificate_sha256: &str,
) -> Option<CertificateCheck> {
    let Some(record) = record else {
        return Some(CertificateCheck::NotEnrolled);
    };
    if record
        .pending_replacement
        .as_ref()
        .is_some_and(|p| p.certificate_sha256 == certificate_sha256)
    {
        return Some(CertificateCheck::NotAdmitted(Approval::Pending));
    }
    if record.approval != Approval::Accepted {
        return Some(CertificateCheck::NotAdmitted(record.approval));
    }
    if record.certificate_sha256 != certificate_sha256
        && record.previous_certificate_sha256.as_deref() != Some(certificate_sha256)
    {
        return Some(CertificateCheck::CertificateReplaced);
    }
    None
}

/// What a hello writes: the host's record with what it said.
#[derive(Debug)]
pub(super) struct HelloWrite {
    pub record: MinionRecord,
    /// Whether the write changes which certificates are admitted (the first hello with a
    /// renewed certificate retires the one before it). Such a write must survive a crash; the
    /// rest of what a hello records (facts, containers, when it was seen) the host says again
    /// at its next hello.
    pub settles_certificate: bool,
}

/// A hello from the host (`record`) with `certificate_sha256`: what it is told, and its record
/// with what it said, to write, if it is admitted.
pub(super) fn hello(
    record: Option<MinionRecord>,
    certificate_sha256: &str,
    hello: HostHello,
) -> (CertificateCheck, Option<HelloWrite>) {
    match record {
        Some(mut record) if admits(Some(&record), certificate_sha256).is_none() => {
            let mut settles_certificate = false;
            if record.certificate_sha256 == certificate_sha256 {
                // The newest certificate is in use: the one before it is no longer needed, nor
                // a copy of the newest to hand out again.
                settles_certificate = record.previous_certificate_sha256.is_some()
                    || record.last_renewal_pem.is_some();
                record.previous_certificate_sha256 = None;
                record.last_renewal_pem = None;
            }
            record.facts = hello.facts;
            record.running = hello.running;
            record.clock_offset_ms = hello.clock_offset_ms;
            record.last_seen_unix_ms = hello.at_unix_ms;
            (
                CertificateCheck::Recorded,
                Some(HelloWrite {
                    record,
                    settles_certificate,
                }),
            )
        }
        existing => (
            admits(existing.as_ref(), certificate_sha256).unwrap_or(CertificateCheck::Recorded),
            None,
        ),
    }
}

/// A renewal asked by the host (`record`) with `caller_sha256`: what it gets, and its record to
/// write if the new certificate is issued.
pub(super) fn renew(
    record: Option<MinionRecord>,
    caller_sha256: String,
    renewed: SignedCertificate,
    renewed_pem: String,
) -> (Renewal, Option<MinionRecord>) {
    let Some(mut record) = record else {
        return (Renewal::Refused(CertificateCheck::NotEnrolled), None);
    };
    if let Some(refused) = admits(Some(&record), &caller_sha256) {
        return (Renewal::Refused(refused), None);
    }
    if record.certificate_sha256 == caller_sha256 {
        record.previous_certificate_sha256 = Some(caller_sha256);
        record.certificate_sha256 = renewed.sha256;
        record.certificate_expires_unix_ms = renewed.expires_unix_ms;
        record.last_renewal_pem = Some(renewed_pem);
        return (Renewal::Issued, Some(record));
    }
    // The previous certificate fetches the same issued one again, at most.
    let renewal = match record.last_renewal_pem {
        Some(pem) => Renewal::Reissued(pem),
        None => Renewal::Refused(CertificateCheck::CertificateReplaced),
    };
    (renewal, None)
}

/// Setting the host's (`record`) approval: what became of it, and its record to write if it
/// changed.
pub(super) fn change_approval(
    record: Option<MinionRecord>,
    approval: Approval,
) -> (ApprovalChange, Option<MinionRecord>) {
    match record {
        None => (ApprovalChange::NotFound, None),
        Some(mut record)
            if record.pending_replacement.is_some()
                && matches!(approval, Approval::Accepted | Approval::Rejected) =>
        {
            let replacement = record.pending_replacement.take();
            let change = match replacement {
                Some(replacement) if approval == Approval::Accepted => {
                    record.replace_with(replacement);
                    ApprovalChange::ReplacementAccepted
                }
                _ => ApprovalChange::ReplacementRejected,
            };
            (change, Some(record))
        }
        Some(record)
            if approval == Approval::Accepted
                && matches!(record.approval, Approval::Rejected | Approval::Revoked) =>
        {
            (ApprovalChange::Refused(record.approval), None)
        }
        Some(mut record) => {
            record.approval = approval;
            // Revoking a host turns away a machine waiting to replace it too.
            record.pending_replacement = None;
            (ApprovalChange::Changed, Some(record))
        }
    }
}

impl MinionRecord {
    /// Whether this host is admitted with certificate `certificate_sha256` now, as a link or
    /// a renewal would be.
    pub fn admits(&self, certificate_sha256: &str) -> bool {
        admits(Some(self), certificate_sha256).is_none()
    }

    /// Makes `replacement` this host: its certificate, the only one accepted from now on, its
    /// labels, accepted. What the old machine reported is kept until the new one says hello.
    fn replace_with(&mut self, replacement: PendingEnrolment) {
        self.certificate_sha256 = replacement.certificate_sha256;
        self.previous_certificate_sha256 = None;
        self.certificate_expires_unix_ms = replacement.certificate_expires_unix_ms;
        self.enrolled_at_unix_ms = replacement.joined_at_unix_ms;
        self.join_labels = replacement.join_labels;
        self.approval = Approval::Accepted;
        self.pending_replacement = None;
        self.last_renewal_pem = None;
    }

    /// Updates what the host runs from its report of a job; false when the report says nothing
    /// new.
    pub(super) fn apply_report(&mut self, report: &HostReport) -> bool {
        // Built aside and compared: a job that changed nothing (every container kept as it
        // was) leaves the record as it is, so it costs the store no write.
        let mut running = self.running.clone();
        for result in &report.containers {
            match result.action {
                ContainerAction::Removed => {
                    running.retain(|c| c.name != result.name);
                }
                ContainerAction::Kept | ContainerAction::Created | ContainerAction::Replaced => {
                    let Some(role) = result.role.clone() else {
                        continue;
                    };
                    let entry = RunningContainer {
                        name: result.name.clone(),
                        role,
                        image: result.image.clone(),
                        image_digest: result.image_digest.clone(),
                        state: "running".into(),
                        container_id: running
                            .iter()
                            .find(|c| {
                                c.name == result.name && result.action == ContainerAction::Kept
                            })
                            .map(|c| c.container_id.clone())
                            .unwrap_or_default(),
                    };
                    running.retain(|c| c.name != result.name);
                    running.push(entry);
                }
                ContainerAction::Failed => {}
            }
        }
        running.sort_by(|a, b| a.name.cmp(&b.name));
        if running == self.running {
            return false;
        }
        self.running = running;
        true
    }
}

#[cfg(test)]
mod tests;
