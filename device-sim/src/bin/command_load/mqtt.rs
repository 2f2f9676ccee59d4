//! Commands over MQTT v5: request on `{prefix}/devices/{id}/commands` with a
//! Response Topic and Correlation Data, final status back on the Response
//! Topic.
//!
//! One rumqttc event loop task owns the connection. It subscribes to a
//! private reply topic (`bench/replies/<random>`) after every CONNACK and
//! matches each reply to its command by the Correlation Data (the command
//! number, 8 bytes big-endian). Intermediate statuses (`queued`, `sent`,
//! `delivered`) are skipped; the first final status, or a refusal
//! (`{"error": ...}`), completes the command. The arrival time is taken in
//! the event loop, so the waiting task's wake-up is not part of the round
//! trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use rumqttc::NetworkOptions;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Outcome, outcome_of_view, wall_us};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Outcome>>>>;

/// The connection's state, as the event loop reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkState {
    Connecting,
    Subscribed,
    Failed(String),
}

/// Sends command requests over MQTT and waits for their final status.
pub struct MqttRequester {
    client: AsyncClient,
    prefix: String,
    reply_topic: String,
    pending: Pending,
    timeout: Duration,
    event_loop: JoinHandle<()>,
    /// Set by [`MqttRequester::disconnect`]: connection errors are expected.
    closing: Arc<AtomicBool>,
}

/// Host and port of `mqtt://HOST:PORT` (or `tcp://`).
fn broker_address(url: &str) -> anyhow::Result<(String, u16)> {
    let parsed = url::Url::parse(url).with_context(|| format!("--mqtt-url {url:?}"))?;
    if !matches!(parsed.scheme(), "mqtt" | "tcp") {
        bail!("--mqtt-url {url:?}: use mqtt://HOST:PORT");
    }
    let host = parsed
        .host_str()
        .with_context(|| format!("--mqtt-url {url:?} has no host"))?
        .to_owned();
    Ok((host, parsed.port().unwrap_or(1883)))
}

impl MqttRequester {
    /// Connects to the broker and subscribes to a fresh reply topic.
    /// With `nagle`, the connection keeps Nagle's algorithm (rumqttc's
    /// default); otherwise it sets TCP_NODELAY, so small requests are not
    /// held back waiting for the ACK of the previous one.
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
        nagle: bool,
    ) -> anyhow::Result<Self> {
        let (host, port) = broker_address(url)?;
        let id: u64 = rand::random();
        let mut options = MqttOptions::new(format!("command-load-{id:016x}"), host, port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_max_packet_size(Some(1 << 20));
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(!nagle);
        options.set_network_options(network);
        let (client, event_loop) = AsyncClient::new(options, 65_536);
        let reply_topic = format!("bench/replies/{id:016x}");
        let pending: Pending = Arc::default();
        let (state_tx, mut state_rx) = watch::channel(LinkState::Connecting);
        let closing = Arc::new(AtomicBool::new(false));
        let event_loop = tokio::spawn(run_event_loop(
            event_loop,
            client.clone(),
            reply_topic.clone(),
            Arc::clone(&pending),
            state_tx,
            Arc::clone(&closing),
        ));
        let ready = tokio::time::timeout(
            Duration::from_secs(10),
            state_rx.wait_for(|s| *s != LinkState::Connecting),
        )
        .await;
        let state = match ready {
            Ok(Ok(state)) => state.clone(),
            Ok(Err(_)) => LinkState::Failed("the event loop ended".into()),
            Err(_) => LinkState::Failed("not connected and subscribed after 10 s".into()),
        };
        if let LinkState::Failed(why) = state {
            event_loop.abort();
            bail!("MQTT broker {url}: {why}");
        }
        Ok(MqttRequester {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
            reply_topic,
            pending,
            timeout,
            event_loop,
            closing,
        })
    }

    fn forget(&self, n: u64) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&n);
    }

    /// Publishes command `n` for `device` and waits for its final status.
    /// Returns when it was published and how it ended.
    pub async fn request(
        &self,
        n: u64,
        device: &str,
        body: &serde_json::Value,
    ) -> (Instant, i64, Outcome) {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(n, tx);
        let payload = match serde_json::to_vec(body) {
            Ok(payload) => payload,
            Err(err) => {
                self.forget(n);
                let error = Outcome::Error(format!("encoding: {err}"));
                return (Instant::now(), wall_us(), error);
            }
        };
        let properties = PublishProperties {
            response_topic: Some(self.reply_topic.clone()),
            correlation_data: Some(Bytes::copy_from_slice(&n.to_be_bytes())),
            content_type: Some("application/json".into()),
            ..PublishProperties::default()
        };
        let topic = format!("{}/devices/{device}/commands", self.prefix);
        let (sent, sent_wall_us) = (Instant::now(), wall_us());
        if let Err(err) = self
            .client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties)
            .await
        {
            self.forget(n);
            return (
                sent,
                sent_wall_us,
                Outcome::Error(format!("publish: {err}")),
            );
        }
        let outcome = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Error("the MQTT event loop ended".into()),
            Err(_) => {
                self.forget(n);
                Outcome::Timeout
            }
        };
        (sent, sent_wall_us, outcome)
    }

    /// Sends DISCONNECT and stops the event loop.
    pub async fn disconnect(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.event_loop.abort();
    }
}

async fn run_event_loop(
    mut event_loop: EventLoop,
    client: AsyncClient,
    reply_topic: String,
    pending: Pending,
    state: watch::Sender<LinkState>,
    closing: Arc<AtomicBool>,
) {
    let mut failures = 0u32;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                if let Err(err) = client.try_subscribe(reply_topic.as_str(), QoS::AtLeastOnce) {
                    state.send_replace(LinkState::Failed(format!("subscribe: {err}")));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .find(|code| !matches!(code, SubscribeReasonCode::Success(_)));
                match refused {
                    None => state.send_replace(LinkState::Subscribed),
                    Some(code) => state.send_replace(LinkState::Failed(format!(
                        "the broker refused the subscription to {reply_topic}: {code:?}"
                    ))),
                };
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                handle_reply(&publish, &reply_topic, &pending, Instant::now(), wall_us());
            }
            Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                eprintln!("command_load: the broker disconnected: {disconnect:?}");
            }
            Ok(_) => {}
            Err(_) if closing.load(Ordering::Relaxed) => return,
            Err(err) => {
                failures += 1;
                eprintln!("command_load: MQTT connection error: {err}");
                if *state.borrow() == LinkState::Connecting && failures >= 3 {
                    state.send_replace(LinkState::Failed(err.to_string()));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Completes the command a reply is for, if the reply is final.
fn handle_reply(
    publish: &Publish,
    reply_topic: &str,
    pending: &Pending,
    at: Instant,
    at_wall_us: i64,
) {
    if publish.topic.as_ref() != reply_topic.as_bytes() {
        return;
    }
    let Some(n) = publish
        .properties
        .as_ref()
        .and_then(|p| p.correlation_data.as_ref())
        .and_then(|data| <[u8; 8]>::try_from(data.as_ref()).ok())
        .map(u64::from_be_bytes)
    else {
        eprintln!("command_load: a reply without usable Correlation Data");
        return;
    };
    let reply = match serde_json::from_slice::<serde_json::Value>(&publish.payload) {
        Err(err) => Outcome::Error(format!("reply is not JSON: {err}")),
        Ok(body) => {
            if let Some(error) = body.get("error") {
                let code = error.get("code").and_then(|c| c.as_str()).unwrap_or("?");
                let message = error.get("message").and_then(|m| m.as_str()).unwrap_or("");
                Outcome::Error(format!("refused ({code}): {message}"))
            } else {
                match outcome_of_view(&body, at, at_wall_us) {
                    Some(outcome) => outcome,
                    // Not final yet (queued, sent, delivered).
                    None => return,
                }
            }
        }
    };
    let waiter = pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&n);
    if let Some(waiter) = waiter {
        let _ = waiter.send(reply);
    }
}
