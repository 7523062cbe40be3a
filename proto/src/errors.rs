//! Errors a program can branch on: a failed call carries a `google.rpc.ErrorInfo` whose reason
//! is one of [`pb::ErrorReason`] (without its `ERROR_REASON_` prefix) in domain `brine.v1`,
//! field violations for invalid input and a retry delay when waiting helps. Built here for the
//! master and read here for clients, so both agree on the names.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{InvalidField, pb};

/// The `domain` of every `ErrorInfo` the master sends.
pub const DOMAIN: &str = "brine.v1";

/// The `reason` string of `reason` on the wire, e.g. `FLEET_LOCKED`.
pub fn reason_name(reason: pb::ErrorReason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

/// A failed call with a reason and its metadata.
pub fn failure<'a>(
    code: Code,
    reason: pb::ErrorReason,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (&'a str, String)>,
) -> Status {
    Status::with_error_details(code, message, details(reason, metadata))
}

/// A failed call the caller should retry after `delay`.
pub fn retry_after(
    code: Code,
    reason: pb::ErrorReason,
    message: impl Into<String>,
    delay: Duration,
) -> Status {
    let mut details = details(reason, []);
    details.set_retry_info(Some(delay));
    Status::with_error_details(code, message, details)
}

/// An invalid request, naming the field.
pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Status {
    let field = field.into();
    let mut details = details(pb::ErrorReason::InvalidRequest, []);
    details.add_bad_request_violation(field.clone(), message.to_string());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {message}"),
        details,
    )
}

/// A caller whose certificate is refused (missing, foreign, expired or revoked).
pub fn certificate_refused(message: impl Into<String>) -> Status {
    failure(
        Code::Unauthenticated,
        pb::ErrorReason::CertificateRefused,
        message,
        [],
    )
}

/// A caller whose certificate's role may not do this.
pub fn not_allowed(message: impl Into<String>) -> Status {
    failure(
        Code::PermissionDenied,
        pb::ErrorReason::NotAllowed,
        message,
        [],
    )
}

fn details<'a>(
    reason: pb::ErrorReason,
    metadata: impl IntoIterator<Item = (&'a str, String)>,
) -> ErrorDetails {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    ErrorDetails::with_error_info(reason_name(reason), DOMAIN, metadata)
}

impl From<InvalidField> for Status {
    fn from(err: InvalidField) -> Self {
        invalid(err.field, err.message)
    }
}

/// What a failed call's details say, as a client reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    /// The reason, if the master gave one this client knows.
    pub reason: Option<pb::ErrorReason>,
    pub metadata: HashMap<String, String>,
    /// The fields that were invalid, with why.
    pub field_violations: Vec<(String, String)>,
    /// How long to wait before retrying, when the master said.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn of(status: &Status) -> Self {
        let details = status.get_error_details();
        let info = details.error_info().filter(|info| info.domain == DOMAIN);
        Failure {
            reason: info.and_then(|info| {
                pb::ErrorReason::from_str_name(&format!("ERROR_REASON_{}", info.reason))
            }),
            metadata: info.map(|info| info.metadata.clone()).unwrap_or_default(),
            field_violations: details
                .bad_request()
                .map(|bad| {
                    bad.field_violations
                        .iter()
                        .map(|v| (v.field.clone(), v.description.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            retry_after: details.retry_info().and_then(|retry| retry.retry_delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_reads_what_the_master_said() {
        let locked = failure(
            Code::Aborted,
            pb::ErrorReason::FleetLocked,
            "locked by ci (ci)",
            [
                ("holder", "ci (ci)".to_owned()),
                ("job_id", "j-1".to_owned()),
            ],
        );
        let read = Failure::of(&locked);
        assert_eq!(read.reason, Some(pb::ErrorReason::FleetLocked));
        assert_eq!(read.metadata["job_id"], "j-1");
        assert_eq!(reason_name(pb::ErrorReason::FleetLocked), "FLEET_LOCKED");

        let bad = Status::from(InvalidField::new("options.target", "unexpected `)`"));
        assert_eq!(bad.code(), Code::InvalidArgument);
        let read = Failure::of(&bad);
        assert_eq!(read.reason, Some(pb::ErrorReason::InvalidRequest));
        assert_eq!(
            read.field_violations,
            [("options.target".to_owned(), "unexpected `)`".to_owned())]
        );

        let throttled = retry_after(
            Code::ResourceExhausted,
            pb::ErrorReason::Throttled,
            "slow down",
            Duration::from_secs(7),
        );
        assert_eq!(
            Failure::of(&throttled).retry_after,
            Some(Duration::from_secs(7))
        );
        assert_eq!(Failure::of(&Status::internal("plain")), Failure::default());
    }
}
