//! The MQTT bridge against a real Mosquitto and a real hub, with real
//! devices (firmware-client over WebSockets): commands in with replies on
//! the MQTT v5 Response Topic, refusals of malformed requests, a broker
//! restart mid-stream, and the stock `mosquitto_sub` seeing telemetry and
//! retained presence.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::broker::{MosquittoSub, MqttProbe, ReceivedMessage, TestBroker};
use common::db::Backend;
use common::{TestHub, now_ms};
use firmware_client::{Action, CommandCall, ConnectionState, Device, DeviceConfig};
use hub::store::{CommandQuery, CommandStatus};
use schema::{Value, ValueKind};
use serde_json::{Value as Json, json};

/// Generous: the test machine is small and shared.
const WAIT: Duration = Duration::from_secs(20);
const RELAY: u16 = 1;
const TEMPERATURE: u16 = 1;

/// Every call the relay handler saw.
type Calls = Arc<Mutex<Vec<CommandCall>>>;

/// Hub logs on the test's output when `RUST_LOG` is set (for example
/// `RUST_LOG=hub::mqtt=debug cargo test -p hub --test mqtt -- --nocapture`).
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A hub on `backend` bridged to `broker` under `prefix`.
async fn bridged_hub(backend: Backend, broker: &TestBroker, prefix: &str) -> TestHub {
    init_logs();
    let url = broker.url();
    let prefix = prefix.to_owned();
    let hub = TestHub::start_on_with(backend, move |config| {
        config.mqtt_url = Some(url);
        config.mqtt_prefix = prefix;
    })
    .await;
    wait_mqtt_ready(&hub, true).await;
    hub
}

/// `/readyz` as (status, body).
async fn readyz(hub: &TestHub) -> (u16, Json) {
    let response = reqwest::get(format!("{}/readyz", hub.http_url()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Waits until `/readyz` says the bridge is connected and subscribed
/// (`ready`) or that it is not.
async fn wait_mqtt_ready(hub: &TestHub, ready: bool) {
    let wanted = if ready { "ok" } else { "disconnected" };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = readyz(hub).await;
        if body["checks"]["mqtt"] == wanted {
            assert_eq!(status, if ready { 200 } else { 503 }, "{body}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never said mqtt {wanted}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real device with a temperature sensor and a relay whose handler
/// records its calls and reports the new state.
async fn relay_device(hub: &TestHub, name: &str) -> (String, Device, Calls) {
    let (id, token) = hub.add_device(name).await;
    let calls = Calls::default();
    let seen = Arc::clone(&calls);
    let mut config = DeviceConfig::new(hub.ws_url(), token)
        .sensor(TEMPERATURE, "temperature", "°C", ValueKind::Float)
        .actuator(RELAY, "relay", ValueKind::Bool)
        .on_command(RELAY, move |call| {
            seen.lock().unwrap().push(call.clone());
            match call.action {
                Action::Set(value) => Ok(Some(value)),
                _ => Err("the relay only takes Set".to_owned()),
            }
        });
    config.max_batch = 10;
    config.flush_interval = Duration::from_millis(20);
    config.backoff_base = Duration::from_millis(50);
    config.backoff_cap = Duration::from_millis(500);
    let device = Device::start(config).unwrap();
    let mut state = device.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await
    .expect("device connects")
    .unwrap();
    (id, device, calls)
}

/// Pushes `n` temperature readings 1 ms apart, starting at `base_ms`, and
/// waits until the hub acked them all.
async fn stream(device: &Device, base_ms: u64, n: u64) {
    for i in 0..n {
        device
            .push(
                TEMPERATURE,
                base_ms + i,
                Value::Float(20.0 + i as f64 / 10.0),
            )
            .await
            .unwrap();
    }
    assert!(device.flush(WAIT).await, "the hub acked every reading");
}

fn json_of(message: &ReceivedMessage) -> Json {
    serde_json::from_slice(&message.payload)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", message.topic, message.text()))
}

/// Commands stored for device `id`.
async fn stored_commands(hub: &TestHub, id: &str) -> usize {
    let device = hub.store.get_device(id).await.unwrap().unwrap();
    hub.store
        .list_commands(&CommandQuery {
            device_pk: device.pk,
            status: None,
            before_id: None,
            limit: 100,
        })
        .await
        .unwrap()
        .commands
        .len()
}

/// Publishes a command request with a Response Topic and Correlation Data
/// and waits for the reply that reports a final status. Every reply on the
/// way (queued, sent, delivered, final) must echo the Correlation Data.
async fn command_round_trip(
    probe: &mut MqttProbe,
    request_topic: &str,
    body: Json,
    reply_topic: &str,
    correlation: &[u8],
) -> Json {
    probe
        .publish_with_response(
            request_topic,
            body.to_string(),
            reply_topic,
            correlation.to_vec(),
        )
        .await;
    loop {
        let reply = probe.wait_for_topic(reply_topic, WAIT).await;
        assert_eq!(
            reply.correlation_data.as_deref(),
            Some(correlation),
            "correlation data echoed on every reply"
        );
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        let view = json_of(&reply);
        let status = view["status"].as_str().unwrap().to_owned();
        if CommandStatus::parse(&status).unwrap().is_final() {
            return view;
        }
    }
}

async fn command_over_mqtt_reaches_the_device_and_answers_on_the_response_topic(backend: Backend) {
    let broker = TestBroker::start();
    let hub = bridged_hub(backend, &broker, "hub").await;
    let (id, device, calls) = relay_device(&hub, "pump-1").await;
    let mut probe = MqttProbe::connect(broker.port).await;
    probe.subscribe("app/replies/#").await;
    // A second client for the status topics (a probe's waits skip what
    // they do not match).
    let mut watcher = MqttProbe::connect(broker.port).await;
    watcher
        .subscribe(&format!("hub/devices/{id}/commands/+/status"))
        .await;

    let view = command_round_trip(
        &mut probe,
        &format!("hub/devices/{id}/commands"),
        json!({"actuator": "relay", "value": true, "ttl": 60}),
        "app/replies/pump-1",
        b"corr-42",
    )
    .await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["device"], id.as_str());
    assert_eq!(view["actuator"], "relay");
    assert_eq!(view["value"], true);
    assert_eq!(view["result_value"], true);
    assert_eq!(view["source"], "mqtt");
    let command_id = view["id"].as_i64().unwrap();

    // The same changes on the command's own status topic, ending in success.
    let status_topic = format!("hub/devices/{id}/commands/{command_id}/status");
    let final_status = watcher
        .wait_for(
            |m| m.topic == status_topic && json_of(m)["status"] == "succeeded",
            WAIT,
        )
        .await;
    assert_eq!(final_status.correlation_data, None);
    assert!(!final_status.retain);

    // The handler ran once, with the value asked for; the database agrees.
    let seen = calls.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].id, command_id as u64);
    assert_eq!(seen[0].action, Action::Set(Value::Bool(true)));
    let stored = hub.store.command(command_id).await.unwrap().unwrap();
    assert_eq!(stored.status, CommandStatus::Succeeded);
    assert_eq!(stored.source, "mqtt");
    let reply = stored.reply.expect("reply address stored");
    assert_eq!(reply.topic, "app/replies/pump-1");
    assert_eq!(reply.correlation.as_deref(), Some(&b"corr-42"[..]));

    // The same idempotency key twice: one command, and the repeat is
    // answered on its own Response Topic with its own Correlation Data.
    let request = json!({"actuator": 1, "value": false, "idempotency_key": "k-1"});
    let first = command_round_trip(
        &mut probe,
        &format!("hub/devices/{id}/commands"),
        request.clone(),
        "app/replies/k1-a",
        b"a",
    )
    .await;
    let again = command_round_trip(
        &mut probe,
        &format!("hub/devices/{id}/commands"),
        request,
        "app/replies/k1-b",
        b"b",
    )
    .await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["status"], "succeeded");
    assert_eq!(stored_commands(&hub, &id).await, 2);
    assert_eq!(calls.lock().unwrap().len(), 2);

    device.shutdown().await;
    probe.disconnect().await;
    watcher.disconnect().await;
}

backend_test!(
    command_over_mqtt_round_trip,
    command_over_mqtt_reaches_the_device_and_answers_on_the_response_topic
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_answered_on_errors_and_the_response_topic_and_change_nothing() {
    let broker = TestBroker::start();
    let hub = bridged_hub(Backend::Sqlite, &broker, "hub").await;
    let (id, device, calls) = relay_device(&hub, "valve-1").await;
    let mut probe = MqttProbe::connect(broker.port).await;
    probe.subscribe("hub/errors").await;
    probe.subscribe("app/replies/#").await;
    let mut watcher = MqttProbe::connect(broker.port).await;
    watcher.subscribe("hub/devices/+/commands/+/status").await;

    let good_topic = format!("hub/devices/{id}/commands");
    let unknown_topic = "hub/devices/ffffffffffffffff/commands".to_owned();
    // (request topic, body, expected code, expected field)
    let cases: [(&str, &str, &str, Option<&str>); 6] = [
        (
            &good_topic,
            "{\"actuator\": \"relay\", ",
            "bad_request",
            None,
        ),
        (&good_topic, "[true]", "invalid", Some("body")),
        (
            &unknown_topic,
            r#"{"actuator": "relay", "value": true}"#,
            "not_found",
            None,
        ),
        (
            &good_topic,
            r#"{"actuator": "fan", "value": true}"#,
            "invalid",
            Some("actuator"),
        ),
        (
            &good_topic,
            r#"{"actuator": "relay", "value": 1}"#,
            "invalid",
            Some("value"),
        ),
        (
            &good_topic,
            r#"{"actuator": "relay", "value": true, "ttl": "soon"}"#,
            "invalid",
            Some("ttl"),
        ),
    ];
    for (i, (topic, body, code, field)) in cases.iter().enumerate() {
        let reply_topic = format!("app/replies/{i}");
        let correlation = format!("case-{i}").into_bytes();
        probe
            .publish_with_response(topic, *body, &reply_topic, correlation.clone())
            .await;
        // Both answers, in whichever order the broker delivers them.
        let (mut reply, mut error) = (None, None);
        while reply.is_none() || error.is_none() {
            let answer = probe
                .wait_for(|m| m.topic == reply_topic || m.topic == "hub/errors", WAIT)
                .await;
            if answer.topic == reply_topic {
                reply = Some(answer);
            } else {
                error = Some(answer);
            }
        }
        let (reply, error) = (reply.unwrap(), error.unwrap());
        assert_eq!(reply.correlation_data.as_deref(), Some(&correlation[..]));
        for answer in [&reply, &error] {
            let json = json_of(answer);
            assert_eq!(json["error"]["code"], *code, "case {i}: {json}");
            assert_eq!(json["error"]["field"].as_str(), *field, "case {i}: {json}");
            assert!(
                !json["error"]["message"].as_str().unwrap().is_empty(),
                "{json}"
            );
            assert_eq!(json["topic"], *topic, "case {i}: {json}");
        }
        assert_eq!(reply.payload, error.payload);
        assert_eq!(error.correlation_data, None);
    }

    // Without a Response Topic the refusal still goes to hub/errors.
    probe
        .publish(&good_topic, r#"{"actuator": "relay", "value": "on"}"#)
        .await;
    let error = probe.wait_for_topic("hub/errors", WAIT).await;
    assert_eq!(json_of(&error)["error"]["field"], "value");

    // Nothing was stored, sent or announced; the bridge is still up and a
    // valid request after all that works.
    assert_eq!(stored_commands(&hub, &id).await, 0);
    assert!(calls.lock().unwrap().is_empty());
    assert_eq!(
        watcher.next_message(Duration::from_millis(300)).await,
        None,
        "no command status was published"
    );
    let view = command_round_trip(
        &mut probe,
        &good_topic,
        json!({"actuator": "relay", "value": true}),
        "app/replies/ok",
        b"ok",
    )
    .await;
    assert_eq!(view["status"], "succeeded");
    assert_eq!(stored_commands(&hub, &id).await, 1);
    device.shutdown().await;
    probe.disconnect().await;
    watcher.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_does_not_stop_devices_and_the_bridge_comes_back_subscribed() {
    let mut broker = TestBroker::start();
    let hub = bridged_hub(Backend::Sqlite, &broker, "hub").await;
    let (id, device, calls) = relay_device(&hub, "meter-1").await;
    let base = now_ms() - 60_000;
    stream(&device, base, 50).await;

    broker.stop();
    wait_mqtt_ready(&hub, false).await;
    // Meanwhile the device keeps streaming, at its own pace for a couple of
    // seconds (several failed reconnects of the bridge), and the hub keeps
    // acking.
    for round in 0..5 {
        stream(&device, base + 50 + round * 100, 100).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let (status, body) = readyz(&hub).await;
    assert_eq!(
        (status, body["checks"]["mqtt"].clone()),
        (503, json!("disconnected"))
    );
    assert_eq!(hub.stored_readings().await, 550);

    broker.resume();
    // Ready again means reconnected and subscribed again.
    wait_mqtt_ready(&hub, true).await;
    let mut probe = MqttProbe::connect(broker.port).await;
    // The restarted broker kept nothing (no persistence): the retained
    // online status a new subscriber gets was announced again by the bridge.
    let status_topic = format!("hub/devices/{id}/status");
    probe.subscribe(&status_topic).await;
    let presence = probe.wait_for_topic(&status_topic, WAIT).await;
    assert!(presence.retain, "announced again as a retained message");
    assert_eq!(json_of(&presence)["online"], true);
    probe.subscribe("app/replies/#").await;
    probe
        .subscribe(&format!("hub/devices/{id}/telemetry"))
        .await;
    let view = command_round_trip(
        &mut probe,
        &format!("hub/devices/{id}/commands"),
        json!({"actuator": "relay", "value": true}),
        "app/replies/after-restart",
        b"after",
    )
    .await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(calls.lock().unwrap().len(), 1);

    // Telemetry is announced again too.
    stream(&device, base + 1_000, 5).await;
    let telemetry = probe
        .wait_for_topic(&format!("hub/devices/{id}/telemetry"), WAIT)
        .await;
    assert_eq!(json_of(&telemetry)["device"], id.as_str());
    assert_eq!(hub.stored_readings().await, 555);
    device.shutdown().await;
    probe.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_sees_telemetry_and_the_retained_presence_with_its_session_counter() {
    let broker = TestBroker::start();
    let hub = bridged_hub(Backend::Sqlite, &broker, "plant/a").await;
    let (id, token) = hub.add_device("sensor-1").await;
    let status_topic = format!("plant/a/devices/{id}/status");
    let mut probe = MqttProbe::connect(broker.port).await;
    probe.subscribe(&status_topic).await;

    let start_device = || {
        let mut config = DeviceConfig::new(hub.ws_url(), token.clone()).sensor(
            TEMPERATURE,
            "temperature",
            "°C",
            ValueKind::Float,
        );
        config.flush_interval = Duration::from_millis(20);
        Device::start(config).unwrap()
    };
    let device = start_device();
    // The retained message is at the broker once a subscriber saw it.
    let online = json_of(&probe.wait_for_topic(&status_topic, WAIT).await);
    assert_eq!(online["device"], id.as_str());
    assert_eq!(online["online"], true);
    let session = online["session"].as_i64().unwrap();
    assert!(session >= 1, "{online}");

    // Started after the device connected: the status it sees was retained.
    // `-F "%r %t %p"`: retain flag, topic, payload.
    let mut sub = MosquittoSub::start(
        broker.port,
        &format!("plant/a/devices/{id}/#"),
        &["-F", "%r %t %p"],
    )
    .await;
    let line = sub
        .lines
        .wait_for(|line| line.starts_with(&format!("1 {status_topic} ")), WAIT)
        .await;
    let retained: Json = serde_json::from_str(line.splitn(3, ' ').nth(2).unwrap()).unwrap();
    assert_eq!(retained, online);

    let base = now_ms() - 1_000;
    for i in 0..3 {
        device
            .push(TEMPERATURE, base + i, Value::Float(21.5 + i as f64))
            .await
            .unwrap();
    }
    assert!(device.flush(WAIT).await);
    let telemetry_topic = format!("plant/a/devices/{id}/telemetry");
    let mut readings = Vec::new();
    while readings.len() < 3 {
        let line = sub
            .lines
            .wait_for(
                |line| line.starts_with(&format!("0 {telemetry_topic} ")),
                WAIT,
            )
            .await;
        let batch: Json = serde_json::from_str(line.splitn(3, ' ').nth(2).unwrap()).unwrap();
        assert_eq!(batch["device"], id.as_str());
        assert!(batch["seq"].as_u64().unwrap() >= 1, "{batch}");
        readings.extend(batch["readings"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(
        readings[0],
        json!({"sensor": "temperature", "sensor_id": 1, "unit": "°C",
               "time": hub::api::time::format_ms(base as i64), "value": 21.5})
    );
    assert_eq!(readings[2]["value"], 23.5);

    // Offline carries the same counter; the next connection a higher one,
    // and each is what a late subscriber finds retained.
    device.shutdown().await;
    let offline = json_of(&probe.wait_for_topic(&status_topic, WAIT).await);
    assert_eq!(
        (offline["online"].clone(), offline["session"].as_i64()),
        (json!(false), Some(session))
    );
    let device = start_device();
    let again = json_of(&probe.wait_for_topic(&status_topic, WAIT).await);
    assert_eq!(again["online"], true);
    assert!(again["session"].as_i64().unwrap() > session, "{again}");
    let mut late = MosquittoSub::start(broker.port, &status_topic, &["-F", "%r %p"]).await;
    let line = late
        .lines
        .wait_for(|line| line.starts_with("1 "), WAIT)
        .await;
    let retained: Json = serde_json::from_str(&line[2..]).unwrap();
    assert_eq!(retained, again);
    device.shutdown().await;
    probe.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_shuts_down_announces_its_devices_offline_before_it_leaves() {
    let broker = TestBroker::start();
    let mut hub = bridged_hub(Backend::Sqlite, &broker, "hub").await;
    let (id, device, _calls) = relay_device(&hub, "door-1").await;
    let status_topic = format!("hub/devices/{id}/status");
    let mut probe = MqttProbe::connect(broker.port).await;
    probe.subscribe(&status_topic).await;
    let online = json_of(&probe.wait_for(|m| m.retain, WAIT).await);
    assert_eq!(online["online"], true);

    // The bridge stops after the device connections have drained, so the
    // offline status still goes out (and stays retained).
    hub.stop().await;
    let offline = json_of(&probe.wait_for_topic(&status_topic, WAIT).await);
    assert_eq!(offline["online"], false, "{offline}");
    assert_eq!(offline["session"], online["session"]);
    let mut late = MosquittoSub::start(broker.port, &status_topic, &["-F", "%r %p"]).await;
    let line = late
        .lines
        .wait_for(|line| line.starts_with("1 "), WAIT)
        .await;
    let retained: Json = serde_json::from_str(&line[2..]).unwrap();
    assert_eq!(retained, offline);
    drop(device);
    probe.disconnect().await;
}
