//! The audit log and device token rotation against a real hub, on every
//! backend: commands over HTTP (accepted and refused) and over MQTT (real
//! Mosquitto), device create/revoke/rotate and API key create/revoke through
//! the API and through the `hub` binary, each read back from
//! `GET /api/v1/audit`; only admins may read it. A rotation, from the API or
//! from the CLI (another process), closes the live connection that used the
//! old token with 4001; the old token is refused and the new one works.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::broker::{MqttProbe, TestBroker};
use common::db::Backend;
use common::*;
use hub::store::Role;
use reqwest::StatusCode;
use schema::close;
use serde_json::{Value as Json, json};

async fn http(
    hub: &TestHub,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Json>,
) -> (StatusCode, Json) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", hub.http_url()),
        )
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
}

/// Every audit entry matching `query` (newest first), following the pages.
async fn audit(hub: &TestHub, key: &str, query: &str) -> Vec<Json> {
    let mut entries = Vec::new();
    let mut before = String::new();
    loop {
        let path = format!("/api/v1/audit?limit=3&{query}{before}");
        let (status, page) = http(hub, key, "GET", &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => before = format!("&before={next}"),
            None => return entries,
        }
    }
}

/// The entry with this actor, action, target and outcome, if any.
fn find<'a>(
    entries: &'a [Json],
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
) -> Option<&'a Json> {
    entries.iter().find(|e| {
        e["actor"] == actor
            && e["action"] == action
            && e["target"] == target
            && e["outcome"] == outcome
    })
}

fn assert_logged(entries: &[Json], actor: &str, action: &str, target: &str, outcome: &str) -> Json {
    find(entries, actor, action, target, outcome)
        .unwrap_or_else(|| {
            panic!(
                "no audit entry ({actor}, {action}, {target}, {outcome}) in {}",
                serde_json::to_string_pretty(entries).unwrap()
            )
        })
        .clone()
}

fn hub_cli(database_url: &str, args: &[&str]) -> Json {
    let output = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(args)
        .args(["--json", "--database-url", database_url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "hub {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Expects a close with `code`, skipping the commands and acks before it.
async fn until_close(socket: &mut RawSocket, code: u16) {
    loop {
        match receive(socket).await {
            Received::Closed(got, reason) => {
                assert_eq!(got, code, "close reason: {reason}");
                return;
            }
            Received::Frame(DownFrame::Command(_) | DownFrame::Ack(_)) => continue,
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

/// Expects an Ack covering `seq`, skipping the (re)sent commands before it.
async fn until_ack(socket: &mut RawSocket, seq: u64) {
    loop {
        match expect_frame(socket).await {
            DownFrame::Ack(acked) if acked >= seq => return,
            DownFrame::Ack(_) | DownFrame::Command(_) => continue,
            other => panic!("expected Ack {seq}, got {other:?}"),
        }
    }
}

/// The device socket refuses `token` at the handshake (401).
async fn assert_refused(hub: &TestHub, token: &str) {
    match connect_raw(hub, Some(token), true).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        Err(other) => panic!("expected 401, got {other}"),
        Ok(_) => panic!("the old token was accepted"),
    }
}

backend_test!(
    http_commands_and_admin_actions_are_audited,
    |backend| async move {
        let hub = TestHub::start_on(backend).await;
        let store = &hub.store;
        let admin = store
            .create_api_key_with_role("root", Role::Admin)
            .await
            .unwrap()
            .key;
        let ops = store
            .create_api_key_with_role("ops", Role::Operator)
            .await
            .unwrap()
            .key;
        let eyes = store
            .create_api_key_with_role("eyes", Role::Viewer)
            .await
            .unwrap()
            .key;

        // Only admins read the log.
        for key in [&ops, &eyes] {
            let (status, reply) = http(&hub, key, "GET", "/api/v1/audit", None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
            assert_eq!(reply["error"]["code"], "forbidden");
        }

        // Devices: created (and a refused create), a command accepted and refused.
        let (status, created) = http(
            &hub,
            &admin,
            "POST",
            "/api/v1/devices",
            Some(json!({"name": "boiler"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let id = created["id"].as_str().unwrap().to_owned();
        let token = created["token"].as_str().unwrap().to_owned();
        let (status, _) = http(
            &hub,
            &admin,
            "POST",
            "/api/v1/devices",
            Some(json!({"name": " "})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        let (mut socket, _) = open_session(&hub, &token).await;
        let commands = format!("/api/v1/devices/{id}/commands");
        let (status, command) = http(
            &hub,
            &ops,
            "POST",
            &commands,
            Some(json!({"actuator": "relay", "value": true})),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{command}");
        let (status, _) = http(
            &hub,
            &ops,
            "POST",
            &commands,
            Some(json!({"actuator": "nope", "value": true})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = http(
            &hub,
            &ops,
            "POST",
            "/api/v1/devices/ffffffffffffffff/commands",
            Some(json!({"actuator": "relay", "value": true})),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // A viewer's attempt is refused before it is a submission.
        let (status, _) = http(
            &hub,
            &eyes,
            "POST",
            &commands,
            Some(json!({"actuator": "relay", "value": true})),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // Rotation over the API: the live session on the old token closes at once.
        let (status, rotated) = http(
            &hub,
            &admin,
            "POST",
            &format!("/api/v1/devices/{id}/rotate-token"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        assert_eq!(rotated["token_generation"], 1);
        let new_token = rotated["token"].as_str().unwrap().to_owned();
        assert!(new_token.starts_with(&format!("{id}.")) && new_token != token);
        until_close(&mut socket, close::CREDENTIALS_REVOKED).await;
        assert_refused(&hub, &token).await;
        let (mut socket, _) = open_session(&hub, &new_token).await;
        // The new session is not closed by the rotation's later polls.
        tokio::time::sleep(Duration::from_millis(600)).await;
        send_binary(&mut socket, telemetry_frame(1, now_ms(), 1)).await;
        until_ack(&mut socket, 1).await;

        // Revoked; a revoked device gets no new token.
        let (status, _) = http(
            &hub,
            &admin,
            "DELETE",
            &format!("/api/v1/devices/{id}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        until_close(&mut socket, close::CREDENTIALS_REVOKED).await;
        let (status, reply) = http(
            &hub,
            &admin,
            "POST",
            &format!("/api/v1/devices/{id}/rotate-token"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{reply}");
        let (status, _) = http(
            &hub,
            &admin,
            "DELETE",
            "/api/v1/devices/ffffffffffffffff",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // API keys.
        let (status, key) = http(
            &hub,
            &admin,
            "POST",
            "/api/v1/api-keys",
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let key_id = key["id"].as_str().unwrap().to_owned();
        let (status, _) = http(
            &hub,
            &admin,
            "DELETE",
            &format!("/api/v1/api-keys/{key_id}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let entries = audit(&hub, &admin, "").await;
        let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        let created = assert_logged(&entries, "api:root", "device.create", &id, "ok");
        assert_eq!(created["detail"]["name"], "boiler");
        assert!(created["at"].as_str().unwrap().ends_with('Z'));
        assert!(entries.iter().any(|e| e["action"] == "device.create"
            && e["outcome"] == "invalid"
            && e["target"].is_null()));
        let accepted = assert_logged(&entries, "api:ops", "command.create", &id, "ok");
        assert_eq!(accepted["detail"]["command_id"], command["id"]);
        assert_eq!(accepted["detail"]["actuator"], "relay");
        assert_logged(&entries, "api:ops", "command.create", &id, "invalid");
        assert_logged(
            &entries,
            "api:ops",
            "command.create",
            "ffffffffffffffff",
            "not_found",
        );
        assert!(
            entries.iter().all(|e| e["actor"] != "api:eyes"),
            "a 403 is not a submission"
        );
        let rotation = assert_logged(&entries, "api:root", "device.rotate_token", &id, "ok");
        assert_eq!(rotation["detail"]["token_generation"], 1);
        assert!(
            !rotation.to_string().contains(&new_token),
            "no secret in the log"
        );
        assert_logged(
            &entries,
            "api:root",
            "device.rotate_token",
            &id,
            "device_revoked",
        );
        assert_logged(&entries, "api:root", "device.revoke", &id, "ok");
        assert_logged(
            &entries,
            "api:root",
            "device.revoke",
            "ffffffffffffffff",
            "not_found",
        );
        let key_created = assert_logged(&entries, "api:root", "api_key.create", &key_id, "ok");
        assert_eq!(key_created["detail"]["role"], "viewer");
        assert!(
            !key_created
                .to_string()
                .contains(key["key"].as_str().unwrap())
        );
        assert_logged(&entries, "api:root", "api_key.revoke", &key_id, "ok");

        // Filters.
        let by_ops = audit(&hub, &admin, "actor=api:ops").await;
        assert_eq!(by_ops.len(), 3, "{by_ops:?}");
        let rotations = audit(&hub, &admin, "action=device.rotate_token").await;
        assert_eq!(rotations.len(), 2);
        for bad in ["x", "", "0", "-3"] {
            let path = format!("/api/v1/audit?before={bad}");
            let (status, _) = http(&hub, &admin, "GET", &path, None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "before={bad}");
        }
    }
);

backend_test!(
    cli_actions_are_audited_and_a_cli_rotation_closes_the_live_connection,
    |backend| async move {
        let hub = TestHub::start_on(backend).await;
        let url = hub.database_url.clone();
        let added = hub_cli(&url, &["device", "add", "pump"]);
        let id = added["id"].as_str().unwrap().to_owned();
        let token = added["token"].as_str().unwrap().to_owned();
        let (mut socket, _) = open_session(&hub, &token).await;

        // Another process rotates: this hub finds it on its next poll.
        let rotated = hub_cli(&url, &["device", "rotate", &id]);
        let new_token = rotated["token"].as_str().unwrap().to_owned();
        assert_eq!(rotated["id"], id.as_str());
        assert_eq!(rotated["token_generation"], 1);
        until_close(&mut socket, close::CREDENTIALS_REVOKED).await;
        assert_refused(&hub, &token).await;
        let (mut socket, _) = open_session(&hub, &new_token).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        send_binary(&mut socket, telemetry_frame(1, now_ms(), 1)).await;
        until_ack(&mut socket, 1).await;

        hub_cli(&url, &["device", "revoke", &id]);
        until_close(&mut socket, close::CREDENTIALS_REVOKED).await;
        let key = hub_cli(&url, &["apikey", "add", "ci", "--role", "operator"]);
        assert_eq!(key["role"], "operator");
        let key_id = key["id"].as_str().unwrap().to_owned();
        hub_cli(&url, &["apikey", "revoke", &key_id]);
        let listed = hub_cli(&url, &["apikey", "list"]);
        assert_eq!(listed["api_keys"][0]["role"], "operator");
        assert_eq!(listed["api_keys"][0]["revoked"], true);
        // The default role of the CLI is admin (back-compatible).
        let admin = hub_cli(&url, &["apikey", "add", "root"]);
        assert_eq!(admin["role"], "admin");
        let admin_key = admin["key"].as_str().unwrap().to_owned();

        let entries = audit(&hub, &admin_key, "actor=cli").await;
        assert_logged(&entries, "cli", "device.create", &id, "ok");
        assert_logged(&entries, "cli", "device.rotate_token", &id, "ok");
        assert_logged(&entries, "cli", "device.revoke", &id, "ok");
        assert_logged(&entries, "cli", "api_key.create", &key_id, "ok");
        assert_logged(&entries, "cli", "api_key.revoke", &key_id, "ok");
        // Last use is recorded for the key that read the log.
        let listed = hub_cli(&url, &["apikey", "list"]);
        let root = listed["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == "root")
            .unwrap()
            .clone();
        assert!(root["last_used_at"].is_string(), "{root}");

        // A refused CLI action is logged too, and the command fails.
        let output = Command::new(env!("CARGO_BIN_EXE_hub"))
            .args([
                "device",
                "rotate",
                "0000000000000000",
                "--database-url",
                &url,
            ])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let entries = audit(&hub, &admin_key, "action=device.rotate_token").await;
        assert_logged(
            &entries,
            "cli",
            "device.rotate_token",
            "0000000000000000",
            "not_found",
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_commands_are_audited() {
    let broker = TestBroker::start();
    let url = broker.url();
    let hub = TestHub::start_on_with(Backend::Sqlite, move |config| {
        config.mqtt_url = Some(url);
    })
    .await;
    let admin = hub.store.create_api_key("root").await.unwrap().key;
    let (id, token) = hub.add_device("valve").await;
    let (_socket, _) = open_session(&hub, &token).await;
    // Wait until the bridge is subscribed.
    eventually("the MQTT bridge is ready", || async {
        let body: Json = reqwest::get(format!("{}/readyz", hub.http_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["checks"]["mqtt"] == "ok"
    })
    .await;
    let probe = MqttProbe::connect(broker.port).await;
    let topic = format!("hub/devices/{id}/commands");
    probe
        .publish(
            &topic,
            json!({"actuator": "relay", "value": true}).to_string(),
        )
        .await;
    probe
        .publish(
            &topic,
            json!({"actuator": "nope", "value": true}).to_string(),
        )
        .await;
    let mut entries = Vec::new();
    for _ in 0..200 {
        entries = audit(&hub, &admin, "actor=mqtt").await;
        if entries.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_logged(&entries, "mqtt", "command.create", &id, "ok");
    assert_logged(&entries, "mqtt", "command.create", &id, "invalid");
    probe.disconnect().await;
}

backend_test!(
    the_store_rotates_tokens_and_pages_the_audit_log,
    |backend| async move {
        use hub::store::{AuditQuery, NewAuditEntry, RotateRefusal, Store};
        let db = common::db::fresh_database(backend).await;
        let store = Store::open(&db.url).await.unwrap();

        // Rotation: same id, new secret, generation + 1, the old token refused.
        let device = store.create_device("d").await.unwrap();
        let before = store
            .authenticate_device(&device.token)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(before.token_generation, 0);
        let since = hub::gateway::connection::now_ms();
        let first = store
            .rotate_device_token(&device.id)
            .await
            .unwrap()
            .unwrap();
        let second = store
            .rotate_device_token(&device.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((first.token_generation, second.token_generation), (1, 2));
        assert_eq!(second.id, device.id);
        assert!(
            store
                .authenticate_device(&device.token)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .authenticate_device(&first.token)
                .await
                .unwrap()
                .is_none()
        );
        let now = store
            .authenticate_device(&second.token)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.token_generation, 2);
        assert_eq!(
            store.devices_rotated_since(since).await.unwrap(),
            vec![(before.pk, 2)]
        );
        assert!(
            store
                .devices_rotated_since(second.rotated_at_ms + 1)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .rotate_device_token("0123456789abcdef")
                .await
                .unwrap()
                .unwrap_err(),
            RotateRefusal::UnknownDevice
        );
        assert_eq!(
            store
                .rotate_device_token("not an id")
                .await
                .unwrap()
                .unwrap_err(),
            RotateRefusal::UnknownDevice
        );
        store.revoke_device(&device.id).await.unwrap();
        assert_eq!(
            store
                .rotate_device_token(&device.id)
                .await
                .unwrap()
                .unwrap_err(),
            RotateRefusal::Revoked
        );

        // The audit log: newest first, paged, filtered; hostile text is stored safely.
        for i in 0..5 {
            let actor = if i % 2 == 0 { "cli" } else { "mqtt" };
            let entry = NewAuditEntry::new(actor, "device.create", Some("t\u{0}x"), "ok")
                .with_detail(json!({"i": i, "name": "a\u{0}b", "nested": ["é", null]}));
            store.record_audit(&entry).await.unwrap();
        }
        let page = store
            .list_audit(&AuditQuery {
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        let order: Vec<i64> = page
            .entries
            .iter()
            .map(|e| e.detail["i"].as_i64().unwrap())
            .collect();
        assert_eq!(order, [4, 3]);
        assert_eq!(page.entries[0].target.as_deref(), Some("tx"));
        assert_eq!(page.entries[0].detail["name"], "ab");
        assert_eq!(page.entries[0].detail["nested"], json!(["é", null]));
        let rest = store
            .list_audit(&AuditQuery {
                limit: 10,
                before_id: page.next_before_id,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rest.entries.len(), 3);
        assert!(rest.next_before_id.is_none());
        let by_cli = store
            .list_audit(&AuditQuery {
                limit: 10,
                actor: Some("cli".into()),
                action: Some("device.create".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_cli.entries.len(), 3);
        store.close().await;
    }
);
