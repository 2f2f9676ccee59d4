//! Commands: the durable record of every command and each step of its lifecycle.
//!
//! The database is the source of truth for command state (DESIGN.md §5): a
//! command is stored (durably) before anyone may send it, and every
//! transition — sent, delivered, a final outcome, expiry — is a conditional
//! update that only applies if the row still holds the state it was computed
//! from. The rules for which transition is allowed live here once, in pure
//! functions on [`CommandRecord`] ([`CommandRecord::after_send`],
//! [`CommandRecord::after_outcome`], [`CommandRecord::after_expiry`]); the
//! backends only read rows and write them back with that check, so two hubs
//! racing on one command cannot move it backwards.

use schema::Value;
use serde::{Deserialize, Serialize};

use super::{Backend, Store, StoreError};

/// Where a command is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    /// Stored; not yet written to the device's socket.
    Queued,
    /// Written to the device's socket at least once; no answer yet.
    Sent,
    /// The device confirmed receipt; the final answer is pending.
    Delivered,
    /// The device applied it.
    Succeeded,
    /// The device tried and failed.
    Failed,
    /// The device refused it without trying.
    Rejected,
    /// Its time to live ran out before a final answer.
    Expired,
}

impl CommandStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CommandStatus; 7] = [
        CommandStatus::Queued,
        CommandStatus::Sent,
        CommandStatus::Delivered,
        CommandStatus::Succeeded,
        CommandStatus::Failed,
        CommandStatus::Rejected,
        CommandStatus::Expired,
    ];

    /// The lower-case name used in the database, JSON and MQTT.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Queued => "queued",
            CommandStatus::Sent => "sent",
            CommandStatus::Delivered => "delivered",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Rejected => "rejected",
            CommandStatus::Expired => "expired",
        }
    }

    /// The status named `name` ([`Self::as_str`]), if any.
    pub fn parse(name: &str) -> Option<CommandStatus> {
        CommandStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True once nothing more will happen to the command.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            CommandStatus::Queued | CommandStatus::Sent | CommandStatus::Delivered
        )
    }
}

/// What a command asks the actuator to do. Stored as JSON in `commands.action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandAction {
    /// Set the actuator to this value (of its declared kind).
    Set(Value),
    /// Run a named action with arguments.
    Invoke {
        /// Action name.
        name: String,
        /// Arguments.
        args: Vec<Value>,
    },
}

/// An MQTT v5 reply address: every status change is also published here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The request's Response Topic.
    pub topic: String,
    /// The request's Correlation Data, echoed back.
    pub correlation: Option<Vec<u8>>,
}

/// A command to store.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// The target device's key.
    pub device_pk: i64,
    /// A declared actuator id.
    pub actuator_id: u16,
    /// The actuator's name at acceptance.
    pub actuator_name: String,
    /// What to do (already checked against the actuator's kind).
    pub action: CommandAction,
    /// The caller's key for safe retries (unique per device).
    pub idempotency_key: Option<String>,
    /// Who asked: `api:<key name>` or `mqtt`.
    pub source: String,
    /// Acceptance time, ms since the epoch.
    pub created_ms: i64,
    /// After this time the command must not be applied.
    pub expires_ms: i64,
    /// Where MQTT wants status changes besides the usual topic.
    pub reply: Option<ReplyTo>,
}

/// A stored command and everything that happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    /// Hub-wide id (the device sees it in `Command.id`).
    pub id: i64,
    /// The device's key.
    pub device_pk: i64,
    /// The device's public id.
    pub device_id: String,
    /// The actuator's id.
    pub actuator_id: u16,
    /// The actuator's name at acceptance.
    pub actuator_name: String,
    /// What to do.
    pub action: CommandAction,
    /// The caller's retry key, if given.
    pub idempotency_key: Option<String>,
    /// Who asked.
    pub source: String,
    /// Current status.
    pub status: CommandStatus,
    /// Accepted at (ms since the epoch).
    pub created_ms: i64,
    /// Must not be applied after this (ms since the epoch).
    pub expires_ms: i64,
    /// First written to the device's socket.
    pub sent_ms: Option<i64>,
    /// The device confirmed receipt.
    pub delivered_ms: Option<i64>,
    /// Reached its final status.
    pub finished_ms: Option<i64>,
    /// Times written to a device socket.
    pub attempts: i64,
    /// The actuator's new value the device reported with success.
    pub result_value: Option<Value>,
    /// Why it failed, was rejected or expired.
    pub reason: Option<String>,
    /// MQTT reply address.
    pub reply: Option<ReplyTo>,
}

/// What the device said about a command.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceOutcome {
    /// Received; about to be applied.
    Delivered,
    /// Applied, optionally with the actuator's new value.
    Succeeded(Option<Value>),
    /// Tried and failed.
    Failed(String),
    /// Refused without trying.
    Rejected(String),
}

/// Result of [`Store::create_command`].
#[derive(Debug, Clone)]
pub enum Created {
    /// Stored now.
    New(CommandRecord),
    /// The idempotency key was used before: this is the earlier command.
    Existing(CommandRecord),
}

/// Result of [`Store::record_command_outcome`].
#[derive(Debug, Clone)]
pub enum OutcomeApplied {
    /// The device has no command with that id.
    Unknown,
    /// Nothing changed (a repeated or late answer); the command as it is.
    Unchanged(CommandRecord),
    /// The command moved to a new status.
    Changed(CommandRecord),
}

/// Which commands [`Store::list_commands`] returns, newest first.
#[derive(Debug, Clone)]
pub struct CommandQuery {
    /// The device's key.
    pub device_pk: i64,
    /// Only commands in this status.
    pub status: Option<CommandStatus>,
    /// Only commands with an id below this (the previous page's cursor).
    pub before_id: Option<i64>,
    /// Most commands per page.
    pub limit: u32,
}

/// One page of commands, newest first.
#[derive(Debug, Clone)]
pub struct CommandPage {
    /// The commands.
    pub commands: Vec<CommandRecord>,
    /// `before_id` for the next page; None on the last.
    pub next_before_id: Option<i64>,
}

/// Reason recorded when a command expires before the device answered.
pub const EXPIRED_REASON: &str = "expired before the device answered";

impl CommandRecord {
    /// The record after being written to the device's socket at `now_ms`,
    /// or None when it must not be sent (final already).
    pub fn after_send(&self, now_ms: i64) -> Option<CommandRecord> {
        if self.status.is_final() {
            return None;
        }
        let mut next = self.clone();
        if next.status == CommandStatus::Queued {
            next.status = CommandStatus::Sent;
        }
        next.sent_ms.get_or_insert(now_ms);
        next.attempts += 1;
        Some(next)
    }

    /// The record after the device's answer at `now_ms`, or None when the
    /// answer changes nothing: a repeat, a `Delivered` after the final
    /// answer, or an answer to a command that is already final. One
    /// exception: a command that expired after it was sent may still have
    /// been applied before its deadline, so a later `Succeeded` or `Failed`
    /// replaces `expired` — the operator learns what really happened.
    pub fn after_outcome(&self, outcome: &DeviceOutcome, now_ms: i64) -> Option<CommandRecord> {
        let open = !self.status.is_final();
        let mut next = self.clone();
        match outcome {
            DeviceOutcome::Delivered => {
                if !matches!(self.status, CommandStatus::Queued | CommandStatus::Sent) {
                    return None;
                }
                next.status = CommandStatus::Delivered;
                next.sent_ms.get_or_insert(now_ms);
                next.delivered_ms = Some(now_ms);
            }
            DeviceOutcome::Succeeded(_) | DeviceOutcome::Failed(_) | DeviceOutcome::Rejected(_) => {
                let tried = !matches!(outcome, DeviceOutcome::Rejected(_));
                let late_but_true =
                    self.status == CommandStatus::Expired && self.sent_ms.is_some() && tried;
                if !open && !late_but_true {
                    return None;
                }
                next.sent_ms.get_or_insert(now_ms);
                next.finished_ms = Some(now_ms);
                next.result_value = None;
                next.reason = None;
                match outcome {
                    DeviceOutcome::Succeeded(value) => {
                        next.status = CommandStatus::Succeeded;
                        next.result_value = *value;
                    }
                    DeviceOutcome::Failed(reason) => {
                        next.status = CommandStatus::Failed;
                        next.reason = Some(reason.clone());
                    }
                    DeviceOutcome::Rejected(reason) => {
                        next.status = CommandStatus::Rejected;
                        next.reason = Some(reason.clone());
                    }
                    DeviceOutcome::Delivered => {}
                }
            }
        }
        Some(next)
    }

    /// The record after its deadline passed at `now_ms`, or None when it is
    /// final or not yet due.
    pub fn after_expiry(&self, now_ms: i64) -> Option<CommandRecord> {
        if self.status.is_final() || self.expires_ms > now_ms {
            return None;
        }
        let mut next = self.clone();
        next.status = CommandStatus::Expired;
        next.finished_ms = Some(now_ms);
        next.reason = Some(EXPIRED_REASON.into());
        Some(next)
    }
}

/// How often a conditional update is retried after losing a race.
const TRANSITION_ATTEMPTS: usize = 4;

impl Store {
    /// Stores a new command, durably, before returning. A repeated
    /// idempotency key for the same device returns the earlier command
    /// instead ([`Created::Existing`]) and stores nothing.
    pub async fn create_command(&self, new: &NewCommand) -> Result<Created, StoreError> {
        for _ in 0..TRANSITION_ATTEMPTS {
            let inserted = match &*self.backend {
                Backend::Sqlite(db) => db.insert_command(new).await?,
                Backend::Postgres(db) => db.insert_command(new).await?,
            };
            if let Some(id) = inserted {
                return self
                    .command(id)
                    .await?
                    .map(Created::New)
                    .ok_or_else(|| StoreError::Corrupt(format!("command {id} vanished")));
            }
            if let Some(key) = &new.idempotency_key
                && let Some(existing) = self.command_by_idempotency_key(new.device_pk, key).await?
            {
                return Ok(Created::Existing(existing));
            }
            // The conflicting row was deleted between the two statements; try again.
        }
        Err(StoreError::Corrupt(
            "idempotency key conflict that no row explains".into(),
        ))
    }

    /// The command with this id, if any.
    pub async fn command(&self, id: i64) -> Result<Option<CommandRecord>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.command_by_id(id).await,
            Backend::Postgres(db) => db.command_by_id(id).await,
        }
    }

    /// The device's command stored under this idempotency key, if any.
    pub async fn command_by_idempotency_key(
        &self,
        device_pk: i64,
        key: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.command_by_idempotency_key(device_pk, key).await,
            Backend::Postgres(db) => db.command_by_idempotency_key(device_pk, key).await,
        }
    }

    /// A page of the device's commands, newest first.
    pub async fn list_commands(&self, query: &CommandQuery) -> Result<CommandPage, StoreError> {
        let limit = query.limit.max(1);
        let mut fetch = query.clone();
        fetch.limit = limit + 1;
        let mut commands = match &*self.backend {
            Backend::Sqlite(db) => db.list_commands(&fetch).await?,
            Backend::Postgres(db) => db.list_commands(&fetch).await?,
        };
        let next_before_id = if commands.len() > limit as usize {
            commands.truncate(limit as usize);
            commands.last().map(|c| c.id)
        } else {
            None
        };
        Ok(CommandPage {
            commands,
            next_before_id,
        })
    }

    /// The device's unfinished commands (queued, sent or delivered), oldest
    /// first, at most `limit`: what to (re)send when it connects.
    pub async fn open_commands(
        &self,
        device_pk: i64,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.open_commands(device_pk, limit).await,
            Backend::Postgres(db) => db.open_commands(device_pk, limit).await,
        }
    }

    /// Commands still `queued` that were accepted at or after `since_ms`,
    /// oldest first, at most `limit`: what a hub whose cluster listener was
    /// down may have missed.
    pub async fn queued_commands_since(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.queued_commands_since(since_ms, limit).await,
            Backend::Postgres(db) => db.queued_commands_since(since_ms, limit).await,
        }
    }

    /// Unfinished commands whose deadline is at or before `now_ms`, at most `limit`.
    pub async fn due_commands(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.due_commands(now_ms, limit).await,
            Backend::Postgres(db) => db.due_commands(now_ms, limit).await,
        }
    }

    /// Records that `command` was written to the device's socket at
    /// `now_ms`. Returns the record as stored, or None if it became final meanwhile.
    pub async fn record_command_sent(
        &self,
        command: &CommandRecord,
        now_ms: i64,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.transition(command.clone(), |c| c.after_send(now_ms))
            .await
            .map(|applied| match applied {
                OutcomeApplied::Changed(record) => Some(record),
                OutcomeApplied::Unchanged(_) | OutcomeApplied::Unknown => None,
            })
    }

    /// Applies the device's answer about command `id`. A command of another
    /// device is [`OutcomeApplied::Unknown`], exactly like a missing one.
    pub async fn record_command_outcome(
        &self,
        device_pk: i64,
        id: i64,
        outcome: &DeviceOutcome,
        now_ms: i64,
    ) -> Result<OutcomeApplied, StoreError> {
        let Some(command) = self.command(id).await? else {
            return Ok(OutcomeApplied::Unknown);
        };
        if command.device_pk != device_pk {
            return Ok(OutcomeApplied::Unknown);
        }
        self.transition(command, |c| c.after_outcome(outcome, now_ms))
            .await
    }

    /// Like [`Self::record_command_outcome`], starting from `known`, the
    /// caller's latest copy of the command (the connection that sent it
    /// keeps one), which saves reading it first; a stale copy costs a
    /// re-read. `known` must be a command of the answering device.
    pub async fn record_known_command_outcome(
        &self,
        known: &CommandRecord,
        outcome: &DeviceOutcome,
        now_ms: i64,
    ) -> Result<OutcomeApplied, StoreError> {
        self.transition(known.clone(), |c| c.after_outcome(outcome, now_ms))
            .await
    }

    /// Expires `command` if it is still unfinished and due at `now_ms`.
    pub async fn expire_command(
        &self,
        command: &CommandRecord,
        now_ms: i64,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.transition(command.clone(), |c| c.after_expiry(now_ms))
            .await
            .map(|applied| match applied {
                OutcomeApplied::Changed(record) => Some(record),
                OutcomeApplied::Unchanged(_) | OutcomeApplied::Unknown => None,
            })
    }

    /// Applies `step` to `current` and writes the result back only if the
    /// row still equals `current`'s status and attempts; on a lost race,
    /// re-reads and tries again.
    async fn transition(
        &self,
        mut current: CommandRecord,
        step: impl Fn(&CommandRecord) -> Option<CommandRecord>,
    ) -> Result<OutcomeApplied, StoreError> {
        for _ in 0..TRANSITION_ATTEMPTS {
            let Some(next) = step(&current) else {
                return Ok(OutcomeApplied::Unchanged(current));
            };
            let written = match &*self.backend {
                Backend::Sqlite(db) => db.update_command(&current, &next).await?,
                Backend::Postgres(db) => db.update_command(&current, &next).await?,
            };
            if written {
                return Ok(OutcomeApplied::Changed(next));
            }
            match self.command(current.id).await? {
                Some(fresh) => current = fresh,
                None => return Ok(OutcomeApplied::Unknown),
            }
        }
        Err(StoreError::Corrupt(format!(
            "command {} kept changing under its update",
            current.id
        )))
    }
}

// The row both backends read commands in, and its mapping.
/// Columns of a [`CommandRow`], from `commands c JOIN devices d`.
macro_rules! command_columns {
    () => {
        "c.id, c.device_pk, d.id AS device_id, c.actuator_id, c.actuator_name, c.action, \
         c.idempotency_key, c.source, c.status, c.created_at, c.expires_at, c.sent_at, \
         c.delivered_at, c.finished_at, c.attempts, c.result_value, c.reason, c.reply_topic, \
         c.reply_correlation"
    };
}
/// `SELECT <command columns> FROM commands c JOIN devices d …`, for a
/// backend to add its WHERE clause to.
pub(crate) const SELECT_COMMANDS: &str = concat!(
    "SELECT ",
    command_columns!(),
    " FROM commands c JOIN devices d ON d.pk = c.device_pk "
);

/// Rows read with [`SELECT_COMMANDS`] as records.
pub(crate) fn command_records(rows: Vec<CommandRow>) -> Result<Vec<CommandRecord>, StoreError> {
    rows.into_iter().map(CommandRecord::try_from).collect()
}

/// The `reply_topic` and `reply_correlation` columns of a command.
pub(crate) fn reply_columns(reply: Option<&ReplyTo>) -> (Option<&str>, Option<&[u8]>) {
    match reply {
        Some(reply) => (Some(reply.topic.as_str()), reply.correlation.as_deref()),
        None => (None, None),
    }
}

/// One `commands` row joined with its device's id, as both backends read it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CommandRow {
    pub id: i64,
    pub device_pk: i64,
    pub device_id: String,
    pub actuator_id: i32,
    pub actuator_name: String,
    pub action: String,
    pub idempotency_key: Option<String>,
    pub source: String,
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempts: i32,
    pub result_value: Option<String>,
    pub reason: Option<String>,
    pub reply_topic: Option<String>,
    pub reply_correlation: Option<Vec<u8>>,
}

/// The `action` column's text for an action.
pub(crate) fn action_to_db(action: &CommandAction) -> Result<String, StoreError> {
    serde_json::to_string(action).map_err(|err| StoreError::Corrupt(format!("action: {err}")))
}

/// The `result_value` column's text for a value.
pub(crate) fn value_to_db(value: Option<Value>) -> Result<Option<String>, StoreError> {
    value
        .map(|v| serde_json::to_string(&v))
        .transpose()
        .map_err(|err| StoreError::Corrupt(format!("result_value: {err}")))
}

impl TryFrom<CommandRow> for CommandRecord {
    type Error = StoreError;

    fn try_from(row: CommandRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, err: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("command {} {what}: {err}", row.id))
        };
        let action = serde_json::from_str(&row.action).map_err(|e| corrupt("action", &e))?;
        let result_value = row
            .result_value
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("result_value", &e))?;
        let status = CommandStatus::parse(&row.status)
            .ok_or_else(|| corrupt("status", &row.status.as_str()))?;
        let actuator_id = u16::try_from(row.actuator_id).map_err(|e| corrupt("actuator_id", &e))?;
        Ok(CommandRecord {
            id: row.id,
            device_pk: row.device_pk,
            device_id: row.device_id,
            actuator_id,
            actuator_name: row.actuator_name,
            action,
            idempotency_key: row.idempotency_key,
            source: row.source,
            status,
            created_ms: row.created_at,
            expires_ms: row.expires_at,
            sent_ms: row.sent_at,
            delivered_ms: row.delivered_at,
            finished_ms: row.finished_at,
            attempts: i64::from(row.attempts),
            result_value,
            reason: row.reason,
            reply: row.reply_topic.map(|topic| ReplyTo {
                topic,
                correlation: row.reply_correlation,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> CommandRecord {
        CommandRecord {
            id: 1,
            device_pk: 1,
            device_id: "d".into(),
            actuator_id: 1,
            actuator_name: "relay".into(),
            action: CommandAction::Set(Value::Bool(true)),
            idempotency_key: None,
            source: "api:test".into(),
            status: CommandStatus::Queued,
            created_ms: 100,
            expires_ms: 1_000,
            sent_ms: None,
            delivered_ms: None,
            finished_ms: None,
            attempts: 0,
            result_value: None,
            reason: None,
            reply: None,
        }
    }

    #[test]
    fn the_happy_path_records_each_step_once() {
        let sent = queued().after_send(200).expect("sendable");
        assert_eq!(
            (sent.status, sent.sent_ms, sent.attempts),
            (CommandStatus::Sent, Some(200), 1)
        );
        let resent = sent.after_send(300).expect("resendable");
        assert_eq!(
            (resent.status, resent.sent_ms, resent.attempts),
            (CommandStatus::Sent, Some(200), 2)
        );
        let delivered = resent
            .after_outcome(&DeviceOutcome::Delivered, 310)
            .expect("delivered");
        assert_eq!(delivered.delivered_ms, Some(310));
        assert!(
            delivered
                .after_outcome(&DeviceOutcome::Delivered, 320)
                .is_none()
        );
        let done = delivered
            .after_outcome(&DeviceOutcome::Succeeded(Some(Value::Bool(true))), 330)
            .expect("final");
        assert_eq!(done.status, CommandStatus::Succeeded);
        assert_eq!(done.finished_ms, Some(330));
        assert_eq!(done.result_value, Some(Value::Bool(true)));
        // A repeated final answer (resend after reconnect) changes nothing.
        assert!(
            done.after_outcome(&DeviceOutcome::Succeeded(None), 340)
                .is_none()
        );
        assert!(
            done.after_outcome(&DeviceOutcome::Failed("x".into()), 340)
                .is_none()
        );
        assert!(done.after_send(350).is_none());
        assert!(done.after_expiry(5_000).is_none());
    }

    #[test]
    fn expiry_only_applies_to_unfinished_due_commands() {
        assert!(queued().after_expiry(999).is_none());
        let expired = queued().after_expiry(1_000).expect("due");
        assert_eq!(expired.status, CommandStatus::Expired);
        assert_eq!(expired.reason.as_deref(), Some(EXPIRED_REASON));
        // Never sent: a late answer cannot be about it.
        assert!(
            expired
                .after_outcome(&DeviceOutcome::Succeeded(None), 1_100)
                .is_none()
        );
    }

    #[test]
    fn a_device_that_acted_before_expiry_has_the_last_word() {
        let sent = queued().after_send(200).expect("sendable");
        let expired = sent.after_expiry(1_000).expect("due");
        let done = expired
            .after_outcome(&DeviceOutcome::Failed("stuck".into()), 1_200)
            .expect("late truth");
        assert_eq!(done.status, CommandStatus::Failed);
        assert_eq!(done.reason.as_deref(), Some("stuck"));
        // A rejection (not tried) keeps `expired`.
        assert!(
            expired
                .after_outcome(&DeviceOutcome::Rejected("expired".into()), 1_200)
                .is_none()
        );
    }

    #[test]
    fn a_direct_final_answer_skips_delivered() {
        let sent = queued().after_send(200).expect("sendable");
        let rejected = sent
            .after_outcome(&DeviceOutcome::Rejected("unknown actuator".into()), 210)
            .expect("final");
        assert_eq!(rejected.status, CommandStatus::Rejected);
        assert_eq!(rejected.delivered_ms, None);
        assert!(
            rejected
                .after_outcome(&DeviceOutcome::Delivered, 220)
                .is_none()
        );
    }

    #[test]
    fn statuses_round_trip_by_name() {
        for status in CommandStatus::ALL {
            assert_eq!(CommandStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(CommandStatus::parse("done"), None);
    }

    #[test]
    fn actions_are_stored_as_tagged_json() {
        let action = CommandAction::Invoke {
            name: "pulse".into(),
            args: vec![Value::Int(500), Value::Float(0.5)],
        };
        let text = action_to_db(&action).expect("json");
        assert_eq!(
            text,
            r#"{"Invoke":{"name":"pulse","args":[{"Int":500},{"Float":0.5}]}}"#
        );
        assert_eq!(
            serde_json::from_str::<CommandAction>(&text).expect("back"),
            action
        );
    }
}
