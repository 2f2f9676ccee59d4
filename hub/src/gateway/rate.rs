//! The per-device rate limit: two token buckets per connection, one for
//! frames (every frame after Hello: Telemetry, CommandResult) and one for
//! readings.
//!
//! Each bucket holds `rate × device_rate_burst_secs` tokens and refills
//! continuously at `rate` per second, so an honest device can burst (a
//! backlog after a reconnect) without ever being refused. A frame that
//! overdraws a bucket is still processed, stored and acked: the limit never
//! drops data. What happens instead:
//!
//! 1. The first overdraw is a *warning*: the connection sends
//!    `Error { code: RATE_LIMITED, seq: None }` and stops reading the socket
//!    until the overdrawn bucket is full again, so TCP slows the device down.
//! 2. Another overdraw within the *grace window* (one burst period,
//!    `device_rate_burst_secs`, counted from when reading resumed) means the
//!    device keeps pushing harder than its budget: the connection closes
//!    with 1008 "rate limit exceeded". Everything unacked is resent by the
//!    device after it reconnects; the store makes the resend idempotent.
//!
//! The buckets belong to the connection: a reconnect starts full. That is
//! deliberate (no shared state per device across hubs), and bounded: every
//! reconnect costs a TLS and token handshake, and close 1008 comes after
//! two buckets, so a reconnecting flooder gets at most about two buckets
//! per connection.
//!
//! The state is a few floats and instants (well under 64 bytes), in line
//! with the per-connection memory budget. Time is `tokio::time::Instant`, so
//! tests can pause and advance it.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Limits;

/// The rates one device may sustain (0: that bucket is off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    /// Frames per second.
    pub frames_per_sec: u32,
    /// Readings per second.
    pub readings_per_sec: u32,
    /// Bucket size in seconds of the rate; also the grace window after a warning.
    pub burst_secs: u32,
}

impl RateSettings {
    /// The device rate settings of the hub's limits.
    pub fn from_limits(limits: &Limits) -> RateSettings {
        RateSettings {
            frames_per_sec: limits.device_max_frames_per_sec,
            readings_per_sec: limits.device_max_readings_per_sec,
            burst_secs: limits.device_rate_burst_secs.max(1),
        }
    }

    /// Whether any bucket is on.
    pub fn enabled(&self) -> bool {
        self.frames_per_sec > 0 || self.readings_per_sec > 0
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(u64::from(self.burst_secs))
    }
}

/// What the limiter says about one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Within budget.
    Within,
    /// The first overdraw: warn with this reason, then read nothing until
    /// `resume_at`.
    SlowDown {
        /// For the Error frame: "over N frames/s; slowing down".
        reason: String,
        /// When the overdrawn buckets are full again.
        resume_at: Instant,
    },
    /// Overdrawn again within the grace window after a warning: close 1008.
    Exceeded,
}

/// The two buckets of one connection.
#[derive(Debug)]
pub struct DeviceRate {
    /// Frame tokens; may go negative (a debt) when a frame overdraws.
    frames: f32,
    /// Reading tokens; may go negative likewise.
    readings: f32,
    /// When the buckets were last refilled.
    updated: Instant,
    /// After a warning: overdrawing again before this instant closes the connection.
    strict_until: Option<Instant>,
}

impl DeviceRate {
    /// Full buckets at `now`.
    pub fn new(settings: &RateSettings, now: Instant) -> DeviceRate {
        DeviceRate {
            frames: capacity(settings.frames_per_sec, settings.burst_secs),
            readings: capacity(settings.readings_per_sec, settings.burst_secs),
            updated: now,
            strict_until: None,
        }
    }

    /// Charges one frame carrying `readings` readings at `now`.
    pub fn charge(&mut self, settings: &RateSettings, readings: u32, now: Instant) -> Verdict {
        self.refill(settings, now);
        let mut over = None;
        let mut wait = 0.0f32;
        if settings.frames_per_sec > 0 {
            self.frames -= 1.0;
            if self.frames < 0.0 {
                let full = capacity(settings.frames_per_sec, settings.burst_secs);
                wait = wait.max((full - self.frames) / settings.frames_per_sec as f32);
                over = Some(format!(
                    "over {} frames/s; slowing down",
                    settings.frames_per_sec
                ));
            }
        }
        if settings.readings_per_sec > 0 {
            self.readings -= readings as f32;
            if self.readings < 0.0 {
                let full = capacity(settings.readings_per_sec, settings.burst_secs);
                wait = wait.max((full - self.readings) / settings.readings_per_sec as f32);
                over.get_or_insert_with(|| {
                    format!(
                        "over {} readings/s; slowing down",
                        settings.readings_per_sec
                    )
                });
            }
        }
        let Some(reason) = over else {
            return Verdict::Within;
        };
        if self.strict_until.is_some_and(|until| now < until) {
            return Verdict::Exceeded;
        }
        // Whole milliseconds, rounded up: at `resume_at` the bucket is full.
        let resume_at = now + Duration::from_millis((wait.max(0.0) * 1000.0).ceil() as u64);
        self.strict_until = Some(resume_at + settings.grace());
        Verdict::SlowDown { reason, resume_at }
    }

    fn refill(&mut self, settings: &RateSettings, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f32();
        self.updated = now;
        if settings.frames_per_sec > 0 {
            self.frames = (self.frames + elapsed * settings.frames_per_sec as f32)
                .min(capacity(settings.frames_per_sec, settings.burst_secs));
        }
        if settings.readings_per_sec > 0 {
            self.readings = (self.readings + elapsed * settings.readings_per_sec as f32)
                .min(capacity(settings.readings_per_sec, settings.burst_secs));
        }
    }
}

fn capacity(rate: u32, burst_secs: u32) -> f32 {
    rate as f32 * burst_secs.max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: RateSettings = RateSettings {
        frames_per_sec: 10,
        readings_per_sec: 100,
        burst_secs: 2,
    };

    #[test]
    fn a_burst_up_to_the_bucket_is_within() {
        let start = Instant::now();
        let mut rate = DeviceRate::new(&SETTINGS, start);
        for _ in 0..20 {
            assert_eq!(rate.charge(&SETTINGS, 10, start), Verdict::Within);
        }
        // Refilled after a second: 10 more frames, 100 more readings.
        let later = start + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(rate.charge(&SETTINGS, 10, later), Verdict::Within);
        }
    }

    #[test]
    fn overdraw_warns_once_then_exceeds_within_grace() {
        let start = Instant::now();
        let mut rate = DeviceRate::new(&SETTINGS, start);
        for _ in 0..20 {
            assert_eq!(rate.charge(&SETTINGS, 1, start), Verdict::Within);
        }
        let Verdict::SlowDown { reason, resume_at } = rate.charge(&SETTINGS, 1, start) else {
            panic!("expected a warning");
        };
        assert_eq!(reason, "over 10 frames/s; slowing down");
        // Debt of one frame plus a full bucket of 20 at 10/s.
        let pause = resume_at - start;
        assert!(
            (Duration::from_millis(2100)..=Duration::from_millis(2102)).contains(&pause),
            "{pause:?}"
        );
        // Full again at resume: a burst is fine, a second overdraw closes.
        for _ in 0..20 {
            assert_eq!(rate.charge(&SETTINGS, 1, resume_at), Verdict::Within);
        }
        assert_eq!(rate.charge(&SETTINGS, 1, resume_at), Verdict::Exceeded);
    }

    #[test]
    fn after_the_grace_window_it_is_a_new_warning() {
        let start = Instant::now();
        let mut rate = DeviceRate::new(&SETTINGS, start);
        let Verdict::SlowDown { resume_at, .. } = rate.charge(&SETTINGS, 500, start) else {
            panic!("expected a warning");
        };
        assert!(resume_at >= start + Duration::from_secs(4));
        let late = resume_at + SETTINGS.grace() + Duration::from_millis(1);
        assert!(matches!(
            rate.charge(&SETTINGS, 500, late),
            Verdict::SlowDown { reason, .. } if reason == "over 100 readings/s; slowing down"
        ));
    }

    #[test]
    fn zero_rates_are_off() {
        let off = RateSettings {
            frames_per_sec: 0,
            readings_per_sec: 0,
            burst_secs: 1,
        };
        assert!(!off.enabled());
        let now = Instant::now();
        let mut rate = DeviceRate::new(&off, now);
        for _ in 0..10_000 {
            assert_eq!(rate.charge(&off, 1000, now), Verdict::Within);
        }
    }
}
