//! Which devices hold a live session on this hub, and how to close one.
//!
//! Memory only knows who is connected here; everything durable (online flag,
//! session counter, last seen) lives in the database. A device has at most one
//! live session: registering a newer one tells the older to close with
//! `SESSION_REPLACED`. The API and the revocation watcher use
//! [`SessionRegistry::close`] to end a device's session from outside (and
//! [`SessionRegistry::close_older_generation`] after a token rotation), and the
//! command service uses [`SessionRegistry::offer_command`] to hand a new
//! command to the device's connection task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use crate::store::CommandRecord;

/// New commands a session may have waiting before further offers are
/// dropped (and the session re-reads its unfinished commands from the
/// database instead; see [`Registration::commands_overflowed`]).
const OFFERED_COMMANDS: usize = 32;

/// Why the hub ends a session from outside the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A newer connection of the same device took over.
    Replaced,
    /// The device's credentials were revoked.
    Revoked,
}

impl CloseReason {
    /// The WebSocket close code and reason text sent to the device.
    pub fn close_frame(self) -> (u16, &'static str) {
        match self {
            CloseReason::Replaced => (
                schema::close::SESSION_REPLACED,
                "session replaced by a newer connection",
            ),
            CloseReason::Revoked => (schema::close::CREDENTIALS_REVOKED, "credentials revoked"),
        }
    }
}

struct Entry {
    /// Distinguishes this session from a newer one of the same device.
    session_id: u64,
    /// Fires once to make the connection task close with a reason.
    close: oneshot::Sender<CloseReason>,
    /// Milliseconds since the epoch of the last frame or pong.
    last_seen: Arc<AtomicI64>,
    /// New commands for the connection to send.
    commands: mpsc::Sender<Arc<CommandRecord>>,
    /// Set when an offer found `commands` full.
    commands_overflowed: Arc<AtomicBool>,
    /// The device's public id, for announcements.
    device_id: Arc<str>,
    /// The session counter the database gave this session (0 until open).
    session_counter: Arc<AtomicI64>,
    /// The device token generation the session authenticated with; a
    /// rotation to a newer one closes it.
    token_generation: i64,
}

/// Live sessions on this hub, keyed by the device's database key.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: DashMap<i64, Entry>,
    next_session_id: AtomicU64,
}

/// What a connection gets when it registers.
pub struct Registration {
    /// This session's local id, passed back to [`SessionRegistry::deregister`].
    pub session_id: u64,
    /// Resolves when the session must close from outside.
    pub close: oneshot::Receiver<CloseReason>,
    /// Shared last-seen clock the connection updates.
    pub last_seen: Arc<AtomicI64>,
    /// Commands accepted for the device while this session is live.
    pub commands: mpsc::Receiver<Arc<CommandRecord>>,
    /// True when an offer was dropped because `commands` was full: the
    /// connection must reload its unfinished commands from the database.
    pub commands_overflowed: Arc<AtomicBool>,
    /// Where the connection records its session counter once the session is open.
    pub session_counter: Arc<AtomicI64>,
}

impl SessionRegistry {
    /// Registers a new live session for `device_pk`, replacing (and closing)
    /// any older one, with token generation 0 (a device never rotated).
    pub fn register(&self, device_pk: i64, device_id: &str, now_ms: i64) -> Registration {
        self.register_with_generation(device_pk, device_id, 0, now_ms)
    }

    /// Registers a new live session for `device_pk` that authenticated with
    /// token generation `token_generation`, replacing (and closing) any older one.
    pub fn register_with_generation(
        &self,
        device_pk: i64,
        device_id: &str,
        token_generation: i64,
        now_ms: i64,
    ) -> Registration {
        let session_id = self.next_session_id.fetch_add(1, Ordering::Relaxed);
        let (close_tx, close_rx) = oneshot::channel();
        let last_seen = Arc::new(AtomicI64::new(now_ms));
        let (commands_tx, commands_rx) = mpsc::channel(OFFERED_COMMANDS);
        let commands_overflowed = Arc::new(AtomicBool::new(false));
        let session_counter = Arc::new(AtomicI64::new(0));
        let entry = Entry {
            device_id: device_id.into(),
            session_counter: Arc::clone(&session_counter),
            session_id,
            close: close_tx,
            last_seen: Arc::clone(&last_seen),
            commands: commands_tx,
            commands_overflowed: Arc::clone(&commands_overflowed),
            token_generation,
        };
        if let Some(older) = self.sessions.insert(device_pk, entry) {
            // The older connection may already be gone; nothing to do then.
            let _ = older.close.send(CloseReason::Replaced);
        }
        Registration {
            session_id,
            close: close_rx,
            last_seen,
            commands: commands_rx,
            commands_overflowed,
            session_counter,
        }
    }

    /// (device id, session counter) of every open session here, for
    /// re-announcing presence after the MQTT broker lost its retained messages.
    pub fn open_sessions(&self) -> Vec<(String, i64)> {
        self.sessions
            .iter()
            .filter_map(|e| {
                let counter = e.value().session_counter.load(Ordering::Acquire);
                (counter > 0).then(|| (e.value().device_id.to_string(), counter))
            })
            .collect()
    }

    /// Hands a new command to the device's live session here, if any; true
    /// if there is one. Never waits: when the session's queue is full the
    /// command is left to the database, which the session then re-reads.
    pub fn offer_command(&self, device_pk: i64, command: Arc<CommandRecord>) -> bool {
        let Some(entry) = self.sessions.get(&device_pk) else {
            return false;
        };
        if entry.commands.try_send(command).is_err() {
            entry.commands_overflowed.store(true, Ordering::Release);
        }
        true
    }

    /// Removes the session if it is still the device's current one.
    pub fn deregister(&self, device_pk: i64, session_id: u64) {
        self.sessions
            .remove_if(&device_pk, |_, entry| entry.session_id == session_id);
    }

    /// Closes the device's live session here, if any; true if there was one.
    pub fn close(&self, device_pk: i64, reason: CloseReason) -> bool {
        match self.sessions.remove(&device_pk) {
            Some((_, entry)) => {
                let _ = entry.close.send(reason);
                true
            }
            None => false,
        }
    }

    /// Closes the device's session here if it is open with a session
    /// counter below `newer` (the device opened session `newer` on another
    /// hub: this one is a half-open leftover); true if one was closed. A
    /// session still opening (no counter yet) is left alone: its counter
    /// will be higher still.
    pub fn close_older_session(&self, device_pk: i64, newer: i64) -> bool {
        match self.sessions.remove_if(&device_pk, |_, entry| {
            let counter = entry.session_counter.load(Ordering::Acquire);
            counter > 0 && counter < newer
        }) {
            Some((_, entry)) => {
                let _ = entry.close.send(CloseReason::Replaced);
                true
            }
            None => false,
        }
    }

    /// Closes the device's live session here if it authenticated with a
    /// token generation older than `current` (its token was rotated since);
    /// true if one was closed.
    pub fn close_older_generation(
        &self,
        device_pk: i64,
        current: i64,
        reason: CloseReason,
    ) -> bool {
        match self
            .sessions
            .remove_if(&device_pk, |_, entry| entry.token_generation < current)
        {
            Some((_, entry)) => {
                let _ = entry.close.send(reason);
                true
            }
            None => false,
        }
    }

    /// Whether the device has a live session on this hub.
    pub fn is_online(&self, device_pk: i64) -> bool {
        self.sessions.contains_key(&device_pk)
    }

    /// Last frame or pong of the device's live session here (ms since the epoch).
    pub fn last_seen(&self, device_pk: i64) -> Option<i64> {
        self.sessions
            .get(&device_pk)
            .map(|e| e.last_seen.load(Ordering::Relaxed))
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no device is connected.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Last-seen times of every live session, for the presence flusher.
    pub fn snapshot_last_seen(&self) -> Vec<(i64, i64)> {
        self.sessions
            .iter()
            .map(|e| (*e.key(), e.value().last_seen.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_session_replaces_older() {
        let registry = SessionRegistry::default();
        let mut first = registry.register(7, "a", 1);
        let second = registry.register(7, "a", 2);
        assert_eq!(first.close.try_recv(), Ok(CloseReason::Replaced));
        // The replaced session's late deregistration must not remove the newer one.
        registry.deregister(7, first.session_id);
        assert!(registry.is_online(7));
        registry.deregister(7, second.session_id);
        assert!(!registry.is_online(7));
    }

    #[test]
    fn rotation_closes_only_sessions_on_an_older_token() {
        let registry = SessionRegistry::default();
        let mut old = registry.register_with_generation(3, "c", 1, 0);
        assert!(!registry.close_older_generation(3, 1, CloseReason::Revoked));
        assert!(registry.close_older_generation(3, 2, CloseReason::Revoked));
        assert_eq!(old.close.try_recv(), Ok(CloseReason::Revoked));
        let _new = registry.register_with_generation(3, "c", 2, 0);
        assert!(!registry.close_older_generation(3, 2, CloseReason::Revoked));
        assert!(registry.is_online(3));
    }

    #[test]
    fn a_newer_session_elsewhere_closes_only_an_older_open_one() {
        let registry = SessionRegistry::default();
        let mut reg = registry.register(5, "e", 0);
        // Still opening: no counter yet.
        assert!(!registry.close_older_session(5, 9));
        reg.session_counter.store(9, Ordering::Release);
        assert!(!registry.close_older_session(5, 9), "same session");
        assert!(
            !registry.close_older_session(5, 8),
            "an older one elsewhere"
        );
        assert!(registry.close_older_session(5, 10));
        assert_eq!(reg.close.try_recv(), Ok(CloseReason::Replaced));
        assert!(!registry.is_online(5));
    }

    #[test]
    fn close_reports_whether_a_session_existed() {
        let registry = SessionRegistry::default();
        assert!(!registry.close(1, CloseReason::Revoked));
        let mut reg = registry.register(1, "b", 0);
        assert!(registry.close(1, CloseReason::Revoked));
        assert_eq!(reg.close.try_recv(), Ok(CloseReason::Revoked));
        assert!(registry.is_empty());
    }
}
