//! Wires the hub together and runs it until shutdown.
//!
//! [`run`] takes a listener the caller bound (tests bind port 0) and a
//! cancellation token (tests cancel it; `main` cancels it on SIGTERM/SIGINT).
//! Shutdown order: stop accepting, let each connection drain (its queued
//! readings commit and are acked, then it closes with 1001), let the writer
//! empty the queue, close the database. Every step is bounded by the
//! configured grace period.

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::commands::{self, CommandService, CommandSettings};
use crate::config::ServeConfig;
use crate::events::HubEvents;
use crate::ingest::{self, WriterSettings};
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
}

/// Opens the configured database and serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let store = Store::open(&config.database_url).await?;
    run_with_store(config, listener, store, shutdown).await
}

/// Serves with an already opened store.
pub async fn run_with_store(
    config: ServeConfig,
    listener: TcpListener,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    let writers = match config.ingest_writers {
        0 => store.writer_connections(),
        n => n.min(store.writer_connections()),
    };
    let (ingest, queues) = ingest::partitioned(config.ingest_queue_frames, writers);
    let sessions = Arc::new(SessionRegistry::default());
    let events = HubEvents::default();
    let commands = CommandService::new(
        store.clone(),
        Arc::clone(&sessions),
        CommandSettings {
            ttl: commands::request::TtlLimits {
                default: config.command_ttl,
                max: config.command_max_ttl,
            },
            expiry_interval: config.command_expiry_interval,
        },
    );
    let state = AppState {
        store: store.clone(),
        sessions: Arc::clone(&sessions),
        config: Arc::clone(&config),
        ingest,
        commands: commands.clone(),
        events: events.clone(),
        shutdown: shutdown.clone(),
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
            shutdown.clone(),
        ));
    }
    writers.close();
    info!(writers = writers.len(), "ingest writers started");
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
    background.spawn(commands::expiry::run_expiry(
        commands.clone(),
        config.command_expiry_interval,
        shutdown.clone(),
    ));
    if let Some(max_age) = config.retention {
        background.spawn(retention::run_retention(
            store.clone(),
            RetentionSettings {
                max_age,
                every: config.retention_interval,
                batch: config.retention_batch,
            },
            shutdown.clone(),
        ));
    }
    background.close();

    let connections = TaskTracker::new();
    let app: Router = crate::gateway::router(connections.clone())
        .with_state(state.clone())
        .merge(crate::api::router(state));
    info!(addr = %listener.local_addr()?, "hub listening");
    let graceful = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { graceful.cancelled().await })
        .await?;

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
    background.wait().await;
    store.close().await;
    info!("hub stopped");
    Ok(())
}
