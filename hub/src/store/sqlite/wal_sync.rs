//! Durability for the batch writer without an fsync inside each commit.
//!
//! With `synchronous = FULL`, every commit waits for an fsync of the WAL while
//! holding SQLite's only write lock, so the writer sits idle for the disk on
//! every batch. The writer connection runs `synchronous = NORMAL` instead
//! (commits reach the OS, not yet the disk) and [`WalSync`] makes a commit
//! durable afterwards by fsyncing the WAL file, while the writer already
//! commits the next batch. The ingest writer acks a batch only after
//! [`WalSync::wait_durable`] returns, so an ack still means "survives a power
//! loss", exactly as with FULL.
//!
//! Why one fsync of the WAL is enough: WAL frames are appended in commit order
//! and fsync covers every byte written to the file before it, so once it
//! returns, every commit counted before it started is on disk. SQLite's
//! checkpoints under NORMAL sync the WAL before copying it into the database
//! and the database after, and recovery replays the WAL only up to the first
//! frame whose cumulative checksum fails, so an unsynced later commit can
//! never damage an earlier, synced one. Waiters are grouped: one fsync serves
//! every commit that finished before it began.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::StoreError;

/// Counts commits and the fsyncs that made them durable.
pub(crate) struct WalSync {
    /// The database's `-wal` file.
    wal_path: PathBuf,
    /// Opened on first use (the WAL exists once something was written).
    file: Mutex<Option<Arc<File>>>,
    /// Commits the writer has finished.
    committed: AtomicU64,
    /// Every commit up to this number is on disk.
    synced: AtomicU64,
    /// One fsync at a time; later waiters often find their commit covered.
    sync_lock: tokio::sync::Mutex<()>,
}

impl WalSync {
    /// For the database file at `db_path`.
    pub(crate) fn new(db_path: PathBuf) -> WalSync {
        let mut wal = db_path.into_os_string();
        wal.push("-wal");
        WalSync {
            wal_path: PathBuf::from(wal),
            file: Mutex::new(None),
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            sync_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Records a finished commit; returns its number for [`Self::wait_durable`].
    pub(crate) fn record_commit(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn wal_file(&self) -> Result<Arc<File>, StoreError> {
        let mut slot = self
            .file
            .lock()
            .map_err(|_| StoreError::Corrupt("WAL sync state poisoned".into()))?;
        if let Some(file) = slot.as_ref() {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(&self.wal_path).map_err(StoreError::Io)?);
        *slot = Some(Arc::clone(&file));
        Ok(file)
    }

    /// Returns once every commit finished so far is on disk.
    pub(crate) async fn wait_all_durable(&self) -> Result<(), StoreError> {
        let commit = self.committed.load(Ordering::Acquire);
        if commit == 0 {
            return Ok(());
        }
        self.wait_durable(commit).await
    }

    /// Returns once commit `commit` is on disk.
    pub(crate) async fn wait_durable(&self, commit: u64) -> Result<(), StoreError> {
        if self.synced.load(Ordering::Acquire) >= commit {
            return Ok(());
        }
        let _one_at_a_time = self.sync_lock.lock().await;
        if self.synced.load(Ordering::Acquire) >= commit {
            return Ok(());
        }
        // Every commit counted now has its frames written to the file.
        let target = self.committed.load(Ordering::Acquire);
        let file = self.wal_file()?;
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|err| StoreError::Io(std::io::Error::other(err)))?
            .map_err(StoreError::Io)?;
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_fsync_covers_every_earlier_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("x.db");
        std::fs::write(dir.path().join("x.db-wal"), b"frames").expect("wal");
        let sync = WalSync::new(db);
        let first = sync.record_commit();
        let second = sync.record_commit();
        sync.wait_durable(first).await.expect("sync");
        // The fsync for the first also covered the second, committed before it began.
        assert_eq!(sync.synced.load(Ordering::Acquire), second);
        sync.wait_durable(second).await.expect("already durable");
    }

    #[tokio::test]
    async fn a_missing_wal_file_is_an_error_not_a_false_ack() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sync = WalSync::new(dir.path().join("none.db"));
        let commit = sync.record_commit();
        assert!(sync.wait_durable(commit).await.is_err());
    }
}
