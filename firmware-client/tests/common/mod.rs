//! A small stand-in for the hub's device endpoint, for transport tests.
//!
//! It speaks the protocol for real (handshake checks, Hello, Welcome, Acks
//! after a "commit") and can misbehave on request: refuse handshakes, hold
//! acks and cut the connection, close with a code, go silent, send commands
//! (after every Welcome, like a hub resending unanswered ones, or at any
//! moment with [`MockHub::send`]), errors and pings. It records everything
//! it received so tests can check the client's resend rules byte for byte.

#![allow(dead_code, missing_docs)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use firmware_client::DeviceConfig;
use firmware_client::schema::{
    self, Ack, Command, CommandAction, CommandOutcome, Downlink, ErrorFrame, Limits, Uplink, Value,
    ValueKind, Welcome, decode_uplink, encode_downlink_to_vec,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub const TOKEN: &str = "dev-1.secret";
pub const TEMPERATURE: u16 = 1;
pub const COUNTER: u16 = 2;
pub const DOOR: u16 = 3;

/// How the mock hub behaves; set before or during a test.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// HTTP statuses to refuse successive handshakes with, before accepting.
    pub refuse: VecDeque<u16>,
    /// On the first connection: ack this many frames, then read `hold` more
    /// without acking, silently commit the first held one, and drop the TCP
    /// connection (an ack lost in a cut, plus frames lost in flight).
    pub hold_after: Option<(usize, usize)>,
    /// Close every connection with this code right after Welcome.
    pub close_after_welcome: Option<u16>,
    /// Reject the first telemetry frame (Error, not stored, still acked).
    pub reject_first_frame: bool,
    /// Send these commands after every Welcome (a hub resends the ones it
    /// has no final answer to after a reconnect).
    pub commands_after_welcome: Vec<Command<'static>>,
    /// Send a ping after Welcome.
    pub ping_after_welcome: bool,
    /// After Welcome, never answer anything.
    pub silent: bool,
    /// Wait this long before each ack (a slow database).
    pub ack_delay: Duration,
    pub max_readings_per_frame: u32,
    pub idle_timeout_ms: u32,
    /// Accept a handshake without an Authorization header (the device
    /// authenticated with a client certificate).
    pub allow_missing_token: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            refuse: VecDeque::new(),
            hold_after: None,
            close_after_welcome: None,
            reject_first_frame: false,
            commands_after_welcome: Vec::new(),
            ping_after_welcome: false,
            silent: false,
            ack_delay: Duration::ZERO,
            max_readings_per_frame: 2048,
            idle_timeout_ms: 60_000,
            allow_missing_token: false,
        }
    }
}

/// One CommandResult as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSeen {
    /// The connection it arrived on (0 first).
    pub conn: usize,
    pub id: u64,
    /// `delivered`, `succeeded: <Option<Value> as Debug>`, `failed: <reason>`
    /// or `rejected: <reason>`.
    pub outcome: String,
}

/// `Set(value)` for `actuator`, never expiring.
pub fn set(id: u64, actuator: u16, value: Value) -> Command<'static> {
    Command {
        id,
        actuator,
        action: CommandAction::Set(value),
        expires_at_ms: 0,
    }
}

/// One telemetry frame as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub conn: usize,
    pub seq: u64,
    pub readings: usize,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct HubState {
    pub behaviour: Behaviour,
    /// TCP connections accepted (handshakes attempted).
    pub connections: usize,
    /// Sessions that got past the handshake and sent Hello.
    pub sessions: usize,
    /// Highest committed sequence number (what Welcome reports).
    pub committed: u64,
    /// Stored readings keyed like the hub's table: (sensor, time).
    pub stored: BTreeMap<(u16, u64), Value>,
    pub frames: Vec<Received>,
    pub command_results: Vec<ResultSeen>,
    /// Frames to write on the live session (see `MockHub::send`).
    pub live: Option<mpsc::UnboundedSender<Vec<u8>>>,
    pub pongs: Vec<Vec<u8>>,
    pub client_close_codes: Vec<u16>,
    pub protocol_violations: Vec<String>,
}

pub struct MockHub {
    pub addr: SocketAddr,
    state: Arc<Mutex<HubState>>,
    task: JoinHandle<()>,
}

impl MockHub {
    pub async fn start(behaviour: Behaviour) -> MockHub {
        Self::start_with(behaviour, |stream| async move { Some(stream) }).await
    }

    /// Start with a wrapper applied to each accepted TCP stream (TLS).
    pub async fn start_with<W, F, S>(behaviour: Behaviour, wrap: W) -> MockHub
    where
        W: Fn(tokio::net::TcpStream) -> F + Send + Sync + 'static,
        F: Future<Output = Option<S>> + Send,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(HubState {
            behaviour,
            ..HubState::default()
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                let stream = wrap(tcp).await;
                tokio::spawn(async move {
                    if let Some(stream) = stream {
                        serve(stream, state).await;
                    }
                });
            }
        });
        MockHub { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, schema::DEVICE_PATH)
    }

    pub fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().expect("hub state")
    }

    /// Write `frame` on the newest session; false if there is none open.
    pub fn send(&self, frame: &Downlink<'_>) -> bool {
        let bytes = encode_downlink_to_vec(frame).expect("encodes");
        self.state()
            .live
            .as_ref()
            .is_some_and(|live| live.send(bytes).is_ok())
    }

    /// The command results received so far, as (connection, id, outcome).
    pub fn results(&self) -> Vec<(usize, u64, String)> {
        self.state()
            .command_results
            .iter()
            .map(|r| (r.conn, r.id, r.outcome.clone()))
            .collect()
    }

    /// Wait (up to 10 s) until `n` command results have arrived.
    pub async fn wait_for_results(&self, n: usize) -> Vec<(usize, u64, String)> {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while self.state().command_results.len() < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        let results = self.results();
        assert!(
            waited.is_ok(),
            "waited for {n} command results, got {results:?}"
        );
        results
    }

    /// Wait (up to 10 s) until `n` sessions have been opened.
    pub async fn wait_for_sessions(&self, n: usize) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while self.state().sessions < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "waited for {n} sessions, got {}",
            self.state().sessions
        );
    }

    /// Every seq was always sent with the same bytes, and each connection
    /// sent strictly increasing seqs.
    pub fn assert_resends_identical(&self) {
        let state = self.state();
        let mut by_seq: BTreeMap<u64, &Vec<u8>> = BTreeMap::new();
        for frame in &state.frames {
            if let Some(first) = by_seq.insert(frame.seq, &frame.bytes) {
                assert_eq!(
                    first, &frame.bytes,
                    "seq {} resent with other bytes",
                    frame.seq
                );
            }
        }
        for conn in 0..state.connections {
            let seqs: Vec<u64> = state
                .frames
                .iter()
                .filter(|f| f.conn == conn)
                .map(|f| f.seq)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "connection {conn} sent seqs out of order: {seqs:?}"
            );
        }
        assert!(
            state.protocol_violations.is_empty(),
            "{:?}",
            state.protocol_violations
        );
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client configuration for the mock hub: three sensors, small frames,
/// quick backoff.
pub fn config(url: &str) -> DeviceConfig {
    let mut config = DeviceConfig::new(url, TOKEN)
        .sensor(TEMPERATURE, "temperature", "°C", ValueKind::Float)
        .sensor(COUNTER, "counter", "", ValueKind::Int)
        .sensor(DOOR, "door", "", ValueKind::Bool)
        .actuator(1, "relay", ValueKind::Bool);
    config.max_batch = 10;
    config.max_in_flight_frames = 4;
    config.flush_interval = Duration::from_millis(5);
    config.backoff_base = Duration::from_millis(10);
    config.backoff_cap = Duration::from_millis(100);
    config.connect_timeout = Duration::from_secs(2);
    config.seed = Some(1);
    config
}

fn refuse(status: u16) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some("refused".to_owned()));
    *response.status_mut() = StatusCode::from_u16(status).expect("valid status");
    response
}

// tungstenite's handshake callback returns its (large) ErrorResponse by value.
#[allow(clippy::result_large_err)]
async fn serve<S>(stream: S, state: Arc<Mutex<HubState>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (conn, refusal, allow_missing_token) = {
        let mut s = state.lock().expect("hub state");
        s.connections += 1;
        (
            s.connections - 1,
            s.behaviour.refuse.pop_front(),
            s.behaviour.allow_missing_token,
        )
    };
    let violations = Arc::clone(&state);
    let callback = move |request: &Request, mut response: Response| {
        if let Some(status) = refusal {
            return Err(refuse(status));
        }
        let auth = request.headers().get("authorization");
        let missing_ok = allow_missing_token && auth.is_none();
        if !missing_ok && auth != Some(&HeaderValue::from_static("Bearer dev-1.secret")) {
            return Err(refuse(401));
        }
        let protocol = request.headers().get("sec-websocket-protocol");
        if protocol != Some(&HeaderValue::from_static(schema::SUBPROTOCOL)) {
            violations
                .lock()
                .expect("hub state")
                .protocol_violations
                .push(format!("subprotocol {protocol:?}"));
            return Err(refuse(400));
        }
        response.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(schema::SUBPROTOCOL),
        );
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let violation = |what: String| {
        state
            .lock()
            .expect("hub state")
            .protocol_violations
            .push(what);
    };

    match ws.next().await {
        Some(Ok(Message::Binary(bytes))) => match decode_uplink(&bytes) {
            Ok(Uplink::Hello(hello)) if hello.version == schema::PROTOCOL_VERSION => {}
            other => return violation(format!("first frame not a Hello: {other:?}")),
        },
        _ => return,
    }
    let behaviour = {
        let mut s = state.lock().expect("hub state");
        s.sessions += 1;
        s.behaviour.clone()
    };
    let committed = state.lock().expect("hub state").committed;
    let welcome = Downlink::Welcome(Welcome {
        device_id: "dev-1",
        server_time_ms: 1_700_000_000_000,
        last_stored_seq: committed,
        limits: Limits {
            max_message_bytes: 65_536,
            max_readings_per_frame: behaviour.max_readings_per_frame,
            idle_timeout_ms: behaviour.idle_timeout_ms,
        },
    });
    if send(&mut ws, &welcome).await.is_err() {
        return;
    }
    if let Some(code) = behaviour.close_after_welcome {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "test close".into(),
        };
        let _ = ws.close(Some(frame)).await;
        while let Some(Ok(_)) = ws.next().await {}
        return;
    }
    for command in &behaviour.commands_after_welcome {
        if send(&mut ws, &Downlink::Command(command.clone()))
            .await
            .is_err()
        {
            return;
        }
    }
    let (live, mut to_send) = mpsc::unbounded_channel::<Vec<u8>>();
    state.lock().expect("hub state").live = Some(live);
    if behaviour.ping_after_welcome
        && ws
            .send(Message::Ping("are you there".into()))
            .await
            .is_err()
    {
        return;
    }

    let hold = if conn == 0 {
        behaviour.hold_after
    } else {
        None
    };
    let mut frames_here = 0usize;
    let mut held: Vec<u64> = Vec::new();
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            Some(bytes) = to_send.recv() => {
                if ws.send(Message::Binary(bytes.into())).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(Ok(message)) = message else {
            return;
        };
        let bytes = match message {
            Message::Binary(bytes) => bytes,
            Message::Pong(payload) => {
                state
                    .lock()
                    .expect("hub state")
                    .pongs
                    .push(payload.to_vec());
                continue;
            }
            Message::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                state
                    .lock()
                    .expect("hub state")
                    .client_close_codes
                    .push(code);
                continue;
            }
            _ => continue,
        };
        let frame = match decode_uplink(&bytes) {
            Ok(frame) => frame,
            Err(err) => return violation(format!("undecodable uplink: {err}")),
        };
        let telemetry = match frame {
            Uplink::Telemetry(t) => t,
            Uplink::CommandResult(r) => {
                let outcome = match r.outcome {
                    CommandOutcome::Delivered => "delivered".to_owned(),
                    CommandOutcome::Succeeded(state) => format!("succeeded: {state:?}"),
                    CommandOutcome::Failed(reason) => format!("failed: {reason}"),
                    CommandOutcome::Rejected(reason) => format!("rejected: {reason}"),
                };
                state
                    .lock()
                    .expect("hub state")
                    .command_results
                    .push(ResultSeen {
                        conn,
                        id: r.command_id,
                        outcome,
                    });
                continue;
            }
            Uplink::Hello(_) => return violation("second Hello".to_owned()),
        };
        frames_here += 1;
        let reject = {
            let mut s = state.lock().expect("hub state");
            if telemetry.seq <= committed && hold.is_none() {
                // Resending a frame this session's Welcome reported stored is
                // allowed (acks can be lost) but this mock only loses them in
                // `hold_after`; flag it. (A frame the previous connection
                // stored after this Welcome went out is a legitimate resend.)
                s.protocol_violations
                    .push(format!("resent stored seq {}", telemetry.seq));
            }
            if telemetry.readings.len() > behaviour.max_readings_per_frame as usize {
                s.protocol_violations
                    .push(format!("frame of {} readings", telemetry.readings.len()));
            }
            s.frames.push(Received {
                conn,
                seq: telemetry.seq,
                readings: telemetry.readings.len(),
                bytes: bytes.to_vec(),
            });
            behaviour.reject_first_frame && s.frames.len() == 1
        };
        if behaviour.silent {
            continue;
        }
        if let Some((ack_first, hold_n)) = hold
            && frames_here > ack_first
        {
            held.push(telemetry.seq);
            if held.len() == hold_n {
                // Commit the first held frame, lose its ack, cut.
                let mut s = state.lock().expect("hub state");
                s.committed = held[0];
                let first = s.frames.iter().rev().find(|f| f.seq == held[0]).cloned();
                drop(s);
                if let Some(first) = first {
                    store(&state, &first.bytes);
                }
                return;
            }
            continue;
        }
        if !behaviour.ack_delay.is_zero() {
            tokio::time::sleep(behaviour.ack_delay).await;
        }
        if reject {
            let error = Downlink::Error(ErrorFrame {
                code: schema::error_code::UNKNOWN_SENSOR,
                reason: "rejected by test",
                seq: Some(telemetry.seq),
            });
            if send(&mut ws, &error).await.is_err() {
                return;
            }
        } else {
            store(&state, &bytes);
        }
        let ack = {
            let mut s = state.lock().expect("hub state");
            s.committed = s.committed.max(telemetry.seq);
            s.committed
        };
        if send(&mut ws, &Downlink::Ack(Ack { seq: ack }))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn store(state: &Mutex<HubState>, bytes: &[u8]) {
    let Ok(Uplink::Telemetry(t)) = decode_uplink(bytes) else {
        return;
    };
    let mut s = state.lock().expect("hub state");
    for r in t.readings.iter() {
        s.stored
            .insert((r.sensor, t.base_time_ms + u64::from(r.offset_ms)), r.value);
    }
}

async fn send<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    frame: &Downlink<'_>,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bytes = encode_downlink_to_vec(frame).expect("encodes");
    ws.send(Message::Binary(bytes.into())).await
}
