//! Exponential backoff with full jitter between connection attempts.
//!
//! Attempt `n` (from 0) waits a uniformly random time in
//! `[0, min(cap, base * 2^n)]` ("full jitter"): after a hub restart a
//! thousand devices spread their reconnects over the whole window instead of
//! arriving in waves. The randomness comes from the caller, either one value
//! per delay ([`delay`]) or a seed for the small generator inside [`Backoff`],
//! so the core needs no entropy source and tests are reproducible.

use core::time::Duration;

/// The cap the device protocol recommends: never wait longer than 30 s.
pub const DEFAULT_CAP: Duration = Duration::from_secs(30);

/// The ceiling of attempt `attempt`: `min(cap, base * 2^attempt)`.
pub fn ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// The delay before attempt `attempt`, from one uniformly random `random`:
/// a value in `[0, ceiling(base, cap, attempt)]`.
pub fn delay(base: Duration, cap: Duration, attempt: u32, random: u64) -> Duration {
    let ceiling = ceiling(base, cap, attempt);
    // Nanoseconds: a 30 s cap is 3e10, far inside u64, and sub-millisecond
    // bases (tests) still get a real spread.
    let ceiling_ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    let ns = match ceiling_ns.checked_add(1) {
        Some(span) => random % span,
        None => random,
    };
    Duration::from_nanos(ns)
}

/// A small pseudo-random generator (SplitMix64): good enough to spread
/// reconnects, not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Backoff state of one device: counts attempts since the last success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: Rng,
}

impl Backoff {
    /// Delays grow from `base` up to `cap`; `seed` makes the jitter
    /// reproducible (give each device a different one).
    pub const fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
            rng: Rng::new(seed),
        }
    }

    /// The delay to wait before the next attempt; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = delay(self.base, self.cap, self.attempt, self.rng.next_u64());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Delays handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The connection worked (a Welcome arrived): start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(500);

    #[test]
    fn ceilings_double_from_base_up_to_the_cap() {
        assert_eq!(ceiling(BASE, DEFAULT_CAP, 0), BASE);
        assert_eq!(ceiling(BASE, DEFAULT_CAP, 1), Duration::from_secs(1));
        assert_eq!(ceiling(BASE, DEFAULT_CAP, 5), Duration::from_secs(16));
        assert_eq!(ceiling(BASE, DEFAULT_CAP, 6), DEFAULT_CAP);
        assert_eq!(ceiling(BASE, DEFAULT_CAP, u32::MAX), DEFAULT_CAP);
    }

    #[test]
    fn delays_cover_exactly_zero_to_the_ceiling() {
        assert_eq!(delay(BASE, DEFAULT_CAP, 3, 0), Duration::ZERO);
        let top = ceiling(BASE, DEFAULT_CAP, 3).as_nanos() as u64;
        assert_eq!(delay(BASE, DEFAULT_CAP, 3, top), Duration::from_nanos(top));
        assert_eq!(delay(BASE, DEFAULT_CAP, 3, top + 1), Duration::ZERO);
    }

    #[test]
    fn every_delay_stays_within_its_full_jitter_bound() {
        let mut backoff = Backoff::new(BASE, DEFAULT_CAP, 7);
        let mut largest = Duration::ZERO;
        for attempt in 0..200 {
            let bound = ceiling(BASE, DEFAULT_CAP, attempt);
            let delay = backoff.next_delay();
            assert!(delay <= bound, "attempt {attempt}: {delay:?} > {bound:?}");
            assert!(delay <= DEFAULT_CAP);
            largest = largest.max(delay);
        }
        assert_eq!(backoff.attempt(), 200);
        // 190 draws under a 30 s ceiling: the jitter reaches well past 15 s.
        assert!(largest > Duration::from_secs(15), "{largest:?}");
    }

    #[test]
    fn jitter_spreads_devices_apart() {
        let delays: Vec<Duration> = (0..50)
            .map(|seed| {
                let mut backoff = Backoff::new(BASE, DEFAULT_CAP, seed);
                for _ in 0..4 {
                    backoff.next_delay();
                }
                backoff.next_delay()
            })
            .collect();
        let below_half = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(4))
            .count();
        assert!(
            (10..=40).contains(&below_half),
            "{below_half} of 50 below half"
        );
    }

    #[test]
    fn reset_starts_again_from_the_base() {
        let mut backoff = Backoff::new(BASE, DEFAULT_CAP, 1);
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.attempt(), 0);
        for _ in 0..100 {
            let mut probe = backoff.clone();
            assert!(probe.next_delay() <= BASE);
            backoff.rng.next_u64();
        }
    }
}
