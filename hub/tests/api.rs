//! The HTTP API driven through `tower::ServiceExt::oneshot`, on every
//! backend (each test runs on a fresh SQLite file and a fresh Postgres
//! database): authentication, the device lifecycle, errors, paging and the
//! telemetry reads; plus, on Postgres only, 503 while the server is down.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use common::db::{Backend, PrivateCluster, TestDatabase, fresh_database, skip_postgres};
use http_body_util::BodyExt;
use hub::registry::CloseReason;
use hub::state::AppState;
use hub::store::{ReadingRow, SensorInfo, Store};
use schema::{Value, ValueKind};
use serde_json::{Value as Json, json};
use tower::ServiceExt;

struct TestApi {
    _db: TestDatabase,
    state: AppState,
    router: Router,
    key: String,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Json,
}

async fn setup(backend: Backend) -> TestApi {
    setup_on(fresh_database(backend).await).await
}

async fn setup_on(db: TestDatabase) -> TestApi {
    let url = db.url.clone();
    let store = Store::open(&url).await.expect("open store");
    let key = store.create_api_key("tests").await.expect("api key").key;
    let state = common::router_state(store, &url, "api-test");
    let router = hub::api::router(state.clone());
    TestApi {
        _db: db,
        state,
        router,
        key,
    }
}

impl TestApi {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                panic!("not JSON ({err}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request with this test's API key.
    async fn call(&self, method: Method, uri: &str, body: Option<Json>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key));
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).expect("request")).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    /// Creates a device through the API; returns (id, token, pk).
    async fn create_device(&self, name: &str) -> (String, String, i64) {
        let reply = self
            .call(Method::POST, "/api/v1/devices", Some(json!({"name": name})))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let id = reply.body["id"].as_str().expect("id").to_owned();
        let token = reply.body["token"].as_str().expect("token").to_owned();
        let pk = self
            .state
            .store
            .get_device(&id)
            .await
            .expect("get")
            .expect("created")
            .pk;
        (id, token, pk)
    }
}

fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "{}", reply.body);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        reply.body
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

backend_test!(healthz_needs_no_key, |backend| async move {
    let api = setup(backend).await;
    let reply = api
        .send(
            Request::get("/healthz")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"status": "ok"}));
});

backend_test!(
    requests_without_a_valid_key_are_unauthorized,
    |backend| async move {
        let api = setup(backend).await;
        let revoked = api.state.store.create_api_key("old").await.expect("key");
        api.state
            .store
            .revoke_api_key(&revoked.id)
            .await
            .expect("revoke");
        let secret = api.key.split_once('.').expect("dot").1;
        let unknown = format!("Bearer 0000000000000000.{secret}");
        let other = api.state.store.create_api_key("other").await.expect("key");
        let wrong_secret = format!("Bearer {}.{}", other.id, secret);
        let revoked = format!("Bearer {}", revoked.key);
        let basic = format!("Basic {}", api.key);
        let bare = api.key.clone();
        let headers: [Option<&str>; 7] = [
            None,
            Some("Bearer"),
            Some("Bearer not-a-key"),
            Some(&unknown),
            Some(&wrong_secret),
            Some(&revoked),
            Some(&basic),
        ];
        for header_value in headers.into_iter().chain([Some(bare.as_str())]) {
            for (method, uri) in [
                (Method::GET, "/api/v1/devices"),
                (Method::POST, "/api/v1/devices"),
                (Method::GET, "/api/v1/devices/0123456789abcdef"),
                (Method::DELETE, "/api/v1/devices/0123456789abcdef"),
                (Method::GET, "/api/v1/devices/0123456789abcdef/latest"),
                (
                    Method::GET,
                    "/api/v1/devices/0123456789abcdef/sensors/1/readings",
                ),
            ] {
                let mut request = Request::builder().method(method.clone()).uri(uri);
                if let Some(value) = header_value {
                    request = request.header(header::AUTHORIZATION, value);
                }
                let reply = api
                    .send(request.body(Body::empty()).expect("request"))
                    .await;
                assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
                assert_eq!(
                    reply
                        .headers
                        .get(header::WWW_AUTHENTICATE)
                        .map(|v| v.as_bytes()),
                    Some(&b"Bearer"[..]),
                    "{method} {uri} with {header_value:?}"
                );
            }
        }
        // Nothing was created by the refused POSTs.
        assert!(
            api.get("/api/v1/devices").await.body["devices"]
                .as_array()
                .expect("list")
                .is_empty()
        );
    }
);

backend_test!(
    device_lifecycle_create_list_get_revoke,
    |backend| async move {
        let api = setup(backend).await;
        let reply = api
            .call(
                Method::POST,
                "/api/v1/devices",
                Some(json!({"name": "boiler"})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let id = reply.body["id"].as_str().expect("id").to_owned();
        let token = reply.body["token"].as_str().expect("token").to_owned();
        assert_eq!(reply.body["name"], "boiler");
        assert!(token.starts_with(&format!("{id}.")));
        let created_at = reply.body["created_at"].as_str().expect("created_at");
        assert!(
            created_at.ends_with('Z') && created_at.len() == 24,
            "{created_at}"
        );
        assert_eq!(
            reply.headers.get(header::LOCATION).map(|v| v.as_bytes()),
            Some(format!("/api/v1/devices/{id}").as_bytes())
        );
        let identity = api
            .state
            .store
            .authenticate_device(&token)
            .await
            .expect("auth")
            .expect("the returned token works");

        let list = api.get("/api/v1/devices").await;
        assert_eq!(list.status, StatusCode::OK);
        assert_eq!(
            list.body,
            json!({
                "devices": [{
                    "id": id,
                    "name": "boiler",
                    "online": false,
                    "hub_instance": null,
                    "last_seen": null,
                    "created_at": created_at,
                    "revoked": false,
                    "firmware": null,
                }],
                "next": null,
            })
        );
        assert!(
            !list.body.to_string().contains(&token),
            "the token is shown once"
        );

        api.state
            .store
            .record_hello(
                identity.pk,
                "fw-1.2",
                &[SensorInfo {
                    id: 1,
                    name: "temperature".into(),
                    unit: "°C".into(),
                    kind: ValueKind::Float,
                }],
                &[hub::store::ActuatorInfo {
                    id: 4,
                    name: "relay".into(),
                    kind: ValueKind::Bool,
                }],
            )
            .await
            .expect("hello");
        let detail = api.get(&format!("/api/v1/devices/{id}")).await;
        assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
        assert_eq!(detail.body["firmware"], "fw-1.2");
        assert_eq!(detail.body["last_seq"], 0);
        assert_eq!(detail.body["revoked_at"], Json::Null);
        assert_eq!(
            detail.body["sensors"],
            json!([{"id": 1, "name": "temperature", "unit": "°C", "kind": "float"}])
        );
        assert_eq!(
            detail.body["actuators"],
            json!([{"id": 4, "name": "relay", "kind": "bool"}])
        );

        // A live session on this hub, as the gateway would register it.
        let mut registration = api.state.sessions.register(identity.pk, &id, now_ms());
        let reply = api
            .call(Method::DELETE, &format!("/api/v1/devices/{id}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(reply.body, Json::Null);
        assert_eq!(registration.close.try_recv(), Ok(CloseReason::Revoked));
        assert!(!api.state.sessions.is_online(identity.pk));
        assert!(
            api.state
                .store
                .authenticate_device(&token)
                .await
                .expect("auth")
                .is_none()
        );

        let detail = api.get(&format!("/api/v1/devices/{id}")).await;
        assert_eq!(detail.body["revoked"], true);
        assert!(detail.body["revoked_at"].is_string());
        let list = api.get("/api/v1/devices").await;
        assert_eq!(list.body["devices"][0]["revoked"], true);
    }
);

backend_test!(
    unknown_devices_sensors_and_paths_are_404,
    |backend| async move {
        let api = setup(backend).await;
        let (id, _, _) = api.create_device("d").await;
        for (method, uri) in [
            (Method::GET, "/api/v1/devices/0123456789abcdef".to_owned()),
            (Method::GET, "/api/v1/devices/not-even-an-id".to_owned()),
            (
                Method::DELETE,
                "/api/v1/devices/0123456789abcdef".to_owned(),
            ),
            (
                Method::GET,
                "/api/v1/devices/0123456789abcdef/latest".to_owned(),
            ),
            (
                Method::GET,
                "/api/v1/devices/0123456789abcdef/sensors/1/readings".to_owned(),
            ),
            (
                Method::GET,
                format!("/api/v1/devices/{id}/sensors/1/readings"),
            ),
            (
                Method::GET,
                format!("/api/v1/devices/{id}/sensors/temp/readings"),
            ),
            (Method::GET, "/api/v1/nothing-here".to_owned()),
        ] {
            let reply = api.call(method.clone(), &uri, None).await;
            assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
        }
        let reply = api.call(Method::PUT, "/api/v1/devices", None).await;
        assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
);

backend_test!(
    bad_bodies_are_400_and_bad_values_422,
    |backend| async move {
        let api = setup(backend).await;
        let raw = |body: &str, content_type: Option<&str>| {
            let mut request = Request::post("/api/v1/devices")
                .header(header::AUTHORIZATION, format!("Bearer {}", api.key));
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            request.body(Body::from(body.to_owned())).expect("request")
        };
        for body in ["{", "{\"name\": \"x\"", "not json", "", "{} {}"] {
            let reply = api.send(raw(body, Some("application/json"))).await;
            assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
        }
        let reply = api.send(raw("{\"name\":\"x\"}", None)).await;
        assert_error(
            &reply,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );

        for (body, field) in [
            (json!({}), "name"),
            (json!({"name": null}), "name"),
            (json!({"name": 42}), "name"),
            (json!({"name": ""}), "name"),
            (json!({"name": "   "}), "name"),
            (json!({"name": "x".repeat(65)}), "name"),
            (json!({"name": "line\nbreak"}), "name"),
            (json!(["boiler"]), "body"),
        ] {
            let reply = api
                .call(Method::POST, "/api/v1/devices", Some(body.clone()))
                .await;
            assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
            assert_eq!(reply.body["error"]["field"], field, "{body}");
            assert!(
                reply.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("{field}: "))),
                "{}",
                reply.body
            );
        }
        // 64 characters (not bytes) is fine.
        let reply = api
            .call(
                Method::POST,
                "/api/v1/devices",
                Some(json!({"name": "é".repeat(64)})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
);

backend_test!(
    bad_query_parameters_are_400_naming_them,
    |backend| async move {
        let api = setup(backend).await;
        let (id, _, pk) = api.create_device("d").await;
        api.state
            .store
            .record_hello(
                pk,
                "fw",
                &[SensorInfo {
                    id: 1,
                    name: "t".into(),
                    unit: String::new(),
                    kind: ValueKind::Float,
                }],
                &[],
            )
            .await
            .expect("hello");
        let readings = format!("/api/v1/devices/{id}/sensors/1/readings");
        for (uri, field) in [
            ("/api/v1/devices?limit=0".to_owned(), "limit"),
            ("/api/v1/devices?limit=1001".to_owned(), "limit"),
            ("/api/v1/devices?limit=ten".to_owned(), "limit"),
            ("/api/v1/devices?online=maybe".to_owned(), "online"),
            ("/api/v1/devices?after=0123456789abcdef".to_owned(), "after"),
            ("/api/v1/devices?after=junk".to_owned(), "after"),
            (format!("{readings}?from=yesterday"), "from"),
            (format!("{readings}?to=2024-02-30T00:00:00Z"), "to"),
            (
                format!("{readings}?from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z"),
                "from",
            ),
            (format!("{readings}?limit=10001"), "limit"),
            (format!("{readings}?after=abc"), "after"),
            // The document says integer: empty is not "no cursor".
            (format!("{readings}?after="), "after"),
        ] {
            let reply = api.get(&uri).await;
            assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
            assert_eq!(reply.body["error"]["field"], field, "{uri}: {}", reply.body);
        }
    }
);

backend_test!(
    paging_walks_every_device_exactly_once,
    |backend| async move {
        let api = setup(backend).await;
        let mut ids = Vec::new();
        for i in 0..23 {
            let name = if i % 4 == 0 {
                format!("Pump {i}")
            } else {
                format!("valve {i}")
            };
            ids.push(api.create_device(&name).await.0);
        }
        let mut seen = Vec::new();
        let mut uri = "/api/v1/devices?limit=5".to_owned();
        let mut pages = 0;
        loop {
            let reply = api.get(&uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            let devices = reply.body["devices"].as_array().expect("devices");
            assert!(devices.len() <= 5);
            seen.extend(
                devices
                    .iter()
                    .map(|d| d["id"].as_str().expect("id").to_owned()),
            );
            pages += 1;
            match reply.body["next"].as_str() {
                Some(next) => uri = format!("/api/v1/devices?limit=5&after={next}"),
                None => break,
            }
        }
        assert_eq!(pages, 5);
        assert_eq!(seen, ids);

        let pumps = api.get("/api/v1/devices?q=pump").await;
        let names: Vec<&str> = pumps.body["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["name"].as_str().expect("name"))
            .collect();
        assert_eq!(
            names,
            [
                "Pump 0", "Pump 4", "Pump 8", "Pump 12", "Pump 16", "Pump 20"
            ]
        );

        // Online: in the database (another hub's session)...
        let pk3 = api
            .state
            .store
            .get_device(&ids[3])
            .await
            .expect("get")
            .expect("3")
            .pk;
        api.state
            .store
            .session_opened(pk3, 1_000, "test-hub", &[])
            .await
            .expect("online");
        let online = api.get("/api/v1/devices?online=true").await;
        let online_ids: Vec<&str> = online.body["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["id"].as_str().expect("id"))
            .collect();
        assert_eq!(online_ids, [ids[3].as_str()]);
        let offline = api.get("/api/v1/devices?online=false&limit=1000").await;
        assert_eq!(
            offline.body["devices"].as_array().expect("devices").len(),
            22
        );
    }
);

backend_test!(presence_merges_the_live_registry, |backend| async move {
    let api = setup(backend).await;
    let (id, _, pk) = api.create_device("d").await;
    api.state
        .store
        .touch_last_seen(&[(pk, 1_000)])
        .await
        .expect("touch");
    let list = api.get("/api/v1/devices").await;
    assert_eq!(
        list.body["devices"][0]["last_seen"],
        "1970-01-01T00:00:01.000Z"
    );
    assert_eq!(list.body["devices"][0]["online"], false);

    // Connected here, with a fresher clock than the last flush.
    let registration = api.state.sessions.register(pk, &id, 5_000);
    registration.last_seen.store(7_250, Ordering::Relaxed);
    let detail = api.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(detail.body["online"], true);
    assert_eq!(detail.body["last_seen"], "1970-01-01T00:00:07.250Z");

    // The database wins when it is fresher (written by another hub).
    api.state
        .store
        .touch_last_seen(&[(pk, 9_000)])
        .await
        .expect("touch");
    let detail = api.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(detail.body["last_seen"], "1970-01-01T00:00:09.000Z");
});

backend_test!(
    latest_and_readings_over_a_range_with_paging,
    |backend| async move {
        let api = setup(backend).await;
        let (id, _, pk) = api.create_device("weather").await;
        let sensor = |id, name: &str, unit: &str, kind| SensorInfo {
            id,
            name: name.into(),
            unit: unit.into(),
            kind,
        };
        api.state
            .store
            .record_hello(
                pk,
                "fw",
                &[
                    sensor(1, "temperature", "°C", ValueKind::Float),
                    sensor(2, "count", "", ValueKind::Int),
                    sensor(3, "door", "", ValueKind::Bool),
                    sensor(4, "idle", "", ValueKind::Float),
                ],
                &[],
            )
            .await
            .expect("hello");
        // 25 temperatures one second apart ending 10 s ago, so inside the default hour.
        let end = now_ms() - 10_000;
        let start = end - 24_000;
        let mut rows: Vec<ReadingRow> = (0..25)
            .map(|i| ReadingRow {
                device_pk: pk,
                sensor: 1,
                time_ms: start + i * 1_000,
                value: Value::Float(20.0 + i as f64 / 4.0),
            })
            .collect();
        rows.push(ReadingRow {
            device_pk: pk,
            sensor: 2,
            time_ms: start,
            value: Value::Int(-3),
        });
        rows.push(ReadingRow {
            device_pk: pk,
            sensor: 3,
            time_ms: start + 500,
            value: Value::Bool(true),
        });
        api.state
            .store
            .write_batch(&rows, &[(pk, 9)])
            .await
            .expect("write");

        let latest = api.get(&format!("/api/v1/devices/{id}/latest")).await;
        assert_eq!(latest.status, StatusCode::OK, "{}", latest.body);
        assert_eq!(latest.body["device"], id.as_str());
        let sensors = latest.body["sensors"].as_array().expect("sensors");
        assert_eq!(sensors.len(), 4);
        assert_eq!(sensors[0]["name"], "temperature");
        assert_eq!(sensors[0]["unit"], "°C");
        assert_eq!(sensors[0]["kind"], "float");
        assert_eq!(sensors[0]["value"], 26.0);
        assert_eq!(sensors[0]["time_ms"], end);
        assert_eq!(sensors[0]["time"], hub::api::time::format_ms(end));
        assert_eq!(sensors[1]["value"], -3);
        assert_eq!(sensors[2]["value"], true);
        assert_eq!(sensors[3]["value"], Json::Null);
        assert_eq!(sensors[3]["time"], Json::Null);
        assert_eq!(sensors[3]["time_ms"], Json::Null);

        // The default range (the last hour) with pages of 10, by sensor id.
        let base = format!("/api/v1/devices/{id}/sensors/1/readings");
        let mut uri = format!("{base}?limit=10");
        let mut times = Vec::new();
        let mut pages = 0;
        loop {
            let reply = api.get(&uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            for reading in reply.body["readings"].as_array().expect("readings") {
                let time_ms = reading["time_ms"].as_i64().expect("time_ms");
                assert_eq!(reading["time"], hub::api::time::format_ms(time_ms));
                assert!(reading["value"].is_f64());
                times.push(time_ms);
            }
            pages += 1;
            match reply.body["next"].as_str() {
                Some(next) => uri = format!("{base}?limit=10&after={next}"),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(
            times,
            (0..25).map(|i| start + i * 1_000).collect::<Vec<_>>()
        );

        // An explicit range, by sensor name, with an offset in the times.
        let from = hub::api::time::format_ms(start + 5_000).replace('Z', "+00:00");
        let to = hub::api::time::format_ms(start + 7_000);
        let reply = api
            .get(&format!(
                "/api/v1/devices/{id}/sensors/temperature/readings?from={}&to={to}",
                from.replace('+', "%2B")
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let values: Vec<f64> = reply.body["readings"]
            .as_array()
            .expect("readings")
            .iter()
            .map(|r| r["value"].as_f64().expect("float"))
            .collect();
        assert_eq!(values, [21.25, 21.5, 21.75]);
        assert_eq!(reply.body["next"], Json::Null);

        // A range before any reading is empty, not an error.
        let reply = api
            .get(&format!(
                "{base}?from=2001-01-01T00:00:00Z&to=2001-01-02T00:00:00Z"
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"readings": [], "next": null}));
    }
);

backend_test!(
    duplicates_are_ignored_and_last_seq_only_rises,
    |backend| async move {
        let api = setup(backend).await;
        let (id, _, pk) = api.create_device("d").await;
        let rows: Vec<ReadingRow> = (0..10)
            .map(|i| ReadingRow {
                device_pk: pk,
                sensor: 1,
                time_ms: 1_000 + i,
                value: Value::Int(i),
            })
            .collect();
        api.state
            .store
            .write_batch(&rows, &[(pk, 5)])
            .await
            .expect("write");
        // The device resends after a reconnect: the same readings, an older seq.
        api.state
            .store
            .write_batch(&rows, &[(pk, 4)])
            .await
            .expect("resend");
        assert_eq!(api.state.store.count_readings().await.expect("count"), 10);
        let detail = api.get(&format!("/api/v1/devices/{id}")).await;
        assert_eq!(detail.body["last_seq"], 5);

        api.state
            .store
            .write_batch(&rows[..1], &[(pk, 8)])
            .await
            .expect("newer");
        let detail = api.get(&format!("/api/v1/devices/{id}")).await;
        assert_eq!(detail.body["last_seq"], 8);
        assert_eq!(api.state.store.count_readings().await.expect("count"), 10);
    }
);

/// Postgres only: while the server is down the API answers 503 with
/// Retry-After (never hangs, never 500), and serves again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_503_and_the_api_recovers() {
    if skip_postgres() {
        eprintln!("skipped: HUB_TEST_SKIP_POSTGRES=1");
        return;
    }
    let cluster = PrivateCluster::start();
    let url = cluster.create_database("api_outage").await;
    let api = setup_on(TestDatabase::external(url, Backend::Postgres)).await;
    let (id, _, _) = api.create_device("d").await;

    cluster.stop();
    for uri in [
        "/api/v1/devices".to_owned(),
        format!("/api/v1/devices/{id}"),
    ] {
        let started = std::time::Instant::now();
        let reply = api.get(&uri).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(
            reply.headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{uri} took {:?}",
            started.elapsed()
        );
    }

    cluster.resume();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = api.get(&format!("/api/v1/devices/{id}")).await.status;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK, "the API recovered");
}
