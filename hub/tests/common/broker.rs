//! Private Mosquitto brokers for tests, and MQTT v5 clients to drive them.
//!
//! Each test starts its own broker ([`TestBroker`]) on a free 127.0.0.1 port,
//! from the binary that `scripts/test.sh` names in `HUB_TEST_MOSQUITTO`
//! (installed by `scripts/mosquitto.sh ensure`), so that it can stop and
//! restart it mid-test. When the binary is missing the test fails: MQTT tests
//! never skip silently.
//!
//! [`MqttProbe`] is a small MQTT v5 client (rumqttc) that records every
//! message it receives and survives broker restarts (it reconnects and
//! subscribes again); [`MosquittoSub`] runs the stock `mosquitto_sub`, to
//! prove that an ordinary client sees what the hub publishes.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long the helpers wait for a broker, a connection or a SUBACK.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The Mosquitto broker binary: `HUB_TEST_MOSQUITTO`, else `mosquitto` in
/// `PATH` or `/usr/sbin` (where Debian puts it). Panics when it is missing.
pub fn mosquitto_binary() -> PathBuf {
    find_binary("HUB_TEST_MOSQUITTO", "mosquitto")
}

/// The `mosquitto_sub` client binary: `HUB_TEST_MOSQUITTO_SUB`, else
/// `mosquitto_sub` in `PATH` or `/usr/bin`. Panics when it is missing.
pub fn mosquitto_sub_binary() -> PathBuf {
    find_binary("HUB_TEST_MOSQUITTO_SUB", "mosquitto_sub")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_binary(variable: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "{variable}={} is not an executable file: run the tests through scripts/test.sh, \
             or run scripts/mosquitto.sh ensure",
            path.display()
        );
        return path;
    }
    let from_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallbacks = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];
    from_path
        .into_iter()
        .chain(fallbacks.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "{name} not found ({variable} unset, not in PATH nor /usr/sbin): MQTT tests need \
                 a real Mosquitto and never skip. Run the tests through scripts/test.sh, or run \
                 scripts/mosquitto.sh ensure (installs Debian's mosquitto and mosquitto-clients)"
            )
        })
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for test servers).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A Mosquitto broker owned by one test: its own config and log in a
/// temporary folder, listening on 127.0.0.1 only, anonymous, MQTT 3.1.1 and
/// 5, nothing kept on disk (a restart forgets retained messages and sessions).
/// Run as a child process (no daemon); dropping it kills the broker.
pub struct TestBroker {
    dir: TempDir,
    /// Its port on 127.0.0.1 (kept across restarts).
    pub port: u16,
    child: Option<Child>,
}

impl TestBroker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> TestBroker {
        let dir = tempfile::Builder::new()
            .prefix("hub-mqtt-")
            .tempdir()
            .unwrap();
        let mut broker = TestBroker {
            dir,
            port: free_port(),
            child: None,
        };
        // `user root`: as root (CI), stay root instead of dropping to the
        // `mosquitto` user; as anyone else the setting has no effect.
        // Logging to stderr, which goes to a file we opened, avoids any
        // question of who may write the log.
        let config = format!(
            "# A throwaway test broker (hub/tests/common/broker.rs).\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             user root\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             connection_messages true\n\
             log_timestamp_format %Y-%m-%dT%H:%M:%S\n",
            port = broker.port
        );
        std::fs::write(broker.config_path(), config).unwrap();
        broker.spawn();
        broker
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// Everything the broker logged so far (all runs of it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process and waits for "running" in its log and for the
    /// port to accept connections. A start that fails because the port is
    /// still taken (a previous run not quite gone) is retried until the
    /// deadline; any other early exit panics with the log.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let binary = mosquitto_binary();
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .unwrap();
            let log_start = log.metadata().unwrap().len() as usize;
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(self.config_path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            loop {
                let this_run = self.log().get(log_start..).unwrap_or_default().to_owned();
                if let Some(status) = child.try_wait().unwrap() {
                    if this_run.contains("Address already in use")
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(100));
                        break; // retry
                    }
                    panic!(
                        "mosquitto exited at start-up ({status}) on port {}; its log:\n{}",
                        self.port,
                        self.log()
                    );
                }
                // "running" comes after every listener is bound: the port
                // is ours, not a stranger's that happened to take it.
                if this_run.contains(" running") && port_accepts(self.port) {
                    self.child = Some(child);
                    return;
                }
                if std::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mosquitto did not accept connections on port {} within {:?}; its log:\n{}",
                        self.port,
                        STARTUP_TIMEOUT,
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Stops the broker gracefully (SIGTERM: MQTT v5 clients get a
    /// DISCONNECT), waits for it to exit and for the port to close.
    pub fn stop(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        self.reap(Duration::from_secs(5));
    }

    /// Kills the broker abruptly (SIGKILL: no goodbye to clients), waits for
    /// it to exit and for the port to close.
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
        }
        self.reap(Duration::ZERO);
    }

    /// Waits up to `grace` for the process to exit, then kills it; then
    /// waits for the port to stop accepting connections.
    fn reap(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = std::time::Instant::now() + grace;
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().unwrap();
        for _ in 0..250 {
            if !port_accepts(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "port {} still accepts connections after mosquitto exited",
            self.port
        );
    }

    /// Stops (gracefully) and starts again on the same port. Mosquitto binds
    /// with SO_REUSEADDR, so connections left in TIME_WAIT do not block it.
    /// Nothing survives: retained messages and sessions are gone.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts again after [`stop`](Self::stop) or [`kill`](Self::kill).
    pub fn resume(&mut self) {
        self.spawn();
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Splits `mqtt://host:port` (or `tcp://`, or bare `host:port`) into host and port.
pub fn parse_mqtt_url(url: &str) -> (String, u16) {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    let rest = rest.split(['/', '?']).next().unwrap();
    let (host, port) = rest
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in MQTT URL {url:?}"));
    (host.to_owned(), port.parse().unwrap())
}

/// One message a probe received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The topic it was published to.
    pub topic: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Whether the broker sent it as a retained message (on subscribe).
    pub retain: bool,
    /// The QoS it was delivered with.
    pub qos: QoS,
    /// MQTT v5 Response Topic.
    pub response_topic: Option<String>,
    /// MQTT v5 Correlation Data.
    pub correlation_data: Option<Vec<u8>>,
    /// MQTT v5 Content Type.
    pub content_type: Option<String>,
    /// MQTT v5 User Properties, in order.
    pub user_properties: Vec<(String, String)>,
}

impl ReceivedMessage {
    fn from_publish(publish: &Publish) -> ReceivedMessage {
        let properties = publish.properties.clone().unwrap_or_default();
        ReceivedMessage {
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            payload: publish.payload.to_vec(),
            retain: publish.retain,
            qos: publish.qos,
            response_topic: properties.response_topic,
            correlation_data: properties.correlation_data.map(|d| d.to_vec()),
            content_type: properties.content_type,
            user_properties: properties.user_properties,
        }
    }

    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The value of the first user property called `name`.
    pub fn user_property(&self, name: &str) -> Option<&str> {
        self.user_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn summary(&self) -> String {
        let mut text = self.text();
        if text.len() > 120 {
            let mut cut = 120;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        format!(
            "{}{} {text:?}",
            self.topic,
            if self.retain { " (retained)" } else { "" }
        )
    }
}

/// What a probe's connection is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStatus {
    /// CONNACKs received so far (1 after the first connect, 2 after one reconnect, ...).
    pub connections: u64,
    /// Connected now.
    pub connected: bool,
    /// Connected and every subscription acknowledged on this connection.
    pub subscribed: bool,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

type SubAckSender = oneshot::Sender<Result<(), String>>;

/// Bookkeeping shared by the probe and its event-loop task.
#[derive(Default)]
struct Shared {
    /// Every filter subscribed so far (subscribed again after a reconnect).
    filters: Vec<String>,
    /// One entry per SUBSCRIBE sent on this connection, in order: who waits
    /// for its SUBACK (Mosquitto answers in order).
    waiters: VecDeque<Vec<SubAckSender>>,
    /// Waiters whose SUBSCRIBE was lost with a connection: answered by the
    /// SUBACK of the resubscription after the next CONNACK.
    orphans: Vec<SubAckSender>,
    connected: bool,
}

/// A small MQTT v5 test client: clean start, a unique client id, QoS 1
/// subscriptions. A background task polls the rumqttc event loop, forwards
/// every PUBLISH it receives to [`next_message`](Self::next_message), and
/// keeps polling after errors, so it reconnects when the broker comes back
/// and subscribes again to every filter.
pub struct MqttProbe {
    /// Its MQTT client id.
    pub client_id: String,
    client: AsyncClient,
    shared: Arc<Mutex<Shared>>,
    messages: mpsc::UnboundedReceiver<ReceivedMessage>,
    status: watch::Receiver<ProbeStatus>,
    stopping: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

/// A client id no other probe of this machine uses at the same time.
pub fn unique_client_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl MqttProbe {
    /// Connects to the broker on 127.0.0.1:`port` and waits for its CONNACK.
    pub async fn connect(port: u16) -> MqttProbe {
        Self::connect_with("127.0.0.1", port, |_| {}).await
    }

    /// Connects to `mqtt://host:port` and waits for its CONNACK.
    pub async fn connect_url(url: &str) -> MqttProbe {
        let (host, port) = parse_mqtt_url(url);
        Self::connect_with(&host, port, |_| {}).await
    }

    /// Connects after `adjust` changes the options (a last will,
    /// credentials, keep-alive...), and waits for the CONNACK.
    pub async fn connect_with(
        host: &str,
        port: u16,
        adjust: impl FnOnce(&mut MqttOptions),
    ) -> MqttProbe {
        let client_id = unique_client_id("probe");
        let mut options = MqttOptions::new(client_id.clone(), host, port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_clean_start(true);
        options.set_connection_timeout(5);
        // rumqttc refuses incoming packets over 10 KiB unless told otherwise.
        options.set_max_packet_size(Some(1 << 20));
        adjust(&mut options);
        let (client, eventloop) = AsyncClient::new(options, 256);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(ProbeStatus::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(drive(
            eventloop,
            client.clone(),
            shared.clone(),
            messages_tx,
            status_tx,
            stopping.clone(),
        ));
        let probe = MqttProbe {
            client_id,
            client,
            shared,
            messages,
            status,
            stopping,
            task: Some(task),
        };
        probe.wait_ready(1, STARTUP_TIMEOUT).await;
        probe
    }

    /// The rumqttc client, for anything the helpers do not cover.
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// The connection's state now.
    pub fn status(&self) -> ProbeStatus {
        self.status.borrow().clone()
    }

    /// Waits until the probe has connected at least `connections` times and
    /// every subscription is acknowledged on the current connection
    /// (`wait_ready(2, ..)` after a broker restart: reconnected and
    /// subscribed again). Panics after `timeout`.
    pub async fn wait_ready(&self, connections: u64, timeout: Duration) {
        let mut status = self.status.clone();
        let waited = tokio::time::timeout(
            timeout,
            status.wait_for(|s| s.connections >= connections && s.subscribed),
        )
        .await;
        match waited {
            Ok(Ok(_)) => {}
            _ => panic!(
                "probe {} not ready (connection {connections}, subscribed) within {timeout:?}: \
                 {:?}",
                self.client_id,
                self.status()
            ),
        }
    }

    /// Subscribes to `filter` at QoS 1 and waits for the SUBACK (panics if
    /// the broker refuses or nothing comes within 10 s). The filter is
    /// subscribed again after every reconnect.
    pub async fn subscribe(&self, filter: &str) {
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = self.shared.lock().unwrap();
            shared.filters.push(filter.to_owned());
            if shared.connected {
                self.client
                    .try_subscribe(filter, QoS::AtLeastOnce)
                    .unwrap_or_else(|e| panic!("cannot subscribe to {filter:?}: {e:?}"));
                shared.waiters.push_back(vec![tx]);
            } else {
                // Sent with the resubscription after the next CONNACK.
                shared.orphans.push(tx);
            }
        }
        match tokio::time::timeout(STARTUP_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(reason))) => panic!("broker refused subscription {filter:?}: {reason}"),
            Ok(Err(_)) => panic!("probe event loop ended before SUBACK for {filter:?}"),
            Err(_) => panic!(
                "no SUBACK for {filter:?} within {STARTUP_TIMEOUT:?}: {:?}",
                self.status()
            ),
        }
    }

    /// The next message received, or `None` after `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<ReceivedMessage> {
        tokio::time::timeout(timeout, self.messages.recv())
            .await
            .ok()
            .flatten()
    }

    /// Skips messages until one matches `predicate`; panics after `timeout`
    /// with what it saw.
    pub async fn wait_for(
        &mut self,
        mut predicate: impl FnMut(&ReceivedMessage) -> bool,
        timeout: Duration,
    ) -> ReceivedMessage {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(message)) if predicate(&message) => return message,
                Ok(Some(message)) => seen.push(message.summary()),
                Ok(None) | Err(_) => panic!(
                    "probe {}: no matching message within {timeout:?}; saw {} others:\n  {}\n\
                     status: {:?}",
                    self.client_id,
                    seen.len(),
                    seen.join("\n  "),
                    self.status()
                ),
            }
        }
    }

    /// [`wait_for`](Self::wait_for) a message on exactly `topic`.
    pub async fn wait_for_topic(&mut self, topic: &str, timeout: Duration) -> ReceivedMessage {
        self.wait_for(|m| m.topic == topic, timeout).await
    }

    /// Drops every message received so far; returns how many.
    pub fn drain(&mut self) -> usize {
        let mut count = 0;
        while self.messages.try_recv().is_ok() {
            count += 1;
        }
        count
    }

    /// Publishes at QoS 1 (not retained). Returns once queued for the event
    /// loop, not when acknowledged.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish_with(topic, payload, QoS::AtLeastOnce, false, None)
            .await;
    }

    /// Publishes a retained message at QoS 1.
    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish_with(topic, payload, QoS::AtLeastOnce, true, None)
            .await;
    }

    /// Publishes a request at QoS 1 with MQTT v5 Response Topic and
    /// Correlation Data.
    pub async fn publish_with_response(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        response_topic: &str,
        correlation_data: impl Into<Vec<u8>>,
    ) {
        let properties = PublishProperties {
            response_topic: Some(response_topic.to_owned()),
            correlation_data: Some(correlation_data.into().into()),
            ..PublishProperties::default()
        };
        self.publish_with(topic, payload, QoS::AtLeastOnce, false, Some(properties))
            .await;
    }

    /// Publishes with any QoS, retain flag and v5 properties.
    pub async fn publish_with(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        qos: QoS,
        retain: bool,
        properties: Option<PublishProperties>,
    ) {
        let payload: Vec<u8> = payload.into();
        let sent = match properties {
            Some(properties) => {
                self.client
                    .publish_with_properties(topic, qos, retain, payload, properties)
                    .await
            }
            None => self.client.publish(topic, qos, retain, payload).await,
        };
        sent.unwrap_or_else(|e| panic!("cannot publish to {topic:?}: {e:?}"));
    }

    /// Sends DISCONNECT (normal: the broker does not publish the last will)
    /// and stops the event loop.
    pub async fn disconnect(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.client.disconnect().await;
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for MqttProbe {
    fn drop(&mut self) {
        // Dropping the event loop closes the socket without DISCONNECT (the
        // broker publishes the last will, if any).
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The probe's event-loop task. rumqttc reconnects when `poll` is called
/// again after an error; with clean start it neither keeps subscriptions nor
/// (see `EventLoop::poll`: pending requests are cleared when the CONNACK says
/// no session is present) resends unacknowledged publishes.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    shared: Arc<Mutex<Shared>>,
    messages: mpsc::UnboundedSender<ReceivedMessage>,
    status: watch::Sender<ProbeStatus>,
    stopping: Arc<AtomicBool>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let _ = messages.send(ReceivedMessage::from_publish(&publish));
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let mut shared = shared.lock().unwrap();
                shared.connected = true;
                let mut waiting = std::mem::take(&mut shared.orphans);
                waiting.extend(shared.waiters.drain(..).flatten());
                let subscribed = shared.filters.is_empty();
                if subscribed {
                    for waiter in waiting {
                        let _ = waiter.send(Ok(()));
                    }
                } else {
                    let filters: Vec<Filter> = shared
                        .filters
                        .iter()
                        .map(|f| Filter::new(f.clone(), QoS::AtLeastOnce))
                        .collect();
                    client
                        .try_subscribe_many(filters)
                        .expect("probe request channel has room to resubscribe");
                    shared.waiters.push_back(waiting);
                }
                status.send_modify(|s| {
                    s.connections += 1;
                    s.connected = true;
                    s.subscribed = subscribed;
                });
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let mut shared = shared.lock().unwrap();
                let refused: Vec<String> = ack
                    .return_codes
                    .iter()
                    .filter(|code| !matches!(code, SubscribeReasonCode::Success(_)))
                    .map(|code| format!("{code:?}"))
                    .collect();
                let result = if refused.is_empty() {
                    Ok(())
                } else {
                    Err(refused.join(", "))
                };
                for waiter in shared.waiters.pop_front().unwrap_or_default() {
                    let _ = waiter.send(result.clone());
                }
                let all_acked = shared.waiters.is_empty() && shared.orphans.is_empty();
                status.send_modify(|s| s.subscribed = s.connected && all_acked);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping.load(Ordering::SeqCst) => {
                status.send_modify(|s| {
                    s.connected = false;
                    s.subscribed = false;
                });
                return;
            }
            Ok(_) => {}
            Err(error) => {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                {
                    let mut shared = shared.lock().unwrap();
                    shared.connected = false;
                    let lost: Vec<SubAckSender> = shared.waiters.drain(..).flatten().collect();
                    shared.orphans.extend(lost);
                }
                status.send_modify(|s| {
                    s.connected = false;
                    s.subscribed = false;
                    s.last_error = Some(error.to_string());
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs `mosquitto_sub -h 127.0.0.1 -p PORT -V mqttv5 -v -t TOPIC EXTRA...`
/// with stdout piped (one `topic payload` line per message, retained ones
/// included). The caller kills it; [`MosquittoSub`] does that for you.
pub fn spawn_mosquitto_sub(port: u16, topic: &str, extra_args: &[&str]) -> Child {
    let binary = mosquitto_sub_binary();
    Command::new(&binary)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "mqttv5",
            "-v",
        ])
        .args(["-t", topic])
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()))
}

/// The lines a child process prints, read by a thread and handed over
/// through a channel, so that async tests can wait with a timeout without
/// blocking the runtime.
pub struct Lines {
    lines: mpsc::UnboundedReceiver<String>,
}

impl Lines {
    /// Starts reading `stdout` (for example `child.stdout.take().unwrap()`).
    pub fn read(stdout: impl Read + Send + 'static) -> Lines {
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { lines }
    }

    /// The next line, or `None` after `timeout` or at end of output.
    pub async fn next_line(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    /// Skips lines until one matches `predicate`; panics after `timeout`
    /// (or at end of output) with what it saw.
    pub async fn wait_for(
        &mut self,
        mut predicate: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if predicate(&line) => return line,
                Ok(Some(line)) => seen.push(line),
                Ok(None) => panic!(
                    "output ended without a matching line; saw:\n{}",
                    seen.join("\n")
                ),
                Err(_) => panic!(
                    "no matching line within {timeout:?}; saw:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

/// A stock `mosquitto_sub` (MQTT v5, `-v`: lines are `topic payload`),
/// started with `-d` so that [`start`](Self::start) returns only once the
/// broker acknowledged the subscription; debug lines are filtered out of
/// [`lines`](Self::lines). Killed on drop.
pub struct MosquittoSub {
    child: Child,
    /// Its message lines (`topic payload`).
    pub lines: Lines,
}

impl MosquittoSub {
    /// Subscribes to `topic` on 127.0.0.1:`port` and waits for the SUBACK.
    pub async fn start(port: u16, topic: &str, extra_args: &[&str]) -> MosquittoSub {
        let mut args = vec!["-d"];
        args.extend_from_slice(extra_args);
        let mut child = spawn_mosquitto_sub(port, topic, &args);
        let stdout = child.stdout.take().unwrap();
        let (raw_tx, mut raw) = mpsc::unbounded_channel::<String>();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if raw_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Debug lines look like "Client null received SUBACK" or
        // "Subscribed (mid: 1): 1"; message lines start with the topic.
        let is_debug =
            |line: &str| line.starts_with("Client ") || line.starts_with("Subscribed (mid");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, raw.recv()).await {
                Ok(Some(line)) if line.starts_with("Subscribed (mid") => break,
                Ok(Some(line)) if is_debug(&line) => seen.push(line),
                Ok(Some(line)) => {
                    let _ = tx.send(line);
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mosquitto_sub did not subscribe to {topic:?} on port {port}; its \
                         output:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
        tokio::spawn(async move {
            while let Some(line) = raw.recv().await {
                if !is_debug(&line) && tx.send(line).is_err() {
                    break;
                }
            }
        });
        MosquittoSub {
            child,
            lines: Lines { lines },
        }
    }

    /// The next `topic payload` line, or `None` after `timeout`.
    pub async fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.next_line(timeout).await
    }

    /// Waits for the line `topic payload`; panics after `timeout`.
    pub async fn expect(&mut self, topic: &str, payload: &str, timeout: Duration) {
        let wanted = format!("{topic} {payload}");
        self.lines.wait_for(|line| line == wanted, timeout).await;
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
