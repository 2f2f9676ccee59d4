//! Each limit trips with its documented reason while 100 honest simulated
//! devices (firmware-client over real WebSockets) keep streaming into the
//! same hub, and none of them loses a reading: every reading they pushed is
//! acked and stored exactly once, and none of them was disconnected.
//!
//! Limits: per-device rate (Error 8, then close 1008), slow consumer
//! (dropped at the send timeout, 4006 in the metrics), failed-authentication
//! throttling per address (429 + Retry-After), the Origin allow-list (403),
//! the API body limit (413) and request timeout (503), the message size
//! (close 1009), the connection cap (503, closed) and the handshake deadline
//! (slowloris connections dropped).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use firmware_client::{ConnectionState, Device, DeviceConfig};
use futures_util::{SinkExt, StreamExt};
use hub::store::{ReadingQuery, Store};
use reqwest::StatusCode;
use schema::{Value, ValueKind, close, error_code};
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

/// Honest devices streaming alongside each limit.
const HONEST: usize = 100;

/// How often each honest device pushes a reading: 10 readings/s per device,
/// far below every per-device limit the tests set.
const HONEST_PACE: Duration = Duration::from_millis(100);

/// Honest devices pushing readings until [`Honest::finish`].
struct Honest {
    devices: Arc<Vec<(Device, String)>>,
    stop: CancellationToken,
    pusher: JoinHandle<()>,
}

impl Honest {
    /// Provisions and connects `HONEST` devices and starts them streaming.
    async fn start(hub: &TestHub) -> Honest {
        let mut devices = Vec::with_capacity(HONEST);
        for i in 0..HONEST {
            let (_, token) = hub.add_device(&format!("honest-{i:03}")).await;
            let mut config = DeviceConfig::new(hub.ws_url(), &token).sensor(
                1,
                "temperature",
                "°C",
                ValueKind::Float,
            );
            config.max_batch = 20;
            config.flush_interval = Duration::from_millis(20);
            config.backoff_base = Duration::from_millis(50);
            config.backoff_cap = Duration::from_millis(500);
            devices.push((Device::start(config).unwrap(), token));
        }
        for (device, _) in &devices {
            let mut state = device.state();
            let connected = tokio::time::timeout(
                Duration::from_secs(30),
                state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
            )
            .await;
            assert!(matches!(connected, Ok(Ok(_))), "honest device connected");
        }
        let devices = Arc::new(devices);
        let stop = CancellationToken::new();
        let pusher = tokio::spawn({
            let devices = Arc::clone(&devices);
            let stop = stop.clone();
            async move {
                // Times in the past, strictly increasing per device.
                let base = now_ms() - 3_600_000;
                let mut tick = tokio::time::interval(HONEST_PACE);
                let mut step = 0u64;
                while !stop.is_cancelled() {
                    tick.tick().await;
                    for (device, _) in devices.iter() {
                        device
                            .push(1, base + step, Value::Float(step as f64))
                            .await
                            .unwrap();
                    }
                    step += 1;
                }
            }
        });
        Honest {
            devices,
            stop,
            pusher,
        }
    }

    /// Stops pushing and checks that every honest device stayed connected
    /// and had every reading acked and stored exactly once.
    async fn finish(self, hub: &TestHub) {
        self.stop.cancel();
        self.pusher.await.unwrap();
        let devices =
            Arc::try_unwrap(self.devices).unwrap_or_else(|_| panic!("the pusher has stopped"));
        let mut total = 0;
        for (device, token) in &devices {
            assert!(
                device.flush(Duration::from_secs(60)).await,
                "honest device drained its outbox: {:?}",
                device.stats()
            );
            let stats = device.stats();
            assert!(stats.readings_pushed > 0);
            assert_eq!(stats.readings_acked, stats.readings_pushed, "{stats:?}");
            assert_eq!(stats.outstanding, 0);
            assert_eq!(stats.errors_received, 0, "no honest frame was refused");
            assert_eq!(stats.reconnects, 0, "no honest device was disconnected");
            let stored = stored_for(&hub.store, token, 1).await;
            assert_eq!(
                stored, stats.readings_pushed,
                "every reading of an honest device is stored exactly once"
            );
            total += stored;
        }
        assert!(total >= HONEST as u64);
        for (device, _) in devices {
            device.shutdown().await;
        }
    }
}

/// Readings stored for one sensor of the device holding `token`.
async fn stored_for(store: &Store, token: &str, sensor: u16) -> u64 {
    let device = store
        .authenticate_device(token)
        .await
        .unwrap()
        .expect("device exists");
    let mut query = ReadingQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        after_ms: None,
        limit: 10_000,
    };
    let mut count = 0;
    loop {
        let page = store.readings(device.pk, sensor, &query).await.unwrap();
        count += page.readings.len() as u64;
        match page.next_after_ms {
            Some(after) => query.after_ms = Some(after),
            None => return count,
        }
    }
}

/// The hub's `/metrics` exposition.
async fn scrape(hub: &TestHub) -> String {
    try_scrape(hub).await.unwrap()
}

/// The hub's `/metrics` exposition, or the error of a scrape refused or cut
/// (at the connection cap, a freed permit may not be back yet).
async fn try_scrape(hub: &TestHub) -> reqwest::Result<String> {
    reqwest::get(format!("{}/metrics", hub.http_url()))
        .await?
        .text()
        .await
}

/// One series' value, 0 if absent.
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (up to 20 s) until `name` reaches `want`.
async fn metric_reaches(hub: &TestHub, name: &str, want: f64) {
    metric_reaches_within(hub, name, want, Duration::from_secs(20)).await;
}

/// Waits up to `within` until `name` reaches `want`.
async fn metric_reaches_within(hub: &TestHub, name: &str, want: f64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = 0.0;
    while tokio::time::Instant::now() < deadline {
        if let Ok(text) = try_scrape(hub).await {
            last = series(&text, name);
        }
        if last >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} stayed at {last}, expected {want} within {within:?}");
}

fn limit(name: &str) -> String {
    format!("hub_limit_rejections_total{{limit=\"{name}\"}}")
}

fn http_refusal(err: tungstenite::Error) -> (u16, Option<String>, Json) {
    match err {
        tungstenite::Error::Http(response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap())
                .unwrap_or(Json::Null);
            (response.status().as_u16(), retry_after, body)
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Opens the device socket with extra request headers.
async fn connect_with(
    hub: &TestHub,
    token: &str,
    headers: &[(&'static str, &str)],
) -> Result<RawSocket, tungstenite::Error> {
    let mut request = hub.ws_url().into_client_request()?;
    let map = request.headers_mut();
    map.insert("authorization", format!("Bearer {token}").parse().unwrap());
    map.insert(
        "sec-websocket-protocol",
        schema::SUBPROTOCOL.parse().unwrap(),
    );
    for (name, value) in headers {
        map.insert(*name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_device_is_warned_then_closed_and_keeps_what_was_acked() {
    let hub = TestHub::start_with(|config| {
        config.limits.device_max_frames_per_sec = 50;
        config.limits.device_max_readings_per_sec = 1_000;
        config.limits.device_rate_burst_secs = 1;
    })
    .await;
    let honest = Honest::start(&hub).await;
    let (_, token) = hub.add_device("flooder").await;
    let (socket, _) = open_session(&hub, &token).await;
    let (mut tx, mut rx) = socket.split();

    // Floods 1-reading frames as fast as the hub reads them.
    let base = now_ms() - 3_600_000;
    let flood = tokio::spawn(async move {
        let mut sent = 0u64;
        for seq in 1..=20_000u64 {
            let frame = telemetry_frame(seq, base + seq, 1);
            if tx.send(Message::Binary(frame.into())).await.is_err() {
                break;
            }
            sent = seq;
        }
        sent
    });

    let mut warnings = Vec::new();
    let mut acked = 0;
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = rx.next().await {
            match message {
                Ok(Message::Binary(bytes)) => match schema::decode_downlink(&bytes).unwrap() {
                    schema::Downlink::Ack(ack) => acked = acked.max(ack.seq),
                    schema::Downlink::Error(e) => {
                        warnings.push((e.code, e.seq, e.reason.to_string()));
                    }
                    other => panic!("unexpected {other:?}"),
                },
                Ok(Message::Close(frame)) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("closed within 30 s");
    let sent = flood.await.unwrap();

    assert_eq!(
        warnings,
        vec![(
            error_code::RATE_LIMITED,
            None,
            "over 50 frames/s; slowing down".to_owned()
        )],
        "exactly one warning, without a seq"
    );
    assert_eq!(
        closed,
        Some((close::POLICY_VIOLATION, "rate limit exceeded".to_owned()))
    );
    assert!(acked >= 50, "the burst was acked: {acked}");
    // Nothing acked is lost; the flooder may resend the rest. The hub took
    // about two buckets (50 frames each) of the flood, not all of it.
    let stored = stored_for(&hub.store, &token, 1).await;
    assert!(stored >= acked, "stored {stored} < acked {acked}");
    assert!(stored < 1_000 && stored < sent, "stored {stored} of {sent}");
    let text = scrape(&hub).await;
    assert_eq!(series(&text, &limit("device_rate")), 1.0);
    assert_eq!(
        series(&text, "hub_connections_closed_total{code=\"1008\"}"),
        1.0
    );
    honest.finish(&hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_that_stops_reading_is_dropped_at_the_send_timeout() {
    let hub = TestHub::start_with(|config| {
        config.limits.send_timeout = Duration::from_secs(1);
        config.limits.device_max_frames_per_sec = 0;
        config.limits.device_max_readings_per_sec = 0;
    })
    .await;
    let honest = Honest::start(&hub).await;
    let (_, token) = hub.add_device("sloth").await;

    // The client keeps its kernel's default receive buffer. A tiny one
    // (4 KiB) deadlocks TCP itself on loopback: the client's socket drops
    // the hub's segments, window updates included, so both directions stall
    // with the hub's send buffer only part full, and the hub never sees a
    // write block (it closes such a peer at the idle timeout instead).
    let stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let mut request = hub.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.headers_mut().insert(
        "sec-websocket-protocol",
        schema::SUBPROTOCOL.parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let (mut tx, rx) = socket.split();
    tx.send(Message::Binary(hello_frame(1).into()))
        .await
        .unwrap();
    // Never reads again; every frame with seq 0 earns an Error frame back.
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        let base = now_ms();
        let mut sent = 0u64;
        loop {
            let frame = telemetry_frame(0, base, 1);
            let sending = tx.send(Message::Binary(frame.into()));
            match tokio::time::timeout(Duration::from_secs(30), sending).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(_)) | Err(_) => return sent,
            }
        }
    });
    // The hub's socket send buffer (autotuned, up to megabytes) must fill
    // with Error frames before a write can block: on a slow machine that
    // takes a while, so wait longer than for the other limits.
    metric_reaches_within(&hub, &limit("send_queue"), 1.0, Duration::from_secs(90)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1),
        "not before the send timeout: {elapsed:?}"
    );
    let sent = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the dropped connection fails the writer")
        .unwrap();
    assert!(sent > 0);
    drop(rx);
    let text = scrape(&hub).await;
    assert_eq!(
        series(&text, "hub_connections_closed_total{code=\"4006\"}"),
        1.0
    );
    honest.finish(&hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_bad_tokens_is_throttled_per_address() {
    const PER_MINUTE: u32 = 10;
    let hub = TestHub::start_with(|config| {
        config.limits.auth_failures_per_minute = PER_MINUTE;
    })
    .await;
    // The honest devices connect from 127.0.0.1 before the flood: they hold
    // their connections through it.
    let honest = Honest::start(&hub).await;
    let (id, good_token) = hub.add_device("late").await;
    let bad = format!("{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");

    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..PER_MINUTE + 20 {
        let (status, retry, body) = http_refusal(connect_with(&hub, &bad, &[]).await.unwrap_err());
        if status == 429 {
            assert_eq!(body["error"]["code"], "throttled");
            retry_after = retry;
        }
        statuses.push(status);
    }
    let first_429 = statuses.iter().position(|s| *s == 429).expect("throttled");
    assert_eq!(first_429, PER_MINUTE as usize, "{statuses:?}");
    assert!(statuses[..first_429].iter().all(|s| *s == 401));
    assert!(statuses[first_429..].iter().all(|s| *s == 429));
    // One failure comes back every 6 s at 10 per minute.
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=6).contains(&retry_after), "{retry_after}");

    // A throttled address is refused whatever it presents, good tokens too:
    // new connections from it wait, the ones it holds keep streaming.
    let (status, _, _) = http_refusal(connect_with(&hub, &good_token, &[]).await.unwrap_err());
    assert_eq!(status, 429);
    // The API keys share the address's budget.
    let key = hub.store.create_api_key("ops").await.unwrap().key;
    let devices = format!("{}/api/v1/devices", hub.http_url());
    let from = |last_octet: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last_octet]))
            .build()
            .unwrap()
    };
    let response = from(1)
        .get(&devices)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Json = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "throttled");

    // Bad API keys from another address: its own budget, the same rule.
    let other = from(2);
    let mut api_statuses = Vec::new();
    for _ in 0..PER_MINUTE + 5 {
        let response = other
            .get(&devices)
            .bearer_auth("nokey.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .send()
            .await
            .unwrap();
        api_statuses.push(response.status().as_u16());
    }
    let mut expected = vec![401; PER_MINUTE as usize];
    expected.extend([429; 5]);
    assert_eq!(api_statuses, expected);
    let response = other.get(&devices).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // A third address is untouched.
    let response = from(3)
        .get(&devices)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let text = scrape(&hub).await;
    let device_throttled = statuses.iter().filter(|s| **s == 429).count() as f64 + 1.0;
    assert_eq!(
        series(&text, &limit("auth_throttle")),
        device_throttled + 1.0 + 5.0 + 1.0
    );
    assert_eq!(
        series(&text, "hub_handshakes_total{outcome=\"throttled\"}"),
        device_throttled
    );
    honest.finish(&hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_allowed_browser_origins_may_open_the_device_socket() {
    let hub = TestHub::start_with(|config| {
        config.limits.allowed_origins = vec!["https://console.example".into()];
    })
    .await;
    let honest = Honest::start(&hub).await;
    let (_, token) = hub.add_device("browser").await;

    let (status, _, body) = http_refusal(
        connect_with(&hub, &token, &[("origin", "https://evil.example")])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden_origin");

    let socket = connect_with(&hub, &token, &[("origin", "https://console.example")])
        .await
        .expect("an allowed origin passes");
    drop(socket);
    let socket = connect_with(&hub, &token, &[])
        .await
        .expect("no Origin (not a browser) passes");
    drop(socket);

    let text = scrape(&hub).await;
    assert_eq!(series(&text, &limit("origin")), 1.0);
    assert_eq!(
        series(&text, "hub_handshakes_total{outcome=\"forbidden_origin\"}"),
        1.0
    );
    honest.finish(&hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_bodies_are_capped_and_slow_requests_stopped() {
    let hub = TestHub::start_with(|config| {
        config.limits.api_body_limit_bytes = 1024;
        // Below the validated minimum, to keep the test short.
        config.limits.api_request_timeout = Duration::from_secs(1);
    })
    .await;
    let honest = Honest::start(&hub).await;
    let key = hub.store.create_api_key("ops").await.unwrap().key;
    let client = reqwest::Client::new();

    let response = client
        .post(format!("{}/api/v1/devices", hub.http_url()))
        .bearer_auth(&key)
        .json(&json!({ "name": "x".repeat(2000) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Json = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    // A command to a connected device that never answers, waited for
    // longer than the request timeout.
    let (id, token) = hub.add_device("mute").await;
    let (_socket, _) = open_session(&hub, &token).await;
    let response = client
        .post(format!(
            "{}/api/v1/devices/{id}/commands?wait=10",
            hub.http_url()
        ))
        .bearer_auth(&key)
        .json(&json!({ "actuator": "relay", "value": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Json = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout");

    let text = scrape(&hub).await;
    assert_eq!(series(&text, &limit("body_size")), 1.0);
    assert_eq!(series(&text, &limit("request_timeout")), 1.0);
    honest.finish(&hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_message_is_closed_1009_and_counted() {
    let hub = TestHub::start_with(|config| {
        config.max_message_bytes = 4096;
    })
    .await;
    let honest = Honest::start(&hub).await;
    let (_, token) = hub.add_device("big").await;
    let (mut socket, _) = open_session(&hub, &token).await;
    send_binary(&mut socket, vec![0u8; 8192]).await;
    expect_close(&mut socket, close::MESSAGE_TOO_BIG).await;
    metric_reaches(&hub, &limit("message_size"), 1.0).await;
    honest.finish(&hub).await;
}

/// Reads until the peer closes or `within` passes; the bytes read and
/// whether it closed.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    within: Duration,
) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (received, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_connection_cap_refuses_newcomers_not_the_connected() {
    const SPARE: usize = 3;
    let hub = TestHub::start_with(|config| {
        config.limits.max_connections = HONEST + SPARE;
        // The held spare connections send nothing; keep them past the test.
        config.limits.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    let honest = Honest::start(&hub).await;
    let mut held = Vec::new();
    for _ in 0..SPARE {
        held.push(tokio::net::TcpStream::connect(hub.addr).await.unwrap());
    }
    // Every permit is taken: the next connection gets the fixed 503 and is closed.
    let mut refused = false;
    for _ in 0..50 {
        let mut extra = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
        let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(2)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if closed && answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains("Retry-After: 5"), "{answer}");
            assert!(answer.contains("too_many_connections"), "{answer}");
            refused = true;
            break;
        }
        // The spare connections may not all have been accepted yet.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a connection over the cap was refused with 503");
    let (_, token) = hub.add_device("newcomer").await;
    assert!(
        connect_with(&hub, &token, &[]).await.is_err(),
        "a device over the cap cannot connect"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(held);
    // Freed permits let the scrape (and anyone else) in again.
    metric_reaches(&hub, &limit("connections"), 2.0).await;
    connect_with(&hub, &token, &[]).await.unwrap();
    honest.finish(&hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_connections_are_dropped_at_the_handshake_deadline() {
    use tokio::io::AsyncWriteExt;
    let deadline = Duration::from_secs(1);
    let hub = TestHub::start_with(|config| config.limits.handshake_timeout = deadline).await;
    let honest = Honest::start(&hub).await;
    const SLOW: usize = 10;
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let addr = hub.addr;
        slow.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let started = tokio::time::Instant::now();
            let head = b"GET /ws/device HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for byte in head {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                let (_, closed) = read_until_closed(&mut stream, Duration::from_millis(100)).await;
                if closed {
                    break;
                }
            }
            started.elapsed()
        }));
    }
    for task in slow {
        let held_for = task.await.unwrap();
        assert!(
            held_for >= deadline - Duration::from_millis(200) && held_for < deadline * 4,
            "a dribbling connection was dropped after {held_for:?} (deadline {deadline:?})"
        );
    }
    metric_reaches(&hub, &limit("handshake_timeout"), SLOW as f64).await;
    honest.finish(&hub).await;
}
