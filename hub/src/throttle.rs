//! Failed-authentication throttling per source address.
//!
//! Credential stuffing and reconnect storms with bad tokens cost a database
//! lookup each. [`AuthThrottle`] keeps, per source address, a token bucket
//! of `--auth-failures-per-minute` failures that refills continuously over a
//! minute. Only failures (a presented token or key that is wrong, unknown
//! or revoked) take a token; a success neither takes one nor resets the
//! bucket, so one good credential cannot launder an address's failures.
//! While an address's bucket is empty, every attempt from it — good
//! credentials included — is refused with 429 and `Retry-After` *before*
//! the database is asked, so a flood costs almost nothing.
//!
//! IPv6 addresses are grouped by their /64 prefix (one host usually holds a
//! whole /64); IPv4-mapped IPv6 addresses count as their IPv4 address.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] addresses. When the table is
//! full, buckets that have refilled completely (equivalent to no entry) are
//! pruned, at most once a second; if it is still full, new addresses are
//! not tracked until room frees up (failing open rather than locking out
//! everyone; such floods also show in `hub_handshakes_total`).
//!
//! The source address comes from the request's
//! `ConnectInfo<SocketAddr>` extension ([`PeerAddr`]); a request without it
//! (a router driven in tests without a socket) is not throttled.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use dashmap::DashMap;
use tokio::time::Instant;

/// Most source addresses tracked at once (about 50 bytes each).
pub const MAX_TRACKED: usize = 100_000;

/// How often a full table may be scanned for refilled buckets.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// An address refused for too many failed authentications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed authentications from this address; retry in {retry_after_secs} s")]
pub struct Throttled {
    /// Seconds until the address may try again (for `Retry-After`).
    pub retry_after_secs: u64,
}

/// One address's failure budget.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures it may still make; refills at `per_minute / 60` per second.
    tokens: f32,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

/// Failure buckets per source address; shared by the device handshake and
/// the API key check.
#[derive(Debug)]
pub struct AuthThrottle {
    /// Failures per address per minute (0: off).
    per_minute: u32,
    /// The buckets of addresses that failed recently.
    buckets: DashMap<IpAddr, Bucket>,
    /// When the table was last pruned.
    pruned: Mutex<Instant>,
}

impl AuthThrottle {
    /// A throttle allowing `per_minute` failures per address (0: off).
    pub fn new(per_minute: u32) -> AuthThrottle {
        AuthThrottle {
            per_minute,
            buckets: DashMap::new(),
            pruned: Mutex::new(Instant::now()),
        }
    }

    /// Whether throttling is on.
    pub fn enabled(&self) -> bool {
        self.per_minute > 0
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Refuses `addr` while its failure budget is spent; call before
    /// checking credentials.
    pub fn check(&self, addr: IpAddr) -> Result<(), Throttled> {
        self.check_at(addr, Instant::now())
    }

    /// Records one failed authentication from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        self.failed_at(addr, Instant::now());
    }

    fn capacity(&self) -> f32 {
        self.per_minute as f32
    }

    fn per_sec(&self) -> f32 {
        self.per_minute as f32 / 60.0
    }

    fn tokens_at(&self, bucket: &Bucket, now: Instant) -> f32 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f32();
        (bucket.tokens + elapsed * self.per_sec()).min(self.capacity())
    }

    fn check_at(&self, addr: IpAddr, now: Instant) -> Result<(), Throttled> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(bucket) = self.buckets.get(&key(addr)) else {
            return Ok(());
        };
        let tokens = self.tokens_at(&bucket, now);
        if tokens >= 1.0 {
            return Ok(());
        }
        let wait = (1.0 - tokens) / self.per_sec();
        Err(Throttled {
            // Less a hair, so float error cannot add a second.
            retry_after_secs: ((wait - 0.001).ceil() as u64).max(1),
        })
    }

    fn failed_at(&self, addr: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let addr = key(addr);
        if let Some(mut bucket) = self.buckets.get_mut(&addr) {
            bucket.tokens = (self.tokens_at(&bucket, now) - 1.0).max(0.0);
            bucket.updated = now;
            return;
        }
        if self.buckets.len() >= MAX_TRACKED {
            self.prune(now);
            if self.buckets.len() >= MAX_TRACKED {
                tracing::warn!(
                    tracked = MAX_TRACKED,
                    "failed-authentication table full; a new address is not throttled"
                );
                return;
            }
        }
        self.buckets
            .entry(addr)
            .and_modify(|bucket| {
                bucket.tokens = (self.tokens_at(bucket, now) - 1.0).max(0.0);
                bucket.updated = now;
            })
            .or_insert(Bucket {
                tokens: self.capacity() - 1.0,
                updated: now,
            });
    }

    /// Drops buckets that have refilled completely, at most once per
    /// [`PRUNE_EVERY`] (a scan of a full table takes milliseconds).
    fn prune(&self, now: Instant) {
        {
            let Ok(mut pruned) = self.pruned.try_lock() else {
                return;
            };
            if now.saturating_duration_since(*pruned) < PRUNE_EVERY {
                return;
            }
            *pruned = now;
        }
        let capacity = self.capacity();
        self.buckets
            .retain(|_, bucket| self.tokens_at(bucket, now) < capacity);
    }
}

/// The key of an address: IPv4 as is, IPv6 by its /64 prefix.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The peer's address from the `ConnectInfo<SocketAddr>` extension the
/// listener adds to every request; None when there is none.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<IpAddr>);

impl PeerAddr {
    /// The address of the connection `parts` arrived on, if known.
    pub fn of(parts: &Parts) -> PeerAddr {
        PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(PeerAddr::of(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn only_failures_spend_and_the_bucket_refills_per_minute() {
        let throttle = AuthThrottle::new(3);
        let start = Instant::now();
        let addr = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(throttle.check_at(addr, start), Ok(()));
            throttle.failed_at(addr, start);
        }
        // 3 per minute: one token back every 20 s.
        assert_eq!(
            throttle.check_at(addr, start),
            Err(Throttled {
                retry_after_secs: 20
            })
        );
        assert_eq!(
            throttle.check_at(addr, start + Duration::from_secs(15)),
            Err(Throttled {
                retry_after_secs: 5
            })
        );
        assert_eq!(
            throttle.check_at(addr, start + Duration::from_secs(20)),
            Ok(())
        );
        // Other addresses are not affected.
        assert_eq!(throttle.check_at(ip("192.0.2.2"), start), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let throttle = AuthThrottle::new(1);
        let now = Instant::now();
        throttle.failed_at(ip("2001:db8::1"), now);
        assert!(throttle.check_at(ip("2001:db8::ffff:2"), now).is_err());
        assert!(throttle.check_at(ip("2001:db8:0:1::1"), now).is_ok());
        throttle.failed_at(ip("::ffff:192.0.2.7"), now);
        assert!(throttle.check_at(ip("192.0.2.7"), now).is_err());
    }

    #[test]
    fn off_tracks_nothing() {
        let throttle = AuthThrottle::new(0);
        let addr = ip("192.0.2.1");
        for _ in 0..100 {
            throttle.failed(addr);
        }
        assert_eq!(throttle.check(addr), Ok(()));
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_refilled_buckets_are_pruned() {
        let throttle = AuthThrottle::new(60);
        let start = Instant::now();
        for i in 0..MAX_TRACKED as u32 + 10 {
            throttle.failed_at(IpAddr::from(i.to_be_bytes()), start);
        }
        assert_eq!(throttle.tracked(), MAX_TRACKED);
        // A minute later every bucket is full again: the next new address
        // prunes them all and is tracked.
        let later = start + Duration::from_secs(61);
        throttle.failed_at(ip("198.51.100.1"), later);
        assert_eq!(throttle.tracked(), 1);
    }
}
