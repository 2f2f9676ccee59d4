//! The JSON form of a command: what the HTTP API returns and what the MQTT
//! bridge publishes on status topics, so both say the same thing.
//!
//! ```json
//! {"id": 42, "device": "0f3a…", "actuator": "relay", "actuator_id": 1,
//!  "value": true, "status": "succeeded", "source": "api:ops",
//!  "idempotency_key": null, "created_at": "2026-11-26T08:00:00.000Z",
//!  "expires_at": "…", "sent_at": "…", "delivered_at": "…", "finished_at": "…",
//!  "attempts": 1, "result_value": true, "reason": null}
//! ```
//!
//! A `Set` shows `value`; an `Invoke` shows `action: {"name", "args"}`.

use schema::Value;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::time::format_ms;
use crate::store::{CommandAction, CommandRecord};

/// A command as JSON.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CommandView {
    /// Hub-wide id.
    pub id: i64,
    /// The device's public id.
    pub device: String,
    /// The actuator's name at acceptance.
    pub actuator: String,
    /// The actuator's id.
    pub actuator_id: u16,
    /// For a `Set`: the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::commands::request::Scalar>)]
    pub value: Option<serde_json::Value>,
    /// For an `Invoke`: the action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionView>,
    /// Lifecycle status.
    #[schema(value_type = CommandStatusName)]
    pub status: &'static str,
    /// Who asked.
    pub source: String,
    /// The caller's retry key.
    pub idempotency_key: Option<String>,
    /// When it was accepted.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// After this it is never applied.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// First written to the device.
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
    /// The device confirmed receipt.
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
    /// Reached its final status.
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// Times written to the device (resends after reconnects count).
    pub attempts: i64,
    /// The actuator's new value, reported with success.
    #[schema(value_type = Option<crate::commands::request::Scalar>)]
    pub result_value: Option<serde_json::Value>,
    /// Why it failed, was rejected or expired.
    pub reason: Option<String>,
}

/// A command's lifecycle status (docs/COMMANDS.md); describes the strings
/// that `CommandStatus::as_str` gives, for the OpenAPI document.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum CommandStatusName {
    /// Stored; not yet written to the device.
    Queued,
    /// Written to the device's socket.
    Sent,
    /// The device confirmed receipt.
    Delivered,
    /// Applied.
    Succeeded,
    /// Tried and failed.
    Failed,
    /// Refused without trying.
    Rejected,
    /// The TTL ran out before a final answer.
    Expired,
}

/// `{"name": "pulse", "args": [500]}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionView {
    /// Action name.
    pub name: String,
    /// Arguments.
    #[schema(value_type = Vec<crate::commands::request::Scalar>)]
    pub args: Vec<serde_json::Value>,
}

/// A typed value as plain JSON (`true`, `3`, `21.5`).
pub fn value_json(value: Value) -> serde_json::Value {
    match value {
        Value::Bool(b) => serde_json::Value::Bool(b),
        Value::Int(i) => serde_json::Value::from(i),
        // Non-finite floats never get this far; null is the honest fallback.
        Value::Float(f) => serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
    }
}

impl From<&CommandRecord> for CommandView {
    fn from(c: &CommandRecord) -> Self {
        let (value, action) = match &c.action {
            CommandAction::Set(v) => (Some(value_json(*v)), None),
            CommandAction::Invoke { name, args } => (
                None,
                Some(ActionView {
                    name: name.clone(),
                    args: args.iter().copied().map(value_json).collect(),
                }),
            ),
        };
        CommandView {
            id: c.id,
            device: c.device_id.clone(),
            actuator: c.actuator_name.clone(),
            actuator_id: c.actuator_id,
            value,
            action,
            status: c.status.as_str(),
            source: c.source.clone(),
            idempotency_key: c.idempotency_key.clone(),
            created_at: format_ms(c.created_ms),
            expires_at: format_ms(c.expires_ms),
            sent_at: c.sent_ms.map(format_ms),
            delivered_at: c.delivered_ms.map(format_ms),
            finished_at: c.finished_ms.map(format_ms),
            attempts: c.attempts,
            result_value: c.result_value.map(value_json),
            reason: c.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_json_scalars() {
        assert_eq!(value_json(Value::Float(1.5)), serde_json::json!(1.5));
        assert_eq!(value_json(Value::Int(-3)), serde_json::json!(-3));
        assert_eq!(value_json(Value::Bool(true)), serde_json::json!(true));
        assert_eq!(value_json(Value::Float(f64::NAN)), serde_json::Value::Null);
    }
}
