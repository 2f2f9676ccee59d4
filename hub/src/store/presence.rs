//! Presence: who is connected, since when, and which devices were revoked.
//!
//! The database is the shared truth between hubs: a session bumps the
//! device's session counter when it opens, and its close only marks the device
//! offline while that counter is still current, so a late close of a replaced
//! session (possibly on another hub) cannot hide a newer live one. Last-seen
//! times are flushed in bulk every few seconds, not per frame. Hubs poll
//! [`Store::devices_revoked_since`] to close sessions revoked elsewhere.

use std::collections::HashMap;

use super::columns::seq_from_db;
use super::{ActuatorInfo, Backend, SensorInfo, Store, StoreError};

/// What the hub needs when a session opens.
#[derive(Debug, Clone, Copy)]
pub struct SessionStart {
    /// Incremented on every connection; the disconnect only marks offline if it still matches.
    pub session_counter: i64,
    /// Highest telemetry seq durably stored (0 = none).
    pub last_stored_seq: u64,
    /// The Hello differs from the last one recorded (or none was): record it.
    pub hello_changed: bool,
    /// The device has unfinished commands to send.
    pub open_commands: bool,
}

/// One session opening, for [`Store::sessions_opened`].
#[derive(Debug, Clone)]
pub struct SessionOpening {
    /// The device.
    pub pk: i64,
    /// When it opened, ms; last seen never moves backwards.
    pub now_ms: i64,
    /// [`hello_digest`] of the session's Hello, compared with the stored one.
    pub hello_digest: Vec<u8>,
}

/// One session closing, for [`Store::sessions_closed`].
#[derive(Debug, Clone, Copy)]
pub struct SessionClosing {
    /// The device.
    pub pk: i64,
    /// The counter [`Store::sessions_opened`] gave this session.
    pub session_counter: i64,
    /// When it closed, ms.
    pub now_ms: i64,
}

/// What a backend returns for one opened session.
pub(crate) struct OpenedRow {
    pub pk: i64,
    pub session_counter: i64,
    pub last_seq: i64,
    pub hello_digest: Option<Vec<u8>>,
    pub open_commands: bool,
}

/// The columns a backend's open statement returns, in [`OpenedRow`]'s order.
pub(crate) type OpenedColumns = (i64, i64, i64, Option<Vec<u8>>, bool);

impl From<OpenedColumns> for OpenedRow {
    fn from((pk, session_counter, last_seq, hello_digest, open_commands): OpenedColumns) -> Self {
        OpenedRow {
            pk,
            session_counter,
            last_seq,
            hello_digest,
            open_commands,
        }
    }
}

/// What a backend returns for one closed session: the counter now stored.
pub(crate) struct ClosedRow {
    pub pk: i64,
    pub session_counter: i64,
}

impl Store {
    /// Opens one session; see [`Store::sessions_opened`].
    /// [`StoreError::UnknownDevice`] if `pk` names no device.
    pub async fn session_opened(
        &self,
        pk: i64,
        now_ms: i64,
        instance: &str,
        hello_digest: &[u8],
    ) -> Result<SessionStart, StoreError> {
        let opening = SessionOpening {
            pk,
            now_ms,
            hello_digest: hello_digest.to_vec(),
        };
        self.sessions_opened(instance, std::slice::from_ref(&opening))
            .await?
            .pop()
            .flatten()
            .ok_or(StoreError::UnknownDevice(pk))
    }

    /// For each opening: marks the device online on hub `instance`, bumps its
    /// session counter, and returns the counter with the last stored seq,
    /// whether the Hello digest differs from the last recorded one, and
    /// whether the device has unfinished commands. One statement for the
    /// lot (per backend chunk), so a reconnect storm costs a statement per
    /// batch, not per device. The answers are in the order of `openings`;
    /// `None` where the device does not exist.
    ///
    /// A device may appear more than once: its openings run in the order
    /// given, each in a later statement, so the later one gets the higher
    /// counter.
    pub async fn sessions_opened(
        &self,
        instance: &str,
        openings: &[SessionOpening],
    ) -> Result<Vec<Option<SessionStart>>, StoreError> {
        let mut starts: Vec<Option<SessionStart>> = vec![None; openings.len()];
        for round in rounds_by_key(openings, |o| o.pk) {
            let batch: Vec<&SessionOpening> = round.iter().map(|&i| &openings[i]).collect();
            let rows = match &*self.backend {
                Backend::Sqlite(db) => db.sessions_opened(instance, &batch).await?,
                Backend::Postgres(db) => db.sessions_opened(instance, &batch).await?,
            };
            let mut rows: HashMap<i64, OpenedRow> = rows.into_iter().map(|r| (r.pk, r)).collect();
            for i in round {
                let opening = &openings[i];
                if let Some(row) = rows.remove(&opening.pk) {
                    starts[i] = Some(SessionStart {
                        session_counter: row.session_counter,
                        last_stored_seq: seq_from_db(row.last_seq)?,
                        hello_changed: row.hello_digest.as_deref()
                            != Some(opening.hello_digest.as_slice()),
                        open_commands: row.open_commands,
                    });
                }
            }
        }
        Ok(starts)
    }

    /// Marks offline (on no hub) if `session_counter` is still current; sets last seen
    /// (never moving it backwards). True when the device was marked offline,
    /// false when a newer session (here or on another hub) is current.
    pub async fn session_closed(
        &self,
        pk: i64,
        session_counter: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let closing = SessionClosing {
            pk,
            session_counter,
            now_ms,
        };
        let closed = self.sessions_closed(&[closing]).await?;
        Ok(closed.first().copied().unwrap_or(false))
    }

    /// [`Store::session_closed`] for many sessions in one statement (per
    /// backend chunk); answers in the order of `closings`. Closings of one
    /// device run in the order given.
    pub async fn sessions_closed(
        &self,
        closings: &[SessionClosing],
    ) -> Result<Vec<bool>, StoreError> {
        let mut closed = vec![false; closings.len()];
        for round in rounds_by_key(closings, |c| c.pk) {
            let batch: Vec<SessionClosing> = round.iter().map(|&i| closings[i]).collect();
            let rows = match &*self.backend {
                Backend::Sqlite(db) => db.sessions_closed(&batch).await?,
                Backend::Postgres(db) => db.sessions_closed(&batch).await?,
            };
            let rows: HashMap<i64, i64> = rows
                .into_iter()
                .map(|r| (r.pk, r.session_counter))
                .collect();
            for i in round {
                let closing = &closings[i];
                closed[i] = rows.get(&closing.pk) == Some(&closing.session_counter);
            }
        }
        Ok(closed)
    }

    /// Writes last-seen times (pk, ms) in one transaction; a time older than
    /// the stored one is ignored, and unknown keys are skipped.
    pub async fn touch_last_seen(&self, seen: &[(i64, i64)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        // One entry per device, its latest time: a statement that joins on
        // the device key must not see a key twice.
        let mut seen = seen.to_vec();
        seen.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        seen.dedup_by_key(|s| s.0);
        match &*self.backend {
            Backend::Sqlite(db) => db.touch_last_seen(&seen).await,
            Backend::Postgres(db) => db.touch_last_seen(&seen).await,
        }
    }

    /// Devices revoked at or after `since_ms`: (pk, revoked_at_ms), oldest first.
    pub async fn devices_revoked_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.devices_revoked_since(since_ms).await,
            Backend::Postgres(db) => db.devices_revoked_since(since_ms).await,
        }
    }
}

/// Splits `items` into rounds in which no key repeats, so one multi-row
/// statement per round touches each row once: the n-th occurrence of a key
/// lands in round n, so repeats run in the order given. Each round lists
/// indices into `items` in key order, so concurrent batches (several hubs
/// on Postgres) ask for their rows in the same order (Postgres locks them in
/// the order its plan visits them; a deadlock it still finds fails the batch,
/// and its devices retry).
pub(super) fn rounds_by_key<T>(items: &[T], key: impl Fn(&T) -> i64) -> Vec<Vec<usize>> {
    let mut occurrences: HashMap<i64, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let seen = occurrences.entry(key(item)).or_insert(0);
        if rounds.len() <= *seen {
            rounds.push(Vec::new());
        }
        rounds[*seen].push(i);
        *seen += 1;
    }
    for round in &mut rounds {
        round.sort_by_key(|&i| key(&items[i]));
    }
    rounds
}

/// SHA-256 of a Hello's declarations in a canonical form (sensors and
/// actuators in id order, every string length-prefixed), as stored by
/// [`Store::record_hello`] and compared by [`Store::session_opened`].
pub fn hello_digest(
    firmware: &str,
    sensors: &[SensorInfo],
    actuators: &[ActuatorInfo],
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    fn text(hash: &mut Sha256, value: &str) {
        hash.update((value.len() as u64).to_le_bytes());
        hash.update(value.as_bytes());
    }
    let mut sensors: Vec<&SensorInfo> = sensors.iter().collect();
    sensors.sort_by_key(|s| s.id);
    let mut actuators: Vec<&ActuatorInfo> = actuators.iter().collect();
    actuators.sort_by_key(|a| a.id);
    let mut hash = Sha256::new();
    text(&mut hash, firmware);
    hash.update((sensors.len() as u64).to_le_bytes());
    for sensor in sensors {
        hash.update(sensor.id.to_le_bytes());
        text(&mut hash, &sensor.name);
        text(&mut hash, &sensor.unit);
        text(&mut hash, sensor.kind.as_str());
    }
    hash.update((actuators.len() as u64).to_le_bytes());
    for actuator in actuators {
        hash.update(actuator.id.to_le_bytes());
        text(&mut hash, &actuator.name);
        text(&mut hash, actuator.kind.as_str());
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::ValueKind;

    #[test]
    fn rounds_touch_each_key_once_in_key_order_and_keep_repeats_in_order() {
        let keys = [5_i64, 3, 5, 9, 3, 5, 1];
        let rounds = rounds_by_key(&keys, |k| *k);
        assert_eq!(rounds, vec![vec![6, 1, 0, 3], vec![4, 2], vec![5]]);
        assert!(rounds_by_key(&[] as &[i64], |k| *k).is_empty());
    }

    #[test]
    fn the_hello_digest_ignores_order_and_sees_every_field() {
        let a = SensorInfo {
            id: 1,
            name: "t".into(),
            unit: "C".into(),
            kind: ValueKind::Float,
        };
        let b = SensorInfo {
            id: 2,
            name: "h".into(),
            unit: "%".into(),
            kind: ValueKind::Float,
        };
        let r = ActuatorInfo {
            id: 1,
            name: "relay".into(),
            kind: ValueKind::Bool,
        };
        let base = hello_digest("1.0", &[a.clone(), b.clone()], std::slice::from_ref(&r));
        assert_eq!(
            base,
            hello_digest("1.0", &[b.clone(), a.clone()], std::slice::from_ref(&r))
        );
        assert_ne!(
            base,
            hello_digest("1.1", &[a.clone(), b.clone()], std::slice::from_ref(&r))
        );
        let mut renamed = b.clone();
        renamed.unit = "%RH".into();
        assert_ne!(
            base,
            hello_digest("1.0", &[a.clone(), renamed], std::slice::from_ref(&r))
        );
        // Moving bytes between adjacent strings changes the digest.
        let split = SensorInfo {
            id: 1,
            name: "tC".into(),
            unit: String::new(),
            kind: ValueKind::Float,
        };
        assert_ne!(
            base,
            hello_digest("1.0", &[split, b.clone()], std::slice::from_ref(&r))
        );
        assert_ne!(base, hello_digest("1.0", &[a, b], &[]));
    }
}
