//! Postgres queries for retention: deleting a device-ordered slice of old readings.
//!
//! The inner query walks `devices` by key and, for each device, seeks its
//! rows older than the cutoff through the primary key (device, time, sensor)
//! in time order; the outer LIMIT stops the walk as soon as enough rows are
//! chosen. The chosen rows are deleted by `ctid` (a TID scan, no second
//! index descent): readings are never updated, so a row's ctid is stable
//! within the statement. See `store::retention` for why there is no index on
//! time.

use super::{PgStore, bounded};
use crate::store::StoreError;
use crate::store::retention::{KeyRange, RetentionPass};

/// Keeps the walk's cost proportional to the rows it deletes, whatever the
/// planner estimates: the walk must go by keys, an ordered index scan per
/// device that stops at the limit. When a device's old rows look few next to
/// the limit, the planner would otherwise read them all (a bitmap scan plus
/// a sort, or on a small table a scan of the whole table per device), and
/// with a misestimate (a device with a backlog of millions) one call would
/// read the whole backlog. `SET LOCAL`: only for this transaction.
pub(super) const WALK_SETTINGS: [&str; 2] = [
    "SET LOCAL enable_seqscan = off",
    "SET LOCAL enable_bitmapscan = off",
];

/// Deletes up to $4 readings older than $3 of devices with $1 <= pk < $2,
/// device by device, oldest first; returns how many and the last device.
pub(super) const DELETE_OLD_SQL: &str = "\
    WITH deleted AS ( \
        DELETE FROM readings WHERE ctid = ANY (ARRAY( \
            SELECT r.ctid FROM devices AS d \
            CROSS JOIN LATERAL ( \
                SELECT ctid FROM readings \
                WHERE device_pk = d.pk AND ts < $3 \
                ORDER BY ts LIMIT $4) AS r \
            WHERE d.pk >= $1 AND d.pk < $2 \
            ORDER BY d.pk \
            LIMIT $4)) \
        RETURNING device_pk) \
    SELECT count(*), max(device_pk) FROM deleted";

impl PgStore {
    /// Runs `ranges` in order in one transaction, stopping once `limit`
    /// rows are deleted; one [`RetentionPass`] per range run.
    pub(crate) async fn delete_readings_before(
        &self,
        cutoff_ms: i64,
        limit: u32,
        ranges: Vec<KeyRange>,
    ) -> Result<Vec<RetentionPass>, StoreError> {
        bounded(async {
            let mut passes = Vec::with_capacity(ranges.len());
            let mut left = u64::from(limit);
            let mut tx = self.pool.begin().await?;
            for setting in WALK_SETTINGS {
                sqlx::query(setting).execute(&mut *tx).await?;
            }
            for (start, end) in ranges {
                if left == 0 {
                    break;
                }
                let (count, last_device): (i64, Option<i64>) = sqlx::query_as(DELETE_OLD_SQL)
                    .bind(start)
                    .bind(end)
                    .bind(cutoff_ms)
                    .bind(i64::try_from(left).unwrap_or(i64::MAX))
                    .fetch_one(&mut *tx)
                    .await?;
                let deleted = u64::try_from(count).map_err(|_| {
                    StoreError::Corrupt(format!("negative count of deleted rows {count}"))
                })?;
                left = left.saturating_sub(deleted);
                passes.push(RetentionPass {
                    deleted,
                    last_device,
                });
            }
            tx.commit().await?;
            Ok(passes)
        })
        .await
    }

    pub(crate) async fn delete_commands_finished_before(
        &self,
        cutoff_ms: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        bounded(async {
            let result = sqlx::query(
                "DELETE FROM commands WHERE id IN ( \
                     SELECT id FROM commands WHERE finished_at < $1 ORDER BY finished_at LIMIT $2)",
            )
            .bind(cutoff_ms)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::test_db;

    /// The walk reads devices in key order and each device's oldest rows
    /// through the readings key, stopping at the limit: no scan of
    /// `readings`, no sort of the join; the delete finds rows by ctid.
    #[tokio::test]
    async fn the_delete_walks_the_keys() {
        let Some(store) = test_db::loaded_store().await else {
            return;
        };
        for generic in [false, true] {
            let plan = test_db::plan(
                &store,
                &WALK_SETTINGS.join("; "),
                DELETE_OLD_SQL,
                "bigint, bigint, bigint, bigint",
                "0, 9223372036854775807, 500, 10000",
                generic,
            )
            .await;
            assert!(
                plan.contains("Index Scan using readings_pkey on readings"),
                "generic {generic}:\n{plan}"
            );
            assert!(plan.contains("devices_pkey"), "generic {generic}:\n{plan}");
            assert!(plan.contains("Tid Scan"), "generic {generic}:\n{plan}");
            assert!(!plan.contains("Seq Scan"), "generic {generic}:\n{plan}");
            assert!(!plan.contains("Sort"), "generic {generic}:\n{plan}");
        }
        store.close().await;
    }
}
