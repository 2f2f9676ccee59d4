//! `GET /metrics`, `GET /api/v1/status` and `hub status` against a real hub:
//! a device's handshake, frames, readings and acks show in the counters,
//! refusals are counted by reason, commands by status, and the CLI prints
//! what the hub reports.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use reqwest::StatusCode;
use schema::{close, error_code};
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::Message;

/// The exposition, checked for its content type.
async fn scrape(hub: &TestHub) -> String {
    let response = reqwest::get(format!("{}/metrics", hub.http_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of one series (`name` or `name{labels}`), if exported.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|rest| {
            let number = rest.split_whitespace().next().unwrap_or(rest);
            number
                .parse()
                .unwrap_or_else(|_| panic!("{series}: bad value {rest:?}"))
        })
}

/// The value of one series; it must be exported.
fn get(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Scrapes until `series` has `want`, for counters updated just after a frame leaves.
async fn eventually_value(hub: &TestHub, series: &str, want: f64) {
    let mut last = None;
    for _ in 0..200 {
        last = value(&scrape(hub).await, series);
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} stayed {last:?}, expected {want}");
}

async fn api_get(hub: &TestHub, key: Option<&str>, path: &str) -> (StatusCode, Json) {
    let mut request = reqwest::Client::new().get(format!("{}/api/v1{path}", hub.http_url()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_streaming_device_shows_in_the_metrics() {
    let hub = TestHub::start().await;
    let before = scrape(&hub).await;
    assert_eq!(get(&before, "hub_connections_open"), 0.0);
    assert!(before.contains("hub_info{"), "{before}");

    let (_, token) = hub.add_device("d1").await;
    let (mut socket, _) = open_session(&hub, &token).await;
    send_binary(&mut socket, telemetry_frame(1, now_ms(), 5)).await;
    wait_ack(&mut socket, 1).await;
    send_binary(&mut socket, telemetry_frame(2, now_ms() + 10, 3)).await;
    wait_ack(&mut socket, 2).await;

    // The ack counter moves right after the ack is written.
    eventually_value(&hub, "hub_acks_sent_total", 2.0).await;
    let text = scrape(&hub).await;
    assert_eq!(get(&text, "hub_connections_open"), 1.0);
    assert_eq!(get(&text, "hub_devices_connected"), 1.0);
    assert_eq!(
        get(&text, "hub_handshakes_total{outcome=\"accepted\"}"),
        1.0
    );
    assert_eq!(get(&text, "hub_frames_received_total{kind=\"hello\"}"), 1.0);
    assert_eq!(
        get(&text, "hub_frames_received_total{kind=\"telemetry\"}"),
        2.0
    );
    assert_eq!(get(&text, "hub_readings_received_total"), 8.0);
    assert_eq!(get(&text, "hub_readings_stored_total"), 8.0);
    assert!(get(&text, "hub_ingest_batch_readings_count") >= 1.0);
    assert_eq!(get(&text, "hub_ingest_batch_readings_sum"), 8.0);
    assert!(get(&text, "hub_ingest_commit_seconds_count") >= 1.0);
    assert_eq!(get(&text, "hub_ingest_queue_frames"), 0.0);
    assert!(get(&text, "hub_ingest_queue_capacity_frames") >= 1.0);
    assert_eq!(get(&text, "hub_database_errors_total{op=\"commit\"}"), 0.0);
    // The connect path: one token check, one session open and the first
    // Hello's record, each a statement for this one device.
    for op in ["auth", "session_open", "hello"] {
        assert_eq!(
            get(
                &text,
                &format!("hub_connect_batch_size_count{{op=\"{op}\"}}")
            ),
            1.0,
            "{op}"
        );
        assert_eq!(
            get(&text, &format!("hub_connect_batch_size_sum{{op=\"{op}\"}}")),
            1.0,
            "{op}"
        );
    }

    socket.close(None).await.unwrap();
    eventually_value(&hub, "hub_connections_open", 0.0).await;
    eventually_value(&hub, "hub_devices_connected", 0.0).await;
}

#[tokio::test]
async fn refused_handshakes_are_counted_by_outcome() {
    let hub = TestHub::start().await;
    assert!(connect_raw(&hub, Some("0000.nope"), true).await.is_err());
    assert!(connect_raw(&hub, None, true).await.is_err());
    let (_, token) = hub.add_device("d1").await;
    assert!(connect_raw(&hub, Some(&token), false).await.is_err());

    let text = scrape(&hub).await;
    assert_eq!(
        get(&text, "hub_handshakes_total{outcome=\"unauthorized\"}"),
        2.0
    );
    assert_eq!(
        get(&text, "hub_handshakes_total{outcome=\"bad_protocol\"}"),
        1.0
    );
    assert_eq!(
        get(&text, "hub_handshakes_total{outcome=\"accepted\"}"),
        0.0
    );
    assert_eq!(get(&text, "hub_connections_open"), 0.0);
}

#[tokio::test]
async fn refused_frames_and_closes_are_counted_by_reason_and_code() {
    let hub = TestHub::start().await;
    let (_, token) = hub.add_device("d1").await;
    let (mut socket, _) = open_session(&hub, &token).await;
    // Sensor 9 was never declared.
    let unknown_sensor =
        schema::encode_uplink_to_vec(&schema::Uplink::Telemetry(schema::Telemetry {
            seq: 1,
            base_time_ms: now_ms(),
            readings: schema::List::Borrowed(&[schema::Reading {
                sensor: 9,
                offset_ms: 0,
                value: schema::Value::Float(1.0),
            }]),
        }))
        .unwrap();
    send_binary(&mut socket, unknown_sensor).await;
    match expect_frame(&mut socket).await {
        DownFrame::Error { code, .. } => assert_eq!(code, error_code::UNKNOWN_SENSOR),
        other => panic!("expected an Error frame, got {other:?}"),
    }
    send_binary(&mut socket, telemetry_frame(0, now_ms(), 1)).await;
    loop {
        match expect_frame(&mut socket).await {
            DownFrame::Error { code, .. } => {
                assert_eq!(code, error_code::BAD_SEQUENCE);
                break;
            }
            DownFrame::Ack(_) => continue,
            other => panic!("expected an Error frame, got {other:?}"),
        }
    }
    // A text message closes the connection with 1003.
    socket.send(Message::Text("hello?".into())).await.unwrap();
    expect_close(&mut socket, close::UNSUPPORTED_DATA).await;

    let text = scrape(&hub).await;
    assert_eq!(
        get(&text, "hub_rejections_total{reason=\"unknown_sensor\"}"),
        1.0
    );
    assert_eq!(
        get(&text, "hub_rejections_total{reason=\"bad_sequence\"}"),
        1.0
    );
    assert_eq!(
        get(&text, "hub_rejections_total{reason=\"wrong_kind\"}"),
        0.0
    );
    assert_eq!(get(&text, "hub_readings_received_total"), 0.0);
    assert_eq!(
        get(&text, "hub_connections_closed_total{code=\"1003\"}"),
        1.0
    );
    assert_eq!(
        get(&text, "hub_connections_closed_total{code=\"1001\"}"),
        0.0
    );
}

#[tokio::test]
async fn commands_are_counted_by_status() {
    let hub = TestHub::start().await;
    let key = hub.store.create_api_key("ops").await.unwrap().key;
    let (id, token) = hub.add_device("d1").await;
    let (mut socket, _) = open_session(&hub, &token).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/devices/{id}/commands", hub.http_url()))
        .bearer_auth(&key)
        .json(&json!({"actuator": "relay", "value": true}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    match expect_frame(&mut socket).await {
        DownFrame::Command(_) => {}
        other => panic!("expected the command, got {other:?}"),
    }
    eventually_value(&hub, "hub_commands_total{status=\"sent\"}", 1.0).await;
    let text = scrape(&hub).await;
    assert_eq!(get(&text, "hub_commands_total{status=\"queued\"}"), 1.0);
    assert_eq!(get(&text, "hub_commands_total{status=\"succeeded\"}"), 0.0);

    let (status, body) = api_get(&hub, Some(&key), "/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["commands"]["queued"], 1, "{body}");
    assert_eq!(body["commands"]["sent"], 1, "{body}");
    assert_eq!(body["commands"]["expired"], 0, "{body}");
}

#[tokio::test]
async fn status_needs_a_key_and_reports_devices_rates_and_queue() {
    let hub = TestHub::start().await;
    let key = hub.store.create_api_key("ops").await.unwrap().key;
    let (status, body) = api_get(&hub, None, "/status").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");

    let (_, token) = hub.add_device("d1").await;
    let (mut socket, _) = open_session(&hub, &token).await;
    send_binary(&mut socket, telemetry_frame(1, now_ms(), 10)).await;
    wait_ack(&mut socket, 1).await;

    let (status, body) = api_get(&hub, Some(&key), "/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["instance"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(body["uptime_s"].as_f64().is_some());
    assert_eq!(body["devices"]["connected"], 1, "{body}");
    assert_eq!(body["devices"]["connections_open"], 1, "{body}");
    assert_eq!(body["totals"]["readings_received"], 10, "{body}");
    assert_eq!(body["totals"]["readings_stored"], 10, "{body}");
    assert!(
        body["rates"]["readings_per_s"].as_f64().unwrap() > 0.0,
        "{body}"
    );
    assert!(body["rates"]["window_s"].as_f64().unwrap() > 0.0, "{body}");
    assert_eq!(body["ingest"]["queue_frames"], 0, "{body}");
    assert!(body["ingest"]["queue_capacity"].as_u64().unwrap() > 0);
    assert_eq!(body["mqtt"], Json::Null, "MQTT is off");
}

/// Runs the real `hub status`; the hub runs on this test's runtime, so the
/// binary must not block it.
async fn hub_status(hub: &TestHub, key: &str, extra: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["status", "--url", &hub.http_url(), "--api-key", key])
        .args(extra)
        .env_remove("HUB_API_URL")
        .env_remove("HUB_API_KEY")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn hub_status_prints_what_the_hub_reports() {
    let hub = TestHub::start().await;
    let key = hub.store.create_api_key("ops").await.unwrap().key;
    let (_, token) = hub.add_device("d1").await;
    let (mut socket, _) = open_session(&hub, &token).await;
    send_binary(&mut socket, telemetry_frame(1, now_ms(), 4)).await;
    wait_ack(&mut socket, 1).await;

    let output = hub_status(&hub, &key, &[]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "hub status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let devices = stdout
        .lines()
        .find(|line| line.starts_with("devices"))
        .unwrap_or_else(|| panic!("no devices line in:\n{stdout}"));
    assert!(devices.contains("1 connected"), "{stdout}");
    assert!(stdout.contains("readings/s"), "{stdout}");
    assert!(stdout.contains("ingest queue"), "{stdout}");

    let output = hub_status(&hub, &key, &["--json"]).await;
    assert!(output.status.success());
    let body: Json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "--json printed no JSON object ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert_eq!(body["devices"]["connected"], 1, "{body}");
    assert_eq!(body["totals"]["readings_stored"], 4, "{body}");

    let output = hub_status(&hub, "nope.nope", &[]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "the failure says why: {stderr}");
}

/// A request that fails on the database (here: a closed store) is counted
/// as an `api` database error by the API's logging middleware.
#[tokio::test]
async fn api_database_errors_are_counted() {
    use axum::body::Body;
    use axum::http::{Request, header};
    use tower::ServiceExt;

    let db = common::db::fresh_database(common::db::Backend::Sqlite).await;
    let store = hub::store::Store::open(&db.url).await.unwrap();
    let key = store.create_api_key("ops").await.unwrap().key;
    let state = router_state(store.clone(), &db.url, "api-errors");
    let metrics = std::sync::Arc::clone(&state.metrics);
    let router = hub::api::router(state);
    store.close().await;
    let response = router
        .oneshot(
            Request::get("/api/v1/devices")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    let text = metrics.encode();
    assert_eq!(get(&text, "hub_database_errors_total{op=\"api\"}"), 1.0);
    assert_eq!(get(&text, "hub_database_errors_total{op=\"commit\"}"), 0.0);
}
