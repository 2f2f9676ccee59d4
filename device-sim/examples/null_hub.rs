//! A hub that stores nothing: it accepts any bearer token, answers Hello with
//! Welcome and every telemetry frame with an immediate Ack. For measuring
//! device-sim's own cost (run it beside the simulator and compare CPU), and
//! for trying the simulator without a database.
//!
//! ```sh
//! cargo run --release -p device-sim --example null_hub -- 127.0.0.1:9000
//! seq -f 'dev-%04g.x' 1 1000 > /tmp/tokens.txt
//! cargo run --release -p device-sim -- --hub ws://127.0.0.1:9000/ws/device \
//!     --tokens /tmp/tokens.txt --devices 1000 --rate 300 --batch 50
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use schema::{Ack, Downlink, Limits, Uplink, Welcome, decode_uplink, encode_downlink_to_vec};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Highest acked seq per device, so reconnects resume like the real hub.
type Committed = Arc<Mutex<HashMap<String, u64>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("null hub on ws://{}/ws/device", listener.local_addr()?);
    let committed: Committed = Arc::default();
    let readings = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&readings);
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = counter.load(Ordering::Relaxed);
            eprintln!("{} readings acked ({}/s)", now, (now - last) / 5);
            last = now;
        }
    });
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp, Arc::clone(&committed), Arc::clone(&readings)));
    }
}

// tungstenite's handshake callback returns its (large) ErrorResponse by value.
#[allow(clippy::result_large_err)]
async fn serve(tcp: TcpStream, committed: Committed, readings: Arc<AtomicU64>) {
    let mut device_id = String::new();
    let callback = |request: &Request, mut response: Response| {
        device_id = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| token.split('.').next())
            .unwrap_or_default()
            .to_owned();
        response.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(schema::SUBPROTOCOL),
        );
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let Some(Ok(Message::Binary(_hello))) = ws.next().await else {
        return;
    };
    let last_stored_seq = lock(&committed).get(&device_id).copied().unwrap_or(0);
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
    if send(&mut ws, &welcome).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = ws.next().await {
        let Message::Binary(bytes) = message else {
            continue;
        };
        let Ok(Uplink::Telemetry(telemetry)) = decode_uplink(&bytes) else {
            continue;
        };
        readings.fetch_add(telemetry.readings.len() as u64, Ordering::Relaxed);
        let seq = {
            let mut committed = lock(&committed);
            let seq = committed.entry(device_id.clone()).or_insert(0);
            *seq = (*seq).max(telemetry.seq);
            *seq
        };
        if send(&mut ws, &Downlink::Ack(Ack { seq })).await.is_err() {
            return;
        }
    }
}

fn lock(committed: &Committed) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
    committed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn send(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    frame: &Downlink<'_>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    match encode_downlink_to_vec(frame) {
        Ok(bytes) => ws.send(Message::Binary(bytes.into())).await,
        Err(_) => Ok(()),
    }
}
