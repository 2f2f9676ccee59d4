//! `GET /healthz` and `GET /readyz`, for load balancers and orchestrators; no auth.
//!
//! Liveness (`/healthz`) only says the process serves HTTP: it stays 200
//! while the database is down, so an orchestrator does not restart a hub
//! that is waiting for its database (and holding devices' connections).
//! Readiness (`/readyz`) says whether the hub can do its job now: 503 with
//! the failing check named while the database does not answer, so a load
//! balancer sends new devices elsewhere. When the MQTT bridge is configured,
//! an `mqtt` check says whether it is connected and subscribed (the server
//! adds the bridge's [`MqttStatus`] as a request extension; without it, as in
//! router tests or with MQTT off, there is no `mqtt` check).

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::mqtt::MqttStatus;
use crate::state::AppState;

/// Longest a readiness probe waits for the database.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The health routes, at the root (not under `/api/v1`).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(
    State(state): State<AppState>,
    mqtt: Option<Extension<MqttStatus>>,
) -> (StatusCode, Json<Value>) {
    let database = match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s",
            DATABASE_PROBE_TIMEOUT.as_secs()
        )),
    };
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    match database {
        Ok(()) => {
            checks.insert("database".into(), json!("ok"));
        }
        Err(reason) => {
            tracing::warn!(%reason, "readiness: database check failed");
            checks.insert("database".into(), json!("unreachable"));
            ready = false;
        }
    }
    if let Some(Extension(mqtt)) = mqtt {
        if mqtt.is_ready() {
            checks.insert("mqtt".into(), json!("ok"));
        } else {
            tracing::warn!("readiness: MQTT bridge not connected");
            checks.insert("mqtt".into(), json!("disconnected"));
            ready = false;
        }
    }
    if ready {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "checks": checks})),
        )
    }
}
