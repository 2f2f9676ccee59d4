//! Graceful shutdown of the real `hub` process under load: SIGTERM while
//! 50 devices stream makes the hub stop accepting, commit and ack what it
//! queued, close the devices and exit 0 within its grace period; after a
//! restart on the same database the devices resend what was not acked, and
//! every reading is stored exactly once. An acked reading that the SIGTERM
//! lost would show as a reading missing from the table (the device dropped
//! it from its outbox when the ack came).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::db::free_port;
use common::now_ms;
use firmware_client::{ConnectionState, Device, DeviceConfig};
use hub::store::Store;
use schema::{Value, ValueKind};

const DEVICES: usize = 50;
const GRACE_SECS: u64 = 10;

fn spawn_hub(database_url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hub"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            database_url,
            "--shutdown-grace-secs",
            &GRACE_SECS.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("hub did not listen on {port}");
}

fn device(port: u16, token: &str) -> Device {
    let mut config = DeviceConfig::new(format!("ws://127.0.0.1:{port}/ws/device"), token).sensor(
        1,
        "temperature",
        "°C",
        ValueKind::Float,
    );
    config.max_batch = 20;
    config.flush_interval = Duration::from_millis(10);
    config.backoff_base = Duration::from_millis(100);
    config.backoff_cap = Duration::from_millis(500);
    Device::start(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_accepted_reading() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = Store::open(&url).await.unwrap();
    let mut tokens = Vec::new();
    for i in 0..DEVICES {
        tokens.push(store.create_device(&format!("d{i}")).await.unwrap().token);
    }
    let port = free_port();
    let mut hub = spawn_hub(&url, port);
    wait_listening(port).await;
    let devices: Vec<Device> = tokens.iter().map(|t| device(port, t)).collect();
    for device in &devices {
        let mut state = device.state();
        tokio::time::timeout(
            Duration::from_secs(30),
            state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
        )
        .await
        .expect("connected in time")
        .unwrap();
    }

    // Stream steadily; SIGTERM arrives in the middle.
    let base = now_ms();
    let per_device = 1_000u64;
    let streaming = async {
        for step in 0..per_device {
            for device in &devices {
                device
                    .push(1, base + step, Value::Float(step as f64))
                    .await
                    .unwrap();
            }
            if step % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let terminate = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let acked_before: u64 = devices.iter().map(|d| d.stats().readings_acked).sum();
        let pushed_before: u64 = devices.iter().map(|d| d.stats().readings_pushed).sum();
        assert!(acked_before > 0, "the hub was under load when stopped");
        assert!(
            pushed_before < DEVICES as u64 * per_device,
            "the devices were still streaming when the hub was stopped"
        );
        let status = Command::new("kill")
            .args(["-TERM", &hub.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        let exit = loop {
            if let Some(exit) = hub.try_wait().unwrap() {
                break exit;
            }
            assert!(
                started.elapsed() < Duration::from_secs(GRACE_SECS + 5),
                "the hub did not exit within its grace period"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
        started.elapsed()
    };
    let ((), took) = tokio::join!(streaming, terminate);
    eprintln!("hub stopped {took:?} after SIGTERM");

    // Everything acked so far must already be in the table.
    let acked: u64 = devices.iter().map(|d| d.stats().readings_acked).sum();
    let stored = store.count_readings().await.unwrap();
    assert!(
        stored >= acked as i64,
        "{acked} readings were acked but only {stored} stored"
    );

    // Restart: the devices reconnect and resend what was not acked.
    let mut hub = spawn_hub(&url, port);
    wait_listening(port).await;
    for device in &devices {
        assert!(
            device.flush(Duration::from_secs(60)).await,
            "outbox drained after the restart: {:?}",
            device.stats()
        );
    }
    let pushed: u64 = devices.iter().map(|d| d.stats().readings_pushed).sum();
    assert_eq!(pushed, DEVICES as u64 * per_device);
    assert_eq!(
        store.count_readings().await.unwrap(),
        pushed as i64,
        "every reading stored exactly once"
    );
    for device in devices {
        device.shutdown().await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status();
    let _ = hub.wait();
}
