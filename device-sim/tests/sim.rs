//! device-sim end to end against a small mock hub: provisioning over HTTP,
//! then devices streaming over WebSockets with chaos cuts, and taking
//! commands whose effect shows in their telemetry.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::Parser;
use device_sim::actuators::{LED, RELAY, SETPOINT};
use device_sim::args::Args;
use device_sim::driver;
use device_sim::sensors::{LED_STATE, RELAY_STATE, SETPOINT as SETPOINT_SENSOR};
use futures_util::{SinkExt, StreamExt};
use schema::{
    Ack, Command, CommandAction, CommandOutcome, Downlink, Limits, Uplink, Value, Welcome,
    decode_uplink, encode_downlink_to_vec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

const API_KEY: &str = "test-api-key";

/// The commands the hub sends each device, and the state each one sets.
const COMMANDS: [(u64, u16, Value); 3] = [
    (1, RELAY, Value::Bool(true)),
    (2, SETPOINT, Value::Float(27.5)),
    (3, LED, Value::Int(2)),
];

/// When the hub sends [`COMMANDS`] to a device.
#[derive(Debug, Clone, Copy, Default)]
struct Script {
    /// After this many telemetry frames of a session (0: right after
    /// Welcome); `None`: never.
    after_frames: Option<usize>,
    /// On every session (like a hub resending commands it has no final
    /// answer to), not only a device's first.
    every_session: bool,
}

#[derive(Default)]
struct Hub {
    /// Stored readings keyed like the hub's table: (device, sensor, time).
    stored: HashMap<(String, u16, u64), Value>,
    /// Highest committed seq per device.
    committed: BTreeMap<String, u64>,
    provisioned: Vec<String>,
    sessions: usize,
    /// Sessions per device.
    sessions_of: HashMap<String, usize>,
    script: Script,
    /// Command results as received: (device, command id, outcome).
    results: Vec<(String, u64, String)>,
}

impl Hub {
    /// One device's readings of `sensor`, oldest first.
    fn series(&self, device: &str, sensor: u16) -> Vec<Value> {
        let mut readings: Vec<(u64, Value)> = self
            .stored
            .iter()
            .filter(|((d, s, _), _)| d == device && *s == sensor)
            .map(|((_, _, time), value)| (*time, *value))
            .collect();
        readings.sort_by_key(|&(time, _)| time);
        readings.into_iter().map(|(_, value)| value).collect()
    }

    /// One device's results for command `id`.
    fn results_of(&self, device: &str, id: u64) -> Vec<&str> {
        self.results
            .iter()
            .filter(|(d, i, _)| d == device && *i == id)
            .map(|(_, _, outcome)| outcome.as_str())
            .collect()
    }
}

/// One listener for both the HTTP API (POST /api/v1/devices) and the device
/// WebSocket endpoint, told apart by the request line.
async fn start_hub(script: Script) -> (SocketAddr, Arc<Mutex<Hub>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hub = Arc::new(Mutex::new(Hub {
        script,
        ..Hub::default()
    }));
    let shared = Arc::clone(&hub);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let hub = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut peek = [0u8; 4];
                if tcp.peek(&mut peek).await.is_ok() && &peek == b"POST" {
                    provision(tcp, hub).await;
                } else {
                    device(tcp, hub).await;
                }
            });
        }
    });
    (addr, hub)
}

async fn provision(mut tcp: TcpStream, hub: Arc<Mutex<Hub>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    // Headers, then a small JSON body (Content-Length).
    loop {
        let Ok(n) = tcp.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&request).to_string();
    let authorized = text
        .lines()
        .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {API_KEY}")));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let name: String = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let response = if !authorized || !text.starts_with("POST /api/v1/devices ") || name.is_empty() {
        "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
    } else {
        hub.lock().expect("hub").provisioned.push(name.clone());
        let body = serde_json::json!({
            "id": name,
            "name": name,
            "token": format!("{name}.secret"),
            "created_at": "2026-01-01T00:00:00Z",
        })
        .to_string();
        format!(
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = tcp.write_all(response.as_bytes()).await;
}

// tungstenite's handshake callback returns its (large) ErrorResponse by value.
#[allow(clippy::result_large_err)]
async fn device(tcp: TcpStream, hub: Arc<Mutex<Hub>>) {
    let device_id = Arc::new(Mutex::new(String::new()));
    let id = Arc::clone(&device_id);
    let callback = move |request: &Request, mut response: Response| {
        let token = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        *id.lock().expect("id") = token.split('.').next().unwrap_or_default().to_owned();
        response.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(schema::SUBPROTOCOL),
        );
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let device_id = device_id.lock().expect("id").clone();
    let Some(Ok(Message::Binary(hello))) = ws.next().await else {
        return;
    };
    assert!(matches!(decode_uplink(&hello), Ok(Uplink::Hello(_))));
    let (last_stored_seq, commands_after) = {
        let mut h = hub.lock().expect("hub");
        h.sessions += 1;
        let script = h.script;
        let sessions = h.sessions_of.entry(device_id.clone()).or_insert(0);
        *sessions += 1;
        let first = *sessions == 1;
        let commands_after = script
            .after_frames
            .filter(|_| script.every_session || first);
        (
            h.committed.get(&device_id).copied().unwrap_or(0),
            commands_after,
        )
    };
    let welcome = Downlink::Welcome(Welcome {
        device_id: &device_id,
        server_time_ms: 0,
        last_stored_seq,
        limits: Limits {
            max_message_bytes: 65_536,
            max_readings_per_frame: 2048,
            idle_timeout_ms: 60_000,
        },
    });
    let bytes = encode_downlink_to_vec(&welcome).expect("encodes");
    if ws.send(Message::Binary(bytes.into())).await.is_err() {
        return;
    }
    if commands_after == Some(0) && send_commands(&mut ws).await.is_err() {
        return;
    }
    let mut frames = 0;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Binary(bytes) = message else {
            continue;
        };
        let t = match decode_uplink(&bytes) {
            Ok(Uplink::Telemetry(t)) => t,
            Ok(Uplink::CommandResult(r)) => {
                let outcome = match r.outcome {
                    CommandOutcome::Delivered => "delivered".to_owned(),
                    CommandOutcome::Succeeded(state) => format!("succeeded: {state:?}"),
                    CommandOutcome::Failed(reason) => format!("failed: {reason}"),
                    CommandOutcome::Rejected(reason) => format!("rejected: {reason}"),
                };
                hub.lock()
                    .expect("hub")
                    .results
                    .push((device_id.clone(), r.command_id, outcome));
                continue;
            }
            _ => continue,
        };
        frames += 1;
        let ack = {
            let mut h = hub.lock().expect("hub");
            for r in t.readings.iter() {
                h.stored.insert(
                    (
                        device_id.clone(),
                        r.sensor,
                        t.base_time_ms + u64::from(r.offset_ms),
                    ),
                    r.value,
                );
            }
            let committed = h.committed.entry(device_id.clone()).or_insert(0);
            *committed = (*committed).max(t.seq);
            *committed
        };
        let bytes = encode_downlink_to_vec(&Downlink::Ack(Ack { seq: ack })).expect("encodes");
        if ws.send(Message::Binary(bytes.into())).await.is_err() {
            return;
        }
        if commands_after == Some(frames) && send_commands(&mut ws).await.is_err() {
            return;
        }
    }
}

async fn send_commands(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for (id, actuator, value) in COMMANDS {
        let command = Downlink::Command(Command {
            id,
            actuator,
            action: CommandAction::Set(value),
            expires_at_ms: 0,
        });
        let bytes = encode_downlink_to_vec(&command).expect("encodes");
        ws.send(Message::Binary(bytes.into())).await?;
    }
    Ok(())
}

/// `sim-0001` ... `sim-{n}`.
fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("sim-{i:04}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_streams_survives_chaos_and_every_reading_is_stored_once() {
    // Commands after every Welcome: each reconnect resends them, and each
    // device must apply each of them exactly once all the same.
    let (addr, hub) = start_hub(Script {
        after_frames: Some(0),
        every_session: true,
    })
    .await;
    let args = Args::try_parse_from([
        "device-sim",
        "--hub",
        &format!("http://{addr}"),
        "--api-key",
        API_KEY,
        "--devices",
        "20",
        "--rate",
        "200",
        "--batch",
        "20",
        "--duration",
        "1.5",
        "--linger-ms",
        "20",
        "--chaos-disconnect-every",
        "0.1",
        "--drain-timeout",
        "10",
    ])
    .expect("valid flags");
    let summary = driver::run(&args).await.expect("runs");

    assert_eq!(summary.devices, 20);
    assert_eq!(summary.devices_connected, 20);
    assert_eq!(summary.outstanding, 0, "{summary:?}");
    assert!(summary.problems().is_empty());
    assert_eq!(summary.readings_acked, summary.readings_sent);
    // 20 devices x 200/s x 1.5 s, less the staggered starts (spread over one
    // frame period, 20/200 s: 200 readings on average), give or take ticks.
    assert!(
        (5_500..=6_000).contains(&summary.readings_sent),
        "{summary:?}"
    );
    assert!(summary.chaos_cuts >= 5, "{summary:?}");
    assert!(summary.reconnects >= 1, "{summary:?}");
    assert!(summary.ack_latency_ms.p50 > 0.0);
    assert!(summary.readings_per_s > 0.0);

    assert_eq!(summary.commands_applied, 20 * 3, "{summary:?}");

    let hub = hub.lock().expect("hub");
    let mut provisioned = hub.provisioned.clone();
    provisioned.sort();
    assert_eq!(provisioned, names(20));
    // Strictly increasing times per sensor: no reading collapsed into another.
    assert_eq!(hub.stored.len() as u64, summary.readings_sent);
    for device in names(20) {
        for (id, _, value) in COMMANDS {
            let results = hub.results_of(&device, id);
            let succeeded = format!("succeeded: {:?}", Some(value));
            assert!(
                results.contains(&succeeded.as_str()),
                "{device} {id}: {results:?}"
            );
            // Only ever applied (or answered from memory) with that outcome.
            assert!(
                results.iter().all(|r| *r == "delivered" || *r == succeeded),
                "{device} {id}: {results:?}"
            );
        }
        // The devices were commanded before generation began.
        for (sensor, value) in [
            (RELAY_STATE, Value::Bool(true)),
            (SETPOINT_SENSOR, Value::Float(27.5)),
            (LED_STATE, Value::Int(2)),
        ] {
            assert_eq!(hub.series(&device, sensor).last(), Some(&value), "{device}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_mid_run_changes_what_the_device_reports() {
    let (addr, hub) = start_hub(Script {
        after_frames: Some(3),
        every_session: false,
    })
    .await;
    let args = Args::try_parse_from([
        "device-sim",
        "--hub",
        &format!("http://{addr}"),
        "--api-key",
        API_KEY,
        "--devices",
        "2",
        "--rate",
        "200",
        "--batch",
        "10",
        "--duration",
        "1.2",
        "--linger-ms",
        "20",
    ])
    .expect("valid flags");
    let summary = driver::run(&args).await.expect("runs");
    assert!(summary.problems().is_empty(), "{summary:?}");
    assert_eq!(summary.commands_applied, 2 * 3, "{summary:?}");

    let hub = hub.lock().expect("hub");
    for device in names(2) {
        for (id, _, value) in COMMANDS {
            assert_eq!(
                hub.results_of(&device, id),
                vec![
                    "delivered".to_owned(),
                    format!("succeeded: {:?}", Some(value))
                ],
                "{device} {id}"
            );
        }
        // Each state sensor reports the old value, then (from the command
        // on) only the new one.
        for (sensor, new) in [
            (RELAY_STATE, Value::Bool(true)),
            (SETPOINT_SENSOR, Value::Float(27.5)),
            (LED_STATE, Value::Int(2)),
        ] {
            let series = hub.series(&device, sensor);
            let first_new = series
                .iter()
                .position(|v| *v == new)
                .unwrap_or_else(|| panic!("{device} sensor {sensor}: never {new:?}"));
            assert!(first_new > 0, "{device} sensor {sensor}: {series:?}");
            assert!(series[..first_new].iter().all(|v| *v == series[0]));
            assert!(series[first_new..].iter().all(|v| *v == new), "{series:?}");
        }
        assert_eq!(hub.series(&device, RELAY_STATE)[0], Value::Bool(false));
        assert_eq!(hub.series(&device, LED_STATE)[0], Value::Int(0));
    }
}

#[tokio::test]
async fn no_reachable_hub_fails_the_run() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let dir = std::env::temp_dir().join(format!("device-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tokens = dir.join("tokens.txt");
    std::fs::write(&tokens, "a.1\nb.2\n").expect("tokens");
    let args = Args::try_parse_from([
        "device-sim",
        "--hub",
        &format!("ws://127.0.0.1:{port}/ws/device"),
        "--tokens",
        tokens.to_str().expect("utf-8 path"),
        "--devices",
        "2",
        "--connect-timeout",
        "0.3",
    ])
    .expect("valid flags");
    let summary = driver::run(&args).await.expect("runs");
    assert_eq!(summary.devices_connected, 0);
    assert_eq!(
        summary.problems(),
        vec!["could not connect any device".to_owned()]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
