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

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::mqtt::MqttStatus;
use crate::state::AppState;

/// Longest a readiness probe waits for the database.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The health routes, at the root (not under `/api/v1`).
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Liveness: `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// Readiness, with each check's state.
#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `unavailable`.
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    /// `database`: `ok` or `unreachable`; `mqtt` (when configured): `ok` or
    /// `disconnected`.
    #[schema(value_type = BTreeMap<String, String>)]
    checks: BTreeMap<&'static str, &'static str>,
}

/// Liveness: 200 while the process serves HTTP, whatever the database does.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 when the database (and the MQTT bridge, if configured)
/// answers; 503 naming the failing check otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness),
    )
)]
async fn readyz(
    State(state): State<AppState>,
    mqtt: Option<Extension<MqttStatus>>,
) -> (StatusCode, Json<Readiness>) {
    let database = match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s",
            DATABASE_PROBE_TIMEOUT.as_secs()
        )),
    };
    let mut checks = BTreeMap::new();
    let mut ready = true;
    match database {
        Ok(()) => {
            checks.insert("database", "ok");
        }
        Err(reason) => {
            tracing::warn!(%reason, "readiness: database check failed");
            checks.insert("database", "unreachable");
            ready = false;
        }
    }
    if let Some(Extension(mqtt)) = mqtt {
        if mqtt.is_ready() {
            checks.insert("mqtt", "ok");
        } else {
            tracing::warn!("readiness: MQTT bridge not connected");
            checks.insert("mqtt", "disconnected");
            ready = false;
        }
    }
    if ready {
        (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                checks,
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "unavailable",
                checks,
            }),
        )
    }
}
