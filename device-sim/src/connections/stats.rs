//! What the connections record while they run, shared by all of them:
//! per phase (the ramp, the storm) the connect latencies, the successes and
//! the failures by reason; the pings received; the connections the hub
//! closed while they were held, by reason.
//!
//! Written by tens of thousands of tasks, read by the controller: atomics
//! for the counts, short mutexes for the histograms and reason maps (each
//! connection touches them once per attempt, not per message).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::link::Failure;

/// Counts by reason, in reason order (stable output).
pub type Reasons = BTreeMap<String, u64>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A clock for the whole run: monotonic offsets, convertible to Unix time
/// so several processes' phases can be lined up by the bench script.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_ms: f64,
}

impl Clock {
    /// Starts now.
    pub fn new() -> Self {
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        Clock {
            start: Instant::now(),
            start_unix_ms,
        }
    }

    /// Nanoseconds since the start, now.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Unix time in milliseconds of an offset.
    pub fn unix_ms(&self, ns: u64) -> f64 {
        self.start_unix_ms + ns as f64 / 1e6
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The connection attempts of one phase (the ramp or the storm).
#[derive(Debug)]
pub struct PhaseStats {
    /// Attempt start (after waiting for a `--connect-concurrency` slot) to
    /// Welcome, in microseconds.
    latency: Mutex<Histogram<u64>>,
    /// Welcomes received.
    connected: AtomicU64,
    /// Attempts that ended without one, by reason.
    failures: Mutex<Reasons>,
    /// Devices that stopped trying (their last attempt failed).
    gave_up: AtomicU64,
    /// The first attempt's start ([`Clock::now_ns`]); `u64::MAX` before.
    first_attempt_ns: AtomicU64,
    /// The last Welcome ([`Clock::now_ns`]); 0 before.
    last_welcome_ns: AtomicU64,
}

impl PhaseStats {
    fn new() -> anyhow::Result<Self> {
        Ok(PhaseStats {
            latency: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
            connected: AtomicU64::new(0),
            failures: Mutex::new(Reasons::new()),
            gave_up: AtomicU64::new(0),
            first_attempt_ns: AtomicU64::new(u64::MAX),
            last_welcome_ns: AtomicU64::new(0),
        })
    }

    /// An attempt starts at `ns`.
    pub fn attempt(&self, ns: u64) {
        self.first_attempt_ns.fetch_min(ns, Ordering::Relaxed);
    }

    /// An attempt started at `started_ns` got its Welcome at `now_ns`.
    pub fn connected(&self, started_ns: u64, now_ns: u64) {
        let micros = now_ns.saturating_sub(started_ns) / 1000;
        lock(&self.latency).saturating_record(micros.max(1));
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.last_welcome_ns.fetch_max(now_ns, Ordering::Relaxed);
    }

    /// An attempt failed.
    pub fn failed(&self, failure: Failure) {
        *lock(&self.failures).entry(failure.0).or_default() += 1;
    }

    /// A device stopped trying: its last attempt failed.
    pub fn gave_up(&self) {
        self.gave_up.fetch_add(1, Ordering::Relaxed);
    }

    /// Welcomes so far.
    pub fn connected_count(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// Failures so far.
    pub fn failed_count(&self) -> u64 {
        lock(&self.failures).values().sum()
    }

    /// The phase's figures, its start taken as `from_ns` when given (the
    /// storm starts when the connections are cut, not at the first
    /// reconnect), else the first attempt.
    pub fn report(&self, clock: &Clock, from_ns: Option<u64>) -> PhaseReport {
        let connected = self.connected_count();
        let failures = lock(&self.failures).clone();
        let first = self.first_attempt_ns.load(Ordering::Relaxed);
        let started_ns = from_ns.unwrap_or(if first == u64::MAX { 0 } else { first });
        let ended_ns = self.last_welcome_ns.load(Ordering::Relaxed).max(started_ns);
        let seconds = Duration::from_nanos(ended_ns - started_ns).as_secs_f64();
        let rate_per_s = if seconds > 0.0 {
            connected as f64 / seconds
        } else {
            0.0
        };
        PhaseReport {
            connected,
            failed: failures.values().sum(),
            gave_up: self.gave_up.load(Ordering::Relaxed),
            failures,
            seconds,
            rate_per_s,
            latency_ms: LatencyMs::of(&lock(&self.latency)),
            started_unix_ms: clock.unix_ms(started_ns).round(),
            ended_unix_ms: clock.unix_ms(ended_ns).round(),
        }
    }
}

/// One phase's figures in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    /// Welcomes received.
    pub connected: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Devices whose last attempt failed (with retries, fewer than `failed`).
    pub gave_up: u64,
    /// Failed attempts by reason.
    pub failures: Reasons,
    /// From the phase's start to the last Welcome.
    pub seconds: f64,
    /// `connected / seconds`.
    pub rate_per_s: f64,
    /// Connect latency (attempt start to Welcome).
    pub latency_ms: LatencyMs,
    /// The phase's start, Unix milliseconds.
    pub started_unix_ms: f64,
    /// The last Welcome, Unix milliseconds.
    pub ended_unix_ms: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl LatencyMs {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencyMs::default();
        }
        let ms = |micros: u64| (micros as f64 / 1000.0 * 100.0).round() / 100.0;
        LatencyMs {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// Everything the connections record.
#[derive(Debug)]
pub struct Stats {
    /// The run's clock.
    pub clock: Clock,
    /// First connection of every device.
    pub ramp: PhaseStats,
    /// Reconnection of every held device after the storm's cut.
    pub storm: PhaseStats,
    /// Pings received from the hub, over the whole run.
    pings: AtomicU64,
    /// Connections the hub closed (or lost) before the storm, by reason.
    hold_drops: Mutex<Reasons>,
    /// Reconnected connections lost after the storm, by reason.
    storm_drops: Mutex<Reasons>,
}

impl Stats {
    /// Nothing recorded yet.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Stats {
            clock: Clock::new(),
            ramp: PhaseStats::new()?,
            storm: PhaseStats::new()?,
            pings: AtomicU64::new(0),
            hold_drops: Mutex::new(Reasons::new()),
            storm_drops: Mutex::new(Reasons::new()),
        })
    }

    /// A ping arrived.
    pub fn ping(&self) {
        self.pings.fetch_add(1, Ordering::Relaxed);
    }

    /// Pings so far.
    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }

    /// A held connection ended, before the storm (`after_storm` false) or
    /// after its reconnection.
    pub fn dropped(&self, failure: Failure, after_storm: bool) {
        let map = if after_storm {
            &self.storm_drops
        } else {
            &self.hold_drops
        };
        *lock(map).entry(failure.0).or_default() += 1;
    }

    /// Drops before the storm, by reason.
    pub fn hold_drops(&self) -> Reasons {
        lock(&self.hold_drops).clone()
    }

    /// Drops after the storm, by reason.
    pub fn storm_drops(&self) -> Reasons {
        lock(&self.storm_drops).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_reports_rate_latency_and_reasons() -> anyhow::Result<()> {
        let stats = Stats::new()?;
        let ramp = &stats.ramp;
        ramp.attempt(1_000_000_000);
        ramp.attempt(1_100_000_000);
        ramp.connected(1_000_000_000, 1_010_000_000);
        ramp.connected(1_100_000_000, 1_500_000_000);
        ramp.failed(Failure("http 401 Unauthorized".to_owned()));
        ramp.failed(Failure("http 401 Unauthorized".to_owned()));
        let report = ramp.report(&stats.clock, None);
        assert_eq!(report.connected, 2);
        assert_eq!(report.failed, 2);
        assert_eq!(report.failures["http 401 Unauthorized"], 2);
        assert!((report.seconds - 0.5).abs() < 1e-9, "{report:?}");
        assert!((report.rate_per_s - 4.0).abs() < 1e-9);
        assert!((report.latency_ms.max - 400.0).abs() < 0.5, "{report:?}");
        // Measured from a given start instead.
        let from = ramp.report(&stats.clock, Some(500_000_000));
        assert!((from.seconds - 1.0).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn an_empty_phase_reports_zeros() -> anyhow::Result<()> {
        let stats = Stats::new()?;
        let report = stats.storm.report(&stats.clock, None);
        assert_eq!(report.connected, 0);
        assert_eq!(report.seconds, 0.0);
        assert_eq!(report.rate_per_s, 0.0);
        assert_eq!(report.latency_ms, LatencyMs::default());
        Ok(())
    }
}
