//! Where each record lives under the fleet's prefix.

use brine_common::names::{MinionId, SecretName};

/// Key sequences (releases, a host's events) are written with this many digits, so that their
/// keys sort as their numbers do.
const SEQUENCE_DIGITS: usize = 20;

/// The keys of one fleet: every one starts with its prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix`, which gets a trailing '/' if it has none.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn under(&self, path: std::fmt::Arguments<'_>) -> String {
        format!("{}{path}", self.prefix)
    }

    /// Which fleet the records under the prefix are.
    pub fn fleet(&self) -> String {
        self.under(format_args!("fleet"))
    }

    pub fn minions(&self) -> String {
        self.under(format_args!("minions/"))
    }

    pub fn minion(&self, id: &MinionId) -> String {
        self.under(format_args!("minions/{id}"))
    }

    pub fn tokens(&self) -> String {
        self.under(format_args!("tokens/"))
    }

    pub fn token(&self, public_id: &str) -> String {
        self.under(format_args!("tokens/{public_id}"))
    }

    /// Every job's record (without its reports).
    pub fn jobs(&self) -> String {
        self.under(format_args!("jobs/"))
    }

    pub fn job(&self, job_id: &str) -> String {
        self.under(format_args!("jobs/{job_id}"))
    }

    /// The hosts job `job_id` targets.
    pub fn job_targets(&self, job_id: &str) -> String {
        self.under(format_args!("job-targets/{job_id}"))
    }

    /// Every report of job `job_id`.
    pub fn job_hosts(&self, job_id: &str) -> String {
        self.under(format_args!("job-hosts/{job_id}/"))
    }

    /// Which master holds each running job (attached to that master's lease).
    pub fn job_owners(&self) -> String {
        self.under(format_args!("job-owners/"))
    }

    pub fn job_owner(&self, job_id: &str) -> String {
        self.under(format_args!("job-owners/{job_id}"))
    }

    /// A running job's plan, without its hosts' desired states...
    pub fn job_plan(&self, job_id: &str) -> String {
        self.under(format_args!("job-plans/{job_id}"))
    }

    /// ...which are one key per host.
    pub fn job_desired(&self, job_id: &str) -> String {
        self.under(format_args!("job-desired/{job_id}/"))
    }

    pub fn job_desired_of(&self, job_id: &str, id: &MinionId) -> String {
        self.under(format_args!("job-desired/{job_id}/{id}"))
    }

    pub fn job_host(&self, job_id: &str, id: &MinionId) -> String {
        self.under(format_args!("job-hosts/{job_id}/{id}"))
    }

    pub fn lock(&self) -> String {
        self.under(format_args!("lock"))
    }

    pub fn releases(&self) -> String {
        self.under(format_args!("releases/"))
    }

    pub fn release(&self, id: u64) -> String {
        self.under(format_args!("releases/{id:0SEQUENCE_DIGITS$}"))
    }

    /// Every master's announcement.
    pub fn masters(&self) -> String {
        self.under(format_args!("masters/"))
    }

    pub fn master(&self, name: &str) -> String {
        self.under(format_args!("masters/{name}"))
    }

    /// Which master holds each host's link.
    pub fn links(&self) -> String {
        self.under(format_args!("links/"))
    }

    pub fn link(&self, host: &MinionId) -> String {
        self.under(format_args!("links/{host}"))
    }

    /// The messages waiting for the master named `master`.
    pub fn relayed_to(&self, master: &str) -> String {
        self.under(format_args!("relay/{master}/"))
    }

    /// One message for `master`; `unique` tells it from every other.
    pub fn relayed(&self, master: &str, unique: &str) -> String {
        self.under(format_args!("relay/{master}/{unique}"))
    }

    /// Every version of the roles file.
    pub fn roles_versions(&self) -> String {
        self.under(format_args!("roles/"))
    }

    pub fn roles_version(&self, version: u64) -> String {
        self.under(format_args!("roles/{version:0SEQUENCE_DIGITS$}"))
    }

    pub fn secrets(&self) -> String {
        self.under(format_args!("secrets/"))
    }

    pub fn secret(&self, name: &SecretName) -> String {
        self.under(format_args!("secrets/{name}"))
    }

    pub fn revocations(&self) -> String {
        self.under(format_args!("revocations/"))
    }

    /// `name` is `ROLE/NAME`.
    pub fn revocation(&self, name: &str) -> String {
        self.under(format_args!("revocations/{name}"))
    }

    /// Every event of host `id`.
    pub fn events(&self, id: &MinionId) -> String {
        self.under(format_args!("events/{id}/"))
    }

    pub fn event(&self, id: &MinionId, sequence: u64) -> String {
        self.under(format_args!("events/{id}/{sequence:0SEQUENCE_DIGITS$}"))
    }

    /// Every failed hook delivery.
    pub fn hook_failures(&self) -> String {
        self.under(format_args!("hook-failures/"))
    }

    pub fn hook_failure(&self, sequence: u64) -> String {
        self.under(format_args!("hook-failures/{sequence:0SEQUENCE_DIGITS$}"))
    }

    /// The number at the end of a sequence key (a release's or an event's).
    pub fn sequence_of(key: &str) -> Option<u64> {
        key.rsplit('/').next()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_keys_sort_as_their_numbers() {
        let keys = Keys::new("/brine");
        assert_eq!(keys.prefix(), "/brine/");
        let id = MinionId::new("web-1").unwrap();
        assert!(keys.event(&id, 9) < keys.event(&id, 10));
        assert!(keys.release(99) < keys.release(100));
        assert_eq!(Keys::sequence_of(&keys.release(42)), Some(42));
        assert_eq!(Keys::sequence_of(&keys.event(&id, 7)), Some(7));
        assert!(keys.event(&id, 7).starts_with(&keys.events(&id)));
        // One host's events are not under another's whose id it starts with.
        let longer = MinionId::new("web-10").unwrap();
        assert!(!keys.event(&longer, 1).starts_with(&keys.events(&id)));
    }
}
