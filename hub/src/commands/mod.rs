//! Commands for device actuators: accepting, delivering, tracking, expiring.
//!
//! [`CommandService`] is the one place where a command changes state. It
//! stores each change first (the database is the source of truth, DESIGN.md
//! §5) and only then tells the rest of the hub through a broadcast of the
//! new record: `?wait` requests, the MQTT bridge and anything else that
//! shows command status subscribe to it. Delivery itself belongs to the
//! device's connection task: a new command is offered to the live session on
//! this hub through the [`SessionRegistry`]; a device that is offline gets
//! its unfinished commands from the database when it next connects (see
//! `gateway::connection`).
//!
//! With several hubs on one Postgres, changes made by the other hubs arrive
//! through [`crate::cluster`] and [`CommandService::remote_change`]: a new
//! command for a device connected here is offered to its session, and every
//! change reaches [`CommandService::subscribe`] (what `?wait` and the live
//! stream follow). [`CommandService::subscribe_local`] carries only this
//! hub's own changes: the MQTT bridge publishes those, so each change is
//! published once, by the hub that made it.
//!
//! Every submission, accepted or refused, from the HTTP API or MQTT, is
//! written to the audit log here, in the one place both paths share.
//!
//! - [`request`]: the request JSON shared by the HTTP API and MQTT, and its checks;
//! - [`view`]: the JSON form of a command, shared the same way;
//! - [`expiry`]: the sweep that expires commands whose TTL ran out.

pub mod expiry;
pub mod request;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;
use tracing::{debug, info};

use crate::gateway::connection::now_ms;
use crate::metrics::{DbOp, Metrics};
use crate::registry::SessionRegistry;
use crate::store::{
    CommandRecord, CommandStatus, Created, DeviceOutcome, NewAuditEntry, OutcomeApplied, ReplyTo,
    Store, StoreError,
};
use request::{CheckContext, CommandRequest, InvalidRequest, TtlLimits};

/// Status changes a slow subscriber may fall behind by before it is told
/// it lagged (and re-reads from the database).
const EVENT_BUFFER: usize = 4096;

/// Most missed commands one catch-up offers (see [`CommandService::offer_missed`]).
const MISSED_COMMANDS_PER_CATCH_UP: u32 = 10_000;

/// Why a command request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// No device has this id.
    #[error("no device with id {0:?}")]
    UnknownDevice(String),
    /// The device's credentials were revoked; it will never connect again.
    #[error("device {0:?} is revoked")]
    DeviceRevoked(String),
    /// The request breaks a rule; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The idempotency key was used before for a different request.
    #[error(
        "idempotency key {0:?} was already used for a different command (command {1}); use a new key"
    )]
    IdempotencyConflict(String, i64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SubmitError {
    /// A stable machine-readable code, as the HTTP API and `hub/errors` use.
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::UnknownDevice(_) => "not_found",
            SubmitError::DeviceRevoked(_) => "device_revoked",
            SubmitError::Invalid(_) => "invalid",
            SubmitError::IdempotencyConflict(..) => "idempotency_conflict",
            SubmitError::Store(err) if err.is_unavailable() => "unavailable",
            SubmitError::Store(_) => "internal",
        }
    }
}

/// An accepted request.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// A new command, stored.
    New(Arc<CommandRecord>),
    /// The idempotency key matched an earlier, identical request: that command.
    Existing(Arc<CommandRecord>),
}

impl Submitted {
    /// The command, new or earlier.
    pub fn record(&self) -> &Arc<CommandRecord> {
        match self {
            Submitted::New(r) | Submitted::Existing(r) => r,
        }
    }
}

/// What became of a device's answer.
#[derive(Debug, Clone)]
pub enum Answered {
    /// The device has no command with that id.
    Unknown,
    /// The command as it is now (changed by the answer or not).
    Known(Arc<CommandRecord>),
}

/// Command settings from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct CommandSettings {
    /// TTL when a request names none, and the longest accepted.
    pub ttl: TtlLimits,
    /// How often the expiry sweep runs.
    pub expiry_interval: Duration,
}

impl CommandSettings {
    /// The command settings of a validated configuration.
    pub fn from_config(config: &crate::config::ServeConfig) -> CommandSettings {
        CommandSettings {
            ttl: TtlLimits {
                default: config.command_ttl,
                max: config.command_max_ttl,
            },
            expiry_interval: config.command_expiry_interval,
        }
    }
}

/// Accepts commands and records what happens to them; cheap to clone.
#[derive(Clone)]
pub struct CommandService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    sessions: Arc<SessionRegistry>,
    /// Changes made by this hub.
    events: broadcast::Sender<Arc<CommandRecord>>,
    /// Changes made by any hub (this one's included).
    fleet_events: broadcast::Sender<Arc<CommandRecord>>,
    settings: CommandSettings,
    /// Counts every status change (`hub_commands_total`).
    metrics: Arc<Metrics>,
}

impl CommandService {
    /// A service over `store`, delivering through `sessions`.
    pub fn new(
        store: Store,
        sessions: Arc<SessionRegistry>,
        settings: CommandSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (fleet_events, _) = broadcast::channel(EVENT_BUFFER);
        CommandService {
            inner: Arc::new(Inner {
                store,
                sessions,
                events,
                fleet_events,
                settings,
                metrics,
            }),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> CommandSettings {
        self.inner.settings
    }

    /// Every status change from now on (including new commands, as
    /// `queued`), made by this hub or, on a shared Postgres, by any other.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommandRecord>> {
        self.inner.fleet_events.subscribe()
    }

    /// The status changes this hub makes, from now on.
    pub fn subscribe_local(&self) -> broadcast::Receiver<Arc<CommandRecord>> {
        self.inner.events.subscribe()
    }

    /// Takes in a change another hub made to command `id` of device
    /// `device_pk` (now `status`): reads the command, offers it to the
    /// device's session if the device is connected here and the command is
    /// new, and tells this hub's subscribers. The record is read only when
    /// someone here needs it. Only the record whose stored status still
    /// equals `status` is passed on; a later change has its own notice, so
    /// subscribers see each command's changes in order, without repeats.
    pub async fn remote_change(
        &self,
        id: i64,
        device_pk: i64,
        status: CommandStatus,
    ) -> Result<(), StoreError> {
        let deliver = status == CommandStatus::Queued && self.inner.sessions.is_online(device_pk);
        if !deliver && self.inner.fleet_events.receiver_count() == 0 {
            return Ok(());
        }
        let Some(record) = self.inner.store.command(id).await? else {
            // Deleted by retention meanwhile: nothing to tell.
            return Ok(());
        };
        let record = Arc::new(record);
        if deliver && !record.status.is_final() {
            self.inner
                .sessions
                .offer_command(device_pk, Arc::clone(&record));
        }
        if record.status == status {
            let _ = self.inner.fleet_events.send(record);
        }
        Ok(())
    }

    /// Offers every command still `queued` since `since_ms` to its device's
    /// session here, if it has one: after the cluster listener lost its
    /// connection, the notices of that time are gone. Returns how many were offered.
    pub async fn offer_missed(&self, since_ms: i64) -> Result<usize, StoreError> {
        let queued = self
            .inner
            .store
            .queued_commands_since(since_ms, MISSED_COMMANDS_PER_CATCH_UP)
            .await?;
        let mut offered = 0;
        for record in queued {
            if self
                .inner
                .sessions
                .offer_command(record.device_pk, Arc::new(record))
            {
                offered += 1;
            }
        }
        Ok(offered)
    }

    fn publish(&self, record: Arc<CommandRecord>) {
        self.inner.metrics.command(record.status);
        debug!(
            command = record.id,
            status = record.status.as_str(),
            "command status"
        );
        // No subscriber is fine: nobody is waiting.
        let _ = self.inner.fleet_events.send(Arc::clone(&record));
        let _ = self.inner.events.send(record);
    }

    /// Checks and stores a command for device `device_id`, then offers it to
    /// the device's live session on this hub, if any. A repeated
    /// idempotency key with the same request returns the earlier command.
    /// `source` (`api:<key name>` or `mqtt`) is also the audit log's actor:
    /// the outcome, accepted or refused, is appended there. A failed append
    /// is logged and counted (`hub_database_errors_total{op="commands"}`),
    /// and does not change the outcome.
    pub async fn submit(
        &self,
        device_id: &str,
        request: CommandRequest,
        source: String,
        reply: Option<ReplyTo>,
    ) -> Result<Submitted, SubmitError> {
        let mut detail = serde_json::Map::new();
        // Only short, plain values: the request may be hostile.
        match &request.actuator {
            Some(serde_json::Value::String(name)) if name.chars().count() <= 64 => {
                detail.insert("actuator".into(), json!(name));
            }
            Some(id @ serde_json::Value::Number(_)) => {
                detail.insert("actuator".into(), id.clone());
            }
            _ => {}
        }
        if let Some(key) = request.idempotency_key.as_ref().filter(|k| k.len() <= 128) {
            detail.insert("idempotency_key".into(), json!(key));
        }
        let actor = source.clone();
        let result = self.submit_checked(device_id, request, source, reply).await;
        let outcome = match &result {
            Ok(submitted) => {
                let record = submitted.record();
                detail.insert("command_id".into(), json!(record.id));
                detail.insert(
                    "repeat".into(),
                    json!(matches!(submitted, Submitted::Existing(_))),
                );
                "ok"
            }
            Err(err) => err.code(),
        };
        let entry = NewAuditEntry::new(actor, "command.create", Some(device_id), outcome)
            .with_detail(serde_json::Value::Object(detail));
        if let Err(err) = self.inner.store.record_audit(&entry).await {
            self.inner.metrics.database_error(DbOp::Commands);
            tracing::error!(error = %err, device = device_id, outcome, "could not write the audit log");
        }
        result
    }

    async fn submit_checked(
        &self,
        device_id: &str,
        request: CommandRequest,
        source: String,
        reply: Option<ReplyTo>,
    ) -> Result<Submitted, SubmitError> {
        let store = &self.inner.store;
        let device = store
            .get_device(device_id)
            .await?
            .ok_or_else(|| SubmitError::UnknownDevice(device_id.to_owned()))?;
        if device.is_revoked() {
            return Err(SubmitError::DeviceRevoked(device.id));
        }
        let actuators = store.actuators(device.pk).await?;
        let new = request.check(CheckContext {
            device_pk: device.pk,
            actuators: &actuators,
            source,
            now_ms: now_ms(),
            ttl: self.inner.settings.ttl,
            reply,
        })?;
        match store.create_command(&new).await? {
            Created::New(record) => {
                let record = Arc::new(record);
                info!(
                    command = record.id,
                    device = %record.device_id,
                    actuator = %record.actuator_name,
                    source = %record.source,
                    "command accepted"
                );
                self.publish(Arc::clone(&record));
                self.inner
                    .sessions
                    .offer_command(record.device_pk, Arc::clone(&record));
                Ok(Submitted::New(record))
            }
            Created::Existing(existing) => {
                if existing.actuator_id != new.actuator_id || existing.action != new.action {
                    return Err(SubmitError::IdempotencyConflict(
                        existing.idempotency_key.clone().unwrap_or_default(),
                        existing.id,
                    ));
                }
                Ok(Submitted::Existing(Arc::new(existing)))
            }
        }
    }

    /// Waits up to `wait` for `record` to reach a final status, following
    /// `events` (subscribed before the command was submitted, so no change
    /// is missed). Returns the latest known state: if no final status
    /// arrived, the database is read once more at the deadline (a change on
    /// another hub whose notice was lost is still reported).
    pub async fn wait_final(
        &self,
        mut events: broadcast::Receiver<Arc<CommandRecord>>,
        record: Arc<CommandRecord>,
        wait: Duration,
    ) -> Result<Arc<CommandRecord>, StoreError> {
        let mut latest = record;
        let deadline = tokio::time::Instant::now() + wait;
        while !latest.status.is_final() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => break,
                Ok(Ok(event)) => {
                    if event.id == latest.id {
                        latest = event;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    // Missed some changes: the database has the truth.
                    if let Some(fresh) = self.inner.store.command(latest.id).await? {
                        latest = Arc::new(fresh);
                    }
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => break,
            }
        }
        if !latest.status.is_final()
            && let Some(fresh) = self.inner.store.command(latest.id).await?
        {
            latest = Arc::new(fresh);
        }
        Ok(latest)
    }

    /// Records that `record` was written to its device's socket; returns
    /// the command as stored now (None if it became final meanwhile).
    pub async fn mark_sent(
        &self,
        record: &CommandRecord,
    ) -> Result<Option<Arc<CommandRecord>>, StoreError> {
        let sent = self
            .inner
            .store
            .record_command_sent(record, now_ms())
            .await?
            .map(Arc::new);
        if let Some(sent) = &sent {
            self.publish(Arc::clone(sent));
        }
        Ok(sent)
    }

    /// Applies a device's answer about command `command_id`. `known` is the
    /// caller's latest copy of that command, if it has one (it saves a read).
    pub async fn device_answered(
        &self,
        device_pk: i64,
        command_id: u64,
        outcome: &DeviceOutcome,
        known: Option<&CommandRecord>,
    ) -> Result<Answered, StoreError> {
        let Ok(id) = i64::try_from(command_id) else {
            return Ok(Answered::Unknown);
        };
        let store = &self.inner.store;
        let applied = match known {
            Some(known) if known.id == id && known.device_pk == device_pk => {
                store
                    .record_known_command_outcome(known, outcome, now_ms())
                    .await?
            }
            _ => {
                store
                    .record_command_outcome(device_pk, id, outcome, now_ms())
                    .await?
            }
        };
        match applied {
            OutcomeApplied::Unknown => Ok(Answered::Unknown),
            OutcomeApplied::Unchanged(record) => Ok(Answered::Known(Arc::new(record))),
            OutcomeApplied::Changed(record) => {
                if record.status.is_final() {
                    info!(
                        command = record.id,
                        status = record.status.as_str(),
                        "command finished"
                    );
                }
                let record = Arc::new(record);
                self.publish(Arc::clone(&record));
                Ok(Answered::Known(record))
            }
        }
    }

    /// Expires `record` if it is still unfinished and due.
    pub async fn expire(&self, record: &CommandRecord) -> Result<(), StoreError> {
        if let Some(expired) = self.inner.store.expire_command(record, now_ms()).await? {
            info!(command = expired.id, "command expired");
            self.publish(Arc::new(expired));
        }
        Ok(())
    }

    /// The store, for the connection's initial load.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
}
