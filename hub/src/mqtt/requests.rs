//! Command requests that arrive over MQTT: from a PUBLISH on
//! `{prefix}/devices/{device}/commands` to [`CommandService::submit`], or
//! to a refusal.
//!
//! The event loop must never wait on the database, so it only hands each
//! request to one of several workers ([`run`]), each fed by a bounded
//! channel and chosen by the request's topic, which names the device. A
//! worker handles its requests in arrival order, so commands to a device
//! keep the order they were published in (the broker delivers one
//! subscription's messages in order); requests for other devices go on in
//! parallel on the other workers. When a worker's channel is full the event
//! loop refuses the request at once with `unavailable` ([`refuse_busy`])
//! instead of waiting.
//!
//! A request is checked exactly like an HTTP one (the body is the same
//! [`CommandRequest`] JSON, and [`CommandRequest::check`] runs inside
//! `submit`), with source `mqtt`. Its MQTT v5 Response Topic and Correlation
//! Data become the command's [`ReplyTo`]: every status change is then also
//! published there (by the publisher, from the command's record). A refused
//! request changes nothing; the refusal is published on `{prefix}/errors`
//! and, when given, on the Response Topic with the Correlation Data. A
//! repeated idempotency key returns the earlier command, whose current
//! state is published once to the new request's Response Topic (its later
//! changes go to the Response Topic of the request that created it).

use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::Publish;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::publisher::{Message, Outbox};
use super::{MqttStatus, payloads, topics};
use crate::commands::request::CommandRequest;
use crate::commands::{CommandService, SubmitError, Submitted};
use crate::store::ReplyTo;

/// The `source` recorded on commands that came over MQTT.
pub const SOURCE: &str = "mqtt";

/// Why a request was refused, as published on `{prefix}/errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable code, the same as the HTTP API's.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>, field: Option<&str>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }

    /// A refused `submit`. Database details stay in the hub's log.
    pub fn from_submit(err: &SubmitError) -> Refusal {
        match err {
            SubmitError::Invalid(invalid) => {
                Refusal::new(err.code(), invalid.message.clone(), Some(&invalid.field))
            }
            SubmitError::Store(_) if err.code() == "unavailable" => {
                Refusal::new(err.code(), "the database is unavailable; retry later", None)
            }
            SubmitError::Store(_) => Refusal::new(err.code(), "internal error", None),
            other => Refusal::new(other.code(), other.to_string(), None),
        }
    }
}

/// A request as it arrived: its topic, body and reply address.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The topic it was published on.
    pub topic: String,
    /// The body.
    pub payload: Vec<u8>,
    /// Response Topic and Correlation Data, when the Response Topic is usable.
    pub reply: Option<ReplyTo>,
    /// A Response Topic that cannot be published to (wildcards, empty).
    pub bad_response_topic: Option<String>,
}

impl Incoming {
    /// Takes the parts of `publish` the bridge uses.
    pub fn from_publish(publish: Publish) -> Incoming {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let (mut reply, mut bad_response_topic) = (None, None);
        if let Some(properties) = publish.properties
            && let Some(topic) = properties.response_topic
        {
            if topics::is_publishable(&topic) {
                reply = Some(ReplyTo {
                    topic,
                    correlation: properties.correlation_data.map(|d| d.to_vec()),
                });
            } else {
                bad_response_topic = Some(topic);
            }
        }
        Incoming {
            topic,
            payload: publish.payload.to_vec(),
            reply,
            bad_response_topic,
        }
    }
}

/// The device and the request of `incoming`, or why it cannot be one.
pub fn parse(prefix: &str, incoming: &Incoming) -> Result<(String, CommandRequest), Refusal> {
    if let Some(topic) = &incoming.bad_response_topic {
        return Err(Refusal::new(
            "invalid",
            format!("the Response Topic {topic:?} cannot be published to (empty or wildcards)"),
            Some("response_topic"),
        ));
    }
    let Some(device) = topics::device_of_command_topic(prefix, &incoming.topic) else {
        return Err(Refusal::new(
            "invalid",
            format!(
                "requests go to {prefix}/devices/DEVICE_ID/commands, not {:?}",
                incoming.topic
            ),
            Some("topic"),
        ));
    };
    let document: serde_json::Value = serde_json::from_slice(&incoming.payload).map_err(|err| {
        Refusal::new(
            "bad_request",
            format!("the payload is not valid JSON: {err}"),
            None,
        )
    })?;
    // serde would also accept a struct as a positional array; requests are objects.
    if !document.is_object() {
        return Err(Refusal::new(
            "invalid",
            "must be a JSON object",
            Some("body"),
        ));
    }
    let request: CommandRequest = serde_path_to_error::deserialize(document).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        Refusal::new("invalid", err.into_inner().to_string(), Some(&field))
    })?;
    Ok((device.to_owned(), request))
}

/// Publishes `refusal` of the request on `request_topic` to
/// `{prefix}/errors` and to `reply`, if any.
pub fn publish_refusal(
    outbox: &Outbox,
    prefix: &str,
    request_topic: &str,
    reply: Option<&ReplyTo>,
    refusal: &Refusal,
) {
    let payload = match payloads::refusal(
        refusal.code,
        &refusal.message,
        refusal.field.as_deref(),
        request_topic,
    ) {
        Ok(payload) => payload,
        Err(err) => {
            tracing::warn!(error = %err, "refusal not published");
            return;
        }
    };
    if let Some(reply) = reply {
        outbox.send(Message {
            correlation: reply.correlation.clone(),
            ..Message::status(reply.topic.clone(), payload.clone())
        });
    }
    outbox.send(Message::status(topics::errors_topic(prefix), payload));
}

/// Refuses `publish` at once because the worker's queue is full.
pub fn refuse_busy(outbox: &Outbox, status: &MqttStatus, prefix: &str, publish: Publish) {
    let incoming = Incoming::from_publish(publish);
    status.count_refused();
    publish_refusal(
        outbox,
        prefix,
        &incoming.topic,
        incoming.reply.as_ref(),
        &Refusal::new(
            "unavailable",
            "the hub has too many MQTT requests waiting; retry later",
            None,
        ),
    );
}

/// Handles one request: submit, or publish why not.
async fn handle(
    commands: &CommandService,
    outbox: &Outbox,
    status: &MqttStatus,
    prefix: &str,
    incoming: Incoming,
) {
    let result = match parse(prefix, &incoming) {
        Ok((device, request)) => commands
            .submit(&device, request, SOURCE.to_owned(), incoming.reply.clone())
            .await
            .map_err(|err| {
                if matches!(err, SubmitError::Store(_)) {
                    tracing::warn!(error = %err, topic = %incoming.topic, "MQTT command request failed");
                }
                Refusal::from_submit(&err)
            }),
        Err(refusal) => Err(refusal),
    };
    match result {
        // The publisher sends its statuses, to the Response Topic too.
        Ok(Submitted::New(record)) => {
            debug!(command = record.id, topic = %incoming.topic, "MQTT command accepted");
        }
        Ok(Submitted::Existing(record)) => {
            debug!(
                command = record.id,
                "MQTT command repeated (same idempotency key)"
            );
            if let Some(reply) = &incoming.reply {
                match payloads::command(&record) {
                    Ok(payload) => {
                        outbox.send(Message {
                            correlation: reply.correlation.clone(),
                            ..Message::status(reply.topic.clone(), payload)
                        });
                    }
                    Err(err) => tracing::warn!(error = %err, "command status not published"),
                }
            }
        }
        Err(refusal) => {
            status.count_refused();
            debug!(
                topic = %incoming.topic,
                code = refusal.code,
                field = refusal.field.as_deref().unwrap_or(""),
                message = %refusal.message,
                "MQTT command request refused"
            );
            publish_refusal(
                outbox,
                prefix,
                &incoming.topic,
                incoming.reply.as_ref(),
                &refusal,
            );
        }
    }
}

/// The request worker: handles requests one at a time, in arrival order,
/// until `stop` (requests still queued then are dropped).
pub async fn run(
    mut requests: mpsc::Receiver<Publish>,
    commands: CommandService,
    outbox: Outbox,
    status: MqttStatus,
    prefix: Arc<str>,
    stop: CancellationToken,
) {
    loop {
        let publish = tokio::select! {
            _ = stop.cancelled() => break,
            publish = requests.recv() => match publish {
                Some(publish) => publish,
                None => break,
            },
        };
        let incoming = Incoming::from_publish(publish);
        tokio::select! {
            _ = stop.cancelled() => break,
            () = handle(&commands, &outbox, &status, &prefix, incoming) => {}
        }
    }
    let left = requests.len();
    if left > 0 {
        tracing::warn!(
            left,
            "MQTT bridge stopping: queued command requests not handled"
        );
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::PublishProperties;

    use super::*;

    fn incoming(topic: &str, payload: &str) -> Incoming {
        Incoming::from_publish(Publish::new(
            topic,
            QoS::AtLeastOnce,
            payload.to_owned(),
            None,
        ))
    }

    fn refusal(topic: &str, payload: &str) -> Refusal {
        parse("hub", &incoming(topic, payload)).expect_err("refused")
    }

    #[test]
    fn a_well_formed_request_names_its_device() {
        let (device, request) = parse(
            "hub",
            &incoming(
                "hub/devices/0f3a/commands",
                r#"{"actuator": "relay", "value": true, "ttl": 30, "idempotency_key": "k"}"#,
            ),
        )
        .expect("parsed");
        assert_eq!(device, "0f3a");
        assert_eq!(request.actuator, Some(serde_json::json!("relay")));
        assert_eq!(request.value, Some(serde_json::json!(true)));
        assert_eq!(request.idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn malformed_requests_are_refused_with_code_and_field() {
        let topic = "hub/devices/0f3a/commands";
        let r = refusal(topic, "{not json");
        assert_eq!((r.code, r.field.as_deref()), ("bad_request", None));
        assert!(r.message.contains("not valid JSON"), "{}", r.message);
        let r = refusal(topic, "");
        assert_eq!(r.code, "bad_request");
        let r = refusal(topic, "[1, 2]");
        assert_eq!((r.code, r.field.as_deref()), ("invalid", Some("body")));
        let r = refusal(topic, r#"{"actuator": "relay", "valeu": true}"#);
        assert_eq!((r.code, r.field.as_deref()), ("invalid", Some("valeu")));
        assert!(r.message.contains("valeu"), "{}", r.message);
        let r = refusal(topic, r#"{"actuator": "relay", "action": {"name": 5}}"#);
        assert_eq!(
            (r.code, r.field.as_deref()),
            ("invalid", Some("action.name"))
        );
        let r = refusal("hub/devices//commands", "{}");
        assert_eq!((r.code, r.field.as_deref()), ("invalid", Some("topic")));
    }

    #[test]
    fn the_reply_address_comes_from_v5_properties() {
        let properties = PublishProperties {
            response_topic: Some("app/replies".into()),
            correlation_data: Some(b"c-1".to_vec().into()),
            ..PublishProperties::default()
        };
        let incoming = Incoming::from_publish(Publish::new(
            "hub/devices/a/commands",
            QoS::AtLeastOnce,
            "{}",
            Some(properties),
        ));
        assert_eq!(
            incoming.reply,
            Some(ReplyTo {
                topic: "app/replies".into(),
                correlation: Some(b"c-1".to_vec()),
            })
        );

        let properties = PublishProperties {
            response_topic: Some("app/+/replies".into()),
            ..PublishProperties::default()
        };
        let incoming = Incoming::from_publish(Publish::new(
            "hub/devices/a/commands",
            QoS::AtLeastOnce,
            r#"{"actuator": 1, "value": true}"#,
            Some(properties),
        ));
        assert_eq!(incoming.reply, None);
        let r = parse("hub", &incoming).expect_err("refused");
        assert_eq!(r.field.as_deref(), Some("response_topic"));
    }

    #[test]
    fn submit_errors_keep_database_details_out() {
        let r = Refusal::from_submit(&SubmitError::UnknownDevice("nope".into()));
        assert_eq!(r.code, "not_found");
        assert!(r.message.contains("nope"));
        let r = Refusal::from_submit(&SubmitError::Invalid(
            crate::commands::request::InvalidRequest {
                field: "value".into(),
                message: "the actuator takes a bool value, got an integer".into(),
            },
        ));
        assert_eq!((r.code, r.field.as_deref()), ("invalid", Some("value")));
        assert_eq!(r.message, "the actuator takes a bool value, got an integer");
    }
}
