//! The browsers' live stream (`GET /api/v1/stream`) and `GET /api/v1/me`,
//! on a real hub with real WebSocket clients and real firmware-client
//! devices streaming: authentication by first message (welcome + snapshot,
//! 4001, 4008, 1008), the Origin rule, subscription filtering, presence,
//! command status, stats, a browser that never reads (ingest unaffected, the
//! browser dropped or resynchronised), the API request timeout not reaching
//! the socket, and shutdown (1001).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db::Backend;
use common::*;
use firmware_client::{Action, ConnectionState, Device, DeviceConfig};
use futures_util::{SinkExt, StreamExt};
use hub::store::Role;
use reqwest::StatusCode;
use schema::{Value, ValueKind};
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long any one expected message may take.
const WAIT: Duration = Duration::from_secs(15);

/// `ws://…/api/v1/stream`.
fn stream_url(hub: &TestHub) -> String {
    format!("ws://{}/api/v1/stream", hub.addr)
}

/// Opens the stream socket, with `origin` as the Origin header if given.
async fn connect(hub: &TestHub, origin: Option<&str>) -> Result<RawSocket, tungstenite::Error> {
    let mut request = stream_url(hub).into_client_request()?;
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

async fn send_json(socket: &mut RawSocket, value: Json) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// What came next on the stream.
#[derive(Debug)]
enum Next {
    Json(Json),
    Closed(u16, String),
    Gone,
}

async fn next(socket: &mut RawSocket, within: Duration) -> Option<Next> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return None,
            Ok(message) => message,
        };
        return Some(match message {
            None | Some(Err(_)) => Next::Gone,
            Some(Ok(Message::Text(text))) => Next::Json(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()))
                    .unwrap_or((1005, String::new()));
                Next::Closed(code, reason)
            }
            Some(Ok(Message::Binary(_))) => panic!("the stream sends text only"),
            Some(Ok(_)) => continue,
        });
    }
}

/// The next message, which must be JSON.
async fn next_json(socket: &mut RawSocket) -> Json {
    match next(socket, WAIT).await {
        Some(Next::Json(json)) => json,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next message of type `kind`, skipping others.
async fn next_of(socket: &mut RawSocket, kind: &str) -> Json {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(socket, left).await {
            Some(Next::Json(json)) if json["type"] == kind => return json,
            Some(Next::Json(_)) => continue,
            other => panic!("expected a {kind} message, got {other:?}"),
        }
    }
}

/// Expects the hub to close with `code` (skipping messages); returns the reason.
async fn expect_closed(socket: &mut RawSocket, code: u16) -> String {
    loop {
        match next(socket, WAIT).await {
            Some(Next::Json(_)) => continue,
            Some(Next::Closed(got, reason)) => {
                assert_eq!(got, code, "close reason: {reason}");
                return reason;
            }
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

/// Connects and authenticates; returns the socket, welcome and snapshot.
async fn signed_in(hub: &TestHub, key: &str) -> (RawSocket, Json, Json) {
    let mut socket = connect(hub, None).await.unwrap();
    send_json(&mut socket, json!({"type": "auth", "key": key})).await;
    let welcome = next_json(&mut socket).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let snapshot = next_json(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    (socket, welcome, snapshot)
}

async fn key(hub: &TestHub, role: Role) -> String {
    hub.store
        .create_api_key_with_role(&format!("{role}-key"), role)
        .await
        .unwrap()
        .key
}

/// The hub's `/metrics` value of one series (0 when absent).
async fn metric(hub: &TestHub, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", hub.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A firmware-client device with a temperature sensor and a relay that
/// applies every Set.
fn device(hub: &TestHub, token: &str) -> Device {
    let mut config = DeviceConfig::new(hub.ws_url(), token)
        .sensor(1, "temperature", "°C", ValueKind::Float)
        .actuator(1, "relay", ValueKind::Bool)
        .on_command(1, |call| match call.action {
            Action::Set(value) => Ok(Some(value)),
            _ => Err("the relay only takes Set".to_owned()),
        });
    config.max_batch = 50;
    config.flush_interval = Duration::from_millis(20);
    config.backoff_base = Duration::from_millis(50);
    config.backoff_cap = Duration::from_millis(500);
    Device::start(config).unwrap()
}

async fn connected(device: &Device) {
    let mut state = device.state();
    let reached = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await;
    assert!(matches!(reached, Ok(Ok(_))), "device never connected");
}

/// Provisions and connects `n` devices; returns their ids and devices.
async fn devices(hub: &TestHub, n: usize) -> Vec<(String, Device)> {
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        let (id, token) = hub.add_device(&format!("dev-{i:03}")).await;
        all.push((id, device(hub, &token)));
    }
    for (_, device) in &all {
        connected(device).await;
    }
    all
}

/// Pushes one reading per device every `every` until the task is aborted.
fn keep_pushing(
    devices: Arc<Vec<(String, Device)>>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let base = now_ms() - 3_600_000;
        let mut step = 0u64;
        loop {
            for (_, device) in devices.iter() {
                device
                    .push(1, base + step, Value::Float(step as f64))
                    .await
                    .unwrap();
            }
            step += 1;
            tokio::time::sleep(every).await;
        }
    })
}

backend_test!(
    a_good_key_gets_welcome_and_a_snapshot,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let key = key(&hub, Role::Operator).await;
        let key_id = key.split('.').next().unwrap().to_owned();
        let online = devices(&hub, 1).await;
        let (offline_id, _) = hub.add_device("never-connected").await;

        let (_socket, welcome, snapshot) = signed_in(&hub, &key).await;
        assert_eq!(welcome["protocol"], 1);
        assert_eq!(welcome["role"], "operator");
        assert_eq!(welcome["key_id"], key_id.as_str());
        assert!(!welcome["instance"].as_str().unwrap().is_empty());

        assert_eq!(snapshot["reason"], "start");
        assert_eq!(snapshot["truncated"], false);
        assert!(snapshot["at_ms"].as_i64().unwrap() > 0);
        let listed = snapshot["devices"].as_array().unwrap();
        assert_eq!(listed.len(), 2, "{snapshot}");
        let find = |id: &str| listed.iter().find(|d| d["id"] == id).unwrap().clone();
        let up = find(&online[0].0);
        assert_eq!(up["online"], true, "{up}");
        assert_eq!(up["name"], "dev-000");
        assert!(up["last_seen_ms"].as_i64().unwrap() > 0, "{up}");
        let down = find(&offline_id);
        assert_eq!(down["online"], false, "{down}");
        assert_eq!(down["last_seen_ms"], Json::Null);

        assert_eq!(metric(&hub, "hub_stream_clients").await, 1.0);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_closes_4001_and_counts_toward_the_throttle() {
    let hub = TestHub::start_with(|config| config.limits.auth_failures_per_minute = 2).await;
    let good = key(&hub, Role::Viewer).await;
    let forged = format!(
        "{}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        good.split('.').next().unwrap()
    );
    for bad in ["nonsense", forged.as_str()] {
        let mut socket = connect(&hub, None).await.unwrap();
        send_json(&mut socket, json!({"type": "auth", "key": bad})).await;
        assert_eq!(expect_closed(&mut socket, 4001).await, "invalid API key");
    }
    // The address's budget is spent: refused before the upgrade, good key or not.
    match connect(&hub, None).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert!(metric(&hub, "hub_limit_rejections_total{limit=\"auth_throttle\"}").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_in_time_closes_4008() {
    let hub =
        TestHub::start_with(|config| config.limits.handshake_timeout = Duration::from_secs(1))
            .await;
    let mut socket = connect(&hub, None).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        expect_closed(&mut socket, 4008).await,
        "no auth message in time"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auth_may_come_first_and_bad_messages_later_get_errors() {
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Viewer).await;

    let mut socket = connect(&hub, None).await.unwrap();
    send_json(&mut socket, json!({"type": "subscribe", "devices": []})).await;
    expect_closed(&mut socket, 1008).await;
    let mut socket = connect(&hub, None).await.unwrap();
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    expect_closed(&mut socket, 1008).await;
    let mut socket = connect(&hub, None).await.unwrap();
    socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect_closed(&mut socket, 1008).await;

    // After auth, mistakes are answered and the connection stays open.
    let (mut socket, _, _) = signed_in(&hub, &key).await;
    for bad in [
        "{not json".to_owned(),
        json!({"type": "shout"}).to_string(),
        json!({"type": "auth", "key": key}).to_string(),
        json!({"type": "subscribe", "devices": (0..1001).map(|i| format!("d{i}")).collect::<Vec<_>>()})
            .to_string(),
    ] {
        socket.send(Message::Text(bad.clone().into())).await.unwrap();
        let error = next_of(&mut socket, "error").await;
        assert!(
            !error["message"].as_str().unwrap().is_empty(),
            "{bad}: {error}"
        );
    }
    // Still alive: stats keep coming.
    next_of(&mut socket, "stats").await;
    socket.send(Message::Binary(vec![1].into())).await.unwrap();
    expect_closed(&mut socket, 1003).await;

    // Messages are bounded (the API body limit, at least 32 KiB).
    let (mut socket, _, _) = signed_in(&hub, &key).await;
    let huge = json!({"type": "subscribe", "devices": ["x".repeat(200_000)]});
    send_json(&mut socket, huge).await;
    expect_closed(&mut socket, 1009).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_must_be_the_hubs_own_or_allowed() {
    let hub = TestHub::start_with(|config| {
        config.limits.allowed_origins = vec!["https://console.example".into()];
    })
    .await;
    match connect(&hub, Some("https://evil.example")).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Json = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "forbidden_origin");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert_eq!(
        metric(&hub, "hub_limit_rejections_total{limit=\"origin\"}").await,
        1.0
    );
    let own = format!("http://{}", hub.addr);
    for origin in [Some(own.as_str()), Some("https://console.example"), None] {
        let socket = connect(&hub, origin).await;
        assert!(socket.is_ok(), "{origin:?}: {socket:?}");
    }
    // A page on another port of the same host is another origin.
    let other_port = format!("http://127.0.0.1:{}", hub.addr.port() + 1);
    assert!(connect(&hub, Some(&other_port)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn telemetry_reaches_only_the_subscribed_devices() {
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Viewer).await;
    let devices = Arc::new(devices(&hub, 2).await);
    let (a, b) = (devices[0].0.clone(), devices[1].0.clone());
    let pusher = keep_pushing(Arc::clone(&devices), Duration::from_millis(50));
    let (mut socket, _, _) = signed_in(&hub, &key).await;

    // Nothing subscribed: no telemetry, for two stats periods.
    for _ in 0..2 {
        loop {
            let message = next_json(&mut socket).await;
            assert_ne!(message["type"], "telemetry", "{message}");
            if message["type"] == "stats" {
                break;
            }
        }
    }

    send_json(&mut socket, json!({"type": "subscribe", "devices": [a]})).await;
    let first = next_of(&mut socket, "telemetry").await;
    assert_eq!(first["device"], a.as_str());
    let reading = &first["readings"][0];
    assert_eq!(reading["sensor"], 1);
    assert_eq!(reading["name"], "temperature");
    assert_eq!(reading["unit"], "°C");
    assert!(reading["t"].as_i64().unwrap() > 0);
    assert!(reading["v"].is_f64(), "{reading}");
    let mut from_a = 1;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let message = next_json(&mut socket).await;
        if message["type"] == "telemetry" {
            assert_eq!(message["device"], a.as_str(), "only A: {message}");
            from_a += 1;
        }
    }
    assert!(from_a > 2, "A keeps streaming: {from_a}");

    // Replaces, not adds: after B's first message, A's stop (one queue, in order).
    send_json(&mut socket, json!({"type": "subscribe", "devices": [b]})).await;
    loop {
        let message = next_of(&mut socket, "telemetry").await;
        if message["device"] == b.as_str() {
            break;
        }
        assert_eq!(message["device"], a.as_str());
    }
    let until = Instant::now() + Duration::from_millis(1500);
    let mut from_b = 1;
    while Instant::now() < until {
        let message = next_json(&mut socket).await;
        if message["type"] == "telemetry" {
            assert_eq!(message["device"], b.as_str(), "only B now: {message}");
            from_b += 1;
        }
    }
    assert!(from_b > 2, "B keeps streaming: {from_b}");
    pusher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_every_device_is_streamed() {
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Viewer).await;
    let (id, token) = hub.add_device("door").await;
    let (mut socket, _, _) = signed_in(&hub, &key).await;

    let device = device(&hub, &token);
    let online = next_of(&mut socket, "presence").await;
    assert_eq!(online["device"], id.as_str());
    assert_eq!(online["online"], true);
    let counter = online["session_counter"].as_i64().unwrap();
    assert!(counter >= 1);
    assert!(online["at_ms"].as_i64().unwrap() > 0);

    device.shutdown().await;
    let offline = next_of(&mut socket, "presence").await;
    assert_eq!(offline["device"], id.as_str());
    assert_eq!(offline["online"], false);
    assert_eq!(offline["session_counter"], counter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_status_changes_are_streamed_until_succeeded() {
    let hub = TestHub::start().await;
    let operator = key(&hub, Role::Operator).await;
    let viewer = key(&hub, Role::Viewer).await;
    let devices = devices(&hub, 1).await;
    let id = devices[0].0.clone();
    // A viewer sees every command too.
    let (mut socket, _, _) = signed_in(&hub, &viewer).await;

    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/devices/{id}/commands", hub.http_url()))
        .bearer_auth(&operator)
        .json(&json!({"actuator": "relay", "value": true}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let created: Json = response.json().await.unwrap();
    let command_id = created["id"].as_i64().unwrap();

    let mut statuses = Vec::new();
    loop {
        let message = next_of(&mut socket, "command").await;
        let command = &message["command"];
        assert_eq!(command["id"], command_id, "{message}");
        assert_eq!(command["device"], id.as_str());
        assert_eq!(command["actuator"], "relay");
        assert_eq!(command["value"], true);
        let status = command["status"].as_str().unwrap().to_owned();
        statuses.push(status.clone());
        if status == "succeeded" {
            assert_eq!(command["result_value"], true);
            break;
        }
        assert!(
            ["queued", "sent", "delivered"].contains(&status.as_str()),
            "{statuses:?}"
        );
    }
    assert_eq!(statuses[0], "queued", "{statuses:?}");
    assert!(statuses.contains(&"sent".to_owned()), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_report_the_hubs_numbers_every_second() {
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Viewer).await;
    let devices = Arc::new(devices(&hub, 3).await);
    let pusher = keep_pushing(Arc::clone(&devices), Duration::from_millis(20));
    let (mut socket, _, _) = signed_in(&hub, &key).await;

    let first = next_of(&mut socket, "stats").await;
    let commands = first["commands"].as_object().unwrap();
    let names: HashSet<&str> = commands.keys().map(String::as_str).collect();
    for status in [
        "queued",
        "sent",
        "delivered",
        "succeeded",
        "failed",
        "rejected",
        "expired",
    ] {
        assert!(names.contains(status), "{first}");
        assert_eq!(commands[status], 0);
    }
    let mut last_at = first["at_ms"].as_i64().unwrap();
    let mut busy = false;
    for _ in 0..8 {
        let stats = next_of(&mut socket, "stats").await;
        let at = stats["at_ms"].as_i64().unwrap();
        let gap = at - last_at;
        assert!(
            (500..=2500).contains(&gap),
            "about a second apart: {gap} ms"
        );
        last_at = at;
        assert_eq!(stats["connected_devices"], 3, "{stats}");
        let readings = stats["readings_per_sec"].as_f64().unwrap();
        let frames = stats["frames_per_sec"].as_f64().unwrap();
        assert!((0.0..10_000.0).contains(&readings), "{stats}");
        assert!(frames <= readings, "{stats}");
        if readings > 10.0 && frames > 1.0 {
            busy = true;
            break;
        }
    }
    assert!(busy, "the rates show the streaming devices");
    pusher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_names_the_keys_role() {
    let hub = TestHub::start().await;
    let client = reqwest::Client::new();
    for role in Role::ALL {
        let key = key(&hub, role).await;
        let response = client
            .get(format!("{}/api/v1/me", hub.http_url()))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let me: Json = response.json().await.unwrap();
        assert_eq!(
            me,
            json!({
                "role": role.as_str(),
                "key_id": key.split('.').next().unwrap(),
                "name": format!("{role}-key"),
            })
        );
    }
    let response = client
        .get(format!("{}/api/v1/me", hub.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_outlives_the_api_request_timeout() {
    let hub = TestHub::start_with(|config| {
        // Below the validated minimum, to keep the test short.
        config.limits.api_request_timeout = Duration::from_secs(1);
    })
    .await;
    let key = key(&hub, Role::Viewer).await;
    let (mut socket, _, _) = signed_in(&hub, &key).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        next_of(&mut socket, "stats").await;
    }
    // Still open and still answering.
    send_json(&mut socket, json!({"type": "nope"})).await;
    next_of(&mut socket, "error").await;
    assert_eq!(
        metric(
            &hub,
            "hub_limit_rejections_total{limit=\"request_timeout\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_shutdown_closes_the_stream_with_1001() {
    let mut hub = TestHub::start().await;
    let key = key(&hub, Role::Viewer).await;
    let (mut socket, _, _) = signed_in(&hub, &key).await;
    assert_eq!(metric(&hub, "hub_stream_clients").await, 1.0);
    let stopping = tokio::spawn(async move {
        hub.stop().await;
        hub
    });
    assert_eq!(expect_closed(&mut socket, 1001).await, "hub shutting down");
    drop(socket);
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .unwrap()
        .unwrap();
}

/// Pushes `n` readings to each device as fast as the outboxes take them,
/// from `base` on, and waits until every one is acked; returns how long it took.
async fn push_and_wait(devices: &Arc<Vec<(String, Device)>>, base: u64, n: u64) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..devices.len() {
        let devices = Arc::clone(devices);
        tasks.push(tokio::spawn(async move {
            let device = &devices[index].1;
            for i in 0..n {
                device
                    .push(1, base + i, Value::Float(i as f64))
                    .await
                    .unwrap();
            }
            assert!(device.flush(Duration::from_secs(120)).await, "acked");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_that_never_reads_does_not_slow_ingest() {
    const DEVICES: usize = 40;
    const PER_ROUND: u64 = 2000;
    let hub = TestHub::start_with(|config| {
        config.limits.send_timeout = Duration::from_secs(2);
        config.limits.device_max_frames_per_sec = 0;
        config.limits.device_max_readings_per_sec = 0;
    })
    .await;
    let key = key(&hub, Role::Viewer).await;
    let devices = Arc::new(devices(&hub, DEVICES).await);
    let base = now_ms() - 86_400_000;

    // Warm-up, then the same work without and with a browser that never reads.
    push_and_wait(&devices, base, PER_ROUND).await;
    let alone = push_and_wait(&devices, base + PER_ROUND, PER_ROUND).await;

    let mut sloth = connect(&hub, None).await.unwrap();
    send_json(&mut sloth, json!({"type": "auth", "key": key})).await;
    let ids: Vec<&str> = devices.iter().map(|(id, _)| id.as_str()).collect();
    send_json(&mut sloth, json!({"type": "subscribe", "devices": ids})).await;
    // From here on the browser reads nothing.
    let watched = push_and_wait(&devices, base + 2 * PER_ROUND, PER_ROUND).await;
    assert!(
        watched <= alone * 3 + Duration::from_secs(2),
        "ingest with a stuck browser took {watched:?}, alone {alone:?}"
    );

    // Keep streaming until the hub gave up on the browser or resynced it.
    let mut round = 3;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let gone = metric(&hub, "hub_stream_clients").await == 0.0;
        let resynced = metric(&hub, "hub_stream_resyncs_total").await > 0.0;
        if gone || resynced {
            eprintln!(
                "alone {alone:?}, watched {watched:?}; after {round} rounds the browser was {}",
                if gone { "dropped" } else { "resynced" }
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stuck browser was neither dropped nor resynced"
        );
        push_and_wait(&devices, base + round * PER_ROUND, PER_ROUND).await;
        round += 1;
    }

    let mut pushed = 0;
    for (_, device) in devices.iter() {
        let stats = device.stats();
        assert_eq!(stats.readings_acked, stats.readings_pushed, "{stats:?}");
        assert_eq!(stats.reconnects, 0, "no device was disconnected");
        pushed += stats.readings_pushed;
    }
    assert_eq!(pushed, DEVICES as u64 * PER_ROUND * round);
    assert_eq!(hub.stored_readings().await as u64, pushed, "all stored");
    drop(sloth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_that_falls_behind_gets_a_lagged_snapshot() {
    const DEVICES: usize = 40;
    const PER_ROUND: u64 = 500;
    let hub = TestHub::start_with(|config| {
        // Long enough that the paused browser is resynced, not dropped.
        config.limits.send_timeout = Duration::from_secs(60);
        config.limits.device_max_frames_per_sec = 0;
        config.limits.device_max_readings_per_sec = 0;
    })
    .await;
    let key = key(&hub, Role::Viewer).await;
    let devices = Arc::new(devices(&hub, DEVICES).await);
    let (mut socket, _, _) = signed_in(&hub, &key).await;
    let ids: Vec<&str> = devices.iter().map(|(id, _)| id.as_str()).collect();
    send_json(&mut socket, json!({"type": "subscribe", "devices": ids})).await;

    // The browser stops reading while far more than the socket buffers and
    // its queue hold streams in.
    let base = now_ms() - 86_400_000;
    for round in 0..12 {
        push_and_wait(&devices, base + round * PER_ROUND, PER_ROUND).await;
    }
    assert_eq!(metric(&hub, "hub_stream_clients").await, 1.0, "not dropped");

    // Reading again: what was buffered, then a fresh snapshot instead of the
    // dropped rest, then live messages again.
    let snapshot = next_of(&mut socket, "snapshot").await;
    assert_eq!(snapshot["reason"], "lagged", "{snapshot}");
    assert_eq!(snapshot["devices"].as_array().unwrap().len(), DEVICES);
    assert!(metric(&hub, "hub_stream_resyncs_total").await >= 1.0);
    let pusher = keep_pushing(Arc::clone(&devices), Duration::from_millis(50));
    next_of(&mut socket, "telemetry").await;
    pusher.abort();
}
