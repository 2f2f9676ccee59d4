//! Hubs that die without closing their sessions: keeping presence honest.
//!
//! A hub marks a device offline when its connection closes. A hub that is
//! killed, or whose machine is lost, closes nothing, so without help its
//! devices would stay "online" in the database forever (those that come
//! back elsewhere fix their own row when their new session opens). Every
//! hub therefore writes a liveness row (`hubs`) every sixth of
//! `--hub-stale-after-secs`; a hub silent for longer is claimed by exactly
//! one live hub, which marks the devices the dead one held offline and
//! announces each (MQTT `status`, live streams) like an ordinary disconnect.
//! A hub starting under an instance id that held devices before (a restart
//! after a crash) releases them at start, before it accepts connections.
//! See `store::hubs` for why a released device can never hide a live session.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::events::{HubEvents, PresenceEvent};
use crate::gateway::connection::now_ms;
use crate::store::{ReleasedDevice, Store};

/// Marks offline the devices an earlier run of `instance` left online;
/// call before accepting connections. A database error is logged: the next
/// start, or another hub's sweep, will try again.
pub async fn release_leftovers(store: &Store, instance: &str, events: &HubEvents) {
    match store.release_hub_devices(instance).await {
        Ok(released) if released.is_empty() => {}
        Ok(released) => {
            info!(
                devices = released.len(),
                "marked offline the devices an earlier run of this hub left online"
            );
            announce(events, released);
        }
        Err(err) => warn!(error = %err, "could not release devices left online by an earlier run"),
    }
}

/// Writes this hub's liveness row and releases dead hubs' devices until
/// `shutdown`; then removes the row (a clean stop).
pub async fn run_liveness(
    store: Store,
    instance: String,
    events: HubEvents,
    stale_after: Duration,
    shutdown: CancellationToken,
) {
    let every = (stale_after / 6).max(Duration::from_millis(500));
    let stale_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = now_ms();
        if let Err(err) = store.hub_alive(&instance, now).await {
            warn!(error = %err, "could not write this hub's liveness row");
            continue;
        }
        let before = now.saturating_sub(stale_ms);
        let stale = match store.stale_hubs(before, &instance).await {
            Ok(stale) => stale,
            Err(err) => {
                warn!(error = %err, "could not look for dead hubs");
                continue;
            }
        };
        for dead in stale {
            release_dead_hub(&store, &events, &dead, before).await;
        }
    }
    if let Err(err) = store.forget_hub(&instance).await {
        warn!(error = %err, "could not remove this hub's liveness row");
    }
}

/// Claims hub `dead` (silent since before `before_ms`) and releases its
/// devices, unless another hub claimed it first.
async fn release_dead_hub(store: &Store, events: &HubEvents, dead: &str, before_ms: i64) {
    match store.claim_stale_hub(dead, before_ms).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            warn!(hub = dead, error = %err, "could not claim a dead hub");
            return;
        }
    }
    match store.release_hub_devices(dead).await {
        Ok(released) => {
            warn!(
                hub = dead,
                devices = released.len(),
                "a hub stopped writing its liveness row: marked the devices it held offline"
            );
            announce(events, released);
        }
        // The row is gone; its devices stay as they are until they
        // reconnect, or until that instance id starts again.
        Err(err) => warn!(hub = dead, error = %err, "could not release a dead hub's devices"),
    }
}

fn announce(events: &HubEvents, released: Vec<ReleasedDevice>) {
    let at_ms = now_ms();
    for device in released {
        events.presence(PresenceEvent {
            device_id: device.id,
            online: false,
            session_counter: device.session_counter,
            at_ms,
        });
    }
}
