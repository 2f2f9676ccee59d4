//! The live stream's `snapshot`: every device's presence, read from the
//! database and merged with this hub's session registry exactly as
//! `GET /api/v1/devices` does, so the stream and the list agree.

use super::protocol::{DeviceState, MAX_SNAPSHOT_DEVICES, ServerMessage, SnapshotReason};
use crate::gateway::connection::now_ms;
use crate::state::AppState;
use crate::store::{DeviceQuery, DeviceRecord, StoreError};

/// Devices read per database query.
const PAGE: u32 = 1000;

/// Every device (at most [`MAX_SNAPSHOT_DEVICES`]), in creation order.
pub async fn snapshot(
    state: &AppState,
    reason: SnapshotReason,
) -> Result<ServerMessage<'static>, StoreError> {
    let at_ms = now_ms();
    let mut devices = Vec::new();
    let mut after = None;
    let mut truncated = false;
    loop {
        let room = MAX_SNAPSHOT_DEVICES - devices.len();
        let query = DeviceQuery {
            limit: PAGE.min(u32::try_from(room).unwrap_or(PAGE)),
            after: after.take(),
            online: None,
            name_contains: None,
        };
        let page = state.store.list_devices(&query).await?;
        devices.extend(page.devices.into_iter().map(|d| device_state(state, d)));
        match page.next {
            None => break,
            Some(_) if devices.len() >= MAX_SNAPSHOT_DEVICES => {
                truncated = true;
                break;
            }
            Some(next) => after = Some(next),
        }
    }
    Ok(ServerMessage::Snapshot {
        reason,
        at_ms,
        devices,
        truncated,
    })
}

/// The record merged with this hub's live view (fresher for devices connected here).
fn device_state(state: &AppState, record: DeviceRecord) -> DeviceState {
    let live_seen = state.sessions.last_seen(record.pk);
    let last_seen_ms = match (record.last_seen_ms, live_seen) {
        (Some(db), Some(live)) => Some(db.max(live)),
        (db, live) => db.or(live),
    };
    DeviceState {
        online: record.online || state.sessions.is_online(record.pk),
        last_seen_ms,
        id: record.id,
        name: Some(record.name),
    }
}
