//! One browser-stream client: connect to `/api/v1/stream`, authenticate
//! with the first message, subscribe to its slice of devices after the
//! welcome, then read and parse every message until told to stop.
//!
//! Like a browser tab, it reconnects (after a second) when the hub closes
//! the socket, and gives up only when the hub refuses its key or its first
//! message (close 4001 or 1008), which no retry would change.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::message::{self, ClientMessage, Kind, ServerMessage};

/// Time allowed for the TCP, TLS and WebSocket handshakes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before reconnecting after a lost connection.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Time allowed for the close handshake when stopping.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Read buffer per client. tungstenite zeroes a whole read buffer before
/// every socket read (its default is 128 KiB), which on 100 clients sharing
/// the hub's machine costs more CPU than the parsing; messages are a few
/// KiB.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Close codes after which reconnecting cannot help: bad key, bad first
/// message.
const FATAL_CLOSE_CODES: [u16; 2] = [4001, 1008];

/// What one client needs to run.
#[derive(Clone)]
pub struct ClientPlan {
    /// `ws://host:port/api/v1/stream` (or wss).
    pub url: String,
    /// The API key sent in the auth message.
    pub key: Arc<str>,
    /// Device ids to subscribe to.
    pub devices: Vec<String>,
    /// TLS settings for wss (None: the defaults with the web roots).
    pub connector: Option<Connector>,
}

/// What one client saw.
#[derive(Debug, Clone)]
pub struct ClientStats {
    /// Welcomes received (one per successful session).
    pub sessions: u64,
    /// Messages received, by [`Kind::index`].
    pub messages: [u64; Kind::ALL.len()],
    /// Telemetry readings received.
    pub readings: u64,
    /// Snapshots with reason `lagged`: the hub dropped this client's queue.
    pub resyncs: u64,
    /// Sessions that ended while the run was still going.
    pub disconnects: u64,
    /// Connection attempts that failed before a session started.
    pub connect_failures: u64,
    /// Text frames that were not a valid message.
    pub parse_errors: u64,
    /// Binary frames (the stream sends none).
    pub binary_frames: u64,
    /// Bytes of text received.
    pub bytes: u64,
    /// When the first telemetry message arrived.
    pub first_telemetry: Option<Instant>,
    /// When the last telemetry message arrived.
    pub last_telemetry: Option<Instant>,
    /// Milliseconds from a telemetry message's newest reading (device
    /// clock) to its arrival here.
    pub delay_ms: Histogram<u64>,
    /// Close codes received from the hub, with their reasons.
    pub close_codes: Vec<(u16, String)>,
    /// Why this client gave up, if it did.
    pub fatal: Option<String>,
    /// The last connection error, for the summary.
    pub last_error: Option<String>,
    /// The last `error` message from the hub.
    pub last_hub_error: Option<String>,
}

impl ClientStats {
    /// Nothing seen yet.
    pub fn new() -> anyhow::Result<Self> {
        Ok(ClientStats {
            sessions: 0,
            messages: [0; Kind::ALL.len()],
            readings: 0,
            resyncs: 0,
            disconnects: 0,
            connect_failures: 0,
            parse_errors: 0,
            binary_frames: 0,
            bytes: 0,
            first_telemetry: None,
            last_telemetry: None,
            delay_ms: Histogram::new_with_bounds(1, 3_600_000, 3)?,
            close_codes: Vec::new(),
            fatal: None,
            last_error: None,
            last_hub_error: None,
        })
    }

    /// Counts one parsed message.
    pub fn record(&mut self, message: &ServerMessage, now: Instant, now_ms: u64) {
        self.messages[message.kind().index()] += 1;
        match message {
            ServerMessage::Welcome { .. } => self.sessions += 1,
            ServerMessage::Snapshot { reason, .. } if reason == "lagged" => self.resyncs += 1,
            ServerMessage::Telemetry { readings, .. } => {
                self.readings += readings.len() as u64;
                self.first_telemetry.get_or_insert(now);
                self.last_telemetry = Some(now);
                if let Some(newest) = readings.iter().map(|r| r.t).max() {
                    let _ = self.delay_ms.record(now_ms.saturating_sub(newest).max(1));
                }
            }
            ServerMessage::Error { message } => self.last_hub_error = Some(message.clone()),
            _ => {}
        }
    }
}

/// How a session ended.
enum Ended {
    /// The run is over.
    Stopped,
    /// The connection was lost; try again.
    Lost,
    /// The hub refused us for a reason a retry will not fix.
    Fatal(String),
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Runs one client until `cancel`, then returns what it saw.
pub async fn run(plan: ClientPlan, cancel: CancellationToken) -> anyhow::Result<ClientStats> {
    let mut stats = ClientStats::new()?;
    while !cancel.is_cancelled() {
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            plan.url.as_str(),
            Some(WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES)),
            true,
            plan.connector.clone(),
        );
        let socket = tokio::select! {
            () = cancel.cancelled() => break,
            result = timeout(CONNECT_TIMEOUT, connect) => match result {
                Ok(Ok((socket, _response))) => socket,
                Ok(Err(err)) => {
                    stats.connect_failures += 1;
                    stats.last_error = Some(format!("connecting to {}: {err}", plan.url));
                    if pause(&cancel).await { break } else { continue }
                }
                Err(_) => {
                    stats.connect_failures += 1;
                    stats.last_error = Some(format!("connecting to {}: timed out", plan.url));
                    if pause(&cancel).await { break } else { continue }
                }
            },
        };
        match session(socket, &plan, &mut stats, &cancel).await {
            Ended::Stopped => break,
            Ended::Lost => {
                stats.disconnects += 1;
                if pause(&cancel).await {
                    break;
                }
            }
            Ended::Fatal(why) => {
                stats.disconnects += 1;
                stats.fatal = Some(why);
                break;
            }
        }
    }
    Ok(stats)
}

/// Waits [`RECONNECT_DELAY`]; true if the run ended meanwhile.
async fn pause(cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = sleep(RECONNECT_DELAY) => false,
    }
}

/// One connection: auth, subscribe after the welcome, read until it ends.
async fn session(
    mut socket: Socket,
    plan: &ClientPlan,
    stats: &mut ClientStats,
    cancel: &CancellationToken,
) -> Ended {
    let auth = ClientMessage::Auth { key: &plan.key }.to_json();
    if let Err(err) = socket.send(Message::text(auth)).await {
        stats.last_error = Some(format!("sending auth: {err}"));
        return Ended::Lost;
    }
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => {
                let close = CloseFrame { code: CloseCode::Normal, reason: "done".into() };
                let _ = timeout(CLOSE_TIMEOUT, socket.close(Some(close))).await;
                return Ended::Stopped;
            }
            next = socket.next() => next,
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                stats.binary_frames += 1;
                continue;
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                stats.close_codes.push((code, reason.clone()));
                if FATAL_CLOSE_CODES.contains(&code) {
                    return Ended::Fatal(format!("hub closed with {code} {reason:?}"));
                }
                return Ended::Lost;
            }
            // Pings are answered by tungstenite on the next read.
            Some(Ok(_)) => continue,
            Some(Err(err)) => {
                stats.last_error = Some(format!("reading: {err}"));
                return Ended::Lost;
            }
            None => return Ended::Lost,
        };
        stats.bytes += text.len() as u64;
        let message = match message::parse(&text) {
            Ok(message) => message,
            Err(err) => {
                stats.parse_errors += 1;
                stats.last_error = Some(format!("unparsable message: {err}"));
                continue;
            }
        };
        stats.record(&message, Instant::now(), now_ms());
        if let ServerMessage::Welcome { .. } = message {
            let subscribe = ClientMessage::Subscribe {
                devices: &plan.devices,
            }
            .to_json();
            if let Err(err) = socket.send(Message::text(subscribe)).await {
                stats.last_error = Some(format!("sending subscribe: {err}"));
                return Ended::Lost;
            }
        }
    }
}

/// Wall clock in ms since the epoch (the clock readings are stamped with).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_counts_kinds_readings_and_resyncs() -> anyhow::Result<()> {
        let mut stats = ClientStats::new()?;
        let start = Instant::now();
        for text in [
            r#"{"type":"welcome","protocol":1,"role":"viewer","instance":"i","key_id":"k"}"#,
            r#"{"type":"snapshot","reason":"start","at_ms":1,"devices":[],"truncated":false}"#,
            r#"{"type":"telemetry","device":"d","readings":[{"sensor":1,"t":1000,"v":1.5},{"sensor":2,"t":1010,"v":false}]}"#,
            r#"{"type":"snapshot","reason":"lagged","at_ms":2,"devices":[],"truncated":false}"#,
            r#"{"type":"telemetry","device":"d","readings":[{"sensor":1,"t":1020,"v":2}]}"#,
        ] {
            stats.record(&message::parse(text)?, start, 1050);
        }
        assert_eq!(stats.sessions, 1);
        assert_eq!(stats.readings, 3);
        assert_eq!(stats.resyncs, 1);
        assert_eq!(stats.messages[Kind::Snapshot.index()], 2);
        assert_eq!(stats.messages[Kind::Telemetry.index()], 2);
        assert_eq!(stats.delay_ms.len(), 2);
        assert_eq!(stats.delay_ms.max(), 40);
        assert_eq!(stats.first_telemetry, Some(start));
        Ok(())
    }
}
