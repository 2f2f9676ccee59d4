//! `--retention-days`: the hub deletes readings older than the retention
//! period in the background, on both backends, and keeps the rest and the
//! latest values.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::db::Backend;
use common::*;

const DAY_MS: u64 = 24 * 3600 * 1000;

backend_test!(
    old_readings_are_deleted_in_the_background,
    |backend: Backend| async move {
        let hub = TestHub::start_on_with(backend, |c| {
            c.retention = Some(Duration::from_millis(2 * DAY_MS));
            c.retention_interval = Duration::from_millis(100);
            c.retention_batch = 7;
        })
        .await;
        let (id, token) = hub.add_device("d1").await;
        let (mut socket, _) = open_session(&hub, &token).await;
        let now = now_ms();
        // 30 readings three days old, 20 from now.
        send_binary(&mut socket, telemetry_frame(1, now - 3 * DAY_MS, 30)).await;
        send_binary(&mut socket, telemetry_frame(2, now, 20)).await;
        wait_ack(&mut socket, 2).await;
        eventually("old readings deleted", || async {
            hub.stored_readings().await == 20
        })
        .await;
        let device = hub.store.get_device(&id).await.unwrap().unwrap();
        let latest = hub.store.latest_readings(device.pk).await.unwrap();
        let temperature = latest.iter().find(|s| s.sensor.id == 1).unwrap();
        assert!(
            temperature.latest.unwrap().time_ms >= now as i64,
            "the newest value survives"
        );
    }
);
