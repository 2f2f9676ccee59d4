//! The one test helper that starts a real hub: on 127.0.0.1 port 0 with a
//! fresh database on either backend (`db`), stoppable and restartable on the
//! same port, plus a raw WebSocket device client for protocol-level tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod api;
pub mod broker;
pub mod db;
pub mod relay;

use std::net::SocketAddr;
use std::time::Duration;

use db::{Backend, TestDatabase};
use futures_util::{SinkExt, StreamExt};
use hub::config::ServeConfig;
use hub::store::Store;
use schema::{
    ActuatorDecl, Downlink, Hello, List, Reading, SensorDecl, Telemetry, Uplink, Value, ValueKind,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// A hub running in this process.
pub struct TestHub {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database URL.
    pub database_url: String,
    /// A separate handle on the same database, for assertions.
    pub store: Store,
    config: ServeConfig,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    _database: TestDatabase,
}

/// Settings suited to tests: short timers so failures show quickly.
pub fn test_config(database_url: &str) -> ServeConfig {
    let mut config = ServeConfig::new(([127, 0, 0, 1], 0).into(), database_url);
    config.revocation_poll = Duration::from_millis(200);
    config.presence_flush = Duration::from_millis(200);
    config.shutdown_grace = Duration::from_secs(5);
    config
}

impl TestHub {
    /// Starts a hub with test settings on SQLite.
    pub async fn start() -> TestHub {
        Self::start_on_with(Backend::Sqlite, |_| {}).await
    }

    /// Starts a hub on SQLite after `adjust` changes the test settings.
    pub async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestHub {
        Self::start_on_with(Backend::Sqlite, adjust).await
    }

    /// Starts a hub with test settings on `backend`.
    pub async fn start_on(backend: Backend) -> TestHub {
        Self::start_on_with(backend, |_| {}).await
    }

    /// Starts a hub on `backend` after `adjust` changes the test settings.
    pub async fn start_on_with(backend: Backend, adjust: impl FnOnce(&mut ServeConfig)) -> TestHub {
        let database = db::fresh_database(backend).await;
        Self::start_on_database(database, adjust).await
    }

    /// Starts a hub on a database the caller prepared.
    pub async fn start_on_database(
        database: TestDatabase,
        adjust: impl FnOnce(&mut ServeConfig),
    ) -> TestHub {
        let database_url = database.url.clone();
        let mut config = test_config(&database_url);
        adjust(&mut config);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::open(&database_url).await.unwrap();
        let mut hub = TestHub {
            addr,
            database_url,
            store,
            config,
            shutdown: CancellationToken::new(),
            task: None,
            _database: database,
        };
        hub.spawn(listener);
        hub
    }

    fn spawn(&mut self, listener: TcpListener) {
        let shutdown = CancellationToken::new();
        self.shutdown = shutdown.clone();
        let config = self.config.clone();
        self.task = Some(tokio::spawn(async move {
            hub::server::run(config, listener, shutdown)
                .await
                .expect("hub runs");
        }));
    }

    /// Stops the hub gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("hub stops within 30 s")
                .expect("hub task did not panic");
        }
    }

    /// Stops and starts again on the same port and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut attempt = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(err) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!(%err, "port not free yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("cannot rebind {}: {err}", self.addr),
            }
        };
        self.spawn(listener);
    }

    /// `ws://…/ws/device`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, schema::DEVICE_PATH)
    }

    /// `http://…`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `wss://localhost:…/ws/device`, for a hub started with `config.tls`
    /// (the test server certificates name `localhost`).
    pub fn wss_url(&self) -> String {
        format!(
            "wss://localhost:{}{}",
            self.addr.port(),
            schema::DEVICE_PATH
        )
    }

    /// `https://localhost:…`, for a hub started with `config.tls`.
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Provisions a device, returning (id, token).
    pub async fn add_device(&self, name: &str) -> (String, String) {
        let device = self.store.create_device(name).await.unwrap();
        (device.id, device.token)
    }

    /// Rows in the readings table.
    pub async fn stored_readings(&self) -> i64 {
        self.store.count_readings().await.unwrap()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A raw WebSocket connection to the device endpoint.
pub type RawSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the device socket with `token` (if any) and optionally the subprotocol.
pub async fn connect_raw(
    hub: &TestHub,
    token: Option<&str>,
    subprotocol: bool,
) -> Result<RawSocket, tungstenite::Error> {
    let mut request = hub.ws_url().into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if subprotocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            schema::SUBPROTOCOL.parse().unwrap(),
        );
    }
    let (socket, _response) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// The sensors every raw test device declares: 1 temperature (float), 2 count (int), 3 door (bool).
pub fn test_sensors() -> [SensorDecl<'static>; 3] {
    [
        SensorDecl {
            id: 1,
            name: "temperature",
            unit: "°C",
            kind: ValueKind::Float,
        },
        SensorDecl {
            id: 2,
            name: "count",
            unit: "",
            kind: ValueKind::Int,
        },
        SensorDecl {
            id: 3,
            name: "door",
            unit: "",
            kind: ValueKind::Bool,
        },
    ]
}

/// Encoded Hello with [`test_sensors`] and one relay actuator.
pub fn hello_frame(version: u16) -> Vec<u8> {
    let sensors = test_sensors();
    let actuators = [ActuatorDecl {
        id: 1,
        name: "relay",
        kind: ValueKind::Bool,
    }];
    schema::encode_uplink_to_vec(&Uplink::Hello(Hello {
        version,
        firmware: "test-1.0",
        sensors: List::Borrowed(&sensors),
        actuators: List::Borrowed(&actuators),
    }))
    .unwrap()
}

/// Encoded Telemetry with `n` temperature readings 1 ms apart from `base_ms`.
pub fn telemetry_frame(seq: u64, base_ms: u64, n: u32) -> Vec<u8> {
    let readings: Vec<Reading> = (0..n)
        .map(|i| Reading {
            sensor: 1,
            offset_ms: i,
            value: Value::Float(20.0 + f64::from(i)),
        })
        .collect();
    schema::encode_uplink_to_vec(&Uplink::Telemetry(Telemetry {
        seq,
        base_time_ms: base_ms,
        readings: List::Borrowed(&readings),
    }))
    .unwrap()
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What the next received message was.
#[derive(Debug)]
pub enum Received {
    /// A decoded downlink frame, as owned debug text plus the parsed parts tests look at.
    Frame(DownFrame),
    /// The hub closed with this code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame.
    Gone,
}

/// The parts of downlink frames tests check.
#[derive(Debug, Clone, PartialEq)]
pub enum DownFrame {
    /// Welcome: device id and last stored seq.
    Welcome {
        device_id: String,
        last_stored_seq: u64,
    },
    /// Ack.
    Ack(u64),
    /// Error frame.
    Error {
        code: u16,
        seq: Option<u64>,
        reason: String,
    },
    /// A command.
    Command(u64),
}

/// Reads until a binary frame or a close arrives (answering nothing else), within 10 s.
pub async fn receive(socket: &mut RawSocket) -> Received {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a message within 10 s");
        match next {
            None | Some(Err(_)) => return Received::Gone,
            Some(Ok(Message::Binary(bytes))) => {
                let frame = match schema::decode_downlink(&bytes).expect("valid downlink") {
                    Downlink::Welcome(w) => DownFrame::Welcome {
                        device_id: w.device_id.to_string(),
                        last_stored_seq: w.last_stored_seq,
                    },
                    Downlink::Ack(a) => DownFrame::Ack(a.seq),
                    Downlink::Error(e) => DownFrame::Error {
                        code: e.code,
                        seq: e.seq,
                        reason: e.reason.to_string(),
                    },
                    Downlink::Command(c) => DownFrame::Command(c.id),
                };
                return Received::Frame(frame);
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Received::Closed(code, reason);
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// Expects the next frame to be a downlink frame.
pub async fn expect_frame(socket: &mut RawSocket) -> DownFrame {
    match receive(socket).await {
        Received::Frame(frame) => frame,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Expects the hub to close with `code`; returns the reason.
pub async fn expect_close(socket: &mut RawSocket, code: u16) -> String {
    loop {
        match receive(socket).await {
            Received::Closed(got, reason) => {
                assert_eq!(got, code, "close reason: {reason}");
                return reason;
            }
            Received::Frame(DownFrame::Ack(_)) => continue,
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

/// Connects, sends Hello, and returns the socket and the Welcome's last stored seq.
pub async fn open_session(hub: &TestHub, token: &str) -> (RawSocket, u64) {
    let mut socket = connect_raw(hub, Some(token), true)
        .await
        .expect("handshake");
    socket
        .send(Message::Binary(hello_frame(1).into()))
        .await
        .unwrap();
    match expect_frame(&mut socket).await {
        DownFrame::Welcome {
            last_stored_seq, ..
        } => (socket, last_stored_seq),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// Sends a binary message.
pub async fn send_binary(socket: &mut RawSocket, bytes: Vec<u8>) {
    socket.send(Message::Binary(bytes.into())).await.unwrap();
}

/// Reads until an Ack covering `seq` arrives.
pub async fn wait_ack(socket: &mut RawSocket, seq: u64) {
    loop {
        match expect_frame(socket).await {
            DownFrame::Ack(acked) if acked >= seq => return,
            DownFrame::Ack(_) => continue,
            other => panic!("expected Ack {seq}, got {other:?}"),
        }
    }
}

/// Polls `check` every 50 ms for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The state the HTTP API needs, wired like `server::run` does but without
/// writers, background tasks or a listener: for driving `hub::api::router`
/// directly with `oneshot`.
pub fn router_state(store: Store, database_url: &str, instance: &str) -> hub::state::AppState {
    use std::sync::Arc;
    let sessions = Arc::new(hub::registry::SessionRegistry::default());
    let config = ServeConfig::new(([127, 0, 0, 1], 0).into(), database_url);
    let ingest = hub::ingest::channel(16).0;
    let metrics = Arc::new(hub::metrics::Metrics::new(hub::metrics::MetricSources {
        instance: instance.into(),
        ingest: ingest.depth_probe(),
        sessions: Arc::clone(&sessions),
        mqtt: None,
    }));
    let commands = hub::commands::CommandService::new(
        store.clone(),
        Arc::clone(&sessions),
        hub::commands::CommandSettings::from_config(&config),
        Arc::clone(&metrics),
    );
    let auth_throttle = Arc::new(hub::throttle::AuthThrottle::new(
        config.limits.auth_failures_per_minute,
    ));
    hub::state::AppState {
        connects: hub::gateway::connect_batch::ConnectBatcher::spawn(&store, instance, &metrics),
        store,
        sessions,
        config: Arc::new(config),
        ingest,
        commands,
        events: hub::events::HubEvents::default(),
        shutdown: CancellationToken::new(),
        metrics,
        auth_throttle,
    }
}
