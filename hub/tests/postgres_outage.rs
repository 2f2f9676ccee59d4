//! Postgres going away in mid-stream: the hub stops acking, pushes back on
//! devices, keeps serving /healthz, retries, and recovers by itself; every
//! reading any device saw acked is stored exactly once.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::db::{Backend, PrivateCluster, TestDatabase, skip_postgres};
use common::*;
use firmware_client::{Device, DeviceConfig};
use schema::{Value, ValueKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_stream_loses_nothing_acked_and_stores_nothing_twice() {
    if skip_postgres() {
        eprintln!("skipped: HUB_TEST_SKIP_POSTGRES=1");
        return;
    }
    let cluster = PrivateCluster::start();
    let url = cluster.create_database("outage").await;
    let hub =
        TestHub::start_on_database(TestDatabase::external(url, Backend::Postgres), |_| {}).await;

    let mut devices = Vec::new();
    for i in 0..20 {
        let (_, token) = hub.add_device(&format!("dev-{i}")).await;
        let mut config =
            DeviceConfig::new(hub.ws_url(), token).sensor(1, "temperature", "°C", ValueKind::Float);
        config.max_batch = 10;
        config.flush_interval = Duration::from_millis(20);
        config.backoff_base = Duration::from_millis(100);
        config.backoff_cap = Duration::from_secs(1);
        config.outbox_capacity = 100_000;
        devices.push(Arc::new(Device::start(config).unwrap()));
    }

    // Stream steadily in the background until told to stop.
    let streaming = Arc::new(AtomicBool::new(true));
    let pusher = {
        let devices = devices.clone();
        let streaming = Arc::clone(&streaming);
        tokio::spawn(async move {
            let base = now_ms();
            let mut step = 0u64;
            while streaming.load(Ordering::Relaxed) {
                for device in &devices {
                    device
                        .push(1, base + step, Value::Float(step as f64))
                        .await
                        .unwrap();
                }
                step += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked_before = total_acked(&devices);
    assert!(acked_before > 0, "streaming before the outage");

    cluster.stop();
    // Let in-flight commits fail, then measure over several seconds of outage.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_at_stop = total_acked(&devices);
    let health = reqwest::get(format!("{}/healthz", hub.http_url()))
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "the hub stays alive while its database is down"
    );
    let ready = reqwest::get(format!("{}/readyz", hub.http_url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "readiness reports the database");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        total_acked(&devices),
        acked_at_stop,
        "nothing is acked while the database is down"
    );
    let outstanding: u64 = devices.iter().map(|d| d.stats().outstanding).sum();
    assert!(outstanding > 0, "devices keep what was not acked");

    cluster.resume();
    let readyz = format!("{}/readyz", hub.http_url());
    eventually("ready again", || async {
        reqwest::get(&readyz).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    streaming.store(false, Ordering::Relaxed);
    pusher.await.unwrap();
    for device in &devices {
        assert!(
            device.flush(Duration::from_secs(60)).await,
            "recovered and drained: {:?}",
            device.stats()
        );
    }

    let pushed: u64 = devices.iter().map(|d| d.stats().readings_pushed).sum();
    assert!(
        total_acked(&devices) > acked_at_stop,
        "acks resumed after the outage"
    );
    assert_eq!(total_acked(&devices), pushed);
    let stored = eventually_count(&hub).await;
    assert_eq!(
        stored, pushed as i64,
        "every acked reading stored exactly once"
    );
    for device in devices {
        if let Ok(device) = Arc::try_unwrap(device) {
            device.shutdown().await;
        }
    }
}

fn total_acked(devices: &[Arc<Device>]) -> u64 {
    devices.iter().map(|d| d.stats().readings_acked).sum()
}

/// The test's own store handle reconnects after the outage; retry its first query.
async fn eventually_count(hub: &TestHub) -> i64 {
    for _ in 0..50 {
        if let Ok(count) = hub.store.count_readings().await {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the store did not reconnect");
}
