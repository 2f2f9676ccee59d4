//! Many real devices (firmware-client over real WebSockets) streaming into a
//! real hub: every sent reading is acked and stored exactly once, also when
//! connections are cut mid-stream and the hub restarts.
#![allow(clippy::unwrap_used)]

mod common;

use common::db::Backend;

use std::time::Duration;

use common::*;
use firmware_client::{ConnectionState, Device, DeviceConfig};
use schema::{Value, ValueKind};

fn device_config(hub: &TestHub, token: &str) -> DeviceConfig {
    let mut config = DeviceConfig::new(hub.ws_url(), token)
        .sensor(1, "temperature", "°C", ValueKind::Float)
        .sensor(2, "count", "", ValueKind::Int);
    config.max_batch = 20;
    config.flush_interval = Duration::from_millis(20);
    config.backoff_base = Duration::from_millis(50);
    config.backoff_cap = Duration::from_millis(500);
    config
}

async fn start_devices(hub: &TestHub, n: usize) -> Vec<Device> {
    let mut devices = Vec::with_capacity(n);
    for i in 0..n {
        let (_, token) = hub.add_device(&format!("dev-{i:03}")).await;
        devices.push(Device::start(device_config(hub, &token)).unwrap());
    }
    devices
}

/// Pushes `per_device` readings into each device, alternating sensors, with
/// strictly increasing times per sensor.
async fn stream(devices: &[Device], from: u64, per_device: u64, pace: Duration) {
    let base = now_ms();
    for step in from..from + per_device {
        for device in devices {
            let value = if step % 2 == 0 {
                Value::Float(step as f64 * 0.1)
            } else {
                Value::Int(step as i64)
            };
            let sensor = if step % 2 == 0 { 1 } else { 2 };
            device.push(sensor, base + step, value).await.unwrap();
        }
        if step % 10 == 0 {
            tokio::time::sleep(pace).await;
        }
    }
}

async fn all_connected(devices: &[Device]) {
    for device in devices {
        let mut state = device.state();
        let connected = tokio::time::timeout(
            Duration::from_secs(30),
            state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
        )
        .await;
        assert!(matches!(connected, Ok(Ok(_))), "device never connected");
    }
}

async fn flush_all(devices: &[Device]) {
    for device in devices {
        assert!(
            device.flush(Duration::from_secs(60)).await,
            "device drained its outbox: {:?}",
            device.stats()
        );
    }
}

backend_test!(
    two_hundred_devices_stream_and_every_reading_is_stored_exactly_once,
    |backend: Backend| async move {
        let hub = TestHub::start_on(backend).await;
        let devices = start_devices(&hub, 200).await;
        stream(&devices, 0, 100, Duration::from_millis(20)).await;
        flush_all(&devices).await;

        let mut pushed = 0;
        let mut acked = 0;
        for device in &devices {
            let stats = device.stats();
            pushed += stats.readings_pushed;
            acked += stats.readings_acked;
            assert_eq!(stats.outstanding, 0);
            assert_eq!(stats.errors_received, 0, "no frame was rejected");
        }
        assert_eq!(pushed, 200 * 100);
        assert_eq!(acked, pushed, "every sent reading is acked");
        assert_eq!(
            hub.stored_readings().await,
            pushed as i64,
            "every acked reading is stored once"
        );
        for device in devices {
            device.shutdown().await;
        }
    }
);

backend_test!(
    cuts_and_a_hub_restart_lose_nothing_and_store_nothing_twice,
    |backend: Backend| async move {
        let mut hub = TestHub::start_on(backend).await;
        let devices = start_devices(&hub, 50).await;
        // Every device must have connected once, or the restart below would
        // be its first connection rather than a reconnect (on a loaded
        // machine the 50 handshakes can outlast the 400 ms before it).
        all_connected(&devices).await;

        // Stream, cutting a few connections abruptly every round.
        let pusher = {
            let devices_ref = &devices;
            async move {
                for round in 0..10u64 {
                    stream(devices_ref, round * 40, 40, Duration::from_millis(5)).await;
                    for device in devices_ref.iter().skip(round as usize % 5).step_by(5) {
                        device.disconnect_now();
                    }
                }
            }
        };
        // Restart the hub once while the devices stream.
        let restart = async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            hub.restart().await;
        };
        tokio::join!(pusher, restart);
        flush_all(&devices).await;

        let mut pushed = 0;
        let mut reconnects = 0;
        for device in &devices {
            let stats = device.stats();
            pushed += stats.readings_pushed;
            reconnects += stats.reconnects;
            assert_eq!(stats.readings_acked, stats.readings_pushed);
        }
        assert_eq!(pushed, 50 * 400);
        assert!(
            reconnects >= 50,
            "every device reconnected at least once (restart), got {reconnects}"
        );
        assert_eq!(
            hub.stored_readings().await,
            pushed as i64,
            "nothing acked is missing, nothing stored twice"
        );
        for device in devices {
            device.shutdown().await;
        }
    }
);
