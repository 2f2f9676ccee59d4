//! Background upkeep of device presence: last-seen times and revocations.
//!
//! Connections update an in-memory last-seen clock on every frame or pong;
//! writing it per frame would cost a database write per message, so
//! [`run_last_seen_flusher`] writes the changed ones every few seconds in one
//! statement. [`run_revocation_watcher`] polls the database for devices
//! revoked since its last look (by the API of any hub or by `hub device
//! revoke` in another process) and closes their live sessions here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::gateway::connection::now_ms;
use crate::registry::{CloseReason, SessionRegistry};
use crate::store::Store;

/// Writes changed last-seen times every `every` until `shutdown`.
pub async fn run_last_seen_flusher(
    store: Store,
    sessions: Arc<SessionRegistry>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut written: HashMap<i64, i64> = HashMap::new();
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let snapshot = sessions.snapshot_last_seen();
        let changed: Vec<(i64, i64)> = snapshot
            .into_iter()
            .filter(|(pk, seen)| written.get(pk) != Some(seen))
            .collect();
        if changed.is_empty() {
            continue;
        }
        match store.touch_last_seen(&changed).await {
            Ok(()) => {
                written.retain(|pk, _| sessions.is_online(*pk));
                written.extend(changed);
            }
            Err(err) => warn!(error = %err, "could not write last-seen times"),
        }
    }
}

/// Closes live sessions of devices revoked elsewhere, polling every `every`.
pub async fn run_revocation_watcher(
    store: Store,
    sessions: Arc<SessionRegistry>,
    every: Duration,
    shutdown: CancellationToken,
) {
    // Look back a little before each poll so a revocation written by another
    // process in the same millisecond as our last poll is not missed.
    let overlap = i64::try_from(every.as_millis())
        .unwrap_or(i64::MAX)
        .max(1000);
    let mut since = now_ms();
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let poll_started = now_ms();
        match store
            .devices_revoked_since(since.saturating_sub(overlap))
            .await
        {
            Ok(revoked) => {
                for (pk, _) in revoked {
                    if sessions.close(pk, CloseReason::Revoked) {
                        info!(device_pk = pk, "closed the session of a revoked device");
                    }
                }
                since = poll_started;
            }
            Err(err) => warn!(error = %err, "could not poll for revoked devices"),
        }
    }
}
