//! Operator roles on the HTTP API, on every backend: each endpoint allowed or
//! refused (403 `forbidden`) for each role as the matrix says, the matrix
//! matching the OpenAPI document's `x-required-role`; API keys managed over
//! the API (secret shown once, revoked keys refused at once); `last_used`.
//!
//! The router is driven with `oneshot` (no socket); the key check, the role
//! check and the handlers are the same as over a socket.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::db::{Backend, TestDatabase, fresh_database};
use http_body_util::BodyExt;
use hub::state::AppState;
use hub::store::{Role, Store};
use serde_json::{Value as Json, json};
use tower::ServiceExt;

/// Every `/api/v1` operation that takes a key, with the least role it needs.
/// `{id}` is a fresh device per call (a fresh API key under `/api-keys`).
const MATRIX: &[(&str, &str, Role)] = &[
    ("GET", "/api/v1/devices", Role::Viewer),
    ("POST", "/api/v1/devices", Role::Admin),
    ("GET", "/api/v1/devices/{id}", Role::Viewer),
    ("DELETE", "/api/v1/devices/{id}", Role::Admin),
    ("POST", "/api/v1/devices/{id}/rotate-token", Role::Admin),
    ("GET", "/api/v1/devices/{id}/latest", Role::Viewer),
    (
        "GET",
        "/api/v1/devices/{id}/sensors/{sensor}/readings",
        Role::Viewer,
    ),
    ("GET", "/api/v1/devices/{id}/commands", Role::Viewer),
    ("POST", "/api/v1/devices/{id}/commands", Role::Operator),
    (
        "GET",
        "/api/v1/devices/{id}/commands/{command_id}",
        Role::Viewer,
    ),
    ("GET", "/api/v1/status", Role::Viewer),
    ("GET", "/api/v1/me", Role::Viewer),
    ("GET", "/api/v1/api-keys", Role::Admin),
    ("POST", "/api/v1/api-keys", Role::Admin),
    ("DELETE", "/api/v1/api-keys/{id}", Role::Admin),
    ("GET", "/api/v1/audit", Role::Admin),
];

struct TestApi {
    _db: TestDatabase,
    state: AppState,
    router: Router,
}

async fn setup(backend: Backend) -> TestApi {
    let db = fresh_database(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let state = common::router_state(store, &db.url, "roles-test");
    let router = hub::api::router(state.clone());
    TestApi {
        _db: db,
        state,
        router,
    }
}

impl TestApi {
    async fn key(&self, role: Role) -> String {
        self.state
            .store
            .create_api_key_with_role(&format!("{role}-key"), role)
            .await
            .unwrap()
            .key
    }

    async fn call(
        &self,
        key: &str,
        method: &str,
        uri: &str,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
        (status, body)
    }

    /// The template with fresh targets, and a body for the writes.
    async fn fill(&self, method: &str, template: &str) -> (String, Option<Json>) {
        let mut path = template.to_owned();
        if path.starts_with("/api/v1/api-keys/") {
            let key = self.state.store.create_api_key("target").await.unwrap();
            path = path.replace("{id}", &key.id);
        } else if path.contains("{id}") {
            let device = self.state.store.create_device("target").await.unwrap();
            path = path.replace("{id}", &device.id);
        }
        let path = path
            .replace("{sensor}", "temperature")
            .replace("{command_id}", "1");
        let body = match (method, template) {
            ("POST", "/api/v1/devices") => Some(json!({"name": "made"})),
            ("POST", "/api/v1/api-keys") => Some(json!({"name": "made", "role": "viewer"})),
            ("POST", "/api/v1/devices/{id}/commands") => {
                Some(json!({"actuator": "relay", "value": true}))
            }
            _ => None,
        };
        (path, body)
    }
}

backend_test!(
    each_role_is_allowed_or_refused_as_the_matrix_says,
    |backend| async move {
        let api = setup(backend).await;
        for role in Role::ALL {
            let key = api.key(role).await;
            for &(method, template, needed) in MATRIX {
                let (path, body) = api.fill(method, template).await;
                let (status, reply) = api.call(&key, method, &path, body).await;
                if role >= needed {
                    assert!(
                        status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                        "{role} may {method} {template}: got {status} {reply}"
                    );
                    assert!(
                        status.as_u16() < 500,
                        "{method} {template}: {status} {reply}"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{role} may not {method} {template}: {reply}"
                    );
                    assert_eq!(reply["error"]["code"], "forbidden");
                    assert_eq!(
                        reply["error"]["message"],
                        format!("this needs the {needed} role; the key has {role}")
                    );
                }
            }
        }
    }
);

#[test]
fn the_matrix_is_the_documented_one() {
    let doc = serde_json::to_value(hub::api::openapi()).unwrap();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let role = op["x-required-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} names its role"));
            let description = op["description"].as_str().unwrap_or_default();
            let summary = op["summary"].as_str().unwrap_or_default();
            assert!(
                format!("{summary} {description}").contains(&format!("Role: {role}.")),
                "{method} {path} says its role in the description"
            );
            if role != "viewer" {
                assert!(op["responses"].get("403").is_some(), "{method} {path}: 403");
            }
            documented.push((method.to_uppercase(), path.clone(), role.to_owned()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String, String)> = MATRIX
        .iter()
        .map(|(m, p, r)| ((*m).to_owned(), (*p).to_owned(), r.as_str().to_owned()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);
}

backend_test!(
    a_key_below_the_role_is_refused_before_its_body_is_read,
    |backend| async move {
        let api = setup(backend).await;
        let viewer = api.key(Role::Viewer).await;
        let id = api.state.store.create_device("d").await.unwrap().id;
        // Not even JSON: still 403, not 400, so a low key learns nothing from validation.
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/devices/{id}/commands"))
            .header(header::AUTHORIZATION, format!("Bearer {viewer}"))
            .header(header::CONTENT_TYPE, "application/json");
        let response = api
            .router
            .clone()
            .oneshot(request.body(Body::from("{not json")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        // No key at all is still 401, before any role is considered.
        let response = api
            .router
            .clone()
            .oneshot(
                Request::builder()
                    .method(Method::GET)
                    .uri("/api/v1/audit")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
);

backend_test!(api_keys_are_managed_over_the_api, |backend| async move {
    let api = setup(backend).await;
    let admin = api.key(Role::Admin).await;

    // Created with a role; the key is shown once.
    let (status, created) = api
        .call(
            &admin,
            "POST",
            "/api/v1/api-keys",
            Some(json!({"name": "grafana", "role": "operator"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["role"], "operator");
    assert_eq!(created["name"], "grafana");
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("{id}.")));

    // The role is required and checked; the name too.
    for (body, field) in [
        (json!({"name": "x"}), "role"),
        (json!({"name": "x", "role": "root"}), "role"),
        (json!({"role": "viewer"}), "name"),
        (json!({"name": " ", "role": "viewer"}), "name"),
    ] {
        let (status, reply) = api
            .call(&admin, "POST", "/api/v1/api-keys", Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        assert_eq!(reply["error"]["field"], field);
    }

    // The new key works with its role: commands yes, keys no.
    let (status, _) = api.call(&key, "GET", "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.call(&key, "GET", "/api/v1/api-keys", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Listed without secrets, with role and last use.
    let (status, listed) = api.call(&admin, "GET", "/api/v1/api-keys", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!listed.to_string().contains(key.split('.').nth(1).unwrap()));
    let entry = listed["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["role"], "operator");
    assert_eq!(entry["revoked"], false);
    assert!(entry["last_used_at"].is_string(), "used once: {entry}");
    assert!(entry["created_at"].is_string());

    // Revoked: refused at once.
    let (status, _) = api
        .call(&admin, "DELETE", &format!("/api/v1/api-keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, reply) = api.call(&key, "GET", "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    let (status, _) = api
        .call(&admin, "DELETE", "/api/v1/api-keys/ffffffffffffffff", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = api.call(&admin, "GET", "/api/v1/api-keys", None).await;
    let entry = listed["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["revoked"], true);
    assert!(entry["revoked_at"].is_string());
});

backend_test!(
    last_used_is_set_on_use_at_most_once_a_minute,
    |backend| async move {
        let api = setup(backend).await;
        let created = api
            .state
            .store
            .create_api_key_with_role("reader", Role::Viewer)
            .await
            .unwrap();
        let stored = |api: &TestApi, id: String| {
            let store = api.state.store.clone();
            async move {
                store
                    .list_api_keys()
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|k| k.id == id)
                    .unwrap()
            }
        };
        let before = stored(&api, created.id.clone()).await;
        assert_eq!(before.last_used_at_ms, None);
        assert_eq!(before.role, Role::Viewer);
        let (status, _) = api.call(&created.key, "GET", "/api/v1/devices", None).await;
        assert_eq!(status, StatusCode::OK);
        let first = stored(&api, created.id.clone()).await.last_used_at_ms;
        assert!(first.is_some(), "set after use");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (status, _) = api.call(&created.key, "GET", "/api/v1/devices", None).await;
        assert_eq!(status, StatusCode::OK);
        let second = stored(&api, created.id.clone()).await.last_used_at_ms;
        assert_eq!(first, second, "not rewritten within the minute");
    }
);

backend_test!(
    existing_keys_and_the_default_are_admin,
    |backend| async move {
        let api = setup(backend).await;
        // `create_api_key` (what tests, scripts and keys made before roles use) is admin.
        let key = api.state.store.create_api_key("legacy").await.unwrap();
        assert_eq!(key.role, Role::Admin);
        let (status, _) = api.call(&key.key, "GET", "/api/v1/audit", None).await;
        assert_eq!(status, StatusCode::OK);
    }
);
