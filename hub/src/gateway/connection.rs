//! One device's WebSocket connection: the only code that touches its socket.
//!
//! A single task per connection reads frames, feeds them to the protocol
//! [`Session`], queues telemetry for the writer (waiting when the queue is
//! full, which stops reading the socket: backpressure reaches the device
//! through TCP), sends Acks as the writer commits, pings, and closes with a
//! documented code. On hub shutdown it stops reading, waits (bounded) until
//! what it queued is committed and acked, then closes with 1001.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use schema::{Ack, Downlink, ErrorFrame, Limits, Welcome, close};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, debug, info, warn};

use super::session::{HelloInfo, Rejection, Session, SessionLimits, Step};
use crate::ingest::IngestFrame;
use crate::registry::{CloseReason, Registration};
use crate::state::AppState;
use crate::store::DeviceIdentity;

/// Milliseconds since the Unix epoch by the hub's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Why the read loop ended.
enum Ending {
    /// The hub is shutting down: drain, then close 1001.
    Shutdown,
    /// Closed from outside (replaced, revoked).
    Kicked(CloseReason),
    /// The hub closes for a protocol reason.
    Close(u16, String),
    /// The peer closed or the connection broke; nothing to send.
    PeerGone(&'static str),
}

/// The live part of a session after Hello.
struct Opened {
    /// This session's id in the registry.
    session_id: u64,
    /// Shared with the registry; the presence flusher writes it to the database.
    last_seen: Arc<AtomicI64>,
    /// The database's session counter at open; the disconnect uses it.
    session_counter: i64,
}

/// Serves one authenticated device until its connection ends.
pub async fn serve(state: AppState, device: DeviceIdentity, socket: WebSocket) {
    let span = tracing::info_span!("device", device = %device.id);
    Connection::new(state, device, socket)
        .run()
        .instrument(span)
        .await;
}

struct Connection {
    state: AppState,
    device: DeviceIdentity,
    socket: WebSocket,
    session: Session,
    /// The writer raises this to the highest committed seq of this session.
    acked_tx: Arc<watch::Sender<u64>>,
    acked_rx: watch::Receiver<u64>,
    /// Highest seq handed to the writer.
    last_submitted: u64,
    opened: Option<Opened>,
    /// Last time anything arrived, for the idle timeout.
    last_heard: Instant,
}

impl Connection {
    fn new(state: AppState, device: DeviceIdentity, socket: WebSocket) -> Self {
        let limits = SessionLimits {
            max_readings_per_frame: state.config.max_readings_per_frame,
            max_declared: state.config.max_declared,
            max_future_skew_ms: i64::try_from(state.config.max_future_skew.as_millis())
                .unwrap_or(i64::MAX),
        };
        let (acked_tx, acked_rx) = watch::channel(0);
        Connection {
            session: Session::new(device.pk, limits),
            state,
            device,
            socket,
            acked_tx: Arc::new(acked_tx),
            acked_rx,
            last_submitted: 0,
            opened: None,
            last_heard: Instant::now(),
        }
    }

    async fn run(mut self) {
        debug!("connected, waiting for Hello");
        let ending = self.read_loop().await;
        match ending {
            Ending::Shutdown => {
                self.drain_acks().await;
                self.close(close::GOING_AWAY, "hub shutting down").await;
            }
            Ending::Kicked(reason) => {
                let (code, text) = reason.close_frame();
                info!(code, reason = text, "closing session");
                self.close(code, text).await;
            }
            Ending::Close(code, reason) => {
                warn!(code, %reason, "closing connection");
                self.close(code, &reason).await;
            }
            Ending::PeerGone(why) => debug!(why, "connection ended"),
        }
        self.finish().await;
    }

    async fn read_loop(&mut self) -> Ending {
        let config = Arc::clone(&self.state.config);
        let hello_deadline = tokio::time::sleep(config.hello_timeout);
        tokio::pin!(hello_deadline);
        let mut ping =
            tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut close_rx: Option<oneshot::Receiver<CloseReason>> = None;
        let shutdown = self.state.shutdown.clone();

        loop {
            let kicked = async {
                match close_rx.as_mut() {
                    Some(rx) => rx.await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ending::Shutdown,
                Some(reason) = kicked => return Ending::Kicked(reason),
                changed = self.acked_rx.changed() => {
                    // The sender lives in `self`, so this never fails while we run.
                    if changed.is_ok() {
                        let seq = *self.acked_rx.borrow_and_update();
                        if let Err(ending) = self.send(&Downlink::Ack(Ack { seq })).await {
                            return ending;
                        }
                    }
                }
                message = self.socket.recv() => {
                    self.last_heard = Instant::now();
                    match message {
                        None => return Ending::PeerGone("connection closed"),
                        Some(Err(err)) => return read_error(err, config.max_message_bytes),
                        Some(Ok(Message::Binary(bytes))) => {
                            if bytes.len() > config.max_message_bytes as usize {
                                return too_big(config.max_message_bytes);
                            }
                            if let Some(ending) = self.on_frame(&bytes, &mut close_rx).await {
                                return ending;
                            }
                        }
                        Some(Ok(Message::Text(_))) => {
                            return Ending::Close(
                                close::UNSUPPORTED_DATA,
                                "text messages are not supported; send binary frames".into(),
                            );
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => return Ending::PeerGone("device closed"),
                    }
                    if let Some(opened) = &self.opened {
                        opened.last_seen.store(now_ms(), Ordering::Relaxed);
                    }
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > config.idle_timeout {
                        return Ending::Close(
                            close::IDLE_TIMEOUT,
                            format!("nothing heard for {} s", config.idle_timeout.as_secs()),
                        );
                    }
                    if let Err(ending) = self.send_message(Message::Ping(Default::default())).await {
                        return ending;
                    }
                }
                _ = &mut hello_deadline, if !self.session.is_open() => {
                    return Ending::Close(
                        close::HELLO_TIMEOUT,
                        format!("no Hello within {} s", config.hello_timeout.as_secs()),
                    );
                }
            }
        }
    }

    /// Handles one binary frame; `Some` ends the loop.
    async fn on_frame(
        &mut self,
        bytes: &[u8],
        close_rx: &mut Option<oneshot::Receiver<CloseReason>>,
    ) -> Option<Ending> {
        match self.session.on_frame(bytes, now_ms()) {
            Step::Open(info) => match self.open(info).await {
                Ok(registration_close) => {
                    *close_rx = Some(registration_close);
                    None
                }
                Err(ending) => Some(ending),
            },
            Step::Ingest {
                seq,
                readings,
                rejected,
            } => {
                if let Some(rejection) = rejected {
                    warn!(seq, code = rejection.code, reason = %rejection.reason, "telemetry frame rejected");
                    if let Err(ending) = self.report(&rejection, Some(seq)).await {
                        return Some(ending);
                    }
                }
                let frame = IngestFrame {
                    device_pk: self.device.pk,
                    seq,
                    readings,
                    acked: Arc::clone(&self.acked_tx),
                };
                // Waits while the queue is full: we stop reading this socket.
                if self.state.ingest.submit(frame).await.is_err() {
                    return Some(Ending::Shutdown);
                }
                // A device held back by backpressure is not idle.
                self.last_heard = Instant::now();
                self.last_submitted = self.last_submitted.max(seq);
                None
            }
            Step::Report(rejection) => {
                warn!(code = rejection.code, reason = %rejection.reason, "frame refused");
                self.report(&rejection, None).await.err()
            }
            Step::Close(code, reason) => Some(Ending::Close(code, reason)),
        }
    }

    /// Registers the session, persists Hello, and sends Welcome.
    async fn open(&mut self, info: HelloInfo) -> Result<oneshot::Receiver<CloseReason>, Ending> {
        let now = now_ms();
        let pk = self.device.pk;
        let Registration {
            session_id,
            close,
            last_seen,
        } = self.state.sessions.register(pk, now);
        let store = &self.state.store;
        let opened = async {
            let start = store.session_opened(pk, now).await?;
            store
                .record_hello(pk, &info.firmware, &info.sensors, &info.actuators)
                .await?;
            Ok::<_, crate::store::StoreError>(start)
        }
        .await;
        let start = match opened {
            Ok(start) => start,
            Err(err) => {
                tracing::error!(error = %err, "could not open session");
                self.state.sessions.deregister(pk, session_id);
                return Err(Ending::Close(
                    close::INTERNAL_ERROR,
                    "database unavailable".into(),
                ));
            }
        };
        self.opened = Some(Opened {
            session_id,
            last_seen,
            session_counter: start.session_counter,
        });
        info!(
            firmware = %info.firmware,
            sensors = info.sensors.len(),
            actuators = info.actuators.len(),
            last_stored_seq = start.last_stored_seq,
            "session open"
        );
        let config = &self.state.config;
        let device_id = self.device.id.clone();
        let welcome = Downlink::Welcome(Welcome {
            device_id: &device_id,
            server_time_ms: u64::try_from(now).unwrap_or(0),
            last_stored_seq: start.last_stored_seq,
            limits: Limits {
                max_message_bytes: config.max_message_bytes,
                max_readings_per_frame: config.max_readings_per_frame,
                idle_timeout_ms: u32::try_from(config.idle_timeout.as_millis()).unwrap_or(u32::MAX),
            },
        });
        self.send(&welcome).await?;
        Ok(close)
    }

    async fn report(&mut self, rejection: &Rejection, seq: Option<u64>) -> Result<(), Ending> {
        let reason = truncate(&rejection.reason, schema::MAX_REASON_BYTES);
        let frame = Downlink::Error(ErrorFrame {
            code: rejection.code,
            reason,
            seq,
        });
        self.send(&frame).await
    }

    async fn send(&mut self, frame: &Downlink<'_>) -> Result<(), Ending> {
        let bytes = match schema::encode_downlink_to_vec(frame) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::error!(error = %err, "could not encode a downlink frame");
                return Err(Ending::Close(
                    close::INTERNAL_ERROR,
                    "internal error".into(),
                ));
            }
        };
        self.send_message(Message::Binary(bytes.into())).await
    }

    /// Sends with a deadline: a device that stops reading is disconnected
    /// rather than holding the task (and its memory) forever.
    async fn send_message(&mut self, message: Message) -> Result<(), Ending> {
        match tokio::time::timeout(self.state.config.idle_timeout, self.socket.send(message)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::PeerGone("send failed")),
            Err(_) => Err(Ending::PeerGone("send timed out: device not reading")),
        }
    }

    /// On shutdown: wait until everything this session queued is committed, acking as it goes.
    async fn drain_acks(&mut self) {
        let deadline = Instant::now() + self.state.config.shutdown_grace;
        while *self.acked_rx.borrow() < self.last_submitted {
            if tokio::time::timeout_at(deadline, self.acked_rx.changed())
                .await
                .is_err()
            {
                warn!(
                    last_submitted = self.last_submitted,
                    "shutdown deadline passed before all readings committed"
                );
                break;
            }
        }
        let seq = *self.acked_rx.borrow_and_update();
        if seq > 0 {
            let _ = self.send(&Downlink::Ack(Ack { seq })).await;
        }
    }

    /// Sends a close frame, then waits (bounded) for the device's close reply,
    /// as RFC 6455 asks, so the device can read everything sent before it.
    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: truncate(reason, schema::MAX_REASON_BYTES).into(),
        };
        let socket = &mut self.socket;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            socket.send(Message::Close(Some(frame))).await?;
            while let Some(message) = socket.recv().await {
                if matches!(message?, Message::Close(_)) {
                    break;
                }
            }
            Ok::<(), axum::Error>(())
        })
        .await;
    }

    async fn finish(self) {
        let Some(opened) = self.opened else { return };
        let pk = self.device.pk;
        self.state.sessions.deregister(pk, opened.session_id);
        if let Err(err) = self
            .state
            .store
            .session_closed(pk, opened.session_counter, now_ms())
            .await
        {
            warn!(error = %err, "could not record disconnect");
        }
        info!("session closed");
    }
}

fn too_big(max: u32) -> Ending {
    Ending::Close(
        close::MESSAGE_TOO_BIG,
        format!("message larger than {max} bytes"),
    )
}

fn read_error(err: axum::Error, max: u32) -> Ending {
    use tungstenite::error::{Error as WsError, ProtocolError};
    match err.into_inner().downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => too_big(max),
        // A network cut, not a protocol violation.
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
            Ending::PeerGone("connection reset")
        }
        Some(WsError::Protocol(p)) => Ending::Close(
            close::PROTOCOL_ERROR,
            format!("websocket protocol error: {p}"),
        ),
        _ => Ending::PeerGone("read failed"),
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary (close reasons are ≤ 123 bytes).
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How long sending the close frame may take; the socket is dropped after it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
