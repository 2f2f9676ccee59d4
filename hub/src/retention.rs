//! Deletes readings older than the retention period, in the background.
//!
//! A pass runs every `retention_interval` and deletes in transactions of at
//! most `retention_batch` readings, pausing between them, so the batch
//! writer (which shares the database's write lock on SQLite) never waits
//! long. The newest value of each sensor (`latest_readings`) is kept.
//! Finished commands older than the same age are deleted the same way;
//! unfinished ones are kept.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::gateway::connection::now_ms;
use crate::store::Store;

/// Pause between two delete transactions of one pass.
const PAUSE_BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// What the retention task does.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// Readings older than this are deleted.
    pub max_age: Duration,
    /// Time between passes.
    pub every: Duration,
    /// Most readings per delete transaction.
    pub batch: u32,
}

/// Runs retention passes until `shutdown`.
pub async fn run_retention(store: Store, settings: RetentionSettings, shutdown: CancellationToken) {
    let max_age_ms = i64::try_from(settings.max_age.as_millis()).unwrap_or(i64::MAX);
    let mut ticker = tokio::time::interval(settings.every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let cutoff = now_ms().saturating_sub(max_age_ms);
        let mut deleted = 0u64;
        loop {
            match store.delete_readings_before(cutoff, settings.batch).await {
                Ok(n) => {
                    deleted += n;
                    if n < u64::from(settings.batch) {
                        break;
                    }
                }
                Err(err) => {
                    warn!(error = %err, "retention pass failed; retrying at the next pass");
                    break;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PAUSE_BETWEEN_BATCHES) => {}
            }
        }
        if deleted > 0 {
            info!(
                deleted,
                cutoff_ms = cutoff,
                "retention pass deleted old readings"
            );
        }
        let mut commands = 0u64;
        loop {
            match store
                .delete_commands_finished_before(cutoff, settings.batch)
                .await
            {
                Ok(n) => {
                    commands += n;
                    if n < u64::from(settings.batch) {
                        break;
                    }
                }
                Err(err) => {
                    warn!(error = %err, "command retention failed; retrying at the next pass");
                    break;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PAUSE_BETWEEN_BATCHES) => {}
            }
        }
        if commands > 0 {
            info!(
                deleted = commands,
                cutoff_ms = cutoff,
                "retention pass deleted old finished commands"
            );
        }
    }
}
