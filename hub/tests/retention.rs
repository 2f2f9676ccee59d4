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

backend_test!(
    old_audit_entries_are_deleted_by_their_own_period,
    |backend: Backend| async move {
        use hub::store::{AuditQuery, NewAuditEntry};
        // Readings are kept (no --retention-days); audit entries live 1.5 s.
        let hub = TestHub::start_on_with(backend, |c| {
            c.retention = None;
            c.audit_retention = Some(Duration::from_millis(1500));
            c.retention_interval = Duration::from_millis(100);
            c.retention_batch = 2;
        })
        .await;
        let (_, token) = hub.add_device("d1").await;
        let (mut socket, _) = open_session(&hub, &token).await;
        send_binary(&mut socket, telemetry_frame(1, now_ms() - 3 * DAY_MS, 5)).await;
        wait_ack(&mut socket, 1).await;
        for n in 0..5 {
            let entry = NewAuditEntry::new("cli", "device.create", Some(&format!("old-{n}")), "ok");
            hub.store.record_audit(&entry).await.unwrap();
        }
        let all = AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        };
        let count = || async { hub.store.list_audit(&all).await.unwrap().entries.len() };
        assert_eq!(count().await, 5);
        eventually("old audit entries deleted", || async { count().await == 0 }).await;
        let fresh = NewAuditEntry::new("cli", "device.create", Some("fresh"), "ok");
        hub.store.record_audit(&fresh).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(count().await, 1, "an entry younger than the period stays");
        assert_eq!(
            hub.stored_readings().await,
            5,
            "readings have no retention here"
        );
    }
);
