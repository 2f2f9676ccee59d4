//! State shared by a [`Device`](crate::Device) handle and its task.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use schema::ValueKind;
use tokio::sync::Notify;

use super::stats::Counters;
use crate::command::Outcome;
use crate::command_log::{CommandLog, Remembered};
use crate::session::{Disconnect, Next, Session, SessionState, StopReason};
use crate::storage::HeapStorage;

/// The command log of the tokio transport: slots on the heap, sized by
/// `DeviceConfig::command_memory`.
pub(crate) type HeapCommandLog = CommandLog<Box<[Option<Remembered>]>>;

/// What the mutex protects: the protocol session (with its outbox), the
/// command log and the counters, updated together so a snapshot is
/// consistent.
pub(crate) struct Inner {
    pub session: Session<HeapStorage>,
    pub counters: Counters,
    /// Recent command ids and their outcomes (at most once per id).
    pub commands: HeapCommandLog,
    /// Final command outcomes for the connection task to send on the
    /// current session; cleared when it ends (the hub resends the command).
    pub results: VecDeque<(u64, Outcome)>,
}

impl Inner {
    /// The connection ended: tell the session, and drop results that were
    /// meant for it.
    pub(crate) fn disconnected(&mut self, how: Disconnect) -> Next {
        self.results.clear();
        self.session.disconnected(how)
    }
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
    pub(crate) fn new(
        session: Session<HeapStorage>,
        commands: HeapCommandLog,
        kinds: Box<[(u16, ValueKind)]>,
    ) -> Self {
        Shared {
            inner: Mutex::new(Inner {
                session,
                counters: Counters::default(),
                commands,
                results: VecDeque::new(),
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

    /// A command's handler finished: remember the outcome and, if a session
    /// is open, have the connection task send it.
    pub(crate) fn command_finished(&self, id: u64, outcome: Outcome) {
        let queued = {
            let mut inner = self.lock();
            inner.commands.finish(id, outcome);
            inner.counters.command_finished(&outcome);
            let open = inner.session.state() == SessionState::Active;
            if open {
                inner.results.push_back((id, outcome));
            }
            open
        };
        if queued {
            self.wake.notify_one();
        }
    }

    /// Microseconds since the device started (the `now` given to the session).
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}
