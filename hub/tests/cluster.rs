//! Several hubs on one Postgres and one Mosquitto, as a fleet behind a load
//! balancer runs them: two hubs ("hub-a", "hub-b") on loopback sharing one
//! fresh database and one broker.
//!
//! - A command accepted by one hub reaches a device connected to the other,
//!   exactly once, and the accepting hub's `?wait` reports the final status
//!   the other hub recorded; a command published over MQTT (one shared
//!   subscription, two hubs subscribed) reaches the device exactly once and
//!   each of its status changes is published once. Both hubs' device lists
//!   name the hub holding the session (`hub_instance`), and each hub's
//!   metrics carry its own instance id.
//! - A device that moves from one hub to the other gets the commands queued
//!   for it while it was offline on the new hub; a half-open session left on
//!   the old hub is closed there as replaced (4000) as soon as the device
//!   opens a newer one elsewhere, and that late close does not mark the
//!   device offline.
//! - SIGKILL of a hub process mid-stream: its devices reconnect through a
//!   load balancer to the surviving hub and every reading they pushed is
//!   stored exactly once (an acked reading lost in the crash would be
//!   missing: the device dropped it from its outbox when the ack came).
//!
//! Postgres only (SQLite serves a single hub): these tests never skip under
//! `CI=true`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::api::Api;
use common::broker::{MqttProbe, ReceivedMessage, TestBroker};
use common::db::{Backend, TestDatabase, free_port};
use common::relay::{Calls, connected, relay_device};
use common::{RawSocket, TestHub, expect_close, now_ms, open_session};
use firmware_client::{Device, DeviceConfig};
use futures_util::StreamExt;
use hub::store::Store;
use reqwest::StatusCode;
use schema::{Value, ValueKind};
use serde_json::{Value as Json, json};
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Generous: the test machine is small and shared.
const WAIT: Duration = Duration::from_secs(30);
const TEMPERATURE: u16 = 1;

/// Hub logs on the test's output when `RUST_LOG` is set.
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Whether to skip (only outside CI, only on request; see `common::db`).
fn skip() -> bool {
    if common::db::skip_postgres() {
        eprintln!("skipped: HUB_TEST_SKIP_POSTGRES=1");
        return true;
    }
    false
}

/// Device views, beside the shared client's command calls.
impl Api {
    /// The device as `GET /devices/{id}` shows it.
    async fn device(&self, id: &str) -> Json {
        let (status, body) = self.get(&format!("/devices/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The device's entry in `GET /devices`.
    async fn listed(&self, id: &str) -> Json {
        let (status, body) = self.get("/devices?limit=1000").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("device {id} not listed: {body}"))
            .clone()
    }

    /// Whether both the list and the detail show the device online on `hub`.
    async fn shows_online_on(&self, id: &str, hub: &str) -> bool {
        let listed = self.listed(id).await;
        let detail = self.device(id).await;
        [listed, detail]
            .iter()
            .all(|d| d["online"] == true && d["hub_instance"] == hub)
    }

    /// Waits until both the list and the detail show the device online on `hub`.
    async fn wait_online_on(&self, id: &str, hub: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.shows_online_on(id, hub).await {
            assert!(
                Instant::now() < deadline,
                "{} never showed {id} online on {hub}: list {} detail {}",
                self.base,
                self.listed(id).await,
                self.device(id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn id_of(body: &Json) -> i64 {
    body["id"].as_i64().unwrap()
}

/// Hub A and hub B on one fresh Postgres database, both bridged to
/// `mqtt_url` if given. Returns once both listen to each other's notices.
async fn two_hubs(mqtt_url: Option<String>) -> (TestHub, TestHub) {
    init_logs();
    let database = common::db::fresh_database(Backend::Postgres).await;
    let url = database.url.clone();
    let mqtt = mqtt_url.clone();
    let a = TestHub::start_on_database(database, move |config| {
        config.instance_id = "hub-a".into();
        config.mqtt_url = mqtt;
    })
    .await;
    let b = TestHub::start_on_database(
        TestDatabase::external(url.clone(), Backend::Postgres),
        move |config| {
            config.instance_id = "hub-b".into();
            config.mqtt_url = mqtt_url;
        },
    )
    .await;
    wait_cluster_listeners(&url, 2).await;
    (a, b)
}

/// Waits until `hubs` connections LISTEN for the cluster notices on the
/// database at `url`: a hub starts serving before its listener is up, and
/// a notice sent before then is not for it. (The listener's LISTEN is the
/// last statement its connection ran, so `pg_stat_activity` shows it.)
async fn wait_cluster_listeners(url: &str, hubs: i64) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND state = 'idle' \
               AND query LIKE '%LISTEN%hub_sessions%'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if listening >= hubs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {listening} of {hubs} hubs listen to the cluster notices"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.close().await.unwrap();
}

/// `/readyz` says the MQTT bridge is connected and subscribed.
async fn wait_mqtt_ready(hub: &TestHub) {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = reqwest::get(format!("{}/readyz", hub.http_url()))
            .await
            .unwrap();
        let body: Json = response.json().await.unwrap();
        if body["checks"]["mqtt"] == "ok" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said mqtt ok: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn call_ids(calls: &Calls) -> Vec<u64> {
    calls.lock().unwrap().iter().map(|c| c.id).collect()
}

/// `/metrics` of a hub.
async fn metrics(http_url: &str) -> String {
    let response = reqwest::get(format!("{http_url}/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

fn json_of(message: &ReceivedMessage) -> Json {
    serde_json::from_slice(&message.payload)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", message.topic, message.text()))
}

/// Every message `probe` receives until `quiet` passes without one.
async fn collect_until_quiet(probe: &mut MqttProbe, quiet: Duration) -> Vec<ReceivedMessage> {
    let mut messages = Vec::new();
    while let Some(message) = probe.next_message(quiet).await {
        messages.push(message);
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_accepted_by_one_hub_reaches_a_device_on_the_other_exactly_once() {
    if skip() {
        return;
    }
    let broker = TestBroker::start();
    let (a, b) = two_hubs(Some(broker.url())).await;
    wait_mqtt_ready(&a).await;
    wait_mqtt_ready(&b).await;
    let api_a = Api::with_store(&a.store, &a.http_url()).await;
    let api_b = Api::with_store(&b.store, &b.http_url()).await;
    let (id, token) = a.add_device("boiler").await;
    let calls = Calls::default();
    let device = relay_device(a.ws_url(), &token, &calls);
    connected(&device).await;
    api_b.wait_online_on(&id, "hub-a").await;
    api_a.wait_online_on(&id, "hub-a").await;

    // POST to B, device on A: B's ?wait sees the final status A recorded,
    // through the notices (well before its deadline, when it would re-read
    // the database anyway).
    let wait_secs = 40;
    let started = Instant::now();
    let (status, body) = api_b
        .command(&id, json!({"actuator": "relay", "value": true}), wait_secs)
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["result_value"], true, "{body}");
    assert_eq!(body["attempts"], 1, "{body}");
    assert!(
        took < Duration::from_secs(wait_secs / 2),
        "B's ?wait took {took:?}: it did not hear A's change"
    );
    let command = id_of(&body);
    for api in [&api_a, &api_b] {
        let shown = api.show(&id, command).await;
        assert_eq!(shown["status"], "succeeded", "{shown}");
        assert_eq!(shown["result_value"], true, "{shown}");
    }
    assert_eq!(call_ids(&calls), vec![command as u64]);

    // Over MQTT: both hubs share one subscription, so one of them takes the
    // request; the device acts once and each status change is published once.
    let mut watcher = MqttProbe::connect(broker.port).await;
    watcher
        .subscribe(&format!("hub/devices/{id}/commands/+/status"))
        .await;
    let requester = MqttProbe::connect(broker.port).await;
    requester
        .publish(
            &format!("hub/devices/{id}/commands"),
            json!({"actuator": "relay", "value": false, "ttl": 60}).to_string(),
        )
        .await;
    let done = watcher
        .wait_for(
            |m| {
                let view = json_of(m);
                view["source"] == "mqtt" && view["status"] == "succeeded"
            },
            WAIT,
        )
        .await;
    let mqtt_command = id_of(&json_of(&done));
    assert_ne!(mqtt_command, command);
    assert_eq!(json_of(&done)["result_value"], false);
    // Anything else still on its way (a second hub taking the request too,
    // or publishing a change twice) arrives within a few seconds.
    let late = collect_until_quiet(&mut watcher, Duration::from_secs(3)).await;
    let status_topic = format!("hub/devices/{id}/commands/{mqtt_command}/status");
    let mut statuses: Vec<String> = late
        .iter()
        .filter(|m| m.topic == status_topic)
        .map(|m| json_of(m)["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.push("succeeded".to_owned());
    let mut distinct = statuses.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        statuses.len(),
        "a status published more than once: {statuses:?}"
    );
    assert!(
        late.iter()
            .all(|m| json_of(m)["source"] != "mqtt" || id_of(&json_of(m)) == mqtt_command),
        "a second command from the one request: {late:?}"
    );
    assert_eq!(
        call_ids(&calls),
        vec![command as u64, mqtt_command as u64],
        "each command ran exactly once"
    );
    for api in [&api_a, &api_b] {
        api.wait_status(&id, mqtt_command, "succeeded").await;
    }

    // Both hubs agree where the device is; each hub's metrics name it.
    assert!(api_b.shows_online_on(&id, "hub-a").await);
    assert!(api_a.shows_online_on(&id, "hub-a").await);
    let metrics_a = metrics(&a.http_url()).await;
    let metrics_b = metrics(&b.http_url()).await;
    assert!(metrics_a.contains("hub_instance=\"hub-a\""), "{metrics_a}");
    assert!(!metrics_a.contains("hub_instance=\"hub-b\""), "{metrics_a}");
    assert!(metrics_b.contains("hub_instance=\"hub-b\""), "{metrics_b}");
    assert!(!metrics_b.contains("hub_instance=\"hub-a\""), "{metrics_b}");

    device.shutdown().await;
    watcher.disconnect().await;
    requester.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_moving_to_the_other_hub_gets_its_queued_commands_and_stays_online() {
    if skip() {
        return;
    }
    let (a, b) = two_hubs(None).await;
    let api_a = Api::with_store(&a.store, &a.http_url()).await;
    let api_b = Api::with_store(&b.store, &b.http_url()).await;

    // A device on A goes away; a command for it waits on A.
    let (id, token) = a.add_device("heater").await;
    let calls = Calls::default();
    let device = relay_device(a.ws_url(), &token, &calls);
    connected(&device).await;
    api_a.wait_online_on(&id, "hub-a").await;
    device.shutdown().await;
    common::eventually("the device is offline", || async {
        let record = a.store.get_device(&id).await.unwrap().unwrap();
        !record.online && record.hub_instance.is_none()
    })
    .await;
    let (status, body) = api_a
        .command(&id, json!({"actuator": "relay", "value": true}), 0)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let command = id_of(&body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api_a.show(&id, command).await["status"], "queued");
    assert!(call_ids(&calls).is_empty());

    // It comes back on B and gets the command there.
    let device = relay_device(b.ws_url(), &token, &calls);
    connected(&device).await;
    let done = api_a.wait_status(&id, command, "succeeded").await;
    assert_eq!(done["result_value"], true, "{done}");
    assert_eq!(api_b.show(&id, command).await["status"], "succeeded");
    assert_eq!(call_ids(&calls), vec![command as u64]);
    api_a.wait_online_on(&id, "hub-b").await;
    api_b.wait_online_on(&id, "hub-b").await;
    device.shutdown().await;

    // Presence across a hop: a session left open on A (half-open, as when
    // the device lost its network) is closed as replaced once the device
    // opens a newer one on B, and that late close leaves it online on B.
    let (id, token) = a.add_device("valve").await;
    let (mut old, _) = open_session(&a, &token).await;
    api_b.wait_online_on(&id, "hub-a").await;
    let started = Instant::now();
    let (new, _): (RawSocket, u64) = open_session(&b, &token).await;
    let reason = expect_close(&mut old, schema::close::SESSION_REPLACED).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "A closed the replaced session only after {took:?} ({reason})"
    );
    // Answer A's close frame so its connection ends now (rather than after
    // its close timeout), then wait until A has finished it: the close is
    // recorded before the connection leaves `hub_connections_open`.
    let drained =
        tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = old.next().await {} }).await;
    assert!(drained.is_ok(), "A's replaced connection never ended");
    let deadline = Instant::now() + WAIT;
    while !metrics(&a.http_url())
        .await
        .lines()
        .any(|line| line == "hub_connections_open 0")
    {
        assert!(
            Instant::now() < deadline,
            "A still counts an open connection: {}",
            metrics(&a.http_url()).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The late close on A did not take the device offline: it stays online
    // on B, as both hubs and the database say (checked for a while, as
    // presence flushes every 200 ms here).
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for api in [&api_a, &api_b] {
            assert!(
                api.shows_online_on(&id, "hub-b").await,
                "after the replaced session closed on A: list {} detail {}",
                api.listed(&id).await,
                api.device(&id).await
            );
        }
        let record = a.store.get_device(&id).await.unwrap().unwrap();
        assert!(record.online, "{record:?}");
        assert_eq!(record.hub_instance.as_deref(), Some("hub-b"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(new);
}

/// A hub process of the built binary; killed (and reaped) when dropped.
struct HubProcess {
    child: Child,
    port: u16,
}

impl HubProcess {
    fn spawn(database_url: &str, instance: &str) -> HubProcess {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_hub"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                database_url,
                "--instance-id",
                instance,
                "--presence-flush-ms",
                "200",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        HubProcess { child, port }
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect(self.addr()).await.is_ok() {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the hub on {} exited",
                self.port
            );
            assert!(
                Instant::now() < deadline,
                "hub did not listen on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP load balancer on 127.0.0.1: each connection goes to the first
/// backend that accepts it, in order, and is copied both ways. Counts the
/// connections each backend took.
struct Balancer {
    addr: SocketAddr,
    taken: Arc<Vec<AtomicUsize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let taken: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let counts = Arc::clone(&taken);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let backends = backends.clone();
                let counts = Arc::clone(&counts);
                tokio::spawn(async move {
                    for (i, backend) in backends.iter().enumerate() {
                        let attempt = tokio::time::timeout(
                            Duration::from_secs(2),
                            TcpStream::connect(backend),
                        )
                        .await;
                        if let Ok(Ok(mut server)) = attempt {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                    // No backend: dropping the client closes it.
                });
            }
        });
        Balancer { addr, taken, task }
    }

    fn taken(&self, backend: usize) -> usize {
        self.taken[backend].load(Ordering::Relaxed)
    }

    fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, schema::DEVICE_PATH)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Readings stored per device key.
async fn readings_per_device(url: &str) -> BTreeMap<i64, i64> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT device_pk, count(*) FROM readings GROUP BY device_pk")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_hub_mid_stream_loses_no_acked_reading_its_devices_move_to_the_other() {
    const DEVICES: usize = 10;
    /// Readings each device pushes after the kill.
    const AFTER_KILL: u64 = 300;
    if skip() {
        return;
    }
    let database = common::db::fresh_database(Backend::Postgres).await;
    let url = database.url.clone();
    // Opening runs the migrations, before either hub starts.
    let store = Store::open(&url).await.unwrap();
    let mut provisioned = Vec::new();
    for i in 0..DEVICES {
        let new = store.create_device(&format!("meter-{i}")).await.unwrap();
        let pk = store.get_device(&new.id).await.unwrap().unwrap().pk;
        provisioned.push((new.id, pk, new.token));
    }
    let mut hub_a = HubProcess::spawn(&url, "hub-a");
    let mut hub_b = HubProcess::spawn(&url, "hub-b");
    hub_a.wait_listening().await;
    hub_b.wait_listening().await;
    let balancer = Balancer::start(vec![hub_a.addr(), hub_b.addr()]).await;

    let devices: Vec<Device> = provisioned
        .iter()
        .map(|(_, _, token)| {
            let mut config = DeviceConfig::new(balancer.ws_url(), token).sensor(
                TEMPERATURE,
                "temperature",
                "°C",
                ValueKind::Float,
            );
            config.max_batch = 20;
            config.flush_interval = Duration::from_millis(10);
            config.backoff_base = Duration::from_millis(100);
            config.backoff_cap = Duration::from_millis(500);
            Device::start(config).unwrap()
        })
        .collect();
    for device in &devices {
        connected(device).await;
    }
    assert!(balancer.taken(0) >= DEVICES, "every device went to A");
    assert_eq!(balancer.taken(1), 0, "B took a connection while A was up");
    for (id, _, _) in &provisioned {
        let record = store.get_device(id).await.unwrap().unwrap();
        assert!(record.online, "{record:?}");
        assert_eq!(record.hub_instance.as_deref(), Some("hub-a"));
    }

    // Stream steadily; A is killed once it has acked a good part, and the
    // stream goes on for AFTER_KILL more readings per device.
    let killed = AtomicBool::new(false);
    let base = now_ms() - 3_600_000;
    let streaming = async {
        let mut step = 0u64;
        let mut after_kill = 0u64;
        while after_kill < AFTER_KILL {
            for device in &devices {
                device
                    .push(TEMPERATURE, base + step, Value::Float(step as f64))
                    .await
                    .unwrap();
            }
            step += 1;
            if killed.load(Ordering::Acquire) {
                after_kill += 1;
            }
            assert!(step < 100_000, "A was never killed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        step
    };
    let kill = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let acked: u64 = devices.iter().map(|d| d.stats().readings_acked).sum();
            if acked >= 50 * DEVICES as u64 {
                break;
            }
            assert!(Instant::now() < deadline, "A acked only {acked} readings");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        hub_a.child.kill().unwrap();
        hub_a.child.wait().unwrap();
        killed.store(true, Ordering::Release);
        let acked: Vec<u64> = devices.iter().map(|d| d.stats().readings_acked).collect();
        let pushed: Vec<u64> = devices.iter().map(|d| d.stats().readings_pushed).collect();
        (acked, pushed)
    };
    let (steps, (acked_at_kill, pushed_at_kill)) = tokio::join!(streaming, kill);
    eprintln!(
        "killed A after {} readings pushed, {} acked; {steps} per device in all",
        pushed_at_kill.iter().sum::<u64>(),
        acked_at_kill.iter().sum::<u64>()
    );

    // Through the balancer to B; everything flushed and acked there.
    for (i, device) in devices.iter().enumerate() {
        if !device.flush(Duration::from_secs(60)).await {
            let all: Vec<_> = devices.iter().map(Device::stats).collect();
            panic!(
                "device {i}'s outbox did not drain on B (state {:?}; balancer took A {} B {}): \
                 {:?}\nall devices: {all:#?}",
                *device.state().borrow(),
                balancer.taken(0),
                balancer.taken(1),
                device.stats()
            );
        }
    }
    assert!(
        balancer.taken(1) >= DEVICES,
        "the devices reconnected to B ({} connections)",
        balancer.taken(1)
    );
    let stored = readings_per_device(&url).await;
    for (i, ((id, pk, _), device)) in provisioned.iter().zip(&devices).enumerate() {
        let stats = device.stats();
        assert_eq!(stats.readings_pushed, steps, "device {id}");
        assert_eq!(stats.readings_acked, steps, "device {id}: {stats:?}");
        assert!(stats.reconnects >= 1, "device {id} reconnected: {stats:?}");
        assert!(acked_at_kill[i] <= pushed_at_kill[i]);
        assert_eq!(
            stored.get(pk).copied().unwrap_or(0),
            steps as i64,
            "device {id}: every reading pushed is stored exactly once \
             ({} were acked by A when it was killed)",
            acked_at_kill[i]
        );
    }

    // The devices show online on B, in the database and in B's API.
    let api_b = Api::with_store(&store, &format!("http://{}", hub_b.addr())).await;
    for (id, _, _) in &provisioned {
        api_b.wait_online_on(id, "hub-b").await;
        let record = store.get_device(id).await.unwrap().unwrap();
        assert!(record.online, "{record:?}");
        assert_eq!(record.hub_instance.as_deref(), Some("hub-b"));
    }

    for device in devices {
        device.shutdown().await;
    }
    drop(database);
}
