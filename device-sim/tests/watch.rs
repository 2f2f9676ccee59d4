//! `device-sim watch` end to end against a small stand-in for the hub's
//! browser stream (`GET /api/v1/devices` paged, `/api/v1/stream` with the
//! contract's auth, subscribe, telemetry and lagged snapshots): every
//! device is subscribed by exactly one client, every reading is counted,
//! resyncs and reconnects show in the summary, and a refused key stops the
//! clients instead of retrying. (bench/console_stream.sh runs it against
//! the real hub.)

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::Parser;
use device_sim::watch::{self, WatchArgs};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const KEY: &str = "watch-key";
/// Devices the stand-in lists, over pages of [`PAGE`].
const DEVICES: usize = 12;
const PAGE: usize = 5;
/// Telemetry messages per subscribed device per session, of two readings.
const MESSAGES_PER_DEVICE: usize = 3;

#[derive(Default)]
struct Hub {
    /// The subscribe lists received, one per session.
    subscriptions: Vec<Vec<String>>,
    /// Sessions welcomed.
    sessions: usize,
    /// Device list pages served.
    pages: usize,
}

fn device_id(i: usize) -> String {
    format!("{i:016x}")
}

async fn start_hub() -> (SocketAddr, Arc<Mutex<Hub>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hub = Arc::new(Mutex::new(Hub::default()));
    let shared = Arc::clone(&hub);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let hub = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut peek = [0u8; 64];
                let n = tcp.peek(&mut peek).await.unwrap_or(0);
                if peek[..n].starts_with(b"GET /api/v1/devices") {
                    list(tcp, hub).await;
                } else {
                    stream(tcp, hub).await;
                }
            });
        }
    });
    (addr, hub)
}

/// `GET /api/v1/devices?limit=..&after=..`, in pages of [`PAGE`] whatever
/// the limit, so paging is exercised.
async fn list(mut tcp: TcpStream, hub: Arc<Mutex<Hub>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request).to_string();
    let authorized = text
        .lines()
        .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {KEY}")));
    let response = if authorized {
        let target = text.split_whitespace().nth(1).unwrap_or_default();
        let after = target
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("after="))
            .map(str::to_owned);
        let start = after.map_or(0, |a| {
            (0..DEVICES)
                .position(|i| device_id(i) == a)
                .map_or(DEVICES, |p| p + 1)
        });
        let end = (start + PAGE).min(DEVICES);
        let devices: Vec<Value> = (start..end)
            .map(|i| json!({"id": device_id(i), "name": format!("sim-{i}"), "online": true, "revoked": false}))
            .collect();
        let next = (end < DEVICES).then(|| device_id(end - 1));
        hub.lock().expect("hub").pages += 1;
        let body = json!({"devices": devices, "next": next}).to_string();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
    };
    let _ = tcp.write_all(response.as_bytes()).await;
}

/// The browser stream: auth first, welcome and a start snapshot, then for
/// each subscribe some telemetry of every subscribed device, a lagged
/// snapshot and a stats message. The very first session is then closed
/// (1011), so the client must reconnect.
async fn stream(tcp: TcpStream, hub: Arc<Mutex<Hub>>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let text = |v: Value| Message::text(v.to_string());
    let auth: Value = match ws.next().await {
        Some(Ok(Message::Text(t))) => serde_json::from_str(&t).unwrap_or(Value::Null),
        _ => return,
    };
    if auth["type"] != "auth" || auth["key"] != KEY {
        let close = CloseFrame {
            code: CloseCode::from(4001),
            reason: "invalid API key".into(),
        };
        let _ = ws.close(Some(close)).await;
        return;
    }
    let session = {
        let mut hub = hub.lock().expect("hub");
        hub.sessions += 1;
        hub.sessions
    };
    let hello = [
        json!({"type":"welcome","protocol":1,"role":"viewer","instance":"test","key_id":"k1"}),
        json!({"type":"snapshot","reason":"start","at_ms":1,"truncated":false,
               "devices":[{"id":device_id(0),"name":null,"online":true,"last_seen_ms":null}]}),
    ];
    for message in hello {
        if ws.send(text(message)).await.is_err() {
            return;
        }
    }
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(t) = message else { continue };
        let request: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
        if request["type"] != "subscribe" {
            let _ = ws
                .send(text(json!({"type":"error","message":"unknown type"})))
                .await;
            continue;
        }
        let devices: Vec<String> = request["devices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        hub.lock().expect("hub").subscriptions.push(devices.clone());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        for device in &devices {
            for m in 0..MESSAGES_PER_DEVICE as u64 {
                let readings = json!([
                    {"sensor":1,"name":"temperature","unit":"°C","t":now + 2 * m,"v":20.5},
                    {"sensor":6,"name":"relay","unit":"","t":now + 2 * m + 1,"v":true},
                ]);
                let message = json!({"type":"telemetry","device":device,"readings":readings});
                if ws.send(text(message)).await.is_err() {
                    return;
                }
            }
        }
        let tail = [
            json!({"type":"snapshot","reason":"lagged","at_ms":2,"truncated":false,"devices":[]}),
            json!({"type":"stats","at_ms":3,"connected_devices":12,"readings_per_sec":10.0,
                   "frames_per_sec":1.0,"commands":{"queued":0,"sent":0,"delivered":0,
                   "succeeded":0,"failed":0,"rejected":0,"expired":0}}),
        ];
        for message in tail {
            if ws.send(text(message)).await.is_err() {
                return;
            }
        }
        if session == 1 {
            let close = CloseFrame {
                code: CloseCode::Error,
                reason: "test cut".into(),
            };
            let _ = ws.close(Some(close)).await;
            return;
        }
    }
}

fn watch_args(addr: SocketAddr, key: &str, clients: usize, per_client: usize) -> WatchArgs {
    WatchArgs::try_parse_from([
        "watch".to_owned(),
        "--hub".to_owned(),
        format!("http://{addr}"),
        "--key".to_owned(),
        key.to_owned(),
        "--clients".to_owned(),
        clients.to_string(),
        "--subscribe-per-client".to_owned(),
        per_client.to_string(),
        "--duration".to_owned(),
        "2.5".to_owned(),
        "--wait-devices".to_owned(),
        DEVICES.to_string(),
    ])
    .expect("watch flags")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_is_watched_once_and_every_reading_is_counted() {
    let (addr, hub) = start_hub().await;
    let clients = 4;
    let per_client = DEVICES / clients;
    let summary = watch::run(&watch_args(addr, KEY, clients, per_client))
        .await
        .expect("watch runs");

    let hub = hub.lock().expect("hub");
    assert_eq!(
        hub.pages,
        DEVICES.div_ceil(PAGE),
        "the device list was paged"
    );
    // One session per client, plus the reconnect after the cut.
    assert_eq!(hub.sessions, clients + 1);
    assert_eq!(summary.sessions, (clients + 1) as u64);
    let watched: BTreeSet<&String> = hub.subscriptions.iter().flatten().collect();
    assert_eq!(watched.len(), DEVICES, "every device subscribed");
    assert!(hub.subscriptions.iter().all(|s| s.len() == per_client));

    assert_eq!(summary.clients, clients);
    assert_eq!(summary.clients_connected, clients);
    assert_eq!(summary.devices_listed, DEVICES);
    assert_eq!(summary.devices_watched, DEVICES);
    let telemetry_messages = ((clients + 1) * per_client * MESSAGES_PER_DEVICE) as u64;
    assert_eq!(summary.messages_by_type["telemetry"], telemetry_messages);
    assert_eq!(summary.readings, 2 * telemetry_messages);
    assert_eq!(
        summary.resyncs,
        (clients + 1) as u64,
        "one lagged snapshot per session"
    );
    assert_eq!(
        summary.messages_by_type["snapshot"],
        2 * (clients + 1) as u64
    );
    assert_eq!(summary.messages_by_type["stats"], (clients + 1) as u64);
    assert_eq!(summary.disconnects, 1);
    assert_eq!(summary.close_codes.get(&1011), Some(&1));
    assert_eq!(summary.parse_errors, 0);
    assert!(summary.readings_per_s > 0.0);
    assert!(summary.problems().is_empty(), "{:?}", summary.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_fails_the_run_without_retrying() {
    let (addr, hub) = start_hub().await;
    let err = watch::run(&watch_args(addr, "wrong", 2, 3))
        .await
        .expect_err("the device list refuses the key");
    assert!(format!("{err:#}").contains("401"), "{err:#}");

    // The device list takes the key but the stream closes with 4001: each
    // client tries once, and the summary says why.
    let proxy = start_refusing_stream(addr).await;
    let mut args = watch_args(proxy, KEY, 2, 3);
    args.duration = 2.0;
    let summary = watch::run(&args).await.expect("watch runs");
    assert_eq!(hub.lock().expect("hub").sessions, 0);
    assert_eq!(summary.clients_connected, 0);
    assert_eq!(
        summary.close_codes.get(&4001),
        Some(&2),
        "one attempt per client"
    );
    assert_eq!(summary.fatal.values().sum::<u64>(), 2);
    assert!(!summary.problems().is_empty());
}

/// A proxy that answers the device list from `hub` but closes every stream
/// with 4001, as a hub does for a key it does not know.
async fn start_refusing_stream(hub: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut peek = [0u8; 64];
                let n = tcp.peek(&mut peek).await.unwrap_or(0);
                if peek[..n].starts_with(b"GET /api/v1/devices") {
                    if let Ok(mut upstream) = TcpStream::connect(hub).await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
                    }
                    return;
                }
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let _ = ws.next().await;
                let close = CloseFrame {
                    code: CloseCode::from(4001),
                    reason: "invalid API key".into(),
                };
                let _ = ws.close(Some(close)).await;
            });
        }
    });
    addr
}
