//! State shared by a [`Device`](crate::Device) handle and its task.

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use schema::ValueKind;
use tokio::sync::Notify;

use super::stats::Counters;
use crate::session::{Session, StopReason};
use crate::storage::HeapStorage;

/// What the mutex protects: the protocol session (with its outbox) and the
/// counters, updated together so a snapshot is consistent.
pub(crate) struct Inner {
    pub session: Session<HeapStorage>,
    pub counters: Counters,
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the task: a frame's worth is pending, a linger must start, or a
    /// control flag below changed.
    pub wake: Notify,
    /// Wakes `push` and `flush` waiters: acks freed room, or the task ended.
    pub progress: Notify,
    /// Close with 1000 and end the task.
    pub shutdown: AtomicBool,
    /// Drop the current connection without a close frame.
    pub cut: AtomicBool,
    /// Send partial frames now instead of lingering.
    pub flush_now: AtomicBool,
    /// Set once when the task ends.
    pub stopped: OnceLock<StopReason>,
    /// Declared sensors, sorted by id, to validate pushes.
    pub kinds: Box<[(u16, ValueKind)]>,
    /// Origin of the microsecond clock stored with sent frames.
    epoch: Instant,
}

impl Shared {
    pub(crate) fn new(session: Session<HeapStorage>, kinds: Box<[(u16, ValueKind)]>) -> Self {
        Shared {
            inner: Mutex::new(Inner {
                session,
                counters: Counters::default(),
            }),
            wake: Notify::new(),
            progress: Notify::new(),
            shutdown: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            flush_now: AtomicBool::new(false),
            stopped: OnceLock::new(),
            kinds,
            epoch: Instant::now(),
        }
    }

    /// Lock the session. Nothing panics while holding it, but a poisoned lock
    /// still holds consistent counters, so carry on rather than propagate.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Microseconds since the device started (the `now` given to the session).
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}
