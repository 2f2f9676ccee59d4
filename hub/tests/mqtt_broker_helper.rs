//! The MQTT test helpers themselves, against a real Mosquitto: a private
//! broker per test, the rumqttc v5 probe (request/response properties,
//! reconnecting and resubscribing across broker restarts, last will) and the
//! stock `mosquitto_sub` seeing retained messages.
#![allow(clippy::unwrap_used)]

// Only the broker helper: these tests do not need the hub itself.
#[path = "common/broker.rs"]
mod broker;

use std::time::Duration;

use broker::{MosquittoSub, MqttProbe, TestBroker};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, PublishProperties};

const WAIT: Duration = Duration::from_secs(10);

fn port_accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_round_trip_keeps_v5_properties() {
    let broker = TestBroker::start();
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port));
    let mut responder = MqttProbe::connect_url(&broker.url()).await;
    responder.subscribe("test/req/+").await;
    let mut requester = MqttProbe::connect(broker.port).await;
    requester.subscribe("test/resp/#").await;

    requester
        .publish_with_response("test/req/1", "ping", "test/resp/abc", b"corr-1".to_vec())
        .await;
    let request = responder.wait_for_topic("test/req/1", WAIT).await;
    assert_eq!(request.text(), "ping");
    assert_eq!(request.qos, QoS::AtLeastOnce);
    assert!(!request.retain);
    assert_eq!(request.response_topic.as_deref(), Some("test/resp/abc"));
    assert_eq!(request.correlation_data.as_deref(), Some(&b"corr-1"[..]));

    // Answer on the response topic, echoing the correlation data, with a user property.
    let properties = PublishProperties {
        correlation_data: request.correlation_data.clone().map(Into::into),
        user_properties: vec![("status".into(), "ok".into())],
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    };
    responder
        .publish_with(
            request.response_topic.as_deref().unwrap(),
            "pong",
            QoS::AtLeastOnce,
            false,
            Some(properties),
        )
        .await;
    let response = requester
        .wait_for(|m| m.correlation_data.as_deref() == Some(b"corr-1"), WAIT)
        .await;
    assert_eq!(response.topic, "test/resp/abc");
    assert_eq!(response.text(), "pong");
    assert_eq!(response.user_property("status"), Some("ok"));
    assert_eq!(response.content_type.as_deref(), Some("text/plain"));
    assert!(
        responder
            .next_message(Duration::from_millis(200))
            .await
            .is_none()
    );

    requester.disconnect().await;
    responder.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reconnects_and_resubscribes_after_broker_restart() {
    let mut broker = TestBroker::start();
    let port = broker.port;
    let mut subscriber = MqttProbe::connect(port).await;
    subscriber.subscribe("test/restart/#").await;
    subscriber.subscribe("test/other").await;
    let publisher = MqttProbe::connect(port).await;
    publisher.publish("test/restart/a", "before").await;
    assert_eq!(
        subscriber
            .wait_for_topic("test/restart/a", WAIT)
            .await
            .text(),
        "before"
    );

    // Graceful stop: the port closes; the probes notice.
    broker.stop();
    assert!(!broker.is_running());
    assert!(!port_accepts(port), "port still open after stop");
    // Start again on the same port, with the probes' connections in TIME_WAIT.
    broker.resume();
    assert_eq!(broker.port, port);
    subscriber.wait_ready(2, WAIT).await;
    publisher.wait_ready(2, WAIT).await;
    publisher.publish("test/restart/b", "after restart").await;
    let message = subscriber.wait_for_topic("test/restart/b", WAIT).await;
    assert_eq!(message.text(), "after restart");
    publisher.publish("test/other", "second filter").await;
    subscriber.wait_for_topic("test/other", WAIT).await;

    // Abrupt loss (SIGKILL), then restart() from the stopped state, twice over.
    broker.kill();
    broker.resume();
    subscriber.wait_ready(3, WAIT).await;
    publisher.wait_ready(3, WAIT).await;
    broker.restart();
    subscriber.wait_ready(4, WAIT).await;
    publisher.wait_ready(4, WAIT).await;
    publisher.publish("test/restart/c", "after kill").await;
    assert_eq!(
        subscriber
            .wait_for_topic("test/restart/c", WAIT)
            .await
            .text(),
        "after kill"
    );
    assert!(subscriber.status().connected);
    assert!(broker.log().contains("running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_while_broker_is_down_is_sent_on_reconnect() {
    let mut broker = TestBroker::start();
    let subscriber = std::sync::Arc::new(tokio::sync::Mutex::new(
        MqttProbe::connect(broker.port).await,
    ));
    broker.stop();
    let pending = {
        let subscriber = subscriber.clone();
        tokio::spawn(async move { subscriber.lock().await.subscribe("test/late").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.resume();
    pending.await.unwrap();
    let publisher = MqttProbe::connect(broker.port).await;
    publisher.publish("test/late", "hello").await;
    let mut subscriber = subscriber.lock().await;
    assert_eq!(
        subscriber.wait_for_topic("test/late", WAIT).await.text(),
        "hello"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_sees_retained_and_live_messages() {
    let broker = TestBroker::start();
    let mut probe = MqttProbe::connect(broker.port).await;
    probe.subscribe("test/state/#").await;
    probe.publish_retained("test/state/dev1", "online").await;
    // Back through the broker: it holds the retained message now.
    probe.wait_for_topic("test/state/dev1", WAIT).await;

    let mut sub = MosquittoSub::start(broker.port, "test/state/#", &[]).await;
    sub.expect("test/state/dev1", "online", WAIT).await;
    probe.publish("test/state/dev2", "live").await;
    sub.expect("test/state/dev2", "live", WAIT).await;

    // The plain helper: mosquitto_sub -C 1 exits after the retained message.
    let mut child = broker::spawn_mosquitto_sub(broker.port, "test/state/dev1", &["-C", "1"]);
    let mut lines = broker::Lines::read(child.stdout.take().unwrap());
    assert_eq!(
        lines.next_line(WAIT).await.as_deref(),
        Some("test/state/dev1 online")
    );
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_is_published_only_when_a_client_vanishes() {
    let broker = TestBroker::start();
    let mut watcher = MqttProbe::connect(broker.port).await;
    watcher.subscribe("test/status/+").await;

    let with_will = |name: &'static str| {
        move |options: &mut rumqttc::v5::MqttOptions| {
            options.set_last_will(LastWill::new(
                format!("test/status/{name}"),
                "offline",
                QoS::AtLeastOnce,
                true,
                None,
            ));
        }
    };
    let vanishing = MqttProbe::connect_with("127.0.0.1", broker.port, with_will("a")).await;
    let polite = MqttProbe::connect_with("127.0.0.1", broker.port, with_will("b")).await;
    polite.disconnect().await;
    drop(vanishing); // socket closed without DISCONNECT

    let will = watcher
        .wait_for(|m| m.topic.starts_with("test/status/"), WAIT)
        .await;
    assert_eq!(will.topic, "test/status/a");
    assert_eq!(will.text(), "offline");
    assert!(
        watcher
            .next_message(Duration::from_millis(500))
            .await
            .is_none(),
        "a normal DISCONNECT must not publish the will"
    );
    // Retained: a later subscriber sees the offline marker too.
    let mut late = MosquittoSub::start(broker.port, "test/status/a", &[]).await;
    late.expect("test/status/a", "offline", WAIT).await;
}
