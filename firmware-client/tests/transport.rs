//! The tokio transport against a mock hub over real WebSockets.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Behaviour, COUNTER, DOOR, MockHub, TEMPERATURE, config, set};
use firmware_client::schema::{Value, close};
use firmware_client::{ConnectionState, Device, PushError, StopReason};

const WAIT: Duration = Duration::from_secs(10);

async fn wait_for(device: &Device, what: &str, pred: impl FnMut(&ConnectionState) -> bool) {
    let mut state = device.state();
    let reached = matches!(
        tokio::time::timeout(WAIT, state.wait_for(pred)).await,
        Ok(Ok(_))
    );
    assert!(
        reached,
        "timed out waiting for {what}; state {:?}",
        *state.borrow()
    );
}

async fn connected(device: &Device) {
    wait_for(device, "Connected", |s| {
        matches!(s, ConnectionState::Connected { .. })
    })
    .await;
}

/// Push `n` readings over three sensors with distinct, increasing times.
async fn push_readings(device: &Device, from: u64, n: u64) {
    for i in from..from + n {
        let time = 1_700_000_000_000 + i;
        let (sensor, value) = match i % 3 {
            0 => (TEMPERATURE, Value::Float(20.0 + i as f64 / 100.0)),
            1 => (COUNTER, Value::Int(i as i64)),
            _ => (DOOR, Value::Bool(i % 2 == 0)),
        };
        device.push(sensor, time, value).await.expect("pushed");
    }
}

#[tokio::test]
async fn every_pushed_reading_is_acked_and_stored() {
    let hub = MockHub::start(Behaviour::default()).await;
    let acked_by_observer = Arc::new(AtomicU64::new(0));
    let mut config = config(&hub.url());
    let counter = Arc::clone(&acked_by_observer);
    config.on_ack = Some(Arc::new(move |info| {
        counter.fetch_add(u64::from(info.readings), Ordering::Relaxed);
        assert!(info.latency < Duration::from_secs(5));
    }));
    let device = Device::start(config).expect("valid config");
    push_readings(&device, 0, 1_000).await;
    assert!(
        device.flush(WAIT).await,
        "not all acked: {:?}",
        device.stats()
    );

    let stats = device.stats();
    assert_eq!(stats.readings_pushed, 1_000);
    assert_eq!(stats.readings_acked, 1_000);
    assert_eq!(stats.outstanding, 0);
    assert_eq!(stats.frames_resent, 0);
    assert_eq!(stats.reconnects, 0);
    assert_eq!(acked_by_observer.load(Ordering::Relaxed), 1_000);
    {
        let state = hub.state();
        assert_eq!(state.stored.len(), 1_000);
        assert!(state.frames.iter().all(|f| f.readings <= 10));
        assert_eq!(
            state.stored.get(&(COUNTER, 1_700_000_000_001)),
            Some(&Value::Int(1))
        );
    }
    hub.assert_resends_identical();
    assert_eq!(device.shutdown().await, 0);
}

#[tokio::test]
async fn a_partial_frame_goes_out_after_the_linger_without_flush() {
    let hub = MockHub::start(Behaviour::default()).await;
    let mut config = config(&hub.url());
    config.max_batch = 50;
    config.flush_interval = Duration::from_millis(30);
    let device = Device::start(config).expect("valid config");
    connected(&device).await;
    push_readings(&device, 0, 3).await;
    tokio::time::timeout(WAIT, async {
        while device.outstanding() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the linger sends the partial frame");
    assert_eq!(hub.state().frames.len(), 1);
    assert_eq!(hub.state().frames[0].readings, 3);
}

#[tokio::test]
async fn after_a_cut_unacked_frames_are_resent_unchanged_and_stored_ones_never() {
    // Ack 3 frames, then take 4 more (the client's window) without acking,
    // commit the first of those with its ack lost, and cut the connection.
    let hub = MockHub::start(Behaviour {
        hold_after: Some((3, 4)),
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    push_readings(&device, 0, 200).await;
    assert!(
        device.flush(WAIT).await,
        "not all acked: {:?}",
        device.stats()
    );

    let stats = device.stats();
    let state = hub.state();
    assert_eq!(state.sessions, 2, "one cut, one reconnect");
    let first: Vec<u64> = state
        .frames
        .iter()
        .filter(|f| f.conn == 0)
        .map(|f| f.seq)
        .collect();
    let second: Vec<u64> = state
        .frames
        .iter()
        .filter(|f| f.conn == 1)
        .map(|f| f.seq)
        .collect();
    assert_eq!(first, (1..=7).collect::<Vec<_>>());
    // Seq 4 was committed before the cut: never resent. 5..=7 are resent
    // first (same bytes, checked below), then new frames follow.
    assert_eq!(&second[..3], &[5, 6, 7]);
    assert_eq!(second[3], 8);
    assert_eq!(stats.frames_resent, 3);
    assert_eq!(stats.reconnects, 1);
    assert_eq!(stats.readings_acked, 200);
    assert_eq!(state.stored.len(), 200);
    drop(state);
    hub.assert_resends_identical();
}

#[tokio::test]
async fn disconnect_now_cuts_and_the_device_recovers_without_losing_readings() {
    let hub = MockHub::start(Behaviour {
        ack_delay: Duration::from_millis(2),
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    connected(&device).await;
    for round in 0..5 {
        push_readings(&device, round * 100, 100).await;
        device.disconnect_now();
        // Wait for the device's own count (it counts a session when Welcome
        // arrives): the hub counts one at Hello, and a cut before Welcome
        // would open a session the device never counts.
        tokio::time::timeout(WAIT, async {
            while device.stats().reconnects < round + 1 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("a new session after the cut");
    }
    assert!(
        device.flush(WAIT).await,
        "not all acked: {:?}",
        device.stats()
    );
    let stats = device.stats();
    assert_eq!(stats.readings_acked, 500);
    assert_eq!(stats.reconnects, 5);
    assert_eq!(hub.state().stored.len(), 500);
    assert_eq!(hub.state().sessions, 6);
    hub.assert_resends_identical();
}

#[tokio::test]
async fn close_4001_stops_the_device_for_good() {
    let hub = MockHub::start(Behaviour {
        close_after_welcome: Some(close::CREDENTIALS_REVOKED),
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    wait_for(&device, "Stopped", |s| {
        *s == ConnectionState::Stopped {
            reason: StopReason::Closed(close::CREDENTIALS_REVOKED),
        }
    })
    .await;
    // Backoff is 10-100 ms: a reconnecting client would have been back.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(hub.state().connections, 1);
    assert_eq!(
        device.try_push(TEMPERATURE, 1, Value::Float(1.0)),
        Err(PushError::Stopped(StopReason::Closed(
            close::CREDENTIALS_REVOKED
        )))
    );
}

#[tokio::test]
async fn going_away_1001_reconnects() {
    let hub = MockHub::start(Behaviour {
        close_after_welcome: Some(close::GOING_AWAY),
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    tokio::time::timeout(WAIT, async {
        while hub.state().sessions < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("keeps reconnecting");
    assert!(!matches!(
        *device.state().borrow(),
        ConnectionState::Stopped { .. }
    ));
}

#[tokio::test]
async fn http_401_at_the_handshake_stops_the_device() {
    let hub = MockHub::start(Behaviour {
        refuse: [401].into(),
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    wait_for(&device, "Stopped", |s| {
        *s == ConnectionState::Stopped {
            reason: StopReason::CredentialsRefused,
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(hub.state().connections, 1, "does not hammer the hub");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_stops_the_device() {
    let hub = MockHub::start(Behaviour::default()).await;
    let mut config = config(&hub.url());
    config.token = "dev-1.wrong".to_owned();
    let device = Device::start(config).expect("valid config");
    wait_for(&device, "Stopped", |s| {
        matches!(s, ConnectionState::Stopped { .. })
    })
    .await;
    assert_eq!(hub.state().sessions, 0);
}

#[tokio::test]
async fn http_503_and_refused_connections_are_retried() {
    let hub = MockHub::start(Behaviour {
        refuse: [503, 500].into(),
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    connected(&device).await;
    assert_eq!(hub.state().connections, 3);

    // Nothing listening at all: keeps trying (Backoff), never stops.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let orphan =
        Device::start(config(&format!("ws://127.0.0.1:{port}/ws/device"))).expect("valid config");
    wait_for(&orphan, "a second backoff", |s| {
        matches!(s, ConnectionState::Backoff { attempt: 2.., .. })
    })
    .await;
}

#[tokio::test]
async fn commands_are_rejected_without_a_handler() {
    let hub = MockHub::start(Behaviour {
        commands_after_welcome: vec![set(77, 1, Value::Bool(true))],
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    assert_eq!(
        hub.wait_for_results(1).await,
        vec![(0, 77, "rejected: no handler for actuator 1".to_owned())]
    );
    let stats = device.stats();
    assert_eq!(stats.commands_received, 1);
    assert_eq!(stats.commands_rejected, 1);
}

#[tokio::test]
async fn error_frames_are_counted_and_the_rejected_frame_is_not_resent() {
    let hub = MockHub::start(Behaviour {
        reject_first_frame: true,
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    push_readings(&device, 0, 30).await;
    assert!(device.flush(WAIT).await);
    let stats = device.stats();
    assert_eq!(stats.errors_received, 1);
    assert_eq!(
        stats.readings_acked, 30,
        "the rejected frame is covered by the ack"
    );
    assert_eq!(stats.frames_resent, 0);
    let state = hub.state();
    assert_eq!(state.frames.len(), 3);
    assert_eq!(state.stored.len(), 20);
}

#[tokio::test]
async fn a_full_outbox_fails_try_push_and_push_waits_for_acks() {
    let hub = MockHub::start(Behaviour {
        ack_delay: Duration::from_millis(20),
        ..Behaviour::default()
    })
    .await;
    let mut config = config(&hub.url());
    config.outbox_capacity = 20;
    let device = Device::start(config).expect("valid config");
    let mut full = false;
    for i in 0..21 {
        match device.try_push(COUNTER, i, Value::Int(i as i64)) {
            Ok(()) => {}
            Err(PushError::Full) => {
                full = true;
                break;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(full, "the 21st reading does not fit");
    assert_eq!(device.outstanding(), 20);
    // push() waits for acks to make room instead of failing or dropping.
    for i in 100..160 {
        device
            .push(COUNTER, i, Value::Int(i as i64))
            .await
            .expect("room eventually");
    }
    assert!(device.flush(WAIT).await);
    assert_eq!(hub.state().stored.len(), 80);
}

#[tokio::test]
async fn invalid_readings_are_refused_at_push() {
    let hub = MockHub::start(Behaviour::default()).await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    assert_eq!(
        device.try_push(9, 1, Value::Int(1)),
        Err(PushError::UnknownSensor(9))
    );
    assert!(matches!(
        device.try_push(TEMPERATURE, 1, Value::Int(1)),
        Err(PushError::WrongKind {
            sensor: TEMPERATURE,
            ..
        })
    ));
    assert_eq!(
        device.try_push(TEMPERATURE, 1, Value::Float(f64::NAN)),
        Err(PushError::NonFinite(TEMPERATURE))
    );
    assert_eq!(device.outstanding(), 0);
}

#[tokio::test]
async fn pings_are_answered_and_a_silent_hub_is_left() {
    let hub = MockHub::start(Behaviour {
        ping_after_welcome: true,
        silent: true,
        idle_timeout_ms: 200,
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    connected(&device).await;
    tokio::time::timeout(WAIT, async {
        while hub.state().pongs.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a pong");
    assert_eq!(hub.state().pongs[0], b"are you there");
    // Nothing else ever comes: after 1.5 x idle timeout the client reconnects.
    tokio::time::timeout(WAIT, async {
        while hub.state().sessions < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a reconnect");
}

#[tokio::test]
async fn the_hubs_frame_limit_caps_batches() {
    let hub = MockHub::start(Behaviour {
        max_readings_per_frame: 4,
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    connected(&device).await;
    push_readings(&device, 0, 41).await;
    assert!(device.flush(WAIT).await);
    let state = hub.state();
    assert!(state.frames.iter().all(|f| f.readings <= 4));
    assert_eq!(state.stored.len(), 41);
    drop(state);
    hub.assert_resends_identical();
}

#[tokio::test]
async fn shutdown_closes_with_1000_and_reports_unacked_readings() {
    let hub = MockHub::start(Behaviour::default()).await;
    let device = Device::start(config(&hub.url())).expect("valid config");
    connected(&device).await;
    push_readings(&device, 0, 25).await;
    assert!(device.flush(WAIT).await);
    assert_eq!(device.shutdown().await, 0);
    tokio::time::timeout(WAIT, async {
        while hub.state().client_close_codes.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a close frame");
    assert_eq!(hub.state().client_close_codes, vec![close::NORMAL]);

    // Against a hub that never acks, shutdown returns what is left.
    let silent = MockHub::start(Behaviour {
        silent: true,
        ..Behaviour::default()
    })
    .await;
    let device = Device::start(config(&silent.url())).expect("valid config");
    connected(&device).await;
    push_readings(&device, 0, 7).await;
    assert!(!device.flush(Duration::from_millis(100)).await);
    assert_eq!(device.shutdown().await, 7);
}

#[tokio::test]
async fn a_fresh_boot_continues_after_the_hubs_last_stored_seq() {
    let hub = MockHub::start(Behaviour::default()).await;
    hub.state().committed = 1_000;
    let device = Device::start(config(&hub.url())).expect("valid config");
    push_readings(&device, 0, 20).await;
    assert!(device.flush(WAIT).await);
    let seqs: Vec<u64> = hub.state().frames.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, vec![1_001, 1_002]);
}

#[test]
fn start_outside_a_runtime_and_bad_configs_are_errors() {
    assert!(matches!(
        Device::start(config("ws://127.0.0.1:1/ws/device")),
        Err(firmware_client::ConfigError::NoRuntime)
    ));
    for url in ["http://127.0.0.1/ws/device", "not a url", "ws:///ws/device"] {
        assert!(
            matches!(
                config(url).validate(),
                Err(firmware_client::ConfigError::Url { .. })
            ),
            "{url}"
        );
    }
    let mut bad = config("ws://127.0.0.1:1/ws/device");
    bad.max_batch = 0;
    assert!(bad.validate().is_err());
    let bad = config("ws://127.0.0.1:1/ws/device").sensor(
        1,
        "again",
        "",
        firmware_client::schema::ValueKind::Int,
    );
    assert!(bad.validate().is_err(), "duplicate sensor id");
    let mut bad = config("wss://127.0.0.1:1/ws/device");
    bad.extra_root_certs_pem = Some(b"not a certificate".to_vec());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        assert!(matches!(
            Device::start(bad),
            Err(firmware_client::ConfigError::Tls(_))
        ));
    });
}

#[tokio::test]
async fn a_steady_flow_fills_whole_frames_instead_of_lingering_partials() {
    let hub = MockHub::start(Behaviour::default()).await;
    let mut config = config(&hub.url());
    config.max_batch = 10;
    config.flush_interval = Duration::from_millis(150);
    let device = Device::start(config).expect("valid config");
    connected(&device).await;
    // Bursts of 7 every 20 ms: a frame fills at least every other burst,
    // but pending readings only run out every 10 bursts.
    let mut time = 1_700_000_000_000;
    for _ in 0..50 {
        for _ in 0..7 {
            time += 1;
            device
                .try_push(COUNTER, time, Value::Int(time as i64))
                .expect("room");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(device.flush(WAIT).await);
    let state = hub.state();
    assert_eq!(state.stored.len(), 350);
    let partial: Vec<usize> = state
        .frames
        .iter()
        .map(|f| f.readings)
        .filter(|&n| n < 10)
        .collect();
    assert!(partial.len() <= 2, "partial frames: {partial:?}");
}
