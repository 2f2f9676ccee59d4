//! The device task: connect, run the connection, back off, repeat.
//!
//! It ends only when the session says stop: credentials refused, a close
//! code after which reconnecting is pointless, or shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tracing::{debug, warn};

use super::commands::{Actuators, CommandCall};
use super::config::DeviceConfig;
use super::connection;
use super::device::ConnectionState;
use super::shared::Shared;
use crate::session::{Disconnect, Next, StopReason};

/// What the task needs besides the shared state; fixed at start.
pub(crate) struct Setup {
    pub config: DeviceConfig,
    /// `None` when the client certificate authenticates the device.
    pub authorization: Option<HeaderValue>,
    pub connector: Connector,
    /// Size of the encode buffer: fits Hello, any telemetry frame, a CommandResult.
    pub buf_len: usize,
    /// Declared actuators and which have handlers, for the command rules.
    pub actuators: Actuators,
    /// Where commands to run go (the worker task), if any handler exists.
    /// Dropped with the task, which ends the worker.
    pub calls: Option<mpsc::Sender<CommandCall>>,
}

pub(crate) async fn run(shared: Arc<Shared>, setup: Setup, state: watch::Sender<ConnectionState>) {
    let mut buf = vec![0u8; setup.buf_len];
    let reason = loop {
        if shared.shutdown.load(Ordering::Acquire) {
            break stop(&shared, Disconnect::Shutdown);
        }
        state.send_replace(ConnectionState::Connecting);
        // A cut asked for while not connected has nothing to cut.
        shared.cut.store(false, Ordering::Release);
        let how = tokio::select! {
            connected = connection::connect(&setup) => match connected {
                Ok(mut ws) => connection::run(&shared, &setup, &mut ws, &state, &mut buf).await,
                Err(how) => how,
            },
            () = wait_for_shutdown(&shared) => Disconnect::Shutdown,
        };
        let next = shared.lock().disconnected(how);
        match next {
            Next::Stop(reason) => break reason,
            Next::Reconnect { attempt, delay } => {
                debug!(attempt, ?delay, ?how, "reconnecting after backoff");
                state.send_replace(ConnectionState::Backoff { attempt, delay });
                let deadline = Instant::now() + delay;
                tokio::select! {
                    () = sleep_until(deadline) => {}
                    () = wait_for_shutdown(&shared) => break stop(&shared, Disconnect::Shutdown),
                }
            }
        }
    };
    if reason != StopReason::Shutdown {
        warn!(url = %setup.config.url, %reason, "device stopped; it will not reconnect");
    }
    let _ = shared.stopped.set(reason);
    state.send_replace(ConnectionState::Stopped { reason });
    shared.progress.notify_waiters();
}

fn stop(shared: &Shared, how: Disconnect) -> StopReason {
    match shared.lock().disconnected(how) {
        Next::Stop(reason) => reason,
        Next::Reconnect { .. } => StopReason::Shutdown,
    }
}

async fn wait_for_shutdown(shared: &Shared) {
    loop {
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}
