//! Postgres queries for sessions, last-seen times and revocation polling.

use super::{PgStore, bounded};
use crate::store::StoreError;
use crate::store::columns::seq_from_db;
use crate::store::presence::SessionStart;

impl PgStore {
    pub(crate) async fn session_opened(
        &self,
        pk: i64,
        now_ms: i64,
        instance: &str,
        hello_digest: &[u8],
    ) -> Result<SessionStart, StoreError> {
        bounded(async {
            // `greatest` ignores NULL: a first session sets last_seen.
            let row: Option<(i64, i64, bool, bool)> = sqlx::query_as(
                "UPDATE devices SET online = true, session_counter = session_counter + 1, \
                     last_seen = greatest(last_seen, $2), hub_instance = $3 \
                 WHERE pk = $1 RETURNING session_counter, last_seq, \
                     hello_digest IS DISTINCT FROM $4, \
                     EXISTS (SELECT 1 FROM commands WHERE device_pk = $1 \
                             AND status IN ('queued', 'sent', 'delivered'))",
            )
            .bind(pk)
            .bind(now_ms)
            .bind(instance)
            .bind(hello_digest)
            .fetch_optional(&self.pool)
            .await?;
            let (session_counter, last_seq, hello_changed, open_commands) =
                row.ok_or(StoreError::UnknownDevice(pk))?;
            Ok(SessionStart {
                session_counter,
                last_stored_seq: seq_from_db(last_seq)?,
                hello_changed,
                open_commands,
            })
        })
        .await
    }

    pub(crate) async fn session_closed(
        &self,
        pk: i64,
        session_counter: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        bounded(async {
            let current: Option<i64> = sqlx::query_scalar(
                "UPDATE devices SET \
                     online = CASE WHEN session_counter = $2 THEN false ELSE online END, \
                     hub_instance = CASE WHEN session_counter = $2 THEN NULL ELSE hub_instance END, \
                     last_seen = greatest(last_seen, $3) \
                 WHERE pk = $1 RETURNING session_counter",
            )
            .bind(pk)
            .bind(session_counter)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
            Ok(current == Some(session_counter))
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
