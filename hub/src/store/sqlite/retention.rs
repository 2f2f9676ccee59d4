//! SQLite queries for retention: deleting a device-ordered slice of old readings.
//!
//! `readings` is a WITHOUT ROWID table, so rows are named by their key. The
//! subquery walks `devices` by key and seeks each device's rows older than
//! the cutoff through the primary key (device, time, sensor), in key order,
//! so the LIMIT stops the walk early; the DELETE then seeks each chosen key.
//! See `store::retention` for why there is no index on time.

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::retention::{KeyRange, RetentionPass};

/// Deletes up to ?4 readings older than ?3 of devices with ?1 <= pk < ?2,
/// device by device, oldest first.
pub(super) const DELETE_OLD_SQL: &str = "\
    DELETE FROM readings WHERE (device_pk, ts, sensor_id) IN ( \
        SELECT r.device_pk, r.ts, r.sensor_id \
        FROM devices AS d JOIN readings AS r ON r.device_pk = d.pk \
        WHERE d.pk >= ?1 AND d.pk < ?2 AND r.ts < ?3 \
        ORDER BY d.pk, r.ts \
        LIMIT ?4) \
    RETURNING device_pk";

impl SqliteStore {
    /// Runs `ranges` in order in one transaction, stopping once `limit`
    /// rows are deleted; one [`RetentionPass`] per range run.
    pub(crate) async fn delete_readings_before(
        &self,
        cutoff_ms: i64,
        limit: u32,
        ranges: Vec<KeyRange>,
    ) -> Result<Vec<RetentionPass>, StoreError> {
        let mut passes = Vec::with_capacity(ranges.len());
        let mut left = u64::from(limit);
        // IMMEDIATE: take the write lock up front (see the batch writer).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (start, end) in ranges {
            if left == 0 {
                break;
            }
            let devices: Vec<i64> = sqlx::query_scalar(DELETE_OLD_SQL)
                .bind(start)
                .bind(end)
                .bind(cutoff_ms)
                .bind(i64::try_from(left).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await?;
            let deleted = devices.len() as u64;
            left = left.saturating_sub(deleted);
            passes.push(RetentionPass {
                deleted,
                last_device: devices.iter().copied().max(),
            });
        }
        tx.commit().await?;
        Ok(passes)
    }

    pub(crate) async fn delete_commands_finished_before(
        &self,
        cutoff_ms: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM commands WHERE id IN ( \
                 SELECT id FROM commands WHERE finished_at < ?1 ORDER BY finished_at LIMIT ?2)",
        )
        .bind(cutoff_ms)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk seeks devices and each device's rows by key, without a scan
    /// of readings or a sort, and the delete seeks the chosen keys.
    #[tokio::test]
    async fn the_delete_seeks_the_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        let explain = format!("EXPLAIN QUERY PLAN {DELETE_OLD_SQL}");
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&explain)
            .bind(1i64)
            .bind(100i64)
            .bind(1_000i64)
            .bind(10i64)
            .fetch_all(&store.pool)
            .await
            .expect("plan");
        let text: Vec<String> = plan.into_iter().map(|row| row.3).collect();
        let text = text.join("\n");
        assert!(!text.contains("SCAN r"), "a scan of readings in:\n{text}");
        assert!(
            !text.contains("SCAN readings"),
            "a scan of readings in:\n{text}"
        );
        assert!(!text.contains("SCAN d"), "a scan of devices in:\n{text}");
        assert!(
            text.contains("SEARCH r USING PRIMARY KEY (device_pk=? AND ts<?)"),
            "no seek of a device's old rows in:\n{text}"
        );
        assert!(
            !text.contains("TEMP B-TREE FOR ORDER BY"),
            "a sort in:\n{text}"
        );
        store.close().await;
    }
}
