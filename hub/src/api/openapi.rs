//! The OpenAPI 3.1 document of the HTTP API, served without an API key at
//! `GET /api/v1/openapi.json`.
//!
//! Operations come from the handlers' `#[utoipa::path]` annotations, and the
//! same annotations register the routes: each resource builds a
//! `utoipa_axum` `OpenApiRouter` with `routes!(...)`, which adds the handler
//! to the axum router at the path and method its annotation names and the
//! operation to the document. So a documented route is a served route.
//! `hub/tests/openapi.rs` also calls every documented operation against the
//! real router, which covers routes added some other way.
//!
//! This file adds what every operation shares: the title, the bearer
//! scheme (required by default, waived by `security(())` on the health
//! checks and on this document), and the errors any `/api/v1` operation can
//! answer (401, 413, 415, 429, 500, 503), with the one error schema.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi, Ref, ResponseBuilder, ResponsesBuilder,
};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use crate::state::AppState;

/// Name of the bearer security scheme in the document.
const SCHEME: &str = "api_key";

/// The document's own route, relative to `/api/v1`; no API key needed.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(serve))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "iothub HTTP API",
        description = "Devices, their telemetry and commands to their actuators. \
            Everything under /api/v1 takes `Authorization: Bearer <api key>` \
            (create one with `hub apikey add NAME --role ROLE`); the health checks and this \
            document do not. Each key has a role: `viewer` reads everything, `operator` \
            also sends commands, `admin` also creates, revokes and rotates devices, \
            manages API keys and reads the audit log. Each operation names the least \
            role it needs in its description and in `x-required-role`; a key below it \
            gets 403 `forbidden`. Errors are `{\"error\": {\"code\", \"message\", \"field\"?}}`. \
            Times are RFC 3339 UTC with milliseconds. See docs/API.md."
    ),
    modifiers(&Common),
    components(schemas(ErrorBody)),
    tags(
        (name = "devices", description = "Provisioning, listing, inspecting and revoking devices"),
        (name = "readings", description = "Telemetry: newest values and time ranges"),
        (name = "commands", description = "Commands to actuators (docs/COMMANDS.md)"),
        (name = "status", description = "What this hub is doing now"),
        (name = "api-keys", description = "API keys and their roles (admin)"),
        (name = "audit", description = "Who did what: commands and admin actions (admin)"),
        (name = "health", description = "Liveness and readiness, outside /api/v1"),
        (name = "meta", description = "This document"),
    )
)]
struct Base;

/// The document for routes collected from the health router (at the root)
/// and the `/api/v1` routers.
pub(crate) fn document(root: OpenApi, v1: OpenApi) -> OpenApi {
    let mut doc = Base::openapi();
    doc.merge(root);
    let mut doc = doc.nest("/api/v1", v1);
    Common.modify(&mut doc);
    doc
}

/// The security scheme and the shared error answers.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("<key-id>.<secret>")
                    .description(Some("An API key from `hub apikey add NAME`"))
                    .build(),
            ),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            SCHEME,
            Vec::<String>::new(),
        )]);
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_common_errors(operation);
            }
        }
    }
}

/// An error answer with the error schema.
fn error(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
}

fn add_common_errors(operation: &mut Operation) {
    // An operation with its own `security` waives the API key (`security(())`).
    let public = operation.security.is_some();
    let mut extra = ResponsesBuilder::new();
    if !public {
        let mut unauthorized = error("No valid API key");
        unauthorized.headers.insert(
            "WWW-Authenticate".into(),
            HeaderBuilder::new().description(Some("`Bearer`")).build(),
        );
        let mut busy = error(
            "The database is overloaded or unreachable (`internal`), or the request ran past \
             the request timeout (`timeout`); retry shortly",
        );
        busy.headers.insert(
            "Retry-After".into(),
            HeaderBuilder::new().description(Some("Seconds")).build(),
        );
        let mut throttled =
            error("Too many failed authentications from this address (`throttled`)");
        throttled.headers.insert(
            "Retry-After".into(),
            HeaderBuilder::new().description(Some("Seconds")).build(),
        );
        extra = extra
            .response("401", unauthorized)
            .response("429", throttled)
            .response("500", error("The hub's fault (logged with the cause)"))
            .response("503", busy);
    }
    if operation.request_body.is_some() {
        extra = extra
            .response(
                "413",
                error("The body is over the size limit (`payload_too_large`)"),
            )
            .response(
                "415",
                error("The body is not declared as JSON (`unsupported_media_type`)"),
            );
    }
    for (status, response) in extra.build().responses {
        operation
            .responses
            .responses
            .entry(status)
            .or_insert(response);
    }
}

/// The document as served, built once.
static JSON: LazyLock<String> = LazyLock::new(|| {
    super::openapi()
        .to_pretty_json()
        // Serializing plain data structures cannot fail; an empty object
        // still beats a panic in a request.
        .unwrap_or_else(|_| "{}".to_owned())
});

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str())
}
