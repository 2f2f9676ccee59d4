//! Actuator commands in the tokio transport: the handler API and the task
//! that runs handlers.
//!
//! The connection task decides about every command as it arrives, with the
//! [`CommandLog`](crate::CommandLog) (under the session lock), and answers
//! on the socket at once: `Delivered`, a refusal, or a repeat's remembered
//! outcome. A command to run goes, in arrival order, over a bounded channel
//! to one worker task per device, which runs commands one at a time. Each
//! handler call runs on tokio's blocking pool (`spawn_blocking`), so a slow
//! or blocking handler delays the device's later commands but never the
//! socket: telemetry, acks and pings carry on.
//!
//! The final outcome is recorded in the log and queued for the connection
//! task, which sends it on the connection open at that moment, ahead of
//! telemetry and regardless of the telemetry window. Results are not kept in
//! the outbox: one that finishes while no session is open is dropped, the
//! hub resends the command after the reconnect, and the log answers it.
//!
//! The log lives in memory, so the device acts at most once per command id
//! *per boot*; after a restart a resent command runs again. Firmware that
//! must survive reboots persists the no_std [`CommandLog`](crate::CommandLog)
//! itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use schema::{Command, CommandAction, Value, ValueKind};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::config::DeviceConfig;
use super::shared::Shared;
use crate::command::{ActuatorTable, Outcome, Reason, Rejection, is_expired};

/// Runs the commands for one actuator: gets the call, returns the
/// actuator's new state (`Ok(Some(value))`, reported as
/// `Succeeded(Some(value))`), `Ok(None)` when there is no state worth
/// reporting, or `Err(reason)` for `Failed(reason)` (cut to 123 bytes).
///
/// It runs on tokio's blocking pool, one command of the device at a time,
/// so it may block briefly (drive a GPIO, write a register); while it runs,
/// the device's further commands wait. A panic is reported as
/// `Failed("handler panicked")`.
pub type CommandHandler = Arc<dyn Fn(&CommandCall) -> Result<Option<Value>, String> + Send + Sync>;

/// A command handed to a [`CommandHandler`]: checked against the rules
/// (not expired, declared actuator, a `Set` value of the declared kind) and
/// not seen before in this boot.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CommandCall {
    /// The hub's command id.
    pub id: u64,
    /// The actuator it is for (the handler's own).
    pub actuator: u16,
    /// What to do.
    pub action: Action,
    /// After this time (ms since the Unix epoch) it must not be applied; 0:
    /// no expiry. Checked just before the handler is called.
    pub expires_at_ms: u64,
}

/// What a command asks for; the owned form of
/// [`CommandAction`](schema::CommandAction).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Set the actuator to this value, of its declared kind.
    Set(Value),
    /// Run a named action with arguments (at most 8).
    Invoke {
        /// The action's name.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
}

impl CommandCall {
    /// A call as the device would make it, e.g. to test a handler.
    pub fn new(id: u64, actuator: u16, action: Action, expires_at_ms: u64) -> CommandCall {
        CommandCall {
            id,
            actuator,
            action,
            expires_at_ms,
        }
    }

    pub(crate) fn from_command(command: &Command<'_>) -> CommandCall {
        let action = match &command.action {
            CommandAction::Set(value) => Action::Set(*value),
            CommandAction::Invoke { name, args } => Action::Invoke {
                name: (*name).to_owned(),
                args: args.iter().copied().collect(),
            },
        };
        CommandCall::new(command.id, command.actuator, action, command.expires_at_ms)
    }
}

/// The declared actuators (sorted by id) and which of them have handlers.
#[derive(Debug)]
pub(crate) struct Actuators {
    kinds: Box<[(u16, ValueKind)]>,
    handled: Box<[u16]>,
}

impl Actuators {
    pub(crate) fn new(config: &DeviceConfig) -> Actuators {
        let mut kinds: Vec<(u16, ValueKind)> =
            config.actuators.iter().map(|a| (a.id, a.kind)).collect();
        kinds.sort_unstable_by_key(|&(id, _)| id);
        Actuators {
            kinds: kinds.into_boxed_slice(),
            // BTreeMap keys come sorted.
            handled: config.handlers.keys().copied().collect(),
        }
    }
}

impl ActuatorTable for Actuators {
    fn kind(&self, id: u16) -> Option<ValueKind> {
        self.kinds
            .binary_search_by_key(&id, |&(id, _)| id)
            .ok()
            .map(|i| self.kinds[i].1)
    }

    fn has_handler(&self, id: u16) -> bool {
        self.handled.binary_search(&id).is_ok()
    }
}

/// The device clock, ms since the Unix epoch, for command expiry.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The worker: run each call in turn until the connection task drops the
/// sender (the device stopped). After a shutdown request, calls still
/// queued are not run.
pub(crate) async fn run(
    shared: Arc<Shared>,
    handlers: BTreeMap<u16, CommandHandler>,
    mut calls: mpsc::Receiver<CommandCall>,
) {
    while let Some(call) = calls.recv().await {
        if shared.shutdown.load(Ordering::Acquire) {
            continue;
        }
        let id = call.id;
        let outcome = execute(&handlers, call).await;
        shared.command_finished(id, outcome);
    }
}

async fn execute(handlers: &BTreeMap<u16, CommandHandler>, call: CommandCall) -> Outcome {
    // It may have waited behind slower commands.
    if is_expired(call.expires_at_ms, now_ms()) {
        debug!(id = call.id, "command expired while queued");
        return Outcome::from(Rejection::Expired);
    }
    let Some(handler) = handlers.get(&call.actuator).map(Arc::clone) else {
        // The connection task only queues commands that have a handler.
        return Outcome::from(Rejection::NoHandler(call.actuator));
    };
    let (id, actuator) = (call.id, call.actuator);
    match tokio::task::spawn_blocking(move || handler(&call)).await {
        Ok(result) => {
            let outcome = Outcome::from_result(result.as_ref().copied().map_err(String::as_str));
            match &outcome {
                Outcome::Failed(reason) => warn!(id, actuator, %reason, "command failed"),
                _ => debug!(id, actuator, ?outcome, "command applied"),
            }
            outcome
        }
        Err(err) => {
            warn!(id, actuator, %err, "command handler did not return");
            Outcome::Failed(Reason::new(if err.is_panic() {
                "handler panicked"
            } else {
                "handler cancelled"
            }))
        }
    }
}
