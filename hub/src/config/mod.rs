//! Settings of `hub serve` and of the admin subcommands.
//!
//! Each setting of `hub serve` is one field of [`ServeArgs`]: a flag with an
//! `HUB_*` environment variable, a default that runs with no setup (embedded
//! SQLite, loopback listener, MQTT off) and a doc comment that is its `--help`
//! text. The same field is also a key of the TOML file named by `--config`
//! (the field name, i.e. the flag in snake_case), so a new setting needs no
//! second or third declaration: [`load`] reads the file and feeds it to clap
//! underneath flags and environment (see `load.rs`). The result becomes a
//! [`ServeConfig`], which [`ServeConfig::validate`] checks before anything
//! starts, so a bad value stops start-up with its name, wherever it came from.
//!
//! Precedence: flags > environment > file > defaults (docs/CONFIGURATION.md).

mod file;
mod load;
mod mask;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use file::FileError;
pub use load::{LoadError, Loaded, Setting, Source, load, serve_command};
pub use mask::{is_secret_key, mask_secrets};

/// Shown after the flags in `hub serve --help`.
pub const PRECEDENCE_HELP: &str = "Every setting is a flag, an environment variable (shown as [env: ...]) \
and a key of the TOML file named by --config (the flag in snake_case: --retention-days 30 is \
`retention_days = 30`). Flags win over environment, environment over the file, the file over \
the defaults. `hub config print` shows the result. Every setting: docs/CONFIGURATION.md.";

/// Default database: an SQLite file in the working directory, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://hub.db";

/// Where the database is; shared by `serve` and the admin subcommands.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://PATH` (the file is created if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (the database must exist;
    /// the hub creates its tables).
    #[arg(long, env = "HUB_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// How `hub serve` writes its log lines (on stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Plain,
    /// One JSON object per event, with the current span and the span list
    /// (so the `device` id of a connection is on each of its events).
    Json,
}

/// Flags of `hub serve` (also the keys of its `--config` file).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with settings, keys named like the flags in snake_case
    /// (`retention_days = 30`); flags and environment override it.
    #[arg(long, env = "HUB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log lines as plain text or as JSON objects (with the device id of the connection).
    #[arg(long, env = "HUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Address to listen on for devices (`/ws/device`) and the HTTP API (`/api/v1`).
    #[arg(long, env = "HUB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Largest WebSocket message accepted from a device, in bytes (larger: close 1009).
    #[arg(long, env = "HUB_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: u32,

    /// Most readings one Telemetry frame may carry (announced in Welcome).
    #[arg(long, env = "HUB_MAX_READINGS_PER_FRAME", default_value_t = 2048)]
    pub max_readings_per_frame: u32,

    /// Most sensors plus actuators a device may declare in Hello.
    #[arg(long, env = "HUB_MAX_DECLARED", default_value_t = 256)]
    pub max_declared: u32,

    /// Interval between WebSocket pings from the hub, in seconds.
    #[arg(long, env = "HUB_PING_INTERVAL_SECS", default_value_t = 20)]
    pub ping_interval_secs: u64,

    /// A device silent (no frame, no pong) for this long is closed (4003), in seconds.
    #[arg(long, env = "HUB_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Time a device has after the upgrade to send Hello (else close 4004), in seconds.
    #[arg(long, env = "HUB_HELLO_TIMEOUT_SECS", default_value_t = 10)]
    pub hello_timeout_secs: u64,

    /// Largest number of readings committed in one database transaction.
    #[arg(long, env = "HUB_BATCH_MAX_READINGS", default_value_t = 8192)]
    pub batch_max_readings: usize,

    /// How long the writer waits for more frames before committing a partial batch, in ms.
    #[arg(long, env = "HUB_BATCH_LINGER_MS", default_value_t = 2)]
    pub batch_linger_ms: u64,

    /// Capacity of the ingest queue, in frames; when full, the hub stops reading sockets.
    #[arg(long, env = "HUB_INGEST_QUEUE_FRAMES", default_value_t = 4096)]
    pub ingest_queue_frames: usize,

    /// Batch writers running in parallel, each with its own database connection
    /// and its own share of the devices (0: the backend's default, 1 for SQLite,
    /// whose single write lock serialises them anyway, 2 for Postgres).
    #[arg(long, env = "HUB_INGEST_WRITERS", default_value_t = 0)]
    pub ingest_writers: usize,

    /// Readings timestamped further than this in the future are refused, in seconds.
    #[arg(long, env = "HUB_MAX_FUTURE_SKEW_SECS", default_value_t = 24 * 3600)]
    pub max_future_skew_secs: u64,

    /// How often the hub looks for revoked devices to disconnect, in ms.
    #[arg(long, env = "HUB_REVOCATION_POLL_MS", default_value_t = 1000)]
    pub revocation_poll_ms: u64,

    /// How often devices' last-seen times are written to the database, in ms.
    #[arg(long, env = "HUB_PRESENCE_FLUSH_MS", default_value_t = 5000)]
    pub presence_flush_ms: u64,

    /// Seconds after which a hub that stopped writing its liveness row (it
    /// writes one every sixth of this) counts as dead: another hub then
    /// marks the devices it held offline.
    #[arg(long, env = "HUB_HUB_STALE_AFTER_SECS", default_value_t = 30)]
    pub hub_stale_after_secs: u64,

    /// Initial read buffer of each device WebSocket, in bytes (grows for larger messages).
    #[arg(long, env = "HUB_WS_READ_BUFFER_BYTES", default_value_t = 4 * 1024)]
    pub ws_read_buffer_bytes: usize,

    /// Write buffer of each device WebSocket before a flush, in bytes.
    #[arg(long, env = "HUB_WS_WRITE_BUFFER_BYTES", default_value_t = 4 * 1024)]
    pub ws_write_buffer_bytes: usize,

    /// Delete readings older than this many days, in the background (0 keeps everything).
    #[arg(long, env = "HUB_RETENTION_DAYS", default_value_t = 0)]
    pub retention_days: u32,

    /// Delete audit log entries older than this many days, in the background
    /// (0 keeps everything).
    #[arg(long, env = "HUB_AUDIT_RETENTION_DAYS", default_value_t = 365)]
    pub audit_retention_days: u32,

    /// How often the retention task looks for expired readings, in seconds.
    #[arg(long, env = "HUB_RETENTION_INTERVAL_SECS", default_value_t = 60)]
    pub retention_interval_secs: u64,

    /// Most readings the retention task deletes per transaction (small, so ingest never waits long).
    #[arg(long, env = "HUB_RETENTION_BATCH", default_value_t = 5000)]
    pub retention_batch: u32,

    /// On shutdown, how long to wait for queued readings to commit and connections to close, in seconds.
    #[arg(long, env = "HUB_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Time to live of a command whose request names no `ttl`, in seconds.
    #[arg(long, env = "HUB_COMMAND_TTL_SECS", default_value_t = 300)]
    pub command_ttl_secs: u64,

    /// Longest `ttl` a command request may ask for, in seconds.
    #[arg(long, env = "HUB_COMMAND_MAX_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub command_max_ttl_secs: u64,

    /// How often unfinished commands past their deadline are marked expired, in milliseconds.
    #[arg(long, env = "HUB_COMMAND_EXPIRY_INTERVAL_MS", default_value_t = 1000)]
    pub command_expiry_interval_ms: u64,

    /// MQTT broker for the integration bridge, `mqtt://HOST:PORT` (MQTT v5);
    /// the bridge is off when unset.
    #[arg(long, env = "HUB_MQTT_URL")]
    pub mqtt_url: Option<String>,

    /// First level of every MQTT topic the bridge uses (`PREFIX/devices/...`).
    #[arg(long, env = "HUB_MQTT_PREFIX", default_value = "hub")]
    pub mqtt_prefix: String,

    /// This hub's name among several sharing one database: shown in the
    /// device list (which hub holds a device's session) and as the
    /// `hub_instance` label of every metric. Letters, digits, `.`, `_`, `-`
    /// (at most 64); defaults to the host name (a container's or pod's name).
    #[arg(long, env = "HUB_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Server certificate chain (PEM). With --tls-key, the listener serves
    /// wss:// and https:// only; without both, plain ws:// and http://.
    #[arg(long, env = "HUB_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HUB_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) trusted to sign device certificates: a device may
    /// then authenticate with a client certificate naming its device id
    /// instead of a token. Needs --tls-cert and --tls-key.
    #[arg(long, env = "HUB_CLIENT_CA", value_name = "PEM")]
    pub client_ca: Option<PathBuf>,

    /// Most TCP connections (devices and API) open at once; more are refused.
    #[arg(long, env = "HUB_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Time a new connection has to finish TLS and send its HTTP request
    /// (upgrade) headers, in seconds; slower ones are dropped (slowloris).
    #[arg(long, env = "HUB_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Telemetry and command-result frames one device may send per second,
    /// on average (token bucket; 0: no limit).
    #[arg(long, env = "HUB_DEVICE_MAX_FRAMES_PER_SEC", default_value_t = 100)]
    pub device_max_frames_per_sec: u32,

    /// Readings one device may send per second, on average (token bucket; 0: no limit).
    #[arg(
        long,
        env = "HUB_DEVICE_MAX_READINGS_PER_SEC",
        default_value_t = 20_000
    )]
    pub device_max_readings_per_sec: u32,

    /// Seconds of the per-device rates a device may send in one burst (the buckets' size).
    #[arg(long, env = "HUB_DEVICE_RATE_BURST_SECS", default_value_t = 5)]
    pub device_rate_burst_secs: u32,

    /// A downlink frame (ack, command) that cannot be written to a device
    /// within this many seconds drops the connection (close 4006): a device
    /// that stops reading cannot make the hub buffer for it.
    #[arg(long, env = "HUB_SEND_TIMEOUT_SECS", default_value_t = 10)]
    pub send_timeout_secs: u64,

    /// Failed authentications (device tokens, API keys) one source address
    /// may make per minute before it gets 429 for a while (0: no limit).
    #[arg(long, env = "HUB_AUTH_FAILURES_PER_MINUTE", default_value_t = 20)]
    pub auth_failures_per_minute: u32,

    /// Origins (`https://console.example.com`) allowed to open WebSockets
    /// from a browser, comma-separated. A request with an Origin header not
    /// listed is refused (403); devices send no Origin and are not affected.
    #[arg(
        long,
        env = "HUB_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub allowed_origins: Vec<String>,

    /// Largest HTTP API request body, in bytes (larger: 413).
    #[arg(long, env = "HUB_API_BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub api_body_limit_bytes: usize,

    /// Longest an HTTP API request may take, in seconds (longer: 503); must be
    /// above the longest command `?wait` (60 s).
    #[arg(long, env = "HUB_API_REQUEST_TIMEOUT_SECS", default_value_t = 75)]
    pub api_request_timeout_secs: u64,
}

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listener address (tests bind their own listener and ignore it).
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Largest accepted WebSocket message, bytes.
    pub max_message_bytes: u32,
    /// Most readings per Telemetry frame.
    pub max_readings_per_frame: u32,
    /// Most sensors plus actuators per Hello.
    pub max_declared: u32,
    /// Hub ping interval.
    pub ping_interval: Duration,
    /// Silence after which a connection is closed.
    pub idle_timeout: Duration,
    /// Time allowed between upgrade and Hello.
    pub hello_timeout: Duration,
    /// Largest batch per transaction, readings.
    pub batch_max_readings: usize,
    /// Linger before committing a partial batch.
    pub batch_linger: Duration,
    /// Ingest queue capacity, frames.
    pub ingest_queue_frames: usize,
    /// Parallel batch writers (0: the backend's default).
    pub ingest_writers: usize,
    /// Largest accepted clock skew into the future.
    pub max_future_skew: Duration,
    /// Revocation poll interval.
    pub revocation_poll: Duration,
    /// Presence (last seen) flush interval.
    pub presence_flush: Duration,
    /// Silence after which a hub counts as dead (see `liveness`).
    pub hub_stale_after: Duration,
    /// Shutdown deadline.
    pub shutdown_grace: Duration,
    /// Age after which readings are deleted; None keeps everything.
    pub retention: Option<Duration>,
    /// Age after which audit log entries are deleted; None keeps them.
    pub audit_retention: Option<Duration>,
    /// Retention pass interval.
    pub retention_interval: Duration,
    /// Readings deleted per retention transaction.
    pub retention_batch: u32,
    /// Initial WebSocket read buffer per connection, bytes.
    pub ws_read_buffer_bytes: usize,
    /// WebSocket write buffer per connection, bytes.
    pub ws_write_buffer_bytes: usize,
    /// TTL of a command whose request names none.
    pub command_ttl: Duration,
    /// Longest TTL a command may ask for.
    pub command_max_ttl: Duration,
    /// Expiry sweep interval.
    pub command_expiry_interval: Duration,
    /// MQTT broker URL; None turns the bridge off.
    pub mqtt_url: Option<String>,
    /// MQTT topic prefix.
    pub mqtt_prefix: String,
    /// This hub's name in a fleet (see [`crate::metrics::instance_id`] for the default).
    pub instance_id: String,
    /// TLS on the listener, when configured.
    pub tls: Option<TlsFiles>,
    /// Limits against hostile or broken peers (docs/SECURITY.md).
    pub limits: Limits,
}

/// Where the listener's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// CA bundle for device client certificates; None: no client certificates.
    pub client_ca: Option<PathBuf>,
}

/// Limits against hostile or broken peers; each refusal is counted in
/// `hub_limit_rejections_total{limit}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most TCP connections open at once.
    pub max_connections: usize,
    /// Time from accept to complete TLS handshake and HTTP request headers.
    pub handshake_timeout: Duration,
    /// Frames per second per device (0: unlimited).
    pub device_max_frames_per_sec: u32,
    /// Readings per second per device (0: unlimited).
    pub device_max_readings_per_sec: u32,
    /// Bucket size, in seconds of the rates.
    pub device_rate_burst_secs: u32,
    /// Longest a downlink write may wait before the connection is dropped.
    pub send_timeout: Duration,
    /// Failed authentications per source address per minute (0: unlimited).
    pub auth_failures_per_minute: u32,
    /// Browser origins allowed to open WebSockets; empty: none (only
    /// clients without an Origin header, i.e. not browsers).
    pub allowed_origins: Vec<String>,
    /// Largest HTTP API request body, bytes.
    pub api_body_limit_bytes: usize,
    /// Longest HTTP API request.
    pub api_request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            handshake_timeout: Duration::from_secs(10),
            device_max_frames_per_sec: 100,
            device_max_readings_per_sec: 20_000,
            device_rate_burst_secs: 5,
            send_timeout: Duration::from_secs(10),
            auth_failures_per_minute: 20,
            allowed_origins: Vec::new(),
            api_body_limit_bytes: 64 * 1024,
            api_request_timeout: Duration::from_secs(75),
        }
    }
}

/// The longest `?wait` a command request may ask for, in seconds; the API
/// request timeout must be longer.
pub const MAX_COMMAND_WAIT_SECS: u64 = 60;

/// A setting that cannot work, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    /// The flag's name.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

impl ServeConfig {
    /// Defaults for everything, listening on `listen` with database `database_url`.
    pub fn new(listen: SocketAddr, database_url: impl Into<String>) -> Self {
        ServeConfig {
            listen,
            database_url: database_url.into(),
            max_message_bytes: 64 * 1024,
            max_readings_per_frame: 2048,
            max_declared: 256,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(10),
            batch_max_readings: 8192,
            batch_linger: Duration::from_millis(2),
            ingest_queue_frames: 4096,
            ingest_writers: 0,
            max_future_skew: Duration::from_secs(24 * 3600),
            revocation_poll: Duration::from_millis(1000),
            presence_flush: Duration::from_millis(5000),
            hub_stale_after: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            retention: None,
            audit_retention: Some(Duration::from_secs(365 * 24 * 3600)),
            retention_interval: Duration::from_secs(60),
            retention_batch: 5000,
            ws_read_buffer_bytes: 4 * 1024,
            ws_write_buffer_bytes: 4 * 1024,
            command_ttl: Duration::from_secs(300),
            command_max_ttl: Duration::from_secs(7 * 24 * 3600),
            command_expiry_interval: Duration::from_millis(1000),
            mqtt_url: None,
            mqtt_prefix: "hub".into(),
            instance_id: crate::metrics::instance_id(),
            tls: None,
            limits: Limits::default(),
        }
    }

    /// Checks every setting; the first bad one is returned by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.database_url;
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(invalid(
                "--database-url",
                "must start with sqlite://, postgres:// or postgresql://",
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err(invalid("--max-message-bytes", "must be at least 1024"));
        }
        if self.max_readings_per_frame == 0 {
            return Err(invalid("--max-readings-per-frame", "must be at least 1"));
        }
        if self.max_declared == 0 || self.max_declared > u32::from(u16::MAX) {
            return Err(invalid("--max-declared", "must be between 1 and 65535"));
        }
        if self.ping_interval.is_zero() {
            return Err(invalid("--ping-interval-secs", "must be at least 1"));
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(invalid(
                "--idle-timeout-secs",
                "must be longer than the ping interval",
            ));
        }
        if self.hello_timeout.is_zero() {
            return Err(invalid("--hello-timeout-secs", "must be at least 1"));
        }
        if self.batch_max_readings == 0 {
            return Err(invalid("--batch-max-readings", "must be at least 1"));
        }
        if self.ingest_writers > 16 {
            return Err(invalid(
                "--ingest-writers",
                "must be between 0 (backend default) and 16",
            ));
        }
        if self.ingest_queue_frames == 0 {
            return Err(invalid("--ingest-queue-frames", "must be at least 1"));
        }
        if self.hub_stale_after < Duration::from_secs(3) {
            return Err(invalid("--hub-stale-after-secs", "must be at least 3"));
        }
        if self.revocation_poll.is_zero() || self.presence_flush.is_zero() {
            return Err(invalid(
                "--revocation-poll-ms/--presence-flush-ms",
                "must be at least 1",
            ));
        }
        if self.retention_interval.is_zero() || self.retention_batch == 0 {
            return Err(invalid(
                "--retention-interval-secs/--retention-batch",
                "must be at least 1",
            ));
        }
        if self.ws_read_buffer_bytes < 512 || self.ws_write_buffer_bytes == 0 {
            return Err(invalid(
                "--ws-read-buffer-bytes/--ws-write-buffer-bytes",
                "read buffer must be at least 512 bytes, write buffer at least 1",
            ));
        }
        if self.command_max_ttl.as_secs() == 0 {
            return Err(invalid("--command-max-ttl-secs", "must be at least 1"));
        }
        if self.command_ttl.as_secs() == 0 || self.command_ttl > self.command_max_ttl {
            return Err(invalid(
                "--command-ttl-secs",
                "must be at least 1 and at most --command-max-ttl-secs",
            ));
        }
        if self.command_expiry_interval.is_zero() {
            return Err(invalid(
                "--command-expiry-interval-ms",
                "must be at least 1",
            ));
        }
        if let Some(url) = &self.mqtt_url
            && !(url.starts_with("mqtt://") || url.starts_with("tcp://"))
        {
            return Err(invalid("--mqtt-url", "must look like mqtt://HOST:PORT"));
        }
        let prefix = &self.mqtt_prefix;
        if prefix.is_empty()
            || prefix.contains(['+', '#', '\0'])
            || prefix.starts_with('/')
            || prefix.ends_with('/')
        {
            return Err(invalid(
                "--mqtt-prefix",
                "must be a non-empty topic without wildcards or leading/trailing '/'",
            ));
        }
        let instance = &self.instance_id;
        if instance.is_empty()
            || instance.len() > 64
            || !instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "--instance-id",
                "must be 1 to 64 letters, digits, '.', '_' or '-'",
            ));
        }
        self.validate_limits()
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        if limits.max_connections == 0 {
            return Err(invalid("--max-connections", "must be at least 1"));
        }
        if limits.handshake_timeout.is_zero() {
            return Err(invalid("--handshake-timeout-secs", "must be at least 1"));
        }
        if limits.device_rate_burst_secs == 0 {
            return Err(invalid("--device-rate-burst-secs", "must be at least 1"));
        }
        if limits.send_timeout.is_zero() {
            return Err(invalid("--send-timeout-secs", "must be at least 1"));
        }
        for origin in &limits.allowed_origins {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && !origin.contains(char::is_whitespace);
            if !ok {
                return Err(invalid(
                    "--allowed-origins",
                    format!(
                        "{origin:?} is not an origin like https://console.example.com (scheme and host, no path)"
                    ),
                ));
            }
        }
        if limits.api_body_limit_bytes < 1024 {
            return Err(invalid("--api-body-limit-bytes", "must be at least 1024"));
        }
        if limits.api_request_timeout.as_secs() <= MAX_COMMAND_WAIT_SECS {
            return Err(invalid(
                "--api-request-timeout-secs",
                format!("must be above {MAX_COMMAND_WAIT_SECS} (the longest command ?wait)"),
            ));
        }
        Ok(())
    }
}

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        let tls = match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: args.client_ca,
            }),
            (None, None) if args.client_ca.is_some() => {
                return Err(invalid(
                    "--client-ca",
                    "needs --tls-cert and --tls-key (client certificates need TLS)",
                ));
            }
            (None, None) => None,
            (Some(_), None) => return Err(invalid("--tls-key", "is needed with --tls-cert")),
            (None, Some(_)) => return Err(invalid("--tls-cert", "is needed with --tls-key")),
        };
        let limits = Limits {
            max_connections: args.max_connections,
            handshake_timeout: Duration::from_secs(args.handshake_timeout_secs),
            device_max_frames_per_sec: args.device_max_frames_per_sec,
            device_max_readings_per_sec: args.device_max_readings_per_sec,
            device_rate_burst_secs: args.device_rate_burst_secs,
            send_timeout: Duration::from_secs(args.send_timeout_secs),
            auth_failures_per_minute: args.auth_failures_per_minute,
            allowed_origins: args
                .allowed_origins
                .into_iter()
                .map(|origin| origin.trim().to_owned())
                .filter(|origin| !origin.is_empty())
                .collect(),
            api_body_limit_bytes: args.api_body_limit_bytes,
            api_request_timeout: Duration::from_secs(args.api_request_timeout_secs),
        };
        let config = ServeConfig {
            listen: args.listen,
            database_url: args.database.database_url,
            max_message_bytes: args.max_message_bytes,
            max_readings_per_frame: args.max_readings_per_frame,
            max_declared: args.max_declared,
            ping_interval: Duration::from_secs(args.ping_interval_secs),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            hello_timeout: Duration::from_secs(args.hello_timeout_secs),
            batch_max_readings: args.batch_max_readings,
            batch_linger: Duration::from_millis(args.batch_linger_ms),
            ingest_queue_frames: args.ingest_queue_frames,
            ingest_writers: args.ingest_writers,
            max_future_skew: Duration::from_secs(args.max_future_skew_secs),
            revocation_poll: Duration::from_millis(args.revocation_poll_ms),
            presence_flush: Duration::from_millis(args.presence_flush_ms),
            hub_stale_after: Duration::from_secs(args.hub_stale_after_secs),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
            retention: (args.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(args.retention_days) * 24 * 3600)),
            audit_retention: (args.audit_retention_days > 0)
                .then(|| Duration::from_secs(u64::from(args.audit_retention_days) * 24 * 3600)),
            retention_interval: Duration::from_secs(args.retention_interval_secs),
            retention_batch: args.retention_batch,
            ws_read_buffer_bytes: args.ws_read_buffer_bytes,
            ws_write_buffer_bytes: args.ws_write_buffer_bytes,
            command_ttl: Duration::from_secs(args.command_ttl_secs),
            command_max_ttl: Duration::from_secs(args.command_max_ttl_secs),
            command_expiry_interval: Duration::from_millis(args.command_expiry_interval_ms),
            mqtt_url: args.mqtt_url.filter(|url| !url.is_empty()),
            mqtt_prefix: args.mqtt_prefix,
            instance_id: args.instance_id.unwrap_or_else(crate::metrics::instance_id),
            tls,
            limits,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = ServeConfig::new(([127, 0, 0, 1], 0).into(), DEFAULT_DATABASE_URL);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bad_setting_is_named() {
        let mut config = ServeConfig::new(([127, 0, 0, 1], 0).into(), DEFAULT_DATABASE_URL);
        config.idle_timeout = Duration::from_secs(1);
        let err = config
            .validate()
            .expect_err("idle timeout below ping interval");
        assert_eq!(err.setting, "--idle-timeout-secs");
        config.idle_timeout = Duration::from_secs(60);
        config.database_url = "mysql://x".into();
        assert_eq!(
            config.validate().expect_err("bad url").setting,
            "--database-url"
        );
        config.database_url = "postgres://hub@127.0.0.1/hub".into();
        assert!(config.validate().is_ok());
        config.database_url = "mysql://x".into();
        assert_eq!(
            config.validate().expect_err("bad url").setting,
            "--database-url"
        );
    }
}
