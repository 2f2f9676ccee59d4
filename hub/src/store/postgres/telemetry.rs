//! Postgres queries for readings: the batch writer and the reads.
//!
//! The writer commits a batch in one transaction: the readings (a key
//! already stored is ignored, the first write wins), the newest value per
//! sensor in `latest_readings`, and each device's highest settled seq. The
//! facade hands the rows over in key order and without repeated keys.
//!
//! How the readings go in, measured with a throwaway release program on the
//! 2-core development machine (PostgreSQL 15, default settings; the whole
//! writer transaction, including the `latest_readings` upsert and the
//! `last_seq` raise, on one connection; 1,000 devices x 5 sensors, frames
//! of 50 readings; 250 batches of 8,192 readings after 20 of warm-up;
//! alternating runs on a shared, noisy machine; rows/s):
//!
//! | readings statement                                      | 8,192/batch        | 2,048/batch |
//! |---------------------------------------------------------|--------------------|-------------|
//! | `INSERT … SELECT * FROM UNNEST(…) ON CONFLICT DO NOTHING` | 190k, 190k, 205k   | 160k        |
//! | binary COPY into a temporary table, then `INSERT … SELECT … ON CONFLICT DO NOTHING` | 205k, 216k, 231k | 161k |
//! | the same two without `ON CONFLICT` (not usable alone)   | 254k-280k / 294k-315k |          |
//! | binary COPY straight into `readings`                    | 405k, 403k         | 279k        |
//! | this writer (`Store::write_batch`, no resent keys)      | 346k-399k          | 264k        |
//!
//! `ON CONFLICT` is what costs: each row is first looked up in the key's
//! index, then inserted as a speculative tuple, indexed, and confirmed with
//! a WAL record of its own. A conflict only happens when a device resends
//! readings after a reconnect, so the writer takes the fast path, binary
//! COPY straight into `readings`, and only when that fails with a
//! unique-key violation (the whole transaction rolls back) does it redo the
//! batch with `UNNEST … ON CONFLICT DO NOTHING`. Of the two exact
//! statements, UNNEST is the fallback although COPY through a staging table
//! measured about 10% faster: the fallback is rare, and UNNEST needs no
//! per-session temporary table (which a transaction-pooling proxy would
//! lose between batches). After a batch that held resent keys, the next
//! batches go straight to the exact path until one has none, so a reconnect
//! storm does not pay for a failed COPY per batch.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{PgStore, bounded};
use crate::store::StoreError;
use crate::store::columns::{
    kind_from_code, seq_to_db, small_id, value_columns, value_from_columns,
};
use crate::store::devices::SensorInfo;
use crate::store::telemetry::{ReadingRow, SensorLatest, StoredReading};

/// Client-side limit on one batch transaction (see `postgres` for the
/// server-side ones); only reached when the server stops answering.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

/// The fast path: the batch's readings straight into the table, in binary
/// (see [`copy_binary`]); fails on a key already stored.
const COPY_READINGS_SQL: &str = "\
    COPY readings (device_pk, ts, sensor_id, kind, value_float, value_int) \
    FROM STDIN (FORMAT binary)";

/// The exact path: a key already stored keeps its first row.
const INSERT_READINGS_SQL: &str = "\
    INSERT INTO readings (device_pk, ts, sensor_id, kind, value_float, value_int) \
    SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int4[], $4::int2[], $5::float8[], $6::int8[]) \
    ON CONFLICT DO NOTHING";

/// Moves each sensor's newest value forward; one row per (device, sensor).
/// A plain UPDATE joined on the key: in steady state every series already has
/// a row, and this costs one index probe and a HOT update per row, where
/// `INSERT … ON CONFLICT DO UPDATE` also pays a speculative insertion.
/// Measured end to end (bench/telemetry.sh, Postgres, 205k readings/s
/// offered, 8 sensors per device): ack p99 164 ms with the upsert alone,
/// 55 ms with this UPDATE first.
const UPDATE_LATEST_SQL: &str = "\
    UPDATE latest_readings AS l SET \
        ts = v.ts, kind = v.kind, value_float = v.value_float, value_int = v.value_int \
    FROM UNNEST($1::int8[], $2::int4[], $3::int8[], $4::int2[], $5::float8[], $6::int8[]) \
        AS v(device_pk, sensor_id, ts, kind, value_float, value_int) \
    WHERE l.device_pk = v.device_pk AND l.sensor_id = v.sensor_id AND v.ts > l.ts";

/// Keeps the newest reading per sensor; one row per (device, sensor). Run
/// only when [`UPDATE_LATEST_SQL`] did not move every row (a new series, or
/// a resend that is not newer, which this then leaves alone).
const UPSERT_LATEST_SQL: &str = "\
    INSERT INTO latest_readings (device_pk, sensor_id, ts, kind, value_float, value_int) \
    SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::int8[], $4::int2[], $5::float8[], $6::int8[]) \
    ON CONFLICT (device_pk, sensor_id) DO UPDATE SET \
        ts = excluded.ts, kind = excluded.kind, \
        value_float = excluded.value_float, value_int = excluded.value_int \
    WHERE excluded.ts > latest_readings.ts";

/// Raises `last_seq` (never lowers it); one row per device key.
const RAISE_LAST_SEQ_SQL: &str = "\
    UPDATE devices SET last_seq = v.seq \
    FROM UNNEST($1::int8[], $2::int8[]) AS v(pk, seq) \
    WHERE devices.pk = v.pk AND devices.last_seq < v.seq";

/// Every declared sensor of a device with its newest reading, if any.
pub(super) const LATEST_SQL: &str = "\
    SELECT s.sensor_id, s.name, s.unit, s.kind, l.ts, l.kind, l.value_float, l.value_int \
    FROM sensors AS s \
    LEFT JOIN latest_readings AS l \
      ON l.device_pk = s.device_pk AND l.sensor_id = s.sensor_id \
    WHERE s.device_pk = $1 \
    ORDER BY s.sensor_id";

/// One sensor's readings in a range: an index scan of the primary key from
/// (device, from), in time order, skipping the device's other sensors.
pub(super) const RANGE_SQL: &str = "\
    SELECT ts, kind, value_float, value_int FROM readings \
    WHERE device_pk = $1 AND ts >= $2 AND ts <= $3 AND sensor_id = $4 \
    ORDER BY ts LIMIT $5";

type LatestRow = (
    i32,
    String,
    String,
    i16,
    Option<i64>,
    Option<i16>,
    Option<f64>,
    Option<i64>,
);

/// ts, kind, value_float, value_int.
type RangeRow = (i64, i16, Option<f64>, Option<i64>);

/// Reading rows as one array per column, for `UNNEST`.
struct Columns {
    device_pk: Vec<i64>,
    ts: Vec<i64>,
    sensor_id: Vec<i32>,
    kind: Vec<i16>,
    value_float: Vec<Option<f64>>,
    value_int: Vec<Option<i64>>,
}

impl Columns {
    fn of(rows: &[ReadingRow]) -> Columns {
        let mut columns = Columns {
            device_pk: Vec::with_capacity(rows.len()),
            ts: Vec::with_capacity(rows.len()),
            sensor_id: Vec::with_capacity(rows.len()),
            kind: Vec::with_capacity(rows.len()),
            value_float: Vec::with_capacity(rows.len()),
            value_int: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let (kind, float, int) = value_columns(row.value);
            columns.device_pk.push(row.device_pk);
            columns.ts.push(row.time_ms);
            columns.sensor_id.push(i32::from(row.sensor));
            columns.kind.push(kind);
            columns.value_float.push(float);
            columns.value_int.push(int);
        }
        columns
    }
}

impl PgStore {
    /// Commits the batch; it is durable when this returns. The facade
    /// prepares the arguments: `rows` in key order without repeated keys,
    /// `latest` one row per (device, sensor) in key order, `last_seqs` one
    /// entry per device key in key order.
    ///
    /// After any failure, the writer's connection is dropped rather than
    /// returned to its pool: its state is unknown (a server gone mid-batch,
    /// a transaction cut short by the deadline), and the next batch opens a
    /// fresh one.
    pub(crate) async fn write_batch(
        &self,
        rows: &[ReadingRow],
        latest: &[ReadingRow],
        last_seqs: &[(i64, u64)],
    ) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let expect_duplicates = self.expect_duplicates.load(Ordering::Relaxed);
        let batch = Batch {
            rows,
            latest,
            last_seqs,
        };
        let outcome = tokio::time::timeout(WRITE_DEADLINE, async {
            if !expect_duplicates {
                match batch.write(&mut conn, Readings::Copy).await {
                    Ok(_) => return Ok(false),
                    Err(err) if is_unique_violation(&err) => {
                        tracing::debug!(
                            readings = rows.len(),
                            "batch holds readings already stored; writing it again, skipping them"
                        );
                    }
                    Err(err) => return Err(err),
                }
            }
            let inserted = batch.write(&mut conn, Readings::SkipStored).await?;
            Ok(inserted < rows.len() as u64)
        })
        .await;
        let err = match outcome {
            Ok(Ok(had_duplicates)) => {
                self.expect_duplicates
                    .store(had_duplicates, Ordering::Relaxed);
                return Ok(());
            }
            Ok(Err(err)) => err,
            Err(_) => StoreError::Timeout(WRITE_DEADLINE),
        };
        tracing::warn!(error = %err, "batch write failed; replacing the writer's connection");
        drop(conn.detach());
        Err(err)
    }

    pub(crate) async fn count_readings(&self) -> Result<i64, StoreError> {
        bounded(async {
            let count = sqlx::query_scalar("SELECT count(*) FROM readings")
                .fetch_one(&self.pool)
                .await?;
            Ok(count)
        })
        .await
    }

    pub(crate) async fn latest_readings(&self, pk: i64) -> Result<Vec<SensorLatest>, StoreError> {
        let rows: Vec<LatestRow> = bounded(async {
            Ok(sqlx::query_as(LATEST_SQL)
                .bind(pk)
                .fetch_all(&self.pool)
                .await?)
        })
        .await?;
        rows.into_iter()
            .map(|(id, name, unit, kind, ts, value_kind, float, int)| {
                let latest = match (ts, value_kind) {
                    (Some(time_ms), Some(value_kind)) => Some(StoredReading {
                        time_ms,
                        value: value_from_columns(i64::from(value_kind), float, int)?,
                    }),
                    _ => None,
                };
                Ok(SensorLatest {
                    sensor: SensorInfo {
                        id: small_id("sensor_id", i64::from(id))?,
                        name,
                        unit,
                        kind: kind_from_code(i64::from(kind))?,
                    },
                    latest,
                })
            })
            .collect()
    }

    /// Up to `fetch` readings with `from_ms <= ts <= to_ms`, ascending.
    pub(crate) async fn readings(
        &self,
        pk: i64,
        sensor: u16,
        from_ms: i64,
        to_ms: i64,
        fetch: u32,
    ) -> Result<Vec<StoredReading>, StoreError> {
        let rows: Vec<RangeRow> = bounded(async {
            Ok(sqlx::query_as(RANGE_SQL)
                .bind(pk)
                .bind(from_ms)
                .bind(to_ms)
                .bind(i32::from(sensor))
                .bind(i64::from(fetch))
                .fetch_all(&self.pool)
                .await?)
        })
        .await?;
        rows.into_iter()
            .map(|(time_ms, kind, float, int)| {
                Ok(StoredReading {
                    time_ms,
                    value: value_from_columns(i64::from(kind), float, int)?,
                })
            })
            .collect()
    }
}

/// How a batch's readings are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readings {
    /// Binary COPY into `readings`: fast, fails if a key is already stored.
    Copy,
    /// `UNNEST … ON CONFLICT DO NOTHING`: stored keys are skipped.
    SkipStored,
}

/// One batch as the facade prepared it.
struct Batch<'a> {
    rows: &'a [ReadingRow],
    latest: &'a [ReadingRow],
    last_seqs: &'a [(i64, u64)],
}

impl Batch<'_> {
    /// Writes the batch in one transaction; returns how many readings were
    /// inserted (with [`Readings::Copy`], all of them or an error).
    async fn write(
        &self,
        conn: &mut sqlx::PgConnection,
        readings: Readings,
    ) -> Result<u64, StoreError> {
        let mut tx = sqlx::Connection::begin(conn).await?;
        let inserted = if self.rows.is_empty() {
            0
        } else if readings == Readings::Copy {
            let mut copy = tx.copy_in_raw(COPY_READINGS_SQL).await?;
            copy.send(copy_binary(self.rows)).await?;
            copy.finish().await?
        } else {
            let c = Columns::of(self.rows);
            sqlx::query(INSERT_READINGS_SQL)
                .bind(&c.device_pk)
                .bind(&c.ts)
                .bind(&c.sensor_id)
                .bind(&c.kind)
                .bind(&c.value_float)
                .bind(&c.value_int)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        };
        if !self.latest.is_empty() {
            let c = Columns::of(self.latest);
            let updated = sqlx::query(UPDATE_LATEST_SQL)
                .bind(&c.device_pk)
                .bind(&c.sensor_id)
                .bind(&c.ts)
                .bind(&c.kind)
                .bind(&c.value_float)
                .bind(&c.value_int)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated < self.latest.len() as u64 {
                sqlx::query(UPSERT_LATEST_SQL)
                    .bind(&c.device_pk)
                    .bind(&c.sensor_id)
                    .bind(&c.ts)
                    .bind(&c.kind)
                    .bind(&c.value_float)
                    .bind(&c.value_int)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if !self.last_seqs.is_empty() {
            let pks: Vec<i64> = self.last_seqs.iter().map(|s| s.0).collect();
            let seqs: Vec<i64> = self.last_seqs.iter().map(|s| seq_to_db(s.1)).collect();
            sqlx::query(RAISE_LAST_SEQ_SQL)
                .bind(&pks)
                .bind(&seqs)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

/// True when `err` is a unique-key violation (SQLSTATE 23505).
fn is_unique_violation(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation())
}

/// The binary COPY header: the signature, no flags, no header extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Bytes of one row at most: field count, then six fields with their lengths.
const COPY_ROW_MAX: usize = 2 + (4 + 8) + (4 + 8) + (4 + 4) + (4 + 2) + (4 + 8) + 4;

/// `rows` in PostgreSQL's binary COPY format for the columns of
/// [`COPY_READINGS_SQL`]: the header, per row the field count and each field
/// as a big-endian length (-1 for NULL) and value, then the trailer -1.
fn copy_binary(rows: &[ReadingRow]) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        // A field is at most 8 bytes, so its length always fits.
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    fn null(out: &mut Vec<u8>) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
    }
    let mut out = Vec::with_capacity(COPY_HEADER.len() + rows.len() * COPY_ROW_MAX + 2);
    out.extend_from_slice(COPY_HEADER);
    for row in rows {
        let (kind, float, int) = value_columns(row.value);
        out.extend_from_slice(&6i16.to_be_bytes());
        field(&mut out, &row.device_pk.to_be_bytes());
        field(&mut out, &row.time_ms.to_be_bytes());
        field(&mut out, &i32::from(row.sensor).to_be_bytes());
        field(&mut out, &kind.to_be_bytes());
        match float {
            Some(f) => field(&mut out, &f.to_bits().to_be_bytes()),
            None => null(&mut out),
        }
        match int {
            Some(i) => field(&mut out, &i.to_be_bytes()),
            None => null(&mut out),
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::test_db;
    use schema::Value;

    #[test]
    fn copy_binary_layout() {
        let rows = [
            ReadingRow {
                device_pk: 1,
                sensor: 2,
                time_ms: 3,
                value: Value::Float(0.5),
            },
            ReadingRow {
                device_pk: 4,
                sensor: 5,
                time_ms: 6,
                value: Value::Bool(true),
            },
        ];
        let out = copy_binary(&rows);
        assert_eq!(&out[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&out[11..19], &[0; 8], "no flags, no header extension");
        let first = &out[19..];
        assert_eq!(&first[..2], &6i16.to_be_bytes());
        assert_eq!(&first[2..6], &8i32.to_be_bytes());
        assert_eq!(&first[6..14], &1i64.to_be_bytes());
        // device 12 + ts 12 + sensor 8 + kind 6 + float 12 + NULL int 4
        let row_len = 2 + 12 + 12 + 8 + 6 + 12 + 4;
        assert_eq!(&first[row_len - 4..row_len], &(-1i32).to_be_bytes());
        let second = &first[row_len..];
        assert_eq!(
            &second[2 + 12 + 12 + 8 + 6..][..4],
            &(-1i32).to_be_bytes(),
            "NULL float"
        );
        assert_eq!(&out[out.len() - 2..], &(-1i16).to_be_bytes());
        assert_eq!(out.len(), 19 + row_len + row_len + 2);
        assert!(out.len() <= COPY_HEADER.len() + 2 * COPY_ROW_MAX + 2);
    }

    /// A sensor's range read is an index scan of the primary key, in key
    /// order (no sort, no scan of the table), in the plan built for one
    /// execution and in the generic one cached after a few; "latest" reads
    /// `sensors` and `latest_readings` through their keys.
    #[tokio::test]
    async fn reads_use_the_primary_keys() {
        let Some(store) = test_db::loaded_store().await else {
            return;
        };
        for generic in [false, true] {
            let plan = test_db::plan(
                &store,
                "",
                RANGE_SQL,
                "bigint, bigint, bigint, integer, bigint",
                "7, 100, 500, 2, 101",
                generic,
            )
            .await;
            assert!(
                plan.contains("Index Scan using readings_pkey on readings"),
                "generic {generic}:\n{plan}"
            );
            assert!(!plan.contains("Seq Scan"), "generic {generic}:\n{plan}");
            assert!(!plan.contains("Sort"), "generic {generic}:\n{plan}");

            let plan = test_db::plan(&store, "", LATEST_SQL, "bigint", "7", generic).await;
            assert!(
                plan.contains("latest_readings_pkey"),
                "generic {generic}:\n{plan}"
            );
            assert!(plan.contains("sensors_pkey"), "generic {generic}:\n{plan}");
            assert!(!plan.contains("Seq Scan"), "generic {generic}:\n{plan}");
        }
        store.close().await;
    }
}
