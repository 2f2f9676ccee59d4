//! The run: credentials, ramp-up, generation, chaos, drain, summary.
//!
//! Cheap by construction, since the simulator shares the machine with the
//! hub it measures: one generator task per device wakes every few tens of
//! milliseconds and pushes the readings due since its last tick (a short
//! lock and a slot write each, no allocation, no channel); the device's own
//! task batches them into frames. Commands from the hub run the handlers of
//! [`crate::actuators`], which change the state the generator reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use firmware_client::{ConnectionState, Device, DeviceConfig, PushError};
use futures_util::future::join_all;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::actuators::{self, ActuatorState};
use crate::args::{Args, Endpoints};
use crate::provision::{self, Credential};
use crate::report::{Latency, Progress, Summary, Totals};
use crate::sensors::{self, DeviceModel};

/// Run the whole simulation described by `args`.
pub async fn run(args: &Args) -> anyhow::Result<Summary> {
    args.validate()?;
    // reqwest (no provider compiled in) and rustls need a process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let endpoints = args.endpoints()?;
    let ca_pem = match &args.ca_cert {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("--ca {}", path.display()))?)
        }
        None => None,
    };
    let credentials: Vec<Credential> = match (&args.cert_dir, &args.tokens, &args.api_key) {
        (Some(dir), _, key) => {
            let certs = provision::read_cert_dir(dir, args.devices)?;
            if let Some(key) = key {
                let ids: Vec<&str> = certs
                    .iter()
                    .filter_map(|c| match c {
                        Credential::Certificate { id, .. } => Some(id.as_str()),
                        Credential::Token(_) => None,
                    })
                    .collect();
                provision::check_devices_exist(&endpoints.api_base, key, &ids, ca_pem.as_deref())
                    .await?;
            }
            certs
        }
        (None, Some(path), _) => provision::read_tokens(path, args.devices)?
            .into_iter()
            .map(Credential::Token)
            .collect(),
        (None, None, Some(key)) => {
            eprintln!(
                "provisioning {} devices at {}",
                args.devices, endpoints.api_base
            );
            provision::provision(
                &endpoints.api_base,
                key,
                &args.name_prefix,
                args.devices,
                ca_pem.as_deref(),
            )
            .await?
            .into_iter()
            .map(Credential::Token)
            .collect()
        }
        (None, None, None) => anyhow::bail!("give --api-key, --tokens or --cert-dir"),
    };

    let latency = Arc::new(Latency::new()?);
    let mut progress = Progress::new();
    // One model per device, in credential order; its actuator state is
    // shared with the device's command handlers.
    let models: Vec<DeviceModel> = (0..credentials.len() as u64)
        .map(DeviceModel::new)
        .collect();
    let states: Vec<Arc<ActuatorState>> =
        models.iter().map(|m| Arc::clone(m.actuators())).collect();
    let (devices, devices_connected) = ramp_up(
        args,
        &endpoints,
        credentials,
        &states,
        ca_pem,
        &latency,
        &mut progress,
    )
    .await?;

    let summary_base = |totals: Totals, duration: Duration, chaos_cuts: u64| Summary {
        devices: totals.devices,
        devices_connected,
        devices_stopped: totals.stopped,
        duration_s: duration.as_secs_f64(),
        readings_sent: totals.sent,
        readings_acked: totals.acked,
        outstanding: totals.outstanding,
        reconnects: totals.reconnects,
        errors: totals.errors,
        ack_latency_ms: latency.summary(),
        readings_per_s: if duration.is_zero() {
            0.0
        } else {
            totals.acked as f64 / duration.as_secs_f64()
        },
        frames_sent: totals.frames_sent,
        frames_resent: totals.frames_resent,
        chaos_cuts,
        drain_timeout_s: args.drain_timeout,
        commands_applied: totals.commands_applied,
    };
    if devices_connected == 0 {
        progress.finish();
        let totals = totals(&devices);
        shutdown(devices).await;
        return Ok(summary_base(totals, Duration::ZERO, 0));
    }

    // Generation.
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let tick = tick_for(args.rate, args.batch);
    let mut generators = JoinSet::new();
    // Spread the devices' starts over one frame's worth of readings, so their
    // frames fill (and are sent) evenly over time, as a real fleet's do,
    // rather than all in the same instant.
    let frame_period = frame_period(args.rate, args.batch);
    for (i, (device, model)) in devices.iter().zip(models).enumerate() {
        let phase = frame_period.mul_f64(i as f64 / devices.len() as f64);
        generators.spawn(generate(
            Arc::clone(device),
            model,
            Pace {
                rate: args.rate,
                started,
                tick,
                phase,
            },
            cancel.clone(),
        ));
    }
    let chaos_cuts = Arc::new(AtomicU64::new(0));
    if let Some(every) = args.chaos_disconnect_every {
        tokio::spawn(chaos(
            devices.clone(),
            Duration::from_secs_f64(every),
            Arc::clone(&chaos_cuts),
            cancel.clone(),
        ));
    }
    let mut ticker = interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    let generation_end = started + args.duration();
    loop {
        tokio::select! {
            () = sleep_until(generation_end) => break,
            _ = ticker.tick() => progress.update("running", &totals(&devices), &latency),
        }
    }
    cancel.cancel();
    while generators.join_next().await.is_some() {}

    // Drain: send partial frames now and wait for every ack, within the timeout.
    let drain_timeout = args.drain_timeout();
    {
        let flushes = join_all(devices.iter().map(|d| d.flush(drain_timeout)));
        tokio::pin!(flushes);
        loop {
            tokio::select! {
                _ = &mut flushes => break,
                _ = ticker.tick() => progress.update("draining", &totals(&devices), &latency),
            }
        }
    }
    let measured = started.elapsed();
    let final_totals = totals(&devices);
    progress.update("done", &final_totals, &latency);
    progress.finish();
    shutdown(devices).await;
    Ok(summary_base(
        final_totals,
        measured,
        chaos_cuts.load(Ordering::Relaxed),
    ))
}

/// Start every device with at most `--connect-concurrency` handshakes in
/// flight, its command handlers driving `states[i]`; returns the devices (in
/// credential order) and how many connected.
async fn ramp_up(
    args: &Args,
    endpoints: &Endpoints,
    credentials: Vec<Credential>,
    states: &[Arc<ActuatorState>],
    ca_pem: Option<Vec<u8>>,
    latency: &Arc<Latency>,
    progress: &mut Progress,
) -> anyhow::Result<(Vec<Arc<Device>>, usize)> {
    let semaphore = Arc::new(Semaphore::new(args.connect_concurrency));
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    let mut starting = JoinSet::new();
    for (i, (credential, state)) in credentials.into_iter().zip(states).enumerate() {
        let config = device_config(args, endpoints, credential, state, ca_pem.clone(), latency);
        let semaphore = Arc::clone(&semaphore);
        starting.spawn(async move {
            let _permit = semaphore.acquire_owned().await?;
            let device = Device::start(config)?;
            let mut state = device.state();
            let _ = timeout(
                connect_timeout,
                state.wait_for(|s| !matches!(s, ConnectionState::Connecting)),
            )
            .await;
            let connected = matches!(*state.borrow(), ConnectionState::Connected { .. });
            anyhow::Ok((i, device, connected))
        });
    }

    let mut slots: Vec<Option<Arc<Device>>> = (0..args.devices).map(|_| None).collect();
    let mut connected = 0;
    let mut ticker = interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            joined = starting.join_next() => match joined {
                None => break,
                Some(joined) => {
                    let (i, device, ok) = joined.context("ramp-up task")??;
                    connected += usize::from(ok);
                    slots[i] = Some(Arc::new(device));
                }
            },
            _ = ticker.tick() => {
                let started: Vec<Arc<Device>> = slots.iter().flatten().cloned().collect();
                let mut totals = totals(&started);
                totals.devices = args.devices;
                progress.update("ramp-up", &totals, latency);
            }
        }
    }
    let devices = slots.into_iter().flatten().collect();
    Ok((devices, connected))
}

fn device_config(
    args: &Args,
    endpoints: &Endpoints,
    credential: Credential,
    state: &Arc<ActuatorState>,
    ca_pem: Option<Vec<u8>>,
    latency: &Arc<Latency>,
) -> DeviceConfig {
    let base = match credential {
        Credential::Token(token) => DeviceConfig::new(&endpoints.device_url, token),
        // The certificate names the device; no token is sent.
        Credential::Certificate {
            cert_pem, key_pem, ..
        } => DeviceConfig::new(&endpoints.device_url, "").client_cert(cert_pem, key_pem),
    };
    let mut config = actuators::register(base, state);
    config.firmware = concat!("device-sim/", env!("CARGO_PKG_VERSION")).to_owned();
    config.sensors = sensors::specs();
    config.outbox_capacity = args.outbox;
    config.max_batch = args.batch;
    config.max_in_flight_frames = args.window;
    config.flush_interval = Duration::from_millis(args.linger_ms);
    config.connect_timeout = Duration::from_secs_f64(args.connect_timeout.max(1.0));
    config.extra_root_certs_pem = ca_pem;
    let latency = Arc::clone(latency);
    config.on_ack = Some(Arc::new(move |ack| latency.record(ack.latency)));
    config
}

/// Time one device takes to produce a full frame (capped at 10 s).
fn frame_period(rate: f64, batch: usize) -> Duration {
    if rate <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64((batch as f64 / rate).min(10.0))
}

/// How often a generator wakes: about four times per frame's worth of
/// readings, between 10 ms and 250 ms.
fn tick_for(rate: f64, batch: usize) -> Duration {
    if rate <= 0.0 {
        return Duration::from_millis(10);
    }
    let seconds = batch as f64 / rate / 4.0;
    Duration::from_secs_f64(seconds.clamp(0.010, 0.250))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When a generator pushes.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Readings per second; 0 floods.
    rate: f64,
    /// Start of generation, common to all devices; each counts the readings
    /// due from `started + phase`.
    started: Instant,
    /// Time between wake-ups.
    tick: Duration,
    /// This device's start offset, so devices do not fill frames together.
    phase: Duration,
}

/// Push one device's readings at its pace until cancelled.
async fn generate(
    device: Arc<Device>,
    mut model: DeviceModel,
    pace: Pace,
    cancel: CancellationToken,
) {
    let Pace {
        rate,
        started,
        tick,
        phase,
    } = pace;
    if rate <= 0.0 {
        return flood(device, model, cancel).await;
    }
    tokio::select! {
        () = sleep(phase) => {}
        () = cancel.cancelled() => return,
    }
    let mut produced = 0u64;
    // Behind by more than a second (backpressure): skip ahead rather than
    // burst, so the rate stays an honest target.
    let max_debt = (rate.ceil() as u64).max(1);
    let mut ticker = interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            () = cancel.cancelled() => true,
        };
        let due = (started.elapsed().saturating_sub(phase).as_secs_f64() * rate) as u64;
        if due.saturating_sub(produced) > max_debt {
            produced = due - max_debt;
        }
        let now = now_ms();
        if last {
            // The readings due up to the end of generation, without waiting.
            while produced < due {
                let (sensor, time, value) = model.next_reading(now);
                if device.try_push(sensor, time, value).is_err() {
                    return;
                }
                produced += 1;
            }
            return;
        }
        while produced < due {
            if !push_one(&device, &mut model, now, &cancel).await {
                return;
            }
            produced += 1;
        }
    }
}

/// Push as fast as the outbox has room (`--rate 0`).
async fn flood(device: Arc<Device>, mut model: DeviceModel, cancel: CancellationToken) {
    while !cancel.is_cancelled() {
        let now = now_ms();
        for _ in 0..256 {
            if !push_one(&device, &mut model, now, &cancel).await {
                return;
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Push the model's next reading, waiting for room if the outbox is full;
/// false when the generator should end (cancelled, or the device stopped).
async fn push_one(
    device: &Device,
    model: &mut DeviceModel,
    now: u64,
    cancel: &CancellationToken,
) -> bool {
    let (sensor, time, value) = model.next_reading(now);
    match device.try_push(sensor, time, value) {
        Ok(()) => true,
        Err(PushError::Full) => tokio::select! {
            pushed = device.push(sensor, time, value) => match pushed {
                Ok(()) => true,
                Err(err) => {
                    debug!(%err, "generator ends");
                    false
                }
            },
            () = cancel.cancelled() => false,
        },
        Err(err) => {
            debug!(%err, "generator ends");
            false
        }
    }
}

/// Cut a random device's connection every `every` until cancelled.
async fn chaos(
    devices: Vec<Arc<Device>>,
    every: Duration,
    cuts: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    let mut ticker = interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = cancel.cancelled() => return,
        }
        let victim = rand::rng().random_range(0..devices.len());
        devices[victim].disconnect_now();
        cuts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sum every device's counters and states.
fn totals(devices: &[Arc<Device>]) -> Totals {
    let mut totals = Totals {
        devices: devices.len(),
        ..Totals::default()
    };
    for device in devices {
        match *device.state().borrow() {
            ConnectionState::Connected { .. } => totals.connected += 1,
            ConnectionState::Stopped { .. } => totals.stopped += 1,
            _ => {}
        }
        let stats = device.stats();
        totals.sent += stats.readings_pushed;
        totals.acked += stats.readings_acked;
        totals.outstanding += stats.outstanding;
        totals.reconnects += stats.reconnects;
        totals.errors += stats.errors_received;
        totals.frames_sent += stats.frames_sent;
        totals.frames_resent += stats.frames_resent;
        totals.commands_applied += stats.commands_applied;
    }
    totals
}

/// Close every device (code 1000), all at once.
async fn shutdown(devices: Vec<Arc<Device>>) {
    join_all(devices.into_iter().map(|device| async move {
        match Arc::try_unwrap(device) {
            Ok(device) => {
                device.shutdown().await;
            }
            // Still shared (a chaos task not yet gone): dropping the handle
            // asks the task to stop all the same.
            Err(shared) => drop(shared),
        }
    }))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_stay_between_10_and_250_ms() {
        assert_eq!(
            tick_for(300.0, 50),
            Duration::from_secs_f64(50.0 / 300.0 / 4.0)
        );
        assert_eq!(tick_for(100_000.0, 10), Duration::from_millis(10));
        assert_eq!(tick_for(0.1, 50), Duration::from_millis(250));
        assert_eq!(tick_for(0.0, 50), Duration::from_millis(10));
    }
}
