//! Commands end to end through the HTTP API and real device connections, on
//! both backends: a command reaches an online device and `?wait` returns its
//! result; an offline device gets its queued commands on reconnect, oldest
//! first, expired ones skipped; expiry; a connection cut after the send
//! (the device acted, its answer lost) leads to a resend that the device
//! answers from memory without acting twice; queued commands survive a hub
//! restart; bad requests are refused with their reason and queue nothing;
//! idempotency keys; a device cannot answer another device's command.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::api::Api;
use common::db::Backend;
use common::relay::{Calls, connected, relay_device};
use common::*;
use firmware_client::{ConnectionState, Device};
use reqwest::StatusCode;
use schema::{CommandOutcome, CommandResult, Uplink, Value, error_code};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(15);

fn id_of(body: &Json) -> i64 {
    body["id"].as_i64().unwrap()
}

async fn disconnected(device: &Device) {
    let mut state = device.state();
    let _ = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| !matches!(s, ConnectionState::Connected { .. })),
    )
    .await;
}

fn call_ids(calls: &Calls) -> Vec<u64> {
    calls.lock().unwrap().iter().map(|c| c.id).collect()
}

/// Declares the raw test device's actuators with one session, then leaves.
async fn declare_and_leave(hub: &TestHub, token: &str) {
    let (mut socket, _) = open_session(hub, token).await;
    socket.close(None).await.unwrap();
    let id = token.split('.').next().unwrap();
    eventually("the device is offline", || async {
        !hub.store.get_device(id).await.unwrap().unwrap().online
    })
    .await;
}

fn result_frame(command_id: u64, outcome: CommandOutcome<'_>) -> Vec<u8> {
    schema::encode_uplink_to_vec(&Uplink::CommandResult(CommandResult {
        command_id,
        outcome,
    }))
    .unwrap()
}

backend_test!(
    an_online_device_applies_an_http_command_and_wait_returns_the_result,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let api = Api::new(&hub).await;
        let (id, token) = hub.add_device("boiler").await;
        let calls = Calls::default();
        let device = relay_device(hub.ws_url(), &token, &calls);
        connected(&device).await;

        let (status, body) = api
            .command(&id, json!({"actuator": "relay", "value": true}), 10)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "succeeded");
        assert_eq!(body["result_value"], true);
        assert_eq!(body["value"], true);
        assert_eq!(body["source"], "api:ops");
        assert_eq!(body["attempts"], 1);
        for stamp in ["created_at", "sent_at", "delivered_at", "finished_at"] {
            assert!(body[stamp].is_string(), "{stamp} missing: {body}");
        }
        let command = id_of(&body);
        assert_eq!(call_ids(&calls), vec![command as u64]);
        assert_eq!(api.show(&id, command).await, body);

        // Without wait: 202 and a status that is not final yet, or 200 if
        // the device was quicker than the response.
        let (status, body) = api
            .command(&id, json!({"actuator": 1, "value": false, "ttl": 30}), 0)
            .await;
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::OK,
            "{status} {body}"
        );
        let second = id_of(&body);
        api.wait_status(&id, second, "succeeded").await;

        let succeeded = api.list(&id, "?status=succeeded").await;
        let ids: Vec<i64> = succeeded.iter().map(id_of).collect();
        assert_eq!(ids, vec![second, command], "newest first");
        assert!(api.list(&id, "?status=queued").await.is_empty());
        let first_page = api.list(&id, "?limit=1").await;
        assert_eq!(first_page.len(), 1);
        let (_, page) = api.get(&format!("/devices/{id}/commands?limit=1")).await;
        let next = page["next"].as_str().unwrap().to_owned();
        let rest = api.list(&id, &format!("?limit=1&before={next}")).await;
        assert_eq!(rest.iter().map(id_of).collect::<Vec<_>>(), vec![command]);
        device.shutdown().await;
    }
);

backend_test!(
    an_offline_device_gets_queued_commands_on_reconnect_in_order_skipping_expired,
    |backend: Backend| async move {
        let hub = TestHub::start_on_with(backend, |c| {
            c.command_expiry_interval = Duration::from_millis(100);
        })
        .await;
        let api = Api::new(&hub).await;
        let (id, token) = hub.add_device("pump").await;
        declare_and_leave(&hub, &token).await;

        let mut queued = Vec::new();
        for (value, ttl) in [(true, 60), (false, 1), (true, 60), (false, 60)] {
            let (status, body) = api
                .command(
                    &id,
                    json!({"actuator": "relay", "value": value, "ttl": ttl}),
                    0,
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            assert_eq!(body["status"], "queued");
            queued.push(id_of(&body));
        }
        let expired = queued[1];
        let expired_body = api.wait_status(&id, expired, "expired").await;
        assert!(
            expired_body["sent_at"].is_null(),
            "never sent: {expired_body}"
        );
        assert!(expired_body["reason"].as_str().unwrap().contains("expired"));

        let (mut socket, _) = open_session(&hub, &token).await;
        let mut delivered = Vec::new();
        for _ in 0..3 {
            match expect_frame(&mut socket).await {
                DownFrame::Command(command) => delivered.push(command as i64),
                other => panic!("expected a command, got {other:?}"),
            }
        }
        assert_eq!(delivered, vec![queued[0], queued[2], queued[3]]);
        for &command in &delivered {
            let body = api.wait_status(&id, command, "sent").await;
            assert_eq!(body["attempts"], 1);
        }
        // New commands to the online device follow in acceptance order.
        let (_, later) = api
            .command(&id, json!({"actuator": "relay", "value": true}), 0)
            .await;
        assert_eq!(
            expect_frame(&mut socket).await,
            DownFrame::Command(id_of(&later) as u64)
        );
        send_binary(
            &mut socket,
            result_frame(queued[0] as u64, CommandOutcome::Rejected("interlock")),
        )
        .await;
        let rejected = api.wait_status(&id, queued[0], "rejected").await;
        assert_eq!(rejected["reason"], "interlock");
        assert_eq!(api.show(&id, expired).await["status"], "expired");
    }
);

backend_test!(
    a_command_the_device_never_answers_expires,
    |backend: Backend| async move {
        let hub = TestHub::start_on_with(backend, |c| {
            c.command_expiry_interval = Duration::from_millis(100);
        })
        .await;
        let api = Api::new(&hub).await;
        let (id, token) = hub.add_device("mute").await;
        let (mut socket, _) = open_session(&hub, &token).await;
        let (status, body) = api
            .command(
                &id,
                json!({"actuator": "relay", "value": true, "ttl": 1}),
                5,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "final within the wait: {body}");
        assert_eq!(body["status"], "expired");
        assert!(body["sent_at"].is_string(), "it was sent: {body}");
        assert_eq!(
            expect_frame(&mut socket).await,
            DownFrame::Command(id_of(&body) as u64)
        );
        // A wait that ends first answers 202 with the current status.
        let (status, body) = api
            .command(
                &id,
                json!({"actuator": "relay", "value": true, "ttl": 60}),
                1,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "sent");
    }
);

/// A TCP relay between a device and the hub that can swallow everything the
/// device sends and then cut the connection, like a network that fails right
/// after a command went down.
struct FlakyLink {
    addr: std::net::SocketAddr,
    swallow_uplink: watch::Sender<bool>,
    cut: watch::Sender<u64>,
}

impl FlakyLink {
    async fn start(hub: std::net::SocketAddr) -> FlakyLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (swallow_uplink, swallow_rx) = watch::channel(false);
        let (cut, cut_rx) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((device, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(hub).await else {
                    continue;
                };
                tokio::spawn(relay(device, upstream, swallow_rx.clone(), cut_rx.clone()));
            }
        });
        FlakyLink {
            addr,
            swallow_uplink,
            cut,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}{}", self.addr, schema::DEVICE_PATH)
    }
}

async fn relay(
    device: TcpStream,
    hub: TcpStream,
    swallow: watch::Receiver<bool>,
    mut cut: watch::Receiver<u64>,
) {
    cut.mark_unchanged();
    let (mut device_rx, mut device_tx) = device.into_split();
    let (mut hub_rx, mut hub_tx) = hub.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match device_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !*swallow.borrow() && hub_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match hub_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if device_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

backend_test!(
    a_cut_after_the_send_leads_to_a_resend_and_the_actuator_acts_once,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let api = Api::new(&hub).await;
        let (id, token) = hub.add_device("valve").await;
        let link = FlakyLink::start(hub.addr).await;
        let calls = Calls::default();
        let device = relay_device(link.url(), &token, &calls);
        connected(&device).await;

        // The device's answers are lost from now on.
        link.swallow_uplink.send_replace(true);
        let (_, body) = api
            .command(&id, json!({"actuator": "relay", "value": true}), 0)
            .await;
        let command = id_of(&body);
        eventually("the device acted", || async {
            calls.lock().unwrap().len() == 1
        })
        .await;
        let before = api.wait_status(&id, command, "sent").await;
        assert!(before["delivered_at"].is_null(), "{before}");

        // The network fails; the device reconnects and the hub resends.
        link.swallow_uplink.send_replace(false);
        link.cut.send_modify(|n| *n += 1);
        disconnected(&device).await;
        let after = api.wait_status(&id, command, "succeeded").await;
        assert_eq!(after["attempts"], 2, "sent twice: {after}");
        assert_eq!(after["result_value"], true);
        assert_eq!(call_ids(&calls), vec![command as u64], "acted once");
        device.shutdown().await;
    }
);

backend_test!(
    commands_queued_for_an_offline_device_survive_a_hub_restart,
    |backend: Backend| async move {
        let mut hub = TestHub::start_on(backend).await;
        let api = Api::new(&hub).await;
        let (id, token) = hub.add_device("heater").await;
        declare_and_leave(&hub, &token).await;
        let mut queued = Vec::new();
        for value in [true, false] {
            let (status, body) = api
                .command(&id, json!({"actuator": "relay", "value": value}), 0)
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            queued.push(id_of(&body));
        }
        hub.restart().await;

        let calls = Calls::default();
        let device = relay_device(hub.ws_url(), &token, &calls);
        for &command in &queued {
            api.wait_status(&id, command, "succeeded").await;
        }
        let expected: Vec<u64> = queued.iter().map(|&c| c as u64).collect();
        assert_eq!(call_ids(&calls), expected, "each once, oldest first");
        device.shutdown().await;
    }
);

backend_test!(
    bad_requests_are_refused_with_their_reason_and_queue_nothing,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let api = Api::new(&hub).await;
        let (id, token) = hub.add_device("door").await;
        let path = format!("/devices/{id}/commands");

        // Before its first Hello the device has declared nothing.
        let (status, body) = api
            .post(&path, json!({"actuator": "relay", "value": true}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no actuators"),
            "{body}"
        );
        declare_and_leave(&hub, &token).await;

        let cases = [
            (json!({"actuator": "fan", "value": true}), "actuator"),
            (json!({"actuator": 9, "value": true}), "actuator"),
            (json!({"actuator": "relay", "value": 1}), "value"),
            (json!({"actuator": "relay", "value": "on"}), "value"),
            (json!({"actuator": "relay"}), "value"),
            (json!({"value": true}), "actuator"),
            (json!({"actuator": "relay", "value": true, "ttl": 0}), "ttl"),
            (
                json!({"actuator": "relay", "value": true, "colour": 1}),
                "colour",
            ),
            (
                json!({"actuator": "relay", "action": {"name": "pulse", "args": ["x"]}}),
                "action.args[0]",
            ),
        ];
        for (request, field) in cases {
            let (status, body) = api.post(&path, request.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{request}: {body}"
            );
            assert_eq!(body["error"]["code"], "invalid", "{request}: {body}");
            assert_eq!(body["error"]["field"], field, "{request}: {body}");
        }
        let (status, body) = api.post_raw(&path, "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = api
            .post(
                "/devices/0000000000000000/commands",
                json!({"actuator": "relay", "value": true}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = api
            .post(
                &format!("{path}?wait=61"),
                json!({"actuator": "relay", "value": true}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _) = api.get(&format!("{path}/999999")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = api.get(&format!("{path}?status=done")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(api.list(&id, "").await.is_empty(), "nothing was queued");

        hub.store.revoke_device(&id).await.unwrap();
        let (status, body) = api
            .post(&path, json!({"actuator": "relay", "value": true}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "device_revoked");
        assert!(api.list(&id, "").await.is_empty(), "nothing was queued");
    }
);

backend_test!(
    a_repeated_idempotency_key_returns_the_existing_command,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let api = Api::new(&hub).await;
        let (id, token) = hub.add_device("lamp").await;
        declare_and_leave(&hub, &token).await;
        let path = format!("/devices/{id}/commands");
        let request = json!({"actuator": "relay", "value": true, "idempotency_key": "op-1"});
        let (status, first) = api.post(&path, request.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{first}");
        let (status, again) = api.post(&path, request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{again}");
        assert_eq!(id_of(&again), id_of(&first));

        // The header works the same way.
        let response = api
            .client
            .post(format!("{}{path}", api.base))
            .bearer_auth(&api.key)
            .header("idempotency-key", "op-1")
            .json(&json!({"actuator": "relay", "value": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let via_header: Json = response.json().await.unwrap();
        assert_eq!(id_of(&via_header), id_of(&first));

        let (status, body) = api
            .post(
                &path,
                json!({"actuator": "relay", "value": false, "idempotency_key": "op-1"}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "idempotency_conflict");
        assert_eq!(api.list(&id, "").await.len(), 1);
    }
);

backend_test!(
    a_device_cannot_answer_a_command_it_was_not_sent,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let api = Api::new(&hub).await;
        let (owner, owner_token) = hub.add_device("owner").await;
        let (_, other_token) = hub.add_device("other").await;
        declare_and_leave(&hub, &owner_token).await;
        let (_, body) = api
            .command(&owner, json!({"actuator": "relay", "value": true}), 0)
            .await;
        let command = id_of(&body);

        let (mut other, _) = open_session(&hub, &other_token).await;
        for id in [command as u64, 999_999] {
            send_binary(
                &mut other,
                result_frame(id, CommandOutcome::Succeeded(None)),
            )
            .await;
            match expect_frame(&mut other).await {
                DownFrame::Error { code, seq, .. } => {
                    assert_eq!((code, seq), (error_code::UNKNOWN_COMMAND, None));
                }
                frame => panic!("expected an Error frame, got {frame:?}"),
            }
        }
        assert_eq!(api.show(&owner, command).await["status"], "queued");

        // The owner's answer counts; a repeat changes nothing.
        let (mut socket, _) = open_session(&hub, &owner_token).await;
        assert_eq!(
            expect_frame(&mut socket).await,
            DownFrame::Command(command as u64)
        );
        send_binary(
            &mut socket,
            result_frame(
                command as u64,
                CommandOutcome::Succeeded(Some(Value::Bool(true))),
            ),
        )
        .await;
        let done = api.wait_status(&owner, command, "succeeded").await;
        send_binary(
            &mut socket,
            result_frame(command as u64, CommandOutcome::Failed("late")),
        )
        .await;
        send_binary(&mut socket, telemetry_frame(1, now_ms(), 1)).await;
        wait_ack(&mut socket, 1).await;
        assert_eq!(api.show(&owner, command).await, done);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_does_not_hold_up_shutdown() {
    let mut hub = TestHub::start().await;
    let api = Api::new(&hub).await;
    let (id, token) = hub.add_device("slow").await;
    let (mut socket, _) = open_session(&hub, &token).await;
    let waiting = {
        let client = api.client.clone();
        let url = format!("{}/devices/{id}/commands?wait=60", api.base);
        let key = api.key.clone();
        tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"actuator": "relay", "value": true}))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Json>().await.unwrap())
        })
    };
    // The device got the command and never answers.
    assert!(matches!(
        expect_frame(&mut socket).await,
        DownFrame::Command(_)
    ));
    let started = std::time::Instant::now();
    hub.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown waited for the request: {:?}",
        started.elapsed()
    );
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // `sent` is recorded just after the frame goes out; the stop may come first.
    assert!(
        body["status"] == "sent" || body["status"] == "queued",
        "{body}"
    );
}
