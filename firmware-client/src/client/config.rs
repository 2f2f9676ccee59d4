//! What a device is and how it connects.
//!
//! [`DeviceConfig`] is `#[non_exhaustive]`: build it with
//! [`DeviceConfig::new`] and set fields, so new settings can be added
//! without breaking callers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use schema::{Value, ValueKind};
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};

use super::commands::{CommandCall, CommandHandler};
use super::error::ConfigError;
use super::stats::AckInfo;

/// Called from the device's task for every acknowledged frame; keep it cheap
/// and non-blocking (record into a histogram, bump a counter).
pub type AckObserver = Arc<dyn Fn(AckInfo) + Send + Sync>;

/// A sensor the device declares in Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SensorSpec {
    /// Compact id used when pushing readings; unique within the device.
    pub id: u16,
    /// Name shown to operators (1 to 64 bytes), e.g. `temperature`.
    pub name: String,
    /// Unit (at most 16 bytes, may be empty), e.g. `°C`.
    pub unit: String,
    /// Kind of every value it reports.
    pub kind: ValueKind,
}

impl SensorSpec {
    /// A sensor declaration.
    pub fn new(id: u16, name: impl Into<String>, unit: impl Into<String>, kind: ValueKind) -> Self {
        SensorSpec {
            id,
            name: name.into(),
            unit: unit.into(),
            kind,
        }
    }
}

/// An actuator the device declares in Hello.
///
/// Commands for it run the handler registered with
/// [`DeviceConfig::on_command`]; without one they are answered
/// `Rejected("no handler for actuator N")`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActuatorSpec {
    /// Compact id the hub uses in commands; unique within the device.
    pub id: u16,
    /// Name shown to operators (1 to 64 bytes), e.g. `relay`.
    pub name: String,
    /// Kind of value a `Set` command carries.
    pub kind: ValueKind,
}

impl ActuatorSpec {
    /// An actuator declaration.
    pub fn new(id: u16, name: impl Into<String>, kind: ValueKind) -> Self {
        ActuatorSpec {
            id,
            name: name.into(),
            kind,
        }
    }
}

/// Everything a [`Device`](crate::Device) needs.
#[derive(Clone)]
#[non_exhaustive]
pub struct DeviceConfig {
    /// Hub device endpoint, `ws://host:port/ws/device` or `wss://...`.
    pub url: String,
    /// Device token, `<device-id>.<secret>`, sent as a bearer token. May be
    /// empty only when a client certificate is configured
    /// ([`DeviceConfig::client_cert`]): the certificate then names the device.
    pub token: String,
    /// Firmware version reported in Hello (at most 64 bytes).
    pub firmware: String,
    /// Sensors declared in Hello; pushes for other ids are refused.
    pub sensors: Vec<SensorSpec>,
    /// Actuators declared in Hello.
    pub actuators: Vec<ActuatorSpec>,
    /// Command handlers by actuator id (see [`DeviceConfig::on_command`]);
    /// every key must be a declared actuator.
    pub handlers: BTreeMap<u16, CommandHandler>,
    /// How many recent command ids the device remembers with their outcome,
    /// so that a command the hub resends is not run twice (memory: about
    /// 140 bytes each). Keep it above the number of commands the hub may
    /// have unanswered for this device. Memory only: the guarantee holds
    /// per boot.
    pub command_memory: usize,
    /// Most unacknowledged readings kept (memory: about 32 bytes each).
    pub outbox_capacity: usize,
    /// Most readings per telemetry frame (the hub's limits may lower it).
    pub max_batch: usize,
    /// How long a partial frame may wait for more readings before it is sent.
    pub flush_interval: Duration,
    /// Most telemetry frames on the wire awaiting an ack.
    pub max_in_flight_frames: usize,
    /// First reconnect backoff ceiling (delays are random below it).
    pub backoff_base: Duration,
    /// Largest reconnect backoff ceiling.
    pub backoff_cap: Duration,
    /// Limit on TCP connect plus TLS and WebSocket handshakes, and on the wait
    /// for Welcome after Hello.
    pub connect_timeout: Duration,
    /// PEM certificates trusted in addition to the webpki roots (`wss://`
    /// only), e.g. a private CA.
    pub extra_root_certs_pem: Option<Vec<u8>>,
    /// Trust the webpki (Mozilla) roots. Turn off to trust only
    /// `extra_root_certs_pem` (a hub behind a private CA, nothing else).
    pub webpki_roots: bool,
    /// Client certificate chain (PEM, leaf first) for mutual TLS (`wss://`
    /// only); needs `client_key_pem`. See [`DeviceConfig::client_cert`].
    pub client_cert_pem: Option<Vec<u8>>,
    /// Private key of `client_cert_pem` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub client_key_pem: Option<Vec<u8>>,
    /// Sequence number to continue from, for a device that persisted it;
    /// `None` (fresh boot) continues after the hub's `last_stored_seq`.
    pub initial_seq: Option<u64>,
    /// Seed of the backoff jitter; `None` draws one at random.
    pub seed: Option<u64>,
    /// Hears of every acknowledged frame (for latency measurements).
    pub on_ack: Option<AckObserver>,
}

impl DeviceConfig {
    /// A configuration with defaults: no sensors or actuators, outbox of
    /// 10,000 readings, frames of up to 50 readings lingering up to 100 ms,
    /// 8 frames in flight, backoff from 500 ms to 30 s, 10 s connect
    /// timeout, the last 64 command ids remembered.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        DeviceConfig {
            url: url.into(),
            token: token.into(),
            firmware: concat!("firmware-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            sensors: Vec::new(),
            actuators: Vec::new(),
            handlers: BTreeMap::new(),
            command_memory: 64,
            outbox_capacity: 10_000,
            max_batch: 50,
            flush_interval: Duration::from_millis(100),
            max_in_flight_frames: 8,
            backoff_base: Duration::from_millis(500),
            backoff_cap: crate::backoff::DEFAULT_CAP,
            connect_timeout: Duration::from_secs(10),
            extra_root_certs_pem: None,
            webpki_roots: true,
            client_cert_pem: None,
            client_key_pem: None,
            initial_seq: None,
            seed: None,
            on_ack: None,
        }
    }

    /// Add a sensor declaration.
    pub fn sensor(mut self, id: u16, name: &str, unit: &str, kind: ValueKind) -> Self {
        self.sensors.push(SensorSpec::new(id, name, unit, kind));
        self
    }

    /// Add an actuator declaration.
    pub fn actuator(mut self, id: u16, name: &str, kind: ValueKind) -> Self {
        self.actuators.push(ActuatorSpec::new(id, name, kind));
        self
    }

    /// Authenticate with a client certificate (mutual TLS, `wss://` only):
    /// `cert_pem` is the chain (leaf first), `key_pem` its private key. A hub
    /// that trusts the issuing CA takes the device id from the certificate,
    /// so the token may then be empty.
    ///
    /// ```
    /// use firmware_client::DeviceConfig;
    ///
    /// # let (cert, key) = (Vec::new(), Vec::new());
    /// let config = DeviceConfig::new("wss://hub.example/ws/device", "").client_cert(cert, key);
    /// assert!(config.client_cert_pem.is_some());
    /// ```
    pub fn client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_cert_pem = Some(cert_pem.into());
        self.client_key_pem = Some(key_pem.into());
        self
    }

    /// Trust the CA certificates in `pem` (in addition to the webpki roots
    /// unless [`DeviceConfig::webpki_roots`] is turned off).
    pub fn trust_roots(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_root_certs_pem = Some(pem.into());
        self
    }

    /// Run `handler` for every command to actuator `actuator` (declare it
    /// with [`DeviceConfig::actuator`]); replaces an earlier handler.
    ///
    /// The handler sees only commands that passed the protocol's rules: not
    /// expired, a `Set` value of the declared kind, and an id not seen
    /// before in this boot (repeats are answered from memory). The device
    /// sends `Delivered` before calling it and `Succeeded(state)` or
    /// `Failed(reason)` after. It runs on tokio's blocking pool, one command
    /// of this device at a time in arrival order; see [`CommandHandler`].
    ///
    /// ```
    /// use firmware_client::schema::{Value, ValueKind};
    /// use firmware_client::{Action, DeviceConfig};
    ///
    /// let config = DeviceConfig::new("ws://127.0.0.1:8080/ws/device", "dev-1.secret")
    ///     .actuator(1, "relay", ValueKind::Bool)
    ///     .on_command(1, |call| match call.action {
    ///         Action::Set(Value::Bool(on)) => {
    ///             // drive the relay here
    ///             Ok(Some(Value::Bool(on)))
    ///         }
    ///         _ => Err("the relay only takes Set".to_owned()),
    ///     });
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn on_command<F>(mut self, actuator: u16, handler: F) -> Self
    where
        F: Fn(&CommandCall) -> Result<Option<Value>, String> + Send + Sync + 'static,
    {
        self.handlers.insert(actuator, Arc::new(handler));
        self
    }

    /// Check every setting; [`Device::start`](crate::Device::start) does it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let tls = self.parsed_url()?;
        self.authorization()?;
        match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(_), None) => {
                return Err(invalid("client_key_pem", "is needed with client_cert_pem"));
            }
            (None, Some(_)) => {
                return Err(invalid("client_cert_pem", "is needed with client_key_pem"));
            }
            (Some(_), Some(_)) if !tls => {
                return Err(invalid(
                    "client_cert_pem",
                    "needs a wss:// URL (client certificates are a TLS feature)",
                ));
            }
            _ => {}
        }
        if tls && !self.webpki_roots && self.extra_root_certs_pem.is_none() {
            return Err(invalid(
                "webpki_roots",
                "off with no extra_root_certs_pem: no certificate authority would be trusted",
            ));
        }
        check_len("firmware", &self.firmware, 0, 64)?;
        let mut ids: Vec<u16> = self.sensors.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("sensors", "sensor ids must be unique"));
        }
        for sensor in &self.sensors {
            check_len("sensors", &sensor.name, 1, 64)?;
            check_len("sensors", &sensor.unit, 0, 16)?;
        }
        let mut ids: Vec<u16> = self.actuators.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("actuators", "actuator ids must be unique"));
        }
        for actuator in &self.actuators {
            check_len("actuators", &actuator.name, 1, 64)?;
        }
        if let Some(id) = self
            .handlers
            .keys()
            .find(|&&id| ids.binary_search(&id).is_err())
        {
            return Err(ConfigError::Invalid {
                field: "handlers",
                reason: format!("a handler for actuator {id}, which is not declared"),
            });
        }
        if self.command_memory == 0 || self.command_memory > 65_536 {
            return Err(invalid("command_memory", "must be between 1 and 65536"));
        }
        if self.outbox_capacity == 0 {
            return Err(invalid("outbox_capacity", "must be at least 1"));
        }
        if self.max_batch == 0 || self.max_batch > usize::from(u16::MAX) {
            return Err(invalid("max_batch", "must be between 1 and 65535"));
        }
        if self.max_in_flight_frames == 0 || self.max_in_flight_frames > 1024 {
            return Err(invalid(
                "max_in_flight_frames",
                "must be between 1 and 1024",
            ));
        }
        if self.backoff_base.is_zero() {
            return Err(invalid("backoff_base", "must be positive"));
        }
        if self.backoff_cap < self.backoff_base {
            return Err(invalid("backoff_cap", "must be at least backoff_base"));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be positive"));
        }
        Ok(())
    }

    /// The URL, checked: `ws` or `wss` with a host. Returns whether it is TLS.
    pub(crate) fn parsed_url(&self) -> Result<bool, ConfigError> {
        let bad = |reason: &str| ConfigError::Url {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = self.url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad("scheme must be ws or wss")),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        Ok(tls)
    }

    /// The `Authorization` header value; `None` when the device
    /// authenticates with its client certificate only.
    pub(crate) fn authorization(&self) -> Result<Option<HeaderValue>, ConfigError> {
        if self.token.is_empty() {
            if self.client_cert_pem.is_some() {
                return Ok(None);
            }
            return Err(invalid(
                "token",
                "must not be empty (unless a client certificate is configured)",
            ));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .map_err(|_| invalid("token", "must be printable ASCII"))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

fn invalid(field: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.to_owned(),
    }
}

fn check_len(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), ConfigError> {
    if value.len() < min || value.len() > max {
        return Err(ConfigError::Invalid {
            field,
            reason: format!("{value:?} must be {min} to {max} bytes long"),
        });
    }
    Ok(())
}

impl fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("firmware", &self.firmware)
            .field("sensors", &self.sensors)
            .field("actuators", &self.actuators)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("command_memory", &self.command_memory)
            .field("outbox_capacity", &self.outbox_capacity)
            .field("max_batch", &self.max_batch)
            .field("flush_interval", &self.flush_interval)
            .field("max_in_flight_frames", &self.max_in_flight_frames)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_cap", &self.backoff_cap)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "extra_root_certs_pem",
                &self.extra_root_certs_pem.as_ref().map(Vec::len),
            )
            .field("webpki_roots", &self.webpki_roots)
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(Vec::len),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("initial_seq", &self.initial_seq)
            .field("seed", &self.seed)
            .field("on_ack", &self.on_ack.as_ref().map(|_| "<observer>"))
            .finish()
    }
}
