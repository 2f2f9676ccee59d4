//! The MQTT bridge: the hub on the integration bus (DESIGN.md §7), on when
//! `--mqtt-url` is set. In: command requests. Out: command status, telemetry,
//! presence and refusals. Topics and payloads are in docs/MQTT.md.
//!
//! **Tasks.** [`MqttBridge::spawn`] starts three tasks that meet only
//! through channels, so no database wait or slow broker stalls anything
//! else:
//!
//! - the *connection* task (`run_connection`) owns the rumqttc v5
//!   [`EventLoop`] and does nothing but poll it: it subscribes after each
//!   CONNACK, hands incoming requests to the worker with `try_send`, and
//!   after an error waits out a capped exponential backoff (with jitter) and
//!   polls again, which reconnects. It never awaits anything but the event
//!   loop, its backoff timer and the stop signal.
//! - the *request workers* ([`requests::run`], [`BridgeSettings::request_workers`]
//!   of them) submit requests to the [`CommandService`] and publish
//!   refusals. Requests are split by topic, so every request for one device
//!   goes to the same worker, which handles them one at a time in arrival
//!   order (commands to a device keep their order), while requests for
//!   different devices do not wait behind each other's database writes;
//! - the *publisher* ([`publisher::run`]) turns the hub's broadcasts into
//!   messages and offers them with `try_publish`, counting what a full queue
//!   drops (see `publisher.rs` for why it never waits).
//!
//! Device ingest and the HTTP API never touch the bridge: they broadcast
//! (`HubEvents`, `CommandService::subscribe`) whether or not anyone listens.
//! While the broker is down, devices keep streaming and being acked; the
//! bridge's outgoing queue fills and further announcements are dropped
//! (counted, logged once per streak); after the reconnect it subscribes
//! again and carries on with new events. Nothing is replayed: the database
//! and the HTTP API hold the history.
//!
//! **Sessions: clean start, a random client id, subscribe on every CONNACK.**
//! A persistent session (clean start false, fixed client id) would let the
//! broker queue requests for the hub while it is away, but it needs an id
//! that is stable per hub yet distinct between hubs (configuration the hub
//! does not have yet), it does not survive a broker that keeps no state,
//! and requests queued for a hub that never returns would wait for nobody.
//! So every connection starts clean with the id `hub-<random>`, the
//! subscription is made again after each CONNACK, and requests published
//! while no hub is subscribed are lost: a requester that needs an answer
//! sets a Response Topic, waits with a timeout and retries with the same
//! `idempotency_key`, which makes the retry safe.
//!
//! **Shared subscription.** Requests are subscribed as
//! `$share/hubs/{prefix}/devices/+/commands` (MQTT v5 shared subscription,
//! supported by Mosquitto 2, EMQX and HiveMQ): with several hubs on one
//! broker, each request reaches exactly one hub instead of every hub
//! storing its own copy. Messages still carry their real topic, so parsing
//! does not change; shared subscriptions also never receive retained
//! messages, so a request published with the retain flag is not executed
//! again at every reconnect. A broker that refuses shared subscriptions gets
//! the plain filter instead, with a warning.
//!
//! **Presence and the session counter.** Each device's status topic holds a
//! retained `{"online": ..., "session": N}`. `N` is the device's session
//! counter from the database, incremented by every connection (on any hub).
//! The hub only announces offline when the database says the closing session
//! is still the current one, so a late disconnect of a replaced connection
//! is never announced; and a consumer that merges statuses from several
//! hubs, or sees them out of order, keeps the one with the highest
//! `session` (for equal counters, offline wins: it is that session's last
//! word).
//!
//! After every CONNACK the publisher announces each session open on this
//! hub again (retained online with its counter): a broker restarted without
//! persistence has forgotten the retained presence, and devices that stayed
//! connected would otherwise look unknown until they reconnect.
//!
//! **Readiness.** [`MqttStatus`] says whether the bridge is connected and
//! subscribed; `/readyz` reports it as the `mqtt` check when the bridge is
//! configured.
//!
//! **Shutdown.** The server stops the bridge after device connections have
//! drained (so their offline statuses are published). The publisher then
//! sends what is still buffered, waiting up to [`BridgeSettings::drain`] for
//! room; the connection task keeps polling meanwhile, then sends DISCONNECT.

pub mod payloads;
pub mod publisher;
pub mod requests;
pub mod topics;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::commands::CommandService;
use crate::events::HubEvents;
use crate::registry::SessionRegistry;
use publisher::{Feeds, Outbox};

/// Why the bridge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The broker URL cannot be used.
    #[error("invalid --mqtt-url {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Where the broker is: `mqtt://[USER[:PASSWORD]@]HOST[:PORT]` (or `tcp://`),
/// port 1883 by default, plain TCP.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or address (an IPv6 address keeps its brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name and password, if the URL has them.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerAddress")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "user",
                &self.credentials.as_ref().map(|(user, _)| user.as_str()),
            )
            .finish()
    }
}

impl BrokerAddress {
    /// Parses the broker URL.
    pub fn parse(url: &str) -> Result<BrokerAddress, BridgeError> {
        let bad = |reason| BridgeError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| bad("must start with mqtt:// or tcp://"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad("takes no path or query"));
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (host, port) = if host_port.starts_with('[') {
            // [v6]:port or [v6]
            let Some(end) = host_port.find(']') else {
                return Err(bad("unclosed '[' in the host"));
            };
            let (host, after) = host_port.split_at(end + 1);
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("unexpected text after the IPv6 address")),
            }
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("names no host"));
        }
        let port = match port {
            None => 1883,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        let credentials = userinfo.map(|userinfo| match userinfo.split_once(':') {
            Some((user, password)) => (user.to_owned(), password.to_owned()),
            None => (userinfo.to_owned(), String::new()),
        });
        Ok(BrokerAddress {
            host: host.to_owned(),
            port,
            credentials,
        })
    }
}

/// How the bridge runs. [`BridgeSettings::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// The broker.
    pub broker: BrokerAddress,
    /// First topic level(s) (`--mqtt-prefix`).
    pub prefix: String,
    /// MQTT client id; distinct per hub (default `hub-<16 random hex>`).
    pub client_id: String,
    /// Keep-alive interval (the broker drops us after 1.5 times this silent).
    pub keep_alive: Duration,
    /// First reconnect delay; doubled after each failure.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Messages waiting for the event loop before further ones are dropped.
    pub outgoing_queue: usize,
    /// Command requests waiting for each worker before further ones are
    /// refused with `unavailable`.
    pub request_queue: usize,
    /// Request workers (requests for one device always go to the same one).
    pub request_workers: usize,
    /// Largest packet the broker may send us (announced in CONNECT; the
    /// broker drops larger requests instead of breaking our connection).
    pub max_incoming_packet: u32,
    /// At shutdown, how long buffered announcements may take to go out.
    pub drain: Duration,
}

impl BridgeSettings {
    /// Defaults for a bridge to `url` under `prefix`.
    pub fn new(url: &str, prefix: &str) -> Result<BridgeSettings, BridgeError> {
        Ok(BridgeSettings {
            broker: BrokerAddress::parse(url)?,
            prefix: prefix.to_owned(),
            client_id: format!("hub-{:016x}", rand::random::<u64>()),
            keep_alive: Duration::from_secs(30),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            outgoing_queue: 4096,
            request_queue: 256,
            request_workers: 8,
            max_incoming_packet: 256 * 1024,
            drain: Duration::from_secs(3),
        })
    }

    fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.broker.host, self.broker.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_start(true)
            .set_connection_timeout(5)
            .set_max_packet_size(Some(self.max_incoming_packet));
        if let Some((user, password)) = &self.broker.credentials {
            options.set_credentials(user, password);
        }
        // Status messages are small and latency matters (a command's round
        // trip): without TCP_NODELAY each waits for the broker's delayed ACK.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        options
    }
}

/// The bridge's health and counters; cheap to clone, shared with `/readyz`.
#[derive(Clone, Default)]
pub struct MqttStatus {
    inner: Arc<StatusInner>,
}

#[derive(Default)]
struct StatusInner {
    /// Connected and the command subscription acknowledged.
    ready: AtomicBool,
    connections: AtomicU64,
    dropped_publishes: AtomicU64,
    lagged_events: AtomicU64,
    refused_requests: AtomicU64,
    /// The broker's Maximum Packet Size from its CONNACK (0: none given).
    broker_max_packet: AtomicU32,
}

/// A snapshot of [`MqttStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqttStats {
    /// Connected, and subscribed to command requests.
    pub ready: bool,
    /// Successful connections so far (reconnects included).
    pub connections: u64,
    /// Messages not published because the outgoing queue was full or they
    /// were larger than the broker accepts.
    pub dropped_publishes: u64,
    /// Hub events the publisher fell too far behind to see.
    pub lagged_events: u64,
    /// Command requests refused (malformed, unknown device, invalid...).
    pub refused_requests: u64,
}

impl MqttStatus {
    /// Connected and subscribed to command requests.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    /// The counters now.
    pub fn stats(&self) -> MqttStats {
        let i = &self.inner;
        MqttStats {
            ready: i.ready.load(Ordering::Relaxed),
            connections: i.connections.load(Ordering::Relaxed),
            dropped_publishes: i.dropped_publishes.load(Ordering::Relaxed),
            lagged_events: i.lagged_events.load(Ordering::Relaxed),
            refused_requests: i.refused_requests.load(Ordering::Relaxed),
        }
    }

    fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Relaxed);
    }

    fn broker_max_packet(&self) -> u32 {
        self.inner.broker_max_packet.load(Ordering::Relaxed)
    }

    /// Counts one dropped message; returns the total.
    fn count_dropped(&self) -> u64 {
        self.inner.dropped_publishes.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts `n` skipped events; returns the total.
    fn count_lagged(&self, n: u64) -> u64 {
        self.inner.lagged_events.fetch_add(n, Ordering::Relaxed) + n
    }

    fn count_refused(&self) {
        self.inner.refused_requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Capped exponential backoff with jitter: each delay is drawn from the
/// upper half of a ceiling that doubles from `min` to `max`.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            ceiling: min,
        }
    }

    fn reset(&mut self) {
        self.ceiling = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// The bridge, configured but not started.
pub struct MqttBridge {
    settings: BridgeSettings,
    status: MqttStatus,
}

impl MqttBridge {
    /// A bridge with default settings to the broker at `url`.
    pub fn new(url: &str, prefix: &str) -> Result<MqttBridge, BridgeError> {
        Ok(MqttBridge::with_settings(BridgeSettings::new(url, prefix)?))
    }

    /// A bridge with these settings.
    pub fn with_settings(settings: BridgeSettings) -> MqttBridge {
        MqttBridge {
            settings,
            status: MqttStatus::default(),
        }
    }

    /// Its status, for `/readyz`.
    pub fn status(&self) -> MqttStatus {
        self.status.clone()
    }

    /// Subscribes to the hub's events (now, so nothing later is missed) and
    /// starts the bridge's tasks on `tracker`; they end after `stop`.
    pub fn spawn(
        self,
        tracker: &TaskTracker,
        commands: CommandService,
        events: &HubEvents,
        sessions: Arc<SessionRegistry>,
        stop: CancellationToken,
    ) {
        let MqttBridge { settings, status } = self;
        let reconnected = Arc::new(tokio::sync::Notify::new());
        let feeds = Feeds {
            commands: commands.subscribe_local(),
            presence: events.subscribe_presence(),
            telemetry: events.subscribe_telemetry(),
            reconnected: Arc::clone(&reconnected),
            sessions,
        };
        let (client, eventloop) = AsyncClient::new(settings.options(), settings.outgoing_queue);
        let prefix: Arc<str> = settings.prefix.as_str().into();
        let outbox = Outbox::new(client.clone(), status.clone());
        let (requests_tx, requests_rx): (Vec<_>, Vec<_>) = (0..settings.request_workers.max(1))
            .map(|_| mpsc::channel(settings.request_queue.max(1)))
            .unzip();
        info!(
            host = %settings.broker.host,
            port = settings.broker.port,
            client_id = %settings.client_id,
            prefix = %settings.prefix,
            "MQTT bridge starting"
        );
        let publisher = tracker.spawn(publisher::run(
            outbox.clone(),
            Arc::clone(&prefix),
            feeds,
            settings.drain,
            stop.clone(),
        ));
        for requests_rx in requests_rx {
            tracker.spawn(requests::run(
                requests_rx,
                commands.clone(),
                outbox.clone(),
                status.clone(),
                Arc::clone(&prefix),
                stop.clone(),
            ));
        }
        let connection = Connection {
            client,
            outbox,
            status,
            prefix,
            requests: requests_tx,
            reconnected,
            shared: true,
            connected: false,
            failures: 0,
            backoff: Backoff::new(settings.backoff_min, settings.backoff_max),
            broker: format!("{}:{}", settings.broker.host, settings.broker.port),
        };
        tracker.spawn(run_connection(
            eventloop,
            connection,
            publisher,
            settings.drain,
            stop,
        ));
    }
}

/// What the connection task keeps between polls.
struct Connection {
    client: AsyncClient,
    outbox: Outbox,
    status: MqttStatus,
    prefix: Arc<str>,
    /// Tells the publisher to announce open sessions again.
    reconnected: Arc<tokio::sync::Notify>,
    /// Into the request workers, chosen by topic (so by device).
    requests: Vec<mpsc::Sender<Publish>>,
    /// Subscribe with `$share/...` (false once the broker refused it).
    shared: bool,
    /// A CONNACK came and no error since.
    connected: bool,
    /// Failed polls since the last CONNACK.
    failures: u32,
    backoff: Backoff,
    /// `host:port`, for logs.
    broker: String,
}

impl Connection {
    fn filter(&self) -> String {
        if self.shared {
            topics::shared_command_filter(&self.prefix)
        } else {
            topics::command_filter(&self.prefix)
        }
    }

    /// Queues the command subscription without blocking the event loop:
    /// the request channel may be full of announcements, and only the
    /// event loop (this task) empties it, so the send waits in its own task.
    fn subscribe(&self) {
        let client = self.client.clone();
        let filter = self.filter();
        tokio::spawn(async move {
            if let Err(err) = client.subscribe(filter.as_str(), QoS::AtLeastOnce).await {
                debug!(error = %err, filter, "MQTT subscribe not queued (bridge stopping)");
            }
        });
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                self.connected = true;
                self.reconnected.notify_one();
                self.failures = 0;
                self.backoff.reset();
                let max_packet = ack
                    .properties
                    .as_ref()
                    .and_then(|p| p.max_packet_size)
                    .unwrap_or(0);
                self.status
                    .inner
                    .broker_max_packet
                    .store(max_packet, Ordering::Relaxed);
                let connections = self
                    .status
                    .inner
                    .connections
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                info!(broker = %self.broker, connections, "connected to the MQTT broker");
                self.subscribe();
            }
            Event::Incoming(Packet::SubAck(ack)) => match ack.return_codes.first() {
                Some(SubscribeReasonCode::Success(_)) => {
                    self.status.set_ready(true);
                    info!(filter = %self.filter(), "subscribed to MQTT command requests");
                }
                Some(SubscribeReasonCode::SharedSubscriptionsNotSupported) if self.shared => {
                    warn!(
                        "the MQTT broker does not support shared subscriptions; subscribing \
                         without (with several hubs, each would take every request)"
                    );
                    self.shared = false;
                    self.subscribe();
                }
                other => error!(
                    filter = %self.filter(),
                    reason = ?other,
                    "the MQTT broker refused the command subscription; MQTT commands are off \
                     until the next connection"
                ),
            },
            Event::Incoming(Packet::Publish(publish)) => {
                match self.worker_for(&publish).try_send(publish) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(publish)) => {
                        requests::refuse_busy(&self.outbox, &self.status, &self.prefix, publish);
                    }
                    // The worker stopped: the bridge is shutting down.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            _ => {}
        }
    }

    /// The worker for a request: a hash of its topic, which names the device.
    fn worker_for(&self, publish: &Publish) -> &mpsc::Sender<Publish> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        publish.topic.hash(&mut hasher);
        let index = (hasher.finish() % self.requests.len() as u64) as usize;
        &self.requests[index]
    }

    /// Records a failed poll; returns how long to wait before the next.
    fn on_error(&mut self, err: &ConnectionError) -> Duration {
        let was_connected = std::mem::replace(&mut self.connected, false);
        self.status.set_ready(false);
        self.failures = self.failures.saturating_add(1);
        let delay = self.backoff.next_delay();
        let retry_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        if was_connected {
            warn!(broker = %self.broker, error = %err, retry_ms, "lost the MQTT broker; reconnecting");
        } else if self.failures <= 3 || self.failures.is_multiple_of(20) {
            warn!(
                broker = %self.broker,
                error = %err,
                attempt = self.failures,
                retry_ms,
                "cannot reach the MQTT broker; retrying"
            );
        } else {
            debug!(broker = %self.broker, error = %err, attempt = self.failures, retry_ms, "MQTT connect failed");
        }
        delay
    }
}

/// The connection task: polls the event loop until `stop`, reconnecting
/// with backoff after errors; then lets the publisher drain and disconnects.
async fn run_connection(
    mut eventloop: EventLoop,
    mut connection: Connection,
    mut publisher: JoinHandle<()>,
    drain: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            polled = eventloop.poll() => match polled {
                Ok(event) => connection.on_event(event),
                Err(err) => {
                    let delay = connection.on_error(&err);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            },
        }
    }
    // Shutdown: keep the event loop moving while the publisher sends what
    // is buffered, then say goodbye.
    let deadline = Instant::now() + drain;
    let mut publisher_done = false;
    if connection.connected {
        publisher_done = loop {
            tokio::select! {
                _ = &mut publisher => break true,
                () = tokio::time::sleep_until(deadline) => break false,
                polled = eventloop.poll() => if polled.is_err() { break false },
            }
        };
        if publisher_done {
            let mut disconnect_queued = false;
            loop {
                if !disconnect_queued {
                    disconnect_queued = connection.client.try_disconnect().is_ok();
                }
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    polled = eventloop.poll() => match polled {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
        }
    }
    connection.status.set_ready(false);
    // Without the event loop every pending send fails at once.
    drop(eventloop);
    if !publisher_done {
        let _ = publisher.await;
    }
    info!("MQTT bridge stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let a = BrokerAddress::parse("mqtt://127.0.0.1:1884").expect("valid");
        assert_eq!(
            (a.host.as_str(), a.port, a.credentials),
            ("127.0.0.1", 1884, None)
        );
        let a = BrokerAddress::parse("tcp://broker.example/").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("broker.example", 1883));
        let a = BrokerAddress::parse("mqtt://hub:s3cret@broker:1883").expect("valid");
        assert_eq!(a.credentials, Some(("hub".to_owned(), "s3cret".to_owned())));
        assert!(!format!("{a:?}").contains("s3cret"));
        let a = BrokerAddress::parse("mqtt://[::1]:1885").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("[::1]", 1885));
        let a = BrokerAddress::parse("mqtt://[::1]").expect("valid");
        assert_eq!(a.port, 1883);
        for bad in [
            "http://broker:1883",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://broker:0",
            "mqtt://broker:99999",
            "mqtt://broker:x",
            "mqtt://broker:1883/topic",
            "mqtt://[::1",
            "mqtt://[::1]x",
        ] {
            assert!(BrokerAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let mut backoff = Backoff::new(min, max);
        let mut ceiling = min;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(max);
        }
        assert_eq!(backoff.ceiling, max);
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn settings_give_each_hub_its_own_client_id() {
        let a = BridgeSettings::new("mqtt://b:1", "hub").expect("valid");
        let b = BridgeSettings::new("mqtt://b:1", "hub").expect("valid");
        assert!(a.client_id.starts_with("hub-"));
        assert_ne!(a.client_id, b.client_id);
    }
}
