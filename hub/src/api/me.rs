//! `GET /api/v1/me`: who the presented API key is, so a client (the
//! console) can show the caller's role and hide what it may not do. Any
//! valid key may ask; the answer holds no secret.

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::RequireViewer;
use crate::state::AppState;

/// Routes of this resource, relative to `/api/v1`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// Answer to `GET /api/v1/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    /// The key's role: `viewer`, `operator` or `admin`.
    #[schema(example = "operator")]
    pub role: String,
    /// The key's public id.
    pub key_id: String,
    /// The key's name (null if it has none).
    pub name: Option<String>,
}

/// The role, id and name of the API key this request presented. Role: viewer.
#[utoipa::path(
    get,
    path = "/me",
    tag = "api-keys",
    extensions(("x-required-role" = json!("viewer"))),
    responses(
        (status = 200, description = "The caller's key", body = Me),
        (status = 401, description = "No valid API key", body = ErrorBody),
    )
)]
async fn me(viewer: RequireViewer) -> Json<Me> {
    let key = viewer.key;
    Json(Me {
        role: key.role.as_str().to_owned(),
        key_id: key.id,
        name: Some(key.name).filter(|name| !name.is_empty()),
    })
}
