//! The database file, opened again after an I/O failure.
//!
//! redb stops using a database after a failed write (a full disk, say): from then on every call
//! fails, reads included, until the database is closed and opened again, which recovers the
//! last committed state. The master must go on serving and recover by itself once space is
//! freed, so a call that fails on I/O closes the database and the next call opens it again.

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use redb::Database;

use super::StoreError;

/// How much of the file redb keeps in memory. Its default, 1 GiB, would let the records of a
/// few jobs over 10,000 hosts (7 MB each) grow the master by hundreds of MiB; beyond this the
/// kernel's page cache serves them, which does not count against the master.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Opens (or creates) the database file at `path`.
fn create(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

/// Whether `err` says the database file could not be read or written: redb uses the database
/// no more until it is opened again.
fn is_io_failure(err: &StoreError) -> bool {
    matches!(err, StoreError::Io(_) | StoreError::Closed(_))
}

/// The database, or nothing while it is closed after an I/O failure.
pub(super) struct Reopening {
    path: PathBuf,
    /// The database and how many times it was closed, so that of two calls that failed on
    /// the same database only the first closes it.
    state: RwLock<(u64, Option<Database>)>,
}

impl Reopening {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = create(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: RwLock::new((0, Some(db))),
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the database (opening it again first if an I/O failure closed it).
    /// Blocking.
    pub fn with<T>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        // The lock is let go before a failure closes the database, which takes it to write.
        let (generation, result) = if let (generation, Some(db)) = &*state {
            let done = (*generation, work(db));
            drop(state);
            done
        } else {
            drop(state);
            self.reopened(work)?
        };
        if result.as_ref().is_err_and(is_io_failure) {
            self.close(generation);
        }
        result
    }

    /// Opens the database again, unless another call did meanwhile, and runs `work` on it.
    fn reopened<T>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<(u64, Result<T, StoreError>), StoreError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let (generation, db) = &mut *state;
        let db = match db {
            Some(db) => db,
            None => {
                let opened = db.insert(create(&self.path)?);
                tracing::info!(path = %self.path.display(), "store opened again after an I/O failure");
                opened
            }
        };
        Ok((*generation, work(db)))
    }

    /// Closes the database if it is still the one that failed (`generation`).
    fn close(&self, generation: u64) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.0 == generation && state.1.is_some() {
            state.0 += 1;
            state.1 = None;
            tracing::warn!(
                path = %self.path.display(),
                "store closed after an I/O failure; the next call opens it again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;

    use super::*;

    #[test]
    fn only_a_failure_to_read_or_write_the_file_closes_it() {
        let io = |kind: ErrorKind| StoreError::from(redb::Error::Io(kind.into()));
        for closing in [
            io(ErrorKind::StorageFull),
            io(ErrorKind::PermissionDenied),
            StoreError::from(redb::Error::PreviousIo),
            StoreError::from(redb::Error::DatabaseClosed),
        ] {
            assert!(is_io_failure(&closing), "{closing}");
        }
        assert!(!is_io_failure(&StoreError::from(
            redb::Error::DatabaseAlreadyOpen
        )));
        // A full disk is told apart, for the operator.
        assert!(io(ErrorKind::StorageFull).is_disk_full());
        assert!(io(ErrorKind::QuotaExceeded).is_disk_full());
        assert!(!io(ErrorKind::PermissionDenied).is_disk_full());
        assert!(!StoreError::from(redb::Error::PreviousIo).is_disk_full());
    }
}
