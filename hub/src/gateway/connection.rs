//! One device's WebSocket connection: the only code that touches its socket.
//!
//! A single task per connection reads frames, feeds them to the protocol
//! [`Session`], queues telemetry for the writer (waiting when the queue is
//! full, which stops reading the socket: backpressure reaches the device
//! through TCP), sends Acks as the writer commits, delivers commands and
//! records the device's answers, pings, and closes with a documented code.
//!
//! Commands: right after Welcome the connection sends the device's
//! unfinished commands from the database, oldest first (queued ones, and
//! sent ones the device never answered: the device remembers ids, so a
//! resend is never applied twice); expired ones are expired, not sent. After
//! that, new commands arrive through the registry in acceptance order. On hub shutdown it stops reading, waits (bounded) until
//! what it queued is committed and acked, then closes with 1001.
//!
//! Limits: a device over its rate ([`super::rate`]) gets Error 8 and its
//! socket is not read until its budget is back, then close 1008 if it keeps
//! on; every write has `--send-timeout-secs`, and a device that does not
//! read its downlink within it is dropped (4006 in the metrics and the log:
//! a close frame cannot reach a peer that does not read). Only this
//! connection's task waits on its socket, so a stuck device stalls no one
//! else: the writer acks through a watch channel and commands are offered
//! without waiting.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket};
use schema::{Ack, Downlink, ErrorFrame, Limits, Welcome, close, error_code};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, debug, info, warn};

use super::rate::{DeviceRate, RateSettings, Verdict};
use super::session::{HelloInfo, Rejection, Session, SessionLimits, Step};
use crate::commands::Answered;
use crate::events::{DeviceLabel, PresenceEvent};
use crate::ingest::IngestFrame;
use crate::metrics::{DbOp, FrameKind, Limit};
use crate::registry::{CloseReason, Registration};
use crate::state::AppState;
use crate::store::{
    CommandAction, CommandRecord, DeviceIdentity, DeviceOutcome, HelloRecord, SessionClosing,
    SessionOpening, hello_digest,
};
use crate::ws_close::{close_gracefully, truncate_reason};

/// Most unfinished commands sent in one go when a session opens (or reloads
/// after its offer queue overflowed); more wait for the next reconnect.
const OPEN_COMMANDS_PER_LOAD: u32 = 1000;

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
    /// A write did not complete within the send timeout: the device does not
    /// read. Dropped without a close frame (it could not be written either).
    SlowConsumer,
}

/// The live part of a session after Hello.
struct Opened {
    /// This session's id in the registry.
    session_id: u64,
    /// Shared with the registry; the presence flusher writes it to the database.
    last_seen: Arc<AtomicI64>,
    /// The database's session counter at open; the disconnect uses it.
    session_counter: i64,
    /// New commands for this device, offered by the command service.
    commands: mpsc::Receiver<Arc<CommandRecord>>,
    /// Set when an offer was dropped: reload unfinished commands from the database.
    commands_overflowed: Arc<AtomicBool>,
    /// Names attached to every queued frame.
    label: Arc<DeviceLabel>,
    /// Commands written to the device on this connection and not yet
    /// answered finally, with their latest stored state: an offer that races
    /// the initial load is not sent twice, and the device's answers are
    /// applied without reading the command first.
    commands_sent: HashMap<i64, Arc<CommandRecord>>,
}

/// Serves one authenticated device until its connection ends.
pub async fn serve(state: AppState, device: DeviceIdentity, socket: WebSocket) {
    let span = tracing::info_span!("device", device = %device.id);
    let open = &state.metrics.connections_open;
    open.inc();
    // Decrements even if the task is cancelled or panics.
    let _open = OpenGuard(open.clone());
    Connection::new(state, device, socket)
        .run()
        .instrument(span)
        .await;
}

/// Keeps `hub_connections_open` right however the connection task ends.
struct OpenGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
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
    /// This device's frames/s and readings/s budget.
    rate: DeviceRate,
    /// Set while the device is over its rate: the socket is not read until then.
    paused_until: Option<Instant>,
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
        let rate = DeviceRate::new(
            &RateSettings::from_limits(&state.config.limits),
            Instant::now(),
        );
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
            rate,
            paused_until: None,
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
                if code == close::MESSAGE_TOO_BIG {
                    // 1009 comes only from the message size limit.
                    self.state.metrics.limit(Limit::MessageSize);
                }
                warn!(code, %reason, "closing connection");
                self.close(code, &reason).await;
            }
            Ending::PeerGone(why) => debug!(why, "connection ended"),
            Ending::SlowConsumer => {
                let metrics = &self.state.metrics;
                metrics.limit(Limit::SendQueue);
                metrics.connection_closed(close::SLOW_CONSUMER);
                warn!(
                    code = close::SLOW_CONSUMER,
                    timeout_secs = self.state.config.limits.send_timeout.as_secs_f32(),
                    "device does not read its downlink; dropping the connection"
                );
            }
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
            let paused_until = self.paused_until;
            let resume = async move {
                match paused_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ending::Shutdown,
                Some(reason) = kicked => return Ending::Kicked(reason),
                Some(command) = next_command(&mut self.opened) => {
                    if let Err(ending) = self.deliver(&command).await {
                        return ending;
                    }
                    if let Err(ending) = self.reload_after_overflow().await {
                        return ending;
                    }
                }
                changed = self.acked_rx.changed() => {
                    // The sender lives in `self`, so this never fails while we run.
                    if changed.is_ok() {
                        let seq = *self.acked_rx.borrow_and_update();
                        if let Err(ending) = self.send(&Downlink::Ack(Ack { seq })).await {
                            return ending;
                        }
                        self.state.metrics.acks_sent.inc();
                    }
                }
                () = resume => {
                    self.paused_until = None;
                    // Held back by the hub, not idle.
                    self.last_heard = Instant::now();
                }
                message = self.socket.recv(), if paused_until.is_none() => {
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
                    if paused_until.is_none() && self.last_heard.elapsed() > config.idle_timeout {
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
        let step = self.session.on_frame(bytes, now_ms());
        let metrics = &self.state.metrics;
        match &step {
            Step::Open(_) => metrics.frame(FrameKind::Hello),
            Step::Ingest { readings, .. } => {
                metrics.frame(FrameKind::Telemetry);
                metrics.readings_received.inc_by(readings.len() as u64);
            }
            Step::CommandResult { .. } => metrics.frame(FrameKind::CommandResult),
            Step::Report(_) | Step::Close(..) => {}
        }
        // Every frame after Hello costs a frame token; telemetry also its readings.
        let charge = match &step {
            Step::Ingest { readings, .. } => Some(readings.len()),
            Step::CommandResult { .. } | Step::Report(_) => Some(0),
            Step::Open(_) | Step::Close(..) => None,
        };
        let ending = match step {
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
                let Some(opened) = &self.opened else {
                    return Some(Ending::Close(
                        close::INTERNAL_ERROR,
                        "telemetry before the session opened".into(),
                    ));
                };
                let device = Arc::clone(&opened.label);
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
                    device,
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
            Step::CommandResult {
                command_id,
                outcome,
            } => self.on_command_result(command_id, outcome).await.err(),
            Step::Report(rejection) => {
                warn!(code = rejection.code, reason = %rejection.reason, "frame refused");
                self.report(&rejection, None).await.err()
            }
            Step::Close(code, reason) => Some(Ending::Close(code, reason)),
        };
        if ending.is_some() {
            return ending;
        }
        match charge {
            Some(readings) => self.charge_rate(readings).await,
            None => None,
        }
    }

    /// Charges a processed frame to the device's rate budget: over it, the
    /// device is warned and not read until the budget is back; over it again
    /// within the grace window, the connection closes with 1008.
    async fn charge_rate(&mut self, readings: usize) -> Option<Ending> {
        let settings = RateSettings::from_limits(&self.state.config.limits);
        if !settings.enabled() {
            return None;
        }
        let readings = u32::try_from(readings).unwrap_or(u32::MAX);
        match self.rate.charge(&settings, readings, Instant::now()) {
            Verdict::Within => None,
            Verdict::SlowDown { reason, resume_at } => {
                warn!(
                    %reason,
                    pause_ms = resume_at.saturating_duration_since(Instant::now()).as_millis(),
                    "device over its rate; not reading it until its budget is back"
                );
                self.paused_until = Some(resume_at);
                let rejection = Rejection {
                    code: error_code::RATE_LIMITED,
                    reason,
                };
                self.report(&rejection, None).await.err()
            }
            Verdict::Exceeded => {
                self.state.metrics.limit(Limit::DeviceRate);
                Some(Ending::Close(
                    close::POLICY_VIOLATION,
                    "rate limit exceeded".into(),
                ))
            }
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
            commands,
            commands_overflowed,
            session_counter,
        } = self.state.sessions.register_with_generation(
            pk,
            &self.device.id,
            self.device.token_generation,
            now,
        );
        // A reconnect with the same Hello (nearly all) is this one statement.
        let digest = hello_digest(&info.firmware, &info.sensors, &info.actuators);
        let opened = async {
            let start = self
                .state
                .connects
                .open(SessionOpening {
                    pk,
                    now_ms: now,
                    hello_digest: digest.to_vec(),
                })
                .await?;
            if start.hello_changed {
                self.state
                    .connects
                    .record_hello(HelloRecord {
                        pk,
                        firmware: info.firmware.clone(),
                        sensors: info.sensors.clone(),
                        actuators: info.actuators.clone(),
                    })
                    .await?;
            }
            Ok::<_, crate::store::StoreError>(start)
        }
        .await;
        let start = match opened {
            Ok(start) => start,
            Err(err) => {
                self.state.metrics.database_error(DbOp::Session);
                tracing::error!(error = %err, "could not open session");
                self.state.sessions.deregister(pk, session_id);
                return Err(Ending::Close(
                    close::INTERNAL_ERROR,
                    "database unavailable".into(),
                ));
            }
        };
        let mut sensors: Vec<(u16, String, String)> = info
            .sensors
            .iter()
            .map(|s| (s.id, s.name.clone(), s.unit.clone()))
            .collect();
        sensors.sort_unstable_by_key(|s| s.0);
        let label = Arc::new(DeviceLabel {
            id: self.device.id.clone(),
            sensors,
        });
        session_counter.store(start.session_counter, Ordering::Release);
        self.state.events.presence(PresenceEvent {
            device_id: self.device.id.clone(),
            online: true,
            session_counter: start.session_counter,
            at_ms: now,
        });
        self.opened = Some(Opened {
            session_id,
            last_seen,
            session_counter: start.session_counter,
            commands,
            commands_overflowed,
            commands_sent: HashMap::new(),
            label,
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
        // A command accepted after the session opened is offered through the
        // registry, which this session joined before opening.
        if start.open_commands {
            self.deliver_open_commands().await?;
        }
        Ok(close)
    }

    /// Sends the device's unfinished commands from the database, oldest first.
    async fn deliver_open_commands(&mut self) -> Result<(), Ending> {
        let open = self
            .state
            .store
            .open_commands(self.device.pk, OPEN_COMMANDS_PER_LOAD)
            .await;
        let open = match open {
            Ok(open) => open,
            Err(err) => {
                self.state.metrics.database_error(DbOp::Commands);
                tracing::error!(error = %err, "could not load unfinished commands");
                return Err(Ending::Close(
                    close::INTERNAL_ERROR,
                    "database unavailable".into(),
                ));
            }
        };
        if !open.is_empty() {
            debug!(commands = open.len(), "sending unfinished commands");
        }
        for command in &open {
            self.deliver(command).await?;
        }
        Ok(())
    }

    /// Re-reads unfinished commands if an offer was dropped on a full queue.
    async fn reload_after_overflow(&mut self) -> Result<(), Ending> {
        let overflowed = self
            .opened
            .as_ref()
            .is_some_and(|o| o.commands_overflowed.swap(false, Ordering::AcqRel));
        if overflowed {
            self.deliver_open_commands().await?;
        }
        Ok(())
    }

    /// Writes one command to the device and records it as sent. Final,
    /// already sent (this connection) and expired commands are not sent; an
    /// expired one is marked so.
    async fn deliver(&mut self, command: &CommandRecord) -> Result<(), Ending> {
        let Some(opened) = self.opened.as_mut() else {
            return Ok(());
        };
        if command.status.is_final() || opened.commands_sent.contains_key(&command.id) {
            return Ok(());
        }
        let commands = self.state.commands.clone();
        if command.expires_ms <= now_ms() {
            if let Err(err) = commands.expire(command).await {
                self.state.metrics.database_error(DbOp::Commands);
                warn!(command = command.id, error = %err, "could not expire a command");
            }
            return Ok(());
        }
        opened
            .commands_sent
            .insert(command.id, Arc::new(command.clone()));
        let frame = command_frame(command);
        self.send(&frame).await?;
        // The frame is out; a failure to record that only means the resend
        // on the next connection happens from `queued` rather than `sent`.
        match commands.mark_sent(command).await {
            Ok(Some(sent)) => {
                if let Some(opened) = self.opened.as_mut() {
                    opened.commands_sent.insert(sent.id, sent);
                }
            }
            Ok(None) => {}
            Err(err) => {
                self.state.metrics.database_error(DbOp::Commands);
                warn!(command = command.id, error = %err, "could not record a command as sent");
            }
        }
        Ok(())
    }

    /// Records the device's answer; an unknown command gets an Error frame.
    async fn on_command_result(
        &mut self,
        command_id: u64,
        outcome: DeviceOutcome,
    ) -> Result<(), Ending> {
        let cached = i64::try_from(command_id).ok().and_then(|id| {
            self.opened
                .as_ref()
                .and_then(|o| o.commands_sent.get(&id).cloned())
        });
        let answered = self
            .state
            .commands
            .device_answered(self.device.pk, command_id, &outcome, cached.as_deref())
            .await;
        match answered {
            Ok(Answered::Known(record)) => {
                if let Some(opened) = self.opened.as_mut() {
                    if record.status.is_final() {
                        opened.commands_sent.remove(&record.id);
                    } else if let Some(slot) = opened.commands_sent.get_mut(&record.id) {
                        *slot = record;
                    }
                }
                Ok(())
            }
            Ok(Answered::Unknown) => {
                warn!(command_id, "result for an unknown command");
                let rejection = Rejection {
                    code: error_code::UNKNOWN_COMMAND,
                    reason: format!("no command {command_id} for this device"),
                };
                self.report(&rejection, None).await
            }
            Err(err) => {
                // Closing makes the device reconnect; the hub then resends the
                // command and the device answers again from memory.
                self.state.metrics.database_error(DbOp::Commands);
                tracing::error!(command_id, error = %err, "could not record a command result");
                Err(Ending::Close(
                    close::INTERNAL_ERROR,
                    "database unavailable".into(),
                ))
            }
        }
    }

    async fn report(&mut self, rejection: &Rejection, seq: Option<u64>) -> Result<(), Ending> {
        self.state.metrics.rejection(rejection.code);
        let reason = truncate_reason(&rejection.reason, schema::MAX_REASON_BYTES);
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

    /// Sends with the send timeout: a device that stops reading is
    /// disconnected rather than holding the task (and its memory) forever.
    /// The WebSocket's write buffer is bounded (`max_write_buffer_size`), so
    /// a write that cannot drain waits here rather than growing memory.
    async fn send_message(&mut self, message: Message) -> Result<(), Ending> {
        let timeout = self.state.config.limits.send_timeout;
        match tokio::time::timeout(timeout, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::PeerGone("send failed")),
            Err(_) => Err(Ending::SlowConsumer),
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
        if seq > 0 && self.send(&Downlink::Ack(Ack { seq })).await.is_ok() {
            self.state.metrics.acks_sent.inc();
        }
    }

    /// Sends a close frame, then waits (bounded) for the device's close reply,
    /// as RFC 6455 asks, so the device can read everything sent before it.
    async fn close(&mut self, code: u16, reason: &str) {
        self.state.metrics.connection_closed(code);
        close_gracefully(&mut self.socket, code, reason).await;
    }

    async fn finish(self) {
        let Some(opened) = self.opened else { return };
        let pk = self.device.pk;
        self.state.sessions.deregister(pk, opened.session_id);
        let now = now_ms();
        let closing = SessionClosing {
            pk,
            session_counter: opened.session_counter,
            now_ms: now,
        };
        match self.state.connects.close(closing).await {
            Ok(true) => self.state.events.presence(PresenceEvent {
                device_id: self.device.id.clone(),
                online: false,
                session_counter: opened.session_counter,
                at_ms: now,
            }),
            // A newer session of this device is current: it stays online.
            Ok(false) => {}
            Err(err) => {
                self.state.metrics.database_error(DbOp::Session);
                warn!(error = %err, "could not record disconnect");
            }
        }
        info!("session closed");
    }
}

/// The next offered command, once the session is open (pending before).
async fn next_command(opened: &mut Option<Opened>) -> Option<Arc<CommandRecord>> {
    match opened.as_mut() {
        Some(opened) => opened.commands.recv().await,
        None => std::future::pending().await,
    }
}

/// The Command frame for a stored command.
fn command_frame(command: &CommandRecord) -> Downlink<'_> {
    let action = match &command.action {
        CommandAction::Set(value) => schema::CommandAction::Set(*value),
        CommandAction::Invoke { name, args } => schema::CommandAction::Invoke {
            name,
            // Requests are checked to at most MAX_COMMAND_ARGS; never more here.
            args: args
                .iter()
                .copied()
                .take(schema::MAX_COMMAND_ARGS)
                .collect(),
        },
    };
    Downlink::Command(schema::Command {
        id: u64::try_from(command.id).unwrap_or(0),
        actuator: command.actuator_id,
        action,
        expires_at_ms: u64::try_from(command.expires_ms).unwrap_or(0),
    })
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
