//! A command request as callers write it (HTTP body or MQTT payload), and
//! the checks that turn it into a [`NewCommand`] or a reason it was refused.
//!
//! Both entry points share this file so a request means the same thing, and
//! is refused with the same words, whichever way it arrives. Nothing here
//! touches the database: the caller looks the device and its actuators up.

use std::time::Duration;

use schema::{MAX_COMMAND_ARGS, Value, ValueKind};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::gateway::session::MAX_NAME_BYTES;
use crate::store::{ActuatorInfo, CommandAction, NewCommand, ReplyTo};

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// A command request: `{"actuator": "relay", "value": true, "ttl": 60}` or
/// `{"actuator": 2, "action": {"name": "pulse", "args": [500]}}`.
///
/// Fields are loose JSON here so that every mistake is reported by
/// `CommandRequest::check` with the field it concerns.
///
/// The OpenAPI schema states the shape; what a device declared (its
/// actuators and their kinds) is checked here and answered with a 422.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// The actuator's declared name or numeric id.
    #[schema(value_type = ActuatorRef)]
    pub actuator: Option<serde_json::Value>,
    /// For a `Set`: the value, of the actuator's kind (instead of `action`).
    #[schema(value_type = Option<Scalar>)]
    pub value: Option<serde_json::Value>,
    /// For an `Invoke`: a named action with arguments (instead of `value`).
    pub action: Option<InvokeRequest>,
    /// Time to live in seconds (default 300, at most the hub's
    /// `--command-max-ttl-secs`, 7 days by default).
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 604_800)]
    pub ttl: Option<serde_json::Value>,
    /// The caller's key for safe retries (unique per device), 1 to 128
    /// bytes; also accepted as the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 128)]
    pub idempotency_key: Option<String>,
}

/// `{"name": "pulse", "args": [500, true]}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    /// Action name, 1 to 64 bytes.
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub name: Option<String>,
    /// Arguments: numbers and booleans, at most 8 (`MAX_COMMAND_ARGS`).
    #[serde(default)]
    #[schema(value_type = Vec<Scalar>, max_items = 8)]
    pub args: Vec<serde_json::Value>,
}

/// An actuator's declared name (`"relay"`) or id (`1`). Only describes the
/// JSON the API takes and shows.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum ActuatorRef {
    /// Its declared name.
    Name(String),
    /// Its declared id.
    Id(u16),
}

/// A value of an actuator or sensor: a boolean or a number. Only describes
/// the JSON the API takes and shows.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum Scalar {
    /// A `bool` value.
    Bool(bool),
    /// An `int` or `float` value.
    Number(f64),
}

/// A request that breaks a rule, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    /// The field at fault (a JSON path such as `action.args[1]`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidRequest {
    InvalidRequest {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// TTL rules, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct TtlLimits {
    /// Used when the request names none.
    pub default: Duration,
    /// Longest accepted.
    pub max: Duration,
}

/// Everything [`CommandRequest::check`] needs besides the request.
pub struct CheckContext<'a> {
    /// The device's key.
    pub device_pk: i64,
    /// Its declared actuators.
    pub actuators: &'a [ActuatorInfo],
    /// Who asks (`api:<key name>` or `mqtt`).
    pub source: String,
    /// Acceptance time, ms since the epoch.
    pub now_ms: i64,
    /// TTL rules.
    pub ttl: TtlLimits,
    /// MQTT reply address, if any.
    pub reply: Option<ReplyTo>,
}

impl CommandRequest {
    /// Checks the request against the device's declared actuators and
    /// builds the command to store.
    pub fn check(self, ctx: CheckContext<'_>) -> Result<NewCommand, InvalidRequest> {
        let actuator = self.find_actuator(ctx.actuators)?;
        let action = match (self.value, self.action) {
            (Some(_), Some(_)) => {
                return Err(invalid("body", "give either value or action, not both"));
            }
            (None, None) => {
                return Err(invalid(
                    "value",
                    "is required (or an action with name and args)",
                ));
            }
            (Some(value), None) => CommandAction::Set(set_value(&value, actuator.kind)?),
            (None, Some(invoke)) => check_invoke(invoke)?,
        };
        let ttl = match self.ttl {
            None => ctx.ttl.default,
            Some(raw) => {
                let max = ctx.ttl.max.as_secs();
                match raw.as_u64() {
                    Some(secs) if (1..=max).contains(&secs) => Duration::from_secs(secs),
                    _ => {
                        return Err(invalid(
                            "ttl",
                            format!("must be a whole number of seconds from 1 to {max}"),
                        ));
                    }
                }
            }
        };
        if let Some(key) = &self.idempotency_key {
            check_idempotency_key(key)?;
        }
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        Ok(NewCommand {
            device_pk: ctx.device_pk,
            actuator_id: actuator.id,
            actuator_name: actuator.name.clone(),
            action,
            idempotency_key: self.idempotency_key,
            source: ctx.source,
            created_ms: ctx.now_ms,
            expires_ms: ctx.now_ms.saturating_add(ttl_ms),
            reply: ctx.reply,
        })
    }

    fn find_actuator<'a>(
        &self,
        actuators: &'a [ActuatorInfo],
    ) -> Result<&'a ActuatorInfo, InvalidRequest> {
        let Some(wanted) = &self.actuator else {
            return Err(invalid("actuator", "is required (a declared name or id)"));
        };
        if actuators.is_empty() {
            return Err(invalid(
                "actuator",
                "the device has declared no actuators (it declares them in Hello when it connects)",
            ));
        }
        let found = match wanted {
            serde_json::Value::String(name) => actuators.iter().find(|a| a.name == *name),
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|id| actuators.iter().find(|a| u64::from(a.id) == id)),
            _ => {
                return Err(invalid(
                    "actuator",
                    "must be an actuator name (string) or id (integer)",
                ));
            }
        };
        found.ok_or_else(|| {
            let declared: Vec<String> = actuators
                .iter()
                .map(|a| format!("{} ({})", a.name, a.id))
                .collect();
            invalid(
                "actuator",
                format!(
                    "{wanted} is not declared by the device; declared: {}",
                    declared.join(", ")
                ),
            )
        })
    }
}

/// The value of a `Set` for an actuator of `kind`. A float actuator also
/// takes a JSON integer; an int actuator does not take a fraction.
fn set_value(value: &serde_json::Value, kind: ValueKind) -> Result<Value, InvalidRequest> {
    let wrong = || {
        invalid(
            "value",
            format!(
                "the actuator takes a {} value, got {}",
                kind.as_str(),
                json_kind(value)
            ),
        )
    };
    match kind {
        ValueKind::Bool => value.as_bool().map(Value::Bool).ok_or_else(wrong),
        ValueKind::Int => value.as_i64().map(Value::Int).ok_or_else(wrong),
        ValueKind::Float => value
            .as_f64()
            .filter(|f| value.is_number() && f.is_finite())
            .map(Value::Float)
            .ok_or_else(wrong),
    }
}

/// A JSON argument: booleans, integers (i64) and other numbers (f64).
fn arg_value(value: &serde_json::Value) -> Option<Value> {
    match value {
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(Value::Float)),
        _ => None,
    }
}

fn check_invoke(invoke: InvokeRequest) -> Result<CommandAction, InvalidRequest> {
    let Some(name) = invoke.name else {
        return Err(invalid("action.name", "is required"));
    };
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(invalid(
            "action.name",
            format!("must be 1 to {MAX_NAME_BYTES} bytes without control characters"),
        ));
    }
    if invoke.args.len() > MAX_COMMAND_ARGS {
        return Err(invalid(
            "action.args",
            format!("at most {MAX_COMMAND_ARGS} arguments"),
        ));
    }
    let mut args = Vec::with_capacity(invoke.args.len());
    for (i, arg) in invoke.args.iter().enumerate() {
        let value = arg_value(arg).ok_or_else(|| {
            invalid(
                &format!("action.args[{i}]"),
                format!("must be a number or a boolean, got {}", json_kind(arg)),
            )
        })?;
        args.push(value);
    }
    Ok(CommandAction::Invoke { name, args })
}

fn check_idempotency_key(key: &str) -> Result<(), InvalidRequest> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || key.chars().any(char::is_control)
    {
        return Err(invalid(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        serde_json::Value::Number(_) => "a fractional number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn actuators() -> Vec<ActuatorInfo> {
        vec![
            ActuatorInfo {
                id: 1,
                name: "relay".into(),
                kind: ValueKind::Bool,
            },
            ActuatorInfo {
                id: 2,
                name: "setpoint".into(),
                kind: ValueKind::Float,
            },
            ActuatorInfo {
                id: 3,
                name: "level".into(),
                kind: ValueKind::Int,
            },
        ]
    }

    fn check(body: serde_json::Value) -> Result<NewCommand, InvalidRequest> {
        let request: CommandRequest = serde_json::from_value(body).expect("shape");
        let actuators = actuators();
        request.check(CheckContext {
            device_pk: 9,
            actuators: &actuators,
            source: "api:test".into(),
            now_ms: 1_000,
            ttl: TtlLimits {
                default: Duration::from_secs(60),
                max: Duration::from_secs(3_600),
            },
            reply: None,
        })
    }

    fn field_of(body: serde_json::Value) -> String {
        check(body).expect_err("refused").field
    }

    #[test]
    fn a_set_by_name_or_id_takes_the_declared_kind() {
        let cmd = check(json!({"actuator": "relay", "value": true})).expect("valid");
        assert_eq!(cmd.actuator_id, 1);
        assert_eq!(cmd.action, CommandAction::Set(Value::Bool(true)));
        assert_eq!(cmd.expires_ms, 61_000);
        let cmd = check(json!({"actuator": 2, "value": 21, "ttl": 5})).expect("valid");
        assert_eq!(cmd.action, CommandAction::Set(Value::Float(21.0)));
        assert_eq!(cmd.expires_ms, 6_000);
        let cmd = check(json!({"actuator": "level", "value": -3})).expect("valid");
        assert_eq!(cmd.action, CommandAction::Set(Value::Int(-3)));
    }

    #[test]
    fn wrong_kinds_and_unknown_actuators_name_their_field() {
        let err = check(json!({"actuator": "relay", "value": 1})).expect_err("kind");
        assert_eq!(err.field, "value");
        assert!(err.message.contains("bool"), "{}", err.message);
        assert_eq!(
            field_of(json!({"actuator": "level", "value": 1.5})),
            "value"
        );
        assert_eq!(
            field_of(json!({"actuator": "setpoint", "value": "hot"})),
            "value"
        );
        let err = check(json!({"actuator": "fan", "value": true})).expect_err("unknown");
        assert_eq!(err.field, "actuator");
        assert!(err.message.contains("relay (1)"), "{}", err.message);
        assert_eq!(field_of(json!({"actuator": 7, "value": true})), "actuator");
        assert_eq!(field_of(json!({"value": true})), "actuator");
        assert_eq!(field_of(json!({"actuator": "relay"})), "value");
        assert_eq!(
            field_of(json!({"actuator": "relay", "value": true, "action": {"name": "x"}})),
            "body"
        );
    }

    #[test]
    fn invoke_arguments_are_typed_from_json() {
        let cmd = check(
            json!({"actuator": "relay", "action": {"name": "pulse", "args": [500, 0.5, false]}}),
        )
        .expect("valid");
        assert_eq!(
            cmd.action,
            CommandAction::Invoke {
                name: "pulse".into(),
                args: vec![Value::Int(500), Value::Float(0.5), Value::Bool(false)],
            }
        );
        assert_eq!(
            field_of(json!({"actuator": "relay", "action": {"name": "pulse", "args": [1, "x"]}})),
            "action.args[1]"
        );
        assert_eq!(
            field_of(json!({"actuator": "relay", "action": {"args": []}})),
            "action.name"
        );
        assert_eq!(
            field_of(
                json!({"actuator": "relay", "action": {"name": "p", "args": [1,2,3,4,5,6,7,8,9]}})
            ),
            "action.args"
        );
    }

    #[test]
    fn ttl_and_idempotency_keys_are_bounded() {
        assert_eq!(
            field_of(json!({"actuator": "relay", "value": true, "ttl": 0})),
            "ttl"
        );
        assert_eq!(
            field_of(json!({"actuator": "relay", "value": true, "ttl": 3_601})),
            "ttl"
        );
        assert_eq!(
            field_of(json!({"actuator": "relay", "value": true, "ttl": 1.5})),
            "ttl"
        );
        assert_eq!(
            field_of(json!({"actuator": "relay", "value": true, "idempotency_key": ""})),
            "idempotency_key"
        );
        let cmd = check(json!({"actuator": "relay", "value": true, "idempotency_key": "k-1"}))
            .expect("valid");
        assert_eq!(cmd.idempotency_key.as_deref(), Some("k-1"));
    }

    #[test]
    fn a_device_without_actuators_is_explained() {
        let request: CommandRequest =
            serde_json::from_value(json!({"actuator": "relay", "value": true})).expect("shape");
        let err = request
            .check(CheckContext {
                device_pk: 1,
                actuators: &[],
                source: "mqtt".into(),
                now_ms: 0,
                ttl: TtlLimits {
                    default: Duration::from_secs(1),
                    max: Duration::from_secs(1),
                },
                reply: None,
            })
            .expect_err("refused");
        assert!(err.message.contains("no actuators"), "{}", err.message);
    }
}
