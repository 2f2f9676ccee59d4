//! Several hubs on one Postgres: reacting to what the others changed.
//!
//! Scale-out uses the engines the hubs already share (DESIGN.md §8): the
//! database is the source of truth for commands and presence, and its own
//! LISTEN/NOTIFY carries the news between hubs (see
//! [`crate::store::ClusterFeed`]), so no extra service is needed and a
//! notice leaves exactly when the change commits. [`run_cluster_listener`]
//! applies each notice from another hub:
//! - a command accepted elsewhere for a device connected here is offered to
//!   its session; every change of any command reaches this hub's `?wait`
//!   requests and live streams ([`CommandService::remote_change`]);
//! - a device that opened a newer session on another hub has its older
//!   session here closed as replaced (a half-open leftover of a device that
//!   already moved), so commands are not sent into a dead socket.
//!
//! When the listening connection drops, notices sent meanwhile are lost;
//! after it is back, commands still queued since a little before the loss
//! are offered again (a session ignores one it already sent). `?wait`
//! re-reads the database at its deadline, so it reports a final status it
//! missed. SQLite serves one hub: there is nothing to listen to.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::commands::CommandService;
use crate::gateway::connection::now_ms;
use crate::registry::SessionRegistry;
use crate::store::{ClusterNotice, Store};

/// How far before a lost connection the catch-up looks for queued commands:
/// a connection is noticed lost a little after it died.
const CATCH_UP_MARGIN_MS: i64 = 60_000;
/// Wait after a failed attempt to listen, doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Follows the other hubs' changes until `shutdown` (returns at once on SQLite).
pub async fn run_cluster_listener(
    store: Store,
    commands: CommandService,
    sessions: Arc<SessionRegistry>,
    instance: String,
    shutdown: CancellationToken,
) {
    let mut retry = FIRST_RETRY;
    // When the feed was last known to be listening (ms since the epoch).
    let mut listening_since = now_ms();
    let mut feed = loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return,
            feed = store.cluster_feed() => feed,
        };
        match attempt {
            Ok(None) => return,
            Ok(Some(feed)) => break feed,
            Err(err) => {
                warn!(error = %err, "cannot listen to the other hubs yet; retrying");
                if sleep_or_shutdown(&shutdown, retry).await {
                    return;
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    };
    info!(
        instance,
        "listening to the other hubs on the shared database"
    );
    // Sessions opened here before the LISTEN took effect read their queued
    // commands from the database when they opened; one queued on another
    // hub after that read but before the LISTEN sent a notice nobody here
    // heard. Offer those once now (a session ignores one it already has).
    catch_up(&commands, listening_since).await;
    let mut lost_at: Option<i64> = None;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = feed.next() => next,
        };
        let notice = match next {
            Ok(notice) => notice,
            Err(err) => {
                // The server is unreachable; the feed reconnects on the next call.
                lost_at.get_or_insert(listening_since);
                warn!(error = %err, "lost the other hubs' notices; reconnecting");
                if sleep_or_shutdown(&shutdown, retry).await {
                    return;
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        retry = FIRST_RETRY;
        let last_heard = std::mem::replace(&mut listening_since, now_ms());
        if let Some(since) = lost_at.take() {
            catch_up(&commands, since).await;
        }
        if notice.origin() == Some(instance.as_str()) {
            continue;
        }
        match notice {
            ClusterNotice::Command {
                id,
                device_pk,
                status,
                ..
            } => {
                if let Err(err) = commands.remote_change(id, device_pk, status).await {
                    warn!(command = id, error = %err, "could not read a command another hub changed");
                }
            }
            ClusterNotice::Session {
                device_pk,
                session_counter,
                origin,
            } => {
                if sessions.close_older_session(device_pk, session_counter) {
                    info!(
                        device_pk,
                        hub = origin,
                        "closed a session here: the device opened a newer one on another hub"
                    );
                }
            }
            ClusterNotice::Reconnected => {
                warn!("the connection listening to the other hubs dropped and was made again");
                catch_up(&commands, last_heard).await;
            }
        }
    }
}

/// Offers the commands queued since a little before `since` that a lost
/// connection may have hidden.
async fn catch_up(commands: &CommandService, since: i64) {
    match commands.offer_missed(since - CATCH_UP_MARGIN_MS).await {
        Ok(offered) => debug!(offered, "offered commands queued while not listening"),
        Err(err) => warn!(error = %err, "could not catch up on commands queued meanwhile"),
    }
}

/// Sleeps `delay`; true if `shutdown` came first.
async fn sleep_or_shutdown(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}
