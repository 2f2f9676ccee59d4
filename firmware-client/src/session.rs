//! The device side of a hub session, as a state machine without I/O.
//!
//! Like rumqttc's `state.rs`: the transport tells the [`Session`] what
//! happened (a connection opened, a message arrived, the connection ended)
//! and the session updates the outbox, encodes what must be written into a
//! caller-provided buffer, and says what to do next. The same code drives the
//! tokio transport of this crate and a firmware's own network stack.
//!
//! ```text
//! Disconnected --connected()--> AwaitingWelcome --Welcome--> Active
//!      ^                               |                        |
//!      +-------- disconnected(): Next::Reconnect ---------------+
//!                                      |
//!                   Next::Stop --> Stopped (refused, revoked, shut down...)
//! ```

use core::time::Duration;

use crate::backoff::{self, Backoff};
use crate::error::SessionError;
use crate::outbox::{
    AckSummary, AckedFrame, Outbox, OutboxFull, Transmit, max_telemetry_bytes, readings_within,
};
use crate::storage::Storage;
use schema::{
    ActuatorDecl, Command, CommandOutcome, CommandResult, Downlink, ErrorFrame, Hello, Limits,
    List, PROTOCOL_VERSION, SensorDecl, Uplink, Value, close, decode_downlink, encode_uplink,
};

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No connection; the transport should connect (after any backoff).
    Disconnected,
    /// Hello was sent; waiting for Welcome before sending telemetry.
    AwaitingWelcome,
    /// Welcome arrived: telemetry flows.
    Active,
    /// The session must not reconnect.
    Stopped(StopReason),
}

/// Why a session stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The hub refused the credentials at the handshake (HTTP 401 or 403).
    CredentialsRefused,
    /// The hub closed with a code after which the device must not reconnect
    /// (see [`schema::close::should_reconnect`]).
    Closed(u16),
    /// The application asked the session to stop.
    Shutdown,
}

impl core::fmt::Display for StopReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StopReason::CredentialsRefused => f.write_str("credentials refused by the hub"),
            StopReason::Closed(code) => {
                let what = match *code {
                    close::SESSION_REPLACED => "session replaced by a newer connection",
                    close::CREDENTIALS_REVOKED => "credentials revoked",
                    close::UNSUPPORTED_VERSION => "protocol version not supported",
                    close::INVALID_HELLO => "Hello refused as invalid",
                    _ => "closed by the hub",
                };
                write!(f, "{what} (close code {code})")
            }
            StopReason::Shutdown => f.write_str("shut down by the application"),
        }
    }
}

/// How a connection ended, as the transport saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The connection could not be opened, broke, timed out, or ended
    /// without a close code.
    Lost,
    /// The hub refused the WebSocket handshake with 401 or 403.
    Refused,
    /// The hub sent a close frame with this code.
    Closed(u16),
    /// The application is shutting down.
    Shutdown,
}

/// What the transport should do after a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait `delay`, then connect again; `attempt` counts from 1 since the
    /// last Welcome.
    Reconnect {
        /// Attempt number since the last successful session.
        attempt: u32,
        /// How long to wait first.
        delay: Duration,
    },
    /// Do not reconnect.
    Stop(StopReason),
}

/// A downlink frame, decoded and applied.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<'m> {
    /// The session is open. Frames the hub already stored were dropped from
    /// the outbox (`acked`); the rest will be resent first.
    Welcome {
        /// The device id the hub authenticated.
        device_id: &'m str,
        /// The hub's clock, ms since the Unix epoch.
        server_time_ms: u64,
        /// Highest sequence number the hub has stored for this device.
        last_stored_seq: u64,
        /// Limits the session now respects.
        limits: Limits,
        /// What the Welcome acknowledged.
        acked: AckSummary,
    },
    /// An Ack removed these frames from the outbox (possibly none).
    Acked(AckSummary),
    /// The hub reported a problem; for a rejected telemetry frame, its
    /// sequence number is still covered by a later Ack.
    Error(ErrorFrame<'m>),
    /// A command for an actuator: decide with a
    /// [`CommandLog`](crate::CommandLog), answer with
    /// [`Session::command_result`].
    Command(Command<'m>),
}

/// Settings of a [`Session`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Most readings per telemetry frame (further capped by the storage and
    /// by the hub's limits).
    pub max_batch: usize,
    /// Most frames on the wire awaiting an ack (further capped by the storage).
    pub max_in_flight: usize,
    /// First backoff ceiling.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_cap: Duration,
    /// Seed of the backoff jitter; differ it between devices.
    pub seed: u64,
    /// Sequence number to continue from, for a device that remembers it;
    /// `None` starts at the first Welcome's `last_stored_seq + 1`.
    pub initial_seq: Option<u64>,
}

impl SessionConfig {
    /// Defaults: 50 readings per frame, 8 frames in flight, backoff from
    /// 500 ms up to 30 s, seed 0, sequence number from the hub.
    pub const fn new() -> Self {
        SessionConfig {
            max_batch: 50,
            max_in_flight: 8,
            backoff_base: Duration::from_millis(500),
            backoff_cap: backoff::DEFAULT_CAP,
            seed: 0,
            initial_seq: None,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// One device's protocol state: outbox, connection state, limits, backoff.
#[derive(Debug, Clone)]
pub struct Session<S> {
    outbox: Outbox<S>,
    state: SessionState,
    limits: Option<Limits>,
    max_batch: usize,
    max_in_flight: usize,
    backoff: Backoff,
}

impl<S: Storage> Session<S> {
    /// A disconnected session with an empty outbox over `storage`.
    pub fn new(storage: S, config: SessionConfig) -> Self {
        Session {
            outbox: Outbox::new(storage, config.initial_seq),
            state: SessionState::Disconnected,
            limits: None,
            max_batch: config.max_batch.max(1),
            max_in_flight: config.max_in_flight.max(1),
            backoff: Backoff::new(config.backoff_base, config.backoff_cap, config.seed),
        }
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The outbox, to inspect.
    pub fn outbox(&self) -> &Outbox<S> {
        &self.outbox
    }

    /// Limits of the current (or last) session, once a Welcome arrived.
    pub fn limits(&self) -> Option<Limits> {
        self.limits
    }

    /// Most readings a new frame will carry now: the configured batch capped
    /// by the storage and the hub's `max_readings_per_frame` and
    /// `max_message_bytes`.
    pub fn batch_size(&self) -> usize {
        let mut batch = self.max_batch.min(self.outbox.max_batch());
        if let Some(limits) = self.limits {
            let per_frame = usize::try_from(limits.max_readings_per_frame).unwrap_or(usize::MAX);
            let by_bytes =
                readings_within(usize::try_from(limits.max_message_bytes).unwrap_or(usize::MAX));
            batch = batch.min(per_frame).min(by_bytes);
        }
        batch.max(1)
    }

    /// A buffer of this many bytes always holds the next telemetry frame.
    pub fn telemetry_buffer_len(&self) -> usize {
        max_telemetry_bytes(self.max_batch.min(self.outbox.max_batch()))
    }

    /// Store a reading for sending; returns the readings now pending (not
    /// yet in a frame). Works in every state, so readings taken offline are
    /// kept until a session is up.
    pub fn push(&mut self, sensor: u16, time_ms: u64, value: Value) -> Result<usize, OutboxFull> {
        self.outbox.push(sensor, time_ms, value)
    }

    /// A connection is open: returns the Hello to send first.
    pub fn connected<'b>(
        &mut self,
        firmware: &str,
        sensors: &[SensorDecl<'_>],
        actuators: &[ActuatorDecl<'_>],
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], SessionError> {
        if let SessionState::Stopped(reason) = self.state {
            return Err(SessionError::Stopped(reason));
        }
        let hello = Uplink::Hello(Hello {
            version: PROTOCOL_VERSION,
            firmware,
            sensors: List::Borrowed(sensors),
            actuators: List::Borrowed(actuators),
        });
        let bytes = encode_uplink(&hello, buf).map_err(SessionError::Encode)?;
        self.outbox.connection_lost();
        self.state = SessionState::AwaitingWelcome;
        Ok(bytes)
    }

    /// Apply one received binary message. `on_ack` hears of every frame that
    /// leaves the outbox because of it.
    pub fn handle_downlink<'m>(
        &mut self,
        message: &'m [u8],
        on_ack: impl FnMut(AckedFrame),
    ) -> Result<Event<'m>, SessionError> {
        match self.state {
            SessionState::AwaitingWelcome | SessionState::Active => {}
            SessionState::Disconnected => return Err(SessionError::NotConnected),
            SessionState::Stopped(reason) => return Err(SessionError::Stopped(reason)),
        }
        let frame = decode_downlink(message).map_err(SessionError::Decode)?;
        Ok(match frame {
            Downlink::Welcome(welcome) => {
                let acked = self.outbox.resume(welcome.last_stored_seq, on_ack);
                self.limits = Some(welcome.limits);
                self.state = SessionState::Active;
                self.backoff.reset();
                Event::Welcome {
                    device_id: welcome.device_id,
                    server_time_ms: welcome.server_time_ms,
                    last_stored_seq: welcome.last_stored_seq,
                    limits: welcome.limits,
                    acked,
                }
            }
            Downlink::Ack(ack) => Event::Acked(self.outbox.ack(ack.seq, on_ack)),
            Downlink::Error(error) => Event::Error(error),
            Downlink::Command(command) => Event::Command(command),
        })
    }

    /// The next telemetry frame to write, if the session is active, the
    /// window has room and there is something to send (see
    /// [`Outbox::next_transmit`]). Call until it returns `None`.
    pub fn poll_transmit<'b>(
        &mut self,
        now: u64,
        allow_partial: bool,
        buf: &'b mut [u8],
    ) -> Result<Option<Transmit<'b>>, SessionError> {
        if self.state != SessionState::Active {
            return Ok(None);
        }
        let batch = self.batch_size();
        self.outbox
            .next_transmit(batch, self.max_in_flight, allow_partial, now, buf)
            .map_err(SessionError::Encode)
    }

    /// Encode the answer to a command (for an owned
    /// [`Outcome`](crate::Outcome), pass `outcome.as_wire()`).
    pub fn command_result<'b>(
        &mut self,
        command_id: u64,
        outcome: CommandOutcome<'_>,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], SessionError> {
        match self.state {
            SessionState::AwaitingWelcome | SessionState::Active => {}
            SessionState::Disconnected => return Err(SessionError::NotConnected),
            SessionState::Stopped(reason) => return Err(SessionError::Stopped(reason)),
        }
        let frame = Uplink::CommandResult(CommandResult {
            command_id,
            outcome,
        });
        encode_uplink(&frame, buf)
            .map(|bytes| &*bytes)
            .map_err(SessionError::Encode)
    }

    /// The connection ended: frames in flight will be resent, and the answer
    /// says whether (and after how long) to reconnect.
    pub fn disconnected(&mut self, how: Disconnect) -> Next {
        self.outbox.connection_lost();
        let stop = match how {
            Disconnect::Lost => None,
            Disconnect::Refused => Some(StopReason::CredentialsRefused),
            Disconnect::Closed(code) if close::should_reconnect(code) => None,
            Disconnect::Closed(code) => Some(StopReason::Closed(code)),
            Disconnect::Shutdown => Some(StopReason::Shutdown),
        };
        if let SessionState::Stopped(reason) = self.state {
            return Next::Stop(reason);
        }
        match stop {
            Some(reason) => {
                self.state = SessionState::Stopped(reason);
                Next::Stop(reason)
            }
            None => {
                self.state = SessionState::Disconnected;
                let delay = self.backoff.next_delay();
                Next::Reconnect {
                    attempt: self.backoff.attempt(),
                    delay,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ArrayStorage;
    use schema::{
        Ack, CommandAction, ValueKind, Welcome, decode_uplink, encode_downlink_to_vec, error_code,
    };

    type Storage = ArrayStorage<64, 4, 16>;

    const SENSORS: [SensorDecl<'static>; 1] = [SensorDecl {
        id: 1,
        name: "temperature",
        unit: "°C",
        kind: ValueKind::Float,
    }];

    fn session(initial_seq: Option<u64>) -> Session<Storage> {
        let mut config = SessionConfig::new();
        config.max_batch = 10;
        config.max_in_flight = 4;
        config.initial_seq = initial_seq;
        config.seed = 3;
        Session::new(Storage::new(), config)
    }

    fn welcome(last_stored_seq: u64, max_readings_per_frame: u32) -> Vec<u8> {
        encode_downlink_to_vec(&Downlink::Welcome(Welcome {
            device_id: "dev-1",
            server_time_ms: 1_700_000_000_000,
            last_stored_seq,
            limits: Limits {
                max_message_bytes: 65_536,
                max_readings_per_frame,
                idle_timeout_ms: 60_000,
            },
        }))
        .expect("encodes")
    }

    fn ack(seq: u64) -> Vec<u8> {
        encode_downlink_to_vec(&Downlink::Ack(Ack { seq })).expect("encodes")
    }

    fn connect(session: &mut Session<Storage>) {
        let mut buf = [0u8; 128];
        let hello = session
            .connected("fw-1", &SENSORS, &[], &mut buf)
            .expect("encodes");
        match decode_uplink(hello).expect("valid") {
            Uplink::Hello(h) => {
                assert_eq!(h.version, PROTOCOL_VERSION);
                assert_eq!(h.firmware, "fw-1");
                assert_eq!(&*h.sensors, &SENSORS);
            }
            other => panic!("not Hello: {other:?}"),
        }
        assert_eq!(session.state(), SessionState::AwaitingWelcome);
    }

    fn sent(session: &mut Session<Storage>, partial: bool) -> Vec<(u64, usize)> {
        let mut buf = [0u8; 512];
        let mut out = Vec::new();
        while let Some(t) = session
            .poll_transmit(0, partial, &mut buf)
            .expect("encodes")
        {
            match decode_uplink(t.bytes).expect("valid") {
                Uplink::Telemetry(tm) => out.push((tm.seq, tm.readings.len())),
                other => panic!("not telemetry: {other:?}"),
            }
        }
        out
    }

    fn push(session: &mut Session<Storage>, n: u64) {
        for i in 0..n {
            session
                .push(1, 1_000 + i, Value::Float(20.0))
                .expect("room");
        }
    }

    #[test]
    fn telemetry_waits_for_welcome_and_a_fresh_boot_starts_after_last_stored_seq() {
        let mut session = session(None);
        push(&mut session, 25);
        assert!(sent(&mut session, true).is_empty(), "not connected");
        connect(&mut session);
        assert!(sent(&mut session, true).is_empty(), "no Welcome yet");
        let bytes = welcome(500, 2048);
        let event = session.handle_downlink(&bytes, |_| {}).expect("valid");
        assert!(matches!(
            event,
            Event::Welcome {
                device_id: "dev-1",
                last_stored_seq: 500,
                ..
            }
        ));
        assert_eq!(session.state(), SessionState::Active);
        assert_eq!(
            sent(&mut session, true),
            vec![(501, 10), (502, 10), (503, 5)]
        );
    }

    #[test]
    fn frames_respect_the_hubs_readings_per_frame_limit() {
        let mut session = session(Some(1));
        push(&mut session, 12);
        connect(&mut session);
        session
            .handle_downlink(&welcome(0, 4), |_| {})
            .expect("valid");
        assert_eq!(session.batch_size(), 4);
        let frames = sent(&mut session, true);
        assert_eq!(frames, vec![(1, 4), (2, 4), (3, 4)]);
    }

    #[test]
    fn frames_respect_the_hubs_message_size_limit() {
        let mut session = session(Some(1));
        connect(&mut session);
        let bytes = encode_downlink_to_vec(&Downlink::Welcome(Welcome {
            device_id: "d",
            server_time_ms: 0,
            last_stored_seq: 0,
            limits: Limits {
                max_message_bytes: 100,
                max_readings_per_frame: 1000,
                idle_timeout_ms: 0,
            },
        }))
        .expect("encodes");
        session.handle_downlink(&bytes, |_| {}).expect("valid");
        assert_eq!(session.batch_size(), readings_within(100));
        push(&mut session, 12);
        let mut buf = [0u8; 512];
        while let Some(t) = session.poll_transmit(0, true, &mut buf).expect("encodes") {
            assert!(t.bytes.len() <= 100, "{} bytes", t.bytes.len());
        }
    }

    #[test]
    fn acks_flow_through_the_session() {
        let mut session = session(Some(1));
        push(&mut session, 20);
        connect(&mut session);
        session
            .handle_downlink(&welcome(0, 2048), |_| {})
            .expect("valid");
        assert_eq!(sent(&mut session, false), vec![(1, 10), (2, 10)]);
        let mut acked = Vec::new();
        let bytes = ack(2);
        let event = session
            .handle_downlink(&bytes, |f| acked.push(f.seq))
            .expect("valid");
        assert_eq!(
            event,
            Event::Acked(AckSummary {
                frames: 2,
                readings: 20
            })
        );
        assert_eq!(acked, vec![1, 2]);
        assert!(session.outbox().is_empty());
    }

    #[test]
    fn reconnect_resumes_from_welcome() {
        let mut session = session(Some(1));
        push(&mut session, 40);
        connect(&mut session);
        session
            .handle_downlink(&welcome(0, 2048), |_| {})
            .expect("valid");
        assert_eq!(sent(&mut session, false).len(), 4);
        session.handle_downlink(&ack(1), |_| {}).expect("valid");
        assert!(matches!(
            session.disconnected(Disconnect::Lost),
            Next::Reconnect { attempt: 1, .. }
        ));
        connect(&mut session);
        let bytes = welcome(2, 2048);
        let event = session.handle_downlink(&bytes, |_| {}).expect("valid");
        let Event::Welcome { acked, .. } = event else {
            panic!("not Welcome: {event:?}");
        };
        assert_eq!(acked.frames, 1, "frame 2 was stored before the cut");
        assert_eq!(sent(&mut session, false), vec![(3, 10), (4, 10)]);
    }

    #[test]
    fn errors_and_commands_are_surfaced() {
        let mut session = session(Some(1));
        connect(&mut session);
        let error = encode_downlink_to_vec(&Downlink::Error(ErrorFrame {
            code: error_code::UNKNOWN_SENSOR,
            reason: "sensor 9",
            seq: Some(4),
        }))
        .expect("encodes");
        let event = session.handle_downlink(&error, |_| {}).expect("valid");
        assert!(matches!(
            event,
            Event::Error(ErrorFrame {
                code: error_code::UNKNOWN_SENSOR,
                seq: Some(4),
                ..
            })
        ));

        let command = encode_downlink_to_vec(&Downlink::Command(Command {
            id: 77,
            actuator: 1,
            action: CommandAction::Set(Value::Bool(true)),
            expires_at_ms: 0,
        }))
        .expect("encodes");
        let event = session.handle_downlink(&command, |_| {}).expect("valid");
        assert!(matches!(event, Event::Command(Command { id: 77, .. })));
        let mut buf = [0u8; 64];
        let answer = session
            .command_result(
                77,
                CommandOutcome::Rejected("no handler for actuator"),
                &mut buf,
            )
            .expect("encodes");
        match decode_uplink(answer).expect("valid") {
            Uplink::CommandResult(r) => {
                assert_eq!(r.command_id, 77);
                assert_eq!(
                    r.outcome,
                    CommandOutcome::Rejected("no handler for actuator")
                );
            }
            other => panic!("not CommandResult: {other:?}"),
        }
    }

    #[test]
    fn garbage_from_the_hub_is_an_error_not_a_panic() {
        let mut session = session(Some(1));
        assert_eq!(
            session.handle_downlink(&ack(1), |_| {}),
            Err(SessionError::NotConnected)
        );
        connect(&mut session);
        assert!(matches!(
            session.handle_downlink(&[0xff, 0xff, 0xff], |_| {}),
            Err(SessionError::Decode(_))
        ));
        assert!(matches!(
            session.handle_downlink(&[], |_| {}),
            Err(SessionError::Decode(_))
        ));
    }

    #[test]
    fn close_codes_and_refusals_decide_whether_to_reconnect() {
        for (how, stop) in [
            (Disconnect::Lost, None),
            (Disconnect::Closed(close::GOING_AWAY), None),
            (Disconnect::Closed(close::INTERNAL_ERROR), None),
            (Disconnect::Closed(close::IDLE_TIMEOUT), None),
            (Disconnect::Closed(close::HELLO_TIMEOUT), None),
            (Disconnect::Closed(close::NORMAL), None),
            (Disconnect::Refused, Some(StopReason::CredentialsRefused)),
            (
                Disconnect::Closed(close::SESSION_REPLACED),
                Some(StopReason::Closed(close::SESSION_REPLACED)),
            ),
            (
                Disconnect::Closed(close::CREDENTIALS_REVOKED),
                Some(StopReason::Closed(close::CREDENTIALS_REVOKED)),
            ),
            (
                Disconnect::Closed(close::UNSUPPORTED_VERSION),
                Some(StopReason::Closed(close::UNSUPPORTED_VERSION)),
            ),
            (
                Disconnect::Closed(close::INVALID_HELLO),
                Some(StopReason::Closed(close::INVALID_HELLO)),
            ),
            (Disconnect::Shutdown, Some(StopReason::Shutdown)),
        ] {
            let mut session = session(Some(1));
            connect(&mut session);
            let next = session.disconnected(how);
            match stop {
                None => {
                    assert!(matches!(next, Next::Reconnect { .. }), "{how:?}: {next:?}");
                    assert_eq!(session.state(), SessionState::Disconnected);
                }
                Some(reason) => {
                    assert_eq!(next, Next::Stop(reason), "{how:?}");
                    assert_eq!(session.state(), SessionState::Stopped(reason));
                    let mut buf = [0u8; 128];
                    assert_eq!(
                        session.connected("fw", &SENSORS, &[], &mut buf),
                        Err(SessionError::Stopped(reason))
                    );
                }
            }
        }
    }

    #[test]
    fn backoff_grows_while_failing_and_resets_after_welcome() {
        let mut session = session(Some(1));
        let mut attempts = Vec::new();
        for _ in 0..8 {
            match session.disconnected(Disconnect::Lost) {
                Next::Reconnect { attempt, delay } => {
                    let bound = backoff::ceiling(
                        Duration::from_millis(500),
                        backoff::DEFAULT_CAP,
                        attempt - 1,
                    );
                    assert!(delay <= bound);
                    attempts.push(attempt);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(attempts, (1..=8).collect::<Vec<_>>());
        connect(&mut session);
        session
            .handle_downlink(&welcome(0, 10), |_| {})
            .expect("valid");
        match session.disconnected(Disconnect::Lost) {
            Next::Reconnect { attempt, delay } => {
                assert_eq!(attempt, 1);
                assert!(delay <= Duration::from_millis(500));
            }
            other => panic!("{other:?}"),
        }
    }
}
