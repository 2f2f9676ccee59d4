//! `GET /api/v1/status`: what this hub is doing now, for people (`hub
//! status`) and scripts.
//!
//! Everything comes from memory ([`crate::metrics::Metrics`], the session
//! registry, the ingest queue, the MQTT bridge), never from the database, so
//! it answers while the database is down. Rates are computed over the last
//! few seconds from counters the rate sampler records every second; totals
//! count since this hub started. Behind an API key, like the rest of
//! `/api/v1`; the unauthenticated `/metrics` has the same numbers for
//! Prometheus.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::RequireViewer;
use super::time::format_ms;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Routes of this resource, relative to `/api/v1`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status))
}

/// Answer to `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusReport {
    /// This hub's name in a fleet (its host name, or random).
    pub instance: String,
    /// The hub's version.
    pub version: String,
    /// When this hub started (RFC 3339).
    #[schema(format = DateTime)]
    pub started_at: String,
    /// Seconds since it started.
    pub uptime_s: f64,
    /// Device connections.
    pub devices: DevicesStatus,
    /// Recent rates.
    pub rates: RatesStatus,
    /// Counters since start.
    pub totals: TotalsStatus,
    /// The ingest queue.
    pub ingest: IngestStatus,
    /// Command status changes since start, by new status (every status present).
    pub commands: BTreeMap<String, u64>,
    /// The MQTT bridge; null when it is not configured.
    pub mqtt: Option<MqttStatusReport>,
}

/// Device connections on this hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DevicesStatus {
    /// Devices with a live session (Hello accepted).
    pub connected: u64,
    /// WebSocket connections open, including ones still waiting for Hello.
    pub connections_open: i64,
}

/// Per-second rates over the recent window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RatesStatus {
    /// Seconds the rates are computed over (up to 10; less right after start).
    pub window_s: f64,
    /// Readings received.
    pub readings_per_s: f64,
    /// Telemetry frames received.
    pub frames_per_s: f64,
    /// Ack frames sent.
    pub acks_per_s: f64,
    /// Readings committed durably.
    pub stored_per_s: f64,
}

/// Counters since this hub started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TotalsStatus {
    /// Readings in accepted telemetry frames.
    pub readings_received: u64,
    /// Readings committed durably.
    pub readings_stored: u64,
    /// Telemetry frames received.
    pub frames_received: u64,
    /// Ack frames sent.
    pub acks_sent: u64,
    /// Device handshakes accepted.
    pub handshakes_accepted: u64,
    /// Device handshakes refused (unauthorized, bad protocol, unavailable).
    pub handshakes_refused: u64,
    /// Frames refused with an Error frame.
    pub rejections: u64,
    /// Database errors met.
    pub database_errors: u64,
}

/// The bounded queue between connections and batch writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IngestStatus {
    /// Telemetry frames waiting now.
    pub queue_frames: u64,
    /// Frames it holds at most; a full queue pushes back on devices.
    pub queue_capacity: u64,
}

/// The MQTT bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MqttStatusReport {
    /// Connected to the broker and subscribed to command requests.
    pub connected: bool,
    /// Messages not published since start (queue full, or too large).
    pub dropped: u64,
}

/// Builds the report from the hub's metrics.
pub fn report(metrics: &Metrics) -> StatusReport {
    let started_ms = metrics
        .started_at()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let rates = metrics.rates();
    let (queue_frames, queue_capacity) = metrics.ingest_queue();
    let (handshakes_accepted, handshakes_refused) =
        metrics
            .handshakes()
            .fold((0, 0), |(ok, refused), (outcome, n)| match outcome {
                "accepted" => (ok + n, refused),
                _ => (ok, refused + n),
            });
    let frames_received = metrics
        .frames_received()
        .find(|(kind, _)| *kind == "telemetry")
        .map_or(0, |(_, n)| n);
    StatusReport {
        instance: metrics.instance().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: format_ms(started_ms),
        uptime_s: (metrics.uptime().as_secs_f64() * 10.0).round() / 10.0,
        devices: DevicesStatus {
            connected: metrics.devices_connected() as u64,
            connections_open: metrics.connections_open.get(),
        },
        rates: RatesStatus {
            window_s: round2(rates.window_s),
            readings_per_s: round2(rates.readings_per_s),
            frames_per_s: round2(rates.frames_per_s),
            acks_per_s: round2(rates.acks_per_s),
            stored_per_s: round2(rates.stored_per_s),
        },
        totals: TotalsStatus {
            readings_received: metrics.readings_received.get(),
            readings_stored: metrics.readings_stored.get(),
            frames_received,
            acks_sent: metrics.acks_sent.get(),
            handshakes_accepted,
            handshakes_refused,
            rejections: metrics.rejections_total(),
            database_errors: metrics.database_errors_total(),
        },
        ingest: IngestStatus {
            queue_frames: queue_frames as u64,
            queue_capacity: queue_capacity as u64,
        },
        commands: metrics
            .commands_by_status()
            .map(|(status, n)| (status.to_owned(), n))
            .collect(),
        mqtt: metrics.mqtt().map(|mqtt| {
            let stats = mqtt.stats();
            MqttStatusReport {
                connected: stats.ready,
                dropped: stats.dropped_publishes,
            }
        }),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// This hub's connections, rates, queue and command counts right now.
/// Role: viewer.
#[utoipa::path(
    get,
    path = "/status",
    tag = "status",
    extensions(("x-required-role" = json!("viewer"))),
    responses(
        (status = 200, description = "The hub's status", body = StatusReport),
        (status = 401, description = "No valid API key", body = ErrorBody),
    )
)]
async fn status(_viewer: RequireViewer, State(state): State<AppState>) -> Json<StatusReport> {
    Json(report(&state.metrics))
}
