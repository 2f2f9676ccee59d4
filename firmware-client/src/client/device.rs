//! The application's handle on one device.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use schema::{ActuatorDecl, Hello, List, PROTOCOL_VERSION, SensorDecl, Uplink, Value, ValueKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use super::commands::{self, Actuators};
use super::config::DeviceConfig;
use super::error::{ConfigError, PushError};
use super::eventloop::{self, Setup};
use super::shared::Shared;
use super::stats::Stats;
use super::tls;
use crate::command::MAX_COMMAND_RESULT_BYTES;
use crate::command_log::CommandLog;
use crate::session::{Session, SessionConfig, StopReason};
use crate::storage::HeapStorage;

/// Where a device's connection stands, as published on [`Device::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Opening a connection, or waiting for Welcome.
    Connecting,
    /// Welcome received: telemetry flows.
    Connected {
        /// The id the hub authenticated.
        device_id: String,
    },
    /// Waiting before the next connection attempt.
    Backoff {
        /// Attempts since the last successful session (from 1).
        attempt: u32,
        /// How long this wait is.
        delay: Duration,
    },
    /// The device will not connect again.
    Stopped {
        /// Why.
        reason: StopReason,
    },
}

/// A device connected (or connecting) to the hub.
///
/// [`Device::start`] spawns the connection task, which connects, sends what
/// the outbox holds, and reconnects with backoff until stopped. Readings are
/// pushed with [`Device::push`] (waits for room) or [`Device::try_push`]
/// (fails when full), both cheap. Commands from the hub run the handlers
/// registered with [`DeviceConfig::on_command`], on a second task (only
/// started when there are handlers). Dropping the handle shuts the tasks
/// down like [`Device::shutdown`] without waiting for them.
pub struct Device {
    shared: Arc<Shared>,
    state: watch::Receiver<ConnectionState>,
    task: Option<JoinHandle<()>>,
}

impl Device {
    /// Validate `config` and start the connection task on the current tokio
    /// runtime.
    pub fn start(config: DeviceConfig) -> Result<Device, ConfigError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        // Built once: every reconnect reuses the same rustls configuration
        // (and its session cache).
        let connector = tls::connector(config.parsed_url()?, &config)?;
        let authorization = config.authorization()?;

        let session = Session::new(
            HeapStorage::new(
                config.outbox_capacity,
                config.max_in_flight_frames,
                config.max_batch,
            ),
            SessionConfig {
                max_batch: config.max_batch,
                max_in_flight: config.max_in_flight_frames,
                backoff_base: config.backoff_base,
                backoff_cap: config.backoff_cap,
                seed: config.seed.unwrap_or_else(rand::random),
                initial_seq: config.initial_seq,
            },
        );
        let buf_len = session
            .telemetry_buffer_len()
            .max(hello_len(&config)?)
            .max(MAX_COMMAND_RESULT_BYTES);
        let mut kinds: Vec<(u16, ValueKind)> =
            config.sensors.iter().map(|s| (s.id, s.kind)).collect();
        kinds.sort_unstable_by_key(|&(id, _)| id);
        let log = CommandLog::new(vec![None; config.command_memory].into_boxed_slice());

        let shared = Arc::new(Shared::new(session, log, kinds.into_boxed_slice()));
        // Every queued command holds a log slot in progress, so a channel
        // as long as the log never refuses one.
        let calls = (!config.handlers.is_empty()).then(|| {
            let (calls, queue) = mpsc::channel(config.command_memory);
            runtime.spawn(commands::run(
                Arc::clone(&shared),
                config.handlers.clone(),
                queue,
            ));
            calls
        });
        let (state_tx, state) = watch::channel(ConnectionState::Connecting);
        let setup = Setup {
            actuators: Actuators::new(&config),
            calls,
            config,
            authorization,
            connector,
            buf_len,
        };
        let task = runtime.spawn(eventloop::run(Arc::clone(&shared), setup, state_tx));
        Ok(Device {
            shared,
            state,
            task: Some(task),
        })
    }

    /// A receiver of the connection state; `changed().await` on it to follow
    /// transitions.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Store a reading for sending, or fail at once: [`PushError::Full`] when
    /// the outbox is full, or an invalid reading, or a stopped device.
    ///
    /// Give each sensor strictly increasing `time_ms` (ms since the Unix
    /// epoch): the hub keys readings by (device, sensor, time) and ignores
    /// duplicates.
    pub fn try_push(&self, sensor: u16, time_ms: u64, value: Value) -> Result<(), PushError> {
        self.check(sensor, &value)?;
        if let Some(&reason) = self.shared.stopped.get() {
            return Err(PushError::Stopped(reason));
        }
        let (pending, batch) = {
            let mut inner = self.shared.lock();
            let pending = inner
                .session
                .push(sensor, time_ms, value)
                .map_err(|_| PushError::Full)?;
            inner.counters.readings_pushed += 1;
            (pending, inner.session.batch_size())
        };
        // Wake the task only when there is something new for it: the first
        // pending reading (start the linger timer) or a full frame.
        if pending == 1 || pending % batch == 0 {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Store a reading for sending, waiting for room while the outbox is
    /// full (backpressure: nothing is ever dropped). Fails only for an
    /// invalid reading or a stopped device.
    pub async fn push(&self, sensor: u16, time_ms: u64, value: Value) -> Result<(), PushError> {
        loop {
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            match self.try_push(sensor, time_ms, value) {
                Err(PushError::Full) => progress.await,
                other => return other,
            }
        }
    }

    fn check(&self, sensor: u16, value: &Value) -> Result<(), PushError> {
        let kinds = &self.shared.kinds;
        let expected = kinds
            .binary_search_by_key(&sensor, |&(id, _)| id)
            .map(|i| kinds[i].1)
            .map_err(|_| PushError::UnknownSensor(sensor))?;
        if value.kind() != expected {
            return Err(PushError::WrongKind {
                sensor,
                expected,
                got: value.kind(),
            });
        }
        if !value.is_finite() {
            return Err(PushError::NonFinite(sensor));
        }
        Ok(())
    }

    /// The device's counters.
    pub fn stats(&self) -> Stats {
        let inner = self.shared.lock();
        inner.counters.snapshot(inner.session.outbox().len())
    }

    /// Readings not yet acknowledged by the hub.
    pub fn outstanding(&self) -> usize {
        self.shared.lock().session.outbox().len()
    }

    /// Send partial frames now and wait until every reading is acknowledged;
    /// true if that happened within `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.outstanding() == 0 {
                return true;
            }
            if self.shared.stopped.get().is_some() {
                return false;
            }
            self.shared.flush_now.store(true, Ordering::Release);
            self.shared.wake.notify_one();
            if timeout_at(deadline, progress).await.is_err() {
                return self.outstanding() == 0;
            }
        }
    }

    /// Drop the connection at once, without a close frame (as a network cut
    /// would); the task reconnects after a backoff delay and resends what
    /// was not acknowledged.
    pub fn disconnect_now(&self) {
        self.shared.cut.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Close the connection (code 1000), stop the task, and return how many
    /// readings were never acknowledged. Call [`Device::flush`] first to
    /// give them a chance.
    pub async fn shutdown(mut self) -> usize {
        self.request_shutdown();
        if let Some(task) = self.task.take() {
            // A panicked task leaves the outbox intact; report it all the same.
            let _ = task.await;
        }
        self.outstanding()
    }

    fn request_shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.request_shutdown();
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("state", &*self.state.borrow())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Bytes of this configuration's Hello frame.
fn hello_len(config: &DeviceConfig) -> Result<usize, ConfigError> {
    let sensors: Vec<SensorDecl<'_>> = config
        .sensors
        .iter()
        .map(|s| SensorDecl {
            id: s.id,
            name: &s.name,
            unit: &s.unit,
            kind: s.kind,
        })
        .collect();
    let actuators: Vec<ActuatorDecl<'_>> = config
        .actuators
        .iter()
        .map(|a| ActuatorDecl {
            id: a.id,
            name: &a.name,
            kind: a.kind,
        })
        .collect();
    let hello = Uplink::Hello(Hello {
        version: PROTOCOL_VERSION,
        firmware: &config.firmware,
        sensors: List::Borrowed(&sensors),
        actuators: List::Borrowed(&actuators),
    });
    schema::encode_uplink_to_vec(&hello)
        .map(|bytes| bytes.len())
        .map_err(|err| ConfigError::Invalid {
            field: "sensors",
            reason: format!("cannot encode Hello: {err}"),
        })
}
