//! How values map to database columns, the same for every backend.
//!
//! Both backends store a reading's value in three columns (kind, value_float,
//! value_int) and sequence numbers as signed 64-bit integers. The mapping and
//! the checks on what is read back live here once, so SQLite and Postgres
//! cannot drift apart; each backend only widens or narrows the integer types
//! its driver binds.

use schema::{Value, ValueKind};

use super::StoreError;
use super::devices::DeviceRecord;

/// Storage code of a value kind (the postcard tag): 0 float, 1 int, 2 bool.
pub(crate) fn kind_code(kind: ValueKind) -> i16 {
    match kind {
        ValueKind::Float => 0,
        ValueKind::Int => 1,
        ValueKind::Bool => 2,
    }
}

/// The value kind stored as `code`.
pub(crate) fn kind_from_code(code: i64) -> Result<ValueKind, StoreError> {
    match code {
        0 => Ok(ValueKind::Float),
        1 => Ok(ValueKind::Int),
        2 => Ok(ValueKind::Bool),
        other => Err(StoreError::Corrupt(format!("unknown value kind {other}"))),
    }
}

/// A value as the three reading columns: kind, value_float, value_int.
pub(crate) fn value_columns(value: Value) -> (i16, Option<f64>, Option<i64>) {
    match value {
        Value::Float(f) => (0, Some(f), None),
        Value::Int(i) => (1, None, Some(i)),
        Value::Bool(b) => (2, None, Some(i64::from(b))),
    }
}

/// The value stored in the three reading columns.
pub(crate) fn value_from_columns(
    kind: i64,
    float: Option<f64>,
    int: Option<i64>,
) -> Result<Value, StoreError> {
    match (kind_from_code(kind)?, float, int) {
        (ValueKind::Float, Some(f), _) => Ok(Value::Float(f)),
        // SQLite stores NaN as NULL; the hub refuses non-finite values, so
        // this only happens with rows written by something else.
        (ValueKind::Float, None, _) => Ok(Value::Float(f64::NAN)),
        (ValueKind::Int, _, Some(i)) => Ok(Value::Int(i)),
        (ValueKind::Bool, _, Some(i)) => Ok(Value::Bool(i != 0)),
        (kind, _, None) => Err(StoreError::Corrupt(format!(
            "{} reading without value_int",
            kind.as_str()
        ))),
    }
}

/// A u16 id column (sensor or actuator) read back.
pub(crate) fn small_id(column: &str, raw: i64) -> Result<u16, StoreError> {
    u16::try_from(raw).map_err(|_| StoreError::Corrupt(format!("{column} {raw} out of range")))
}

/// A sequence number column read back (stored as a non-negative i64).
pub(crate) fn seq_from_db(raw: i64) -> Result<u64, StoreError> {
    u64::try_from(raw).map_err(|_| StoreError::Corrupt(format!("negative last_seq {raw}")))
}

/// A sequence number for storage: both backends' integers are signed 64-bit,
/// so the (never seen in practice) upper half of u64 is clamped to i64::MAX
/// rather than wrapping negative, which would make `max()` go backwards.
pub(crate) fn seq_to_db(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

// The row shape both backends read devices in, and its mapping.
/// Columns of a [`DeviceRecord`], in [`DeviceRow`] order (a macro so that
/// `concat!` can build whole statements at compile time).
macro_rules! device_columns {
    () => {
        "pk, id, name, created_at, revoked_at, firmware, online, last_seen, last_seq, hub_instance"
    };
}
pub(crate) use device_columns;

pub(crate) type DeviceRow = (
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    bool,
    Option<i64>,
    i64,
    Option<String>,
);

pub(crate) fn device_record(row: DeviceRow) -> Result<DeviceRecord, StoreError> {
    let (
        pk,
        id,
        name,
        created_at_ms,
        revoked_at_ms,
        firmware,
        online,
        last_seen_ms,
        last_seq,
        hub_instance,
    ) = row;
    Ok(DeviceRecord {
        pk,
        id,
        name,
        created_at_ms,
        revoked_at_ms,
        firmware,
        online,
        last_seen_ms,
        last_seq: seq_from_db(last_seq)?,
        hub_instance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_columns() {
        for value in [
            Value::Float(-1.5),
            Value::Int(i64::MIN),
            Value::Bool(true),
            Value::Bool(false),
        ] {
            let (kind, f, i) = value_columns(value);
            assert_eq!(
                value_from_columns(i64::from(kind), f, i).expect("readable"),
                value
            );
        }
        assert!(value_from_columns(7, None, Some(1)).is_err());
        assert!(value_from_columns(1, Some(1.0), None).is_err());
    }

    #[test]
    fn huge_seq_is_clamped_not_wrapped() {
        assert_eq!(seq_to_db(7), 7);
        assert_eq!(seq_to_db(u64::MAX), i64::MAX);
    }

    #[test]
    fn out_of_range_ids_and_seqs_are_corrupt() {
        assert_eq!(small_id("sensor_id", 65_535).expect("in range"), 65_535);
        assert!(small_id("sensor_id", 65_536).is_err());
        assert!(small_id("sensor_id", -1).is_err());
        assert!(seq_from_db(-1).is_err());
    }
}
