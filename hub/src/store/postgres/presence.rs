//! Postgres queries for sessions, last-seen times and revocation polling.

use super::{PgStore, bounded};
use crate::store::StoreError;
use crate::store::presence::{ClosedRow, OpenedColumns, OpenedRow, SessionClosing, SessionOpening};

impl PgStore {
    /// The facade hands one row per key, in key order, so concurrent batches
    /// (several hubs) lock rows in the same order.
    pub(crate) async fn sessions_opened(
        &self,
        instance: &str,
        openings: &[&SessionOpening],
    ) -> Result<Vec<OpenedRow>, StoreError> {
        let pks: Vec<i64> = openings.iter().map(|o| o.pk).collect();
        let times: Vec<i64> = openings.iter().map(|o| o.now_ms).collect();
        bounded(async {
            // `greatest` ignores NULL: a first session sets last_seen.
            let rows: Vec<OpenedColumns> = sqlx::query_as(
                "UPDATE devices SET online = true, \
                     session_counter = devices.session_counter + 1, \
                     last_seen = greatest(devices.last_seen, v.now), hub_instance = $3 \
                 FROM UNNEST($1::int8[], $2::int8[]) AS v(pk, now) \
                 WHERE devices.pk = v.pk \
                 RETURNING devices.pk, devices.session_counter, devices.last_seq, \
                     devices.hello_digest, \
                     EXISTS (SELECT 1 FROM commands WHERE commands.device_pk = devices.pk \
                             AND status IN ('queued', 'sent', 'delivered'))",
            )
            .bind(&pks)
            .bind(&times)
            .bind(instance)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(OpenedRow::from).collect())
        })
        .await
    }

    /// One row per key, in key order (as for opens).
    pub(crate) async fn sessions_closed(
        &self,
        closings: &[SessionClosing],
    ) -> Result<Vec<ClosedRow>, StoreError> {
        let pks: Vec<i64> = closings.iter().map(|c| c.pk).collect();
        let counters: Vec<i64> = closings.iter().map(|c| c.session_counter).collect();
        let times: Vec<i64> = closings.iter().map(|c| c.now_ms).collect();
        bounded(async {
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "UPDATE devices SET \
                     online = CASE WHEN devices.session_counter = v.counter \
                                   THEN false ELSE devices.online END, \
                     hub_instance = CASE WHEN devices.session_counter = v.counter \
                                         THEN NULL ELSE devices.hub_instance END, \
                     last_seen = greatest(devices.last_seen, v.now) \
                 FROM UNNEST($1::int8[], $2::int8[], $3::int8[]) AS v(pk, counter, now) \
                 WHERE devices.pk = v.pk \
                 RETURNING devices.pk, devices.session_counter",
            )
            .bind(&pks)
            .bind(&counters)
            .bind(&times)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(pk, session_counter)| ClosedRow {
                    pk,
                    session_counter,
                })
                .collect())
        })
        .await
    }

    pub(crate) async fn set_hello_digest(&self, pk: i64, digest: &[u8]) -> Result<(), StoreError> {
        bounded(async {
            sqlx::query("UPDATE devices SET hello_digest = $2 WHERE pk = $1")
                .bind(pk)
                .bind(digest)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// `seen` has one entry per key, in key order (the facade sorts and
    /// deduplicates), so concurrent flushes lock rows in the same order.
    pub(crate) async fn touch_last_seen(&self, seen: &[(i64, i64)]) -> Result<(), StoreError> {
        let pks: Vec<i64> = seen.iter().map(|s| s.0).collect();
        let times: Vec<i64> = seen.iter().map(|s| s.1).collect();
        bounded(async {
            sqlx::query(
                "UPDATE devices SET last_seen = v.ms \
                 FROM UNNEST($1::int8[], $2::int8[]) AS v(pk, ms) \
                 WHERE devices.pk = v.pk \
                   AND (devices.last_seen IS NULL OR devices.last_seen < v.ms)",
            )
            .bind(&pks)
            .bind(&times)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn devices_revoked_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        bounded(async {
            let rows = sqlx::query_as(
                "SELECT pk, revoked_at FROM devices WHERE revoked_at >= $1 \
                 ORDER BY revoked_at, pk",
            )
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows)
        })
        .await
    }
}
