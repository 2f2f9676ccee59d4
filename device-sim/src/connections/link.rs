//! One device's connection, as cheap as a real session allows: TCP from a
//! chosen source address, the WebSocket upgrade with the device's token,
//! Hello, Welcome, then nothing but answering the hub's pings.
//!
//! The only module of `device-sim connections` that touches a socket. It
//! keeps no outbox and no session state: an idle device is a socket, a
//! WebSocket codec with a 512-byte read buffer, and the task polling it
//! (tungstenite answers pings as a side effect of reading). Every way an
//! attempt or a held connection can end becomes a [`Failure`] whose text is
//! the reason the report counts.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use schema::{Downlink, Hello, List, SensorDecl, Uplink, ValueKind};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream, client_async_tls_with_config};

/// An open device WebSocket.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the final close handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Longest close or error reason kept in a failure's text (the protocol's
/// own limit is 123 bytes).
const MAX_REASON_CHARS: usize = 80;

/// Where and how every connection goes; shared by all of them.
#[derive(Clone)]
pub struct Target {
    /// The device endpoint, `ws://…/ws/device` or `wss://…`.
    pub url: String,
    /// The hub's address, resolved once (the URL's host may be a name the
    /// TLS certificate needs, such as `localhost`).
    pub addr: SocketAddr,
    /// Plain for ws://, rustls trusting `--ca` for wss://.
    pub connector: Connector,
    /// The encoded Hello every device sends (they are all alike).
    pub hello: Bytes,
    /// Longest a whole attempt (TCP, TLS, upgrade, Hello, Welcome) may take.
    pub timeout: Duration,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why an attempt failed or a held connection ended, as the report names it:
/// `http 401 Unauthorized`, `close 4003: idle timeout`, `timeout: upgrade`,
/// `io: Connection refused (os error 111)`...
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The step an attempt was at, for a timeout's reason.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Tcp,
    Upgrade,
    Welcome,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Tcp => "tcp connect",
            Stage::Upgrade => "upgrade",
            Stage::Welcome => "welcome",
        }
    }
}

/// Small buffers: an idle device reads a Welcome and pings, and writes a
/// Hello and pongs; the simulator holds tens of thousands of these.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// The Hello of every simulated device: one float sensor, no actuator.
pub fn hello() -> anyhow::Result<Bytes> {
    let sensors = [SensorDecl {
        id: 1,
        name: "temperature",
        unit: "°C",
        kind: ValueKind::Float,
    }];
    let bytes = schema::encode_uplink_to_vec(&Uplink::Hello(Hello {
        version: schema::PROTOCOL_VERSION,
        firmware: "device-sim-connections",
        sensors: List::Borrowed(&sensors),
        actuators: List::Borrowed(&[]),
    }))?;
    Ok(Bytes::from(bytes))
}

/// Open one authenticated session: returns the stream once Welcome arrived.
pub async fn connect(
    target: &Target,
    token: &str,
    source: Option<IpAddr>,
) -> Result<WsStream, Failure> {
    let mut stage = Stage::Tcp;
    match timeout(target.timeout, attempt(target, token, source, &mut stage)).await {
        Ok(result) => result,
        Err(_) => Err(Failure(format!("timeout: {}", stage.name()))),
    }
}

async fn attempt(
    target: &Target,
    token: &str,
    source: Option<IpAddr>,
    stage: &mut Stage,
) -> Result<WsStream, Failure> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|err| io_failure(&err))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|err| Failure(format!("io: bind {ip}: {err}")))?;
    }
    let tcp = socket
        .connect(target.addr)
        .await
        .map_err(|err| io_failure(&err))?;
    tcp.set_nodelay(true).map_err(|err| io_failure(&err))?;

    *stage = Stage::Upgrade;
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|err| ws_failure(&err))?;
    let authorization = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Failure("bad token: not a valid header value".to_owned()))?;
    let headers = request.headers_mut();
    headers.insert(AUTHORIZATION, authorization);
    headers.insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(schema::SUBPROTOCOL),
    );
    let (mut ws, _response) = client_async_tls_with_config(
        request,
        tcp,
        Some(ws_config()),
        Some(target.connector.clone()),
    )
    .await
    .map_err(|err| ws_failure(&err))?;

    *stage = Stage::Welcome;
    ws.send(Message::Binary(target.hello.clone()))
        .await
        .map_err(|err| ws_failure(&err))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => match schema::decode_downlink(&bytes) {
                Ok(Downlink::Welcome(_)) => return Ok(ws),
                Ok(Downlink::Error(error)) => {
                    return Err(Failure(format!(
                        "error frame {}: {}",
                        error.code,
                        short(error.reason)
                    )));
                }
                Ok(Downlink::Ack(_) | Downlink::Command(_)) => {
                    return Err(Failure("downlink before Welcome".to_owned()));
                }
                Err(err) => return Err(Failure(format!("bad downlink: {err}"))),
            },
            Some(Ok(Message::Close(frame))) => return Err(close_failure(frame.as_ref())),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(ws_failure(&err)),
            None => return Err(Failure("eof before Welcome".to_owned())),
        }
    }
}

/// Read until the hub closes the connection or the stream fails, calling
/// `on_ping` for each ping (tungstenite answers them while reading). Never
/// returns otherwise: the caller races it against the end of the phase.
pub async fn idle(ws: &mut WsStream, on_ping: impl Fn()) -> Failure {
    loop {
        match ws.next().await {
            Some(Ok(Message::Ping(_))) => on_ping(),
            Some(Ok(Message::Close(frame))) => {
                let failure = close_failure(frame.as_ref());
                // tungstenite queued the close reply; let it go out.
                let _ = timeout(CLOSE_GRACE, async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return failure;
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return ws_failure(&err),
            None => return Failure("eof".to_owned()),
        }
    }
}

/// Close with 1000 and wait briefly for the hub's answer.
pub async fn close(mut ws: WsStream) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: Utf8Bytes::from_static("load test over"),
    };
    let _ = timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

fn short(reason: &str) -> String {
    reason.chars().take(MAX_REASON_CHARS).collect()
}

fn close_failure(frame: Option<&CloseFrame>) -> Failure {
    match frame {
        Some(frame) if frame.reason.is_empty() => {
            Failure(format!("close {}", u16::from(frame.code)))
        }
        Some(frame) => Failure(format!(
            "close {}: {}",
            u16::from(frame.code),
            short(&frame.reason)
        )),
        None => Failure("close without code".to_owned()),
    }
}

fn io_failure(err: &io::Error) -> Failure {
    Failure(format!("io: {err}"))
}

/// The reason of a WebSocket error: the refused upgrade's HTTP status,
/// the I/O error, the TLS alert...
fn ws_failure(err: &WsError) -> Failure {
    match err {
        WsError::Http(response) => {
            let status = response.status();
            Failure(format!(
                "http {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            ))
        }
        WsError::Io(err) => io_failure(err),
        WsError::Tls(err) => Failure(format!("tls: {err}")),
        WsError::ConnectionClosed | WsError::AlreadyClosed => Failure("eof".to_owned()),
        WsError::Protocol(err) => Failure(format!("protocol: {err}")),
        other => Failure(format!("websocket: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_decodes_as_the_hub_would() -> anyhow::Result<()> {
        let bytes = hello()?;
        match schema::decode_uplink(&bytes)? {
            Uplink::Hello(hello) => {
                assert_eq!(hello.version, schema::PROTOCOL_VERSION);
                assert_eq!(hello.sensors.len(), 1);
                assert_eq!(hello.actuators.len(), 0);
            }
            other => panic!("not a Hello: {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn reasons_name_the_status_code_and_error() {
        let close = CloseFrame {
            code: CloseCode::from(4003),
            reason: Utf8Bytes::from_static("idle timeout"),
        };
        assert_eq!(close_failure(Some(&close)).0, "close 4003: idle timeout");
        let bare = CloseFrame {
            code: CloseCode::Away,
            reason: Utf8Bytes::from_static(""),
        };
        assert_eq!(close_failure(Some(&bare)).0, "close 1001");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(ws_failure(&WsError::Io(refused)).0.starts_with("io: "));
        let response = tokio_tungstenite::tungstenite::http::Response::builder()
            .status(401)
            .body(None)
            .expect("response");
        assert_eq!(
            ws_failure(&WsError::Http(Box::new(response))).0,
            "http 401 Unauthorized"
        );
    }
}
