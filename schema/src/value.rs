//! Typed sensor and actuator values.

use serde::{Deserialize, Serialize};

/// The kind of value a sensor reports or an actuator accepts, declared once in Hello.
///
/// Encoded as a postcard enum tag: `Float` = 0, `Int` = 1, `Bool` = 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueKind {
    /// 64-bit IEEE 754 float.
    Float,
    /// 64-bit signed integer.
    Int,
    /// Boolean.
    Bool,
}

/// One typed value.
///
/// Encoded as a postcard enum: tag varint (`Float` = 0, `Int` = 1, `Bool` = 2)
/// followed by the payload (f64 as 8 little-endian bytes, i64 as a zigzag
/// varint, bool as one byte 0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A float reading or setpoint.
    Float(f64),
    /// An integer reading or setpoint (counters, enumerations).
    Int(i64),
    /// A boolean reading or actuator state.
    Bool(bool),
}

impl Value {
    /// The kind of this value.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Float(_) => ValueKind::Float,
            Value::Int(_) => ValueKind::Int,
            Value::Bool(_) => ValueKind::Bool,
        }
    }

    /// False for NaN and infinite floats, which the hub refuses to store.
    pub fn is_finite(&self) -> bool {
        match self {
            Value::Float(f) => f.is_finite(),
            Value::Int(_) | Value::Bool(_) => true,
        }
    }
}

impl ValueKind {
    /// The lower-case name used in JSON and the docs (`float`, `int`, `bool`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ValueKind::Float => "float",
            ValueKind::Int => "int",
            ValueKind::Bool => "bool",
        }
    }
}
