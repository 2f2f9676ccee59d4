//! The device socket at the protocol level, with raw WebSocket clients
//! against a real hub: handshake refusals, the ack contract, resume after a
//! reconnect, every documented close code for bad input, session
//! replacement, revocation, and the heartbeat.
#![allow(clippy::unwrap_used)]

mod common;

use common::db::Backend;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use schema::{close, error_code};
use tokio_tungstenite::tungstenite::{self, Message};

fn http_status(err: tungstenite::Error) -> u16 {
    match err {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

backend_test!(
    handshake_refuses_missing_wrong_and_revoked_tokens_before_upgrade,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let (id, token) = hub.add_device("d1").await;

        assert_eq!(
            http_status(connect_raw(&hub, None, true).await.unwrap_err()),
            401
        );
        assert_eq!(
            http_status(connect_raw(&hub, Some("nonsense"), true).await.unwrap_err()),
            401
        );
        let wrong_secret = format!("{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(
            http_status(
                connect_raw(&hub, Some(&wrong_secret), true)
                    .await
                    .unwrap_err()
            ),
            401
        );
        // Without the subprotocol the upgrade is refused with 400.
        assert_eq!(
            http_status(connect_raw(&hub, Some(&token), false).await.unwrap_err()),
            400
        );
        // The right token with the subprotocol works...
        let (socket, last) = open_session(&hub, &token).await;
        assert_eq!(last, 0);
        drop(socket);
        // ...until the device is revoked.
        hub.store.revoke_device(&id).await.unwrap();
        assert_eq!(
            http_status(connect_raw(&hub, Some(&token), true).await.unwrap_err()),
            401
        );
    }
);

backend_test!(
    acks_follow_commits_and_welcome_resumes_from_the_stored_seq,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let (id, token) = hub.add_device("d1").await;
        let (mut socket, last) = open_session(&hub, &token).await;
        assert_eq!(last, 0);
        let base = now_ms();
        for seq in 1..=3u64 {
            send_binary(&mut socket, telemetry_frame(seq, base + seq * 100, 10)).await;
        }
        wait_ack(&mut socket, 3).await;
        assert_eq!(
            hub.stored_readings().await,
            30,
            "an Ack means the readings are in the table"
        );
        socket.close(None).await.unwrap();

        // Reconnect: Welcome says what is stored; a resend of frame 3 is idempotent.
        let (mut socket, last) = open_session(&hub, &token).await;
        assert_eq!(last, 3);
        send_binary(&mut socket, telemetry_frame(3, base + 300, 10)).await;
        send_binary(&mut socket, telemetry_frame(4, base + 400, 10)).await;
        wait_ack(&mut socket, 4).await;
        assert_eq!(
            hub.stored_readings().await,
            40,
            "the resent frame is stored once"
        );
        let device = hub.store.get_device(&id).await.unwrap().unwrap();
        assert_eq!(device.last_seq, 4);
    }
);

backend_test!(
    rejected_telemetry_gets_an_error_frame_and_is_still_acked_in_order,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let (_, token) = hub.add_device("d1").await;
        let (mut socket, _) = open_session(&hub, &token).await;
        let base = now_ms();
        send_binary(&mut socket, telemetry_frame(1, base, 5)).await;
        // Sensor 9 was never declared.
        let bad = schema::encode_uplink_to_vec(&schema::Uplink::Telemetry(schema::Telemetry {
            seq: 2,
            base_time_ms: base,
            readings: schema::List::Borrowed(&[schema::Reading {
                sensor: 9,
                offset_ms: 0,
                value: schema::Value::Float(1.0),
            }]),
        }))
        .unwrap();
        send_binary(&mut socket, bad).await;
        let mut saw_error = false;
        loop {
            match expect_frame(&mut socket).await {
                DownFrame::Error { code, seq, .. } => {
                    assert_eq!(code, error_code::UNKNOWN_SENSOR);
                    assert_eq!(seq, Some(2));
                    saw_error = true;
                }
                DownFrame::Ack(seq) if seq >= 2 => break,
                DownFrame::Ack(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            saw_error,
            "the Error frame comes before the Ack that covers it"
        );
        assert_eq!(
            hub.stored_readings().await,
            5,
            "nothing of the rejected frame is stored"
        );
    }
);

// Each bad input gets its documented close code, while a well-behaved device
// on the same hub keeps streaming and loses nothing.
backend_test!(
    bad_input_closes_with_documented_codes_and_others_keep_streaming,
    |backend: Backend| async move {
        let hub = TestHub::start_on_with(backend, |c| c.max_message_bytes = 4096).await;
        let (_, good_token) = hub.add_device("good").await;
        let (_, bad_token) = hub.add_device("bad").await;
        let (mut good, _) = open_session(&hub, &good_token).await;
        let base = now_ms();
        let mut good_seq = 0u64;
        let stream_good = async |good: &mut RawSocket, good_seq: &mut u64| {
            *good_seq += 1;
            send_binary(good, telemetry_frame(*good_seq, base + *good_seq * 100, 20)).await;
            wait_ack(good, *good_seq).await;
        };

        // Text message: 1003.
        let mut s = open_session(&hub, &bad_token).await.0;
        s.send(Message::Text("hello".into())).await.unwrap();
        expect_close(&mut s, close::UNSUPPORTED_DATA).await;
        stream_good(&mut good, &mut good_seq).await;

        // Undecodable binary: 1007.
        let mut s = open_session(&hub, &bad_token).await.0;
        send_binary(&mut s, vec![0x07, 0xff, 0xff]).await;
        let reason = expect_close(&mut s, close::INVALID_PAYLOAD).await;
        assert!(reason.contains("invalid frame"), "{reason}");
        stream_good(&mut good, &mut good_seq).await;

        // Over the size limit: 1009.
        let mut s = open_session(&hub, &bad_token).await.0;
        send_binary(&mut s, vec![1u8; 5000]).await;
        expect_close(&mut s, close::MESSAGE_TOO_BIG).await;
        stream_good(&mut good, &mut good_seq).await;

        // Telemetry before Hello: 1008.
        let mut s = connect_raw(&hub, Some(&bad_token), true).await.unwrap();
        send_binary(&mut s, telemetry_frame(1, base, 1)).await;
        expect_close(&mut s, close::POLICY_VIOLATION).await;

        // A second Hello: 1002.
        let mut s = open_session(&hub, &bad_token).await.0;
        send_binary(&mut s, hello_frame(1)).await;
        expect_close(&mut s, close::PROTOCOL_ERROR).await;

        // An unknown protocol version in Hello: 4002.
        let mut s = connect_raw(&hub, Some(&bad_token), true).await.unwrap();
        send_binary(&mut s, hello_frame(99)).await;
        let reason = expect_close(&mut s, close::UNSUPPORTED_VERSION).await;
        assert!(reason.contains("99"), "{reason}");
        stream_good(&mut good, &mut good_seq).await;

        assert_eq!(
            hub.stored_readings().await,
            i64::try_from(good_seq * 20).unwrap()
        );
    }
);

backend_test!(
    a_newer_connection_replaces_the_older_one,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let (id, token) = hub.add_device("d1").await;
        let (mut first, _) = open_session(&hub, &token).await;
        let (mut second, _) = open_session(&hub, &token).await;
        expect_close(&mut first, close::SESSION_REPLACED).await;
        // The replaced session's disconnect must not mark the device offline.
        send_binary(&mut second, telemetry_frame(1, now_ms(), 1)).await;
        wait_ack(&mut second, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(hub.store.get_device(&id).await.unwrap().unwrap().online);
    }
);

backend_test!(
    revoking_a_device_closes_its_live_connection,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let (id, token) = hub.add_device("d1").await;
        let (mut socket, _) = open_session(&hub, &token).await;
        // Revoked from outside the hub process's API, as `hub device revoke` does.
        hub.store.revoke_device(&id).await.unwrap();
        expect_close(&mut socket, close::CREDENTIALS_REVOKED).await;
    }
);

backend_test!(
    online_state_and_last_seen_are_stored,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let (id, token) = hub.add_device("d1").await;
        let before = hub.store.get_device(&id).await.unwrap().unwrap();
        assert!(!before.online);
        assert_eq!(before.last_seen_ms, None);
        let (mut socket, _) = open_session(&hub, &token).await;
        assert!(hub.store.get_device(&id).await.unwrap().unwrap().online);
        socket.close(None).await.unwrap();
        eventually("device marked offline", || async {
            let d = hub.store.get_device(&id).await.unwrap().unwrap();
            !d.online && d.last_seen_ms.is_some()
        })
        .await;
    }
);

backend_test!(
    silent_devices_are_closed_after_the_idle_timeout_and_hello_is_required_in_time,
    |backend: Backend| async move {
        let hub = TestHub::start_on_with(backend, |c| {
            c.ping_interval = Duration::from_millis(300);
            c.idle_timeout = Duration::from_millis(900);
            c.hello_timeout = Duration::from_millis(500);
        })
        .await;
        let (id, token) = hub.add_device("d1").await;

        let mut s = connect_raw(&hub, Some(&token), true).await.unwrap();
        expect_close(&mut s, close::HELLO_TIMEOUT).await;

        let (mut s, _) = open_session(&hub, &token).await;
        // Not reading means not answering pings: the hub gives up after the idle timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        expect_close(&mut s, close::IDLE_TIMEOUT).await;
        eventually("session cleaned up", || async {
            !hub.store.get_device(&id).await.unwrap().unwrap().online
        })
        .await;

        // A device that keeps reading answers pings and stays connected.
        let (mut s, _) = open_session(&hub, &token).await;
        let stay = tokio::time::timeout(Duration::from_millis(2000), receive(&mut s)).await;
        assert!(
            stay.is_err(),
            "a ponging device must not be closed: {stay:?}"
        );
    }
);
