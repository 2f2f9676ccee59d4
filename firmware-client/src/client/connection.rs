//! One WebSocket connection: the handshake, then the message loop.
//!
//! The only module that touches the socket. The loop waits on four things at
//! once: a message from the hub, a wake-up from the handle or the command
//! worker (readings ready, a command finished, shutdown, cut, flush), the
//! linger timer of a partial frame, and the read deadline. After each it
//! writes the command answers due (never held back by the telemetry window),
//! then whatever telemetry the session allows (resends first, then new
//! frames within the window), and flushes once.
//!
//! The stream is polled continuously, which is also what makes tungstenite
//! answer the hub's pings.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use schema::{ActuatorDecl, SensorDecl};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Bytes;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_tls_with_config};
use tracing::{debug, info, warn};

use super::commands::{self, CommandCall};
use super::device::ConnectionState;
use super::eventloop::Setup;
use super::shared::{Inner, Shared};
use super::stats::AckInfo;
use crate::command::{Outcome, Rejection, encode_command_result};
use crate::command_log::Decision;
use crate::outbox::AckedFrame;
use crate::session::{Disconnect, Event};

pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for the close handshake to finish before dropping.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Small buffers: a device reads only Acks, Errors and Commands, and writes
/// one window of frames at a time; a process may run a thousand of these.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Open a WebSocket to the hub (TCP, TLS, upgrade), within the connect timeout.
pub(crate) async fn connect(setup: &Setup) -> Result<WsStream, Disconnect> {
    let mut request = match setup.config.url.as_str().into_client_request() {
        Ok(request) => request,
        Err(err) => {
            warn!(url = %setup.config.url, %err, "cannot build the WebSocket request");
            return Err(Disconnect::Lost);
        }
    };
    let headers = request.headers_mut();
    if let Some(authorization) = &setup.authorization {
        headers.insert(AUTHORIZATION, authorization.clone());
    }
    headers.insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(schema::SUBPROTOCOL),
    );
    let attempt = connect_async_tls_with_config(
        request,
        Some(ws_config()),
        true,
        Some(setup.connector.clone()),
    );
    match timeout(setup.config.connect_timeout, attempt).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(WsError::Http(response)))
            if matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) =>
        {
            warn!(url = %setup.config.url, status = %response.status(), "hub refused the device credentials");
            Err(Disconnect::Refused)
        }
        Ok(Err(err)) => {
            debug!(url = %setup.config.url, %err, "connection attempt failed");
            Err(Disconnect::Lost)
        }
        Err(_) => {
            debug!(url = %setup.config.url, "connection attempt timed out");
            Err(Disconnect::Lost)
        }
    }
}

/// Run one connection from Hello until it ends; returns how it ended.
pub(crate) async fn run(
    shared: &Shared,
    setup: &Setup,
    ws: &mut WsStream,
    state: &watch::Sender<ConnectionState>,
    buf: &mut [u8],
) -> Disconnect {
    let hello = {
        let config = &setup.config;
        let sensors: Vec<SensorDecl<'_>> = config
            .sensors
            .iter()
            .map(|s| SensorDecl {
                id: s.id,
                name: &s.name,
                unit: &s.unit,
                kind: s.kind,
            })
            .collect();
        let actuators: Vec<ActuatorDecl<'_>> = config
            .actuators
            .iter()
            .map(|a| ActuatorDecl {
                id: a.id,
                name: &a.name,
                kind: a.kind,
            })
            .collect();
        let mut inner = shared.lock();
        match inner
            .session
            .connected(&config.firmware, &sensors, &actuators, buf)
        {
            Ok(bytes) => Bytes::copy_from_slice(bytes),
            Err(err) => {
                warn!(%err, "cannot encode Hello");
                return Disconnect::Lost;
            }
        }
    };
    if let Err(err) = ws.send(Message::Binary(hello)).await {
        debug!(%err, "connection lost while sending Hello");
        return Disconnect::Lost;
    }

    let mut conn = Connection {
        shared,
        setup,
        state,
        buf,
        out: Vec::new(),
        acked: Vec::new(),
        active: false,
        idle: setup.config.connect_timeout,
        deadline: Instant::now() + setup.config.connect_timeout,
        linger: None,
        partial_ok: setup.config.flush_interval.is_zero(),
    };
    loop {
        if shared.shutdown.load(Ordering::Acquire) {
            close_gracefully(ws).await;
            return Disconnect::Shutdown;
        }
        if shared.cut.swap(false, Ordering::AcqRel) {
            info!(url = %setup.config.url, "dropping the connection on request");
            return Disconnect::Lost;
        }
        if shared.flush_now.swap(false, Ordering::AcqRel) {
            conn.partial_ok = true;
        }
        if let Err(err) = conn.transmit(ws).await {
            debug!(%err, "connection lost while sending");
            return Disconnect::Lost;
        }
        let linger = conn.linger;
        tokio::select! {
            () = shared.wake.notified() => {}
            message = ws.next() => match message {
                None => {
                    debug!("connection closed without a close frame");
                    return Disconnect::Lost;
                }
                Some(Err(err)) => {
                    debug!(%err, "connection lost");
                    return Disconnect::Lost;
                }
                Some(Ok(message)) => {
                    if let Some(how) = conn.received(message) {
                        // tungstenite queued the close reply; let it go out.
                        let _ = timeout(CLOSE_GRACE, async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        return how;
                    }
                }
            },
            () = sleep_until(linger.unwrap_or(conn.deadline)), if linger.is_some() => {
                conn.linger = None;
                conn.partial_ok = true;
            }
            () = sleep_until(conn.deadline) => {
                info!(
                    url = %setup.config.url,
                    waited = ?conn.idle,
                    welcomed = conn.active,
                    "nothing heard from the hub; reconnecting"
                );
                return Disconnect::Lost;
            }
        }
    }
}

/// Close with 1000 and wait briefly for the hub's answer.
async fn close_gracefully(ws: &mut WsStream) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: Utf8Bytes::from_static("device shutting down"),
    };
    let _ = timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Per-connection state of the message loop.
struct Connection<'a> {
    shared: &'a Shared,
    setup: &'a Setup,
    state: &'a watch::Sender<ConnectionState>,
    /// Encode buffer, sized for the largest frame.
    buf: &'a mut [u8],
    /// Messages to write at the next transmit.
    out: Vec<Message>,
    /// Frames acknowledged by the message being handled, for the observer.
    acked: Vec<AckedFrame>,
    /// A Welcome arrived on this connection.
    active: bool,
    /// How long the hub may stay silent.
    idle: Duration,
    /// When that silence ends the connection.
    deadline: Instant,
    /// When the pending partial frame stops waiting for more readings.
    linger: Option<Instant>,
    /// Partial frames may go out now (linger over, flush requested).
    partial_ok: bool,
}

impl Connection<'_> {
    /// Write the command results due, then every frame the session allows now.
    async fn transmit(&mut self, ws: &mut WsStream) -> Result<(), WsError> {
        let shared = self.shared;
        let mut built = false;
        let pending = {
            let mut guard = shared.lock();
            let Inner {
                session,
                counters,
                results,
                ..
            } = &mut *guard;
            // Small and outside the outbox: they go out whatever the
            // telemetry window says.
            for (id, outcome) in results.drain(..) {
                match encode_command_result(id, &outcome, self.buf) {
                    Ok(bytes) => self
                        .out
                        .push(Message::Binary(Bytes::copy_from_slice(bytes))),
                    Err(err) => warn!(%err, id, "cannot encode a command result"),
                }
            }
            let now = shared.now_us();
            loop {
                match session.poll_transmit(now, self.partial_ok, self.buf) {
                    Ok(Some(frame)) => {
                        counters.frames_sent += 1;
                        if frame.resend {
                            counters.frames_resent += 1;
                        } else {
                            built = true;
                        }
                        self.out
                            .push(Message::Binary(Bytes::copy_from_slice(frame.bytes)));
                    }
                    Ok(None) => break,
                    Err(err) => {
                        warn!(%err, "cannot encode a telemetry frame");
                        break;
                    }
                }
            }
            session.outbox().pending()
        };
        // The linger bounds how long the oldest pending reading waits. A new
        // frame took the oldest ones, so the rest start a new linger (they
        // may have waited up to one wake-up already: a soft bound).
        if pending == 0 {
            self.linger = None;
            self.partial_ok = self.setup.config.flush_interval.is_zero();
        } else if (self.linger.is_none() || built) && !self.partial_ok {
            self.linger = Some(Instant::now() + self.setup.config.flush_interval);
        }
        if self.out.is_empty() {
            return Ok(());
        }
        for message in self.out.drain(..) {
            ws.feed(message).await?;
        }
        ws.flush().await
    }

    /// Handle one message; `Some` when it ended the connection.
    fn received(&mut self, message: Message) -> Option<Disconnect> {
        match message {
            Message::Binary(bytes) => {
                self.heard();
                self.frame(&bytes);
                None
            }
            Message::Ping(_) | Message::Pong(_) => {
                self.heard();
                None
            }
            Message::Text(_) => {
                self.shared.lock().counters.invalid_downlinks += 1;
                warn!("ignored a text message from the hub (the protocol is binary)");
                None
            }
            Message::Close(frame) => {
                let how = match frame {
                    Some(frame) => {
                        let code = u16::from(frame.code);
                        info!(url = %self.setup.config.url, code, reason = %frame.reason, "hub closed the connection");
                        Disconnect::Closed(code)
                    }
                    None => Disconnect::Lost,
                };
                Some(how)
            }
            Message::Frame(_) => None,
        }
    }

    fn heard(&mut self) {
        if self.active {
            self.deadline = Instant::now() + self.idle;
        }
    }

    /// Apply one binary frame to the session.
    fn frame(&mut self, bytes: &[u8]) {
        let shared = self.shared;
        let mut welcomed = None;
        {
            let mut guard = shared.lock();
            let Inner {
                session,
                counters,
                commands: log,
                ..
            } = &mut *guard;
            let acked = &mut self.acked;
            match session.handle_downlink(bytes, |frame| acked.push(frame)) {
                Ok(Event::Welcome {
                    device_id,
                    last_stored_seq,
                    limits,
                    acked: summary,
                    ..
                }) => {
                    counters.readings_acked += summary.readings as u64;
                    counters.sessions += 1;
                    debug!(
                        device_id,
                        last_stored_seq,
                        dropped_frames = summary.frames,
                        resend_frames = session.outbox().frames(),
                        "Welcome"
                    );
                    welcomed = Some((device_id.to_owned(), limits.idle_timeout_ms));
                }
                Ok(Event::Acked(summary)) => {
                    counters.readings_acked += summary.readings as u64;
                }
                Ok(Event::Error(error)) => {
                    counters.errors_received += 1;
                    warn!(
                        code = error.code,
                        reason = error.reason,
                        seq = ?error.seq,
                        "hub reported an error"
                    );
                }
                Ok(Event::Command(command)) => {
                    counters.commands_received += 1;
                    let (id, actuator) = (command.id, command.actuator);
                    let decision = log.receive(&command, &self.setup.actuators, commands::now_ms());
                    let mut reply = decision.reply();
                    match decision {
                        Decision::Run => {
                            // Its final outcome needs the lock held here and
                            // goes out at a later transmit, so it always
                            // follows the Delivered queued below.
                            let queued =
                                self.setup.calls.as_ref().map(|calls| {
                                    calls.try_send(CommandCall::from_command(&command))
                                });
                            if let Some(Ok(())) = queued {
                                debug!(id, actuator, "command queued for its handler");
                            } else {
                                // Not expected: a handler exists (so does the
                                // worker) and the queue is as long as the log.
                                warn!(id, actuator, "cannot queue the command");
                                reply = Outcome::from(Rejection::Busy);
                                log.finish(id, reply);
                                counters.command_finished(&reply);
                            }
                        }
                        Decision::Reject(rejection) => {
                            counters.commands_rejected += 1;
                            debug!(id, actuator, %rejection, "command rejected");
                        }
                        Decision::Repeat(outcome) => {
                            counters.commands_duplicate += 1;
                            debug!(
                                id,
                                actuator,
                                ?outcome,
                                "command repeated; answering from memory"
                            );
                        }
                    }
                    match session.command_result(id, reply.as_wire(), self.buf) {
                        Ok(bytes) => self
                            .out
                            .push(Message::Binary(Bytes::copy_from_slice(bytes))),
                        Err(err) => warn!(%err, id, "cannot encode a command result"),
                    }
                }
                Err(err) => {
                    counters.invalid_downlinks += 1;
                    warn!(%err, "ignored an invalid message from the hub");
                }
            }
        }
        if let Some((device_id, idle_ms)) = welcomed {
            self.active = true;
            // The hub pings well within its idle timeout; allow half again
            // before calling the path dead. Zero means "no timeout".
            self.idle = match idle_ms {
                0 => Duration::from_secs(24 * 3600),
                ms => Duration::from_millis(u64::from(ms) * 3 / 2),
            };
            self.deadline = Instant::now() + self.idle;
            info!(url = %self.setup.config.url, device_id, "session open");
            self.state
                .send_replace(ConnectionState::Connected { device_id });
        }
        if !self.acked.is_empty() {
            shared.progress.notify_waiters();
            if let Some(observer) = &self.setup.config.on_ack {
                let now = shared.now_us();
                for frame in &self.acked {
                    observer(AckInfo {
                        seq: frame.seq,
                        readings: frame.readings,
                        latency: Duration::from_micros(now.saturating_sub(frame.sent_at)),
                    });
                }
            }
            self.acked.clear();
        }
    }
}
