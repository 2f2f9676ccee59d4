//! SQLite queries for readings: the staged batch writer, the merge into the
//! main table, and reads that see both.
//!
//! Why staging: `readings` is clustered by (device, sensor, time), which is
//! what reads want, but a batch from many devices then lands on one page per
//! (device, sensor), and each commit rewrites all those pages into the WAL.
//! Measured on the 2-core dev box with 8000 active sensors and 8192-row
//! batches: ~60-90k rows/s. So a batch is sorted and appended to
//! `readings_inbox`, keyed by (batch, device, sensor, time): a commit writes a
//! few new pages whatever the mix of devices. When the inbox holds
//! [`MERGE_ROWS`] rows or [`MERGE_BATCHES`] batches, one transaction moves it
//! into `readings` in key order and empties it; that touches each active
//! sensor's page once per merge instead of once per commit.
//!
//! Reads run in one snapshot over both tables: the main table by its key, the
//! inbox by one seek per staged batch (the batch numbers are contiguous), and
//! the two are combined in Rust. A key present in both (a resend) counts once,
//! with the first write winning, exactly as the merge will decide.

use std::sync::atomic::Ordering;

use sqlx::{Sqlite, Transaction};

use super::batch::{ChunkedSql, placeholders};
use super::{SqliteStore, kind_from_code, seq_to_db, small_id, value_columns, value_from_columns};
use crate::store::StoreError;
use crate::store::devices::SensorInfo;
use crate::store::telemetry::{ReadingRow, SensorLatest, StoredReading};

/// Staged rows that trigger a merge. A merge costs roughly 0.5-1 us per row
/// plus one page per active sensor, and stalls the writer while it runs
/// (about a second at this size on the dev box); larger merges amortize the
/// per-sensor pages better but stall longer and make reads seek further.
pub(crate) const MERGE_ROWS: usize = 1_000_000;
/// Staged batches that trigger a merge: readers seek the inbox once per
/// batch, so a trickle of tiny batches must not grow it without bound.
pub(crate) const MERGE_BATCHES: usize = 1024;

/// Rows per full insert statement: 512 rows x 7 parameters stays far below
/// SQLite's 32766-parameter limit, and the per-statement overhead (a round
/// trip to sqlx's worker thread, one VDBE start) is negligible at this size.
const INSERT_CHUNK: usize = 512;

fn build_insert(rows: usize) -> String {
    // A key repeated within one batch keeps its first row.
    format!(
        "INSERT INTO readings_inbox \
         (batch, device_pk, sensor_id, ts, kind, value_float, value_int) \
         VALUES {} ON CONFLICT DO NOTHING",
        placeholders(rows, 7)
    )
}

fn build_raise_seq(rows: usize) -> String {
    format!(
        "WITH v(pk, seq) AS (VALUES {}) \
         UPDATE devices SET last_seq = v.seq FROM v \
         WHERE devices.pk = v.pk AND devices.last_seq < v.seq",
        placeholders(rows, 2)
    )
}

static INSERT_STAGED: ChunkedSql = ChunkedSql::new(INSERT_CHUNK, build_insert);
/// Raises `last_seq` (never lowers it); one row per device key (the facade deduplicates).
static RAISE_LAST_SEQ: ChunkedSql = ChunkedSql::new(512, build_raise_seq);

/// Moves every staged row into `readings`. `WHERE true` keeps the upsert
/// clause from being parsed as part of the SELECT; the sort puts rows in key
/// order (cheap B-tree appends) and, within a key, the oldest batch first.
const MERGE_SQL: &str = "\
    INSERT INTO readings (device_pk, sensor_id, ts, kind, value_float, value_int) \
    SELECT device_pk, sensor_id, ts, kind, value_float, value_int \
    FROM readings_inbox WHERE true \
    ORDER BY device_pk, sensor_id, ts, batch \
    ON CONFLICT DO NOTHING";

/// The staged batch numbers, oldest first, for per-batch seeks.
const STAGED_BATCHES_CTE: &str = "\
    WITH RECURSIVE staged(n) AS ( \
        SELECT min(batch) FROM readings_inbox \
        UNION ALL \
        SELECT n + 1 FROM staged WHERE n < (SELECT max(batch) FROM readings_inbox) \
    ) ";

/// Newest reading per declared sensor in the main table: the correlated
/// subquery is one descending seek on the key per sensor
/// (`ORDER BY ts DESC LIMIT 1` on the (device_pk, sensor_id, ts) prefix), and
/// the join back is a point lookup on the full key.
const LATEST_MAIN_SQL: &str = "\
    SELECT s.sensor_id, s.name, s.unit, s.kind, r.ts, r.kind, r.value_float, r.value_int \
    FROM sensors AS s \
    LEFT JOIN readings AS r \
      ON r.device_pk = s.device_pk AND r.sensor_id = s.sensor_id \
     AND r.ts = (SELECT m.ts FROM readings AS m \
                 WHERE m.device_pk = s.device_pk AND m.sensor_id = s.sensor_id \
                 ORDER BY m.ts DESC LIMIT 1) \
    WHERE s.device_pk = ? \
    ORDER BY s.sensor_id";

/// The device's staged rows, one (batch, device) prefix seek per batch.
fn latest_staged_sql() -> String {
    format!(
        "{STAGED_BATCHES_CTE} \
         SELECT i.sensor_id, i.ts, i.kind, i.value_float, i.value_int \
         FROM staged JOIN readings_inbox AS i \
           ON i.batch = staged.n AND i.device_pk = ? \
         ORDER BY i.sensor_id, i.ts DESC, i.batch"
    )
}

/// One sensor's readings in a range in the main table.
const RANGE_MAIN_SQL: &str = "\
    SELECT ts, kind, value_float, value_int FROM readings \
    WHERE device_pk = ? AND sensor_id = ? AND ts >= ? AND ts <= ? \
    ORDER BY ts LIMIT ?";

/// One sensor's staged readings in a range, one seek per batch, that the
/// main table does not hold, one per time: with several staged rows of one
/// time, SQLite takes the bare columns from the row of the `min(batch)`, the
/// first write. Distinct and disjoint from the main table's rows, so the
/// LIMIT counts only rows that will be returned.
fn range_staged_sql() -> String {
    format!(
        "{STAGED_BATCHES_CTE} \
         SELECT i.ts, i.kind, i.value_float, i.value_int, min(i.batch) \
         FROM staged JOIN readings_inbox AS i \
           ON i.batch = staged.n AND i.device_pk = ?1 AND i.sensor_id = ?2 \
          AND i.ts >= ?3 AND i.ts <= ?4 \
         WHERE NOT EXISTS (SELECT 1 FROM readings AS r \
                           WHERE r.device_pk = ?1 AND r.sensor_id = ?2 AND r.ts = i.ts) \
         GROUP BY i.ts ORDER BY i.ts LIMIT ?5"
    )
}

/// Exact row count: the main table plus staged keys it does not hold yet.
const COUNT_SQL: &str = "\
    SELECT (SELECT count(*) FROM readings) + \
           (SELECT count(*) FROM (SELECT DISTINCT device_pk, sensor_id, ts FROM readings_inbox) AS i \
            WHERE NOT EXISTS (SELECT 1 FROM readings AS r \
                              WHERE r.device_pk = i.device_pk AND r.sensor_id = i.sensor_id \
                                AND r.ts = i.ts))";

type LatestMainRow = (
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<i64>,
);

/// sensor_id, ts, kind, value_float, value_int.
type StagedLatestRow = (i64, i64, i64, Option<f64>, Option<i64>);

/// ts, kind, value_float, value_int.
type RangeRow = (i64, i64, Option<f64>, Option<i64>);

/// ts, kind, value_float, value_int, batch.
type StagedRangeRow = (i64, i64, Option<f64>, Option<i64>, i64);

/// kind, value_float, value_int.
type ValueRow = (i64, Option<f64>, Option<i64>);

fn stored(time_ms: i64, (kind, float, int): ValueRow) -> Result<StoredReading, StoreError> {
    Ok(StoredReading {
        time_ms,
        value: value_from_columns(kind, float, int)?,
    })
}

impl SqliteStore {
    /// `last_seqs` has one entry per device key (the facade deduplicates).
    pub(crate) async fn write_batch(
        &self,
        readings: &[ReadingRow],
        last_seqs: &[(i64, u64)],
    ) -> Result<(), StoreError> {
        // Sorted, the batch appends to the inbox in key order. Stable, so of
        // two rows with one key the first sent is inserted (and kept) first.
        let mut rows = readings.to_vec();
        rows.sort_by_key(|r| (r.device_pk, r.sensor, r.time_ms));

        // IMMEDIATE: take the write lock up front, so waiting for another
        // writer goes through the busy timeout instead of failing.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if !rows.is_empty() {
            // Under the write lock, so no other writer can take the same number.
            let batch: i64 =
                sqlx::query_scalar("SELECT coalesce(max(batch), 0) + 1 FROM readings_inbox")
                    .fetch_one(&mut *tx)
                    .await?;
            for (sql, chunk) in INSERT_STAGED.chunks(&rows) {
                let mut query = sqlx::query(sql);
                for row in chunk {
                    let (kind, float, int) = value_columns(row.value);
                    query = query
                        .bind(batch)
                        .bind(row.device_pk)
                        .bind(i64::from(row.sensor))
                        .bind(row.time_ms)
                        .bind(kind)
                        .bind(float)
                        .bind(int);
                }
                query.execute(&mut *tx).await?;
            }
        }
        for (sql, chunk) in RAISE_LAST_SEQ.chunks(last_seqs) {
            let mut query = sqlx::query(sql);
            for &(pk, seq) in chunk {
                query = query.bind(pk).bind(seq_to_db(seq));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;

        if rows.is_empty() {
            return Ok(());
        }
        let staged_rows = self.inbox_rows.fetch_add(rows.len(), Ordering::Relaxed) + rows.len();
        let staged_batches = self.inbox_batches.fetch_add(1, Ordering::Relaxed) + 1;
        if (staged_rows >= self.merge_rows || staged_batches >= self.merge_batches)
            && let Err(err) = self.compact().await
        {
            // The batch is committed and must be acked; the merge is
            // housekeeping and is tried again after the next batch.
            tracing::warn!(error = %err, staged_rows, "merging staged readings failed");
        }
        Ok(())
    }

    /// Moves every staged reading into the main table, in one transaction on
    /// the writer connection (so it never interleaves with a batch).
    pub(crate) async fn compact(&self) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(MERGE_SQL).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM readings_inbox")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.inbox_rows.store(0, Ordering::Relaxed);
        self.inbox_batches.store(0, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) async fn count_readings(&self) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar(COUNT_SQL).fetch_one(&self.pool).await?;
        Ok(count)
    }

    /// A read transaction: every statement in it sees one snapshot, so a
    /// merge cannot move rows from the inbox to the main table between them.
    async fn snapshot(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    pub(crate) async fn latest_readings(&self, pk: i64) -> Result<Vec<SensorLatest>, StoreError> {
        let mut tx = self.snapshot().await?;
        let main: Vec<LatestMainRow> = sqlx::query_as(LATEST_MAIN_SQL)
            .bind(pk)
            .fetch_all(&mut *tx)
            .await?;
        // Sorted by sensor, newest first, oldest batch first: the first row
        // of each sensor is its newest staged reading.
        let staged: Vec<StagedLatestRow> = sqlx::query_as(&latest_staged_sql())
            .bind(pk)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;

        main.into_iter()
            .map(|(id, name, unit, kind, ts, value_kind, float, int)| {
                let mut latest = match (ts, value_kind) {
                    (Some(time_ms), Some(value_kind)) => {
                        Some(stored(time_ms, (value_kind, float, int))?)
                    }
                    _ => None,
                };
                let newest_staged = staged.iter().find(|row| row.0 == id);
                if let Some(&(_, time_ms, kind, float, int)) = newest_staged
                    && latest.is_none_or(|main| time_ms > main.time_ms)
                {
                    // On equal times the main table's row is the older write.
                    latest = Some(stored(time_ms, (kind, float, int))?);
                }
                Ok(SensorLatest {
                    sensor: SensorInfo {
                        id: small_id("sensor_id", id)?,
                        name,
                        unit,
                        kind: kind_from_code(kind)?,
                    },
                    latest,
                })
            })
            .collect()
    }

    /// Up to `fetch` readings with `from_ms <= ts <= to_ms`, ascending, one per time.
    pub(crate) async fn readings(
        &self,
        pk: i64,
        sensor: u16,
        from_ms: i64,
        to_ms: i64,
        fetch: u32,
    ) -> Result<Vec<StoredReading>, StoreError> {
        let mut tx = self.snapshot().await?;
        let main: Vec<RangeRow> = sqlx::query_as(RANGE_MAIN_SQL)
            .bind(pk)
            .bind(i64::from(sensor))
            .bind(from_ms)
            .bind(to_ms)
            .bind(i64::from(fetch))
            .fetch_all(&mut *tx)
            .await?;
        let staged: Vec<StagedRangeRow> = sqlx::query_as(&range_staged_sql())
            .bind(pk)
            .bind(i64::from(sensor))
            .bind(from_ms)
            .bind(to_ms)
            .bind(i64::from(fetch))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;

        // Merge two ascending lists of distinct times that never share a time.
        let limit = fetch as usize;
        let mut out = Vec::with_capacity(limit.min(main.len() + staged.len()));
        let mut main = main.into_iter().peekable();
        let mut staged = staged
            .into_iter()
            .map(|(ts, kind, float, int, _batch)| (ts, kind, float, int))
            .peekable();
        while out.len() < limit {
            let next = match (main.peek(), staged.peek()) {
                (Some(m), Some(s)) if s.0 < m.0 => staged.next(),
                (Some(_), _) => main.next(),
                (None, _) => staged.next(),
            };
            let Some((time_ms, kind, float, int)) = next else {
                break;
            };
            out.push(stored(time_ms, (kind, float, int))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Value;

    async fn staged_and_merged(store: &SqliteStore) -> (i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM readings_inbox), (SELECT count(*) FROM readings)",
        )
        .fetch_one(&store.pool)
        .await
        .expect("counts")
    }

    #[tokio::test]
    async fn batches_stage_then_merge_at_the_threshold() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("merge.db").display());
        let mut store = SqliteStore::open(&url).await.expect("open");
        store.merge_batches = 3;
        store.merge_rows = 10;
        let row = |time_ms| ReadingRow {
            device_pk: 1,
            sensor: 1,
            time_ms,
            value: Value::Int(time_ms),
        };
        store.write_batch(&[row(1), row(2)], &[]).await.expect("1");
        store.write_batch(&[row(2), row(3)], &[]).await.expect("2");
        assert_eq!(staged_and_merged(&store).await, (4, 0));
        // The third batch reaches the batch threshold.
        store.write_batch(&[row(4)], &[]).await.expect("3");
        assert_eq!(staged_and_merged(&store).await, (0, 4));
        // Ten rows at once reach the row threshold.
        let rows: Vec<ReadingRow> = (10..20).map(row).collect();
        store.write_batch(&rows, &[]).await.expect("4");
        assert_eq!(staged_and_merged(&store).await, (0, 14));
        // A batch with only seqs stages nothing.
        store.write_batch(&[], &[(1, 1)]).await.expect("seqs");
        assert_eq!(store.inbox_batches.load(Ordering::Relaxed), 0);

        // Staged rows survive a reopen (as after a crash) and are counted.
        store.write_batch(&[row(30)], &[]).await.expect("5");
        drop(store);
        let store = SqliteStore::open(&url).await.expect("reopen");
        assert_eq!(store.inbox_rows.load(Ordering::Relaxed), 1);
        assert_eq!(store.count_readings().await.expect("count"), 15);
        // Close merges what is staged.
        store.close().await;
        let store = SqliteStore::open(&url).await.expect("reopen");
        assert_eq!(staged_and_merged(&store).await, (0, 15));
        store.close().await;
    }

    /// The query plans of the reads: only seeks on both readings tables (the
    /// one scan is of the in-memory list of staged batch numbers), and no
    /// sort of the main table's rows.
    #[tokio::test]
    async fn reads_seek_the_readings_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        for (sql, binds, sorts) in [
            (LATEST_MAIN_SQL.to_string(), 1, false),
            (RANGE_MAIN_SQL.to_string(), 5, false),
            (latest_staged_sql(), 1, true),
            (range_staged_sql(), 5, true),
        ] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
            for _ in 0..binds {
                query = query.bind(1i64);
            }
            let plan = query.fetch_all(&store.pool).await.expect("plan");
            let details: Vec<String> = plan.into_iter().map(|row| row.3).collect();
            let text = details.join("\n");
            assert!(
                details
                    .iter()
                    .all(|d| !d.starts_with("SCAN") || d == "SCAN staged"),
                "a scan in:\n{text}"
            );
            assert!(text.contains("SEARCH"), "no seek in:\n{text}");
            assert_eq!(text.contains("TEMP B-TREE"), sorts, "{text}");
        }
        store.close().await;
    }
}
