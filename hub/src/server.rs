//! Wires the hub together and runs it until shutdown.
//!
//! [`run`] takes a listener the caller bound (tests bind port 0) and a
//! cancellation token (tests cancel it; `main` cancels it on SIGTERM/SIGINT).
//! Shutdown order: stop accepting, let each connection drain (its queued
//! readings commit and are acked, then it closes with 1001), let the writer
//! empty the queue, stop the MQTT bridge (after the connections, so their
//! offline statuses are published), close the database. Every step is
//! bounded by the configured grace period (the bridge by its own drain time).
//!
//! Accepting, TLS, the connection cap and the handshake deadline belong to
//! [`crate::listener`]; the same code path serves plain and TLS listeners.

use std::sync::Arc;

use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::commands::{self, CommandService, CommandSettings};
use crate::config::ServeConfig;
use crate::events::HubEvents;
use crate::gateway::connect_batch::ConnectBatcher;
use crate::ingest::{self, WriterSettings};
use crate::listener::ListenerSettings;
use crate::metrics::{self, MetricSources, Metrics};
use crate::mqtt::{BridgeError, MqttBridge};
use crate::presence;
use crate::registry::SessionRegistry;
use crate::retention::{self, RetentionSettings};
use crate::state::AppState;
use crate::store::{Store, StoreError};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listener failed.
    #[error("listener failed: {0}")]
    Io(#[from] std::io::Error),
    /// The MQTT bridge is misconfigured.
    #[error(transparent)]
    Mqtt(#[from] BridgeError),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Opens the configured database and serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let store = Store::open_as(&config.database_url, Some(&config.instance_id)).await?;
    run_with_store(config, listener, store, shutdown).await
}

/// Serves with an already opened store.
pub async fn run_with_store(
    config: ServeConfig,
    listener: TcpListener,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    // Bad TLS files stop start-up before anything else runs.
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::server::acceptor)
        .transpose()?;
    let config = Arc::new(config);
    let mqtt = match &config.mqtt_url {
        Some(url) => Some(MqttBridge::new(url, &config.mqtt_prefix)?),
        None => None,
    };
    let writers = match config.ingest_writers {
        0 => store.writer_connections(),
        n => n.min(store.writer_connections()),
    };
    let (ingest, queues) = ingest::partitioned(config.ingest_queue_frames, writers);
    let sessions = Arc::new(SessionRegistry::default());
    let events = HubEvents::default();
    let metrics = Arc::new(Metrics::new(MetricSources {
        instance: config.instance_id.clone(),
        ingest: ingest.depth_probe(),
        sessions: Arc::clone(&sessions),
        mqtt: mqtt.as_ref().map(MqttBridge::status),
    }));
    let commands = CommandService::new(
        store.clone(),
        Arc::clone(&sessions),
        CommandSettings::from_config(&config),
        Arc::clone(&metrics),
    );
    let state = AppState {
        store: store.clone(),
        connects: ConnectBatcher::spawn(&store, &config.instance_id, &metrics),
        sessions: Arc::clone(&sessions),
        config: Arc::clone(&config),
        ingest,
        commands: commands.clone(),
        events: events.clone(),
        shutdown: shutdown.clone(),
        metrics: Arc::clone(&metrics),
        auth_throttle: Arc::new(crate::throttle::AuthThrottle::new(
            config.limits.auth_failures_per_minute,
        )),
    };
    let background = TaskTracker::new();
    let settings = WriterSettings {
        batch_max_readings: config.batch_max_readings,
        linger: config.batch_linger,
    };
    let writers = TaskTracker::new();
    for queue in queues {
        writers.spawn(ingest::run_writer(
            store.clone(),
            queue,
            settings,
            events.clone(),
            Arc::clone(&metrics),
            shutdown.clone(),
        ));
    }
    writers.close();
    info!(writers = writers.len(), "ingest writers started");
    background.spawn(metrics::run_rate_sampler(
        Arc::clone(&metrics),
        shutdown.clone(),
    ));
    background.spawn(presence::run_last_seen_flusher(
        store.clone(),
        Arc::clone(&sessions),
        config.presence_flush,
        shutdown.clone(),
    ));
    background.spawn(presence::run_revocation_watcher(
        store.clone(),
        Arc::clone(&sessions),
        config.revocation_poll,
        shutdown.clone(),
    ));
    background.spawn(crate::liveness::run_liveness(
        store.clone(),
        config.instance_id.clone(),
        events.clone(),
        config.hub_stale_after,
        shutdown.clone(),
    ));
    background.spawn(crate::cluster::run_cluster_listener(
        store.clone(),
        commands.clone(),
        Arc::clone(&sessions),
        config.instance_id.clone(),
        shutdown.clone(),
    ));
    background.spawn(commands::expiry::run_expiry(
        commands.clone(),
        config.command_expiry_interval,
        shutdown.clone(),
    ));
    let retention = RetentionSettings {
        max_age: config.retention,
        audit_max_age: config.audit_retention,
        every: config.retention_interval,
        batch: config.retention_batch,
    };
    if retention.is_active() {
        background.spawn(retention::run_retention(
            store.clone(),
            retention,
            shutdown.clone(),
        ));
    }
    // The MQTT bridge stops only after device connections have drained, so
    // their offline statuses are published; the guard also stops it if
    // this function returns early.
    let mqtt_stop = CancellationToken::new();
    let mqtt_stop_guard = mqtt_stop.clone().drop_guard();
    let mqtt_status = mqtt.map(|bridge| {
        let status = bridge.status();
        bridge.spawn(
            &background,
            commands.clone(),
            &events,
            Arc::clone(&sessions),
            mqtt_stop,
        );
        status
    });
    background.close();
    // After the MQTT bridge subscribed to presence (so the releases reach
    // the broker) and before accepting (a device connecting now must not be
    // released).
    crate::liveness::release_leftovers(&store, &config.instance_id, &events).await;

    let connections = TaskTracker::new();
    let mut app: Router = crate::gateway::router(connections.clone())
        .with_state(state.clone())
        .merge(crate::api::router_with_streams(state, connections.clone()))
        .merge(metrics::router(Arc::clone(&metrics)))
        .merge(crate::console::router());
    if let Some(status) = mqtt_status {
        // For the `mqtt` check of /readyz.
        app = app.layer(Extension(status));
    }
    info!(
        addr = %listener.local_addr()?,
        tls = tls.is_some(),
        client_certificates = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        "hub listening"
    );
    let settings = ListenerSettings {
        tls,
        max_connections: config.limits.max_connections,
        handshake_timeout: config.limits.handshake_timeout,
        grace: config.shutdown_grace,
    };
    // Returns once shutdown is requested and HTTP connections have finished.
    crate::listener::serve(
        listener,
        app,
        settings,
        Arc::clone(&metrics),
        shutdown.clone(),
    )
    .await;

    info!("shutting down: draining device connections");
    connections.close();
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "connections still open at the shutdown deadline"
        );
    }
    // Every IngestHandle is gone once connections and the router are dropped,
    // so each writer finishes its queue and returns.
    if tokio::time::timeout_at(deadline + config.shutdown_grace, writers.wait())
        .await
        .is_err()
    {
        warn!(
            "ingest writers still busy at the shutdown deadline; unacked readings will be resent by devices"
        );
    }
    drop(mqtt_stop_guard);
    background.wait().await;
    store.close().await;
    info!("hub stopped");
    Ok(())
}
