//! Fan-out of hub events to live-stream clients, without ever waiting for one.
//!
//! One dispatcher task per hub subscribes once to presence, stored telemetry
//! ([`crate::events::HubEvents`]) and command status changes
//! ([`crate::commands::CommandService::subscribe`]), renders each event's
//! JSON once, and offers the same text to every client that wants it:
//! presence, commands and the once-a-second `stats` to every client,
//! telemetry only to the clients subscribed to that device (a map device id
//! -> clients, behind a lock held only to copy a few handles). A device
//! nobody subscribed to costs one map lookup per stored frame and no JSON.
//!
//! Each client has a bounded queue ([`QUEUE_MESSAGES`]) that is offered to
//! with `try_send`. When it is full the client is marked *lagged*: nothing
//! more is queued for it, and its connection task drops what is queued and
//! sends a fresh `snapshot` (reason `lagged`) instead. The dispatcher lagging
//! on a broadcast itself marks every client lagged. So the hub's ingest and
//! command paths never wait for a browser, and a browser that falls behind
//! resynchronises from the database instead of holding memory.
//!
//! The dispatcher starts with the first client (so a hub nobody watches does
//! not even build telemetry events) and stops at hub shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::protocol::{ServerMessage, Stats};
use crate::commands::view::CommandView;
use crate::gateway::connection::now_ms;
use crate::state::AppState;

/// Messages queued per client before it counts as lagged.
pub const QUEUE_MESSAGES: usize = 512;

/// How often `stats` is sent.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// What the dispatcher and a client's connection task share about the client.
#[derive(Debug)]
struct Slot {
    /// The client's queue.
    tx: mpsc::Sender<Utf8Bytes>,
    /// Set when an offer found the queue full (or the dispatcher lagged);
    /// cleared by the connection task when it resynchronises.
    lagged: AtomicBool,
}

impl Slot {
    /// Queues `text` unless the client is lagged; marks it lagged when full.
    fn offer(&self, text: &Utf8Bytes) {
        if self.lagged.load(Ordering::Relaxed) {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(text.clone()) {
            self.lagged.store(true, Ordering::Relaxed);
        }
    }
}

/// Who wants what; guarded by one mutex, never held across an await.
#[derive(Debug, Default)]
struct Registry {
    /// Every client, with the devices it subscribed to.
    clients: HashMap<u64, (Arc<Slot>, HashSet<String>)>,
    /// Device id -> the clients subscribed to its telemetry.
    by_device: HashMap<String, Vec<Arc<Slot>>>,
}

/// The clients of one hub and its dispatcher; shared by the stream route.
#[derive(Debug, Default)]
pub struct Fanout {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    /// Whether the dispatcher was started.
    started: AtomicBool,
}

/// A registered client: its queue's receiving end. Dropping it unregisters the client.
#[derive(Debug)]
pub struct ClientHandle {
    fanout: Arc<Fanout>,
    id: u64,
    slot: Arc<Slot>,
    /// The client's queue.
    pub rx: mpsc::Receiver<Utf8Bytes>,
}

impl ClientHandle {
    /// True (once) when the client fell behind since the last call: its
    /// queue is emptied here, and it needs a fresh snapshot.
    pub fn take_lagged(&mut self) -> bool {
        if !self.slot.lagged.load(Ordering::Relaxed) {
            return false;
        }
        while self.rx.try_recv().is_ok() {}
        // Cleared after emptying: offers made from here on are newer than the snapshot.
        self.slot.lagged.store(false, Ordering::Relaxed);
        true
    }

    /// Whether the client is lagged (its queue will be dropped).
    pub fn is_lagged(&self) -> bool {
        self.slot.lagged.load(Ordering::Relaxed)
    }

    /// Replaces the devices whose telemetry this client receives.
    pub fn subscribe(&self, devices: Vec<String>) {
        let wanted: HashSet<String> = devices.into_iter().collect();
        let mut registry = self.fanout.lock();
        let Registry { clients, by_device } = &mut *registry;
        let Some((_, current)) = clients.get_mut(&self.id) else {
            return;
        };
        for gone in current.difference(&wanted) {
            remove_from(by_device, gone, &self.slot);
        }
        for new in wanted.difference(current) {
            by_device
                .entry(new.clone())
                .or_default()
                .push(Arc::clone(&self.slot));
        }
        *current = wanted;
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        let mut registry = self.fanout.lock();
        let Registry { clients, by_device } = &mut *registry;
        if let Some((_, devices)) = clients.remove(&self.id) {
            for device in &devices {
                remove_from(by_device, device, &self.slot);
            }
        }
    }
}

fn remove_from(by_device: &mut HashMap<String, Vec<Arc<Slot>>>, device: &str, slot: &Arc<Slot>) {
    if let Some(slots) = by_device.get_mut(device) {
        slots.retain(|s| !Arc::ptr_eq(s, slot));
        if slots.is_empty() {
            by_device.remove(device);
        }
    }
}

impl Fanout {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a client (subscribed to no device yet), starting the
    /// dispatcher with the first one. Events from now on reach its queue.
    pub fn register(self: &Arc<Self>, state: &AppState) -> ClientHandle {
        if !self.started.swap(true, Ordering::AcqRel) {
            // Subscribed here, before the client gets its snapshot, so no
            // event between the snapshot and the dispatcher's start is lost.
            let receivers = Receivers {
                presence: state.events.subscribe_presence(),
                telemetry: state.events.subscribe_telemetry(),
                commands: state.commands.subscribe(),
            };
            tokio::spawn(run_dispatcher(Arc::clone(self), receivers, state.clone()));
        }
        let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
        let slot = Arc::new(Slot {
            tx,
            lagged: AtomicBool::new(false),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .clients
            .insert(id, (Arc::clone(&slot), HashSet::new()));
        ClientHandle {
            fanout: Arc::clone(self),
            id,
            slot,
            rx,
        }
    }

    /// Every client's slot (a copy, so offering happens outside the lock).
    fn everyone(&self) -> Vec<Arc<Slot>> {
        self.lock()
            .clients
            .values()
            .map(|(slot, _)| Arc::clone(slot))
            .collect()
    }

    /// The slots of the clients subscribed to `device`.
    fn subscribers(&self, device: &str) -> Vec<Arc<Slot>> {
        self.lock()
            .by_device
            .get(device)
            .map(|slots| slots.to_vec())
            .unwrap_or_default()
    }

    fn to_everyone(&self, message: &ServerMessage<'_>) {
        let slots = self.everyone();
        if slots.is_empty() {
            return;
        }
        let text = message.render();
        for slot in slots {
            slot.offer(&text);
        }
    }

    /// Marks every client lagged: the dispatcher itself missed events.
    fn all_lagged(&self) {
        for slot in self.everyone() {
            slot.lagged.store(true, Ordering::Relaxed);
        }
    }

    /// Clients registered now.
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }
}

/// The dispatcher's subscriptions, taken before it is spawned.
struct Receivers {
    presence: Receiver<crate::events::PresenceEvent>,
    telemetry: Receiver<Arc<crate::events::TelemetryEvent>>,
    commands: Receiver<Arc<crate::store::CommandRecord>>,
}

/// What one broadcast receive gave.
enum Got<T> {
    Event(T),
    Lagged,
    Closed,
}

fn got<T>(result: Result<T, RecvError>) -> Got<T> {
    match result {
        Ok(event) => Got::Event(event),
        Err(RecvError::Lagged(missed)) => {
            tracing::warn!(
                missed,
                "live-stream dispatcher fell behind; every client resynchronises"
            );
            Got::Lagged
        }
        Err(RecvError::Closed) => Got::Closed,
    }
}

/// Forwards events to the clients until hub shutdown.
async fn run_dispatcher(fanout: Arc<Fanout>, mut rx: Receivers, state: AppState) {
    let mut tick = tokio::time::interval(STATS_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let closed = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            result = rx.telemetry.recv() => match got(result) {
                Got::Event(event) => {
                    let slots = fanout.subscribers(&event.device.id);
                    if !slots.is_empty() {
                        let text = ServerMessage::telemetry(&event).render();
                        for slot in slots {
                            slot.offer(&text);
                        }
                    }
                    false
                }
                Got::Lagged => { fanout.all_lagged(); false }
                Got::Closed => true,
            },
            result = rx.presence.recv() => match got(result) {
                Got::Event(event) => { fanout.to_everyone(&ServerMessage::presence(&event)); false }
                Got::Lagged => { fanout.all_lagged(); false }
                Got::Closed => true,
            },
            result = rx.commands.recv() => match got(result) {
                Got::Event(record) => {
                    let command = Box::new(CommandView::from(&*record));
                    fanout.to_everyone(&ServerMessage::Command { command });
                    false
                }
                Got::Lagged => { fanout.all_lagged(); false }
                Got::Closed => true,
            },
            _ = tick.tick() => {
                if fanout.clients() > 0 {
                    fanout.to_everyone(&ServerMessage::Stats(stats(&state)));
                }
                false
            }
        };
        if closed {
            // The hub's event senders are gone: the hub is going away.
            return;
        }
    }
}

/// The `stats` numbers, from the same `Metrics` as `/metrics`.
fn stats(state: &AppState) -> Stats {
    let metrics = &state.metrics;
    let rates = metrics.rates();
    Stats {
        at_ms: now_ms(),
        connected_devices: metrics.devices_connected(),
        readings_per_sec: rates.readings_per_s,
        frames_per_sec: rates.frames_per_s,
        commands: metrics.commands_by_status().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(capacity: usize) -> (Arc<Slot>, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(capacity);
        let slot = Arc::new(Slot {
            tx,
            lagged: AtomicBool::new(false),
        });
        (slot, rx)
    }

    #[test]
    fn a_full_queue_marks_the_client_lagged_and_later_offers_are_skipped() {
        let (slot, mut rx) = slot(2);
        let text = Utf8Bytes::from_static("x");
        slot.offer(&text);
        slot.offer(&text);
        assert!(!slot.lagged.load(Ordering::Relaxed));
        slot.offer(&text);
        assert!(slot.lagged.load(Ordering::Relaxed));
        assert!(rx.try_recv().is_ok());
        // Room again, but a lagged client gets nothing until it resyncs.
        slot.offer(&text);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn subscriptions_replace_and_unregister() {
        let fanout = Arc::new(Fanout::default());
        let (slot, rx) = slot(4);
        fanout
            .lock()
            .clients
            .insert(7, (Arc::clone(&slot), HashSet::new()));
        let mut handle = ClientHandle {
            fanout: Arc::clone(&fanout),
            id: 7,
            slot,
            rx,
        };
        handle.subscribe(vec!["a".into(), "b".into()]);
        assert_eq!(fanout.subscribers("a").len(), 1);
        assert_eq!(fanout.subscribers("b").len(), 1);
        handle.subscribe(vec!["b".into(), "c".into()]);
        assert!(fanout.subscribers("a").is_empty());
        assert_eq!(fanout.subscribers("c").len(), 1);
        assert!(!handle.take_lagged());
        fanout.all_lagged();
        handle.slot.offer(&Utf8Bytes::from_static("dropped"));
        assert!(handle.take_lagged());
        assert!(!handle.take_lagged(), "once");
        drop(handle);
        assert_eq!(fanout.clients(), 0);
        assert!(fanout.lock().by_device.is_empty());
    }
}
