//! Deletes what is older than its retention period, in the background.
//!
//! A pass runs every `retention_interval` and deletes in transactions of at
//! most `retention_batch` rows, pausing between them, so the batch writer
//! (which shares the database's write lock on SQLite) never waits long.
//!
//! - Readings older than `--retention-days`; the newest value of each
//!   sensor (`latest_readings`) is kept.
//! - Finished commands older than the same age; unfinished ones are kept.
//! - Audit log entries older than `--audit-retention-days`, a separate
//!   period because audits are usually kept longer than telemetry.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::gateway::connection::now_ms;
use crate::store::{Store, StoreError};

/// Pause between two delete transactions of one pass.
const PAUSE_BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// What the retention task does.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// Readings and finished commands older than this are deleted; None keeps them.
    pub max_age: Option<Duration>,
    /// Audit log entries older than this are deleted; None keeps them.
    pub audit_max_age: Option<Duration>,
    /// Time between passes.
    pub every: Duration,
    /// Most rows per delete transaction.
    pub batch: u32,
}

impl RetentionSettings {
    /// Whether there is anything to delete at all.
    pub fn is_active(&self) -> bool {
        self.max_age.is_some() || self.audit_max_age.is_some()
    }
}

/// Runs retention passes until `shutdown`.
pub async fn run_retention(store: Store, settings: RetentionSettings, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(settings.every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let batch = settings.batch;
        if let Some(cutoff) = settings.max_age.map(cutoff_ms) {
            let pass = delete_in_batches(batch, &shutdown, "old readings", || {
                store.delete_readings_before(cutoff, batch)
            });
            let Some(()) = pass.await else { return };
            let pass = delete_in_batches(batch, &shutdown, "old finished commands", || {
                store.delete_commands_finished_before(cutoff, batch)
            });
            let Some(()) = pass.await else { return };
        }
        if let Some(cutoff) = settings.audit_max_age.map(cutoff_ms) {
            let pass = delete_in_batches(batch, &shutdown, "old audit log entries", || {
                store.delete_audit_before(cutoff, batch)
            });
            let Some(()) = pass.await else { return };
        }
    }
}

/// Now minus `max_age`, in ms since the epoch.
fn cutoff_ms(max_age: Duration) -> i64 {
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    now_ms().saturating_sub(max_age_ms)
}

/// Calls `delete` (which deletes at most `batch` rows) until it deletes
/// fewer, pausing between calls; None when shutdown interrupted it.
async fn delete_in_batches<F, Fut>(
    batch: u32,
    shutdown: &CancellationToken,
    what: &'static str,
    mut delete: F,
) -> Option<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut deleted = 0u64;
    loop {
        match delete().await {
            Ok(n) => {
                deleted += n;
                if n < u64::from(batch) {
                    break;
                }
            }
            Err(err) => {
                warn!(error = %err, what, "retention pass failed; retrying at the next pass");
                break;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(PAUSE_BETWEEN_BATCHES) => {}
        }
    }
    if deleted > 0 {
        info!(deleted, what, "retention pass deleted rows");
    }
    Some(())
}
