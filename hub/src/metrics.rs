//! Prometheus metrics: every family the hub exports on `GET /metrics`, and
//! the short-window rates `GET /api/v1/status` reports.
//!
//! One [`Metrics`] per hub (no global registry, so tests can run several hubs
//! in one process), shared through `AppState`. Hot paths only touch atomics:
//! every label value is known at start and has its own plain [`Counter`]
//! handle (an `Arc<AtomicU64>`), so a frame never looks up a label set,
//! takes a lock or allocates; readings are counted per frame with `inc_by`.
//! Every series is exported from the start, at 0, so `rate()` works at once. Values that already live elsewhere (queue depth, devices
//! connected, the MQTT bridge's state) are read at scrape time by a
//! collector rather than copied on every change.
//!
//! The exposition is the OpenMetrics text format. `/metrics` is served
//! without authentication on the main listener: expose it only to the
//! scrape network (the nginx example in `deploy/` answers 404 for it on the
//! public side).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::header;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::ingest::IngestDepth;
use crate::mqtt::MqttStatus;
use crate::registry::SessionRegistry;
use crate::store::CommandStatus;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often the rate sampler records the counters.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The window the status rates are computed over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// How a device handshake ended (`hub_handshakes_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Authenticated and upgraded.
    Accepted,
    /// No token, or an invalid or revoked one (401).
    Unauthorized,
    /// Not a WebSocket upgrade, or the subprotocol was not offered (400).
    BadProtocol,
    /// The database could not check the token (503).
    Unavailable,
    /// A browser's Origin is not on the allow-list (403).
    ForbiddenOrigin,
    /// Too many failed authentications from this source address (429).
    Throttled,
}

impl Handshake {
    const ALL: [Handshake; 6] = [
        Handshake::Accepted,
        Handshake::Unauthorized,
        Handshake::BadProtocol,
        Handshake::Unavailable,
        Handshake::ForbiddenOrigin,
        Handshake::Throttled,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Handshake::Accepted => "accepted",
            Handshake::Unauthorized => "unauthorized",
            Handshake::BadProtocol => "bad_protocol",
            Handshake::Unavailable => "unavailable",
            Handshake::ForbiddenOrigin => "forbidden_origin",
            Handshake::Throttled => "throttled",
        }
    }
}

/// A limit that refused something (`hub_limit_rejections_total{limit}`);
/// docs/SECURITY.md says what each protects against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A device message larger than `--max-message-bytes` (close 1009).
    MessageSize,
    /// A device over its frames/s or readings/s budget (Error 8, then close 1008).
    DeviceRate,
    /// A connection refused at `--max-connections`.
    Connections,
    /// A connection that did not finish TLS and its HTTP request in time.
    HandshakeTimeout,
    /// A TLS handshake that failed (bad, untrusted or expired certificate).
    TlsHandshake,
    /// A source address refused for too many failed authentications (429).
    AuthThrottle,
    /// A device that stopped reading, dropped at the send timeout (4006).
    SendQueue,
    /// A browser Origin not on the allow-list (403).
    Origin,
    /// An HTTP request body over `--api-body-limit-bytes` (413).
    BodySize,
    /// An HTTP request that ran past `--api-request-timeout-secs` (503).
    RequestTimeout,
}

impl Limit {
    const ALL: [Limit; 10] = [
        Limit::MessageSize,
        Limit::DeviceRate,
        Limit::Connections,
        Limit::HandshakeTimeout,
        Limit::TlsHandshake,
        Limit::AuthThrottle,
        Limit::SendQueue,
        Limit::Origin,
        Limit::BodySize,
        Limit::RequestTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MessageSize => "message_size",
            Limit::DeviceRate => "device_rate",
            Limit::Connections => "connections",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::TlsHandshake => "tls_handshake",
            Limit::AuthThrottle => "auth_throttle",
            Limit::SendQueue => "send_queue",
            Limit::Origin => "origin",
            Limit::BodySize => "body_size",
            Limit::RequestTimeout => "request_timeout",
        }
    }
}

/// Uplink frames the gateway handled (`hub_frames_received_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A valid Hello.
    Hello,
    /// A Telemetry frame (accepted or rejected).
    Telemetry,
    /// A CommandResult.
    CommandResult,
}

impl FrameKind {
    const ALL: [FrameKind; 3] = [
        FrameKind::Hello,
        FrameKind::Telemetry,
        FrameKind::CommandResult,
    ];

    fn as_str(self) -> &'static str {
        match self {
            FrameKind::Hello => "hello",
            FrameKind::Telemetry => "telemetry",
            FrameKind::CommandResult => "command_result",
        }
    }
}

/// Where a database error was met (`hub_database_errors_total{op}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbOp {
    /// Committing an ingest batch (each failed attempt of the retry loop).
    Commit,
    /// Serving an API request (the 500/503 answers).
    Api,
    /// Device sessions: token check, session open and close.
    Session,
    /// Command delivery and device answers on a connection.
    Commands,
}

impl DbOp {
    const ALL: [DbOp; 4] = [DbOp::Commit, DbOp::Api, DbOp::Session, DbOp::Commands];

    fn as_str(self) -> &'static str {
        match self {
            DbOp::Commit => "commit",
            DbOp::Api => "api",
            DbOp::Session => "session",
            DbOp::Commands => "commands",
        }
    }
}

/// The database work of devices connecting, batched across devices
/// ([`crate::gateway::connect_batch`]): the `op` label of
/// `hub_connect_batch_size`.
#[derive(Debug, Clone, Copy)]
pub enum ConnectOp {
    /// Token checks.
    Auth,
    /// Session opens.
    SessionOpen,
    /// Session closes.
    SessionClose,
    /// Hello records (first connects, changed declarations).
    Hello,
}

impl ConnectOp {
    const ALL: [ConnectOp; 4] = [
        ConnectOp::Auth,
        ConnectOp::SessionOpen,
        ConnectOp::SessionClose,
        ConnectOp::Hello,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ConnectOp::Auth => "auth",
            ConnectOp::SessionOpen => "session_open",
            ConnectOp::SessionClose => "session_close",
            ConnectOp::Hello => "hello",
        }
    }
}

/// `schema::error_code` values and their `reason` label; anything else is `other`.
const REJECTION_REASONS: [(u16, &str); 8] = [
    (schema::error_code::UNKNOWN_SENSOR, "unknown_sensor"),
    (schema::error_code::WRONG_VALUE_KIND, "wrong_kind"),
    (schema::error_code::NON_FINITE_VALUE, "non_finite"),
    (schema::error_code::BAD_TIMESTAMP, "bad_timestamp"),
    (schema::error_code::BAD_BATCH_SIZE, "bad_batch_size"),
    (schema::error_code::UNKNOWN_COMMAND, "unknown_command"),
    (schema::error_code::BAD_SEQUENCE, "bad_sequence"),
    (schema::error_code::RATE_LIMITED, "rate_limited"),
];

/// Close codes the hub sends (docs/PROTOCOL.md); anything else is `other`.
const CLOSE_CODES: [(u16, &str); 14] = [
    (schema::close::NORMAL, "1000"),
    (schema::close::GOING_AWAY, "1001"),
    (schema::close::PROTOCOL_ERROR, "1002"),
    (schema::close::UNSUPPORTED_DATA, "1003"),
    (schema::close::INVALID_PAYLOAD, "1007"),
    (schema::close::POLICY_VIOLATION, "1008"),
    (schema::close::MESSAGE_TOO_BIG, "1009"),
    (schema::close::INTERNAL_ERROR, "1011"),
    (schema::close::SESSION_REPLACED, "4000"),
    (schema::close::CREDENTIALS_REVOKED, "4001"),
    (schema::close::IDLE_TIMEOUT, "4003"),
    (schema::close::HELLO_TIMEOUT, "4004"),
    (schema::close::INVALID_HELLO, "4005"),
    (schema::close::SLOW_CONSUMER, "4006"),
];

/// What the scrape-time collector and the status report read from the rest of the hub.
pub struct MetricSources {
    /// This hub's name in a fleet (see [`instance_id`]).
    pub instance: String,
    /// The ingest queue, for its depth.
    pub ingest: IngestDepth,
    /// Live sessions, for the devices connected.
    pub sessions: Arc<SessionRegistry>,
    /// The MQTT bridge, when configured.
    pub mqtt: Option<MqttStatus>,
}

/// Counter values at one moment, for rates.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    readings: u64,
    frames: u64,
    acks: u64,
    stored: u64,
}

/// Rates per second over the recent window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Seconds the rates are computed over (shorter right after start).
    pub window_s: f64,
    /// Readings received.
    pub readings_per_s: f64,
    /// Telemetry frames received.
    pub frames_per_s: f64,
    /// Acks sent.
    pub acks_per_s: f64,
    /// Readings committed durably.
    pub stored_per_s: f64,
}

/// Every metric of the hub; see the module docs.
pub struct Metrics {
    registry: Registry,
    instance: String,
    started: Instant,
    started_at: SystemTime,
    sources: Arc<Sampled>,
    /// Upgraded device connections open now.
    pub connections_open: Gauge,
    /// Browser live-stream sockets (`/api/v1/stream`) open now.
    pub stream_clients: Gauge,
    /// Snapshots re-sent to stream clients that fell behind.
    pub stream_resyncs: Counter,
    handshakes: [Counter; Handshake::ALL.len()],
    frames: [Counter; FrameKind::ALL.len()],
    /// Readings in accepted Telemetry frames.
    pub readings_received: Counter,
    /// Readings committed durably.
    pub readings_stored: Counter,
    /// Ack frames sent.
    pub acks_sent: Counter,
    rejections: [Counter; REJECTION_REASONS.len() + 1],
    closes: [Counter; CLOSE_CODES.len() + 1],
    /// Readings per committed batch.
    pub batch_readings: Histogram,
    /// From the start of a batch's commit until it is durable, retries included.
    pub commit_seconds: Histogram,
    /// Devices per connect-path statement, by [`ConnectOp`].
    connect_batches: [Histogram; ConnectOp::ALL.len()],
    commands: [Counter; CommandStatus::ALL.len()],
    database_errors: [Counter; DbOp::ALL.len()],
    limits: [Counter; Limit::ALL.len()],
    samples: Mutex<VecDeque<Sample>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// A counter family with one label whose values are all known at start:
/// one plain counter per value, exported in a fixed order (a
/// `prometheus_client` `Family` would hash each label set and export them
/// in hash order).
#[derive(Debug)]
struct LabelledCounters<const N: usize> {
    label: &'static str,
    values: [&'static str; N],
    counters: [Counter; N],
}

impl<const N: usize> EncodeMetric for LabelledCounters<N> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (value, counter) in self.values.iter().zip(&self.counters) {
            let labels = [(self.label, *value)];
            counter.encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Registers a one-label counter family; returns the handle of each value, in order.
fn counter_family<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let counters: [Counter; N] = std::array::from_fn(|_| Counter::default());
    let handles = counters.clone();
    registry.register(
        name,
        help,
        LabelledCounters {
            label,
            values,
            counters,
        },
    );
    handles
}

impl Metrics {
    /// Builds and registers every family.
    pub fn new(sources: MetricSources) -> Metrics {
        let mut registry = Registry::default();
        registry.register(
            "hub",
            "This hub: version and instance",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("hub_instance", sources.instance.clone()),
            ]),
        );
        let connections_open = Gauge::default();
        registry.register(
            "hub_connections_open",
            "Upgraded device WebSocket connections open now",
            connections_open.clone(),
        );
        let stream_clients = Gauge::default();
        registry.register(
            "hub_stream_clients",
            "Browser live-stream WebSockets (/api/v1/stream) open now",
            stream_clients.clone(),
        );
        let stream_resyncs = Counter::default();
        registry.register(
            "hub_stream_resyncs",
            "Snapshots re-sent to live-stream clients whose queue overflowed",
            stream_resyncs.clone(),
        );
        let handshakes = counter_family(
            &mut registry,
            "hub_handshakes",
            "Device handshakes by outcome",
            "outcome",
            Handshake::ALL.map(Handshake::as_str),
        );
        let frames = counter_family(
            &mut registry,
            "hub_frames_received",
            "Uplink frames handled, by kind",
            "kind",
            FrameKind::ALL.map(FrameKind::as_str),
        );
        let readings_received = Counter::default();
        registry.register(
            "hub_readings_received",
            "Readings in accepted telemetry frames",
            readings_received.clone(),
        );
        let readings_stored = Counter::default();
        registry.register(
            "hub_readings_stored",
            "Readings committed durably",
            readings_stored.clone(),
        );
        let acks_sent = Counter::default();
        registry.register("hub_acks_sent", "Ack frames sent", acks_sent.clone());
        let mut reasons = [""; REJECTION_REASONS.len() + 1];
        for (slot, (_, reason)) in reasons.iter_mut().zip(REJECTION_REASONS) {
            *slot = reason;
        }
        reasons[REJECTION_REASONS.len()] = "other";
        let rejections = counter_family(
            &mut registry,
            "hub_rejections",
            "Frames refused with an Error frame, by reason",
            "reason",
            reasons,
        );
        let mut codes = [""; CLOSE_CODES.len() + 1];
        for (slot, (_, code)) in codes.iter_mut().zip(CLOSE_CODES) {
            *slot = code;
        }
        codes[CLOSE_CODES.len()] = "other";
        let closes = counter_family(
            &mut registry,
            "hub_connections_closed",
            "Close frames the hub sent, by close code",
            "code",
            codes,
        );
        let batch_readings = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        registry.register(
            "hub_ingest_batch_readings",
            "Readings per committed ingest batch",
            batch_readings.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register_with_unit(
            "hub_ingest_commit",
            "Time from the start of a batch commit until it is durable, retries included",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let connect_batch_family =
            Family::<Vec<(&'static str, &'static str)>, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 10))
            });
        // Clones share the family's series.
        let connect_batches = ConnectOp::ALL.map(|op| {
            connect_batch_family
                .get_or_create(&vec![("op", op.as_str())])
                .clone()
        });
        registry.register(
            "hub_connect_batch_size",
            "Devices per database statement of the connect path, by operation",
            connect_batch_family,
        );
        let commands = counter_family(
            &mut registry,
            "hub_commands",
            "Command status changes recorded by this hub, by new status",
            "status",
            CommandStatus::ALL.map(CommandStatus::as_str),
        );
        let database_errors = counter_family(
            &mut registry,
            "hub_database_errors",
            "Database errors, by operation",
            "op",
            DbOp::ALL.map(DbOp::as_str),
        );
        let limits = counter_family(
            &mut registry,
            "hub_limit_rejections",
            "Connections, frames and requests refused by a limit, by limit",
            "limit",
            Limit::ALL.map(Limit::as_str),
        );
        let sampled = Arc::new(Sampled {
            ingest: sources.ingest,
            sessions: sources.sessions,
            mqtt: sources.mqtt,
        });
        registry.register_collector(Box::new(Arc::clone(&sampled)));
        let started = Instant::now();
        let metrics = Metrics {
            registry,
            instance: sources.instance,
            started,
            started_at: SystemTime::now(),
            sources: sampled,
            connections_open,
            stream_clients,
            stream_resyncs,
            handshakes,
            frames,
            readings_received,
            readings_stored,
            acks_sent,
            rejections,
            closes,
            batch_readings,
            commit_seconds,
            connect_batches,
            commands,
            database_errors,
            limits,
            samples: Mutex::new(VecDeque::new()),
        };
        metrics.sample_at(started);
        metrics
    }

    /// The exposition in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug
        // in a collector, and a partial exposition is still worth serving.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%err, "could not encode the metrics");
        }
        out
    }

    /// Counts one handshake.
    pub fn handshake(&self, outcome: Handshake) {
        self.handshakes[outcome as usize].inc();
    }

    /// Counts one uplink frame.
    pub fn frame(&self, kind: FrameKind) {
        self.frames[kind as usize].inc();
    }

    /// Counts one frame refused with an Error frame carrying `code`.
    pub fn rejection(&self, code: u16) {
        let index = REJECTION_REASONS
            .iter()
            .position(|(known, _)| *known == code)
            .unwrap_or(REJECTION_REASONS.len());
        self.rejections[index].inc();
    }

    /// Records one connect-path statement that served `devices` devices.
    pub fn connect_batch(&self, op: ConnectOp, devices: usize) {
        self.connect_batches[op as usize].observe(devices as f64);
    }

    /// Counts one refusal by `limit`.
    pub fn limit(&self, limit: Limit) {
        self.limits[limit as usize].inc();
    }

    /// How often `limit` has refused something (tests and `hub status`).
    pub fn limit_rejections(&self, limit: Limit) -> u64 {
        self.limits[limit as usize].get()
    }

    /// Counts one close frame sent with `code`.
    pub fn connection_closed(&self, code: u16) {
        let index = CLOSE_CODES
            .iter()
            .position(|(known, _)| *known == code)
            .unwrap_or(CLOSE_CODES.len());
        self.closes[index].inc();
    }

    /// Counts one command reaching `status`.
    pub fn command(&self, status: CommandStatus) {
        if let Some(index) = CommandStatus::ALL.iter().position(|s| *s == status) {
            self.commands[index].inc();
        }
    }

    /// Counts one database error met during `op`.
    pub fn database_error(&self, op: DbOp) {
        self.database_errors[op as usize].inc();
    }

    /// Records one committed batch: its size now, its latency once durable.
    pub fn batch_committed(&self, readings: usize, started: Instant) {
        self.batch_readings.observe(readings as f64);
        self.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.readings_stored.inc_by(readings as u64);
    }

    /// This hub's instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How long this hub has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// When this hub started, by the wall clock.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Devices with a live session here.
    pub fn devices_connected(&self) -> usize {
        self.sources.sessions.len()
    }

    /// Frames waiting in the ingest queue, and its capacity.
    pub fn ingest_queue(&self) -> (usize, usize) {
        (self.sources.ingest.depth(), self.sources.ingest.capacity())
    }

    /// The MQTT bridge, when configured.
    pub fn mqtt(&self) -> Option<&MqttStatus> {
        self.sources.mqtt.as_ref()
    }

    /// Frames handled by kind, as (label, count).
    pub fn frames_received(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FrameKind::ALL
            .iter()
            .zip(&self.frames)
            .map(|(kind, c)| (kind.as_str(), c.get()))
    }

    /// Command status changes since start, as (status, count).
    pub fn commands_by_status(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CommandStatus::ALL
            .iter()
            .zip(&self.commands)
            .map(|(status, c)| (status.as_str(), c.get()))
    }

    /// Handshakes by outcome since start, as (outcome, count).
    pub fn handshakes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Handshake::ALL
            .iter()
            .zip(&self.handshakes)
            .map(|(outcome, c)| (outcome.as_str(), c.get()))
    }

    /// Frames refused with an Error frame since start, all reasons together.
    pub fn rejections_total(&self) -> u64 {
        self.rejections.iter().map(Counter::get).sum()
    }

    /// Database errors since start, all operations together.
    pub fn database_errors_total(&self) -> u64 {
        self.database_errors.iter().map(Counter::get).sum()
    }

    fn current(&self, at: Instant) -> Sample {
        Sample {
            at,
            readings: self.readings_received.get(),
            frames: self.frames[FrameKind::Telemetry as usize].get(),
            acks: self.acks_sent.get(),
            stored: self.readings_stored.get(),
        }
    }

    fn sample_at(&self, at: Instant) {
        let sample = self.current(at);
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back(sample);
        // Keep one sample older than the window, so the window is always covered.
        while samples.len() > 2 && samples[1].at + RATE_WINDOW <= at {
            samples.pop_front();
        }
    }

    /// Rates from the oldest sample in the window up to the counters now.
    pub fn rates(&self) -> Rates {
        self.rates_at(Instant::now())
    }

    fn rates_at(&self, now: Instant) -> Rates {
        let oldest = {
            let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            samples
                .iter()
                .find(|s| s.at + RATE_WINDOW >= now)
                .or(samples.back())
                .copied()
        };
        let Some(oldest) = oldest else {
            return Rates::default();
        };
        let current = self.current(now);
        let seconds = (now - oldest.at).as_secs_f64();
        if seconds < 0.001 {
            return Rates::default();
        }
        let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / seconds;
        Rates {
            window_s: seconds,
            readings_per_s: rate(current.readings, oldest.readings),
            frames_per_s: rate(current.frames, oldest.frames),
            acks_per_s: rate(current.acks, oldest.acks),
            stored_per_s: rate(current.stored, oldest.stored),
        }
    }
}

/// `GET /metrics`, at the top level (not under `/api/v1`) and without
/// authentication: expose it only to the scrape network.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode()) }
        }),
    )
}

/// Records the counters every second for [`Metrics::rates`], until `shutdown`.
pub async fn run_rate_sampler(metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            at = tick.tick() => metrics.sample_at(at),
        }
    }
}

/// The default name of this hub in a fleet (`--instance-id` overrides it):
/// the host name (a container's or pod's name), or a random one when the
/// system has none. Kept to what `--instance-id` accepts (64 letters,
/// digits, `.`, `_`, `-`).
pub fn instance_id() -> String {
    let from_file = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|name| {
                name.trim()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                    .take(64)
                    .collect::<String>()
            })
            .filter(|name| !name.is_empty())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| format!("hub-{:08x}", rand::random::<u32>()))
}

/// Values read from the rest of the hub at scrape time.
struct Sampled {
    ingest: IngestDepth,
    sessions: Arc<SessionRegistry>,
    mqtt: Option<MqttStatus>,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled").finish_non_exhaustive()
    }
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        encode_gauge(
            &mut encoder,
            "hub_ingest_queue_frames",
            "Telemetry frames waiting for the batch writers",
            to_i64(self.ingest.depth()),
        )?;
        encode_gauge(
            &mut encoder,
            "hub_ingest_queue_capacity_frames",
            "Telemetry frames the ingest queue holds at most",
            to_i64(self.ingest.capacity()),
        )?;
        encode_gauge(
            &mut encoder,
            "hub_devices_connected",
            "Devices with a live session on this hub",
            to_i64(self.sessions.len()),
        )?;
        if let Some(mqtt) = &self.mqtt {
            let stats = mqtt.stats();
            encode_gauge(
                &mut encoder,
                "hub_mqtt_connected",
                "1 while the MQTT bridge is connected and subscribed",
                i64::from(stats.ready),
            )?;
            let dropped = ConstCounter::new(stats.dropped_publishes);
            let metric = encoder.encode_descriptor(
                "hub_mqtt_dropped",
                "MQTT messages not published (queue full or too large for the broker)",
                None,
                dropped.metric_type(),
            )?;
            dropped.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metrics over a queue of 8 frames (the handle keeps the queue open).
    fn metrics_with_queue() -> (Metrics, crate::ingest::IngestHandle) {
        let (ingest, _queue) = crate::ingest::channel(8);
        let metrics = Metrics::new(MetricSources {
            instance: "test-1".into(),
            ingest: ingest.depth_probe(),
            sessions: Arc::default(),
            mqtt: None,
        });
        (metrics, ingest)
    }

    fn metrics() -> Metrics {
        metrics_with_queue().0
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn every_family_is_exported_from_the_start() {
        let (metrics, _ingest) = metrics_with_queue();
        let text = metrics.encode();
        for expected in [
            "hub_info{version=\"",
            "hub_connections_open 0",
            "hub_stream_clients 0",
            "hub_stream_resyncs_total 0",
            "hub_handshakes_total{outcome=\"accepted\"} 0",
            "hub_handshakes_total{outcome=\"unavailable\"} 0",
            "hub_frames_received_total{kind=\"command_result\"} 0",
            "hub_readings_received_total 0",
            "hub_readings_stored_total 0",
            "hub_acks_sent_total 0",
            "hub_rejections_total{reason=\"bad_sequence\"} 0",
            "hub_rejections_total{reason=\"other\"} 0",
            "hub_connections_closed_total{code=\"1001\"} 0",
            "hub_ingest_batch_readings_count 0",
            "hub_ingest_commit_seconds_count 0",
            "hub_commands_total{status=\"expired\"} 0",
            "hub_database_errors_total{op=\"commit\"} 0",
            "hub_ingest_queue_frames 0",
            "hub_ingest_queue_capacity_frames 8",
            "hub_devices_connected 0",
        ] {
            assert!(
                line(&text, expected).is_some(),
                "missing {expected}:\n{text}"
            );
        }
        assert!(text.contains("instance=\"test-1\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // No MQTT bridge, no MQTT series.
        assert!(!text.contains("hub_mqtt"), "{text}");
    }

    #[test]
    fn labelled_counters_count_their_own_series() {
        let m = metrics();
        m.handshake(Handshake::Unauthorized);
        m.rejection(schema::error_code::UNKNOWN_SENSOR);
        m.rejection(999);
        m.connection_closed(schema::close::IDLE_TIMEOUT);
        m.command(CommandStatus::Sent);
        m.database_error(DbOp::Api);
        m.batch_committed(5, Instant::now());
        let text = m.encode();
        for expected in [
            "hub_handshakes_total{outcome=\"unauthorized\"} 1",
            "hub_handshakes_total{outcome=\"accepted\"} 0",
            "hub_rejections_total{reason=\"unknown_sensor\"} 1",
            "hub_rejections_total{reason=\"other\"} 1",
            "hub_connections_closed_total{code=\"4003\"} 1",
            "hub_commands_total{status=\"sent\"} 1",
            "hub_database_errors_total{op=\"api\"} 1",
            "hub_readings_stored_total 5",
            "hub_ingest_batch_readings_count 1",
            "hub_ingest_batch_readings_sum 5",
        ] {
            assert!(
                line(&text, expected).is_some(),
                "missing {expected}:\n{text}"
            );
        }
        assert_eq!(m.rejections_total(), 2);
        assert_eq!(m.database_errors_total(), 1);
    }

    #[test]
    fn mqtt_series_appear_when_the_bridge_is_configured() {
        let (ingest, _queue) = crate::ingest::channel(1);
        let m = Metrics::new(MetricSources {
            instance: "x".into(),
            ingest: ingest.depth_probe(),
            sessions: Arc::default(),
            mqtt: Some(MqttStatus::default()),
        });
        let text = m.encode();
        assert!(line(&text, "hub_mqtt_connected 0").is_some(), "{text}");
        assert!(line(&text, "hub_mqtt_dropped_total 0").is_some(), "{text}");
    }

    #[tokio::test]
    async fn the_depth_probe_does_not_keep_the_queue_open() {
        let (ingest, mut queue) = crate::ingest::channel(4);
        let probe = ingest.depth_probe();
        assert_eq!(probe.capacity(), 4);
        drop(ingest);
        assert!(queue.rx.recv().await.is_none(), "the writer sees the end");
        assert_eq!(probe.depth(), 0);
    }

    #[test]
    fn rates_cover_the_recent_window() {
        let m = metrics();
        let start = m.started;
        m.readings_received.inc_by(200);
        let rates = m.rates_at(start + Duration::from_secs(2));
        assert!((rates.window_s - 2.0).abs() < 0.01, "{rates:?}");
        assert!((rates.readings_per_s - 100.0).abs() < 1.0, "{rates:?}");
        // Samples older than the window stop counting.
        for s in 1..=20 {
            m.sample_at(start + SAMPLE_EVERY * s);
        }
        let rates = m.rates_at(start + SAMPLE_EVERY * 20);
        assert_eq!(rates.readings_per_s, 0.0, "{rates:?}");
        assert!(
            rates.window_s <= RATE_WINDOW.as_secs_f64() + 0.01,
            "{rates:?}"
        );
    }
}
