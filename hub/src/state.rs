//! The state every request handler and connection shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::commands::CommandService;
use crate::config::ServeConfig;
use crate::events::HubEvents;
use crate::gateway::connect_batch::ConnectBatcher;
use crate::ingest::IngestHandle;
use crate::metrics::Metrics;
use crate::registry::SessionRegistry;
use crate::store::Store;
use crate::throttle::AuthThrottle;

/// Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Token checks and session opens and closes, batched across devices.
    pub connects: ConnectBatcher,
    /// Live device sessions on this hub.
    pub sessions: Arc<SessionRegistry>,
    /// Validated settings.
    pub config: Arc<ServeConfig>,
    /// Queue into the batch writer.
    pub ingest: IngestHandle,
    /// Presence and telemetry announcements (the MQTT bridge listens).
    pub events: HubEvents,
    /// Accepts commands and records their lifecycle.
    pub commands: CommandService,
    /// Cancelled when the hub shuts down.
    pub shutdown: CancellationToken,
    /// Counters and gauges for `/metrics` and `/api/v1/status`.
    pub metrics: Arc<Metrics>,
    /// Failed authentications per source address (device tokens and API keys).
    pub auth_throttle: Arc<AuthThrottle>,
}
