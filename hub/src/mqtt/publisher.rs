//! Everything the bridge sends: the [`Outbox`] that hands messages to the
//! rumqttc client without ever waiting on the broker, and the task that
//! turns the hub's announcements into messages.
//!
//! The publisher follows three broadcasts: command status changes
//! ([`CommandService::subscribe`](crate::commands::CommandService::subscribe)),
//! presence and stored telemetry ([`HubEvents`](crate::events::HubEvents)).
//! Each becomes one message (two for a command whose request named a
//! Response Topic: the status topic and the requester's topic, the latter
//! with its Correlation Data). A broadcast that overtakes the publisher
//! reports `Lagged`: the skipped events are counted and logged, and the
//! publisher carries on; the database still holds the truth.
//!
//! **Why `try_publish`.** rumqttc's client talks to the event loop over a
//! bounded channel. While the broker is unreachable the event loop is
//! waiting out its backoff, the channel fills, and an awaited `publish`
//! would park this task (and through the broadcasts, nothing else, but
//! the events would pile up as `Lagged`). So messages are offered with
//! `try_publish`: when the channel is full the message is dropped and
//! counted ([`MqttStats::dropped_publishes`](super::MqttStats)), with one
//! warning per streak of drops. The channel holds the newest messages up to
//! its capacity; what is in flight when a connection drops is lost with it
//! (clean start, see `mqtt/mod.rs`). At shutdown the last events are sent
//! with a bounded wait instead, so the final offline statuses get out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{MqttStatus, payloads, topics};
use crate::events::{PresenceEvent, TelemetryEvent};
use crate::gateway::connection::now_ms;
use crate::registry::SessionRegistry;
use crate::store::CommandRecord;

/// Bytes added to topic, payload and correlation data when comparing a
/// message with the broker's Maximum Packet Size: fixed header, lengths,
/// packet id and our properties, rounded up.
const PACKET_OVERHEAD: usize = 64;

/// QoS of telemetry: at most once. Readings are durable in the database and
/// an integration that missed some reads them from the HTTP API; QoS 0 keeps
/// the broker's in-flight window free for status messages.
pub const TELEMETRY_QOS: QoS = QoS::AtMostOnce;
/// QoS of everything else (statuses, presence, refusals): at least once.
pub const STATUS_QOS: QoS = QoS::AtLeastOnce;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// Where.
    pub topic: String,
    /// JSON.
    pub payload: Vec<u8>,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Kept by the broker for later subscribers (presence only).
    pub retain: bool,
    /// MQTT v5 Correlation Data, on replies to a request's Response Topic.
    pub correlation: Option<Vec<u8>>,
}

impl Message {
    /// A QoS 1, not retained message.
    pub fn status(topic: String, payload: Vec<u8>) -> Message {
        Message {
            topic,
            payload,
            qos: STATUS_QOS,
            retain: false,
            correlation: None,
        }
    }

    fn properties(&self) -> PublishProperties {
        PublishProperties {
            // 1: the payload is UTF-8 (it is JSON).
            payload_format_indicator: Some(1),
            content_type: Some("application/json".to_owned()),
            correlation_data: self.correlation.clone().map(Into::into),
            ..PublishProperties::default()
        }
    }

    fn approximate_size(&self) -> usize {
        self.topic.len()
            + self.payload.len()
            + self.correlation.as_ref().map_or(0, Vec::len)
            + PACKET_OVERHEAD
    }
}

/// Hands messages to the rumqttc client without waiting; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    client: AsyncClient,
    status: MqttStatus,
    /// Set while messages are being dropped, so a streak logs once.
    dropping: Arc<AtomicBool>,
}

impl Outbox {
    /// An outbox over `client`, counting into `status`.
    pub fn new(client: AsyncClient, status: MqttStatus) -> Outbox {
        Outbox {
            client,
            status,
            dropping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// False (and counted as dropped) when the broker would refuse it as too large.
    fn fits(&self, message: &Message) -> bool {
        let max = self.status.broker_max_packet();
        if max == 0 || message.approximate_size() <= max as usize {
            return true;
        }
        self.status.count_dropped();
        warn!(
            topic = %message.topic,
            bytes = message.payload.len(),
            broker_max_packet = max,
            "MQTT message larger than the broker accepts; dropped"
        );
        false
    }

    fn sent(&self) -> bool {
        if self.dropping.swap(false, Ordering::Relaxed) {
            debug!("MQTT outgoing queue has room again");
        }
        true
    }

    fn dropped(&self, topic: &str) -> bool {
        let total = self.status.count_dropped();
        if !self.dropping.swap(true, Ordering::Relaxed) {
            warn!(
                topic,
                dropped_total = total,
                "MQTT outgoing queue full (broker slow or unreachable); dropping messages until it drains"
            );
        }
        false
    }

    /// Offers `message` to the client; false when it was dropped (queue
    /// full, or the bridge is stopping).
    pub fn send(&self, message: Message) -> bool {
        if !self.fits(&message) {
            return false;
        }
        let properties = message.properties();
        match self.client.try_publish_with_properties(
            message.topic.as_str(),
            message.qos,
            message.retain,
            message.payload,
            properties,
        ) {
            Ok(()) => self.sent(),
            Err(_) => self.dropped(&message.topic),
        }
    }

    /// Like [`send`](Self::send) but waits for room until `deadline`
    /// (shutdown only: the event loop is being polled meanwhile).
    pub async fn send_until(&self, message: Message, deadline: Instant) -> bool {
        if !self.fits(&message) {
            return false;
        }
        let properties = message.properties();
        let queued = tokio::time::timeout_at(
            deadline,
            self.client.publish_with_properties(
                message.topic.as_str(),
                message.qos,
                message.retain,
                message.payload,
                properties,
            ),
        )
        .await;
        match queued {
            Ok(Ok(())) => self.sent(),
            _ => self.dropped(&message.topic),
        }
    }
}

/// The broadcasts the publisher follows, subscribed when the bridge starts
/// so that nothing after the start is missed.
pub struct Feeds {
    /// Command status changes.
    pub commands: broadcast::Receiver<Arc<CommandRecord>>,
    /// Presence changes.
    pub presence: broadcast::Receiver<PresenceEvent>,
    /// Stored telemetry frames.
    pub telemetry: broadcast::Receiver<Arc<TelemetryEvent>>,
    /// Signalled on every CONNACK: the broker may have lost its retained
    /// presence (a restart without persistence), so every session open on
    /// this hub is announced again.
    pub reconnected: Arc<Notify>,
    /// The sessions to announce again.
    pub sessions: Arc<SessionRegistry>,
}

/// Builds the messages for each kind of event.
struct Builder {
    prefix: Arc<str>,
    status: MqttStatus,
}

impl Builder {
    fn command(&self, record: &CommandRecord) -> Vec<Message> {
        let payload = match payloads::command(record) {
            Ok(payload) => payload,
            Err(err) => {
                warn!(command = record.id, error = %err, "command status not published");
                return Vec::new();
            }
        };
        let mut messages = Vec::with_capacity(2);
        match topics::command_status_topic(&self.prefix, &record.device_id, record.id) {
            Ok(topic) => messages.push(Message::status(topic, payload.clone())),
            Err(err) => warn!(command = record.id, error = %err, "command status not published"),
        }
        if let Some(reply) = &record.reply {
            messages.push(Message {
                correlation: reply.correlation.clone(),
                ..Message::status(reply.topic.clone(), payload)
            });
        }
        messages
    }

    fn presence(&self, event: &PresenceEvent) -> Option<Message> {
        let built = topics::presence_topic(&self.prefix, &event.device_id)
            .map_err(|e| e.to_string())
            .and_then(|topic| {
                payloads::presence(event)
                    .map(|payload| (topic, payload))
                    .map_err(|e| e.to_string())
            });
        match built {
            Ok((topic, payload)) => Some(Message {
                retain: true,
                ..Message::status(topic, payload)
            }),
            Err(error) => {
                warn!(device = %event.device_id, %error, "presence not published");
                None
            }
        }
    }

    fn telemetry(&self, event: &TelemetryEvent) -> Option<Message> {
        let built = topics::telemetry_topic(&self.prefix, &event.device.id)
            .map_err(|e| e.to_string())
            .and_then(|topic| {
                payloads::telemetry(event)
                    .map(|payload| (topic, payload))
                    .map_err(|e| e.to_string())
            });
        match built {
            Ok((topic, payload)) => Some(Message {
                topic,
                payload,
                qos: TELEMETRY_QOS,
                retain: false,
                correlation: None,
            }),
            Err(error) => {
                warn!(device = %event.device.id, %error, "telemetry not published");
                None
            }
        }
    }

    fn lagged(&self, feed: &'static str, skipped: u64) {
        let total = self.status.count_lagged(skipped);
        warn!(
            feed,
            skipped,
            lagged_total = total,
            "MQTT publisher fell behind the hub's events; skipped some (the database has them)"
        );
    }
}

/// Publishes the hub's announcements until `stop`, then sends what is
/// still buffered, waiting at most `drain` for room.
pub async fn run(
    outbox: Outbox,
    prefix: Arc<str>,
    mut feeds: Feeds,
    drain: Duration,
    stop: CancellationToken,
) {
    let builder = Builder {
        prefix,
        status: outbox.status.clone(),
    };
    let (mut commands_open, mut presence_open, mut telemetry_open) = (true, true, true);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            () = feeds.reconnected.notified() => {
                // Taken now, in this task, after any offline event of a
                // session that already ended was handled (the connection
                // leaves the registry before it announces offline), so a
                // closed session is never announced online again.
                let now = now_ms();
                for (device_id, session_counter) in feeds.sessions.open_sessions() {
                    let event = PresenceEvent {
                        device_id,
                        online: true,
                        session_counter,
                        at_ms: now,
                    };
                    if let Some(message) = builder.presence(&event) {
                        outbox.send(message);
                    }
                }
            }
            event = feeds.commands.recv(), if commands_open => match event {
                Ok(record) => {
                    for message in builder.command(&record) {
                        outbox.send(message);
                    }
                }
                Err(RecvError::Lagged(n)) => builder.lagged("command status", n),
                Err(RecvError::Closed) => commands_open = false,
            },
            event = feeds.presence.recv(), if presence_open => match event {
                Ok(event) => {
                    if let Some(message) = builder.presence(&event) {
                        outbox.send(message);
                    }
                }
                Err(RecvError::Lagged(n)) => builder.lagged("presence", n),
                Err(RecvError::Closed) => presence_open = false,
            },
            event = feeds.telemetry.recv(), if telemetry_open => match event {
                Ok(event) => {
                    if let Some(message) = builder.telemetry(&event) {
                        outbox.send(message);
                    }
                }
                Err(RecvError::Lagged(n)) => builder.lagged("telemetry", n),
                Err(RecvError::Closed) => telemetry_open = false,
            },
            else => {
                // Every feed closed: nothing more will come.
                stop.cancelled().await;
                break;
            }
        }
    }
    let deadline = Instant::now() + drain;
    let mut sent = 0_usize;
    while let Some(messages) = next_buffered(&builder, &mut feeds) {
        for message in messages {
            if Instant::now() >= deadline {
                warn!(
                    sent,
                    "MQTT drain deadline reached; the remaining events are not published"
                );
                return;
            }
            if outbox.send_until(message, deadline).await {
                sent += 1;
            }
        }
    }
    debug!(sent, "MQTT publisher drained");
}

/// The messages of the next event already buffered in any feed; None when
/// all are empty.
fn next_buffered(builder: &Builder, feeds: &mut Feeds) -> Option<Vec<Message>> {
    loop {
        match feeds.commands.try_recv() {
            Ok(record) => return Some(builder.command(&record)),
            Err(TryRecvError::Lagged(n)) => {
                builder.lagged("command status", n);
                continue;
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => {}
        }
        match feeds.presence.try_recv() {
            Ok(event) => return Some(builder.presence(&event).into_iter().collect()),
            Err(TryRecvError::Lagged(n)) => {
                builder.lagged("presence", n);
                continue;
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => {}
        }
        match feeds.telemetry.try_recv() {
            Ok(event) => return Some(builder.telemetry(&event).into_iter().collect()),
            Err(TryRecvError::Lagged(n)) => {
                builder.lagged("telemetry", n);
                continue;
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::MqttOptions;

    use super::*;

    fn message(payload_bytes: usize) -> Message {
        Message::status("hub/errors".into(), vec![b'x'; payload_bytes])
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // An event loop nobody polls: its request channel (2) fills up.
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("test", "127.0.0.1", 1), 2);
        let status = MqttStatus::default();
        let outbox = Outbox::new(client, status.clone());
        assert!(outbox.send(message(10)));
        assert!(outbox.send(message(10)));
        assert!(!outbox.send(message(10)));
        assert!(!outbox.send(message(10)));
        assert_eq!(status.stats().dropped_publishes, 2);
    }

    #[test]
    fn messages_larger_than_the_broker_takes_are_dropped() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("test", "127.0.0.1", 1), 8);
        let status = MqttStatus::default();
        status
            .inner
            .broker_max_packet
            .store(1_000, std::sync::atomic::Ordering::Relaxed);
        let outbox = Outbox::new(client, status.clone());
        assert!(outbox.send(message(500)));
        assert!(!outbox.send(message(1_000)));
        assert_eq!(status.stats().dropped_publishes, 1);
    }
}
