//! What the hub announces to integrations: device presence and stored telemetry.
//!
//! Both are broadcasts that nobody has to listen to. The MQTT bridge
//! subscribes when it is configured; with no subscriber, publishing costs a
//! check of the receiver count and nothing is built. A subscriber that falls
//! behind loses the oldest events (and is told how many): announcements are
//! best effort by design, because the database, not the bus, holds the
//! readings and presence, and ingest must never wait for an integration.
//! (Command status changes have their own broadcast in `commands`.)

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::ReadingRow;

/// Events buffered per subscriber before the oldest are dropped.
const PRESENCE_BUFFER: usize = 4096;
/// Telemetry frames buffered per subscriber before the oldest are dropped.
const TELEMETRY_BUFFER: usize = 8192;

/// A device came online or went offline on this hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// The device's public id.
    pub device_id: String,
    /// Online (a session opened) or offline (the current session closed).
    pub online: bool,
    /// The device's session counter of that session: a consumer keeps the
    /// event with the highest counter, so a late offline of an older
    /// session never hides a newer connection.
    pub session_counter: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// Names a connection attaches to its frames, so announcements can say
/// which device and sensor a reading belongs to.
#[derive(Debug)]
pub struct DeviceLabel {
    /// The device's public id.
    pub id: String,
    /// Declared sensors, sorted by id: (id, name, unit).
    pub sensors: Vec<(u16, String, String)>,
}

impl DeviceLabel {
    /// The declared name and unit of sensor `id`.
    pub fn sensor(&self, id: u16) -> Option<(&str, &str)> {
        self.sensors
            .binary_search_by_key(&id, |s| s.0)
            .ok()
            .map(|i| (self.sensors[i].1.as_str(), self.sensors[i].2.as_str()))
    }
}

/// A telemetry frame, durably stored.
#[derive(Debug)]
pub struct TelemetryEvent {
    /// Who sent it.
    pub device: Arc<DeviceLabel>,
    /// Its sequence number.
    pub seq: u64,
    /// Its readings.
    pub readings: Vec<ReadingRow>,
}

/// The hub's announcement channels; cheap to clone.
#[derive(Clone)]
pub struct HubEvents {
    presence: broadcast::Sender<PresenceEvent>,
    telemetry: broadcast::Sender<Arc<TelemetryEvent>>,
}

impl Default for HubEvents {
    fn default() -> Self {
        HubEvents {
            presence: broadcast::channel(PRESENCE_BUFFER).0,
            telemetry: broadcast::channel(TELEMETRY_BUFFER).0,
        }
    }
}

impl HubEvents {
    /// Presence changes from now on.
    pub fn subscribe_presence(&self) -> broadcast::Receiver<PresenceEvent> {
        self.presence.subscribe()
    }

    /// Stored telemetry frames from now on.
    pub fn subscribe_telemetry(&self) -> broadcast::Receiver<Arc<TelemetryEvent>> {
        self.telemetry.subscribe()
    }

    /// Announces a presence change.
    pub fn presence(&self, event: PresenceEvent) {
        let _ = self.presence.send(event);
    }

    /// True when someone listens for telemetry (build events only then).
    pub fn wants_telemetry(&self) -> bool {
        self.telemetry.receiver_count() > 0
    }

    /// Announces a stored telemetry frame.
    pub fn telemetry(&self, event: Arc<TelemetryEvent>) {
        let _ = self.telemetry.send(event);
    }
}
