//! Background upkeep of device presence: last-seen times and revocations.
//!
//! Connections update an in-memory last-seen clock on every frame or pong;
//! writing it per frame would cost a database write per message, so
//! [`run_last_seen_flusher`] writes the changed ones every few seconds in one
//! statement. [`run_revocation_watcher`] polls the database for devices
//! revoked or whose token was rotated since its last look (by the API of any
//! hub or by `hub device revoke|rotate` in another process) and closes their
//! live sessions here: after a rotation, only a session that authenticated
//! with an older token generation, so a device already back on its new
//! token stays connected. A session registers a moment after its
//! credentials were checked (the handshake, then Hello); one checked just
//! before a revocation or rotation may register after the poll that saw it,
//! so the watcher keeps applying each one it saw for [`LATE_SESSION_WINDOW`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::gateway::connection::now_ms;
use crate::registry::{CloseReason, SessionRegistry};
use crate::store::Store;

/// How long the revocation watcher keeps closing sessions that register
/// after it saw their device revoked or rotated: longer than any handshake
/// plus Hello may take.
pub const LATE_SESSION_WINDOW: Duration = Duration::from_secs(300);

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

/// Closes live sessions of devices revoked, or whose token was rotated,
/// elsewhere, polling every `every`.
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
    // What recent polls found, applied again on every poll to sessions that
    // register late: device -> when first seen (and, for rotations, the
    // newest generation).
    let mut revoked_recently: HashMap<i64, Instant> = HashMap::new();
    let mut rotated_recently: HashMap<i64, (i64, Instant)> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let poll_started = now_ms();
        let from = since.saturating_sub(overlap);
        let seen_at = Instant::now();
        match store.devices_revoked_since(from).await {
            Ok(revoked) => {
                for (pk, _) in revoked {
                    revoked_recently.entry(pk).or_insert(seen_at);
                }
            }
            Err(err) => {
                warn!(error = %err, "could not poll for revoked devices");
                continue;
            }
        }
        match store.devices_rotated_since(from).await {
            Ok(rotated) => {
                for (pk, generation) in rotated {
                    let entry = rotated_recently.entry(pk).or_insert((generation, seen_at));
                    entry.0 = entry.0.max(generation);
                }
                since = poll_started;
            }
            Err(err) => warn!(error = %err, "could not poll for rotated device tokens"),
        }
        revoked_recently.retain(|_, seen| seen.elapsed() < LATE_SESSION_WINDOW);
        rotated_recently.retain(|_, (_, seen)| seen.elapsed() < LATE_SESSION_WINDOW);
        for &pk in revoked_recently.keys() {
            if sessions.close(pk, CloseReason::Revoked) {
                info!(device_pk = pk, "closed the session of a revoked device");
            }
        }
        for (&pk, &(generation, _)) in &rotated_recently {
            if sessions.close_older_generation(pk, generation, CloseReason::Revoked) {
                info!(
                    device_pk = pk,
                    "closed a session whose device token was rotated"
                );
            }
        }
    }
}
