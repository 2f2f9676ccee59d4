//! One browser's live-stream connection: the only code that touches its socket.
//!
//! First the API key, in the first message (browsers cannot set headers on
//! a WebSocket, and a key in the URL would end up in logs): a good key gets
//! `welcome` and a `snapshot`; a bad one closes 4001 and counts against the
//! source address in the failed-authentication throttle, like a bad Bearer
//! key; none within the handshake timeout closes 4008; anything else first
//! closes 1008.
//!
//! Then one loop: what the dispatcher queued ([`super::fanout`]) is written
//! out, each write bounded by `--send-timeout-secs` (a browser that does not
//! read is dropped), a lagged client gets a fresh snapshot instead of what
//! it missed, `subscribe` messages change its telemetry subscription, and
//! hub shutdown closes it with 1001.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tracing::{debug, info, warn};

use super::fanout::{ClientHandle, Fanout};
use super::protocol::{
    CLOSE_AUTH_TIMEOUT, CLOSE_INVALID_KEY, ClientMessage, PROTOCOL, ServerMessage, SnapshotReason,
    parse,
};
use super::snapshot::snapshot;
use crate::metrics::{DbOp, Limit};
use crate::state::AppState;
use crate::store::ApiKeyIdentity;
use crate::ws_close::{close_gracefully, truncate_reason};

/// Most queued messages written with one flush.
const WRITE_BATCH: usize = 64;
/// How long a batch waits for more messages before it is flushed: invisible
/// on a dashboard, and it turns a busy client's many small writes into few.
const WRITE_LINGER: Duration = Duration::from_millis(25);

/// Why the connection ends.
#[derive(Debug)]
enum Ending {
    /// Close with this code and reason.
    Close(u16, String),
    /// The peer closed or the connection broke; nothing to send.
    PeerGone,
    /// A write did not finish within the send timeout: dropped without a
    /// close frame (it could not be written either).
    SlowConsumer,
}

impl Ending {
    fn close(code: u16, reason: impl Into<String>) -> Ending {
        Ending::Close(code, reason.into())
    }
}

/// Keeps `hub_stream_clients` right however the task ends.
struct Counted(AppState);

impl Counted {
    fn new(state: &AppState) -> Counted {
        state.metrics.stream_clients.inc();
        Counted(state.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.metrics.stream_clients.dec();
    }
}

/// Serves one upgraded stream socket until it closes.
pub async fn serve(state: AppState, fanout: Arc<Fanout>, socket: WebSocket, peer: Option<IpAddr>) {
    let _counted = Counted::new(&state);
    let mut conn = Connection { state, socket };
    let ending = match conn.authenticate(peer).await {
        Ok(key) => {
            info!(key_id = %key.id, role = %key.role, "live-stream client connected");
            let client = fanout.register(&conn.state);
            conn.run(&key, client).await
        }
        Err(ending) => ending,
    };
    match ending {
        Ending::Close(code, reason) => {
            debug!(code, reason, "live-stream client closed");
            conn.close(code, &reason).await;
        }
        Ending::PeerGone => debug!("live-stream client left"),
        Ending::SlowConsumer => info!(
            timeout_secs = conn.state.config.limits.send_timeout.as_secs_f32(),
            "live-stream client dropped: it did not read within the send timeout"
        ),
    }
}

struct Connection {
    state: AppState,
    socket: WebSocket,
}

impl Connection {
    /// Waits for the `auth` message and checks its key.
    async fn authenticate(&mut self, peer: Option<IpAddr>) -> Result<ApiKeyIdentity, Ending> {
        let deadline = tokio::time::Instant::now() + self.state.config.limits.handshake_timeout;
        let text = loop {
            let message = tokio::select! {
                _ = self.state.shutdown.cancelled() => {
                    return Err(Ending::close(schema::close::GOING_AWAY, "hub shutting down"));
                }
                message = tokio::time::timeout_at(deadline, self.socket.recv()) => message,
            };
            match message {
                Err(_) => {
                    return Err(Ending::close(CLOSE_AUTH_TIMEOUT, "no auth message in time"));
                }
                Ok(None | Some(Ok(Message::Close(_)))) => return Err(Ending::PeerGone),
                Ok(Some(Err(err))) => return Err(read_error(err)),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Text(text)))) => break text,
                Ok(Some(Ok(Message::Binary(_)))) => {
                    return Err(Ending::close(
                        schema::close::POLICY_VIOLATION,
                        "the first message must be auth",
                    ));
                }
            }
        };
        let Ok(ClientMessage::Auth { key }) = parse(&text) else {
            return Err(Ending::close(
                schema::close::POLICY_VIOLATION,
                "the first message must be auth",
            ));
        };
        // Checked again here: many sockets opened at once all passed the
        // check at the handshake.
        if let Some(refused) = peer.and_then(|ip| self.state.auth_throttle.check(ip).err()) {
            self.state.metrics.limit(Limit::AuthThrottle);
            return Err(Ending::close(
                schema::close::POLICY_VIOLATION,
                refused.to_string(),
            ));
        }
        match self.state.store.authenticate_api_key(&key).await {
            Ok(Some(identity)) => Ok(identity),
            Ok(None) => {
                if let Some(ip) = peer {
                    self.state.auth_throttle.failed(ip);
                }
                warn!("live-stream client refused: invalid API key");
                Err(Ending::close(CLOSE_INVALID_KEY, "invalid API key"))
            }
            Err(err) => {
                self.state.metrics.database_error(DbOp::Api);
                tracing::error!(error = %err, "live-stream key check failed");
                Err(Ending::close(
                    schema::close::INTERNAL_ERROR,
                    "database unavailable",
                ))
            }
        }
    }

    /// Welcome, snapshot, then events until the end.
    async fn run(&mut self, key: &ApiKeyIdentity, mut client: ClientHandle) -> Ending {
        let welcome = ServerMessage::Welcome {
            protocol: PROTOCOL,
            role: key.role.as_str(),
            instance: self.state.metrics.instance(),
            key_id: &key.id,
        }
        .render();
        if let Err(ending) = self.send(welcome).await {
            return ending;
        }
        if let Err(ending) = self.send_snapshot(SnapshotReason::Start).await {
            return ending;
        }
        loop {
            tokio::select! {
                _ = self.state.shutdown.cancelled() => {
                    return Ending::close(schema::close::GOING_AWAY, "hub shutting down");
                }
                queued = client.rx.recv() => {
                    // The sender lives in the fanout as long as `client` does.
                    let Some(text) = queued else { return Ending::PeerGone };
                    let sent = if client.take_lagged() {
                        self.state.metrics.stream_resyncs.inc();
                        self.send_snapshot(SnapshotReason::Lagged).await
                    } else {
                        self.send_queued(text, &mut client).await
                    };
                    if let Err(ending) = sent {
                        return ending;
                    }
                }
                message = self.socket.recv() => {
                    if let Err(ending) = self.handle(message, &client).await {
                        return ending;
                    }
                }
            }
        }
    }

    /// One message from the browser after auth.
    async fn handle(
        &mut self,
        message: Option<Result<Message, axum::Error>>,
        client: &ClientHandle,
    ) -> Result<(), Ending> {
        let text = match message {
            None | Some(Ok(Message::Close(_))) => return Err(Ending::PeerGone),
            Some(Err(err)) => return Err(read_error(err)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(()),
            Some(Ok(Message::Binary(_))) => {
                return Err(Ending::close(
                    schema::close::UNSUPPORTED_DATA,
                    "binary messages are not accepted",
                ));
            }
            Some(Ok(Message::Text(text))) => text,
        };
        match parse(&text) {
            Ok(ClientMessage::Subscribe { devices }) => {
                client.subscribe(devices);
                Ok(())
            }
            Ok(ClientMessage::Auth { .. }) => self.error("already authenticated").await,
            Err(message) => self.error(&message).await,
        }
    }

    async fn error(&mut self, message: &str) -> Result<(), Ending> {
        self.send(ServerMessage::Error { message }.render()).await
    }

    async fn send_snapshot(&mut self, reason: SnapshotReason) -> Result<(), Ending> {
        match snapshot(&self.state, reason).await {
            Ok(message) => self.send(message.render()).await,
            Err(err) => {
                self.state.metrics.database_error(DbOp::Api);
                tracing::error!(error = %err, "live-stream snapshot failed");
                self.error("could not read the device list (database unavailable); the snapshot is missing")
                    .await
            }
        }
    }

    /// Writes `first` and what else is queued or arrives within
    /// [`WRITE_LINGER`] (up to [`WRITE_BATCH`] messages) with one flush,
    /// within the send timeout: a few system calls (and wake-ups of the
    /// browser) per batch rather than one per message when events arrive fast.
    async fn send_queued(
        &mut self,
        first: Utf8Bytes,
        client: &mut ClientHandle,
    ) -> Result<(), Ending> {
        let timeout = self.state.config.limits.send_timeout;
        let socket = &mut self.socket;
        let written = tokio::time::timeout(timeout, async {
            let linger_until = tokio::time::Instant::now() + WRITE_LINGER;
            socket.feed(Message::Text(first)).await?;
            for _ in 1..WRITE_BATCH {
                // A lagged client's queue is dropped anyway.
                if client.is_lagged() {
                    break;
                }
                let text = match client.rx.try_recv() {
                    Ok(text) => text,
                    Err(_) => match tokio::time::timeout_at(linger_until, client.rx.recv()).await {
                        Ok(Some(text)) => text,
                        Ok(None) | Err(_) => break,
                    },
                };
                socket.feed(Message::Text(text)).await?;
            }
            socket.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::PeerGone),
            Err(_) => Err(Ending::SlowConsumer),
        }
    }

    /// Writes one text message within the send timeout.
    async fn send(&mut self, text: Utf8Bytes) -> Result<(), Ending> {
        let timeout = self.state.config.limits.send_timeout;
        match tokio::time::timeout(timeout, self.socket.send(Message::Text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::PeerGone),
            Err(_) => Err(Ending::SlowConsumer),
        }
    }

    /// Sends a close frame, then waits (bounded) for the browser's reply.
    async fn close(&mut self, code: u16, reason: &str) {
        close_gracefully(&mut self.socket, code, reason).await;
    }
}

/// The ending for a failed read: an oversized message closes 1009, a
/// protocol violation 1002, anything else is the peer going away.
fn read_error(err: axum::Error) -> Ending {
    use tungstenite::error::{Error as WsError, ProtocolError};
    match err.into_inner().downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => {
            Ending::close(schema::close::MESSAGE_TOO_BIG, "message too big")
        }
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => Ending::PeerGone,
        Some(WsError::Protocol(p)) => Ending::close(
            schema::close::PROTOCOL_ERROR,
            truncate_reason(
                &format!("websocket protocol error: {p}"),
                schema::MAX_REASON_BYTES,
            )
            .to_owned(),
        ),
        _ => Ending::PeerGone,
    }
}
