//! Telemetry: the batched reading writer (the hot path) and reading queries.
//!
//! [`Store::write_batch`] is what makes acks honest: the ingest writer calls
//! it with many frames' readings and acks those frames only after it returns.
//! Readings are keyed by (device, sensor, time), so a resent reading is a
//! no-op, and each device's last stored sequence number only ever rises.
//!
//! What every backend's writer needs is prepared here, once: the batch in key
//! order, the newest reading per sensor, one highest seq per device.

use std::collections::HashMap;

use schema::Value;

use super::devices::SensorInfo;
use super::{Backend, Store, StoreError};

/// One reading ready to store.
#[derive(Debug, Clone, Copy)]
pub struct ReadingRow {
    /// Device key.
    pub device_pk: i64,
    /// Sensor id.
    pub sensor: u16,
    /// Absolute time, ms since the epoch.
    pub time_ms: i64,
    /// Value.
    pub value: Value,
}

/// A committed batch, not yet known to be durable.
#[must_use = "a batch may only be acked once it is durable"]
pub struct BatchCommit {
    store: Store,
    /// The backend's commit number to wait for; None when nothing was
    /// written, or when the commit was durable as it returned (Postgres:
    /// COMMIT returns after the WAL is flushed).
    commit: Option<u64>,
}

impl BatchCommit {
    /// Returns once the batch would survive a power loss.
    pub async fn durable(self) -> Result<(), StoreError> {
        match (self.commit, &*self.store.backend) {
            (None, _) | (Some(_), Backend::Postgres(_)) => Ok(()),
            (Some(commit), Backend::Sqlite(db)) => db.wait_durable(commit).await,
        }
    }
}

/// A stored reading of a known sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredReading {
    /// Time, ms since the epoch.
    pub time_ms: i64,
    /// Value.
    pub value: Value,
}

/// A declared sensor and its newest reading, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorLatest {
    /// The sensor as declared.
    pub sensor: SensorInfo,
    /// Its newest stored reading.
    pub latest: Option<StoredReading>,
}

/// A time range of one sensor's readings, read one page at a time.
#[derive(Debug, Clone, Copy)]
pub struct ReadingQuery {
    /// Start of the range, inclusive, ms since the epoch.
    pub from_ms: i64,
    /// End of the range, inclusive, ms since the epoch.
    pub to_ms: i64,
    /// Cursor: only readings strictly after this time (the previous page's
    /// [`ReadingPage::next_after_ms`]).
    pub after_ms: Option<i64>,
    /// Most readings per page (at least 1).
    pub limit: u32,
}

/// One page of readings in ascending time order.
#[derive(Debug, Clone)]
pub struct ReadingPage {
    /// The readings.
    pub readings: Vec<StoredReading>,
    /// Cursor for the next page (the time of this page's last reading); None
    /// when the range holds no more.
    pub next_after_ms: Option<i64>,
}

impl Store {
    /// Stores a batch in one transaction and returns once it is durable:
    /// [`Store::commit_batch`] followed by [`BatchCommit::durable`].
    pub async fn write_batch(
        &self,
        readings: &[ReadingRow],
        last_seqs: &[(i64, u64)],
    ) -> Result<(), StoreError> {
        self.commit_batch(readings, last_seqs)
            .await?
            .durable()
            .await
    }

    /// Stores readings and raises devices' last stored seqs in one
    /// transaction (a resent reading, same device, sensor and time, is
    /// ignored: the first write wins) and returns once it is committed,
    /// visible to readers. The returned [`BatchCommit`] says when it is also
    /// durable; acks wait for that. Splitting the two lets the writer commit
    /// the next batch while the disk syncs this one.
    /// Several `last_seqs` entries for one device are fine; the highest counts.
    pub async fn commit_batch(
        &self,
        readings: &[ReadingRow],
        last_seqs: &[(i64, u64)],
    ) -> Result<BatchCommit, StoreError> {
        if readings.is_empty() && last_seqs.is_empty() {
            return Ok(BatchCommit {
                store: self.clone(),
                commit: None,
            });
        }
        // One entry per device: the highest seq. A backend statement that
        // joins on the device key must not see a key twice.
        let mut seqs = last_seqs.to_vec();
        seqs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        seqs.dedup_by_key(|s| s.0);
        // In key order the inserts walk each device's B-tree leaf once, and
        // concurrent writers (several hubs on one Postgres) lock keys in the
        // same order, so they cannot deadlock. Stable, so of two rows with
        // one key the first sent comes first and is the one kept: backends
        // never see a key twice in one batch.
        let mut rows = readings.to_vec();
        rows.sort_by_key(|r| (r.device_pk, r.time_ms, r.sensor));
        rows.dedup_by_key(|r| (r.device_pk, r.time_ms, r.sensor));
        let latest = newest_per_sensor(&rows);
        let commit = match &*self.backend {
            Backend::Sqlite(db) => Some(db.write_batch(&rows, &latest, &seqs).await?),
            Backend::Postgres(db) => {
                db.write_batch(&rows, &latest, &seqs).await?;
                None
            }
        };
        Ok(BatchCommit {
            store: self.clone(),
            commit,
        })
    }

    /// Total rows in the readings table (tests and status).
    pub async fn count_readings(&self) -> Result<i64, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.count_readings().await,
            Backend::Postgres(db) => db.count_readings().await,
        }
    }

    /// Every sensor the device declared, by id, with its newest reading.
    ///
    /// Read from `latest_readings`, kept by the writer: one key lookup per
    /// sensor, never a walk through history.
    pub async fn latest_readings(&self, pk: i64) -> Result<Vec<SensorLatest>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.latest_readings(pk).await,
            Backend::Postgres(db) => db.latest_readings(pk).await,
        }
    }

    /// One page of a sensor's readings in `query`'s range, oldest first.
    pub async fn readings(
        &self,
        pk: i64,
        sensor: u16,
        query: &ReadingQuery,
    ) -> Result<ReadingPage, StoreError> {
        let limit = query.limit.max(1);
        let from_ms = match query.after_ms {
            Some(after) => query.from_ms.max(after.saturating_add(1)),
            None => query.from_ms,
        };
        if from_ms > query.to_ms {
            return Ok(ReadingPage {
                readings: Vec::new(),
                next_after_ms: None,
            });
        }
        let mut readings = match &*self.backend {
            Backend::Sqlite(db) => {
                db.readings(pk, sensor, from_ms, query.to_ms, limit + 1)
                    .await?
            }
            Backend::Postgres(db) => {
                db.readings(pk, sensor, from_ms, query.to_ms, limit + 1)
                    .await?
            }
        };
        let more = readings.len() > limit as usize;
        readings.truncate(limit as usize);
        let next_after_ms = if more {
            readings.last().map(|r| r.time_ms)
        } else {
            None
        };
        Ok(ReadingPage {
            readings,
            next_after_ms,
        })
    }
}

/// The newest reading per (device, sensor) of `rows`, sorted by (device,
/// sensor): one row per key, as an upsert statement needs. On equal times the
/// first one wins, matching `readings`, where the first write of a key wins.
fn newest_per_sensor(rows: &[ReadingRow]) -> Vec<ReadingRow> {
    let mut newest: HashMap<(i64, u16), ReadingRow> = HashMap::new();
    for row in rows {
        newest
            .entry((row.device_pk, row.sensor))
            .and_modify(|kept| {
                if row.time_ms > kept.time_ms {
                    *kept = *row;
                }
            })
            .or_insert(*row);
    }
    let mut newest: Vec<ReadingRow> = newest.into_values().collect();
    newest.sort_unstable_by_key(|r| (r.device_pk, r.sensor));
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_per_sensor_keeps_the_first_of_equal_times_in_key_order() {
        let row = |device_pk, sensor, time_ms, v| ReadingRow {
            device_pk,
            sensor,
            time_ms,
            value: Value::Int(v),
        };
        let newest = newest_per_sensor(&[
            row(2, 1, 3, 0),
            row(1, 1, 5, 1),
            row(1, 1, 7, 2),
            row(1, 1, 7, 3),
            row(1, 2, 1, 4),
        ]);
        let summary: Vec<_> = newest
            .iter()
            .map(|r| (r.device_pk, r.sensor, r.time_ms, r.value))
            .collect();
        assert_eq!(
            summary,
            [
                (1, 1, 7, Value::Int(2)),
                (1, 2, 1, Value::Int(4)),
                (2, 1, 3, Value::Int(0)),
            ]
        );
    }
}
