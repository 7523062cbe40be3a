//! The master's embedded, transactional store: enrolled minions, join tokens, jobs, the fleet
//! lock, releases, certificate revocations and host events.
//!
//! Each table's records and the rules that change them (who may join under which id, what a
//! renewal gives, which jobs are forgotten) live in a module of their own here: `minions` (with
//! joins), `tokens`, `jobs`, `lock` and `revocations`; host events and releases are records of
//! `brine-common` and [`crate::release`]. The redb database that keeps them, a module per
//! table, is under `store/redb/`.
//!
//! Records are JSON so they can grow fields without migrations, and each says which format it
//! is in (`record.rs`), so a master never misreads a shape it does not know. Every write
//! commits before the caller is answered.

mod jobs;
mod lock;
mod minions;
mod record;
mod redb;
mod revocations;
mod tokens;

pub use self::redb::Store;
pub use jobs::{JobRecord, JobRetention};
pub use lock::LockRecord;
pub use minions::{
    Approval, ApprovalChange, CertificateCheck, HostHello, JoinAttempt, JoinOutcome, JoinRefusal,
    MinionRecord, PendingEnrolment, Renewal,
};
pub use revocations::CertificateRevocation;
pub use tokens::{ListedToken, TokenCheck, TokenRecord};

/// How many events the store keeps per host; older ones go.
pub const EVENTS_KEPT: usize = 200;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Database(#[from] ::redb::Error),
    /// A record that is not one this master can read: it does not decode, or it is in a format
    /// this master does not know.
    #[error("store: the {table} record {key:?} is unreadable: {message}")]
    Corrupt {
        table: &'static str,
        key: String,
        message: String,
    },
    #[error("store: the blocking task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether the database file could not be read or written; redb uses it no more until it
    /// is opened again.
    fn is_io_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                ::redb::Error::Io(_) | ::redb::Error::PreviousIo | ::redb::Error::DatabaseClosed
            )
        )
    }

    /// Whether the disk holding the store is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            StoreError::Database(::redb::Error::Io(err))
                if matches!(err.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        )
    }

    /// What a remote caller is told: whether the master's disk is full, which an operator must
    /// fix, and otherwise only that the store failed; the details are in the master's log.
    pub fn to_status(&self) -> tonic::Status {
        tracing::error!("{self}");
        if self.is_disk_full() {
            tonic::Status::resource_exhausted(
                "the master's disk is full: it can record nothing (so it starts no job and \
                 enrols no host) until space is freed where its data directory is",
            )
        } else {
            tonic::Status::unavailable("the master's store failed; see the master's log")
        }
    }
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(err: $ty) -> Self {
                StoreError::Database(err.into())
            }
        }
    )*};
}
from_redb!(
    ::redb::DatabaseError,
    ::redb::TransactionError,
    ::redb::TableError,
    ::redb::StorageError,
    ::redb::CommitError
);
